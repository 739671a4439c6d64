//! The run indexes: which runs have a status, a workflow, a workflow's
//! status or version, a shard. One table of (index key, run id) rows, kept
//! by the writer in the transaction that writes the run's row, so a page of
//! runs is a range of one index and never a scan of every run.

use super::schema::{META, RUNS, RUN_INDEX, RUN_TIMERS, TIMERS};
use super::{db_err, parse_row};
use crate::store::{RunMeta, RunPage, RunQuery, StoreError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table};
use std::ops::Bound;

/// The meta key saying the indexes were built (stores made before them
/// are indexed once, at open), and which version of them.
const INDEXED_KEY: &str = "run-index";

/// 2: finished runs by end time, for retention. 3: concurrency buckets.
/// 4: search attributes.
const INDEX_VERSION: u64 = 4;

/// The key of the index of runs in `status`.
pub(super) fn status_key(status: crate::store::RunStatus) -> String {
    format!("s\0{}", status.as_str())
}

/// The index keys a run is listed under.
pub(super) fn keys(meta: &RunMeta) -> Vec<String> {
    let status = meta.status.as_str();
    let workflow = &meta.workflow;
    let version = meta.version.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut keys = vec![
        status_key(meta.status),
        format!("w\0{workflow}"),
        format!("ws\0{workflow}\0{status}"),
        format!("wv\0{workflow}\0{version}"),
        format!("h\0{}", meta.shard),
        format!("hs\0{}\0{status}", meta.shard),
    ];
    if meta.status.is_final() {
        keys.push(ended_key(workflow, meta.updated_ms));
    }
    for (name, value) in &meta.search {
        keys.push(attribute_key(name, value));
    }
    if let Some(slot) = &meta.slot {
        if meta.status.holds_slot() {
            keys.push(active_key(workflow, &slot.key));
        }
        if meta.status == crate::store::RunStatus::Queued {
            keys.push(format!("{}{}\0{:020}", queued_prefix(workflow, &slot.key), slot.priority, meta.created_ms));
        }
    }
    keys
}

/// The key listing the runs whose attribute `name` has `value`: its type,
/// then the value (integers and times in an order-keeping hex form).
fn attribute_key(name: &str, value: &crate::search::SearchValue) -> String {
    use crate::search::SearchValue as V;
    let ordered = |n: i64| format!("{:016x}", (n as u64) ^ (1 << 63));
    match value {
        V::Keyword(s) => format!("a\0{name}\0k{s}"),
        V::Int(n) => format!("a\0{name}\0i{}", ordered(*n)),
        V::Bool(b) => format!("a\0{name}\0b{}", u8::from(*b)),
        V::Time(t) => format!("a\0{name}\0t{}", ordered(*t)),
    }
}

/// The key listing the runs that hold a slot of a concurrency bucket.
fn active_key(workflow: &str, key: &str) -> String {
    format!("ka\0{workflow}\0{key}")
}

/// The prefix of the keys listing a bucket's queued runs, by priority and
/// then age.
fn queued_prefix(workflow: &str, key: &str) -> String {
    format!("kq\0{workflow}\0{key}\0")
}

/// The queued runs of a bucket that fit under `limit` now, first by
/// priority then by age, in the writer's transaction.
pub(super) fn promotable(
    index: &Table<(&str, &str), ()>,
    workflow: &str,
    key: &str,
    limit: u32,
) -> Result<Vec<String>, redb::StorageError> {
    let active = active_key(workflow, key);
    let active_end = format!("{active}\0");
    let holding = index.range::<(&str, &str)>((active.as_str(), "")..(active_end.as_str(), ""))?.count();
    let free = (limit as usize).saturating_sub(holding);
    if free == 0 {
        return Ok(Vec::new());
    }
    let prefix = queued_prefix(workflow, key);
    let end = format!("{}\u{1}", &prefix[..prefix.len() - 1]);
    let mut out = Vec::with_capacity(free.min(1024));
    for row in index.range::<(&str, &str)>((prefix.as_str(), "")..(end.as_str(), ""))? {
        let (k, _) = row?;
        out.push(k.value().1.to_owned());
        if out.len() == free {
            break;
        }
    }
    Ok(out)
}

