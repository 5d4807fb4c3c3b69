//! The generated `mixer` component (tests/common/mixer.rs), as shipped in config/wasm: compiled at
//! a first start-up, loaded from the store at the second, and the same results both times.

use crate::common;

use std::collections::HashSet;

use wasm_node_cache::WasmNodeCache;
use wasm_node_cache::config::sha256;

#[test]
fn mixer_runs_after_compilation_and_after_a_restart_from_the_store() {
    let hash = sha256(&common::mixer::component());
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the mixer in the binary root: the committed file, not the generator's output, is what a
    // node would load (config_matches_sources checks the two are equal).
    let root = dir.path().join("wasm");
    std::fs::create_dir(&root).expect("mkdir");
    let name = hex::encode(hash);
    std::fs::copy(common::repo().join("config/wasm").join(&name), root.join(&name)).expect("copy the mixer");
    let start = || {
        WasmNodeCache::builder()
            .binary_root(&root)
            .whitelist(HashSet::from([hash]))
            .store(dir.path().join("store"))
            .build()
            .expect("start-up")
    };
    let seeds = [0, 1, 42, u64::MAX];
    let expected = seeds.map(common::mixer::expected_mix);
    assert_ne!(expected[0], expected[1], "the mixer depends on its seed");

    let first = start();
    let r = first.report();
    assert_eq!((r.from_store, r.compiled, r.rejected, r.skipped), (0, 1, 0, 0), "{r}");
    let mixer = first.wasm_component_cache.get(&hash).expect("the mixer is loaded");
    assert_eq!(seeds.map(|s| common::call_mix(&first.wasm_engine, mixer, s)), expected);
    drop(first);

    let second = start();
    let r = second.report();
    assert_eq!((r.from_store, r.compiled, r.rejected, r.skipped), (1, 0, 0, 0), "{r}");
    let mixer = second.wasm_component_cache.get(&hash).expect("the mixer is loaded");
    assert_eq!(seeds.map(|s| common::call_mix(&second.wasm_engine, mixer, s)), expected);
}
