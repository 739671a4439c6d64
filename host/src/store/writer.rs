//! The single group-commit writer.
//!
//! redb allows one write transaction at a time, and a durable commit costs an
//! fsync. One thread owns all writes: it takes every batch waiting in its
//! channel, applies them in one `Durability::Immediate` transaction, commits
//! once, then acknowledges each batch. Under load many runs' steps share one
//! fsync.

use super::schema::*;
use super::DbCell;
use crate::journal::{self, Record};
use redb::{Database, Durability, ReadableTable};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a run's metadata.
    PutRun(RunMeta),
    /// Append a journal record; refused if the seq already exists.
    Append {
        /// The run.
        run_id: String,
        /// The record.
        record: Record,
    },
    /// Store a completion that arrived from outside.
    PutCompletion {
        /// The run.
        run_id: String,
        /// The handle it completes.
        handle: u32,
        /// The completion.
        completion: StoredCompletion,
    },
    /// Drop a completion (consumed or cancelled).
    DeleteCompletion {
        /// The run.
        run_id: String,
        /// The handle.
        handle: u32,
    },
    /// Arm a timer.
    PutTimer {
        /// Due time, ms since the epoch.
        due_ms: u64,
        /// The run.
        run_id: String,
        /// The timer's handle.
        handle: u32,
    },
    /// Disarm a timer.
    DeleteTimer {
        /// Due time.
        due_ms: u64,
        /// The run.
        run_id: String,
        /// The handle.
        handle: u32,
    },
    /// Buffer a signal for a run.
    PutSignal {
        /// The run.
        run_id: String,
        /// Arrival order.
        seq: u64,
        /// Name and payload.
        signal: StoredSignal,
    },
    /// Drop a consumed signal.
    DeleteSignal {
        /// The run.
        run_id: String,
        /// Its arrival seq.
        seq: u64,
    },
    /// End a generation of a run (continue-as-new): its journal moves to
    /// history, its completions and timers are dropped, its buffered
    /// signals stay, and the new generation starts with `start`.
    ContinueAsNew {
        /// The run, with its new generation, input and status.
        meta: Box<RunMeta>,
        /// The new start entry (seq 0).
        start: Box<Record>,
    },
    /// Record how many attempts of an activity failed so far.
    PutAttempts {
        /// The run.
        run_id: String,
        /// The activity's handle.
        handle: u32,
        /// Failed attempts.
        failed: u32,
    },
    /// Forget an activity's attempts (it ended).
    DeleteAttempts {
        /// The run.
        run_id: String,
        /// The activity's handle.
        handle: u32,
    },
    /// Insert or replace a deployment.
    PutDeployment(Deployment),
    /// Store a component's bytes.
    PutComponent {
        /// sha256, hex.
        sha256: String,
        /// The bytes.
        bytes: Arc<[u8]>,
    },
    /// Store a precompiled artifact.
    PutCompiled {
        /// Component sha256.
        sha256: String,
        /// Engine fingerprint.
        engine: String,
        /// The artifact.
        bytes: Vec<u8>,
    },
}

/// Writes applied together, atomically.
pub type Batch = Vec<Write>;

/// A batch was not committed.
#[derive(Debug, Clone, Error)]
pub enum CommitError {
    /// The batch would overwrite a journal entry: a bug or a second writer.
    #[error("journal entry {seq} of run {run_id} already exists; the batch was refused and nothing was written")]
    DuplicateSeq {
        /// The run.
        run_id: String,
        /// The seq.
        seq: u64,
    },
    /// redb failed (disk full, I/O error). The writer refuses further
    /// writes: runs stop advancing rather than risk an inconsistent store.
    #[error("the store could not commit ({0}); runs stop advancing until Cairn is restarted, and nothing committed before was lost")]
    Failed(String),
    /// The writer thread is gone.
    #[error("the store writer has stopped")]
    Stopped,
}

struct Request {
    batch: Batch,
    ack: oneshot::Sender<Result<(), CommitError>>,
}

/// Handle to the writer thread; cheap to clone. When the last handle goes,
/// the writer finishes what it was given and the thread is joined, so the
/// file is closed by the time the last handle is dropped.
#[derive(Clone)]
pub struct GroupCommitWriter {
    inner: Arc<WriterThread>,
}

struct WriterThread {
    tx: Option<mpsc::UnboundedSender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl GroupCommitWriter {
    pub(super) fn start(
        cell: Arc<DbCell>,
        durable: bool,
        metrics: Arc<crate::metrics::CommitMetrics>,
    ) -> GroupCommitWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("cairn-store-writer".into())
            .spawn(move || writer_loop(cell, rx, durable, metrics))
            .expect("spawning the store writer thread");
        GroupCommitWriter { inner: Arc::new(WriterThread { tx: Some(tx), thread: Some(thread) }) }
    }

