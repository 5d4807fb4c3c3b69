//! The node's configuration: where things are when nobody says (the default paths, the store
//! directory's default, and the environment variables that override them), and the whitelist
//! (`config/wasm.conf`: which SHA-256-named binaries of `config/wasm` the node may run). The
//! node's builder and the CLI resolve through here, so an operator's command sees what the node
//! sees.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::key::{hash_hex, parse_hash};
pub use crate::source::sha256;
pub use crate::whitelist::{parse_whitelist, read_whitelist_file, whitelist_all_in_dir};

/// Default binary root, relative to the working directory (where the node has always kept its
/// components).
pub const DEFAULT_BINARY_ROOT: &str = "./config/wasm";
/// Default whitelist file, relative to the working directory.
pub const DEFAULT_WHITELIST_FILE: &str = "./config/wasm.conf";
/// Environment variable that overrides the default store directory.
pub const STORE_DIR_ENV: &str = "WASM_NODE_CACHE_DIR";
/// Environment variable naming the MAC key file; setting it turns the authenticated mode on.
pub const KEY_FILE_ENV: &str = "WASM_NODE_CACHE_KEY_FILE";
/// Environment variable listing read-only stores (colon-separated), searched after the writable
/// store: artifacts baked into a container image.
pub const READ_ONLY_DIRS_ENV: &str = "WASM_NODE_CACHE_READ_ONLY_DIRS";
/// Default wait for the store's lock before compiling in memory instead.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable: how long an artifact of another engine fingerprint must go unused
/// (neither loaded nor written) before `prune --stale` may remove it, as [`parse_duration`] reads
/// it (`7d`, `36h`, `0`).
pub const MIN_IDLE_ENV: &str = "WASM_NODE_CACHE_MIN_IDLE";
/// Default of that age guard: a week, so that a bake-ahead for the next release survives the
/// weekly prune, and the previous release's artifacts go a week after the upgrade.
pub const DEFAULT_MIN_IDLE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A duration as operators write it: a whole number with an optional unit, `s` (the default), `m`,
/// `h`, `d` or `w`: `0`, `90s`, `36h`, `7d`, `2w`.
///
/// ```
/// use std::time::Duration;
/// use wasm_node_cache::config::parse_duration;
/// assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
/// assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
/// assert!(parse_duration("7 days").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &text[digits.len()..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        "w" => 7 * 24 * 60 * 60,
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m, h, d or w)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number with a unit (such as 7d, 36h, 0)"))?;
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A size as operators write it: `1048576`, `512K`, `500M`, `2G`, `1.5G`, `1T`, in powers of 1024
/// (as sccache's `SCCACHE_CACHE_SIZE` and `du -h`); a trailing `B` or `iB` and any case are
/// accepted (`500MiB`, `2gb`).
///
/// ```
/// use wasm_node_cache::config::parse_size;
/// assert_eq!(parse_size("10G"), Ok(10 << 30));
/// assert!(parse_size("10 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size: unknown unit (use K, M, G or T, or bytes)"
            ));
        }
    };
    let bad = || format!("{text:?} is not a size: expected a number with an optional unit, like 500M or 2G");
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n
            .checked_mul(1u64 << shift)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (n * (1u64 << shift) as f64).round();
    // u64::MAX as f64 rounds up to 2^64, so `<` keeps the cast below in range.
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Environment variable: the bound the writable store keeps itself within, as [`parse_size`]
/// reads it (`10G`, `500M`).
pub const MAX_SIZE_ENV: &str = "WASM_NODE_CACHE_MAX_SIZE";
/// Default of that bound: 10 GiB, as sccache's cache and Polkadot's PVF artifacts.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;

/// `$WASM_NODE_CACHE_MAX_SIZE`, if it is set and not empty; an error names the variable.
pub fn max_size_from_env() -> Result<Option<u64>, String> {
    match std::env::var(MAX_SIZE_ENV) {
        Ok(text) if !text.is_empty() => parse_size(&text).map(Some).map_err(|e| format!("${MAX_SIZE_ENV}: {e}")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("${MAX_SIZE_ENV} is not UTF-8")),
    }
}

