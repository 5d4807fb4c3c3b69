//! [`StoreError`]: the one failure of every store operation, and the typed causes it carries that
//! belong to no lower module: why a lock was not taken ([`LockError`]) and why a directory is not
//! a store ([`NotAStore`]).
//!
//! Each variant prints its own part once and leaves the cause to
//! [`source`](std::error::Error::source), so an error reporter that walks the chain (anyhow's
//! `{:#}`) shows each path and each cause exactly once. Errors are `Clone` (their I/O and wasmtime
//! sources are shared), so a report can hold the very error a start-up met, and serialize it as
//! `{"kind": ..., "message": ...}`: match on the stable [`StoreError::kind`], show the message.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use crate::artifact::ArtifactError;
pub use crate::authkey::KeyError;
pub use crate::fs::refusal::PathRefusal;
pub use crate::key::ParseHashError;
use crate::key::{Hash32, Kind};
use crate::profile::CpuProfile;
pub use crate::profile::ProfileError;
use crate::serial::Chain;
pub use crate::source::SkipReason;
pub use crate::store::{Holder, Rejection};
pub use crate::whitelist::{BadLineCause, WhitelistError};

/// Why a store operation failed, or why a store or an artifact could not be used. A store that is
/// merely damaged (a corrupt, truncated, foreign or misnamed artifact, a full disk, a lock held
/// past the timeout while loading) never fails a load: the wasm is compiled and the report or
/// [`Origin`](crate::Origin) holds this error to say why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// There is no writable store to work on: the node runs without one (disabled, or its MAC
    /// key could not be loaded).
    NoStore,
    /// The directory does not exist (a read-only store, or a store opened for inspection, is
    /// never created).
    Missing {
        /// The directory as given.
        path: PathBuf,
    },
    /// The directory, an ancestor or a link on the way failed a trust check (another owner,
    /// writable by others, not a directory...).
    Refused {
        /// The directory as given.
        path: PathBuf,
        /// What is wrong, typed: match on it to tell another owner from loose permissions.
        reason: PathRefusal,
    },
    /// The directory is not empty and holds no store marker (`CACHEDIR.TAG` of this crate), nor
    /// only what an earlier version of this crate writes: nothing is written into it or deleted
    /// from it.
    NotAStore {
        /// The directory as given.
        path: PathBuf,
        /// What it holds instead.
        reason: NotAStore,
    },
    /// The store directory is the binary root or lies below it (decided by device and inode):
    /// artifacts are never mixed with source binaries.
    InsideBinaryRoot {
        /// The store directory as given.
        path: PathBuf,
        /// The binary root as given.
        binary_root: PathBuf,
    },
    /// The store's lock could not be taken.
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Which lock was wanted.
        kind: LockKind,
        /// Why not.
        source: LockError,
    },
    /// An I/O operation on the store failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("list", "remove"...).
        op: &'static str,
        /// The error.
        source: Arc<io::Error>,
    },
    /// The MAC key file could not be used (missing, reachable by others, inside the store...);
    /// the key error names the file.
    Key {
        /// What is wrong, typed.
        reason: KeyError,
    },
    /// A CPU profile cannot be used with this engine.
    Profile {
        /// The profile (`None`: the list itself, for example an empty one, or every profile of
        /// this build).
        profile: Option<CpuProfile>,
        /// What is wrong, typed.
        reason: ProfileError,
    },
    /// The wasm binary is not a valid component or core module for this engine.
    Compile {
        /// SHA-256 of the binary.
        hash: Hash32,
        /// What it was compiled as.
        kind: Kind,
        /// wasmtime's error.
        source: Arc<wasmtime::Error>,
    },
    /// An artifact could not be written (full disk, read-only file system, I/O error): nothing
    /// was published under its name.
    NotWritten {
        /// The artifact's path.
        path: PathBuf,
        /// The error.
        source: Arc<io::Error>,
    },
    /// An artifact was renamed into place, but the directory's fsync failed: it is stored and
    /// loadable, but a crash of the machine could still lose it.
    NotDurable {
        /// The artifact's path.
        path: PathBuf,
        /// The error of the directory's fsync.
        source: Arc<io::Error>,
    },
    /// The native profile is not among the CPU profiles to store, so this engine's own
    /// artifacts are kept in memory only (a bake of portable profiles alone).
    NativeNotStored,
    /// A source binary could not be read, or did not match its hash (a bake skips it).
    Source {
        /// The hash it was looked up by.
        hash: Hash32,
        /// Why.
        reason: SkipReason,
    },
}

impl StoreError {
    /// `Refused`, or `Missing` when the cause is that the directory (or an ancestor) does not exist.
    pub(crate) fn refused(path: PathBuf, reason: PathRefusal) -> StoreError {
        match reason {
            PathRefusal::Missing { .. } => StoreError::Missing { path },
            reason => StoreError::Refused { path, reason },
        }
    }