    /// Queues `batch`; the returned receiver resolves once it is durable.
    /// Dropping the receiver does not cancel the write.
    pub fn submit(&self, batch: Batch) -> oneshot::Receiver<Result<(), CommitError>> {
        let (ack, rx) = oneshot::channel();
        let request = Request { batch, ack };
        let refused = match &self.inner.tx {
            Some(tx) => tx.send(request).err().map(|mpsc::error::SendError(req)| req),
            None => Some(request),
        };
        if let Some(req) = refused {
            let _ = req.ack.send(Err(CommitError::Stopped));
        }
        rx
    }

    /// Applies `batch` and waits until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), CommitError> {
        durable(self.submit(batch)).await
    }
}

/// Waits for the acknowledgement `submit` returned.
pub async fn durable(ack: oneshot::Receiver<Result<(), CommitError>>) -> Result<(), CommitError> {
    ack.await.unwrap_or(Err(CommitError::Stopped))
}

/// Most requests one transaction takes, so one huge backlog cannot delay
/// the first acknowledgement without bound.
const MAX_GROUP: usize = 4096;

fn writer_loop(
    cell: Arc<DbCell>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    durable: bool,
    metrics: Arc<crate::metrics::CommitMetrics>,
) {
    // Test-only crash point: kill the process right after the Nth durable
    // commit, before anyone is told it happened.
    let crash_after: Option<u64> = std::env::var("CAIRN_CRASH_AFTER_COMMITS").ok().and_then(|v| v.parse().ok());
    // Test-only fault: while this file exists, every commit fails as on a
    // full disk.
    let fail_while: Option<std::path::PathBuf> = std::env::var_os("CAIRN_FAIL_WRITES_WHILE").map(Into::into);
    let mut commits = 0u64;
    let Some(mut db) = cell.database() else { return };
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        // A failed commit is retried until it succeeds: the runs waiting on
        // it stay paused, nothing half-written is ever acknowledged, and
        // work resumes by itself once space returns.
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0u32;
        let results = loop {
            let started = std::time::Instant::now();
            let outcome = match &fail_while {
                Some(path) if path.exists() => Err("No space left on device (os error 28, injected)".to_owned()),
                _ => apply(&db, &group, durable),
            };
            match outcome {
                Ok(results) => {
                    metrics.latency.observe_duration(started.elapsed());
                    metrics.batch_size.observe(group.iter().map(|r| r.batch.len()).sum::<usize>() as f64);
                    if failures > 0 {
                        tracing::warn!(failures, "store commits succeed again; paused runs resume");
                        cell.set_failing(None);
                    }
                    break results;
                }
                Err(reason) if rx.is_closed() => {
                    // Shutting down: nothing of this group was acknowledged,
                    // so giving up loses nothing.
                    tracing::error!(%reason, "store commit failed while shutting down; the unacknowledged writes are dropped");
                    break vec![Err(CommitError::Failed(reason)); group.len()];
                }
                Err(reason) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::error!(
                            %reason,
                            failures,
                            "store commit failed; runs are paused until it succeeds (free disk space or fix the I/O error); retrying"
                        );
                    }
                    cell.set_failing(Some(reason));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // redb accepts no write after an I/O error until the
                    // file is reopened (its recovery runs then).
                    drop(db);
                    db = loop {
                        match cell.reopen() {
                            Ok(db) => break db,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot reopen the store; retrying");
                                std::thread::sleep(backoff);
                            }
                        }
                    };
                }
            }
        };
        commits += 1;
        tracing::debug!(
            commit = commits,
            batches = group.len(),
            writes = group.iter().map(|r| r.batch.len()).sum::<usize>(),
            "committed"
        );
        if crash_after == Some(commits) {
            // SAFETY: kill(2) on our own pid; the point is to die abruptly.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        for (req, result) in group.into_iter().zip(results) {
            let _ = req.ack.send(result);
        }
    }
}

