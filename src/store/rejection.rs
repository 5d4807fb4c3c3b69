//! Why a stored artifact was not loaded: one typed reason per failure, so that callers match on
//! variants and people read the `Display` text.

use std::fmt;
use std::sync::Arc;

use crate::artifact::ArtifactError;

/// Why an artifact present under the current key was refused. Every variant is a miss: the
/// component is compiled again and the artifact replaced by a rename.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Rejection {
    /// A symbolic link under the artifact's name; links in a store are never followed.
    Symlink,
    /// Not a regular file (a directory, FIFO, socket or device under the artifact's name).
    NotRegularFile,
    /// Owned by a uid the store does not trust.
    ForeignOwner {
        /// The file's owner.
        uid: u32,
    },
    /// Writable by group or others: anyone could change it.
    WritableByOthers {
        /// The file's permission bits.
        mode: u32,
    },
    /// The trailer, the key binding or the checksum did not verify.
    Format(ArtifactError),
    /// Fewer or more payload bytes could be read than the trailer records: the file changed
    /// while it was being read.
    ChangedWhileRead {
        /// Bytes read.
        read: u64,
        /// Bytes the trailer records.
        expected: u64,
    },
    /// An I/O error while opening or reading the artifact.
    Io {
        /// What was being done.
        during: &'static str,
        /// The error.
        error: Arc<std::io::Error>,
    },
    /// wasmtime refused bytes that had passed every check (for example a wasmtime upgrade that
    /// the fingerprint did not capture).
    Deserialize(String),
}

impl Rejection {
    pub(crate) fn io(during: &'static str, error: std::io::Error) -> Rejection {
        Rejection::Io {
            during,
            error: Arc::new(error),
        }
    }

    /// A stable name for the reason, for metrics and programs: `symlink`, `not_regular_file`,
    /// `foreign_owner`, `writable_by_others`, `changed_while_read`, `io`, `deserialize`, or the
    /// format check that failed ([`ArtifactError::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Symlink => "symlink",
            Rejection::NotRegularFile => "not_regular_file",
            Rejection::ForeignOwner { .. } => "foreign_owner",
            Rejection::WritableByOthers { .. } => "writable_by_others",
            Rejection::Format(e) => e.kind(),
            Rejection::ChangedWhileRead { .. } => "changed_while_read",
            Rejection::Io { .. } => "io",
            Rejection::Deserialize(_) => "deserialize",
        }
    }

    /// True when the artifact was written in the other authentication mode: not a defect, just
    /// not checkable with this store's sealer (and always stale here, since the mode is part of
    /// the fingerprint).
    pub fn is_other_mode(&self) -> bool {
        matches!(self, Rejection::Format(ArtifactError::WrongMode { .. }))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Symlink => f.write_str("is a symbolic link; links in the store are never followed"),
            Rejection::NotRegularFile => f.write_str("not a regular file"),
            Rejection::ForeignOwner { uid } => {
                write!(
                    f,
                    "owned by {}, not by this process's {}",
                    crate::fs::user_name(*uid),
                    crate::fs::user_name(crate::fs::euid())
                )
            }
            Rejection::WritableByOthers { mode } => {
                write!(f, "writable by group or others (mode {mode:03o})")
            }
            Rejection::Format(e) => e.fmt(f),
            Rejection::ChangedWhileRead { read, expected } => {
                write!(
                    f,
                    "{read} payload bytes read of {expected}: file changed while being read"
                )
            }
            Rejection::Io { during, error } => write!(f, "cannot {during}: {error}"),
            Rejection::Deserialize(e) => write!(f, "wasmtime refused the verified artifact: {e}"),
        }
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Rejection::Format(e) => Some(e),
            Rejection::Io { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

impl From<ArtifactError> for Rejection {
    fn from(e: ArtifactError) -> Rejection {
        Rejection::Format(e)
    }
}
