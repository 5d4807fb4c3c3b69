//! [`Stores`]: everything a resolution looks in and writes to, opened and checked once: the
//! engine and its fingerprint, the writable store (or why it cannot be used), the read-only stores
//! (opened at their first use), the MAC mode, the lock timeout and what a hung holder already cost,
//! and the CPU profiles to store with their engines.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine};

use crate::artifact::Sealer;
use crate::engine::engine_fingerprint;
use crate::error::{LockError, StoreError};
use crate::fs::dir::{Dir, FileId};
use crate::key::{Fingerprint, Hash32, Kind};
use crate::profile::CpuProfile;
use crate::store::{Cause, Failure, Fault, Store, deadline_after};

/// How [`Stores::open`] is asked to open the writable store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// As a start-up: created (`0700`) when missing, made a store (its marker) when empty.
    Create,
    /// As an operator's command: never created, never written when opened (maintenance adopts an
    /// earlier version's store when it removes something).
    Existing,
}

/// What a door asks for, resolved from its builder (and, for the node, its defaults): both doors'
/// builders fill one, and [`crate::ArtifactStore::with_config`] opens it.
pub(crate) struct StoresConfig {
    /// The writable store; `None` for none at all.
    pub dir: Option<PathBuf>,
    pub opening: Opening,
    /// A store at or below this directory (by device and inode) is refused: the node's binary
    /// root.
    pub binary_root: Option<PathBuf>,
    pub read_only: Vec<PathBuf>,
    /// MAC mode's key file.
    pub key_file: Option<PathBuf>,
    pub lock_timeout: Duration,
    /// How long an artifact of another fingerprint must go unused before maintenance may remove
    /// it.
    pub min_idle: Duration,
    /// The bound the writable store keeps itself within after publishing (`None`: unbounded).
    pub max_size: Option<u64>,
    /// The CPU profiles whose artifacts are stored: `native` (the engine's own) and portable ones
    /// to bake.
    pub profiles: Vec<CpuProfile>,
    /// The `Config` portable profiles are made from (`None`: the node's).
    pub profile_config: Option<Config>,
    pub fault: Fault,
    /// Tests only: the engine stands for the node's on a host of another CPU level.
    pub simulated_cpu: bool,
    /// Look at every read-only store even when the writable store served everything, so that a
    /// health check reports each one (`warm --strict`).
    pub check_read_only: bool,
    /// The writable store is the default location, which nobody asked for (no store given, no
    /// `$WASM_NODE_CACHE_DIR` or `$CACHE_DIRECTORY`).
    pub default_location: bool,
}

impl Default for StoresConfig {
    /// No store; once one is given, the embedder's defaults: created when missing, plain mode, no
    /// read-only store, the default lock timeout, native artifacts only.
    fn default() -> StoresConfig {
        StoresConfig {
            dir: None,
            opening: Opening::Create,
            binary_root: None,
            read_only: Vec::new(),
            key_file: None,
            lock_timeout: crate::config::DEFAULT_LOCK_TIMEOUT,
            min_idle: crate::config::DEFAULT_MIN_IDLE,
            max_size: Some(crate::config::DEFAULT_MAX_SIZE),
            profiles: vec![CpuProfile::Native],
            profile_config: None,
            fault: Fault::None,
            simulated_cpu: false,
            check_read_only: false,
            default_location: false,
        }
    }
}

/// The writable store, as configured.
pub(crate) enum Writable {
    /// No store (the node's `no_store()`).
    None,
    /// Open and checked.
    Open(Store),
    /// Configured but unusable; every load compiles, and says why.
    Refused {
        /// The directory as given.
        path: PathBuf,
        /// Why.
        reason: StoreError,
    },
}

/// A read-only store, opened at its first use (a resolution that finds everything in the writable
/// store never walks its path).
pub(crate) struct ReadOnly {
    pub(super) path: PathBuf,
    store: OnceLock<Result<Store, StoreError>>,
}

/// A portable profile's engine and its fingerprint in the stores' mode.
pub(crate) struct ProfileEngine {
    pub profile: CpuProfile,
    pub engine: Engine,
    pub fingerprint: Fingerprint,
}

