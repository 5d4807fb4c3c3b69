//! The whitelist: which source hashes the node may run, read from `config/wasm.conf`.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::fs::walk::{Fallback, open_path_following, reopen_read};
use crate::key::{Hash32, ParseHashError, parse_hash};

/// Why a whitelist could not be read. Each variant names the file (or the origin given to
/// [`parse_whitelist`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum WhitelistError {
    /// A line is not a SHA-256 (after its comment and surrounding white space are removed).
    BadLine {
        /// The file, or the origin given to [`parse_whitelist`].
        origin: String,
        /// Line number, from 1.
        line: usize,
        /// The line as written (trimmed; invalid UTF-8 replaced).
        text: String,
        /// What is wrong with it.
        cause: BadLineCause,
    },
    /// The whitelist is not a regular file (a FIFO that would block the start-up forever, a
    /// directory, a device...).
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead: `a FIFO`, `a directory`, `a device`, `a socket`.
        kind: &'static str,
    },
    /// A directory given to [`whitelist_all_in_dir`] holds no file named by a 64-hex SHA-256.
    NoHashNamedFiles {
        /// The directory.
        dir: PathBuf,
    },
    /// Opening, reading or listing failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("read", "list").
        op: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a whitelist line is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadLineCause {
    /// The part before `#` is not UTF-8 text.
    NotUtf8(std::str::Utf8Error),
    /// It is not a SHA-256.
    NotAHash(ParseHashError),
}

impl fmt::Display for WhitelistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhitelistError::BadLine { origin, line, text, .. } => {
                write!(f, "{origin}:{line}: bad whitelist entry {text:?}")
            }
            WhitelistError::NotRegularFile { path, kind } => write!(
                f,
                "whitelist {} is not a regular file ({kind}); it must be a file of hashes",
                path.display()
            ),
            WhitelistError::NoHashNamedFiles { dir } => {
                write!(f, "{} holds no file named by a 64-hex SHA-256", dir.display())
            }
            WhitelistError::Io { path, op, .. } => write!(f, "cannot {op} whitelist {}", path.display()),
        }
    }
}

impl std::error::Error for WhitelistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WhitelistError::BadLine { cause, .. } => Some(cause),
            WhitelistError::Io { source, .. } => Some(source),
            WhitelistError::NotRegularFile { .. } | WhitelistError::NoHashNamedFiles { .. } => None,
        }
    }
}

impl fmt::Display for BadLineCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadLineCause::NotUtf8(e) => write!(f, "not UTF-8 text: {e}"),
            BadLineCause::NotAHash(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BadLineCause {}

/// Parses a whitelist: one 64-hex SHA-256 per line; `#` starts a comment; blank lines are ignored.
/// An invalid line is an error naming `origin`, the line number and the text.
///
/// ```
/// let text = format!("# components\n{}  # adder\n\n", "0f".repeat(32));
/// let set = wasm_node_cache::config::parse_whitelist(&text, "wasm.conf").unwrap();
/// assert!(set.contains(&[0x0f; 32]));
/// ```
pub fn parse_whitelist(text: &str, origin: &str) -> Result<HashSet<Hash32>, WhitelistError> {
    parse_whitelist_bytes(text.as_bytes(), origin)
}

/// [`parse_whitelist`] over the file's bytes: a leading UTF-8 byte-order mark is skipped (editors
/// on Windows write one), and comments may hold any bytes (a Latin-1 name in a comment is not an
/// error); the part of a line before `#` must be UTF-8 text.
fn parse_whitelist_bytes(bytes: &[u8], origin: &str) -> Result<HashSet<Hash32>, WhitelistError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let mut set = HashSet::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let bad = |cause| WhitelistError::BadLine {
            origin: origin.to_owned(),
            line: index + 1,
            text: String::from_utf8_lossy(raw).trim().to_owned(),
            cause,
        };
        let code = raw.split(|b| *b == b'#').next().unwrap_or_default();
        let line = std::str::from_utf8(code)
            .map_err(|e| bad(BadLineCause::NotUtf8(e)))?
            .trim();
        if line.is_empty() {
            continue;
        }
        set.insert(parse_hash(line).map_err(|e| bad(BadLineCause::NotAHash(e)))?);
    }
    Ok(set)
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Reads and parses a whitelist file.
///
/// The file is found on an `O_PATH` descriptor and checked with `fstat` before it is opened:
/// anything but a regular file (a FIFO that would block the start-up forever, a device) is an
/// error naming it, at once. A link is followed (a `wasm.conf` mounted from a Kubernetes ConfigMap
/// is one); an attacker who can change the whitelist already controls what the node runs
/// (SECURITY.md, out of scope).
pub fn read_whitelist_file(path: &Path) -> Result<HashSet<Hash32>, WhitelistError> {
    let io = |source| WhitelistError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    };
    let (fd, st) = open_path_following(path).map_err(io)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(WhitelistError::NotRegularFile {
            path: path.to_path_buf(),
            kind: describe(kind),
        });
    }
    let mut bytes = Vec::new();
    reopen_read(&fd, &st, Fallback::Path(path))
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io)?;
    parse_whitelist_bytes(&bytes, &path.display().to_string())
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "a FIFO",
        FileType::Directory => "a directory",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Socket => "a socket",
        _ => "not a file",
    }
}

