//! The on-disk store: one directory of verified artifacts, its marker, a lock file, nothing else.
//!
//! ```text
//! <store>/CACHEDIR.TAG                          the marker: this directory is a store (marker.rs)
//! <store>/lock                                  advisory locks (last exclusive holder's pid)
//! <store>/<fingerprint>-<source sha256>.cwasm   component artifact = wasmtime payload + trailer, 0444
//! <store>/<fingerprint>-<source sha256>.module.cwasm   the same for a core module
//! <store>/.tmp-*                                an unfinished write; removed under the exclusive lock
//! ```
//!
//! A directory is written into or deleted from only when it is provably a store: it holds the
//! marker, or is empty, or holds only what an earlier version wrote (then it gets the marker).
//!
//! Invariants: the directory is opened once, by descriptor, after checking it and its ancestors;
//! every later operation is relative to that descriptor. An artifact is published by renaming a
//! fully written, fsynced temporary file over its final name, then fsyncing the directory; a
//! published file is never written again (a replacement is a new file renamed over it; removal is
//! an unlink), so a mapping of it stays valid.

mod failure;
mod fault;
mod finish;
mod load;
mod lock;
mod lock_holders;
mod lock_report;
pub mod maintenance;
pub(crate) mod marker;
mod publish;
mod rejection;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wasmtime::component::Component;

use crate::artifact::Sealer;
pub(crate) use crate::fs::dir::Dir;
pub(crate) use crate::fs::{GROUP_OR_OTHER_WRITE, Owner};
use crate::key::{ArtifactKey, Fingerprint, Hash32, Kind};
pub use failure::{Cause, Failure};
#[cfg(not(feature = "fault-injection"))]
pub(crate) use fault::Fault;
#[cfg(feature = "fault-injection")]
pub use fault::Fault;
pub use finish::FinishedBake;
pub use load::LoadPath;
pub(crate) use load::{Verified, with_stream_buf};
pub(crate) use lock::LOCK_NAME;
pub use lock::{ArtifactLock, Exclusive, LockGuard, deadline_after};
pub use lock_report::{Holder, LockError, LockHolder, LockKind, LockProblem, LockRepair, LockState};
pub use marker::NotAStore;
use marker::Standing;
pub use publish::ARTIFACT_MODE;
#[cfg(feature = "fault-injection")]
pub use publish::Published;
pub use rejection::Rejection;

/// Prefix of temporary files; never a valid artifact name.
pub const TEMP_PREFIX: &str = ".tmp-";

/// How many times (10 ms apart) a directory holding only temporary files is looked at again for
/// the marker another process is writing, before it is refused as not provably a store. Only the
/// marker's fallback write (no `O_TMPFILE`) shows a temporary name, and it fsyncs before its
/// rename, which on a busy disk takes hundreds of milliseconds (200 ms was seen to fall short on
/// 2 cores): up to 2 s. Only a directory that holds nothing but temporary names pays the wait.
const MARKER_WAITS: usize = 200;

/// The result of looking an artifact up: a component's unless `T` says otherwise.
pub enum Lookup<T = Component> {
    /// Verified and deserialized, and how its code reached wasmtime.
    Hit(T, LoadPath),
    /// No artifact under this key.
    Absent,
    /// An artifact exists under this key but was refused.
    Rejected(Rejection),
}

/// One file in the store, as listed by [`Store::entries`].
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Key parsed from the file name.
    pub key: ArtifactKey,
    /// File name in the store.
    pub name: String,
    /// Full path, for messages.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time (the publish time).
    pub modified: Option<SystemTime>,
    /// Last access time: a hit in the writable store sets it, at most once a day.
    pub accessed: Option<SystemTime>,
    /// Owner uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// True for a regular file (a link, a directory, a FIFO or a socket under an artifact name is
    /// listed too, so that it can be reported and removed).
    pub is_file: bool,
    /// True for a directory (removed only when empty).
    pub is_dir: bool,
}

impl StoredEntry {
    /// When it was last used: loaded (its access time) or written (its modification time),
    /// whichever is later; `None` when neither is known.
    pub fn last_used(&self) -> Option<SystemTime> {
        self.modified.max(self.accessed)
    }

    /// Why the loader would refuse this file before reading it, if it would: not a regular file,
    /// another owner, or writable by group or others.
    pub fn trust_problem(&self, owner_ok: impl Fn(u32) -> bool) -> Option<Rejection> {
        if !self.is_file {
            Some(Rejection::NotRegularFile)
        } else if !owner_ok(self.uid) {
            Some(Rejection::ForeignOwner { uid: self.uid })
        } else if self.mode & GROUP_OR_OTHER_WRITE != 0 {
            Some(Rejection::WritableByOthers { mode: self.mode })
        } else {
            None
        }
    }

