//! Resolving a path the way the kernel would, but checking every step: systemd's `chase()` with
//! `CHASE_SAFE`, OpenSSH's `StrictModes`, and the kernel's `fs.protected_symlinks` rule.
//!
//! The path is taken as given (made absolute against the working directory, never canonicalized)
//! and walked from `/` one component at a time with `openat(O_PATH | O_NOFOLLOW)` and `fstat`:
//! - every directory passed through must be owned by root or this process's effective uid and not
//!   be writable by group or others unless it is sticky (as `/tmp` is): nobody else can then
//!   rename or replace what lies below it;
//! - every symbolic link met is checked on its own descriptor before it is followed: owned by root
//!   or this process's uid, and in a sticky directory only by this uid or the directory's owner
//!   (whoever else can create entries there could plant it). Its target is then read from that
//!   descriptor and spliced into the components still to walk (an absolute target restarts at
//!   `/`), at most [`MAX_LINKS`] times;
//! - `..` is a step like any other: `openat(dir, "..")`, checked as any directory is, never
//!   resolved lexically, so `a/link/..` is the parent of the link's target, as for the kernel.
//!
//! Files inside a trusted directory are opened in two steps ([`open_path`], then [`reopen`]): an
//! `O_PATH` descriptor, which opens nothing (no FIFO blocks, no device driver runs), is checked
//! with `fstat` first, and only then reopened for reading through `/proc/self/fd`, which reaches
//! exactly that inode.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::refusal::PathRefusal;
use super::{GROUP_OR_OTHER_WRITE, MAX_LINKS, Owner, STICKY, euid};
use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Flags of a descriptor used only to walk and `fstat`: on Linux `O_PATH` opens nothing and
/// needs no read permission, as path resolution itself does not.
fn path_flags() -> OFlags {
    #[cfg(target_os = "linux")]
    let base = OFlags::PATH;
    #[cfg(not(target_os = "linux"))]
    let base = OFlags::RDONLY | OFlags::NONBLOCK;
    base | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A directory reached by a checked walk, or the final non-directory it ended on.
pub(crate) struct Walked {
    /// An `O_PATH` descriptor (on Linux).
    pub fd: OwnedFd,
    /// The path as resolved (links replaced by their targets), for messages.
    pub path: PathBuf,
    /// `fstat` of `fd`.
    pub stat: Stat,
}

impl Walked {
    fn root() -> Result<Walked, PathRefusal> {
        let fd = rfs::open("/", path_flags() | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| PathRefusal::io("/", "open", e))?;
        Ok(Walked {
            stat: rfs::fstat(&fd).map_err(|e| PathRefusal::io("/", "stat", e))?,
            fd,
            path: PathBuf::from("/"),
        })
    }

    /// Permission bits.
    pub fn mode(&self) -> u32 {
        self.stat.st_mode & 0o7777
    }

    fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.stat.st_mode) == FileType::Directory
    }

    /// A directory that may be passed through: owned by root or us, and nobody else can rename
    /// or replace its entries.
    pub fn check_passable(&self) -> Result<(), PathRefusal> {
        let (uid, mode) = (self.stat.st_uid, self.mode());
        let path = || self.path.clone();
        if !Owner::MeOrRoot.allows(uid) {
            return Err(PathRefusal::AncestorOwnedByOther { path: path(), uid });
        }
        if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return Err(PathRefusal::AncestorWritableByOthers {
                path: path(),
                mode,
                uid,
            });
        }
        Ok(())
    }

    /// The final directory of a walk: owned as `owner` requires and writable by nobody else.
    pub fn check_final_dir(&self, owner: Owner) -> Result<(), PathRefusal> {
        let (uid, mode) = (self.stat.st_uid, self.mode());
        let path = || self.path.clone();
        if !self.is_dir() {
            return Err(PathRefusal::NotADirectory { path: path() });
        }
        if !owner.allows(uid) {
            return Err(PathRefusal::OwnedByOther {
                path: path(),
                uid,
                root_allowed: owner == Owner::MeOrRoot,
            });
        }
        if mode & GROUP_OR_OTHER_WRITE != 0 {
            return Err(PathRefusal::WritableByOthers { path: path(), mode });
        }
        Ok(())
    }

    /// A link found in this (checked) directory may be followed: owned by root or us, and in a
    /// sticky directory by us or the directory's owner (the kernel's `protected_symlinks` rule).
    fn check_link(&self, link: &Path, st: &Stat) -> Result<(), PathRefusal> {
        let uid = st.st_uid;
        let sticky = self.mode() & STICKY != 0;
        // In a sticky directory the directory's owner is root or us (it passed its own check).
        let allowed = Owner::MeOrRoot.allows(uid) && (!sticky || uid == euid() || uid == self.stat.st_uid);
        if !allowed {
            return Err(PathRefusal::LinkOwnedByOther {
                path: link.to_path_buf(),
                uid,
                sticky,
            });
        }
        Ok(())
    }

    /// Opens `name` below this directory without following a link.
    fn open_child(&self, name: &OsStr) -> Result<(OwnedFd, Stat), Errno> {
        let fd = rfs::openat(&self.fd, name, path_flags(), Mode::empty())?;
        let st = rfs::fstat(&fd)?;
        Ok((fd, st))
    }

    /// This directory opened for reading: the walk's descriptor may be `O_PATH`, on which
    /// listing and fsync fail.
    pub fn open_dir(&self) -> io::Result<OwnedFd> {
        Ok(rfs::openat(
            &self.fd,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Creates `name` (0700) below this checked directory and fsyncs this directory so the new
    /// entry survives a crash. A directory made meanwhile by a concurrent start-up is fine: the
    /// walk checks it like any other.
    fn make_child(&self, name: &OsStr) -> Result<(), PathRefusal> {
        let path = self.path.join(name);
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let synced = self.open_dir().and_then(|fd| Ok(rfs::fsync(&fd)?));
                // The new entry is `path`; what could not be synced is its parent.
                synced.map_err(|e| PathRefusal::io(&self.path, "fsync", e))
            }
            Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(PathRefusal::io(path, "create", e)),
        }
    }
}

