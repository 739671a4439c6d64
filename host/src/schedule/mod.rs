//! Schedules: runs started at times given by a cron expression in a time
//! zone, an interval, or once (a delayed start).
//!
//! A schedule is a store row ([`Schedule`]) changed only by
//! compare-and-swap on its revision, so the API and the firing loop of any
//! host may change it at once without losing a change. Every host runs the
//! loop ([`Schedules::drive`]) but fires only the schedules whose shard it
//! holds (the shard of the schedule's name), so each schedule has one
//! driver at a time, on redb and on PostgreSQL alike.
//!
//! Firings are durable by construction: the run a firing starts has an id
//! made of the schedule's name and the firing's time, and the schedule's
//! cursor (every firing at or before it was handled) moves only after the
//! run exists. A host that dies between the two starts the same firing
//! again when it (or the next owner) comes back, finds the run there, and
//! counts it once: a firing never starts two runs. Firings due while no
//! host ran the schedule are made up when one comes back, if they are
//! within the catch-up window; older ones are counted as missed.

mod when;

pub use when::{parse_duration, parse_time, rfc3339, run_id};

use crate::registry::Registry;
use crate::runtime::{now_ms, Runtime, StartRequest};
use crate::store::{
    CommitError, Firing, Overlap, Schedule, ScheduleSpec, ScheduleState, StoreError, When, Write, RECENT_FIRINGS,
};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The catch-up window unless the schedule says otherwise.
pub const DEFAULT_CATCHUP_WINDOW_MS: u64 = 60 * 60 * 1000;

/// Most firings one backfill starts.
pub const MAX_BACKFILL: usize = 10_000;

/// Most firings one pass of the loop handles for one schedule (the rest
/// come in the next pass).
const FIRINGS_PER_PASS: usize = 1000;

/// How long the loop sleeps at most between passes.
const PASS_EVERY: Duration = Duration::from_secs(1);

/// How often a buffered firing looks whether the run before it ended.
const BUFFERED_EVERY: Duration = Duration::from_millis(250);

