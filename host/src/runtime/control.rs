//! Input from outside a run: signals, cancel and terminate requests; and
//! what a host does at start (recovery) and for waiting clients.

use super::errors::ControlError;
use super::state::{Event, CANCEL_SIGNAL};
use super::Runtime;
use crate::journal::{Entry, Failure, Record};
use crate::store::{RunMeta, RunQuery, RunStatus, StoredSignal, Timer, Write};
use std::time::Duration;

impl Runtime {
    async fn live_run(&self, run_id: &str) -> Result<RunMeta, ControlError> {
        let meta = self.store().run(run_id).await?.ok_or_else(|| ControlError::NotFound(run_id.to_owned()))?;
        if meta.status.is_final() {
            return Err(ControlError::Ended { run_id: run_id.to_owned(), status: meta.status.as_str() });
        }
        Ok(meta)
    }

    /// Sends signal `name` with a JSON payload to a run. It is durable when
    /// this returns; the run's oldest `wait-signal(name)` handle receives it,
    /// or it waits in the run's buffer for one.
    pub async fn signal(&self, run_id: &str, name: &str, payload: &str) -> Result<(), ControlError> {
        if name.is_empty() || name.len() > 128 || name.starts_with('$') {
            return Err(ControlError::InvalidName(name.to_owned()));
        }
        self.buffer_checked(run_id, name, payload).await
    }

    /// Buffers a signal (also one of the host's own, such as an accepted
    /// update) within the caps on buffered signals.
    pub(super) async fn buffer_checked(&self, run_id: &str, name: &str, payload: &str) -> Result<(), ControlError> {
        if payload.len() > crate::journal::MAX_PAYLOAD_BYTES {
            return Err(ControlError::PayloadTooLarge { bytes: payload.len() });
        }
        crate::journal::check_json(payload).map_err(|e| ControlError::InvalidPayload(e.to_string()))?;
        // Checked against the last commit: signals committing at the same
        // moment can pass a cap by as many as there are.
        let limits = self.sandbox().limits();
        let buffered = self.store().buffered_signals(run_id).await?;
        if buffered.run.0 >= limits.max_signals_per_run {
            let (run_id, limit) = (run_id.to_owned(), limits.max_signals_per_run);
            return Err(ControlError::TooManySignals { run_id, buffered: buffered.run.0, limit });
        }
        // As stored: the name, the payload and their JSON framing.
        let more = (name.len() + payload.len() + 24) as u64;
        if buffered.all.1 + more > limits.max_signal_bytes {
            return Err(ControlError::SignalBufferFull { bytes: buffered.all.1, more, limit: limits.max_signal_bytes });
        }
        self.buffer_signal(run_id, name, payload).await
    }

    async fn buffer_signal(&self, run_id: &str, name: &str, payload: &str) -> Result<(), ControlError> {
        self.live_run(run_id).await?;
        let signal = StoredSignal { name: name.to_owned(), payload: payload.to_owned() };
        let seq = self.next_arrival();
        self.store().commit(vec![Write::PutSignal { run_id: run_id.to_owned(), seq, signal }]).await?;
        self.wake(run_id);
        Ok(())
    }

    /// Asks a run to cancel: its current await (or its next one) returns a
    /// failure of kind `cancelled`, so the workflow can compensate and end.
    pub async fn cancel_run(&self, run_id: &str) -> Result<(), ControlError> {
        self.buffer_signal(run_id, CANCEL_SIGNAL, "null").await
    }

