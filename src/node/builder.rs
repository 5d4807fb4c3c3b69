//! [`Builder`]: how a start-up is configured, and the checks made before it runs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::WasmNodeCache;
use super::report::{EntryReport, LoadReport, Outcome};
use crate::artifact_store::ArtifactStore;
use crate::config::{
    DEFAULT_BINARY_ROOT, DEFAULT_WHITELIST_FILE, default_store_dir, resolve_key_file, resolve_read_only_stores,
};
use crate::key::{Hash32, is_hash_name, parse_hash};
use crate::profile::CpuProfile;
use crate::resolve::outcome::Failure;
use crate::resolve::stores::StoresConfig;
use crate::resolve::{Progress, ProgressFn, Request, Source};
use crate::source::SkipReason;
#[cfg(feature = "fault-injection")]
use crate::store::Fault;

/// Where artifacts live, as configured.
#[derive(Debug, Clone)]
enum StoreChoice {
    Disabled,
    Dir(PathBuf),
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
/// assert_eq!(cache.report().skipped, 0, "every whitelisted component is ready");
/// # anyhow::Ok(())
/// ```
#[derive(Default)]
pub struct Builder {
    binary_root: Option<PathBuf>,
    whitelist: Option<HashSet<Hash32>>,
    whitelist_file: Option<PathBuf>,
    store: Option<StoreChoice>,
    engine: Option<Engine>,
    progress: Option<ProgressFn>,
    min_idle: Option<Duration>,
    max_size: Option<Option<u64>>,
    /// What the store door is asked for; the store, read-only stores and key file as given,
    /// completed from the environment and defaults by [`Builder::build`].
    cfg: StoresConfig,
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
        self.cfg.read_only.push(path.into());
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

    /// How long an artifact of another engine fingerprint must go unused before
    /// [`WasmNodeCache::prune_store`] removes it (default `$WASM_NODE_CACHE_MIN_IDLE`, else 7
    /// days): see [`crate::ArtifactStoreBuilder::min_idle`].
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.min_idle = Some(min_idle);
        self
    }

    /// The bound the writable store keeps itself within (default `$WASM_NODE_CACHE_MAX_SIZE`,
    /// else 10 GiB; `None`: unbounded): see [`crate::ArtifactStoreBuilder::max_size`].
    pub fn max_size(mut self, bytes: Option<u64>) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// How long to wait for the store's lock before compiling in memory (default 60 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.lock_timeout = timeout;
        self
    }

    /// Authenticated mode: artifacts carry a keyed BLAKE3 MAC under the 32-byte key in this file
    /// (kept outside the store, owner-only), and nothing without a valid MAC is loaded.
    /// Default: off, unless `$WASM_NODE_CACHE_KEY_FILE` names a key file.
    pub fn auth_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.key_file = Some(path.into());
        self
    }

    /// Calls `f` as the compile phase (and each bake) progresses (for progress bars).
    pub fn on_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
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
        self.cfg.profiles = profiles.into_iter().collect();
        self
    }

    /// Look at every read-only store even when the writable store serves everything, so that the
    /// report says of each whether it can be used and holds artifacts this engine loads
    /// ([`ReadOnlyStoreReport::serves`](crate::node::report::ReadOnlyStoreReport::serves)): for a
    /// health check such as `warm --strict`. A node's own start-up leaves it off, and never walks
    /// a read-only store it does not need.
    pub fn check_read_only_stores(mut self) -> Self {
        self.cfg.check_read_only = true;
        self
    }

    /// Tests only: `engine` is the node's engine as it would be on a host of another CPU level
    /// (the node's settings with a feature probe that denies some of this CPU's features), so
    /// portable artifacts may serve it although its fingerprint is not the node's here.
    #[cfg(feature = "fault-injection")]
    pub fn simulated_cpu(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self.cfg.simulated_cpu = true;
        self
    }

    /// Injects a store failure (disk full, read-only, executable memfds refused), for tests.
    #[cfg(feature = "fault-injection")]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.cfg.fault = fault;
        self
    }

    /// Runs the start-up. Fails only on configuration errors (unreadable or invalid whitelist,
    /// engine creation, a CPU profile list that cannot work); a store or binary problem never
    /// fails it, see [`LoadReport`].
    pub fn build(self) -> anyhow::Result<WasmNodeCache> {
        let started = Instant::now();
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
        let mut cfg = self.cfg;
        cfg.default_location = self.store.is_none() && !crate::config::store_dir_is_configured();
        // `no_store()` is the node's old behaviour: no store of any kind, baked ones included.
        (cfg.dir, cfg.read_only) = match self.store {
            Some(StoreChoice::Disabled) => (None, Vec::new()),
            Some(StoreChoice::Dir(dir)) => (Some(dir), resolve_read_only_stores(cfg.read_only)),
            None => (Some(default_store_dir()), resolve_read_only_stores(cfg.read_only)),
        };
        cfg.key_file = resolve_key_file(cfg.key_file);
        cfg.min_idle = match self
            .min_idle
            .map(Ok)
            .or_else(|| crate::config::min_idle_from_env().transpose())
        {
            Some(Ok(d)) => d,
            // Only maintenance reads it: a start never fails for it.
            Some(Err(e)) => {
                log::warn!("{e}; using the default, 7 days");
                crate::config::DEFAULT_MIN_IDLE
            }
            None => crate::config::DEFAULT_MIN_IDLE,
        };
        cfg.max_size = match self
            .max_size
            .map(Ok)
            .or_else(|| crate::config::max_size_from_env().transpose().map(|r| r.map(Some)))
        {
            Some(Ok(bound)) => bound,
            Some(Err(e)) => {
                log::warn!("{e}; using the default, 10 GiB");
                Some(crate::config::DEFAULT_MAX_SIZE)
            }
            None => Some(crate::config::DEFAULT_MAX_SIZE),
        };
        cfg.binary_root = Some(binary_root.clone());
        // One rule for bakes, the embedder's: portable profiles only with the node's settings.
        let store = match ArtifactStore::with_config(engine, cfg) {
            Ok(store) => store,
            // The typed cause, as a node's error reporter finds it with `downcast_ref`.
            Err(crate::error::StoreError::Profile { reason, .. }) => return Err(reason.into()),
            Err(other) => return Err(other.into()),
        };

        let mut hashes: Vec<Hash32> = whitelist.iter().copied().collect();
        hashes.sort();
        let requests: Vec<Request<'_>> = hashes
            .iter()
            .map(|hash| Request {
                hash: *hash,
                source: Source::File(&binary_root),
            })
            .collect();
        let (resolved, session) = crate::resolve::run::<Component>(store.stores(), &requests, self.progress.as_ref());
        let mut components = HashMap::new();
        let mut entries: Vec<EntryReport> = Vec::with_capacity(resolved.len());
        for r in resolved {
            let (entry, component) = EntryReport::of(r);
            if let Some(c) = component {
                components.insert(entry.hash, c);
            }
            entries.push(entry);
        }
        entries.extend(
            unlisted(&binary_root, &whitelist)
                .into_iter()
                .map(EntryReport::unlisted),
        );
        let mut report = LoadReport::new(entries, session, started.elapsed());
        report.binary_root_missing = !binary_root.is_dir();
        if report.binary_root_missing {
            log::warn!(
                "binary root {} does not exist: only stored artifacts can be served",
                binary_root.display()
            );
        }
        report.log();
        Ok(WasmNodeCache {
            wasm_engine: store.engine().clone(),
            wasm_binary_root_path: binary_root.to_string_lossy().into_owned(),
            wasm_hash_whitelist: whitelist,
            wasm_component_cache: components,
            report: Arc::new(report),
            store,
        })
    }
}

