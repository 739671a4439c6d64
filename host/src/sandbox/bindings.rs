//! Host bindings generated from the WIT files in `wit/`, the single source
//! of truth for the guest contract. The generated items are documented in
//! the WIT files themselves.
#![allow(missing_docs)]

/// The `workflow` world.
pub mod workflow {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "workflow",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `activity` world.
pub mod activity {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "activity",
        imports: { default: trappable },
        exports: { default: async },
    });
}
