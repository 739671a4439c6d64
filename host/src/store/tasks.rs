//! The task board: external activity tasks shared by every host of a
//! store, so a worker polling any host takes any run's tasks.
//!
//! The host that drives a run posts each attempt of an externally served
//! activity as a row; a worker's poll on any host claims the oldest row it
//! serves (`FOR UPDATE SKIP LOCKED`, so two workers never take one task);
//! its heartbeats and its result go to the row from whichever host the
//! worker reaches, and the posting host, which holds the attempt, reads them
//! back. The board is not durable and need not be: after a crash the run's
//! new owner schedules every unfinished activity again, as a new attempt
//! with the same idempotency key.

use super::StoreError;
use std::time::Duration;

/// Where a posted task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The task's token.
    pub token: String,
    /// The worker that took it, if one did.
    pub worker: Option<String>,
    /// How long since it was taken or its last heartbeat, if taken.
    pub quiet: Option<Duration>,
    /// The worker's report (JSON of the result or failure), if it came.
    pub outcome: Option<String>,
}

/// External tasks shared by the hosts of one store.
#[async_trait::async_trait]
pub trait TaskBoard: Send + Sync {
    /// Posts a task: `task` is what a worker receives (JSON), `activity`
    /// its `<component>.<function>` name.
    async fn post(&self, token: &str, activity: &str, task: &str) -> Result<(), StoreError>;

    /// Claims the oldest task of one of `activities` (full names, or
    /// component names for all their functions) for `worker`, returning
    /// what it receives.
    async fn take(&self, worker: &str, activities: &[String]) -> Result<Option<String>, StoreError>;

    /// Records a worker's report on a task it took; false if the task is
    /// not in progress (reported already, withdrawn, or never taken).
    async fn report(&self, token: &str, outcome: &str) -> Result<bool, StoreError>;

    /// A worker is still on a task it took; false if it is not in progress.
    async fn beat(&self, token: &str) -> Result<bool, StoreError>;

    /// Where the tasks `tokens` stand; a token missing from the answer
    /// names a task that is gone (the database lost its unlogged rows).
    async fn look(&self, tokens: &[String]) -> Result<Vec<TaskState>, StoreError>;

    /// Removes tasks: answered, or withdrawn by their attempt.
    async fn withdraw(&self, tokens: &[String]) -> Result<(), StoreError>;

    /// Changes when a task may have been posted (pollers look again): a
    /// hint, not a promise.
    fn posted(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Changes when a task this host posted may have been reported on.
    fn reported(&self) -> tokio::sync::watch::Receiver<u64>;
}
