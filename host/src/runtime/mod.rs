//! Runs: starting them, driving them (replay, then live), and checking them
//! by replay without side effects.
//!
//! A run is driven by one task that owns its wasmtime `Store`. The driver
//! (`driver.rs`) rebuilds the run by feeding the workflow its journal, then
//! continues live; the host functions it exposes (`calls.rs`) journal every
//! call. Completions from outside (activities, timers) arrive as events on
//! the run's mailbox and are made durable before the workflow sees them.

mod calls;
mod control;
mod driver;
mod errors;
mod query;
mod scheduler;
mod state;
mod waiting;
mod work;

pub use control::RunHold;
pub use driver::{ReplayReport, RunOutcome};
pub use errors::{ControlError, RunError, StartError};
pub use query::{QueryError, UpdateOutcome, UpdateRequest};

/// Checks an update before anything is done for it (an update-with-start
/// starts no run for an update that would be refused anyway).
pub fn check_update(name: &str, args: &str, update_id: &str) -> Result<(), QueryError> {
    query::check_name("update", name)?;
    query::check_args(args)?;
    validate_run_id(update_id).map_err(|_| QueryError::InvalidUpdateId(update_id.to_owned()))
}
pub use scheduler::{Metrics, Residency};

use crate::activity::ActivityRunner;
use crate::journal::{Entry, Record};
use crate::sandbox::bindings::workflow::WorkflowPre;
use crate::sandbox::{ComponentCache, Limits, LoadedComponent, Sandbox};
use crate::store::{RunMeta, RunStatus, Store, Write};
use scheduler::Scheduler;
use state::WorkflowState;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasSelf, Linker};
use work::Work;

/// The engine, the store and the activity components of one host process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    sandbox: Sandbox,
    store: Store,
    components: ComponentCache,
    activities: ActivityRunner,
    linker: Linker<WorkflowState>,
    prepared: Mutex<HashMap<String, WorkflowPre<WorkflowState>>>,
    scheduler: Scheduler,
    work: Work,
    arrivals: AtomicU64,
    metrics: Arc<crate::metrics::RuntimeMetrics>,
    /// Which shards this host drives (all, on the embedded store).
    coordinator: std::sync::RwLock<Arc<dyn crate::store::Coordinator>>,
    /// The bearer token requests to the other hosts carry.
    peer_token: std::sync::RwLock<Option<String>>,
}

tokio::task_local! {
    /// Set while serving a request another host forwarded: it is not
    /// forwarded again.
    pub static FORWARDED: bool;
}

/// What to start.
#[derive(Clone)]
pub struct StartRequest {
    /// Workflow name (for embedded runs, the file stem).
    pub workflow: String,
    /// The workflow component.
    pub component: LoadedComponent,
    /// JSON input.
    pub input: String,
    /// Run id; generated when absent.
    pub run_id: Option<String>,
    /// The deployed version of the workflow, if it is deployed.
    pub version: Option<u32>,
}

/// Where a new run stands among runs competing for slots.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// Its concurrency key (none: the workflow's shared bucket).
    pub concurrency_key: Option<String>,
    /// 1 (first) to 5 (last) among queued runs; 3 when absent.
    pub priority: Option<u8>,
    /// The workflow's concurrency limits, read with its deployment
    /// ([`crate::registry::Registry::workflow_to_start`]); none: no bucket
    /// unless a key is given.
    pub limits: Option<crate::store::Concurrency>,
}

impl Runtime {
    /// A runtime over `store` with `limits` for guest code, keeping every
    /// run in memory until it ends (embedded mode).
    pub fn new(store: Store, limits: Limits) -> anyhow::Result<Runtime> {
        Self::with_residency(store, limits, Residency::default())
    }

