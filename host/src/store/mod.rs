//! The store: every durable thing Cairn keeps, behind one [`Storage`] trait.
//!
//! A run's row, its journal (one per generation), its inbox (completions,
//! signals, failed attempts), its timers, and the catalog (deployments,
//! components, compiled artifacts) all live here. Every change goes in as a
//! [`Batch`] of [`Write`]s, applied whole or refused whole, and is durable
//! when its acknowledgement arrives; many batches share one durable commit
//! (a group commit). The same rules hold on every backend:
//!
//! - an append over a different record at the same seq is refused
//!   ([`CommitError::DuplicateSeq`]); the identical record is accepted, so a
//!   retried batch whose first commit landed is a no-op;
//! - a continue-as-new that already landed makes its whole batch a no-op;
//! - a completion of a generation its run has left is not stored, nor a
//!   signal to an ended run;
//! - a run's end drops the signals it never read;
//! - a deployment of revision N lands only over revision N - 1 (or itself):
//!   [`CommitError::Conflict`] otherwise.
//!
//! The backends are `redb/` (the embedded default: one file and its
//! write-ahead log in a data directory), and nothing outside this module
//! knows which one is in use: callers hold a [`Store`]. Run queries are
//! paged ([`RunQuery`]) and answered from indexes, never by a scan of every
//! run.

mod check;
pub mod postgres;
mod redb;
mod rows;
mod slots;
mod tasks;
mod write;

#[cfg(feature = "fault-injection")]
pub use self::redb::power;
pub use self::redb::LogDamage;
pub use check::CheckReport;
pub use rows::{
    ActivityLimit, Admission, Buffered, ComponentKind, Concurrency, Deployment, Firing, Overlap, ParentLink, Rate,
    RunMeta, RunPage, RunQuery, RunStatus, Schedule, ScheduleSpec, ScheduleState, Slot, StoredCompletion, StoredSignal,
    Version, When, RECENT_FIRINGS,
};
pub use slots::{LocalSlots, SlotBoard, Take};
pub use tasks::{TaskBoard, TaskState};
pub(crate) use write::{deployment_conflict, schedule_conflict};
pub use write::{durable, Ack, Batch, CommitError, Write};

use crate::journal::{DecodeError, Record};
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
        damage: LogDamage,
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
    /// The store's file (or database) refused to open.
    #[error("cannot open store {path}: {reason}. If another `cairn` process uses this --data directory, stop it or use another directory")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the backend said.
        reason: String,
    },
    /// A read or write inside the backend failed (an I/O error, a lost
    /// connection).
    #[error("store error: {0}")]
    Backend(#[source] BackendError),
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
    /// The database cannot be reached or refused the connection.
    #[error("cannot connect to the store {target}: {reason}. Check that PostgreSQL runs there, that the user, password and database in the URL are right, and that this host may connect (pg_hba.conf)")]
    Unreachable {
        /// The URL, without its password.
        target: String,
        /// What the client said.
        reason: String,
    },
    /// The database's schema is newer than this binary.
    #[error("the store {target} has schema version {found}, newer than this binary's {supported}: a newer Cairn migrated it. Nothing was changed; run that version (or newer) of Cairn on this database")]
    SchemaNewer {
        /// The URL, without its password.
        target: String,
        /// The database's version.
        found: i32,
        /// This binary's.
        supported: i32,
    },
    /// A shard count that cannot be used.
    #[error(
        "{asked} shards: the shard count must be between 1 and 65536 (the default, 64, suits up to a few dozen hosts)"
    )]
    BadShardCount {
        /// What was asked.
        asked: u32,
    },
    /// The database already has another shard count.
    #[error("the store {target} was initialised with {existing} shards, not {asked}: runs are placed by the shard count, so it is fixed once chosen. Leave --shards out, or use --shards {existing}")]
    ShardCountFixed {
        /// The URL, without its password.
        target: String,
        /// Its count.
        existing: u32,
        /// What was asked.
        asked: u32,
    },
}

