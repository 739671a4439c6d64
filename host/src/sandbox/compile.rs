//! Components by content hash, compiled once per engine fingerprint.
//!
//! Compiling a component takes from milliseconds (Rust) to seconds (Python,
//! JavaScript); deserialising a precompiled artifact takes about a
//! millisecond. Artifacts are kept in the store keyed by (sha256, engine
//! fingerprint), so a restart or a second process does not recompile.

use super::engine::{hex, Sandbox};
use crate::store::{Store, StoreError, Write};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use wasmtime::component::Component;

/// A component could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component.
    #[error("{what} is not a valid WebAssembly component: {reason}. Build it for wasm32-wasip2 (or run `wasm-tools component new` on a core module)")]
    Invalid {
        /// What was loaded (a path or a hash).
        what: String,
        /// wasmtime's explanation.
        reason: String,
    },
    /// No component with this hash is stored.
    #[error("component {0} is not in the store")]
    Missing(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A loaded, compiled component.
#[derive(Clone)]
pub struct LoadedComponent {
    /// sha256 of the component bytes, hex.
    pub sha256: String,
    /// The compiled component.
    pub component: Component,
}

/// The names a component exports at its top level (`run` for a workflow,
/// `execute` for an activity).
pub fn exported_names(engine: &wasmtime::Engine, component: &Component) -> Vec<String> {
    component.component_type().exports(engine).map(|(name, _)| name.to_owned()).collect()
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Loads components, storing their bytes and compiled artifacts.
#[derive(Clone)]
pub struct ComponentCache {
    sandbox: Sandbox,
    store: Store,
    memo: Arc<Mutex<HashMap<String, Component>>>,
}

impl ComponentCache {
    /// A cache over `store`.
    pub fn new(sandbox: Sandbox, store: Store) -> Self {
        ComponentCache { sandbox, store, memo: Arc::default() }
    }

    /// Loads component bytes (from a file or an upload) and makes sure the
    /// bytes and the artifact are stored. `what` names the source in errors.
    pub async fn load_bytes(&self, what: &str, bytes: Vec<u8>) -> Result<LoadedComponent, LoadError> {
        let sha256 = sha256_hex(&bytes);
        if let Some(component) = self.memoised(&sha256) {
            return Ok(LoadedComponent { sha256, component });
        }
        if self.store.component(&sha256).await?.is_none() {
            self.store.commit(vec![Write::PutComponent { sha256: sha256.clone(), bytes: bytes.into() }]).await?;
        }
        self.compiled(what, &sha256).await
    }

    /// Compiles component bytes without storing anything (for replay
    /// checks, which must write nothing).
    pub async fn load_transient(&self, what: &str, bytes: Vec<u8>) -> Result<LoadedComponent, LoadError> {
        let sha256 = sha256_hex(&bytes);
        if let Some(component) = self.memoised(&sha256) {
            return Ok(LoadedComponent { sha256, component });
        }
        let engine = self.sandbox.engine().clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: e.to_string() })?
            .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: format!("{e:#}") })?;
        Ok(LoadedComponent { sha256, component })
    }

    /// Compiles component bytes without storing them, returning the writes
    /// that would store the bytes and the artifact: the caller commits them
    /// together with whatever makes the component reachable (a deployment),
    /// so a refused upload leaves nothing behind.
    pub async fn compile_for_store(
        &self,
        what: &str,
        bytes: Vec<u8>,
    ) -> Result<(LoadedComponent, Vec<Write>), LoadError> {
        let sha256 = sha256_hex(&bytes);
        let fingerprint = self.sandbox.fingerprint().to_owned();
        let mut writes = Vec::new();
        if self.store.component(&sha256).await?.is_none() {
            let engine = self.sandbox.engine().clone();
            let source = bytes.clone();
            let artifact = tokio::task::spawn_blocking(move || engine.precompile_component(&source))
                .await
                .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: e.to_string() })?
                .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: format!("{e:#}") })?;
            // SAFETY: produced just above by this engine.
            let component = unsafe { Component::deserialize(self.sandbox.engine(), &artifact) }
                .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: format!("{e:#}") })?;
            writes.push(Write::PutComponent { sha256: sha256.clone(), bytes: bytes.into() });
            writes.push(Write::PutCompiled { sha256: sha256.clone(), engine: fingerprint, bytes: artifact });
            return Ok((self.remember(&sha256, component), writes));
        }
        // The bytes ride along even when stored: a retired version's
        // component collected at the same moment is then put back.
        writes.push(Write::PutComponent { sha256: sha256.clone(), bytes: bytes.into() });
        Ok((self.load_stored(&sha256).await?, writes))
    }

    /// Loads a stored component by hash.
    pub async fn load_stored(&self, sha256: &str) -> Result<LoadedComponent, LoadError> {
        if let Some(component) = self.memoised(sha256) {
            return Ok(LoadedComponent { sha256: sha256.to_owned(), component });
        }
        self.compiled(&format!("component {sha256}"), sha256).await
    }

    fn memoised(&self, sha256: &str) -> Option<Component> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(sha256).cloned()
    }

    async fn compiled(&self, what: &str, sha256: &str) -> Result<LoadedComponent, LoadError> {
        let engine = self.sandbox.engine().clone();
        let fingerprint = self.sandbox.fingerprint().to_owned();
        if let Some(artifact) = self.store.compiled(sha256, &fingerprint).await? {
            // SAFETY: the artifact was produced by `precompile_component` of
            // an engine with this exact fingerprint and stored by us.
            match unsafe { Component::deserialize(&engine, &artifact) } {
                Ok(component) => return Ok(self.remember(sha256, component)),
                Err(e) => {
                    tracing::warn!(sha256, error = %e, "cached artifact unusable; recompiling")
                }
            }
        }
        let bytes = self.store.component(sha256).await?.ok_or_else(|| LoadError::Missing(sha256.to_owned()))?;
        let started = std::time::Instant::now();
        let artifact = tokio::task::spawn_blocking(move || engine.precompile_component(&bytes))
            .await
            .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: e.to_string() })?
            .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: format!("{e:#}") })?;
        tracing::debug!(sha256, ms = started.elapsed().as_millis() as u64, "compiled component");
        // SAFETY: produced just above by this engine.
        let component = unsafe { Component::deserialize(self.sandbox.engine(), &artifact) }
            .map_err(|e| LoadError::Invalid { what: what.to_owned(), reason: format!("{e:#}") })?;
        self.store
            .commit(vec![Write::PutCompiled { sha256: sha256.to_owned(), engine: fingerprint, bytes: artifact }])
            .await?;
        Ok(self.remember(sha256, component))
    }

    fn remember(&self, sha256: &str, component: Component) -> LoadedComponent {
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).insert(sha256.to_owned(), component.clone());
        LoadedComponent { sha256: sha256.to_owned(), component }
    }
}
