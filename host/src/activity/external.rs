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
//!
//! Where several hosts share a store, the queue is the store's task board
//! instead ([`crate::store::TaskBoard`]): the host driving the run posts the
//! task and keeps the attempt; a worker polling any host takes it, and its
//! heartbeats and report reach the board from whichever host it calls. One
//! watcher per host reads the board for all its attempts at once, woken by
//! a report's notification or every quarter second.

use crate::journal::Failure;
use crate::store::{StoreError, TaskBoard, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// What a worker receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A worker's report on the board: what its attempt returns.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Ok(String),
    Err(Failure),
}

/// Attempts of this host waiting on the board, by token.
type Pending = Mutex<HashMap<String, Waiting>>;

struct Waiting {
    reply: oneshot::Sender<Result<String, Failure>>,
    heartbeat: Duration,
}

/// The board and this host's attempts on it.
#[derive(Clone)]
struct Shared {
    board: Arc<dyn TaskBoard>,
    pending: Arc<Pending>,
}

/// Why a worker's poll or report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The token names no task in progress.
    #[error("task {0} is not in progress: it was completed, or its heartbeat timed out and it went to another worker")]
    Gone(String),
    /// The shared task board could not be reached.
    #[error("the task board in the shared store cannot be reached ({0}); retry the request")]
    Board(#[source] StoreError),
}

/// The queue of external tasks, shared by the runner and the API.
pub struct ExternalTasks {
    components: RwLock<HashSet<String>>,
    heartbeat_timeout: RwLock<Duration>,
    tasks: Mutex<Tasks>,
    arrived: Notify,
    counter: AtomicU64,
    shared: RwLock<Option<Shared>>,
}

impl Default for ExternalTasks {
    fn default() -> Self {
        ExternalTasks {
            components: RwLock::default(),
            heartbeat_timeout: RwLock::new(Duration::from_secs(10)),
            tasks: Mutex::default(),
            arrived: Notify::new(),
            counter: AtomicU64::new(0),
            shared: RwLock::new(None),
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

    /// Posts tasks to `board` from now on, for workers polling any host,
    /// and starts the watcher that answers this host's attempts from it.
    /// Call it before any attempt starts, inside the async runtime.
    pub fn share(&self, board: Arc<dyn TaskBoard>) {
        let pending: Arc<Pending> = Arc::default();
        tokio::spawn(watch(board.clone(), Arc::downgrade(&pending)));
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = Some(Shared { board, pending });
    }

    fn shared(&self) -> Option<Shared> {
        self.shared.read().unwrap_or_else(|e| e.into_inner()).clone()
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
        if let Some(shared) = self.shared() {
            return attempt_on_board(&shared, view, heartbeat).await;
        }
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
    pub async fn poll(
        &self,
        worker: &str,
        activities: &[String],
        wait: Duration,
    ) -> Result<Option<TaskView>, TaskError> {
        let deadline = tokio::time::Instant::now() + wait;
        if let Some(shared) = self.shared() {
            return poll_board(&shared.board, worker, activities, deadline).await;
        }
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
                    return Ok(Some(view));
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// A worker's result for the task `token`.
    pub async fn finish(&self, token: &str, result: Result<String, Failure>) -> Result<(), TaskError> {
        if let Some(shared) = self.shared() {
            let outcome = match result {
                Ok(text) => Outcome::Ok(text),
                Err(failure) => Outcome::Err(failure),
            };
            let outcome = serde_json::to_string(&outcome).unwrap_or_default();
            return match shared.board.report(token, &outcome).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(TaskError::Gone(token.to_owned())),
                Err(e) => Err(TaskError::Board(e)),
            };
        }
        let assigned = self.lock().assigned.remove(token).ok_or_else(|| TaskError::Gone(token.to_owned()))?;
        let _ = assigned.reply.send(result);
        Ok(())
    }

    /// A worker is still on the task `token`.
    pub async fn heartbeat(&self, token: &str) -> Result<(), TaskError> {
        if let Some(shared) = self.shared() {
            return match shared.board.beat(token).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(TaskError::Gone(token.to_owned())),
                Err(e) => Err(TaskError::Board(e)),
            };
        }
        let mut tasks = self.lock();
        let assigned = tasks.assigned.get_mut(token).ok_or_else(|| TaskError::Gone(token.to_owned()))?;
        assigned.last_beat = Instant::now();
        Ok(())
    }
}

/// One attempt through the board: posted, then answered by the watcher.
/// Dropping the future withdraws the task.
async fn attempt_on_board(shared: &Shared, view: TaskView, heartbeat: Duration) -> Result<String, Failure> {
    let token = view.task_token.clone();
    let task = serde_json::to_string(&view).unwrap_or_default();
    if let Err(e) = shared.board.post(&token, &view.activity, &task).await {
        return Err(Failure::new("task-board-unavailable", format!("the task could not be posted for workers: {e}")));
    }
    let (reply, answer) = oneshot::channel();
    shared.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), Waiting { reply, heartbeat });
    struct Withdraw<'a>(&'a Shared, String);
    impl Drop for Withdraw<'_> {
        fn drop(&mut self) {
            // Still waiting: the attempt gave up (its timeout, a cancel),
            // so the task leaves the board.
            if self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1).is_some() {
                let (board, token) = (self.0.board.clone(), std::mem::take(&mut self.1));
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        if let Err(e) = board.withdraw(&[token]).await {
                            tracing::warn!(error = %e, "could not withdraw a task; workers may still take it");
                        }
                    });
                }
            }
        }
    }
    let _withdraw = Withdraw(shared, token);
    answer.await.unwrap_or_else(|_| Err(Failure::new("worker-lost", "the task was withdrawn")))
}