/// The directory `name` directly below `parent`, a directory other users can write (a volume's
/// mount point): found without following a link, created `0700` when missing and `create`, and
/// refused unless it is a directory this uid owns. Nobody else can then write into it, and the
/// caller holds it by descriptor from here on, so renaming or replacing it later redirects
/// nothing; what another user planted under its name first is refused, never used.
pub(crate) fn own_child(parent: &Walked, name: &OsStr, create: bool) -> Result<Walked, PathRefusal> {
    let path = parent.path.join(name);
    let (fd, st) = match parent.open_child(name) {
        Ok(found) => found,
        Err(Errno::NOENT) if create => {
            parent.make_child(name)?;
            parent.open_child(name).map_err(|e| PathRefusal::io(&path, "open", e))?
        }
        Err(Errno::NOENT) => return Err(PathRefusal::Missing { path }),
        Err(Errno::LOOP) => {
            let st = rfs::statat(&parent.fd, name, rfs::AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| PathRefusal::io(&path, "stat", e))?;
            return Err(PathRefusal::NotOwnDirectory {
                path,
                uid: st.st_uid,
                kind: "a symbolic link",
            });
        }
        Err(e) => return Err(PathRefusal::io(&path, "open", e)),
    };
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::RegularFile => "a file",
        _ => "a special file",
    };
    if kind != "a directory" || st.st_uid != euid() {
        return Err(PathRefusal::NotOwnDirectory {
            path,
            uid: st.st_uid,
            kind,
        });
    }
    Ok(Walked { fd, path, stat: st })
}

impl Walked {
    /// True when this directory's mode lets this process create entries in it (as owner, as a
    /// member of its group, or as anyone), by its bits alone: root's privilege to write anywhere
    /// does not count, so root never makes a directory of its own where the bits do not invite it.
    pub fn grants_write(&self) -> bool {
        let mode = self.mode();
        let (uid, gid) = (self.stat.st_uid, self.stat.st_gid);
        if uid == euid() {
            return mode & 0o200 != 0;
        }
        if mode & 0o002 != 0 {
            return true;
        }
        let in_group = rustix::process::getegid().as_raw() == gid
            || rustix::process::getgroups().is_ok_and(|g| g.iter().any(|g| g.as_raw() == gid));
        in_group && mode & 0o020 != 0
    }
}

/// Walks `path` as given, checking every directory passed through and every link followed (see
/// the module's documentation). The final component is followed if it is a link and returned
/// unchecked, for the caller's own check ([`Walked::check_final_dir`]). With `create`, missing
/// directories are made `0700`.
pub(crate) fn walk(path: &Path, create: bool) -> Result<Walked, PathRefusal> {
    walk_components(path, create)
}

