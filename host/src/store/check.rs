//! The store's integrity check (`cairn check`), whatever the backend: the
//! backend reads its rows into [`Rows`], and [`judge`] says what does not
//! fit together.

use super::{Deployment, RunMeta, RunStatus, StoredCompletion};
use crate::journal::{self, Entry};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// What the check found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Runs examined.
    pub runs: usize,
    /// Journal entries examined.
    pub entries: usize,
    /// Inconsistencies: the store is damaged or was written wrongly.
    pub problems: Vec<String>,
    /// Leftovers that are harmless (e.g. a completion that arrived after
    /// its run ended).
    pub warnings: Vec<String>,
}

/// Every row the check looks at, as the backend read it (one consistent
/// snapshot).
#[derive(Default)]
pub(crate) struct Rows {
    /// Stored component hashes.
    pub components: HashSet<String>,
    /// Run rows by id: parsed, or why not.
    pub runs: BTreeMap<String, Result<RunMeta, String>>,
    /// Journals by run, in seq order: (seq, encoded record).
    pub journals: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
    /// (run, handle, completion row).
    pub completions: Vec<(String, u32, Vec<u8>)>,
    /// (run, handle) of each armed timer.
    pub timers: Vec<(String, u32)>,
    /// (run, arrival) of each buffered signal.
    pub signals: Vec<(String, u64)>,
    /// (run, handle) of each retry count.
    pub attempts: Vec<(String, u32)>,
    /// Deployment rows by name.
    pub deployments: Vec<(String, Vec<u8>)>,
}

/// Checks that the rows agree with each other: every run has a contiguous
/// journal starting with its start entry, its status matches its last
/// entry, its component is stored, and nothing refers to a run or
/// component that does not exist.
pub(crate) fn judge(rows: Rows) -> CheckReport {
    let mut report = CheckReport::default();
    let Rows { components, runs: parsed, journals, completions, timers, signals, attempts, deployments } = rows;
    let mut runs: BTreeMap<String, RunMeta> = BTreeMap::new();
    for (id, meta) in parsed {
        match meta {
            Ok(meta) => {
                runs.insert(id, meta);
            }
            Err(e) => report.problems.push(format!("run {id}: metadata does not parse: {e}")),
        }
    }
    report.runs = runs.len();

    // Journal: contiguous seqs from 0 per run, decodable, consistent.
    for (run, rows) in &journals {
        report.entries += rows.len();
        let Some(meta) = runs.get(run) else {
            report.problems.push(format!("journal of run {run} exists but the run does not"));
            continue;
        };
        let entries: Vec<(u64, Result<Entry, String>)> = rows
            .iter()
            .map(|(seq, bytes)| (*seq, journal::decode(bytes).map(|r| r.entry).map_err(|e| e.to_string())))
            .collect();
        for (i, (seq, entry)) in entries.iter().enumerate() {
            if *seq != i as u64 {
                report.problems.push(format!("run {run}: journal has seq {seq} where {i} was expected (a gap)"));
                break;
            }
            if let Err(e) = entry {
                report.problems.push(format!("run {run}, seq {seq}: {e}"));
            }
        }
        let decoded: Vec<&Entry> = entries.iter().filter_map(|(_, e)| e.as_ref().ok()).collect();
        if !matches!(decoded.first(), Some(Entry::Started { .. })) {
            report.problems.push(format!("run {run}: journal does not begin with a start entry"));
        }
        let terminals = decoded.iter().filter(|e| e.is_terminal()).count();
        let last_is_terminal = decoded.last().is_some_and(|e| e.is_terminal());
        if terminals > 1 || (terminals == 1 && !last_is_terminal) {
            report.problems.push(format!("run {run}: the journal goes on after the run ended"));
        }
        let consistent = match meta.status {
            RunStatus::Completed => matches!(decoded.last(), Some(Entry::Completed { .. })),
            RunStatus::Terminated => matches!(decoded.last(), Some(Entry::Terminated { .. })),
            // A workflow failure is journaled; a trap is not.
            RunStatus::Failed => terminals == 0 || matches!(decoded.last(), Some(Entry::Failed { .. })),
            RunStatus::Running | RunStatus::Diverged | RunStatus::Paused | RunStatus::Queued => terminals == 0,
        };
        if !consistent {
            report
                .problems
                .push(format!("run {run}: status {} does not match its journal's last entry", meta.status.as_str()));
        }
        // Each completion is consumed at most once.
        let mut consumed = HashSet::new();
        for entry in &decoded {
            if let Entry::Call { call: journal::HostCall::Await { handle }, .. } = entry {
                if !consumed.insert(*handle) {
                    report.warnings.push(format!("run {run}: handle #{handle} awaited more than once"));
                }
            }
        }
    }
    for (id, meta) in &runs {
        if !journals.contains_key(id) {
            report.problems.push(format!("run {id} has no journal"));
        }
        if !components.contains(&meta.component_sha256) {
            report.problems.push(format!("run {id}: its component {} is not stored", meta.component_sha256));
        }
        if let Some(parent) = &meta.parent {
            if !runs.contains_key(&parent.run_id) {
                report.problems.push(format!("run {id}: its parent {} does not exist", parent.run_id));
            }
        }
    }

    let live = |run: &str, what: String, report: &mut CheckReport| match runs.get(run) {
        None => report.problems.push(format!("{what} belongs to run {run}, which does not exist")),
        Some(m) if m.status.is_final() => report.warnings.push(format!("{what} belongs to run {run}, which has ended")),
        Some(_) => {}
    };
    for (run, handle, row) in &completions {
        live(run, format!("completion #{handle}"), &mut report);
        match serde_json::from_slice::<StoredCompletion>(row) {
            Err(e) => report.problems.push(format!("completion #{handle} of run {run} does not parse: {e}")),
            Ok(c) => {
                if let Some(meta) = runs.get(run).filter(|m| !c.is_for(m.generation)) {
                    report.warnings.push(format!(
                        "completion #{handle} of run {run} belongs to its generation {}, not the current {}; it is never delivered (work that finished after continue-as-new)",
                        c.generation.unwrap_or_default(),
                        meta.generation
                    ));
                }
            }
        }
    }
    for (run, handle) in &timers {
        live(run, format!("timer #{handle}"), &mut report);
    }
    for (run, seq) in &signals {
        live(run, format!("signal {seq}"), &mut report);
    }
    for (run, handle) in &attempts {
        live(run, format!("the retry count of activity #{handle}"), &mut report);
    }
    for (name, row) in &deployments {
        match serde_json::from_slice::<Deployment>(row) {
            Ok(d) => {
                for version in &d.versions {
                    if !components.contains(&version.sha256) {
                        report
                            .problems
                            .push(format!("{} version {}: its component is not stored", d.name, version.version));
                    }
                }
                // No versions at all: a deployment holding only the limits
                // of an activity served by workers or built in.
                if d.current_version().is_none() && !d.versions.is_empty() {
                    report.problems.push(format!("{}: its current version {} does not exist", d.name, d.current));
                }
            }
            Err(e) => report.problems.push(format!("deployment {name}: does not parse: {e}")),
        }
    }
    report
}
