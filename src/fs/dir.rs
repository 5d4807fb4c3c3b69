//! A directory held open by descriptor. Its path is walked and checked once, at open
//! ([`super::walk`]); every later open, create, rename, unlink, fsync and lock is relative
//! to the descriptor (the `*at` family), so renaming the directory or any parent afterwards cannot
//! swap another directory in.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Stat};

use super::refusal::PathRefusal;
use super::walk::{self as trusted_path, Fallback};
use super::{GROUP_OR_OTHER_WRITE, Owner};

/// A file's identity: its device and inode numbers, as `fstat` gives them. Two paths, descriptors
/// or walks reach the same file exactly when their identities are equal; path text says nothing
/// (links, bind mounts, `..`, hard links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(st: &Stat) -> FileId {
        FileId {
            // The widths of `st_dev` and `st_ino` vary by platform; both fit in 64 bits.
            #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
            dev: st.st_dev as u64,
            #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
            ino: st.st_ino as u64,
        }
    }

    /// The device number.
    pub(crate) fn dev(self) -> u64 {
        self.dev
    }

    /// The inode number.
    pub(crate) fn ino(self) -> u64 {
        self.ino
    }

    #[cfg(test)]
    pub(crate) fn from_parts(dev: u64, ino: u64) -> FileId {
        FileId { dev, ino }
    }

    /// The identity of what `path` names, following links (as a binary root is read).
    pub(crate) fn of_path(path: &Path) -> io::Result<FileId> {
        Ok(FileId::of(&rfs::stat(path)?))
    }
}

/// The name of this uid's own store directory inside a volume's mount point that others can
/// write ([`Dir::open_store`]), as the default in the temp directory is named.
pub(crate) fn per_uid_name() -> String {
    format!("wasm-node-cache-{}", super::euid())
}

/// Another uid's store in the mount point `walked` (an entry `wasm-node-cache-<uid>`, a directory
/// owned by that uid), for a command run as the wrong user.
fn others_store(walked: &trusted_path::Walked) -> Option<PathRefusal> {
    let fd = walked.open_dir().ok()?;
    for entry in rfs::Dir::read_from(&fd).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(uid) = name
            .strip_prefix("wasm-node-cache-")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let st = rfs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if st.st_uid == uid && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
            return Some(PathRefusal::OthersStore {
                path: walked.path.join(name),
                uid,
            });
        }
    }
    None
}

/// Most `..` steps [`Dir::is_within`] takes before it gives up: far deeper than any real tree.
const MAX_DEPTH: usize = 4096;

/// An open, checked directory.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A checked parent directory and the final name below it: how a key file is opened.
pub(crate) struct Parent {
    pub dir: Dir,
    pub name: OsString,
}

impl Dir {
    /// Opens the directory at `path` after walking it as given and checking every directory and
    /// link on the way ([`trusted_path::walk`]). With `create`, missing directories are made
    /// owner-only (0700) and each new entry is fsynced into its parent.
    pub(crate) fn open(path: &Path, create: bool, owner: Owner) -> Result<Dir, PathRefusal> {
        let walked = trusted_path::walk(path, create)?;
        walked.check_final_dir(owner)?;
        Dir::from_walked(walked)
    }

