//! `warm`: one start-up exactly as the node does it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::node::report::Progress;
use crate::{CpuProfile, WasmNodeCache};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{EXIT_OK, EXIT_PROBLEM, KeyArgs, LockArgs, ReadOnlyArgs, StoreArgs, output};

#[derive(Args, Debug)]
pub struct WarmArgs {
    /// Directory of Wasm binaries named by their SHA-256
    #[arg(long, value_name = "DIR", default_value = crate::config::DEFAULT_BINARY_ROOT)]
    wasm_dir: PathBuf,
    /// Whitelist file: one 64-hex SHA-256 per line, `#` comments [default: ./config/wasm.conf]
    #[arg(long, value_name = "FILE", conflicts_with = "all_in_dir")]
    whitelist: Option<PathBuf>,
    /// Whitelist every file in --wasm-dir whose name is 64 lowercase hex digits (a SHA-256)
    #[arg(long)]
    all_in_dir: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Compile in memory only; read and write no store
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    #[command(flatten)]
    read_only: ReadOnlyArgs,
    #[command(flatten)]
    lock: LockArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// CPU profiles to store artifacts for, comma-separated: native (this CPU) and portable ones (x86-64-v2, x86-64-v3, x86-64-v4 on x86_64) for a bake that serves other hosts [default: native]. Given, the command is a bake: it exits 1 unless every artifact asked for is stored
    #[arg(long, value_name = "LIST", value_delimiter = ',', conflicts_with = "no_store")]
    cpu_profile: Option<Vec<CpuProfile>>,
    /// Finish the bake for a container image once it is complete and `verify` finds it sound: no lock file, directory 0555 and files 0444 (readable by a node of any uid, writable by none), fsynced. Exits 1, leaving the bake as it is, when it is incomplete or unsound
    #[arg(long, conflicts_with = "no_store")]
    finish_bake: bool,
    /// Keep the store within SIZE after publishing: the least recently used artifacts unused for 7 days ($WASM_NODE_CACHE_MIN_IDLE) go first, never one this start uses (512K, 500M, 2G, 1T) [default: $WASM_NODE_CACHE_MAX_SIZE, else 10G]
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size, conflicts_with = "no_store")]
    max_size: Option<u64>,
    /// Exit 1 when anything went wrong (a component skipped, an artifact rejected or not stored, a store refused or not read, a bake that did not serve), after printing the report
    #[arg(long)]
    strict: bool,
    /// Also write the report's numbers to FILE in the Prometheus text format (atomically), for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    pub(super) metrics_file: Option<PathBuf>,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

pub fn run(args: WarmArgs) -> anyhow::Result<u8> {
    let mut builder = WasmNodeCache::builder().binary_root(&args.wasm_dir);
    builder = if args.all_in_dir {
        builder.whitelist(crate::config::whitelist_all_in_dir(&args.wasm_dir)?)
    } else {
        builder.whitelist_file(
            args.whitelist
                .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_WHITELIST_FILE)),
        )
    };
    // Without --store the builder takes the default itself, and knows it for one.
    builder = match (&args.store.store, args.no_store) {
        (_, true) => builder.no_store(),
        (Some(dir), false) => builder.store(dir),
        (None, false) => builder,
    };
    for dir in args.read_only.resolved() {
        builder = builder.read_only_store(dir);
    }
    let bake = args.cpu_profile.is_some();
    if args.strict {
        // A read-only store that is missing or serves nothing is a problem even on a start that
        // did not need it: the next host, or the next release, will.
        builder = builder.check_read_only_stores();
    }
    if let Some(bytes) = args.max_size {
        builder = builder.max_size(Some(bytes));
    }
    builder = builder
        .lock_timeout(args.lock.timeout()?)
        .cpu_profiles(args.cpu_profile.unwrap_or_else(|| vec![CpuProfile::Native]));
    if let Some(key) = args.key.resolved() {
        builder = builder.auth_key_file(key);
    }
    // The bar is for a person watching: never in --json output or in a log file.
    let bar: Arc<OnceLock<ProgressBar>> = Arc::default();
    if !args.json && std::io::stderr().is_terminal() {
        let bar = Arc::clone(&bar);
        builder = builder.on_progress(move |p: Progress| show_progress(&bar, p));
    }
    let result = builder.build();
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    let cache = result?;
    let report = cache.report();
    if let Some(file) = &args.metrics_file {
        super::metrics::write(file, &super::metrics::of_warm(report))?;
    }
    if args.json {
        println!("{}", output::report_json(report)?);
    } else {
        print!("{}", output::report_table(report));
    }
    if args.strict {
        let problems = report.problems();
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("error: {p}");
            }
            return Ok(EXIT_PROBLEM);
        }
    }
    let missing = report.not_stored();
    if (bake || args.finish_bake) && !missing.is_empty() {
        // A bake is complete or it fails: an image must not ship with half of it.
        eprintln!(
            "error: incomplete bake: {} artifact(s) asked for were not stored",
            missing.len()
        );
        for m in &missing {
            eprintln!("  {} {}: {}", m.profile, hex::encode(m.hash), m.reason.message());
        }
        return Ok(EXIT_PROBLEM);
    }
    if args.finish_bake {
        return finish(&args.store, &args.key, args.json);
    }
    Ok(EXIT_OK)
}

/// `--finish-bake` after a complete bake: verified as `verify` does, then made read-only.
fn finish(store: &StoreArgs, key: &KeyArgs, json: bool) -> anyhow::Result<u8> {
    let bake = store.open_existing(Some(key), Vec::new(), crate::config::DEFAULT_LOCK_TIMEOUT)?;
    let checked = bake.verify()?;
    if checked.problems() > 0 {
        eprintln!(
            "error: bake not finished: `verify` finds {} problem(s) in {}; run `wasm-node-cache verify --store {}`",
            checked.problems(),
            store.dir().display(),
            store.dir().display()
        );
        return Ok(EXIT_PROBLEM);
    }
    let done = bake.finish_bake()?;
    let line = format!(
        "bake finished: {} artifact(s) verified, read-only for every uid (directory 0555, files 0444), no lock file",
        done.artifacts
    );
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(EXIT_OK)
}

/// Created on the first call, which only comes when something must be compiled: a start-up that
/// loads everything from the store shows no bar at all.
fn show_progress(bar: &OnceLock<ProgressBar>, p: Progress) {
    let bar = bar.get_or_init(|| {
        let style = ProgressStyle::with_template("{spinner} compiling {pos}/{len} components [{bar:30}] {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::new(p.total as u64).with_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    bar.set_length(p.total as u64);
    bar.set_position(p.done as u64);
}
