//! `verify`: a full check of every artifact this engine would load; changes nothing.

use clap::Args;

use super::size::format_size;
use super::{EXIT_OK, EXIT_PROBLEM, KeyArgs, LockArgs, ReadOnlyArgs, StoreArgs, output};
use crate::operator::verify::{ArtifactCheck, ReadOnlyVerification, StoreVerification};

/// Text after `verify`'s option list: examples, behaviour, exit status.
pub const AFTER_HELP: &str = "\
Examples:
  wasm-node-cache verify
  wasm-node-cache verify --store /var/cache/node-wasm || wasm-node-cache prune --stale --store /var/cache/node-wasm

Checks every artifact of this build's engine fingerprint, and of its portable CPU profiles (a bake's,
served to hosts of other CPUs), exactly as a start-up does: a regular file
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

Exit status: 0 every artifact is sound; 1 at least one is bad, a read-only store is not usable, or
artifacts of this build in MAC mode were not checked (no key); 2 could not run.";

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
    /// Also write the number of problems to FILE in the Prometheus text format (atomically), for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    pub(super) metrics_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the lines
    #[arg(long)]
    json: bool,
}

/// Runs `verify`; returns the exit status.
pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let timeout = args.lock.timeout()?;
    let store = args
        .store
        .open_existing(Some(&args.key), args.read_only.resolved(), timeout)?;
    let report = store.verify()?;
    if let Some(file) = &args.metrics_file {
        super::metrics::write(file, &super::metrics::of_verify(&report))?;
    }
    let code = if report.problems() > 0 { EXIT_PROBLEM } else { EXIT_OK };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(code);
    }
    print_store(&report.store);
    for ro in &report.read_only_stores {
        match ro {
            ReadOnlyVerification::Checked(s) => print_store(s),
            ReadOnlyVerification::Unusable { path, error } => {
                println!(
                    "BAD  read-only store {}: not usable: {}",
                    path.display(),
                    output::error_chain(error)
                );
            }
        }
    }
    Ok(if report.problems() > 0 { EXIT_PROBLEM } else { EXIT_OK })
}

/// `  (x86-64-v2)` for a portable profile's artifact, nothing for a native one.
fn profile_note(a: &ArtifactCheck) -> String {
    if a.profile.is_native() {
        String::new()
    } else {
        format!("  ({})", a.profile)
    }
}

/// One line per artifact this build serves in one store, then a summary.
fn print_store(s: &StoreVerification) {
    let dir = s.path.display();
    for a in &s.artifacts {
        let hash = hex::encode(a.hash);
        match &a.problem {
            None if a.writable => println!(
                "ok   {hash}  {}  but writable (mode {:03o}): run `chmod a-w {}`",
                format_size(a.size),
                a.mode,
                a.file.display()
            ),
            None => println!("ok   {hash}  {}{}", format_size(a.size), profile_note(a)),
            Some(reason) => println!("BAD  {hash}  {}{}  {reason}", format_size(a.size), profile_note(a)),
        }
    }
    // Not loaded by anyone, but listed: an artifact name in another case once passed for the
    // current key while another file was checked.
    for f in &s.foreign_files {
        let (file, size) = super::size::foreign_file(f);
        println!(
            "foreign  {file}  {size}  not a file of this store (never loaded; {})",
            f.removal()
        );
    }
    let bad = s.bad();
    println!(
        "{} artifact(s) of fingerprint {}{} checked in {}{dir}: {} ok, {bad} bad{}{}",
        s.artifacts.len(),
        s.fingerprint,
        if s.artifacts.iter().any(|a| !a.profile.is_native()) {
            " and of this build's portable CPU profiles"
        } else {
            ""
        },
        if s.read_only { "read-only store " } else { "" },
        s.artifacts.len() - bad,
        if s.other_fingerprints == 0 {
            String::new()
        } else if s.read_only {
            format!("; {} of other fingerprints not checked", s.other_fingerprints)
        } else {
            format!(
                "; {} of other fingerprints not checked (`prune --stale` removes them)",
                s.other_fingerprints
            )
        },
        if s.foreign_files.is_empty() {
            String::new()
        } else {
            format!("; {} foreign file(s)", s.foreign_files.len())
        }
    );
    if s.other_mode > 0 {
        println!(
            "NOT CHECKED  {} artifact(s) of this build in MAC mode: a node with the key loads them; give --key-file (the node's key) to check them",
            s.other_mode
        );
    }
}
