//! Table definitions. The rows in them are JSON of `store::rows`' types,
//! or encoded journal records.

use redb::{TableDefinition, WriteTransaction};

/// run id → [`RunMeta`] (JSON).
pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// (run id, generation, seq) → encoded journal record of a generation that
/// ended with continue-as-new.
pub(super) const HISTORY: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("history");
/// (run id, seq) → encoded journal record.
pub(super) const JOURNAL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("journal");
/// (run id, handle) → [`StoredCompletion`] (JSON), until the run consumes it.
pub(super) const COMPLETIONS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("completions");
/// (due ms, run id, handle) → (), one row per armed timer.
pub(super) const TIMERS: TableDefinition<(u64, &str, u32), ()> = TableDefinition::new("timers");
/// (run id, arrival seq) → [`StoredSignal`] (JSON): signals sent to a run and
/// not yet consumed, in arrival order.
pub(super) const SIGNALS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("signals");
/// deployed name → [`Deployment`] (JSON): its versions and the current one.
pub(super) const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// schedule name → [`Schedule`] (JSON): its spec and what it did.
pub(super) const SCHEDULES: TableDefinition<&str, &[u8]> = TableDefinition::new("schedules");
/// "workflow\0key" → (credit ms, at ms) (JSON): the token bucket of a
/// rate-limited concurrency bucket.
pub(super) const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// (run id, handle) → failed attempts of an activity still being retried.
pub(super) const ATTEMPTS: TableDefinition<(&str, u32), u32> = TableDefinition::new("attempts");
/// component sha256 → component bytes.
pub(super) const COMPONENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("components");
/// (component sha256, engine fingerprint) → precompiled artifact.
pub(super) const COMPILED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("compiled");

/// (index key, run id) → (): the runs of a status, a workflow, a
/// workflow's status or version, a shard (see `index.rs`), kept with each
/// run's row.
pub(super) const RUN_INDEX: TableDefinition<(&str, &str), ()> = TableDefinition::new("run-index");
/// (run id, due ms, handle) → (): the timers of one run.
pub(super) const RUN_TIMERS: TableDefinition<(&str, u64, u32), ()> = TableDefinition::new("run-timers");

/// Store-wide values: the write-ahead log's current generation.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(RUNS)?;
    txn.open_table(JOURNAL)?;
    txn.open_table(HISTORY)?;
    txn.open_table(COMPLETIONS)?;
    txn.open_table(TIMERS)?;
    txn.open_table(SIGNALS)?;
    txn.open_table(DEPLOYMENTS)?;
    txn.open_table(SCHEDULES)?;
    txn.open_table(BUCKETS)?;
    txn.open_table(ATTEMPTS)?;
    txn.open_table(COMPONENTS)?;
    txn.open_table(COMPILED)?;
    txn.open_table(RUN_INDEX)?;
    txn.open_table(RUN_TIMERS)?;
    txn.open_table(META)?;
    Ok(())
}
