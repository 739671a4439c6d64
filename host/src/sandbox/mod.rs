//! The sandbox: one wasmtime `Engine` configured for determinism and
//! containment, the virtual WASI that workflows see, the limited WASI that
//! activities see, the bindings generated from `wit/`, and the compiled
//! component cache.
//!
//! This module knows nothing of journals or runs; it only builds the places
//! guest code executes in.

pub mod bindings;
mod compile;
mod engine;
mod wasi;

pub use compile::{exported_names, sha256_hex, ComponentCache, LoadError, LoadedComponent};
pub use engine::{
    default_memory_budget, GuestLimits, InstanceSlot, Limits, MemoryLimitExceeded, Sandbox, EPOCH_TICK_MS,
};
pub(crate) use wasi::seeded_rng;
pub use wasi::{activity_wasi, workflow_wasi, GuestOutput, WorkflowClock};
