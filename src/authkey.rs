//! The secret key of the authenticated (MAC) mode: 32 bytes, in a file outside the store that only
//! its owner can read.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use rustix::fs::{FileType, OFlags};

use crate::store::{Dir, Owner};

/// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding white space ignored).
///
/// The path is walked as given and every directory and link on the way is checked as a store's
/// are (as the store path is walked). The file itself is found without following a link and checked on
/// an `O_PATH` descriptor before anything is opened: a regular file, owned by this process's uid
/// or root, with no permission bits for group or others. Only then is that inode opened and read.
/// A key whose 32 bytes are all equal (all zeros, a file of `0xff`) is refused as not random.
pub fn load_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let what = || format!("MAC key file {}", path.display());
    let parent = Dir::parent_of(path).with_context(what)?;
    let (fd, st) = parent.dir.open_path(&parent.name).with_context(what)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => bail!(
            "{} is a symbolic link; the key file is never reached through a link",
            what()
        ),
        _ => bail!("{} is not a regular file", what()),
    }
    if !Owner::MeOrRoot.allows(st.st_uid) {
        bail!(
            "{} is owned by uid {}, neither this process's uid {} nor root",
            what(),
            st.st_uid,
            crate::store::euid()
        );
    }
    let mode = st.st_mode & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} is accessible to other users (mode {mode:03o}); run `chmod 600` on it",
            what()
        );
    }
    let file = parent
        .dir
        .reopen(
            &parent.name,
            &fd,
            &st,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        )
        .with_context(what)?;
    let mut bytes = Vec::with_capacity(65);
    // A key is 32 or 64 bytes plus white space; reading a little more only to say it is too long.
    file.take(1024).read_to_end(&mut bytes).with_context(what)?;
    let key = parse_key(&bytes).with_context(what)?;
    if key.iter().all(|b| *b == key[0]) {
        bail!(
            "{} is not random: all 32 bytes are 0x{:02x}; write 32 bytes from /dev/urandom into it",
            what(),
            key[0]
        );
    }
    Ok(key)
}

fn parse_key(bytes: &[u8]) -> anyhow::Result<[u8; 32]> {
    if bytes.len() == 32 {
        let mut key = [0u8; 32];
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
    let mut key = [0u8; 32];
    if text.len() == 64 && hex::decode_to_slice(text, &mut key).is_ok() {
        return Ok(key);
    }
    bail!("must hold 32 raw bytes or 64 hex digits ({} bytes found)", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_key(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("k");
        std::fs::write(&path, bytes).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    #[test]
    fn keys_of_all_equal_bytes_are_refused_as_not_random() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bytes in [vec![0u8; 32], vec![0xff; 32], "00".repeat(32).into_bytes()] {
            let err = format!("{:#}", load_key(&write_key(dir.path(), &bytes)).unwrap_err());
            assert!(err.contains("not random"), "{err}");
        }
        let good: Vec<u8> = (0..32).collect();
        assert_eq!(load_key(&write_key(dir.path(), &good)).expect("loads").to_vec(), good);
        let hex_key = hex::encode(&good);
        assert_eq!(
            load_key(&write_key(dir.path(), format!("{hex_key}\n").as_bytes()))
                .expect("loads")
                .to_vec(),
            good
        );
    }
}
