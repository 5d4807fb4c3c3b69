//! `WasmNodeCache`: the node's in-memory map of ready components, filled from the store.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact::Sealer;
use crate::key::{Fingerprint, Hash32};
use crate::report::LoadReport;
use crate::startup::{Plan, ProgressFn, StoreChoice};
use crate::store::Store;
use crate::store::WriteFault;
use crate::store::maintenance::{PruneOptions, PruneReport};

/// Default binary root, relative to the working directory (the seed's).
pub const DEFAULT_BINARY_ROOT: &str = "./config/wasm";
/// Default whitelist file, relative to the working directory.
pub const DEFAULT_WHITELIST_FILE: &str = "./config/wasm.conf";
/// Environment variable that overrides the default store directory.
pub const STORE_DIR_ENV: &str = "WASM_NODE_CACHE_DIR";
/// Environment variable naming the MAC key file; setting it turns the authenticated mode on.
pub const KEY_FILE_ENV: &str = "WASM_NODE_CACHE_KEY_FILE";
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

/// The default store directory: `$WASM_NODE_CACHE_DIR`, else `$XDG_CACHE_HOME/wasm-node-cache`,
/// else `$HOME/.cache/wasm-node-cache`, else `<temp dir>/wasm-node-cache-<uid>`.
pub fn default_store_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(STORE_DIR_ENV) {
        return dir;
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return xdg.join("wasm-node-cache");
    }
    if let Some(home) = non_empty("HOME") {
        return home.join(".cache").join("wasm-node-cache");
    }
    #[cfg(unix)]
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    #[cfg(not(unix))]
    let uid = 0;
    std::env::temp_dir().join(format!("wasm-node-cache-{uid}"))
}

/// The node's cache of compiled, whitelisted Wasm components.
///
/// Cloning is cheap: engines and components are reference-counted handles.
///
/// ```no_run
/// use wasm_node_cache::WasmNodeCache;
/// // ./config/wasm, ./config/wasm.conf, the default store
/// let cache = WasmNodeCache::new()?;
/// println!("{}", cache.report());
/// # anyhow::Ok(())
/// ```
#[derive(Clone)]
pub struct WasmNodeCache {
    /// The engine every component was compiled for.
    pub engine: Engine,
    /// Where source binaries are read from.
    pub wasm_binary_root_path: PathBuf,
    /// The hashes the node may run.
    pub wasm_hash_whitelist: HashSet<Hash32>,
    /// Ready components by source hash.
    pub wasm_component_cache: HashMap<Hash32, Component>,
    report: Arc<LoadReport>,
    store: Option<StoreHandle>,
}

/// What `prune_store` needs to reopen the store this start-up used.
#[derive(Clone)]
struct StoreHandle {
    dir: PathBuf,
    sealer: Sealer,
    lock_timeout: Duration,
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

    /// Reads the whitelist from `./config/wasm.conf` (the seed's function, now file-backed).
    pub fn get_wasm_hash_whitelist() -> anyhow::Result<HashSet<Hash32>> {
        crate::whitelist::read_whitelist_file(Path::new(DEFAULT_WHITELIST_FILE))
    }

    /// The node's engine with its determinism settings.
    pub fn init_wasm_engine() -> anyhow::Result<Engine> {
        crate::engine::init_wasm_engine()
    }

    /// The seed's behaviour, kept: compile every whitelisted binary in memory, with no store.
    /// Missing or mismatching binaries are logged and skipped.
    pub fn init_wasm_engine_and_precompile_components(
        wasm_hash_whitelist: &HashSet<Hash32>,
        wasm_binary_root_path: impl AsRef<Path>,
    ) -> anyhow::Result<(Engine, HashMap<Hash32, Component>)> {
        let cache = Self::builder()
            .binary_root(wasm_binary_root_path.as_ref())
            .whitelist(wasm_hash_whitelist.clone())
            .no_store()
            .build()?;
        Ok((cache.engine, cache.wasm_component_cache))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// All ready components.
    pub fn components(&self) -> &HashMap<Hash32, Component> {
        &self.wasm_component_cache
    }

    /// The component for `hash`, if it is whitelisted and loaded.
    pub fn component(&self, hash: &Hash32) -> Option<&Component> {
        self.wasm_component_cache.get(hash)
    }

    /// The whitelist.
    pub fn whitelist(&self) -> &HashSet<Hash32> {
        &self.wasm_hash_whitelist
    }

    /// The binary root.
    pub fn binary_root_path(&self) -> &Path {
        &self.wasm_binary_root_path
    }

    /// What the start-up did.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Removes the artifacts this node will never load: those of other engine fingerprints
    /// (older wasmtime versions or settings) and those of hashes outside its whitelist. Unlinks
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
        let fingerprint = Fingerprint::of(&self.engine, handle.sealer.is_keyed());
        let store = Store::open(&handle.dir, fingerprint, handle.sealer.clone())?;
        let options = PruneOptions {
            stale: true,
            keep: Some(self.wasm_hash_whitelist.clone()),
            max_size: None,
            dry_run: false,
        };
        store.prune(&options, handle.lock_timeout)
    }
}

