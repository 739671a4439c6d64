//! The run driver: instantiate a run's component, replay its journal, and
//! continue live (or, in check mode, stop where the journal ends); then
//! record how the run ended, or leave memory when it waits too long.

use super::errors::RunError;
use super::state::{Event, Mode, StateParts, WorkflowState};
use super::{now_ms, Runtime};
use crate::journal::{Completion, Divergence, Entry, Failure, Record};
use crate::sandbox::LoadedComponent;
use crate::store::{CommitError, RunMeta, RunStatus, Write};
use serde::Serialize;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tracing::Instrument;
use wasmtime::{Trap, UpdateDeadline, WasmBacktrace};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum RunOutcome {
    /// The workflow returned this JSON result.
    Completed {
        /// The result.
        result: String,
    },
    /// The workflow returned a failure.
    Failed {
        /// The failure.
        failure: Failure,
    },
}

/// What a replay check found when it did not diverge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The run.
    pub run_id: String,
    /// Journal entries (host calls and end) that were reproduced.
    pub entries: u64,
    /// Whether the journal records the end of the run (and the code
    /// reproduced it), or the run is still in progress.
    pub finished: bool,
}

/// What driving a run came to.
#[derive(Debug)]
pub(crate) enum Driven {
    /// The run ended (now or before).
    Finished(RunOutcome),
    /// The run left memory while waiting; it is woken when input arrives.
    Evicted,
    /// The run continued as new: drive its next generation.
    Continued,
}

/// The runaway-code trap.
#[derive(Debug, thiserror::Error)]
#[error("the workflow ran past its step budget without calling the host")]
struct Runaway;

enum Executed {
    Outcome(RunOutcome),
    ReachedEnd,
    Evicted,
    Continued,
    /// Query mode: the guest answered.
    Answered(Completion),
    /// Query mode: the guest could not answer, for this reason.
    Unanswered(String),
}

/// Why a query sandbox gave no answer.
pub(crate) enum Unanswered {
    /// The replay failed (diverged, trapped, could not start).
    Run(RunError),
    /// The guest went on without answering.
    Because(String),
}

impl Runtime {
    /// Drives a run in this task until it ends: replays its journal, then
    /// continues live. A run that already ended returns its outcome without
    /// executing. Used by embedded mode, which keeps the run in memory.
    pub async fn drive(&self, run_id: &str) -> Result<RunOutcome, RunError> {
        loop {
            if !self.inner.scheduler.claim(run_id) {
                return Err(RunError::Busy(run_id.to_owned()));
            }
            match self.drive_claimed(run_id).await? {
                Driven::Finished(outcome) => return Ok(outcome),
                Driven::Evicted => return Err(RunError::Busy(run_id.to_owned())),
                Driven::Continued => continue,
            }
        }
    }

