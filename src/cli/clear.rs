//! `clear`: remove every artifact, keep the directory.

use clap::Args;

use super::{LockArgs, StoreArgs, prune};

/// Text after `clear`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache clear
  wasm-node-cache clear --store /var/cache/node-wasm --lock-timeout 5

Removes every artifact (of any fingerprint) and unfinished temp files under the store's exclusive
lock, waiting at most --lock-timeout for a node that is compiling. The directory and its lock file
stay, as do files that are not the store's. Running nodes keep what they loaded; the next start
compiles everything again. Never creates a store.

Exit status: 0 cleared; 1 some file could not be removed (each is named; the rest were removed);
2 could not run (no store at that path, lock not obtained).";

/// Options of `clear`.
#[derive(Args, Debug)]
pub struct ClearArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    lock: LockArgs,
    /// Print one JSON object instead of the lines
    #[arg(long)]
    json: bool,
}

/// Runs `clear`; returns the exit status.
pub fn run(args: ClearArgs) -> anyhow::Result<u8> {
    let timeout = args.lock.timeout()?;
    // Clearing removes every artifact whatever its mode, so it needs no key, and a missing or
    // unreadable key file must not stop an operator from emptying the store.
    let store = args.store.open_existing(None, Vec::new(), timeout)?;
    let report = store.clear()?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(if report.complete() {
            super::EXIT_OK
        } else {
            super::EXIT_PROBLEM
        });
    }
    Ok(prune::print_report(&report))
}
