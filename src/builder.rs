//! [`Builder`]: how a start-up is configured, and the checks made before it runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::artifact::Sealer;
use crate::artifact_store::{ArtifactStore, NodeStores};
use crate::authkey::KeyError;
use crate::cache::{StoreHandle, WasmNodeCache};
use crate::defaults::{
    DEFAULT_BINARY_ROOT, DEFAULT_LOCK_TIMEOUT, DEFAULT_WHITELIST_FILE, default_store_dir, resolve_key_file,
    resolve_read_only_stores,
};
use crate::error::StoreError;
use crate::key::Hash32;
use crate::problem::StoreProblem;
use crate::profile::CpuProfile;
use crate::startup::{Plan, ProgressFn, StoreChoice};
use crate::store::Fault;
use crate::trusted_path::is_within;

/// Configures a start-up. Unset fields take the defaults of [`WasmNodeCache::new`].
///
/// ```no_run
/// use wasm_node_cache::WasmNodeCache;
/// let cache = WasmNodeCache::builder()
///     .binary_root("/srv/node/config/wasm")
///     .whitelist_file("/srv/node/config/wasm.conf")
///     .store("/var/cache/node/wasm")
///     .build()?;
/// assert_eq!(cache.report().skipped, 0, "every whitelisted component is ready");
/// # anyhow::Ok(())
/// ```
#[derive(Default)]
pub struct Builder {
    binary_root: Option<PathBuf>,
    whitelist: Option<HashSet<Hash32>>,
    whitelist_file: Option<PathBuf>,
    store: Option<StoreChoice>,
    read_only_stores: Vec<PathBuf>,
    engine: Option<Engine>,
    lock_timeout: Option<Duration>,
    auth_key_file: Option<PathBuf>,
    fault: Fault,
    progress: Option<ProgressFn>,
    cpu_profiles: Option<Vec<CpuProfile>>,
    simulated_cpu: bool,
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

    /// A read-only store to search after the writable one (repeatable; searched in the order
    /// given): artifacts baked into a container image. It is checked like the writable store
    /// (ownership may also be root's) and never locked, written, pruned or cleaned; what it lacks
    /// is compiled and published to the writable store. Default: `$WASM_NODE_CACHE_READ_ONLY_DIRS`.
    ///
    /// ```no_run
    /// let cache = wasm_node_cache::WasmNodeCache::builder()
    ///     .store("/data/wasm-store")
    ///     .read_only_store("/opt/node/wasm-bake")
    ///     .build()?;
    /// # anyhow::Ok(())
    /// ```
    pub fn read_only_store(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_only_stores.push(path.into());
        self
    }

    /// No store, writable or read-only: compile everything in memory at every start, as the node
    /// did before this crate.
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
    pub fn on_progress(mut self, f: impl Fn(crate::startup::Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The CPU profiles whose artifacts this start-up stores in the writable store (default:
    /// `[CpuProfile::Native]`, the node's own). Each portable profile in the list (such as
    /// [`CpuProfile::X86_64V3`]) has every whitelisted component compiled by that profile's engine
    /// and published under its fingerprint, unless a verified artifact is already there: a bake for
    /// a fleet of mixed CPUs. Without `Native` in the list, nothing is stored for this host's own
    /// engine (what it compiles for itself stays in memory, or is served from the portable
    /// artifacts); with it, the native artifacts are compiled and stored too, never served from
    /// the portable ones. An empty list is an error.
    ///
    /// ```no_run
    /// use wasm_node_cache::{CpuProfile, WasmNodeCache};
    /// let bake = WasmNodeCache::builder()
    ///     .store("/opt/wasm-bake")
    ///     .cpu_profiles([CpuProfile::Native, CpuProfile::X86_64V2, CpuProfile::X86_64V3, CpuProfile::X86_64V4])
    ///     .build()?;
    /// # anyhow::Ok(())
    /// ```
    pub fn cpu_profiles(mut self, profiles: impl IntoIterator<Item = CpuProfile>) -> Self {
        self.cpu_profiles = Some(profiles.into_iter().collect());
        self
    }

    /// Injects a store failure (disk full, read-only, executable memfds refused), for tests.
    #[cfg(feature = "fault-injection")]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Tests only: `engine` is the node's engine as it would be on a host of another CPU level
    /// (the node's settings with a feature probe that denies some of this CPU's features), so
    /// portable artifacts may serve it although its fingerprint is not the node's here.
    #[cfg(feature = "fault-injection")]
    pub fn simulated_cpu(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self.simulated_cpu = true;
        self
    }

    /// Runs the start-up. Fails only on configuration errors (unreadable or invalid whitelist,
    /// engine creation); a store or binary problem never fails it, see [`LoadReport`](crate::LoadReport).
    pub fn build(self) -> anyhow::Result<WasmNodeCache> {
        let binary_root = self.binary_root.unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY_ROOT));
        let whitelist = match (self.whitelist, self.whitelist_file) {
            (Some(set), _) => set,
            (None, Some(file)) => crate::whitelist::read_whitelist_file(&file)?,
            (None, None) => crate::whitelist::read_whitelist_file(Path::new(DEFAULT_WHITELIST_FILE))?,
        };
        let bake = self.cpu_profiles.unwrap_or_else(|| vec![CpuProfile::Native]);
        if bake.is_empty() {
            return Err(crate::profile::ProfileError::EmptyList.into());
        }
        let engine = match self.engine {
            Some(e) => e,
            None => crate::engine::init_wasm_engine()?,
        };
        // `no_store()` is the node's old behaviour: no store of any kind, baked ones included.
        let read_only_stores = match self.store {
            Some(StoreChoice::Disabled) => Vec::new(),
            _ => resolve_read_only_stores(self.read_only_stores),
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
            (Some(key), StoreChoice::Dir(dir)) if is_within(key, dir) => Err(StoreProblem::of(&StoreError::Key {
                path: key.clone(),
                reason: KeyError::InsideStore {
                    path: key.clone(),
                    store: dir.clone(),
                },
            })),
            (Some(key), _) => crate::authkey::load_key(key).map(Sealer::Keyed).map_err(|reason| {
                StoreProblem::of(&StoreError::Key {
                    path: key.clone(),
                    reason,
                })
            }),
        };

        let lock_timeout = self.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT);
        // What `prune_store` reopens later: the store as configured, whether or not this start-up
        // could use it.
        let handle = match (&store, &sealer) {
            (StoreChoice::Dir(dir), Ok(sealer)) => Some(StoreHandle {
                dir: dir.clone(),
                sealer: sealer.clone(),
                lock_timeout,
            }),
            _ => None,
        };
        let started = Instant::now();
        let stores = ArtifactStore::for_node(NodeStores {
            engine,
            dir: match store {
                StoreChoice::Dir(dir) => Some(dir),
                StoreChoice::Disabled => None,
            },
            read_only: read_only_stores,
            sealer,
            lock_timeout,
            profiles: bake,
            fault: self.fault,
            simulated_cpu: self.simulated_cpu,
        });
        let plan = Plan {
            stores,
            binary_root,
            whitelist,
            progress: self.progress,
            started,
        };
        let (components, report) = crate::startup::run(&plan);
        Ok(WasmNodeCache::from_parts(
            plan.stores.engine().clone(),
            plan.binary_root,
            plan.whitelist,
            components,
            report,
            handle,
        ))
    }
}