    /// Drives a run this task has claimed in the scheduler.
    pub(crate) async fn drive_claimed(&self, run_id: &str) -> Result<Driven, RunError> {
        let scheduler = &self.inner.scheduler;
        let meta = match self.inner.store.run(run_id).await {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                scheduler.release(run_id, false);
                return Err(RunError::NotFound(run_id.to_owned()));
            }
            Err(e) => {
                scheduler.release(run_id, false);
                return Err(e.into());
            }
        };
        // A paused run stays out of memory: what wakes it (a timer, a
        // signal, a completion) is kept in the store for its resume.
        if matches!(meta.status, RunStatus::Paused | RunStatus::Queued) {
            scheduler.release(run_id, false);
            return Ok(Driven::Evicted);
        }
        if meta.status != RunStatus::Running {
            scheduler.release(run_id, false);
            return self.recorded_outcome(meta).await.map(Driven::Finished);
        }
        // Another host drives the runs of a shard it holds.
        if !self.coordinator().owns(meta.shard) {
            scheduler.release(run_id, false);
            return Ok(Driven::Evicted);
        }
        let component = match self.inner.components.load_stored(&meta.component_sha256).await {
            Ok(c) => c,
            Err(e) => {
                scheduler.release(run_id, false);
                return Err(e.into());
            }
        };
        let mailbox = scheduler.open_mailbox(run_id);
        match self.execute(meta, component, Mode::Live, Some(mailbox)).await? {
            Executed::Outcome(outcome) => Ok(Driven::Finished(outcome)),
            Executed::Evicted => Ok(Driven::Evicted),
            Executed::Continued => Ok(Driven::Continued),
            Executed::ReachedEnd | Executed::Answered(_) | Executed::Unanswered(_) => {
                unreachable!("live runs do not stop at the end of the journal")
            }
        }
    }

    /// The outcome of a run that is not running, from its metadata.
    async fn recorded_outcome(&self, meta: RunMeta) -> Result<RunOutcome, RunError> {
        let failure = || meta.failure.clone().unwrap_or_else(|| Failure::new("failed", "the run failed"));
        match meta.status {
            RunStatus::Completed => Ok(RunOutcome::Completed { result: meta.result.unwrap_or_else(|| "null".into()) }),
            RunStatus::Failed => {
                let journal = self.inner.store.journal(&meta.id).await?;
                match journal.last().map(|r| &r.entry) {
                    Some(Entry::Failed { .. }) => Ok(RunOutcome::Failed { failure: failure() }),
                    _ => Err(RunError::Trapped { failure: failure(), run_id: meta.id }),
                }
            }
            RunStatus::Terminated => Err(RunError::Terminated { failure: failure(), run_id: meta.id }),
            RunStatus::Diverged => {
                let divergence = meta
                    .failure
                    .as_ref()
                    .and_then(|f| f.details.as_deref())
                    .and_then(|d| serde_json::from_str::<Divergence>(d).ok())
                    .unwrap_or_else(|| Divergence {
                        seq: 0,
                        expected: "(not recorded)".into(),
                        actual: "(not recorded)".into(),
                        backtrace: None,
                    });
                Err(RunError::Diverged { run_id: meta.id, divergence })
            }
            RunStatus::Running | RunStatus::Paused | RunStatus::Queued => {
                unreachable!("only called for runs that ended or diverged")
            }
        }
    }

    /// Re-executes a run from its journal in a scratch sandbox, with its own
    /// component or `with`, writing nothing and starting nothing. Succeeds
    /// when every journaled call is reproduced.
    pub async fn replay(&self, run_id: &str, with: Option<LoadedComponent>) -> Result<ReplayReport, RunError> {
        let meta = self.inner.store.run(run_id).await?.ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        let component = match with {
            Some(c) => c,
            None => self.inner.components.load_stored(&meta.component_sha256).await?,
        };
        let started = std::time::Instant::now();
        let span = tracing::info_span!("run", run_id = %meta.id, workflow = %meta.workflow, mode = ?Mode::Check);
        let (executed, state) = self.execute_inner(meta, component, Mode::Check, None).instrument(span).await;
        self.inner.metrics.replay_seconds.observe_duration(started.elapsed());
        let entries = state.map_or(0, |s| s.cursor().len() as u64);
        let finished = match executed? {
            // A generation that continued as new is finished too.
            Executed::Outcome(_) | Executed::Continued => true,
            Executed::ReachedEnd | Executed::Evicted | Executed::Answered(_) | Executed::Unanswered(_) => false,
        };
        Ok(ReplayReport { run_id: run_id.to_owned(), entries, finished })
    }

    /// Instantiates `component` `n` times without calling it and returns
    /// the mean: what starting or rebuilding a run costs before its code
    /// runs (store, virtual WASI, limits, `InstancePre` instantiation).
    pub async fn time_instantiation(
        &self,
        component: &LoadedComponent,
        n: u32,
    ) -> Result<std::time::Duration, RunError> {
        let pre = self
            .prepare(component)
            .map_err(|e| RunError::Instantiate { run_id: "bench".into(), reason: e.to_string() })?;
        let (meta, _) = self.new_run("bench", &component.sha256, "null", "bench", None);
        let sandbox = &self.inner.sandbox;
        let n = n.max(1);
        let started = std::time::Instant::now();
        for _ in 0..n {
            let state = WorkflowState::new(StateParts {
                meta: meta.clone(),
                mode: Mode::Check,
                records: Vec::new(),
                seed: 0,
                start_ms: 0,
                limits: sandbox.guest_limits(),
                rt: self.clone(),
                events: None,
                idle: None,
                question: None,
            });
            let _slot = sandbox.instance_slot().await;
            let mut store = wasmtime::Store::new(sandbox.engine(), state);
            store.limiter_async(|s| &mut s.limits);
            store.set_epoch_deadline(sandbox.limits().budget_ticks());
            pre.instantiate_async(&mut store)
                .await
                .map_err(|e| RunError::Instantiate { run_id: "bench".into(), reason: format!("{e:#}") })?;
        }
        Ok(started.elapsed() / n)
    }

    async fn execute(
        &self,
        meta: RunMeta,
        component: LoadedComponent,
        mode: Mode,
        mailbox: Option<mpsc::UnboundedReceiver<Event>>,
    ) -> Result<Executed, RunError> {
        let span = tracing::info_span!("run", run_id = %meta.id, workflow = %meta.workflow, ?mode);
        let run_id = meta.id.clone();
        let (mut result, mut state) = self.execute_inner(meta, component, mode, mailbox).instrument(span.clone()).await;
        if mode == Mode::Live {
            let refused = result.as_ref().err().and_then(RunError::refused_commit).cloned();
            if let (Some(refused), Some(state)) = (refused, state.as_mut()) {
                result = self.refused(state, refused).instrument(span).await;
            }
            self.leave_memory(&run_id, state, &result).await;
        }
        result
    }

    /// The store refused one of the run's commits: the step would have
    /// overwritten a journal entry, the run's or a child's. Rebuilding the
    /// run would take the same step again and be refused again, so the run
    /// fails, with the refusal as its failure, instead of stalling silently.
    async fn refused(&self, state: &mut WorkflowState, refused: CommitError) -> Result<Executed, RunError> {
        // Nothing of the refused batch was written; what the guest did
        // after it never left the run.
        state.take_pending();
        state.unsealed = Default::default();
        state.flushed.clear();
        state.flush_failed = None;
        let run_id = state.run_id().to_owned();
        let seq = match &refused {
            CommitError::DuplicateSeq { seq, .. } => Some(*seq),
            _ => None,
        };
        tracing::error!(run_id = %run_id, ?seq, error = %refused, "the store refused a step of this run; the run fails");
        let failure = Failure::new(
            "commit-refused",
            format!("the store refused a step of this run, so the run was stopped: {refused}. Journal entries are never overwritten; this is a bug in Cairn, a second host writing the same store, or a client starting a run under the id of a child this run was starting at that moment: please report it with the output of `cairn journal {run_id} --json`"),
        );
        self.fail(state, RunError::Refused { run_id, failure }).await
    }

    /// Replays `records` as the journal of a run `meta` that need not be
    /// stored (a reset checks the journal it would start from), writing
    /// nothing. Succeeds when every record is reproduced.
    pub async fn replay_records(
        &self,
        meta: RunMeta,
        records: Vec<Record>,
        component: LoadedComponent,
    ) -> Result<ReplayReport, RunError> {
        let run_id = meta.id.clone();
        let span = tracing::info_span!("run", run_id = %meta.id, workflow = %meta.workflow, mode = ?Mode::Check);
        let (executed, state) =
            self.execute_records(meta, records, component, Mode::Check, None, None).instrument(span).await;
        let entries = state.map_or(0, |s| s.cursor().len() as u64);
        let finished = matches!(executed?, Executed::Outcome(_) | Executed::Continued);
        Ok(ReplayReport { run_id, entries, finished })
    }

    /// Replays `records`, the journal of run `meta`, in a scratch sandbox
    /// and asks the guest `question` where it first waits past their end.
    pub(crate) async fn answer_records(
        &self,
        meta: RunMeta,
        records: Vec<Record>,
        component: LoadedComponent,
        question: super::query::Question,
    ) -> Result<Completion, Unanswered> {
        let (executed, _) = self.execute_records(meta, records, component, Mode::Query, None, Some(question)).await;
        match executed {
            Ok(Executed::Answered(answer)) => Ok(answer),
            Ok(Executed::Unanswered(reason)) => Err(Unanswered::Because(reason)),
            Ok(Executed::Outcome(_)) => Err(Unanswered::Because(
                "the workflow returned without waiting, so there was no point at which to ask it; ask again".into(),
            )),
            Ok(Executed::Continued) => {
                Err(Unanswered::Because("the run is continuing as new; ask again in a moment".into()))
            }
            Ok(Executed::ReachedEnd | Executed::Evicted) => {
                Err(Unanswered::Because("the sandbox stopped before the workflow waited".into()))
            }
            Err(e) => Err(Unanswered::Run(e)),
        }
    }

    async fn execute_inner(
        &self,
        meta: RunMeta,
        component: LoadedComponent,
        mode: Mode,
        mailbox: Option<mpsc::UnboundedReceiver<Event>>,
    ) -> (Result<Executed, RunError>, Option<WorkflowState>) {
        let records = match self.inner.store.journal(&meta.id).await {
            Ok(r) => r,
            Err(e) => return (Err(e.into()), None),
        };
        self.execute_records(meta, records, component, mode, mailbox, None).await
    }

    async fn execute_records(
        &self,
        meta: RunMeta,
        records: Vec<Record>,
        component: LoadedComponent,
        mode: Mode,
        mailbox: Option<mpsc::UnboundedReceiver<Event>>,
        question: Option<super::query::Question>,
    ) -> (Result<Executed, RunError>, Option<WorkflowState>) {
        let run_id = meta.id.clone();
        let Some(Record { at_ms: start_ms, entry: Entry::Started { seed, input, .. }, .. }) = records.first().cloned()
        else {
            return (Err(RunError::NoStartEntry(run_id)), None);
        };
        let Ok(seed) = u128::from_str_radix(&seed, 16) else {
            return (Err(RunError::NoStartEntry(run_id)), None);
        };
        let pre = match self.prepare(&component) {
            Ok(pre) => pre,
            Err(e) => return (Err(RunError::Instantiate { run_id, reason: e.to_string() }), None),
        };
        if mode == Mode::Live && records.len() > 1 {
            self.inner.scheduler.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        let sandbox = &self.inner.sandbox;
        let state = WorkflowState::new(StateParts {
            meta,
            mode,
            records,
            seed,
            start_ms,
            limits: sandbox.guest_limits(),
            rt: self.clone(),
            events: mailbox,
            idle: self.inner.scheduler.residency.idle,
            question,
        });
        // Held until the store is gone, at the end of this function.
        let slot = sandbox.instance_slot().await;
        let mut store = wasmtime::Store::new(sandbox.engine(), state);
        store.limiter_async(|s| &mut s.limits);
        // Called once per epoch tick of guest computation: the guest yields
        // its thread, an activity it started goes to a task of its own
        // (computing, the run is not awaiting it), and a guest that computed
        // for the whole step budget without calling the host is a runaway.
        let budget = sandbox.limits().budget_ticks();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut cx| {
            let s = cx.data_mut();
            s.release_inline();
            s.submit_unsealed();
            if s.host_calls != s.host_calls_at_check {
                s.host_calls_at_check = s.host_calls;
                s.quiet_ticks = 0;
                return Ok(UpdateDeadline::Yield(1));
            }
            s.quiet_ticks += 1;
            if s.quiet_ticks >= budget {
                s.runaway = true;
                return Err(Runaway.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });

        let result = match pre.instantiate_async(&mut store).await {
            Ok(workflow) => workflow.call_run(&mut store, &input).await,
            Err(e) => Err(e),
        };
        let mut state = store.into_data();
        drop(slot);
        let executed = match result {
            Ok(Ok(json)) if json.len() > crate::journal::MAX_PAYLOAD_BYTES => {
                let failure = Failure::new(
                    "contract-violation",
                    format!(
                        "the workflow returned {} bytes, over the limit of {} bytes for one journaled payload",
                        json.len(),
                        crate::journal::MAX_PAYLOAD_BYTES
                    ),
                );
                self.fail(&mut state, RunError::Contract { run_id, failure }).await
            }
            Ok(Ok(json)) => match crate::journal::check_json(&json) {
                Ok(_) => self.finish(&mut state, Entry::Completed { result: json }).await,
                Err(e) => {
                    let failure =
                        Failure::new("contract-violation", format!("the workflow returned invalid JSON: {e}"));
                    self.fail(&mut state, RunError::Contract { run_id, failure }).await
                }
            },
            Ok(Err(f)) => {
                let failure = Failure { kind: f.kind, message: f.message, details: f.details };
                self.finish(&mut state, Entry::Failed { failure }).await
            }
            Err(e) => self.stopped(&mut state, e).await,
        };
        (executed, Some(state))
    }

    /// The workflow returned: check it against the journal, then record it.
    async fn finish(&self, state: &mut WorkflowState, outcome: Entry) -> Result<Executed, RunError> {
        if let Err(divergence) = state.cursor().finish(&outcome) {
            return self.diverged(state, divergence).await;
        }
        let run_outcome = match &outcome {
            Entry::Completed { result } => RunOutcome::Completed { result: result.clone() },
            Entry::Failed { failure } => RunOutcome::Failed { failure: failure.clone() },
            _ => unreachable!("finish takes an end entry"),
        };
        if state.mode != Mode::Live || state.cursor().terminal().is_some() {
            return Ok(Executed::Outcome(run_outcome));
        }
        let record = state.append(outcome);
        let mut meta = state.meta.clone();
        match &record.entry {
            Entry::Completed { result } => {
                meta.status = RunStatus::Completed;
                meta.result = Some(result.clone());
            }
            Entry::Failed { failure } => {
                meta.status = RunStatus::Failed;
                meta.failure = Some(failure.clone());
            }
            _ => {}
        }
        self.record_end(state, meta).await?;
        tracing::info!(run_id = %state.run_id(), seq = record.seq, "run finished");
        Ok(Executed::Outcome(run_outcome))
    }

    /// Commits a run's final metadata with its buffered entries.
    async fn record_end(&self, state: &mut WorkflowState, mut meta: RunMeta) -> Result<(), RunError> {
        // A completion the guest saw last rides in this commit (the last
        // step and the end cost one commit); entries already sent on their
        // own must be durable first, or the end could land without them.
        state.settle().await?;
        meta.updated_ms = now_ms();
        state.meta = meta.clone();
        let ended = meta.status.is_final();
        let mut batch = state.take_pending();
        batch.extend(self.parent_writes(&meta));
        if ended {
            batch.extend(state.disarm_writes());
        }
        let parent = meta.parent.clone().filter(|_| ended);
        let (promote, next) = self.release_slot(&meta).await?;
        batch.push(Write::PutRun(meta));
        batch.extend(promote);
        self.inner.store.commit(batch).await?;
        self.wake_bucket(next).await;
        if ended {
            // Work still in flight for an ended run has no one to report to.
            state.abandon_work();
        }
        if let Some(parent) = parent {
            self.wake(&parent.run_id);
        }
        Ok(())
    }

    /// The guest stopped with an error: a divergence, a host stop, or a trap.
    async fn stopped(&self, state: &mut WorkflowState, error: wasmtime::Error) -> Result<Executed, RunError> {
        if let Some(answer) = state.answer.take() {
            return Ok(Executed::Answered(answer));
        }
        if let Some(reason) = state.unanswered.take() {
            return Ok(Executed::Unanswered(reason));
        }
        if let Some(mut divergence) = state.divergence.take() {
            divergence.backtrace = error.downcast_ref::<WasmBacktrace>().and_then(short_backtrace);
            return self.diverged(state, divergence).await;
        }
        if state.reached_end {
            return Ok(Executed::ReachedEnd);
        }
        if state.evicted {
            return Ok(Executed::Evicted);
        }
        if let Some(input) = state.continue_with.take() {
            if state.mode != Mode::Live {
                return Ok(Executed::Continued);
            }
            return self.continued(state, input).await;
        }
        if let Some(reason) = state.terminated.take() {
            return self.terminated(state, reason).await;
        }
        if let Some(stop) = state.stop.take() {
            return match stop {
                RunError::Contract { .. } => self.fail(state, stop).await,
                other => Err(other),
            };
        }
        let failure = self.classify(state, &error);
        let run_id = state.run_id().to_owned();
        self.fail(state, RunError::Trapped { run_id, failure }).await
    }

    fn classify(&self, state: &WorkflowState, error: &wasmtime::Error) -> Failure {
        let limits = self.inner.sandbox.limits();
        let backtrace = error.downcast_ref::<WasmBacktrace>().and_then(short_backtrace).unwrap_or_default();
        if state.runaway {
            Failure::new(
                "runaway",
                format!(
                    "the workflow computed for over {} ms without calling the host (an infinite loop?); workflow code must only orchestrate, move heavy work into an activity{backtrace}",
                    limits.step_budget_ms
                ),
            )
        } else if state.limits.memory_denied {
            Failure::new(
                "out-of-memory",
                format!(
                    "the workflow tried to use more than its memory limit of {} MiB{backtrace}",
                    limits.max_memory_bytes >> 20
                ),
            )
        } else if let Some(Trap::StackOverflow) = error.downcast_ref::<Trap>() {
            Failure::new(
                "stack-overflow",
                format!(
                    "the workflow overflowed its {} KiB stack (unbounded recursion?){backtrace}",
                    limits.max_wasm_stack >> 10
                ),
            )
        } else if let Some(Trap::MemoryOutOfBounds) = error.downcast_ref::<Trap>() {
            Failure::new(
                "trap",
                format!("the workflow trapped: out-of-bounds memory access (Rust and C guests also end this way when deep recursion overflows their stack in linear memory){backtrace}"),
            )
        } else if let Some(trap) = error.downcast_ref::<Trap>() {
            Failure::new(
                "trap",
                format!(
                    "the workflow trapped: {trap} (a panic in Rust code ends this way; see the run's log){backtrace}"
                ),
            )
        } else {
            Failure::new("trap", format!("the workflow failed: {error:#}"))
        }
    }

    /// Marks a live run failed (not journaled: traps are terminal for this
    /// attempt, never events replay must reproduce).
    async fn fail(&self, state: &mut WorkflowState, error: RunError) -> Result<Executed, RunError> {
        let failure = match &error {
            RunError::Trapped { failure, .. }
            | RunError::Contract { failure, .. }
            | RunError::Refused { failure, .. } => failure.clone(),
            other => Failure::new("error", other.to_string()),
        };
        match state.mode {
            Mode::Live => {
                tracing::warn!(run_id = %state.run_id(), kind = %failure.kind, "run failed: {}", failure.message)
            }
            _ => {
                tracing::debug!(run_id = %state.run_id(), kind = %failure.kind, "a scratch replay failed: {}", failure.message)
            }
        }
        if state.mode == Mode::Live {
            let mut meta = state.meta.clone();
            meta.status = RunStatus::Failed;
            meta.failure = Some(failure);
            // Entries of the failing call are dropped; a completion the
            // guest had seen is kept.
            if !state.settle().await? {
                state.take_pending();
            }
            self.record_end(state, meta).await?;
        }
        Err(error)
    }

    /// Ends this generation of a run and starts the next with `input`, in
    /// one transaction: the journal moves to history, signals not consumed
    /// yet carry over.
    async fn continued(&self, state: &mut WorkflowState, input: String) -> Result<Executed, RunError> {
        let mut meta = state.meta.clone();
        meta.generation += 1;
        let (fresh, mut start) = self.new_run(&meta.workflow, &meta.component_sha256, &input, &meta.id, meta.version);
        if let Entry::Started { seed, .. } = &mut start.entry {
            *seed = format!("{:032x}", super::derive_seed(&format!("{}#{}", meta.id, meta.generation)));
        }
        meta.input = input;
        meta.updated_ms = fresh.updated_ms;
        state.settle().await?;
        // The next generation numbers its handles afresh: this one's work
        // stops now, whether or not the commit lands (if it does not, the
        // run is rebuilt by replay, which restarts what is still pending).
        // Work that finishes anyway reports under this generation, and is
        // dropped.
        state.abandon_work();
        let mut batch = state.take_pending();
        batch.push(Write::ContinueAsNew { meta: Box::new(meta.clone()), start: Box::new(start) });
        self.inner.store.commit(batch).await?;
        tracing::info!(run_id = %meta.id, generation = meta.generation, "continued as new");
        state.meta = meta;
        Ok(Executed::Continued)
    }

    /// Stops a live run for good at the request of an operator.
    async fn terminated(&self, state: &mut WorkflowState, reason: String) -> Result<Executed, RunError> {
        let failure = Failure::new("terminated", reason.clone());
        state.append(Entry::Terminated { reason });
        let mut meta = state.meta.clone();
        meta.status = RunStatus::Terminated;
        meta.failure = Some(failure.clone());
        // Recording the end abandoned the run's work.
        self.record_end(state, meta).await?;
        Err(RunError::Terminated { run_id: state.run_id().to_owned(), failure })
    }

    /// Parks a live run as diverged; nothing is added to its journal.
    async fn diverged(&self, state: &mut WorkflowState, divergence: Divergence) -> Result<Executed, RunError> {
        let run_id = state.run_id().to_owned();
        // A query asked of a diverged run finds the divergence again: it
        // is not a new one.
        if state.mode != Mode::Query {
            self.inner.metrics.divergences.fetch_add(1, Ordering::Relaxed);
        }
        if state.mode == Mode::Live {
            let mut meta = state.meta.clone();
            meta.status = RunStatus::Diverged;
            meta.failure = Some(Failure {
                kind: "divergence".into(),
                message: divergence.to_string(),
                details: serde_json::to_string(&divergence).ok(),
            });
            if !state.settle().await? {
                state.take_pending();
            }
            self.record_end(state, meta).await?;
        }
        Err(RunError::Diverged { run_id, divergence })
    }

    /// The driver is done with the run (it ended, was evicted or stopped):
    /// stop its mailbox, and keep whatever raced into it.
    async fn leave_memory(&self, run_id: &str, state: Option<WorkflowState>, result: &Result<Executed, RunError>) {
        let scheduler = &self.inner.scheduler;
        let mut state = state;
        let mailbox = state.as_mut().and_then(|s| s.take_mailbox());
        let ended = state.as_ref().is_some_and(|s| s.meta.status != RunStatus::Running);
        if let Some(state) = state.as_mut() {
            // An activity still held here belongs to a run that stopped
            // without its end being recorded (a store error): it still
            // runs, and reports to the store. (A recorded end or
            // continue-as-new dropped it.)
            state.release_inline();
        }
        if let Some(meta) = state.as_ref().map(|s| &s.meta).filter(|_| ended) {
            let version = meta.version.map(|v| v.to_string()).unwrap_or_default();
            let status = meta.status.as_str();
            if matches!(status, "completed" | "failed" | "terminated") {
                self.inner.metrics.runs_ended.inc(&[&meta.workflow, &version, status]);
            }
        }
        drop(state);
        scheduler.release(run_id, true);
        if matches!(result, Ok(Executed::Evicted)) {
            scheduler.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        if ended {
            scheduler.counters.finished.fetch_add(1, Ordering::Relaxed);
            scheduler.ends.ended(run_id);
        }
        let Some(mut mailbox) = mailbox else { return };
        mailbox.close();
        let mut wake = false;
        while let Ok(event) = mailbox.try_recv() {
            match event {
                Event::Completion { generation, handle, completion } => {
                    let target = super::work::Target { run_id: run_id.to_owned(), generation, handle };
                    self.persist_completion(&target, completion, None).await
                }
                Event::Nudge => wake = true,
                Event::Evict => {}
                Event::Terminate { reason } => {
                    if let Err(e) = self.terminate(run_id, &reason).await {
                        tracing::debug!(run_id, error = %e, "terminate after leaving memory");
                    }
                }
            }
        }
        if wake && !ended && matches!(result, Ok(Executed::Evicted)) {
            self.wake(run_id);
        }
    }
}

/// The first frames of a guest backtrace: enough to find the spot, short
/// enough for a status line. None when no frame has a function name (a
/// stripped build): `<unknown>!<wasm function 3>` tells a reader nothing.
fn short_backtrace(backtrace: &WasmBacktrace) -> Option<String> {
    if !backtrace.frames().iter().any(|frame| frame.func_name().is_some()) {
        return None;
    }
    let text = backtrace.to_string();
    let mut lines: Vec<&str> = text.lines().take(12).collect();
    if text.lines().count() > lines.len() {
        lines.push("    ...");
    }
    Some(format!("\n{}", lines.join("\n")))
}
