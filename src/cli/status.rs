//! `status`: what the store holds, read-only and quick (trailers only, no payload hashing).

use clap::Args;
use serde_json::{Value, json};
use wasm_node_cache::artifact::ArtifactError;
use wasm_node_cache::store::StoredEntry;
use wasm_node_cache::store::maintenance::LockState;

use super::size::format_size;
use super::{EXIT_OK, KeyArgs, StoreArgs, output};

/// Text after `status`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache status
  wasm-node-cache status --store /var/cache/node-wasm
  wasm-node-cache status --json | jq '.entries[] | select(.current | not) | .hash'

Reads only each artifact's 128-byte trailer (HEADER ok = the trailer is intact and names this file's
hash and fingerprint; `other MAC mode` = written by a node with(out) --key-file, not checkable here);
`verify` also checks the payload. FINGERPRINT is `current` for artifacts this build's engine loads,
`stale` for those of another wasmtime version, settings or MAC mode (`prune --stale` removes them).
LOCK is probed without waiting. Changes nothing, never creates the store.

Exit status: 0 shown; 2 could not run (no store at that path, store refused, unreadable).";

/// Options of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

struct Row {
    entry: StoredEntry,
    current: bool,
    created_unix: Option<u64>,
    header: Result<(), String>,
    /// The trailer is of the other authentication mode: not a defect, just not checkable here.
    other_mode: bool,
}

/// True when `reason` is the store's refusal of an artifact written in the other MAC mode. Such
/// artifacts are always stale here (the mode is part of the fingerprint), and calling their
/// header bad would send an operator hunting for corruption that is not there.
fn is_other_mode(reason: &str) -> bool {
    [true, false]
        .into_iter()
        .any(|artifact_keyed| ArtifactError::WrongMode { artifact_keyed }.to_string() == reason)
}

/// Runs `status`; returns the exit status.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let store = args.store.open_existing(Some(&args.key))?;
    let dir = store.dir().display().to_string();
    let lock = store
        .lock_state()
        .map_err(|e| anyhow::anyhow!("{}: cannot probe the lock: {e}", store.lock().path().display()))?;
    let entries = store
        .entries()
        .map_err(|e| anyhow::anyhow!("{dir}: cannot list the store: {e}"))?;
    let temp_files = store
        .temp_file_count()
        .map_err(|e| anyhow::anyhow!("{dir}: cannot list the store: {e}"))?;
    let fingerprint = store.fingerprint();
    let rows: Vec<Row> = entries
        .into_iter()
        .map(|entry| {
            let trailer = store.read_trailer(&entry.key);
            let header = match &trailer {
                Err(e) => Err(e.clone()),
                Ok(t) if t.source_hash != entry.key.source || t.fingerprint != entry.key.fingerprint => {
                    Err("trailer names another hash or fingerprint than the file name".into())
                }
                Ok(_) => Ok(()),
            };
            Row {
                other_mode: header.as_ref().is_err_and(|e| is_other_mode(e)),
                current: entry.key.fingerprint == fingerprint,
                created_unix: trailer.ok().map(|t| t.created_unix),
                header,
                entry,
            }
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.entry.size).sum();
    let current = rows.iter().filter(|r| r.current).count();
    let bad = rows.iter().filter(|r| r.header.is_err() && !r.other_mode).count();

    if args.json {
        let (lock_name, holder) = match lock {
            LockState::Free => ("free", None),
            LockState::Shared => ("shared", None),
            LockState::Exclusive { last_holder } => ("exclusive", last_holder),
        };
        let entries: Vec<Value> = rows
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
                })
            })
            .collect();
        let doc = json!({
            "path": dir,
            "lock": lock_name,
            "lock_holder": holder,
            "fingerprint": fingerprint.to_hex(),
            "keyed": args.key.resolved().is_some(),
            "artifacts": rows.len(),
            "current": current,
            "stale": rows.len() - current,
            "bad_headers": bad,
            "total_bytes": total,
            "temp_files": temp_files,
            "entries": entries,
        });
        println!("{doc}");
        return Ok(EXIT_OK);
    }

    println!("store:        {dir}");
    println!("lock:         {lock}");
    let mode = if args.key.resolved().is_some() {
        "MAC mode"
    } else {
        "plain mode"
    };
    println!("fingerprint:  {fingerprint} (this build's engine, {mode})");
    println!(
        "artifacts:    {} ({current} current, {} stale), {}{}{}",
        rows.len(),
        rows.len() - current,
        format_size(total),
        if bad > 0 {
            format!("; {bad} with a bad trailer")
        } else {
            String::new()
        },
        if temp_files > 0 {
            format!("; {temp_files} unfinished temp file(s), removed by the next warm, prune or clear")
        } else {
            String::new()
        }
    );
    if rows.is_empty() {
        return Ok(EXIT_OK);
    }
    println!();
    println!(
        "{:<64}  {:>9}  {:<17}  {:<23}  HEADER",
        "HASH", "SIZE", "FINGERPRINT", "CREATED"
    );
    for r in &rows {
        let fp = if r.current {
            "current".to_string()
        } else {
            format!("stale {}", &r.entry.key.fingerprint.to_hex()[..8])
        };
        let created = r
            .created_unix
            .map(output::format_unix_utc)
            .unwrap_or_else(|| "-".into());
        let header = match &r.header {
            Ok(()) => "ok".to_string(),
            Err(_) if r.other_mode => "other MAC mode, not checked".to_string(),
            Err(e) => format!("BAD: {e}"),
        };
        println!(
            "{:<64}  {:>9}  {:<17}  {:<23}  {header}",
            hex::encode(r.entry.key.source),
            format_size(r.entry.size),
            fp,
            created
        );
    }
    Ok(EXIT_OK)
}
