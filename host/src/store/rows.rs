//! The rows the store keeps, whatever the backend: runs, deployments,
//! buffered signals and completions.

use crate::journal::{Completion, Failure};
use serde::{Deserialize, Serialize};

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
    /// Held by an operator (`cairn pause`): it takes no steps until
    /// resumed; timers that fire and signals that arrive are kept for it.
    Paused,
    /// Waiting for a slot of its concurrency limit: started (durable) but
    /// not yet executing.
    Queued,
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
            RunStatus::Paused => "paused",
            RunStatus::Queued => "queued",
        }
    }

    /// Parses [`RunStatus::as_str`]'s spelling.
    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Diverged,
            RunStatus::Terminated,
            RunStatus::Paused,
            RunStatus::Queued,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the run will not advance again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Terminated)
    }

    /// Whether the run holds a slot of its concurrency limit: it started
    /// and has not ended (running, paused, or diverged and waiting for an
    /// upgrade).
    pub fn holds_slot(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Paused | RunStatus::Diverged)
    }
}

/// The concurrency bucket of a run whose workflow has a limit: its key
/// (empty for runs started without one) and its priority among the runs
/// waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The `concurrency_key` it was started with.
    pub key: String,
    /// 1 (first) to 5 (last); 3 by default.
    pub priority: u8,
}

/// A workflow's concurrency limits: at most `limit` runs of a key at once
/// (runs started without a key share the key ""), or the limit given for
/// the key in `keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Concurrency {
    /// For every key without one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Per key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keys: std::collections::BTreeMap<String, u32>,
    /// How fast runs of one key may start (each key its own bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// The rate of one key, in place of `rate`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub key_rates: std::collections::BTreeMap<String, Rate>,
}

/// A token bucket: one start every `every_ms`, up to `burst` at once after
/// a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// One token per this many ms.
    pub every_ms: u64,
    /// Most tokens saved up.
    pub burst: u32,
}

/// How a concurrency bucket admits queued runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Most runs holding slots at once.
    pub limit: u32,
    /// How fast they may start.
    pub rate: Option<Rate>,
}

impl Concurrency {
    /// The limit of `key`, if it has one.
    pub fn limit_of(&self, key: &str) -> Option<u32> {
        self.keys.get(key).copied().or(self.limit)
    }

    /// The rate of `key`, if it has one.
    pub fn rate_of(&self, key: &str) -> Option<Rate> {
        self.key_rates.get(key).copied().or(self.rate)
    }

    /// How `key`'s bucket admits runs, if it is limited at all.
    pub fn admission(&self, key: &str) -> Option<Admission> {
        let (limit, rate) = (self.limit_of(key), self.rate_of(key));
        if limit.is_none() && rate.is_none() {
            return None;
        }
        Some(Admission { limit: limit.unwrap_or(u32::MAX), rate })
    }

    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.limit.is_some() || !self.keys.is_empty() || self.rate.is_some() || !self.key_rates.is_empty()
    }
}

/// Limits on an activity's attempts: at most so many in flight at once and
/// so many started per time, per key, across every host of a store. The
/// key is taken from each call's input at `key` (a JSON pointer such as
/// `/customer`); calls without one share the key "".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ActivityLimit {
    /// Where in the input the key is (RFC 6901 JSON pointer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The limits, per key.
    #[serde(flatten)]
    pub limits: Concurrency,
}

impl ActivityLimit {
    /// The key of a call with `input` (JSON text): a string as it is,
    /// anything else as its JSON text; "" without a pointer or a value.
    pub fn key_of(&self, input: &str) -> String {
        let Some(pointer) = &self.key else { return String::new() };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(input) else { return String::new() };
        let key = match value.pointer(pointer) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        // Stored as text on PostgreSQL, which takes no NUL; and bounded.
        key.replace('\0', "\u{fffd}").chars().take(256).collect()
    }
}

impl Admission {
    /// No limit and no rate: every queued run may go.
    pub const OPEN: Admission = Admission { limit: u32::MAX, rate: None };
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
    /// The shard the run belongs to, chosen when it was created and never
    /// recomputed: which host may write it (0 on a single host).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shard: u32,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Last status change, ms since the epoch.
    pub updated_ms: u64,
    /// Its concurrency bucket, if its workflow had a limit when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// Search attributes the workflow set (`upsert-search-attributes`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub search: std::collections::BTreeMap<String, crate::search::SearchValue>,
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
    /// Bumped by every change. A write of revision N lands only over
    /// revision N - 1 (or the very same row, a retried commit), so two
    /// hosts changing a deployment at once cannot both win: the second is
    /// refused and tries again on what the first wrote. 0: unconditional
    /// (rows of older Cairns).
    #[serde(default)]
    pub revision: u64,
    /// Retired versions whose component may still be needed by finished
    /// runs; collected (bytes and artifacts deleted) once no run refers to
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Version>,
    /// How long finished runs of this workflow are kept (`None`: the
    /// host's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Concurrency limits of a workflow's runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// An activity component's limits, by function (`*`: every function
    /// without limits of its own). An activity served by external workers
    /// or built in has a deployment with no versions to hold them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub activity_limits: std::collections::BTreeMap<String, ActivityLimit>,
}