/// Every file in `dir` whose name is 64 lowercase hex digits, as a whitelist (the CLI's `--all-in-dir`).
pub fn whitelist_all_in_dir(dir: &Path) -> Result<HashSet<Hash32>, WhitelistError> {
    let io = |source| WhitelistError::Io {
        path: dir.to_path_buf(),
        op: "list",
        source,
    };
    let mut set = HashSet::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(name) = entry.file_name().to_str()
            && crate::key::is_hash_name(name)
            && let Ok(hash) = parse_hash(name)
        {
            set.insert(hash);
        }
    }
    if set.is_empty() {
        return Err(WhitelistError::NoHashNamedFiles { dir: dir.to_path_buf() });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_case() {
        let text = format!("# header\n\n  {}  \n{} # trailing\n", "AB".repeat(32), "cd".repeat(32));
        let set = parse_whitelist(&text, "w").expect("parses");
        assert_eq!(set.len(), 2);
        assert!(set.contains(&[0xab; 32]) && set.contains(&[0xcd; 32]));
    }

    #[test]
    fn a_bom_is_skipped_and_comments_may_hold_any_bytes() {
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend_from_slice("ab".repeat(32).as_bytes());
        // "café résumé" in Latin-1: not UTF-8, but inside a comment.
        bytes.extend_from_slice(b"\r\n# caf\xe9 r\xe9sum\xe9\n");
        bytes.extend_from_slice("cd".repeat(32).as_bytes());
        bytes.extend_from_slice(b" # na\xefve\n\n");
        let set = parse_whitelist_bytes(&bytes, "w").expect("parses");
        assert!(set.contains(&[0xab; 32]) && set.contains(&[0xcd; 32]) && set.len() == 2);
        // Outside a comment the same byte is still a bad line, named by its number.
        bytes.extend_from_slice(b"\xe9\n");
        let err = parse_whitelist_bytes(&bytes, "w").unwrap_err();
        assert!(
            matches!(&err, WhitelistError::BadLine { origin, line: 5, cause: BadLineCause::NotUtf8(_), .. } if origin == "w"),
            "{err:?}"
        );
        assert!(err.to_string().contains("w:5"), "{err}");
    }

    #[test]
    fn a_fifo_whitelist_is_an_error_naming_it_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("wasm.conf");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).expect("mkfifo");
        let err = read_whitelist_file(&fifo).unwrap_err();
        assert!(
            matches!(&err, WhitelistError::NotRegularFile { path, kind: "a FIFO" } if *path == fifo),
            "{err:?}"
        );
    }

    #[test]
    fn bad_line_names_file_line_and_text() {
        let text = format!("{}\n# ok\nnot-a-hash\n", "ab".repeat(32));
        let err = parse_whitelist(&text, "config/wasm.conf").unwrap_err();
        assert!(
            matches!(
                &err,
                WhitelistError::BadLine {
                    origin,
                    line: 3,
                    text,
                    cause: BadLineCause::NotAHash(ParseHashError::WrongLength { .. }),
                } if origin == "config/wasm.conf" && text == "not-a-hash"
            ),
            "{err:?}"
        );
        let shown = crate::serial::Chain(&err).to_string();
        assert!(
            shown.contains("config/wasm.conf:3") && shown.contains("not-a-hash"),
            "{shown}"
        );
    }

    #[test]
    fn a_directory_without_hash_named_files_is_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("README"), b"").expect("write");
        assert!(matches!(
            whitelist_all_in_dir(dir.path()),
            Err(WhitelistError::NoHashNamedFiles { .. })
        ));
        assert!(matches!(
            whitelist_all_in_dir(&dir.path().join("absent")),
            Err(WhitelistError::Io { op: "list", .. })
        ));
    }
}
