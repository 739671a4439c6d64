//! Replay-verified hot swap: moving live runs to another version of their
//! workflow only when the new code reproduces every journaled call.
//!
//! A run is verified by replaying its journal against the target version in
//! a scratch sandbox (no writes, no side effects) while the run is held out
//! of memory, so its journal cannot grow meanwhile. A run that reproduces
//! moves with a version-switch entry, written in the same transaction as
//! its new metadata; a run that diverges stays where it is, untouched, and
//! the report names the first diverging seq. Nothing here retries a refused
//! run.

mod reset;

pub use reset::{Reset, ResetError};

use crate::journal::Divergence;
use crate::registry::{Registry, UploadError, VersionError};
use crate::runtime::{ControlError, RunError, Runtime};
use crate::sandbox::LoadError;
use crate::store::{ComponentKind, Deployment, RunQuery, RunStatus, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An upgrade could not be attempted.
#[derive(Debug, Error)]
pub enum UpgradeError {
    /// No such run.
    #[error("run {0} does not exist")]
    RunNotFound(String),
    /// No such workflow or version.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The run could not be paused.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A component failed to load; nothing changed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Replay failed for another reason than a divergence.
    #[error("verification failed: {0}")]
    Verify(RunError),
}

impl From<UploadError> for UpgradeError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Store(s) => UpgradeError::Store(s),
            other => UpgradeError::Verify(RunError::Instantiate { run_id: String::new(), reason: other.to_string() }),
        }
    }
}

/// What happened to one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RunUpgrade {
    /// Verified and moved.
    Upgraded {
        /// The run.
        run_id: String,
        /// Its version before.
        from: Option<u32>,
        /// Its version now.
        to: u32,
    },
    /// Verified; not moved because this was a dry run.
    Compatible {
        /// The run.
        run_id: String,
        /// Its version.
        from: Option<u32>,
        /// The version it could move to.
        to: u32,
    },
    /// The new code does not reproduce the journal; the run stays.
    Refused {
        /// The run.
        run_id: String,
        /// Its version (unchanged).
        from: Option<u32>,
        /// The version it could not move to.
        to: u32,
        /// The first diverging seq, expected and actual calls.
        divergence: Divergence,
    },
    /// Not attempted (already there, or ended).
    Skipped {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
}

/// Verifies and performs upgrades.
#[derive(Clone)]
pub struct Upgrader {
    rt: Runtime,
}

impl Upgrader {
    /// An upgrader over a runtime.
    pub fn new(rt: Runtime) -> Self {
        Upgrader { rt }
    }

    async fn deployment(&self, name: &str) -> Result<Deployment, UpgradeError> {
        match self.rt.store().deployment(name).await? {
            Some(d) if d.kind == ComponentKind::Workflow => Ok(d),
            _ => Err(VersionError::WorkflowNotFound(name.to_owned()).into()),
        }
    }

