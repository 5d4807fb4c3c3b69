//! The secret key of the authenticated (MAC) mode: 32 bytes, in a file outside the store that only
//! its owner can read.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use crate::fs::Owner;
use crate::fs::dir::Dir;
use crate::fs::refusal::PathRefusal;

/// Why a MAC key file could not be used. Each variant names the file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeyError {
    /// The file's directory, an ancestor or a link on the way failed a trust check.
    Refused {
        /// The key file.
        path: PathBuf,
        /// What is wrong on the way.
        reason: PathRefusal,
    },
    /// The file is a symbolic link: a key file is never reached through a link.
    Symlink {
        /// The key file.
        path: PathBuf,
    },
    /// The file is not a regular file (a directory, FIFO, device...).
    NotRegularFile {
        /// The key file.
        path: PathBuf,
    },
    /// The file is owned by a user who is neither this process's nor root.
    OwnedByOther {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Group or others have some permission on the file.
    AccessibleToOthers {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds neither 32 raw bytes nor 64 hex digits.
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Bytes found (up to 1024 are read).
        len: usize,
    },
    /// Its 32 bytes are all equal (all zeros, a file of `0xff`): not a random key.
    NotRandom {
        /// The key file.
        path: PathBuf,
        /// The byte repeated.
        byte: u8,
    },
    /// The key file has more than one link: another name for it may lie where others can write,
    /// or in the store.
    HardLinked {
        /// The key file.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// The key file lies inside the store, where whoever can write the store could replace it.
    InsideStore {
        /// The key file.
        path: PathBuf,
        /// The store.
        store: PathBuf,
    },
    /// Opening or reading the file failed.
    Io {
        /// The key file.
        path: PathBuf,
        /// What was being done ("open", "read").
        op: &'static str,
        /// The error.
        source: std::sync::Arc<std::io::Error>,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Refused { path, .. } => write!(f, "MAC key file {} cannot be reached safely", path.display()),
            KeyError::Symlink { path } => write!(
                f,
                "MAC key file {} is a symbolic link; the key file is never reached through a link",
                path.display()
            ),
            KeyError::NotRegularFile { path } => write!(f, "MAC key file {} is not a regular file", path.display()),
            KeyError::OwnedByOther { path, uid } => write!(
                f,
                "MAC key file {} is owned by {}, neither this process's {} nor root; run `chown {}: {}`",
                path.display(),
                crate::fs::user_name(*uid),
                crate::fs::user_name(crate::fs::euid()),
                crate::fs::login_name(crate::fs::euid()),
                path.display()
            ),
            KeyError::AccessibleToOthers { path, mode } => write!(
                f,
                "MAC key file {} is accessible to other users (mode {mode:03o}); run `chmod 600` on it",
                path.display()
            ),
            KeyError::BadLength { path, len } => write!(
                f,
                "MAC key file {} must hold 32 raw bytes or 64 hex digits ({len} bytes found)",
                path.display()
            ),
            KeyError::NotRandom { path, byte } => write!(
                f,
                "MAC key file {} is not random: all 32 bytes are 0x{byte:02x}; write 32 bytes from /dev/urandom into it",
                path.display()
            ),
            KeyError::HardLinked { path, links } => write!(
                f,
                "MAC key file {} has {links} links; a key file must have exactly one (another name for it may lie in the store)",
                path.display()
            ),
            KeyError::InsideStore { path, store } => write!(
                f,
                "MAC key file {} is inside the store {}; whoever can write the store could replace it",
                path.display(),
                store.display()
            ),
            KeyError::Io { path, op, .. } => write!(f, "cannot {op} the MAC key file {}", path.display()),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Io { source, .. } => Some(source.as_ref()),
            KeyError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding white space ignored).
///
/// The path is walked as given and every directory and link on the way is checked as a store's
/// are (as the store path is walked). The file itself is found without following a link and checked on
/// an `O_PATH` descriptor before anything is opened: a regular file, owned by this process's uid
/// or root, with no permission bits for group or others. Only then is that inode opened and read.
/// A key whose 32 bytes are all equal (all zeros, a file of `0xff`) is refused as not random.
///
/// With `store`, the key file is refused when it lies in that directory or below it, decided by
/// device and inode (a bind-mount alias, a link or `..` cannot hide it), and a key file with more
/// than one link is refused too (another name for it could lie in the store).
pub(crate) fn load_key(path: &Path, store: Option<&Dir>) -> Result<[u8; 32], KeyError> {
    let file_path = || path.to_path_buf();
    let io = |op, source| KeyError::Io {
        path: file_path(),
        op,
        source: std::sync::Arc::new(source),
    };
    let parent = Dir::parent_of(path).map_err(|reason| KeyError::Refused {
        path: file_path(),
        reason,
    })?;
    if let Some(store) = store {
        let store_id = store.id().map_err(|e| io("stat the store of", e))?;
        if parent.dir.is_within(store_id).map_err(|e| io("locate", e))? {
            return Err(KeyError::InsideStore {
                path: file_path(),
                store: store.path().to_path_buf(),
            });
        }
    }
    let (fd, st) = parent.dir.open_path(&parent.name).map_err(|e| io("open", e))?;
    if let Some(problem) = crate::fs::private_file_problem(&st, Owner::MeOrRoot) {
        use crate::fs::PrivateFileProblem as P;
        let path = file_path();
        return Err(match problem {
            P::Symlink => KeyError::Symlink { path },
            P::NotRegularFile => KeyError::NotRegularFile { path },
            P::HardLinks { links } => KeyError::HardLinked { path, links },
            P::OwnedByOther { uid } => KeyError::OwnedByOther { path, uid },
            P::OpenToOthers { mode } => KeyError::AccessibleToOthers {
                path,
                mode: mode & 0o777,
            },
        });
    }
    let file = parent
        .dir
        .reopen(
            &parent.name,
            &fd,
            &st,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        )
        .map_err(|e| io("open", e))?;
    let mut bytes = Vec::with_capacity(65);
    // A key is 32 or 64 bytes plus white space; reading a little more only to say it is too long.
    file.take(1024).read_to_end(&mut bytes).map_err(|e| io("read", e))?;
    let key = parse_key(&bytes).ok_or(KeyError::BadLength {
        path: file_path(),
        len: bytes.len(),
    })?;
    if key.iter().all(|b| *b == key[0]) {
        return Err(KeyError::NotRandom {
            path: file_path(),
            byte: key[0],
        });
    }
    Ok(key)
}

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
        return Some(key);
    }
    let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
    (text.len() == 64 && hex::decode_to_slice(text, &mut key).is_ok()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_key_here(path: &Path) -> Result<[u8; 32], KeyError> {
        load_key(path, None)
    }

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
        for (bytes, repeated) in [
            (vec![0u8; 32], 0u8),
            (vec![0xff; 32], 0xff),
            ("00".repeat(32).into_bytes(), 0),
        ] {
            let err = load_key_here(&write_key(dir.path(), &bytes)).unwrap_err();
            assert!(
                matches!(err, KeyError::NotRandom { byte, .. } if byte == repeated),
                "{err:?}"
            );
        }
        let good: Vec<u8> = (0..32).collect();
        assert_eq!(
            load_key_here(&write_key(dir.path(), &good)).expect("loads").to_vec(),
            good
        );
        let hex_key = hex::encode(&good);
        assert_eq!(
            load_key_here(&write_key(dir.path(), format!("{hex_key}\n").as_bytes()))
                .expect("loads")
                .to_vec(),
            good
        );
    }
}