/// A test-only setting, read only by a build with the `fault-injection`
/// feature (the test suite's): a release binary ignores it.
pub(crate) fn test_hook(name: &str) -> Option<std::ffi::OsString> {
    match cfg!(feature = "fault-injection") {
        true => std::env::var_os(name),
        false => None,
    }
}

/// The shard of run `run_id` among `shards`: FNV-1a of the id, stable
/// across builds and platforms (unlike std's hasher), so a backend finds a
/// run's shard from its id alone.
pub(crate) fn shard_of(run_id: &str, shards: u32) -> u32 {
    let hash = run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash % u64::from(shards.max(1))) as u32
}

/// The error a backend's own library returned, kept as it is (so its
/// message and source chain reach the log) without its type crossing the
/// store's boundary.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync>);

impl BackendError {
    pub(crate) fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
        BackendError(error.into())
    }
}

/// An armed timer: when it is due, and the run and handle it wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// Due time, ms since the epoch.
    pub due_ms: u64,
    /// The run.
    pub run_id: String,
    /// The timer's handle in the run's current generation.
    pub handle: u32,
}

/// The data of a store. One implementation per backend; see the module's
/// docs for the rules every one keeps.
#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// Queues `batch` for the next group commit; the acknowledgement
    /// resolves once it is durable. Dropping it does not cancel the write.
    fn submit(&self, batch: Batch) -> Ack;

    /// Applies `batch` and waits until it is durable.
    async fn commit(&self, batch: Batch) -> Result<(), CommitError>;

    /// A run's row.
    async fn run(&self, run_id: &str) -> Result<Option<RunMeta>, StoreError>;

    /// One page of the runs `query` asks for, from an index.
    async fn runs(&self, query: &RunQuery) -> Result<RunPage, StoreError>;

    /// How many runs are in `status`.
    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError>;

    /// The runs holding slots of a concurrency bucket (at most `limit`):
    /// after a promote, the ones to wake.
    async fn holding(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// The queued runs of a concurrency bucket in the order they get
    /// slots, at most `limit`.
    async fn queued(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Every concurrency bucket with runs in it: (workflow, key, runs
    /// holding slots, runs queued).
    async fn buckets(&self) -> Result<Vec<(String, String, u64, u64)>, StoreError>;

    /// The finished runs of `workflow` that ended before `before_ms`,
    /// oldest first, at most `limit` (what retention deletes).
    async fn ended_before(&self, workflow: &str, before_ms: u64, limit: usize) -> Result<Vec<String>, StoreError>;

    /// A run's journal (its current generation), in seq order.
    async fn journal(&self, run_id: &str) -> Result<Vec<Record>, StoreError>;

    /// The journal of an earlier generation of a run (before a
    /// continue-as-new), in seq order.
    async fn history(&self, run_id: &str, generation: u32) -> Result<Vec<Record>, StoreError>;

    /// Completions that arrived for a run and were not consumed yet.
    async fn completions(&self, run_id: &str) -> Result<Vec<(u32, StoredCompletion)>, StoreError>;

    /// Signals buffered for a run, in arrival order: (arrival, signal).
    async fn signals(&self, run_id: &str) -> Result<Vec<(u64, StoredSignal)>, StoreError>;

    /// Failed attempts recorded for an activity still being retried.
    async fn attempts(&self, run_id: &str, handle: u32) -> Result<u32, StoreError>;

    /// The armed timers of runs in `shards`, soonest first.
    async fn timers(&self, shards: &[u32]) -> Result<Vec<Timer>, StoreError>;

    /// The armed timers of one run.
    async fn run_timers(&self, run_id: &str) -> Result<Vec<Timer>, StoreError>;

    /// A deployment by name.
    async fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError>;

    /// Every deployment, by name.
    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError>;

    /// A schedule by name.
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError>;

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;

    /// A component's bytes by sha256.
    async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A precompiled artifact for a component and an engine fingerprint.
    async fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Signals buffered and not yet consumed: `run_id`'s and every run's.
    async fn buffered_signals(&self, run_id: &str) -> Result<Buffered, StoreError>;

    /// Why commits are failing, while they are.
    fn write_failure(&self) -> Option<String>;

    /// How many shards runs are spread over.
    fn shard_count(&self) -> u32 {
        1
    }

    /// Whether other hosts may write this store too.
    fn shared(&self) -> bool {
        false
    }

    /// The coordinator of `host` among the hosts sharing this store.
    fn coordinator(&self, _host: HostIdentity) -> Arc<dyn Coordinator> {
        Arc::new(SingleNode::default())
    }

    /// Commit batch sizes and latencies.
    fn commit_metrics(&self) -> &crate::metrics::CommitMetrics;

    /// Checks that the store's rows agree with each other (`cairn check`).
    async fn check(&self) -> Result<CheckReport, StoreError>;
}

/// A change in which shards this host holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The shard is this host's now: load its timers and wake its runs.
    Acquired(u32),
    /// The shard is not this host's any more: stop its runs, record nothing.
    Lost(u32),
}

/// Who this host is among the hosts sharing a store.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    /// Unique among the hosts (a restarted host with the same id takes its
    /// shards back at once).
    pub id: String,
    /// Where its API listens, for the other hosts.
    pub address: String,
    /// How long a lease lasts: a host that stops renewing loses its shards
    /// this long after its last renewal.
    pub lease: std::time::Duration,
}

