//! The secret key of the authenticated (MAC) mode: 32 bytes, in a file outside the store that only
//! its owner can read.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, bail};

use crate::store::{Dir, FILE_READ, Owner};

/// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding white space ignored).
///
/// The file's ancestors are checked as a store's are (owned by root or this process's uid, not
/// writable by group or others unless sticky). The file itself is opened without following a link
/// and without blocking on a FIFO, then checked on that descriptor: a regular file, owned by this
/// process's uid or root, with no permission bits for group or others. It is read from the same
/// descriptor, so what was checked is what is read.
pub fn load_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let what = || format!("MAC key file {}", path.display());
    let parent = Dir::parent_of(path).with_context(what)?;
    let file = parent
        .dir
        .open_file(&parent.name, FILE_READ, 0)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                anyhow::anyhow!("is a symbolic link; the key file is never reached through a link")
            } else {
                anyhow::Error::new(e)
            }
        })
        .with_context(what)?;
    let meta = file.metadata().with_context(what)?;
    if !meta.is_file() {
        bail!("{} is not a regular file", what());
    }
    if !Owner::MeOrRoot.allows(meta.uid()) {
        bail!(
            "{} is owned by uid {}, neither this process's uid {} nor root",
            what(),
            meta.uid(),
            crate::store::euid()
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible to other users (mode {mode:03o}); run `chmod 600` on it",
            what()
        );
    }
    let mut bytes = Vec::with_capacity(65);
    // A key is 32 or 64 bytes plus white space; reading a little more only to say it is too long.
    file.take(1024).read_to_end(&mut bytes).with_context(what)?;
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
        "{} must hold 32 raw bytes or 64 hex digits ({} bytes found)",
        what(),
        bytes.len()
    )
}
