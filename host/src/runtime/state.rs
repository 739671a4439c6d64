//! A run's state while it executes: the replay cursor, its handles and the
//! entries buffered for the next commit.
//!
//! Every call a workflow makes is replayed from the journal or, once the
//! journal is exhausted, performed live and journaled. The calls themselves
//! are in `calls.rs`; how a live run waits for completions is in
//! `waiting.rs`.
//!
//! Durability rule (DESIGN.md): information from outside the run (an
//! activity result, a fired timer, a signal) is durable before anything the
//! guest does with it can be seen outside the run. An in-process result is
//! handed over at once and its entry sealed at the guest's next journaled
//! call, or with the run's end (see [`Unsealed`]); other news is durable
//! before the guest sees it. Entries the journal itself determines (new
//! handles, `patched` markers, awaits of completions already stored) are
//! buffered and ride in the next commit, so a step costs one commit.

use super::errors::RunError;
use super::work::{Produce, Target, Work};
use super::Runtime;
use crate::journal::{
    ActivityOptions, Completion, Divergence, Entry, Failure, HostCall, JournalCursor, Record, Reply, Step,
};
use crate::sandbox::{GuestLimits, WorkflowClock};
use crate::store::{CommitError, RunMeta, StoreError, StoredCompletion, Write};
use rand_chacha::ChaCha20Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A journal longer than this makes every replay slow: the run is flagged
/// in the log so its author can use `continue-as-new`.
const JOURNAL_WARNING_ENTRIES: u64 = 10_000;

/// The most entries one generation of a run may have. A workflow calling the
/// host in an endless loop fails here, alone, instead of growing the host's
/// memory and disk without bound.
const MAX_JOURNAL_ENTRIES: u64 = 100_000;

/// The signal name `cancel` requests use: buffered like a signal, so it is
/// durable, ordered and survives eviction; consumed by the run's next await.
pub(crate) const CANCEL_SIGNAL: &str = "$cancel";

/// Whether the run may act on the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Replay, then continue live: activities run, entries are written.
    Live,
    /// Replay only, in a scratch sandbox: nothing is written or started;
    /// reaching the end of the journal stops the run.
    Check,
    /// Replay in a scratch sandbox, then go on past the journal's end
    /// without touching anything (new handles, no work, no writes) until
    /// the guest waits: there it is asked its [`super::query::Question`].
    Query,
}

/// Something for a resident run's mailbox.
#[derive(Debug)]
pub(crate) enum Event {
    /// An in-process activity or timer of generation `generation`
    /// completed.
    Completion { generation: u32, handle: u32, completion: Completion },
    /// The store has new input for the run (a signal, a stored completion,
    /// a cancel request): look.
    Nudge,
    /// Leave memory now (another run needs the slot).
    Evict,
    /// Stop at once.
    Terminate { reason: String },
}

#[derive(Debug, Clone)]
pub(crate) enum Operation {
    Activity { name: String, input: String, options: ActivityOptions },
    Timer { due_ms: u64 },
    Signal { name: String },
    Child { run_id: String },
}

/// What to delete once a buffered completion or signal is consumed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cleanup {
    Completion(u32),
    Signal(u64),
}

impl Cleanup {
    pub(super) fn write(self, run_id: &str) -> Write {
        match self {
            Cleanup::Completion(handle) => Write::DeleteCompletion { run_id: run_id.to_owned(), handle },
            Cleanup::Signal(seq) => Write::DeleteSignal { run_id: run_id.to_owned(), seq },
        }
    }
}

#[derive(Debug)]
pub(crate) enum HandleState {
    /// Not complete.
    Pending,
    /// Complete and not consumed yet; `cleanup` is the write that removes
    /// its buffered source once it is consumed.
    Ready { completion: Completion, arrival: u64, cleanup: Option<Cleanup> },
    /// Consumed by an await; awaiting again returns the same completion.
    Consumed(Completion),
}

#[derive(Debug)]
pub(crate) struct Handle {
    pub operation: Operation,
    pub state: HandleState,
}

/// A run's handles by number, in creation order.
///
/// A handle's number is the seq of the entry that created it, so handles
/// arrive in increasing order and a sorted `Vec` holds them: creating one
/// is a push, and a lookup is a binary search over contiguous memory. A
/// replay of a long journal creates thousands, one per journaled call that
/// starts something; a `BTreeMap` cost several percent of it.
#[derive(Debug, Default)]
pub(crate) struct Handles(Vec<(u32, Handle)>);

