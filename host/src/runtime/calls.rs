//! The `runtime` interface of the WIT contract, as the host implements it:
//! each call is replayed from the journal or performed live and journaled.

use super::state::{Mode, Operation, Stopped, WorkflowState};
use crate::journal::{ActivityOptions, Completion, Entry, Failure, HostCall, Reply, RetryPolicy};
use crate::sandbox::bindings::workflow::cairn::workflow::{runtime, types};
use crate::store::Write;
use rand_chacha::rand_core::RngCore;
use std::sync::atomic::Ordering;

fn to_wit(completion: Completion) -> types::Completion {
    match completion {
        Completion::Ok(json) => types::Completion::Ok(json),
        Completion::Err(f) => {
            types::Completion::Err(types::Failure { kind: f.kind, message: f.message, details: f.details })
        }
    }
}

fn from_wit(completion: types::Completion) -> Completion {
    match completion {
        types::Completion::Ok(json) => Completion::Ok(json),
        types::Completion::Err(f) => Completion::Err(Failure { kind: f.kind, message: f.message, details: f.details }),
    }
}

fn from_wit_options(o: types::ActivityOptions) -> ActivityOptions {
    ActivityOptions {
        timeout_ms: o.timeout_ms,
        retry: RetryPolicy {
            max_attempts: o.retry.max_attempts,
            initial_interval_ms: o.retry.initial_interval_ms,
            backoff_coefficient: o.retry.backoff_coefficient,
            max_interval_ms: o.retry.max_interval_ms,
            non_retryable_kinds: o.retry.non_retryable_kinds,
        },
    }
}

impl types::Host for WorkflowState {}

