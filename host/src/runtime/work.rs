//! In-flight work of this process: activity executions and armed timers,
//! keyed by (run, generation, handle): handle numbers restart with each
//! generation of a run (continue-as-new), so the generation tells an
//! earlier generation's late work from the current one's. Work belongs to the process, not to a resident
//! run: an evicted run's activity keeps running and its completion is
//! delivered to the store; a run rebuilt by replay finds its work already
//! in flight and does not start it twice.

use super::Runtime;
use crate::activity::ActivityTask;
use crate::journal::Completion;
use crate::store::Write;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;

type Key = (String, u32, u32);

/// The handle of one generation of a run: what work reports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub run_id: String,
    pub generation: u32,
    pub handle: u32,
}

impl Target {
    fn key(&self) -> Key {
        (self.run_id.clone(), self.generation, self.handle)
    }
}

/// The work behind one handle, until its final outcome. Boxed: an
/// activity's future is large, and moving it (into a task, or from the
/// run that holds it to a task) would copy it.
pub(crate) type Produce = Pin<Box<dyn Future<Output = Completion> + Send>>;

/// The registry of in-flight work.
#[derive(Clone, Default)]
pub(crate) struct Work {
    running: Arc<Mutex<HashMap<Key, AbortHandle>>>,
}

impl Work {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, AbortHandle>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether work for this handle is in flight.
    pub fn is_running(&self, target: &Target) -> bool {
        self.lock().contains_key(&target.key())
    }

    /// Abandons the work of one handle (cancel).
    pub fn abort(&self, target: &Target) {
        if let Some(task) = self.lock().remove(&target.key()) {
            task.abort();
        }
    }

    /// Abandons all work of a run, of every generation (its end, or
    /// continue-as-new).
    pub fn abort_run(&self, run_id: &str) {
        self.lock().retain(|(run, _, _), task| {
            if run == run_id {
                task.abort();
                false
            } else {
                true
            }
        });
    }

    /// Runs `produce` in a task of its own and delivers its outcome to the
    /// run (resident or not), unless work for the handle is in flight.
    pub fn spawn(&self, rt: &Runtime, target: Target, cleanup: Option<Write>, produce: Produce) {
        let key = target.key();
        let mut running = self.lock();
        if running.contains_key(&key) {
            return;
        }
        let rt = rt.clone();
        let work = self.clone();
        let task_key = key.clone();
        // The task waits until it is registered, so its removal below can
        // never run before its insertion.
        let (registered_tx, registered) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = registered.await;
            let completion = produce.await;
            rt.deliver(&target, completion, cleanup).await;
            work.lock().remove(&task_key);
        });
        running.insert(key, task.abort_handle());
        let _ = registered_tx.send(());
    }

    /// Runs an activity to its final outcome and delivers it.
    pub fn start_activity(&self, rt: &Runtime, task: ActivityTask) {
        let target = Target { run_id: task.run_id.clone(), generation: task.generation, handle: task.handle };
        self.spawn(rt, target, None, Self::activity(rt, task));
    }

    /// An activity's attempts up to its final outcome, as a future: spawned
    /// by `start_activity`, or polled by the run that awaits it.
    pub fn activity(rt: &Runtime, task: ActivityTask) -> Produce {
        let runner = rt.activities().clone();
        let store = rt.store().clone();
        Box::pin(async move {
            let key = (task.run_id.clone(), task.handle);
            let recorded = std::sync::atomic::AtomicBool::new(task.first_attempt > 1);
            // Remember failed attempts, so a restart continues the count
            // (and the backoff) instead of starting over at attempt 1.
            let failed = |attempt: u32| {
                recorded.store(true, std::sync::atomic::Ordering::Relaxed);
                let write = Write::PutAttempts { run_id: key.0.clone(), handle: key.1, failed: attempt };
                drop(store.submit(vec![write]));
            };
            let completion = runner.execute(task, failed).await;
            if recorded.load(std::sync::atomic::Ordering::Relaxed) {
                drop(store.submit(vec![Write::DeleteAttempts { run_id: key.0, handle: key.1 }]));
            }
            completion
        })
    }

    /// Arms a timer that delivers `ok(null)` at `due_ms`.
    pub fn start_timer(&self, rt: &Runtime, target: Target, due_ms: u64) {
        let disarm = Write::DeleteTimer { due_ms, run_id: target.run_id.clone(), handle: target.handle };
        self.spawn(
            rt,
            target,
            Some(disarm),
            Box::pin(async move {
                let delay = due_ms.saturating_sub(super::now_ms());
                // A timer already due fires now, not at the next tick of the
                // timer wheel (about a millisecond later).
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                Completion::Ok("null".into())
            }),
        );
    }
}
