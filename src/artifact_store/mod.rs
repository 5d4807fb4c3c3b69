//! [`ArtifactStore`]: the store's door for any wasmtime embedder, and the stores a node's
//! start-up uses.
//!
//! One value holds everything a lookup needs: the engine and its fingerprint, the writable store
//! (opened and checked once), the read-only stores, the MAC mode, the lock timeout and the CPU
//! profiles. The embedder's calls ([`ArtifactStore::component`], [`ArtifactStore::module`] and
//! their batch forms) go through `fetch`; the node's start-up (`crate::startup`) takes the same
//! stores and primitives and keeps its own hash-first flow.

pub(crate) mod batch;
mod builder;
pub(crate) mod compile;
mod fetch;
mod origin;
mod portable;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::artifact::Sealer;
use crate::engine::engine_fingerprint;
use crate::error::StoreError;
use crate::key::Fingerprint;
use crate::problem::StoreProblem;
use crate::profile::CpuProfile;
use crate::store::{Fault, Store};
pub use builder::ArtifactStoreBuilder;
pub use origin::{Loaded, Origin};

/// A persistent, locked, verified store of compiled components and core modules for one wasmtime
/// [`Engine`].
///
/// Each artifact is named by the SHA-256 of the wasm bytes, the engine's fingerprint (wasmtime
/// version, target, settings, this crate's format, the MAC mode) and the kind. A call loads the
/// verified artifact under the shared lock, or compiles under the exclusive lock (after looking
/// again: another thread or process may just have compiled it) and publishes atomically, so each
/// artifact is compiled once across threads and processes. A damaged, foreign, misnamed or
/// unwritable store never fails a call for a valid wasm: the wasm is compiled, and
/// [`Loaded::origin`] says why. Cloning is cheap and clones share everything.
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
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("writable", &self.inner.writable_dir())
            .field(
                "read_only",
                &self.inner.read_only.iter().map(|r| &r.path).collect::<Vec<_>>(),
            )
            .field("fingerprint", &self.inner.fingerprint)
            .field("keyed", &self.inner.keyed())
            .finish()
    }
}

/// The writable store, as configured.
pub(crate) enum Writable {
    /// No store (the node's `no_store()`).
    None,
    /// Open and checked.
    Open(Store),
    /// Configured but unusable; the node compiles everything and says why.
    Refused {
        /// The directory as given.
        path: PathBuf,
        /// Why, for the node's report.
        reason: StoreProblem,
    },
}

/// A read-only store, opened at its first use (a start-up that finds everything in the writable
/// store never walks its path).
pub(crate) struct ReadOnly {
    pub path: PathBuf,
    store: OnceLock<Result<Store, StoreProblem>>,
}

impl ReadOnly {
    pub(super) fn new(path: PathBuf) -> ReadOnly {
        ReadOnly {
            path,
            store: OnceLock::new(),
        }
    }
}

pub(crate) struct Inner {
    pub engine: Engine,
    /// This engine's fingerprint in the store's mode.
    pub fingerprint: Fingerprint,
    /// `Err` when MAC mode was asked for but the key could not be loaded: no store is then used,
    /// since nothing in one could be authenticated.
    pub sealer: Result<Sealer, StoreProblem>,
    pub writable: Writable,
    pub read_only: Vec<ReadOnly>,
    pub lock_timeout: Duration,
    /// The CPU profiles whose artifacts are stored: `native` (this engine's own, the default)
    /// and portable ones to bake.
    pub profiles: Vec<CpuProfile>,
    /// Portable profiles' engines, built at the first lookup that needs them (the embedder's
    /// door; the node's start-up builds its own).
    portable: OnceLock<Vec<portable::ProfileEngine>>,
    /// Whether portable artifacts may serve this engine: only when it has the node's settings
    /// (wasmtime does not check every setting at load), computed at the first lookup.
    serves_portable: OnceLock<bool>,
    /// Tests only: the engine stands for the node's on a host of another CPU level.
    pub simulated_cpu: bool,
}

impl Inner {
    /// True when artifacts carry a keyed MAC (a failed key counts as keyed: nothing is trusted).
    pub fn keyed(&self) -> bool {
        self.sealer.as_ref().map(Sealer::is_keyed).unwrap_or(true)
    }

    /// The writable store, if it is open.
    pub fn writable_store(&self) -> Option<&Store> {
        match &self.writable {
            Writable::Open(s) => Some(s),
            _ => None,
        }
    }

    fn writable_dir(&self) -> Option<&Path> {
        match &self.writable {
            Writable::None => None,
            Writable::Open(s) => Some(s.dir()),
            Writable::Refused { path, .. } => Some(path),
        }
    }

    /// Read-only store `i`, opened (and checked) at its first use.
    pub fn read_only_store(&self, i: usize) -> Option<&Result<Store, StoreProblem>> {
        let ro = self.read_only.get(i)?;
        Some(ro.store.get_or_init(|| match &self.sealer {
            Ok(sealer) => {
                Store::open_read_only(&ro.path, self.fingerprint, sealer.clone()).map_err(|e| StoreProblem::of(&e))
            }
            Err(e) => Err(e.clone()),
        }))
    }

