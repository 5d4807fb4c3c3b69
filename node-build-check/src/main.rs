//! Builds this crate the way a node builds it and checks that nothing differs from the crate's
//! own CLI: run by `.ci/run` as
//!
//! ```sh
//! cargo build --bin wasm-node-cache
//! cargo run -p node-build-check -- --cli target/debug/wasm-node-cache
//! ```
//!
//! A node depends on `wasm-node-cache` and on `wasmtime = "48"` with wasmtime's default features;
//! cargo unifies them, so in the node's build wasmtime has `gc`, `threads`,
//! `component-model-async`, ... on, which the crate's own build leaves off. This package has
//! exactly that dependency line. It checks, each step against the CLI built by the root package:
//!
//! 1. this build really has wasmtime's defaults (an unconfigured engine accepts threads, GC types
//!    and component-model async), so the check below proves something;
//! 2. the node's engine fingerprint and every CPU profile's equal `wasm-node-cache host --json`'s;
//! 3. a component that needs a proposal the node pins off (threads) is refused, naming it;
//! 4. a bake the CLI made (`warm --cpu-profile native,...`) serves `WasmNodeCache::new()` here from
//!    a read-only store, compiling nothing;
//! 5. so does a bake of one portable profile alone (`x86-64-v2`, which every x86-64 host runs).
//!
//! Exits 0 when every step holds, 1 naming the first that does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use wasm_node_cache::{CpuProfile, Fingerprint, WasmNodeCache};
use wasmtime::WasmFeatures;
use wasmtime::component::Component;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        // The node's start-up, in a child process with the environment the parent chose.
        Some("start") => start(),
        Some("--cli") => match args.get(1) {
            Some(cli) => check(Path::new(cli)),
            None => Err(anyhow::anyhow!("--cli needs the path of the wasm-node-cache binary")),
        },
        _ => Err(anyhow::anyhow!("usage: node-build-check --cli PATH")),
    };
    if let Err(e) = result {
        eprintln!("node-build-check: FAILED: {e:#}");
        std::process::exit(1);
    }
}

/// The repository (the workspace root), where `config/` is.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(cli: &Path) -> Result<()> {
    ensure!(
        cli.is_file(),
        "{}: no such binary (cargo build --bin wasm-node-cache)",
        cli.display()
    );

    // 1. The build under test has wasmtime's default features.
    let defaults = wasmtime::Engine::default();
    let f = defaults.get_wasm_features();
    ensure!(
        f.contains(WasmFeatures::THREADS) && f.contains(WasmFeatures::GC_TYPES) && defaults.get_concurrency_support(),
        "wasmtime in this build lacks its default features (threads, gc, component-model-async): the check would prove nothing"
    );
    println!("ok: wasmtime here has its default cargo features (threads, GC types, concurrency support on by default)");

    // 2. Fingerprints.
    let engine = wasm_node_cache::init_wasm_engine()?;
    let mut mine = vec![("native".to_owned(), Fingerprint::of(&engine, false).to_hex())];
    for &p in CpuProfile::portable() {
        mine.push((p.name().to_owned(), Fingerprint::of(&p.engine()?, false).to_hex()));
    }
    let host = run_json(cli, &["host", "--json"])?;
    let mut theirs = vec![("native".to_owned(), text(&host["fingerprint"])?)];
    for p in host["profiles"].as_array().context("host --json: no profiles")? {
        let name = text(&p["name"])?;
        if name != "native" {
            theirs.push((name, text(&p["fingerprint"])?));
        }
    }
    for (name, fp) in &mine {
        println!("  {name:<10} {fp}");
    }
    ensure!(
        mine == theirs,
        "fingerprints differ: this build {mine:?}, the CLI's `host --json` {theirs:?}"
    );
    println!("ok: the node's engine and every CPU profile have the CLI's fingerprints");

    // 3. A proposal pinned off is refused, by name.
    let threads = "(component (core module (memory 1 1 shared)))";
    match Component::new(&engine, threads) {
        Ok(_) => bail!("init_wasm_engine() accepted a component with a shared memory (threads)"),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(
                msg.contains("thread"),
                "refused, but the error does not name threads: {msg}"
            );
            println!("ok: a component that needs threads is refused: {msg}");
        }
    }

    // 4. and 5. Bakes made by the CLI serve this build.
    let scratch = tempfile::tempdir()?;
    let whitelist = count_whitelisted()?;
    let bake = scratch.path().join("bake");
    let mut all = vec!["native"];
    all.extend(CpuProfile::portable().iter().map(|p| p.name()));
    cli_warm(cli, &bake, &all.join(","))?;
    let report = node_start(&bake, &scratch.path().join("store-1"))?;
    expect_served(&report, whitelist, "a bake of native and every portable profile")?;

    if let Some(v2) = CpuProfile::portable().iter().find(|p| p.name() == "x86-64-v2") {
        let portable = scratch.path().join("portable");
        cli_warm(cli, &portable, v2.name())?;
        let report = node_start(&portable, &scratch.path().join("store-2"))?;
        expect_served(&report, whitelist, "a bake of x86-64-v2 alone")?;
        println!(
            "   ({} of them from portable artifacts; 0 only where this CPU's native engine is x86-64-v2's)",
            report["from_portable"]
        );
    }
    println!("node-build-check: every check holds");
    Ok(())
}

