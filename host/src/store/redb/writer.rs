//! The single group-commit writer.
//!
//! redb allows one write transaction at a time, and a durable commit costs an
//! fsync. One thread owns all writes: it takes every batch waiting in its
//! channel, applies them in one transaction, makes the group durable with one
//! append to the write-ahead log (`wal.rs`), commits, then acknowledges each
//! batch. Under load many runs' steps share one fsync. Every so often, and
//! when idle, it checkpoints: one durable redb commit, and the log restarts.

use super::schema::*;
use super::wal::{self, Wal};
use super::DbCell;
use crate::journal;
use crate::store::{durable, Ack, Batch, Buffered, CommitError, RunMeta, Write};
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

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
    tx: Option<mpsc::Sender<Request>>,
    /// Requests sent and not yet taken by the writer thread.
    queued: Arc<AtomicUsize>,
    /// Callers inside [`GroupCommitWriter::commit`], acknowledged or not.
    committing: AtomicUsize,
    core: Arc<Mutex<Core>>,
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

/// What a commit needs. The writer thread holds it while it commits a
/// group; a caller that finds it free and nothing queued commits its own
/// batch with it (see [`GroupCommitWriter::commit`]).
struct Core {
    cell: Arc<DbCell>,
    /// Signals buffered and not consumed, kept up to date by each commit.
    signals: Arc<SignalLoad>,
    wal: Option<Wal>,
    durable: bool,
    metrics: Arc<crate::metrics::CommitMetrics>,
    /// Group commits so far.
    commits: u64,
    /// When the last one finished: the idle checkpoint waits for a quiet
    /// second.
    last_commit: Instant,
    /// Test-only crash point: kill the process right after the Nth durable
    /// commit, before anyone is told it happened.
    crash_after: Option<u64>,
    /// Test-only fault: while this file exists, every commit fails as on a
    /// full disk.
    fail_while: Option<std::path::PathBuf>,
}

impl Core {
    /// One attempt at committing `batches` as one group.
    fn attempt(&mut self, batches: &[&Batch]) -> Result<Vec<Result<(), CommitError>>, String> {
        let started = Instant::now();
        let db = self.cell.database().ok_or("the store is reopening")?;
        let mut load = SignalDelta::default();
        let results = match &self.fail_while {
            Some(path) if path.exists() => Err("No space left on device (os error 28, injected)".to_owned()),
            _ => commit_group(&db, self.wal.as_mut(), batches, self.durable, &mut load),
        }?;
        self.signals.apply(load);
        self.metrics.latency.observe_duration(started.elapsed());
        self.metrics.batch_size.observe(batches.iter().map(|b| b.len()).sum::<usize>() as f64);
        self.commits += 1;
        self.last_commit = Instant::now();
        tracing::debug!(
            commit = self.commits,
            batches = batches.len(),
            writes = batches.iter().map(|b| b.len()).sum::<usize>(),
            "committed"
        );
        if self.crash_after == Some(self.commits) {
            // SAFETY: kill(2) on our own pid; the point is to die abruptly.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        super::power::acknowledged(batches.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(b, _)| *b));
        Ok(results)
    }

    fn log_len(&self) -> u64 {
        self.wal.as_ref().map_or(0, Wal::len)
    }

    fn checkpoint(&mut self) {
        if let Some(db) = self.cell.database() {
            checkpoint_or_warn(&db, self.wal.as_mut());
        }
    }
}

fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCommitWriter {
    /// Starts the writer. With a log, a group is durable once it is in the
    /// log; without one, once redb committed it (`durable`) or at once.
    pub(super) fn start(
        cell: Arc<DbCell>,
        wal: Option<Wal>,
        durable: bool,
        metrics: Arc<crate::metrics::CommitMetrics>,
        signals: Arc<SignalLoad>,
    ) -> GroupCommitWriter {
        let core = Arc::new(Mutex::new(Core {
            cell,
            signals,
            wal,
            durable,
            metrics,
            commits: 0,
            last_commit: Instant::now(),
            crash_after: super::test_hook("CAIRN_CRASH_AFTER_COMMITS").and_then(|v| v.to_str()?.parse().ok()),
            fail_while: super::test_hook("CAIRN_FAIL_WRITES_WHILE").map(Into::into),
        }));
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (core, queued) = (core.clone(), queued.clone());
            std::thread::Builder::new()
                .name("cairn-store-writer".into())
                .spawn(move || writer_loop(&core, &rx, &queued))
                .expect("spawning the store writer thread")
        };
        GroupCommitWriter {
            inner: Arc::new(WriterThread {
                tx: Some(tx),
                queued,
                committing: AtomicUsize::new(0),
                core,
                thread: Some(thread),
            }),
        }
    }

    /// Queues `batch`; the returned receiver resolves once it is durable.
    /// Dropping the receiver does not cancel the write.
    pub fn submit(&self, batch: Batch) -> Ack {
        let (ack, rx) = oneshot::channel();
        let request = Request { batch, ack };
        let refused = match &self.inner.tx {
            Some(tx) => {
                self.inner.queued.fetch_add(1, Ordering::AcqRel);
                tx.send(request).err().map(|mpsc::SendError(req)| req)
            }
            None => Some(request),
        };
        if let Some(req) = refused {
            let _ = req.ack.send(Err(CommitError::Stopped));
        }
        rx
    }

