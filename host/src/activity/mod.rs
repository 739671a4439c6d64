//! Activity execution: activity components by name, attempts with a
//! timeout, retries with exponential backoff, and the idempotency key.
//!
//! An activity call is named `"<component>.<function>"`: the component
//! registered under `<component>` is instantiated and `execute("<function>",
//! input)` is called. Like a worker process, an instance serves many calls
//! one at a time: after a call returns (with a result or a failure) it is
//! kept warm for the next call of that component, up to
//! [`MAX_CALLS_PER_INSTANCE`] calls. One that traps, runs out of memory or
//! times out is discarded. This module does the side effects; it never
//! touches the journal. Its only output is the final [`Completion`] of a
//! call, which the run driver journals.

pub mod external;
pub mod http;
pub mod limits;

use crate::journal::{ActivityOptions, Completion, Failure};
use crate::sandbox::bindings::activity::{cairn::workflow::activity_context, Activity, ActivityPre};
use crate::sandbox::{activity_wasi, GuestLimits, LoadedComponent, Sandbox};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use thiserror::Error;
use tracing::Instrument;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// An activity component could not be registered.
#[derive(Debug, Error)]
pub enum ActivityError {
    /// The component does not fit the `activity` world.
    #[error("component {name} is not a valid activity component: {reason}")]
    NotAnActivity {
        /// Registered name.
        name: String,
        /// What is wrong (a missing export or an import the host does not provide).
        reason: String,
    },
    /// The name is not usable.
    #[error("invalid activity component name {0:?}: use letters, digits, '-' and '_' (no '.')")]
    InvalidName(String),
}

/// What one attempt can see.
pub struct ActivityState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: GuestLimits,
    key: String,
    run_id: String,
    attempt: u32,
}

impl WasiView for ActivityState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl activity_context::Host for ActivityState {
    fn idempotency_key(&mut self) -> wasmtime::Result<String> {
        Ok(self.key.clone())
    }
    fn attempt(&mut self) -> wasmtime::Result<u32> {
        Ok(self.attempt)
    }
    fn run_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.run_id.clone())
    }
}

impl crate::sandbox::bindings::activity::cairn::workflow::types::Host for ActivityState {}

/// Calls one activity instance serves before it is replaced by a fresh one,
/// which bounds what a leak in guest code can accumulate.
pub const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// A registered activity component.
struct Registered {
    /// The component's sha256.
    sha256: String,
    pre: ActivityPre<ActivityState>,
    /// Instances between calls, ready for the next one.
    warm: Mutex<Vec<Warm>>,
    /// The runner's count of warm instances, which this one's add to.
    total: Arc<AtomicUsize>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let warm = self.warm.get_mut().map(|w| w.len()).unwrap_or_else(|e| e.into_inner().len());
        self.total.fetch_sub(warm, Ordering::Relaxed);
    }
}

/// An instantiated activity component waiting for its next call.
struct Warm {
    store: Store<ActivityState>,
    instance: Activity,
    calls: u32,
}

/// One scheduled activity call.
#[derive(Debug, Clone)]
pub struct ActivityTask {
    /// The run that scheduled it.
    pub run_id: String,
    /// The generation of the run that scheduled it (0 until the run first
    /// continues as new).
    pub generation: u32,
    /// Its handle in that generation.
    pub handle: u32,
    /// `<component>.<function>`.
    pub name: String,
    /// JSON input.
    pub input: String,
    /// Timeout and retries.
    pub options: ActivityOptions,
    /// The number of the first attempt to make: 1, or one more than the
    /// attempts that already failed before a restart.
    pub first_attempt: u32,
}

impl ActivityTask {
    /// The key shared by every attempt and every replay of this call, and
    /// by no other call: `<run-id>/<handle>` in a run's first generation,
    /// `<run-id>/<generation>/<handle>` after it continued as new (handle
    /// numbers restart with each generation; run ids have no `/`).
    pub fn idempotency_key(&self) -> String {
        idempotency_key(&self.run_id, self.generation, self.handle)
    }
}