/// A schedule operation failed.
#[derive(Debug, Error)]
pub enum ScheduleError {
    /// Not a usable schedule name.
    #[error("invalid schedule name {0:?}: use 1-100 letters, digits, '-' or '_'")]
    InvalidName(String),
    /// A schedule of that name exists.
    #[error("schedule {0} already exists; delete it first (`cairn schedule delete {0}`) or choose another name")]
    Exists(String),
    /// No schedule of that name.
    #[error("no schedule named {0}; `cairn schedule list` shows the schedules")]
    NotFound(String),
    /// The cron expression does not parse.
    #[error("invalid cron expression {expression:?} ({reason}); use 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, e.g. \"0 3 * * *\" for 03:00 every day")]
    InvalidCron {
        /// The expression.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not in the tz database.
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin, America/New_York or UTC")]
    UnknownTimezone(String),
    /// Something else about the spec (interval, times, a missing field).
    #[error("{0}")]
    InvalidSpec(String),
    /// The workflow is not deployed.
    #[error("no workflow named {0:?} is deployed; deploy it (`cairn deploy {0} FILE.wasm`) before scheduling it")]
    WorkflowNotFound(String),
    /// The input is not JSON.
    #[error("the input is not valid JSON: {0}")]
    InvalidInput(String),
    /// The schedule changed under every attempt at this change.
    #[error("schedule {0} kept changing while this change was being made; nothing was written, try again")]
    Busy(String),
    /// The workflow's component could not be loaded.
    #[error(transparent)]
    Registry(#[from] crate::registry::UploadError),
    /// A firing's run could not be started.
    #[error(transparent)]
    Start(#[from] crate::runtime::StartError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new schedule, as the API and the CLI give it.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Its name.
    pub name: String,
    /// What it starts and when.
    pub spec: ScheduleSpec,
    /// Created paused.
    pub paused: bool,
    /// Why, if paused.
    pub note: String,
}

/// What a trigger or a backfill did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fired {
    /// The firings, in time order.
    pub firings: Vec<Firing>,
}

/// Schedules over one runtime: the operations of the API and the CLI, and
/// the loop that fires them.
#[derive(Clone)]
pub struct Schedules {
    rt: Runtime,
    registry: Registry,
    changed: Arc<tokio::sync::Notify>,
}

impl Schedules {
    /// The schedules of `rt`'s store.
    pub fn new(rt: Runtime, registry: Registry) -> Schedules {
        Schedules { rt, registry, changed: Arc::default() }
    }

    /// Creates a schedule; it fires from now on (not for times before).
    pub async fn create(&self, new: NewSchedule) -> Result<Schedule, ScheduleError> {
        let NewSchedule { name, spec, paused, note } = new;
        if name.is_empty()
            || name.len() > 100
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ScheduleError::InvalidName(name));
        }
        when::validate(&spec.when)?;
        let now = now_ms();
        if let When::At { at_ms } = spec.when {
            if at_ms <= now {
                return Err(ScheduleError::InvalidSpec(format!(
                    "start_at {} is in the past; to start a run now, use `cairn start`",
                    rfc3339(at_ms)
                )));
            }
        }
        if spec.catchup_window_ms < 1000 {
            return Err(ScheduleError::InvalidSpec(format!(
                "the catch-up window is {} ms; it must be at least 1s (a firing is handled up to about a second late)",
                spec.catchup_window_ms
            )));
        }
        crate::journal::check_json(&spec.input).map_err(|e| ScheduleError::InvalidInput(e.to_string()))?;
        if spec.input.len() > crate::journal::MAX_PAYLOAD_BYTES {
            return Err(ScheduleError::InvalidInput(format!(
                "it is {} bytes, over the limit of {} bytes for one journaled payload",
                spec.input.len(),
                crate::journal::MAX_PAYLOAD_BYTES
            )));
        }
        if self.registry.workflow(&spec.workflow).await?.is_none() {
            return Err(ScheduleError::WorkflowNotFound(spec.workflow));
        }
        if self.rt.store().schedule(&name).await?.is_some() {
            return Err(ScheduleError::Exists(name));
        }
        let schedule = Schedule {
            name: name.clone(),
            revision: 1,
            spec,
            state: ScheduleState { created_ms: now, cursor_ms: now, paused, note, ..ScheduleState::default() },
        };
        match self.rt.store().commit(vec![Write::PutSchedule(schedule.clone())]).await {
            Ok(()) => {}
            Err(StoreError::Commit(CommitError::Conflict { .. })) => return Err(ScheduleError::Exists(name)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(schedule = %name, "schedule created");
        self.changed.notify_one();
        Ok(schedule)
    }

    /// A schedule by name.
    pub async fn get(&self, name: &str) -> Result<Schedule, ScheduleError> {
        self.rt.store().schedule(name).await?.ok_or_else(|| ScheduleError::NotFound(name.to_owned()))
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<Schedule>, ScheduleError> {
        Ok(self.rt.store().schedules().await?)
    }

    /// The next `n` firings of a schedule (none while paused or done).
    pub fn upcoming(schedule: &Schedule, n: usize) -> Vec<u64> {
        if schedule.state.paused || schedule.state.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut cursor = schedule.state.cursor_ms.max(now_ms());
        while out.len() < n {
            match when::next_after(&schedule.spec.when, cursor) {
                Ok(Some(t)) => {
                    out.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        out
    }

    /// Deletes a schedule; the runs it started stay.
    pub async fn delete(&self, name: &str) -> Result<(), ScheduleError> {
        self.get(name).await?;
        self.rt.store().commit(vec![Write::DeleteSchedule { name: name.to_owned() }]).await?;
        tracing::info!(schedule = name, "schedule deleted");
        Ok(())
    }

    /// Pauses a schedule: it fires nothing until resumed.
    pub async fn pause(&self, name: &str, note: &str) -> Result<Schedule, ScheduleError> {
        self.change(name, |s| {
            s.state.paused = true;
            s.state.note = note.to_owned();
            Ok(())
        })
        .await
    }

    /// Resumes a schedule from now: firings due while it was paused are
    /// not made up.
    pub async fn resume(&self, name: &str) -> Result<Schedule, ScheduleError> {
        let schedule = self
            .change(name, |s| {
                if s.state.paused {
                    s.state.paused = false;
                    s.state.note.clear();
                    s.state.cursor_ms = s.state.cursor_ms.max(now_ms());
                }
                Ok(())
            })
            .await?;
        self.changed.notify_one();
        Ok(schedule)
    }

    /// Fires a schedule now, as a firing at this millisecond (its overlap
    /// policy applies).
    pub async fn trigger(&self, name: &str) -> Result<Fired, ScheduleError> {
        let at = now_ms();
        let stored = self
            .change_async(name, |mut s| async move {
                self.fire(&mut s, at, "triggered").await?;
                Ok(s)
            })
            .await?;
        Ok(Fired { firings: stored.state.recent.last().cloned().into_iter().collect() })
    }

    /// Starts the runs of every firing in `from_ms..=to_ms` (at most
    /// [`MAX_BACKFILL`]), whether or not earlier ones still run; a firing
    /// whose run exists (it fired, or an earlier backfill started it) is
    /// not started again.
    pub async fn backfill(&self, name: &str, from_ms: u64, to_ms: u64) -> Result<Fired, ScheduleError> {
        if from_ms > to_ms {
            return Err(ScheduleError::InvalidSpec(format!(
                "the backfill range ends ({}) before it starts ({})",
                rfc3339(to_ms),
                rfc3339(from_ms)
            )));
        }
        let schedule = self.get(name).await?;
        let times = when::between(&schedule.spec.when, from_ms, to_ms, MAX_BACKFILL + 1)?;
        if times.len() > MAX_BACKFILL {
            return Err(ScheduleError::InvalidSpec(format!(
                "the range holds more than {MAX_BACKFILL} firings; backfill it in parts"
            )));
        }
        let mut firings = Vec::new();
        for at in times {
            let run_id = run_id(name, at);
            let outcome = match self.rt.store().run(&run_id).await? {
                Some(_) => "exists",
                None => {
                    self.start(&schedule.spec, &run_id).await?;
                    "backfilled"
                }
            };
            firings.push(Firing { at_ms: at, run_id, outcome: outcome.to_owned() });
        }
        let started = firings.iter().filter(|f| f.outcome == "backfilled").count() as u64;
        let recent = firings.clone();
        self.change(name, move |s| {
            s.state.started += started;
            remember(&mut s.state, recent.iter().rev().take(RECENT_FIRINGS).rev().cloned());
            Ok(())
        })
        .await?;
        Ok(Fired { firings })
    }

    /// Read, change, compare-and-swap; again on a conflict.
    async fn change(
        &self,
        name: &str,
        mut f: impl FnMut(&mut Schedule) -> Result<(), ScheduleError>,
    ) -> Result<Schedule, ScheduleError> {
        self.change_async(name, |mut s| {
            let result = f(&mut s).map(|()| s);
            async move { result }
        })
        .await
    }

    async fn change_async<F, Fut>(&self, name: &str, mut f: F) -> Result<Schedule, ScheduleError>
    where
        F: FnMut(Schedule) -> Fut,
        Fut: std::future::Future<Output = Result<Schedule, ScheduleError>>,
    {
        for _ in 0..20 {
            let stored = self.get(name).await?;
            let mut changed = f(stored.clone()).await?;
            if changed == stored {
                return Ok(stored);
            }
            changed.revision = stored.revision + 1;
            match self.rt.store().commit(vec![Write::PutSchedule(changed.clone())]).await {
                Ok(()) => return Ok(changed),
                Err(StoreError::Commit(CommitError::Conflict { .. })) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ScheduleError::Busy(name.to_owned()))
    }

    /// Fires the schedules of this host's shards as they come due, until
    /// the runtime is dropped. Every host runs it.
    pub async fn drive(self) {
        loop {
            let wait = match self.pass().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "could not fire schedules; trying again in a second");
                    PASS_EVERY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => {}
            }
        }
    }

    /// One pass over the schedules: fires what is due; returns how long
    /// until the next firing (at most a second, so changes made on other
    /// hosts are seen).
    async fn pass(&self) -> Result<Duration, ScheduleError> {
        let coordinator = self.rt.coordinator();
        let mut next = PASS_EVERY;
        for schedule in self.rt.store().schedules().await? {
            if schedule.state.paused
                || schedule.state.done
                || !coordinator.owns(self.rt.store().shard_for(&schedule.name))
            {
                continue;
            }
            let now = now_ms();
            let due_at = when::next_after(&schedule.spec.when, schedule.state.cursor_ms)?;
            if schedule.state.buffered_ms.is_none() && due_at.is_none_or(|t| t > now) {
                if let Some(t) = due_at {
                    next = next.min(Duration::from_millis(t - now));
                }
                continue;
            }
            let name = schedule.name.clone();
            match self.change_async(&name, |s| self.due(s)).await {
                // A firing waits for a run to end: looked at again soon.
                Ok(stored) if stored.state.buffered_ms.is_some() => next = next.min(BUFFERED_EVERY),
                Ok(stored) => {
                    if let Some(t) = when::next_after(&stored.spec.when, stored.state.cursor_ms)? {
                        next = next.min(Duration::from_millis(t.saturating_sub(now_ms())));
                    }
                }
                // Deleted meanwhile: the runs it started stay.
                Err(ScheduleError::NotFound(_)) => {}
                Err(e) => tracing::warn!(schedule = %name, error = %e, "a schedule could not fire; trying again"),
            }
        }
        Ok(next)
    }

    /// Handles what is due of one schedule: a buffered firing whose
    /// predecessor ended, then the firings up to now.
    async fn due(&self, mut s: Schedule) -> Result<Schedule, ScheduleError> {
        if s.state.done {
            return Ok(s);
        }
        let now = now_ms();
        if s.state.paused {
            // Paused while this host was firing it: the firings whose runs
            // it started before the pause landed count; nothing more fires.
            while let Some(at) = when::next_after(&s.spec.when, s.state.cursor_ms)?.filter(|t| *t <= now) {
                let run_id = run_id(&s.name, at);
                if self.rt.store().run(&run_id).await?.is_none() {
                    break;
                }
                s.state.cursor_ms = at;
                s.state.last_run = Some(run_id.clone());
                s.state.started += 1;
                remember(&mut s.state, [Firing { at_ms: at, run_id, outcome: "started".into() }]);
            }
            return Ok(s);
        }
        if let Some(at) = s.state.buffered_ms {
            if !self.previous_running(&s).await? {
                s.state.buffered_ms = None;
                let run_id = run_id(&s.name, at);
                self.start(&s.spec, &run_id).await?;
                s.state.last_run = Some(run_id.clone());
                s.state.started += 1;
                remember(&mut s.state, [Firing { at_ms: at, run_id, outcome: "started".into() }]);
            }
        }
        for _ in 0..FIRINGS_PER_PASS {
            let Some(at) = when::next_after(&s.spec.when, s.state.cursor_ms)?.filter(|t| *t <= now) else { break };
            s.state.cursor_ms = at;
            if matches!(s.spec.when, When::At { .. }) {
                s.state.done = true;
            }
            if now - at > s.spec.catchup_window_ms {
                s.state.missed += 1;
                let run_id = run_id(&s.name, at);
                tracing::warn!(schedule = %s.name, at = %rfc3339(at), "a firing is older than the catch-up window; missed");
                remember(&mut s.state, [Firing { at_ms: at, run_id, outcome: "missed".into() }]);
                continue;
            }
            self.fire(&mut s, at, "started").await?;
        }
        Ok(s)
    }

    /// One firing at `at`, by the overlap policy; `outcome` names a run it
    /// starts.
    async fn fire(&self, s: &mut Schedule, at: u64, outcome: &str) -> Result<Firing, ScheduleError> {
        let run_id = run_id(&s.name, at);
        let already = self.rt.store().run(&run_id).await?.is_some();
        let outcome = if already || s.spec.overlap == Overlap::AllowAll || !self.previous_running(s).await? {
            // A firing whose run exists was started by an attempt whose
            // schedule change did not land (a crash, a conflict): it counts
            // once, now.
            if !already {
                self.start(&s.spec, &run_id).await?;
            }
            s.state.last_run = Some(run_id.clone());
            s.state.started += 1;
            outcome.to_owned()
        } else {
            match s.spec.overlap {
                Overlap::BufferOne if s.state.buffered_ms.is_none() => {
                    s.state.buffered_ms = Some(at);
                    "buffered".to_owned()
                }
                Overlap::CancelPrevious => {
                    if let Some(previous) = s.state.last_run.clone() {
                        match self.rt.cancel_run(&previous).await {
                            Ok(()) => {
                                tracing::info!(schedule = %s.name, run_id = %previous, "cancelled the previous run")
                            }
                            Err(e) => {
                                tracing::warn!(schedule = %s.name, run_id = %previous, error = %e, "could not cancel the previous run")
                            }
                        }
                    }
                    if s.state.buffered_ms.replace(at).is_some() {
                        s.state.skipped += 1;
                    }
                    "buffered".to_owned()
                }
                _ => {
                    s.state.skipped += 1;
                    "skipped".to_owned()
                }
            }
        };
        tracing::info!(schedule = %s.name, at = %rfc3339(at), %run_id, %outcome, "schedule fired");
        let firing = Firing { at_ms: at, run_id, outcome };
        remember(&mut s.state, [firing.clone()]);
        Ok(firing)
    }

    /// Whether the schedule's last run has not ended (running, paused or
    /// diverged and waiting for an upgrade).
    async fn previous_running(&self, s: &Schedule) -> Result<bool, ScheduleError> {
        let Some(previous) = &s.state.last_run else { return Ok(false) };
        Ok(self.rt.store().run(previous).await?.is_some_and(|m| !m.status.is_final()))
    }

    /// Starts the run of a firing on the workflow's current version.
    async fn start(&self, spec: &ScheduleSpec, run_id: &str) -> Result<(), ScheduleError> {
        let Some((version, component, limits)) = self.registry.workflow_to_start(&spec.workflow).await? else {
            return Err(ScheduleError::WorkflowNotFound(spec.workflow.clone()));
        };
        let request = StartRequest {
            workflow: spec.workflow.clone(),
            component,
            input: spec.input.clone(),
            run_id: Some(run_id.to_owned()),
            version: Some(version),
        };
        let meta = self.rt.start_with(request, crate::runtime::Flow { limits, ..Default::default() }).await?;
        self.rt.wake(&meta.id);
        Ok(())
    }
}

/// Keeps the latest firings.
fn remember(state: &mut ScheduleState, firings: impl IntoIterator<Item = Firing>) {
    state.recent.extend(firings);
    let extra = state.recent.len().saturating_sub(RECENT_FIRINGS);
    state.recent.drain(..extra);
}