/// Files in the binary root named by a hash that is not whitelisted.
fn unlisted(root: &Path, whitelist: &HashSet<Hash32>) -> Vec<Hash32> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .filter(|n| is_hash_name(n))
                .and_then(|n| parse_hash(n).ok())
        })
        .filter(|h| !whitelist.contains(h))
        .collect()
}

impl EntryReport {
    /// The report line of one resolved component, and the component.
    fn of(r: crate::resolve::outcome::Resolved<Component>) -> (EntryReport, Option<Component>) {
        use crate::artifact_store::Origin;
        let mut entry = EntryReport {
            hash: r.hash,
            outcome: Outcome::Compiled,
            store: None,
            load_path: None,
            profile: None,
            rejected: None,
            portable_refused: r.portable_refused,
            stored: None,
        };
        match r.result {
            Ok((component, origin)) => {
                entry.rejected = origin.rejected().cloned();
                match origin {
                    Origin::Store { dir, load_path } | Origin::ReadOnlyStore { dir, load_path, .. } => {
                        entry.outcome = Outcome::FromStore;
                        entry.store = Some(dir);
                        entry.load_path = Some(load_path);
                        entry.profile = Some(CpuProfile::Native);
                    }
                    Origin::Portable {
                        profile,
                        dir,
                        load_path,
                        ..
                    } => {
                        entry.outcome = Outcome::FromStore;
                        entry.store = Some(dir);
                        entry.load_path = Some(load_path);
                        entry.profile = Some(profile);
                    }
                    Origin::Compiled { stored, .. } => entry.stored = Some(stored),
                }
                (entry, Some(component))
            }
            Err(Failure::Source(reason)) => {
                entry.outcome = Outcome::Skipped(reason);
                (entry, None)
            }
            Err(Failure::Compile(e)) => {
                entry.outcome = Outcome::Skipped(SkipReason::CompileFailed(format!("{e:#}")));
                (entry, None)
            }
        }
    }

    fn unlisted(hash: Hash32) -> EntryReport {
        EntryReport {
            hash,
            outcome: Outcome::Unlisted,
            store: None,
            load_path: None,
            profile: None,
            rejected: None,
            portable_refused: Vec::new(),
            stored: None,
        }
    }
}
