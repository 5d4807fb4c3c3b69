//! Atomic publication of one artifact: temp file in the same directory, write, fsync, rename,
//! fsync the directory. A reader sees the old file, the new file, or nothing; never a mix.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{TEMP_PREFIX, fsutil};

/// A write failure to inject, standing in for conditions a test cannot always create (running as
/// root defeats permission bits; mounting a full tmpfs needs privileges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteFault {
    /// Normal operation.
    #[default]
    None,
    /// Fail as a full disk does (ENOSPC) after writing the first bytes of the temp file.
    DiskFull,
    /// Fail as a read-only file system does (EROFS) when creating the temp file.
    ReadOnly,
}

pub(super) fn publish(dir: &Path, final_name: &str, parts: &[&[u8]], fault: &WriteFault) -> io::Result<PathBuf> {
    if *fault == WriteFault::ReadOnly {
        return Err(io::Error::from_raw_os_error(libc::EROFS));
    }
    // tempfile creates the file with O_EXCL and mode 0600 under a random name: never an existing
    // file, never a link.
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".part")
        .tempfile_in(dir)?;
    for part in parts {
        if *fault == WriteFault::DiskFull {
            tmp.write_all(&part[..part.len().min(16)])?;
            // Dropping `tmp` unlinks the partial file, as after a real ENOSPC.
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        tmp.write_all(part)?;
    }
    tmp.as_file().sync_all()?;
    let final_path = dir.join(final_name);
    // rename(2) replaces the name atomically; a link at the final name is replaced, not followed.
    tmp.persist(&final_path).map_err(|e| e.error)?;
    fsutil::sync_dir(dir)?;
    Ok(final_path)
}
