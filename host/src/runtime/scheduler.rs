//! Residency: which runs are in memory, waking the others when something
//! concerns them, and evicting idle runs so memory is bounded by the
//! resident cap, not by the number of runs.
//!
//! A run is resident while a driver task owns its wasmtime store. Input for
//! a resident run goes to its mailbox; input for any other run is made
//! durable in the store first and the run is woken, to be rebuilt by replay.

use super::state::Event;
use super::Runtime;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};

/// How a host keeps runs in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residency {
    /// Runs blocked this long leave memory. `None`: never (embedded runs).
    pub idle: Option<Duration>,
    /// Most runs in memory at once.
    pub cap: usize,
}

impl Default for Residency {
    fn default() -> Self {
        Residency { idle: None, cap: Semaphore::MAX_PERMITS }
    }
}

/// Counters of what the scheduler did, for operators and tests.
#[derive(Debug, Default, serde::Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Runs in memory now.
    pub resident: u64,
    /// Times a run left memory while waiting.
    pub evictions: u64,
    /// Times a run was rebuilt by replaying a non-empty journal.
    pub rebuilds: u64,
    /// Runs that finished (completed, failed or terminated) in this process.
    pub finished: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub resident: AtomicU64,
    pub evictions: AtomicU64,
    pub rebuilds: AtomicU64,
    pub finished: AtomicU64,
}

enum Slot {
    /// A driver is queued for a permit or replaying without a mailbox yet.
    Queued,
    /// A driver owns the run; input goes to its mailbox.
    Resident(mpsc::UnboundedSender<Event>),
}

pub(crate) struct Scheduler {
    slots: Mutex<HashMap<String, Slot>>,
    permits: Arc<Semaphore>,
    pub pressure: Arc<Notify>,
    pub residency: Residency,
    pub counters: Counters,
    /// Who waits for which run to end.
    pub ends: EndNotices,
    /// Clients waiting for the result of an update, by run.
    pub updates: EndNotices,
}

/// Notices of runs ending, for the requests that wait on one run each: a
/// waiter is woken by its own run only, so many long polls cost nothing
/// when other runs end.
#[derive(Default)]
pub(crate) struct EndNotices(Mutex<HashMap<String, Arc<Notify>>>);

/// A waiter's registration; it leaves the map with its last waiter.
pub(crate) struct EndWatch<'a> {
    notices: &'a EndNotices,
    run_id: String,
    pub notify: Arc<Notify>,
}

impl EndNotices {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts waiting for `run_id` to end.
    pub fn watch(&self, run_id: &str) -> EndWatch<'_> {
        let notify = self.map().entry(run_id.to_owned()).or_default().clone();
        EndWatch { notices: self, run_id: run_id.to_owned(), notify }
    }

    /// `run_id` ended (durably): wake its waiters.
    pub fn ended(&self, run_id: &str) {
        if let Some(notify) = self.map().remove(run_id) {
            notify.notify_waiters();
        }
    }
}

impl Drop for EndWatch<'_> {
    fn drop(&mut self) {
        let mut map = self.notices.map();
        // The map's reference and this one: no other waiter is left.
        let last = map.get(&self.run_id).is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2);
        if last {
            map.remove(&self.run_id);
        }
    }
}

