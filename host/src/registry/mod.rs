//! Deployments: named workflow and activity components, validated on
//! upload, stored by content hash, numbered in versions.
//!
//! An upload is checked before anything is stored: the bytes must be a
//! component, its imports must be ones the host provides for its kind
//! (WASI 0.2 and `cairn:workflow`), and its exports must match the world.
//! Same bytes are stored once; the compiled artifact is cached beside them.

use crate::runtime::Runtime;
use crate::sandbox::{LoadError, LoadedComponent};
use crate::store::{CommitError, ComponentKind, Deployment, RunQuery, RunStatus, StoreError, Version, Write};
use serde::Serialize;
use thiserror::Error;

/// The largest component accepted (Python components are ~18 MB).
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// An upload was refused; nothing was stored.
#[derive(Debug, Error)]
pub enum UploadError {
    /// Over [`MAX_COMPONENT_BYTES`].
    #[error("the component is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The name is not usable.
    #[error("invalid name {0:?}: use 1-64 letters, digits, '-' or '_'")]
    InvalidName(String),
    /// The bytes are not a component.
    #[error("{0}")]
    NotAComponent(String),
    /// The component does not fit its world.
    #[error("{name} is not a valid {kind} component: {reason}")]
    WrongWorld {
        /// The name it was deployed under.
        name: String,
        /// Workflow or activity.
        kind: &'static str,
        /// The offending import or export, in wasmtime's words, and a hint.
        reason: String,
    },
    /// The name is taken by the other kind.
    #[error("{name} is already deployed as {existing}; {hint}")]
    KindConflict {
        /// The name.
        name: String,
        /// Its kind.
        existing: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A versions operation (rollback, retire) was refused; nothing changed.
#[derive(Debug, Error)]
pub enum VersionError {
    /// No such workflow.
    #[error("no workflow named {0:?} is deployed")]
    WorkflowNotFound(String),
    /// No such version.
    #[error("workflow {name} has no version {version}; see `cairn versions {name}`")]
    VersionNotFound {
        /// The workflow.
        name: String,
        /// The version.
        version: u32,
    },
    /// Runs still execute the version.
    #[error("version {version} of {name} still has {runs} live runs; wait for them, upgrade them (`cairn upgrade --workflow {name} --from {version} --to N`), or terminate them first")]
    InUse {
        /// The workflow.
        name: String,
        /// The version.
        version: u32,
        /// How many live runs.
        runs: usize,
    },
    /// The current version cannot be retired.
    #[error("version {version} is the current version of {name}; make another version current first (`cairn rollback {name} --to N` or a new deploy)")]
    Current {
        /// The workflow.
        name: String,
        /// The version.
        version: u32,
    },
    /// Activity limits named something other than an activity.
    #[error("invalid activity {0:?}: name COMPONENT.FUNCTION, or COMPONENT for all its functions")]
    InvalidActivity(String),
    /// Activity limits asked of a workflow's name.
    #[error("{0:?} is a workflow; its runs are limited with `cairn concurrency {0}`")]
    NotAnActivity(String),
    /// The key pointer is not a JSON pointer.
    #[error("invalid key pointer {0:?}: use a JSON pointer into the input, such as /customer or /order/region")]
    InvalidPointer(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A version as `cairn versions` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// The number.
    pub version: u32,
    /// sha256 of its component.
    pub sha256: String,
    /// When it was deployed.
    pub deployed_ms: u64,
    /// Whether new runs start on it.
    pub current: bool,
    /// Runs on it that have not ended.
    pub live_runs: usize,
    /// All runs on it.
    pub runs: usize,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Deployed {
    /// The name.
    pub name: String,
    /// Workflow or activity.
    pub kind: ComponentKind,
    /// The version these bytes are.
    pub version: u32,
    /// sha256 of the bytes.
    pub sha256: String,
    /// False when these exact bytes were already a version of the name.
    pub created: bool,
}

/// Validates names the way deployments and activity calls need them.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Deploys components and looks them up.
#[derive(Clone)]
pub struct Registry {
    rt: Runtime,
    deploying: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Registry {
    /// A registry over the runtime's store.
    pub fn new(rt: Runtime) -> Self {
        Registry { rt, deploying: Default::default() }
    }

    /// Validates and deploys `bytes` as version N+1 of `name` (or reports
    /// the version that already has these bytes).
    pub async fn deploy(&self, name: &str, kind: ComponentKind, bytes: Vec<u8>) -> Result<Deployed, UploadError> {
        if !valid_name(name) {
            return Err(UploadError::InvalidName(name.to_owned()));
        }
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(UploadError::TooLarge { size: bytes.len(), limit: MAX_COMPONENT_BYTES });
        }
        // One deploy at a time in this process; across hosts the store
        // refuses a deployment changed meanwhile (its revision), and the
        // deploy is made again on what the other host wrote.
        let _guard = self.deploying.lock().await;
        let mut compiled = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.deploy_once(name, kind, &bytes, &mut compiled).await {
                Err(UploadError::Store(StoreError::Commit(CommitError::Conflict { .. }))) if attempt < 10 => {
                    tracing::info!(
                        name,
                        attempt,
                        "the deployment changed on another host meanwhile; deploying again on it"
                    );
                }
                other => return other,
            }
        }
    }

    async fn deploy_once(
        &self,
        name: &str,
        kind: ComponentKind,
        bytes: &[u8],
        compiled: &mut Option<(LoadedComponent, Vec<Write>)>,
    ) -> Result<Deployed, UploadError> {
        let existing = self.rt.store().deployment(name).await?;
        if let Some(d) = &existing {
            if d.kind != kind {
                let hint = match d.kind {
                    ComponentKind::Activity => "to deploy a new version of it, add `--activity` (`?kind=activity`); a workflow needs another name",
                    ComponentKind::Workflow => "to deploy a new version of it, leave out `--activity`; an activity component needs another name",
                };
                return Err(UploadError::KindConflict { name: name.to_owned(), existing: d.kind.as_str(), hint });
            }
        }
        let (component, writes) = match compiled.take() {
            Some(compiled) => compiled,
            None => match self.rt.components().compile_for_store(name, bytes.to_vec()).await {
                Ok(loaded) => loaded,
                Err(LoadError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(UploadError::NotAComponent(e.to_string())),
            },
        };
        self.check_world(name, kind, &component)?;
        *compiled = Some((component.clone(), writes.clone()));
        if let Some(v) = existing.as_ref().and_then(|d| d.versions.iter().find(|v| v.sha256 == component.sha256)) {
            return Ok(Deployed {
                name: name.to_owned(),
                kind,
                version: v.version,
                sha256: v.sha256.clone(),
                created: false,
            });
        }
        let mut deployment = existing.unwrap_or_else(|| Deployment::new(name, kind));
        deployment.revision += 1;
        let version = deployment.versions.iter().map(|v| v.version).max().unwrap_or(0).max(deployment.last_version) + 1;
        deployment.last_version = version;
        deployment.versions.push(Version { version, sha256: component.sha256.clone(), deployed_ms: now_ms() });
        deployment.current = version;
        let mut batch = writes;
        batch.push(Write::PutDeployment(deployment));
        self.rt.store().commit(batch).await?;
        if kind == ComponentKind::Activity {
            self.register_activity(name, &component)?;
        }
        tracing::info!(name, version, sha256 = %component.sha256, kind = kind.as_str(), "deployed");
        Ok(Deployed { name: name.to_owned(), kind, version, sha256: component.sha256, created: true })
    }

    fn check_world(&self, name: &str, kind: ComponentKind, component: &LoadedComponent) -> Result<(), UploadError> {
        let hint = match kind {
            ComponentKind::Workflow => "workflows may import WASI 0.2 and cairn:workflow/runtime, and must export `run`; move other calls into an activity",
            ComponentKind::Activity => "activities may import WASI 0.2 and cairn:workflow/activity-context, and must export `execute`",
        };
        let wrong = |reason: String| UploadError::WrongWorld { name: name.to_owned(), kind: kind.as_str(), reason };
        // The other kind of component, said plainly rather than as the
        // linker's complaint about a missing export.
        let exports = crate::sandbox::exported_names(self.rt.sandbox().engine(), &component.component);
        let exports = |n: &str| exports.iter().any(|e| e == n);
        match kind {
            ComponentKind::Workflow if exports("execute") && !exports("run") => {
                return Err(wrong("this component exports `execute`: it is an activity; deploy it with `--activity` (`?kind=activity`)".into()));
            }
            ComponentKind::Activity if exports("run") && !exports("execute") => {
                return Err(wrong(
                    "this component exports `run`: it is a workflow; deploy it without `--activity`".into(),
                ));
            }
            _ => {}
        }
        let result = match kind {
            ComponentKind::Workflow => self.rt.check_workflow(component).map_err(|e| match e {
                crate::runtime::StartError::NotAWorkflow { reason, .. } => reason,
                other => other.to_string(),
            }),
            ComponentKind::Activity => self.rt.activities().check(name, component).map_err(|e| e.to_string()),
        };
        result.map_err(|reason| wrong(format!("{reason} ({hint})")))
    }

    fn register_activity(&self, name: &str, component: &LoadedComponent) -> Result<(), UploadError> {
        self.rt.activities().register(name, component).map_err(|e| UploadError::WrongWorld {
            name: name.to_owned(),
            kind: "activity",
            reason: e.to_string(),
        })
    }

    /// At host start: registers every activity component's current version
    /// and compiles (or loads from cache) every workflow's. Returns how many.
    pub async fn load_all(&self) -> Result<usize, UploadError> {
        let deployments = self.rt.store().deployments().await?;
        for d in &deployments {
            let Some(v) = d.current_version() else {
                continue;
            };
            let component = match self.rt.components().load_stored(&v.sha256).await {
                Ok(c) => c,
                Err(LoadError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(UploadError::NotAComponent(e.to_string())),
            };
            match d.kind {
                ComponentKind::Activity => self.register_activity(&d.name, &component)?,
                ComponentKind::Workflow => self.check_world(&d.name, d.kind, &component)?,
            }
        }
        Ok(deployments.len())
    }

    /// Registers the activity components deployed (from any host) since
    /// this host last looked: the new current versions of names it has,
    /// and names it does not have yet. Returns how many it registered.
    pub async fn refresh_activities(&self) -> Result<usize, UploadError> {
        let mut registered = 0;
        for d in self.rt.store().deployments().await? {
            let Some(v) = d.current_version() else { continue };
            if d.kind != ComponentKind::Activity || self.rt.activities().registered(&d.name).as_ref() == Some(&v.sha256)
            {
                continue;
            }
            let component = match self.rt.components().load_stored(&v.sha256).await {
                Ok(c) => c,
                Err(LoadError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(UploadError::NotAComponent(e.to_string())),
            };
            self.register_activity(&d.name, &component)?;
            tracing::info!(name = %d.name, version = v.version, "registered an activity component deployed elsewhere");
            registered += 1;
        }
        Ok(registered)
    }

    /// The current version of a workflow.
    pub async fn workflow(&self, name: &str) -> Result<Option<(u32, LoadedComponent)>, UploadError> {
        Ok(self.workflow_to_start(name).await?.map(|(version, component, _)| (version, component)))
    }

    /// [`Registry::workflow`] with its concurrency limits, read with it: what
    /// a start needs ([`crate::runtime::Flow::limits`]).
    pub async fn workflow_to_start(
        &self,
        name: &str,
    ) -> Result<Option<(u32, LoadedComponent, Option<crate::store::Concurrency>)>, UploadError> {
        let Some(d) = self.rt.store().deployment(name).await? else {
            return Ok(None);
        };
        if d.kind != ComponentKind::Workflow {
            return Ok(None);
        }
        let Some(v) = d.current_version() else {
            return Ok(None);
        };
        match self.rt.components().load_stored(&v.sha256).await {
            Ok(c) => Ok(Some((v.version, c, d.concurrency.clone()))),
            Err(LoadError::Store(e)) => Err(e.into()),
            Err(e) => Err(UploadError::NotAComponent(e.to_string())),
        }
    }

    /// A deployment by name.
    pub async fn deployment(&self, name: &str) -> Result<Option<Deployment>, StoreError> {
        self.rt.store().deployment(name).await
    }

    async fn workflow_deployment(&self, name: &str) -> Result<Deployment, VersionError> {
        match self.rt.store().deployment(name).await? {
            Some(d) if d.kind == ComponentKind::Workflow => Ok(d),
            _ => Err(VersionError::WorkflowNotFound(name.to_owned())),
        }
    }

    /// A workflow's versions with how many runs each has.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, VersionError> {
        let d = self.workflow_deployment(name).await?;
        let mut out = Vec::with_capacity(d.versions.len());
        for v in &d.versions {
            let on =
                self.rt.store().all_runs(RunQuery { version: Some(v.version), ..RunQuery::workflow(name) }).await?;
            out.push(VersionInfo {
                version: v.version,
                sha256: v.sha256.clone(),
                deployed_ms: v.deployed_ms,
                current: v.version == d.current,
                live_runs: on.iter().filter(|r| !r.status.is_final()).count(),
                runs: on.len(),
            });
        }
        Ok(out)
    }

    /// Makes an existing version current: new runs start on it. Runs already
    /// started stay where they are.
    pub async fn rollback(&self, name: &str, to: u32) -> Result<Deployment, VersionError> {
        let _guard = self.deploying.lock().await;
        let mut d = self.workflow_deployment(name).await?;
        if !d.versions.iter().any(|v| v.version == to) {
            return Err(VersionError::VersionNotFound { name: name.to_owned(), version: to });
        }
        d.current = to;
        d.revision += 1;
        self.rt.store().commit(vec![Write::PutDeployment(d.clone())]).await?;
        tracing::info!(name, version = to, "current version changed");
        Ok(d)
    }

    /// Removes a version that no live run uses and that is not current.
    pub async fn retire(&self, name: &str, version: u32) -> Result<Deployment, VersionError> {
        let _guard = self.deploying.lock().await;
        let mut d = self.workflow_deployment(name).await?;
        if !d.versions.iter().any(|v| v.version == version) {
            return Err(VersionError::VersionNotFound { name: name.to_owned(), version });
        }
        if d.current == version {
            return Err(VersionError::Current { name: name.to_owned(), version });
        }
        let query = RunQuery {
            version: Some(version),
            statuses: vec![RunStatus::Running, RunStatus::Diverged, RunStatus::Paused, RunStatus::Queued],
            ..RunQuery::workflow(name)
        };
        let live = self.rt.store().all_runs(query).await?.len();
        if live > 0 {
            return Err(VersionError::InUse { name: name.to_owned(), version, runs: live });
        }
        let (retired, kept): (Vec<Version>, Vec<Version>) = d.versions.drain(..).partition(|v| v.version == version);
        d.versions = kept;
        // Its component stays while finished runs refer to it (retention
        // collects it after them).
        d.retired.extend(retired);
        d.revision += 1;
        self.rt.store().commit(vec![Write::PutDeployment(d.clone())]).await?;
        tracing::info!(name, version, "version retired");
        Ok(d)
    }

    /// Sets how long finished runs of workflow `name` are kept (`None`:
    /// the host's default).
    pub async fn set_retention(&self, name: &str, retention_ms: Option<u64>) -> Result<Deployment, VersionError> {
        let _guard = self.deploying.lock().await;
        let mut d = self.workflow_deployment(name).await?;
        d.retention_ms = retention_ms;
        d.revision += 1;
        self.rt.store().commit(vec![Write::PutDeployment(d.clone())]).await?;
        tracing::info!(name, ?retention_ms, "retention set");
        Ok(d)
    }

    /// Sets workflow `name`'s concurrency limits (`None`: no limits), then
    /// gives the slots they free to queued runs.
    pub async fn set_concurrency(
        &self,
        name: &str,
        concurrency: Option<crate::store::Concurrency>,
    ) -> Result<Deployment, VersionError> {
        let d = {
            let _guard = self.deploying.lock().await;
            let mut d = self.workflow_deployment(name).await?;
            d.concurrency = concurrency.filter(crate::store::Concurrency::is_set);
            d.revision += 1;
            self.rt.store().commit(vec![Write::PutDeployment(d.clone())]).await?;
            d
        };
        tracing::info!(name, concurrency = ?d.concurrency, "concurrency limits set");
        let queued = self
            .rt
            .store()
            .all_runs(RunQuery { statuses: vec![RunStatus::Queued], ..RunQuery::workflow(name) })
            .await?;
        let mut keys: Vec<String> = queued.into_iter().filter_map(|m| m.slot.map(|s| s.key)).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let admission = d.concurrency.as_ref().and_then(|c| c.admission(&key));
            self.rt.admit(name, &key, admission).await?;
        }
        Ok(d)
    }

    /// The limits of activity `name` (`component.function`, or `component`
    /// for its functions without limits of their own): what is set, if
    /// anything.
    pub async fn activity_limits(&self, name: &str) -> Result<Option<crate::store::ActivityLimit>, VersionError> {
        let (component, function) = activity_scope(name)?;
        let d = self.rt.store().deployment(component).await?;
        Ok(d.and_then(|d| d.activity_limits.get(function).cloned()))
    }

    /// Sets (or with `None`, removes) the limits of activity `name`. An
    /// activity with no deployment (served by external workers, or built
    /// in) gets one with no versions to hold them.
    pub async fn set_activity_limits(
        &self,
        name: &str,
        limit: Option<crate::store::ActivityLimit>,
    ) -> Result<Option<crate::store::ActivityLimit>, VersionError> {
        let (component, function) = activity_scope(name)?;
        if let Some(pointer) = limit.as_ref().and_then(|l| l.key.as_ref()) {
            if !pointer.starts_with('/') {
                return Err(VersionError::InvalidPointer(pointer.clone()));
            }
        }
        let limit = limit.filter(|l| l.limits.is_set());
        {
            let _guard = self.deploying.lock().await;
            let mut d = match self.rt.store().deployment(component).await? {
                Some(d) if d.kind == ComponentKind::Workflow => {
                    return Err(VersionError::NotAnActivity(component.into()))
                }
                Some(d) => d,
                None => Deployment::new(component, ComponentKind::Activity),
            };
            match &limit {
                Some(l) => d.activity_limits.insert(function.to_owned(), l.clone()),
                None => d.activity_limits.remove(function),
            };
            d.revision += 1;
            self.rt.store().commit(vec![Write::PutDeployment(d)]).await?;
        }
        self.rt.activities().limiter().changed(component);
        tracing::info!(name, ?limit, "activity limits set");
        Ok(limit)
    }

    /// Every deployment.
    pub async fn list(&self) -> Result<Vec<Deployment>, UploadError> {
        Ok(self.rt.store().deployments().await?)
    }
}

/// `component.function` or `component` (all its functions: `*`).
fn activity_scope(name: &str) -> Result<(&str, &str), VersionError> {
    let (component, function) = name.split_once('.').unwrap_or((name, "*"));
    let function_ok = function == "*"
        || valid_name(function)
        || function.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name(component) || function.is_empty() || !function_ok {
        return Err(VersionError::InvalidActivity(name.to_owned()));
    }
    Ok((component, function))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
