//! Retention: finished runs are deleted once they are older than their
//! workflow's retention period (or the host's default), and the components
//! of retired versions are deleted once no run refers to them, so the
//! store stops growing without bound.
//!
//! One host sweeps at a time (the holder of shard 0: every host on the
//! embedded store), every `--retention-sweep-ms`. Finished runs are read
//! oldest first from an index by end time, never by a scan of every run;
//! deleting a run takes all of its rows in one transaction.

use crate::runtime::{now_ms, Runtime};
use crate::store::{CommitError, RunQuery, StoreError, Write};
use std::collections::HashSet;
use std::time::Duration;

/// Runs deleted per transaction.
const RUNS_PER_BATCH: usize = 100;

/// Most runs one sweep deletes (the rest go in the next).
const RUNS_PER_SWEEP: usize = 10_000;

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Finished runs past their retention.
    pub runs: usize,
    /// Components of retired versions no run refers to.
    pub components: usize,
}

/// Deletes what is past retention.
#[derive(Clone)]
pub struct Retention {
    rt: Runtime,
    default_ms: Option<u64>,
}

impl Retention {
    /// Retention over `rt`'s store; `default_ms` for workflows that set
    /// none (`None`: keep their runs forever).
    pub fn new(rt: Runtime, default_ms: Option<u64>) -> Retention {
        Retention { rt, default_ms }
    }

    /// Sweeps every `every` while this host holds shard 0.
    pub async fn drive(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.rt.coordinator().owns(0) {
                continue;
            }
            match self.sweep().await {
                Ok(swept) if swept != Swept::default() => {
                    tracing::info!(runs = swept.runs, components = swept.components, "retention swept")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention could not sweep; trying again later"),
            }
        }
    }

    /// One sweep: expired runs, then unreferenced retired components.
    pub async fn sweep(&self) -> Result<Swept, StoreError> {
        let store = self.rt.store();
        let mut swept = Swept::default();
        let now = now_ms();
        for d in store.deployments().await? {
            let Some(retention) = d.retention_ms.or(self.default_ms) else { continue };
            let before = now.saturating_sub(retention);
            while swept.runs < RUNS_PER_SWEEP {
                let expired = store.ended_before(&d.name, before, RUNS_PER_BATCH).await?;
                if expired.is_empty() {
                    break;
                }
                swept.runs += expired.len();
                let batch = expired.into_iter().map(|run_id| Write::DeleteRun { run_id }).collect();
                store.commit(batch).await?;
            }
        }
        swept.components = self.collect_components().await?;
        Ok(swept)
    }

    /// Deletes the components of retired versions that no run (of any
    /// status) and no other version refers to.
    async fn collect_components(&self) -> Result<usize, StoreError> {
        let store = self.rt.store();
        let deployments = store.deployments().await?;
        let mut collected = 0;
        for mut d in deployments.clone() {
            if d.retired.is_empty() {
                continue;
            }
            let mut unused = Vec::new();
            for v in &d.retired {
                let query = RunQuery { version: Some(v.version), limit: 1, ..RunQuery::workflow(&d.name) };
                if store.runs(&query).await?.runs.is_empty() {
                    unused.push(v.clone());
                }
            }
            if unused.is_empty() {
                continue;
            }
            d.retired.retain(|v| !unused.contains(v));
            // Another version (of any deployment) with the same bytes keeps
            // them.
            let kept: HashSet<&str> = deployments
                .iter()
                .flat_map(|other| {
                    let retired = other.retired.iter().filter(|v| other.name != d.name || !unused.contains(v));
                    let versions = other.versions.iter();
                    versions.chain(retired).map(|v| v.sha256.as_str())
                })
                .collect();
            let mut batch = vec![];
            for v in &unused {
                if !kept.contains(v.sha256.as_str()) {
                    batch.push(Write::DeleteComponent { sha256: v.sha256.clone() });
                }
            }
            let deleting = batch.len();
            d.revision += 1;
            batch.insert(0, Write::PutDeployment(d.clone()));
            match store.commit(batch).await {
                Ok(()) => {
                    collected += deleting;
                    tracing::info!(workflow = %d.name, versions = unused.len(), components = deleting, "collected retired versions");
                }
                // A deploy changed it meanwhile: the next sweep tries again.
                Err(StoreError::Commit(CommitError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(collected)
    }
}
