//! What a commit is made of, whatever the backend: [`Write`]s grouped in
//! [`Batch`]es, each applied whole or refused whole.

use super::rows::{Deployment, RunMeta, Schedule, StoredCompletion, StoredSignal};
use crate::journal::Record;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::oneshot;

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace a run's metadata.
    PutRun(RunMeta),
    /// Append a journal record; refused if the seq already exists.
    Append {
        /// The run.
        run_id: String,
        /// The record.
        record: Record,
    },
    /// Store a completion that arrived from outside.
    PutCompletion {
        /// The run.
        run_id: String,
        /// The handle it completes.
        handle: u32,
        /// The completion.
        completion: StoredCompletion,
    },
    /// Drop a completion (consumed or cancelled).
    DeleteCompletion {
        /// The run.
        run_id: String,
        /// The handle.
        handle: u32,
    },
    /// Arm a timer.
    PutTimer {
        /// Due time, ms since the epoch.
        due_ms: u64,
        /// The run.
        run_id: String,
        /// The timer's handle.
        handle: u32,
    },
    /// Disarm a timer.
    DeleteTimer {
        /// Due time.
        due_ms: u64,
        /// The run.
        run_id: String,
        /// The handle.
        handle: u32,
    },
    /// Buffer a signal for a run.
    PutSignal {
        /// The run.
        run_id: String,
        /// Arrival order.
        seq: u64,
        /// Name and payload.
        signal: StoredSignal,
    },
    /// Drop a consumed signal.
    DeleteSignal {
        /// The run.
        run_id: String,
        /// Its arrival seq.
        seq: u64,
    },
    /// End a generation of a run (continue-as-new): its journal moves to
    /// history, its completions and timers are dropped, its buffered
    /// signals stay, and the new generation starts with `start`.
    ContinueAsNew {
        /// The run, with its new generation, input and status.
        meta: Box<RunMeta>,
        /// The new start entry (seq 0).
        start: Box<Record>,
    },
    /// Record how many attempts of an activity failed so far.
    PutAttempts {
        /// The run.
        run_id: String,
        /// The activity's handle.
        handle: u32,
        /// Failed attempts.
        failed: u32,
    },
    /// Forget an activity's attempts (it ended).
    DeleteAttempts {
        /// The run.
        run_id: String,
        /// The activity's handle.
        handle: u32,
    },
    /// Insert or replace a deployment.
    PutDeployment(Deployment),
    /// Remove a run and everything of it: its row, its journal and history
    /// generations, its inbox, timers and attempts (a finished run past its
    /// retention, or `cairn delete`). A run that is not there is no error.
    DeleteRun {
        /// The run.
        run_id: String,
    },
    /// Start queued runs of a concurrency bucket while it holds fewer than
    /// `limit` runs, first by priority then by age, as of the writes
    /// before it in the same transaction (a run just ended, one just
    /// queued).
    Promote {
        /// The workflow.
        workflow: String,
        /// The bucket's key.
        key: String,
        /// Its limit and rate.
        admission: super::rows::Admission,
    },
    /// Remove a component's bytes and its compiled artifacts (a retired
    /// version nothing refers to).
    DeleteComponent {
        /// sha256, hex.
        sha256: String,
    },
    /// Insert or replace a schedule (compare-and-swap on its revision).
    PutSchedule(Schedule),
    /// Remove a schedule (the runs it started stay).
    DeleteSchedule {
        /// Its name.
        name: String,
    },
    /// Store a component's bytes.
    PutComponent {
        /// sha256, hex.
        sha256: String,
        /// The bytes.
        bytes: Arc<[u8]>,
    },
    /// Store a precompiled artifact.
    PutCompiled {
        /// Component sha256.
        sha256: String,
        /// Engine fingerprint.
        engine: String,
        /// The artifact.
        bytes: Vec<u8>,
    },
}

/// Writes applied together, atomically.
pub type Batch = Vec<Write>;

/// A batch was not committed.
#[derive(Debug, Clone, Error)]
pub enum CommitError {
    /// The batch would overwrite a journal entry: a bug or a second writer.
    #[error("journal entry {seq} of run {run_id} already exists; the batch was refused and nothing was written")]
    DuplicateSeq {
        /// The run.
        run_id: String,
        /// The seq.
        seq: u64,
    },
    /// redb failed (disk full, I/O error). The writer refuses further
    /// writes: runs stop advancing rather than risk an inconsistent store.
    #[error("the store could not commit ({0}); runs stop advancing until Cairn is restarted, and nothing committed before was lost")]
    Failed(String),
    /// The writer thread is gone.
    #[error("the store writer has stopped")]
    Stopped,
    /// A deployment or a schedule changed since it was read (another host
    /// deployed, rolled back, paused or fired at the same moment): nothing
    /// was written; read it again and retry.
    #[error("{what} {name} changed while this change was being made (revision {found}, expected {expected}); nothing was written, try again")]
    Conflict {
        /// `deployment` or `schedule`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The revision stored.
        found: u64,
        /// The revision the change was made from.
        expected: u64,
    },
    /// This host no longer holds the shard of a run the batch writes:
    /// another host took it over (this one was paused or cut off past its
    /// lease). Nothing was written; the run goes on on its new owner.
    #[error("shard {shard} is no longer held by this host (another host took it over after its lease ran out); nothing was written, and the shard's runs go on on their new owner")]
    ShardLost {
        /// The shard.
        shard: u32,
    },
}

/// Whether writing `new` over `stored` breaks the revision rule (see
/// [`Deployment::revision`]): the refusal, if it does.
pub(crate) fn deployment_conflict(stored: Option<&Deployment>, new: &Deployment) -> Option<CommitError> {
    revision_conflict("deployment", &new.name, stored.map(|d| d.revision), new.revision, stored == Some(new))
}

/// The same rule for a schedule.
pub(crate) fn schedule_conflict(stored: Option<&Schedule>, new: &Schedule) -> Option<CommitError> {
    revision_conflict("schedule", &new.name, stored.map(|s| s.revision), new.revision, stored == Some(new))
}

fn revision_conflict(what: &'static str, name: &str, stored: Option<u64>, new: u64, same: bool) -> Option<CommitError> {
    let found = stored.unwrap_or(0);
    match new == 0 || same || found + 1 == new {
        true => None,
        false => Some(CommitError::Conflict { what, name: name.to_owned(), found, expected: new - 1 }),
    }
}

/// The acknowledgement of a submitted batch: resolves once it is durable
/// (or refused). Dropping it does not cancel the write.
pub type Ack = oneshot::Receiver<Result<(), CommitError>>;

/// Waits for the acknowledgement `submit` returned.
pub async fn durable(ack: Ack) -> Result<(), CommitError> {
    ack.await.unwrap_or(Err(CommitError::Stopped))
}