/// See [`ActivityTask::idempotency_key`].
pub fn idempotency_key(run_id: &str, generation: u32, handle: u32) -> String {
    match generation {
        0 => format!("{run_id}/{handle}"),
        g => format!("{run_id}/{g}/{handle}"),
    }
}

/// Splits `"<component>.<function>"`.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    name.split_once('.').filter(|(c, f)| !c.is_empty() && !f.is_empty())
}

/// Runs activity components.
#[derive(Clone)]
pub struct ActivityRunner {
    sandbox: Sandbox,
    linker: Arc<Linker<ActivityState>>,
    components: Arc<RwLock<HashMap<String, Arc<Registered>>>>,
    /// Warm instances held over all components (at most the sandbox's
    /// [`Sandbox::warm_slots`]).
    warm_total: Arc<AtomicUsize>,
    /// Where activities may connect (the sandbox's allow-list).
    network: Arc<[std::net::SocketAddr]>,
    metrics: Arc<crate::metrics::RuntimeMetrics>,
    /// Tasks for external workers.
    external: Arc<external::ExternalTasks>,
    /// Limits on attempts in flight and started per time.
    limiter: Arc<limits::Limiter>,
}

impl ActivityRunner {
    /// A runner with no components.
    pub fn new(sandbox: Sandbox, metrics: Arc<crate::metrics::RuntimeMetrics>) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(sandbox.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Activity::add_to_linker::<_, HasSelf<ActivityState>>(&mut linker, |s| s)?;
        let network = sandbox.limits().activity_network.clone().into();
        Ok(ActivityRunner {
            sandbox,
            linker: Arc::new(linker),
            components: Arc::default(),
            warm_total: Arc::default(),
            network,
            metrics,
            external: Arc::default(),
            limiter: Arc::default(),
        })
    }

    /// Checks that `component` fits the activity world, without registering it.
    pub fn check(&self, name: &str, component: &LoadedComponent) -> Result<(), ActivityError> {
        self.prepare(name, component).map(drop)
    }