fn apply(db: &Database, group: &[Request], durable: bool) -> Result<Vec<Result<(), CommitError>>, String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(group.len());
    {
        let mut runs = txn.open_table(RUNS).map_err(|e| e.to_string())?;
        let mut journal_t = txn.open_table(JOURNAL).map_err(|e| e.to_string())?;
        let mut completions = txn.open_table(COMPLETIONS).map_err(|e| e.to_string())?;
        let mut timers = txn.open_table(TIMERS).map_err(|e| e.to_string())?;
        let mut signals = txn.open_table(SIGNALS).map_err(|e| e.to_string())?;
        let mut history = txn.open_table(HISTORY).map_err(|e| e.to_string())?;
        let mut attempts = txn.open_table(ATTEMPTS).map_err(|e| e.to_string())?;
        let mut deployments = txn.open_table(DEPLOYMENTS).map_err(|e| e.to_string())?;
        let mut components = txn.open_table(COMPONENTS).map_err(|e| e.to_string())?;
        let mut compiled = txn.open_table(COMPILED).map_err(|e| e.to_string())?;
        for req in group {
            // Validate first so a refused batch writes nothing.
            if let Some(dup) = duplicate_append(&journal_t, &req.batch).map_err(|e| e.to_string())? {
                results.push(Err(dup));
                continue;
            }
            for write in &req.batch {
                let r: Result<(), redb::StorageError> = (|| {
                    match write {
                        Write::PutRun(meta) => {
                            let bytes = serde_json::to_vec(meta).expect("run metadata serialises");
                            runs.insert(meta.id.as_str(), bytes.as_slice())?;
                        }
                        Write::Append { run_id, record } => {
                            journal_t.insert((run_id.as_str(), record.seq), journal::encode(record).as_slice())?;
                        }
                        Write::PutCompletion { run_id, handle, completion } => {
                            let bytes = serde_json::to_vec(completion).expect("completions serialise");
                            completions.insert((run_id.as_str(), *handle), bytes.as_slice())?;
                        }
                        Write::DeleteCompletion { run_id, handle } => {
                            completions.remove((run_id.as_str(), *handle))?;
                        }
                        Write::PutTimer { due_ms, run_id, handle } => {
                            timers.insert((*due_ms, run_id.as_str(), *handle), ())?;
                        }
                        Write::DeleteTimer { due_ms, run_id, handle } => {
                            timers.remove((*due_ms, run_id.as_str(), *handle))?;
                        }
                        Write::PutSignal { run_id, seq, signal } => {
                            let bytes = serde_json::to_vec(signal).expect("signals serialise");
                            signals.insert((run_id.as_str(), *seq), bytes.as_slice())?;
                        }
                        Write::DeleteSignal { run_id, seq } => {
                            signals.remove((run_id.as_str(), *seq))?;
                        }
                        Write::ContinueAsNew { meta, start } => {
                            let run = meta.id.as_str();
                            // Already applied by a retried commit that landed:
                            // moving the journal again would bury the new one.
                            let stored = runs.get(run)?.and_then(|v| serde_json::from_slice::<RunMeta>(v.value()).ok());
                            if stored.is_some_and(|m| m.generation >= meta.generation) {
                                return Ok(());
                            }
                            let ended = meta.generation.saturating_sub(1);
                            let mut old = Vec::new();
                            for row in journal_t.range((run, 0)..=(run, u64::MAX))? {
                                let (k, v) = row?;
                                old.push((k.value().1, v.value().to_vec()));
                            }
                            for (seq, bytes) in old {
                                history.insert((run, ended, seq), bytes.as_slice())?;
                                journal_t.remove((run, seq))?;
                            }
                            let handles: Vec<u32> = completions
                                .range((run, 0)..=(run, u32::MAX))?
                                .map(|row| row.map(|(k, _)| k.value().1))
                                .collect::<Result<_, _>>()?;
                            for handle in handles {
                                completions.remove((run, handle))?;
                            }
                            let mut armed: Vec<(u64, u32)> = Vec::new();
                            for row in timers.iter()? {
                                let (k, _) = row?;
                                let (due, r, h) = k.value();
                                if r == run {
                                    armed.push((due, h));
                                }
                            }
                            for (due, handle) in armed {
                                timers.remove((due, run, handle))?;
                            }
                            journal_t.insert((run, 0), journal::encode(start).as_slice())?;
                            let bytes = serde_json::to_vec(meta.as_ref()).expect("run metadata serialises");
                            runs.insert(run, bytes.as_slice())?;
                        }
                        Write::PutAttempts { run_id, handle, failed } => {
                            attempts.insert((run_id.as_str(), *handle), *failed)?;
                        }
                        Write::DeleteAttempts { run_id, handle } => {
                            attempts.remove((run_id.as_str(), *handle))?;
                        }
                        Write::PutDeployment(d) => {
                            let bytes = serde_json::to_vec(d).expect("deployments serialise");
                            deployments.insert(d.name.as_str(), bytes.as_slice())?;
                        }
                        Write::PutComponent { sha256, bytes } => {
                            components.insert(sha256.as_str(), &bytes[..])?;
                        }
                        Write::PutCompiled { sha256, engine, bytes } => {
                            compiled.insert((sha256.as_str(), engine.as_str()), bytes.as_slice())?;
                        }
                    }
                    Ok(())
                })();
                r.map_err(|e| e.to_string())?;
            }
            results.push(Ok(()));
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(results)
}

fn duplicate_append(
    journal_t: &redb::Table<(&str, u64), &[u8]>,
    batch: &Batch,
) -> Result<Option<CommitError>, redb::StorageError> {
    let mut seen = std::collections::HashSet::new();
    for write in batch {
        if let Write::Append { run_id, record } = write {
            // The same bytes already there: a retried commit that landed
            // before its failure was reported. Writing them again is a no-op.
            let stored = journal_t.get((run_id.as_str(), record.seq))?;
            let landed = stored.as_ref().is_some_and(|v| v.value() == journal::encode(record).as_slice());
            let dup = !seen.insert((run_id.as_str(), record.seq)) || (stored.is_some() && !landed);
            if dup {
                return Ok(Some(CommitError::DuplicateSeq { run_id: run_id.clone(), seq: record.seq }));
            }
        }
    }
    Ok(None)
}