impl runtime::Host for WorkflowState {
    async fn run_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.meta.id.clone())
    }

    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clock.now_ms())
    }

    async fn random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.rng.next_u64())
    }

    async fn schedule_activity(
        &mut self,
        name: String,
        input: String,
        options: types::ActivityOptions,
    ) -> wasmtime::Result<u32> {
        let call = HostCall::ScheduleActivity { name, input, options: from_wit_options(options) };
        let reply = self.step(&call).await?;
        let live = reply.is_none();
        // A replayed call equals its journaled one, which was checked when
        // it was new: only new calls are checked.
        if let (true, HostCall::ScheduleActivity { name, input, options }) = (live, &call) {
            self.check_json("the activity input", input)?;
            let coefficient = options.retry.backoff_coefficient;
            if !coefficient.is_finite() || coefficient < 1.0 {
                let name = name.clone();
                return Err(self.contract(format!(
                    "the retry policy of {name} has backoff-coefficient {coefficient}; it must be a finite number of at least 1.0"
                )));
            }
        }
        let handle = self.new_handle(reply, call, |call| match call {
            HostCall::ScheduleActivity { name, input, options } => Operation::Activity { name, input, options },
            _ => unreachable!("the call is a schedule-activity"),
        })?;
        if live && self.acts() {
            // In-process activities may start before their entry commits:
            // the idempotency key is the same on replay (DESIGN.md).
            self.start_work(handle, true).await?;
        }
        Ok(handle)
    }

    async fn start_timer(&mut self, ms: u64) -> wasmtime::Result<u32> {
        let call = HostCall::StartTimer { ms };
        let reply = self.step(&call).await?;
        let live = reply.is_none();
        let handle = self.new_handle(reply, call, |_| Operation::Timer { due_ms: 0 })?;
        // Due `ms` after the entry's workflow time; replaying or appending
        // the entry moved the clock to that time.
        let due_ms = self.clock.now_ms().saturating_add(ms);
        if let Some(h) = self.handles.get_mut(&handle) {
            h.operation = Operation::Timer { due_ms };
        }
        if live && self.acts() {
            self.pending.push(Write::PutTimer { due_ms, run_id: self.meta.id.clone(), handle });
            self.start_work(handle, true).await?;
        }
        Ok(handle)
    }

    async fn start_child(&mut self, workflow: String, input: String) -> wasmtime::Result<u32> {
        self.check_json("the child's input", &input)?;
        let call = HostCall::StartChild { workflow: workflow.clone(), input: input.clone() };
        let reply = self.step(&call).await?;
        let live = reply.is_none();
        let handle = self.new_handle(reply, call, |_| Operation::Child { run_id: String::new() })?;
        let child_id = self.child_id(handle);
        if let Some(h) = self.handles.get_mut(&handle) {
            h.operation = Operation::Child { run_id: child_id };
        }
        if live && self.acts() {
            self.start_child_run(handle, &workflow, &input).await?;
        }
        Ok(handle)
    }

    async fn wait_signal(&mut self, name: String) -> wasmtime::Result<u32> {
        let call = HostCall::WaitSignal { name };
        let reply = self.step(&call).await?;
        let handle = self.new_handle(reply, call, |call| match call {
            HostCall::WaitSignal { name } => Operation::Signal { name },
            _ => unreachable!("the call is a wait-signal"),
        })?;
        self.match_signals().await?;
        Ok(handle)
    }

    async fn await_(&mut self, h: u32) -> wasmtime::Result<types::Completion> {
        self.check_handles(&[h])?;
        let call = HostCall::Await { handle: h };
        match self.step(&call).await? {
            Some(Reply::Completed { handle, completion }) if handle == h => {
                self.mark_consumed(handle, &completion);
                Ok(to_wit(completion))
            }
            Some(other) => Err(self.contract(format!("journal replied {other} to {call}"))),
            None => Ok(to_wit(self.consume(call, &[h]).await?.1)),
        }
    }

    async fn await_any(&mut self, handles: Vec<u32>) -> wasmtime::Result<(u32, types::Completion)> {
        self.check_handles(&handles)?;
        let call = HostCall::AwaitAny { handles: handles.clone() };
        match self.step(&call).await? {
            Some(Reply::Completed { handle, completion }) if handles.contains(&handle) => {
                self.mark_consumed(handle, &completion);
                Ok((handle, to_wit(completion)))
            }
            Some(other) => Err(self.contract(format!("journal replied {other} to {call}"))),
            None => {
                let (handle, completion) = self.consume(call, &handles).await?;
                Ok((handle, to_wit(completion)))
            }
        }
    }

    async fn cancel(&mut self, h: u32) -> wasmtime::Result<()> {
        self.check_handles(&[h])?;
        let call = HostCall::Cancel { handle: h };
        let live = self.step(&call).await?.is_none();
        if live {
            self.append(Entry::Call { call, reply: Reply::Unit });
        }
        self.cancel_handle(h, live && self.acts());
        Ok(())
    }

    async fn patched(&mut self, change_id: String) -> wasmtime::Result<bool> {
        WorkflowState::patched(self, change_id).await
    }

    async fn set_custom_status(&mut self, status: String) -> wasmtime::Result<()> {
        self.check_json("the custom status", &status)?;
        let call = HostCall::SetCustomStatus { status: status.clone() };
        let live = self.step(&call).await?.is_none();
        self.meta.custom_status = Some(status);
        if live && self.acts() {
            self.append(Entry::Call { call, reply: Reply::Unit });
            self.meta.updated_ms = super::now_ms();
            self.pending.push(Write::PutRun(self.meta.clone()));
        }
        Ok(())
    }

    async fn upsert_search_attributes(&mut self, attributes: String) -> wasmtime::Result<()> {
        let call = HostCall::UpsertSearchAttributes { attributes: attributes.clone() };
        let live = self.step(&call).await?.is_none();
        if let Err(reason) = crate::search::upsert(&mut self.meta.search, &attributes) {
            return Err(wasmtime::Error::msg(format!("upsert-search-attributes: {reason}")));
        }
        if live && self.acts() {
            self.append(Entry::Call { call, reply: Reply::Unit });
            self.meta.updated_ms = super::now_ms();
            self.pending.push(Write::PutRun(self.meta.clone()));
        }
        Ok(())
    }

    async fn complete_update(&mut self, id: String, outcome: types::Completion) -> wasmtime::Result<()> {
        let outcome = from_wit(outcome);
        if let Completion::Ok(json) = &outcome {
            self.check_json("the result of an update", json)?;
        }
        let call = HostCall::CompleteUpdate { id, outcome };
        let live = self.step(&call).await?.is_none();
        if live {
            self.append(Entry::Call { call, reply: Reply::Unit });
            if self.acts() {
                // The client is answered from the journal: durable first.
                self.commit_now().await?;
                self.rt.update_completed(&self.meta.id);
            }
        }
        Ok(())
    }

    async fn answer_query(&mut self, answer: types::Completion) -> wasmtime::Result<()> {
        if self.mode != Mode::Query || self.question.is_some() {
            return Err(self.contract(
                "answer-query was called, but no query or update validation was delivered to this run; only an SDK answering a `$query` or `$validate-update` completion may call it".into(),
            ));
        }
        let answer = from_wit(answer);
        if let Completion::Ok(json) = &answer {
            if let Err(e) = crate::journal::check_json(json) {
                self.unanswered = Some(format!("its answer is not valid JSON: {e}"));
                return Err(Stopped.into());
            }
        }
        self.answer = Some(answer);
        Err(Stopped.into())
    }

    async fn continue_as_new(&mut self, input: String) -> wasmtime::Result<()> {
        self.check_json("the input of continue-as-new", &input)?;
        self.continue_as_new(input).await
    }

    async fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        if self.replaying.load(Ordering::Relaxed) {
            return Ok(());
        }
        let run_id = self.meta.id.as_str();
        let seq = self.next_seq();
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "cairn::guest", run_id, seq, "{message}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "cairn::guest", run_id, seq, "{message}")
            }
            types::LogLevel::Info => {
                tracing::info!(target: "cairn::guest", run_id, seq, "{message}")
            }
            types::LogLevel::Warn => {
                tracing::warn!(target: "cairn::guest", run_id, seq, "{message}")
            }
            types::LogLevel::Error => {
                tracing::error!(target: "cairn::guest", run_id, seq, "{message}")
            }
        }
        Ok(())
    }
}
