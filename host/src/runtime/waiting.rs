//! How a live run waits: for a completion among the handles it awaits,
//! for input from its mailbox, and for the commit that makes what it learns
//! durable before the guest acts on it. Also when it gives up its memory.

use super::query::QUESTION_HANDLE;
use super::state::{Cleanup, Event, Handle, HandleState, Inline, Mode, Operation, Stopped, Unsealed, WorkflowState};
use crate::journal::{Completion, Entry, Failure, HostCall, Reply};
use crate::store::{StoredCompletion, Write};
use std::time::Duration;

/// How long a run blocked on in-process activities holds its buffered
/// entries back, hoping to commit them with the activity's result in one
/// transaction. Past it, they are flushed on their own.
const COMMIT_WINDOW: Duration = Duration::from_millis(20);

/// Where a completion handed to an awaiting guest came from.
enum Source {
    /// Already durable or determined by the journal; `cleanup` removes its
    /// buffered copy in the same commit as the await entry.
    Known { cleanup: Option<Cleanup> },
    /// Just arrived from in-process work: its entry must be durable before
    /// anything the guest does with it leaves the run.
    Fresh,
}

impl WorkflowState {
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
                && matches!(h.state, HandleState::Pending)
                && (self.inline.as_ref().is_some_and(|i| i.handle == handle)
                    || self.rt.work().is_running(&self.target(handle)))
        })
    }

    /// Blocks (live) until one of `wanted` is complete.
    async fn wait_for(&mut self, wanted: &[u32]) -> wasmtime::Result<(u32, Completion, Source)> {
        loop {
            if let Some(seq) = self.cancel_request.take() {
                let cleanup = Some(Cleanup::Signal(seq));
                let completion = Completion::Err(Failure::new("cancelled", "the run was cancelled"));
                return Ok((wanted[0], completion, Source::Known { cleanup }));
            }
            if let Some(handle) = self.pick_ready(wanted) {
                if let Some(Handle { state: HandleState::Ready { completion, cleanup, .. }, .. }) =
                    self.handles.get_mut(&handle)
                {
                    return Ok((handle, completion.clone(), Source::Known { cleanup: cleanup.take() }));
                }
            }
            let consumed = wanted.iter().find_map(|h| match self.handles.get(h).map(|h| &h.state) {
                Some(HandleState::Consumed(c)) => Some((*h, c.clone())),
                _ => None,
            });
            if let Some((handle, completion)) = consumed {
                return Ok((handle, completion, Source::Known { cleanup: None }));
            }
            if self.mode == Mode::Query {
                let question = self.deliver_question()?;
                return Ok((QUESTION_HANDLE, question, Source::Known { cleanup: None }));
            }
            if self.inline.as_ref().is_some_and(|i| !wanted.contains(&i.handle)) {
                self.release_inline();
            }
            match self.next_event(wanted).await {
                // Late work of an earlier generation: its handle number
                // means another operation now.
                Some(Event::Completion { generation, .. }) if generation != self.meta.generation => {}
                Some(Event::Completion { handle, completion, .. }) => {
                    if let Some(fresh) = self.take_completion(wanted, handle, completion).await? {
                        return Ok((handle, fresh, Source::Fresh));
                    }
                }
                Some(Event::Nudge) => self.absorb_store(false).await?,
                Some(Event::Evict) => return Err(self.leave().await),
                Some(Event::Terminate { reason }) => {
                    self.terminated = Some(reason);
                    return Err(Stopped.into());
                }
                None => return Err(self.contract("the run's mailbox closed".into())),
            }
        }
    }

    /// Query mode: the guest waits, so it is asked its question here, once.
    fn deliver_question(&mut self) -> wasmtime::Result<Completion> {
        match self.question.take() {
            Some(question) => Ok(question.delivery()),
            None => {
                self.unanswered = Some(
                    "it waited again instead of answering; build the workflow with a Cairn SDK that has query and update handlers (on_query, on_update)".into(),
                );
                Err(Stopped.into())
            }
        }
    }

    /// Handles an in-process completion: returned when the guest waits for
    /// it now (the caller makes it durable with the await entry), otherwise
    /// made durable on its own and kept for later.
    async fn take_completion(
        &mut self,
        wanted: &[u32],
        handle: u32,
        completion: Completion,
    ) -> wasmtime::Result<Option<Completion>> {
        let Some(h) = self.handles.get(&handle) else {
            return Ok(None);
        };
        if !matches!(h.state, HandleState::Pending) {
            return Ok(None); // cancelled meanwhile
        }
        if let Operation::Timer { due_ms } = h.operation {
            self.pending.push(Write::DeleteTimer { due_ms, run_id: self.meta.id.clone(), handle });
        }
        if wanted.contains(&handle) {
            if let Some(h) = self.handles.get_mut(&handle) {
                h.state = HandleState::Ready { completion: completion.clone(), arrival: 0, cleanup: None };
            }
            return Ok(Some(completion));
        }
        if let Err(e) = self.settle().await {
            return Err(self.stop_with(e));
        }
        let arrival = self.rt.next_arrival();
        let mut batch = self.take_pending();
        batch.push(Write::PutCompletion {
            run_id: self.meta.id.clone(),
            handle,
            completion: StoredCompletion {
                completion: completion.clone(),
                arrival,
                generation: Some(self.meta.generation),
            },
        });
        if let Err(e) = self.rt.store().commit(batch).await {
            return Err(self.stop_with(e.into()));
        }
        let cleanup = Some(Cleanup::Completion(handle));
        if let Some(h) = self.handles.get_mut(&handle) {
            h.state = HandleState::Ready { completion, arrival, cleanup };
        }
        Ok(None)
    }

    /// Leaves memory: commits what is buffered, then stops the guest.
    async fn leave(&mut self) -> wasmtime::Error {
        self.release_inline();
        if let Err(e) = self.settle().await {
            return self.stop_with(e);
        }
        let batch = self.take_pending();
        if !batch.is_empty() {
            if let Err(e) = self.rt.store().commit(batch).await {
                return self.stop_with(e.into());
            }
        }
        self.evicted = true;
        Stopped.into()
    }

    /// The next thing that happens to a blocked run: an event from its
    /// mailbox, or the outcome of the activity it polls itself.
    async fn next_event(&mut self, wanted: &[u32]) -> Option<Event> {
        let hold = wanted.iter().any(|h| self.is_inflight_activity(*h));
        let generation = self.meta.generation;
        if !self.pending.is_empty() {
            // Hold buffered entries briefly when an in-process activity may
            // finish soon: they then share its commit.
            if hold {
                let (rx, inline) = (self.events_rx.as_mut()?, &mut self.inline);
                let first = async {
                    tokio::select! {
                        event = rx.recv() => event,
                        event = finish(inline, generation) => Some(event),
                    }
                };
                if let Ok(event) = tokio::time::timeout(COMMIT_WINDOW, first).await {
                    return event;
                }
            }
            self.flush_pending().await;
        }
        let (rx, inline) = (self.events_rx.as_mut()?, &mut self.inline);
        match self.idle {
            None => tokio::select! {
                event = rx.recv() => event,
                event = finish(inline, generation) => Some(event),
            },
            Some(idle) => {
                let pressure = self.rt.pressure();
                tokio::select! {
                    event = rx.recv() => event,
                    event = finish(inline, generation) => Some(event),
                    _ = tokio::time::sleep(idle) => Some(Event::Evict),
                    _ = pressure.notified() => Some(Event::Evict),
                }
            }
        }
    }

    /// Journals the consumption of a completion among `wanted`.
    pub(crate) async fn consume(&mut self, call: HostCall, wanted: &[u32]) -> wasmtime::Result<(u32, Completion)> {
        let (handle, completion, source) = self.wait_for(wanted).await?;
        // Another activity of an await-any, perhaps half run: it must not
        // stall while the guest does something else.
        self.release_inline();
        self.append(Entry::Call { call, reply: Reply::Completed { handle, completion: completion.clone() } });
        match source {
            Source::Known { cleanup } => {
                if let Some(cleanup) = cleanup {
                    self.pending.push(cleanup.write(&self.meta.id));
                }
            }
            // Sealed before the guest's next journaled call, or with its end.
            Source::Fresh => self.unsealed = Unsealed::Held,
        }
        self.mark_consumed(handle, &completion);
        Ok((handle, completion))
    }

    pub(crate) fn mark_consumed(&mut self, handle: u32, completion: &Completion) {
        if let Some(h) = self.handles.get_mut(&handle) {
            h.state = HandleState::Consumed(completion.clone());
        }
    }
}

/// Polls the activity a run holds to its outcome; never ready without
/// one. Cancel-safe: dropped unfinished, the activity stays where it was.
async fn finish(inline: &mut Option<Inline>, generation: u32) -> Event {
    let Some(Inline { handle, produce }) = inline.as_mut() else {
        return std::future::pending().await;
    };
    let completion = produce.await;
    let handle = *handle;
    *inline = None;
    Event::Completion { generation, handle, completion }
}