fn text(v: &Value) -> Result<String> {
    v.as_str()
        .map(str::to_owned)
        .with_context(|| format!("not a string: {v}"))
}

/// Runs the CLI and parses its standard output as JSON.
fn run_json(cli: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(cli).args(args).current_dir(repo()).output()?;
    ensure!(
        out.status.success(),
        "{} {}: {}\n{}",
        cli.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("{} {}: not JSON", cli.display(), args.join(" ")))
}

fn count_whitelisted() -> Result<u64> {
    Ok(wasm_node_cache::config::read_whitelist_file(&repo().join("config/wasm.conf"))?.len() as u64)
}

/// `wasm-node-cache warm` of config/ into `store` for `profiles`, by the CLI.
fn cli_warm(cli: &Path, store: &Path, profiles: &str) -> Result<()> {
    let store = store.to_str().context("temp path is not UTF-8")?;
    let report = run_json(cli, &["warm", "--store", store, "--cpu-profile", profiles, "--json"])?;
    ensure!(
        report["skipped"] == 0,
        "the CLI's bake ({profiles}) skipped components: {report}"
    );
    println!("ok: the CLI baked {profiles} into {store}");
    Ok(())
}

/// `WasmNodeCache::new()` in a child process of this build, in the repository, with `bake` as its
/// read-only store and an empty writable store.
fn node_start(bake: &Path, store: &Path) -> Result<Value> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .arg("start")
        .current_dir(repo())
        .env("WASM_NODE_CACHE_DIR", store)
        .env("WASM_NODE_CACHE_READ_ONLY_DIRS", bake)
        .env_remove("WASM_NODE_CACHE_KEY_FILE")
        .output()?;
    ensure!(
        out.status.success(),
        "WasmNodeCache::new(): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn start() -> Result<()> {
    let cache = WasmNodeCache::new()?;
    println!("{}", serde_json::to_string(cache.report())?);
    Ok(())
}

fn expect_served(report: &Value, whitelisted: u64, what: &str) -> Result<()> {
    ensure!(
        report["compiled"] == 0 && report["skipped"] == 0 && report["from_store"] == whitelisted,
        "{what} did not serve WasmNodeCache::new() in this build: {} from store, {} compiled, {} skipped of {whitelisted}\n{report}",
        report["from_store"],
        report["compiled"],
        report["skipped"]
    );
    println!(
        "ok: {what} serves WasmNodeCache::new() in this build: {whitelisted} from the read-only store, 0 compiled"
    );
    Ok(())
}
