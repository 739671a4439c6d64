//! External activity workers: activities served by processes outside the
//! sandbox (a team's existing services), which long-poll the HTTP API for
//! tasks and report back with the task's token.
//!
//! Each attempt of an activity whose component is served externally becomes
//! a task in an in-memory queue. A worker that polls for its name takes it;
//! from then on it must complete, fail or heartbeat the task within the
//! heartbeat timeout, or the attempt fails with `heartbeat-timeout` and the
//! retry policy hands a new attempt (a new task, with the same idempotency
//! key) to whichever worker polls next. The queue is not durable and needs
//! not be: after a restart, recovery schedules every unfinished activity
//! again, as for in-process activities.

use crate::journal::Failure;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// What a worker receives.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Quote it to complete, fail or heartbeat the task.
    pub task_token: String,
    /// `<component>.<function>`.
    pub activity: String,
    /// JSON input, as text.
    pub input: String,
    /// The run that scheduled it.
    pub run_id: String,
    /// The same on every attempt of this call and on no other call's:
    /// `<run-id>/<handle>`, or `<run-id>/<generation>/<handle>` after the
    /// run continued as new.
    pub idempotency_key: String,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// Complete, fail or heartbeat within this, or the task is given to
    /// another worker.
    pub heartbeat_timeout_ms: u64,
}

struct Queued {
    view: TaskView,
    reply: oneshot::Sender<Result<String, Failure>>,
}

struct Assigned {
    reply: oneshot::Sender<Result<String, Failure>>,
    worker: String,
    last_beat: Instant,
}

#[derive(Default)]
struct Tasks {
    queued: VecDeque<Queued>,
    assigned: HashMap<String, Assigned>,
}

/// Why a worker's report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The token names no task in progress.
    #[error("task {0} is not in progress: it was completed, or its heartbeat timed out and it went to another worker")]
    Gone(String),
}

/// The queue of external tasks, shared by the runner and the API.
pub struct ExternalTasks {
    components: RwLock<HashSet<String>>,
    heartbeat_timeout: RwLock<Duration>,
    tasks: Mutex<Tasks>,
    arrived: Notify,
    counter: AtomicU64,
}

impl Default for ExternalTasks {
    fn default() -> Self {
        ExternalTasks {
            components: RwLock::default(),
            heartbeat_timeout: RwLock::new(Duration::from_secs(10)),
            tasks: Mutex::default(),
            arrived: Notify::new(),
            counter: AtomicU64::new(0),
        }
    }
}

impl ExternalTasks {
    /// Serves activities of `components` by workers, with `heartbeat_timeout`.
    pub fn configure(&self, components: impl IntoIterator<Item = String>, heartbeat_timeout: Duration) {
        *self.components.write().unwrap_or_else(|e| e.into_inner()) = components.into_iter().collect();
        *self.heartbeat_timeout.write().unwrap_or_else(|e| e.into_inner()) = heartbeat_timeout;
    }

    /// Whether workers serve `component`.
    pub fn serves(&self, component: &str) -> bool {
        self.components.read().unwrap_or_else(|e| e.into_inner()).contains(component)
    }

    fn heartbeat_timeout(&self) -> Duration {
        *self.heartbeat_timeout.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn token(&self, key: &str, attempt: u32) -> String {
        use sha2::{Digest, Sha256};
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let digest = Sha256::digest(format!("{key}:{attempt}:{nanos}:{n}:{}", std::process::id()).as_bytes());
        crate::sandbox::sha256_hex(&digest)[..32].to_owned()
    }

    /// One attempt by a worker: queued until a worker takes it, then failed
    /// if the worker goes silent for the heartbeat timeout. Dropping the
    /// future (the attempt's own timeout) withdraws the task.
    pub async fn attempt(
        &self,
        name: &str,
        input: &str,
        run_id: &str,
        key: &str,
        attempt: u32,
    ) -> Result<String, Failure> {
        let heartbeat = self.heartbeat_timeout();
        let token = self.token(key, attempt);
        let (reply, mut answer) = oneshot::channel();
        let view = TaskView {
            task_token: token.clone(),
            activity: name.to_owned(),
            input: input.to_owned(),
            run_id: run_id.to_owned(),
            idempotency_key: key.to_owned(),
            attempt,
            heartbeat_timeout_ms: heartbeat.as_millis() as u64,
        };
        self.lock().queued.push_back(Queued { view, reply });
        self.arrived.notify_waiters();
        struct Withdraw<'a>(&'a ExternalTasks, &'a str);
        impl Drop for Withdraw<'_> {
            fn drop(&mut self) {
                let mut tasks = self.0.lock();
                tasks.queued.retain(|q| q.view.task_token != self.1);
                tasks.assigned.remove(self.1);
            }
        }
        let _withdraw = Withdraw(self, &token);
        loop {
            let check = tokio::time::sleep(heartbeat.min(Duration::from_millis(250)));
            tokio::select! {
                result = &mut answer => {
                    return result.unwrap_or_else(|_| Err(Failure::new("worker-lost", "the task was withdrawn")));
                }
                () = check => {
                    let silent = self.lock().assigned.get(&token).map(|a| (a.last_beat.elapsed(), a.worker.clone()));
                    if let Some((quiet, worker)) = silent.filter(|(quiet, _)| *quiet > heartbeat) {
                        tracing::warn!(%worker, activity = name, run_id, attempt, "worker went silent; its task goes to the next worker");
                        return Err(Failure::new(
                            "heartbeat-timeout",
                            format!("worker {worker} sent nothing for {} ms (heartbeat timeout {} ms)", quiet.as_millis(), heartbeat.as_millis()),
                        ));
                    }
                }
            }
        }
    }

    /// Takes the oldest task for one of `activities` (full names such as
    /// `inventory.reserve`, or a component name for all its functions),
    /// waiting up to `wait` for one to arrive.
    pub async fn poll(&self, worker: &str, activities: &[String], wait: Duration) -> Option<TaskView> {
        let deadline = tokio::time::Instant::now() + wait;
        let wanted = |name: &str| {
            activities.iter().any(|a| a == name || name.split_once('.').is_some_and(|(component, _)| component == a))
        };
        loop {
            let arrived = self.arrived.notified();
            {
                let mut tasks = self.lock();
                if let Some(i) = tasks.queued.iter().position(|q| wanted(&q.view.activity)) {
                    let Some(queued) = tasks.queued.remove(i) else { continue };
                    let view = queued.view;
                    let assigned =
                        Assigned { reply: queued.reply, worker: worker.to_owned(), last_beat: Instant::now() };
                    tasks.assigned.insert(view.task_token.clone(), assigned);
                    tracing::info!(worker, activity = %view.activity, run_id = %view.run_id, attempt = view.attempt, "task taken");
                    return Some(view);
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// A worker's result for the task `token`.
    pub fn finish(&self, token: &str, result: Result<String, Failure>) -> Result<(), TaskError> {
        let assigned = self.lock().assigned.remove(token).ok_or_else(|| TaskError::Gone(token.to_owned()))?;
        let _ = assigned.reply.send(result);
        Ok(())
    }

    /// A worker is still on the task `token`.
    pub fn heartbeat(&self, token: &str) -> Result<(), TaskError> {
        let mut tasks = self.lock();
        let assigned = tasks.assigned.get_mut(token).ok_or_else(|| TaskError::Gone(token.to_owned()))?;
        assigned.last_beat = Instant::now();
        Ok(())
    }
}
