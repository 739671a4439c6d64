//! `cairn check` on the embedded store: its rows, read in one read
//! transaction, judged by the common rules (`store/check.rs`), plus the
//! agreement of its index tables with the rows they index.

use super::schema::*;
use super::{db_err, RedbStorage};
use crate::store::check::{judge, CheckReport, Rows};
use crate::store::StoreError;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::HashSet;

impl RedbStorage {
    /// Checks the store's rows, and that its indexes list exactly them.
    pub(super) fn check_tables(&self) -> Result<CheckReport, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(db_err)?;
        let mut rows = Rows::default();
        for row in txn.open_table(COMPONENTS).map_err(db_err)?.iter().map_err(db_err)? {
            rows.components.insert(row.map_err(db_err)?.0.value().to_owned());
        }
        for row in txn.open_table(RUNS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            rows.runs.insert(k.value().to_owned(), serde_json::from_slice(v.value()).map_err(|e| e.to_string()));
        }
        for row in txn.open_table(JOURNAL).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (run, seq) = k.value();
            rows.journals.entry(run.to_owned()).or_default().push((seq, v.value().to_vec()));
        }
        for row in txn.open_table(COMPLETIONS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (run, handle) = k.value();
            rows.completions.push((run.to_owned(), handle, v.value().to_vec()));
        }
        let mut armed = HashSet::new();
        for row in txn.open_table(TIMERS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (due, run, handle) = k.value();
            rows.timers.push((run.to_owned(), handle));
            armed.insert((run.to_owned(), due, handle));
        }
        for row in txn.open_table(SIGNALS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (run, seq) = k.value();
            rows.signals.push((run.to_owned(), seq));
        }
        for row in txn.open_table(ATTEMPTS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (run, handle) = k.value();
            rows.attempts.push((run.to_owned(), handle));
        }
        for row in txn.open_table(DEPLOYMENTS).map_err(db_err)?.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            rows.deployments.push((k.value().to_owned(), v.value().to_vec()));
        }
        let mut report = judge(rows);

        // The run indexes answer every run query: a row missing from one
        // hides a run from lists and recovery.
        let (missing, extra) = super::index::disagreements(&db)?;
        report.problems.extend(missing.into_iter().map(|m| format!("run index: {m}")));
        report.problems.extend(extra.into_iter().map(|e| format!("run index: {e}")));
        for row in txn.open_table(RUN_TIMERS).map_err(db_err)?.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            let (run, due, handle) = key.value();
            if !armed.remove(&(run.to_owned(), due, handle)) {
                report.problems.push(format!("run {run}: its timer index lists timer #{handle}, which is not armed"));
            }
        }
        for (run, _, handle) in armed {
            report.problems.push(format!("run {run}: timer #{handle} is armed but not in its timer index"));
        }
        Ok(report)
    }
}