/// `$WASM_NODE_CACHE_MIN_IDLE`, if it is set and not empty; an error names the variable.
pub fn min_idle_from_env() -> Result<Option<Duration>, String> {
    match std::env::var(MIN_IDLE_ENV) {
        Ok(text) if !text.is_empty() => parse_duration(&text)
            .map(Some)
            .map_err(|e| format!("${MIN_IDLE_ENV}: {e}")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("${MIN_IDLE_ENV} is not UTF-8")),
    }
}

/// The MAC key file to use: `explicit` if given, else `$WASM_NODE_CACHE_KEY_FILE` if set and not
/// empty, else none (plain mode). The builder and the CLI resolve it the same way, so operators'
/// commands see the same fingerprint as the node.
pub fn resolve_key_file(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        std::env::var_os(KEY_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Checks a MAC key file as a store would use it: reached safely (every directory and link on the
/// way checked), a regular file with one link, owned by this uid or root, no permission for group
/// or others, 32 random bytes or 64 hex digits. For commands that take a key but open no store.
pub fn check_key_file(path: &Path) -> Result<(), crate::authkey::KeyError> {
    crate::authkey::load_key(path, None).map(drop)
}

/// The read-only stores to search: `explicit` if any are given, else the colon-separated
/// `$WASM_NODE_CACHE_READ_ONLY_DIRS` (empty entries ignored). The builder and the CLI resolve them
/// the same way.
pub fn resolve_read_only_stores(explicit: Vec<PathBuf>) -> Vec<PathBuf> {
    if !explicit.is_empty() {
        return explicit;
    }
    std::env::var_os(READ_ONLY_DIRS_ENV)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Environment variable systemd sets to the directory of `CacheDirectory=` (several,
/// colon-separated, when the unit names several): the store's default after `$WASM_NODE_CACHE_DIR`.
pub const SYSTEMD_CACHE_DIR_ENV: &str = "CACHE_DIRECTORY";

/// True when the environment names the store directory (`$WASM_NODE_CACHE_DIR`, or systemd's
/// `$CACHE_DIRECTORY`): a store the deployment asked for, whose failure is a problem even when
/// read-only stores served everything. The fallbacks below them are only where a store could go.
pub fn store_dir_is_configured() -> bool {
    [STORE_DIR_ENV, SYSTEMD_CACHE_DIR_ENV]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// The default store directory: `$WASM_NODE_CACHE_DIR`, else the first directory of systemd's
/// `$CACHE_DIRECTORY` (set by `CacheDirectory=`), else `$XDG_CACHE_HOME/wasm-node-cache`, else
/// `$HOME/.cache/wasm-node-cache`, else `<temp dir>/wasm-node-cache-<uid>`.
///
/// `$XDG_CACHE_HOME` and `$HOME` are used only when they are directories owned by this process's
/// uid: a root node started through `sudo -E` keeps the invoking user's `$HOME`, and a store below
/// a directory that user owns is one that user could swap (the store's own checks would then
/// refuse it, and the node would compile at every start).
pub fn default_store_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(STORE_DIR_ENV) {
        return dir;
    }
    if let Some(first) = std::env::var_os(SYSTEMD_CACHE_DIR_ENV)
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    // Walked and checked as a store path is, links included: a `$HOME` reached through a link
    // another user owns does not qualify.
    let owned_by_me =
        |p: &Path| crate::fs::walk::walk(p, false).is_ok_and(|w| w.check_final_dir(crate::fs::Owner::Me).is_ok());
    if let Some(xdg) = non_empty("XDG_CACHE_HOME").filter(|p| owned_by_me(p)) {
        return xdg.join("wasm-node-cache");
    }
    if let Some(home) = non_empty("HOME").filter(|p| owned_by_me(p)) {
        return home.join(".cache").join("wasm-node-cache");
    }
    std::env::temp_dir().join(format!("wasm-node-cache-{}", crate::fs::euid()))
}
