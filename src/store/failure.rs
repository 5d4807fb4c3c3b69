//! [`Failure`]: why an operation on one store failed, typed. The layers above make their
//! [`StoreError`](crate::StoreError) from it, in one place (its `From`), so the store never
//! depends on the crate's error.

use std::io;
use std::path::PathBuf;

use super::{LockError, LockKind, NotAStore};
use crate::fs::refusal::PathRefusal;

/// Why an operation on one store failed.
#[derive(Debug)]
pub enum Failure {
    /// The directory, an ancestor or a link on the way failed a check, or does not exist.
    Refused {
        /// The directory as given.
        path: PathBuf,
        /// What is wrong.
        reason: PathRefusal,
    },
    /// A non-empty directory that is not provably a store.
    NotAStore {
        /// The directory as given.
        path: PathBuf,
        /// What it holds instead.
        reason: NotAStore,
    },
    /// An I/O operation on the store failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("list", "remove"...).
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A lock of the store was not taken.
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Which lock was wanted.
        kind: LockKind,
        /// Why not.
        source: LockError,
    },
}

impl Failure {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Failure {
        Failure::Io {
            path: path.into(),
            op,
            source,
        }
    }
}
