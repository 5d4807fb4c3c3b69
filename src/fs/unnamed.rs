//! Reaching an open file again through `/proc/self/fd`, and files made without a name
//! (`O_TMPFILE`) that appear under one only when linked whole. One place for both, so that the
//! store's marker, the file written outside the store and every reopen agree on when `/proc` is
//! there and what to do when it is not.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::OnceLock;

#[cfg(target_os = "linux")]
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
#[cfg(target_os = "linux")]
use rustix::io::Errno;

/// Whether `/proc/self/fd` can reach open descriptors (Linux with procfs mounted); looked up once
/// per process.
pub(crate) fn proc_fd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cfg!(target_os = "linux") && Path::new("/proc/self/fd").is_dir())
}

/// `/proc/self/fd/N` for `fd`: a path the kernel resolves to exactly that open file's inode,
/// whatever its name has become.
pub(crate) fn proc_fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// A new file without a name in the directory `dir` (`O_TMPFILE`), for writing: nobody else can
/// have opened it, and a process killed while filling it leaves nothing behind. `None` where the
/// kernel or the file system has no such files.
pub(crate) fn open_unnamed(dir: &impl AsFd, mode: u32) -> io::Result<Option<File>> {
    #[cfg(target_os = "linux")]
    {
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        match rfs::openat(dir, c".", flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => Ok(Some(File::from(fd))),
            // No O_TMPFILE on this file system (EOPNOTSUPP), or a kernel older than 3.11, which
            // reads the flag as O_DIRECTORY (EISDIR) or rejects it (EINVAL).
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (dir, mode);
        Ok(None)
    }
}

/// Links the unnamed `file` as `name` in `dir`: through `/proc/self/fd`, or with `AT_EMPTY_PATH`
/// where `/proc` is missing. `linkat` never follows or replaces what `name` holds: a name taken
/// (by anyone) is `AlreadyExists`. `Ok(false)` when the file cannot be linked at all (no `/proc`,
/// and `AT_EMPTY_PATH` not permitted without `CAP_DAC_READ_SEARCH`).
pub(crate) fn link_unnamed(file: &File, dir: &impl AsFd, name: &OsStr) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        if proc_fd_available() {
            match rfs::linkat(
                rfs::CWD,
                proc_fd_path(file).as_str(),
                dir,
                name,
                AtFlags::SYMLINK_FOLLOW,
            ) {
                // `/proc` gone from under this process (a chroot, another mount namespace).
                Err(Errno::NOENT) => {}
                other => return other.map(|()| true).map_err(io::Error::from),
            }
        }
        match rfs::linkat(file, c"", dir, name, AtFlags::EMPTY_PATH) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT | Errno::PERM) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, dir, name);
        Ok(false)
    }
}
