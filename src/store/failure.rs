//! [`Failure`]: why an operation on one store failed, typed. The layers above make their
//! [`StoreError`](crate::StoreError) from it, in one place (its `From`), so the store never
//! depends on the crate's error.

use std::io;
use std::path::PathBuf;

use super::{LockError, LockKind, NotAStore};
use crate::fs::refusal::PathRefusal;

/// Why an operation on one store failed, and on which file or directory.
#[derive(Debug)]
pub struct Failure {
    /// The store directory as given, the lock file, or the file an I/O operation was on.
    pub path: PathBuf,
    /// What went wrong.
    pub cause: Cause,
}

/// What went wrong: the store's side of the [`StoreError`](crate::StoreError) variant of the
/// same name.
#[derive(Debug)]
pub enum Cause {
    /// The directory, an ancestor or a link on the way failed a check, or does not exist.
    Refused(PathRefusal),
    /// A non-empty directory that is not provably a store.
    NotAStore(NotAStore),
    /// An I/O operation ("list", "remove"...) failed.
    Io(&'static str, io::Error),
    /// A lock of the store was not taken.
    Lock(LockKind, LockError),
}

impl Failure {
    pub(crate) fn new(path: impl Into<PathBuf>, cause: Cause) -> Failure {
        Failure {
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Failure {
        Failure::new(path, Cause::Io(op, source))
    }
}
