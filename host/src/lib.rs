//! Cairn: a durable workflow host for WebAssembly components.
//!
//! Data flows one way: the `cairn` binary's `cli` → `runtime` → `sandbox` ⇄ `journal` → `store`,
//! and `runtime` → `activity`. Nothing below `cli` prints; everything logs
//! through `tracing` with the run id in the span.
#![deny(missing_docs)]
// The OpenAPI document is one `json!` literal.
#![recursion_limit = "256"]

pub mod activity;
pub mod api;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal;
pub mod metrics;
pub mod registry;
pub mod retention;
pub mod runtime;
pub mod sandbox;
pub mod schedule;
pub mod search;
pub mod store;
pub mod upgrade;