/// Who may write what: the shards this host holds, and the changes to
/// them. On the embedded store one host holds the only shard for ever.
#[async_trait::async_trait]
pub trait Coordinator: Send + Sync {
    /// Takes this host's first share of the shards.
    async fn start(&self) -> Result<(), StoreError>;

    /// Whether this host holds `shard` now.
    fn owns(&self, shard: u32) -> bool;

    /// The shards this host holds now.
    fn owned(&self) -> Vec<u32>;

    /// Ownership changes from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Ownership>;

    /// Runs that ended on another host, as they end (a hint: a waiter that
    /// misses one looks at the store now and then anyway).
    fn ends(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// Waits for runs of this host's shards that another host wrote to (a
    /// signal, a completion, a new run) and returns them; never returns
    /// where no other host writes.
    async fn wakeups(&self) -> Vec<String> {
        std::future::pending().await
    }

    /// The API address of the host that holds `shard` now, if another host
    /// does (where terminates and upgrades of its runs are sent).
    async fn owner_address(&self, _shard: u32) -> Option<String> {
        None
    }

    /// This host's slot among the hosts sharing the store: the low bits
    /// of the arrival numbers it hands out, so no two hosts hand out the
    /// same one. `None` where only one host writes.
    fn arrival_slot(&self) -> Option<u16> {
        None
    }

    /// The slots of limited activities every host takes from; `None`
    /// where one host holds them all in memory.
    fn slots(&self) -> Option<Arc<dyn SlotBoard>> {
        None
    }

    /// The board external tasks are posted to when workers may poll any
    /// host; `None` where one host serves them all from memory.
    fn tasks(&self) -> Option<Arc<dyn TaskBoard>> {
        None
    }

    /// The runs of `shards`, just acquired, are scheduled again on this
    /// host (what the takeover time is measured to).
    fn resumed(&self, _shards: &[u32]) {}

    /// Hands every shard back (a graceful stop).
    async fn stop(&self);

    /// Its lines for `GET /metrics`.
    fn metrics(&self, out: &mut String);
}

/// The coordinator of a store only one host uses: it holds shard 0.
pub struct SingleNode {
    events: tokio::sync::broadcast::Sender<Ownership>,
}

impl Default for SingleNode {
    fn default() -> Self {
        SingleNode { events: tokio::sync::broadcast::channel(1).0 }
    }
}

#[async_trait::async_trait]
impl Coordinator for SingleNode {
    async fn start(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn owns(&self, _shard: u32) -> bool {
        true
    }

    fn owned(&self) -> Vec<u32> {
        vec![0]
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Ownership> {
        self.events.subscribe()
    }

    async fn stop(&self) {}

    fn metrics(&self, _out: &mut String) {}
}

/// The store Cairn runs on; cheap to clone. Which backend answers is its
/// own business.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Storage>,
}

impl Store {
    /// Opens (creating if needed) the embedded store in `dir`, as
    /// `dir/cairn.redb` and its write-ahead log `dir/cairn.wal`, replaying
    /// the log's records since the last checkpoint. Every commit is durable
    /// (fsync) before it is acknowledged.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, true)
    }

