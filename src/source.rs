//! Source binaries: read one from the binary root and accept it only if its bytes hash to its name.

use std::fmt;
use std::io::Read;
use std::path::Path;

use rustix::fs::FileType;

use sha2::{Digest, Sha256};

use crate::fs::walk::{Fallback, open_path_following, reopen_read};
use crate::key::Hash32;

/// Why a whitelisted component was not loaded. Never fatal: the node starts without it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// No stored artifact and no source binary at `root/<hash>`.
    Missing,
    /// The source binary exists but could not be read.
    Unreadable(String),
    /// Something other than a regular file under the binary's name (a FIFO, device, directory).
    NotRegularFile,
    /// Larger than the 256 MiB a source binary may have.
    TooLarge {
        /// The file's length.
        len: u64,
    },
    /// The binary's SHA-256 is not its file name.
    HashMismatch {
        /// The SHA-256 the file's bytes have.
        actual: Hash32,
    },
    /// wasmtime refused to compile the binary. The text is wasmtime's own error with its
    /// causes: wasmtime gives no stable kinds to match on, so it stays words for people.
    CompileFailed(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Missing => f.write_str("missing: no source binary and no stored artifact"),
            SkipReason::Unreadable(e) => write!(f, "source binary unreadable: {e}"),
            SkipReason::HashMismatch { actual } => {
                write!(f, "hash mismatch: the file's SHA-256 is {}", hex::encode(actual))
            }
            SkipReason::NotRegularFile => f.write_str("source binary is not a regular file"),
            SkipReason::TooLarge { len } => {
                write!(
                    f,
                    "source binary of {len} bytes exceeds the {MAX_SOURCE_LEN}-byte limit"
                )
            }
            SkipReason::CompileFailed(e) => write!(f, "failed to compile: {e}"),
        }
    }
}

impl std::error::Error for SkipReason {}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash32 {
    Sha256::digest(bytes).into()
}

/// Largest source binary read: far above any real component (the largest known is under 1 MB),
/// and it keeps a runaway file from filling memory at start-up.
pub(crate) const MAX_SOURCE_LEN: u64 = 256 << 20;

/// Bytes a caller's reader gave for `hash`, checked as a source binary is: a reader that finds
/// nothing (`NotFound`) is [`SkipReason::Missing`], more than the cap is refused, and bytes whose
/// SHA-256 is not `hash` are [`SkipReason::HashMismatch`], naming the hash they have.
pub(crate) fn check_read(read: std::io::Result<Vec<u8>>, hash: &Hash32) -> Result<Vec<u8>, SkipReason> {
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SkipReason::Missing),
        Err(e) => return Err(SkipReason::Unreadable(e.to_string())),
    };
    if bytes.len() as u64 > MAX_SOURCE_LEN {
        return Err(SkipReason::TooLarge {
            len: bytes.len() as u64,
        });
    }
    let actual = sha256(&bytes);
    if actual != *hash {
        return Err(SkipReason::HashMismatch { actual });
    }
    Ok(bytes)
}

/// Reads `root/<hex(hash)>` and returns its bytes if and only if they hash to `hash`.
///
/// The file is found on an `O_PATH` descriptor and checked with `fstat` before it is opened, so a
/// FIFO, device or directory planted under a whitelisted name is skipped at once: nothing blocks
/// and no device driver runs. A link is followed (a binary root may be a mounted volume of links,
/// as a Kubernetes ConfigMap is): the bytes are trusted by their SHA-256, not by their path. The
/// checked inode is then reopened for reading, non-blocking.
pub fn read_verified(root: &Path, hash: &Hash32) -> Result<Vec<u8>, SkipReason> {
    let path = root.join(hex::encode(hash));
    let unreadable = |e: std::io::Error| SkipReason::Unreadable(format!("{}: {e}", path.display()));
    let (fd, st) = match open_path_following(&path) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SkipReason::Missing),
        Err(e) => return Err(unreadable(e)),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(SkipReason::NotRegularFile);
    }
    let len = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if len > MAX_SOURCE_LEN {
        return Err(SkipReason::TooLarge { len });
    }
    let file = reopen_read(&fd, &st, Fallback::Path(&path)).map_err(unreadable)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // One byte past the cap: a file that grew after the stat is caught, not read without bound.
    file.take(MAX_SOURCE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SOURCE_LEN {
        return Err(SkipReason::TooLarge {
            len: bytes.len() as u64,
        });
    }
    let actual = sha256(&bytes);
    if &actual != hash {
        return Err(SkipReason::HashMismatch { actual });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_matching_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = b"good bytes";
        let h = sha256(good);
        std::fs::write(dir.path().join(hex::encode(h)), good).expect("write");
        assert_eq!(read_verified(dir.path(), &h).as_deref(), Ok(&good[..]));

        let wrong = [0x11; 32];
        std::fs::write(dir.path().join(hex::encode(wrong)), good).expect("write");
        assert_eq!(
            read_verified(dir.path(), &wrong),
            Err(SkipReason::HashMismatch { actual: h })
        );
        assert_eq!(read_verified(dir.path(), &[0x22; 32]), Err(SkipReason::Missing));
    }

    #[test]
    fn a_fifo_or_directory_under_a_whitelisted_name_is_skipped_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = [0x33; 32];
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.path().join(hex::encode(fifo)),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .expect("mkfifo");
        assert_eq!(read_verified(dir.path(), &fifo), Err(SkipReason::NotRegularFile));
        let sub = [0x44; 32];
        std::fs::create_dir(dir.path().join(hex::encode(sub))).expect("mkdir");
        assert!(read_verified(dir.path(), &sub).is_err());
    }
}