impl Handles {
    fn position(&self, handle: u32) -> Result<usize, usize> {
        // The newest handle is the one most often looked up (an await
        // right after the call that created it).
        match self.0.last() {
            Some((last, _)) if *last == handle => Ok(self.0.len() - 1),
            Some((last, _)) if *last < handle => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&handle, |(h, _)| *h),
        }
    }

    pub fn get(&self, handle: &u32) -> Option<&Handle> {
        self.position(*handle).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, handle: &u32) -> Option<&mut Handle> {
        self.position(*handle).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, handle: &u32) -> bool {
        self.position(*handle).is_ok()
    }

    /// Adds `handle`, or replaces the handle of that number.
    pub fn insert(&mut self, handle: u32, value: Handle) {
        match self.position(handle) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (handle, value)),
        }
    }

    /// In increasing order of number.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &Handle)> {
        self.0.iter().map(|(h, v)| (h, v))
    }

    /// In increasing order of number.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u32, &mut Handle)> {
        self.0.iter_mut().map(|(h, v)| (&*h, v))
    }
}

/// The activity a run started last, not yet handed to a task of its own:
/// the run polls it itself while it awaits it, which spares the two thread
/// hand-offs a spawned task costs (one to start it, one to deliver its
/// outcome). It moves to its own task as soon as the run does anything else.
pub(crate) struct Inline {
    pub handle: u32,
    pub produce: Produce,
}

/// Whether the guest has seen a completion whose entry is not durable yet.
///
/// An in-process activity's result reaches the guest as soon as it is
/// journaled in memory. Its entry is sealed (made durable) before the
/// guest's next journaled call takes effect, or in the same commit as the
/// run's end, so the last step and the end cost one commit, not two. Until
/// then the guest can only compute, read its clock and randomness, and log:
/// nothing it learnt leaves the run. A crash meanwhile loses nothing seen
/// outside; the activity runs again under the same idempotency key, as after
/// a crash just before its result arrived.
#[derive(Debug, Default)]
pub(crate) enum Unsealed {
    /// Everything the guest has seen is durable (or journal-determined).
    #[default]
    No,
    /// The buffered entries hold a completion the guest has seen.
    Held,
    /// They were sent to the writer while the guest computed (an epoch
    /// tick); this resolves once they are durable.
    Submitted(oneshot::Receiver<Result<(), CommitError>>),
}

/// The data of a workflow's wasmtime `Store`.
pub struct WorkflowState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(crate) limits: GuestLimits,
    pub(crate) meta: RunMeta,
    pub(crate) mode: Mode,
    pub(super) cursor: JournalCursor,
    pub(super) next_seq: u64,
    pub(crate) clock: WorkflowClock,
    pub(crate) replaying: Arc<AtomicBool>,
    pub(super) live: bool,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) handles: Handles,
    pub(crate) pending: Vec<Write>,
    pub(crate) unsealed: Unsealed,
    /// Buffered entries sent to the writer without waiting while the run
    /// blocked (journal-determined ones, which need not be durable yet):
    /// their outcome is checked before the run's next commit, so a refused
    /// batch stops the run instead of leaving a gap in its journal.
    pub(super) flushed: Vec<oneshot::Receiver<Result<(), CommitError>>>,
    /// The first of those known to have failed (seen by a check that could
    /// not wait), reported by the next [`WorkflowState::settle`].
    pub(super) flush_failed: Option<CommitError>,
    pub(super) events_rx: Option<mpsc::UnboundedReceiver<Event>>,
    pub(super) inline: Option<Inline>,
    /// Signal seqs already matched to a handle (their delete rides later).
    pub(super) assigned_signals: HashSet<u64>,
    /// A buffered cancel request, delivered to the current or next await.
    pub(super) cancel_request: Option<u64>,
    /// Evict after this long blocked; `None` keeps the run resident.
    pub(super) idle: Option<Duration>,
    pub(crate) rt: Runtime,
    /// Host calls so far; the epoch callback checks it moved.
    pub(crate) host_calls: u64,
    pub(crate) host_calls_at_check: u64,
    /// Epoch ticks the guest computed since `host_calls` last moved.
    pub(crate) quiet_ticks: u64,
    /// Why the guest was stopped, when the host stopped it.
    pub(crate) divergence: Option<Divergence>,
    pub(crate) stop: Option<RunError>,
    pub(crate) runaway: bool,
    /// Check mode: the code went past the end of the journal.
    pub(crate) reached_end: bool,
    pub(crate) evicted: bool,
    pub(crate) terminated: Option<String>,
    /// The input of the next generation, after `continue-as-new`.
    pub(crate) continue_with: Option<String>,
    /// Query mode: what to ask the guest where it waits, once.
    pub(crate) question: Option<super::query::Question>,
    /// Query mode: the guest's answer.
    pub(crate) answer: Option<Completion>,
    /// Query mode: why the guest gave no answer.
    pub(crate) unanswered: Option<String>,
}

