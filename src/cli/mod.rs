//! Command-line parsing, logging set-up and exit codes. Each subcommand lives in its own module.

mod output;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command ran and found a problem (for example `verify` found a bad artifact).
#[allow(dead_code)] // used by `verify` once it lands
pub const EXIT_PROBLEM: u8 = 1;
/// Exit status: the command could not run (bad arguments, unreadable configuration).
pub const EXIT_ERROR: u8 = 2;

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 the command ran and found a problem; 2 the command could not run.
Logging: -v for info, -vv for debug, or RUST_LOG=wasm_node_cache=debug.
Store directory: --store, else $WASM_NODE_CACHE_DIR, else $XDG_CACHE_HOME/wasm-node-cache, else ~/.cache/wasm-node-cache.";

/// Keeps a blockchain node's precompiled WebAssembly components in a locked, verified on-disk store.
#[derive(Parser, Debug)]
#[command(name = "wasm-node-cache", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start up exactly as the node does: load from the store, compile what is missing, publish it.
    #[command(after_help = "Examples:\n  \
        wasm-node-cache warm\n  \
        wasm-node-cache warm --wasm-dir /srv/node/config/wasm --whitelist /srv/node/config/wasm.conf --store /var/cache/node-wasm\n  \
        wasm-node-cache warm --wasm-dir ./corpus --all-in-dir --json")]
    Warm(warm::WarmArgs),
}

/// Where the store is: shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Store directory [default: $WASM_NODE_CACHE_DIR, else ~/.cache/wasm-node-cache]
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store directory to use.
    pub fn dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(wasm_node_cache::default_store_dir)
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}

/// Runs the CLI and maps failures to one line on stderr and an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Warm(args) => warm::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
