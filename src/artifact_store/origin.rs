//! Where a result came from: what a caller logs, counts or alerts on.

use std::fmt;
use std::path::PathBuf;

use crate::key::{Hash32, Kind};
use crate::profile::CpuProfile;
use crate::report::StoreWrite;
use crate::store::{LoadPath, Rejection};

/// Where an [`ArtifactStore`](crate::ArtifactStore) found, or how it made, compiled code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A verified artifact of the writable store, compiled for this engine.
    Store {
        /// The store directory.
        dir: PathBuf,
        /// How its code reached wasmtime.
        load_path: LoadPath,
    },
    /// A verified artifact of a read-only store (a bake), compiled for this engine.
    ReadOnlyStore {
        /// The read-only store's directory.
        dir: PathBuf,
        /// How its code reached wasmtime.
        load_path: LoadPath,
    },
    /// A verified artifact compiled for a portable CPU profile, which this engine accepted for
    /// this CPU.
    Portable {
        /// The profile it was compiled for.
        profile: CpuProfile,
        /// The store (writable or read-only) that held it.
        dir: PathBuf,
        /// How its code reached wasmtime.
        load_path: LoadPath,
    },
    /// Compiled in this call, and what publishing the artifact achieved (with the reason when it
    /// was not stored: lock held past the timeout, full disk, read-only file system...).
    Compiled {
        /// Stored, stored without a confirmed directory fsync, or not stored and why.
        stored: StoreWrite,
    },
}

impl Origin {
    /// True when the code was compiled in this call rather than loaded.
    pub fn is_compiled(&self) -> bool {
        matches!(self, Origin::Compiled { .. })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Store { dir, load_path } => {
                write!(f, "loaded from {} ({})", dir.display(), load_path.as_str())
            }
            Origin::ReadOnlyStore { dir, load_path } => {
                write!(
                    f,
                    "loaded from read-only store {} ({})",
                    dir.display(),
                    load_path.as_str()
                )
            }
            Origin::Portable {
                profile,
                dir,
                load_path,
            } => write!(
                f,
                "loaded {profile} artifact from {} ({})",
                dir.display(),
                load_path.as_str()
            ),
            Origin::Compiled {
                stored: StoreWrite::Stored,
            } => f.write_str("compiled and stored"),
            Origin::Compiled {
                stored: StoreWrite::DurabilityNotConfirmed(e),
            } => write!(f, "compiled and stored, durability not confirmed: {e}"),
            Origin::Compiled {
                stored: StoreWrite::NotStored(e),
            } => write!(f, "compiled, not stored: {e}"),
        }
    }
}

/// Compiled code and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The component or module, ready to instantiate with the store's engine.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
    /// SHA-256 of the wasm bytes: the artifact's name.
    pub hash: Hash32,
    /// Component or core module.
    pub kind: Kind,
    /// Why an artifact found under this engine's own key was refused, if one was (it was then
    /// served from elsewhere or compiled, and replaced when compiled with a writable store).
    pub rejected: Option<Rejection>,
}
