//! The operator CLI as a library entry point (feature `cli`, on by default), so that a node can
//! build its bake tool from its own workspace, with its own `Cargo.lock` and wasmtime features:
//! the same engine, the same fingerprints, as the node it bakes for.
//!
//! ```no_run
//! // src/bin/wasm-node-cache.rs in the node's workspace: the whole tool.
//! fn main() -> std::process::ExitCode {
//!     wasm_node_cache::cli::main()
//! }
//! ```
//!
//! Command-line parsing, logging set-up and exit codes live here; each subcommand in its own
//! module, over the crate's public API only.

mod clear;
mod host;
mod logging;
mod metrics;
mod output;
mod prune;
mod size;
mod status;
mod verify;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{ArtifactStore, StoreError};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Exit status: success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: the command ran and found a problem (for example `verify` found a bad artifact).
pub(crate) const EXIT_PROBLEM: u8 = 1;
/// Exit status: the command could not run (bad arguments, unreadable configuration).
pub(crate) const EXIT_ERROR: u8 = 2;

const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache warm                      compile what the store lacks, as a node start-up would
  wasm-node-cache status                    what the store holds
  wasm-node-cache verify                    check every artifact, exit 1 if one is bad
  wasm-node-cache prune --stale             drop artifacts of other wasmtime versions/settings
  wasm-node-cache clear                     empty the store
  wasm-node-cache host                      this CPU, its fingerprint, which portable profiles run here
  wasm-node-cache help <COMMAND>            more on one command

Exit status: 0 success; 1 the command ran and found a problem; 2 the command could not run.
Logging: -v for info, -vv for debug, or RUST_LOG=wasm_node_cache=debug.
Store directory: --store, else $WASM_NODE_CACHE_DIR, else $CACHE_DIRECTORY (systemd's CacheDirectory=),
else $XDG_CACHE_HOME/wasm-node-cache, else ~/.cache/wasm-node-cache (each only when owned by this
user), else $TMPDIR/wasm-node-cache-<uid>. In a directory other users may write too that this user
does not own privately (a volume's mount point: root 0777, root:<gid> 2775), the store is this
user's own wasm-node-cache-<uid> inside it.
MAC key: --key-file, else $WASM_NODE_CACHE_KEY_FILE (authenticated mode: give maintenance the node's key,
or it cannot check the node's artifacts).";

/// Keeps a blockchain node's precompiled WebAssembly components in a locked, verified on-disk store.
#[derive(Parser, Debug)]
#[command(name = "wasm-node-cache", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// How log lines look: auto (journal when stderr is the systemd journal, else text), text, journal (no timestamp, syslog priority), json
    #[arg(long, value_enum, default_value_t = logging::LogFormat::Auto, global = true)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start up exactly as the node does: load from the store, compile what is missing, publish it.
    #[command(after_help = "Examples:\n  \
        wasm-node-cache warm\n  \
        wasm-node-cache warm --wasm-dir /srv/node/config/wasm --whitelist /srv/node/config/wasm.conf --store /var/cache/node-wasm\n  \
        wasm-node-cache warm --wasm-dir ./corpus --all-in-dir --json\n  \
        wasm-node-cache warm --store /opt/wasm-bake --cpu-profile native,x86-64-v2,x86-64-v3,x86-64-v4   (a bake for every CPU)\n\n\
        Exit status: 0 the start-up ran (components that could not be loaded are listed, not fatal);\n\
        1 with --strict, something went wrong (the report says what), or with --cpu-profile, an\n\
        artifact asked for was not stored; 2 it could not run (unreadable or invalid whitelist).")]
    Warm(warm::WarmArgs),
    /// Show the store: path, lock, this engine's fingerprint, every artifact and whether its trailer is sound.
    #[command(after_help = status::AFTER_HELP)]
    Status(status::StatusArgs),
    /// Fully check every artifact of this engine (trailer, key binding, payload checksum); read-only.
    #[command(after_help = verify::AFTER_HELP)]
    Verify(verify::VerifyArgs),
    /// Remove stale, unlisted or oldest artifacts, under the store's exclusive lock.
    #[command(after_help = prune::AFTER_HELP)]
    Prune(prune::PruneArgs),
    /// Remove every artifact, under the store's exclusive lock; the directory stays.
    #[command(after_help = clear::AFTER_HELP)]
    Clear(clear::ClearArgs),
    /// This host's triple, engine fingerprint and CPU profiles (fingerprint, whether this CPU runs them).
    #[command(after_help = host::AFTER_HELP)]
    Host(host::HostArgs),
}

/// Where the store is: shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub(crate) struct StoreArgs {
    /// Store directory [default: $WASM_NODE_CACHE_DIR, else $CACHE_DIRECTORY (systemd), else $XDG_CACHE_HOME/wasm-node-cache, else ~/.cache/wasm-node-cache, else $TMPDIR/wasm-node-cache-<uid>]
    #[arg(long, value_name = "DIR")]
    pub(crate) store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store directory to use.
    pub(crate) fn dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(crate::config::default_store_dir)
    }

    /// Opens the store for inspection or maintenance. Unlike a start-up, never creates it: an
    /// operator who mistyped a path must hear so, not get a fresh empty store.
    ///
    /// `key` (`--key-file`, else `$WASM_NODE_CACHE_KEY_FILE`) selects the authenticated mode, which
    /// changes the fingerprint, so it must match what the node uses or every artifact looks stale.
    /// `None` opens in plain mode whatever the environment says, for commands that never read an
    /// artifact's contents. `read_only` stores are opened by each report, which says which could
    /// not be.
    pub(crate) fn open_existing(
        &self,
        key: Option<&KeyArgs>,
        read_only: Vec<PathBuf>,
        lock_timeout: Duration,
    ) -> anyhow::Result<ArtifactStore> {
        self.open_existing_with(key, read_only, |b| b.lock_timeout(lock_timeout))
    }

    /// [`StoreArgs::open_existing`] with what `configure` sets on the builder besides.
    pub(crate) fn open_existing_with(
        &self,
        key: Option<&KeyArgs>,
        read_only: Vec<PathBuf>,
        configure: impl FnOnce(crate::ArtifactStoreBuilder) -> crate::ArtifactStoreBuilder,
    ) -> anyhow::Result<ArtifactStore> {
        let dir = self.dir();
        let engine = crate::init_wasm_engine().context("cannot create the wasmtime engine")?;
        let mut builder = configure(ArtifactStore::builder(&dir));
        if let Some(file) = key.and_then(KeyArgs::resolved) {
            builder = builder.auth_key_file(file);
        }
        for ro in read_only {
            builder = builder.read_only_store(ro);
        }
        match builder.open_existing(&engine) {
            Ok(store) => Ok(store),
            Err(StoreError::Missing { .. }) => anyhow::bail!(
                "{}: no store here (nothing was created; `wasm-node-cache warm --store {}` creates one)",
                dir.display(),
                dir.display()
            ),
            Err(e) => Err(e.into()),
        }
    }
}

