//! The host side of the `runtime` interface: every call a workflow makes is
//! replayed from the journal or, once the journal is exhausted, performed
//! live and journaled.
//!
//! Durability rule (DESIGN.md): information from outside the run (an
//! activity result, a fired timer) reaches the guest only once the entry
//! carrying it is durable. Entries the journal itself determines (new
//! handles, `patched` markers, awaits of completions already stored) are
//! buffered and ride in the next commit, so a step costs one commit.

use super::errors::RunError;
use crate::activity::{split_name, ActivityRunner, ActivityTask};
use crate::journal::{
    ActivityOptions, Completion, Divergence, Entry, Failure, HostCall, JournalCursor, Record,
    Reply, RetryPolicy, Step,
};
use crate::sandbox::bindings::workflow::cairn::workflow::{runtime, types};
use crate::sandbox::{GuestLimits, WorkflowClock};
use crate::store::{RunMeta, Store, StoredCompletion, Write};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How long a run blocked on in-process activities holds its buffered
/// entries back, hoping to commit them with the activity's result in one
/// transaction. Past it, they are flushed on their own.
const COMMIT_WINDOW: Duration = Duration::from_millis(20);

/// A journal longer than this makes every replay slow: the run is flagged
/// in the log so its author can use `continue-as-new`.
const JOURNAL_WARNING_ENTRIES: u64 = 10_000;

/// Whether the run may act on the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Replay, then continue live: activities run, entries are written.
    Live,
    /// Replay only, in a scratch sandbox: nothing is written or started;
    /// reaching the end of the journal stops the run.
    Check,
}

/// A completion that arrived on the run's mailbox.
#[derive(Debug)]
pub(crate) struct Event {
    pub handle: u32,
    pub completion: Completion,
}

#[derive(Debug, Clone)]
enum Operation {
    Activity {
        name: String,
        input: String,
        options: ActivityOptions,
    },
    Timer {
        due_ms: u64,
    },
    Signal,
}

#[derive(Debug)]
enum HandleState {
    /// Not complete. `task` is the in-process work (activity or timer).
    Pending { task: Option<AbortHandle> },
    /// Complete and not consumed yet. `stored` says the completion is in
    /// the completions table (so consuming it must delete the row).
    Ready {
        completion: Completion,
        arrival: u64,
        stored: bool,
    },
    /// Consumed by an await; awaiting again returns the same completion.
    Consumed(Completion),
}

#[derive(Debug)]
struct Handle {
    operation: Operation,
    state: HandleState,
}

/// Where a completion handed to an awaiting guest came from.
enum Source {
    /// Already durable (stored) or determined by the journal (cancelled).
    Known { stored: bool },
    /// Just arrived from outside: its entry must be durable before the guest sees it.
    Fresh,
}

/// The data of a workflow's wasmtime `Store`.
pub struct WorkflowState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: GuestLimits,
    pub(crate) meta: RunMeta,
    mode: Mode,
    cursor: JournalCursor,
    next_seq: u64,
    clock: WorkflowClock,
    replaying: Arc<AtomicBool>,
    live: bool,
    rng: ChaCha20Rng,
    handles: BTreeMap<u32, Handle>,
    next_arrival: u64,
    pending: Vec<Write>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    store: Store,
    activities: ActivityRunner,
    /// Host calls so far; the epoch callback checks it moved.
    pub(crate) host_calls: u64,
    pub(crate) host_calls_at_check: u64,
    /// Why the guest was stopped, when the host stopped it.
    pub(crate) divergence: Option<Divergence>,
    pub(crate) stop: Option<RunError>,
    pub(crate) runaway: bool,
    /// Check mode: the code went past the end of the journal.
    pub(crate) reached_end: bool,
}

impl WasiView for WorkflowState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The trap raised when the host stops a guest; the reason is in the state.
#[derive(Debug, thiserror::Error)]
#[error("stopped by the host")]
pub(crate) struct Stopped;

pub(crate) struct StateParts {
    pub meta: RunMeta,
    pub mode: Mode,
    pub records: Vec<Record>,
    pub seed: u128,
    pub start_ms: u64,
    pub limits: GuestLimits,
    pub store: Store,
    pub activities: ActivityRunner,
}