    /// A runtime that evicts waiting runs as `residency` says (server mode).
    pub fn with_residency(store: Store, limits: Limits, mut residency: Residency) -> anyhow::Result<Runtime> {
        if limits.pool_instances > 0 {
            // Every resident run holds a pool slot while it waits; keep a
            // share of the slots for the activities and replays they wait
            // on, so a full pool evicts idle runs instead of deadlocking.
            let reserve = (limits.pool_instances / 4).clamp(2, 256);
            let runs = limits.pool_instances.saturating_sub(reserve).max(1) as usize;
            residency.cap = residency.cap.min(runs);
        }
        let sandbox = Sandbox::new(limits)?;
        let metrics = Arc::new(crate::metrics::RuntimeMetrics::default());
        let mut linker = Linker::new(sandbox.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::sandbox::bindings::workflow::Workflow::add_to_linker::<_, HasSelf<WorkflowState>>(&mut linker, |s| s)?;
        let activities = ActivityRunner::new(sandbox.clone(), metrics.clone())?;
        activities.limiter().attach(store.clone());
        Ok(Runtime {
            inner: Arc::new(Inner {
                components: ComponentCache::new(sandbox.clone(), store.clone()),
                activities,
                sandbox,
                store,
                linker,
                prepared: Mutex::default(),
                scheduler: Scheduler::new(residency),
                work: Work::default(),
                arrivals: AtomicU64::new(0),
                metrics,
                coordinator: std::sync::RwLock::new(Arc::new(crate::store::SingleNode::default())),
                peer_token: std::sync::RwLock::new(None),
            }),
        })
    }

    /// Drives only the runs of the shards `coordinator` says this host
    /// holds (from now on), and follows its changes: runs of a shard it
    /// takes are woken, runs of a shard it loses stop. Call before
    /// [`Runtime::recover`].
    pub fn coordinate(&self, coordinator: Arc<dyn crate::store::Coordinator>) {
        let events = coordinator.subscribe();
        if let Some(board) = coordinator.tasks() {
            self.activities().external().share(board);
        }
        if let Some(board) = coordinator.slots() {
            self.activities().limiter().share(board);
        }
        *self.inner.coordinator.write().unwrap_or_else(|e| e.into_inner()) = coordinator.clone();
        self.follow(events, |rt, event| async move {
            if let Err(e) = rt.ownership_changed(event).await {
                tracing::error!(?event, error = %e, "could not take over a shard's runs; they are taken when the shard is next acquired");
            }
        });
        if let Some(ends) = coordinator.ends() {
            self.follow(ends, |rt, run: String| async move { rt.inner.scheduler.ends.ended(&run) });
        }
        let rt = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let runs = coordinator.wakeups().await;
                let Some(inner) = rt.upgrade() else { return };
                let rt = Runtime { inner };
                for run in runs {
                    rt.wake(&run);
                }
            }
        });
    }

    /// The bearer token to send to the other hosts of a shared store (they
    /// share one).
    pub fn set_peer_token(&self, token: Option<String>) {
        *self.inner.peer_token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Where a control request for `run_id` must go instead of this host:
    /// the address of the host driving its shard, if that is another one.
    /// A request forwarded to this host is served here.
    pub(crate) async fn owner_elsewhere(&self, meta: &RunMeta) -> Option<String> {
        if FORWARDED.try_with(|f| *f).unwrap_or(false) || self.coordinator().owns(meta.shard) {
            return None;
        }
        self.coordinator().owner_address(meta.shard).await
    }

    /// Sends a control request about `run_id` to the host at `address`
    /// (`path` under `/v1`), and returns its JSON answer.
    pub(crate) async fn forward(
        &self,
        run_id: &str,
        address: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ControlError> {
        let elsewhere = |reason: String| ControlError::Elsewhere { run_id: run_id.to_owned(), reason };
        let mut request = reqwest::Client::new()
            .post(format!("{address}/v1{path}"))
            .header("x-cairn-forwarded", "1")
            .timeout(std::time::Duration::from_secs(120))
            .json(&body);
        if let Some(token) = self.inner.peer_token.read().unwrap_or_else(|e| e.into_inner()).clone() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| elsewhere(e.to_string()))?;
        let status = response.status();
        let value: serde_json::Value = response.json().await.map_err(|e| elsewhere(e.to_string()))?;
        match status.is_success() {
            true => Ok(value),
            false => Err(elsewhere(format!("{address} answered {status}: {value}"))),
        }
    }

    /// Hands each message of `events` to `handle` while this runtime lives
    /// (a lagging receiver skips what it missed: the messages are hints or
    /// are found again in the store).
    fn follow<T, F, Fut>(&self, mut events: tokio::sync::broadcast::Receiver<T>, handle: F)
    where
        T: Clone + Send + 'static,
        F: Fn(Runtime, T) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let rt = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Some(inner) = rt.upgrade() else { return };
                handle(Runtime { inner }, event).await;
            }
        });
    }

    /// The coordinator this host follows.
    pub fn coordinator(&self) -> Arc<dyn crate::store::Coordinator> {
        self.inner.coordinator.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// What the runtime counts, for `GET /metrics`.
    pub fn counters(&self) -> &crate::metrics::RuntimeMetrics {
        &self.inner.metrics
    }

    /// Every metric in Prometheus text format.
    pub async fn prometheus(&self) -> String {
        use crate::metrics::write_value;
        let mut out = String::new();
        self.inner.metrics.write(&mut out);
        self.inner.store.commit_metrics().write(&mut out);
        self.coordinator().metrics(&mut out);
        let m = self.metrics();
        write_value(&mut out, "cairn_runs_resident", "Runs in memory now.", "gauge", m.resident);
        let running = self.inner.store.count_running().await.unwrap_or(0);
        write_value(
            &mut out,
            "cairn_runs_parked",
            "Unfinished runs not in memory (waiting in the store).",
            "gauge",
            running.saturating_sub(m.resident),
        );
        let store = &self.inner.store;
        let queued = store.count_status(RunStatus::Queued).await.unwrap_or(0);
        write_value(
            &mut out,
            "cairn_runs_queued",
            "Runs waiting for a slot of their concurrency limit.",
            "gauge",
            queued,
        );
        let runs: Vec<(Vec<String>, u64)> = store
            .buckets()
            .await
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(workflow, key, holding, queued)| {
                [
                    (vec![workflow.clone(), key.clone(), "running".to_owned()], holding),
                    (vec![workflow, key, "queued".to_owned()], queued),
                ]
            })
            .collect();
        crate::metrics::write_labeled(
            &mut out,
            "cairn_bucket_runs",
            "Runs of a workflow with concurrency limits, by concurrency key: holding a slot (running) or waiting for one (queued).",
            &["workflow", "key", "state"],
            &runs,
        );
        let buckets = self.activities().limiter().buckets().await;
        let rows = |f: fn(&(crate::activity::limits::BucketName, u64, u64)) -> u64| -> Vec<(Vec<String>, u64)> {
            buckets.iter().map(|b| (vec![b.0.activity.clone(), b.0.key.clone()], f(b))).collect()
        };
        crate::metrics::write_labeled(
            &mut out,
            "cairn_activity_slots_held",
            "Attempts of a limited activity in flight, by activity and key, on every host.",
            &["activity", "key"],
            &rows(|b| b.1),
        );
        crate::metrics::write_labeled(
            &mut out,
            "cairn_activity_attempts_waiting",
            "Attempts of a limited activity waiting on this host for a slot or a token, by activity and key.",
            &["activity", "key"],
            &rows(|b| b.2),
        );
        let paused = store.count_status(RunStatus::Paused).await.unwrap_or(0);
        write_value(&mut out, "cairn_runs_paused", "Runs an operator paused.", "gauge", paused);
        write_value(&mut out, "cairn_evictions_total", "Times a waiting run left memory.", "counter", m.evictions);
        write_value(
            &mut out,
            "cairn_replays_total",
            "Times a run was rebuilt in memory by replaying its journal.",
            "counter",
            m.rebuilds,
        );
        let signals = self.inner.store.buffered_signals("").await.map(|b| b.all).unwrap_or_default();
        write_value(
            &mut out,
            "cairn_signals_buffered",
            "Signals sent and not yet consumed, over every run.",
            "gauge",
            signals.0,
        );
        write_value(
            &mut out,
            "cairn_signal_bytes_buffered",
            "Bytes of signals sent and not yet consumed (capped by --max-signal-mib).",
            "gauge",
            signals.1,
        );
        let budget = self.inner.sandbox.limits().memory_budget_bytes >> 20;
        write_value(
            &mut out,
            "cairn_guest_memory_budget_mib",
            "The memory budget all guest instances share (--memory-budget-mib).",
            "gauge",
            budget,
        );
        write_value(
            &mut out,
            "cairn_guest_memory_free_mib",
            "MiB of the guest memory budget no instance holds now.",
            "gauge",
            self.inner.sandbox.memory_budget_free_mib() as u64,
        );
        out
    }

    /// Loads and caches components.
    pub fn components(&self) -> &ComponentCache {
        &self.inner.components
    }

    /// The activity components runs can call.
    pub fn activities(&self) -> &ActivityRunner {
        &self.inner.activities
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    pub(crate) fn work(&self) -> &Work {
        &self.inner.work
    }

    /// Checks that `component` fits the workflow world.
    pub fn check_workflow(&self, component: &LoadedComponent) -> Result<(), StartError> {
        self.prepare(component).map(drop)
    }

    /// Checks that `component` fits the workflow world and prepares it for
    /// fast instantiation.
    pub(crate) fn prepare(&self, component: &LoadedComponent) -> Result<WorkflowPre<WorkflowState>, StartError> {
        let mut prepared = self.inner.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pre) = prepared.get(&component.sha256) {
            return Ok(pre.clone());
        }
        let invalid = |e: wasmtime::Error| StartError::NotAWorkflow {
            sha256: component.sha256.clone(),
            reason: format!("{e:#}"),
        };
        let pre = self.inner.linker.instantiate_pre(&component.component).map_err(invalid)?;
        let pre = WorkflowPre::new(pre).map_err(invalid)?;
        prepared.insert(component.sha256.clone(), pre.clone());
        Ok(pre)
    }

    /// Creates a run: its metadata and its start entry, durably, outside
    /// any concurrency bucket. Starting an id that exists returns the
    /// existing run (idempotent) when it is the same workflow, and an error
    /// otherwise.
    pub async fn start(&self, req: StartRequest) -> Result<RunMeta, StartError> {
        self.start_with(req, Flow::default()).await
    }

    /// [`Runtime::start`] in a concurrency bucket: a workflow with a limit
    /// for the bucket's key starts `queued` and is given a slot, in the same
    /// transaction, only while the bucket holds fewer runs than its limit.
    pub async fn start_with(&self, req: StartRequest, flow: Flow) -> Result<RunMeta, StartError> {
        if let Some(p) = flow.priority.filter(|p| !(1..=5).contains(p)) {
            return Err(StartError::InvalidPriority(p));
        }
        if let Some(key) = &flow.concurrency_key {
            if key.len() > 128 || key.chars().any(char::is_control) {
                return Err(StartError::InvalidConcurrencyKey(key.clone()));
            }
        }
        if req.input.len() > crate::journal::MAX_PAYLOAD_BYTES {
            return Err(StartError::InputTooLarge { bytes: req.input.len() });
        }
        crate::journal::check_json(&req.input).map_err(|e| StartError::InvalidInput(e.to_string()))?;
        self.prepare(&req.component)?;
        let run_id = match req.run_id {
            Some(id) => {
                validate_run_id(&id)?;
                id
            }
            None => new_run_id(),
        };
        if let Some(existing) = self.inner.store.run(&run_id).await? {
            if existing.component_sha256 != req.component.sha256 {
                return Err(StartError::DifferentComponent {
                    run_id,
                    existing: existing.component_sha256,
                    given: req.component.sha256,
                });
            }
            return Ok(existing);
        }
        let (mut meta, start) = self.new_run(&req.workflow, &req.component.sha256, &req.input, &run_id, req.version);
        let key = flow.concurrency_key.clone().unwrap_or_default();
        let limit = flow.limits.as_ref().and_then(|l| l.admission(&key));
        if flow.concurrency_key.is_some() || limit.is_some() {
            meta.slot = Some(crate::store::Slot { key: key.clone(), priority: flow.priority.unwrap_or(3) });
        }
        let mut batch = Vec::with_capacity(3);
        if let Some(limit) = limit {
            meta.status = RunStatus::Queued;
            batch.push(Write::PutRun(meta.clone()));
            batch.push(Write::Append { run_id: run_id.clone(), record: start });
            batch.push(Write::Promote { workflow: req.workflow.clone(), key, admission: limit });
        } else {
            batch.push(Write::PutRun(meta.clone()));
            batch.push(Write::Append { run_id: run_id.clone(), record: start });
        }
        match self.inner.store.commit(batch).await {
            Ok(()) => {
                let version = meta.version.map(|v| v.to_string()).unwrap_or_default();
                self.inner.metrics.runs_started.inc(&[&meta.workflow, &version]);
                if limit.is_some() {
                    // Queued, or given a slot by the same transaction (which
                    // may have started others of the bucket too).
                    self.wake_bucket(meta.slot.as_ref().map(|s| (meta.workflow.clone(), s.key.clone()))).await;
                    return Ok(self.inner.store.run(&run_id).await?.unwrap_or(meta));
                }
                Ok(meta)
            }
            // A concurrent start of the same id won: the batch was refused
            // whole, so the existing run stands and this start returns it.
            Err(crate::store::StoreError::Commit(crate::store::CommitError::DuplicateSeq { .. })) => {
                match self.inner.store.run(&run_id).await? {
                    Some(existing) if existing.component_sha256 == meta.component_sha256 => Ok(existing),
                    Some(existing) => Err(StartError::DifferentComponent {
                        run_id,
                        existing: existing.component_sha256,
                        given: meta.component_sha256,
                    }),
                    None => Err(StartError::Store(crate::store::StoreError::Commit(
                        crate::store::CommitError::DuplicateSeq { run_id, seq: 0 },
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Runtime {
    /// The metadata and start entry of a new run.
    pub(crate) fn new_run(
        &self,
        workflow: &str,
        sha256: &str,
        input: &str,
        run_id: &str,
        version: Option<u32>,
    ) -> (RunMeta, Record) {
        let now = now_ms();
        let seed = derive_seed(run_id);
        let meta = RunMeta {
            id: run_id.to_owned(),
            workflow: workflow.to_owned(),
            component_sha256: sha256.to_owned(),
            version,
            status: RunStatus::Running,
            input: input.to_owned(),
            result: None,
            failure: None,
            custom_status: None,
            parent: None,
            generation: 0,
            shard: self.inner.store.shard_for(run_id),
            created_ms: now,
            updated_ms: now,
            slot: None,
            search: Default::default(),
        };
        let start = Record {
            seq: 0,
            at_ms: now,
            entry: Entry::Started {
                workflow: workflow.to_owned(),
                component_sha256: sha256.to_owned(),
                input: input.to_owned(),
                seed: format!("{seed:032x}"),
                engine: self.inner.sandbox.settings(),
            },
        };
        (meta, start)
    }

    /// When a run of a concurrency bucket ends: the write that gives its
    /// slot to the bucket's next queued runs (in the same transaction as the
    /// end), and the bucket, to wake once it is durable
    /// ([`Runtime::wake_bucket`]).
    pub(crate) async fn release_slot(
        &self,
        meta: &RunMeta,
    ) -> Result<(Option<Write>, Option<(String, String)>), crate::store::StoreError> {
        let Some(slot) = meta.slot.as_ref().filter(|_| meta.status.is_final()) else {
            return Ok((None, None));
        };
        let deployment = self.inner.store.deployment(&meta.workflow).await?;
        // No limit any more: every queued run of the bucket may go.
        let admission = deployment
            .and_then(|d| d.concurrency)
            .and_then(|c| c.admission(&slot.key))
            .unwrap_or(crate::store::Admission::OPEN);
        let promote = Write::Promote { workflow: meta.workflow.clone(), key: slot.key.clone(), admission };
        Ok((Some(promote), Some((meta.workflow.clone(), slot.key.clone()))))
    }

    /// Wakes the runs holding a bucket's slots: those a promote just
    /// started among them (waking a run already going is a no-op). With
    /// several hosts, the promote also left wake-up rows for their hosts.
    pub(crate) async fn wake_bucket(&self, bucket: Option<(String, String)>) {
        let Some((workflow, key)) = bucket else { return };
        match self.inner.store.holding(&workflow, &key, 100_000).await {
            Ok(runs) => {
                for run_id in runs {
                    self.wake(&run_id);
                }
            }
            Err(e) => {
                tracing::warn!(%workflow, %key, error = %e, "could not read a concurrency bucket; its new runs start at the next recovery")
            }
        }
    }

    /// Starts the queued runs of rate-limited buckets as their tokens come,
    /// every `every`, while this host holds shard 0 (one host at a time).
    pub async fn admit_throttled(self, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.coordinator().owns(0) {
                continue;
            }
            let deployments = match self.inner.store.deployments().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the deployments for rate limits");
                    continue;
                }
            };
            for d in deployments {
                let Some(limits) = d.concurrency.filter(|c| c.rate.is_some()) else { continue };
                let query = crate::store::RunQuery {
                    statuses: vec![RunStatus::Queued],
                    limit: 1000,
                    ..crate::store::RunQuery::workflow(&d.name)
                };
                let queued = match self.inner.store.runs(&query).await {
                    Ok(page) => page.runs,
                    Err(e) => {
                        tracing::warn!(workflow = %d.name, error = %e, "could not read queued runs");
                        continue;
                    }
                };
                let mut keys: Vec<String> = queued.into_iter().filter_map(|m| m.slot.map(|s| s.key)).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    if let Err(e) = self.admit(&d.name, &key, limits.admission(&key)).await {
                        tracing::warn!(workflow = %d.name, %key, error = %e, "could not admit rate-limited runs");
                    }
                }
            }
        }
    }

    /// Gives free slots of a bucket to its queued runs and wakes them (a
    /// limit was raised or removed).
    pub async fn admit(
        &self,
        workflow: &str,
        key: &str,
        admission: Option<crate::store::Admission>,
    ) -> Result<(), crate::store::StoreError> {
        let admission = admission.unwrap_or(crate::store::Admission::OPEN);
        if self.inner.store.queued(workflow, key, 1).await?.is_empty() {
            return Ok(());
        }
        let promote = Write::Promote { workflow: workflow.to_owned(), key: key.to_owned(), admission };
        self.inner.store.commit(vec![promote]).await?;
        self.wake_bucket(Some((workflow.to_owned(), key.to_owned()))).await;
        Ok(())
    }

    /// The writes that tell a run's parent how it ended (in the same
    /// transaction as the end itself, so the news is never lost).
    pub(crate) fn parent_writes(&self, meta: &RunMeta) -> Vec<Write> {
        let Some(parent) = &meta.parent else {
            return Vec::new();
        };
        if !meta.status.is_final() {
            return Vec::new();
        }
        let completion = match (&meta.status, &meta.result) {
            (RunStatus::Completed, Some(result)) => crate::journal::Completion::Ok(result.clone()),
            _ => crate::journal::Completion::Err(
                meta.failure.clone().unwrap_or_else(|| crate::journal::Failure::new("failed", "the child run failed")),
            ),
        };
        vec![Write::PutCompletion {
            run_id: parent.run_id.clone(),
            handle: parent.handle,
            completion: crate::store::StoredCompletion {
                completion,
                arrival: self.next_arrival(),
                generation: parent.generation,
            },
        }]
    }
}

/// Milliseconds since the Unix epoch, by the host's clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The run's PRNG seed: a hash of its id, so it is reproducible from the id
/// alone and different for every run.
fn derive_seed(run_id: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("cairn-seed:{run_id}").as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// A new run's id: `run-`, the time in ms (12 hex digits), then a counter
/// (8 hex digits) that starts at a random point in each process, so ids are
/// unique and a later run's id sorts after an earlier one's.
///
/// The order is for the store: a run's rows (its metadata, its journal) are
/// keyed by its id, and time-ordered ids put the rows of the runs in flight
/// together at the right-hand end of each B-tree, where a commit finds a few
/// hot pages in redb's cache. Random ids sent every commit to leaves spread
/// over the whole file, and a server slowed down as its store grew (the
/// full-store row of `cairn bench` watches this).
fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let digest = Sha256::digest(format!("{nanos}:{}", std::process::id()).as_bytes());
        AtomicU32::new(u32::from_le_bytes(digest[..4].try_into().expect("4 bytes")))
    });
    let n = next.fetch_add(1, Ordering::Relaxed);
    format!("run-{:012x}{n:08x}", now_ms() & 0xffff_ffff_ffff)
}

/// A fresh update id suffix: unique, and later ones sort after earlier ones.
pub fn new_update_id() -> String {
    new_run_id().trim_start_matches("run-").to_owned()
}

pub(crate) fn validate_run_id(id: &str) -> Result<(), StartError> {
    // `.` and `..` are path segments every HTTP client normalises away:
    // such a run could be started but never addressed again.
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(StartError::InvalidRunId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_run_ids_are_unique_valid_and_sort_in_the_order_they_were_made() {
        let first: Vec<String> = (0..10_000).map(|_| new_run_id()).collect();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_run_id();
        let distinct: std::collections::HashSet<&String> = first.iter().collect();
        assert_eq!(distinct.len(), first.len(), "an id was made twice");
        assert!(first.iter().all(|id| validate_run_id(id).is_ok() && id.len() == 24), "{:?}", &first[..3]);
        // A later millisecond sorts later, whatever the counter did.
        assert!(first.iter().all(|id| *id < later), "{later} sorts before an earlier id");
    }
}
