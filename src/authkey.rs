//! The secret key of the authenticated (MAC) mode: 32 bytes, in a file outside the store that only
//! its owner can read.

use std::path::Path;

use anyhow::{Context, bail};

/// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding white space ignored). Refuses a
/// file that group or others can read or write, or that is not a regular file.
pub fn load_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read MAC key file {}", path.display()))?;
    if !meta.is_file() {
        bail!("MAC key file {} is not a regular file", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "MAC key file {} is accessible to other users (mode {mode:03o}); run `chmod 600` on it",
                path.display()
            );
        }
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read MAC key file {}", path.display()))?;
    if bytes.len() == 32 {
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    let mut key = [0u8; 32];
    if text.len() == 64 && hex::decode_to_slice(text, &mut key).is_ok() {
        return Ok(key);
    }
    bail!(
        "MAC key file {} must hold 32 raw bytes or 64 hex digits ({} bytes found)",
        path.display(),
        bytes.len()
    )
}