impl WorkflowState {
    pub(crate) fn new(parts: StateParts) -> Self {
        let StateParts {
            meta,
            mode,
            records,
            seed,
            start_ms,
            limits,
            store,
            activities,
        } = parts;
        let clock = WorkflowClock::new(start_ms);
        let replaying = Arc::new(AtomicBool::new(true));
        let cursor = JournalCursor::new(records);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        WorkflowState {
            wasi: crate::sandbox::workflow_wasi(&meta.id, seed, &clock, &replaying),
            table: ResourceTable::new(),
            limits,
            next_seq: cursor.next_seq(),
            cursor,
            meta,
            mode,
            clock,
            replaying,
            live: false,
            rng: crate::sandbox::seeded_rng(seed, 0),
            handles: BTreeMap::new(),
            next_arrival: 1,
            pending: Vec::new(),
            events_tx,
            events_rx,
            store,
            activities,
            host_calls: 0,
            host_calls_at_check: 0,
            divergence: None,
            stop: None,
            runaway: false,
            reached_end: false,
        }
    }

    pub(crate) fn run_id(&self) -> &str {
        &self.meta.id
    }

    pub(crate) fn cursor(&self) -> &JournalCursor {
        &self.cursor
    }

    /// Entries buffered but not yet submitted.
    pub(crate) fn take_pending(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.pending)
    }

    /// Appends a live entry and returns it.
    pub(crate) fn append(&mut self, entry: Entry) -> Record {
        let at_ms = super::now_ms().max(self.clock.now_ms());
        self.clock.set(at_ms);
        let record = Record {
            seq: self.next_seq,
            at_ms,
            entry,
        };
        self.next_seq += 1;
        if record.seq == JOURNAL_WARNING_ENTRIES {
            tracing::warn!(
                run_id = %self.meta.id,
                seq = record.seq,
                "the journal of this run passed {JOURNAL_WARNING_ENTRIES} entries; every replay re-executes all of them. Keep histories short with continue-as-new"
            );
        }
        if self.mode == Mode::Live {
            self.pending.push(Write::Append {
                run_id: self.meta.id.clone(),
                record: record.clone(),
            });
        }
        record
    }

    fn stop_with(&mut self, error: RunError) -> wasmtime::Error {
        self.stop = Some(error);
        Stopped.into()
    }

    fn diverge(&mut self, divergence: Divergence) -> wasmtime::Error {
        tracing::warn!(run_id = %self.meta.id, seq = divergence.seq, %divergence, "replay diverged");
        self.divergence = Some(divergence);
        Stopped.into()
    }

    fn contract(&mut self, message: String) -> wasmtime::Error {
        let run_id = self.meta.id.clone();
        self.stop_with(RunError::Contract {
            run_id,
            failure: Failure::new("contract-violation", message),
        })
    }

    /// Replays `call` or reports that it is live. Live in check mode stops.
    fn step(&mut self, call: &HostCall) -> wasmtime::Result<Option<Reply>> {
        self.host_calls += 1;
        match self.cursor.next(call) {
            Ok(Step::Replay { seq, at_ms, reply }) => {
                tracing::trace!(run_id = %self.meta.id, seq, %call, "replayed");
                self.clock.set(at_ms);
                Ok(Some(reply))
            }
            Ok(Step::Live) => {
                self.go_live()?;
                Ok(None)
            }
            Err(divergence) => Err(self.diverge(divergence)),
        }
    }

    /// The journal is exhausted: from here on calls are new. Picks up
    /// completions that arrived while the run was not resident and restarts
    /// the work of handles still pending.
    fn go_live(&mut self) -> wasmtime::Result<()> {
        if self.live {
            return Ok(());
        }
        if self.mode == Mode::Check {
            self.reached_end = true;
            return Err(Stopped.into());
        }
        self.live = true;
        self.replaying.store(false, Ordering::Relaxed);
        tracing::debug!(run_id = %self.meta.id, seq = self.next_seq, "replay done; live");
        let stored = match self.store.completions(&self.meta.id) {
            Ok(rows) => rows,
            Err(e) => return Err(self.stop_with(e.into())),
        };
        for (
            handle,
            StoredCompletion {
                completion,
                arrival,
            },
        ) in stored
        {
            self.next_arrival = self.next_arrival.max(arrival + 1);
            match self.handles.get_mut(&handle) {
                Some(h) if matches!(h.state, HandleState::Pending { .. }) => {
                    h.state = HandleState::Ready {
                        completion,
                        arrival,
                        stored: true,
                    };
                }
                // Consumed or cancelled before the crash: a stale row.
                _ => self.pending.push(Write::DeleteCompletion {
                    run_id: self.meta.id.clone(),
                    handle,
                }),
            }
        }
        let to_start: Vec<u32> = self
            .handles
            .iter()
            .filter(|(_, h)| matches!(h.state, HandleState::Pending { task: None }))
            .map(|(id, _)| *id)
            .collect();
        for handle in to_start {
            self.start_work(handle)?;
        }
        Ok(())
    }

    /// Starts the in-process work behind a pending handle.
    fn start_work(&mut self, handle: u32) -> wasmtime::Result<()> {
        let Some(h) = self.handles.get(&handle) else {
            return Ok(());
        };
        let tx = self.events_tx.clone();
        let task = match h.operation.clone() {
            Operation::Activity {
                name,
                input,
                options,
            } => {
                let component = split_name(&name)
                    .map(|(c, _)| c.to_owned())
                    .unwrap_or_default();
                if !component.is_empty() && !self.activities.has(&component) {
                    let error = RunError::UnknownActivity {
                        run_id: self.meta.id.clone(),
                        activity: name,
                        component,
                        known: self.activities.names().join(", "),
                    };
                    return Err(self.stop_with(error));
                }
                let runner = self.activities.clone();
                let task = ActivityTask {
                    run_id: self.meta.id.clone(),
                    handle,
                    name,
                    input,
                    options,
                };
                tokio::spawn(async move {
                    let completion = runner.execute(task).await;
                    let _ = tx.send(Event { handle, completion });
                })
            }
            Operation::Timer { due_ms } => tokio::spawn(async move {
                let delay = due_ms.saturating_sub(super::now_ms());
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = tx.send(Event {
                    handle,
                    completion: Completion::Ok("null".into()),
                });
            }),
            Operation::Signal => return Ok(()),
        };
        if let Some(h) = self.handles.get_mut(&handle) {
            h.state = HandleState::Pending {
                task: Some(task.abort_handle()),
            };
        }
        Ok(())
    }

    fn new_handle(
        &mut self,
        reply: Option<Reply>,
        call: HostCall,
        operation: Operation,
    ) -> wasmtime::Result<u32> {
        let handle = match reply {
            Some(Reply::Handle { handle }) => handle,
            Some(other) => return Err(self.contract(format!("journal replied {other} to {call}"))),
            None => {
                let Ok(handle) = u32::try_from(self.next_seq) else {
                    return Err(self.contract(
                        "the journal is too long for more handles; use continue-as-new".into(),
                    ));
                };
                self.append(Entry::Call {
                    call,
                    reply: Reply::Handle { handle },
                });
                handle
            }
        };
        self.handles.insert(
            handle,
            Handle {
                operation,
                state: HandleState::Pending { task: None },
            },
        );
        Ok(handle)
    }

    /// The ready handle among `wanted` that completed first.
    fn pick_ready(&self, wanted: &[u32]) -> Option<u32> {
        wanted
            .iter()
            .filter_map(|h| match self.handles.get(h).map(|h| &h.state) {
                Some(HandleState::Ready { arrival, .. }) => Some((*arrival, *h)),
                _ => None,
            })
            .min()
            .map(|(_, h)| h)
    }

    fn is_inflight_activity(&self, handle: u32) -> bool {
        self.handles.get(&handle).is_some_and(|h| {
            matches!(h.operation, Operation::Activity { .. })
                && matches!(h.state, HandleState::Pending { task: Some(_) })
        })
    }

    /// Blocks (live) until one of `wanted` is complete.
    async fn wait_for(&mut self, wanted: &[u32]) -> wasmtime::Result<(u32, Completion, Source)> {
        loop {
            if let Some(handle) = self.pick_ready(wanted) {
                let Some(h) = self.handles.get_mut(&handle) else {
                    unreachable!("picked from handles")
                };
                if let HandleState::Ready {
                    completion, stored, ..
                } = &h.state
                {
                    return Ok((
                        handle,
                        completion.clone(),
                        Source::Known { stored: *stored },
                    ));
                }
            }
            if let Some(done) =
                wanted
                    .iter()
                    .find_map(|h| match self.handles.get(h).map(|h| &h.state) {
                        Some(HandleState::Consumed(c)) => Some((*h, c.clone())),
                        _ => None,
                    })
            {
                return Ok((done.0, done.1, Source::Known { stored: false }));
            }
            let event = self.next_event(wanted).await;
            let Some(Event { handle, completion }) = event else {
                return Err(self.contract("the run's mailbox closed".into()));
            };
            let Some(h) = self.handles.get(&handle) else {
                continue;
            };
            if !matches!(h.state, HandleState::Pending { .. }) {
                continue; // cancelled meanwhile
            }
            if let Operation::Timer { due_ms } = h.operation {
                self.pending.push(Write::DeleteTimer {
                    due_ms,
                    run_id: self.meta.id.clone(),
                    handle,
                });
            }
            if wanted.contains(&handle) {
                if let Some(h) = self.handles.get_mut(&handle) {
                    h.state = HandleState::Ready {
                        completion: completion.clone(),
                        arrival: 0,
                        stored: false,
                    };
                }
                return Ok((handle, completion, Source::Fresh));
            }
            // Not what the guest waits for now: make it durable, keep it.
            let arrival = self.next_arrival;
            self.next_arrival += 1;
            let mut batch = self.take_pending();
            batch.push(Write::PutCompletion {
                run_id: self.meta.id.clone(),
                handle,
                completion: StoredCompletion {
                    completion: completion.clone(),
                    arrival,
                },
            });
            if let Err(e) = self.store.commit(batch).await {
                return Err(self.stop_with(e.into()));
            }
            if let Some(h) = self.handles.get_mut(&handle) {
                h.state = HandleState::Ready {
                    completion,
                    arrival,
                    stored: true,
                };
            }
        }
    }

    async fn next_event(&mut self, wanted: &[u32]) -> Option<Event> {
        if !self.pending.is_empty() {
            // Hold buffered entries briefly when an in-process activity may
            // finish soon: they then share its commit.
            if wanted.iter().any(|h| self.is_inflight_activity(*h)) {
                if let Ok(event) = tokio::time::timeout(COMMIT_WINDOW, self.events_rx.recv()).await
                {
                    return event;
                }
            }
            let batch = self.take_pending();
            drop(self.store.writer().submit(batch));
        }
        self.events_rx.recv().await
    }

    /// Journals the consumption of `handle` and returns its completion.
    async fn consume(
        &mut self,
        call: HostCall,
        wanted: &[u32],
    ) -> wasmtime::Result<(u32, Completion)> {
        let (handle, completion, source) = self.wait_for(wanted).await?;
        self.append(Entry::Call {
            call,
            reply: Reply::Completed {
                handle,
                completion: completion.clone(),
            },
        });
        match source {
            Source::Known { stored: true } => {
                self.pending.push(Write::DeleteCompletion {
                    run_id: self.meta.id.clone(),
                    handle,
                });
            }
            Source::Known { stored: false } => {}
            Source::Fresh => {
                let batch = self.take_pending();
                if let Err(e) = self.store.commit(batch).await {
                    return Err(self.stop_with(e.into()));
                }
            }
        }
        if let Some(h) = self.handles.get_mut(&handle) {
            h.state = HandleState::Consumed(completion.clone());
        }
        Ok((handle, completion))
    }

    fn mark_consumed(&mut self, handle: u32, completion: &Completion) {
        if let Some(h) = self.handles.get_mut(&handle) {
            h.state = HandleState::Consumed(completion.clone());
        }
    }

    fn check_handles(&mut self, handles: &[u32]) -> wasmtime::Result<()> {
        if handles.is_empty() {
            return Err(self.contract("await-any was called with no handles".into()));
        }
        if let Some(unknown) = handles.iter().find(|h| !self.handles.contains_key(h)) {
            return Err(self.contract(format!(
                "awaited handle #{unknown}, which this run never created"
            )));
        }
        Ok(())
    }

    fn check_json(&mut self, what: &str, json: &str) -> wasmtime::Result<()> {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.contract(format!("{what} is not valid JSON: {e}"))),
        }
    }
}

