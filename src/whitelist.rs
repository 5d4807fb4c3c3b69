//! The whitelist: which source hashes the node may run, read from `config/wasm.conf`.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use rustix::fs::FileType;

use crate::key::{Hash32, parse_hash};
use crate::trusted_path::{Fallback, open_path_following, reopen_read};

/// Parses a whitelist: one 64-hex SHA-256 per line; `#` starts a comment; blank lines are ignored.
/// An invalid line is an error naming `origin`, the line number and the text.
///
/// ```
/// let text = format!("# components\n{}  # adder\n\n", "0f".repeat(32));
/// let set = wasm_node_cache::parse_whitelist(&text, "wasm.conf").unwrap();
/// assert!(set.contains(&[0x0f; 32]));
/// ```
pub fn parse_whitelist(text: &str, origin: &str) -> anyhow::Result<HashSet<Hash32>> {
    parse_whitelist_bytes(text.as_bytes(), origin)
}

/// [`parse_whitelist`] over the file's bytes: a leading UTF-8 byte-order mark is skipped (editors
/// on Windows write one), and comments may hold any bytes (a Latin-1 name in a comment is not an
/// error); the part of a line before `#` must be UTF-8 text.
fn parse_whitelist_bytes(bytes: &[u8], origin: &str) -> anyhow::Result<HashSet<Hash32>> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let mut set = HashSet::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let code = raw.split(|b| *b == b'#').next().unwrap_or_default();
        let line = std::str::from_utf8(code)
            .map_err(|e| anyhow::anyhow!("not UTF-8 text: {e}"))
            .with_context(|| {
                format!(
                    "{origin}:{}: bad whitelist entry {:?}",
                    index + 1,
                    String::from_utf8_lossy(raw).trim()
                )
            })?
            .trim();
        if line.is_empty() {
            continue;
        }
        let hash = parse_hash(line).with_context(|| {
            format!(
                "{origin}:{}: bad whitelist entry {:?}",
                index + 1,
                String::from_utf8_lossy(raw).trim()
            )
        })?;
        set.insert(hash);
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
pub fn read_whitelist_file(path: &Path) -> anyhow::Result<HashSet<Hash32>> {
    let what = || format!("cannot read whitelist {}", path.display());
    let (fd, st) = open_path_following(path).with_context(what)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        bail!(
            "whitelist {} is not a regular file ({}); it must be a file of hashes",
            path.display(),
            describe(kind)
        );
    }
    let mut bytes = Vec::new();
    reopen_read(&fd, &st, Fallback::Path(path))
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(what)?;
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
pub fn whitelist_all_in_dir(dir: &Path) -> anyhow::Result<HashSet<Hash32>> {
    let mut set = HashSet::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if let Some(name) = entry.file_name().to_str()
            && crate::key::is_hash_name(name)
        {
            set.insert(parse_hash(name)?);
        }
    }
    if set.is_empty() {
        bail!("{} holds no file named by a 64-hex SHA-256", dir.display());
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
        let err = format!("{:#}", parse_whitelist_bytes(&bytes, "w").unwrap_err());
        assert!(err.contains("w:5"), "{err}");
    }

    #[test]
    fn a_fifo_whitelist_is_an_error_naming_it_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("wasm.conf");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).expect("mkfifo");
        let err = format!("{:#}", read_whitelist_file(&fifo).unwrap_err());
        assert!(err.contains("wasm.conf") && err.contains("FIFO"), "{err}");
    }

    #[test]
    fn bad_line_names_file_line_and_text() {
        let text = format!("{}\n# ok\nnot-a-hash\n", "ab".repeat(32));
        let err = format!("{:#}", parse_whitelist(&text, "config/wasm.conf").unwrap_err());
        assert!(err.contains("config/wasm.conf:3"), "{err}");
        assert!(err.contains("not-a-hash"), "{err}");
    }
}
