//! The embedded backend: one redb file and its write-ahead log in a data
//! directory.
//!
//! Every write goes through the [`GroupCommitWriter`] as a [`Batch`] of
//! [`Write`]s; a batch is applied atomically and is durable (in the log,
//! fdatasync'd) when its acknowledgement arrives. Reads use redb's MVCC
//! read transactions and never block the writer. Run queries are answered
//! from index tables the writer keeps with each run's row.

mod check;
mod index;
#[cfg(feature = "fault-injection")]
pub mod power;
#[cfg(not(feature = "fault-injection"))]
#[path = "power_off.rs"]
mod power;
mod schema;
mod wal;
mod writer;

pub use wal::LogDamage;
use writer::GroupCommitWriter;

use super::{
    test_hook, Ack, BackendError, Batch, Buffered, CommitError, Deployment, RunMeta, RunPage, RunQuery, RunStatus,
    StoreError, StoredCompletion, StoredSignal, Timer,
};
use crate::journal::{self, Record};
use redb::{Database, ReadableDatabase, ReadableTable};
use schema::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(BackendError::new(e.into()))
}

fn open_err(path: &Path) -> impl FnOnce(redb::DatabaseError) -> StoreError + '_ {
    move |e| StoreError::Open { path: path.to_owned(), reason: e.to_string() }
}

/// Makes a new, empty `cairn.redb` in one step: built and synced as
/// `cairn.redb.new`, then renamed into place and the directory synced. A
/// power cut on the way leaves no `cairn.redb` (and the next start begins
/// again), never a file redb cannot open.
fn create_store_file(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let wal_path = dir.join(wal::FILE_NAME);
    if std::fs::metadata(&wal_path).is_ok_and(|m| m.len() > 0) {
        return Err(StoreError::StoreFileMissing { path: path.to_owned(), log: wal_path });
    }
    let directory = |source| StoreError::Directory { path: dir.to_owned(), source };
    let fresh = dir.join("cairn.redb.new");
    if fresh.exists() {
        // Left by a start that stopped while creating the store: nothing
        // was ever acknowledged from it.
        std::fs::remove_file(&fresh).map_err(directory)?;
        power::removed(&fresh);
    }
    {
        let db = DbCell::open_file(&fresh).map_err(open_err(&fresh))?;
        let txn = db.begin_write().map_err(db_err)?;
        create_tables(&txn).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
    }
    std::fs::rename(&fresh, path).map_err(directory)?;
    power::renamed(&fresh, path);
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(directory)?;
    power::dir_synced();
    Ok(())
}

/// A copy of `file` kept beside it as `NAME.WHY-MS` before salvage gives up
/// on its records.
fn keep_copy(dir: &Path, file: &Path, why: &str) -> Result<PathBuf, StoreError> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let kept = dir.join(format!("{name}.{why}-{ms}"));
    std::fs::copy(file, &kept).map_err(|source| StoreError::Wal { path: kept.clone(), source })?;
    Ok(kept)
}

/// A fresh store id: random (the standard library's hasher keys come from
/// the operating system), mixed with the time.
fn new_store_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// The open database file. After an I/O error redb refuses every further
/// write until the file is closed and reopened, so the writer can swap it.
pub(crate) struct DbCell {
    path: PathBuf,
    current: std::sync::RwLock<Option<Arc<Database>>>,
    /// Why commits are failing, while they are.
    failing: std::sync::Mutex<Option<String>>,
}

impl DbCell {
    fn open_file(path: &Path) -> Result<Database, redb::DatabaseError> {
        // redb's default cache is 1 GiB and counts toward RSS.
        let mut builder = Database::builder();
        builder.set_cache_size(64 << 20);
        match power::TracedBackend::open(path)? {
            Some(traced) => builder.create_with_backend(traced),
            None => builder.create(path),
        }
    }

    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(StoreError::Reopening)
    }

    /// Closes the file (once every reader has let go of it) and opens it
    /// again; redb's recovery runs on open, then `prepare`, before readers
    /// see the file. The caller drops its own handle first.
    pub(crate) fn reopen(
        &self,
        prepare: impl FnOnce(&Database) -> Result<(), String>,
    ) -> Result<Arc<Database>, String> {
        let old = self.current.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut old) = old {
            while let Err(shared) = Arc::try_unwrap(old) {
                old = shared;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let db = Self::open_file(&self.path).map_err(|e| e.to_string())?;
        prepare(&db)?;
        let db = Arc::new(db);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
        Ok(db)
    }

    pub(crate) fn database(&self) -> Option<Arc<Database>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub(crate) fn set_failing(&self, reason: Option<String>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }
}

