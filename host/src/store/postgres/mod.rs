//! The PostgreSQL backend: several hosts share one database.
//!
//! Every group of batches is one transaction: the rows it checks (runs,
//! journal entries it appends, the epochs of the shards it writes) are read
//! first, each batch is judged by the same rules as on redb (an append over
//! different bytes is refused, the same bytes accepted, a landed
//! continue-as-new makes its batch a no-op), and the statements of the
//! batches that pass are sent together (pipelined) before one `COMMIT`. A
//! batch is acknowledged only once PostgreSQL has committed it
//! (`synchronous_commit` stays on). A commit whose outcome is unknown (the
//! connection dropped before the answer) is retried whole, and every write
//! is idempotent, so a retry that meets its own earlier commit changes
//! nothing.
//!
//! Runs are in shards (fixed when the database is initialised). A host
//! writes a run's journal, timers and status only while it holds the run's
//! shard: every transaction takes a shared advisory lock per shard it writes
//! under (a takeover bumps the epoch under the exclusive one) and compares
//! the shards' epochs with the ones this host acquired, so a
//! host that was paused past its lease is refused by the database
//! ([`CommitError::ShardLost`]) and records nothing. Inbox writes (signals,
//! completions) and new runs may come from any host.

#[cfg(any(test, feature = "fault-injection"))]
pub mod harness;
mod lease;
mod schema;
mod tasks;

pub use lease::LeaseMetrics;
use lease::{LeaseCoordinator, Leases};

use super::check::{judge, CheckReport, Rows};
use super::{
    durable, Ack, BackendError, Batch, Buffered, CommitError, Deployment, RunMeta, RunPage, RunQuery, RunStatus,
    StoreError, StoredCompletion, StoredSignal, Timer, Write,
};
use crate::journal::{self, Record};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

/// Shards a database is initialised with unless `--shards` says otherwise.
pub const DEFAULT_SHARDS: u32 = 64;

/// Most batches one transaction takes.
const MAX_GROUP: usize = 1024;

/// Writers committing at once.
const WRITERS: usize = 4;

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(BackendError::new(e))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(BackendError::new(e))
}

/// `url` with its password, if any, left out: what errors and logs show.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user, host)) => {
                let user = user.split_once(':').map_or(user, |(u, _)| u);
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Unreachable { target: redacted(url), reason: e.to_string() })
}

/// Opens a pool of connections to `url` and checks that the server answers.
async fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let unreachable = |reason: String| StoreError::Unreachable { target: redacted(url), reason };
    let mut config = config(url)?;
    if config.get_options().is_none() {
        // A host paused in the middle of a transaction holds its shard
        // rows; the server ends that transaction so another host can take
        // the shards over.
        config.options("-c idle_in_transaction_session_timeout=5000");
    }
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager).max_size(size).build().map_err(|e| unreachable(e.to_string()))?;
    let client = pool.get().await.map_err(|e| unreachable(e.to_string()))?;
    client.simple_query("SELECT 1").await.map_err(|e| unreachable(e.to_string()))?;
    Ok(pool)
}

/// Brings the schema up to this binary's version (once, under an advisory
/// lock); refuses a database whose schema is newer. Returns its shard count
/// (0 when it has none yet).
async fn migrate(pool: &Pool, url: &str) -> Result<u32, StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let txn = client.transaction().await.map_err(pg_err)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::MIGRATION_LOCK]).await.map_err(pg_err)?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS cairn_schema (version integer NOT NULL)").await.map_err(pg_err)?;
    let found: Option<i32> =
        txn.query_opt("SELECT version FROM cairn_schema", &[]).await.map_err(pg_err)?.map(|row| row.get(0));
    let found = found.unwrap_or(0);
    if found > schema::VERSION {
        return Err(StoreError::SchemaNewer { target: redacted(url), found, supported: schema::VERSION });
    }
    for (version, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
        txn.batch_execute(sql).await.map_err(pg_err)?;
        tracing::info!(version = version + 1, "applied a schema migration");
    }
    if found == 0 {
        txn.execute("INSERT INTO cairn_schema (version) VALUES ($1)", &[&schema::VERSION]).await.map_err(pg_err)?;
    } else if found < schema::VERSION {
        txn.execute("UPDATE cairn_schema SET version = $1", &[&schema::VERSION]).await.map_err(pg_err)?;
    }
    let shards: i64 = txn.query_one("SELECT count(*) FROM cairn_shards", &[]).await.map_err(pg_err)?.get(0);
    txn.commit().await.map_err(pg_err)?;
    Ok(shards as u32)
}

/// `cairn db init`: the schema, and `shards` shards if the database has
/// none. A database already initialised keeps its shard count (runs are
/// placed by it); asking for another one is refused.
pub async fn init(url: &str, shards: u32) -> Result<u32, StoreError> {
    if shards == 0 || shards > 65_536 {
        return Err(StoreError::BadShardCount { asked: shards });
    }
    let pool = pool(url, 2).await?;
    let existing = migrate(&pool, url).await?;
    if existing != 0 {
        if existing != shards {
            return Err(StoreError::ShardCountFixed { target: redacted(url), existing, asked: shards });
        }
        return Ok(existing);
    }
    let client = pool.get().await.map_err(pool_err)?;
    client
        .execute(
            "INSERT INTO cairn_shards (shard) SELECT generate_series(0, $1::integer - 1) ON CONFLICT DO NOTHING",
            &[&(shards as i32)],
        )
        .await
        .map_err(pg_err)?;
    let count: i64 = client.query_one("SELECT count(*) FROM cairn_shards", &[]).await.map_err(pg_err)?.get(0);
    Ok(count as u32)
}

/// The epochs this host holds its shards at: what every commit checks its
/// shards' rows against.
#[derive(Default)]
pub(crate) struct Fence {
    held: Mutex<HashMap<u32, i64>>,
    /// Batches refused because their shard was taken over.
    pub(crate) refused: std::sync::atomic::AtomicU64,
}

impl Fence {
    fn epoch(&self, shard: u32) -> Option<i64> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(&shard).copied()
    }

    pub(crate) fn hold(&self, shard: u32, epoch: i64) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(shard, epoch);
    }

    pub(crate) fn release(&self, shard: u32) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&shard);
    }

    pub(crate) fn held(&self) -> Vec<(u32, i64)> {
        let mut held: Vec<_> =
            self.held.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(s, e)| (*s, *e)).collect();
        held.sort_unstable();
        held
    }
}

struct Request {
    batch: Batch,
    ack: oneshot::Sender<Result<(), CommitError>>,
}

/// A store in a PostgreSQL database.
pub(crate) struct PgStorage {
    pool: Pool,
    /// For the connection that listens for wake-ups.
    config: tokio_postgres::Config,
    shards: u32,
    /// The writers: a run's batches always go to the same one, so they
    /// commit in the order they were submitted; the writers' transactions
    /// overlap, and PostgreSQL flushes overlapping commits together.
    writers: Vec<mpsc::UnboundedSender<Request>>,
    metrics: Arc<crate::metrics::CommitMetrics>,
    failing: Arc<Mutex<Option<String>>>,
    fence: Arc<Fence>,
    /// Where component bytes and compiled artifacts are kept on this host.
    cache: Option<PathBuf>,
}

