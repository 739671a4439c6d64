//! The task board on PostgreSQL: an unlogged table (no WAL, so posting a
//! task costs no flush; emptied if the server crashes, which the attempts
//! notice and retry). Workers claim rows with `FOR UPDATE SKIP LOCKED`;
//! a post notifies `cairn_tasks`, a report notifies `cairn_reports` with
//! the posting host's id, and both are hints only.

use super::{pg_err, pool_err};
use crate::store::{Admission, SlotBoard, StoreError, Take, TaskBoard, TaskState};
use deadpool_postgres::Pool;
use std::time::Duration;
use tokio::sync::watch;

pub(crate) struct PgTasks {
    pool: Pool,
    host: String,
    pub(super) posted: watch::Sender<u64>,
    pub(super) reported: watch::Sender<u64>,
    pub(super) released: watch::Sender<u64>,
}

impl PgTasks {
    pub(crate) fn new(pool: Pool, host: String) -> PgTasks {
        PgTasks {
            pool,
            host,
            posted: watch::channel(0).0,
            reported: watch::channel(0).0,
            released: watch::channel(0).0,
        }
    }

    /// Drops what this host posted in an earlier life: nobody waits for it.
    pub(crate) async fn forget_earlier(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client.execute("DELETE FROM cairn_tasks WHERE owner = $1", &[&self.host]).await.map_err(pg_err)?;
        client.execute("DELETE FROM cairn_activity_slots WHERE owner = $1", &[&self.host]).await.map_err(pg_err)?;
        Ok(())
    }

    /// A hint from the listening connection.
    pub(crate) fn notified(&self, channel: &str, payload: &str) {
        match channel {
            "cairn_tasks" => self.posted.send_modify(|n| *n += 1),
            "cairn_reports" if payload == self.host => self.reported.send_modify(|n| *n += 1),
            "cairn_slots" => self.released.send_modify(|n| *n += 1),
            _ => {}
        }
    }
}

/// The key of a bucket's rate in `cairn_buckets` (whose rows of workflow
/// buckets are keyed by workflow name, which cannot start with `$`).
const RATE_OWNER: &str = "$activity";