/// The store of one data directory.
pub(crate) struct RedbStorage {
    cell: Arc<DbCell>,
    writer: GroupCommitWriter,
    commits: Arc<crate::metrics::CommitMetrics>,
    signals: Arc<writer::SignalLoad>,
}

impl RedbStorage {
    /// Opens (creating if needed) the store in `dir`, replaying its log.
    /// With `durable` false, commits are not fsync'd and no log is kept
    /// (benchmarks); with `salvage`, a damaged, cut, foreign or missing log
    /// is given up as far as it must be, and what was given up is said.
    pub(crate) fn open(dir: &Path, durable: bool, salvage: bool) -> Result<(RedbStorage, Option<String>), StoreError> {
        Self::open_inner(dir, durable, salvage)
    }

    fn open_inner(dir: &Path, durable: bool, salvage: bool) -> Result<(RedbStorage, Option<String>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.to_owned(), source })?;
        let path = dir.join("cairn.redb");
        if !path.exists() {
            create_store_file(dir, &path)?;
        }
        let db = DbCell::open_file(&path).map_err(open_err(&path))?;
        let txn = db.begin_write().map_err(db_err)?;
        create_tables(&txn).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let wal_path = dir.join(wal::FILE_NAME);
        let mut salvaged = None;
        let log_missing = !wal_path.exists();
        if durable && log_missing && writer::left_open(&db).map_err(db_err)? {
            if !salvage {
                return Err(StoreError::LogMissing { path: wal_path });
            }
            salvaged = Some(format!("{} was missing: the store opened at its last checkpoint", wal_path.display()));
        }
        let mut log =
            wal::Wal::open(dir, durable).map_err(|source| StoreError::Wal { path: wal_path.clone(), source })?;
        let recovery = |reason: String| StoreError::Recovery { path: wal_path.clone(), reason };
        if let Some(log) = log.as_mut() {
            let store = writer::store_id(&db).map_err(db_err)?;
            // A log that is not this store's, or was cut, is refused before
            // any of it is read; salvaged, the foreign one counts for nothing.
            let mut foreign = None;
            match (store, log.identity()) {
                (Some(ours), Some(theirs)) if theirs.store != ours && theirs.store != wal::UNCLAIMED => {
                    foreign =
                        Some(format!("its header names store {:016x}, and this store is {ours:016x}", theirs.store))
                }
                (Some(_), Some(identity)) if log.file_len() < identity.allocated => {
                    if !salvage {
                        return Err(StoreError::LogTruncated {
                            path: wal_path,
                            len: log.file_len(),
                            made: identity.allocated,
                        });
                    }
                    salvaged = Some(format!(
                        "{} was cut short ({} of {} bytes): the store opened with the records that remain",
                        wal_path.display(),
                        log.file_len(),
                        identity.allocated
                    ));
                }
                (Some(_), None) if log.file_len() > 0 => foreign = Some(
                    "it does not start with a Cairn log header (it is damaged, or a log of an older Cairn put back)"
                        .into(),
                ),
                (Some(_), None) if !log_missing && writer::left_open(&db).map_err(db_err)? => {
                    if !salvage {
                        return Err(StoreError::LogTruncated { path: wal_path, len: 0, made: wal::FILE_HEADER });
                    }
                    salvaged =
                        Some(format!("{} was empty: the store opened at its last checkpoint", wal_path.display()));
                }
                _ => {}
            }
            if let Some(reason) = foreign {
                if !salvage {
                    return Err(StoreError::LogForeign { path: wal_path, reason });
                }
                let kept = keep_copy(dir, &wal_path, "foreign")?;
                salvaged = Some(format!(
                    "{} was not this store's log ({reason}): the store opened at its last checkpoint; the file is kept as {}",
                    wal_path.display(),
                    kept.display()
                ));
                let ours = store.expect("a foreign log is one of a store with an id");
                log.initialize(ours).map_err(|source| StoreError::Wal { path: wal_path.clone(), source })?;
            }
            // First: a log ahead of the file also looks damaged at the file's
            // generation (that generation's older records lie further on).
            let ahead = writer::log_ahead(&db, log).map_err(recovery)?;
            if let Some((stored, logged)) = ahead {
                if !salvage {
                    return Err(StoreError::StoreBehindLog { path, log: wal_path, stored, logged });
                }
                salvaged = Some(format!(
                    "{} was behind its log (generation {stored}, the log {logged}): the store opened as the file is, without the log's records",
                    path.display()
                ));
            }
            let damage = match ahead {
                Some(_) => None,
                None => writer::log_damage(&db, log).map_err(recovery)?,
            };
            if let Some(damage) = &damage {
                if !salvage {
                    return Err(StoreError::LogDamaged { path: wal_path, damage: damage.clone() });
                }
                let kept = keep_copy(dir, &wal_path, "damaged")?;
                salvaged = Some(format!(
                    "{} was damaged at byte {}: the store opened with the {} intact records before it; the damaged log is kept as {}",
                    wal_path.display(),
                    damage.offset,
                    damage.intact,
                    kept.display()
                ));
            }
            match ahead {
                // Salvaged: the log's records are given up for good.
                Some((_, logged)) => writer::supersede_log(&db, log, logged + 1),
                // Salvaged damage: the intact records are replayed, the
                // rest given up for good (or the next open finds it again).
                None if damage.is_some() => {
                    writer::recover(&db, log).and_then(|_| writer::supersede_log(&db, log, log.generation() + 1))
                }
                None => writer::recover(&db, log).map(drop),
            }
            .map_err(recovery)?;
            // A new store, or one an older Cairn made: its log gets its
            // header now that its records are in redb (its id last, so a
            // store with an id always has a log with its header).
            let id = match store {
                Some(id) => id,
                None => new_store_id(),
            };
            // Also after salvaging a cut log, whose header says it was longer.
            if log.identity().is_none_or(|i| i.store != id || log.file_len() < i.allocated) {
                log.initialize(id).map_err(|source| StoreError::Wal { path: wal_path.clone(), source })?;
            }
            if store.is_none() {
                writer::set_store_id(&db, id).map_err(recovery)?;
            }
        }
        if durable {
            // Until a clean close says otherwise, the log holds steps the
            // redb file does not: a missing log is then caught.
            writer::mark_open(&db, true).map_err(|reason| StoreError::Recovery { path: wal_path.clone(), reason })?;
        }
        // A store opened without durability replays a log it finds, and
        // keeps none.
        let log = log.filter(|_| durable);
        index::build_if_missing(&db)?;
        let commits = Arc::new(crate::metrics::CommitMetrics::default());
        let signals = Arc::new(writer::SignalLoad::counted(&db).map_err(db_err)?);
        let cell = Arc::new(DbCell {
            path,
            current: std::sync::RwLock::new(Some(Arc::new(db))),
            failing: std::sync::Mutex::new(None),
        });
        let writer = GroupCommitWriter::start(cell.clone(), log, durable, commits.clone(), signals.clone());
        Ok((RedbStorage { cell, writer, commits, signals }, salvaged))
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.cell.get()
    }

    /// Runs redb's own integrity check of `dir/cairn.redb` (checksums and
    /// B-tree structure; repairs what it can). Needs exclusive access: call
    /// it before opening the store.
    pub(crate) fn verify_file(dir: &Path) -> Result<bool, StoreError> {
        let path = dir.join("cairn.redb");
        let mut db = Database::builder().set_cache_size(64 << 20).create(&path).map_err(open_err(&path))?;
        db.check_integrity().map_err(db_err)
    }

    /// One JSON row of a table keyed by name.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        what: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        let row = table.get(key).map_err(db_err)?;
        row.map(|v| parse_row(what, key, v.value())).transpose()
    }

    /// Every JSON row of a table keyed by name, in key order.
    fn all_json<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(parse_row(what, k.value(), v.value())?);
        }
        Ok(out)
    }

    fn read_journal(&self, run_id: &str) -> Result<Vec<Record>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(JOURNAL).map_err(db_err)?;
        let last = match table.range((run_id, 0)..=(run_id, u64::MAX)).map_err(db_err)?.next_back() {
            Some(row) => row.map_err(db_err)?.0.value().1,
            None => return Ok(Vec::new()),
        };
        let read = |seqs: std::ops::RangeInclusive<u64>| -> Result<Vec<Record>, StoreError> {
            let mut out = Vec::with_capacity(usize::try_from(seqs.end() - seqs.start()).unwrap_or(0).saturating_add(1));
            for row in table.range((run_id, *seqs.start())..=(run_id, *seqs.end())).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push(decode_record(run_id, k.value().1, v.value())?);
            }
            Ok(out)
        };
        if last < PARALLEL_JOURNAL_ENTRIES {
            return read(0..=last);
        }
        // A long journal (a replay of a long run) is read and decoded in two
        // halves at once, from the same read transaction.
        let middle = last / 2;
        let (head, tail) = std::thread::scope(|scope| {
            let tail = scope.spawn(|| read(middle + 1..=last));
            let head = read(0..=middle);
            (head, tail.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        let mut out = head?;
        out.extend(tail?);
        Ok(out)
    }
}

#[async_trait::async_trait]
impl super::Storage for RedbStorage {
    fn submit(&self, batch: Batch) -> Ack {
        self.writer.submit(batch)
    }

    async fn commit(&self, batch: Batch) -> Result<(), CommitError> {
        self.writer.commit(batch).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunMeta>, StoreError> {
        self.get_json(RUNS, "runs", run_id)
    }

    async fn runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        index::page(&*self.db()?, query)
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError> {
        index::count(&*self.db()?, &index::status_key(status))
    }

    async fn holding(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        index::holding(&*self.db()?, workflow, key, limit)
    }

    async fn queued(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        index::queued(&*self.db()?, workflow, key, limit)
    }

    async fn buckets(&self) -> Result<Vec<(String, String, u64, u64)>, StoreError> {
        index::buckets(&*self.db()?)
    }

    async fn ended_before(&self, workflow: &str, before_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        index::ended_before(&*self.db()?, workflow, before_ms, limit)
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<Record>, StoreError> {
        self.read_journal(run_id)
    }

    async fn history(&self, run_id: &str, generation: u32) -> Result<Vec<Record>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(HISTORY).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range((run_id, generation, 0)..=(run_id, generation, u64::MAX)).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(decode_record(run_id, k.value().2, v.value())?);
        }
        Ok(out)
    }

    async fn completions(&self, run_id: &str) -> Result<Vec<(u32, StoredCompletion)>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(COMPLETIONS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range((run_id, 0)..=(run_id, u32::MAX)).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let handle = k.value().1;
            out.push((handle, parse_row("completions", &format!("{run_id}/{handle}"), v.value())?));
        }
        Ok(out)
    }

    async fn signals(&self, run_id: &str) -> Result<Vec<(u64, StoredSignal)>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(SIGNALS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range((run_id, 0)..=(run_id, u64::MAX)).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let seq = k.value().1;
            out.push((seq, parse_row("signals", &format!("{run_id}/{seq}"), v.value())?));
        }
        Ok(out)
    }

    async fn attempts(&self, run_id: &str, handle: u32) -> Result<u32, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(ATTEMPTS).map_err(db_err)?;
        Ok(table.get((run_id, handle)).map_err(db_err)?.map_or(0, |v| v.value()))
    }

    async fn timers(&self, _shards: &[u32]) -> Result<Vec<Timer>, StoreError> {
        // One host, one shard: every timer is its own.
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(TIMERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (due_ms, run, handle) = key.value();
            out.push(Timer { due_ms, run_id: run.to_owned(), handle });
        }
        Ok(out)
    }

    async fn run_timers(&self, run_id: &str) -> Result<Vec<Timer>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(RUN_TIMERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range((run_id, 0, 0)..=(run_id, u64::MAX, u32::MAX)).map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (_, due_ms, handle) = key.value();
            out.push(Timer { due_ms, run_id: run_id.to_owned(), handle });
        }
        Ok(out)
    }

    async fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        self.get_json(DEPLOYMENTS, "deployments", name)
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.all_json(DEPLOYMENTS, "deployments")
    }

    async fn schedule(&self, name: &str) -> Result<Option<crate::store::Schedule>, StoreError> {
        self.get_json(SCHEDULES, "schedules", name)
    }

    async fn schedules(&self) -> Result<Vec<crate::store::Schedule>, StoreError> {
        self.all_json(SCHEDULES, "schedules")
    }

    async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(COMPONENTS).map_err(db_err)?;
        Ok(table.get(sha256).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    async fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(COMPILED).map_err(db_err)?;
        Ok(table.get((sha256, engine)).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    async fn buffered_signals(&self, run_id: &str) -> Result<Buffered, StoreError> {
        Ok(self.signals.of(run_id))
    }

    fn write_failure(&self) -> Option<String> {
        self.cell.failing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn commit_metrics(&self) -> &crate::metrics::CommitMetrics {
        &self.commits
    }

    async fn check(&self) -> Result<crate::store::CheckReport, StoreError> {
        self.check_tables()
    }
}

/// Journals at least this long are decoded on two threads.
const PARALLEL_JOURNAL_ENTRIES: u64 = 4096;

fn decode_record(run_id: &str, seq: u64, bytes: &[u8]) -> Result<Record, StoreError> {
    journal::decode(bytes).map_err(|source| StoreError::Journal { run_id: run_id.to_owned(), seq, source })
}

fn parse_row<T: serde::de::DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Row { table, key: key.to_owned(), source })
}
