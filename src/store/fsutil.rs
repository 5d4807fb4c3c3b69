//! Small file-system helpers the store needs: no-follow opens, directory fsync, permission checks.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Makes `options` refuse to follow a symbolic link in the last path component, and never block
/// on a FIFO planted under an artifact's name.
pub fn no_follow(options: &mut OpenOptions) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    #[cfg(not(unix))]
    let _ = options;
}

/// Opens `path` for reading without following a final symbolic link.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    no_follow(&mut options);
    options.open(path)
}

/// True when `err` is what opening a symbolic link with `O_NOFOLLOW` returns.
pub fn is_symlink_refusal(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = err;
        false
    }
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `dir` and its missing parents; the directories this creates are owner-only (0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Why a store directory is not trusted: other users could plant artifacts in it.
pub fn untrusted_reason(dir: &Path) -> io::Result<Option<String>> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Ok(Some(format!("{} is not a directory", dir.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions, touches no memory we own and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            return Ok(Some(format!(
                "{} is owned by uid {}, not by this process's uid {euid}",
                dir.display(),
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Ok(Some(format!(
                "{} is writable by other users (mode {mode:03o}); run `chmod go-w {}`",
                dir.display(),
                dir.display()
            )));
        }
    }
    Ok(None)
}
