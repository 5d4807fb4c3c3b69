//! [`StoreError`]: why an [`ArtifactStore`](crate::ArtifactStore) could not be opened, or why a
//! wasm binary could not be compiled, or why an operator's command on a store failed. Each variant prints its own message once; the cause is
//! its [`source`](std::error::Error::source), for error reporters that walk the chain.

use std::fmt;
use std::path::PathBuf;

use crate::authkey::KeyError;
use crate::key::{Hash32, Kind};
use crate::path_refusal::PathRefusal;
use crate::profile::{CpuProfile, ProfileError};
use crate::store::LockError;

/// Why a store operation failed. A store that is merely damaged (a corrupt, truncated, foreign or
/// misnamed artifact, a full disk, a lock held past the timeout while loading) is never an error:
/// the wasm is compiled and the reason is in the result's [`Origin`](crate::Origin).
#[derive(Debug)]
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
    /// The store's lock could not be taken.
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: LockError,
    },
    /// An I/O operation on the store failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("list", "remove"...).
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The MAC key file could not be used (missing, reachable by others, inside the store...).
    Key {
        /// The key file as given.
        path: PathBuf,
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
        source: wasmtime::Error,
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
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoStore => f.write_str("no store is in use (disabled, or its MAC key could not be loaded)"),
            StoreError::Missing { path } => write!(f, "store {} does not exist (no such directory)", path.display()),
            StoreError::Refused { path, .. } => write!(f, "refusing to use the store {}", path.display()),
            StoreError::Lock { path, .. } => write!(f, "cannot take the lock {}", path.display()),
            StoreError::Io { path, op, .. } => write!(f, "cannot {op} {}", path.display()),
            // The key error names the file: printed after this, it would say it twice.
            StoreError::Key { .. } => f.write_str("the MAC key cannot be used"),
            StoreError::Profile { profile: Some(p), .. } => write!(f, "cannot use CPU profile {p}"),
            StoreError::Profile { profile: None, .. } => f.write_str("invalid CPU profile list"),
            StoreError::Compile { hash, kind, .. } => {
                write!(f, "cannot compile {} as a {kind}", hex::encode(hash))
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Missing { .. } | StoreError::NoStore => None,
            StoreError::Refused { reason, .. } => Some(reason),
            StoreError::Key { reason, .. } => Some(reason),
            StoreError::Profile { reason, .. } => Some(reason),
            StoreError::Lock { source, .. } => Some(source),
            StoreError::Io { source, .. } => Some(source),
            StoreError::Compile { source, .. } => Some(source.as_ref()),
        }
    }
}
