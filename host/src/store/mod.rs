//! The store: redb schema, reads, and the single group-commit writer.
//!
//! Only this module opens redb. Every write goes through [`GroupCommitWriter`]
//! as a [`Batch`] of [`Write`]s; a batch is applied atomically and is durable
//! (fsync'd) when its acknowledgement arrives. Reads use redb's MVCC read
//! transactions and never block the writer.

mod check;
#[cfg(feature = "fault-injection")]
pub mod power;
#[cfg(not(feature = "fault-injection"))]
#[path = "power_off.rs"]
mod power;
mod schema;
mod wal;

pub use wal::LogDamage;
mod writer;

pub use check::CheckReport;
pub use schema::{ComponentKind, Deployment, ParentLink, RunMeta, RunStatus, StoredCompletion, StoredSignal, Version};
pub use writer::{durable, Batch, Buffered, CommitError, GroupCommitWriter, Write};

use crate::journal::{self, DecodeError, Record};
use redb::{Database, ReadableDatabase, ReadableTable};
use schema::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The data directory could not be created or opened.
    #[error("cannot use data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The write-ahead log could not be opened or read.
    #[error("cannot use the write-ahead log {path}: {source}. Check the file's permissions and the disk")]
    Wal {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The write-ahead log could not be replayed into the store.
    #[error("cannot replay the write-ahead log {path}: {reason}. Nothing was changed; keep the file (it holds acknowledged steps) and report this")]
    Recovery {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The write-ahead log is damaged: a record that does not check out,
    /// with whole records after it (not a torn last record).
    #[error("{} is damaged at byte {}: the record there does not check out, yet whole records follow it (the first at byte {}), so it is not a write a crash cut short. Nothing was opened or changed. Keep a copy of the data directory; then `cairn check --data DIR --salvage` opens the store with the {} intact records before the damage (the steps logged after byte {} are lost) and keeps the damaged log beside it", path.display(), damage.offset, damage.resumes_at, damage.intact, damage.offset)]
    LogDamaged {
        /// The log.
        path: PathBuf,
        /// Where.
        damage: wal::LogDamage,
    },
    /// The redb file is older than its log: it lost a durable commit.
    #[error("{} is behind its write-ahead log: its last checkpoint is log generation {stored}, but {} holds records of generation {logged}, written after a later checkpoint the file no longer has (it was damaged and rolled back, or an older copy was put in its place). Nothing was opened or changed; replaying the log onto it would be wrong, and ignoring the log would drop acknowledged steps. Restore the newer file (or a backup) if you have it; `cairn check --data DIR --salvage` opens the store as the file is now, without the log's steps", path.display(), log.display())]
    StoreBehindLog {
        /// The redb file.
        path: PathBuf,
        /// The log.
        log: PathBuf,
        /// The generation the file's checkpoint stored.
        stored: u64,
        /// The generation of the log's records.
        logged: u64,
    },
    /// The write-ahead log is shorter than it was made: it was cut.
    #[error("{} is {len} bytes, but it was made {made} bytes long and a log never shrinks: it was cut short (copied in part, or truncated), and the steps logged past its end are lost. Nothing was opened or changed. Put the whole file back if you have it; or `cairn check --data DIR --salvage` opens the store with the records that remain", path.display())]
    LogTruncated {
        /// The log.
        path: PathBuf,
        /// Its length now.
        len: u64,
        /// The length its header says it was made.
        made: u64,
    },
    /// The write-ahead log is not this store's.
    #[error("{} is not this store's write-ahead log: {reason}. Nothing was opened or changed; replaying it would write another store's steps into this one. Put this store's own log back; or `cairn check --data DIR --salvage` opens the store at its last checkpoint without that log's records (the file is kept beside it)", path.display())]
    LogForeign {
        /// The log.
        path: PathBuf,
        /// Why it is not.
        reason: String,
    },
    /// The redb file is gone but its log is there.
    #[error("{} is missing, but {} is here: the store's file was deleted or moved, and starting a new store would ignore that log's steps. Nothing was opened or changed. Put cairn.redb back; or move the log away to start an empty store", path.display(), log.display())]
    StoreFileMissing {
        /// The missing redb file.
        path: PathBuf,
        /// The log found.
        log: PathBuf,
    },
    /// The write-ahead log is gone while the store was not closed cleanly.
    #[error("{} is missing, but the store in this directory was not closed cleanly: the steps committed since its last checkpoint are only in that log. Nothing was opened or changed. Put the log back (from where it was moved, or a backup); or `cairn check --data DIR --salvage` opens the store at its last checkpoint, without those steps", path.display())]
    LogMissing {
        /// Where the log should be.
        path: PathBuf,
    },
    /// redb refused to open the file.
    #[error("cannot open store {path}: {source}. If another `cairn` process uses this --data directory, stop it or use another directory")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's error.
        source: redb::DatabaseError,
    },
    /// A read or write inside redb failed.
    #[error("store error: {0}")]
    Redb(#[from] redb::Error),
    /// The file is being reopened after a failed write; retry shortly.
    #[error("the store is reopening after a failed write (see the server log); retry in a moment")]
    Reopening,
    /// A journal record does not decode.
    #[error("run {run_id}, seq {seq}: {source}")]
    Journal {
        /// The run.
        run_id: String,
        /// The record.
        seq: u64,
        /// Why.
        source: DecodeError,
    },
    /// A stored row is not valid JSON of its type.
    #[error("damaged {table} row {key}: {source}")]
    Row {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// The parser error.
        source: serde_json::Error,
    },
    /// A batch was not committed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(e.into())
}

/// A test-only setting, read only by a build with the `fault-injection`
/// feature (the test suite's): a release binary ignores it.
fn test_hook(name: &str) -> Option<std::ffi::OsString> {
    match cfg!(feature = "fault-injection") {
        true => std::env::var_os(name),
        false => None,
    }
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
        let db = DbCell::open_file(&fresh).map_err(|source| StoreError::Open { path: fresh.clone(), source })?;
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
#[derive(Clone)]
pub struct Store {
    cell: Arc<DbCell>,
    writer: GroupCommitWriter,
    commits: Arc<crate::metrics::CommitMetrics>,
    signals: Arc<writer::SignalLoad>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, as `dir/cairn.redb`
    /// and its write-ahead log `dir/cairn.wal`, replaying the log's records
    /// since the last checkpoint. Every commit is durable (fsync) before it
    /// is acknowledged.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, true)
    }

    /// Like [`Store::open`]; with `durable` false, commits are not fsync'd
    /// (a crash can lose acknowledged steps) and no log is kept. For
    /// benchmarks only.
    pub fn open_with(dir: &Path, durable: bool) -> Result<Store, StoreError> {
        Self::open_inner(dir, durable, false).map(|(store, _)| store)
    }

    /// Opens a store whose log [`Store::open`] refused as damaged or
    /// missing: with the log's intact records before the damage (the
    /// damaged log is kept as `cairn.wal.damaged-MS`), or at the last
    /// checkpoint when the log is missing. Says what it gave up, if
    /// anything. For `cairn check --salvage`.
    pub fn open_salvaging(dir: &Path) -> Result<(Store, Option<String>), StoreError> {
        Self::open_inner(dir, true, true)
    }

    fn open_inner(dir: &Path, durable: bool, salvage: bool) -> Result<(Store, Option<String>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.to_owned(), source })?;
        let path = dir.join("cairn.redb");
        if !path.exists() {
            create_store_file(dir, &path)?;
        }
        let db = DbCell::open_file(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
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
        let commits = Arc::new(crate::metrics::CommitMetrics::default());
        let signals = Arc::new(writer::SignalLoad::counted(&db).map_err(db_err)?);
        let cell = Arc::new(DbCell {
            path,
            current: std::sync::RwLock::new(Some(Arc::new(db))),
            failing: std::sync::Mutex::new(None),
        });
        let writer = GroupCommitWriter::start(cell.clone(), log, durable, commits.clone(), signals.clone());
        Ok((Store { cell, writer, commits, signals }, salvaged))
    }

    /// Why commits are failing (a full disk, an I/O error), while they
    /// are: runs wait, nothing is lost, and writes resume once the cause is
    /// fixed.
    pub fn write_failure(&self) -> Option<String> {
        self.cell.failing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.cell.get()
    }

    /// Signals buffered and not yet consumed: `run_id`'s and every run's,
    /// as (count, bytes), as of the last commit.
    pub fn buffered_signals(&self, run_id: &str) -> Buffered {
        self.signals.of(run_id)
    }

    /// Commit batch sizes and latencies.
    pub fn commit_metrics(&self) -> &crate::metrics::CommitMetrics {
        &self.commits
    }

    /// Runs that have not ended (a scan of the runs table).
    pub fn count_running(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(RUNS).map_err(db_err)?;
        let mut running = 0;
        for row in table.iter().map_err(db_err)? {
            let (_, value) = row.map_err(db_err)?;
            // The status is a plain string field: no need to parse the rest.
            const RUNNING: &[u8] = br#""status":"running""#;
            running += u64::from(value.value().windows(RUNNING.len()).any(|w| w == RUNNING));
        }
        Ok(running)
    }

    /// Runs redb's own integrity check of `dir/cairn.redb` (checksums and
    /// B-tree structure; repairs what it can). Needs exclusive access: call
    /// it before opening the store.
    pub fn verify_file(dir: &Path) -> Result<bool, StoreError> {
        let path = dir.join("cairn.redb");
        let mut db = Database::builder()
            .set_cache_size(64 << 20)
            .create(&path)
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        db.check_integrity().map_err(db_err)
    }

    /// The writer every change goes through.
    pub fn writer(&self) -> &GroupCommitWriter {
        &self.writer
    }

    /// Applies `batch` and waits until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.writer.commit(batch).await?)
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

    /// A run's metadata.
    pub fn run(&self, run_id: &str) -> Result<Option<RunMeta>, StoreError> {
        self.get_json(RUNS, "runs", run_id)
    }

    /// Every run's metadata, by id.
    pub fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        self.all_json(RUNS, "runs")
    }

    /// A run's journal, in seq order.
    pub fn journal(&self, run_id: &str) -> Result<Vec<Record>, StoreError> {
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

    /// The journal of an earlier generation of a run (before a
    /// continue-as-new), in seq order.
    pub fn history(&self, run_id: &str, generation: u32) -> Result<Vec<Record>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(HISTORY).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range((run_id, generation, 0)..=(run_id, generation, u64::MAX)).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(decode_record(run_id, k.value().2, v.value())?);
        }
        Ok(out)
    }

    /// Completions that arrived for a run and were not consumed yet.
    pub fn completions(&self, run_id: &str) -> Result<Vec<(u32, StoredCompletion)>, StoreError> {
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

    /// Signals buffered for a run, in arrival order: (seq, signal).
    pub fn signals(&self, run_id: &str) -> Result<Vec<(u64, StoredSignal)>, StoreError> {
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

    /// A deployment by name.
    pub fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        self.get_json(DEPLOYMENTS, "deployments", name)
    }

    /// Every deployment, by name.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.all_json(DEPLOYMENTS, "deployments")
    }

    /// Failed attempts recorded for an activity still being retried (0 if none).
    pub fn attempts(&self, run_id: &str, handle: u32) -> Result<u32, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(ATTEMPTS).map_err(db_err)?;
        Ok(table.get((run_id, handle)).map_err(db_err)?.map_or(0, |v| v.value()))
    }

    /// A component's bytes by sha256.
    pub fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(COMPONENTS).map_err(db_err)?;
        Ok(table.get(sha256).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// A precompiled artifact for a component and an engine fingerprint.
    pub fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(COMPILED).map_err(db_err)?;
        Ok(table.get((sha256, engine)).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Every armed timer: (due ms, run, handle).
    pub fn timers(&self) -> Result<Vec<(u64, String, u32)>, StoreError> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let table = txn.open_table(TIMERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (due, run, handle) = k.value();
            out.push((due, run.to_owned(), handle));
        }
        Ok(out)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::journal::{Completion, Entry, HostCall, Reply};

    /// A journal record for store tests.
    pub(super) fn record(seq: u64) -> Record {
        let entry = Entry::Call {
            call: HostCall::Await { handle: seq as u32 },
            reply: Reply::Completed { handle: seq as u32, completion: Completion::Ok(format!("{{\"n\":{seq}}}")) },
        };
        Record { seq, at_ms: 1_000 + seq, entry }
    }

    fn meta(generation: u32) -> RunMeta {
        RunMeta {
            id: "r".into(),
            workflow: "w".into(),
            component_sha256: "ab".into(),
            version: None,
            status: RunStatus::Running,
            input: "{}".into(),
            result: None,
            failure: None,
            custom_status: None,
            parent: None,
            generation,
            created_ms: 1,
            updated_ms: 1,
        }
    }

    /// A store in `dir` holding run `r` in `generation`, with its start.
    async fn store_with_run(dir: &Path, generation: u32) -> Store {
        let store = Store::open_with(dir, false).unwrap();
        let start = vec![Write::PutRun(meta(generation)), Write::Append { run_id: "r".into(), record: record(0) }];
        store.commit(start).await.unwrap();
        store
    }

    fn completion(generation: Option<u32>, text: &str) -> Write {
        let completion = StoredCompletion { completion: Completion::Ok(text.into()), arrival: 1, generation };
        Write::PutCompletion { run_id: "r".into(), handle: 3, completion }
    }

    /// Handle numbers start over with each generation: a completion for an
    /// earlier generation's handle 3 (a child that outlived its parent's
    /// continue-as-new) must not take the place of the current one's.
    #[tokio::test]
    async fn a_completion_of_a_generation_the_run_left_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_run(dir.path(), 1).await;
        store.commit(vec![completion(Some(1), "\"current\"")]).await.unwrap();
        store.commit(vec![completion(Some(0), "\"stale\"")]).await.unwrap();
        let stored = store.completions("r").unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].1.completion, Completion::Ok("\"current\"".into()), "{stored:?}");
        // Rows of old hosts carry no generation and are taken as they are.
        store.commit(vec![completion(None, "\"legacy\"")]).await.unwrap();
        assert_eq!(store.completions("r").unwrap()[0].1.completion, Completion::Ok("\"legacy\"".into()));
    }

    /// A continue-as-new batch retried after it landed is taken as landed
    /// whole: the ended generation's entries riding in it do not go into
    /// the new generation's journal.
    #[tokio::test]
    async fn a_retried_continue_as_new_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_run(dir.path(), 0).await;
        let batch = vec![
            Write::Append { run_id: "r".into(), record: record(1) },
            Write::ContinueAsNew { meta: Box::new(meta(1)), start: Box::new(record(0)) },
        ];
        store.commit(batch.clone()).await.unwrap();
        store.commit(batch).await.unwrap();
        assert_eq!(store.journal("r").unwrap(), vec![record(0)], "the new generation's journal");
        let history = store.history("r", 0).unwrap();
        assert_eq!(history.len(), 3, "seq 0, seq 1 and the continued-as-new entry: {history:?}");
        assert!(matches!(history[2].entry, Entry::ContinuedAsNew { .. }), "{history:?}");
    }

    /// A long journal is read in two halves at once: the halves meet
    /// exactly, and the neighbouring runs' entries stay out.
    #[tokio::test]
    async fn a_long_journal_reads_back_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), false).unwrap();
        let long = PARALLEL_JOURNAL_ENTRIES + 1001;
        let mut batch: Vec<Write> =
            (0..long).map(|seq| Write::Append { run_id: "r".into(), record: record(seq) }).collect();
        for neighbour in ["q", "r0", "s"] {
            batch.extend((0..3).map(|seq| Write::Append { run_id: neighbour.into(), record: record(seq) }));
        }
        store.commit(batch).await.unwrap();
        let journal = store.journal("r").unwrap();
        assert_eq!(journal.len() as u64, long);
        assert!(journal.iter().zip(0..).all(|(r, seq)| *r == record(seq)), "records out of order or changed");
        // Short journals take the one-thread path.
        assert_eq!(store.journal("s").unwrap(), (0..3).map(record).collect::<Vec<_>>());
        assert!(store.journal("t").unwrap().is_empty());
    }
}
