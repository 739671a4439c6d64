//! Journal entry types: what a run asked of the host and what it was told.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why something failed: the `failure` record of the WIT contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Short machine-readable reason (`timeout`, `cancelled`, `card-declined`).
    pub kind: String,
    /// Human-readable explanation.
    pub message: String,
    /// Optional structured detail, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl Failure {
    /// A failure with no details.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { kind: kind.into(), message: message.into(), details: None }
    }

    /// The completion of a cancelled handle.
    pub fn cancelled() -> Self {
        Failure::new("cancelled", "the operation was cancelled by the workflow")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// How a pending operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Completion {
    /// Success, with a JSON value.
    Ok(String),
    /// Failure.
    Err(Failure),
}

/// The retry policy of an activity call, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total; 0 means unlimited.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_interval_ms: u64,
    /// Growth of the delay per attempt.
    pub backoff_coefficient: f64,
    /// Cap on the delay.
    pub max_interval_ms: u64,
    /// Failure kinds never retried.
    pub non_retryable_kinds: Vec<String>,
}

/// Options of an activity call, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityOptions {
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// A call from the workflow into the host: its kind and its arguments.
/// Replay compares these field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum HostCall {
    /// `schedule-activity`.
    ScheduleActivity {
        /// `<component>.<function>`.
        name: String,
        /// JSON input.
        input: String,
        /// Timeout and retries.
        options: ActivityOptions,
    },
    /// `start-timer`.
    StartTimer {
        /// Duration in milliseconds.
        ms: u64,
    },
    /// `start-child`.
    StartChild {
        /// Workflow name.
        workflow: String,
        /// JSON input.
        input: String,
    },
    /// `wait-signal`.
    WaitSignal {
        /// Signal name.
        name: String,
    },
    /// `await`.
    Await {
        /// The awaited handle.
        handle: u32,
    },
    /// `await-any`.
    AwaitAny {
        /// The handles raced.
        handles: Vec<u32>,
    },
    /// `cancel`.
    Cancel {
        /// The cancelled handle.
        handle: u32,
    },
    /// `patched`: only journaled when it returned true (a marker).
    Patched {
        /// The change id.
        change_id: String,
    },
    /// `set-custom-status`.
    SetCustomStatus {
        /// JSON status.
        status: String,
    },
    /// `upsert-search-attributes`.
    UpsertSearchAttributes {
        /// The JSON object given.
        attributes: String,
    },
    /// `complete-update`: how the handler of an accepted update ended.
    CompleteUpdate {
        /// The update's id.
        id: String,
        /// The handler's result or failure.
        outcome: Completion,
    },
}

impl HostCall {
    /// The WIT name of the call, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            HostCall::ScheduleActivity { .. } => "schedule-activity",
            HostCall::StartTimer { .. } => "start-timer",
            HostCall::StartChild { .. } => "start-child",
            HostCall::WaitSignal { .. } => "wait-signal",
            HostCall::Await { .. } => "await",
            HostCall::AwaitAny { .. } => "await-any",
            HostCall::Cancel { .. } => "cancel",
            HostCall::Patched { .. } => "patched",
            HostCall::SetCustomStatus { .. } => "set-custom-status",
            HostCall::UpsertSearchAttributes { .. } => "upsert-search-attributes",
            HostCall::CompleteUpdate { .. } => "complete-update",
        }
    }
}

impl fmt::Display for HostCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCall::ScheduleActivity { name, input, options } => write!(
                f,
                "schedule-activity({name}, {input}, timeout {} ms, {} attempts)",
                options.timeout_ms, options.retry.max_attempts
            ),
            HostCall::StartTimer { ms } => write!(f, "start-timer({ms} ms)"),
            HostCall::StartChild { workflow, input } => {
                write!(f, "start-child({workflow}, {input})")
            }
            HostCall::WaitSignal { name } => write!(f, "wait-signal({name})"),
            HostCall::Await { handle } => write!(f, "await(#{handle})"),
            HostCall::AwaitAny { handles } => {
                let hs: Vec<String> = handles.iter().map(|h| format!("#{h}")).collect();
                write!(f, "await-any({})", hs.join(", "))
            }
            HostCall::Cancel { handle } => write!(f, "cancel(#{handle})"),
            HostCall::Patched { change_id } => write!(f, "patched({change_id})"),
            HostCall::SetCustomStatus { status } => write!(f, "set-custom-status({status})"),
            HostCall::UpsertSearchAttributes { attributes } => write!(f, "upsert-search-attributes({attributes})"),
            HostCall::CompleteUpdate { id, outcome: Completion::Ok(v) } => write!(f, "complete-update({id}, ok {v})"),
            HostCall::CompleteUpdate { id, outcome: Completion::Err(e) } => write!(f, "complete-update({id}, err {e})"),
        }
    }
}

