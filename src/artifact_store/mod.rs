//! The embedder's door: [`ArtifactStore`], the store for any wasmtime [`Engine`], components and
//! core modules, and what each load says about itself ([`Loaded`], [`Origin`], [`StoreWrite`],
//! [`LoadPath`]). It is a thin client of the one pipeline every load goes through (the node's
//! start-up too).

mod builder;

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::compiled::Compiled;
use crate::error::StoreError;
use crate::key::{Hash32, Kind};
use crate::resolve::outcome::Failure;
pub use crate::resolve::outcome::{Origin, StoreWrite};
pub use crate::resolve::stats::Stats;
use crate::resolve::stores::{Stores, StoresConfig, Writable};
use crate::resolve::{Request, Source};
use crate::source::sha256;
pub use crate::store::LoadPath;
pub use builder::ArtifactStoreBuilder;

/// A reader of a source's wasm bytes, called only when its artifact is missing:
/// [`ArtifactStore::components_by_hash`].
pub type SourceFn<'a> = dyn Fn() -> std::io::Result<Vec<u8>> + 'a;

/// A persistent, locked, verified store of compiled components and core modules for one wasmtime
/// [`Engine`].
///
/// Each artifact is named by the SHA-256 of the wasm bytes, the engine's fingerprint (wasmtime
/// version, target, settings, this crate's format, the MAC mode) and the kind. A call loads the
/// verified artifact under the store's shared lock, or compiles it under that artifact's own lock
/// (after looking again: another thread or process may just have compiled it) and publishes it
/// atomically, so each artifact is compiled once across threads and processes while loads of
/// other artifacts go on. A damaged, foreign, misnamed or unwritable store never fails a call for
/// a valid wasm: the wasm is compiled, and [`Loaded::origin`] says why. Cloning is cheap and
/// clones share everything, including what a hung lock holder already cost: after one call waited
/// its whole lock timeout, later calls do not wait again until the lock is free.
///
/// ```no_run
/// use wasm_node_cache::ArtifactStore;
/// let engine = wasmtime::Engine::default();
/// let store = ArtifactStore::open("/var/cache/my-host", &engine)?;
/// let wasm = std::fs::read("plugin.wasm")?;
/// let loaded = store.load_component(&wasm)?;
/// println!("plugin: {}", loaded.origin);
/// let component: wasmtime::component::Component = loaded.value;
/// # anyhow::Ok(())
/// ```
#[derive(Clone)]
pub struct ArtifactStore {
    stores: Arc<Stores>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("writable", &self.stores.writable_dir())
            .field("read_only", &self.stores.read_only_paths().collect::<Vec<_>>())
            .field("fingerprint", &self.stores.fingerprint())
            .field("keyed", &self.stores.keyed())
            .finish()
    }
}

/// Compiled code and where it came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded<T> {
    /// The component or module, ready to instantiate with the store's engine.
    pub value: T,
    /// Where it came from, and whether a stored artifact was refused on the way.
    pub origin: Origin,
    /// SHA-256 of the wasm bytes: the artifact's name.
    pub hash: Hash32,
    /// Component or core module.
    pub kind: Kind,
}

impl ArtifactStore {
    /// Opens (creating it owner-only if missing) the store at `dir` for `engine`, in plain mode,
    /// with no read-only store, a 60 s lock timeout and native artifacts only. See
    /// [`ArtifactStore::builder`] for the rest.
    ///
    /// Fails when the directory is refused (it, an ancestor or a link on the way owned by another
    /// user or writable by others: [`StoreError::Refused`]) or is not a store (a non-empty
    /// directory without the store's marker: [`StoreError::NotAStore`]).
    /// [`ArtifactStoreBuilder::open_or_compile`] never fails for the store.
    pub fn open(dir: impl Into<std::path::PathBuf>, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        ArtifactStore::builder(dir).open(engine)
    }

    /// A builder for the MAC key, read-only stores, lock timeout and CPU profiles.
    pub fn builder(dir: impl Into<std::path::PathBuf>) -> ArtifactStoreBuilder {
        ArtifactStoreBuilder::new(dir.into())
    }

    /// A door with no store at all: every call compiles in memory, and its origin says so. What
    /// a host falls back to when it is configured without a store.
    pub fn compile_only(engine: &Engine) -> ArtifactStore {
        ArtifactStore {
            stores: Arc::new(Stores::open(engine.clone(), StoresConfig::default())),
        }
    }