#[async_trait::async_trait]
impl SlotBoard for PgTasks {
    async fn take(&self, bucket: &str, holder: &str, admission: Admission, now_ms: u64) -> Result<Take, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let txn = client.transaction().await.map_err(pg_err)?;
        // One taker of a bucket at a time, on every host.
        txn.execute("SELECT pg_advisory_xact_lock(7, hashtext($1))", &[&bucket]).await.map_err(pg_err)?;
        let row = txn
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE holder = $2) FROM cairn_activity_slots WHERE bucket = $1",
                &[&bucket, &holder],
            )
            .await
            .map_err(pg_err)?;
        let (held, mine): (i64, i64) = (row.get(0), row.get(1));
        if mine > 0 {
            return Ok(Take::Taken);
        }
        if held >= i64::from(admission.limit) {
            return Ok(Take::Full);
        }
        if let Some(rate) = admission.rate {
            let stored = txn
                .query_opt(
                    "SELECT credit_ms, at_ms FROM cairn_buckets WHERE workflow = $1 AND key = $2",
                    &[&RATE_OWNER, &bucket],
                )
                .await
                .map_err(pg_err)?
                .map(|r| (r.get::<_, i64>(0).max(0) as u64, r.get::<_, i64>(1).max(0) as u64));
            match crate::store::slots::spend(rate, stored, now_ms) {
                Err(wait) => return Ok(Take::Wait(wait)),
                Ok(left) => {
                    txn.execute(
                        "INSERT INTO cairn_buckets (workflow, key, credit_ms, at_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (workflow, key) DO UPDATE SET credit_ms = EXCLUDED.credit_ms, at_ms = EXCLUDED.at_ms",
                        &[&RATE_OWNER, &bucket, &(left as i64), &(now_ms as i64)],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
        }
        txn.execute(
            "INSERT INTO cairn_activity_slots (bucket, holder, owner) VALUES ($1, $2, $3)",
            &[&bucket, &holder, &self.host],
        )
        .await
        .map_err(pg_err)?;
        txn.commit().await.map_err(pg_err)?;
        Ok(Take::Taken)
    }

    async fn give_back(&self, bucket: &str, holder: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let gone = client
            .execute(
                "WITH gone AS (DELETE FROM cairn_activity_slots WHERE bucket = $1 AND holder = $2 RETURNING 1) \
                 SELECT pg_notify('cairn_slots', '') FROM gone",
                &[&bucket, &holder],
            )
            .await
            .map_err(pg_err)?;
        if gone > 0 {
            self.released.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query("SELECT bucket, count(*) FROM cairn_activity_slots GROUP BY bucket ORDER BY bucket", &[])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect())
    }

    fn released(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }
}

#[async_trait::async_trait]
impl TaskBoard for PgTasks {
    async fn post(&self, token: &str, activity: &str, task: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "WITH t AS (INSERT INTO cairn_tasks (token, owner, activity, component, task) \
                 VALUES ($1, $2, $3, split_part($3, '.', 1), $4) RETURNING 1) \
                 SELECT pg_notify('cairn_tasks', '') FROM t",
                &[&token, &self.host, &activity, &task],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn take(&self, worker: &str, activities: &[String]) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                "WITH next AS (SELECT token FROM cairn_tasks WHERE worker IS NULL \
                 AND (activity = ANY($2) OR component = ANY($2)) ORDER BY posted LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE cairn_tasks t SET worker = $1, beat = now() FROM next WHERE t.token = next.token RETURNING t.task",
                &[&worker, &activities],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn report(&self, token: &str, outcome: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "WITH t AS (UPDATE cairn_tasks SET outcome = $2 \
                 WHERE token = $1 AND worker IS NOT NULL AND outcome IS NULL RETURNING owner) \
                 SELECT pg_notify('cairn_reports', owner) FROM t",
                &[&token, &outcome],
            )
            .await
            .map_err(pg_err)?;
        Ok(!rows.is_empty())
    }

    async fn beat(&self, token: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                "UPDATE cairn_tasks SET beat = now() WHERE token = $1 AND worker IS NOT NULL AND outcome IS NULL",
                &[&token],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    async fn look(&self, tokens: &[String]) -> Result<Vec<TaskState>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT token, worker, (extract(epoch FROM now() - beat) * 1000)::bigint, outcome \
                 FROM cairn_tasks WHERE token = ANY($1)",
                &[&tokens],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| TaskState {
                token: r.get(0),
                worker: r.get(1),
                quiet: r.get::<_, Option<i64>>(2).map(|ms| Duration::from_millis(ms.max(0) as u64)),
                outcome: r.get(3),
            })
            .collect())
    }

    async fn withdraw(&self, tokens: &[String]) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client.execute("DELETE FROM cairn_tasks WHERE token = ANY($1)", &[&tokens]).await.map_err(pg_err)?;
        Ok(())
    }

    fn posted(&self) -> watch::Receiver<u64> {
        self.posted.subscribe()
    }

    fn reported(&self) -> watch::Receiver<u64> {
        self.reported.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Coordinator, HostIdentity, Store};
    use std::sync::Arc;
    use std::time::Duration;

    fn host(id: &str) -> HostIdentity {
        HostIdentity { id: id.into(), address: String::new(), lease: Duration::from_secs(30) }
    }

    /// A new database with hosts `a` and `b` started on it.
    async fn two_hosts() -> (Store, Arc<dyn Coordinator>, Arc<dyn Coordinator>, tempfile::TempDir) {
        let url = super::super::harness::server().database().await;
        let cache = tempfile::tempdir().unwrap();
        let store = Store::connect(&url, Some(cache.path().to_owned())).await.unwrap();
        let (a, b) = (store.coordinator(host("a")), store.coordinator(host("b")));
        a.start().await.unwrap();
        b.start().await.unwrap();
        (store, a, b, cache)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_goes_to_one_worker_and_takes_one_report_from_any_host() {
        let (_store, a, b, _cache) = two_hosts().await;
        let (on_a, on_b) = (a.tasks().unwrap(), b.tasks().unwrap());

        let mut posted = on_b.posted();
        on_a.post("t1", "inventory.reserve", r#"{"n":1}"#).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), posted.changed()).await.unwrap().unwrap();
        assert!(!on_b.report("t1", "early").await.unwrap(), "an untaken task takes no report");
        assert!(!on_b.beat("t1").await.unwrap(), "an untaken task takes no heartbeat");
        assert_eq!(on_b.take("w", &["payments".into()]).await.unwrap(), None, "another component's worker");

        // Workers on both hosts at once: one gets it.
        let wanted = ["inventory".to_owned()];
        let (x, y) = tokio::join!(on_a.take("wa", &wanted), on_b.take("wb", &wanted));
        let taken: Vec<String> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
        assert_eq!(taken, vec![r#"{"n":1}"#.to_owned()]);
        assert!(on_b.beat("t1").await.unwrap());

        let mut reported = on_a.reported();
        assert!(on_b.report("t1", "done").await.unwrap());
        assert!(!on_a.report("t1", "again").await.unwrap(), "a second report is refused");
        tokio::time::timeout(Duration::from_secs(5), reported.changed()).await.unwrap().unwrap();
        let states = on_a.look(&["t1".into(), "t2".into()]).await.unwrap();
        assert_eq!(states.len(), 1, "t2 was never posted");
        assert_eq!(states[0].outcome.as_deref(), Some("done"));
        assert!(states[0].worker.is_some());

        on_a.withdraw(&["t1".into()]).await.unwrap();
        assert!(on_a.look(&["t1".into()]).await.unwrap().is_empty());
        a.stop().await;
        b.stop().await;
    }

    /// The slot board on PostgreSQL keeps its limit and rate, and two
    /// hosts taking the last slot at once get it once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn activity_slots_hold_their_limit_across_hosts_and_a_dead_hosts_slots_go() {
        use crate::store::{Admission, Take};
        let (store, a, b, _cache) = two_hosts().await;
        let (on_a, on_b) = (a.slots().unwrap(), b.slots().unwrap());
        crate::store::slots::tests::a_board_holds_its_limit_and_rate(on_a.as_ref()).await;
        let one = Admission { limit: 1, rate: None };
        let (x, y) = tokio::join!(on_a.take("c", "ha", one, 0), on_b.take("c", "hb", one, 0));
        let mut got = [x.unwrap(), y.unwrap()];
        got.sort_by_key(|t| *t == Take::Taken);
        assert_eq!(got, [Take::Full, Take::Taken]);
        // A host starting again forgets the slots of its earlier life.
        let held: u64 = on_a.held().await.unwrap().iter().map(|(_, n)| n).sum();
        a.stop().await;
        let again = store.coordinator(host("a"));
        again.start().await.unwrap();
        let after: u64 = on_b.held().await.unwrap().iter().map(|(_, n)| n).sum();
        assert!(after < held, "host a's slots stayed: {held} then {after}");
        again.stop().await;
        b.stop().await;
    }
}