impl Deployment {
    /// A deployment of `name` with no versions yet.
    pub fn new(name: &str, kind: ComponentKind) -> Deployment {
        Deployment {
            name: name.to_owned(),
            kind,
            versions: Vec::new(),
            current: 0,
            last_version: 0,
            revision: 0,
            retired: Vec::new(),
            retention_ms: None,
            concurrency: None,
            activity_limits: Default::default(),
        }
    }

    /// The current version.
    pub fn current_version(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == self.current)
    }
}

/// A schedule: when to start runs of a workflow, and what it has done so
/// far. Changed by compare-and-swap on `revision`, as deployments are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name: the prefix of the ids of the runs it starts.
    pub name: String,
    /// Bumped by every change (see [`Deployment::revision`]).
    pub revision: u64,
    /// What it starts and when.
    pub spec: ScheduleSpec,
    /// What it did.
    pub state: ScheduleState,
}

/// What a schedule starts, when, and what it does when firings overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// The deployed workflow it starts (its current version at each firing).
    pub workflow: String,
    /// The input of every run, JSON text.
    pub input: String,
    /// When it fires.
    pub when: When,
    /// What a firing does while the previous run is still running.
    pub overlap: Overlap,
    /// Firings missed while no host ran the schedule are made up when one
    /// comes back only if they are at most this old.
    pub catchup_window_ms: u64,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum When {
    /// A cron expression (5 fields, or 6 with seconds first) in a time zone.
    Cron {
        /// The expression.
        expression: String,
        /// An IANA time zone (`Europe/Berlin`), `UTC` by default.
        timezone: String,
    },
    /// Every `every_ms`, at multiples of it since the Unix epoch shifted by
    /// `offset_ms` (every hour at 5 past: 1 h, offset 5 min).
    Every {
        /// The interval.
        every_ms: u64,
        /// The phase.
        offset_ms: u64,
    },
    /// Once (a delayed start).
    At {
        /// When, ms since the epoch.
        at_ms: u64,
    },
}

/// What a firing does while the schedule's previous run still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// The firing is skipped.
    #[default]
    Skip,
    /// One firing waits and starts when the previous run ends; more are
    /// skipped.
    BufferOne,
    /// Every firing starts its run.
    AllowAll,
    /// The previous run is cancelled; the firing starts when it has ended.
    CancelPrevious,
}

impl Overlap {
    /// Its name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer-one",
            Overlap::AllowAll => "allow-all",
            Overlap::CancelPrevious => "cancel-previous",
        }
    }
}

/// What a schedule did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScheduleState {
    /// When it was made, ms since the epoch.
    pub created_ms: u64,
    /// Every firing at or before this time was handled (started, skipped
    /// or missed).
    pub cursor_ms: u64,
    /// Paused: it does not fire; firings due meanwhile are not made up.
    pub paused: bool,
    /// Why it was paused, as the operator said.
    #[serde(default)]
    pub note: String,
    /// A one-time schedule that fired.
    #[serde(default)]
    pub done: bool,
    /// The run it started last.
    #[serde(default)]
    pub last_run: Option<String>,
    /// A firing waiting for the last run to end (`buffer-one`,
    /// `cancel-previous`).
    #[serde(default)]
    pub buffered_ms: Option<u64>,
    /// Runs started.
    #[serde(default)]
    pub started: u64,
    /// Firings skipped because the previous run was still running.
    #[serde(default)]
    pub skipped: u64,
    /// Firings older than the catch-up window when a host came to them.
    #[serde(default)]
    pub missed: u64,
    /// The latest firings, newest last (at most [`RECENT_FIRINGS`]).
    #[serde(default)]
    pub recent: Vec<Firing>,
}

/// How many firings a schedule remembers.
pub const RECENT_FIRINGS: usize = 20;

/// One firing of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    /// Its time, ms since the epoch.
    pub at_ms: u64,
    /// The run it names (started or not).
    pub run_id: String,
    /// `started`, `skipped`, `missed`, `buffered`, `triggered`, `backfilled`.
    pub outcome: String,
}