    /// Like [`Store::open`]; with `durable` false, commits are not fsync'd
    /// (a crash can lose acknowledged steps) and no log is kept. For
    /// benchmarks only.
    pub fn open_with(dir: &Path, durable: bool) -> Result<Store, StoreError> {
        Ok(Store::from_backend(redb::RedbStorage::open(dir, durable, false)?.0))
    }

    /// Opens an embedded store whose log [`Store::open`] refused as damaged,
    /// cut, foreign or missing, giving up what it must (and keeping the
    /// files it gives up on beside the store). Says what it gave up, if
    /// anything. For `cairn check --salvage`.
    pub fn open_salvaging(dir: &Path) -> Result<(Store, Option<String>), StoreError> {
        let (backend, salvaged) = redb::RedbStorage::open(dir, true, true)?;
        Ok((Store::from_backend(backend), salvaged))
    }

    /// Runs redb's own integrity check of `dir/cairn.redb` (checksums and
    /// B-tree structure; repairs what it can). Needs exclusive access: call
    /// it before opening the store.
    pub fn verify_file(dir: &Path) -> Result<bool, StoreError> {
        redb::RedbStorage::verify_file(dir)
    }

    /// Connects to the PostgreSQL database at `url` (applying migrations;
    /// a database with no shards yet gets 64). Component bytes and compiled
    /// artifacts read from it are kept in `cache` on this host's disk.
    pub async fn connect(url: &str, cache: Option<PathBuf>) -> Result<Store, StoreError> {
        Ok(Store::from_backend(postgres::PgStorage::connect(url, cache).await?))
    }

    fn from_backend(backend: impl Storage + 'static) -> Store {
        Store { backend: Arc::new(backend) }
    }

    /// Queues `batch`; the returned acknowledgement resolves once it is
    /// durable. Dropping it does not cancel the write.
    pub fn submit(&self, batch: Batch) -> Ack {
        self.backend.submit(batch)
    }

    /// Applies `batch` and waits until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.backend.commit(batch).await?)
    }

    /// A run's metadata.
    pub async fn run(&self, run_id: &str) -> Result<Option<RunMeta>, StoreError> {
        self.backend.run(run_id).await
    }