impl PgStorage {
    /// Connects to `url`, applies migrations, and starts the writer. A
    /// database with no shards yet gets [`DEFAULT_SHARDS`].
    pub(crate) async fn connect(url: &str, cache: Option<PathBuf>) -> Result<PgStorage, StoreError> {
        let pool = pool(url, 32).await?;
        let mut shards = migrate(&pool, url).await?;
        if shards == 0 {
            shards = init(url, DEFAULT_SHARDS).await?;
        }
        if let Some(dir) = &cache {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.clone(), source })?;
        }
        let metrics = Arc::new(crate::metrics::CommitMetrics::default());
        let failing = Arc::new(Mutex::new(None));
        let fence = Arc::new(Fence::default());
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writers = (0..WRITERS)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let writer = Writer {
                    pool: pool.clone(),
                    metrics: metrics.clone(),
                    failing: failing.clone(),
                    fence: fence.clone(),
                    commits: commits.clone(),
                    shards,
                };
                tokio::spawn(writer.run(rx));
                tx
            })
            .collect();
        Ok(PgStorage { pool, config: config(url)?, shards, writers, metrics, failing, fence, cache })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    fn cached(&self, parts: &[&str]) -> Option<PathBuf> {
        let mut path = self.cache.clone()?;
        for part in parts {
            // Hashes and engine fingerprints only: nothing that leaves the dir.
            if part.is_empty() || part.contains(['/', '\\']) || part.starts_with('.') {
                return None;
            }
            path.push(part);
        }
        Some(path)
    }

    /// A blob from the host's cache, or from the database (then kept in
    /// the cache: written aside and renamed, so a torn file is never read).
    async fn blob(
        &self,
        cache: Option<PathBuf>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(path) = &cache {
            if let Ok(bytes) = std::fs::read(path) {
                return Ok(Some(bytes));
            }
        }
        let row = self.client().await?.query_opt(sql, params).await.map_err(pg_err)?;
        let bytes: Option<Vec<u8>> = row.map(|r| r.get(0));
        if let (Some(path), Some(bytes)) = (&cache, &bytes) {
            let keep = || -> std::io::Result<()> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let aside = path.with_extension("part");
                std::fs::write(&aside, bytes)?;
                std::fs::rename(&aside, path)
            };
            if let Err(e) = keep() {
                tracing::warn!(path = %path.display(), error = %e, "could not cache a component on this host's disk");
            }
        }
        Ok(bytes)
    }
}

fn parse<T: serde::de::DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Row { table, key: key.to_owned(), source })
}

fn decode(run_id: &str, seq: i64, bytes: &[u8]) -> Result<Record, StoreError> {
    journal::decode(bytes).map_err(|source| StoreError::Journal { run_id: run_id.to_owned(), seq: seq as u64, source })
}

fn records(run_id: &str, rows: Vec<tokio_postgres::Row>) -> Result<Vec<Record>, StoreError> {
    rows.iter().map(|row| decode(run_id, row.get(0), row.get(1))).collect()
}