impl Scheduler {
    pub fn new(residency: Residency) -> Self {
        let cap = residency.cap.clamp(1, Semaphore::MAX_PERMITS);
        Scheduler {
            slots: Mutex::default(),
            permits: Arc::new(Semaphore::new(cap)),
            pressure: Arc::new(Notify::new()),
            residency,
            counters: Counters::default(),
            ends: EndNotices::default(),
            updates: EndNotices::default(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends to a resident run's mailbox; false if it is not resident.
    pub fn send(&self, run_id: &str, event: Event) -> Result<(), Event> {
        match self.slots().get(run_id) {
            Some(Slot::Resident(tx)) => tx.send(event).map_err(|e| e.0),
            _ => Err(event),
        }
    }

    /// Claims a run for a driver that is about to start. False if another
    /// driver has it.
    pub fn claim(&self, run_id: &str) -> bool {
        let mut slots = self.slots();
        if slots.contains_key(run_id) {
            return false;
        }
        slots.insert(run_id.to_owned(), Slot::Queued);
        true
    }

    /// The driver is ready for input: give it a mailbox.
    pub fn open_mailbox(&self, run_id: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.slots().insert(run_id.to_owned(), Slot::Resident(tx));
        self.counters.resident.fetch_add(1, Ordering::Relaxed);
        rx
    }

    /// The driver left: no more input goes to its mailbox.
    pub fn release(&self, run_id: &str, had_mailbox: bool) {
        self.slots().remove(run_id);
        if had_mailbox {
            self.counters.resident.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits for a resident slot, asking an idle resident run to leave if
    /// none is free.
    pub async fn permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.pressure.notify_one();
                self.permits.clone().acquire_owned().await.expect("the permit semaphore is never closed")
            }
        }
    }

    pub fn metrics(&self) -> Metrics {
        Metrics {
            resident: self.counters.resident.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            rebuilds: self.counters.rebuilds.load(Ordering::Relaxed),
            finished: self.counters.finished.load(Ordering::Relaxed),
        }
    }
}

impl Runtime {
    /// Counters of residency.
    pub fn metrics(&self) -> Metrics {
        self.inner.scheduler.metrics()
    }

    pub(crate) fn pressure(&self) -> Arc<Notify> {
        self.inner.scheduler.pressure.clone()
    }

    /// A number for ordering arrivals: larger than any handed out before,
    /// in this process or (clocks permitting) an earlier one.
    ///
    /// Where several hosts share the store, the low 12 bits are this host's
    /// arrival slot, so two hosts never hand out the same number (a signal
    /// is stored under its run and its arrival).
    pub(crate) fn next_arrival(&self) -> u64 {
        let floor = super::now_ms().saturating_mul(1000);
        let arrivals = &self.inner.arrivals;
        let mut current = arrivals.load(Ordering::Relaxed);
        let next = loop {
            let next = current.max(floor) + 1;
            match arrivals.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(seen) => current = seen,
            }
        };
        match self.coordinator().arrival_slot() {
            Some(slot) => (next << 12) | u64::from(slot & 0xfff),
            None => next,
        }
    }

    /// Hands a completion of in-process work to its run: to the mailbox of
    /// a resident run, else durably to the store, then wakes the run.
    pub(crate) async fn deliver(
        &self,
        target: &super::work::Target,
        completion: crate::journal::Completion,
        also: Option<crate::store::Write>,
    ) {
        let event = Event::Completion { generation: target.generation, handle: target.handle, completion };
        let Err(Event::Completion { completion, .. }) = self.inner.scheduler.send(&target.run_id, event) else {
            return;
        };
        self.persist_completion(target, completion, also).await;
    }

    /// Stores a completion for a run that is not resident, and wakes it.
    /// Nothing is stored for a run that ended, or that continued as new
    /// since the work began: its handle numbers mean other things now.
    pub(crate) async fn persist_completion(
        &self,
        target: &super::work::Target,
        completion: crate::journal::Completion,
        also: Option<crate::store::Write>,
    ) {
        use crate::store::{StoredCompletion, Write};
        let super::work::Target { run_id, generation, handle } = target;
        let (run_id, generation, handle) = (run_id.as_str(), *generation, *handle);
        let current = match self.store().run(run_id).await {
            Ok(Some(meta)) if !meta.status.is_final() => meta.generation == generation,
            _ => false,
        };
        if !current {
            tracing::debug!(
                run_id,
                generation,
                handle,
                "the run ended or continued as new; its late completion is dropped"
            );
            return;
        }
        let arrival = self.next_arrival();
        let mut batch = vec![Write::PutCompletion {
            run_id: run_id.to_owned(),
            handle,
            completion: StoredCompletion { completion, arrival, generation: Some(generation) },
        }];
        batch.extend(also);
        match self.store().commit(batch).await {
            Ok(()) => self.wake(run_id),
            Err(e) => {
                tracing::error!(run_id, handle, error = %e, "could not store a completion; the work reruns when the run is rebuilt")
            }
        }
    }

    /// Makes sure a run that has something to do is being driven: nudges a
    /// resident run, or starts a driver (which waits for a resident slot).
    pub fn wake(&self, run_id: &str) {
        let scheduler = &self.inner.scheduler;
        if scheduler.send(run_id, Event::Nudge).is_ok() || !scheduler.claim(run_id) {
            return;
        }
        let rt = self.clone();
        let run_id = run_id.to_owned();
        tokio::spawn(async move {
            let permit = rt.inner.scheduler.permit().await;
            let mut outcome = rt.drive_claimed(&run_id).await;
            // A run that continued as new goes on with its next generation,
            // unless someone else claimed it meanwhile.
            while matches!(outcome, Ok(super::driver::Driven::Continued)) && rt.inner.scheduler.claim(&run_id) {
                outcome = rt.drive_claimed(&run_id).await;
            }
            drop(permit);
            match outcome {
                Ok(_) => {}
                // Logged where they happened.
                Err(super::RunError::UnknownActivity { .. } | super::RunError::Refused { .. }) => {}
                Err(e) if e.shard_lost() => tracing::info!(run_id, error = %e, "the run goes on on another host"),
                Err(e @ (super::RunError::Store(_) | super::RunError::Commit(_))) => {
                    tracing::error!(run_id, error = %e, "the run stopped advancing: its step could not be stored");
                }
                Err(e) => tracing::debug!(run_id, error = %e, "run stopped"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_for_its_own_run_only_and_leaves_no_trace() {
        let notices = EndNotices::default();
        let watch = notices.watch("a");
        let other = notices.watch("b");
        let notify = watch.notify.clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        notices.ended("b");
        let woke = tokio::time::timeout(Duration::from_millis(50), &mut notified).await;
        assert!(woke.is_err(), "the end of another run woke the waiter");
        notices.ended("a");
        tokio::time::timeout(Duration::from_secs(5), &mut notified).await.expect("the run's end wakes its waiter");
        drop((watch, other, notified));
        assert!(notices.map().is_empty(), "finished watches stay registered");

        // Two waiters on one run: the entry stays until the last one leaves.
        let (first, second) = (notices.watch("c"), notices.watch("c"));
        drop(first);
        assert_eq!(notices.map().len(), 1);
        drop(second);
        assert!(notices.map().is_empty());
    }
}
