//! Shard leases: which host drives which runs.
//!
//! A `cairn_shards` row per shard holds its owner, its epoch (the fencing
//! token every commit checks) and when its lease ends, by PostgreSQL's
//! clock, never a host's. A host renews its leases every third of the
//! lease, takes expired shards with `FOR UPDATE SKIP LOCKED` (bumping the
//! epoch) up to its share, ceil(shards / live hosts), and hands extra
//! shards back: it stops writing under them first, then clears its
//! ownership, so the next owner need not wait for the lease to run out.

use super::{pg_err, pool_err, Fence};
use crate::store::{Coordinator, HostIdentity, Ownership, StoreError};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// This host's leases.
pub(crate) struct Leases {
    pool: Pool,
    host: String,
    address: String,
    shards: u32,
    lease: Duration,
    fence: Arc<Fence>,
    events: broadcast::Sender<Ownership>,
    metrics: Arc<LeaseMetrics>,
    /// Shards taken over and not yet resumed: when, and how long their old
    /// lease had been over by then.
    taking_over: std::sync::Mutex<std::collections::HashMap<u32, (Instant, f64)>>,
}

/// What `/metrics` shows of the leases.
#[derive(Default)]
pub struct LeaseMetrics {
    /// Lease renewals that succeeded.
    pub renewals: std::sync::atomic::AtomicU64,
    /// Shards acquired, and lost, since start.
    pub acquired: std::sync::atomic::AtomicU64,
    /// Shards found taken over by another host.
    pub lost: std::sync::atomic::AtomicU64,
    /// Shards taken from a host that stopped renewing, and the last such
    /// takeover's time from the old lease's end to its runs scheduled here.
    pub takeovers: std::sync::atomic::AtomicU64,
    /// That time, in milliseconds.
    pub last_takeover_ms: std::sync::atomic::AtomicU64,
}

impl Leases {
    pub(crate) fn new(pool: Pool, host: HostIdentity, shards: u32, fence: Arc<Fence>) -> Leases {
        let (events, _) = broadcast::channel(4096);
        let HostIdentity { id, address, lease } = host;
        Leases {
            pool,
            host: id,
            address,
            shards,
            lease,
            fence,
            events,
            metrics: Arc::default(),
            taking_over: Default::default(),
        }
    }