/// Configures a start-up. Unset fields take the defaults of [`WasmNodeCache::new`].
///
/// ```no_run
/// use wasm_node_cache::WasmNodeCache;
/// let cache = WasmNodeCache::builder()
///     .binary_root("/srv/node/config/wasm")
///     .whitelist_file("/srv/node/config/wasm.conf")
///     .store("/var/cache/node/wasm")
///     .build()?;
/// assert_eq!(cache.report().skipped, 0);
/// # anyhow::Ok(())
/// ```
#[derive(Default)]
pub struct Builder {
    binary_root: Option<PathBuf>,
    whitelist: Option<HashSet<Hash32>>,
    whitelist_file: Option<PathBuf>,
    store: Option<StoreChoice>,
    engine: Option<Engine>,
    lock_timeout: Option<Duration>,
    auth_key_file: Option<PathBuf>,
    write_fault: WriteFault,
    progress: Option<ProgressFn>,
}

impl Builder {
    /// Directory of source binaries named by their SHA-256.
    pub fn binary_root(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary_root = Some(path.into());
        self
    }

    /// An explicit whitelist (takes precedence over a whitelist file).
    pub fn whitelist(mut self, set: HashSet<Hash32>) -> Self {
        self.whitelist = Some(set);
        self
    }

    /// Reads the whitelist from this file instead of `./config/wasm.conf`.
    pub fn whitelist_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.whitelist_file = Some(path.into());
        self
    }

    /// The store directory (default: [`default_store_dir`]).
    pub fn store(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = Some(StoreChoice::Dir(path.into()));
        self
    }

    /// No store: compile everything in memory, as the seed did.
    pub fn no_store(mut self) -> Self {
        self.store = Some(StoreChoice::Disabled);
        self
    }

    /// A specific engine instead of [`crate::init_wasm_engine`]'s.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// How long to wait for the store's lock before compiling in memory (default 60 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Authenticated mode: artifacts carry a keyed BLAKE3 MAC under the 32-byte key in this file
    /// (kept outside the store, owner-only), and nothing without a valid MAC is loaded.
    /// Default: off, unless `$WASM_NODE_CACHE_KEY_FILE` names a key file.
    pub fn auth_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth_key_file = Some(path.into());
        self
    }

    /// Calls `f` as the compile phase progresses (for progress bars).
    pub fn on_progress(mut self, f: impl Fn(crate::Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Injects a store write failure (disk full, read-only) for tests.
    #[doc(hidden)]
    pub fn write_fault(mut self, fault: WriteFault) -> Self {
        self.write_fault = fault;
        self
    }

    /// Runs the start-up. Fails only on configuration errors (unreadable or invalid whitelist,
    /// engine creation); a store or binary problem never fails it, see [`LoadReport`].
    pub fn build(self) -> anyhow::Result<WasmNodeCache> {
        let binary_root = self.binary_root.unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY_ROOT));
        let whitelist = match (self.whitelist, self.whitelist_file) {
            (Some(set), _) => set,
            (None, Some(file)) => crate::whitelist::read_whitelist_file(&file)?,
            (None, None) => crate::whitelist::read_whitelist_file(Path::new(DEFAULT_WHITELIST_FILE))?,
        };
        let engine = match self.engine {
            Some(e) => e,
            None => crate::engine::init_wasm_engine()?,
        };
        let mut store = self.store.unwrap_or_else(|| StoreChoice::Dir(default_store_dir()));
        if let StoreChoice::Dir(dir) = &store
            && is_within(dir, &binary_root)
        {
            log::warn!(
                "store {} is inside the binary root {}; refusing to mix artifacts with source binaries",
                dir.display(),
                binary_root.display()
            );
            store = StoreChoice::Disabled;
        }
        let key_file = resolve_key_file(self.auth_key_file);
        let sealer = match (&key_file, &store) {
            (None, _) => Ok(Sealer::Plain),
            (Some(key), StoreChoice::Dir(dir)) if is_within(key, dir) => Err(format!(
                "MAC key file {} is inside the store {}; whoever can write the store could replace it",
                key.display(),
                dir.display()
            )),
            (Some(key), _) => crate::authkey::load_key(key)
                .map(Sealer::Keyed)
                .map_err(|e| format!("{e:#}")),
        };

        let plan = Plan {
            engine,
            binary_root,
            whitelist,
            store,
            lock_timeout: self.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
            sealer,
            write_fault: self.write_fault,
            progress: self.progress,
        };
        let (components, report) = crate::startup::run(&plan);
        let store = match (&plan.store, &plan.sealer) {
            (StoreChoice::Dir(dir), Ok(sealer)) => Some(StoreHandle {
                dir: dir.clone(),
                sealer: sealer.clone(),
                lock_timeout: plan.lock_timeout,
            }),
            _ => None,
        };
        Ok(WasmNodeCache {
            store,
            engine: plan.engine,
            wasm_binary_root_path: plan.binary_root,
            wasm_hash_whitelist: plan.whitelist,
            wasm_component_cache: components,
            report: Arc::new(report),
        })
    }
}

/// True when `inner` is `outer` or below it, comparing absolute, link-resolved paths where they
/// exist.
fn is_within(inner: &Path, outer: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    resolve(inner).starts_with(resolve(outer))
}