/// Walks the parent of `path` as [`walk`] does, checks it as a directory that may be passed
/// through, and returns it with the final name, which is not looked at: the caller opens it
/// relative to the parent ([`open_path`]) and checks what it finds.
pub(crate) fn walk_parent(path: &Path) -> Result<(Walked, OsString), PathRefusal> {
    let (walked, name) = walk_to_parent(path)?;
    walked.check_passable()?;
    Ok((walked, name))
}

/// [`walk_parent`] without the parent's own check: every directory above it and every link on
/// the way is checked, but the parent may be anyone's, or writable by others (a directory shared
/// with another user, written only through names nobody else can have made).
pub(crate) fn walk_to_parent(path: &Path) -> Result<(Walked, OsString), PathRefusal> {
    let Some(name) = path.file_name() else {
        return Err(PathRefusal::NotAFilePath {
            path: path.to_path_buf(),
        });
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let walked = walk_components(parent, false)?;
    if !walked.is_dir() {
        return Err(PathRefusal::NotADirectory { path: walked.path });
    }
    Ok((walked, name.to_os_string()))
}

fn walk_components(path: &Path, create: bool) -> Result<Walked, PathRefusal> {
    // `absolute` only prepends the working directory; `..` and links stay for the walk.
    let abs = std::path::absolute(path).map_err(|e| PathRefusal::io(path, "make absolute", e))?;
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_components(&mut todo, &abs);
    let mut cur = Walked::root()?;
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if !cur.is_dir() {
            return Err(PathRefusal::NotADirectory { path: cur.path });
        }
        cur.check_passable()?;
        if name == ".." {
            let fd = rfs::openat(&cur.fd, c"..", path_flags() | OFlags::DIRECTORY, Mode::empty())
                .map_err(|e| PathRefusal::io(cur.path.join(".."), "open", e))?;
            let mut up = cur.path.clone();
            up.pop();
            cur = Walked {
                stat: rfs::fstat(&fd).map_err(|e| PathRefusal::io(&up, "stat", e))?,
                fd,
                path: up,
            };
            continue;
        }
        let child = cur.path.join(&name);
        let (fd, st) = match cur.open_child(&name) {
            Ok(found) => found,
            Err(Errno::NOENT) if create => {
                cur.make_child(&name)?;
                cur.open_child(&name).map_err(|e| PathRefusal::io(&child, "open", e))?
            }
            Err(Errno::NOENT) => return Err(PathRefusal::Missing { path: child }),
            // Non-Linux only (no O_PATH): a link refuses the open; describe it without following.
            Err(Errno::LOOP) => {
                let st = rfs::statat(&cur.fd, &name, rfs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| PathRefusal::io(&child, "stat", e))?;
                let fd = rfs::openat(&cur.fd, c".", path_flags() | OFlags::DIRECTORY, Mode::empty())
                    .map_err(|e| PathRefusal::io(&cur.path, "open", e))?;
                (fd, st)
            }
            Err(e) => return Err(PathRefusal::io(&child, "open", e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            cur.check_link(&child, &st)?;
            links += 1;
            if links > MAX_LINKS {
                return Err(PathRefusal::TooManyLinks {
                    path: path.to_path_buf(),
                });
            }
            let target = read_link(&cur, &fd, &name).map_err(|e| PathRefusal::io(&child, "read the link", e))?;
            let target = Path::new(OsStr::from_bytes(&target));
            if target.as_os_str().is_empty() {
                return Err(PathRefusal::EmptyLink { path: child });
            }
            let mut spliced = VecDeque::new();
            push_components(&mut spliced, target);
            spliced.extend(todo);
            todo = spliced;
            if target.is_absolute() {
                cur = Walked::root()?;
            }
            continue;
        }
        cur = Walked {
            fd,
            path: child,
            stat: st,
        };
    }
    Ok(cur)
}

/// Appends `path`'s components to `todo`: `.` and the root are dropped (the walk starts at `/`
/// for an absolute path), `..` is kept for the walk to take.
fn push_components(todo: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components() {
        match c {
            Component::Normal(n) => todo.push_back(n.to_os_string()),
            Component::ParentDir => todo.push_back(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// The target of the link `fd` (found as `name` in `dir`), read from the link's own descriptor
/// where `O_PATH` allows it, so the link checked is the link read.
fn read_link(dir: &Walked, fd: &OwnedFd, name: &OsStr) -> io::Result<Vec<u8>> {
    #[cfg(target_os = "linux")]
    {
        let _ = (dir, name);
        Ok(rfs::readlinkat(fd, c"", Vec::new())?.into_bytes())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        Ok(rfs::readlinkat(&dir.fd, name, Vec::new())?.into_bytes())
    }
}

/// Opens `name` in `dir` for inspection only (`O_PATH`, never following a link, never blocking,
/// no side effect even on a device or FIFO) and `fstat`s it. A link is returned as a link.
pub(crate) fn open_path(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(OwnedFd, Stat)> {
    let fd = rfs::openat(dir, name, path_flags(), Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    Ok((fd, st))
}

/// Like [`open_path`] for a path, following links: for files whose integrity is checked by
/// content (sources, by SHA-256) or that deployments commonly link (a whitelist mounted from a
/// Kubernetes ConfigMap), where only the open itself must be harmless.
pub(crate) fn open_path_following(path: &Path) -> io::Result<(OwnedFd, Stat)> {
    let fd = rfs::open(path, path_flags().difference(OFlags::NOFOLLOW), Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    Ok((fd, st))
}

/// Flags of a checked file reopened for reading.
const READ: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC);

/// Reopens the inode behind `path_fd` (from [`open_path`], already checked) for reading.
pub(crate) fn reopen_read(path_fd: &OwnedFd, st: &Stat, fallback: Fallback<'_>) -> io::Result<File> {
    reopen(path_fd, st, READ, fallback)
}

/// How to reach a file again where `/proc` is not mounted: by name in a directory, or by path.
pub(crate) enum Fallback<'a> {
    /// `openat(dir, name, O_NOFOLLOW)`.
    At(BorrowedFd<'a>, &'a OsStr),
    /// `open(path)`, following links as [`open_path_following`] did.
    Path(&'a Path),
}

/// Reopens the inode behind `path_fd` with `flags` (no `O_CREAT`). Through `/proc/self/fd` the
/// kernel reaches exactly that inode; without `/proc`, the file is opened again by name without
/// following a link or blocking, and must be the same inode (device and inode numbers) as checked.
pub(crate) fn reopen(path_fd: &OwnedFd, st: &Stat, flags: OFlags, fallback: Fallback<'_>) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        match rfs::open(super::unnamed::proc_fd_path(path_fd).as_str(), flags, Mode::empty()) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::NOENT) if !super::unnamed::proc_fd_available() => {}
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path_fd;
    let fd = match fallback {
        Fallback::At(dir, name) => rfs::openat(dir, name, flags | OFlags::NOFOLLOW | OFlags::NONBLOCK, Mode::empty())?,
        Fallback::Path(path) => rfs::open(path, flags | OFlags::NONBLOCK, Mode::empty())?,
    };
    let now = rfs::fstat(&fd)?;
    if now.st_dev != st.st_dev || now.st_ino != st.st_ino {
        return Err(io::Error::other("replaced while being opened"));
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dot_dot_is_walked_not_lexical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b/c");
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        symlink(&b, a.join("link")).expect("symlink");
        // Lexically a/link/.. is a; through the link it is b.
        let w = walk(&a.join("link/.."), false).expect("walk");
        let real_b = std::fs::canonicalize(dir.path().join("b")).expect("canonicalize");
        assert_eq!(w.path, real_b);
        let st = std::fs::metadata(&real_b).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(w.stat.st_ino, st.ino());
    }

    #[test]
    fn link_loops_end_with_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        symlink("loop2", dir.path().join("loop1")).expect("symlink");
        symlink("loop1", dir.path().join("loop2")).expect("symlink");
        let err = walk(&dir.path().join("loop1/x"), false).err().expect("refused");
        assert!(
            matches!(&err, PathRefusal::TooManyLinks { path } if path.ends_with("loop1/x")),
            "{err:?}"
        );
        assert!(err.to_string().contains("loop1"), "{err}");
    }

    #[test]
    fn relative_links_and_missing_directories_are_created_below_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("real")).expect("mkdir");
        symlink("real", dir.path().join("rel")).expect("symlink");
        let w = walk(&dir.path().join("rel/new/deeper"), true).expect("walk");
        assert!(w.path.ends_with("real/new/deeper"), "{}", w.path.display());
        assert!(dir.path().join("real/new/deeper").is_dir());
        assert!(walk(&dir.path().join("rel/absent"), false).is_err());
    }
}
