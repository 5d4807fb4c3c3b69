//! [`StoreError`]: the one failure of every store operation, made in one place from the store's
//! own typed failure, and the public paths of the typed causes it carries (each defined in the
//! layer that finds it: [`LockError`] and [`NotAStore`] in the store, [`PathRefusal`] in the
//! file-system walk, [`KeyError`] with the key...).
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
pub use crate::store::{Holder, LockError, LockHolder, LockKind, LockProblem, NotAStore, Rejection};
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
    /// A source binary could not be read, or did not match its hash (a bake skips it; the
    /// known-hash door compiles and stores nothing for it).
    Source {
        /// The hash it was looked up by.
        hash: Hash32,
        /// Why.
        reason: SkipReason,
    },
}

impl StoreError {
    /// `Refused`, or `Missing` when the cause is that the directory (or an ancestor) does not exist.
    fn refused(path: PathBuf, reason: PathRefusal) -> StoreError {
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
    /// `write`, `durability`, `source`. It is the `kind` of the JSON form.
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
            StoreError::Source { hash, .. } => write!(f, "source {} cannot be used", hex::encode(hash)),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Missing { .. } | StoreError::NoStore | StoreError::InsideBinaryRoot { .. } => None,
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

/// The one place a store's typed failure becomes the crate's error.
impl From<crate::store::Failure> for StoreError {
    fn from(failure: crate::store::Failure) -> StoreError {
        use crate::store::Cause;
        let path = failure.path;
        match failure.cause {
            Cause::Refused(reason) => StoreError::refused(path, reason),
            Cause::NotAStore(reason) => StoreError::NotAStore { path, reason },
            Cause::Io(op, source) => StoreError::io(path, op, source),
            Cause::Lock(kind, source) => StoreError::Lock { path, kind, source },
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