#[async_trait::async_trait]
impl super::Storage for PgStorage {
    fn submit(&self, batch: Batch) -> Ack {
        // A deleted component leaves this host's cache too (if the commit
        // fails, the bytes are read back from the database).
        for write in &batch {
            if let Write::DeleteComponent { sha256 } = write {
                if let Some(path) = self.cached(&["components", sha256]) {
                    let _ = std::fs::remove_file(path);
                }
                if let Some(dir) = self.cached(&["compiled"]) {
                    for engine in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let engine = engine.file_name();
                        if let Some(path) = engine.to_str().and_then(|e| self.cached(&["compiled", e, sha256])) {
                            let _ = std::fs::remove_file(path);
                        }
                    }
                }
            }
        }
        let (ack, rx) = oneshot::channel();
        // By the run the batch is about (its first append's, else its first
        // write's), so one run's batches keep their order.
        let run = batch
            .iter()
            .find_map(|w| match w {
                Write::Append { run_id, .. } => Some(run_id.as_str()),
                _ => None,
            })
            .or_else(|| batch.iter().find_map(run_of))
            .unwrap_or("");
        let writer = &self.writers[super::shard_of(run, self.writers.len() as u32) as usize];
        if let Err(mpsc::error::SendError(request)) = writer.send(Request { batch, ack }) {
            let _ = request.ack.send(Err(CommitError::Stopped));
        }
        rx
    }

    async fn commit(&self, batch: Batch) -> Result<(), CommitError> {
        durable(self.submit(batch)).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunMeta>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT meta FROM cairn_runs WHERE run_id = $1", &[&run_id])
            .await
            .map_err(pg_err)?;
        row.map(|r| parse("runs", run_id, r.get(0))).transpose()
    }

    async fn runs(&self, query: &RunQuery) -> Result<RunPage, StoreError> {
        // Only the predicates asked for, so the planner picks the index.
        let mut sql = String::from("SELECT run_id, meta FROM cairn_runs WHERE true");
        let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        let version = query.version.map(|v| v as i32);
        let shard = query.shard.map(|s| s as i32);
        let limit = query.limit.max(1) as i64 + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        fn arg<'a>(
            sql: &mut String,
            params: &mut Vec<&'a (dyn ToSql + Sync)>,
            clause: &str,
            value: &'a (dyn ToSql + Sync),
        ) {
            params.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        }
        if let Some(w) = &query.workflow {
            arg(&mut sql, &mut params, " AND workflow = ?", w);
        }
        if !statuses.is_empty() {
            arg(&mut sql, &mut params, " AND status = ANY(?)", &statuses);
        }
        if let Some(v) = &version {
            arg(&mut sql, &mut params, " AND version = ?", v);
        }
        if let Some(s) = &shard {
            arg(&mut sql, &mut params, " AND shard = ?", s);
        }
        let attribute = query.attribute.as_ref().map(|(name, value)| serde_json::json!({ name: value }).to_string());
        if let Some(a) = &attribute {
            arg(&mut sql, &mut params, " AND search @> ?::text::jsonb", a);
        }
        if let Some(after) = &query.after {
            let clause = if query.descending { " AND run_id < ?" } else { " AND run_id > ?" };
            arg(&mut sql, &mut params, clause, after);
        }
        sql.push_str(if query.descending { " ORDER BY run_id DESC" } else { " ORDER BY run_id" });
        arg(&mut sql, &mut params, " LIMIT ?", &limit);
        let rows = self.client().await?.query(&sql, &params).await.map_err(pg_err)?;
        let mut page = RunPage::default();
        for row in &rows {
            let id: &str = row.get(0);
            if page.runs.len() == query.limit.max(1) {
                page.next = page.runs.last().map(|m: &RunMeta| m.id.clone());
                break;
            }
            page.runs.push(parse("runs", id, row.get(1))?);
        }
        Ok(page)
    }

    async fn buckets(&self) -> Result<Vec<(String, String, u64, u64)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT workflow, slot_key, count(*) FILTER (WHERE status <> 'queued'), count(*) FILTER (WHERE status = 'queued') \
                 FROM cairn_runs WHERE slot_key IS NOT NULL AND status IN ('running', 'paused', 'diverged', 'queued') \
                 GROUP BY workflow, slot_key ORDER BY workflow, slot_key",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64, r.get::<_, i64>(3) as u64)).collect())
    }

    async fn holding(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT run_id FROM cairn_runs WHERE workflow = $1 AND slot_key = $2 AND status = 'running' LIMIT $3",
                &[&workflow, &key, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn queued(&self, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT run_id FROM cairn_runs WHERE workflow = $1 AND slot_key = $2 AND status = 'queued' \
                 ORDER BY slot_priority, created_ms, run_id LIMIT $3",
                &[&workflow, &key, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn ended_before(&self, workflow: &str, before_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT run_id FROM cairn_runs WHERE workflow = $1 AND ended_ms < $2 ORDER BY ended_ms, run_id LIMIT $3",
                &[&workflow, &(before_ms as i64), &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn count_runs(&self, status: RunStatus) -> Result<u64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM cairn_runs WHERE status = $1", &[&status.as_str()])
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<Record>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT seq, record FROM cairn_journal WHERE run_id = $1 ORDER BY seq", &[&run_id])
            .await
            .map_err(pg_err)?;
        records(run_id, rows)
    }

    async fn history(&self, run_id: &str, generation: u32) -> Result<Vec<Record>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, record FROM cairn_history WHERE run_id = $1 AND generation = $2 ORDER BY seq",
                &[&run_id, &(generation as i32)],
            )
            .await
            .map_err(pg_err)?;
        records(run_id, rows)
    }

    async fn completions(&self, run_id: &str) -> Result<Vec<(u32, StoredCompletion)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT handle, row FROM cairn_completions WHERE run_id = $1 ORDER BY handle", &[&run_id])
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let handle = r.get::<_, i32>(0) as u32;
                Ok((handle, parse("completions", &format!("{run_id}/{handle}"), r.get(1))?))
            })
            .collect()
    }

    async fn signals(&self, run_id: &str) -> Result<Vec<(u64, StoredSignal)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT seq, row FROM cairn_signals WHERE run_id = $1 ORDER BY seq", &[&run_id])
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let seq = r.get::<_, i64>(0) as u64;
                Ok((seq, parse("signals", &format!("{run_id}/{seq}"), r.get(1))?))
            })
            .collect()
    }

    async fn attempts(&self, run_id: &str, handle: u32) -> Result<u32, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT failed FROM cairn_attempts WHERE run_id = $1 AND handle = $2",
                &[&run_id, &(handle as i32)],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map_or(0, |r| r.get::<_, i32>(0) as u32))
    }

    async fn timers(&self, shards: &[u32]) -> Result<Vec<Timer>, StoreError> {
        let shards: Vec<i32> = shards.iter().map(|s| *s as i32).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT due_ms, run_id, handle FROM cairn_timers WHERE shard = ANY($1) ORDER BY due_ms, run_id, handle",
                &[&shards],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(timer).collect())
    }

    async fn run_timers(&self, run_id: &str) -> Result<Vec<Timer>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT due_ms, run_id, handle FROM cairn_timers WHERE run_id = $1 ORDER BY due_ms, handle",
                &[&run_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(timer).collect())
    }

    async fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT row FROM cairn_deployments WHERE name = $1", &[&name])
            .await
            .map_err(pg_err)?;
        row.map(|r| parse("deployments", name, r.get(0))).transpose()
    }

    async fn schedule(&self, name: &str) -> Result<Option<super::Schedule>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT row FROM cairn_schedules WHERE name = $1", &[&name])
            .await
            .map_err(pg_err)?;
        row.map(|r| parse("schedules", name, r.get(0))).transpose()
    }

    async fn schedules(&self) -> Result<Vec<super::Schedule>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT name, row FROM cairn_schedules ORDER BY name", &[])
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| parse("schedules", r.get(0), r.get(1))).collect()
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT name, row FROM cairn_deployments ORDER BY name", &[])
            .await
            .map_err(pg_err)?;
        rows.iter().map(|r| parse("deployments", r.get(0), r.get(1))).collect()
    }

    async fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cache = self.cached(&["components", sha256]);
        self.blob(cache, "SELECT bytes FROM cairn_components WHERE sha256 = $1", &[&sha256]).await
    }

    async fn compiled(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cache = self.cached(&["compiled", engine, sha256]);
        self.blob(cache, "SELECT bytes FROM cairn_compiled WHERE sha256 = $1 AND engine = $2", &[&sha256, &engine])
            .await
    }

    async fn buffered_signals(&self, run_id: &str) -> Result<Buffered, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE run_id = $1), coalesce(sum(length(row)) FILTER (WHERE run_id = $1), 0)::bigint, \
                 count(*), coalesce(sum(length(row)), 0)::bigint FROM cairn_signals",
                &[&run_id],
            )
            .await
            .map_err(pg_err)?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(Buffered { run: (n(0), n(1)), all: (n(2), n(3)) })
    }

    fn write_failure(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn shard_count(&self) -> u32 {
        self.shards
    }

    fn shared(&self) -> bool {
        true
    }

    fn coordinator(&self, host: super::HostIdentity) -> Arc<dyn super::Coordinator> {
        let tasks = Arc::new(tasks::PgTasks::new(self.pool.clone(), host.id.clone()));
        let leases = Leases::new(self.pool.clone(), host, self.shards, self.fence.clone());
        Arc::new(LeaseCoordinator::new(leases, self.config.clone(), tasks))
    }

    fn commit_metrics(&self) -> &crate::metrics::CommitMetrics {
        &self.metrics
    }

    async fn check(&self) -> Result<CheckReport, StoreError> {
        let mut client = self.client().await?;
        // One snapshot of every table.
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let mut rows = Rows::default();
        for r in txn.query("SELECT sha256 FROM cairn_components", &[]).await.map_err(pg_err)? {
            rows.components.insert(r.get(0));
        }
        for r in txn.query("SELECT run_id, meta, shard FROM cairn_runs", &[]).await.map_err(pg_err)? {
            let id: String = r.get(0);
            let meta = serde_json::from_slice::<RunMeta>(r.get(1)).map_err(|e| e.to_string());
            rows.runs.insert(id, meta);
        }
        for r in txn
            .query("SELECT run_id, seq, record FROM cairn_journal ORDER BY run_id, seq", &[])
            .await
            .map_err(pg_err)?
        {
            rows.journals.entry(r.get(0)).or_default().push((r.get::<_, i64>(1) as u64, r.get(2)));
        }
        for r in txn.query("SELECT run_id, handle, row FROM cairn_completions", &[]).await.map_err(pg_err)? {
            rows.completions.push((r.get(0), r.get::<_, i32>(1) as u32, r.get(2)));
        }
        for r in txn.query("SELECT run_id, handle FROM cairn_timers", &[]).await.map_err(pg_err)? {
            rows.timers.push((r.get(0), r.get::<_, i32>(1) as u32));
        }
        for r in txn.query("SELECT run_id, seq FROM cairn_signals", &[]).await.map_err(pg_err)? {
            rows.signals.push((r.get(0), r.get::<_, i64>(1) as u64));
        }
        for r in txn.query("SELECT run_id, handle FROM cairn_attempts", &[]).await.map_err(pg_err)? {
            rows.attempts.push((r.get(0), r.get::<_, i32>(1) as u32));
        }
        for r in txn.query("SELECT name, row FROM cairn_deployments", &[]).await.map_err(pg_err)? {
            rows.deployments.push((r.get(0), r.get(1)));
        }
        // The columns queries filter on must say what the row says.
        let mut mismatched = Vec::new();
        for r in txn
            .query("SELECT run_id, workflow, version, status, generation, shard, meta FROM cairn_runs", &[])
            .await
            .map_err(pg_err)?
        {
            let Ok(meta) = serde_json::from_slice::<RunMeta>(r.get(6)) else { continue };
            let columns = (
                r.get::<_, String>(1),
                r.get::<_, Option<i32>>(2).map(|v| v as u32),
                r.get::<_, String>(3),
                r.get::<_, i32>(4) as u32,
                r.get::<_, i32>(5) as u32,
            );
            let row =
                (meta.workflow.clone(), meta.version, meta.status.as_str().to_owned(), meta.generation, meta.shard);
            if columns != row {
                mismatched
                    .push(format!("run {}: its indexed columns {columns:?} do not match its row {row:?}", meta.id));
            }
        }
        let shards: i64 = txn.query_one("SELECT count(*) FROM cairn_shards", &[]).await.map_err(pg_err)?.get(0);
        let out_of_range: Vec<String> = txn
            .query("SELECT run_id FROM cairn_runs WHERE shard < 0 OR shard >= $1", &[&(shards as i32)])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| format!("run {}: its shard is not one of the database's {shards}", r.get::<_, String>(0)))
            .collect();
        txn.commit().await.map_err(pg_err)?;
        let mut report = judge(rows);
        report.problems.extend(mismatched);
        report.problems.extend(out_of_range);
        Ok(report)
    }
}

fn timer(row: &tokio_postgres::Row) -> Timer {
    Timer { due_ms: row.get::<_, i64>(0) as u64, run_id: row.get(1), handle: row.get::<_, i32>(2) as u32 }
}

