//! `status`: what the store holds, read-only and quick (trailers only, no payload hashing).

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;
use wasm_node_cache::profile::{ProfileStatus, profile_statuses};
use wasm_node_cache::store::{LockState, Rejection, Store, StoredEntry};
use wasm_node_cache::{CpuProfile, Fingerprint, Kind};

use super::size::format_size;
use super::{EXIT_OK, EXIT_PROBLEM, KeyArgs, ReadOnlyArgs, StoreArgs, output};

/// Text after `status`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache status
  wasm-node-cache status --store /var/cache/node-wasm
  wasm-node-cache status --json | jq '.entries[] | select(.current | not) | .hash'

Reads only each artifact's 128-byte trailer (HEADER ok = the trailer is intact and names this file's
hash and fingerprint; `other MAC mode` = written by a node with(out) --key-file, not checkable here);
`verify` also checks the payload. REFUSED = the node will not load the file (owned by another uid,
or writable by group or others); `writable` = loads, but has a write bit (stores written before
artifacts were published read-only), so a careless `cp` could write into a loaded artifact.
FINGERPRINT is `current` for artifacts this build's engine loads, a CPU profile's name (x86-64-v3)
for this build's portable artifacts (a bake for other hosts; each group says whether this CPU runs
it, by wasmtime's own check), `stale` for those of another wasmtime version, settings or MAC mode
(`prune --stale` removes them, never portable ones); a store holding several fingerprints lists
each with its count. --read-only-store adds a block per baked store. LOCK is
probed without waiting. Changes nothing, never creates a store.

Files that are not the store's (any name but `lock`, `.tmp-*` and exact lowercase artifact names,
such as an artifact name in uppercase) are listed as `foreign` (JSON `foreign_files`). A
--read-only-store that is missing or refused is shown with its error (JSON: `path`, `read_only`,
`error`) and the others are still shown.

Exit status: 0 shown; 1 shown, but a read-only store is not usable; 2 could not run (no store at
that path, store refused, unreadable).";

/// Options of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    read_only: ReadOnlyArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

/// One artifact as `status` shows it (and as its JSON `entries` hold it).
#[derive(Serialize)]
struct Row {
    hash: String,
    /// Component or core module.
    kind: Kind,
    file: String,
    size: u64,
    fingerprint: String,
    /// Of this build: its engine's fingerprint or one of its portable CPU profiles'.
    current: bool,
    /// The CPU profile of a current artifact (`native` for this engine's own).
    profile: Option<CpuProfile>,
    created_unix: Option<u64>,
    created: Option<String>,
    /// Why the trailer check failed: not intact, or naming another hash or fingerprint.
    header_error: Option<String>,
    /// The trailer is of the other authentication mode: not a defect, just not checkable here.
    other_mode: bool,
    uid: u32,
    /// Permission bits, octal.
    mode: String,
    /// Anyone has write permission.
    writable: bool,
    /// Why the loader refuses the file before reading it (foreign owner, writable by others).
    refused: Option<String>,
}

/// A fingerprint a store holds, with its number of files.
#[derive(Serialize)]
struct FingerprintRow {
    fingerprint: String,
    files: usize,
    /// This build's engine's.
    current: bool,
    /// The CPU profile of this build the fingerprint belongs to, if any.
    profile: Option<CpuProfile>,
    /// For a profile: whether this CPU runs its code (wasmtime's check).
    runs_here: Option<bool>,
    /// For a profile this CPU cannot run: wasmtime's reason.
    refused: Option<String>,
}

/// One store as `status` shows it: the writable one, or a read-only one.
#[derive(Serialize)]
struct StoreView {
    path: String,
    read_only: bool,
    /// `None` for a read-only store, which is never locked.
    lock: Option<LockState>,
    fingerprint: String,
    keyed: bool,
    artifacts: usize,
    current: usize,
    /// Of `current`, artifacts of a portable CPU profile.
    portable: usize,
    stale: usize,
    bad_or_refused: usize,
    writable: usize,
    total_bytes: u64,
    temp_files: usize,
    fingerprints: Vec<FingerprintRow>,
    entries: Vec<Row>,
    /// Files that are not the store's: never loaded, removed by `prune --stale`.
    foreign_files: Vec<ForeignRow>,
}