    /// Applies `batch` and waits until it is durable.
    ///
    /// When no other caller is inside `commit` (none waits for its
    /// acknowledgement or has yet to be woken by it), nothing is queued and
    /// the writer thread is idle, the caller commits the batch itself, on
    /// its own thread: a lone run's step then pays its fsync and not also
    /// two thread wake-ups (the writer's, then its own), which cost about
    /// as much on an idle VM. Under load batches queue and the writer thread
    /// groups them as before.
    pub async fn commit(&self, batch: Batch) -> Result<(), CommitError> {
        let committing = &self.inner.committing;
        let _inside = Inside::enter(committing);
        if committing.load(Ordering::Acquire) == 1 {
            if let Some(result) = self.commit_here(&batch) {
                return result;
            }
        }
        durable(self.submit(batch)).await
    }

    fn commit_here(&self, batch: &Batch) -> Option<Result<(), CommitError>> {
        if self.inner.tx.is_none() || self.inner.queued.load(Ordering::Acquire) != 0 {
            return None;
        }
        let mut core = match self.inner.core.try_lock() {
            Ok(core) => core,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        // While commits fail, only the writer thread (which retries) commits.
        if core.cell.is_failing() {
            return None;
        }
        // A failed attempt left nothing that counts (a log record it wrote
        // was not synced, and the writer's reopen replays only synced
        // ones): the writer thread takes the batch and retries it.
        let result = core.attempt(&[batch]).ok()?.pop()?;
        if core.log_len() >= wal::CHECKPOINT_BYTES {
            // The writer thread checkpoints after the (empty) group.
            drop(core);
            drop(self.submit(Vec::new()));
        }
        Some(result)
    }
}

/// Counts a caller inside [`GroupCommitWriter::commit`] until it returns
/// or is dropped.
struct Inside<'a>(&'a AtomicUsize);

