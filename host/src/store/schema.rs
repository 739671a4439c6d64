//! Table definitions and the rows stored in them.

use crate::journal::{Completion, Failure};
use redb::{TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// run id → [`RunMeta`] (JSON).
pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// (run id, generation, seq) → encoded journal record of a generation that
/// ended with continue-as-new.
pub(super) const HISTORY: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("history");
/// (run id, seq) → encoded journal record.
pub(super) const JOURNAL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("journal");
/// (run id, handle) → [`StoredCompletion`] (JSON), until the run consumes it.
pub(super) const COMPLETIONS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("completions");
/// (due ms, run id, handle) → (), one row per armed timer.
pub(super) const TIMERS: TableDefinition<(u64, &str, u32), ()> = TableDefinition::new("timers");
/// (run id, arrival seq) → [`StoredSignal`] (JSON): signals sent to a run and
/// not yet consumed, in arrival order.
pub(super) const SIGNALS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("signals");
/// deployed name → [`Deployment`] (JSON): its versions and the current one.
pub(super) const DEPLOYMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("deployments");
/// (run id, handle) → failed attempts of an activity still being retried.
pub(super) const ATTEMPTS: TableDefinition<(&str, u32), u32> = TableDefinition::new("attempts");
/// component sha256 → component bytes.
pub(super) const COMPONENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("components");
/// (component sha256, engine fingerprint) → precompiled artifact.
pub(super) const COMPILED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("compiled");

/// Store-wide values: the write-ahead log's current generation.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(RUNS)?;
    txn.open_table(JOURNAL)?;
    txn.open_table(HISTORY)?;
    txn.open_table(COMPLETIONS)?;
    txn.open_table(TIMERS)?;
    txn.open_table(SIGNALS)?;
    txn.open_table(DEPLOYMENTS)?;
    txn.open_table(ATTEMPTS)?;
    txn.open_table(COMPONENTS)?;
    txn.open_table(COMPILED)?;
    txn.open_table(META)?;
    Ok(())
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Started and not finished.
    Running,
    /// The workflow returned a result.
    Completed,
    /// The workflow returned a failure, or its code trapped.
    Failed,
    /// Replay found the code no longer matches the journal; the run is
    /// parked until it is upgraded, cancelled or terminated.
    Diverged,
    /// Stopped from outside by `terminate`.
    Terminated,
}

impl RunStatus {
    /// The status as the API and CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Diverged => "diverged",
            RunStatus::Terminated => "terminated",
        }
    }

    /// Parses [`RunStatus::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<RunStatus> {
        [RunStatus::Running, RunStatus::Completed, RunStatus::Failed, RunStatus::Diverged, RunStatus::Terminated]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether the run will not advance again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Terminated)
    }
}

/// A run's metadata row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// sha256 of the component the run executes.
    pub component_sha256: String,
    /// The deployed version it executes (none for embedded runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Status.
    pub status: RunStatus,
    /// JSON input.
    pub input: String,
    /// JSON result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Failure, once failed; or the divergence of a diverged run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Latest custom status (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_status: Option<String>,
    /// The run that started this one as a child, and its handle for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// How many times the run continued as new (0 for the first journal).
    #[serde(default)]
    pub generation: u32,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Last status change, ms since the epoch.
    pub updated_ms: u64,
}

/// Where a child run reports its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    /// The parent run.
    pub run_id: String,
    /// The parent's handle for the child.
    pub handle: u32,
    /// The parent's generation that started the child: once the parent has
    /// continued as new, its handle numbers mean other operations, and the
    /// child's end is not news for it. `None` in links written before
    /// generations were recorded (taken as the parent's current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

/// A signal waiting to be consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSignal {
    /// Signal name.
    pub name: String,
    /// JSON payload.
    pub payload: String,
}

/// A completion that arrived from outside and waits to be consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCompletion {
    /// How the operation ended.
    pub completion: Completion,
    /// Arrival order within the run: `await-any` picks the lowest, which is
    /// stable across restarts because arrivals only ever grow.
    pub arrival: u64,
    /// The generation of the run the handle belongs to. Handle numbers
    /// restart with each generation (continue-as-new), so a completion of an
    /// earlier generation's handle is stale for the current one and is
    /// never matched to it. `None` in rows written before generations were
    /// recorded (taken as the run's current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

impl StoredCompletion {
    /// Whether this completion is for generation `generation`'s handles.
    pub fn is_for(&self, generation: u32) -> bool {
        self.generation.is_none_or(|g| g == generation)
    }
}

/// What a deployed component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// A workflow (the `workflow` world).
    Workflow,
    /// An activity component (the `activity` world).
    Activity,
}

impl ComponentKind {
    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Workflow => "workflow",
            ComponentKind::Activity => "activity",
        }
    }
}

/// One deployed version of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, ...
    pub version: u32,
    /// sha256 of its component.
    pub sha256: String,
    /// When it was deployed, ms since the epoch.
    pub deployed_ms: u64,
}

/// A deployed name: a workflow or an activity component, with its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The name runs and activity calls use.
    pub name: String,
    /// Workflow or activity.
    pub kind: ComponentKind,
    /// Every version, oldest first.
    pub versions: Vec<Version>,
    /// The version new runs (or activity calls) use.
    pub current: u32,
    /// The highest version number ever given (retired ones included), so
    /// numbers are never reused.
    #[serde(default)]
    pub last_version: u32,
}

impl Deployment {
    /// The current version.
    pub fn current_version(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == self.current)
    }
}