/// One of the writers: takes what is queued for it, commits it as one group,
/// acknowledges each batch. A group whose transaction fails (the database
/// is down, the connection dropped, the outcome of `COMMIT` unknown) is
/// retried whole until it commits: runs wait, and nothing is lost or
/// applied twice.
struct Writer {
    pool: Pool,
    metrics: Arc<crate::metrics::CommitMetrics>,
    failing: Arc<Mutex<Option<String>>>,
    fence: Arc<Fence>,
    /// Group commits of every writer so far.
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Shards in the database.
    shards: u32,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let Writer { pool, metrics, failing, fence, commits, shards } = self;
        let mut group: Vec<Request> = Vec::new();
        let mut connection = None;
        // Test-only crash point: die right after the Nth group commit.
        let crash_after: Option<u64> =
            super::test_hook("CAIRN_CRASH_AFTER_COMMITS").and_then(|v| v.to_str()?.parse().ok());
        loop {
            if group.is_empty() {
                match rx.recv().await {
                    Some(request) => group.push(request),
                    None => return,
                }
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let batches: Vec<&Batch> = group.iter().map(|r| &r.batch).collect();
            let mut backoff = Duration::from_millis(50);
            let results = loop {
                match commit_group(&pool, &mut connection, &batches, &fence, shards).await {
                    Ok(results) => {
                        if failing.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
                            tracing::info!("commits succeed again");
                        }
                        break results;
                    }
                    Err(e) => {
                        let reason = format!("{e}");
                        tracing::warn!(error = %reason, retry_in_ms = backoff.as_millis() as u64, "a commit failed; retrying it");
                        *failing.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            };
            metrics.latency.observe_duration(started.elapsed());
            metrics.batch_size.observe(batches.iter().map(|b| b.len()).sum::<usize>() as f64);
            drop(batches);
            let committed = commits.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
            if crash_after == Some(committed) {
                // SAFETY: kill(2) on our own pid; the point is to die abruptly,
                // committed and not yet acknowledged.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            for (request, result) in group.drain(..).zip(results) {
                let _ = request.ack.send(result);
            }
        }
    }
}

/// What a group's checks know of a run, as of the batches judged so far.
#[derive(Clone, Copy)]
struct RunState {
    shard: u32,
    generation: u32,
    status: RunStatus,
}

/// One statement of a group, with its parameters.
enum Stmt {
    PutRun {
        id: String,
        shard: i32,
        workflow: String,
        version: Option<i32>,
        status: &'static str,
        generation: i32,
        meta: Vec<u8>,
        ended: Option<i64>,
        slot_key: Option<String>,
        slot_priority: Option<i16>,
        created: i64,
        /// The search attributes as JSON, none when there are none.
        search: Option<String>,
    },
    BucketLock {
        workflow: String,
        key: String,
    },
    Promote {
        workflow: String,
        key: String,
        limit: i64,
        now: i64,
        every: i64,
        cap: i64,
    },
    DeleteRun {
        run: String,
    },
    DeleteComponent {
        sha256: String,
    },
    DropSignals {
        run: String,
    },
    /// Journal entries appended one after another in the group, in one
    /// statement.
    Append {
        runs: Vec<String>,
        seqs: Vec<i64>,
        records: Vec<Vec<u8>>,
    },
    PutCompletion {
        run: String,
        handle: i32,
        row: Vec<u8>,
    },
    DeleteCompletion {
        run: String,
        handle: i32,
    },
    PutTimer {
        run: String,
        due: i64,
        handle: i32,
        shard: i32,
    },
    DeleteTimer {
        run: String,
        due: i64,
        handle: i32,
    },
    PutSignal {
        run: String,
        seq: i64,
        row: Vec<u8>,
    },
    DeleteSignal {
        run: String,
        seq: i64,
    },
    MoveToHistory {
        run: String,
        generation: i32,
        end_seq: i64,
        end: Vec<u8>,
    },
    PutAttempts {
        run: String,
        handle: i32,
        failed: i32,
    },
    DeleteAttempts {
        run: String,
        handle: i32,
    },
    PutDeployment {
        name: String,
        row: Vec<u8>,
    },
    PutSchedule {
        name: String,
        row: Vec<u8>,
    },
    DeleteSchedule {
        name: String,
    },
    PutComponent {
        sha256: String,
        bytes: Vec<u8>,
    },
    PutCompiled {
        sha256: String,
        engine: String,
        bytes: Vec<u8>,
    },
    Wakeup {
        shard: i32,
        run: String,
    },
    Notify {
        channel: &'static str,
        payload: String,
    },
}

const PUT_RUN: &str = "INSERT INTO cairn_runs (run_id, shard, workflow, version, status, generation, meta, ended_ms, \
    slot_key, slot_priority, created_ms, search) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::jsonb) \
    ON CONFLICT (run_id) DO UPDATE SET shard = EXCLUDED.shard, \
    workflow = EXCLUDED.workflow, version = EXCLUDED.version, status = EXCLUDED.status, \
    generation = EXCLUDED.generation, meta = EXCLUDED.meta, ended_ms = EXCLUDED.ended_ms, \
    slot_key = EXCLUDED.slot_key, slot_priority = EXCLUDED.slot_priority, created_ms = EXCLUDED.created_ms, \
    search = EXCLUDED.search";
/// One host at a time changes a concurrency bucket (taken before
/// `PROMOTE`, so its snapshot sees every earlier promotion).
const BUCKET_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('cairn-bucket:' || $1 || '/' || $2))";
/// Starts the queued runs of a bucket that fit under its limit, as of this
/// transaction's earlier statements, and wakes their hosts.
/// With a rate ($5 ms per token, $6 the bucket's capacity in ms; $5 = 0
/// for none), also as many as its token bucket allows, which it spends.
const PROMOTE: &str = "WITH active AS (SELECT count(*) AS n FROM cairn_runs WHERE workflow = $1 AND slot_key = $2 \
    AND status IN ('running', 'paused', 'diverged')), \
    bucket AS (SELECT least($6::bigint, coalesce((SELECT credit_ms + greatest(0, $4::bigint - at_ms) FROM cairn_buckets \
    WHERE workflow = $1 AND key = $2), $6::bigint)) AS credit), \
    next AS (SELECT run_id FROM cairn_runs WHERE workflow = $1 AND slot_key = $2 AND status = 'queued' \
    ORDER BY slot_priority, created_ms, run_id LIMIT greatest(0, least($3::bigint - (SELECT n FROM active), \
    CASE WHEN $5::bigint > 0 THEN (SELECT credit FROM bucket) / $5::bigint ELSE 9223372036854775807 END)) \
    FOR UPDATE SKIP LOCKED), \
    promoted AS (UPDATE cairn_runs r SET status = 'running', meta = convert_to(jsonb_set(jsonb_set( \
    convert_from(r.meta, 'UTF8')::jsonb, '{status}', '\"running\"'), '{updated_ms}', to_jsonb($4::bigint))::text, 'UTF8') \
    FROM next WHERE r.run_id = next.run_id RETURNING r.shard, r.run_id), \
    spent AS (INSERT INTO cairn_buckets (workflow, key, credit_ms, at_ms) \
    SELECT $1, $2, (SELECT credit FROM bucket) - (SELECT count(*) FROM promoted) * $5::bigint, $4::bigint WHERE $5::bigint > 0 \
    ON CONFLICT (workflow, key) DO UPDATE SET credit_ms = EXCLUDED.credit_ms, at_ms = EXCLUDED.at_ms RETURNING 1), \
    woken AS (INSERT INTO cairn_wakeups (shard, run_id) SELECT shard, run_id FROM promoted RETURNING 1) \
    SELECT pg_notify('cairn_wakeups', '') FROM (SELECT 1 FROM woken LIMIT 1) w";