    /// The one way both doors open their stores: the CPU profiles checked (portable ones only
    /// with an engine that has the profile config's settings), then every store opened. A store
    /// that cannot be used is no error here: each door decides ([`ArtifactStore::unusable`]).
    pub(crate) fn with_config(engine: Engine, cfg: StoresConfig) -> Result<ArtifactStore, StoreError> {
        // A simulated CPU stands for the node's engine on another host: its fingerprint is not the
        // node's here, by design.
        if !cfg.simulated_cpu || cfg.profiles.is_empty() {
            crate::profile::check_list(&cfg.profiles, &engine, cfg.profile_config.as_ref())
                .map_err(StoreError::profile_list)?;
        }
        Ok(ArtifactStore {
            stores: Arc::new(Stores::open(engine, cfg)),
        })
    }

    /// Why the writable store, or the MAC key, cannot be used, if either cannot.
    pub(crate) fn unusable(&self) -> Option<&StoreError> {
        match self.stores.writable() {
            Writable::Refused { reason, .. } => Some(reason),
            _ => self.stores.sealer().as_ref().err(),
        }
    }

    pub(crate) fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The engine everything is compiled for and loaded by.
    pub fn engine(&self) -> &Engine {
        self.stores.engine()
    }

    /// The writable store's directory, if one is configured (usable or not).
    pub fn dir(&self) -> Option<&Path> {
        self.stores.writable_dir()
    }

    /// Why the writable store cannot be used, if it cannot (an [`ArtifactStore`] opened with
    /// [`ArtifactStoreBuilder::open_or_compile`], or by the node): every call then compiles.
    /// A store on a read-only file system is read, and this says that nothing can be stored.
    pub fn store_problem(&self) -> Option<&StoreError> {
        match self.stores.writable() {
            Writable::Refused { reason, .. } => Some(reason),
            _ => self.stores.unwritable(),
        }
    }