impl Drop for WorkflowState {
    fn drop(&mut self) {
        for h in self.handles.values() {
            if let HandleState::Pending { task: Some(task) } = &h.state {
                task.abort();
            }
        }
    }
}

fn to_wit(completion: Completion) -> types::Completion {
    match completion {
        Completion::Ok(json) => types::Completion::Ok(json),
        Completion::Err(f) => types::Completion::Err(types::Failure {
            kind: f.kind,
            message: f.message,
            details: f.details,
        }),
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
        self.check_json("the activity input", &input)?;
        let options = from_wit_options(options);
        let call = HostCall::ScheduleActivity {
            name: name.clone(),
            input: input.clone(),
            options: options.clone(),
        };
        let reply = self.step(&call)?;
        let live = reply.is_none();
        let handle = self.new_handle(
            reply,
            call,
            Operation::Activity {
                name,
                input,
                options,
            },
        )?;
        if live {
            // In-process activities may start before their entry commits:
            // the idempotency key is the same on replay (DESIGN.md).
            self.start_work(handle)?;
        }
        Ok(handle)
    }

    async fn start_timer(&mut self, ms: u64) -> wasmtime::Result<u32> {
        let call = HostCall::StartTimer { ms };
        let reply = self.step(&call)?;
        let live = reply.is_none();
        // The timer is due `ms` after the entry's workflow time; `step` and
        // `append` both move the clock to that time.
        let placeholder = Operation::Timer { due_ms: 0 };
        let handle = self.new_handle(reply, call, placeholder)?;
        let due_ms = self.clock.now_ms().saturating_add(ms);
        if let Some(h) = self.handles.get_mut(&handle) {
            h.operation = Operation::Timer { due_ms };
        }
        if live {
            self.pending.push(Write::PutTimer {
                due_ms,
                run_id: self.meta.id.clone(),
                handle,
            });
            self.start_work(handle)?;
        }
        Ok(handle)
    }

    async fn start_child(&mut self, _workflow: String, _input: String) -> wasmtime::Result<u32> {
        let run_id = self.meta.id.clone();
        Err(self.stop_with(RunError::Unsupported {
            run_id,
            call: "start-child",
        }))
    }

    async fn wait_signal(&mut self, name: String) -> wasmtime::Result<u32> {
        let call = HostCall::WaitSignal { name };
        let reply = self.step(&call)?;
        self.new_handle(reply, call, Operation::Signal)
    }

    async fn await_(&mut self, h: u32) -> wasmtime::Result<types::Completion> {
        self.check_handles(&[h])?;
        let call = HostCall::Await { handle: h };
        match self.step(&call)? {
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
        let call = HostCall::AwaitAny {
            handles: handles.clone(),
        };
        match self.step(&call)? {
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
        let live = self.step(&call)?.is_none();
        if live {
            self.append(Entry::Call {
                call,
                reply: Reply::Unit,
            });
        }
        let run_id = self.meta.id.clone();
        let Some(handle) = self.handles.get_mut(&h) else {
            return Ok(());
        };
        match &handle.state {
            HandleState::Consumed(_) => return Ok(()),
            HandleState::Pending { task } => {
                if let Some(task) = task {
                    task.abort();
                }
                if let (true, Operation::Timer { due_ms }) = (live, &handle.operation) {
                    self.pending.push(Write::DeleteTimer {
                        due_ms: *due_ms,
                        run_id,
                        handle: h,
                    });
                }
            }
            HandleState::Ready { stored, .. } => {
                if live && *stored {
                    self.pending
                        .push(Write::DeleteCompletion { run_id, handle: h });
                }
            }
        }
        if let Some(handle) = self.handles.get_mut(&h) {
            // Arrival 0: a cancelled handle is "complete" before anything
            // that arrives from outside, on every replay alike.
            handle.state = HandleState::Ready {
                completion: Completion::Err(Failure::cancelled()),
                arrival: 0,
                stored: false,
            };
        }
        Ok(())
    }

    async fn patched(&mut self, change_id: String) -> wasmtime::Result<bool> {
        self.host_calls += 1;
        match self.cursor.patched(&change_id) {
            Some((at_ms, present)) => {
                if present {
                    self.clock.set(at_ms);
                }
                Ok(present)
            }
            None => {
                self.go_live()?;
                self.append(Entry::Call {
                    call: HostCall::Patched { change_id },
                    reply: Reply::Bool { value: true },
                });
                Ok(true)
            }
        }
    }

    async fn set_custom_status(&mut self, status: String) -> wasmtime::Result<()> {
        self.check_json("the custom status", &status)?;
        let call = HostCall::SetCustomStatus {
            status: status.clone(),
        };
        if self.step(&call)?.is_none() {
            self.append(Entry::Call {
                call,
                reply: Reply::Unit,
            });
            self.meta.custom_status = Some(status);
            self.meta.updated_ms = super::now_ms();
            self.pending.push(Write::PutRun(self.meta.clone()));
        } else {
            self.meta.custom_status = Some(status);
        }
        Ok(())
    }

    async fn continue_as_new(&mut self, _input: String) -> wasmtime::Result<()> {
        let run_id = self.meta.id.clone();
        Err(self.stop_with(RunError::Unsupported {
            run_id,
            call: "continue-as-new",
        }))
    }

    async fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        if self.replaying.load(Ordering::Relaxed) {
            return Ok(());
        }
        let run_id = self.meta.id.as_str();
        let seq = self.next_seq;
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
