//! `verify`: a full check of every artifact this engine would load; changes nothing.

use clap::Args;

use super::size::format_size;
use super::{EXIT_OK, EXIT_PROBLEM, KeyArgs, LockArgs, ReadOnlyArgs, StoreArgs};
use wasm_node_cache::store::Store;

/// Text after `verify`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache verify
  wasm-node-cache verify --store /var/cache/node-wasm || wasm-node-cache prune --stale --store /var/cache/node-wasm

Checks every artifact of this build's engine fingerprint exactly as a start-up does: a regular file
owned by this uid and writable by nobody else, trailer, binding to the hash and fingerprint in its
file name, and the checksum of the whole payload. An artifact that passes but has a write bit
is flagged (a write into a loaded artifact changes the nodes running it). Prints one line per
artifact; a bad one is named with the reason. Artifacts of other fingerprints are counted, not
checked (the node never loads them; `prune --stale` removes them). A bad artifact needs no action:
the node refuses it and recompiles at its next start; `prune`/`clear` remove it now if you prefer.
Never modifies the store. Holds the shared lock while checking (as a loading node does) if the
store has a lock file, so it waits for a node that is compiling, at most --lock-timeout.

Files that are not the store's (any name but `lock`, `.tmp-*` and exact lowercase artifact names,
such as an artifact name in uppercase) are listed as `foreign`; no node loads them, and
`prune --stale` removes them. A --read-only-store that is missing or refused is reported as BAD
and the others are still checked.

Exit status: 0 every artifact is sound; 1 at least one is bad, or a read-only store is not usable;
2 could not run.";

/// Options of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    read_only: ReadOnlyArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    lock: LockArgs,
}

/// Runs `verify`; returns the exit status.
pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let deadline = args.lock.deadline()?;
    let store = args.store.open_existing(Some(&args.key))?;
    // The shared lock keeps a prune from unlinking files mid-check. It is only taken when the lock
    // file exists, because taking it would otherwise create the file, and verify writes nothing.
    let _shared = if store.has_lock_file() {
        Some(
            store
                .lock_shared(deadline, "verify the store")
                .map_err(|e| anyhow::anyhow!("{}: cannot verify the store: {e}", store.lock_path().display()))?,
        )
    } else {
        None
    };
    let mut bad = verify_store(&store)?;
    for (dir, ro) in args.read_only.open(&args.key)? {
        match ro {
            Ok(ro) => bad += verify_store(&ro)?,
            Err(e) => {
                bad += 1;
                println!("BAD  read-only store {}: not usable: {e:#}", dir.display());
            }
        }
    }
    Ok(if bad > 0 { EXIT_PROBLEM } else { EXIT_OK })
}

/// Checks every artifact of this engine's fingerprint in `store`, one line each, then a summary;
/// returns how many are bad.
fn verify_store(store: &Store) -> anyhow::Result<usize> {
    let dir = store.dir().display().to_string();
    let entries = store
        .entries()
        .map_err(|e| anyhow::anyhow!("{dir}: cannot list the store: {e}"))?;
    let (current, other): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|e| e.key.fingerprint == store.fingerprint());
    let mut bad = 0;
    for entry in &current {
        let hash = hex::encode(entry.key.source);
        match store.check(&entry.key) {
            Ok(_) if entry.has_write_bit() => println!(
                "ok   {hash}  {}  but writable (mode {:03o}): run `chmod a-w {}`",
                format_size(entry.size),
                entry.mode,
                entry.path.display()
            ),
            Ok(_) => println!("ok   {hash}  {}", format_size(entry.size)),
            Err(reason) => {
                bad += 1;
                // The line below already tells the operator; the log adds the path for -v.
                log::info!("artifact {} is bad: {reason}", entry.path.display());
                println!("BAD  {hash}  {}  {reason}", format_size(entry.size));
            }
        }
    }
    // Not loaded by anyone, but listed: an artifact name in another case once passed for the
    // current key while another file was checked.
    let foreign = store
        .foreign_files()
        .map_err(|e| anyhow::anyhow!("{dir}: cannot list the store: {e}"))?;
    for f in &foreign {
        println!(
            "foreign  {}  {}  not a file of this store (never loaded; `prune --stale` removes it)",
            f.path.display(),
            format_size(f.size)
        );
    }
    println!(
        "{} artifact(s) of fingerprint {} checked in {}{dir}: {} ok, {bad} bad{}{}",
        current.len(),
        store.fingerprint(),
        if store.is_read_only() { "read-only store " } else { "" },
        current.len() - bad,
        if other.is_empty() {
            String::new()
        } else if store.is_read_only() {
            format!("; {} of other fingerprints not checked", other.len())
        } else {
            format!(
                "; {} of other fingerprints not checked (`prune --stale` removes them)",
                other.len()
            )
        },
        if foreign.is_empty() {
            String::new()
        } else {
            format!("; {} foreign file(s)", foreign.len())
        }
    );
    Ok(bad)
}