    /// `Profile` for a list of CPU profiles that cannot work, naming the profile at fault.
    pub(crate) fn profile_list(reason: ProfileError) -> StoreError {
        let profile = match &reason {
            ProfileError::NotThisArchitecture { profile } | ProfileError::EngineSettingsDiffer { profile } => {
                Some(*profile)
            }
            _ => None,
        };
        StoreError::Profile { profile, reason }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            op,
            source: Arc::new(source),
        }
    }

    /// A stable name for the variant, for programs to match on: `no_store`, `missing`,
    /// `refused`, `not_a_store`, `inside_binary_root`, `lock`, `io`, `key`, `profile`, `compile`,
    /// `write`, `durability`, `native_not_stored`, `source`. It is the `kind` of the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NoStore => "no_store",
            StoreError::Missing { .. } => "missing",
            StoreError::Refused { .. } => "refused",
            StoreError::NotAStore { .. } => "not_a_store",
            StoreError::InsideBinaryRoot { .. } => "inside_binary_root",
            StoreError::Lock { .. } => "lock",
            StoreError::Io { .. } => "io",
            StoreError::Key { .. } => "key",
            StoreError::Profile { .. } => "profile",
            StoreError::Compile { .. } => "compile",
            StoreError::NotWritten { .. } => "write",
            StoreError::NotDurable { .. } => "durability",
            StoreError::NativeNotStored => "native_not_stored",
            StoreError::Source { .. } => "source",
        }
    }

    /// The error with each of its causes, `: `-separated, as the reports' `message`.
    pub fn message(&self) -> String {
        Chain(self).to_string()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoStore => f.write_str("no store is in use (disabled, or its MAC key could not be loaded)"),
            StoreError::Missing { path } => write!(f, "store {} does not exist (no such directory)", path.display()),
            StoreError::Refused { path, .. } => write!(f, "refusing to use the store {}", path.display()),
            StoreError::NotAStore { path, .. } => write!(f, "not a wasm-node-cache store: {}", path.display()),
            StoreError::InsideBinaryRoot { path, binary_root } => write!(
                f,
                "store {} is the binary root {} or lies below it; artifacts are never mixed with source binaries",
                path.display(),
                binary_root.display()
            ),
            StoreError::Lock { path, kind, .. } => write!(f, "cannot take the {kind} lock {}", path.display()),
            StoreError::Io { path, op, .. } => write!(f, "cannot {op} {}", path.display()),
            // The key error names the file: printed after this, it would say it twice.
            StoreError::Key { .. } => f.write_str("the MAC key cannot be used"),
            StoreError::Profile { profile: Some(p), .. } => write!(f, "cannot use CPU profile {p}"),
            StoreError::Profile { profile: None, .. } => f.write_str("invalid CPU profile list"),
            StoreError::Compile { hash, kind, .. } => {
                write!(f, "cannot compile {} as a {kind}", hex::encode(hash))
            }
            StoreError::NotWritten { path, .. } => write!(f, "cannot write {}", path.display()),
            StoreError::NotDurable { path, .. } => write!(
                f,
                "{} was renamed into place, but the fsync of its directory failed",
                path.display()
            ),
            StoreError::NativeNotStored => f.write_str("the native profile is not among the CPU profiles to store"),
            StoreError::Source { hash, .. } => write!(f, "source {} not baked", hex::encode(hash)),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Missing { .. }
            | StoreError::NoStore
            | StoreError::InsideBinaryRoot { .. }
            | StoreError::NativeNotStored => None,
            StoreError::Refused { reason, .. } => Some(reason),
            StoreError::NotAStore { reason, .. } => Some(reason),
            StoreError::Key { reason } => Some(reason),
            StoreError::Profile { reason, .. } => Some(reason),
            StoreError::Lock { source, .. } => Some(source),
            StoreError::Io { source, .. }
            | StoreError::NotWritten { source, .. }
            | StoreError::NotDurable { source, .. } => Some(source.as_ref()),
            StoreError::Compile { source, .. } => Some(source.as_ref().as_ref()),
            StoreError::Source { reason, .. } => Some(reason),
        }
    }
}

/// A store error as every report shows it: `{"kind": "...", "message": "..."}`.
impl Serialize for StoreError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("StoreError", 2)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.message())?;
        st.end()
    }
}

/// Why a non-empty directory is not taken for a store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAStore {
    /// It holds entries a store never holds, and no marker.
    ForeignEntries {
        /// One of them (the first by name).
        example: String,
        /// How many such entries there are.
        count: usize,
    },
    /// Its `CACHEDIR.TAG` was written by another program (a cargo `target/`, say).
    OtherProgramsTag,
    /// Its `CACHEDIR.TAG` is not a regular file.
    MarkerNotAFile,
    /// No marker, and only names a store uses (`lock`, `.tmp-*`, artifact names) but no artifact
    /// whose trailer verifies: a user's `lock` or `.tmp-notes` is not proof of a store.
    Unproven {
        /// One of its entries (the first by name).
        example: String,
    },
}