/// Everything a resolution needs; shared by every call of a door.
pub(crate) struct Stores {
    pub(super) engine: Engine,
    /// The engine's fingerprint in the stores' mode.
    pub(super) fingerprint: Fingerprint,
    /// `Err` when MAC mode was asked for but the key could not be used: no store is then used,
    /// since nothing in one could be authenticated.
    pub(super) sealer: Result<Sealer, StoreError>,
    pub(super) writable: Writable,
    pub(super) read_only: Vec<ReadOnly>,
    pub(super) profiles: Vec<CpuProfile>,
    profile_config: Option<Config>,
    min_idle: Duration,
    max_size: Option<u64>,
    /// Every source (with its kind) this process has loaded or compiled through these stores:
    /// the size bound never evicts their artifacts.
    in_use: Mutex<HashSet<(Hash32, Kind)>>,
    /// What every resolution through these stores did.
    stats: Mutex<super::stats::Stats>,
    lock_wait: LockWait,
    /// The portable profiles' engines, built at the first resolution that needs them.
    portable: OnceLock<Vec<ProfileEngine>>,
    /// Whether portable artifacts may serve this engine, computed at first need.
    serves_portable: OnceLock<bool>,
    simulated_cpu: bool,
    /// See [`StoresConfig::check_read_only`].
    pub(super) check_read_only: bool,
    /// See [`StoresConfig::default_location`].
    pub(super) default_location: bool,
    /// Why nothing can be written into the open writable store (it lies on a read-only file
    /// system), found when first asked ([`Stores::unwritable`]): a start-up never asks.
    unwritable: OnceLock<Option<StoreError>>,
    /// Set once a resolution has looked for litter (temporary files) in the writable store: a
    /// long-running host looks once, and again whenever it compiles.
    looked_for_litter: AtomicBool,
}

impl Stores {
    /// Opens what `cfg` asks for. Never fails: a store that cannot be used is recorded, with why,
    /// and resolutions compile instead (the node's start-up and the embedder's lenient mode).
    pub(crate) fn open(engine: Engine, cfg: StoresConfig) -> Stores {
        let keyed = cfg.key_file.is_some();
        let fingerprint = engine_fingerprint(&engine, keyed);
        let (writable, sealer) = match &cfg.dir {
            None => (Writable::None, Ok(Sealer::Plain)),
            Some(path) => open_writable(path, &cfg, fingerprint),
        };
        let blocked_since = blocked_since_of(&writable);
        Stores {
            unwritable: OnceLock::new(),
            fingerprint,
            writable,
            sealer,
            read_only: cfg
                .read_only
                .into_iter()
                .map(|path| ReadOnly {
                    path,
                    store: OnceLock::new(),
                })
                .collect(),
            profiles: cfg.profiles,
            profile_config: cfg.profile_config,
            min_idle: cfg.min_idle,
            max_size: cfg.max_size,
            in_use: Mutex::default(),
            stats: Mutex::default(),
            lock_wait: LockWait {
                timeout: cfg.lock_timeout,
                blocked_since,
            },
            portable: OnceLock::new(),
            serves_portable: OnceLock::new(),
            simulated_cpu: cfg.simulated_cpu,
            check_read_only: cfg.check_read_only,
            default_location: cfg.default_location,
            looked_for_litter: AtomicBool::new(false),
            engine,
        }
    }

    /// The engine everything is compiled for and loaded by.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's fingerprint in the stores' mode.
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The sealer, or why the MAC key cannot be used.
    pub(crate) fn sealer(&self) -> &Result<Sealer, StoreError> {
        &self.sealer
    }

    /// The writable store as configured: none, open, or refused with why.
    pub(crate) fn writable(&self) -> &Writable {
        &self.writable
    }

    /// How long an artifact of another fingerprint must go unused before maintenance may remove
    /// it.
    pub(crate) fn min_idle(&self) -> Duration {
        self.min_idle
    }

    /// Adds what one resolution did to the counters.
    pub(crate) fn record<T>(&self, resolved: &[super::outcome::Resolved<T>], session: &super::session::Session) {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(resolved, session);
    }

