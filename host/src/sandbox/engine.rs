//! The wasmtime engine and its limits.

use crate::journal::EngineSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiterAsync};

/// How often the engine's epoch advances. Budgets are counted in ticks.
pub const EPOCH_TICK_MS: u64 = 10;

/// Resource limits for guest code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory one instance may have, in bytes.
    pub max_memory_bytes: u64,
    /// Longest a workflow may compute without calling the host, in ms. A
    /// workflow over budget is a runaway loop: its run fails.
    pub step_budget_ms: u64,
    /// Guest stack limit in bytes; deeper recursion traps.
    pub max_wasm_stack: u64,
    /// Instances the pooling allocator holds ready (runs in memory plus
    /// activity attempts in flight, plus scratch replays); 0 allocates each
    /// instance on demand instead. A full pool makes new instantiations wait
    /// for a slot, never fail.
    pub pool_instances: u32,
    /// Socket addresses activities may connect to (TCP and UDP); empty
    /// means no network. Workflows never have one.
    pub activity_network: Vec<std::net::SocketAddr>,
    /// Most signals one run may have buffered (sent, not yet consumed);
    /// past it a signal is refused (`429 too-many-signals`).
    pub max_signals_per_run: u64,
    /// Most bytes of buffered signals over every run; past it a signal is
    /// refused (`429 signal-buffer-full`).
    pub max_signal_bytes: u64,
    /// Most bytes of linear memory all guest instances together may have:
    /// an instance that would grow past it waits for memory to be freed
    /// (runs ending, idle runs leaving memory) rather than the host growing
    /// past it. At least `max_memory_bytes`.
    pub memory_budget_bytes: u64,
}

/// Half the machine's memory (4 GiB where it cannot be read): the default
/// guest memory budget.
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    total.map_or(4 << 30, |bytes| bytes / 2)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_bytes: 256 << 20,
            step_budget_ms: 10_000,
            max_wasm_stack: 512 << 10,
            pool_instances: 1024,
            activity_network: Vec::new(),
            max_signals_per_run: 10_000,
            max_signal_bytes: 256 << 20,
            memory_budget_bytes: default_memory_budget(),
        }
    }
}

/// Per-component shapes the pool admits. Sized for the language runtimes:
/// a componentize-py component has about a dozen core instances, several
/// tables and a function table of tens of thousands of entries.
const POOL_CORE_INSTANCES_PER_COMPONENT: u32 = 50;
const POOL_MEMORIES_PER_COMPONENT: u32 = 8;
const POOL_TABLES_PER_COMPONENT: u32 = 16;
const POOL_TABLE_ELEMENTS: usize = 100_000;
/// Average memories and tables per instance the pool keeps slots for.
const POOL_MEMORIES_PER_INSTANCE: u32 = 2;
const POOL_TABLES_PER_INSTANCE: u32 = 4;
const POOL_CORE_INSTANCES_PER_INSTANCE: u32 = 6;

/// Dirty bytes of a memory or table slot reset in place when its instance
/// ends (beyond them, the rest is unmapped). Enough for a workflow's
/// working set; the pool's resident memory grows by at most this per slot used.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;
/// Whether the host has swap. wasmtime 48's `PAGEMAP_SCAN` reset finds
/// the dirty pages that are present; a dirty page swapped out would be
/// neither reset nor unmapped, and the slot's next instance would read it.
/// So with swap, slots are reset the plain way.
fn swap_active() -> bool {
    match std::fs::read_to_string("/proc/swaps") {
        Ok(table) => table.lines().skip(1).any(|l| !l.trim().is_empty()),
        Err(_) => true,
    }
}

/// Slots unmapped per batch.
const DECOMMIT_BATCH: usize = 16;