/// A worker's poll through the board, until `deadline`.
async fn poll_board(
    board: &Arc<dyn TaskBoard>,
    worker: &str,
    activities: &[String],
    deadline: tokio::time::Instant,
) -> Result<Option<TaskView>, TaskError> {
    let mut posted = board.posted();
    loop {
        posted.borrow_and_update();
        if let Some(task) = board.take(worker, activities).await.map_err(TaskError::Board)? {
            match serde_json::from_str::<TaskView>(&task) {
                Ok(view) => {
                    tracing::info!(worker, activity = %view.activity, run_id = %view.run_id, attempt = view.attempt, "task taken from the board");
                    return Ok(Some(view));
                }
                // Its attempt sees no heartbeat and retries.
                Err(e) => tracing::error!(error = %e, "a task on the board cannot be read; skipped"),
            }
            continue;
        }
        // The notification is a hint; the poll is the floor.
        let floor = (tokio::time::Instant::now() + BOARD_POLL).min(deadline);
        tokio::select! {
            _ = posted.changed() => {}
            () = tokio::time::sleep_until(floor) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// How often a waiting poll looks at the board, and the watcher at this
/// host's attempts, when no notification comes.
const BOARD_POLL: Duration = Duration::from_millis(500);
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Answers this host's attempts from the board until they are all gone
/// with the queue that holds them.
async fn watch(board: Arc<dyn TaskBoard>, pending: Weak<Pending>) {
    let mut reported = board.reported();
    loop {
        tokio::select! {
            _ = reported.changed() => {}
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let Some(pending) = pending.upgrade() else { return };
        let tokens: Vec<String> = pending.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        if tokens.is_empty() {
            continue;
        }
        let states = match board.look(&tokens).await {
            Ok(states) => states,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the task board; trying again");
                continue;
            }
        };
        let mut states: HashMap<String, TaskState> = states.into_iter().map(|s| (s.token.clone(), s)).collect();
        let mut answered = Vec::new();
        {
            let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
            for token in tokens {
                let Some(waiting) = pending.get(&token) else { continue };
                let answer = match states.remove(&token) {
                    None => Some(Err(Failure::new(
                        "worker-lost",
                        "the task left the board (the database restarted and dropped its unlogged rows)",
                    ))),
                    Some(TaskState { outcome: Some(outcome), .. }) => Some(match serde_json::from_str(&outcome) {
                        Ok(Outcome::Ok(text)) => Ok(text),
                        Ok(Outcome::Err(failure)) => Err(failure),
                        Err(e) => Err(Failure::new("worker-lost", format!("the worker's report cannot be read: {e}"))),
                    }),
                    Some(TaskState { worker: Some(worker), quiet: Some(quiet), .. }) if quiet > waiting.heartbeat => {
                        tracing::warn!(%worker, %token, "worker went silent; its task goes to the next worker");
                        Some(Err(Failure::new(
                            "heartbeat-timeout",
                            format!(
                                "worker {worker} sent nothing for {} ms (heartbeat timeout {} ms)",
                                quiet.as_millis(),
                                waiting.heartbeat.as_millis()
                            ),
                        )))
                    }
                    Some(_) => None,
                };
                if let Some(answer) = answer {
                    if let Some(waiting) = pending.remove(&token) {
                        let _ = waiting.reply.send(answer);
                    }
                    answered.push(token);
                }
            }
        }
        if !answered.is_empty() {
            if let Err(e) = board.withdraw(&answered).await {
                tracing::warn!(error = %e, "could not clear answered tasks from the board");
            }
        }
    }
}
