//! [`ArtifactStoreBuilder`]: the embedder's configuration, checked when the store is opened.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::{Config, Engine};

use super::ArtifactStore;
use crate::error::StoreError;
use crate::profile::CpuProfile;
use crate::resolve::stores::{Opening, StoresConfig, Writable};
#[cfg(feature = "fault-injection")]
use crate::store::Fault;

/// Configures an [`ArtifactStore`]; [`ArtifactStoreBuilder::open`] checks everything and opens it.
/// Nothing is read from the environment: an embedder says what it wants.
///
/// ```no_run
/// use std::time::Duration;
/// use wasm_node_cache::ArtifactStore;
/// let engine = wasmtime::Engine::default();
/// let store = ArtifactStore::builder("/var/cache/my-host")
///     .auth_key_file("/etc/my-host/artifact.key")
///     .read_only_store("/opt/my-host/bake")
///     .lock_timeout(Duration::from_secs(10))
///     .open(&engine)?;
/// # anyhow::Ok(())
/// ```
pub struct ArtifactStoreBuilder {
    cfg: StoresConfig,
}

impl std::fmt::Debug for ArtifactStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cfg = &self.cfg;
        f.debug_struct("ArtifactStoreBuilder")
            .field("dir", &cfg.dir)
            .field("auth_key_file", &cfg.key_file)
            .field("read_only", &cfg.read_only)
            .field("lock_timeout", &cfg.lock_timeout)
            .field("profiles", &cfg.profiles)
            .field("profile_config", &cfg.profile_config.is_some())
            .finish()
    }
}

impl ArtifactStoreBuilder {
    pub(super) fn new(dir: PathBuf) -> ArtifactStoreBuilder {
        ArtifactStoreBuilder {
            cfg: StoresConfig {
                dir: Some(dir),
                ..StoresConfig::default()
            },
        }
    }

    /// Authenticated mode: artifacts carry a keyed BLAKE3 MAC under the 32-byte key in this file
    /// (owner-only, outside the store), and nothing without a valid MAC is loaded.
    pub fn auth_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.key_file = Some(path.into());
        self
    }

    /// A read-only store searched after the writable one (repeatable, in order): artifacts baked
    /// into an image. Checked like the writable store (it may also be root's), never created,
    /// locked or written.
    pub fn read_only_store(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.read_only.push(path.into());
        self
    }

    /// How long a call waits for the store's lock before compiling without it (default 60 s). A
    /// holder that makes one call wait this long makes no later call wait again until it lets go.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.lock_timeout = timeout;
        self
    }

    /// How long an artifact of another engine fingerprint must go unused (neither loaded nor
    /// written) before [`ArtifactStore::prune`]'s `stale` removes it (default 7 days,
    /// [`crate::config::DEFAULT_MIN_IDLE`]): a bake-ahead for the next release survives, the
    /// previous release's artifacts go that long after the upgrade. Zero removes them at once.
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.cfg.min_idle = min_idle;
        self
    }

    /// The bound the writable store keeps itself within (default 10 GiB,
    /// [`crate::config::DEFAULT_MAX_SIZE`]; `None`: unbounded). After a call that published
    /// artifacts, if the store's artifacts take more, the least recently used ones unused for
    /// [`ArtifactStoreBuilder::min_idle`] are removed, never one this process uses, under the
    /// exclusive lock taken only if nobody holds it (a call never waits for it).
    pub fn max_size(mut self, bytes: Option<u64>) -> Self {
        self.cfg.max_size = bytes;
        self
    }

    /// The CPU profiles whose artifacts are stored (default `[CpuProfile::Native]`). A portable
    /// profile has each loaded or compiled artifact compiled again for that CPU level and stored
    /// under its fingerprint, for a fleet of mixed CPUs. A portable profile is the engine's own
    /// settings ([`ArtifactStoreBuilder::profile_config`], by default the node's
    /// [`crate::node_config`]) compiled for a CPU level, so the engine given to `open` must have
    /// those settings; with such an engine, portable artifacts found in any store serve what its
    /// own fingerprint lacks.
    pub fn cpu_profiles(mut self, profiles: &[CpuProfile]) -> Self {
        self.cfg.profiles = profiles.to_vec();
        self
    }

    /// The `Config` the engine was built from, for an embedder whose settings are not the
    /// node's: portable CPU profiles are then that config with an explicit target and the level's
    /// flags, and portable artifacts serve the engine only when it has exactly that config's
    /// settings (checked by fingerprint at [`ArtifactStoreBuilder::open`]).
    ///
    /// ```no_run
    /// use wasm_node_cache::{ArtifactStore, CpuProfile};
    /// let mut config = wasmtime::Config::new();
    /// config.consume_fuel(true);
    /// let engine = wasmtime::Engine::new(&config)?;
    /// let store = ArtifactStore::builder("/var/cache/my-host")
    ///     .profile_config(config)
    ///     .cpu_profiles(&[CpuProfile::Native, CpuProfile::X86_64V2])
    ///     .open(&engine)?;
    /// # anyhow::Ok(())
    /// ```
    pub fn profile_config(mut self, config: Config) -> Self {
        self.cfg.profile_config = Some(config);
        self
    }

    /// Injects a store failure (disk full, read-only, executable memfds refused), for tests.
    #[cfg(feature = "fault-injection")]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.cfg.fault = fault;
        self
    }

    /// Checks the configuration and opens the stores; fails when one cannot be used.
    ///
    /// Errors: [`StoreError::Refused`] (a store failed a trust check), [`StoreError::NotAStore`]
    /// (a non-empty directory that is not a store), [`StoreError::Missing`] (a read-only store does
    /// not exist), [`StoreError::Key`] (the key file is missing, reachable by others, linked, or
    /// inside the store), [`StoreError::Profile`] (an empty profile list, a profile of another
    /// architecture, or portable profiles with an engine whose settings are not the profile
    /// config's).
    pub fn open(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        let store = self.opened(engine, Opening::Create)?;
        if let Some(e) = store.unusable() {
            return Err(e.clone());
        }
        store.stores().open_read_only_now()?;
        Ok(store)
    }

    /// Like [`ArtifactStoreBuilder::open`], but a store that cannot be used (refused, not a
    /// store, its key unusable) is no error: every call then compiles in memory, and its
    /// [`Origin`](crate::Origin) and [`ArtifactStore::store_problem`] say why, as a node's
    /// start-up does. Fails only on a configuration that can never work (the CPU profiles).
    pub fn open_or_compile(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        let store = self.opened(engine, Opening::Create)?;
        if let Writable::Refused { reason, .. } = store.stores().writable() {
            log::warn!("artifact store not used, compiling in memory: {}", reason.message());
        }
        Ok(store)
    }

    /// Opens an existing store for an operator's inspection or maintenance
    /// ([`ArtifactStore::status`], [`ArtifactStore::verify`], [`ArtifactStore::prune`],
    /// [`ArtifactStore::clear`]): never creates it and writes nothing into it, so a mistyped path
    /// is [`StoreError::Missing`] rather than a fresh empty store, and a directory that is not a
    /// store is [`StoreError::NotAStore`]. Read-only stores are not opened here: each report says,
    /// store by store, which could not be.
    pub fn open_existing(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        let store = self.opened(engine, Opening::Existing)?;
        match store.unusable() {
            Some(e) => Err(e.clone()),
            None => Ok(store),
        }
    }

    fn opened(mut self, engine: &Engine, opening: Opening) -> Result<ArtifactStore, StoreError> {
        self.cfg.opening = opening;
        ArtifactStore::with_config(engine.clone(), self.cfg)
    }
}
