//! Atomic publication of one artifact, and removal: temp file in the store, write, fsync, rename
//! over the final name, fsync the directory. A reader sees the old file, the new file, or nothing;
//! never a mix. Publication needs the artifact's lock ([`ArtifactLock`]) or the exclusive lock;
//! removal needs the exclusive lock ([`Exclusive`]).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rustix::fs::OFlags;

use super::{ArtifactLock, Exclusive, Fault, Store, StoredEntry, TEMP_PREFIX};
use crate::artifact;
use crate::key::ArtifactKey;

/// Published artifacts carry no write bit for anyone: a careless `cp` over one by the node's user
/// fails instead of changing the code of every node that mapped it. (Root ignores the mode; see
/// SECURITY.md.)
pub const ARTIFACT_MODE: u32 = 0o444;

/// What a clean-up of leftover temporary files did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct TempCleanup {
    /// Files removed.
    pub removed: usize,
    /// Files that could not be removed, with the error; the clean-up went on past each.
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// An artifact renamed into place. Its durability is confirmed once the directory's fsync
/// succeeds; if that fails, the artifact is stored and loadable, but a crash of the machine could
/// still lose its name.
#[derive(Debug)]
#[non_exhaustive]
pub struct Published {
    /// The artifact's path.
    pub path: PathBuf,
    /// Why the directory's fsync after the rename failed, if it did.
    pub durability_error: Option<io::Error>,
}

impl ArtifactLock<'_> {
    /// Atomically publishes `payload` as the locked artifact. An error means nothing was
    /// published; a failed directory fsync after the rename is reported in [`Published`].
    pub fn publish(&self, payload: &[u8]) -> io::Result<Published> {
        self.store.publish_key(&self.key, payload)
    }
}

impl Exclusive<'_> {
    /// Atomically publishes `payload` as the component artifact for `source`, under the exclusive
    /// lock (which excludes every artifact's lock).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn publish(&self, source: &crate::key::Hash32, payload: &[u8]) -> io::Result<Published> {
        self.store
            .publish_key(&self.store.key_of(source, crate::key::Kind::Component), payload)
    }

    /// Unlinks the artifact of `source` under this store's fingerprint, if there is one: a file
    /// the loader rejected (absence is not an error). Never truncates.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn remove_artifact(&self, source: &crate::key::Hash32) -> io::Result<bool> {
        self.remove_key(&self.store.key(source))
    }

    /// [`Exclusive::remove_artifact`] for any key (a portable profile's, a core module's).
    pub(crate) fn remove_key(&self, key: &ArtifactKey) -> io::Result<bool> {
        match self.store.dir.unlink(key.file_name()) {
            Ok(()) => {
                // The file is gone whatever the fsync says: a failed fsync only means that a crash
                // of the machine could bring the name back, and the loader refuses it again then.
                if let Err(e) = self.store.dir.sync() {
                    log::warn!("cannot sync {}: {e}", self.store.dir().display());
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes one entry under an artifact name (never truncates it: a process may have it
    /// mapped). A directory there is removed only when empty.
    pub fn remove(&self, entry: &StoredEntry) -> io::Result<()> {
        if entry.is_dir {
            self.store.dir.remove_dir(&entry.name)
        } else {
            self.store.dir.unlink(&entry.name)
        }
    }

    /// Removes leftover temporary files, going on past any it cannot remove. Under the exclusive
    /// lock no writer is in the middle of a publication, so every temporary file is litter.
    pub fn remove_temp_files(&self) -> io::Result<TempCleanup> {
        let mut cleanup = TempCleanup::default();
        for name in self.store.temp_names()? {
            match self.store.dir.unlink(&name) {
                Ok(()) => cleanup.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    let path = self.store.dir.display_path(&name);
                    log::warn!("cannot remove temporary file {}: {e}", path.display());
                    cleanup.failed.push((path, e));
                }
            }
        }
        if cleanup.removed > 0 {
            self.store.dir.sync()?;
        }
        Ok(cleanup)
    }
}

impl Store {
    /// Publishes `payload` under `key`, whose fingerprint may be another engine's (a portable
    /// profile's). The caller holds the artifact's lock or the exclusive lock.
    pub(crate) fn publish_key(&self, key: &ArtifactKey, payload: &[u8]) -> io::Result<Published> {
        let key = *key;
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let trailer = artifact::encode_trailer(payload, &key, &self.sealer, created);
        if self.fault == Fault::ReadOnly {
            return Err(io::Error::from(rustix::io::Errno::ROFS));
        }
        // A half-written temp file is never published, and is removed at once rather than left
        // to the next clean-up.
        let fill = |file: &mut std::fs::File| {
            for part in [payload, &trailer[..]] {
                if self.fault == Fault::DiskFull {
                    file.write_all(&part[..part.len().min(16)])?;
                    return Err(io::Error::from(rustix::io::Errno::NOSPC));
                }
                file.write_all(part)?;
            }
            file.sync_all()
        };
        // rename(2) replaces the name atomically; a link, FIFO or socket at the final name is
        // replaced, not followed. A directory is not: an empty one there (a careless `mkdir`,
        // nothing any node loads) is removed first, a non-empty one stays the operator's.
        let place = |temp: &str, _: std::fs::File| match self.dir.rename(temp, key.file_name()) {
            Err(e) if is_directory_in_the_way(&e) => {
                self.dir.remove_dir(key.file_name())?;
                self.dir.rename(temp, key.file_name())
            }
            other => other,
        };
        self.dir
            .write_new(temp_name, OFlags::WRONLY, ARTIFACT_MODE, fill, place)?;
        // The rename is done: the artifact is in place whatever the fsync says, so its failure is
        // not a failure to publish.
        let synced = if self.fault == Fault::DirSyncFails {
            Err(io::Error::from(rustix::io::Errno::IO))
        } else {
            self.dir.sync()
        };
        Ok(Published {
            path: self.dir.display_path(key.file_name()),
            durability_error: synced.err(),
        })
    }
}

/// `rename` of a file over a directory: `EISDIR` (or `ENOTEMPTY`/`EEXIST` on some systems).
fn is_directory_in_the_way(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if [rustix::io::Errno::ISDIR, rustix::io::Errno::NOTEMPTY, rustix::io::Errno::EXIST]
            .iter()
            .any(|errno| errno.raw_os_error() == code)
    )
}

/// A name no other writer uses at the same moment: pid, a per-process counter and the clock.
/// `O_EXCL` makes a collision an error rather than a shared file.
pub(super) fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{TEMP_PREFIX}{}-{}-{nanos:08x}.part",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