const DELETE_RUN: &str = "WITH j AS (DELETE FROM cairn_journal WHERE run_id = $1), \
    h AS (DELETE FROM cairn_history WHERE run_id = $1), c AS (DELETE FROM cairn_completions WHERE run_id = $1), \
    t AS (DELETE FROM cairn_timers WHERE run_id = $1), s AS (DELETE FROM cairn_signals WHERE run_id = $1), \
    a AS (DELETE FROM cairn_attempts WHERE run_id = $1), w AS (DELETE FROM cairn_wakeups WHERE run_id = $1) \
    DELETE FROM cairn_runs WHERE run_id = $1";
/// Only while no deployment refers to it (a deploy of the same bytes
/// committed meanwhile keeps them).
const DELETE_COMPONENT: &str = "WITH unused AS (SELECT $1::text AS sha WHERE NOT EXISTS \
    (SELECT 1 FROM cairn_deployments WHERE strpos(convert_from(row, 'UTF8'), $1::text) > 0)), \
    c AS (DELETE FROM cairn_compiled WHERE sha256 IN (SELECT sha FROM unused)) \
    DELETE FROM cairn_components WHERE sha256 IN (SELECT sha FROM unused)";
const DROP_SIGNALS: &str = "DELETE FROM cairn_signals WHERE run_id = $1";
const APPEND: &str = "INSERT INTO cairn_journal (run_id, seq, record) \
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]) ON CONFLICT (run_id, seq) DO NOTHING";
const PUT_COMPLETION: &str = "INSERT INTO cairn_completions (run_id, handle, row) VALUES ($1, $2, $3) \
    ON CONFLICT (run_id, handle) DO UPDATE SET row = EXCLUDED.row";
const DELETE_COMPLETION: &str = "DELETE FROM cairn_completions WHERE run_id = $1 AND handle = $2";
const PUT_TIMER: &str = "INSERT INTO cairn_timers (run_id, due_ms, handle, shard) VALUES ($1, $2, $3, $4) \
    ON CONFLICT DO NOTHING";
const DELETE_TIMER: &str = "DELETE FROM cairn_timers WHERE run_id = $1 AND due_ms = $2 AND handle = $3";
const PUT_SIGNAL: &str = "INSERT INTO cairn_signals (run_id, seq, row) VALUES ($1, $2, $3) \
    ON CONFLICT (run_id, seq) DO UPDATE SET row = EXCLUDED.row";
const DELETE_SIGNAL: &str = "DELETE FROM cairn_signals WHERE run_id = $1 AND seq = $2";
/// Continue-as-new: the journal moves to history with its end entry, and
/// the generation's completions, retry counts and timers go.
const MOVE_TO_HISTORY: &str = "WITH moved AS (DELETE FROM cairn_journal WHERE run_id = $1::text RETURNING run_id, seq, record), \
    kept AS (INSERT INTO cairn_history (run_id, generation, seq, record) \
        SELECT run_id, $2::integer, seq, record FROM moved UNION ALL SELECT $1::text, $2::integer, $3::bigint, $4::bytea \
        ON CONFLICT DO NOTHING RETURNING 1), \
    c AS (DELETE FROM cairn_completions WHERE run_id = $1 RETURNING 1), \
    a AS (DELETE FROM cairn_attempts WHERE run_id = $1 RETURNING 1), \
    t AS (DELETE FROM cairn_timers WHERE run_id = $1 RETURNING 1) \
    SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM c) + (SELECT count(*) FROM a) + (SELECT count(*) FROM t)";
const PUT_ATTEMPTS: &str = "INSERT INTO cairn_attempts (run_id, handle, failed) VALUES ($1, $2, $3) \
    ON CONFLICT (run_id, handle) DO UPDATE SET failed = EXCLUDED.failed";
const DELETE_ATTEMPTS: &str = "DELETE FROM cairn_attempts WHERE run_id = $1 AND handle = $2";
const PUT_DEPLOYMENT: &str = "INSERT INTO cairn_deployments (name, row) VALUES ($1, $2) \
    ON CONFLICT (name) DO UPDATE SET row = EXCLUDED.row";
const PUT_SCHEDULE: &str = "INSERT INTO cairn_schedules (name, row) VALUES ($1, $2) \
    ON CONFLICT (name) DO UPDATE SET row = EXCLUDED.row";
const DELETE_SCHEDULE: &str = "DELETE FROM cairn_schedules WHERE name = $1";
const PUT_COMPONENT: &str = "INSERT INTO cairn_components (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const PUT_COMPILED: &str = "INSERT INTO cairn_compiled (sha256, engine, bytes) VALUES ($1, $2, $3) \
    ON CONFLICT (sha256, engine) DO UPDATE SET bytes = EXCLUDED.bytes";
const WAKEUP: &str = "INSERT INTO cairn_wakeups (shard, run_id) VALUES ($1, $2)";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
/// The rows a group's checks need: its runs (with their shards' epochs,
/// share-locked), the journal rows at the seqs it appends, the last seq of
/// the runs it continues as new.
const READ_RUNS: &str = "SELECT r.run_id, r.shard, r.generation, r.status, s.epoch FROM cairn_runs r \
    JOIN cairn_shards s ON s.shard = r.shard WHERE r.run_id = ANY($1)";
/// The shared fence locks of a group's shards (see `commit_group`).
const FENCE_LOCK: &str =
    "SELECT pg_advisory_xact_lock_shared($1::bigint + s) FROM unnest($2::integer[]) AS s ORDER BY s";

/// The advisory lock keys of the shards' fences: this plus the shard.
pub(crate) const FENCE_LOCKS: i64 = 0x6361_6972_0000_0000;

const READ_APPENDED: &str = "SELECT j.run_id, j.seq, j.record FROM cairn_journal j \
    JOIN unnest($1::text[], $2::bigint[]) AS a(run_id, seq) ON j.run_id = a.run_id AND j.seq = a.seq";
const READ_LAST_SEQ: &str = "SELECT run_id, max(seq) FROM cairn_journal WHERE run_id = ANY($1) GROUP BY run_id";

impl Stmt {
    fn sql(&self) -> &'static str {
        match self {
            Stmt::PutRun { .. } => PUT_RUN,
            Stmt::DeleteRun { .. } => DELETE_RUN,
            Stmt::BucketLock { .. } => BUCKET_LOCK,
            Stmt::Promote { .. } => PROMOTE,
            Stmt::DeleteComponent { .. } => DELETE_COMPONENT,
            Stmt::DropSignals { .. } => DROP_SIGNALS,
            Stmt::Append { .. } => APPEND,
            Stmt::PutCompletion { .. } => PUT_COMPLETION,
            Stmt::DeleteCompletion { .. } => DELETE_COMPLETION,
            Stmt::PutTimer { .. } => PUT_TIMER,
            Stmt::DeleteTimer { .. } => DELETE_TIMER,
            Stmt::PutSignal { .. } => PUT_SIGNAL,
            Stmt::DeleteSignal { .. } => DELETE_SIGNAL,
            Stmt::MoveToHistory { .. } => MOVE_TO_HISTORY,
            Stmt::PutAttempts { .. } => PUT_ATTEMPTS,
            Stmt::DeleteAttempts { .. } => DELETE_ATTEMPTS,
            Stmt::PutDeployment { .. } => PUT_DEPLOYMENT,
            Stmt::PutSchedule { .. } => PUT_SCHEDULE,
            Stmt::DeleteSchedule { .. } => DELETE_SCHEDULE,
            Stmt::PutComponent { .. } => PUT_COMPONENT,
            Stmt::PutCompiled { .. } => PUT_COMPILED,
            Stmt::Wakeup { .. } => WAKEUP,
            Stmt::Notify { .. } => NOTIFY,
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Stmt::PutRun {
                id,
                shard,
                workflow,
                version,
                status,
                generation,
                meta,
                ended,
                slot_key,
                slot_priority,
                created,
                search,
            } => vec![
                id,
                shard,
                workflow,
                version,
                status,
                generation,
                meta,
                ended,
                slot_key,
                slot_priority,
                created,
                search,
            ],
            Stmt::BucketLock { workflow, key } => vec![workflow, key],
            Stmt::Promote { workflow, key, limit, now, every, cap } => vec![workflow, key, limit, now, every, cap],
            Stmt::DeleteRun { run } => vec![run],
            Stmt::DeleteComponent { sha256 } => vec![sha256],
            Stmt::DropSignals { run } => vec![run],
            Stmt::Append { runs, seqs, records } => vec![runs, seqs, records],
            Stmt::PutCompletion { run, handle, row } => vec![run, handle, row],
            Stmt::DeleteCompletion { run, handle } => vec![run, handle],
            Stmt::PutTimer { run, due, handle, shard } => vec![run, due, handle, shard],
            Stmt::DeleteTimer { run, due, handle } => vec![run, due, handle],
            Stmt::PutSignal { run, seq, row } => vec![run, seq, row],
            Stmt::DeleteSignal { run, seq } => vec![run, seq],
            Stmt::MoveToHistory { run, generation, end_seq, end } => vec![run, generation, end_seq, end],
            Stmt::PutAttempts { run, handle, failed } => vec![run, handle, failed],
            Stmt::DeleteAttempts { run, handle } => vec![run, handle],
            Stmt::PutDeployment { name, row } | Stmt::PutSchedule { name, row } => vec![name, row],
            Stmt::DeleteSchedule { name } => vec![name],
            Stmt::PutComponent { sha256, bytes } => vec![sha256, bytes],
            Stmt::PutCompiled { sha256, engine, bytes } => vec![sha256, engine, bytes],
            Stmt::Wakeup { shard, run } => vec![shard, run],
            Stmt::Notify { channel, payload } => vec![channel, payload],
        }
    }
}