impl<'a> Inside<'a> {
    fn enter(count: &'a AtomicUsize) -> Inside<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Inside(count)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Most requests one transaction takes, so one huge backlog cannot delay
/// the first acknowledgement without bound.
const MAX_GROUP: usize = 4096;

/// With no commit for this long, the writer checkpoints.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

fn writer_loop(core: &Mutex<Core>, rx: &mpsc::Receiver<Request>, queued: &AtomicUsize) {
    // Requests taken off the channel while checking for shutdown.
    let mut stash = VecDeque::new();
    loop {
        let first = match stash.pop_front() {
            Some(req) => req,
            None => match rx.recv_timeout(IDLE_CHECKPOINT) {
                Ok(req) => req,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let mut core = lock(core);
                    if core.log_len() > 0 && core.last_commit.elapsed() >= IDLE_CHECKPOINT {
                        core.checkpoint();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match stash.pop_front().map_or_else(|| rx.try_recv(), Ok) {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        let mut core = lock(core);
        queued.fetch_sub(group.len(), Ordering::AcqRel);
        let batches: Vec<&Batch> = group.iter().map(|req| &req.batch).collect();
        // A failed commit is retried until it succeeds: the runs waiting on
        // it stay paused, nothing half-written is ever acknowledged, and
        // work resumes by itself once space returns.
        let mut backoff = Duration::from_millis(50);
        let mut failures = 0u32;
        let results = loop {
            match core.attempt(&batches) {
                Ok(results) => {
                    if failures > 0 {
                        tracing::warn!(failures, "store commits succeed again; paused runs resume");
                        core.cell.set_failing(None);
                    }
                    break results;
                }
                Err(reason) if shutting_down(rx, &mut stash) => {
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
                    core.cell.set_failing(Some(reason));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // redb accepts no write after an I/O error until the
                    // file is reopened (its recovery runs then, back to the
                    // last checkpoint; the log is replayed on top).
                    let Core { cell, wal, signals, .. } = &mut *core;
                    let reopened = loop {
                        match cell.reopen(|db| wal.as_mut().map_or(Ok(()), |log| recover_synced(db, log).map(drop))) {
                            Ok(db) => break db,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot reopen the store; retrying");
                                std::thread::sleep(backoff);
                            }
                        }
                    };
                    // What the failed attempt counted did not land.
                    match SignalLoad::count(&reopened) {
                        Ok(load) => signals.reset(load),
                        Err(e) => tracing::warn!(error = %e, "cannot recount the buffered signals"),
                    }
                }
            }
        };
        drop(batches);
        for (req, result) in group.into_iter().zip(results) {
            let _ = req.ack.send(result);
        }
        if core.log_len() >= wal::CHECKPOINT_BYTES {
            core.checkpoint();
        }
    }
    let mut core = lock(core);
    if core.log_len() > 0 {
        core.checkpoint();
    }
    // Closed cleanly: the log holds nothing redb lacks.
    if core.wal.as_ref().is_some_and(|wal| wal.len() == 0) {
        if let Some(db) = core.cell.database() {
            if let Err(reason) = mark_open(&db, false) {
                tracing::warn!(%reason, "cannot record the store's clean close; the next start checks for its log");
            }
        }
    }
}

/// Whether every handle is gone (nothing can arrive any more). A request
/// found waiting is kept for the next group.
fn shutting_down(rx: &mpsc::Receiver<Request>, stash: &mut VecDeque<Request>) -> bool {
    match rx.try_recv() {
        Ok(req) => {
            stash.push_back(req);
            false
        }
        Err(mpsc::TryRecvError::Empty) => false,
        Err(mpsc::TryRecvError::Disconnected) => stash.is_empty(),
    }
}

/// Signals buffered and not yet consumed, per run and in all: what the caps
/// on them are checked against. Counted once at open and kept by every
/// commit from the rows it inserts and removes.
#[derive(Debug, Default)]
pub(crate) struct SignalLoad(Mutex<Load>);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Load {
    runs: std::collections::HashMap<String, (u64, u64)>,
    count: u64,
    bytes: u64,
}

impl SignalLoad {
    /// Counts the signals table.
    fn count(db: &Database) -> Result<Load, redb::Error> {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = db.begin_read()?;
        let mut load = Load::default();
        for row in txn.open_table(SIGNALS)?.iter()? {
            let (key, value) = row?;
            let entry = load.runs.entry(key.value().0.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += value.value().len() as u64;
            load.count += 1;
            load.bytes += value.value().len() as u64;
        }
        Ok(load)
    }

    /// The signals `db` holds, counted.
    pub(super) fn counted(db: &Database) -> Result<SignalLoad, redb::Error> {
        Ok(SignalLoad(Mutex::new(Self::count(db)?)))
    }

    fn reset(&self, load: Load) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = load;
    }

    fn apply(&self, delta: SignalDelta) {
        if delta.0.is_empty() {
            return;
        }
        let mut load = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (run, count, bytes) in delta.0 {
            let entry = load.runs.entry(run.clone()).or_default();
            entry.0 = entry.0.saturating_add_signed(count);
            entry.1 = entry.1.saturating_add_signed(bytes);
            if entry.0 == 0 {
                load.runs.remove(&run);
            }
            load.count = load.count.saturating_add_signed(count);
            load.bytes = load.bytes.saturating_add_signed(bytes);
        }
    }

    /// What `run_id` and all runs have buffered.
    pub(super) fn of(&self, run_id: &str) -> Buffered {
        let load = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Buffered { run: load.runs.get(run_id).copied().unwrap_or_default(), all: (load.count, load.bytes) }
    }
}

/// How a transaction changed the buffered signals, applied to the
/// [`SignalLoad`] once it committed.
#[derive(Debug, Default)]
pub(super) struct SignalDelta(Vec<(String, i64, i64)>);

impl SignalDelta {
    fn changed(&mut self, run: &str, count: i64, bytes: i64) {
        self.0.push((run.to_owned(), count, bytes));
    }
}

/// Applies a group in one transaction and makes it durable: in the log, or
/// by a durable redb commit where there is no log, or where the group
/// stores components or compiled artifacts (megabytes the log need not
/// copy; such a group is a checkpoint).
///
/// With the log, the group's record is written and its writeback started
/// before the group is applied to redb, and synced after: the disk takes
/// the bytes while the B-trees are updated. So the log holds every batch of
/// the group, also one that `apply` refuses (a journal seq taken twice);
/// replaying the log refuses it again, since it meets the same store.
fn commit_group(
    db: &Database,
    wal: Option<&mut Wal>,
    batches: &[&Batch],
    durable: bool,
    load: &mut SignalDelta,
) -> Result<Vec<Result<(), CommitError>>, String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    let bulky = batches
        .iter()
        .flat_map(|batch| batch.iter())
        .any(|write| matches!(write, Write::PutComponent { .. } | Write::PutCompiled { .. }));
    let logged = wal.is_some() && !bulky;
    let durability = if durable && !logged { Durability::Immediate } else { Durability::None };
    txn.set_durability(durability).map_err(|e| e.to_string())?;
    let Some(wal) = wal else {
        let results = apply(&txn, batches.iter().copied(), load)?;
        txn.commit().map_err(|e| e.to_string())?;
        return Ok(results);
    };
    if !logged {
        let results = apply(&txn, batches.iter().copied(), load)?;
        let next = wal.generation() + 1;
        commit_checkpoint(txn, wal, next)?;
        return Ok(results);
    }
    let log_error = |wal: &Wal, e: std::io::Error| format!("{}: {e}", wal.path().display());
    let nonempty: Vec<&Batch> = batches.iter().copied().filter(|batch| !batch.is_empty()).collect();
    let written = match nonempty.is_empty() {
        true => None,
        false => Some(wal.write(&wal::encode_group(nonempty.into_iter())).map_err(|e| log_error(wal, e))?),
    };
    let results = apply(&txn, batches.iter().copied(), load)?;
    // Where the synced record starts, if there is one.
    let synced = match written {
        None => None,
        Some(written) => {
            let start = written.start();
            wal.sync(written).map_err(|e| log_error(wal, e))?;
            Some(start)
        }
    };
    if let Err(e) = txn.commit() {
        // The writer reopens the store and retries this group: the reopen
        // must not also replay it from the log.
        if let Some(start) = synced {
            wal.forget_from(start);
        }
        return Err(e.to_string());
    }
    Ok(results)
}

/// The log generation that counts, as the last checkpoint stored it.
const GENERATION_KEY: &str = "wal-generation";

/// 1 while a process has the store open with its log, 0 once it closed
/// it cleanly (a final checkpoint: the log holds nothing redb lacks).
const OPEN_KEY: &str = "wal-open";

/// The store's id, which its log's header carries too.
const STORE_ID_KEY: &str = "store-id";

/// The store's id; none in a store an older Cairn made (or a new one).
pub(super) fn store_id(db: &Database) -> Result<Option<u64>, redb::Error> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.get(STORE_ID_KEY)?.map(|v| v.value()))
}

/// Durably records the store's id.
pub(super) fn set_store_id(db: &Database, id: u64) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate).map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.insert(STORE_ID_KEY, id).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Whether the store was last opened with a log and not closed cleanly.
pub(super) fn left_open(db: &Database) -> Result<bool, redb::Error> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta.get(OPEN_KEY)?.is_some_and(|v| v.value() == 1))
}