/// The runs holding a bucket's slots (at most `limit`).
pub(super) fn holding(db: &Database, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
    let active = active_key(workflow, key);
    let end = format!("{active}\0");
    let mut out = Vec::new();
    for row in index.range::<(&str, &str)>((active.as_str(), "")..(end.as_str(), "")).map_err(db_err)? {
        out.push(row.map_err(db_err)?.0.value().1.to_owned());
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// Every concurrency bucket with runs in it, from the index rows of the
/// runs holding slots (`ka`) and queued (`kq`): no run row is read.
pub(super) fn buckets(db: &Database) -> Result<Vec<(String, String, u64, u64)>, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
    let mut counts: std::collections::BTreeMap<(String, String), (u64, u64)> = Default::default();
    for (prefix, queued) in [("ka\0", false), ("kq\0", true)] {
        let end = format!("{}\u{1}", &prefix[..prefix.len() - 1]);
        for row in index.range::<(&str, &str)>((prefix, "")..(end.as_str(), "")).map_err(db_err)? {
            let row = row.map_err(db_err)?;
            let Some((workflow, rest)) = row.0.value().0[prefix.len()..].split_once('\0') else { continue };
            // A queued run's key ends in its priority and age.
            let key = match queued {
                false => Some(rest),
                true => rest.rsplitn(3, '\0').nth(2),
            };
            let Some(key) = key else { continue };
            let entry = counts.entry((workflow.to_owned(), key.to_owned())).or_default();
            match queued {
                false => entry.0 += 1,
                true => entry.1 += 1,
            }
        }
    }
    Ok(counts.into_iter().map(|((w, k), (holding, queued))| (w, k, holding, queued)).collect())
}

/// The queued runs of a bucket, in the order they get slots (at most
/// `limit`).
pub(super) fn queued(db: &Database, workflow: &str, key: &str, limit: usize) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
    let prefix = queued_prefix(workflow, key);
    let end = format!("{}\u{1}", &prefix[..prefix.len() - 1]);
    let mut out = Vec::new();
    for row in index.range::<(&str, &str)>((prefix.as_str(), "")..(end.as_str(), "")).map_err(db_err)? {
        out.push(row.map_err(db_err)?.0.value().1.to_owned());
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// The key that lists a finished run of `workflow` by when it ended, so
/// retention reads the oldest first.
fn ended_key(workflow: &str, ended_ms: u64) -> String {
    format!("e\0{workflow}\0{ended_ms:020}")
}

/// The finished runs of `workflow` that ended before `before_ms`, oldest
/// first, at most `limit`.
pub(super) fn ended_before(
    db: &Database,
    workflow: &str,
    before_ms: u64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
    let (from, to) = (ended_key(workflow, 0), ended_key(workflow, before_ms));
    let mut out = Vec::new();
    for row in index.range((from.as_str(), "")..(to.as_str(), "")).map_err(db_err)? {
        let (key, _) = row.map_err(db_err)?;
        out.push(key.value().1.to_owned());
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// Removes a run's index rows (the run is deleted).
pub(super) fn remove(index: &mut Table<(&str, &str), ()>, old: &RunMeta) -> Result<(), redb::StorageError> {
    for key in keys(old) {
        index.remove((key.as_str(), old.id.as_str()))?;
    }
    Ok(())
}

/// The key of the index that answers `query` best, if one does.
fn key_for(query: &RunQuery) -> Option<String> {
    // An attribute's value is the narrowest: a customer, an order.
    if let Some((name, value)) = &query.attribute {
        return Some(attribute_key(name, value));
    }
    let status = match query.statuses.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    Some(match (&query.workflow, status, query.version, query.shard) {
        (Some(w), _, Some(v), _) => format!("wv\0{w}\0{v}"),
        (Some(w), Some(s), None, _) => format!("ws\0{w}\0{s}"),
        (Some(w), None, None, _) => format!("w\0{w}"),
        (None, Some(s), _, Some(h)) => format!("hs\0{h}\0{s}"),
        (None, None, _, Some(h)) => format!("h\0{h}"),
        (None, Some(s), _, None) => format!("s\0{s}"),
        (None, None, _, None) => return None,
    })
}

/// Moves a run's index rows from `old`'s keys to `new`'s.
pub(super) fn update(
    index: &mut Table<(&str, &str), ()>,
    old: Option<&RunMeta>,
    new: &RunMeta,
) -> Result<(), redb::StorageError> {
    let new_keys = keys(new);
    if let Some(old) = old {
        for key in keys(old) {
            if !new_keys.contains(&key) {
                index.remove((key.as_str(), old.id.as_str()))?;
            }
        }
    }
    for key in &new_keys {
        index.insert((key.as_str(), new.id.as_str()), ())?;
    }
    Ok(())
}

/// The run row `bytes` held before it was replaced, if it parses (a row
/// that does not was never indexed by this code either).
pub(super) fn previous(bytes: Option<&[u8]>) -> Option<RunMeta> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// Builds the indexes of a store made before them, once, durably.
pub(super) fn build_if_missing(db: &Database) -> Result<(), StoreError> {
    {
        let txn = db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        if meta.get(INDEXED_KEY).map_err(db_err)?.is_some_and(|v| v.value() >= INDEX_VERSION) {
            return Ok(());
        }
    }
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    let mut indexed = 0usize;
    {
        let runs = txn.open_table(RUNS).map_err(db_err)?;
        let mut index = txn.open_table(RUN_INDEX).map_err(db_err)?;
        index.retain(|_, _| false).map_err(db_err)?;
        for row in runs.iter().map_err(db_err)? {
            let (id, value) = row.map_err(db_err)?;
            let meta: RunMeta = parse_row("runs", id.value(), value.value())?;
            update(&mut index, None, &meta).map_err(db_err)?;
            indexed += 1;
        }
        let timers = txn.open_table(TIMERS).map_err(db_err)?;
        let mut run_timers = txn.open_table(RUN_TIMERS).map_err(db_err)?;
        run_timers.retain(|_, _| false).map_err(db_err)?;
        for row in timers.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (due, run, handle) = key.value();
            run_timers.insert((run, due, handle), ()).map_err(db_err)?;
        }
        txn.open_table(META).map_err(db_err)?.insert(INDEXED_KEY, INDEX_VERSION).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    if indexed > 0 {
        tracing::info!(runs = indexed, "indexed the runs of a store made before run indexes");
    }
    Ok(())
}

/// One page of `query`.
pub(super) fn page(db: &Database, query: &RunQuery) -> Result<RunPage, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let runs = txn.open_table(RUNS).map_err(db_err)?;
    let limit = query.limit.max(1);
    let mut page = RunPage::default();
    // Takes one run id in the query's order; false once the page is full.
    let mut take = |id: &str| -> Result<bool, StoreError> {
        if !query.after_cursor(id) {
            return Ok(true);
        }
        let Some(row) = runs.get(id).map_err(db_err)? else { return Ok(true) };
        let meta: RunMeta = parse_row("runs", id, row.value())?;
        if !query.matches(&meta) {
            return Ok(true);
        }
        if page.runs.len() == limit {
            page.next = page.runs.last().map(|m| m.id.clone());
            return Ok(false);
        }
        page.runs.push(meta);
        Ok(true)
    };
    let after = query.after.as_deref();
    match key_for(query) {
        Some(key) => {
            let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
            let end = format!("{key}\0");
            let (low, high) = match (after, query.descending) {
                (Some(a), false) => (Bound::Excluded((key.as_str(), a)), Bound::Excluded((end.as_str(), ""))),
                (Some(a), true) => (Bound::Included((key.as_str(), "")), Bound::Excluded((key.as_str(), a))),
                (None, _) => (Bound::Included((key.as_str(), "")), Bound::Excluded((end.as_str(), ""))),
            };
            let range = index.range::<(&str, &str)>((low, high)).map_err(db_err)?;
            let rows: Box<dyn Iterator<Item = _>> =
                if query.descending { Box::new(range.rev()) } else { Box::new(range) };
            for row in rows {
                let (k, _) = row.map_err(db_err)?;
                if !take(k.value().1)? {
                    break;
                }
            }
        }
        None => {
            let (low, high) = match (after, query.descending) {
                (Some(a), false) => (Bound::Excluded(a), Bound::Unbounded),
                (Some(a), true) => (Bound::Unbounded, Bound::Excluded(a)),
                (None, _) => (Bound::Unbounded, Bound::Unbounded),
            };
            let scan = txn.open_table(RUNS).map_err(db_err)?;
            let range = scan.range::<&str>((low, high)).map_err(db_err)?;
            let rows: Box<dyn Iterator<Item = _>> =
                if query.descending { Box::new(range.rev()) } else { Box::new(range) };
            for row in rows {
                let (k, _) = row.map_err(db_err)?;
                if !take(k.value())? {
                    break;
                }
            }
        }
    }
    Ok(page)
}

/// How many runs an index key lists.
pub(super) fn count(db: &Database, key: &str) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
    let end = format!("{key}\0");
    let range = index.range::<(&str, &str)>((key, "")..(end.as_str(), "")).map_err(db_err)?;
    let mut n = 0;
    for row in range {
        row.map_err(db_err)?;
        n += 1;
    }
    Ok(n)
}

/// Every run's index rows as they should be, and the rows there are, for
/// `cairn check`: (missing, extra).
pub(super) fn disagreements(db: &Database) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let runs = txn.open_table(RUNS).map_err(db_err)?;
    let mut expected = std::collections::BTreeSet::new();
    for row in runs.iter().map_err(db_err)? {
        let (id, value) = row.map_err(db_err)?;
        let Ok(meta) = serde_json::from_slice::<RunMeta>(value.value()) else { continue };
        for key in keys(&meta) {
            expected.insert((key, id.value().to_owned()));
        }
    }
    let index = txn.open_table(RUN_INDEX).map_err(db_err)?;
    let mut extra = Vec::new();
    for row in index.iter().map_err(db_err)? {
        let (k, _) = row.map_err(db_err)?;
        let (key, id) = k.value();
        if !expected.remove(&(key.to_owned(), id.to_owned())) {
            extra.push(format!("{} lists run {id}", key.replace('\0', "/")));
        }
    }
    let missing =
        expected.into_iter().map(|(key, id)| format!("{} does not list run {id}", key.replace('\0', "/"))).collect();
    Ok((missing, extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RunStatus, Store, Write};

    /// A store made before the run indexes existed (its runs and timers
    /// there, no index rows) is indexed once when it opens.
    #[tokio::test]
    async fn a_store_made_before_the_indexes_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = |id: &str, status| RunMeta {
                id: id.into(),
                workflow: "order".into(),
                component_sha256: "ab".into(),
                version: Some(1),
                status,
                input: "{}".into(),
                result: None,
                failure: None,
                custom_status: None,
                parent: None,
                generation: 0,
                shard: 0,
                created_ms: 1,
                updated_ms: 1,
                slot: None,
                search: Default::default(),
            };
            let batch = vec![
                Write::PutRun(meta("a", RunStatus::Running)),
                Write::PutRun(meta("b", RunStatus::Completed)),
                Write::PutTimer { due_ms: 5, run_id: "a".into(), handle: 1 },
            ];
            store.commit(batch).await.unwrap();
        }
        {
            // What an older Cairn left: no index rows, no marker.
            let db = Database::create(dir.path().join("cairn.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(RUN_INDEX).unwrap().retain(|_, _| false).unwrap();
            txn.open_table(RUN_TIMERS).unwrap().retain(|_, _| false).unwrap();
            txn.open_table(META).unwrap().remove(INDEXED_KEY).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let running = store.all_runs(RunQuery::status(RunStatus::Running)).await.unwrap();
        assert_eq!(running.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(store.run_timers("a").await.unwrap().len(), 1);
        let problems = store.check().await.unwrap().problems;
        assert!(!problems.iter().any(|p| p.contains("index")), "{problems:?}");
    }
}