/// A file in the store that is neither an artifact, the lock nor a temp file.
#[derive(Serialize)]
struct ForeignRow {
    file: String,
    size: u64,
    directory: bool,
}

/// A read-only store as `status` shows it: its view, or why it could not be opened.
#[derive(Serialize)]
#[serde(untagged)]
enum ReadOnlyView {
    Open(StoreView),
    Unusable {
        path: String,
        read_only: bool,
        /// Why the store is missing or refused.
        error: String,
    },
}

/// What `status --json` prints: the store, then each read-only store in the same form.
#[derive(Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    store: &'a StoreView,
    read_only_stores: &'a [ReadOnlyView],
}

/// This build's CPU profiles with their fingerprints, computed only when some store holds an
/// artifact of a fingerprint other than the engine's own (it builds an engine per profile).
struct Profiles(Vec<ProfileStatus>);

impl Profiles {
    fn of(&self, fp: &Fingerprint) -> Option<&ProfileStatus> {
        let hex = fp.to_hex();
        self.0.iter().find(|p| p.fingerprint == hex)
    }
}

impl StoreView {
    fn collect(store: &Store, profiles: &Profiles) -> anyhow::Result<StoreView> {
        let path = store.dir().display().to_string();
        let lock = if store.is_read_only() {
            None
        } else {
            Some(
                store
                    .lock_state()
                    .map_err(|e| anyhow::anyhow!("{}: cannot probe the lock: {e}", store.lock_path().display()))?,
            )
        };
        let entries = store
            .entries()
            .map_err(|e| anyhow::anyhow!("{path}: cannot list the store: {e}"))?;
        let temp_files = store
            .temp_file_count()
            .map_err(|e| anyhow::anyhow!("{path}: cannot list the store: {e}"))?;
        let mut counts: BTreeMap<Fingerprint, usize> = BTreeMap::new();
        for e in &entries {
            *counts.entry(e.key.fingerprint).or_default() += 1;
        }
        let mut fingerprints: Vec<FingerprintRow> = counts
            .into_iter()
            .map(|(fp, files)| {
                let profile = profiles.of(&fp);
                let native = fp == store.fingerprint();
                FingerprintRow {
                    fingerprint: fp.to_hex(),
                    files,
                    current: native,
                    profile: profile.map(|p| p.profile).or(native.then_some(CpuProfile::Native)),
                    runs_here: profile.map(|p| p.runs_here),
                    refused: profile.and_then(|p| p.refused.clone()),
                }
            })
            .collect();
        // This engine's first, then its portable profiles best first, then stale ones.
        fingerprints.sort_by_key(|f| (!f.current, f.profile.is_none(), std::cmp::Reverse(f.profile)));
        let foreign_files = store
            .foreign_files()
            .map_err(|e| anyhow::anyhow!("{path}: cannot list the store: {e}"))?
            .into_iter()
            .map(|f| ForeignRow {
                file: f.path.display().to_string(),
                size: f.size,
                directory: f.is_dir,
            })
            .collect();
        let rows: Vec<Row> = entries
            .into_iter()
            .map(|entry| Row::collect(store, profiles, entry))
            .collect();
        let current = rows.iter().filter(|r| r.current).count();
        let portable = rows
            .iter()
            .filter(|r| r.profile.is_some_and(|p| !p.is_native()))
            .count();
        Ok(StoreView {
            path,
            read_only: store.is_read_only(),
            lock,
            fingerprint: store.fingerprint().to_hex(),
            keyed: store.is_keyed(),
            artifacts: rows.len(),
            current,
            portable,
            stale: rows.len() - current,
            bad_or_refused: rows
                .iter()
                .filter(|r| (r.header_error.is_some() && !r.other_mode) || r.refused.is_some())
                .count(),
            writable: rows.iter().filter(|r| r.writable).count(),
            total_bytes: rows.iter().map(|r| r.size).sum(),
            temp_files,
            fingerprints,
            entries: rows,
            foreign_files,
        })
    }
}