/// Buffered signals: (count, bytes) of one run and of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffered {
    /// The run's signals.
    pub run: (u64, u64),
    /// Every run's.
    pub all: (u64, u64),
}

/// Which runs a paged query asks for. Every field narrows it; a page holds
/// at most `limit` runs in run id order (ids the host makes are
/// time-ordered), starting after `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in one of these statuses (empty: any).
    pub statuses: Vec<RunStatus>,
    /// Only runs on this deployed version (with `workflow`).
    pub version: Option<u32>,
    /// Only runs in this shard.
    pub shard: Option<u32>,
    /// Start after this run id (the previous page's `next`).
    pub after: Option<String>,
    /// Newest first.
    pub descending: bool,
    /// At most this many runs (at least 1).
    pub limit: usize,
    /// Only runs with this search attribute set to this value (read from
    /// the attribute's index).
    pub attribute: Option<(String, crate::search::SearchValue)>,
}

impl RunQuery {
    /// Every run, a page at a time.
    pub fn all() -> RunQuery {
        RunQuery { limit: RunQuery::PAGE, ..RunQuery::default() }
    }

    /// Runs in `status`, a page at a time.
    pub fn status(status: RunStatus) -> RunQuery {
        RunQuery { statuses: vec![status], ..RunQuery::all() }
    }

    /// Runs of `workflow`, a page at a time.
    pub fn workflow(workflow: &str) -> RunQuery {
        RunQuery { workflow: Some(workflow.to_owned()), ..RunQuery::all() }
    }

    /// The page size of the queries above.
    pub const PAGE: usize = 500;

    /// Whether `meta` is one of the runs asked for (the bounds `after` and
    /// `limit` aside).
    pub fn matches(&self, meta: &RunMeta) -> bool {
        self.workflow.as_ref().is_none_or(|w| &meta.workflow == w)
            && (self.statuses.is_empty() || self.statuses.contains(&meta.status))
            && self.version.is_none_or(|v| meta.version == Some(v))
            && self.shard.is_none_or(|s| meta.shard == s)
            && self.attribute.as_ref().is_none_or(|(name, value)| meta.search.get(name) == Some(value))
    }

    /// Whether `id` comes after the cursor in the query's order.
    pub fn after_cursor(&self, id: &str) -> bool {
        match &self.after {
            None => true,
            Some(after) if self.descending => id < after.as_str(),
            Some(after) => id > after.as_str(),
        }
    }
}

/// One page of a [`RunQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPage {
    /// The runs, in the query's order.
    pub runs: Vec<RunMeta>,
    /// The cursor of the next page (`RunQuery::after`), if there are more.
    pub next: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_its_own_limit_and_rate_or_the_default_ones() {
        let rate = |every_ms| Rate { every_ms, burst: 1 };
        let c = Concurrency {
            limit: Some(3),
            keys: [("big".to_owned(), 10)].into(),
            rate: Some(rate(100)),
            key_rates: [("slow".to_owned(), rate(1000))].into(),
        };
        assert_eq!(c.admission("any"), Some(Admission { limit: 3, rate: Some(rate(100)) }));
        assert_eq!(c.admission("big"), Some(Admission { limit: 10, rate: Some(rate(100)) }));
        assert_eq!(c.admission("slow"), Some(Admission { limit: 3, rate: Some(rate(1000)) }));
        let only_one = Concurrency { key_rates: [("slow".to_owned(), rate(1000))].into(), ..Default::default() };
        assert!(only_one.is_set());
        assert_eq!(only_one.admission("other"), None, "a key without limits is not limited");
        assert_eq!(only_one.admission("slow"), Some(Admission { limit: u32::MAX, rate: Some(rate(1000)) }));
    }

    #[test]
    fn an_activity_call_gets_its_key_from_its_input() {
        let limit = |key: Option<&str>| ActivityLimit { key: key.map(str::to_owned), limits: Concurrency::default() };
        let input = r#"{"customer":"acme","order":{"region":"eu","n":7},"none":null}"#;
        assert_eq!(limit(Some("/customer")).key_of(input), "acme");
        assert_eq!(limit(Some("/order/region")).key_of(input), "eu");
        assert_eq!(limit(Some("/order/n")).key_of(input), "7", "a number as its JSON text");
        // An object's keys sorted: the same object is the same key however written.
        assert_eq!(limit(Some("/order")).key_of(input), r#"{"n":7,"region":"eu"}"#);
        assert_eq!(limit(Some("/none")).key_of(input), "");
        assert_eq!(limit(Some("/missing")).key_of(input), "");
        assert_eq!(limit(None).key_of(input), "", "no pointer: one key for all");
        assert_eq!(limit(Some("/customer")).key_of("not json"), "");
    }
}
