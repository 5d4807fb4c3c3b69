//! A directory held open by descriptor. Its path is resolved and checked once, at open; every later
//! open, create, rename, unlink, fsync and lock is relative to the descriptor (the `*at` family), so
//! renaming the directory or any parent afterwards cannot swap another directory in.
//!
//! The checks follow OpenSSH's `StrictModes`: every ancestor is owned by root or by this process's
//! effective uid and is not writable by group or others unless it is sticky (as `/tmp` is), and the
//! directory itself is owned as the caller requires and writable by nobody else.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};

/// Who may own a checked directory or file, besides nobody else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This process's effective uid only: a store the node writes.
    Me,
    /// This process's effective uid or root: keys and read-only stores an image was baked with.
    MeOrRoot,
}

impl Owner {
    pub(crate) fn allows(self, uid: u32) -> bool {
        uid == euid() || (self == Owner::MeOrRoot && uid == 0)
    }
}

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Write permission for group or others.
pub(crate) const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Flags of a descriptor used only to walk and `fstat` a path: on Linux `O_PATH` needs no read
/// permission on the directories walked, as path resolution itself does not.
fn walk_flags() -> OFlags {
    #[cfg(target_os = "linux")]
    let base = OFlags::PATH;
    #[cfg(not(target_os = "linux"))]
    let base = OFlags::RDONLY;
    base | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Flags for opening a file inside a checked directory: never follow a link, never block on a FIFO.
pub(crate) const FILE_READ: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

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
    /// Opens the directory at `path` after checking it and its ancestors. With `create`, missing
    /// directories are made owner-only (0700) and each new entry is fsynced into its parent.
    pub(crate) fn open(path: &Path, create: bool, owner: Owner) -> anyhow::Result<Dir> {
        let (real, missing) = resolve(path)?;
        if !missing.is_empty() && !create {
            bail!("{}: no such directory", path.display());
        }
        let mut walked = walk(&real)?;
        for name in &missing {
            walked = walked.make_child(name)?;
        }
        walked.check_last(owner)?;
        // The walk's descriptor may be `O_PATH`; listing and fsync need a real one.
        let fd = rfs::openat(
            &walked.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", walked.path.display()))?;
        Ok(Dir { fd, path: walked.path })
    }

    /// Checks the ancestors of the file at `path` and opens its parent: the file itself is then
    /// opened with [`Dir::open_file`] and checked by the caller on its descriptor.
    pub(crate) fn parent_of(path: &Path) -> anyhow::Result<Parent> {
        // Only the parent is resolved: a link in the final component is refused by the open.
        let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
            bail!("{}: not a file path", path.display());
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let (real, missing) = resolve(parent)?;
        if !missing.is_empty() {
            bail!("{}: no such directory", parent.display());
        }
        let walked = walk(&real)?;
        walked.check_ancestor()?;
        Ok(Parent {
            dir: Dir {
                fd: walked.fd,
                path: walked.path,
            },
            name: name.to_os_string(),
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

/// Splits `path` into the part that exists, with links resolved once, and the missing names
/// below it. A link swapped in later is caught by the walk, which never follows one.
fn resolve(path: &Path) -> anyhow::Result<(PathBuf, Vec<OsString>)> {
    let abs = std::path::absolute(path).with_context(|| format!("{}: cannot make absolute", path.display()))?;
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => {
                missing.reverse();
                return Ok((real, missing));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    bail!("{}: {e}", abs.display());
                };
                missing.push(name.to_os_string());
                existing = parent;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot resolve {}", existing.display())),
        }
    }
}

struct Walked {
    fd: OwnedFd,
    path: PathBuf,
    stat: Stat,
}

/// Walks from `/` to `real` one `openat` at a time, never following a link, checking each
/// directory on its descriptor. The last one is returned unchecked, for [`Walked::check_last`].
fn walk(real: &Path) -> anyhow::Result<Walked> {
    let root = rfs::open("/", walk_flags(), Mode::empty()).context("cannot open /")?;
    let mut walked = Walked {
        stat: rfs::fstat(&root).context("cannot stat /")?,
        fd: root,
        path: PathBuf::from("/"),
    };
    for component in real.components() {
        let Component::Normal(name) = component else { continue };
        walked.check_ancestor()?;
        let fd = rfs::openat(&walked.fd, name, walk_flags(), Mode::empty()).map_err(|e| {
            let path = walked.path.join(name);
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                anyhow::anyhow!(
                    "{}: is not a directory, or was replaced by a link while being opened",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot open {}: {}", path.display(), io::Error::from(e))
            }
        })?;
        walked = Walked {
            stat: rfs::fstat(&fd).with_context(|| format!("cannot stat {}", walked.path.join(name).display()))?,
            path: walked.path.join(name),
            fd,
        };
    }
    Ok(walked)
}

impl Walked {
    fn mode(&self) -> u32 {
        self.stat.st_mode & 0o7777
    }

    fn check_ancestor(&self) -> anyhow::Result<()> {
        let (uid, mode) = (self.stat.st_uid, self.mode());
        if !Owner::MeOrRoot.allows(uid) {
            bail!(
                "{} is owned by uid {uid}, neither root nor this process's uid {}: that user could swap the directories below it",
                self.path.display(),
                euid()
            );
        }
        if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
            bail!(
                "{} is writable by other users (mode {mode:04o}) and not sticky: they could swap the directories below it; run `chmod go-w {}`",
                self.path.display(),
                self.path.display()
            );
        }
        Ok(())
    }

    fn check_last(&self, owner: Owner) -> anyhow::Result<()> {
        let (uid, mode) = (self.stat.st_uid, self.mode());
        if FileType::from_raw_mode(self.stat.st_mode) != FileType::Directory {
            bail!("{} is not a directory", self.path.display());
        }
        if !owner.allows(uid) {
            bail!(
                "{} is owned by uid {uid}, not by this process's uid {}{}",
                self.path.display(),
                euid(),
                if owner == Owner::MeOrRoot { " or root" } else { "" }
            );
        }
        if mode & GROUP_OR_OTHER_WRITE != 0 {
            bail!(
                "{} is writable by other users (mode {mode:03o}); run `chmod go-w {}`",
                self.path.display(),
                self.path.display()
            );
        }
        Ok(())
    }

    /// Creates `name` (0700) below this checked directory, fsyncs this directory so the new entry
    /// survives a crash, and steps into it.
    fn make_child(self, name: &OsStr) -> anyhow::Result<Walked> {
        self.check_ancestor()?;
        let path = self.path.join(name);
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let parent = rfs::openat(
                    &self.fd,
                    c".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .and_then(|fd| rfs::fsync(&fd));
                parent.with_context(|| {
                    format!("cannot fsync {} after creating {}", self.path.display(), path.display())
                })?;
            }
            // Made by a concurrent start-up: it is checked below like any other.
            Err(e) if e == rustix::io::Errno::EXIST => {}
            Err(e) => return Err(io::Error::from(e)).with_context(|| format!("cannot create {}", path.display())),
        }
        let fd = rfs::openat(&self.fd, name, walk_flags(), Mode::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Walked {
            stat: rfs::fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?,
            fd,
            path,
        })
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
