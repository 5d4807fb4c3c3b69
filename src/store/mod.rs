//! The on-disk store: one directory of verified artifacts, a lock file, nothing else.
//!
//! ```text
//! <store>/lock                                  advisory lock (last exclusive holder's pid)
//! <store>/<fingerprint>-<source sha256>.cwasm   component artifact = wasmtime payload + trailer, 0444
//! <store>/<fingerprint>-<source sha256>.module.cwasm   the same for a core module
//! <store>/.tmp-*                                an unfinished write; removed under the exclusive lock
//! ```
//!
//! Invariants: the directory is opened once, by descriptor, after checking it and its ancestors;
//! every later operation is relative to that descriptor. An artifact is published by renaming a
//! fully written, fsynced temporary file over its final name, then fsyncing the directory; a
//! published file is never written again (a replacement is a new file renamed over it; removal is
//! an unlink), so a mapping of it stays valid.

mod dir;
mod fault;
mod load;
mod lock;
pub mod maintenance;
mod publish;
mod rejection;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact::Sealer;
use crate::engine::engine_fingerprint;
use crate::error::StoreError;
use crate::key::{ArtifactKey, Fingerprint, Hash32, Kind};
use crate::path_refusal::PathRefusal;
pub(crate) use dir::{Dir, GROUP_OR_OTHER_WRITE, Owner, euid};
#[cfg(not(feature = "fault-injection"))]
pub(crate) use fault::Fault;
#[cfg(feature = "fault-injection")]
pub use fault::Fault;
pub use load::LoadPath;
pub(crate) use load::Verified;
pub use lock::{Exclusive, LockError, LockGuard, LockKind, LockState, deadline_after};
pub use publish::{ARTIFACT_MODE, Published};
pub use rejection::Rejection;

/// Prefix of temporary files; never a valid artifact name.
pub const TEMP_PREFIX: &str = ".tmp-";

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
    /// Owner uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// True for a regular file (a link or a directory under an artifact name is listed too, so it
    /// can be reported and removed).
    pub is_file: bool,
}

impl StoredEntry {
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
/// `verify` and `status`, removed by `prune --stale`, never loaded.
#[derive(Debug, Clone)]
pub struct ForeignFile {
    /// File name in the store (not necessarily UTF-8).
    pub name: OsString,
    /// Full path, for messages.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// True for a directory (which `prune` cannot unlink).
    pub is_dir: bool,
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
    read_only: bool,
    fault: Fault,
    /// Set (with the old permission bits) when an existing lock file others could open was made
    /// `0600`; see [`Store::lock_mode_repaired`].
    /// Shared by every handle of one directory (see [`Store::with_fingerprint`]): there is one lock file.
    lock_repaired: Arc<AtomicU32>,
}

impl Store {
    /// Opens the store at `dir` for `engine` in `sealer`'s mode: the one way a start-up, the
    /// library's maintenance and the CLI open a store, so they agree on the fingerprint.
    ///
    /// With `create`, a missing directory (and missing parents) is made owner-only (0700).
    /// Fails when the directory is not trusted: it or an ancestor owned by another user (an
    /// ancestor may be root's), or writable by group or others (an ancestor may be sticky, as
    /// `/tmp` is), or reached through a link another user owns. The path is walked once, as
    /// given ([`crate::trusted_path`]); every later check and operation uses descriptors, never
    /// the path again.
    pub fn open_for(engine: &Engine, dir: &Path, sealer: Sealer, create: bool) -> Result<Store, StoreError> {
        let fingerprint = engine_fingerprint(engine, sealer.is_keyed());
        Store::open_with(dir, fingerprint, sealer, create)
    }

    /// [`Store::open_for`] with a fingerprint computed elsewhere, creating the store if missing.
    pub fn open(dir: &Path, fingerprint: Fingerprint, sealer: Sealer) -> Result<Store, StoreError> {
        Store::open_with(dir, fingerprint, sealer, true)
    }

    fn open_with(dir: &Path, fingerprint: Fingerprint, sealer: Sealer, create: bool) -> Result<Store, StoreError> {
        Store::open_bare(dir, fingerprint, sealer, create, false).map_err(|e| StoreError::refused(dir.to_path_buf(), e))
    }

    /// Opens a writable (`read_only` false, created if missing when `create`) or read-only store;
    /// the error is the check that failed, with no context of its own (the caller says which
    /// store it was).
    pub(crate) fn open_bare(
        dir: &Path,
        fingerprint: Fingerprint,
        sealer: Sealer,
        create: bool,
        read_only: bool,
    ) -> Result<Store, PathRefusal> {
        let owner = if read_only { Owner::MeOrRoot } else { Owner::Me };
        let dir = Dir::open(dir, create && !read_only, owner)?;
        Ok(Store {
            dir: Arc::new(dir),
            fingerprint,
            sealer,
            owner,
            read_only,
            fault: Fault::None,
            lock_repaired: Arc::new(AtomicU32::new(0)),
        })
    }

    /// Opens a read-only store, such as artifacts baked into a container image, for the engine
    /// with `fingerprint` in `sealer`'s mode. It is checked as a writable store is, except that it and its artifacts may
    /// also be owned by root (images are built as root). It is never created, locked, written,
    /// pruned or cleaned, so it works on a read-only file system with no lock file.
    ///
    /// The fingerprint is given rather than computed, because a start-up opens several stores for
    /// one engine: [`crate::engine::engine_fingerprint`] computes it once.
    pub fn open_read_only(dir: &Path, fingerprint: Fingerprint, sealer: Sealer) -> Result<Store, StoreError> {
        Store::open_bare(dir, fingerprint, sealer, false, true).map_err(|e| StoreError::refused(dir.to_path_buf(), e))
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
            read_only: self.read_only,
            fault: self.fault,
            lock_repaired: Arc::clone(&self.lock_repaired),
        }
    }

    /// True for a store opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
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
        self.owner.allows(uid)
    }

    /// Injects a failure, for tests of disk-full, read-only and memfd-refused handling.
    pub(crate) fn set_fault(&mut self, fault: Fault) {
        self.fault = fault;
    }

    /// The key of the component compiled from `source` under this store's fingerprint.
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
            let mtime = SystemTime::UNIX_EPOCH.checked_add(Duration::new(
                u64::try_from(st.st_mtime).unwrap_or(0),
                u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            ));
            out.push(StoredEntry {
                key,
                name: name.to_owned(),
                path: self.dir.display_path(name),
                size: u64::try_from(st.st_size).unwrap_or(0),
                modified: mtime,
                uid: st.st_uid,
                mode: st.st_mode & 0o7777,
                is_file: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile,
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
                path: self.dir.display_path(&name),
                name,
                size: u64::try_from(st.st_size).unwrap_or(0),
                is_dir: rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory,
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
