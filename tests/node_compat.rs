//! The node's own code, as it uses `WasmNodeCache`: if a change here stops compiling or behaving
//! the same, it would break the node.
//!
//! The node builds its executor's parameters from the struct's public fields for every message,
//! calls the associated functions by value, and its unit tests call `WasmNodeCache::new()` from
//! parallel threads of one test binary. `new()` reads `./config/wasm`, `./config/wasm.conf` and the
//! default store (`$WASM_NODE_CACHE_DIR`): the tests that call it run as child processes of this
//! binary, each with its own store in the environment, so nothing here touches the real default
//! store and no test changes the environment of a running process.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};

use wasm_node_cache::WasmNodeCache;
use wasmtime::component::Component;

/// Typed like the node's `tvm_vm::ExecuteParams`, restricted to the fields filled from the cache.
struct ExecuteParams {
    wasm_binary_root_path: String,
    wasm_hash_whitelist: HashSet<[u8; 32]>,
    wasm_engine: Option<wasmtime::Engine>,
    wasm_component_cache: HashMap<[u8; 32], Component>,
}

/// What the block builder does for every message it executes.
fn execute_params(wasm_cache: &WasmNodeCache) -> ExecuteParams {
    ExecuteParams {
        wasm_binary_root_path: wasm_cache.wasm_binary_root_path.clone(),
        wasm_hash_whitelist: wasm_cache.wasm_hash_whitelist.clone(),
        wasm_engine: Some(wasm_cache.wasm_engine.clone()),
        wasm_component_cache: wasm_cache.wasm_component_cache.clone(),
    }
}

/// How the executor runs a component from the parameters: engine and component both from there.
fn run_adder(params: &ExecuteParams, a: i32, b: i32) -> i32 {
    let engine = params.wasm_engine.as_ref().expect("engine set");
    let adder = params
        .wasm_component_cache
        .get(&common::adder_hash())
        .expect("adder in the cache");
    common::call_add(engine, adder, a, b)
}

/// Runs the ignored test `name` of this binary in a child process whose default store is `store`,
/// from the repository root (where `./config/wasm` is), and returns its output.
fn in_child(name: &str, store: &Path) -> String {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .current_dir(common::repo())
        .env("WASM_NODE_CACHE_DIR", store)
        .env("WNC_NODE_CHILD", "1")
        .env_remove("WASM_NODE_CACHE_KEY_FILE")
        .output()
        .expect("spawn child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    assert!(text.contains("1 passed"), "child {name} ran nothing:\n{text}");
    text
}

fn is_child() -> bool {
    std::env::var_os("WNC_NODE_CHILD").is_some()
}

#[test]
fn the_node_builds_its_execute_params_from_the_fields() {
    let store = tempfile::tempdir().expect("tempdir");
    in_child("node_main_child", &store.path().join("store"));
    // The second start of the node loads everything it stored the first time.
    let out = in_child("node_main_child", &store.path().join("store"));
    assert!(out.contains("FROM_STORE all"), "{out}");
}

#[test]
#[ignore = "child process of the_node_builds_its_execute_params_from_the_fields"]
fn node_main_child() {
    if !is_child() {
        return;
    }
    let wasm_cache = WasmNodeCache::new().expect("node start-up");
    let params = execute_params(&wasm_cache);
    assert_eq!(params.wasm_binary_root_path, "./config/wasm");
    assert_eq!(
        params.wasm_hash_whitelist,
        WasmNodeCache::get_wasm_hash_whitelist().expect("whitelist")
    );
    assert_eq!(params.wasm_component_cache.len(), params.wasm_hash_whitelist.len());
    assert_eq!(run_adder(&params, 40, 2), 42);
    // A clone is what every message gets: it must run the same code.
    let again = execute_params(&wasm_cache.clone());
    assert_eq!(run_adder(&again, -7, 7), 0);
    let r = wasm_cache.report();
    assert_eq!((r.skipped, r.rejected), (0, 0), "{r}");
    if r.from_store == params.wasm_hash_whitelist.len() {
        println!("FROM_STORE all");
    }
}

#[test]
fn the_seed_functions_take_their_arguments_by_value() {
    // `cargo test` runs in the package root, where the node's ./config is.
    let whitelist: HashSet<[u8; 32]> = WasmNodeCache::get_wasm_hash_whitelist().expect("whitelist");
    let root: String = "./config/wasm".to_string();
    let engine: wasmtime::Engine = WasmNodeCache::init_wasm_engine().expect("engine");
    let (seed_engine, components): (wasmtime::Engine, HashMap<[u8; 32], Component>) =
        WasmNodeCache::init_wasm_engine_and_precompile_components(whitelist.clone(), root).expect("seed path");
    assert_eq!(components.len(), whitelist.len());
    let adder = &components[&common::adder_hash()];
    assert_eq!(common::call_add(&seed_engine, adder, 2, 3), 5);
    // The node's engine settings are the seed's: an artifact of one loads in the other.
    let artifact = seed_engine
        .precompile_component(&common::shipped("adder"))
        .expect("precompile");
    // SAFETY: the bytes were produced just above by an engine with the same configuration.
    let reloaded = unsafe { Component::deserialize(&engine, &artifact) }.expect("same settings");
    assert_eq!(common::call_add(&engine, &reloaded, 20, 22), 42);
}

#[test]
fn eight_threads_starting_at_once_compile_each_component_once() {
    let store = tempfile::tempdir().expect("tempdir");
    let out = in_child("threads_child", &store.path().join("store"));
    assert!(out.contains("THREADS ok"), "{out}");
}

#[test]
#[ignore = "child process of eight_threads_starting_at_once_compile_each_component_once"]
fn threads_child() {
    if !is_child() {
        return;
    }
    const THREADS: usize = 8;
    let whitelisted = WasmNodeCache::get_wasm_hash_whitelist().expect("whitelist").len();
    let round = || {
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    WasmNodeCache::new().expect("every thread starts")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread did not panic"))
            .collect::<Vec<_>>()
    };
    let first = round();
    let compiled: usize = first.iter().map(|c| c.report().compiled).sum();
    assert_eq!(compiled, whitelisted, "each component compiled once in all threads");
    for cache in &first {
        let r = cache.report();
        assert_eq!(r.from_store + r.compiled, whitelisted, "{r}");
        assert_eq!((r.skipped, r.rejected), (0, 0), "{r}");
        assert_eq!(run_adder(&execute_params(cache), 1, 2), 3);
    }
    for cache in round() {
        let r = cache.report();
        assert_eq!(r.from_store, whitelisted, "second round loads everything: {r}");
        assert_eq!(run_adder(&execute_params(&cache), 3, 4), 7);
    }
    println!("THREADS ok");
}