/// The stored rows of the catalog names (deployments or schedules) the
/// group changes, read under an advisory lock per name (which also covers a
/// name not stored yet), so a change another host just committed is seen
/// and no two hosts change one name at once.
async fn catalog_rows<T: serde::de::DeserializeOwned>(
    txn: &tokio_postgres::Client,
    group: &[&Batch],
    what: &str,
    name_of: impl Fn(&Write) -> Option<&str>,
) -> Result<HashMap<String, T>, tokio_postgres::Error> {
    let mut names: Vec<&str> = group.iter().flat_map(|b| b.iter()).filter_map(name_of).collect();
    names.sort_unstable();
    names.dedup();
    let mut rows = HashMap::new();
    if names.is_empty() {
        return Ok(rows);
    }
    let lock =
        format!("SELECT pg_advisory_xact_lock(hashtext('cairn-{what}:' || n)) FROM unnest($1::text[]) AS n ORDER BY n");
    txn.execute(&lock, &[&names]).await?;
    for row in txn.query(&format!("SELECT name, row FROM cairn_{what}s WHERE name = ANY($1)"), &[&names]).await? {
        if let Ok(value) = serde_json::from_slice::<T>(row.get(1)) {
            rows.insert(row.get(0), value);
        }
    }
    Ok(rows)
}

/// The run a write is about, if it is about one.
fn run_of(write: &Write) -> Option<&str> {
    match write {
        Write::PutRun(meta) => Some(&meta.id),
        Write::ContinueAsNew { meta, .. } => Some(&meta.id),
        Write::Append { run_id, .. }
        | Write::PutCompletion { run_id, .. }
        | Write::DeleteCompletion { run_id, .. }
        | Write::PutTimer { run_id, .. }
        | Write::DeleteTimer { run_id, .. }
        | Write::PutSignal { run_id, .. }
        | Write::DeleteSignal { run_id, .. }
        | Write::PutAttempts { run_id, .. }
        | Write::DeleteAttempts { run_id, .. }
        | Write::DeleteRun { run_id } => Some(run_id),
        Write::PutDeployment(_)
        | Write::PutSchedule(_)
        | Write::DeleteSchedule { .. }
        | Write::DeleteComponent { .. }
        | Write::Promote { .. }
        | Write::PutComponent { .. }
        | Write::PutCompiled { .. } => None,
    }
}

/// Whether only the owner of the run's shard may make this write: anything
/// but an inbox row (a signal, a completion) for it, or the deletion of a
/// finished run (nobody drives it).
fn owner_only(write: &Write) -> bool {
    !matches!(write, Write::PutSignal { .. } | Write::PutCompletion { .. } | Write::DeleteRun { .. })
}

/// One attempt at committing a group in one transaction: the results per
/// batch, or why the transaction as a whole did not commit.
async fn commit_group(
    pool: &Pool,
    connection: &mut Option<deadpool_postgres::Object>,
    group: &[&Batch],
    fence: &Fence,
    shard_count: u32,
) -> Result<Vec<Result<(), CommitError>>, Box<dyn std::error::Error + Send + Sync>> {
    // The writer keeps its connection: readers never make it wait for one.
    let client = match connection.take() {
        Some(client) if !client.is_closed() => client,
        _ => pool.get().await?,
    };
    let result = commit_on(&client, group, fence, shard_count).await;
    if result.is_err() {
        // The transaction failed part-way: end it (a no-op if it already
        // ended); a connection that cannot is not used again.
        if client.batch_execute("ROLLBACK").await.is_err() {
            return result;
        }
    }
    *connection = Some(client);
    result
}