/// A claim on one of the pool's instance slots, held for as long as the
/// instance lives (drop it after the store).
pub struct InstanceSlot(#[allow(dead_code, reason = "held for its Drop")] Option<OwnedSemaphorePermit>);

impl Limits {
    /// The epoch ticks of the step budget.
    pub fn budget_ticks(&self) -> u64 {
        self.step_budget_ms.div_ceil(EPOCH_TICK_MS).max(1)
    }
}

/// A store's resource limiter. A denied `memory.grow` traps (rather than
/// returning -1, which replay could observe differently) and is remembered
/// so the failure can be reported as what it is. Growth is also taken from
/// the host's memory budget, waiting while the budget is spent.
#[derive(Debug)]
pub struct GuestLimits {
    max_memory_bytes: usize,
    /// Set when the guest tried to grow memory past the limit.
    pub memory_denied: bool,
    /// The host's guest memory budget, in MiB permits.
    budget: Arc<Semaphore>,
    /// What this instance holds of it (released when the store is dropped).
    held: Option<OwnedSemaphorePermit>,
    /// It grew past the budget once: later growth takes what is free and
    /// does not wait again.
    over_budget: bool,
}

/// How long an instance waits for the memory budget before it grows past
/// it anyway (with a warning): the runs holding the budget may themselves
/// be waiting for more, and waiting for ever would stall them all.
const BUDGET_WAIT: Duration = Duration::from_secs(30);

impl GuestLimits {
    /// Takes what growing a memory from `current` to `desired` bytes adds
    /// (in whole MiB) from the budget; each memory of the instance is
    /// charged for its own growth.
    async fn reserve(&mut self, current: usize, desired: usize) {
        let needed = desired.div_ceil(1 << 20).saturating_sub(current.div_ceil(1 << 20));
        let Ok(needed) = u32::try_from(needed) else { return };
        if needed == 0 {
            return;
        }
        let budget = self.budget.clone();
        let permit = match budget.clone().try_acquire_many_owned(needed) {
            Ok(permit) => Some(permit),
            Err(_) if self.over_budget => None,
            Err(_) => {
                tracing::debug!(needed_mib = needed, "waiting for the guest memory budget");
                match tokio::time::timeout(BUDGET_WAIT, budget.acquire_many_owned(needed)).await {
                    Ok(permit) => permit.ok(),
                    Err(_) => {
                        tracing::warn!(
                            needed_mib = needed,
                            "the guest memory budget (--memory-budget-mib) stayed spent for {} s: this instance grows past it; give the host a larger budget or fewer concurrent runs",
                            BUDGET_WAIT.as_secs()
                        );
                        self.over_budget = true;
                        None
                    }
                }
            }
        };
        match (&mut self.held, permit) {
            (Some(held), Some(permit)) => held.merge(permit),
            (held @ None, Some(permit)) => *held = Some(permit),
            // Grown past the budget: later growth is charged afresh (it
            // waits again only for what it adds).
            (_, None) => {}
        }
    }
}

/// The error a denied memory growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("the guest tried to grow its memory to {desired} bytes, past the limit of {limit} bytes")]
pub struct MemoryLimitExceeded {
    /// Requested size.
    pub desired: usize,
    /// The limit.
    pub limit: usize,
}

type Growing<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<bool>> + Send + 'a>>;

impl ResourceLimiterAsync for GuestLimits {
    fn memory_growing<'life0, 'async_trait>(
        &'life0 mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Growing<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if desired > self.max_memory_bytes {
                self.memory_denied = true;
                return Err(MemoryLimitExceeded { desired, limit: self.max_memory_bytes }.into());
            }
            self.reserve(current, desired).await;
            Ok(true)
        })
    }

    fn table_growing<'life0, 'async_trait>(
        &'life0 mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Growing<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { Ok(desired <= 1 << 20) })
    }
}

/// The engine shared by every run and activity of a host, with its settings.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    limits: Limits,
    fingerprint: String,
    /// One permit per pool slot in use: instantiations wait here for a free
    /// slot rather than failing on a full pool.
    slots: Option<Arc<Semaphore>>,
    /// Pool slots kept outside the semaphore for warm activity instances
    /// waiting between calls (so idle instances never starve a run).
    warm_slots: usize,
    /// The guest memory budget, one permit per MiB.
    budget: Arc<Semaphore>,
}

/// Most warm activity instances a host keeps between calls.
const MAX_WARM_INSTANCES: usize = 64;

