//! `status`: what the store holds, read-only and quick (trailers only, no payload hashing).

use clap::Args;
use serde_json::{Value, json};
use wasm_node_cache::Fingerprint;
use wasm_node_cache::store::{LockState, Rejection, Store, StoredEntry};

use super::size::format_size;
use super::{EXIT_OK, KeyArgs, ReadOnlyArgs, StoreArgs, output};

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
FINGERPRINT is `current` for artifacts this build's engine loads, `stale` for those of another
wasmtime version, CPU, settings or MAC mode (`prune --stale` removes them); a store holding several
fingerprints lists each with its count. --read-only-store adds a block per baked store. LOCK is
probed without waiting. Changes nothing, never creates a store.

Exit status: 0 shown; 2 could not run (no store at that path, store refused, unreadable).";

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

/// One artifact as `status` shows it.
struct Row {
    entry: StoredEntry,
    current: bool,
    created_unix: Option<u64>,
    /// The trailer check: intact and naming this file's hash and fingerprint, or why not.
    header: Result<(), String>,
    /// The trailer is of the other authentication mode: not a defect, just not checkable here.
    other_mode: bool,
    /// Why the loader refuses the file before reading it (foreign owner, writable by others).
    refused: Option<Rejection>,
}

/// One store as `status` shows it: the writable one, or a read-only one.
struct StoreView {
    dir: String,
    read_only: bool,
    /// `None` for a read-only store, which is never locked.
    lock: Option<LockState>,
    fingerprint: Fingerprint,
    keyed: bool,
    temp_files: usize,
    rows: Vec<Row>,
}

impl StoreView {
    fn collect(store: &Store) -> anyhow::Result<StoreView> {
        let dir = store.dir().display().to_string();
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
            .map_err(|e| anyhow::anyhow!("{dir}: cannot list the store: {e}"))?;
        let temp_files = store
            .temp_file_count()
            .map_err(|e| anyhow::anyhow!("{dir}: cannot list the store: {e}"))?;
        let rows = entries.into_iter().map(|entry| Row::collect(store, entry)).collect();
        Ok(StoreView {
            dir,
            read_only: store.is_read_only(),
            lock,
            fingerprint: store.fingerprint(),
            keyed: store.is_keyed(),
            temp_files,
            rows,
        })
    }

    fn total_bytes(&self) -> u64 {
        self.rows.iter().map(|r| r.entry.size).sum()
    }

    fn current(&self) -> usize {
        self.rows.iter().filter(|r| r.current).count()
    }

    fn bad(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| (r.header.is_err() && !r.other_mode) || r.refused.is_some())
            .count()
    }

    fn writable(&self) -> usize {
        self.rows.iter().filter(|r| r.entry.has_write_bit()).count()
    }

    /// Each fingerprint the store holds with its number of files, this engine's first.
    fn fingerprints(&self) -> Vec<(Fingerprint, usize)> {
        let mut counts: std::collections::BTreeMap<Fingerprint, usize> = Default::default();
        for r in &self.rows {
            *counts.entry(r.entry.key.fingerprint).or_default() += 1;
        }
        let mut v: Vec<(Fingerprint, usize)> = counts.into_iter().collect();
        v.sort_by_key(|(fp, _)| *fp != self.fingerprint);
        v
    }
}

impl Row {
    fn collect(store: &Store, entry: StoredEntry) -> Row {
        let refused = entry.trust_problem(|uid| store.trusts_owner(uid));
        let trailer = store.read_trailer(&entry.key);
        let other_mode = trailer.as_ref().is_err_and(Rejection::is_other_mode);
        let header = match &trailer {
            Err(e) => Err(e.to_string()),
            Ok(t) if t.source_hash != entry.key.source || t.fingerprint != entry.key.fingerprint => {
                Err("trailer names another hash or fingerprint than the file name".into())
            }
            Ok(_) => Ok(()),
        };
        Row {
            current: entry.key.fingerprint == store.fingerprint(),
            created_unix: trailer.ok().map(|t| t.created_unix),
            header,
            other_mode,
            refused,
            entry,
        }
    }

    fn header_text(&self) -> String {
        match (&self.refused, &self.header) {
            (Some(r), _) => format!("REFUSED: {r}"),
            (None, Ok(())) if self.entry.has_write_bit() => {
                format!("ok, but writable (mode {:03o}): chmod a-w", self.entry.mode)
            }
            (None, Ok(())) => "ok".to_string(),
            (None, Err(_)) if self.other_mode => "other MAC mode, not checked".to_string(),
            (None, Err(e)) => format!("BAD: {e}"),
        }
    }
}