    /// True when anyone has write permission: not refused (stores written before artifacts were
    /// published read-only hold such files), but a careless `cp` could then write into a loaded
    /// artifact in place.
    pub fn has_write_bit(&self) -> bool {
        self.mode & 0o222 != 0
    }
}

/// A file in the store that no version of this crate writes: not an artifact name (exactly
/// `<32 lowercase hex>-<64 lowercase hex>.cwasm`, or `.module.cwasm` for a core module), not the
/// lock, not a temporary file. Listed by
/// `verify` and `status`, removed by `prune --stale`, never loaded. In JSON
/// `{"file", "size", "directory"}`.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct ForeignFile {
    /// File name in the store (not necessarily UTF-8).
    #[serde(skip)]
    pub name: OsString,
    /// The file.
    #[serde(serialize_with = "crate::serial::path")]
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// True for a directory (which `prune` cannot unlink: it removes it only once empty).
    pub directory: bool,
}

impl ForeignFile {
    /// What removes it: `prune --stale` unlinks files and removes empty directories, but never
    /// empties a directory (it could be a mount point or hold someone's data).
    pub fn removal(&self) -> &'static str {
        if self.directory {
            "`prune --stale` removes it once empty; it never deletes what a directory holds"
        } else {
            "`prune --stale` removes it"
        }
    }
}

/// An open store directory for one engine fingerprint.
#[derive(Debug)]
pub struct Store {
    // Shared by the handles of one directory for several fingerprints (a start-up looking up
    // portable artifacts): one descriptor, opened and checked once.
    dir: Arc<Dir>,
    fingerprint: Fingerprint,
    sealer: Sealer,
    owner: Owner,
    /// This process's effective uid when the store was opened: looked up once, not per artifact.
    euid: u32,
    read_only: bool,
    fault: Fault,
    /// Set when a lock file that failed a check was replaced; see [`Store::lock_repair`]. Shared
    /// by every handle of one directory (see [`Store::with_fingerprint`]): there is one lock file.
    lock_repaired: Arc<Mutex<Option<LockRepair>>>,
}

impl Store {
    /// Opens the writable store at `path` for `engine` in `sealer`'s mode (creating it when
    /// `create`), as a start-up and maintenance do. See [`Store::open_writable`].
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn open_for(engine: &wasmtime::Engine, path: &Path, sealer: Sealer, create: bool) -> Result<Store, Failure> {
        let fingerprint = crate::engine::engine_fingerprint(engine, sealer.is_keyed());
        Store::open_writable(path, fingerprint, sealer, create)
    }