impl Sandbox {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(limits: Limits) -> wasmtime::Result<Sandbox> {
        let mut config = Config::new();
        config
            // Determinism: the same inputs give the same outputs on every
            // machine and every replay.
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .wasm_gc(false)
            .wasm_stack_switching(false)
            // The component-model-async machinery is not compiled in; say so
            // explicitly so a feature change cannot turn it on silently.
            .concurrency_support(false)
            // Containment: runaway code is interrupted, stacks are bounded.
            .epoch_interruption(true)
            .max_wasm_stack(usize::try_from(limits.max_wasm_stack).unwrap_or(512 << 10))
            .async_stack_size(4 << 20);
        if std::env::var_os("CAIRN_PERF_MAP").is_some() {
            // For profiling: guest functions get names in /tmp/perf-PID.map,
            // which `perf report` reads.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if (1..4).contains(&limits.pool_instances) {
            wasmtime::bail!(
                "a pool of {} instances is too small: use 0 (no pool) or at least 4",
                limits.pool_instances
            );
        }
        if limits.pool_instances > 0 {
            // Linear memories live in fixed slots of the size limit, so the
            // reservation is the limit (not 4 GiB) and ten thousand slots fit
            // in the address space.
            let max_memory = usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX);
            config.memory_reservation(limits.max_memory_bytes);
            let n = limits.pool_instances;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(POOL_CORE_INSTANCES_PER_INSTANCE))
                .total_memories(n.saturating_mul(POOL_MEMORIES_PER_INSTANCE))
                .total_tables(n.saturating_mul(POOL_TABLES_PER_INSTANCE))
                .total_stacks(n)
                .max_core_instances_per_component(POOL_CORE_INSTANCES_PER_COMPONENT)
                .max_memories_per_component(POOL_MEMORIES_PER_COMPONENT)
                .max_tables_per_component(POOL_TABLES_PER_COMPONENT)
                .max_memories_per_module(2)
                .max_tables_per_module(8)
                .table_elements(POOL_TABLE_ELEMENTS)
                .max_component_instance_size(4 << 20)
                .max_core_instance_size(4 << 20)
                .max_memory_size(max_memory)
                // A slot's dirty pages are reset in place and stay resident
                // (found with the PAGEMAP_SCAN ioctl where the kernel has it),
                // instead of being unmapped: unmapping costs a TLB shootdown
                // across cores, and the next run faults the pages back in.
                .pagemap_scan(if swap_active() { wasmtime::Enabled::No } else { wasmtime::Enabled::Auto })
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES)
                // What is still unmapped goes in batches, one shootdown each.
                .decommit_batch_size(DECOMMIT_BATCH);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let fingerprint = {
            use sha2::{Digest, Sha256};
            use std::hash::{Hash, Hasher};
            struct Sha(Sha256);
            impl Hasher for Sha {
                fn finish(&self) -> u64 {
                    0
                }
                fn write(&mut self, bytes: &[u8]) {
                    self.0.update(bytes);
                }
            }
            let mut h = Sha(Sha256::new());
            engine.precompile_compatibility_hash().hash(&mut h);
            hex(&h.0.finalize())
        };
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("cairn-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                }
            })
            .expect("spawning the epoch thread");
        let pool = limits.pool_instances as usize;
        let warm_slots = if pool > 0 { (pool / 8).min(MAX_WARM_INSTANCES) } else { MAX_WARM_INSTANCES };
        let slots = (pool > 0).then(|| Arc::new(Semaphore::new(pool - warm_slots)));
        let budget_mib =
            (limits.memory_budget_bytes.max(limits.max_memory_bytes) >> 20).clamp(1, Semaphore::MAX_PERMITS as u64);
        let budget = Arc::new(Semaphore::new(budget_mib as usize));
        Ok(Sandbox { engine, limits, fingerprint, slots, warm_slots, budget })
    }

    /// Per-store limits for one instance, drawing on the host's memory
    /// budget.
    pub fn guest_limits(&self) -> GuestLimits {
        GuestLimits {
            max_memory_bytes: usize::try_from(self.limits.max_memory_bytes).unwrap_or(usize::MAX),
            memory_denied: false,
            budget: self.budget.clone(),
            held: None,
            over_budget: false,
        }
    }

    /// MiB of the guest memory budget no instance holds now.
    pub fn memory_budget_free_mib(&self) -> usize {
        self.budget.available_permits()
    }

    /// Waits for a free instance slot (at once without a pool).
    pub async fn instance_slot(&self) -> InstanceSlot {
        match &self.slots {
            // The semaphore is never closed.
            Some(slots) => InstanceSlot(slots.clone().acquire_owned().await.ok()),
            None => InstanceSlot(None),
        }
    }

    /// How many activity instances may stay warm between calls: pool slots
    /// set aside for them, never counted by [`Sandbox::instance_slot`].
    pub fn warm_slots(&self) -> usize {
        self.warm_slots
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Identifies the compiled-code format, for the artifact cache.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The settings recorded in each run's start entry.
    pub fn settings(&self) -> EngineSettings {
        EngineSettings {
            nan_canonicalization: true,
            relaxed_simd_deterministic: true,
            max_memory_bytes: self.limits.max_memory_bytes,
            step_budget_ms: self.limits.step_budget_ms,
            max_wasm_stack: self.limits.max_wasm_stack,
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