    /// The counters since these stores were opened.
    pub(crate) fn stats(&self) -> super::stats::Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The bound the writable store keeps itself within, if any.
    pub(crate) fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// Notes that this process uses the code of `sources` as `kind`.
    pub(crate) fn note_in_use(&self, sources: impl Iterator<Item = Hash32>, kind: Kind) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        in_use.extend(sources.map(|h| (h, kind)));
    }

    /// True when this process uses the code of `source` as `kind`.
    pub(crate) fn is_in_use(&self, source: &Hash32, kind: Kind) -> bool {
        self.in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(*source, kind))
    }

    /// The read-only stores' directories, in the order they are searched.
    pub(crate) fn read_only_paths(&self) -> impl Iterator<Item = &Path> {
        self.read_only.iter().map(|ro| ro.path.as_path())
    }

    /// Why nothing can be written into the open writable store, if it lies on a read-only file
    /// system: it is still read. What the embedder's `store_problem` reports beside a refusal.
    pub(crate) fn unwritable(&self) -> Option<&StoreError> {
        self.unwritable
            .get_or_init(|| match &self.writable {
                Writable::Open(store) if store.on_read_only_file_system() => Some(StoreError::io(
                    store.dir(),
                    "write into",
                    std::io::Error::from_raw_os_error(libc::EROFS),
                )),
                _ => None,
            })
            .as_ref()
    }

    /// True when artifacts carry a keyed MAC (a failed key counts as keyed: nothing is trusted).
    pub(crate) fn keyed(&self) -> bool {
        self.sealer.as_ref().map(Sealer::is_keyed).unwrap_or(true)
    }

    /// The writable store, if it is open.
    pub(crate) fn writable_store(&self) -> Option<&Store> {
        match &self.writable {
            Writable::Open(s) => Some(s),
            _ => None,
        }
    }

    /// The writable store's directory as configured, usable or not.
    pub(crate) fn writable_dir(&self) -> Option<&Path> {
        match &self.writable {
            Writable::None => None,
            Writable::Open(s) => Some(s.dir()),
            Writable::Refused { path, .. } => Some(path),
        }
    }

    /// Read-only store `i`, opened (and checked) at its first use.
    pub(crate) fn read_only_store(&self, i: usize) -> Option<&Result<Store, StoreError>> {
        let ro = self.read_only.get(i)?;
        Some(ro.store.get_or_init(|| match &self.sealer {
            Ok(sealer) => Store::open_read_only(&ro.path, self.fingerprint, sealer.clone()).map_err(Into::into),
            Err(e) => Err(e.clone()),
        }))
    }

    /// Opens every read-only store now, failing at the first that cannot be used: the embedder's
    /// strict opening, which refuses a configuration that does not work.
    pub(crate) fn open_read_only_now(&self) -> Result<(), StoreError> {
        for i in 0..self.read_only.len() {
            if let Some(Err(e)) = self.read_only_store(i) {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    /// True when portable artifacts may serve this engine: it has the node's settings, of which
    /// every portable profile is a variant. wasmtime does not check every setting at load (NaN
    /// canonicalization, for one), so an engine with other settings would run code compiled with
    /// the node's.
    pub(crate) fn serves_portable(&self) -> bool {
        *self.serves_portable.get_or_init(|| {
            self.simulated_cpu || crate::profile::has_settings_of(&self.engine, self.profile_config.as_ref())
        })
    }

    /// True when both native and portable artifacts are stored (a bake): native ones are then
    /// compiled, not served from the portable ones just made.
    pub(crate) fn bakes_native(&self) -> bool {
        self.stores_native() && self.profiles.iter().any(|p| !p.is_native())
    }

    /// True when this engine's own artifacts are stored (the default).
    pub(crate) fn stores_native(&self) -> bool {
        self.profiles.contains(&CpuProfile::Native)
    }

    /// The portable profiles' engines, best first; empty when portable artifacts may not serve
    /// this engine or this architecture has none.
    pub(crate) fn portable_engines(&self) -> &[ProfileEngine] {
        self.portable.get_or_init(|| {
            if CpuProfile::portable().is_empty() || !self.serves_portable() {
                return Vec::new();
            }
            CpuProfile::portable()
                .iter()
                .filter_map(|&profile| match profile.engine_from(self.profile_config.clone()) {
                    Ok(engine) => Some(ProfileEngine {
                        profile,
                        fingerprint: engine_fingerprint(&engine, self.keyed()),
                        engine,
                    }),
                    Err(e) => {
                        log::warn!("portable artifacts of {profile} not used: {}", crate::serial::Chain(&e));
                        None
                    }
                })
                .collect()
        })
    }

    /// The deadline of a lock wait in a call that started at `call_start`: the lock timeout after
    /// it, but no later than the timeout after the first wait that a hung holder made fail, so
    /// that a hung holder costs one timeout per [`Stores`], not one per call.
    pub(crate) fn deadline(&self, call_start: Instant) -> Instant {
        self.lock_wait.deadline(call_start)
    }

    /// Records how a lock wait ended, for [`Stores::deadline`].
    pub(crate) fn note_lock<T>(&self, result: &Result<T, LockError>) {
        self.lock_wait.note(result.as_ref().err());
    }

    /// True the first time it is asked (and again after [`Stores::look_for_litter_again`]).
    pub(crate) fn should_look_for_litter(&self) -> bool {
        !self.looked_for_litter.swap(true, Ordering::Relaxed)
    }

    /// Makes the next resolution look for litter again (one that compiled may have been killed
    /// mid-write elsewhere too).
    pub(crate) fn look_for_litter_again(&self) {
        self.looked_for_litter.store(false, Ordering::Relaxed);
    }
}

/// The writable store and the sealer, in order: the directory is walked and checked, compared with
/// the binary root by device and inode, the key is loaded (and refused if it lies in the store),
/// and only then is the directory made a store (its marker) or, for an existing one, checked to be
/// one. On failure, why, with the sealer if the key was fine.
fn open_writable(path: &Path, cfg: &StoresConfig, fingerprint: Fingerprint) -> (Writable, Result<Sealer, StoreError>) {
    let refused = |reason| Writable::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let create = cfg.opening == Opening::Create;
    let root_id = cfg.binary_root.as_deref().and_then(|root| FileId::of_path(root).ok());
    let inside_root = |binary_root: &Path| StoreError::InsideBinaryRoot {
        path: path.to_path_buf(),
        binary_root: binary_root.to_path_buf(),
    };
    // Before anything is created: the nearest existing directory of a store path that does not
    // exist yet, so that no directory is made inside the binary root. The same check runs again
    // below on the store's own descriptor, which decides.
    if let (Some(root), Some(root_id)) = (&cfg.binary_root, root_id)
        && let Some(existing) = where_created(path)
        && crate::fs::dir::path_is_within(&existing, root_id).unwrap_or(false)
    {
        return (refused(inside_root(root)), load_sealer(cfg, None));
    }
    let dir = match Dir::open_store(path, create, crate::store::marker::MARKER_NAME) {
        Ok(dir) => dir,
        Err(e) => {
            return (
                refused(Failure::new(path.to_path_buf(), Cause::Refused(e)).into()),
                load_sealer(cfg, None),
            );
        }
    };
    let sealer = load_sealer(cfg, Some(&dir));
    if let (Some(root), Some(root_id)) = (&cfg.binary_root, root_id)
        && dir.is_within(root_id).unwrap_or(false)
    {
        return (refused(inside_root(root)), sealer);
    }
    let sealer = match sealer {
        Ok(s) => s,
        Err(e) => return (refused(e.clone()), Err(e)),
    };
    let opened = match cfg.opening {
        Opening::Create => Store::adopt_dir(dir, path, fingerprint, sealer.clone()),
        Opening::Existing => Store::inspect_dir(dir, path, fingerprint, sealer.clone()),
    };
    match opened {
        Ok(mut store) => {
            store.set_fault(cfg.fault);
            log::debug!("artifact store {} open, fingerprint {fingerprint}", path.display());
            (Writable::Open(store), Ok(sealer))
        }
        Err(e) => (refused(e.into()), Ok(sealer)),
    }
}

/// Where creating the store `path` (made absolute) would begin: its nearest existing ancestor.
/// `None` when `path` is a directory already, so that nothing is created.
fn where_created(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    if abs.is_dir() {
        return None;
    }
    abs.ancestors().skip(1).find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// The sealer of the configuration: plain, or keyed with the key file (refused when it lies in
/// the store `dir`, by device and inode).
fn load_sealer(cfg: &StoresConfig, dir: Option<&Dir>) -> Result<Sealer, StoreError> {
    match &cfg.key_file {
        None => Ok(Sealer::Plain),
        Some(key) => crate::authkey::load_key(key, dir)
            .map(Sealer::Keyed)
            .map_err(|reason| StoreError::Key { reason }),
    }
}

/// The lock timeout, and since when a hung holder has made waits fail.
struct LockWait {
    timeout: Duration,
    blocked_since: Arc<Mutex<Option<Instant>>>,
}

/// Since when a hung holder has made waits on a writable store fail: one record per directory
/// (by device and inode) for the whole process, shared by every [`Stores`] open on it, so that a
/// second `open` of the same directory does not pay the timeout again for the same holder.
fn blocked_since_of(writable: &Writable) -> Arc<Mutex<Option<Instant>>> {
    type Records = Vec<(FileId, Weak<Mutex<Option<Instant>>>)>;
    static RECORDS: Mutex<Records> = Mutex::new(Vec::new());
    let Some(id) = (match writable {
        Writable::Open(store) => store.dir_id().ok(),
        _ => None,
    }) else {
        return Arc::default();
    };
    let mut records = RECORDS.lock().unwrap_or_else(|p| p.into_inner());
    records.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(shared) = records.iter().find(|(i, _)| *i == id).and_then(|(_, w)| w.upgrade()) {
        return shared;
    }
    let fresh: Arc<Mutex<Option<Instant>>> = Arc::default();
    records.push((id, Arc::downgrade(&fresh)));
    fresh
}

impl LockWait {
    fn deadline(&self, call_start: Instant) -> Instant {
        let own = call_start
            .checked_add(self.timeout)
            .unwrap_or_else(|| deadline_after(self.timeout));
        match *self.blocked_since.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(since) => own.min(since.checked_add(self.timeout).unwrap_or(own)),
            None => own,
        }
    }

    fn note(&self, error: Option<&LockError>) {
        let mut since = self.blocked_since.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            None => *since = None,
            Some(LockError::TimedOut { waited, .. }) => {
                since.get_or_insert_with(|| Instant::now() - *waited);
            }
            Some(_) => {}
        }
    }
}