/// The transaction of [`commit_group`] in two flights to the server: the
/// `BEGIN`, the fence locks and the rows the checks need, sent together;
/// then every statement and the `COMMIT`, sent together.
async fn commit_on(
    txn: &deadpool_postgres::Object,
    group: &[&Batch],
    fence: &Fence,
    shard_count: u32,
) -> Result<Vec<Result<(), CommitError>>, Box<dyn std::error::Error + Send + Sync>> {
    // What the checks need, read in one go: the runs written, the journal
    // rows at the seqs appended, the last seq of runs continued as new.
    let mut run_ids: BTreeSet<&str> = BTreeSet::new();
    let (mut append_runs, mut append_seqs): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
    let mut continued: BTreeSet<&str> = BTreeSet::new();
    for write in group.iter().flat_map(|b| b.iter()) {
        if let Some(run) = run_of(write) {
            run_ids.insert(run);
        }
        match write {
            Write::Append { run_id, record } => {
                append_runs.push(run_id);
                append_seqs.push(record.seq as i64);
            }
            Write::ContinueAsNew { meta, .. } => {
                continued.insert(&meta.id);
            }
            _ => {}
        }
    }
    let run_ids: Vec<&str> = run_ids.into_iter().collect();
    let continued: Vec<&str> = continued.into_iter().collect();
    let p1: [&(dyn ToSql + Sync); 1] = [&run_ids];
    let p2: [&(dyn ToSql + Sync); 2] = [&append_runs, &append_seqs];
    let p3: [&(dyn ToSql + Sync); 1] = [&continued];
    // Fencing: a shared lock on each shard the group may write under (a
    // run's shard is the hash of its id, so it is known before any read),
    // then the epochs, read after the locks. A takeover bumps the epoch
    // under the exclusive lock: it waits for this transaction, or this one
    // reads the new epoch. Advisory locks live in the lock manager only,
    // so many commits sharing one cost no row writes.
    let mut shards: Vec<i32> = run_ids.iter().map(|r| super::shard_of(r, shard_count) as i32).collect();
    shards.sort_unstable();
    shards.dedup();
    let begin_q = txn.prepare_cached("BEGIN").await?;
    let lock_q = txn.prepare_cached(FENCE_LOCK).await?;
    let p0: [&(dyn ToSql + Sync); 2] = [&FENCE_LOCKS, &shards];
    let runs_q = txn.prepare_cached(READ_RUNS).await?;
    let stored_q = txn.prepare_cached(READ_APPENDED).await?;
    let last_q = txn.prepare_cached(READ_LAST_SEQ).await?;
    let (_, _, runs, stored, last) = futures_util::try_join!(
        txn.execute(&begin_q, &[]),
        txn.execute(&lock_q, &p0),
        txn.query(&runs_q, &p1),
        async {
            match append_runs.is_empty() {
                true => Ok(Vec::new()),
                false => txn.query(&stored_q, &p2).await,
            }
        },
        async {
            match continued.is_empty() {
                true => Ok(Vec::new()),
                false => txn.query(&last_q, &p3).await,
            }
        },
    )?;
    // Deployments changed by the group: one host at a time per name (an
    // advisory lock, which also covers a name not deployed yet), read after
    // the lock so a change another host just committed is seen.
    // Schedules the same way.
    let mut deployments: HashMap<String, Deployment> = catalog_rows(txn, group, "deployment", |w| match w {
        Write::PutDeployment(d) => Some(d.name.as_str()),
        _ => None,
    })
    .await?;
    let mut schedules: HashMap<String, super::Schedule> = catalog_rows(txn, group, "schedule", |w| match w {
        Write::PutSchedule(s) => Some(s.name.as_str()),
        _ => None,
    })
    .await?;
    let mut states: HashMap<String, RunState> = HashMap::new();
    let mut epochs: HashMap<u32, i64> = HashMap::new();
    // A run stored under another shard than its id's hash (a journal
    // imported by hand): its shard is locked, and its epoch read, now.
    let mut elsewhere: Vec<i32> =
        runs.iter().map(|r| r.get::<_, i32>(1)).filter(|s| shards.binary_search(s).is_err()).collect();
    if !elsewhere.is_empty() {
        elsewhere.sort_unstable();
        elsewhere.dedup();
        txn.execute(&lock_q, &[&FENCE_LOCKS, &elsewhere]).await?;
        for row in txn.query("SELECT shard, epoch FROM cairn_shards WHERE shard = ANY($1)", &[&elsewhere]).await? {
            epochs.insert(row.get::<_, i32>(0) as u32, row.get::<_, i64>(1));
        }
        shards.extend(elsewhere);
        shards.sort_unstable();
    }
    for row in &runs {
        epochs.entry(row.get::<_, i32>(1) as u32).or_insert(row.get::<_, i64>(4));
        let status: &str = row.get(3);
        let status =
            RunStatus::parse(status).ok_or_else(|| format!("run {} has status {status:?}", row.get::<_, &str>(0)))?;
        let state = RunState { shard: row.get::<_, i32>(1) as u32, generation: row.get::<_, i32>(2) as u32, status };
        states.insert(row.get(0), state);
    }
    // (run, seq) → the bytes there, as of the batches judged so far.
    let mut journal: HashMap<(String, u64), Vec<u8>> = HashMap::new();
    for row in &stored {
        journal.insert((row.get(0), row.get::<_, i64>(1) as u64), row.get(2));
    }
    let mut last_seq: HashMap<String, Option<u64>> = HashMap::new();
    for row in &last {
        last_seq.insert(row.get(0), row.get::<_, Option<i64>>(1).map(|s| s as u64));
    }

    // The shards written under, checked against the epochs this host holds.
    let mut fenced: BTreeSet<u32> = BTreeSet::new();
    for write in group.iter().flat_map(|b| b.iter()) {
        if let (true, Some(run)) = (owner_only(write), run_of(write)) {
            if let Some(state) = states.get(run) {
                fenced.insert(state.shard);
            }
        }
    }
    let mut lost: HashSet<u32> = HashSet::new();
    for shard in &fenced {
        let locked = shards.binary_search(&(*shard as i32)).is_ok();
        if !locked || fence.epoch(*shard).is_none() || fence.epoch(*shard) != epochs.get(shard).copied() {
            lost.insert(*shard);
        }
    }

    let mut results = Vec::with_capacity(group.len());
    let mut stmts: Vec<Stmt> = Vec::new();
    let mut moved: HashSet<String> = HashSet::new();
    let mut woken: HashSet<(u32, String)> = HashSet::new();
    'batches: for batch in group {
        // A continue-as-new that already landed: its batch landed whole.
        for write in batch.iter() {
            if let Write::ContinueAsNew { meta, .. } = write {
                if states.get(&meta.id).is_some_and(|s| s.generation >= meta.generation) {
                    results.push(Ok(()));
                    continue 'batches;
                }
            }
        }
        // Owner writes under a shard this host lost are refused.
        for write in batch.iter() {
            let Some(run) = run_of(write).filter(|_| owner_only(write)) else { continue };
            if let Some(state) = states.get(run).filter(|s| lost.contains(&s.shard)) {
                fence.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(shard = state.shard, run_id = run, "refused a write under a shard this host lost");
                results.push(Err(CommitError::ShardLost { shard: state.shard }));
                continue 'batches;
            }
        }
        // A deployment changed from a revision that is not the stored one.
        for write in batch.iter() {
            if let Write::PutDeployment(d) = write {
                if let Some(conflict) = super::deployment_conflict(deployments.get(&d.name), d) {
                    results.push(Err(conflict));
                    continue 'batches;
                }
            }
            if let Write::PutSchedule(s) = write {
                if let Some(conflict) = super::schedule_conflict(schedules.get(&s.name), s) {
                    results.push(Err(conflict));
                    continue 'batches;
                }
            }
        }
        // An append over other bytes is refused; the same bytes are a retry.
        let mut seen = HashSet::new();
        for write in batch.iter() {
            if let Write::Append { run_id, record } = write {
                let key = (run_id.clone(), record.seq);
                let there = match moved.contains(run_id) {
                    true => journal.get(&key).filter(|_| record.seq == 0),
                    false => journal.get(&key),
                };
                let landed = there.is_some_and(|bytes| *bytes == journal::encode(record));
                if !seen.insert(key) || (there.is_some() && !landed) {
                    results.push(Err(CommitError::DuplicateSeq { run_id: run_id.clone(), seq: record.seq }));
                    continue 'batches;
                }
            }
        }
        for write in batch.iter() {
            match write {
                Write::DeleteRun { run_id } => {
                    states.remove(run_id);
                    stmts.push(Stmt::DeleteRun { run: run_id.clone() });
                }
                Write::DeleteComponent { sha256 } => stmts.push(Stmt::DeleteComponent { sha256: sha256.clone() }),
                Write::Promote { workflow, key, admission } => {
                    stmts.push(Stmt::BucketLock { workflow: workflow.clone(), key: key.clone() });
                    let (every, cap) = match admission.rate {
                        Some(rate) => {
                            let every = rate.every_ms.max(1) as i64;
                            (every, every.saturating_mul(i64::from(rate.burst.max(1))))
                        }
                        None => (0, 0),
                    };
                    stmts.push(Stmt::Promote {
                        workflow: workflow.clone(),
                        key: key.clone(),
                        limit: i64::from(admission.limit),
                        now: crate::runtime::now_ms() as i64,
                        every,
                        cap,
                    });
                }
                Write::PutRun(meta) => {
                    // A new run in a shard another host drives: wake it.
                    if !states.contains_key(&meta.id) && !meta.status.is_final() {
                        woken.insert((meta.shard, meta.id.clone()));
                    }
                    stmts.push(put_run(meta));
                    if meta.status.is_final() {
                        stmts.push(Stmt::DropSignals { run: meta.id.clone() });
                    }
                    states.insert(
                        meta.id.clone(),
                        RunState { shard: meta.shard, generation: meta.generation, status: meta.status },
                    );
                }
                Write::Append { run_id, record } => {
                    let bytes = journal::encode(record);
                    let last = last_seq.entry(run_id.clone()).or_insert(None);
                    *last = Some(last.map_or(record.seq, |l| l.max(record.seq)));
                    journal.insert((run_id.clone(), record.seq), bytes.clone());
                    append(&mut stmts, run_id, record.seq, bytes);
                }
                Write::PutCompletion { run_id, handle, completion } => {
                    let state = states.get(run_id.as_str());
                    // A completion of a generation the run has left.
                    if let (Some(generation), Some(state)) = (completion.generation, state) {
                        if state.generation != generation {
                            continue;
                        }
                    }
                    let row = serde_json::to_vec(completion).expect("completions serialise");
                    stmts.push(Stmt::PutCompletion { run: run_id.clone(), handle: *handle as i32, row });
                    if let Some(state) = state {
                        woken.insert((state.shard, run_id.clone()));
                    }
                }
                Write::DeleteCompletion { run_id, handle } => {
                    stmts.push(Stmt::DeleteCompletion { run: run_id.clone(), handle: *handle as i32 })
                }
                Write::PutTimer { due_ms, run_id, handle } => {
                    let shard = states.get(run_id.as_str()).map_or(0, |s| s.shard) as i32;
                    stmts.push(Stmt::PutTimer {
                        run: run_id.clone(),
                        due: *due_ms as i64,
                        handle: *handle as i32,
                        shard,
                    });
                }
                Write::DeleteTimer { due_ms, run_id, handle } => {
                    stmts.push(Stmt::DeleteTimer { run: run_id.clone(), due: *due_ms as i64, handle: *handle as i32 })
                }
                Write::PutSignal { run_id, seq, signal } => {
                    // A signal to a run whose end committed first.
                    let state = states.get(run_id.as_str());
                    if state.is_some_and(|s| s.status.is_final()) {
                        continue;
                    }
                    let row = serde_json::to_vec(signal).expect("signals serialise");
                    stmts.push(Stmt::PutSignal { run: run_id.clone(), seq: *seq as i64, row });
                    if let Some(state) = state {
                        woken.insert((state.shard, run_id.clone()));
                    }
                }
                Write::DeleteSignal { run_id, seq } => {
                    stmts.push(Stmt::DeleteSignal { run: run_id.clone(), seq: *seq as i64 })
                }
                Write::ContinueAsNew { meta, start } => {
                    let run = meta.id.clone();
                    let ended = meta.generation.saturating_sub(1);
                    let end_seq = match moved.contains(&run) {
                        true => 0,
                        false => last_seq.get(&run).copied().flatten().map_or(0, |s| s + 1),
                    };
                    let end = journal::Record {
                        seq: end_seq,
                        at_ms: start.at_ms,
                        entry: journal::Entry::ContinuedAsNew { input: meta.input.clone() },
                    };
                    stmts.push(Stmt::MoveToHistory {
                        run: run.clone(),
                        generation: ended as i32,
                        end_seq: end_seq as i64,
                        end: journal::encode(&end),
                    });
                    journal.retain(|(r, _), _| r != &run);
                    let bytes = journal::encode(start);
                    journal.insert((run.clone(), 0), bytes.clone());
                    last_seq.insert(run.clone(), Some(0));
                    moved.insert(run.clone());
                    append(&mut stmts, &run, 0, bytes);
                    stmts.push(put_run(meta));
                    states
                        .insert(run, RunState { shard: meta.shard, generation: meta.generation, status: meta.status });
                }
                Write::PutAttempts { run_id, handle, failed } => stmts.push(Stmt::PutAttempts {
                    run: run_id.clone(),
                    handle: *handle as i32,
                    failed: *failed as i32,
                }),
                Write::DeleteAttempts { run_id, handle } => {
                    stmts.push(Stmt::DeleteAttempts { run: run_id.clone(), handle: *handle as i32 })
                }
                Write::PutDeployment(d) => {
                    deployments.insert(d.name.clone(), d.clone());
                    let row = serde_json::to_vec(d).expect("deployments serialise");
                    stmts.push(Stmt::PutDeployment { name: d.name.clone(), row });
                }
                Write::PutSchedule(s) => {
                    schedules.insert(s.name.clone(), s.clone());
                    let row = serde_json::to_vec(s).expect("schedules serialise");
                    stmts.push(Stmt::PutSchedule { name: s.name.clone(), row });
                }
                Write::DeleteSchedule { name } => {
                    schedules.remove(name);
                    stmts.push(Stmt::DeleteSchedule { name: name.clone() });
                }
                Write::PutComponent { sha256, bytes } => {
                    stmts.push(Stmt::PutComponent { sha256: sha256.clone(), bytes: bytes.to_vec() })
                }
                Write::PutCompiled { sha256, engine, bytes } => stmts.push(Stmt::PutCompiled {
                    sha256: sha256.clone(),
                    engine: engine.clone(),
                    bytes: bytes.clone(),
                }),
            }
        }
        results.push(Ok(()));
    }
    // A wake-up row for each run another host may be driving: the table is
    // the truth, the notification a hint.
    for (shard, run) in woken {
        if fence.epoch(shard).is_none() {
            stmts.push(Stmt::Wakeup { shard: shard as i32, run });
        }
    }

    // Hints for the other hosts, delivered when the transaction commits:
    // look at the wake-up table; these runs ended (for clients waiting on
    // them there).
    if stmts.iter().any(|s| matches!(s, Stmt::Wakeup { .. })) {
        stmts.push(Stmt::Notify { channel: "cairn_wakeups", payload: String::new() });
    }
    let ended: Vec<String> = stmts
        .iter()
        .filter_map(|s| match s {
            Stmt::PutRun { id, status, .. } if RunStatus::parse(status).is_some_and(RunStatus::is_final) => {
                Some(id.clone())
            }
            _ => None,
        })
        .collect();
    stmts.extend(ended.into_iter().map(|payload| Stmt::Notify { channel: "cairn_ends", payload }));

    // Every statement sent at once, executed in order, then one commit.
    let mut prepared = HashMap::new();
    for stmt in &stmts {
        let sql = stmt.sql();
        if !prepared.contains_key(sql) {
            prepared.insert(sql, txn.prepare_cached(sql).await?);
        }
    }
    let commit_q = txn.prepare_cached("COMMIT").await?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = stmts.iter().map(Stmt::params).collect();
    let pending = stmts.iter().zip(&params).map(|(stmt, params)| txn.execute(&prepared[stmt.sql()], params));
    // The COMMIT goes with the statements: if one of them fails, the
    // server answers it with a rollback, and the failure is reported.
    let (done, committed) = futures_util::join!(futures_util::future::join_all(pending), txn.execute(&commit_q, &[]));
    if let Some(failed) = done.into_iter().find_map(Result::err) {
        return Err(failed.into());
    }
    committed?;
    Ok(results)
}

