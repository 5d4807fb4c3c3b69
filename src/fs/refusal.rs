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
    /// In a directory other users can write (a volume's mount point), the entry that should be
    /// this uid's own store directory is not: another user made it, or put a link or a file
    /// under its name.
    NotOwnDirectory {
        /// The entry.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// What it is: "a directory", "a symbolic link", "a file", "a special file".
        kind: &'static str,
    },
    /// A volume's mount point that holds no store of this uid's, but another uid's
    /// (`wasm-node-cache-<uid>`): maintenance run as root, or as the wrong user.
    OthersStore {
        /// That store.
        path: PathBuf,
        /// Its owner.
        uid: u32,
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
            | PathRefusal::NotOwnDirectory { path, .. }
            | PathRefusal::OthersStore { path, .. }
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
                "{} is writable by other users (mode {mode:04o}) and not sticky: they could swap the directories below it; run `chmod go-w {}`, or, if it is a volume's mount point, give it as the store itself (the store is then a directory of this uid's own inside it)",
                path.display(),
                path.display()
            ),
            // Root handing the node's store to itself would lock the node out of it.
            PathRefusal::OwnedByOther { path, uid, .. } if me == 0 => write!(
                f,
                "{} is owned by {}, not by root, and root never writes into another user's store (a file it left there would lock that user out); run the command as its owner: `{} wasm-node-cache ...`",
                path.display(),
                user_name(*uid),
                as_user(*uid)
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
            PathRefusal::NotOwnDirectory { path, uid, kind } => write!(
                f,
                "{} is {kind} of {}, not a directory of this process's {}: in a directory other users can write, only a directory this uid made is used as its store; remove it, or give a path of this uid's own",
                path.display(),
                user_name(*uid),
                user_name(me)
            ),
            PathRefusal::OthersStore { path, uid } => write!(
                f,
                "no store of {} here: the store in this volume is {}'s, {}; run the command as its owner: `{} wasm-node-cache ...`",
                user_name(me),
                user_name(*uid),
                path.display(),
                as_user(*uid)
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

/// The command prefix that runs a command as `uid`: `runuser -u NAME --`, or `setpriv` with the
/// number when `/etc/passwd` has no name for it.
fn as_user(uid: u32) -> String {
    let name = login_name(uid);
    if name == uid.to_string() {
        format!("setpriv --reuid {uid} --regid {uid} --clear-groups --")
    } else {
        format!("runuser -u {name} --")
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