    /// Stops a run at once: no more code of it runs, its in-flight work is
    /// abandoned, and its journal ends with a `terminated` entry.
    pub async fn terminate(&self, run_id: &str, reason: &str) -> Result<(), ControlError> {
        let meta = self.live_run(run_id).await?;
        if let Some(owner) = self.owner_elsewhere(&meta).await {
            let path = format!("/runs/{run_id}/terminate");
            self.forward(run_id, &owner, &path, serde_json::json!({ "reason": reason })).await?;
            return Ok(());
        }
        let scheduler = &self.inner.scheduler;
        for _ in 0..1000 {
            self.live_run(run_id).await?;
            if scheduler.send(run_id, Event::Terminate { reason: reason.to_owned() }).is_ok() {
                return Ok(());
            }
            if scheduler.claim(run_id) {
                let result = self.terminate_at_rest(run_id, reason).await;
                scheduler.release(run_id, false);
                return result;
            }
            // A driver is starting up; it will have a mailbox in a moment.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(ControlError::Busy(run_id.to_owned()))
    }

    async fn terminate_at_rest(&self, run_id: &str, reason: &str) -> Result<(), ControlError> {
        let mut meta = self.live_run(run_id).await?;
        let journal = self.store().journal(run_id).await?;
        let record = Record {
            seq: journal.last().map_or(0, |r| r.seq + 1),
            at_ms: super::now_ms(),
            entry: Entry::Terminated { reason: reason.to_owned() },
        };
        meta.status = RunStatus::Terminated;
        meta.failure = Some(Failure::new("terminated", reason));
        meta.updated_ms = record.at_ms;
        let mut batch = self.parent_writes(&meta);
        let parent = meta.parent.clone();
        let (promote, next) = self.release_slot(&meta).await?;
        batch.push(Write::Append { run_id: run_id.to_owned(), record });
        batch.push(Write::PutRun(meta));
        for timer in self.store().run_timers(run_id).await? {
            batch.push(Write::DeleteTimer { due_ms: timer.due_ms, run_id: timer.run_id, handle: timer.handle });
        }
        batch.extend(promote);
        self.store().commit(batch).await?;
        self.wake_bucket(next).await;
        if let Some(parent) = parent {
            self.wake(&parent.run_id);
        }
        self.inner.work.abort_run(run_id);
        self.inner.scheduler.ends.ended(run_id);
        Ok(())
    }

    /// Waits up to `timeout` for a run to end; returns its metadata then
    /// (ended or not).
    pub async fn wait_for_end(&self, run_id: &str, timeout: Duration) -> Result<Option<RunMeta>, ControlError> {
        let watch = self.inner.scheduler.ends.watch(run_id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Listening before looking: an end between the two still wakes us.
            let notified = watch.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let meta = self.store().run(run_id).await?;
            match &meta {
                None => return Ok(None),
                Some(m) if !matches!(m.status, RunStatus::Running | RunStatus::Paused | RunStatus::Queued) => {
                    return Ok(meta)
                }
                Some(_) => {}
            }
            // Look again now and then as well, whatever ended the run.
            let wait = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)));
            tokio::select! {
                _ = &mut notified => {}
                _ = wait => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(self.store().run(run_id).await?);
            }
        }
    }

    /// Pauses a run: its driver leaves at its next wait, and the run takes
    /// no steps until [`Runtime::resume`]. Timers that fire, activities
    /// that finish and signals that arrive meanwhile are kept for it. The
    /// journal is not touched: a pause changes when the run goes on, never
    /// what it does. Pausing a paused run changes nothing.
    pub async fn pause(&self, run_id: &str) -> Result<RunMeta, ControlError> {
        self.operator_switch(run_id, RunStatus::Running, RunStatus::Paused).await
    }

    /// Resumes a paused run: it is rebuilt by replay and takes what came
    /// while it was paused (fired timers, results, signals, a cancel).
    pub async fn resume(&self, run_id: &str) -> Result<RunMeta, ControlError> {
        self.operator_switch(run_id, RunStatus::Paused, RunStatus::Running).await
    }

    /// Moves a run from `from` to `to` (pause or resume) on its host, with
    /// the run held out of memory meanwhile.
    async fn operator_switch(&self, run_id: &str, from: RunStatus, to: RunStatus) -> Result<RunMeta, ControlError> {
        let pausing = to == RunStatus::Paused;
        let meta = self.live_run(run_id).await?;
        if pausing && meta.status == to {
            return Ok(meta);
        }
        if meta.status != from {
            let (run_id, status) = (run_id.to_owned(), meta.status.as_str());
            return Err(if pausing {
                ControlError::NotRunning { run_id, status }
            } else {
                ControlError::NotPaused { run_id, status }
            });
        }
        if let Some(owner) = self.owner_elsewhere(&meta).await {
            let path = format!("/runs/{run_id}/{}", if pausing { "pause" } else { "resume" });
            self.forward(run_id, &owner, &path, serde_json::json!({})).await?;
            return self.live_run(run_id).await;
        }
        let hold = self.hold(run_id).await?;
        let mut meta = self.live_run(run_id).await?;
        if meta.status == from {
            meta.status = to;
            meta.updated_ms = super::now_ms();
            self.store().commit(vec![Write::PutRun(meta.clone())]).await?;
            if !pausing {
                // Its timers were not armed by a restart while it was
                // paused (arming one that is armed changes nothing).
                for Timer { due_ms, run_id, handle } in self.store().run_timers(run_id).await? {
                    let target = super::work::Target { run_id, generation: meta.generation, handle };
                    self.inner.work.start_timer(self, target, due_ms);
                }
            }
            tracing::info!(run_id, status = to.as_str(), "an operator paused or resumed the run");
        }
        // Dropping the hold wakes the run (a paused one stays out).
        drop(hold);
        Ok(meta)
    }

    /// Deletes a finished run and everything of it (its journal, history
    /// generations and inbox). Its children, if any, are runs of their own
    /// and stay.
    pub async fn delete_run(&self, run_id: &str) -> Result<(), ControlError> {
        let meta = self.store().run(run_id).await?.ok_or_else(|| ControlError::NotFound(run_id.to_owned()))?;
        if !meta.status.is_final() {
            return Err(ControlError::Live { run_id: run_id.to_owned(), status: meta.status.as_str() });
        }
        self.store().commit(vec![Write::DeleteRun { run_id: run_id.to_owned() }]).await?;
        tracing::info!(run_id, "run deleted");
        Ok(())
    }

    /// At host start: re-arms every armed timer and wakes every unfinished
    /// run, which is rebuilt by replay. Returns (runs, timers).
    pub async fn recover(&self) -> Result<(usize, usize), ControlError> {
        let shards = self.coordinator().owned();
        self.recover_shards(&shards).await
    }

    /// What a host does on taking a shard over (and at start, for each
    /// shard it holds): re-arms the shard's timers and wakes its
    /// unfinished runs. A run waits for a resident slot before it replays,
    /// so a large shard does not flood the host.
    pub(crate) async fn ownership_changed(&self, change: crate::store::Ownership) -> Result<(), ControlError> {
        match change {
            crate::store::Ownership::Acquired(shard) => {
                let (runs, timers) = self.recover_shards(&[shard]).await?;
                self.coordinator().resumed(&[shard]);
                tracing::info!(shard, runs, timers, "took over a shard's runs");
            }
            // Its runs' next commits are refused; in-process work and timers
            // that wake them find the shard is not this host's.
            crate::store::Ownership::Lost(shard) => tracing::info!(shard, "stopped driving a shard's runs"),
        }
        Ok(())
    }

    async fn recover_shards(&self, shards: &[u32]) -> Result<(usize, usize), ControlError> {
        let mut runs = Vec::new();
        for shard in shards {
            let query = RunQuery { shard: Some(*shard), ..RunQuery::status(RunStatus::Running) };
            runs.extend(self.store().all_runs(query).await?);
        }
        let generations: std::collections::HashMap<&str, u32> =
            runs.iter().map(|m| (m.id.as_str(), m.generation)).collect();
        let mut timers = 0;
        for Timer { due_ms, run_id, handle } in self.store().timers(shards).await? {
            // Continue-as-new deletes a generation's timers with it: the
            // rows left are the current generation's.
            if let Some(&generation) = generations.get(run_id.as_str()) {
                let target = super::work::Target { run_id, generation, handle };
                self.inner.work.start_timer(self, target, due_ms);
                timers += 1;
            }
        }
        for meta in &runs {
            self.wake(&meta.id);
        }
        Ok((runs.len(), timers))
    }
}