    fn seconds(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Says this host is alive, renews what it holds (reporting what it
    /// lost), and takes or hands back shards toward its share. Returns the
    /// changes, already applied to the fence.
    pub(crate) async fn tick(&self) -> Result<Vec<Ownership>, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let mut changes = Vec::new();
        client
            .execute(
                "INSERT INTO cairn_hosts (host, address, seen) VALUES ($1, $2, now()) \
                 ON CONFLICT (host) DO UPDATE SET address = EXCLUDED.address, seen = now()",
                &[&self.host, &self.address],
            )
            .await
            .map_err(pg_err)?;
        // Tasks posted by hosts no longer alive: nobody waits for them (the
        // runs' new owners post new attempts).
        client
            .execute(
                "DELETE FROM cairn_tasks WHERE owner NOT IN \
                 (SELECT host FROM cairn_hosts WHERE seen > now() - make_interval(secs => $1))",
                &[&self.seconds()],
            )
            .await
            .map_err(pg_err)?;
        // Slots of their activities' attempts, likewise (the attempts are
        // made again by the runs' new owners, taking slots anew).
        client
            .execute(
                "WITH gone AS (DELETE FROM cairn_activity_slots WHERE owner NOT IN \
                 (SELECT host FROM cairn_hosts WHERE seen > now() - make_interval(secs => $1)) RETURNING 1) \
                 SELECT pg_notify('cairn_slots', '') FROM (SELECT 1 FROM gone LIMIT 1) g",
                &[&self.seconds()],
            )
            .await
            .map_err(pg_err)?;

        // Renew: only rows still ours at the epoch we took them at.
        let held = self.fence.held();
        if !held.is_empty() {
            let shards: Vec<i32> = held.iter().map(|(s, _)| *s as i32).collect();
            let epochs: Vec<i64> = held.iter().map(|(_, e)| *e).collect();
            let rows = client
                .query(
                    "UPDATE cairn_shards s SET lease_until = now() + make_interval(secs => $4) \
                     FROM unnest($2::integer[], $3::bigint[]) AS h(shard, epoch) \
                     WHERE s.shard = h.shard AND s.epoch = h.epoch AND s.owner = $1 RETURNING s.shard",
                    &[&self.host, &shards, &epochs, &self.seconds()],
                )
                .await
                .map_err(pg_err)?;
            let renewed: std::collections::HashSet<u32> = rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect();
            self.metrics.renewals.fetch_add(1, Relaxed);
            for (shard, _) in held {
                if !renewed.contains(&shard) {
                    self.fence.release(shard);
                    self.metrics.lost.fetch_add(1, Relaxed);
                    tracing::warn!(shard, "shard taken over by another host; its runs stop here");
                    changes.push(Ownership::Lost(shard));
                }
            }
        }

        // This host's share of the shards, by the hosts seen within a lease.
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM cairn_hosts WHERE seen > now() - make_interval(secs => $1)",
                &[&self.seconds()],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let share = (self.shards as usize).div_ceil(live.max(1) as usize);
        let holding = self.fence.held().len();
        if holding < share {
            // Expired shards, or this host's own from before a restart. The
            // epoch goes up under the shard's exclusive fence lock, so a
            // commit of the old owner under way finishes first, and every
            // later one sees the new epoch (see `fence_lock`).
            let txn = client.transaction().await.map_err(pg_err)?;
            let found = txn
                .query(
                    "SELECT shard, owner IS NOT NULL AND (owner <> $1 OR lease_until < now()), \
                     extract(epoch FROM now() - lease_until)::float8 FROM cairn_shards \
                     WHERE (lease_until < now() OR owner = $1) AND NOT shard = ANY($3) \
                     ORDER BY shard LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[
                        &self.host,
                        &((share - holding) as i64),
                        &self.fence.held().iter().map(|(s, _)| *s as i32).collect::<Vec<i32>>(),
                    ],
                )
                .await
                .map_err(pg_err)?;
            let free: Vec<i32> = found.iter().map(|r| r.get(0)).collect();
            // A shard whose lease ran out under an owner is a takeover,
            // timed from the lease's end.
            let orphaned: Vec<(u32, f64)> = found
                .iter()
                .filter(|r| r.get::<_, bool>(1))
                .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, f64>(2).max(0.0)))
                .collect();
            txn.execute(
                "SELECT pg_advisory_xact_lock($1::bigint + s) FROM unnest($2::integer[]) AS s ORDER BY s",
                &[&super::FENCE_LOCKS, &free],
            )
            .await
            .map_err(pg_err)?;
            let rows = txn
                .query(
                    "UPDATE cairn_shards SET owner = $1, epoch = epoch + 1, lease_until = now() + make_interval(secs => $3) \
                     WHERE shard = ANY($2) RETURNING shard, epoch",
                    &[&self.host, &free, &self.seconds()],
                )
                .await
                .map_err(pg_err)?;
            txn.commit().await.map_err(pg_err)?;
            let now = Instant::now();
            self.taking_over
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(orphaned.into_iter().map(|(shard, gap)| (shard, (now, gap))));
            for row in rows {
                let (shard, epoch) = (row.get::<_, i32>(0) as u32, row.get::<_, i64>(1));
                self.fence.hold(shard, epoch);
                self.metrics.acquired.fetch_add(1, Relaxed);
                tracing::info!(shard, epoch, "acquired a shard");
                changes.push(Ownership::Acquired(shard));
            }
        } else if holding > share {
            // Hand back the extra ones: writes stop first (the fence), then
            // the row is cleared so another host takes it at once.
            let extra: Vec<u32> = self.fence.held().iter().rev().take(holding - share).map(|(s, _)| *s).collect();
            for shard in &extra {
                self.fence.release(*shard);
                changes.push(Ownership::Lost(*shard));
            }
            let shards: Vec<i32> = extra.iter().map(|s| *s as i32).collect();
            client
                .execute(
                    "UPDATE cairn_shards SET owner = NULL, lease_until = 'epoch' WHERE owner = $1 AND shard = ANY($2)",
                    &[&self.host, &shards],
                )
                .await
                .map_err(pg_err)?;
            tracing::info!(shards = ?extra, share, "handed shards back for another host");
        }
        for change in &changes {
            let _ = self.events.send(*change);
        }
        Ok(changes)
    }

    /// Renews and rebalances every third of a lease until `stop` fires.
    pub(crate) async fn keep(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = self.lease / 3;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match self.tick().await {
                Ok(_) => last_ok = Instant::now(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew shard leases");
                    // Past the lease without a renewal, another host may
                    // hold the shards: stop writing under them.
                    if last_ok.elapsed() >= self.lease {
                        for (shard, _) in self.fence.held() {
                            self.fence.release(shard);
                            let _ = self.events.send(Ownership::Lost(shard));
                        }
                    }
                }
            }
        }
    }

    /// The runs of `shards` are scheduled here: a takeover among them ends.
    fn resumed(&self, shards: &[u32]) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut taking_over = self.taking_over.lock().unwrap_or_else(|e| e.into_inner());
        for shard in shards {
            if let Some((acquired, gap)) = taking_over.remove(shard) {
                let took = gap + acquired.elapsed().as_secs_f64();
                self.metrics.takeovers.fetch_add(1, Relaxed);
                self.metrics.last_takeover_ms.store((took * 1000.0) as u64, Relaxed);
                tracing::info!(shard, seconds = took, "took over a shard from a host that stopped renewing");
            }
        }
    }

    /// Gives every shard back (a graceful stop), so other hosts take them
    /// at once instead of after the lease.
    pub(crate) async fn release_all(&self) -> Result<(), StoreError> {
        let held = self.fence.held();
        for (shard, _) in &held {
            self.fence.release(*shard);
        }
        let shards: Vec<i32> = held.iter().map(|(s, _)| *s as i32).collect();
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "UPDATE cairn_shards SET owner = NULL, lease_until = 'epoch' WHERE owner = $1 AND shard = ANY($2)",
                &[&self.host, &shards],
            )
            .await
            .map_err(pg_err)?;
        client.execute("DELETE FROM cairn_hosts WHERE host = $1", &[&self.host]).await.map_err(pg_err)?;
        tracing::info!(shards = held.len(), "handed every shard back");
        Ok(())
    }
}

