//! `status`: what the store holds and whether it is healthy; reads every artifact this build loads
//! (trailers only with `--quick`) and changes nothing.

use crate::operator::status::{ArtifactStatus, ReadOnlyStatus, StoreStatus};
use clap::Args;

use super::size::format_size;
use super::{EXIT_OK, EXIT_PROBLEM, KeyArgs, LockArgs, ReadOnlyArgs, StoreArgs, output};

/// Text after `status`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache status
  wasm-node-cache status --store /var/cache/node-wasm
  wasm-node-cache status --json | jq '.entries[] | select(.current | not) | .hash'

Reads every artifact this build loads as a start-up does, trailer and payload (HEADER ok = the
trailer is intact and names this file's hash and fingerprint, and the payload matches its checksum;
`other MAC mode` = written by a node with(out) --key-file, not checkable here); --quick reads only
each artifact's 128-byte trailer. REFUSED = the node will not load the file (owned by another uid,
or writable by group or others); `writable` = loads, but has a write bit (stores written before
artifacts were published read-only), so a careless `cp` could write into a loaded artifact.
FINGERPRINT is `current` for artifacts this build's engine loads, a CPU profile's name (x86-64-v3)
for this build's portable artifacts (a bake for other hosts; each group says whether this CPU runs
it, by wasmtime's own check), `MAC mode` (seen without the key) for this build's artifacts written with --key-file (a node with the
key loads them; `prune --stale` keeps them), `stale` for those of another wasmtime version, settings
or MAC mode (`prune --stale` removes them, never portable ones); a store holding several fingerprints lists
each with its count. --read-only-store adds a block per baked store. LOCK is
probed without waiting; a lock held exclusively is then waited for up to --lock-timeout, past which
it is a problem (a hung holder delays every start that long). Changes nothing, never creates a
store.

Files that are not the store's (any name but `lock`, `.tmp-*` and exact lowercase artifact names,
such as an artifact name in uppercase) are listed as `foreign` (JSON `foreign_files`). A
--read-only-store that is missing or refused is shown with its error (JSON: `path`, `read_only`,
`error`) and the others are still shown.

The first line is the verdict: `healthy`, or `UNHEALTHY:` and each problem (a bad or refused
artifact of this build, a writable artifact, temp files, foreign files, a loose lock file, a lock
held exclusively past --lock-timeout, a read-only store not usable or holding nothing for this
engine, and with --whitelist each listed component not stored for this engine).

With --metrics-file the verdict is also written as gauges; when status cannot run (exit 2), the file
says `healthy 0`, so an earlier healthy file never stays behind.

Exit status: 0 healthy; 1 shown, but unhealthy (the verdict says why); 2 could not run (no store at
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
    /// The node's whitelist (wasm.conf format): also say how many of its hashes the stores hold for this engine
    #[arg(long, value_name = "FILE")]
    whitelist: Option<std::path::PathBuf>,
    /// Also write the report's numbers to FILE in the Prometheus text format (atomically), for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    pub(super) metrics_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    lock: LockArgs,
    /// The bound the store keeps itself within, shown beside its size (warm's --max-size) [default: $WASM_NODE_CACHE_MAX_SIZE, else 10G]
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    max_size: Option<u64>,
    /// Read only each artifact's trailer, not its payload (a flipped byte in a payload then goes unseen)
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

/// How `status`'s table describes one artifact's trailer and trust.
fn header_text(a: &ArtifactStatus) -> String {
    match (&a.refused, a.header_error.as_ref().or(a.payload_error.as_ref())) {
        (Some(r), _) => format!("REFUSED: {r}"),
        (None, None) if a.writable => format!("ok, but writable (mode {:03o}): chmod a-w", a.mode),
        (None, None) => "ok".to_string(),
        (None, Some(_)) if a.other_mode => "other MAC mode, not checked".to_string(),
        (None, Some(e)) => format!("BAD: {e}"),
    }
}

/// Runs `status`; returns the exit status.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let max_size = match args.max_size {
        Some(bytes) => bytes,
        None => crate::config::max_size_from_env()
            .map_err(anyhow::Error::msg)?
            .unwrap_or(crate::config::DEFAULT_MAX_SIZE),
    };
    let timeout = args.lock.timeout()?;
    let store = args
        .store
        .open_existing_with(Some(&args.key), args.read_only.resolved(), |b| {
            b.lock_timeout(timeout).max_size(Some(max_size))
        })?;
    let mut report = store.health(!args.quick)?;
    if let Some(file) = &args.whitelist {
        report = report.with_whitelist(&crate::config::read_whitelist_file(file)?);
    }
    if let Some(file) = &args.metrics_file {
        super::metrics::write(file, &super::metrics::of_status(&report))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.verdict());
        if let Some(c) = &report.whitelist {
            println!(
                "whitelist:    {} of {} listed component(s) stored for this engine{}{}",
                c.stored,
                c.listed,
                if c.mac_mode.is_empty() {
                    String::new()
                } else {
                    format!("; {} in MAC mode (not checked without the key)", c.mac_mode.len())
                },
                if c.missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; missing: {}",
                        c.missing.iter().map(hex::encode).collect::<Vec<_>>().join(", ")
                    )
                }
            );
        }
        let blocks: Vec<String> = std::iter::once(render_text(&report.store))
            .chain(report.read_only_stores.iter().map(|ro| match ro {
                ReadOnlyStatus::Open(view) => render_text(view),
                ReadOnlyStatus::Unusable { path, error, .. } => {
                    format!(
                        "read-only store: {}\nNOT USABLE:   {}\n",
                        path.display(),
                        output::error_chain(error)
                    )
                }
            }))
            .collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(if report.healthy { EXIT_OK } else { EXIT_PROBLEM })
}