    fn prepare(&self, name: &str, component: &LoadedComponent) -> Result<ActivityPre<ActivityState>, ActivityError> {
        let invalid =
            |e: wasmtime::Error| ActivityError::NotAnActivity { name: name.to_owned(), reason: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(&component.component).map_err(invalid)?;
        ActivityPre::new(pre).map_err(invalid)
    }

    /// Makes `component` callable as `<name>.<function>`.
    pub fn register(&self, name: &str, component: &LoadedComponent) -> Result<(), ActivityError> {
        if !crate::registry::valid_name(name) {
            return Err(ActivityError::InvalidName(name.to_owned()));
        }
        let pre = self.prepare(name, component)?;
        let registered = Arc::new(Registered {
            sha256: component.sha256.clone(),
            pre,
            warm: Mutex::default(),
            total: self.warm_total.clone(),
        });
        // A replaced component's warm instances go when its last call ends.
        self.components.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), registered);
        Ok(())
    }

    /// The sha256 of the component registered under `name`, if one is.
    pub fn registered(&self, name: &str) -> Option<String> {
        self.components.read().unwrap_or_else(|e| e.into_inner()).get(name).map(|r| r.sha256.clone())
    }

    /// Whether activities named `name.*` can run: a component is
    /// registered under `name`, or it is the built-in `http`.
    pub fn has(&self, name: &str) -> bool {
        name == http::COMPONENT
            || self.external.serves(name)
            || self.components.read().unwrap_or_else(|e| e.into_inner()).contains_key(name)
    }

    /// The queue external workers poll.
    pub fn external(&self) -> &external::ExternalTasks {
        &self.external
    }

    /// The limits on attempts.
    pub fn limiter(&self) -> &limits::Limiter {
        &self.limiter
    }

    /// Registered component names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.components.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs `task` to its final outcome: attempts with the per-attempt
    /// timeout, retried by the policy with exponential backoff. `failed` is
    /// told the number of each failed attempt that will be retried, so the
    /// count can outlive a restart.
    pub async fn execute(&self, task: ActivityTask, failed: impl Fn(u32)) -> Completion {
        let Some((component, function)) = split_name(&task.name) else {
            return Completion::Err(Failure::new(
                "invalid-activity-name",
                format!("activity name {:?} is not of the form <component>.<function>", task.name),
            ));
        };
        let external = self.external.serves(component);
        let pre = self.components.read().unwrap_or_else(|e| e.into_inner()).get(component).cloned();
        if pre.is_none() && !external && component != http::COMPONENT {
            return Completion::Err(Failure::new(
                "unknown-activity",
                format!("no activity component is registered as {component:?}"),
            ));
        }
        let retry = &task.options.retry;
        let mut attempt = task.first_attempt.max(1);
        loop {
            let span = tracing::info_span!("activity", run_id = %task.run_id, handle = task.handle, name = %task.name, attempt);
            let timeout = Duration::from_millis(task.options.timeout_ms.max(1));
            // A limited activity waits for a slot before the attempt (and
            // its timeout) starts, and holds it until the attempt ends.
            // Unique to this attempt in this process: the same attempt made
            // again after a crash is another holder.
            let holder = format!(
                "{}/{}/{}/{attempt}/{}",
                task.run_id,
                task.generation,
                task.handle,
                crate::runtime::new_update_id()
            );
            let _slot = self.limiter.take(component, function, &task.input, holder).instrument(span.clone()).await;
            let run = async {
                match &pre {
                    _ if external => {
                        let key = task.idempotency_key();
                        self.external.attempt(&task.name, &task.input, &task.run_id, &key, attempt).await
                    }
                    Some(registered) => self.attempt(registered, &task, component, function, attempt).await,
                    // The built-in, when no component took its name.
                    None => http::call(&self.network, function, &task.input, &task.idempotency_key()).await,
                }
            };
            // The span covers the attempt, so exported traces show its duration.
            let outcome = tokio::time::timeout(timeout, run).instrument(span.clone()).await.unwrap_or_else(|_| {
                Err(Failure::new(
                    "timeout",
                    format!("attempt {attempt} did not finish within {} ms", task.options.timeout_ms),
                ))
            });
            let failure = match outcome {
                Ok(json) => {
                    self.metrics.activity_attempts.inc(&[&task.name, "ok"]);
                    return Completion::Ok(json);
                }
                Err(failure) => failure,
            };
            let outcome = if failure.kind == "timeout" { "timeout" } else { "failed" };
            self.metrics.activity_attempts.inc(&[&task.name, outcome]);
            span.in_scope(
                || tracing::warn!(kind = %failure.kind, message = %failure.message, "activity attempt failed"),
            );
            let exhausted = retry.max_attempts != 0 && attempt >= retry.max_attempts;
            if exhausted || retry.non_retryable_kinds.contains(&failure.kind) {
                let mut failure = failure;
                if failure.details.is_none() {
                    failure.details = Some(format!("{{\"attempts\":{attempt}}}"));
                }
                return Completion::Err(failure);
            }
            failed(attempt);
            self.metrics.activity_retries.inc(&[&task.name]);
            drop(_slot);
            tokio::time::sleep(backoff(retry, attempt)).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        registered: &Registered,
        task: &ActivityTask,
        component: &str,
        function: &str,
        attempt: u32,
    ) -> Result<String, Failure> {
        let _slot = self.sandbox.instance_slot().await;
        let warm = registered.warm.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut warm = match warm {
            Some(warm) => {
                self.warm_total.fetch_sub(1, Ordering::Relaxed);
                warm
            }
            None => self.instantiate(registered, component).await?,
        };
        let state = warm.store.data_mut();
        state.key = task.idempotency_key();
        state.run_id.clone_from(&task.run_id);
        state.attempt = attempt;
        // Yield to the executor at every epoch tick, so the attempt's timeout
        // fires even while the guest spins.
        warm.store.set_epoch_deadline(1);
        warm.calls += 1;
        let outcome = warm.instance.call_execute(&mut warm.store, function, &task.input).await;
        let result = match outcome {
            Ok(Ok(json)) if json.len() > crate::journal::MAX_PAYLOAD_BYTES => Err(Failure::new(
                "output-too-large",
                format!(
                    "the activity returned {} bytes, over the limit of {} bytes for one journaled payload",
                    json.len(),
                    crate::journal::MAX_PAYLOAD_BYTES
                ),
            )),
            Ok(Ok(json)) => match crate::journal::check_json(&json) {
                Ok(_) => Ok(json),
                Err(e) => Err(Failure::new("invalid-output", format!("the activity returned invalid JSON: {e}"))),
            },
            Ok(Err(f)) => Err(Failure { kind: f.kind, message: f.message, details: f.details }),
            // A trapped instance is in an unknown state: it is dropped.
            Err(e) => return Err(trap(e, warm.store.data().limits.memory_denied)),
        };
        self.keep_warm(registered, warm);
        result
    }

    /// A fresh instance of an activity component.
    async fn instantiate(&self, registered: &Registered, component: &str) -> Result<Warm, Failure> {
        let state = ActivityState {
            wasi: activity_wasi(component, &self.network),
            table: ResourceTable::new(),
            limits: self.sandbox.guest_limits(),
            key: String::new(),
            run_id: String::new(),
            attempt: 0,
        };
        let mut store = Store::new(self.sandbox.engine(), state);
        store.limiter_async(|s| &mut s.limits);
        store.epoch_deadline_async_yield_and_update(1);
        match registered.pre.instantiate_async(&mut store).await {
            Ok(instance) => Ok(Warm { store, instance, calls: 0 }),
            Err(e) => Err(trap(e, store.data().limits.memory_denied)),
        }
    }

    /// Keeps an instance for the next call, if it has calls left and a warm
    /// slot is free.
    fn keep_warm(&self, registered: &Registered, warm: Warm) {
        if warm.calls >= MAX_CALLS_PER_INSTANCE {
            return;
        }
        let cap = self.sandbox.warm_slots();
        let taken = self.warm_total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < cap).then_some(n + 1));
        if taken.is_ok() {
            registered.warm.lock().unwrap_or_else(|e| e.into_inner()).push(warm);
        }
    }
}

fn trap(e: wasmtime::Error, memory_denied: bool) -> Failure {
    if memory_denied {
        Failure::new("out-of-memory", format!("the activity exceeded its memory limit: {e}"))
    } else {
        Failure::new("trap", format!("the activity trapped: {e:#}"))
    }
}

/// Delay before attempt `attempt + 1`.
fn backoff(retry: &crate::journal::RetryPolicy, attempt: u32) -> Duration {
    let coefficient = if retry.backoff_coefficient.is_finite() { retry.backoff_coefficient.max(1.0) } else { 1.0 };
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let ms = (retry.initial_interval_ms as f64) * coefficient.powi(exponent);
    let cap = retry.max_interval_ms.max(retry.initial_interval_ms) as f64;
    Duration::from_millis(ms.min(cap) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::RetryPolicy;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            max_interval_ms: 500,
            non_retryable_kinds: vec![],
        };
        let delays: Vec<u64> = (1..=5).map(|a| backoff(&policy, a).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn activity_names_split_at_the_first_dot() {
        assert_eq!(split_name("payments.charge"), Some(("payments", "charge")));
        assert_eq!(split_name("payments."), None);
        assert_eq!(split_name("charge"), None);
    }
}