impl fmt::Display for NotAStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAStore::ForeignEntries { example, count: 1 } => write!(
                f,
                "it holds {example:?}, which a store never holds, and no CACHEDIR.TAG of wasm-node-cache; give an empty or new directory"
            ),
            NotAStore::ForeignEntries { example, count } => write!(
                f,
                "it holds {example:?} and {} other entries a store never holds, and no CACHEDIR.TAG of wasm-node-cache; give an empty or new directory",
                count - 1
            ),
            NotAStore::OtherProgramsTag => {
                f.write_str("its CACHEDIR.TAG was written by another program: it is another program's cache")
            }
            NotAStore::MarkerNotAFile => f.write_str("its CACHEDIR.TAG is not a regular file"),
            NotAStore::Unproven { example } => write!(
                f,
                "it holds {example:?} but no CACHEDIR.TAG of wasm-node-cache and no artifact whose trailer verifies, so it is not provably a store; give an empty or new directory"
            ),
        }
    }
}

impl std::error::Error for NotAStore {}

/// Which lock of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LockKind {
    /// Many holders at once: loading and publishing artifacts.
    Shared,
    /// One holder: maintenance (pruning, clearing, removing rejected artifacts and temp files).
    Exclusive,
    /// One artifact's, so that it is compiled once across threads and processes.
    Artifact,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
            LockKind::Artifact => "artifact",
        })
    }
}

/// Why a lock was not taken.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LockError {
    /// Another holder kept the lock until the deadline.
    TimedOut {
        /// How long this acquisition waited (zero when an earlier call of the same
        /// [`ArtifactStore`](crate::ArtifactStore) already waited its whole timeout).
        waited: Duration,
        /// Who holds it, as far as can be told.
        holder: LockHolder,
    },
    /// The lock file could not be opened, created or locked.
    Io(Arc<io::Error>),
    /// A read-only store is never locked.
    ReadOnlyStore,
    /// The lock file failed a check and could not be replaced: nothing was written into it, and
    /// the store is not used.
    Untrusted {
        /// What is wrong with it.
        problem: LockProblem,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::TimedOut { waited, holder } => {
                write!(f, "lock still held after {:.1} s", waited.as_secs_f64())?;
                match holder {
                    LockHolder::ThisProcess { purpose } => {
                        write!(f, " by this process ({purpose}, pid {})", std::process::id())
                    }
                    LockHolder::Holding(holders) => {
                        let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
                        write!(f, " by {}", list.join(", "))
                    }
                    LockHolder::Recorded(h) => write!(f, " by another process (last exclusive holder: {h})"),
                    LockHolder::Unknown => f.write_str(" by another process"),
                }
            }
            LockError::Io(e) => write!(f, "the lock file could not be opened or locked: {e}"),
            LockError::ReadOnlyStore => f.write_str("a read-only store is never locked"),
            LockError::Untrusted { problem } => write!(f, "lock file refused: {problem}; nothing was written into it"),
        }
    }
}

impl std::error::Error for LockError {}

/// Who holds a lock that was not obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockHolder {
    /// Nothing says who.
    Unknown,
    /// Another thread of this very process holds it.
    ThisProcess {
        /// What it holds the lock for.
        purpose: String,
    },
    /// The processes the kernel's lock table names as holding it (Linux `/proc/locks`).
    Holding(Vec<crate::store::Holder>),
    /// The process the last exclusive holder wrote into the lock file (only read from a lock
    /// file only this uid can write): its pid, whether it runs, its command line.
    Recorded(crate::store::Holder),
}

/// What is wrong with a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockProblem {
    /// A symbolic link under the lock's name.
    Symlink,
    /// Not a regular file (a directory, FIFO, socket or device under the lock's name).
    NotRegularFile,
    /// More than one link: another name for it may lie outside the store.
    HardLinks {
        /// Its link count.
        links: u64,
    },
    /// Owned by a uid other than this process's.
    OwnedByOther {
        /// Its owner.
        uid: u32,
    },
    /// Others may open it (and so hold the lock).
    OpenToOthers {
        /// Its permission bits.
        mode: u32,
    },
}

impl fmt::Display for LockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockProblem::Symlink => f.write_str("it is a symbolic link"),
            LockProblem::NotRegularFile => f.write_str("it is not a regular file"),
            LockProblem::HardLinks { links } => write!(
                f,
                "it has {links} hard links: another name for it may be a file outside the store"
            ),
            LockProblem::OwnedByOther { uid } => write!(
                f,
                "it is owned by {}, not by this process's {}",
                crate::fs::user_name(*uid),
                crate::fs::user_name(crate::fs::euid())
            ),
            LockProblem::OpenToOthers { mode } => {
                write!(f, "other users may open it (mode {mode:03o}) and so hold the lock")
            }
        }
    }
}