fn render_text(s: &StoreStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if s.keyed { "MAC mode" } else { "plain mode" };
    if s.read_only {
        let _ = writeln!(out, "read-only store: {}", s.path.display());
    } else {
        let _ = writeln!(out, "store:        {}", s.path.display());
    }
    if let Some(lock) = &s.lock {
        let _ = writeln!(out, "lock:         {lock}");
    }
    if let Some(problem) = &s.lock_problem {
        let _ = writeln!(
            out,
            "lock file:    {problem}; the next start that finds it held by no process of this uid or root replaces it with a new file only this uid can open"
        );
    }
    if !s.read_only && !s.marker {
        let _ = writeln!(
            out,
            "marker:       none (a store made by an earlier version); the next warm, prune or clear writes CACHEDIR.TAG"
        );
    }
    let _ = writeln!(out, "fingerprint:  {} (this build's engine, {mode})", s.fingerprint);
    let _ = writeln!(
        out,
        "artifacts:    {} ({} current{}, {}{} stale), {}{}{}{}",
        s.artifacts,
        s.current,
        if s.portable > 0 {
            format!(", of which {} portable", s.portable)
        } else {
            String::new()
        },
        if s.mac_mode > 0 {
            format!("{} of this build in MAC mode, ", s.mac_mode)
        } else {
            String::new()
        },
        s.stale,
        match s.max_size {
            Some(max) => format!("{} of {}", format_size(s.total_bytes), format_size(max)),
            None => format_size(s.total_bytes),
        },
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
                (false, None, _) if f.mac_mode => {
                    "  this build in MAC mode: a node with the key loads them, `prune --stale` keeps them".to_string()
                }
                (false, None, _) => "  stale".to_string(),
            };
            let _ = writeln!(out, "  fingerprint {}: {} file(s){mark}", f.fingerprint, f.files);
        }
        if s.current == 0 && s.read_only {
            let _ = writeln!(
                out,
                "  none for this engine: built by another build of the node, wasmtime version, engine settings, CPU or MAC mode"
            );
            if let Some(why) = &s.refusal {
                let _ = writeln!(out, "  wasmtime says of one of them: {why}");
            }
        }
    }
    for f in &s.foreign_files {
        let (file, size) = super::size::foreign_file(f);
        let _ = writeln!(
            out,
            "foreign:      {file} ({size}): not a file of this store, never loaded; {}",
            f.removal()
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
        } else if r.mac_mode {
            "MAC mode".to_string()
        } else {
            format!("stale {}", &r.fingerprint.to_hex()[..8])
        };
        let _ = writeln!(
            out,
            "{:<64}  {:>9}  {:<17}  {:<23}  {}",
            hex::encode(r.hash),
            format_size(r.size),
            fp,
            r.created.map_or_else(|| "-".to_string(), |d| d.to_string()),
            header_text(r)
        );
    }
    out
}
