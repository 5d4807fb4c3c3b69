//! Finishing a bake: the store made what a container image ships, read-only and readable by every
//! uid, with no lock file, everything fsynced. A node of any uid then trusts it as a read-only
//! store (owned by root or by its own uid, writable by nobody).

use std::io;

use rustix::fs::{FileType, Mode, OFlags};

use super::{ARTIFACT_MODE, Exclusive, LOCK_NAME, TEMP_PREFIX, marker};
use crate::escape::escape_control;
use crate::key::ArtifactKey;

/// Mode of a finished bake's directory: readable and searchable by every uid, writable by none.
const BAKE_DIR_MODE: u32 = 0o555;

/// What finishing a bake did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FinishedBake {
    /// Artifacts made `0444` and fsynced.
    pub artifacts: usize,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
}

impl Exclusive<'_> {
    /// Makes the locked store a finished bake: leftover temporary files removed, every artifact
    /// and the marker `0444` and fsynced, the lock file unlinked (a read-only store is never
    /// locked), the directory `0555` and fsynced. Fails, naming the file, at anything else in the
    /// directory (a foreign file, a link or a directory under an artifact's name): an image must
    /// not ship what the node would refuse.
    pub fn finish_bake(self) -> io::Result<FinishedBake> {
        let dir = &self.store.dir;
        let mut done = FinishedBake {
            temp_files_removed: self.remove_temp_files()?.removed,
            ..FinishedBake::default()
        };
        for name in dir.names()? {
            let text = name.to_string_lossy();
            if text == LOCK_NAME || text.starts_with(TEMP_PREFIX) {
                continue;
            }
            let is_marker = text == marker::MARKER_NAME;
            if !is_marker && ArtifactKey::from_file_name(&text).is_none() {
                return Err(io::Error::other(format!(
                    "{}: not a file of a bake; remove it and finish again",
                    escape_control(&dir.display_path(&name).to_string_lossy())
                )));
            }
            let (fd, st) = dir.open_path(&name)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(io::Error::other(format!(
                    "{}: not a regular file; remove it and finish again",
                    escape_control(&dir.display_path(&name).to_string_lossy())
                )));
            }
            let file = dir.reopen(&name, &fd, &st, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC)?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(ARTIFACT_MODE))?;
            file.sync_all()?;
            if !is_marker {
                done.artifacts += 1;
            }
        }
        // Held until here; a read-only store is never locked, and an image carries no lock file.
        match dir.unlink(LOCK_NAME) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        rustix::fs::fchmod(&**dir, Mode::from_raw_mode(BAKE_DIR_MODE))?;
        dir.sync()?;
        Ok(done)
    }
}
