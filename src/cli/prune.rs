//! `prune`: remove stale, unlisted or oldest artifacts under the exclusive lock.

use std::path::PathBuf;

use crate::operator::prune::{PruneOptions, PruneReport};
use clap::Args;

use super::size::{format_size, parse_size};
use super::{EXIT_OK, EXIT_PROBLEM, KeyArgs, LockArgs, StoreArgs};

/// Text after `prune`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache prune --stale                         after a wasmtime upgrade
  wasm-node-cache prune --whitelist config/wasm.conf    drop components no longer whitelisted
  wasm-node-cache prune --max-size 500M                 oldest first until the store fits
  wasm-node-cache prune --stale --whitelist config/wasm.conf --max-size 2G --dry-run

Order: --stale (artifacts of another engine fingerprint: other wasmtime version, settings or MAC
mode, once unused for --min-idle, so that a bake-ahead for the next release survives and the previous
release's artifacts go a week after the upgrade; the portable CPU profiles of this build, see `host`,
are current and kept; and foreign files, any
name but `lock`, `.tmp-*` and exact lowercase artifact names), then --whitelist (hashes not listed), then the oldest remaining artifacts until the store
holds at most --max-size bytes (K, M, G, T are powers of 1024: 500M = 500 MiB). At least one of the
three is required. Also removes unfinished temp files (.tmp-*). Runs under the store's exclusive
lock, waiting at most --lock-timeout for a node that is compiling; a node that already loaded a
removed artifact keeps running (files are unlinked, never truncated). Anything removed that a node
still needs is recompiled at its next start. --dry-run prints what would go and takes no lock.

Exit status: 0 done (also when nothing matched); 1 some file could not be removed (each is named;
the rest were removed); 2 could not run (no store, lock not obtained, unreadable whitelist).";

/// Options of `prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Remove artifacts of other engine fingerprints (this build can never load them; its portable CPU profiles are kept)
    #[arg(long)]
    stale: bool,
    /// Keep only hashes listed in this file (wasm.conf format); remove the others
    #[arg(long, value_name = "FILE")]
    whitelist: Option<PathBuf>,
    /// Then remove the oldest artifacts until the store fits: bytes, or 512K, 500M, 2G, 1T
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Print what would be removed; remove nothing
    #[arg(long)]
    dry_run: bool,
    /// With --stale and no key, remove this build's MAC-mode artifacts too (kept without it: a node in MAC mode still loads them)
    #[arg(long, requires = "stale")]
    force: bool,
    /// With --stale, remove another fingerprint's artifact only once unused (neither loaded nor written) this long: 7d, 36h, 0 [default: $WASM_NODE_CACHE_MIN_IDLE, else 7d]
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    min_idle: Option<std::time::Duration>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    lock: LockArgs,
    /// Print one JSON object instead of the lines
    #[arg(long)]
    json: bool,
}

/// Runs `prune`; returns the exit status.
pub fn run(args: PruneArgs) -> anyhow::Result<u8> {
    if !args.stale && args.whitelist.is_none() && args.max_size.is_none() {
        anyhow::bail!("prune needs at least one of --stale, --whitelist FILE, --max-size SIZE (see --help)");
    }
    let timeout = args.lock.timeout()?;
    let keep = args
        .whitelist
        .as_deref()
        .map(crate::config::read_whitelist_file)
        .transpose()?;
    let min_idle = match args.min_idle {
        Some(d) => d,
        None => crate::config::min_idle_from_env()
            .map_err(anyhow::Error::msg)?
            .unwrap_or(crate::config::DEFAULT_MIN_IDLE),
    };
    let store = args.store.open_existing_with(Some(&args.key), Vec::new(), |b| {
        b.lock_timeout(timeout).min_idle(min_idle)
    })?;
    let report = store.prune(&PruneOptions {
        stale: args.stale,
        keep,
        max_size: args.max_size,
        dry_run: args.dry_run,
        force: args.force,
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(if report.complete() { EXIT_OK } else { EXIT_PROBLEM });
    }
    Ok(print_report(&report))
}

/// One line per removed artifact (hash, fingerprint, size, why), one per file that could not be
/// removed, then the totals; shared with `clear`. Returns the exit status. Full paths of removed
/// files are in the log at -v.
pub fn print_report(report: &PruneReport) -> u8 {
    let dry_run = report.dry_run;
    let verb = if dry_run { "would remove" } else { "removed" };
    for a in &report.removed {
        println!(
            "{verb}  {}  {}  {:>9}  {}",
            hex::encode(a.hash),
            a.fingerprint,
            format_size(a.size),
            a.reason
        );
    }
    for f in &report.foreign_removed {
        println!(
            "{verb}  {}  foreign {}",
            crate::escape::escape_control(&f.file.to_string_lossy()),
            if f.directory { "directory" } else { "file" }
        );
    }
    let mut summary = format!(
        "{}{verb} {} artifact(s), {} {}; {} kept",
        if dry_run { "dry run: " } else { "" },
        report.removed.len(),
        format_size(report.bytes_freed),
        if dry_run { "would be freed" } else { "freed" },
        report.kept
    );
    if !report.foreign_removed.is_empty() {
        summary.push_str(&format!("; {verb} {} foreign file(s)", report.foreign_removed.len()));
    }
    if report.temp_files_removed > 0 {
        summary.push_str(&format!("; removed {} temp file(s)", report.temp_files_removed));
    }
    println!("{summary}");
    if report.kept_other_mode > 0 {
        println!(
            "kept {} artifact(s) of this build in MAC mode: a node with the key loads them, and without the key nothing can be checked (give --key-file, or --force to remove them)",
            report.kept_other_mode
        );
    }
    if report.kept_recent > 0 {
        println!(
            "kept {} artifact(s) of other fingerprints used within --min-idle (a bake-ahead for the next release, or the previous release's still in use)",
            report.kept_recent
        );
    }
    for f in &report.failed {
        println!(
            "FAILED  {}  cannot remove: {}",
            crate::escape::escape_control(&f.file.to_string_lossy()),
            f.error
        );
    }
    if report.complete() { EXIT_OK } else { EXIT_PROBLEM }
}
