//! [`StoreProblem`]: a store failure as a report holds it, a stable kind for programs and the
//! message (the error with its causes) for people.

use std::fmt;

use serde::Serialize;

use crate::error::StoreError;
use crate::store::{LockError, LockKind};

/// Why a store could not be read or written, or an artifact was not stored. In JSON
/// `{"kind": "...", "message": "..."}`: match on `kind`, show `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreProblem {
    /// What went wrong, as a stable name.
    pub kind: ProblemKind,
    /// The error and each of its causes, `: `-separated, naming the path.
    pub message: String,
}

/// The kind of a [`StoreProblem`]; in JSON its snake-case name (`refused`, `lock`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// The store directory does not exist (a read-only store is never created).
    Missing,
    /// The store directory, an ancestor or a link on the way failed a trust check
    /// ([`StoreError::Refused`]).
    Refused,
    /// The MAC key could not be used: no store is used, since nothing in one could be
    /// authenticated.
    Key,
    /// The store's lock could not be taken.
    Lock,
    /// An artifact could not be written (disk full, read-only file system, I/O error).
    Write,
    /// An artifact was renamed into place, but the directory's fsync failed: a crash of the
    /// machine could still lose it.
    Durability,
    /// There is no writable store to store into.
    NoStore,
    /// The native profile is not among the CPU profiles to store, so this engine's own
    /// artifacts are not stored.
    NativeNotStored,
    /// The wasm could not be compiled for the profile being baked.
    Compile,
    /// A CPU profile's engine could not be built.
    Profile,
    /// The source binary could not be read or did not match its hash (a bake skips it).
    Source,
}

impl StoreProblem {
    /// A problem of `kind` with `message`.
    pub(crate) fn new(kind: ProblemKind, message: impl Into<String>) -> StoreProblem {
        StoreProblem {
            kind,
            message: message.into(),
        }
    }

    /// The `kind` lock of the store whose lock file is `lock_path` was not taken, and why.
    pub(crate) fn lock_not_taken(kind: LockKind, lock_path: &std::path::Path, e: &LockError) -> StoreProblem {
        let which = match kind {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        };
        StoreProblem::new(
            ProblemKind::Lock,
            format!(
                "could not take the {which} lock on {}: {}",
                lock_path.display(),
                crate::serial::Chain(e)
            ),
        )
    }

    /// `e` with its causes, of the kind its variant says.
    pub(crate) fn of(e: &StoreError) -> StoreProblem {
        let kind = match e {
            StoreError::Missing { .. } => ProblemKind::Missing,
            StoreError::Refused { .. } => ProblemKind::Refused,
            StoreError::Key { .. } => ProblemKind::Key,
            StoreError::Lock { .. } => ProblemKind::Lock,
            StoreError::Io { .. } => ProblemKind::Write,
            StoreError::NoStore => ProblemKind::NoStore,
            StoreError::Profile { .. } => ProblemKind::Profile,
            StoreError::Compile { .. } => ProblemKind::Compile,
        };
        StoreProblem::new(kind, crate::serial::Chain(e).to_string())
    }
}

impl fmt::Display for StoreProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