    /// True when portable artifacts may serve this engine: it has the node's settings, of which
    /// every portable profile is a variant. wasmtime does not check every setting at load (NaN
    /// canonicalization, for one), so an engine with other settings would run code compiled
    /// with the node's.
    pub fn serves_portable(&self) -> bool {
        *self
            .serves_portable
            .get_or_init(|| self.simulated_cpu || portable::is_node_engine(&self.engine))
    }

    /// True when a start-up stores both native and portable artifacts (a bake): it then compiles
    /// its own rather than serving itself from the portable ones it made.
    pub fn bakes_native(&self) -> bool {
        self.profiles.contains(&CpuProfile::Native) && self.profiles.iter().any(|p| !p.is_native())
    }
}

/// How the node's builder configures its stores (already resolved from its defaults and
/// environment).
pub(crate) struct NodeStores {
    pub engine: Engine,
    /// `None`: no store.
    pub dir: Option<PathBuf>,
    pub read_only: Vec<PathBuf>,
    pub sealer: Result<Sealer, StoreProblem>,
    pub lock_timeout: Duration,
    pub profiles: Vec<CpuProfile>,
    pub fault: Fault,
    pub simulated_cpu: bool,
}

impl ArtifactStore {
    /// Opens (creating it owner-only if missing) the store at `dir` for `engine`, in plain mode,
    /// with no read-only store, a 60 s lock timeout and native artifacts only. See
    /// [`ArtifactStore::builder`] for the rest.
    ///
    /// Fails when the directory is refused (it, an ancestor or a link on the way owned by another
    /// user or writable by others): [`StoreError::Refused`].
    pub fn open(dir: impl Into<PathBuf>, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        ArtifactStore::builder(dir).open(engine)
    }

    /// A builder for the MAC key, read-only stores, lock timeout and CPU profiles.
    pub fn builder(dir: impl Into<PathBuf>) -> ArtifactStoreBuilder {
        ArtifactStoreBuilder::new(dir.into())
    }

    /// The node's stores: never an error; what cannot be used is recorded for its report.
    pub(crate) fn for_node(cfg: NodeStores) -> ArtifactStore {
        let keyed = cfg.sealer.as_ref().map(Sealer::is_keyed).unwrap_or(true);
        let fingerprint = engine_fingerprint(&cfg.engine, keyed);
        let writable = match (cfg.dir, &cfg.sealer) {
            (None, _) => Writable::None,
            (Some(path), Err(e)) => Writable::Refused {
                path,
                reason: e.clone(),
            },
            (Some(path), Ok(sealer)) => match Store::open(&path, fingerprint, sealer.clone()) {
                Ok(mut store) => {
                    log::debug!("artifact store {} open, fingerprint {fingerprint}", path.display());
                    store.set_fault(cfg.fault);
                    Writable::Open(store)
                }
                Err(e) => Writable::Refused {
                    path,
                    reason: StoreProblem::of(&e),
                },
            },
        };
        ArtifactStore {
            inner: Arc::new(Inner {
                engine: cfg.engine,
                fingerprint,
                sealer: cfg.sealer,
                writable,
                read_only: cfg.read_only.into_iter().map(ReadOnly::new).collect(),
                lock_timeout: cfg.lock_timeout,
                profiles: cfg.profiles,
                portable: OnceLock::new(),
                serves_portable: OnceLock::new(),
                simulated_cpu: cfg.simulated_cpu,
            }),
        }
    }

    /// An existing store in `sealer`'s mode, never created, with no read-only store: how a node
    /// reopens its store to prune it.
    pub(crate) fn existing(
        engine: &Engine,
        dir: &Path,
        sealer: Sealer,
        lock_timeout: Duration,
    ) -> Result<ArtifactStore, StoreError> {
        let fingerprint = engine_fingerprint(engine, sealer.is_keyed());
        let store = Store::open_bare(dir, fingerprint, sealer.clone(), false, false)
            .map_err(|e| StoreError::refused(dir.to_path_buf(), e))?;
        Ok(ArtifactStore {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                fingerprint,
                sealer: Ok(sealer),
                writable: Writable::Open(store),
                read_only: Vec::new(),
                lock_timeout,
                profiles: vec![CpuProfile::Native],
                portable: OnceLock::new(),
                serves_portable: OnceLock::new(),
                simulated_cpu: false,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The engine everything is compiled for and loaded by.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The writable store's directory.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.writable_dir()
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
        one(fetch::fetch(&self.inner, &[wasm]))
    }

    /// [`ArtifactStore::module`] with where the module came from.
    pub fn load_module(&self, wasm: &[u8]) -> Result<Loaded<Module>, StoreError> {
        one(fetch::fetch(&self.inner, &[wasm]))
    }

    /// Many components at once, in the order given: one shared lock to load them all, and the
    /// misses compiled in parallel on every core under one exclusive lock.
    pub fn components(&self, wasm: &[&[u8]]) -> Vec<Result<Loaded<Component>, StoreError>> {
        fetch::fetch(&self.inner, wasm)
    }

    /// Many core modules at once, as [`ArtifactStore::components`].
    pub fn modules(&self, wasm: &[&[u8]]) -> Vec<Result<Loaded<Module>, StoreError>> {
        fetch::fetch(&self.inner, wasm)
    }
}

fn one<T>(mut results: Vec<Result<Loaded<T>, StoreError>>) -> Result<Loaded<T>, StoreError> {
    // `fetch` returns one result per input: exactly one here.
    results.pop().unwrap_or_else(|| unreachable!("one result per input"))
}