/// Read-only stores (baked artifacts), for the subcommands that read stores.
#[derive(Args, Debug, Clone)]
pub(crate) struct ReadOnlyArgs {
    /// A read-only store searched after --store (repeatable, in order), e.g. artifacts baked into an image [default: $WASM_NODE_CACHE_READ_ONLY_DIRS, colon-separated]
    #[arg(long = "read-only-store", value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

impl ReadOnlyArgs {
    /// The read-only stores, resolved as the node resolves them.
    pub(crate) fn resolved(&self) -> Vec<PathBuf> {
        crate::config::resolve_read_only_stores(self.dirs.clone())
    }
}

/// Bounded wait for the store's lock, shared by the subcommands that take it.
#[derive(Args, Debug, Clone)]
pub(crate) struct LockArgs {
    /// Seconds to wait for the store's lock (held while a node compiles or an operator prunes); then `warm` compiles in memory, other commands give up
    #[arg(long, value_name = "SECS", default_value_t = crate::config::DEFAULT_LOCK_TIMEOUT.as_secs_f64())]
    lock_timeout: f64,
}

impl LockArgs {
    /// The wait as a duration; refuses negative, infinite, NaN and unrepresentably large values.
    pub(crate) fn timeout(&self) -> anyhow::Result<Duration> {
        Duration::try_from_secs_f64(self.lock_timeout).map_err(|_| {
            anyhow::anyhow!(
                "--lock-timeout must be a non-negative number of seconds that fits a duration, not {}",
                self.lock_timeout
            )
        })
    }
}

/// Authenticated mode, for the subcommands that read artifacts.
#[derive(Args, Debug, Clone)]
pub(crate) struct KeyArgs {
    /// MAC key file of an authenticated store (as the node uses) [default: $WASM_NODE_CACHE_KEY_FILE]
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key file: `--key-file`, else `$WASM_NODE_CACHE_KEY_FILE` (as the node resolves it).
    pub(crate) fn resolved(&self) -> Option<PathBuf> {
        crate::config::resolve_key_file(self.key_file.clone())
    }
}

/// Runs the CLI on this process's arguments: parses them, sets up logging, runs the subcommand,
/// prints a failure as one line on stderr, and returns the exit status (0 success, 1 the command
/// ran and found a problem, 2 it could not run).
pub fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `wasm-node-cache status | head` would panic in println! once head
    // exits. Restore the default: the process ends quietly, as `ls | head` does.
    // SAFETY: called first thing in main, before any thread exists; setting a signal's disposition
    // to SIG_DFL installs no handler and touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.log_format);
    let metrics_file = cli.command.metrics_file();
    let result = match cli.command {
        Command::Warm(args) => warm::run(args),
        Command::Status(args) => status::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Prune(args) => prune::run(args),
        Command::Clear(args) => clear::run(args),
        Command::Host(args) => host::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            // No report, so no metrics yet, or ones a later step (finishing a bake) proved wrong:
            // `healthy 0` replaces whatever an earlier run left.
            if let Some((command, path)) = metrics_file
                && let Err(e) = metrics::write(&path, &metrics::of_failure(command))
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

impl Command {
    /// The command's name and its `--metrics-file`, if it has one and it was given.
    fn metrics_file(&self) -> Option<(&'static str, PathBuf)> {
        match self {
            Command::Warm(args) => args.metrics_file.clone().map(|p| ("warm", p)),
            Command::Status(args) => args.metrics_file.clone().map(|p| ("status", p)),
            Command::Verify(args) => args.metrics_file.clone().map(|p| ("verify", p)),
            _ => None,
        }
    }
}