    /// What this store (and its clones) did since it was opened: hits by tier, compilations,
    /// artifacts stored and not, rejections by kind, evictions and lock waits. A long-running
    /// host exports them with its own metrics.
    ///
    /// ```no_run
    /// use wasm_node_cache::ArtifactStore;
    /// let store = ArtifactStore::open("/var/cache/my-host", &wasmtime::Engine::default())?;
    /// // ... loads ...
    /// let stats = store.stats();
    /// println!("plugin_cache_hits{{tier=\"writable\"}} {}", stats.hits_writable);
    /// println!("plugin_cache_hits{{tier=\"read_only\"}} {}", stats.hits_read_only);
    /// println!("plugin_cache_hits{{tier=\"portable\"}} {}", stats.hits_portable);
    /// println!("plugin_cache_compiles {}", stats.compiles);
    /// for (kind, n) in &stats.rejections {
    ///     println!("plugin_cache_rejections{{kind=\"{kind}\"}} {n}");
    /// }
    /// println!("plugin_cache_lock_wait_seconds {}", stats.lock_wait.as_secs_f64());
    /// # anyhow::Ok(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.stores.stats()
    }

    /// The component compiled from `wasm`: loaded from a store, or compiled (and published).
    /// Fails only when `wasm` is not a valid component for this engine.
    pub fn component(&self, wasm: &[u8]) -> Result<Component, StoreError> {
        self.load_component(wasm).map(|l| l.value)
    }

    /// The core module compiled from `wasm`, as [`ArtifactStore::component`] does components.
    pub fn module(&self, wasm: &[u8]) -> Result<Module, StoreError> {
        self.load_module(wasm).map(|l| l.value)
    }

    /// [`ArtifactStore::component`] with where the component came from.
    pub fn load_component(&self, wasm: &[u8]) -> Result<Loaded<Component>, StoreError> {
        one(self.fetch(&[wasm]))
    }

    /// [`ArtifactStore::module`] with where the module came from.
    pub fn load_module(&self, wasm: &[u8]) -> Result<Loaded<Module>, StoreError> {
        one(self.fetch(&[wasm]))
    }

    /// Many components at once, in the order given: one shared lock to load them all, and the
    /// misses compiled in parallel on every core.
    pub fn components(&self, wasm: &[&[u8]]) -> Vec<Result<Loaded<Component>, StoreError>> {
        self.fetch(wasm)
    }

    /// Many core modules at once, as [`ArtifactStore::components`].
    pub fn modules(&self, wasm: &[&[u8]]) -> Vec<Result<Loaded<Module>, StoreError>> {
        self.fetch(wasm)
    }

    /// The component whose wasm has the SHA-256 `hash`, for a caller that already knows it (a
    /// component pulled from an OCI registry by its `sha256:` digest, a content-addressed
    /// store): on a hit nothing is read or hashed; on a miss `source` is called for the bytes,
    /// which are checked against `hash` before anything is compiled or stored. Bytes of another
    /// hash are [`StoreError::Source`] with [`SkipReason::HashMismatch`](crate::error::SkipReason::HashMismatch),
    /// naming both hashes, and nothing is stored; a reader that fails with `NotFound` is
    /// [`SkipReason::Missing`](crate::error::SkipReason::Missing).
    ///
    /// ```no_run
    /// use wasm_node_cache::{ArtifactStore, config::parse_hash};
    /// let store = ArtifactStore::open("/var/cache/my-host", &wasmtime::Engine::default())?;
    /// let digest = "sha256:9f882603e849fc51a5e9b1be04a9f696cdb499ac622a24f50c78ed63ebdbea7b";
    /// let hash = parse_hash(digest.trim_start_matches("sha256:"))?;
    /// let loaded = store.load_component_by_hash(&hash, || std::fs::read("/var/lib/plugins/blob"))?;
    /// # anyhow::Ok(())
    /// ```
    pub fn load_component_by_hash(
        &self,
        hash: &Hash32,
        source: impl Fn() -> std::io::Result<Vec<u8>>,
    ) -> Result<Loaded<Component>, StoreError> {
        one(self.fetch_by_hash(&[(*hash, &source)]))
    }

    /// [`ArtifactStore::load_component_by_hash`] for a core module.
    pub fn load_module_by_hash(
        &self,
        hash: &Hash32,
        source: impl Fn() -> std::io::Result<Vec<u8>>,
    ) -> Result<Loaded<Module>, StoreError> {
        one(self.fetch_by_hash(&[(*hash, &source)]))
    }

    /// Many components by their known hashes at once, in the order given, as
    /// [`ArtifactStore::components`] loads them: each source is read only on a miss.
    pub fn components_by_hash(
        &self,
        requests: &[(Hash32, &SourceFn<'_>)],
    ) -> Vec<Result<Loaded<Component>, StoreError>> {
        self.fetch_by_hash(requests)
    }

    /// Many core modules by their known hashes at once, as [`ArtifactStore::components_by_hash`].
    pub fn modules_by_hash(&self, requests: &[(Hash32, &SourceFn<'_>)]) -> Vec<Result<Loaded<Module>, StoreError>> {
        self.fetch_by_hash(requests)
    }

    fn fetch_by_hash<T: Compiled>(&self, requests: &[(Hash32, &SourceFn<'_>)]) -> Vec<Result<Loaded<T>, StoreError>> {
        let requests: Vec<Request<'_>> = requests
            .iter()
            .map(|(hash, read)| Request {
                hash: *hash,
                source: Source::With(*read),
            })
            .collect();
        self.resolve(&requests)
    }

    fn fetch<T: Compiled>(&self, wasm: &[&[u8]]) -> Vec<Result<Loaded<T>, StoreError>> {
        let requests: Vec<Request<'_>> = hash_all(wasm)
            .into_iter()
            .zip(wasm)
            .map(|(hash, bytes)| Request {
                hash,
                source: Source::Bytes(bytes),
            })
            .collect();
        self.resolve(&requests)
    }

    fn resolve<T: Compiled>(&self, requests: &[Request<'_>]) -> Vec<Result<Loaded<T>, StoreError>> {
        let (resolved, _session) = crate::resolve::run::<T>(&self.stores, requests, None);
        resolved
            .into_iter()
            .map(|r| match r.result {
                Ok((value, origin)) => Ok(Loaded {
                    value,
                    origin,
                    hash: r.hash,
                    kind: T::KIND,
                }),
                Err(Failure::Compile(source)) => Err(StoreError::Compile {
                    hash: r.hash,
                    kind: T::KIND,
                    source,
                }),
                Err(Failure::Source(reason)) => Err(StoreError::Source { hash: r.hash, reason }),
            })
            .collect()
    }
}

fn one<T>(mut results: Vec<Result<Loaded<T>, StoreError>>) -> Result<Loaded<T>, StoreError> {
    results.pop().unwrap_or(Err(StoreError::NoStore))
}

/// The SHA-256 of every input, in order: on every core for a batch (the hash is most of a warm
/// lookup's time).
fn hash_all(wasm: &[&[u8]]) -> Vec<Hash32> {
    // Below this, starting a thread costs more than it saves (SHA-256 runs at about 1.4 GB/s).
    const PARALLEL_HASH_MIN_BYTES: usize = 256 * 1024;
    if wasm.iter().map(|w| w.len()).sum::<usize>() < PARALLEL_HASH_MIN_BYTES {
        return wasm.iter().map(|w| sha256(w)).collect();
    }
    let indexed: Vec<(usize, &[u8])> = wasm.iter().copied().enumerate().collect();
    let mut hashed = crate::resolve::compile::on_every_core(&indexed, |(i, w)| (*i, sha256(w)));
    hashed.sort_unstable_by_key(|(i, _)| *i);
    hashed.into_iter().map(|(_, h)| h).collect()
}