    /// Opens the writable store at `path` as [`Dir::open`] does for this uid, except where `path`
    /// is a directory that root or this uid owns, that others may write too, and whose mode lets
    /// this uid create entries: a volume's mount point (a Kubernetes `emptyDir`, root `0777`; a
    /// volume with an `fsGroup`, `root:<gid>` `2775`). There the store is this uid's own directory
    /// inside it, `wasm-node-cache-<uid>`, created `0700` and refused unless this uid made it
    /// ([`trusted_path::own_child`]). A directory holding `marker` is a store itself (one whose
    /// mode someone loosened), never a mount point: it is refused as it is.
    pub(crate) fn open_store(path: &Path, create: bool, marker: &str) -> Result<Dir, PathRefusal> {
        let walked = trusted_path::walk(path, create)?;
        let walked = match walked.check_final_dir(Owner::Me) {
            Ok(()) => walked,
            Err(refusal @ (PathRefusal::OwnedByOther { .. } | PathRefusal::WritableByOthers { .. })) => {
                let shared = Owner::MeOrRoot.allows(walked.stat.st_uid)
                    && walked.mode() & GROUP_OR_OTHER_WRITE != 0
                    && walked.grants_write()
                    && rfs::statat(&walked.fd, marker, AtFlags::SYMLINK_NOFOLLOW).is_err();
                if !shared {
                    return Err(refusal);
                }
                let own = match trusted_path::own_child(&walked, per_uid_name().as_ref(), create) {
                    Err(PathRefusal::Missing { path }) => {
                        return Err(others_store(&walked).unwrap_or(PathRefusal::Missing { path }));
                    }
                    other => other?,
                };
                own.check_final_dir(Owner::Me)?;
                own
            }
            Err(refusal) => return Err(refusal),
        };
        Dir::from_walked(walked)
    }

    fn from_walked(walked: trusted_path::Walked) -> Result<Dir, PathRefusal> {
        // The walk's descriptor may be `O_PATH`; listing and fsync need a real one.
        let fd = walked
            .open_dir()
            .map_err(|e| PathRefusal::io(&walked.path, "open", e))?;
        Ok(Dir { fd, path: walked.path })
    }

    /// Walks and checks the parent of the file at `path` as [`Dir::open`] does and returns it with
    /// the file's name: the file itself is then opened with [`Dir::open_checked`] and checked by
    /// the caller. A link as the final component is found, never followed.
    pub(crate) fn parent_of(path: &Path) -> Result<Parent, PathRefusal> {
        let (walked, name) = trusted_path::walk_parent(path)?;
        Ok(Parent {
            dir: Dir {
                fd: walked.fd,
                path: walked.path,
            },
            name,
        })
    }

    /// The directory's identity.
    pub(crate) fn id(&self) -> io::Result<FileId> {
        Ok(FileId::of(&rfs::fstat(&self.fd)?))
    }

    /// True when this directory is `other` or lies below it: each directory from here up to `/`,
    /// reached by `..` on descriptors, compared by identity. A bind-mount alias, a link or a
    /// path with `..` cannot hide that two directories are one.
    pub(crate) fn is_within(&self, other: FileId) -> io::Result<bool> {
        within(rfs::openat(&self.fd, c".", path_flags(), Mode::empty())?, other)
    }

    /// The path the directory was opened under, for messages only.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, for messages only.
    pub(crate) fn display_path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `name` with `flags` (and `mode` when creating), relative to this directory.
    pub(crate) fn open_file(&self, name: impl AsRef<OsStr>, flags: OFlags, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(&self.fd, name.as_ref(), flags, Mode::from_raw_mode(mode))?;
        Ok(File::from(fd))
    }

    /// An `O_PATH` descriptor of `name` and its `fstat`, for checking before anything is opened
    /// (no FIFO blocks, no device driver runs); a link is described, never followed.
    pub(crate) fn open_path(&self, name: impl AsRef<OsStr>) -> io::Result<(OwnedFd, Stat)> {
        trusted_path::open_path(self.fd.as_fd(), name.as_ref())
    }

    /// Reopens `name`, found and checked with [`Dir::open_path`], with `flags` (never `O_CREAT`):
    /// the same inode is reached whatever happened to the name meanwhile.
    pub(crate) fn reopen(
        &self,
        name: impl AsRef<OsStr>,
        path_fd: &OwnedFd,
        st: &Stat,
        flags: OFlags,
    ) -> io::Result<File> {
        trusted_path::reopen(path_fd, st, flags, Fallback::At(self.fd.as_fd(), name.as_ref()))
    }

