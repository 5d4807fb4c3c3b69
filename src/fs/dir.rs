//! A directory held open by descriptor. Its path is walked and checked once, at open
//! ([`crate::trusted_path`]); every later open, create, rename, unlink, fsync and lock is relative
//! to the descriptor (the `*at` family), so renaming the directory or any parent afterwards cannot
//! swap another directory in.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Stat};

use crate::path_refusal::PathRefusal;
use crate::trusted_path::{self, Fallback};
pub(crate) use crate::trusted_path::{GROUP_OR_OTHER_WRITE, Owner, euid};

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
        // The walk's descriptor may be `O_PATH`; listing and fsync need a real one.
        let fd = rfs::openat(
            &walked.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
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

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