/// The coordinator of a host sharing a PostgreSQL store: its leases, kept
/// by a task of their own.
pub(crate) struct LeaseCoordinator {
    leases: Arc<Leases>,
    config: tokio_postgres::Config,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// A notification on `cairn_wakeups` came: look at the table now.
    hint: Arc<tokio::sync::Notify>,
    /// Runs that ended (notifications on `cairn_ends`).
    ends: broadcast::Sender<String>,
    slot: std::sync::OnceLock<u16>,
    board: Arc<super::tasks::PgTasks>,
}

/// How often the wake-up table is read when no notification comes (the
/// floor: a notification is lost while the listening connection is down).
const WAKEUP_POLL: Duration = Duration::from_millis(500);

impl LeaseCoordinator {
    pub(crate) fn new(
        leases: Leases,
        config: tokio_postgres::Config,
        board: Arc<super::tasks::PgTasks>,
    ) -> LeaseCoordinator {
        LeaseCoordinator {
            leases: Arc::new(leases),
            config,
            stop: tokio::sync::watch::channel(false).0,
            tasks: Default::default(),
            hint: Arc::default(),
            ends: broadcast::channel(4096).0,
            slot: std::sync::OnceLock::new(),
            board,
        }
    }

    /// Listens for wake-up, run-end and task notifications on a connection
    /// of its own, and reconnects when it drops (a restart,
    /// `pg_terminate_backend`).
    async fn listen(
        config: tokio_postgres::Config,
        hint: Arc<tokio::sync::Notify>,
        ends: broadcast::Sender<String>,
        tasks: Arc<super::tasks::PgTasks>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures_util::StreamExt;
        loop {
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, mut connection)) => {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    let listening = client.batch_execute(
                        "LISTEN cairn_wakeups; LISTEN cairn_ends; LISTEN cairn_tasks; LISTEN cairn_reports; LISTEN cairn_slots",
                    );
                    tokio::pin!(listening);
                    let mut subscribed = false;
                    loop {
                        tokio::select! {
                            _ = stop.changed() => return,
                            done = &mut listening, if !subscribed => {
                                subscribed = true;
                                if let Err(e) = done {
                                    tracing::warn!(error = %e, "could not listen for wake-ups");
                                    break;
                                }
                                // Whatever came while not listening.
                                hint.notify_one();
                                tasks.posted.send_modify(|n| *n += 1);
                                tasks.reported.send_modify(|n| *n += 1);
                                tasks.released.send_modify(|n| *n += 1);
                            }
                            message = messages.next() => match message {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) if n.channel() == "cairn_ends" => {
                                    let _ = ends.send(n.payload().to_owned());
                                }
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) if n.channel() == "cairn_wakeups" => {
                                    hint.notify_one();
                                }
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                    tasks.notified(n.channel(), n.payload());
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "the wake-up connection dropped; reconnecting");
                                    break;
                                }
                                None => break,
                            },
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect to listen for wake-ups; retrying"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl Coordinator for LeaseCoordinator {
    async fn start(&self) -> Result<(), StoreError> {
        let client = self.leases.pool.get().await.map_err(pool_err)?;
        let slot: i64 = client.query_one("SELECT nextval('cairn_arrivals')", &[]).await.map_err(pg_err)?.get(0);
        let _ = self.slot.set((slot % 4096) as u16);
        drop(client);
        self.board.forget_earlier().await?;
        self.leases.tick().await?;
        let keeper = tokio::spawn(self.leases.clone().keep(self.stop.subscribe()));
        let listener = tokio::spawn(Self::listen(
            self.config.clone(),
            self.hint.clone(),
            self.ends.clone(),
            self.board.clone(),
            self.stop.subscribe(),
        ));
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend([keeper, listener]);
        Ok(())
    }

    async fn wakeups(&self) -> Vec<String> {
        loop {
            tokio::select! {
                _ = self.hint.notified() => {}
                _ = tokio::time::sleep(WAKEUP_POLL) => {}
            }
            let shards: Vec<i32> = self.leases.fence.held().iter().map(|(s, _)| *s as i32).collect();
            if shards.is_empty() {
                continue;
            }
            let taken = async {
                let client = self.leases.pool.get().await.map_err(pool_err)?;
                client
                    .query(
                        "DELETE FROM cairn_wakeups WHERE id IN (SELECT id FROM cairn_wakeups WHERE shard = ANY($1) \
                         ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING run_id",
                        &[&shards],
                    )
                    .await
                    .map_err(pg_err)
            };
            match taken.await {
                Ok(rows) if !rows.is_empty() => {
                    let mut runs: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                    runs.sort_unstable();
                    runs.dedup();
                    // More may be waiting.
                    self.hint.notify_one();
                    return runs;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not read the wake-up table"),
            }
        }
    }

    async fn owner_address(&self, shard: u32) -> Option<String> {
        let client = self.leases.pool.get().await.ok()?;
        let row = client
            .query_opt(
                "SELECT h.address FROM cairn_shards s JOIN cairn_hosts h ON h.host = s.owner \
                 WHERE s.shard = $1 AND s.lease_until > now() AND s.owner <> $2",
                &[&(shard as i32), &self.leases.host],
            )
            .await
            .ok()??;
        row.get::<_, Option<String>>(0).filter(|a| !a.is_empty())
    }

    fn ends(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.ends.subscribe())
    }

    fn arrival_slot(&self) -> Option<u16> {
        self.slot.get().copied()
    }

    fn owns(&self, shard: u32) -> bool {
        self.leases.fence.epoch(shard).is_some()
    }

    fn owned(&self) -> Vec<u32> {
        self.leases.fence.held().into_iter().map(|(s, _)| s).collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Ownership> {
        self.leases.events.subscribe()
    }

    fn tasks(&self) -> Option<Arc<dyn crate::store::TaskBoard>> {
        Some(self.board.clone())
    }

    fn slots(&self) -> Option<Arc<dyn crate::store::SlotBoard>> {
        Some(self.board.clone())
    }

    fn resumed(&self, shards: &[u32]) {
        self.leases.resumed(shards);
    }

    async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        if let Err(e) = self.leases.release_all().await {
            tracing::warn!(error = %e, "could not hand the shards back; other hosts take them when their leases end");
        }
    }

    fn metrics(&self, out: &mut String) {
        use crate::metrics::write_value;
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.leases.metrics;
        write_value(
            out,
            "cairn_shards_owned",
            "Shards this host holds now.",
            "gauge",
            self.leases.fence.held().len() as u64,
        );
        write_value(
            out,
            "cairn_lease_renewals_total",
            "Lease renewals that reached the database.",
            "counter",
            m.renewals.load(Relaxed),
        );
        write_value(out, "cairn_shards_acquired_total", "Shards this host took.", "counter", m.acquired.load(Relaxed));
        write_value(
            out,
            "cairn_shards_lost_total",
            "Shards another host took over from this one.",
            "counter",
            m.lost.load(Relaxed),
        );
        write_value(
            out,
            "cairn_takeovers_total",
            "Shards taken from a host that stopped renewing its lease.",
            "counter",
            m.takeovers.load(Relaxed),
        );
        let last = m.last_takeover_ms.load(Relaxed) as f64 / 1000.0;
        crate::metrics::write_float(
            out,
            "cairn_takeover_seconds",
            "The last takeover: from the old lease's end to the shard's runs scheduled here.",
            last,
        );
        let refused = self.leases.fence.refused.load(Relaxed);
        write_value(
            out,
            "cairn_fencing_refusals_total",
            "Batches refused because their shard was taken over.",
            "counter",
            refused,
        );
    }
}