    /// The one atomic write of a new file into this directory: `fill` gets a new file (mode
    /// `mode`, opened with `flags` plus `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing planted under
    /// the name is followed or shared) made under a fresh name from `temp_name`, and `place` puts
    /// it in place by that name (a rename, an exchange). On any failure the temporary name is
    /// removed. A temporary file removed by someone else before it was placed (a sweep of
    /// leftover temporary files under the store's exclusive lock, which runs once per lock) is
    /// made again, twice at most.
    pub(crate) fn write_new<T>(
        &self,
        temp_name: impl Fn() -> String,
        flags: OFlags,
        mode: u32,
        fill: impl Fn(&mut File) -> io::Result<()>,
        place: impl Fn(&str, File) -> io::Result<T>,
    ) -> io::Result<T> {
        let create = flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let temp = temp_name();
            let result = self
                .open_file(&temp, create, mode)
                .and_then(|mut file| fill(&mut file).map(|()| file))
                .and_then(|file| place(&temp, file));
            match result {
                Err(e) => {
                    let _ = self.unlink(&temp);
                    if e.kind() != io::ErrorKind::NotFound || attempts >= 3 {
                        return Err(e);
                    }
                }
                done => return done,
            }
        }
    }

    /// A new file that appears under `name` whole or not at all, and never under another name:
    /// filled in an `O_TMPFILE` file of this directory, then linked as `name` (`linkat` through
    /// `/proc/self/fd`, which never replaces what is there: `AlreadyExists` then). A process
    /// killed meanwhile leaves nothing behind. `Ok(false)` where the kernel, the file system or
    /// a missing `/proc` allows no such file: the caller writes it another way.
    pub(crate) fn link_new(
        &self,
        name: impl AsRef<OsStr>,
        mode: u32,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<bool> {
        let Some(mut file) = super::unnamed::open_unnamed(&self.fd, mode)? else {
            return Ok(false);
        };
        fill(&mut file)?;
        super::unnamed::link_unnamed(&file, &self.fd, name.as_ref())
    }

    /// `lstat` of `name`: a link is described, not followed.
    pub(crate) fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Stat> {
        Ok(rfs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Atomically replaces `to` with `from` (a link at `to` is replaced, not followed).
    pub(crate) fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rfs::renameat(&self.fd, from.as_ref(), &self.fd, to.as_ref())?)
    }

    /// Unlinks `name` (never truncates: whoever has it mapped keeps valid pages).
    pub(crate) fn unlink(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.fd, name.as_ref(), AtFlags::empty())?)
    }

    /// Removes the directory `name` if it is empty (`unlinkat(AT_REMOVEDIR)`).
    pub(crate) fn remove_dir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rfs::unlinkat(&self.fd, name.as_ref(), AtFlags::REMOVEDIR)?)
    }

    /// Makes the renames and unlinks done in this directory durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(rfs::fsync(&self.fd)?)
    }

    /// The names in this directory (without `.` and `..`).
    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for entry in rfs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(out)
    }
}

/// [`Dir::is_within`] for the directory at `path` (links followed): the nearest existing
/// directory of a store path not created yet, compared before anything is created in it.
pub(crate) fn path_is_within(path: &Path, other: FileId) -> io::Result<bool> {
    within(rfs::open(path, path_flags(), Mode::empty())?, other)
}

/// Whether the directory `start` is `other` or lies below it, going up by `..` on descriptors.
fn within(start: OwnedFd, other: FileId) -> io::Result<bool> {
    let mut cur = start;
    for _ in 0..MAX_DEPTH {
        let here = FileId::of(&rfs::fstat(&cur)?);
        if here == other {
            return Ok(true);
        }
        let up = rfs::openat(&cur, c"..", path_flags(), Mode::empty())?;
        if FileId::of(&rfs::fstat(&up)?) == here {
            return Ok(false);
        }
        cur = up;
    }
    Err(io::Error::other("more than 4096 directories above"))
}

/// Flags of a descriptor used only to go up the tree and `fstat`.
fn path_flags() -> OFlags {
    #[cfg(target_os = "linux")]
    let base = OFlags::PATH;
    #[cfg(not(target_os = "linux"))]
    let base = OFlags::RDONLY;
    base | OFlags::DIRECTORY | OFlags::CLOEXEC
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