    /// Verifies run `run_id` against version `to` of its workflow and, unless
    /// `dry_run`, moves it there.
    pub async fn upgrade_run(&self, run_id: &str, to: u32, dry_run: bool) -> Result<RunUpgrade, UpgradeError> {
        let meta = self.rt.store().run(run_id).await?.ok_or_else(|| UpgradeError::RunNotFound(run_id.to_owned()))?;
        // Another host drives the run: it verifies and moves it.
        if let Some(owner) = self.rt.owner_elsewhere(&meta).await {
            let body = serde_json::json!({ "to": to, "dry_run": dry_run });
            let answer = self.rt.forward(run_id, &owner, &format!("/runs/{run_id}/upgrade"), body).await?;
            let report = answer["runs"].get(0).cloned().unwrap_or_default();
            return serde_json::from_value(report).map_err(|e| {
                ControlError::Elsewhere { run_id: run_id.to_owned(), reason: format!("{owner} answered {answer}: {e}") }
                    .into()
            });
        }
        let deployment = self.deployment(&meta.workflow).await?;
        let target = deployment
            .versions
            .iter()
            .find(|v| v.version == to)
            .ok_or_else(|| VersionError::VersionNotFound { name: meta.workflow.clone(), version: to })?
            .clone();
        let from = meta.version;
        if !matches!(meta.status, RunStatus::Running | RunStatus::Diverged | RunStatus::Paused | RunStatus::Queued) {
            return Ok(RunUpgrade::Skipped {
                run_id: run_id.to_owned(),
                reason: format!("the run has {}", meta.status.as_str()),
            });
        }
        if meta.component_sha256 == target.sha256 {
            return Ok(RunUpgrade::Skipped { run_id: run_id.to_owned(), reason: format!("already on version {to}") });
        }
        let component = self.rt.components().load_stored(&target.sha256).await?;
        let hold = if dry_run { None } else { Some(self.rt.hold(run_id).await?) };
        // Read again under the hold: this is the journal that is verified.
        // The run may have ended between the first read and the hold; an
        // ended run is never switched (its journal must end with its end).
        let meta = self.rt.store().run(run_id).await?.ok_or_else(|| UpgradeError::RunNotFound(run_id.to_owned()))?;
        if !matches!(meta.status, RunStatus::Running | RunStatus::Diverged | RunStatus::Paused | RunStatus::Queued) {
            return Ok(RunUpgrade::Skipped {
                run_id: run_id.to_owned(),
                reason: format!("the run has {}", meta.status.as_str()),
            });
        }
        let next_seq = self.rt.store().journal(run_id).await?.last().map_or(0, |r| r.seq + 1);
        match self.rt.replay(run_id, Some(component)).await {
            Ok(_) => {}
            Err(RunError::Diverged { divergence, .. }) => {
                tracing::info!(run_id, seq = divergence.seq, to, "upgrade refused: {divergence}");
                return Ok(RunUpgrade::Refused { run_id: run_id.to_owned(), from, to, divergence });
            }
            Err(e) => return Err(UpgradeError::Verify(e)),
        }
        let Some(hold) = hold else {
            return Ok(RunUpgrade::Compatible { run_id: run_id.to_owned(), from, to });
        };
        self.rt.switch_version(&hold, meta, next_seq, to, &target.sha256).await?;
        drop(hold);
        tracing::info!(run_id, ?from, to, "upgraded");
        Ok(RunUpgrade::Upgraded { run_id: run_id.to_owned(), from, to })
    }

    /// Verifies every live run of `name` on version `from` against `to`.
    pub async fn upgrade_workflow(
        &self,
        name: &str,
        from: u32,
        to: u32,
        dry_run: bool,
    ) -> Result<Vec<RunUpgrade>, UpgradeError> {
        let deployment = self.deployment(name).await?;
        for v in [from, to] {
            if !deployment.versions.iter().any(|d| d.version == v) {
                return Err(VersionError::VersionNotFound { name: name.to_owned(), version: v }.into());
            }
        }
        let query = RunQuery {
            version: Some(from),
            statuses: vec![RunStatus::Running, RunStatus::Diverged, RunStatus::Paused, RunStatus::Queued],
            ..RunQuery::workflow(name)
        };
        let runs: Vec<String> = self.rt.store().all_runs(query).await?.into_iter().map(|m| m.id).collect();
        let mut report = Vec::with_capacity(runs.len());
        for run_id in runs {
            report.push(self.upgrade_run(&run_id, to, dry_run).await?);
        }
        Ok(report)
    }

    /// After a deploy with `--upgrade compatible`: moves every live run of
    /// older versions that verifies against the new current version.
    pub async fn upgrade_compatible(&self, registry: &Registry, name: &str) -> Result<Vec<RunUpgrade>, UpgradeError> {
        let Some(deployment) = registry.deployment(name).await? else {
            return Err(VersionError::WorkflowNotFound(name.to_owned()).into());
        };
        let mut report = Vec::new();
        for v in deployment.versions.iter().filter(|v| v.version != deployment.current) {
            report.extend(self.upgrade_workflow(name, v.version, deployment.current, false).await?);
        }
        Ok(report)
    }
}