/// Durably records that the store is open (or was closed cleanly).
pub(super) fn mark_open(db: &Database, open: bool) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate).map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.insert(OPEN_KEY, u64::from(open)).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// The log generation the store's last checkpoint stored.
fn stored_generation(db: &Database) -> Result<u64, String> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let meta = txn.open_table(META).map_err(|e| e.to_string())?;
    let generation = meta.get(GENERATION_KEY).map_err(|e| e.to_string())?.map_or(1, |v| v.value());
    Ok(generation)
}

/// Damage in the log's records since the last checkpoint, if any.
pub(super) fn log_damage(db: &Database, wal: &Wal) -> Result<Option<wal::LogDamage>, String> {
    wal.damage(stored_generation(db)?).map_err(|e| e.to_string())
}

/// Moves the store's checkpoint to log generation `next`, so the records
/// in the log no longer count (salvaging a store behind its log).
pub(super) fn supersede_log(db: &Database, wal: &mut Wal, next: u64) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    commit_checkpoint(txn, wal, next)
}

/// `(stored, logged)` when the log's records are of a later generation than
/// the store's checkpoint: a record of generation g is written only after
/// the checkpoint that stored g is durable, so the redb file lost a durable
/// commit (damage repaired by rolling it back, or an old copy put back).
pub(super) fn log_ahead(db: &Database, wal: &Wal) -> Result<Option<(u64, u64)>, String> {
    let stored = stored_generation(db)?;
    Ok(wal
        .first_generation()
        .map_err(|e| e.to_string())?
        .filter(|&logged| logged > stored)
        .map(|logged| (stored, logged)))
}

/// Commits `txn` durably with the log's generation `next` stored, so the
/// log's records so far no longer count, and restarts the log.
fn commit_checkpoint(mut txn: WriteTransaction, wal: &mut Wal, next: u64) -> Result<(), String> {
    txn.set_durability(Durability::Immediate).map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.insert(GENERATION_KEY, next).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    wal.restart(next);
    Ok(())
}

/// A durable redb commit of everything so far; the log restarts.
fn checkpoint(db: &Database, wal: &mut Wal) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    commit_checkpoint(txn, wal, wal.generation() + 1)
}

fn checkpoint_or_warn(db: &Database, wal: Option<&mut Wal>) {
    if let Some(wal) = wal {
        let bytes = wal.len();
        let started = std::time::Instant::now();
        match checkpoint(db, wal) {
            Ok(()) => {
                tracing::debug!(bytes, ms = started.elapsed().as_millis() as u64, "checkpointed the write-ahead log")
            }
            Err(reason) => tracing::warn!(
                %reason,
                "cannot checkpoint the store; the write-ahead log keeps growing and is replayed at the next start"
            ),
        }
    }
}

/// Replays the log's records since the last checkpoint onto `db` (which
/// redb's own recovery brought back to that checkpoint), then checkpoints.
/// Returns how many records were replayed. For opening a store: every
/// whole record counts, also one whose commit had not been acknowledged
/// when the process died.
pub(super) fn recover(db: &Database, wal: &mut Wal) -> Result<usize, String> {
    replay_log(db, wal, false)
}

/// [`recover`] for a reopen after a failed commit, in the process that
/// wrote the log: only the records it synced count. The failed group's
/// record may be whole in the file (written before the group was applied),
/// but the writer retries that group itself, so replaying it too would
/// apply it twice.
fn recover_synced(db: &Database, wal: &mut Wal) -> Result<usize, String> {
    replay_log(db, wal, true)
}

fn replay_log(db: &Database, wal: &mut Wal, synced_only: bool) -> Result<usize, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let generation = {
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let stored = meta.get(GENERATION_KEY).map_err(|e| e.to_string())?.map_or(1, |v| v.value());
        stored
    };
    let records = match synced_only {
        true if generation == wal.generation() => wal.synced_records(),
        true => Err(std::io::Error::other(format!(
            "the store's checkpoint is at log generation {generation} but the log writes generation {}",
            wal.generation()
        ))),
        false => wal.records(generation),
    }
    .map_err(|e| format!("{}: {e}", wal.path().display()))?;
    if records.is_empty() {
        wal.restart(generation);
        return Ok(0);
    }
    for (i, payload) in records.iter().enumerate() {
        let batches = wal::decode_group(payload).map_err(|e| format!("record {i} of {}: {e}", wal.path().display()))?;
        for result in apply(&txn, batches.iter(), &mut SignalDelta::default())? {
            if let Err(refused) = result {
                tracing::warn!(%refused, "a logged batch was refused on replay, as it was when it was committed; nothing of it is applied");
            }
        }
    }
    commit_checkpoint(txn, wal, generation + 1)?;
    tracing::info!(records = records.len(), "replayed the write-ahead log");
    Ok(records.len())
}

