//! Errors of starting and driving runs.

use crate::journal::{Divergence, Failure};
use crate::sandbox::LoadError;
use crate::store::{CommitError, StoreError};
use thiserror::Error;

/// A run could not be started.
#[derive(Debug, Error)]
pub enum StartError {
    /// The input is not JSON.
    #[error("the input is not valid JSON: {0}")]
    InvalidInput(String),
    /// The input is over the limit for one journaled payload.
    #[error("the input is {bytes} bytes, over the limit of {} bytes (4 MiB) for one journaled payload; store big data elsewhere and pass a reference", crate::journal::MAX_PAYLOAD_BYTES)]
    InputTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The concurrency key is not usable.
    #[error("invalid concurrency key {0:?}: use at most 128 characters, none of them control characters")]
    InvalidConcurrencyKey(String),
    /// The priority is out of range.
    #[error("invalid priority {0}: use 1 (first) to 5 (last); 3 is the default")]
    InvalidPriority(u8),
    /// The run id has characters we do not allow.
    #[error("invalid run id {0:?}: use 1-128 letters, digits, '-', '_', '.' or ':' (not `.` or `..` alone, which URLs cannot address)")]
    InvalidRunId(String),
    /// The component does not fit the workflow world.
    #[error("component {sha256} is not a workflow component: {reason}")]
    NotAWorkflow {
        /// Its hash.
        sha256: String,
        /// The missing export or unknown import.
        reason: String,
    },
    /// The id is taken by a run of other code.
    #[error("run {run_id} already exists with component {existing}, not {given}; choose another --id, or use `cairn replay {run_id} --with FILE` to check new code against it")]
    DifferentComponent {
        /// The run.
        run_id: String,
        /// Its component.
        existing: String,
        /// The component given now.
        given: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The component failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A run stopped without finishing.
#[derive(Debug, Error)]
pub enum RunError {
    /// No such run.
    #[error("run {0} does not exist")]
    NotFound(String),
    /// The code no longer matches the journal. The run is parked
    /// (status `diverged`) and nothing was written to its journal.
    #[error("run {run_id} {divergence}")]
    Diverged {
        /// The run.
        run_id: String,
        /// Where and how.
        divergence: Divergence,
    },
    /// The guest trapped, ran away or ran out of memory: the run failed.
    #[error("run {run_id} failed: {failure}")]
    Trapped {
        /// The run.
        run_id: String,
        /// What happened (kind `trap`, `runaway`, `out-of-memory`, `stack-overflow`).
        failure: Failure,
    },
    /// The workflow called an activity component that is not registered.
    /// Nothing was journaled for the call: register it and resume the run.
    #[error("run {run_id} calls activity {activity}, but no activity component named {component:?} is registered (registered: {known}). Provide it (`--activity {component}=FILE.wasm`) and run again with `--id {run_id}` to resume; no step was lost")]
    UnknownActivity {
        /// The run.
        run_id: String,
        /// The full activity name.
        activity: String,
        /// The component part.
        component: String,
        /// Registered components.
        known: String,
    },
    /// The workflow used a feature this host does not offer yet.
    #[error("run {run_id} called {call}, which this host does not support yet; nothing was journaled for it")]
    Unsupported {
        /// The run.
        run_id: String,
        /// The call.
        call: &'static str,
    },
    /// The workflow broke the contract (awaited a handle it never created,
    /// returned invalid JSON, ...): the run failed.
    #[error("run {run_id} failed: {failure}")]
    Contract {
        /// The run.
        run_id: String,
        /// What it did.
        failure: Failure,
    },
    /// The run's component could not be loaded or instantiated.
    #[error("run {run_id} cannot be instantiated: {reason}")]
    Instantiate {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// The store failed; the run stopped advancing with nothing lost.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A commit failed; the run stopped advancing with nothing lost.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A component failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Another driver has the run (it is already being executed).
    #[error("run {0} is already being executed by this host")]
    Busy(String),
    /// The run was terminated.
    #[error("run {run_id} was terminated: {failure}")]
    Terminated {
        /// The run.
        run_id: String,
        /// The reason, as kind `terminated`.
        failure: Failure,
    },
    /// The run's journal is damaged (no start entry).
    #[error("run {0} has no start entry in its journal; the store is damaged")]
    NoStartEntry(String),
    /// The store refused a step of the run (it would have overwritten a
    /// journal entry): the run failed, visibly, rather than retry the same
    /// step forever.
    #[error("run {run_id} failed: {failure}")]
    Refused {
        /// The run.
        run_id: String,
        /// What was refused (kind `commit-refused`).
        failure: Failure,
    },
}

impl RunError {
    /// Whether the run stopped because another host took its shard over.
    pub fn shard_lost(&self) -> bool {
        matches!(
            self,
            RunError::Commit(CommitError::ShardLost { .. })
                | RunError::Store(StoreError::Commit(CommitError::ShardLost { .. }))
        )
    }

    /// The refusal, when the store refused a commit of the run's (a journal
    /// entry already there with other bytes), rather than failing to write.
    pub fn refused_commit(&self) -> Option<&CommitError> {
        match self {
            RunError::Commit(e @ CommitError::DuplicateSeq { .. })
            | RunError::Store(StoreError::Commit(e @ CommitError::DuplicateSeq { .. })) => Some(e),
            _ => None,
        }
    }
}

/// A signal, cancel or terminate request was refused.
#[derive(Debug, Error)]
pub enum ControlError {
    /// No such run.
    #[error("run {0} does not exist")]
    NotFound(String),
    /// The run's shard is on another host, and that host could not be
    /// asked (it is down, or the shard is moving between hosts).
    #[error("run {run_id} is driven by another host, which could not be reached ({reason}); its shard moves to a live host within a lease: retry in a few seconds")]
    Elsewhere {
        /// The run.
        run_id: String,
        /// What went wrong.
        reason: String,
    },
    /// The run already ended; it takes no more input.
    #[error("run {run_id} has already ended ({status}); it takes no signals, cancels or terminates")]
    Ended {
        /// The run.
        run_id: String,
        /// Its final status.
        status: &'static str,
    },
    /// Only a running run can be paused.
    #[error("run {run_id} is {status}, not running: only a running run can be paused")]
    NotRunning {
        /// The run.
        run_id: String,
        /// Its status.
        status: &'static str,
    },
    /// Only a finished run can be deleted.
    #[error(
        "run {run_id} is {status}: only a finished run can be deleted; terminate it first (`cairn terminate {run_id}`)"
    )]
    Live {
        /// The run.
        run_id: String,
        /// Its status.
        status: &'static str,
    },
    /// Only a paused run can be resumed.
    #[error("run {run_id} is {status}, not paused: there is nothing to resume")]
    NotPaused {
        /// The run.
        run_id: String,
        /// Its status.
        status: &'static str,
    },
    /// The signal name is not usable.
    #[error("invalid signal name {0:?}: use 1-128 characters, not starting with '$'")]
    InvalidName(String),
    /// The payload is not JSON.
    #[error("the signal payload is not valid JSON: {0}")]
    InvalidPayload(String),
    /// The payload is over the limit for one journaled payload.
    #[error("the signal payload is {bytes} bytes, over the limit of {} bytes (4 MiB) for one journaled payload; store big data elsewhere and pass a reference", crate::journal::MAX_PAYLOAD_BYTES)]
    PayloadTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The run has as many signals buffered as one run may.
    #[error("run {run_id} already has {buffered} signals it has not consumed, the most one run may buffer (--max-signals-per-run {limit}); nothing was recorded. Retry once the workflow has read some, or make it read the signals it is sent")]
    TooManySignals {
        /// The run.
        run_id: String,
        /// Its buffered signals.
        buffered: u64,
        /// The cap.
        limit: u64,
    },
    /// Buffered signals over every run fill what the host allows.
    #[error("the host's buffered signals take {bytes} bytes, and this one ({more} bytes) would pass the limit of {limit} bytes (--max-signal-mib); nothing was recorded. Retry once runs have consumed their signals")]
    SignalBufferFull {
        /// Bytes buffered now.
        bytes: u64,
        /// This signal's.
        more: u64,
        /// The cap.
        limit: u64,
    },
    /// The run stayed busy (computing, never waiting) for too long.
    #[error("run {0} is busy and could not be paused; try again")]
    Busy(String),
    /// The store failed; nothing was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A commit failed; nothing was recorded.
    #[error(transparent)]
    Commit(#[from] CommitError),
}
