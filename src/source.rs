//! Source binaries: read one from the binary root and accept it only if its bytes hash to its name.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::key::Hash32;

/// Why a whitelisted component was not loaded. Never fatal: the node starts without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No stored artifact and no source binary at `root/<hash>`.
    Missing,
    /// The source binary exists but could not be read.
    Unreadable(String),
    /// The binary's SHA-256 is not its file name.
    HashMismatch { actual: Hash32 },
    /// A file named by a hash that is not in the whitelist (reported, never loaded).
    NotWhitelisted,
    /// wasmtime refused to compile the binary.
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
            SkipReason::NotWhitelisted => f.write_str("not whitelisted"),
            SkipReason::CompileFailed(e) => write!(f, "failed to compile: {e}"),
        }
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash32 {
    Sha256::digest(bytes).into()
}

/// Reads `root/<hex(hash)>` and returns its bytes if and only if they hash to `hash`.
pub fn read_verified(root: &Path, hash: &Hash32) -> Result<Vec<u8>, SkipReason> {
    let path = root.join(hex::encode(hash));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(SkipReason::Missing),
        Err(e) => return Err(SkipReason::Unreadable(format!("{}: {e}", path.display()))),
    };
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
}