/// Runs `status`; returns the exit status.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let writable = args.store.open_existing(Some(&args.key))?;
    let mut views = vec![StoreView::collect(&writable)?];
    for ro in args.read_only.open(&args.key)? {
        views.push(StoreView::collect(&ro)?);
    }
    if args.json {
        let (main, read_only) = views.split_first().expect("the writable store is first");
        let mut doc = render_json(main);
        doc["read_only_stores"] = read_only.iter().map(render_json).collect();
        println!("{doc}");
    } else {
        let blocks: Vec<String> = views.iter().map(render_text).collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(EXIT_OK)
}

fn render_json(s: &StoreView) -> Value {
    let (lock_name, holder) = match s.lock {
        None => ("none (read-only store)", None),
        Some(LockState::Free) => ("free", None),
        Some(LockState::Shared) => ("shared", None),
        Some(LockState::Exclusive { last_holder }) => ("exclusive", last_holder),
    };
    let entries: Vec<Value> = s
        .rows
        .iter()
        .map(|r| {
            json!({
                "hash": hex::encode(r.entry.key.source),
                "file": r.entry.path.display().to_string(),
                "size": r.entry.size,
                "fingerprint": r.entry.key.fingerprint.to_hex(),
                "current": r.current,
                "created_unix": r.created_unix,
                "created": r.created_unix.map(output::format_unix_utc),
                "header_ok": r.header.is_ok(),
                "header_error": r.header.as_ref().err(),
                "other_mode": r.other_mode,
                "uid": r.entry.uid,
                "mode": format!("{:03o}", r.entry.mode),
                "writable": r.entry.has_write_bit(),
                "refused": r.refused.as_ref().map(ToString::to_string),
            })
        })
        .collect();
    let fingerprints: Vec<Value> = s
        .fingerprints()
        .iter()
        .map(|(fp, n)| json!({"fingerprint": fp.to_hex(), "files": n, "current": *fp == s.fingerprint}))
        .collect();
    json!({
        "path": s.dir,
        "read_only": s.read_only,
        "lock": lock_name,
        "lock_holder": holder,
        "fingerprint": s.fingerprint.to_hex(),
        "keyed": s.keyed,
        "artifacts": s.rows.len(),
        "current": s.current(),
        "stale": s.rows.len() - s.current(),
        "bad_headers": s.bad(),
        "writable": s.writable(),
        "total_bytes": s.total_bytes(),
        "temp_files": s.temp_files,
        "fingerprints": fingerprints,
        "entries": entries,
    })
}

fn render_text(s: &StoreView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if s.keyed { "MAC mode" } else { "plain mode" };
    let (bad, writable) = (s.bad(), s.writable());
    if s.read_only {
        let _ = writeln!(out, "read-only store: {}", s.dir);
    } else {
        let _ = writeln!(out, "store:        {}", s.dir);
    }
    if let Some(lock) = &s.lock {
        let _ = writeln!(out, "lock:         {lock}");
    }
    let _ = writeln!(out, "fingerprint:  {} (this build's engine, {mode})", s.fingerprint);
    let _ = writeln!(
        out,
        "artifacts:    {} ({} current, {} stale), {}{}{}{}",
        s.rows.len(),
        s.current(),
        s.rows.len() - s.current(),
        format_size(s.total_bytes()),
        if bad > 0 {
            format!("; {bad} bad or refused")
        } else {
            String::new()
        },
        if writable > 0 {
            format!(
                "; {writable} writable (run `chmod a-w` on them: a write into a loaded artifact changes running nodes)"
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
    let fingerprints = s.fingerprints();
    if fingerprints.len() > 1 || fingerprints.first().is_some_and(|(fp, _)| *fp != s.fingerprint) {
        for (fp, n) in &fingerprints {
            let mark = if *fp == s.fingerprint { "  <- this engine" } else { "" };
            let _ = writeln!(out, "  fingerprint {fp}: {n} file(s){mark}");
        }
        if s.current() == 0 && s.read_only {
            let _ = writeln!(
                out,
                "  none for this engine: built for another CPU, wasmtime version, engine settings or MAC mode"
            );
        }
    }
    if s.rows.is_empty() {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<64}  {:>9}  {:<17}  {:<23}  HEADER",
        "HASH", "SIZE", "FINGERPRINT", "CREATED"
    );
    for r in &s.rows {
        let fp = if r.current {
            "current".to_string()
        } else {
            format!("stale {}", &r.entry.key.fingerprint.to_hex()[..8])
        };
        let created = r
            .created_unix
            .map(output::format_unix_utc)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<64}  {:>9}  {:<17}  {:<23}  {}",
            hex::encode(r.entry.key.source),
            format_size(r.entry.size),
            fp,
            created,
            r.header_text()
        );
    }
    out
}