fn apply<'a>(
    txn: &WriteTransaction,
    batches: impl Iterator<Item = &'a Batch>,
    load: &mut SignalDelta,
) -> Result<Vec<Result<(), CommitError>>, String> {
    let mut results = Vec::new();
    {
        let mut runs = txn.open_table(RUNS).map_err(|e| e.to_string())?;
        let mut journal_t = txn.open_table(JOURNAL).map_err(|e| e.to_string())?;
        let mut completions = txn.open_table(COMPLETIONS).map_err(|e| e.to_string())?;
        let mut timers = txn.open_table(TIMERS).map_err(|e| e.to_string())?;
        let mut signals = txn.open_table(SIGNALS).map_err(|e| e.to_string())?;
        let mut history = txn.open_table(HISTORY).map_err(|e| e.to_string())?;
        let mut attempts = txn.open_table(ATTEMPTS).map_err(|e| e.to_string())?;
        let mut deployments = txn.open_table(DEPLOYMENTS).map_err(|e| e.to_string())?;
        let mut schedules = txn.open_table(SCHEDULES).map_err(|e| e.to_string())?;
        let mut buckets = txn.open_table(BUCKETS).map_err(|e| e.to_string())?;
        let mut components = txn.open_table(COMPONENTS).map_err(|e| e.to_string())?;
        let mut compiled = txn.open_table(COMPILED).map_err(|e| e.to_string())?;
        let mut index = txn.open_table(RUN_INDEX).map_err(|e| e.to_string())?;
        let mut run_timers = txn.open_table(RUN_TIMERS).map_err(|e| e.to_string())?;
        for batch in batches {
            // A batch whose continue-as-new already landed (a retried
            // commit) landed whole: applying its other writes again would
            // put the ended generation's entries into the new journal.
            if continued_already(&runs, batch).map_err(|e| e.to_string())? {
                results.push(Ok(()));
                continue;
            }
            // Validate first so a refused batch writes nothing.
            if let Some(dup) = duplicate_append(&journal_t, batch).map_err(|e| e.to_string())? {
                results.push(Err(dup));
                continue;
            }
            if let Some(conflict) = deployment_conflict(&deployments, batch).map_err(|e| e.to_string())? {
                results.push(Err(conflict));
                continue;
            }
            if let Some(conflict) = schedule_conflict(&schedules, batch).map_err(|e| e.to_string())? {
                results.push(Err(conflict));
                continue;
            }
            for write in batch {
                let r: Result<(), redb::StorageError> = (|| {
                    match write {
                        Write::PutRun(meta) => {
                            let bytes = serde_json::to_vec(meta).expect("run metadata serialises");
                            let old = runs.insert(meta.id.as_str(), bytes.as_slice())?;
                            let old = super::index::previous(old.as_ref().map(|v| v.value()));
                            super::index::update(&mut index, old.as_ref(), meta)?;
                            if meta.status.is_final() {
                                // Nothing reads an ended run's signals.
                                let run = meta.id.as_str();
                                signals.retain_in((run, 0)..=(run, u64::MAX), |_, value| {
                                    load.changed(run, -1, -(value.len() as i64));
                                    false
                                })?;
                            }
                        }
                        Write::Append { run_id, record } => {
                            journal_t.insert((run_id.as_str(), record.seq), journal::encode(record).as_slice())?;
                        }
                        Write::PutCompletion { run_id, handle, completion } => {
                            // Checked here, in the transaction that writes
                            // it: a completion of a generation the run has
                            // left would take the place of the current
                            // generation's at the same handle number.
                            if let Some(generation) = completion.generation {
                                let current = runs
                                    .get(run_id.as_str())?
                                    .and_then(|v| serde_json::from_slice::<RunMeta>(v.value()).ok())
                                    .map(|m| m.generation);
                                if current.is_some_and(|g| g != generation) {
                                    return Ok(());
                                }
                            }
                            let bytes = serde_json::to_vec(completion).expect("completions serialise");
                            completions.insert((run_id.as_str(), *handle), bytes.as_slice())?;
                        }
                        Write::DeleteCompletion { run_id, handle } => {
                            completions.remove((run_id.as_str(), *handle))?;
                        }
                        Write::PutTimer { due_ms, run_id, handle } => {
                            timers.insert((*due_ms, run_id.as_str(), *handle), ())?;
                            run_timers.insert((run_id.as_str(), *due_ms, *handle), ())?;
                        }
                        Write::DeleteTimer { due_ms, run_id, handle } => {
                            timers.remove((*due_ms, run_id.as_str(), *handle))?;
                            run_timers.remove((run_id.as_str(), *due_ms, *handle))?;
                        }
                        Write::PutSignal { run_id, seq, signal } => {
                            // A signal checked against a live run whose end
                            // committed first: nothing would ever read it.
                            let ended = runs
                                .get(run_id.as_str())?
                                .and_then(|v| serde_json::from_slice::<RunMeta>(v.value()).ok())
                                .is_some_and(|m| m.status.is_final());
                            if ended {
                                return Ok(());
                            }
                            let bytes = serde_json::to_vec(signal).expect("signals serialise");
                            let old = signals.insert((run_id.as_str(), *seq), bytes.as_slice())?;
                            let (count, old_bytes) = old.map_or((1, 0), |old| (0, old.value().len() as i64));
                            load.changed(run_id, count, bytes.len() as i64 - old_bytes);
                        }
                        Write::DeleteSignal { run_id, seq } => {
                            if let Some(old) = signals.remove((run_id.as_str(), *seq))? {
                                load.changed(run_id, -1, -(old.value().len() as i64));
                            }
                        }
                        Write::ContinueAsNew { meta, start } => {
                            let run = meta.id.as_str();
                            let ended = meta.generation.saturating_sub(1);
                            let mut old = Vec::new();
                            for row in journal_t.range((run, 0)..=(run, u64::MAX))? {
                                let (k, v) = row?;
                                old.push((k.value().1, v.value().to_vec()));
                            }
                            let end_seq = old.last().map_or(0, |(seq, _)| seq + 1);
                            for (seq, bytes) in old {
                                history.insert((run, ended, seq), bytes.as_slice())?;
                                journal_t.remove((run, seq))?;
                            }
                            // The ended generation's journal says how it ended.
                            let end = journal::Record {
                                seq: end_seq,
                                at_ms: start.at_ms,
                                entry: journal::Entry::ContinuedAsNew { input: meta.input.clone() },
                            };
                            history.insert((run, ended, end_seq), journal::encode(&end).as_slice())?;
                            // Completions and failed-attempt counts are keyed
                            // by handle: the next generation's handles start
                            // afresh.
                            completions.retain_in((run, 0)..=(run, u32::MAX), |_, _| false)?;
                            attempts.retain_in((run, 0)..=(run, u32::MAX), |_, _| false)?;
                            let mut armed: Vec<(u64, u32)> = Vec::new();
                            for row in run_timers.range((run, 0, 0)..=(run, u64::MAX, u32::MAX))? {
                                let (_, due, handle) = row?.0.value();
                                armed.push((due, handle));
                            }
                            for (due, handle) in armed {
                                timers.remove((due, run, handle))?;
                                run_timers.remove((run, due, handle))?;
                            }
                            journal_t.insert((run, 0), journal::encode(start).as_slice())?;
                            let bytes = serde_json::to_vec(meta.as_ref()).expect("run metadata serialises");
                            let old = runs.insert(run, bytes.as_slice())?;
                            let old = super::index::previous(old.as_ref().map(|v| v.value()));
                            super::index::update(&mut index, old.as_ref(), meta)?;
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
                        Write::PutSchedule(schedule) => {
                            let bytes = serde_json::to_vec(schedule).expect("schedules serialise");
                            schedules.insert(schedule.name.as_str(), bytes.as_slice())?;
                        }
                        Write::DeleteSchedule { name } => {
                            schedules.remove(name.as_str())?;
                        }
                        Write::DeleteRun { run_id } => {
                            let run = run_id.as_str();
                            if let Some(old) = runs.remove(run)? {
                                if let Some(old) = super::index::previous(Some(old.value())) {
                                    super::index::remove(&mut index, &old)?;
                                }
                            }
                            journal_t.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)?;
                            history.retain_in((run, 0, 0)..=(run, u32::MAX, u64::MAX), |_, _| false)?;
                            completions.retain_in((run, 0)..=(run, u32::MAX), |_, _| false)?;
                            attempts.retain_in((run, 0)..=(run, u32::MAX), |_, _| false)?;
                            signals.retain_in((run, 0)..=(run, u64::MAX), |_, value| {
                                load.changed(run, -1, -(value.len() as i64));
                                false
                            })?;
                            let mut armed = Vec::new();
                            run_timers.retain_in((run, 0, 0)..=(run, u64::MAX, u32::MAX), |(_, due, handle), _| {
                                armed.push((due, handle));
                                false
                            })?;
                            for (due, handle) in armed {
                                timers.remove((due, run, handle))?;
                            }
                        }
                        Write::Promote { workflow, key, admission } => {
                            let mut ids = super::index::promotable(&index, workflow, key, admission.limit)?;
                            if let Some(rate) = admission.rate {
                                // A token bucket per key: full on first use,
                                // refilled by the time since it was last read.
                                let now = crate::runtime::now_ms();
                                let every = rate.every_ms.max(1);
                                let cap = every.saturating_mul(u64::from(rate.burst.max(1)));
                                let bucket = format!("{workflow}\0{key}");
                                let (credit, at) = buckets
                                    .get(bucket.as_str())?
                                    .and_then(|v| serde_json::from_slice::<(u64, u64)>(v.value()).ok())
                                    .unwrap_or((cap, now));
                                let credit = credit.saturating_add(now.saturating_sub(at)).min(cap);
                                ids.truncate((credit / every) as usize);
                                let left = credit - ids.len() as u64 * every;
                                let row = serde_json::to_vec(&(left, now)).expect("a pair of numbers serialises");
                                buckets.insert(bucket.as_str(), row.as_slice())?;
                            }
                            for id in ids {
                                let Some(mut meta) =
                                    super::index::previous(runs.get(id.as_str())?.as_ref().map(|v| v.value()))
                                else {
                                    continue;
                                };
                                let old = meta.clone();
                                meta.status = crate::store::RunStatus::Running;
                                meta.updated_ms = crate::runtime::now_ms();
                                let bytes = serde_json::to_vec(&meta).expect("run metadata serialises");
                                runs.insert(id.as_str(), bytes.as_slice())?;
                                super::index::update(&mut index, Some(&old), &meta)?;
                            }
                        }
                        Write::DeleteComponent { sha256 } => {
                            let sha = sha256.as_str();
                            // Not while a deployment (committed before, or
                            // earlier in this transaction) refers to it.
                            let mut referred = false;
                            for row in deployments.iter()? {
                                let (_, row) = row?;
                                if let Ok(d) = serde_json::from_slice::<crate::store::Deployment>(row.value()) {
                                    referred |= d.versions.iter().chain(&d.retired).any(|v| v.sha256 == sha);
                                }
                            }
                            if !referred {
                                components.remove(sha)?;
                                compiled.retain_in((sha, "")..=(sha, "\u{10ffff}"), |_, _| false)?;
                            }
                        }
                    }
                    Ok(())
                })();
                r.map_err(|e| e.to_string())?;
            }
            results.push(Ok(()));
        }
    }
    Ok(results)
}