/// Exclusive hold on a run: no driver executes it while the hold lives.
/// Dropping the hold lets the run go on (it is woken and rebuilt).
pub struct RunHold {
    rt: Runtime,
    run_id: String,
}

impl Drop for RunHold {
    fn drop(&mut self) {
        self.rt.inner.scheduler.release(&self.run_id, false);
        self.rt.wake(&self.run_id);
    }
}

impl Runtime {
    /// Takes a run out of memory (asking its driver to leave at its next
    /// wait) and holds it, so its journal cannot grow until the hold drops.
    pub async fn hold(&self, run_id: &str) -> Result<RunHold, ControlError> {
        for _ in 0..2000 {
            if self.inner.scheduler.claim(run_id) {
                return Ok(RunHold { rt: self.clone(), run_id: run_id.to_owned() });
            }
            let _ = self.inner.scheduler.send(run_id, Event::Evict);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(ControlError::Busy(run_id.to_owned()))
    }

    /// Moves a held run to another component: a version-switch entry and
    /// the new metadata, in one transaction that also refuses if the
    /// journal grew since `expected_next_seq` was read.
    pub async fn switch_version(
        &self,
        _hold: &RunHold,
        mut meta: RunMeta,
        expected_next_seq: u64,
        to_version: u32,
        to_sha256: &str,
    ) -> Result<RunMeta, ControlError> {
        let record = Record {
            seq: expected_next_seq,
            at_ms: super::now_ms(),
            entry: Entry::VersionSwitch {
                from_version: meta.version,
                to_version,
                from_sha256: meta.component_sha256.clone(),
                to_sha256: to_sha256.to_owned(),
            },
        };
        meta.version = Some(to_version);
        meta.component_sha256 = to_sha256.to_owned();
        if meta.status == RunStatus::Diverged {
            meta.status = RunStatus::Running;
            meta.failure = None;
        }
        meta.updated_ms = record.at_ms;
        let batch = vec![Write::Append { run_id: meta.id.clone(), record }, Write::PutRun(meta.clone())];
        self.store().commit(batch).await?;
        Ok(meta)
    }
}