impl Row {
    fn collect(store: &Store, profiles: &Profiles, entry: StoredEntry) -> Row {
        let refused = entry.trust_problem(|uid| store.trusts_owner(uid));
        let trailer = store.read_trailer(&entry.key);
        let other_mode = trailer.as_ref().is_err_and(Rejection::is_other_mode);
        let header_error = match &trailer {
            Err(e) => Some(e.to_string()),
            Ok(t) if t.source_hash != entry.key.source || t.fingerprint != entry.key.fingerprint => {
                Some("trailer names another hash or fingerprint than the file name".into())
            }
            Ok(t) if t.kind != entry.key.kind => Some(format!(
                "trailer holds a {}, the file name says {}",
                t.kind, entry.key.kind
            )),
            Ok(_) => None,
        };
        let created_unix = trailer.ok().map(|t| t.created_unix);
        Row {
            hash: hex::encode(entry.key.source),
            kind: entry.key.kind,
            file: entry.path.display().to_string(),
            size: entry.size,
            fingerprint: entry.key.fingerprint.to_hex(),
            current: entry.key.fingerprint == store.fingerprint() || profiles.of(&entry.key.fingerprint).is_some(),
            profile: if entry.key.fingerprint == store.fingerprint() {
                Some(CpuProfile::Native)
            } else {
                profiles.of(&entry.key.fingerprint).map(|p| p.profile)
            },
            created_unix,
            created: created_unix.map(output::format_unix_utc),
            header_error,
            other_mode,
            uid: entry.uid,
            mode: format!("{:03o}", entry.mode),
            writable: entry.has_write_bit(),
            refused: refused.map(|r| r.to_string()),
        }
    }

    fn header_text(&self) -> String {
        match (&self.refused, &self.header_error) {
            (Some(r), _) => format!("REFUSED: {r}"),
            (None, None) if self.writable => format!("ok, but writable (mode {}): chmod a-w", self.mode),
            (None, None) => "ok".to_string(),
            (None, Some(_)) if self.other_mode => "other MAC mode, not checked".to_string(),
            (None, Some(e)) => format!("BAD: {e}"),
        }
    }
}

/// Runs `status`; returns the exit status.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let writable = args.store.open_existing(Some(&args.key))?;
    let opened = args.read_only.open(&args.key)?;
    let profiles =
        profiles_if_needed(std::iter::once(&writable).chain(opened.iter().filter_map(|(_, s)| s.as_ref().ok())))?;
    let store = StoreView::collect(&writable, &profiles)?;
    let mut unusable = 0;
    let mut read_only = Vec::new();
    for (dir, opened) in opened {
        // A missing or refused read-only store is reported in place; the others are still shown.
        let view = opened.and_then(|ro| StoreView::collect(&ro, &profiles));
        read_only.push(match view {
            Ok(view) => ReadOnlyView::Open(view),
            Err(e) => {
                unusable += 1;
                ReadOnlyView::Unusable {
                    path: dir.display().to_string(),
                    read_only: true,
                    error: format!("{e:#}"),
                }
            }
        });
    }
    if args.json {
        let doc = StatusJson {
            store: &store,
            read_only_stores: &read_only,
        };
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        let blocks: Vec<String> = std::iter::once(render_text(&store))
            .chain(read_only.iter().map(|ro| match ro {
                ReadOnlyView::Open(view) => render_text(view),
                ReadOnlyView::Unusable { path, error, .. } => {
                    format!("read-only store: {path}\nNOT USABLE:   {error}\n")
                }
            }))
            .collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(if unusable > 0 { EXIT_PROBLEM } else { EXIT_OK })
}

