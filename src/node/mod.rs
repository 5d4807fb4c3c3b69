//! The node's door: [`WasmNodeCache`], the node's own struct, its [`Builder`], and the report of a
//! start-up ([`report`]). A start-up is one resolution of the whitelist through the
//! [`ArtifactStore`] the builder opens, which the cache keeps (to prune, for one).

mod builder;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact_store::ArtifactStore;
use crate::config::DEFAULT_WHITELIST_FILE;
use crate::error::StoreError;
use crate::key::Hash32;
use crate::operator::prune::{PruneOptions, PruneReport};
pub use builder::Builder;
pub use report::LoadReport;

/// The node's cache of compiled, whitelisted Wasm components.
///
/// The public fields are the ones the node has always read directly (it clones them into its
/// executor's parameters for every message). Cloning is cheap: engines and components are
/// reference-counted handles.
///
/// ```no_run
/// use wasm_node_cache::WasmNodeCache;
/// // ./config/wasm, ./config/wasm.conf, the default store
/// let cache = WasmNodeCache::new()?;
/// let engine: wasmtime::Engine = cache.wasm_engine.clone();
/// println!("{} components; {}", cache.wasm_component_cache.len(), cache.report());
/// # anyhow::Ok(())
/// ```
#[derive(Clone)]
pub struct WasmNodeCache {
    /// The engine every component was compiled for.
    pub wasm_engine: Engine,
    /// Where source binaries are read from.
    pub wasm_binary_root_path: String,
    /// The hashes the node may run.
    pub wasm_hash_whitelist: HashSet<Hash32>,
    /// Ready components by source hash.
    pub wasm_component_cache: HashMap<Hash32, Component>,
    report: Arc<LoadReport>,
    store: ArtifactStore,
}

impl std::fmt::Debug for WasmNodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmNodeCache")
            .field("wasm_binary_root_path", &self.wasm_binary_root_path)
            .field("whitelisted", &self.wasm_hash_whitelist.len())
            .field("components", &self.wasm_component_cache.len())
            .finish()
    }
}

impl WasmNodeCache {
    /// Start-up with every default: `./config/wasm`, `./config/wasm.conf`, the default store
    /// ([`config::default_store_dir`](crate::config::default_store_dir)).
    pub fn new() -> anyhow::Result<Self> {
        Self::builder().build()
    }

    /// Like [`WasmNodeCache::new`] with an explicit store directory.
    pub fn with_store(path: impl Into<std::path::PathBuf>) -> anyhow::Result<Self> {
        Self::builder().store(path).build()
    }

    /// A builder for every other configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Reads the whitelist from `./config/wasm.conf`: one 64-hex SHA-256 per line, `#` comments.
    pub fn get_wasm_hash_whitelist() -> anyhow::Result<HashSet<Hash32>> {
        Ok(crate::whitelist::read_whitelist_file(Path::new(
            DEFAULT_WHITELIST_FILE,
        ))?)
    }

    /// The node's engine with its determinism settings.
    pub fn init_wasm_engine() -> anyhow::Result<Engine> {
        crate::engine::init_wasm_engine()
    }

    /// Compiles every whitelisted binary in `wasm_binary_root_path` in memory, with no store: the
    /// node's behaviour before this crate, kept with its signature. Missing or mismatching
    /// binaries are logged and skipped.
    pub fn init_wasm_engine_and_precompile_components(
        wasm_hash_whitelist: HashSet<Hash32>,
        wasm_binary_root_path: String,
    ) -> anyhow::Result<(Engine, HashMap<Hash32, Component>)> {
        let cache = Self::builder()
            .binary_root(wasm_binary_root_path)
            .whitelist(wasm_hash_whitelist)
            .no_store()
            .build()?;
        Ok((cache.wasm_engine, cache.wasm_component_cache))
    }

    /// What the start-up did: counts, time, per-component outcomes and reasons, store health.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The store this start-up used, as the embedder's door: to load more components with the
    /// node's engine, or to inspect and maintain the store.
    pub fn artifact_store(&self) -> &ArtifactStore {
        &self.store
    }

    /// Removes the artifacts this node will never load: those of other engine fingerprints
    /// (older wasmtime versions or settings; portable CPU profiles of this build are kept) once
    /// unused for [`Builder::min_idle`](crate::Builder::min_idle) (7 days by default, so that a
    /// bake-ahead for the next release survives), and those of hashes outside its whitelist.
    /// Unlinks only, under the store's exclusive lock; leftover temp files go too.
    ///
    /// A start-up never does this by itself: nodes of two versions may share a store during a
    /// rolling upgrade, and pruning each other's artifacts would make every restart cold. Call it
    /// once the fleet has moved on (or run `wasm-node-cache prune --stale --whitelist FILE`).
    ///
    /// ```no_run
    /// let cache = wasm_node_cache::WasmNodeCache::new()?;
    /// let pruned = cache.prune_store()?;
    /// println!("freed {} bytes in {} files", pruned.bytes_freed, pruned.removed.len());
    /// # anyhow::Ok(())
    /// ```
    pub fn prune_store(&self) -> Result<PruneReport, StoreError> {
        self.store.prune(&PruneOptions {
            stale: true,
            keep: Some(self.wasm_hash_whitelist.clone()),
            ..PruneOptions::default()
        })
    }
}