/// What the host answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// A new handle.
    Handle {
        /// The handle.
        handle: u32,
    },
    /// A handle completed (await, await-any).
    Completed {
        /// Which handle.
        handle: u32,
        /// How it ended.
        completion: Completion,
    },
    /// A boolean (`patched`).
    Bool {
        /// The value.
        value: bool,
    },
    /// Nothing (cancel, set-custom-status).
    Unit,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Handle { handle } => write!(f, "#{handle}"),
            Reply::Completed { handle, completion: Completion::Ok(v) } => write!(f, "#{handle} ok {v}"),
            Reply::Completed { handle, completion: Completion::Err(e) } => write!(f, "#{handle} err {e}"),
            Reply::Bool { value } => write!(f, "{value}"),
            Reply::Unit => write!(f, "-"),
        }
    }
}

/// The engine settings a run was started with; replay needs the same ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSettings {
    /// NaN canonicalisation.
    pub nan_canonicalization: bool,
    /// Deterministic relaxed SIMD.
    pub relaxed_simd_deterministic: bool,
    /// Linear memory cap per instance, in bytes.
    pub max_memory_bytes: u64,
    /// Longest stretch of guest code without a host call, in milliseconds.
    pub step_budget_ms: u64,
    /// Guest stack limit in bytes.
    pub max_wasm_stack: u64,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "kebab-case")]
pub enum Entry {
    /// The run began (always seq 0).
    Started {
        /// Workflow name.
        workflow: String,
        /// sha256 of the workflow component.
        component_sha256: String,
        /// JSON input.
        input: String,
        /// Seed of the run's random generators (hex, 128 bits).
        seed: String,
        /// Determinism settings and limits.
        engine: EngineSettings,
    },
    /// A host call and its reply.
    Call {
        /// What the workflow asked.
        call: HostCall,
        /// What it was told.
        reply: Reply,
    },
    /// The workflow returned a result.
    Completed {
        /// JSON result.
        result: String,
    },
    /// The workflow returned a failure.
    Failed {
        /// The failure.
        failure: Failure,
    },
    /// From here on the run executes another component, whose replay of
    /// every entry before this one was verified.
    VersionSwitch {
        /// The version it ran before (none for embedded runs).
        from_version: Option<u32>,
        /// The version it runs now.
        to_version: u32,
        /// The component it ran before.
        from_sha256: String,
        /// The component it runs now.
        to_sha256: String,
    },
    /// The run was stopped from outside.
    Terminated {
        /// Why, as given by whoever terminated it.
        reason: String,
    },
    /// This generation of the run ended with `continue-as-new`: the run
    /// goes on in a fresh journal (the next generation) with this input.
    /// The last entry of every generation's journal but the current one's.
    ContinuedAsNew {
        /// JSON input of the next generation.
        input: String,
    },
}

impl Entry {
    /// Whether this entry is a host call (rather than a meta entry).
    pub fn is_call(&self) -> bool {
        matches!(self, Entry::Call { .. })
    }

    /// Whether this entry is a meta entry (start, version switch), which
    /// replay skips.
    pub fn is_meta(&self) -> bool {
        matches!(self, Entry::Started { .. } | Entry::VersionSwitch { .. })
    }

    /// Whether this entry ends the run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Entry::Completed { .. } | Entry::Failed { .. } | Entry::Terminated { .. } | Entry::ContinuedAsNew { .. }
        )
    }

    /// A short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Entry::Started { .. } => "started",
            Entry::Call { call, .. } => call.kind(),
            Entry::Completed { .. } => "completed",
            Entry::Failed { .. } => "failed",
            Entry::Terminated { .. } => "terminated",
            Entry::VersionSwitch { .. } => "version-switch",
            Entry::ContinuedAsNew { .. } => "continued-as-new",
        }
    }
}

/// An entry with its position and the workflow time it was written at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the run's journal, from 0.
    pub seq: u64,
    /// Workflow time (ms since the epoch) when the entry was appended live.
    pub at_ms: u64,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
}

/// A record as `cairn journal ID --json` exports it, one per line: with the
/// run and the generation it belongs to, so `cairn replay --journal`
/// replays it under the run's own id (a workflow that reads its run id
/// sees the same one). Exports of older hosts lack both fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedRecord {
    /// The run the record belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Its generation (0 until the run first continued as new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
}