/// Whether `batch` continues a run as new into a generation the store
/// already holds: a retried commit that landed before its failure was
/// reported.
fn continued_already(runs: &redb::Table<&str, &[u8]>, batch: &Batch) -> Result<bool, redb::StorageError> {
    for write in batch {
        if let Write::ContinueAsNew { meta, .. } = write {
            let stored = runs.get(meta.id.as_str())?.and_then(|v| serde_json::from_slice::<RunMeta>(v.value()).ok());
            if stored.is_some_and(|m| m.generation >= meta.generation) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A deployment write made from a revision that is not the stored one.
fn deployment_conflict(
    table: &redb::Table<&str, &[u8]>,
    batch: &Batch,
) -> Result<Option<CommitError>, redb::StorageError> {
    for write in batch {
        if let Write::PutDeployment(d) = write {
            let stored: Option<crate::store::Deployment> =
                table.get(d.name.as_str())?.and_then(|v| serde_json::from_slice(v.value()).ok());
            if let Some(conflict) = crate::store::deployment_conflict(stored.as_ref(), d) {
                return Ok(Some(conflict));
            }
        }
    }
    Ok(None)
}

/// A schedule write made from a revision that is not the stored one.
fn schedule_conflict(
    table: &redb::Table<&str, &[u8]>,
    batch: &Batch,
) -> Result<Option<CommitError>, redb::StorageError> {
    for write in batch {
        if let Write::PutSchedule(s) = write {
            let stored: Option<crate::store::Schedule> =
                table.get(s.name.as_str())?.and_then(|v| serde_json::from_slice(v.value()).ok());
            if let Some(conflict) = crate::store::schedule_conflict(stored.as_ref(), s) {
                return Ok(Some(conflict));
            }
        }
    }
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    /// An append of record `seq`; `other` changes its bytes.
    fn append(run_id: &str, seq: u64, other: bool) -> Write {
        let mut record = crate::store::tests::record(seq);
        record.at_ms += u64::from(other);
        Write::Append { run_id: run_id.into(), record }
    }

    /// A redb file as redb's crash recovery leaves it: at the last
    /// checkpoint (here: empty).
    fn checkpointed(dir: &std::path::Path) -> Database {
        let db = Database::create(dir.join("cairn.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_tables(&txn).unwrap();
        txn.commit().unwrap();
        db
    }

    /// A new store in `dir` and its log, recovered (empty).
    fn fresh(dir: &std::path::Path) -> (Database, Wal) {
        let db = checkpointed(dir);
        let mut wal = Wal::open(dir, true).unwrap().unwrap();
        assert_eq!(recover(&db, &mut wal).unwrap(), 0, "a new log is empty");
        (db, wal)
    }

    /// What a crash (or a failed commit's reopen) leaves of the store in
    /// `live`: redb back at its checkpoint, the log as it was.
    fn crashed(live: &std::path::Path) -> (tempfile::TempDir, Database, Wal) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(live.join(wal::FILE_NAME), dir.path().join(wal::FILE_NAME)).unwrap();
        let db = checkpointed(dir.path());
        let wal = Wal::open(dir.path(), false).unwrap().unwrap();
        (dir, db, wal)
    }

    fn journal(db: &Database, run_id: &str) -> Vec<Vec<u8>> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(JOURNAL).unwrap();
        table.range((run_id, 0)..=(run_id, u64::MAX)).unwrap().map(|row| row.unwrap().1.value().to_vec()).collect()
    }

    /// What redb lost (its commits since the last checkpoint are not
    /// durable) comes back from the log, once; a batch refused live is in
    /// the log but is refused again on replay.
    #[test]
    fn the_log_brings_back_what_redb_lost_and_nothing_it_refused() {
        let live = tempfile::tempdir().unwrap();
        let (db, mut wal) = fresh(live.path());
        let group = [
            vec![append("r", 0, false), append("r", 1, false)],
            vec![append("q", 0, false)],
            // Same seq, other bytes: refused (logged with its group, and
            // refused again when the log is replayed).
            vec![append("r", 1, true)],
        ];
        let results =
            commit_group(&db, Some(&mut wal), &group.iter().collect::<Vec<_>>(), true, &mut SignalDelta::default())
                .unwrap();
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(CommitError::DuplicateSeq { seq: 1, .. })), "{results:?}");
        commit_group(&db, Some(&mut wal), &[&vec![append("r", 2, false)]], true, &mut SignalDelta::default()).unwrap();
        let expected = journal(&db, "r");
        assert_eq!(expected.len(), 3);
        drop(wal);

        // The crash: redb comes back at its checkpoint, the log as it was.
        let (_crashed, db, mut wal) = crashed(live.path());
        assert_eq!(recover(&db, &mut wal).unwrap(), 2, "both logged groups are replayed");
        assert_eq!(journal(&db, "r"), expected);
        assert_eq!(journal(&db, "q").len(), 1);

        // Replayed records count no more: the checkpoint moved the generation.
        assert_eq!(recover(&db, &mut wal).unwrap(), 0);
        commit_group(&db, Some(&mut wal), &[&vec![append("r", 3, false)]], true, &mut SignalDelta::default()).unwrap();
        assert_eq!(wal.records(wal.generation()).unwrap().len(), 1, "the log restarted from the top");
        assert_eq!(journal(&db, "r").len(), 4);
    }

    /// A redb commit can fail after its group reached the log. The writer
    /// then reopens the store, which takes redb back to its checkpoint, and
    /// replays the log, which brings the group in; then it retries the same
    /// group. The retry must be accepted (the entries are the same bytes),
    /// not refused as a duplicate, and nothing may be stored twice.
    #[test]
    fn a_group_retried_after_its_log_append_is_accepted_and_stored_once() {
        let live = tempfile::tempdir().unwrap();
        let (db, mut wal) = fresh(live.path());
        let group = [vec![append("r", 0, false), append("r", 1, false)], vec![append("q", 0, false)]];
        let batches: Vec<&Batch> = group.iter().collect();
        commit_group(&db, Some(&mut wal), &batches, true, &mut SignalDelta::default()).unwrap();
        let expected = (journal(&db, "r"), journal(&db, "q"));
        drop(wal);

        // The failed commit: redb at its checkpoint, the group in the log.
        let (_failed, db, mut wal) = crashed(live.path());
        assert_eq!(recover(&db, &mut wal).unwrap(), 1, "the reopen replays the logged group");
        let results = commit_group(&db, Some(&mut wal), &batches, true, &mut SignalDelta::default()).unwrap();
        assert!(results.iter().all(Result::is_ok), "the retry was refused: {results:?}");
        assert_eq!((journal(&db, "r"), journal(&db, "q")), expected, "the journals differ from the live store's");
        // A different record under a seq the retry stored is still refused.
        let results =
            commit_group(&db, Some(&mut wal), &[&vec![append("r", 1, true)]], true, &mut SignalDelta::default())
                .unwrap();
        assert!(matches!(results[0], Err(CommitError::DuplicateSeq { seq: 1, .. })), "{results:?}");
    }

    /// A store whose first group (`r` seq 0) is committed and whose second
    /// group's record (`r` seq 1) is written to the log but not synced, as
    /// a commit that then fails leaves it.
    fn one_committed_one_written(dir: &std::path::Path) -> (Database, Wal, wal::Written) {
        let (db, mut wal) = fresh(dir);
        commit_group(&db, Some(&mut wal), &[&vec![append("r", 0, false)]], true, &mut SignalDelta::default()).unwrap();
        let written = wal.write(&wal::encode_group([vec![append("r", 1, false)]].iter())).unwrap();
        (db, wal, written)
    }

    /// A failed commit leaves the writer to reopen the store and retry the
    /// group. The group's record may be whole in the log (it is written
    /// before the group is applied), so the reopen replays only synced
    /// records, or the retry would apply the group a second time. A new
    /// process, which retries nothing, replays every whole record.
    #[test]
    fn a_reopen_after_a_failed_commit_replays_only_what_was_synced() {
        let live = tempfile::tempdir().unwrap();
        let (_db, mut wal, _unsynced) = one_committed_one_written(live.path());

        let (_crashed, restarted, mut log) = crashed(live.path());
        assert_eq!(recover(&restarted, &mut log).unwrap(), 2, "a new process replays every whole record");

        let reopened_dir = tempfile::tempdir().unwrap();
        let reopened = checkpointed(reopened_dir.path());
        assert_eq!(recover_synced(&reopened, &mut wal).unwrap(), 1, "the reopen replayed the failed group");
        assert_eq!(journal(&reopened, "r").len(), 1);
    }

    /// The same when the record was synced and redb's commit then failed:
    /// the writer retries the group, so the log stops counting its record.
    #[test]
    fn a_group_whose_redb_commit_failed_after_its_sync_is_not_replayed_by_the_reopen() {
        let live = tempfile::tempdir().unwrap();
        let (_db, mut wal, written) = one_committed_one_written(live.path());
        let start = written.start();
        wal.sync(written).unwrap();
        wal.forget_from(start);

        let reopened_dir = tempfile::tempdir().unwrap();
        let reopened = checkpointed(reopened_dir.path());
        assert_eq!(recover_synced(&reopened, &mut wal).unwrap(), 1);
        // The retry then stores the group once.
        let results =
            commit_group(&reopened, Some(&mut wal), &[&vec![append("r", 1, false)]], true, &mut SignalDelta::default())
                .unwrap();
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(journal(&reopened, "r").len(), 2);
    }

    /// Components skip the log: their group is a durable redb commit and
    /// a checkpoint.
    #[test]
    fn a_component_is_committed_to_redb_and_restarts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut wal) = fresh(dir.path());
        commit_group(&db, Some(&mut wal), &[&vec![append("r", 0, false)]], true, &mut SignalDelta::default()).unwrap();
        let before = wal.generation();
        let component = Write::PutComponent { sha256: "ab".into(), bytes: vec![7u8; 1 << 16].into() };
        commit_group(&db, Some(&mut wal), &[&vec![component]], true, &mut SignalDelta::default()).unwrap();
        assert_eq!(wal.generation(), before + 1);
        assert_eq!(wal.len(), 0, "nothing of the component was logged");
    }
}