/// This build's profiles, when some store holds a fingerprint other than the engine's own.
fn profiles_if_needed<'a>(stores: impl Iterator<Item = &'a Store> + Clone) -> anyhow::Result<Profiles> {
    let foreign = stores.clone().any(|s| {
        s.fingerprints_present()
            .is_ok_and(|fps| fps.iter().any(|fp| *fp != s.fingerprint()))
    });
    let Some(first) = stores.clone().next().filter(|_| foreign) else {
        return Ok(Profiles(Vec::new()));
    };
    let engine = wasm_node_cache::init_wasm_engine()?;
    Ok(Profiles(profile_statuses(&engine, first.is_keyed())?))
}

fn render_text(s: &StoreView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if s.keyed { "MAC mode" } else { "plain mode" };
    if s.read_only {
        let _ = writeln!(out, "read-only store: {}", s.path);
    } else {
        let _ = writeln!(out, "store:        {}", s.path);
    }
    if let Some(lock) = &s.lock {
        let _ = writeln!(out, "lock:         {lock}");
    }
    let _ = writeln!(out, "fingerprint:  {} (this build's engine, {mode})", s.fingerprint);
    let _ = writeln!(
        out,
        "artifacts:    {} ({} current{}, {} stale), {}{}{}{}",
        s.artifacts,
        s.current,
        if s.portable > 0 {
            format!(", of which {} portable", s.portable)
        } else {
            String::new()
        },
        s.stale,
        format_size(s.total_bytes),
        if s.bad_or_refused > 0 {
            format!("; {} bad or refused", s.bad_or_refused)
        } else {
            String::new()
        },
        if s.writable > 0 {
            format!(
                "; {} writable (run `chmod a-w` on them: a write into a loaded artifact changes running nodes)",
                s.writable
            )
        } else {
            String::new()
        },
        if s.temp_files > 0 {
            format!(
                "; {} unfinished temp file(s), removed by the next warm, prune or clear",
                s.temp_files
            )
        } else {
            String::new()
        }
    );
    if s.fingerprints.len() > 1 || s.fingerprints.first().is_some_and(|f| !f.current) {
        for f in &s.fingerprints {
            let mark = match (f.current, f.profile, f.runs_here) {
                (true, _, _) => "  <- this engine (native)".to_string(),
                (false, Some(p), Some(true)) => format!("  portable {p}: runs on this CPU"),
                (false, Some(p), _) => format!(
                    "  portable {p}: does NOT run on this CPU ({})",
                    f.refused.as_deref().unwrap_or("refused")
                ),
                (false, None, _) => "  stale".to_string(),
            };
            let _ = writeln!(out, "  fingerprint {}: {} file(s){mark}", f.fingerprint, f.files);
        }
        if s.current == 0 && s.read_only {
            let _ = writeln!(
                out,
                "  none for this engine: built for another CPU, wasmtime version, engine settings or MAC mode"
            );
        }
    }
    for f in &s.foreign_files {
        let _ = writeln!(
            out,
            "foreign:      {} ({}{}): not a file of this store, never loaded; `prune --stale` removes it",
            f.file,
            format_size(f.size),
            if f.directory { ", a directory" } else { "" }
        );
    }
    if s.entries.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<64}  {:>9}  {:<17}  {:<23}  HEADER",
        "HASH", "SIZE", "FINGERPRINT", "CREATED"
    );
    for r in &s.entries {
        let fp = if let Some(p) = r.profile.filter(|p| !p.is_native()) {
            p.name().to_string()
        } else if r.current {
            "current".to_string()
        } else {
            format!("stale {}", &r.fingerprint[..8])
        };
        let _ = writeln!(
            out,
            "{:<64}  {:>9}  {:<17}  {:<23}  {}",
            r.hash,
            format_size(r.size),
            fp,
            r.created.as_deref().unwrap_or("-"),
            r.header_text()
        );
    }
    out
}
