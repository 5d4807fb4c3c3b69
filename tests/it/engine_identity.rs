//! The node's engine is the same in every build (see node-build-check/ for the build with
//! wasmtime's default features): a proposal it pins off is refused by name, a bake made by an
//! engine that differs says why it does not serve, and the next release can bake into the live
//! store while the current one runs, so the restart into it is warm.

use crate::common;

use std::sync::mpsc;
use std::time::Duration;

use common::{Fixture, run_cli as cli};
use serde_json::Value;
use wasm_node_cache::node::report::Outcome;
use wasm_node_cache::{ArtifactStore, Fingerprint, WasmNodeCache};
use wasmtime::component::Component;

/// A component whose core module declares a shared memory: it needs the threads proposal.
fn threads_component() -> Vec<u8> {
    wat::parse_str("(component (core module (memory 1 1 shared)))").expect("WAT parses")
}

#[test]
fn a_component_needing_threads_is_refused_naming_the_feature() {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let err = Component::new(&engine, threads_component()).expect_err("threads are pinned off");
    assert!(format!("{err:#}").contains("threads"), "{err:#}");
    // Through the node: skipped, with wasmtime's reason.
    let mut fx = Fixture::new();
    let bytes = threads_component();
    let hash = wasm_node_cache::config::sha256(&bytes);
    std::fs::write(fx.root.join(hex::encode(hash)), &bytes).expect("write");
    fx.whitelist.insert(hash);
    let cache = fx.start();
    let entry = cache.report().entry(&hash).expect("entry");
    assert!(
        matches!(&entry.outcome, Outcome::Skipped(why) if why.to_string().contains("threads")),
        "{}",
        cache.report()
    );
}

/// The node's settings with epoch interruption on: one setting apart, which wasmtime checks at
/// load.
fn one_setting_apart() -> wasmtime::Engine {
    let mut config = wasm_node_cache::node_config();
    config.epoch_interruption(true);
    wasmtime::Engine::new(&config).expect("engine")
}

#[test]
fn a_bake_made_by_an_engine_one_setting_apart_says_why_it_does_not_serve() {
    let fx = Fixture::new();
    let bake = fx.dir.path().join("bake");
    let other = ArtifactStore::open(&bake, &one_setting_apart()).expect("bake store");
    let sources: Vec<Vec<u8>> = common::shipped_sources().into_iter().map(|(_, b)| b).collect();
    let refs: Vec<&[u8]> = sources.iter().map(Vec::as_slice).collect();
    for loaded in other.components(&refs) {
        assert!(loaded.expect("compiled").origin.is_compiled());
    }
    let (root, bake_dir) = (fx.root.to_str().expect("utf-8"), bake.to_str().expect("utf-8"));
    let store = fx.store.to_str().expect("utf-8");
    let out = cli(
        fx.dir.path(),
        &[
            "warm",
            "--json",
            "--all-in-dir",
            "--wasm-dir",
            root,
            "--store",
            store,
            "--read-only-store",
            bake_dir,
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (v["from_store"].as_u64(), v["compiled"].as_u64()),
        (Some(0), Some(3)),
        "{v}"
    );
    let why = v["read_only_stores"][0]["refusal"].as_str().unwrap_or_default();
    assert!(
        why.contains("epoch interruption"),
        "wasmtime's reason in the report: {v}"
    );
    assert!(
        stderr.contains("wasmtime says of one of them") && stderr.contains("epoch interruption"),
        "and in the warning: {stderr}"
    );
    let out = cli(
        fx.dir.path(),
        &["status", "--store", store, "--read-only-store", bake_dir],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("epoch interruption"), "status says it too: {shown}");
    let out = cli(
        fx.dir.path(),
        &["status", "--json", "--store", store, "--read-only-store", bake_dir],
    );
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        s["read_only_stores"][0]["refusal"]
            .as_str()
            .is_some_and(|w| w.contains("epoch interruption")),
        "{s}"
    );
}

#[test]
fn the_next_release_bakes_into_the_live_store_and_both_restarts_are_warm() {
    let mut fx = Fixture::new();
    let mixer = common::mixer::component();
    let mixer_hash = wasm_node_cache::config::sha256(&mixer);
    std::fs::write(fx.root.join(hex::encode(mixer_hash)), &mixer).expect("mixer");
    fx.whitelist.insert(mixer_hash);
    let n = fx.whitelist.len() as u64;
    // The running release fills the store.
    assert_eq!(fx.start().report().compiled as u64, n);
    // The next release (one setting apart: another optimization level) bakes into the same live
    // store, in another thread...
    let mut config = wasm_node_cache::node_config();
    config.cranelift_opt_level(wasmtime::OptLevel::SpeedAndSize);
    let next = wasmtime::Engine::new(&config).expect("engine");
    assert_ne!(
        Fingerprint::of(&next, false),
        Fingerprint::of(&wasm_node_cache::init_wasm_engine().expect("engine"), false)
    );
    let (started, compiling) = mpsc::channel();
    let baking = {
        let builder = fx.builder().engine(next.clone()).on_progress(move |p| {
            if p.done == 0 {
                let _ = started.send(());
            }
        });
        std::thread::spawn(move || builder.build().expect("the bake"))
    };
    compiling
        .recv_timeout(Duration::from_secs(30))
        .expect("the bake compiles");
    // ...while the running release restarts, in another process, with a lock timeout far below
    // the bake's compile time: blocked, it would compile in memory.
    let store = fx.store.to_str().expect("utf-8");
    let root = fx.root.to_str().expect("utf-8");
    let out = cli(
        fx.dir.path(),
        &[
            "warm",
            "--json",
            "--all-in-dir",
            "--wasm-dir",
            root,
            "--store",
            store,
            "--lock-timeout",
            "0.2",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["from_store"].as_u64(), v["compiled"].as_u64()),
        (Some(n), Some(0)),
        "the current release restarts warm during the bake: {v}"
    );
    let baked = baking.join().expect("bake thread");
    assert_eq!(baked.report().compiled as u64, n, "{}", baked.report());
    assert_eq!(baked.report().store.written as u64, n, "{}", baked.report());
    // The restart into the next release is warm from its own artifacts.
    let next_start: WasmNodeCache = fx.builder().engine(next).build().expect("start");
    assert_eq!(next_start.report().from_store as u64, n, "{}", next_start.report());
    assert_eq!(common::node_add(&next_start, 40, 2), 42);
    assert_eq!(fx.start().report().from_store as u64, n, "both generations coexist");
}