/// Adds an append to the group's statements: to the one before it when
/// that is an append too (the rows are different keys, and nothing else
/// comes between them).
fn append(stmts: &mut Vec<Stmt>, run: &str, seq: u64, record: Vec<u8>) {
    if let Some(Stmt::Append { runs, seqs, records }) = stmts.last_mut() {
        runs.push(run.to_owned());
        seqs.push(seq as i64);
        records.push(record);
        return;
    }
    stmts.push(Stmt::Append { runs: vec![run.to_owned()], seqs: vec![seq as i64], records: vec![record] });
}

fn put_run(meta: &RunMeta) -> Stmt {
    Stmt::PutRun {
        id: meta.id.clone(),
        shard: meta.shard as i32,
        workflow: meta.workflow.clone(),
        version: meta.version.map(|v| v as i32),
        status: meta.status.as_str(),
        generation: meta.generation as i32,
        meta: serde_json::to_vec(meta).expect("run metadata serialises"),
        ended: meta.status.is_final().then_some(meta.updated_ms as i64),
        slot_key: meta.slot.as_ref().map(|s| s.key.clone()),
        slot_priority: meta.slot.as_ref().map(|s| s.priority as i16),
        created: meta.created_ms as i64,
        search: (!meta.search.is_empty()).then(|| serde_json::to_string(&meta.search).expect("attributes serialise")),
    }
}

/// Whether `url` names a PostgreSQL database (rather than a data directory).
pub fn is_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}
