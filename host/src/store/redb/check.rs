//! The store's integrity check (`cairn check`): walks every table and
//! reports what does not fit together.

use super::schema::*;
use super::{db_err, RedbStorage};
use crate::journal::{self, Entry};
use crate::store::{Deployment, RunMeta, RunStatus, StoreError, StoredCompletion};
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// A journal row: its seq and its entry, or why it does not decode.
type Checked = (u64, Result<Entry, String>);

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

impl RedbStorage {
    /// Checks that the tables agree with each other: every run has a
    /// contiguous journal starting with its start entry, its status matches
    /// its last entry, its component is stored, its index rows are right,
    /// and nothing refers to a run or component that does not exist.
    pub(super) fn check_tables(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let components: HashSet<String> = {
            let t = txn.open_table(COMPONENTS).map_err(db_err)?;
            let mut set = HashSet::new();
            for row in t.iter().map_err(db_err)? {
                set.insert(row.map_err(db_err)?.0.value().to_owned());
            }
            set
        };
        let mut runs: BTreeMap<String, RunMeta> = BTreeMap::new();
        for row in txn.open_table(RUNS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            match serde_json::from_slice::<RunMeta>(v.value()) {
                Ok(meta) => {
                    runs.insert(k.value().to_owned(), meta);
                }
                Err(e) => report.problems.push(format!("run {}: metadata does not parse: {e}", k.value())),
            }
        }
        report.runs = runs.len();

        // Journal: contiguous seqs from 0 per run, decodable, consistent.
        let mut journals: BTreeMap<String, Vec<Checked>> = BTreeMap::new();
        for row in txn.open_table(JOURNAL).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (run, seq) = k.value();
            let entry = journal::decode(v.value()).map(|r| r.entry).map_err(|e| e.to_string());
            journals.entry(run.to_owned()).or_default().push((seq, entry));
        }
        for (run, entries) in &journals {
            report.entries += entries.len();
            let Some(meta) = runs.get(run) else {
                report.problems.push(format!("journal of run {run} exists but the run does not"));
                continue;
            };
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
                RunStatus::Running | RunStatus::Diverged => terminals == 0,
            };
            if !consistent {
                report.problems.push(format!(
                    "run {run}: status {} does not match its journal's last entry",
                    meta.status.as_str()
                ));
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
            Some(m) if m.status.is_final() => {
                report.warnings.push(format!("{what} belongs to run {run}, which has ended"))
            }
            Some(_) => {}
        };
        for row in txn.open_table(COMPLETIONS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (run, handle) = k.value();
            live(run, format!("completion #{handle}"), &mut report);
            match serde_json::from_slice::<StoredCompletion>(v.value()) {
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
        for row in txn.open_table(TIMERS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (_, run, handle) = k.value();
            live(run, format!("timer #{handle}"), &mut report);
        }
        for row in txn.open_table(SIGNALS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (run, seq) = k.value();
            live(run, format!("signal {seq}"), &mut report);
        }
        for row in txn.open_table(ATTEMPTS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (run, handle) = k.value();
            live(run, format!("the retry count of activity #{handle}"), &mut report);
        }
        for row in txn.open_table(DEPLOYMENTS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            match serde_json::from_slice::<Deployment>(v.value()) {
                Ok(d) => {
                    for version in &d.versions {
                        if !components.contains(&version.sha256) {
                            report
                                .problems
                                .push(format!("{} version {}: its component is not stored", d.name, version.version));
                        }
                    }
                    if d.current_version().is_none() {
                        report.problems.push(format!("{}: its current version {} does not exist", d.name, d.current));
                    }
                }
                Err(e) => report.problems.push(format!("deployment {}: does not parse: {e}", k.value())),
            }
        }
        // The run indexes answer every run query: a row missing from one
        // hides a run from lists and recovery.
        let (missing, extra) = super::index::disagreements(&*self.db()?)?;
        report.problems.extend(missing.into_iter().map(|m| format!("run index: {m}")));
        report.problems.extend(extra.into_iter().map(|e| format!("run index: {e}")));
        let mut timers = HashSet::new();
        for row in txn.open_table(TIMERS).map_err(db_err)?.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (due, run, handle) = key.value();
            timers.insert((run.to_owned(), due, handle));
        }
        for row in txn.open_table(RUN_TIMERS).map_err(db_err)?.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (run, due, handle) = key.value();
            if !timers.remove(&(run.to_owned(), due, handle)) {
                report.problems.push(format!("run {run}: its timer index lists timer #{handle}, which is not armed"));
            }
        }
        for (run, _, handle) in timers {
            report.problems.push(format!("run {run}: timer #{handle} is armed but not in its timer index"));
        }
        Ok(report)
    }
}