    /// [`Store::open_writable`], creating the store if missing.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn open(path: &Path, fingerprint: Fingerprint, sealer: Sealer) -> Result<Store, Failure> {
        Store::open_writable(path, fingerprint, sealer, true)
    }

    /// Opens the writable store at `path` for the engine with `fingerprint`.
    ///
    /// With `create`, a missing directory (and missing parents) is made owner-only (0700). Fails
    /// when the directory is not trusted: it or an ancestor owned by another user (an ancestor may
    /// be root's), or writable by group or others (an ancestor may be sticky, as `/tmp` is), or
    /// reached through a link another user owns. The path is walked once, as given
    /// ([`crate::fs::walk`]); every later check and operation uses descriptors, never the path
    /// again. Then fails when the directory is not a store ([`marker`]); an empty one, or one an
    /// earlier version made, gets the marker before anything else is written.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn open_writable(
        path: &Path,
        fingerprint: Fingerprint,
        sealer: Sealer,
        create: bool,
    ) -> Result<Store, Failure> {
        let dir = Dir::open_store(path, create, marker::MARKER_NAME)
            .map_err(|reason| Failure::new(path.to_path_buf(), Cause::Refused(reason)))?;
        Store::adopt_dir(dir, path, fingerprint, sealer)
    }

    /// The writable store in `dir` (opened from `path` and checked), made a store if it is not one
    /// yet ([`Store::adopt`]).
    pub(crate) fn adopt_dir(dir: Dir, path: &Path, fingerprint: Fingerprint, sealer: Sealer) -> Result<Store, Failure> {
        let store = Store::from_dir(dir, fingerprint, sealer, false);
        store.adopt(path)?;
        Ok(store)
    }

    /// The writable store in `dir` (opened from `path` and checked), to look at it or maintain it:
    /// nothing is written now, not even the marker. Fails when the directory is not a store.
    pub(crate) fn inspect_dir(
        dir: Dir,
        path: &Path,
        fingerprint: Fingerprint,
        sealer: Sealer,
    ) -> Result<Store, Failure> {
        let store = Store::from_dir(dir, fingerprint, sealer, false);
        match store.standing().map_err(|e| Failure::io(path, "list", e))? {
            Standing::Foreign(reason) => Err(Failure::new(path.to_path_buf(), Cause::NotAStore(reason))),
            _ => Ok(store),
        }
    }

    /// Opens a read-only store, such as artifacts baked into a container image, for the engine
    /// with `fingerprint` in `sealer`'s mode. It is checked as a writable store is, except that it
    /// and its artifacts may also be owned by root (images are built as root), and that it needs
    /// no marker (a bake made by an earlier version has none; nothing is ever written or deleted
    /// there). It is never created, locked, written, pruned or cleaned, so it works on a read-only
    /// file system with no lock file.
    pub fn open_read_only(path: &Path, fingerprint: Fingerprint, sealer: Sealer) -> Result<Store, Failure> {
        let dir = Dir::open(path, false, Owner::MeOrRoot)
            .map_err(|reason| Failure::new(path.to_path_buf(), Cause::Refused(reason)))?;
        Ok(Store::from_dir(dir, fingerprint, sealer, true))
    }

    fn from_dir(dir: Dir, fingerprint: Fingerprint, sealer: Sealer, read_only: bool) -> Store {
        Store {
            dir: Arc::new(dir),
            fingerprint,
            sealer,
            owner: if read_only { Owner::MeOrRoot } else { Owner::Me },
            euid: crate::fs::euid(),
            read_only,
            fault: Fault::None,
            lock_repaired: Arc::new(Mutex::new(None)),
        }
    }

    /// What the directory is: a store (marked, empty, or an earlier version's) or not.
    pub(crate) fn standing(&self) -> std::io::Result<Standing> {
        marker::standing(&self.dir, |key| self.trailer_verifies(key))
    }

    /// True when the artifact for `key` passes the loader's checks up to its trailer, which
    /// authenticates and names it, in this store's mode or in plain mode (a store that switched
    /// to MAC mode): proof that an earlier version of this crate wrote the directory.
    fn trailer_verifies(&self, key: &ArtifactKey) -> bool {
        let verifies = |store: &Store| {
            store
                .read_trailer(key)
                .is_ok_and(|t| crate::artifact::check_binding(&t, key).is_ok())
        };
        let mut probe = self.with_fingerprint(key.fingerprint);
        if verifies(&probe) {
            return true;
        }
        if !self.is_keyed() {
            return false;
        }
        probe.sealer = Sealer::Plain;
        verifies(&probe)
    }

    /// Makes sure the directory is a store before anything is written into it: with the marker
    /// already, or empty or an earlier version's store (then the marker is written now).
    pub(crate) fn adopt(&self, path: &Path) -> Result<(), Failure> {
        let mut standing = self.standing().map_err(|e| Failure::io(path, "list", e))?;
        // Only temporary files: perhaps another process making this store, whose marker is
        // written under a temporary name first. Its rename comes within milliseconds.
        for _ in 0..MARKER_WAITS {
            if !matches!(standing, Standing::Foreign(NotAStore::Unproven { .. }))
                || !self
                    .temp_names()
                    .is_ok_and(|t| t.len() == self.dir.names().map_or(0, |n| n.len()))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            standing = self.standing().map_err(|e| Failure::io(path, "list", e))?;
        }
        match standing {
            Standing::Marked => Ok(()),
            Standing::Empty | Standing::Unmarked => match marker::write(&self.dir) {
                Ok(()) => Ok(()),
                // A store on a read-only file system is read as it is: nothing can be written
                // into it, the marker included.
                Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => Ok(()),
                Err(e) => Err(Failure::io(path, "write the marker into", e)),
            },
            Standing::Foreign(reason) => Err(Failure::new(path.to_path_buf(), Cause::NotAStore(reason))),
        }
    }

    /// The same directory (the same descriptor, checks and mode) for the engine with
    /// `fingerprint`: how a start-up looks up a portable profile's artifacts, and how a bake
    /// publishes them.
    pub fn with_fingerprint(&self, fingerprint: Fingerprint) -> Store {
        Store {
            dir: Arc::clone(&self.dir),
            fingerprint,
            sealer: self.sealer.clone(),
            owner: self.owner,
            euid: self.euid,
            read_only: self.read_only,
            fault: self.fault,
            lock_repaired: Arc::clone(&self.lock_repaired),
        }
    }

    /// True for a store opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// True when the store lies on a file system mounted read-only: nothing can be written into
    /// it, and nothing in it removed.
    pub(crate) fn on_read_only_file_system(&self) -> bool {
        rustix::fs::fstatvfs(&*self.dir).is_ok_and(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
    }

    /// The store directory's identity (device and inode).
    pub(crate) fn dir_id(&self) -> std::io::Result<crate::fs::dir::FileId> {
        self.dir.id()
    }

    /// The store directory, as it was opened (for messages).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The engine fingerprint this store handle loads and writes.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// True when artifacts carry a keyed MAC.
    pub fn is_keyed(&self) -> bool {
        self.sealer.is_keyed()
    }

    /// True when `uid` may own an artifact this store loads.
    pub fn trusts_owner(&self, uid: u32) -> bool {
        uid == self.euid || (self.owner == Owner::MeOrRoot && uid == 0)
    }

    /// Injects a failure, for tests of disk-full, read-only and memfd-refused handling.
    pub(crate) fn set_fault(&mut self, fault: Fault) {
        self.fault = fault;
    }

    /// The key of the component compiled from `source` under this store's fingerprint.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn key(&self, source: &Hash32) -> ArtifactKey {
        self.key_of(source, Kind::Component)
    }

    /// The key of `source` compiled as `kind` under this store's fingerprint.
    pub fn key_of(&self, source: &Hash32, kind: Kind) -> ArtifactKey {
        ArtifactKey {
            source: *source,
            fingerprint: self.fingerprint,
            kind,
        }
    }

    /// Path of the component artifact for `source`, for messages.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn path_of(&self, source: &Hash32) -> PathBuf {
        self.path_of_key(&self.key(source))
    }

    /// Path of the artifact for `key`, for messages.
    pub fn path_of_key(&self, key: &ArtifactKey) -> PathBuf {
        self.dir.display_path(key.file_name())
    }

    /// Every artifact file in the store, of any fingerprint, sorted by name. Temporary files, the
    /// lock and unrelated files are not listed; links and directories under artifact names are,
    /// so they can be reported and removed.
    pub fn entries(&self) -> std::io::Result<Vec<StoredEntry>> {
        let mut out = Vec::new();
        for name in self.dir.names()? {
            let Some(name) = name.to_str() else { continue };
            let Some(key) = ArtifactKey::from_file_name(name) else {
                continue;
            };
            let st = match self.dir.stat(name) {
                Ok(st) => st,
                // Unlinked between the listing and the stat (a prune elsewhere): not an entry.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let time = |secs: i64, nsecs: i64| {
                SystemTime::UNIX_EPOCH.checked_add(Duration::new(
                    u64::try_from(secs).unwrap_or(0),
                    u32::try_from(nsecs).unwrap_or(0),
                ))
            };
            #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
            let (mtime, atime) = (
                time(st.st_mtime as i64, st.st_mtime_nsec as i64),
                time(st.st_atime as i64, st.st_atime_nsec as i64),
            );
            out.push(StoredEntry {
                key,
                name: name.to_owned(),
                path: self.dir.display_path(name),
                size: u64::try_from(st.st_size).unwrap_or(0),
                modified: mtime,
                accessed: atime,
                uid: st.st_uid,
                mode: st.st_mode & 0o7777,
                is_file: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile,
                is_dir: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every file in the store that is not an artifact, the lock or a temporary file, sorted by
    /// name: for example an artifact name spelled in uppercase, which is never read as the key
    /// it resembles.
    pub fn foreign_files(&self) -> std::io::Result<Vec<ForeignFile>> {
        let mut out = Vec::new();
        for name in self.dir.names()? {
            if let Some(text) = name.to_str()
                && (text == lock::LOCK_NAME
                    || text == marker::MARKER_NAME
                    || text.starts_with(TEMP_PREFIX)
                    || ArtifactKey::from_file_name(text).is_some())
            {
                continue;
            }
            let st = match self.dir.stat(&name) {
                Ok(st) => st,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(ForeignFile {
                file: self.dir.display_path(&name),
                name,
                size: u64::try_from(st.st_size).unwrap_or(0),
                directory: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The fingerprints of the artifact files in the store, from one directory listing (no stat).
    pub fn fingerprints_present(&self) -> std::io::Result<std::collections::BTreeSet<Fingerprint>> {
        Ok(self
            .dir
            .names()?
            .iter()
            .filter_map(|n| n.to_str().and_then(ArtifactKey::from_file_name))
            .map(|k| k.fingerprint)
            .collect())
    }

    /// Leftover temporary files (unfinished writes), by name.
    pub(crate) fn temp_names(&self) -> std::io::Result<Vec<OsString>> {
        Ok(self
            .dir
            .names()?
            .into_iter()
            .filter(|n| n.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)))
            .collect())
    }

    /// How many leftover temporary files (unfinished writes) the store holds.
    pub fn temp_file_count(&self) -> std::io::Result<usize> {
        Ok(self.temp_names()?.len())
    }
}
