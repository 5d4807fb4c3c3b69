//! [`ArtifactStoreBuilder`]: the embedder's configuration, checked when the store is opened.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::Engine;

use super::{ArtifactStore, Inner, ReadOnly, Writable};
use crate::artifact::Sealer;
use crate::authkey::KeyError;
use crate::defaults::DEFAULT_LOCK_TIMEOUT;
use crate::engine::engine_fingerprint;
use crate::error::StoreError;
use crate::profile::{CpuProfile, ProfileError};
use crate::store::{Fault, Store};

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
#[derive(Debug)]
pub struct ArtifactStoreBuilder {
    dir: PathBuf,
    auth_key_file: Option<PathBuf>,
    read_only: Vec<PathBuf>,
    lock_timeout: Duration,
    profiles: Vec<CpuProfile>,
    fault: Fault,
}

impl ArtifactStoreBuilder {
    pub(super) fn new(dir: PathBuf) -> ArtifactStoreBuilder {
        ArtifactStoreBuilder {
            dir,
            auth_key_file: None,
            read_only: Vec::new(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            profiles: vec![CpuProfile::Native],
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

    /// How long a call waits for the store's lock before compiling without it (default 60 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The CPU profiles whose artifacts are stored (default `[CpuProfile::Native]`). A portable
    /// profile has each compiled artifact compiled again for that CPU level and stored under its
    /// fingerprint, for a fleet of mixed CPUs. Portable profiles are the node's engine settings
    /// for a CPU level, so they need an engine with the node's settings
    /// ([`crate::node_config`]); with such an engine, portable artifacts found in any store serve
    /// what this engine's own fingerprint lacks.
    pub fn cpu_profiles(mut self, profiles: &[CpuProfile]) -> Self {
        self.profiles = profiles.to_vec();
        self
    }

    /// Injects a store failure (disk full, read-only, executable memfds refused), for tests.
    #[cfg(feature = "fault-injection")]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Checks the configuration and opens the stores.
    ///
    /// Errors: [`StoreError::Refused`] (a store failed a trust check), [`StoreError::Missing`] (a
    /// read-only store does not exist), [`StoreError::Key`] (the key file is missing, reachable
    /// by others, or inside the store), [`StoreError::Profile`] (an empty profile list, a profile
    /// of another architecture, or portable profiles with an engine whose settings are not the
    /// node's).
    pub fn open(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        self.open_with(engine, true)
    }

    /// Opens an existing store for an operator's inspection or maintenance
    /// ([`ArtifactStore::status`], [`ArtifactStore::verify`], [`ArtifactStore::prune`],
    /// [`ArtifactStore::clear`]): never creates it, so a mistyped path is
    /// [`StoreError::Missing`] rather than a fresh empty store. Read-only stores are not opened
    /// here: each report says, store by store, which could not be.
    pub fn open_existing(self, engine: &Engine) -> Result<ArtifactStore, StoreError> {
        self.open_with(engine, false)
    }

    fn open_with(self, engine: &Engine, create: bool) -> Result<ArtifactStore, StoreError> {
        let sealer = match &self.auth_key_file {
            None => Sealer::Plain,
            Some(key) => {
                if crate::trusted_path::is_within(key, &self.dir) {
                    return Err(StoreError::Key {
                        path: key.clone(),
                        reason: KeyError::InsideStore {
                            path: key.clone(),
                            store: self.dir.clone(),
                        },
                    });
                }
                let bytes = crate::authkey::load_key(key).map_err(|reason| StoreError::Key {
                    path: key.clone(),
                    reason,
                })?;
                Sealer::Keyed(bytes)
            }
        };
        check_profiles(&self.profiles, engine)?;
        let fingerprint = engine_fingerprint(engine, sealer.is_keyed());
        let mut writable = Store::open_bare(&self.dir, fingerprint, sealer.clone(), create, false)
            .map_err(|e| StoreError::refused(self.dir.clone(), e))?;
        writable.set_fault(self.fault);
        if !create {
            return Ok(ArtifactStore {
                inner: Arc::new(Inner {
                    engine: engine.clone(),
                    fingerprint,
                    sealer: Ok(sealer),
                    writable: Writable::Open(writable),
                    read_only: self.read_only.into_iter().map(ReadOnly::new).collect(),
                    lock_timeout: self.lock_timeout,
                    profiles: self.profiles,
                    portable: OnceLock::new(),
                    serves_portable: OnceLock::new(),
                    simulated_cpu: false,
                }),
            });
        }
        let read_only = self
            .read_only
            .into_iter()
            .map(|path| {
                let store = Store::open_bare(&path, fingerprint, sealer.clone(), false, true)
                    .map_err(|e| StoreError::refused(path.clone(), e))?;
                let ro = ReadOnly {
                    path,
                    store: OnceLock::new(),
                };
                let _ = ro.store.set(Ok(store));
                Ok(ro)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ArtifactStore {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                fingerprint,
                sealer: Ok(sealer),
                writable: Writable::Open(writable),
                read_only,
                lock_timeout: self.lock_timeout,
                profiles: self.profiles,
                portable: OnceLock::new(),
                serves_portable: OnceLock::new(),
                simulated_cpu: false,
            }),
        })
    }
}

/// Checks the profile list: not empty, every portable profile one of this architecture's, and
/// portable profiles only with an engine that has the node's settings.
fn check_profiles(profiles: &[CpuProfile], engine: &Engine) -> Result<(), StoreError> {
    if profiles.is_empty() {
        return Err(StoreError::Profile {
            profile: None,
            reason: ProfileError::EmptyList,
        });
    }
    let mut node_like = None;
    for &profile in profiles.iter().filter(|p| !p.is_native()) {
        if !CpuProfile::portable().contains(&profile) {
            return Err(StoreError::Profile {
                profile: Some(profile),
                reason: ProfileError::NotThisArchitecture {
                    name: profile.name().to_owned(),
                },
            });
        }
        if !*node_like.get_or_insert_with(|| super::portable::is_node_engine(engine)) {
            return Err(StoreError::Profile {
                profile: Some(profile),
                reason: ProfileError::EngineSettingsDiffer { profile },
            });
        }
    }
    Ok(())
}
