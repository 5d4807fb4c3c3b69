//! [`PathRefusal`]: why a checked walk ([`crate::fs::walk`]) refused a path, typed so that a
//! caller can tell another owner from loose permissions, a planted link or a missing directory.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::{MAX_LINKS, euid, login_name, user_name};

/// Why a store directory, a key file's directory or a link on the way to either was refused.
/// Each variant names the path it is about (as resolved: links replaced by their targets).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PathRefusal {
    /// A directory on the path does not exist (and was not to be created).
    Missing {
        /// The first missing directory.
        path: PathBuf,
    },
    /// Something on the path that must be a directory is not one.
    NotADirectory {
        /// What was found.
        path: PathBuf,
    },
    /// A directory passed through is owned by a user who is neither root nor this process's:
    /// that user could swap the directories below it.
    AncestorOwnedByOther {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A directory passed through is writable by group or others and not sticky: they could swap
    /// the directories below it.
    AncestorWritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner (root or this process's uid: another owner is refused first).
        uid: u32,
    },
    /// The directory itself is owned by another user.
    OwnedByOther {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// True when root would have been accepted too (read-only stores, keys).
        root_allowed: bool,
    },
    /// The directory itself is writable by group or others.
    WritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A symbolic link on the way is owned by a user who could point it anywhere (neither root
    /// nor this process's uid, or in a sticky directory neither this uid nor the directory's
    /// owner): it is never followed.
    LinkOwnedByOther {
        /// The link.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// True when the link lies in a sticky directory.
        sticky: bool,
    },
    /// More than 40 links to follow, the kernel's `ELOOP` limit (a loop?).
    TooManyLinks {
        /// The path as given.
        path: PathBuf,
    },
    /// A symbolic link with an empty target.
    EmptyLink {
        /// The link.
        path: PathBuf,
    },
    /// A file was asked for, but the path has no final name (`/`, `..`).
    NotAFilePath {
        /// The path as given.
        path: PathBuf,
    },
    /// A system call on the way failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("open", "stat", "create"...).
        op: &'static str,
        /// The error.
        source: Arc<io::Error>,
    },
}

impl PathRefusal {
    /// The path the refusal is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            PathRefusal::Missing { path }
            | PathRefusal::NotADirectory { path }
            | PathRefusal::AncestorOwnedByOther { path, .. }
            | PathRefusal::AncestorWritableByOthers { path, .. }
            | PathRefusal::OwnedByOther { path, .. }
            | PathRefusal::WritableByOthers { path, .. }
            | PathRefusal::LinkOwnedByOther { path, .. }
            | PathRefusal::TooManyLinks { path }
            | PathRefusal::EmptyLink { path }
            | PathRefusal::NotAFilePath { path }
            | PathRefusal::Io { path, .. } => path,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: impl Into<io::Error>) -> PathRefusal {
        PathRefusal::Io {
            path: path.into(),
            op,
            source: Arc::new(source.into()),
        }
    }
}

impl fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let me = euid();
        match self {
            PathRefusal::Missing { path } => write!(f, "{}: no such directory", path.display()),
            // The kernel's words (ENOTDIR), as operators search for them.
            PathRefusal::NotADirectory { path } => write!(f, "{}: Not a directory", path.display()),
            PathRefusal::AncestorOwnedByOther { path, uid } => write!(
                f,
                "{} is owned by {}, neither root nor this process's {}: that user could swap the directories below it; give a path whose every directory is root's or {}'s",
                path.display(),
                user_name(*uid),
                user_name(me),
                user_name(me)
            ),
            PathRefusal::AncestorWritableByOthers { path, mode, .. } => write!(
                f,
                "{} is writable by other users (mode {mode:04o}) and not sticky: they could swap the directories below it; run `chmod go-w {}`",
                path.display(),
                path.display()
            ),
            PathRefusal::OwnedByOther {
                path,
                uid,
                root_allowed,
            } => write!(
                f,
                "{} is owned by {}, not by this process's {}{}; run `chown -R {}: {}` or run as its owner",
                path.display(),
                user_name(*uid),
                user_name(me),
                if *root_allowed { " or root" } else { "" },
                login_name(me),
                path.display()
            ),
            PathRefusal::WritableByOthers { path, mode } => write!(
                f,
                "{} is writable by other users (mode {mode:03o}); run `chmod go-w {}`",
                path.display(),
                path.display()
            ),
            PathRefusal::LinkOwnedByOther { path, uid, sticky } => write!(
                f,
                "{} is a symbolic link owned by {}, neither root nor this process's {}{}: that user could point it anywhere; it is never followed",
                path.display(),
                user_name(*uid),
                user_name(me),
                if *sticky { " in a sticky directory" } else { "" }
            ),
            PathRefusal::TooManyLinks { path } => write!(
                f,
                "{}: more than {MAX_LINKS} symbolic links to follow (a loop?)",
                path.display()
            ),
            PathRefusal::EmptyLink { path } => write!(f, "{} is an empty symbolic link", path.display()),
            PathRefusal::NotAFilePath { path } => write!(f, "{}: not a file path", path.display()),
            PathRefusal::Io { path, op, .. } => write!(f, "cannot {op} {}", path.display()),
        }
    }
}

impl std::error::Error for PathRefusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PathRefusal::Io { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
