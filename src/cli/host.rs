//! `host`: this host's triple, the engine's fingerprint and, for each CPU profile, its
//! fingerprint and whether this CPU runs its code. What an operator runs when a bake did not serve.

use crate::operator::host::HostReport;
use clap::Args;

use super::{EXIT_OK, KeyArgs};

/// Text after `host`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache host
  wasm-node-cache host --json | jq -r '.profiles[] | select(.runs_here) | .name'

Prints the triple this binary runs as, this engine's fingerprint (native: every feature this CPU
has) and, for each portable CPU profile (x86-64-v2, -v3, -v4 on x86_64), the fingerprint a bake
made with `warm --cpu-profile` stores its artifacts under and whether this CPU runs them. Whether it
runs is wasmtime's own check: a tiny component compiled for the profile is loaded by this engine.
A start-up serves what its own fingerprint lacks from the best profile that runs here. Compare the
fingerprints with the file names `status --read-only-store DIR` lists. With --key-file (or
$WASM_NODE_CACHE_KEY_FILE) the fingerprints are those of MAC mode. Reads no store.

Exit status: 0 shown; 2 could not run.";

/// Options of `host`.
#[derive(Args, Debug)]
pub struct HostArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// Runs `host`; returns the exit status.
pub fn run(args: HostArgs) -> anyhow::Result<u8> {
    let key = args.key.resolved();
    if let Some(file) = &key {
        // The fingerprints shown are MAC mode's only if the node could use this key.
        crate::config::check_key_file(file)?;
    }
    let keyed = key.is_some();
    let engine = crate::init_wasm_engine()?;
    let doc = HostReport::of(&engine, keyed)?;
    if args.json {
        println!("{}", serde_json::to_string(&doc)?);
        return Ok(EXIT_OK);
    }
    println!("triple:       {}", doc.triple);
    println!(
        "fingerprint:  {} (native, {})",
        doc.fingerprint,
        if keyed { "MAC mode" } else { "plain mode" }
    );
    for p in &doc.profiles {
        let runs = match (&p.refused, p.runs_here) {
            (_, true) => "runs here".to_string(),
            (Some(why), false) => format!("does NOT run here: {why}"),
            (None, false) => "does NOT run here".to_string(),
        };
        println!("  {:<10}  {}  {runs}", p.profile.name(), p.fingerprint);
    }
    Ok(EXIT_OK)
}
