//! Reset: a new run that keeps a run's journal up to a seq and goes live
//! from there on a chosen version, only once that version has reproduced
//! the kept journal in a scratch replay.
//!
//! The new run is a copy: the kept entries (with the original's seed, so
//! its random values are the same), a version-switch entry when the version
//! differs, and the original's input; its id is new (`RUN-reset-SEQ` unless
//! given). Work the kept entries started and did not finish (activities,
//! timers, children) is started again by the new run when it goes live, as
//! after a crash; signals the original consumed after SEQ are not sent
//! again. The original, if still live, is terminated first, with a reason
//! naming the new run, so the two never run at once; a run of a
//! concurrency bucket is reset into the same bucket (queued for a slot).

use super::{UpgradeError, Upgrader};
use crate::journal::{Divergence, Entry, Record};
use crate::runtime::{now_ms, RunError, StartError};
use crate::store::{RunMeta, RunStatus, Write};
use thiserror::Error;

/// A reset was refused; nothing was written.
#[derive(Debug, Error)]
pub enum ResetError {
    /// The seq keeps nothing, or more than the journal holds.
    #[error("cannot reset run {run_id} to seq {seq}: its journal has seqs 0 to {last}; give a seq from 1 to {last} (the new run keeps the entries before it)")]
    BadSeq {
        /// The run.
        run_id: String,
        /// The seq given.
        seq: u64,
        /// Its last seq.
        last: u64,
    },
    /// The kept entries end the run.
    #[error("entry {seq} of run {run_id} ends the run; reset to a seq at or before it")]
    Ended {
        /// The run.
        run_id: String,
        /// The ending entry.
        seq: u64,
    },
    /// The target version does not reproduce the kept journal.
    #[error("version {version} of {workflow} does not reproduce run {run_id} up to seq {to}: {divergence}; nothing was written")]
    Diverges {
        /// The run.
        run_id: String,
        /// Its workflow.
        workflow: String,
        /// The version tried.
        version: u32,
        /// The reset seq.
        to: u64,
        /// Where it diverged.
        divergence: Divergence,
    },
    /// The new run's id is taken.
    #[error("run {0} exists already; pass another id for the reset run")]
    Exists(String),
    /// The new run's id is not usable.
    #[error(transparent)]
    Id(#[from] StartError),
    /// Something else (no such run or version, the store).
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

/// What a reset made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reset {
    /// The new run.
    pub run: RunMeta,
    /// The run it was made from.
    pub from: String,
    /// How many entries it kept (seqs 0 to `kept - 1`).
    pub kept: u64,
    /// Whether the original was live and is now terminated.
    pub terminated_original: bool,
}

impl Upgrader {
    /// Resets `run_id` to `seq` on `version` (default: the workflow's
    /// current one) as run `new_id` (default `RUN-reset-SEQ`).
    pub async fn reset(
        &self,
        run_id: &str,
        seq: u64,
        version: Option<u32>,
        new_id: Option<String>,
    ) -> Result<Reset, ResetError> {
        let store = self.rt.store();
        let original = store
            .run(run_id)
            .await
            .map_err(UpgradeError::from)?
            .ok_or_else(|| UpgradeError::RunNotFound(run_id.to_owned()))?;
        let journal = store.journal(run_id).await.map_err(UpgradeError::from)?;
        let last = journal.len().saturating_sub(1) as u64;
        if seq == 0 || seq > journal.len() as u64 {
            return Err(ResetError::BadSeq { run_id: run_id.to_owned(), seq, last });
        }
        let mut kept: Vec<Record> = journal.into_iter().take(seq as usize).collect();
        if let Some(end) = kept.iter().find(|r| r.entry.is_terminal()) {
            return Err(ResetError::Ended { run_id: run_id.to_owned(), seq: end.seq });
        }
        let deployment = self.deployment(&original.workflow).await?;
        let version = version.unwrap_or(deployment.current);
        let target = deployment
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| {
                UpgradeError::Version(crate::registry::VersionError::VersionNotFound {
                    name: original.workflow.clone(),
                    version,
                })
            })?
            .clone();
        let new_id = new_id.unwrap_or_else(|| format!("{run_id}-reset-{seq}"));
        crate::runtime::validate_run_id(&new_id)?;
        if store.run(&new_id).await.map_err(UpgradeError::from)?.is_some() {
            return Err(ResetError::Exists(new_id));
        }
        if original.component_sha256 != target.sha256 {
            kept.push(Record {
                seq,
                at_ms: now_ms(),
                entry: Entry::VersionSwitch {
                    from_version: original.version,
                    to_version: version,
                    from_sha256: original.component_sha256.clone(),
                    to_sha256: target.sha256.clone(),
                },
            });
        }
        let now = now_ms();
        let meta = RunMeta {
            id: new_id.clone(),
            version: Some(version),
            component_sha256: target.sha256.clone(),
            status: RunStatus::Running,
            result: None,
            failure: None,
            custom_status: None,
            parent: None,
            generation: 0,
            shard: store.shard_for(&new_id),
            created_ms: now,
            updated_ms: now,
            // Set again by the kept entries as they replay: none from after
            // the seq.
            search: Default::default(),
            ..original.clone()
        };
        // Verified first, under the new run's own id (a workflow may read
        // it): the kept journal must be reproduced to its end.
        let component = self.rt.components().load_stored(&target.sha256).await.map_err(UpgradeError::from)?;
        match self.rt.replay_records(meta.clone(), kept.clone(), component).await {
            Ok(_) => {}
            Err(RunError::Diverged { divergence, .. }) => {
                tracing::info!(run_id, seq, version, "reset refused: {divergence}");
                return Err(ResetError::Diverges {
                    run_id: run_id.to_owned(),
                    workflow: original.workflow.clone(),
                    version,
                    to: seq,
                    divergence,
                });
            }
            Err(e) => return Err(UpgradeError::Verify(e).into()),
        }
        // The original stops first, so the two never run at once; if it
        // cannot be stopped, nothing is written.
        let live = !original.status.is_final();
        if live {
            let reason = format!("reset to seq {seq} as run {new_id}");
            self.rt.terminate(run_id, &reason).await.map_err(UpgradeError::from)?;
        }
        // In the original's concurrency bucket, it waits for a slot like
        // any start.
        let mut meta = meta;
        let mut promote = None;
        if let Some(slot) = &meta.slot {
            let admission = deployment
                .concurrency
                .as_ref()
                .and_then(|c| c.admission(&slot.key))
                .unwrap_or(crate::store::Admission::OPEN);
            meta.status = RunStatus::Queued;
            promote = Some(Write::Promote { workflow: meta.workflow.clone(), key: slot.key.clone(), admission });
        }
        let bucket = meta.slot.as_ref().map(|s| (meta.workflow.clone(), s.key.clone()));
        let mut batch = vec![Write::PutRun(meta.clone())];
        batch.extend(kept.into_iter().map(|record| Write::Append { run_id: new_id.clone(), record }));
        batch.extend(promote);
        store.commit(batch).await.map_err(UpgradeError::from)?;
        self.rt.wake(&new_id);
        self.rt.wake_bucket(bucket).await;
        let meta = store.run(&new_id).await.map_err(UpgradeError::from)?.unwrap_or(meta);
        tracing::info!(run_id, seq, version, new = %new_id, "run reset");
        Ok(Reset { run: meta, from: run_id.to_owned(), kept: seq, terminated_original: live })
    }
}
