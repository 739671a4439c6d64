//! The run driver: instantiate a run's component, replay its journal, and
//! continue live (or, in check mode, stop where the journal ends).

use super::errors::RunError;
use super::host::{Mode, StateParts, WorkflowState};
use super::{now_ms, Runtime};
use crate::journal::{Divergence, Entry, Failure, Record};
use crate::sandbox::LoadedComponent;
use crate::store::{RunMeta, RunStatus, Write};
use serde::Serialize;
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

/// The runaway-code trap.
#[derive(Debug, thiserror::Error)]
#[error("the workflow ran past its step budget without calling the host")]
struct Runaway;

enum Executed {
    Outcome(RunOutcome),
    ReachedEnd,
}

impl Runtime {
    /// Drives a run to its end: replays its journal, then continues live.
    /// A run that already ended returns its outcome without executing.
    pub async fn drive(&self, run_id: &str) -> Result<RunOutcome, RunError> {
        let meta = self
            .inner
            .store
            .run(run_id)?
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        match meta.status {
            RunStatus::Completed => {
                return Ok(RunOutcome::Completed {
                    result: meta.result.unwrap_or_else(|| "null".into()),
                })
            }
            RunStatus::Failed => {
                let failure = meta
                    .failure
                    .unwrap_or_else(|| Failure::new("failed", "the run failed"));
                let journal = self.inner.store.journal(run_id)?;
                return match journal.last().map(|r| &r.entry) {
                    Some(Entry::Failed { .. }) => Ok(RunOutcome::Failed { failure }),
                    _ => Err(RunError::Trapped {
                        run_id: meta.id,
                        failure,
                    }),
                };
            }
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
                return Err(RunError::Diverged {
                    run_id: meta.id,
                    divergence,
                });
            }
            RunStatus::Running => {}
        }
        let component = self
            .inner
            .components
            .load_stored(&meta.component_sha256)
            .await?;
        match self.execute(meta, component, Mode::Live).await? {
            Executed::Outcome(outcome) => Ok(outcome),
            Executed::ReachedEnd => unreachable!("live runs do not stop at the end of the journal"),
        }
    }

    /// Re-executes a run from its journal in a scratch sandbox, with its own
    /// component or `with`, writing nothing and starting nothing. Succeeds
    /// when every journaled call is reproduced.
    pub async fn replay(
        &self,
        run_id: &str,
        with: Option<LoadedComponent>,
    ) -> Result<ReplayReport, RunError> {
        let meta = self
            .inner
            .store
            .run(run_id)?
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        let component = match with {
            Some(c) => c,
            None => {
                self.inner
                    .components
                    .load_stored(&meta.component_sha256)
                    .await?
            }
        };
        let entries = self
            .inner
            .store
            .journal(run_id)?
            .iter()
            .filter(|r| r.seq > 0)
            .count() as u64;
        let finished = match self.execute(meta, component, Mode::Check).await? {
            Executed::Outcome(_) => true,
            Executed::ReachedEnd => false,
        };
        Ok(ReplayReport {
            run_id: run_id.to_owned(),
            entries,
            finished,
        })
    }

    async fn execute(
        &self,
        meta: RunMeta,
        component: LoadedComponent,
        mode: Mode,
    ) -> Result<Executed, RunError> {
        let span = tracing::info_span!("run", run_id = %meta.id, workflow = %meta.workflow, ?mode);
        self.execute_inner(meta, component, mode)
            .instrument(span)
            .await
    }

    async fn execute_inner(
        &self,
        meta: RunMeta,
        component: LoadedComponent,
        mode: Mode,
    ) -> Result<Executed, RunError> {
        let run_id = meta.id.clone();
        let records = self.inner.store.journal(&run_id)?;
        let Some(Record {
            at_ms: start_ms,
            entry: Entry::Started { seed, input, .. },
            ..
        }) = records.first().cloned()
        else {
            return Err(RunError::NoStartEntry(run_id));
        };
        let seed =
            u128::from_str_radix(&seed, 16).map_err(|_| RunError::NoStartEntry(run_id.clone()))?;
        let pre = self
            .prepare(&component)
            .map_err(|e| RunError::Instantiate {
                run_id: run_id.clone(),
                reason: e.to_string(),
            })?;
        let sandbox = &self.inner.sandbox;
        let state = WorkflowState::new(StateParts {
            meta,
            mode,
            records,
            seed,
            start_ms,
            limits: sandbox.limits().guest_limits(),
            store: self.inner.store.clone(),
            activities: self.inner.activities.clone(),
        });
        let mut store = wasmtime::Store::new(sandbox.engine(), state);
        store.limiter(|s| &mut s.limits);
        let ticks = sandbox.limits().budget_ticks();
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_callback(move |mut cx| {
            let s = cx.data_mut();
            if s.host_calls != s.host_calls_at_check {
                s.host_calls_at_check = s.host_calls;
                Ok(UpdateDeadline::Yield(ticks))
            } else {
                s.runaway = true;
                Err(Runaway.into())
            }
        });

        let result = match pre.instantiate_async(&mut store).await {
            Ok(workflow) => workflow.call_run(&mut store, &input).await,
            Err(e) => Err(e),
        };
        let outcome = match result {
            Ok(Ok(json)) => {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
                    let failure = Failure::new(
                        "contract-violation",
                        format!("the workflow returned invalid JSON: {e}"),
                    );
                    return self
                        .fail(
                            store.into_data(),
                            mode,
                            RunError::Contract { run_id, failure },
                        )
                        .await;
                }
                Entry::Completed { result: json }
            }
            Ok(Err(f)) => Entry::Failed {
                failure: Failure {
                    kind: f.kind,
                    message: f.message,
                    details: f.details,
                },
            },
            Err(e) => return self.stopped(store.into_data(), mode, e).await,
        };
        self.finish(store.into_data(), mode, outcome).await
    }

    /// The workflow returned: check it against the journal, then record it.
    async fn finish(
        &self,
        mut state: WorkflowState,
        mode: Mode,
        outcome: Entry,
    ) -> Result<Executed, RunError> {
        if let Err(divergence) = state.cursor().finish(&outcome) {
            return self.diverged(state, mode, divergence).await;
        }
        let run_outcome = match &outcome {
            Entry::Completed { result } => RunOutcome::Completed {
                result: result.clone(),
            },
            Entry::Failed { failure } => RunOutcome::Failed {
                failure: failure.clone(),
            },
            _ => unreachable!("finish takes an end entry"),
        };
        if mode == Mode::Check || state.cursor().terminal().is_some() {
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
        meta.updated_ms = now_ms();
        let mut batch = state.take_pending();
        batch.push(Write::PutRun(meta));
        self.inner.store.commit(batch).await?;
        tracing::info!(run_id = %state.run_id(), seq = record.seq, "run finished");
        Ok(Executed::Outcome(run_outcome))
    }

    /// The guest stopped with an error: a divergence, a host stop, or a trap.
    async fn stopped(
        &self,
        mut state: WorkflowState,
        mode: Mode,
        error: wasmtime::Error,
    ) -> Result<Executed, RunError> {
        if let Some(mut divergence) = state.divergence.take() {
            divergence.backtrace = error.downcast_ref::<WasmBacktrace>().map(short_backtrace);
            return self.diverged(state, mode, divergence).await;
        }
        if state.reached_end {
            return Ok(Executed::ReachedEnd);
        }
        if let Some(stop) = state.stop.take() {
            return match stop {
                RunError::Contract { .. } => self.fail(state, mode, stop).await,
                other => Err(other),
            };
        }
        let failure = self.classify(&state, &error);
        let run_id = state.run_id().to_owned();
        self.fail(state, mode, RunError::Trapped { run_id, failure })
            .await
    }

    fn classify(&self, state: &WorkflowState, error: &wasmtime::Error) -> Failure {
        let limits = self.inner.sandbox.limits();
        let backtrace = error
            .downcast_ref::<WasmBacktrace>()
            .map(short_backtrace)
            .unwrap_or_default();
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
            Failure::new("trap", format!("the workflow trapped: {trap} (a panic in Rust code ends this way; see the run's log){backtrace}"))
        } else {
            Failure::new("trap", format!("the workflow failed: {error:#}"))
        }
    }

    /// Marks a live run failed (not journaled: traps are terminal for this
    /// attempt, never events replay must reproduce).
    async fn fail(
        &self,
        state: WorkflowState,
        mode: Mode,
        error: RunError,
    ) -> Result<Executed, RunError> {
        let failure = match &error {
            RunError::Trapped { failure, .. } | RunError::Contract { failure, .. } => {
                failure.clone()
            }
            other => Failure::new("error", other.to_string()),
        };
        tracing::warn!(run_id = %state.run_id(), kind = %failure.kind, "run failed: {}", failure.message);
        if mode == Mode::Live {
            let mut meta = state.meta.clone();
            meta.status = RunStatus::Failed;
            meta.failure = Some(failure);
            meta.updated_ms = now_ms();
            self.inner.store.commit(vec![Write::PutRun(meta)]).await?;
        }
        Err(error)
    }

    /// Parks a live run as diverged; nothing is added to its journal.
    async fn diverged(
        &self,
        state: WorkflowState,
        mode: Mode,
        divergence: Divergence,
    ) -> Result<Executed, RunError> {
        let run_id = state.run_id().to_owned();
        if mode == Mode::Live {
            let mut meta = state.meta.clone();
            meta.status = RunStatus::Diverged;
            meta.failure = Some(Failure {
                kind: "divergence".into(),
                message: divergence.to_string(),
                details: serde_json::to_string(&divergence).ok(),
            });
            meta.updated_ms = now_ms();
            self.inner.store.commit(vec![Write::PutRun(meta)]).await?;
        }
        Err(RunError::Diverged { run_id, divergence })
    }
}

/// The first frames of a guest backtrace: enough to find the spot, short
/// enough for a status line.
fn short_backtrace(backtrace: &WasmBacktrace) -> String {
    let text = backtrace.to_string();
    let mut lines: Vec<&str> = text.lines().take(12).collect();
    if text.lines().count() > lines.len() {
        lines.push("    ...");
    }
    format!("\n{}", lines.join("\n"))
}