    /// One page of the runs `query` asks for.
    pub async fn runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        self.backend.runs(query).await
    }

    /// Every run `query` asks for, page by page (`query.after` and
    /// `query.limit` set where it starts and the page size).
    pub async fn all_runs(&self, query: RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        let mut query = RunQuery { limit: query.limit.max(1), ..query };
        let mut out = Vec::new();
        loop {
            let page = self.backend.runs(&query).await?;
            out.extend(page.runs);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// How many runs are in `status`.
    pub async fn count_status(&self, status: RunStatus) -> Result<u64, StoreError> {
        self.backend.count_runs(status).await
    }

    /// How many runs have not ended.
    pub async fn count_running(&self) -> Result<u64, StoreError> {
        self.backend.count_runs(RunStatus::Running).await
    }

    /// The runs holding slots of a concurrency bucket, at most `limit`.
    pub async fn holding(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.backend.holding(workflow, key, limit).await
    }

    /// Every concurrency bucket with runs in it: (workflow, key, runs
    /// holding slots, runs queued).
    pub async fn buckets(&self) -> Result<Vec<(String, String, u64, u64)>, StoreError> {
        self.backend.buckets().await
    }

    /// The queued runs of a concurrency bucket in the order they get
    /// slots, at most `limit`.
    pub async fn queued(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.backend.queued(workflow, key, limit).await
    }

    /// The finished runs of `workflow` that ended before `before_ms`,
    /// oldest first, at most `limit`.
    pub async fn ended_before(&self, workflow: &str, before_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.backend.ended_before(workflow, before_ms, limit).await
    }

    /// A run's journal, in seq order.
    pub async fn journal(&self, run_id: &str) -> Result<Vec<Record>, StoreError> {
        self.backend.journal(run_id).await
    }

    /// The journal of an earlier generation of a run, in seq order.
    pub async fn history(&self, run_id: &str, generation: u32) -> Result<Vec<Record>, StoreError> {
        self.backend.history(run_id, generation).await
    }

    /// Completions that arrived for a run and were not consumed yet.
    pub async fn completions(&self, run_id: &str) -> Result<Vec<(u32, StoredCompletion)>, StoreError> {
        self.backend.completions(run_id).await
    }

    /// Signals buffered for a run, in arrival order: (seq, signal).
    pub async fn signals(&self, run_id: &str) -> Result<Vec<(u64, StoredSignal)>, StoreError> {
        self.backend.signals(run_id).await
    }

    /// Failed attempts recorded for an activity still being retried (0 if none).
    pub async fn attempts(&self, run_id: &str, handle: u32) -> Result<u32, StoreError> {
        self.backend.attempts(run_id, handle).await
    }

    /// The armed timers of runs in `shards`, soonest first.
    pub async fn timers(&self, shards: &[u32]) -> Result<Vec<Timer>, StoreError> {
        self.backend.timers(shards).await
    }

    /// The armed timers of one run.
    pub async fn run_timers(&self, run_id: &str) -> Result<Vec<Timer>, StoreError> {
        self.backend.run_timers(run_id).await
    }

    /// A deployment by name.
    pub async fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        self.backend.deployment(name).await
    }

    /// Every deployment, by name.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.backend.deployments().await
    }

    /// A schedule by name.
    pub async fn schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        self.backend.schedule(name).await
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.backend.schedules().await
    }

    /// A component's bytes by sha256.
    pub async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.component(sha256).await
    }

    /// A precompiled artifact for a component and an engine fingerprint.
    pub async fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.compiled(sha256, engine).await
    }

    /// Signals buffered and not yet consumed: `run_id`'s and every run's,
    /// as (count, bytes).
    pub async fn buffered_signals(&self, run_id: &str) -> Result<Buffered, StoreError> {
        self.backend.buffered_signals(run_id).await
    }

    /// Why commits are failing (a full disk, an I/O error), while they
    /// are: runs wait, nothing is lost, and writes resume once the cause is
    /// fixed.
    pub fn write_failure(&self) -> Option<String> {
        self.backend.write_failure()
    }

    /// Commit batch sizes and latencies.
    pub fn commit_metrics(&self) -> &crate::metrics::CommitMetrics {
        self.backend.commit_metrics()
    }

    /// Whether other hosts may write this store too (deployments, runs and
    /// signals can then come from elsewhere).
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// The coordinator of `host` among the hosts sharing this store: on the
    /// embedded store, one that holds everything.
    pub fn coordinator(&self, host: HostIdentity) -> Arc<dyn Coordinator> {
        self.backend.coordinator(host)
    }

    /// The shard a new run with this id goes in: a stable hash of the id
    /// over the store's shards, stored in the run's row and never
    /// recomputed.
    pub fn shard_for(&self, run_id: &str) -> u32 {
        shard_of(run_id, self.backend.shard_count())
    }

    /// Checks that the tables agree with each other: every run has a
    /// contiguous journal starting with its start entry, its status matches
    /// its last entry, its component is stored, and nothing refers to a
    /// run or component that does not exist.
    pub async fn check(&self) -> Result<CheckReport, StoreError> {
        self.backend.check().await
    }
}

#[cfg(test)]
pub(crate) mod tests;
