//! The whitelist: which source hashes the node may run, read from `config/wasm.conf`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};

use crate::key::{Hash32, parse_hash};

/// Parses a whitelist: one 64-hex SHA-256 per line; `#` starts a comment; blank lines are ignored.
/// An invalid line is an error naming `origin`, the line number and the text.
///
/// ```
/// let text = format!("# components\n{}  # adder\n\n", "0f".repeat(32));
/// let set = wasm_node_cache::parse_whitelist(&text, "wasm.conf").unwrap();
/// assert!(set.contains(&[0x0f; 32]));
/// ```
pub fn parse_whitelist(text: &str, origin: &str) -> anyhow::Result<HashSet<Hash32>> {
    let mut set = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let hash = parse_hash(line)
            .with_context(|| format!("{origin}:{}: bad whitelist entry {:?}", index + 1, raw.trim()))?;
        set.insert(hash);
    }
    Ok(set)
}

/// Reads and parses a whitelist file.
pub fn read_whitelist_file(path: &Path) -> anyhow::Result<HashSet<Hash32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read whitelist {}", path.display()))?;
    parse_whitelist(&text, &path.display().to_string())
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
    fn bad_line_names_file_line_and_text() {
        let text = format!("{}\n# ok\nnot-a-hash\n", "ab".repeat(32));
        let err = format!("{:#}", parse_whitelist(&text, "config/wasm.conf").unwrap_err());
        assert!(err.contains("config/wasm.conf:3"), "{err}");
        assert!(err.contains("not-a-hash"), "{err}");
    }
}
