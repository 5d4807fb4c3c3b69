//! `WasmNodeCache`: the node's in-memory map of ready components, filled from the store.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact::Sealer;
use crate::builder::Builder;
use crate::key::Hash32;
use crate::report::LoadReport;
use crate::store::maintenance::{PruneOptions, PruneReport};
use crate::store::{Store, deadline_after};

/// Default binary root, relative to the working directory (where the node has always kept its
/// components).
pub const DEFAULT_BINARY_ROOT: &str = "./config/wasm";
/// Default whitelist file, relative to the working directory.
pub const DEFAULT_WHITELIST_FILE: &str = "./config/wasm.conf";
/// Environment variable that overrides the default store directory.
pub const STORE_DIR_ENV: &str = "WASM_NODE_CACHE_DIR";
/// Environment variable naming the MAC key file; setting it turns the authenticated mode on.
pub const KEY_FILE_ENV: &str = "WASM_NODE_CACHE_KEY_FILE";
/// Environment variable listing read-only stores (colon-separated), searched after the writable
/// store: artifacts baked into a container image.
pub const READ_ONLY_DIRS_ENV: &str = "WASM_NODE_CACHE_READ_ONLY_DIRS";
/// Default wait for the store's lock before compiling in memory instead.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The MAC key file to use: `explicit` if given, else `$WASM_NODE_CACHE_KEY_FILE` if set and not
/// empty, else none (plain mode). The builder and the CLI resolve it the same way, so operators'
/// commands see the same fingerprint as the node.
pub fn resolve_key_file(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        std::env::var_os(KEY_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The read-only stores to search: `explicit` if any are given, else the colon-separated
/// `$WASM_NODE_CACHE_READ_ONLY_DIRS` (empty entries ignored). The builder and the CLI resolve them
/// the same way.
pub fn resolve_read_only_stores(explicit: Vec<PathBuf>) -> Vec<PathBuf> {
    if !explicit.is_empty() {
        return explicit;
    }
    std::env::var_os(READ_ONLY_DIRS_ENV)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The default store directory: `$WASM_NODE_CACHE_DIR`, else `$XDG_CACHE_HOME/wasm-node-cache`,
/// else `$HOME/.cache/wasm-node-cache`, else `<temp dir>/wasm-node-cache-<uid>`.
///
/// `$XDG_CACHE_HOME` and `$HOME` are used only when they are directories owned by this process's
/// uid: a root node started through `sudo -E` keeps the invoking user's `$HOME`, and a store below
/// a directory that user owns is one that user could swap (the store's own checks would then
/// refuse it, and the node would compile at every start).
pub fn default_store_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(STORE_DIR_ENV) {
        return dir;
    }
    // Walked and checked as a store path is, links included: a `$HOME` reached through a link
    // another user owns does not qualify.
    let owned_by_me = |p: &Path| {
        crate::trusted_path::walk(p, false).is_ok_and(|w| w.check_final_dir(crate::store::Owner::Me).is_ok())
    };
    if let Some(xdg) = non_empty("XDG_CACHE_HOME").filter(|p| owned_by_me(p)) {
        return xdg.join("wasm-node-cache");
    }
    if let Some(home) = non_empty("HOME").filter(|p| owned_by_me(p)) {
        return home.join(".cache").join("wasm-node-cache");
    }
    std::env::temp_dir().join(format!("wasm-node-cache-{}", crate::store::euid()))
}

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
    store: Option<StoreHandle>,
}

/// What `prune_store` needs to reopen the store this start-up used.
#[derive(Clone)]
pub(crate) struct StoreHandle {
    pub dir: PathBuf,
    pub sealer: Sealer,
    pub lock_timeout: Duration,
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
    /// Start-up with every default: `./config/wasm`, `./config/wasm.conf`, [`default_store_dir`].
    pub fn new() -> anyhow::Result<Self> {
        Self::builder().build()
    }

    /// Like [`WasmNodeCache::new`] with an explicit store directory.
    pub fn with_store(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        Self::builder().store(path).build()
    }

    /// A builder for every other configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Reads the whitelist from `./config/wasm.conf`: one 64-hex SHA-256 per line, `#` comments.
    pub fn get_wasm_hash_whitelist() -> anyhow::Result<HashSet<Hash32>> {
        crate::whitelist::read_whitelist_file(Path::new(DEFAULT_WHITELIST_FILE))
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

    pub(crate) fn from_parts(
        wasm_engine: Engine,
        binary_root: PathBuf,
        wasm_hash_whitelist: HashSet<Hash32>,
        wasm_component_cache: HashMap<Hash32, Component>,
        report: LoadReport,
        store: Option<StoreHandle>,
    ) -> WasmNodeCache {
        WasmNodeCache {
            wasm_engine,
            wasm_binary_root_path: binary_root.to_string_lossy().into_owned(),
            wasm_hash_whitelist,
            wasm_component_cache,
            report: Arc::new(report),
            store,
        }
    }

    /// What the start-up did: counts, time, per-component outcomes and reasons, store health.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Removes the artifacts this node will never load: those of other engine fingerprints
    /// (older wasmtime versions or settings; portable CPU profiles of this build are kept) and
    /// those of hashes outside its whitelist. Unlinks
    /// only, under the store's exclusive lock; leftover temp files go too.
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
    pub fn prune_store(&self) -> anyhow::Result<PruneReport> {
        let Some(handle) = &self.store else {
            anyhow::bail!("this node uses no store (disabled, or its MAC key could not be loaded)");
        };
        let store = Store::open_for(&self.wasm_engine, &handle.dir, handle.sealer.clone(), false)?;
        let current = crate::profile::portable_fingerprints(handle.sealer.is_keyed())?
            .into_iter()
            .map(|(_, fp)| fp)
            .collect();
        let options = PruneOptions {
            stale: true,
            current,
            keep: Some(self.wasm_hash_whitelist.clone()),
            max_size: None,
            dry_run: false,
        };
        store.prune(&options, deadline_after(handle.lock_timeout))
    }
}