impl WasiView for WorkflowState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
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
    pub rt: Runtime,
    pub events: Option<mpsc::UnboundedReceiver<Event>>,
    pub idle: Option<Duration>,
    pub question: Option<super::query::Question>,
}

impl WorkflowState {
    pub(crate) fn new(parts: StateParts) -> Self {
        let StateParts { meta, mode, records, seed, start_ms, limits, rt, events, idle, question } = parts;
        let clock = WorkflowClock::new(start_ms);
        let cursor = JournalCursor::new(records);
        // Output is suppressed while journaled calls remain to be replayed
        // (it was shown the first time); a fresh run prints from the start.
        let replaying = Arc::new(AtomicBool::new(mode != Mode::Live || cursor.replaying()));
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
            handles: Handles::default(),
            pending: Vec::new(),
            unsealed: Unsealed::No,
            flushed: Vec::new(),
            flush_failed: None,
            events_rx: events,
            inline: None,
            assigned_signals: HashSet::new(),
            cancel_request: None,
            idle,
            rt,
            host_calls: 0,
            host_calls_at_check: 0,
            quiet_ticks: 0,
            divergence: None,
            stop: None,
            runaway: false,
            reached_end: false,
            evicted: false,
            terminated: None,
            continue_with: None,
            question,
            answer: None,
            unanswered: None,
        }
    }

    /// Whether calls may act on the world: start work, buffer writes,
    /// read the store. Not in a scratch sandbox.
    pub(crate) fn acts(&self) -> bool {
        self.mode == Mode::Live
    }

    pub(crate) fn run_id(&self) -> &str {
        &self.meta.id
    }

    pub(crate) fn cursor(&self) -> &JournalCursor {
        &self.cursor
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The mailbox, handed back when the run leaves memory so events that
    /// raced in can be kept.
    pub(crate) fn take_mailbox(&mut self) -> Option<mpsc::UnboundedReceiver<Event>> {
        self.events_rx.take()
    }

    /// Entries buffered but not yet submitted.
    pub(crate) fn take_pending(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.pending)
    }

    /// Appends a live entry and returns it.
    pub(crate) fn append(&mut self, entry: Entry) -> Record {
        let at_ms = super::now_ms().max(self.clock.now_ms());
        self.clock.set(at_ms);
        let record = Record { seq: self.next_seq, at_ms, entry };
        self.next_seq += 1;
        if record.seq == JOURNAL_WARNING_ENTRIES {
            tracing::warn!(
                run_id = %self.meta.id,
                seq = record.seq,
                "the journal of this run passed {JOURNAL_WARNING_ENTRIES} entries; every replay re-executes all of them. Keep histories short with continue-as-new"
            );
        }
        if self.mode == Mode::Live {
            if let Entry::Call { call, reply } = &record.entry {
                self.rt.counters().host_calls.inc(&[call.kind()]);
                // One span per journaled host call, inside the run's span.
                tracing::debug_span!("host_call", run_id = %self.meta.id, seq = record.seq, kind = call.kind())
                    .in_scope(|| tracing::debug!(?reply, "journaled"));
            }
            self.pending.push(Write::Append { run_id: self.meta.id.clone(), record: record.clone() });
        }
        record
    }

    pub(crate) fn stop_with(&mut self, error: RunError) -> wasmtime::Error {
        self.stop = Some(error);
        Stopped.into()
    }

    fn diverge(&mut self, divergence: Divergence) -> wasmtime::Error {
        if self.mode == Mode::Live {
            tracing::warn!(run_id = %self.meta.id, seq = divergence.seq, %divergence, "replay diverged; the run is parked");
        } else {
            tracing::debug!(run_id = %self.meta.id, seq = divergence.seq, %divergence, "replay check diverged");
        }
        self.divergence = Some(divergence);
        Stopped.into()
    }

    pub(crate) fn contract(&mut self, message: String) -> wasmtime::Error {
        let run_id = self.meta.id.clone();
        self.stop_with(RunError::Contract { run_id, failure: Failure::new("contract-violation", message) })
    }

    /// Makes the entries of a completion the guest has seen durable, before
    /// its next journaled call can act on it.
    ///
    /// Batches flushed earlier are waited for only when something is
    /// committed now: a step must not wait for a commit it does not depend
    /// on (journal-determined entries need not be durable before the guest
    /// goes on), but no batch may land after one that was refused.
    pub(crate) async fn seal(&mut self) -> wasmtime::Result<()> {
        let sealed = match self.settle_seen().await {
            Ok(false) => Ok(()),
            Ok(true) => match self.settle_flushed().await {
                Ok(()) => {
                    let batch = self.take_pending();
                    self.rt.store().commit(batch).await.map_err(RunError::from)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        sealed.map_err(|e| self.stop_with(e))
    }

    /// Waits for every batch flushed without waiting; the first failure
    /// (also one seen before by a check that could not wait).
    async fn wait_flushed(&mut self) -> Result<(), CommitError> {
        let mut failed = self.flush_failed.take();
        for ack in std::mem::take(&mut self.flushed) {
            if let Err(e) = crate::store::durable(ack).await {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// [`WorkflowState::wait_flushed`], as the run's error.
    async fn settle_flushed(&mut self) -> Result<(), RunError> {
        self.wait_flushed().await.map_err(|e| StoreError::from(e).into())
    }

    /// Waits for the entries of a completion the guest has seen that were
    /// sent on an epoch tick, and reports whether the buffer still holds
    /// such a completion (the caller must then commit the buffer).
    async fn settle_unsealed(&mut self) -> Result<bool, RunError> {
        match std::mem::take(&mut self.unsealed) {
            Unsealed::No => Ok(false),
            Unsealed::Held => Ok(true),
            Unsealed::Submitted(ack) => {
                crate::store::durable(ack).await.map_err(StoreError::from)?;
                Ok(false)
            }
        }
    }

    /// [`WorkflowState::settle`] for the completion the guest has seen
    /// only: flushed batches are not waited for, though one already known
    /// to have failed is reported.
    async fn settle_seen(&mut self) -> Result<bool, RunError> {
        if !self.flushes_confirmed() {
            if let Some(e) = self.flush_failed.take() {
                self.flushed.clear();
                return Err(StoreError::from(e).into());
            }
        }
        self.settle_unsealed().await
    }

    /// Sends the buffered entries to the writer without waiting for them
    /// (the run is about to block), once every earlier flush is known to
    /// have landed: if one was refused, this one landing would leave a gap
    /// in the journal. The refusal is then kept for the next settle, and
    /// the entries stay buffered.
    pub(super) async fn flush_pending(&mut self) {
        match self.wait_flushed().await {
            Ok(()) => {
                let batch = self.take_pending();
                self.flushed.push(self.rt.store().submit(batch));
            }
            Err(e) => self.flush_failed = Some(e),
        }
    }

    /// Waits for entries already sent to the writer (flushed while the run
    /// blocked, or unsealed on an epoch tick), and reports whether the
    /// buffer holds a completion the guest has seen. If it does, the caller
    /// must commit the buffer, with whatever it commits next (the run's
    /// end): dropping it would lose a step.
    pub(crate) async fn settle(&mut self) -> Result<bool, RunError> {
        // Every batch sent is waited for, also after one failed: none may
        // still be in flight when the caller commits the next.
        let flushed = self.settle_flushed().await;
        let held = self.settle_unsealed().await;
        flushed?;
        held
    }

    /// An epoch tick while the guest computes: sends entries it has seen to
    /// the writer without waiting, so a long computation does not leave
    /// them undurable.
    pub(crate) fn submit_unsealed(&mut self) {
        // Not past an earlier batch whose outcome is unknown: if that one
        // was refused, this one landing would leave a gap in the journal.
        if matches!(self.unsealed, Unsealed::Held) && self.flushes_confirmed() {
            let batch = self.take_pending();
            self.unsealed = Unsealed::Submitted(self.rt.store().submit(batch));
        }
    }

    /// Whether every batch flushed without waiting is known to be durable
    /// (forgetting those that are); a failure is kept for `settle`.
    fn flushes_confirmed(&mut self) -> bool {
        use tokio::sync::oneshot::error::TryRecvError;
        let mut failed = None;
        self.flushed.retain_mut(|ack| match ack.try_recv() {
            Ok(Ok(())) => false,
            Ok(Err(e)) => {
                failed.get_or_insert(e);
                false
            }
            Err(TryRecvError::Empty) => true,
            Err(TryRecvError::Closed) => {
                failed.get_or_insert(CommitError::Stopped);
                false
            }
        });
        if let Some(e) = failed {
            self.flush_failed.get_or_insert(e);
        }
        self.flushed.is_empty() && self.flush_failed.is_none()
    }

    /// Replays `call` or reports that it is live. Live in check mode stops.
    pub(crate) async fn step(&mut self, call: &HostCall) -> wasmtime::Result<Option<Reply>> {
        self.seal().await?;
        self.host_calls += 1;
        if !matches!(call, HostCall::Await { .. } | HostCall::AwaitAny { .. }) {
            self.release_inline();
        }
        match self.cursor.next(call) {
            Ok(Step::Replay { seq, at_ms, reply }) => {
                tracing::trace!(run_id = %self.meta.id, seq, %call, "replayed");
                self.clock.set(at_ms);
                Ok(Some(reply))
            }
            Ok(Step::Live) => {
                self.go_live().await?;
                self.check_journal_room()?;
                Ok(None)
            }
            Err(divergence) => Err(self.diverge(divergence)),
        }
    }

    /// `patched`: replay the marker, report its absence, or record it live.
    pub(crate) async fn patched(&mut self, change_id: String) -> wasmtime::Result<bool> {
        self.seal().await?;
        self.host_calls += 1;
        self.release_inline();
        match self.cursor.patched(&change_id) {
            Some((at_ms, present)) => {
                if present {
                    self.clock.set(at_ms);
                }
                Ok(present)
            }
            None => {
                self.go_live().await?;
                self.check_journal_room()?;
                self.append(Entry::Call { call: HostCall::Patched { change_id }, reply: Reply::Bool { value: true } });
                Ok(true)
            }
        }
    }

    /// `continue-as-new`: ends this generation of the run. Its entry
    /// (`continued-as-new`) is written as the journal moves to history, so
    /// a current journal never holds one: on replay the call must come
    /// exactly where the journal ends, or (an earlier generation's journal,
    /// replayed offline) where that entry is, with the same input.
    pub(crate) async fn continue_as_new(&mut self, input: String) -> wasmtime::Result<()> {
        self.host_calls += 1;
        match self.cursor.continue_as_new(&input) {
            Err(divergence) => return Err(self.diverge(divergence)),
            // An earlier generation's journal (replayed offline) ends here,
            // with this input: reproduced.
            Ok(true) => {}
            Ok(false) => self.go_live().await?,
        }
        self.continue_with = Some(input);
        Err(Stopped.into())
    }

    fn check_journal_room(&mut self) -> wasmtime::Result<()> {
        if self.next_seq >= MAX_JOURNAL_ENTRIES {
            return Err(self.contract(format!(
                "the journal reached {MAX_JOURNAL_ENTRIES} entries; keep long-lived workflows short with continue-as-new"
            )));
        }
        Ok(())
    }

    /// Disarms the timers of handles still pending when the run ends.
    pub(crate) fn disarm_writes(&self) -> Vec<Write> {
        self.handles
            .iter()
            .filter(|(_, h)| matches!(h.state, HandleState::Pending))
            .filter_map(|(handle, h)| match h.operation {
                Operation::Timer { due_ms } => {
                    Some(Write::DeleteTimer { due_ms, run_id: self.meta.id.clone(), handle: *handle })
                }
                _ => None,
            })
            .collect()
    }

    /// The journal is exhausted: from here on calls are new. Picks up what
    /// arrived while the run was not resident and restarts the work of
    /// handles still pending.
    async fn go_live(&mut self) -> wasmtime::Result<()> {
        if self.live {
            return Ok(());
        }
        if self.mode == Mode::Check {
            self.reached_end = true;
            return Err(Stopped.into());
        }
        if self.mode == Mode::Query {
            // Past the end, nothing is replayed: calls get fresh answers
            // and touch nothing until the guest waits.
            self.live = true;
            return Ok(());
        }
        self.live = true;
        self.replaying.store(false, Ordering::Relaxed);
        tracing::debug!(run_id = %self.meta.id, seq = self.next_seq, "replay done; live");
        self.absorb_store(true).await?;
        let pending: Vec<u32> =
            self.handles.iter().filter(|(_, h)| matches!(h.state, HandleState::Pending)).map(|(id, _)| *id).collect();
        for handle in pending {
            self.start_work(handle, false).await?;
        }
        Ok(())
    }

    /// Takes what the store holds for this run: completions that arrived
    /// while it was not resident, signals, cancel requests. At go-live,
    /// rows for handles no longer pending are stale and deleted.
    pub(super) async fn absorb_store(&mut self, at_go_live: bool) -> wasmtime::Result<()> {
        let store = self.rt.store().clone();
        let completions = match store.completions(&self.meta.id).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.stop_with(e.into())),
        };
        // Every row is this generation's: the store refuses a completion
        // of a generation the run has left, and continue-as-new clears them.
        for (handle, StoredCompletion { completion, arrival, .. }) in completions {
            let cleanup = Cleanup::Completion(handle);
            match self.handles.get_mut(&handle) {
                Some(h) if matches!(h.state, HandleState::Pending) => {
                    h.state = HandleState::Ready { completion, arrival, cleanup: Some(cleanup) };
                }
                _ if at_go_live => self.pending.push(cleanup.write(&self.meta.id)),
                _ => {}
            }
        }
        let signals = match store.signals(&self.meta.id).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.stop_with(e.into())),
        };
        for (seq, signal) in signals {
            if self.assigned_signals.contains(&seq) {
                continue;
            }
            if signal.name == CANCEL_SIGNAL {
                if self.cancel_request.is_none() {
                    self.cancel_request = Some(seq);
                    self.assigned_signals.insert(seq);
                }
                continue;
            }
            let waiting = self.handles.iter_mut().find(|(_, h)| {
                matches!(&h.operation, Operation::Signal { name } if *name == signal.name)
                    && matches!(h.state, HandleState::Pending)
            });
            if let Some((_, h)) = waiting {
                h.state = HandleState::Ready {
                    completion: Completion::Ok(signal.payload),
                    arrival: seq,
                    cleanup: Some(Cleanup::Signal(seq)),
                };
                self.assigned_signals.insert(seq);
            }
        }
        Ok(())
    }

    /// The id of the child run started by `handle`: `<parent>:<handle>` in
    /// the parent's first generation, `<parent>:<generation>.<handle>` after
    /// it continued as new (handle numbers restart with each generation, so
    /// the generation keeps the ids of different generations' children
    /// apart; a first-generation id has no `.` after the parent's id).
    pub(crate) fn child_id(&self, handle: u32) -> String {
        match self.meta.generation {
            0 => format!("{}:{handle}", self.meta.id),
            g => format!("{}:{g}.{handle}", self.meta.id),
        }
    }

    /// Creates the child run of a live `start-child`: its metadata and
    /// start entry commit together with the parent's entry, and only then
    /// does the child start. A workflow that is not deployed completes the
    /// handle with a `workflow-not-found` failure, and an id another run
    /// already took (started by a client under that id) with
    /// `child-id-in-use`.
    pub(crate) async fn start_child_run(&mut self, handle: u32, workflow: &str, input: &str) -> wasmtime::Result<()> {
        let child_id = self.child_id(handle);
        let deployment = match self.rt.store().deployment(workflow).await {
            Ok(d) => d,
            Err(e) => return Err(self.stop_with(e.into())),
        };
        let deployment = deployment.filter(|d| d.kind == crate::store::ComponentKind::Workflow);
        // A child takes a slot of its workflow's shared bucket like any run.
        let limit = deployment.as_ref().and_then(|d| d.concurrency.as_ref()).and_then(|c| c.admission(""));
        let current = deployment.and_then(|d| d.current_version().cloned());
        let Some(version) = current else {
            let failure = Failure::new(
                "workflow-not-found",
                format!("no workflow named {workflow:?} is deployed (child workflows need `cairn serve` and `cairn deploy`)"),
            );
            self.fail_child(handle, failure);
            return Ok(());
        };
        // The start-child entry is new, so no earlier attempt of this call
        // committed: a run under this id is someone else's.
        match self.rt.store().run(&child_id).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                let failure = Failure::new(
                    "child-id-in-use",
                    format!("cannot start the child workflow {workflow:?}: its id {child_id} is taken by a run a client started under that id; child ids are the parent's id, ':', then the seq of the start-child call (after continue-as-new, the generation, '.' and the seq), so do not start runs under such ids yourself"),
                );
                self.fail_child(handle, failure);
                return Ok(());
            }
            Err(e) => return Err(self.stop_with(e.into())),
        }
        let (mut meta, start) = self.rt.new_run(workflow, &version.sha256, input, &child_id, Some(version.version));
        meta.parent = Some(crate::store::ParentLink {
            run_id: self.meta.id.clone(),
            handle,
            generation: Some(self.meta.generation),
        });
        // Whatever the guest has seen commits with the child (after what
        // was sent before): the child is outside the run.
        if let Err(e) = self.settle().await {
            return Err(self.stop_with(e));
        }
        let mut batch = self.take_pending();
        if limit.is_some() {
            meta.slot = Some(crate::store::Slot { key: String::new(), priority: 3 });
            meta.status = crate::store::RunStatus::Queued;
        }
        batch.push(Write::PutRun(meta));
        batch.push(Write::Append { run_id: child_id.clone(), record: start });
        if let Some(admission) = limit {
            batch.push(Write::Promote { workflow: workflow.to_owned(), key: String::new(), admission });
        }
        if let Err(e) = self.rt.store().commit(batch).await {
            return Err(self.stop_with(e.into()));
        }
        self.rt.wake(&child_id);
        if limit.is_some() {
            self.rt.wake_bucket(Some((workflow.to_owned(), String::new()))).await;
        }
        Ok(())
    }

    /// Commits what is buffered now, once what was sent before is durable.
    pub(crate) async fn commit_now(&mut self) -> wasmtime::Result<()> {
        if let Err(e) = self.settle().await {
            return Err(self.stop_with(e));
        }
        let batch = self.take_pending();
        if let Err(e) = self.rt.store().commit(batch).await {
            return Err(self.stop_with(e.into()));
        }
        Ok(())
    }

    /// Completes a `start-child` handle with `failure` (the child was never
    /// created); the completion rides in the next commit.
    fn fail_child(&mut self, handle: u32, failure: Failure) {
        let arrival = self.rt.next_arrival();
        let completion =
            StoredCompletion { completion: Completion::Err(failure), arrival, generation: Some(self.meta.generation) };
        self.pending.push(Write::PutCompletion {
            run_id: self.meta.id.clone(),
            handle,
            completion: completion.clone(),
        });
        if let Some(h) = self.handles.get_mut(&handle) {
            h.state = HandleState::Ready {
                completion: completion.completion,
                arrival,
                cleanup: Some(Cleanup::Completion(handle)),
            };
        }
    }

    /// A new wait-signal handle takes the oldest buffered signal of its name.
    pub(crate) async fn match_signals(&mut self) -> wasmtime::Result<()> {
        if self.live && self.acts() {
            self.absorb_store(false).await?;
        }
        Ok(())
    }

    /// Starts the in-process work behind a pending handle (once per
    /// process: work already running for it is left alone). `new` says the
    /// handle was just created live, so no attempt of it can have failed
    /// before and the store need not be asked.
    pub(crate) async fn start_work(&mut self, handle: u32, new: bool) -> wasmtime::Result<()> {
        let Some(h) = self.handles.get(&handle) else {
            return Ok(());
        };
        match h.operation.clone() {
            Operation::Activity { name, input, options } => {
                if let Some((component, _)) = crate::activity::split_name(&name) {
                    // Deployed on another host since this one looked.
                    if !self.rt.activities().has(component) {
                        let registry = crate::registry::Registry::new(self.rt.clone());
                        if let Err(e) = registry.refresh_activities().await {
                            tracing::warn!(error = %e, "could not look for newly deployed activity components");
                        }
                    }
                    if !self.rt.activities().has(component) {
                        let error = RunError::UnknownActivity {
                            run_id: self.meta.id.clone(),
                            activity: name.clone(),
                            component: component.to_owned(),
                            known: self.rt.activities().names().join(", "),
                        };
                        return Err(self.stop_with(error));
                    }
                }
                let first_attempt = match new {
                    true => 1,
                    false => match self.rt.store().attempts(&self.meta.id, handle).await {
                        Ok(failed) => failed + 1,
                        Err(e) => return Err(self.stop_with(e.into())),
                    },
                };
                let task = crate::activity::ActivityTask {
                    run_id: self.meta.id.clone(),
                    generation: self.meta.generation,
                    handle,
                    name,
                    input,
                    options,
                    first_attempt,
                };
                if new {
                    self.release_inline();
                    self.inline = Some(Inline { handle, produce: Work::activity(&self.rt, task) });
                } else {
                    self.rt.work().start_activity(&self.rt, task);
                }
            }
            Operation::Timer { due_ms } => self.rt.work().start_timer(&self.rt, self.target(handle), due_ms),
            // A child exists from the commit of its start-child entry on,
            // and reports its end to the parent's completions.
            Operation::Signal { .. } | Operation::Child { .. } => {}
        }
        Ok(())
    }

    /// Hands the activity the run polls itself to a task of its own: the
    /// run is about to do something other than await it (another host
    /// call, computation, leaving memory), and the activity must not wait.
    pub(crate) fn release_inline(&mut self) {
        if let Some(Inline { handle, produce }) = self.inline.take() {
            self.rt.work().spawn(&self.rt, self.target(handle), None, produce);
        }
    }

    /// What work for `handle` of this generation reports to.
    pub(crate) fn target(&self, handle: u32) -> Target {
        Target { run_id: self.meta.id.clone(), generation: self.meta.generation, handle }
    }

    /// Abandons the run's work in flight, spawned or held (its end or
    /// continue-as-new is recorded: no one is left to report to).
    pub(crate) fn abandon_work(&mut self) {
        self.rt.work().abort_run(&self.meta.id);
        self.inline = None;
    }

    /// The handle a call that creates one gets: its journaled reply, or
    /// (live) the next seq, journaled. `operation` makes the handle's
    /// operation from the call, which a replayed call moves into.
    pub(crate) fn new_handle(
        &mut self,
        reply: Option<Reply>,
        call: HostCall,
        operation: impl FnOnce(HostCall) -> Operation,
    ) -> wasmtime::Result<u32> {
        let (handle, operation) = match reply {
            Some(Reply::Handle { handle }) => (handle, operation(call)),
            Some(other) => return Err(self.contract(format!("journal replied {other} to {call}"))),
            None => {
                let Ok(handle) = u32::try_from(self.next_seq) else {
                    return Err(self.contract("the journal is too long for more handles; use continue-as-new".into()));
                };
                let operation = operation(call.clone());
                self.append(Entry::Call { call, reply: Reply::Handle { handle } });
                (handle, operation)
            }
        };
        self.handles.insert(handle, Handle { operation, state: HandleState::Pending });
        Ok(handle)
    }

    pub(crate) fn check_handles(&mut self, handles: &[u32]) -> wasmtime::Result<()> {
        if handles.is_empty() {
            return Err(self.contract("await-any was called with no handles".into()));
        }
        if let Some(unknown) = handles.iter().find(|h| !self.handles.contains_key(h)) {
            return Err(self.contract(format!("awaited handle #{unknown}, which this run never created")));
        }
        Ok(())
    }

    pub(crate) fn check_json(&mut self, what: &str, json: &str) -> wasmtime::Result<()> {
        if json.len() > crate::journal::MAX_PAYLOAD_BYTES {
            return Err(self.contract(format!(
                "{what} is {} bytes, over the limit of {} bytes for one journaled payload; store big data elsewhere and pass a reference",
                json.len(),
                crate::journal::MAX_PAYLOAD_BYTES
            )));
        }
        match crate::journal::check_json(json) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.contract(format!("{what} is not valid JSON: {e}"))),
        }
    }

    /// `cancel(h)` of one handle: abandon its work; it completes cancelled.
    pub(crate) fn cancel_handle(&mut self, h: u32, live: bool) {
        let run_id = self.meta.id.clone();
        let target = self.target(h);
        let Some(handle) = self.handles.get_mut(&h) else {
            return;
        };
        match &mut handle.state {
            HandleState::Consumed(_) => return,
            HandleState::Pending => {
                if let (true, Operation::Child { run_id: child }) = (live, &handle.operation) {
                    let (rt, child) = (self.rt.clone(), child.clone());
                    tokio::spawn(async move {
                        if let Err(e) = rt.cancel_run(&child).await {
                            tracing::debug!(run_id = %child, error = %e, "cancelling a child run");
                        }
                    });
                }
                if live {
                    self.rt.work().abort(&target);
                    if let Operation::Timer { due_ms } = handle.operation {
                        self.pending.push(Write::DeleteTimer { due_ms, run_id, handle: h });
                    }
                }
            }
            HandleState::Ready { cleanup, .. } => match cleanup.take() {
                // A signal matched but not consumed goes back to the buffer.
                Some(Cleanup::Signal(seq)) => {
                    self.assigned_signals.remove(&seq);
                }
                Some(cleanup) if live => self.pending.push(cleanup.write(&run_id)),
                _ => {}
            },
        }
        if let Some(handle) = self.handles.get_mut(&h) {
            // Arrival 0: a cancelled handle is "complete" before anything
            // that arrives from outside, on every replay alike.
            handle.state =
                HandleState::Ready { completion: Completion::Err(Failure::cancelled()), arrival: 0, cleanup: None };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(due_ms: u64) -> Handle {
        Handle { operation: Operation::Timer { due_ms }, state: HandleState::Pending }
    }

    fn due(handle: Option<&Handle>) -> Option<u64> {
        match handle?.operation {
            Operation::Timer { due_ms } => Some(due_ms),
            _ => None,
        }
    }

    /// Handles come in increasing order, but a map must not depend on it:
    /// any order gives the same lookups and an ordered walk.
    #[test]
    fn handles_are_found_by_number_and_walked_in_order_whatever_the_insertion_order() {
        let mut handles = Handles::default();
        for h in [3, 5, 9, 1, 7] {
            handles.insert(h, timer(u64::from(h) * 10));
        }
        handles.insert(5, timer(55));
        let order: Vec<u32> = handles.iter().map(|(h, _)| *h).collect();
        assert_eq!(order, [1, 3, 5, 7, 9]);
        assert_eq!(due(handles.get(&5)), Some(55), "inserting an existing number replaces it");
        assert_eq!(due(handles.get(&9)), Some(90));
        assert_eq!(due(handles.get(&1)), Some(10));
        for missing in [0, 2, 4, 10] {
            assert!(!handles.contains_key(&missing) && handles.get(&missing).is_none(), "#{missing}");
        }
        if let Some(h) = handles.get_mut(&7) {
            h.state = HandleState::Consumed(Completion::Ok("1".into()));
        }
        let consumed: Vec<u32> =
            handles.iter_mut().filter(|(_, h)| matches!(h.state, HandleState::Consumed(_))).map(|(h, _)| *h).collect();
        assert_eq!(consumed, [7]);
    }
}
