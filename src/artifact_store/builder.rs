//! [`ArtifactStoreBuilder`]: the embedder's configuration, checked when the store is opened.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::{Config, Engine};

use super::ArtifactStore;
use crate::config::DEFAULT_LOCK_TIMEOUT;
use crate::error::StoreError;
use crate::profile::{CpuProfile, ProfileError};
use crate::resolve::stores::{Opening, Stores, StoresConfig, Writable};
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
    dir: PathBuf,
    auth_key_file: Option<PathBuf>,
    read_only: Vec<PathBuf>,
    lock_timeout: Duration,
    profiles: Vec<CpuProfile>,
    profile_config: Option<Config>,
    fault: Fault,
}

impl std::fmt::Debug for ArtifactStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStoreBuilder")
            .field("dir", &self.dir)
            .field("auth_key_file", &self.auth_key_file)
            .field("read_only", &self.read_only)
            .field("lock_timeout", &self.lock_timeout)
            .field("profiles", &self.profiles)
            .field("profile_config", &self.profile_config.is_some())
            .finish()
    }
}

impl ArtifactStoreBuilder {
    pub(super) fn new(dir: PathBuf) -> ArtifactStoreBuilder {
        ArtifactStoreBuilder {
            dir,
            auth_key_file: None,
            read_only: Vec::new(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            profiles: vec![CpuProfile::Native],
            profile_config: None,
            fault: Fault::None,
        }
    }

    /// Authenticated mode: artifacts carry a keyed BLAKE3 MAC under the 32-byte key in this file
    /// (owner-only, outside the store), and nothing without a valid MAC is loaded.
    pub fn auth_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth_key_file = Some(path.into());
        self
    }

    /// A read-only store searched after the writable one (repeatable, in order): artifacts baked
    /// into an image. Checked like the writable store (it may also be root's), never created,
    /// locked or written.
    pub fn read_only_store(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_only.push(path.into());
        self
    }

    /// How long a call waits for the store's lock before compiling without it (default 60 s). A
    /// holder that makes one call wait this long makes no later call wait again until it lets go.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
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
        self.profiles = profiles.to_vec();
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
        self.profile_config = Some(config);
        self
    }

    /// Injects a store failure (disk full, read-only, executable memfds refused), for tests.
    #[cfg(feature = "fault-injection")]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
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
        let stores = self.stores(engine, Opening::Create)?;
        if let Writable::Refused { reason, .. } = &stores.writable {
            return Err(reason.clone());
        }
        if let Err(e) = &stores.sealer {
            return Err(e.clone());
        }
        stores.open_read_only_now()?;
        Ok(ArtifactStore::from_stores(stores))
    }

    /// Like [`ArtifactStoreBuilder::open`], but a store that cannot be used (refused, not a
    /// store, its key unusable) is no error: every call then compiles in memory, and its
    /// [`Origin`](crate::Origin) and [`ArtifactStore::store_problem`] say why, as a node's
    /// start-up does. Fails only on a configuration that can never work (the CPU profiles).
    pub fn open_or_compile(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        let stores = self.stores(engine, Opening::Create)?;
        if let Writable::Refused { reason, .. } = &stores.writable {
            log::warn!("artifact store not used, compiling in memory: {}", reason.message());
        }
        Ok(ArtifactStore::from_stores(stores))
    }

    /// Opens an existing store for an operator's inspection or maintenance
    /// ([`ArtifactStore::status`], [`ArtifactStore::verify`], [`ArtifactStore::prune`],
    /// [`ArtifactStore::clear`]): never creates it and writes nothing into it, so a mistyped path
    /// is [`StoreError::Missing`] rather than a fresh empty store, and a directory that is not a
    /// store is [`StoreError::NotAStore`]. Read-only stores are not opened here: each report says,
    /// store by store, which could not be.
    pub fn open_existing(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        let stores = self.stores(engine, Opening::Existing)?;
        if let Writable::Refused { reason, .. } = &stores.writable {
            return Err(reason.clone());
        }
        if let Err(e) = &stores.sealer {
            return Err(e.clone());
        }
        Ok(ArtifactStore::from_stores(stores))
    }

    fn stores(self, engine: &Engine, opening: Opening) -> Result<Stores, StoreError> {
        check_profiles(&self.profiles, engine, self.profile_config.as_ref())?;
        Ok(Stores::open(StoresConfig {
            engine: engine.clone(),
            dir: Some(self.dir),
            opening,
            binary_root: None,
            read_only: self.read_only,
            key_file: self.auth_key_file,
            lock_timeout: self.lock_timeout,
            profiles: self.profiles,
            profile_config: self.profile_config,
            fault: self.fault,
            simulated_cpu: false,
            check_read_only: false,
            default_location: false,
        }))
    }
}

/// Checks the profile list: not empty, every portable profile one of this architecture's, and
/// portable profiles only with an engine that has the profile config's settings (the node's by
/// default).
pub(crate) fn check_profiles(
    profiles: &[CpuProfile],
    engine: &Engine,
    base: Option<&Config>,
) -> Result<(), StoreError> {
    if profiles.is_empty() {
        return Err(StoreError::Profile {
            profile: None,
            reason: ProfileError::EmptyList,
        });
    }
    let mut same_settings = None;
    for &profile in profiles.iter().filter(|p| !p.is_native()) {
        if !CpuProfile::portable().contains(&profile) {
            return Err(StoreError::Profile {
                profile: Some(profile),
                reason: ProfileError::NotThisArchitecture { profile },
            });
        }
        if !*same_settings.get_or_insert_with(|| crate::resolve::stores::has_settings_of(engine, base)) {
            return Err(StoreError::Profile {
                profile: Some(profile),
                reason: ProfileError::EngineSettingsDiffer { profile },
            });
        }
    }
    Ok(())
}
