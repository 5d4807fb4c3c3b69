//! `warm`: one start-up exactly as the node does it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wasm_node_cache::WasmNodeCache;

use super::{EXIT_OK, StoreArgs, output};

#[derive(Args, Debug)]
pub struct WarmArgs {
    /// Directory of Wasm binaries named by their SHA-256
    #[arg(long, value_name = "DIR", default_value = wasm_node_cache::DEFAULT_BINARY_ROOT)]
    wasm_dir: PathBuf,
    /// Whitelist file: one 64-hex SHA-256 per line, `#` comments [default: ./config/wasm.conf]
    #[arg(long, value_name = "FILE", conflicts_with = "all_in_dir")]
    whitelist: Option<PathBuf>,
    /// Whitelist every file in --wasm-dir whose name is 64 hex digits
    #[arg(long)]
    all_in_dir: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Compile in memory only; read and write no store
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// Seconds to wait for the store's lock before compiling in memory
    #[arg(long, value_name = "SECS", default_value_t = wasm_node_cache::DEFAULT_LOCK_TIMEOUT.as_secs_f64())]
    lock_timeout: f64,
    /// Authenticated mode: 32-byte MAC key file (owner-only), kept outside the store
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

pub fn run(args: WarmArgs) -> anyhow::Result<u8> {
    let mut builder = WasmNodeCache::builder().binary_root(&args.wasm_dir);
    builder = if args.all_in_dir {
        builder.whitelist(wasm_node_cache::whitelist_all_in_dir(&args.wasm_dir)?)
    } else {
        builder.whitelist_file(
            args.whitelist
                .unwrap_or_else(|| PathBuf::from(wasm_node_cache::DEFAULT_WHITELIST_FILE)),
        )
    };
    builder = if args.no_store {
        builder.no_store()
    } else {
        builder.store(args.store.dir())
    };
    if !(args.lock_timeout.is_finite() && args.lock_timeout >= 0.0) {
        anyhow::bail!(
            "--lock-timeout must be a non-negative number of seconds, not {}",
            args.lock_timeout
        );
    }
    builder = builder.lock_timeout(Duration::from_secs_f64(args.lock_timeout));
    if let Some(key) = args.key_file {
        builder = builder.auth_key_file(key);
    }
    let cache = builder.build()?;
    if args.json {
        println!("{}", output::report_json(cache.report()));
    } else {
        print!("{}", output::report_table(cache.report()));
    }
    Ok(EXIT_OK)
}
