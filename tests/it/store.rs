//! The node's start-up, end to end with real components: cold and warm start-ups, engine changes,
//! bad inputs, an unusable store, pruning, and many components at once. Damaged stores (corrupt,
//! truncated, missing, swapped artifacts, failed writes...) are the scenarios of
//! `tests/common/scenarios.rs`, run through both doors by `store_scenarios`.

use crate::common;

use std::collections::HashSet;

use common::{Fixture, call_add};
use wasm_node_cache::config::sha256;
use wasm_node_cache::error::SkipReason;
use wasm_node_cache::node::report::Outcome;
use wasm_node_cache::{Hash32, WasmNodeCache};

fn assert_counts(cache: &WasmNodeCache, from_store: usize, compiled: usize, rejected: usize, skipped: usize) {
    let r = cache.report();
    assert_eq!(
        (r.from_store, r.compiled, r.rejected, r.skipped),
        (from_store, compiled, rejected, skipped),
        "(from_store, compiled, rejected, skipped)\n{r}"
    );
}

/// Every shipped component is loaded and gives the same results as a fresh compilation.
fn assert_runs_like_fresh(cache: &WasmNodeCache) {
    let engine = &cache.wasm_engine;
    for (name, bytes) in common::shipped_sources() {
        let cached = cache
            .wasm_component_cache
            .get(&sha256(&bytes))
            .unwrap_or_else(|| panic!("{name} loaded"));
        common::assert_same_results_as_fresh(engine, &name, cached, &bytes);
    }
}

#[test]
fn cold_then_warm_loads_everything_and_compiles_nothing() {
    let fx = Fixture::new();
    let cold = fx.start();
    assert_counts(&cold, 0, 3, 0, 0);
    assert_eq!(cold.report().store.written, 3);
    assert!(cold.report().store.readable() && cold.report().store.writable());
    let warm = fx.start();
    assert_counts(&warm, 3, 0, 0, 0);
    assert_eq!(warm.wasm_component_cache.len(), 3);
    assert_runs_like_fresh(&warm);
    assert_runs_like_fresh(&cold);
}

#[test]
fn a_hit_needs_no_source_binary() {
    let fx = Fixture::new();
    fx.start();
    std::fs::remove_dir_all(&fx.root).expect("remove binaries");
    let warm = fx.start();
    assert_counts(&warm, 3, 0, 0, 0);
    assert_runs_like_fresh(&warm);
}

#[test]
fn changed_engine_settings_never_load_old_artifacts() {
    let fx = Fixture::new();
    fx.start();
    let mut config = wasm_node_cache::node_config();
    config.cranelift_nan_canonicalization(false);
    let other = wasmtime::Engine::new(&config).expect("engine");
    let cache = fx.builder().engine(other).build().expect("start-up");
    assert_counts(&cache, 0, 3, 0, 0);
    // Both generations coexist; the node's own engine still hits.
    assert_counts(&fx.start(), 3, 0, 0, 0);
}

#[test]
fn misnamed_binary_is_skipped_and_the_node_starts() {
    let fx = Fixture::new();
    let adder_bytes = std::fs::read(fx.root.join(hex::encode(common::adder_hash()))).expect("read");
    let bogus = [0x42u8; 32];
    std::fs::write(fx.root.join(hex::encode(bogus)), &adder_bytes).expect("write misnamed");
    let mut whitelist = fx.whitelist.clone();
    whitelist.insert(bogus);
    let cache = fx.builder().whitelist(whitelist).build().expect("start-up");
    assert_counts(&cache, 0, 3, 0, 1);
    let e = cache.report().entry(&bogus).expect("entry");
    assert_eq!(
        e.outcome,
        Outcome::Skipped(SkipReason::HashMismatch {
            actual: common::adder_hash()
        })
    );
    assert!(!cache.wasm_component_cache.contains_key(&bogus));
    assert_runs_like_fresh(&cache);
}

#[test]
fn whitelisted_but_absent_is_skipped_and_unlisted_files_are_reported() {
    let fx = Fixture::new();
    let absent = [0x01u8; 32];
    let mut whitelist = fx.whitelist.clone();
    whitelist.insert(absent);
    let adder = common::adder_hash();
    whitelist.remove(&adder);
    let cache = fx.builder().whitelist(whitelist).build().expect("start-up");
    assert_counts(&cache, 0, 2, 0, 1);
    assert_eq!(cache.report().unlisted, 1, "{}", cache.report());
    assert_eq!(
        cache.report().entry(&absent).map(|e| e.outcome.clone()),
        Some(Outcome::Skipped(SkipReason::Missing))
    );
    assert_eq!(
        cache.report().entry(&adder).map(|e| e.outcome.clone()),
        Some(Outcome::Unlisted)
    );
    assert!(
        !cache.wasm_component_cache.contains_key(&adder),
        "a file outside the whitelist is never loaded"
    );
}

#[test]
fn bad_whitelist_line_is_an_error_naming_the_line() {
    let fx = Fixture::new();
    let conf = fx.dir.path().join("wasm.conf");
    std::fs::write(&conf, format!("# ok\n{}\n\nzz-not-a-hash\n", "ab".repeat(32))).expect("write conf");
    let err = WasmNodeCache::builder()
        .binary_root(&fx.root)
        .whitelist_file(&conf)
        .store(&fx.store)
        .build();
    let msg = format!("{:#}", err.expect_err("bad line is an error"));
    assert!(msg.contains("wasm.conf:4"), "{msg}");
    assert!(msg.contains("zz-not-a-hash"), "{msg}");
}

#[test]
fn whitelist_file_is_the_live_source() {
    let fx = Fixture::new();
    let conf = fx.dir.path().join("wasm.conf");
    std::fs::write(
        &conf,
        format!("# only the adder\n{}  # adder\n", hex::encode(common::adder_hash())),
    )
    .expect("conf");
    let cache = WasmNodeCache::builder()
        .binary_root(&fx.root)
        .whitelist_file(&conf)
        .store(&fx.store)
        .build()
        .expect("ok");
    assert_eq!(&cache.wasm_hash_whitelist, &HashSet::from([common::adder_hash()]));
    assert_eq!(cache.wasm_component_cache.len(), 1);
}

#[test]
fn store_that_cannot_be_created_still_starts_the_node() {
    let fx = Fixture::new();
    let blocker = fx.dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let cache = fx.builder().store(blocker.join("store")).build().expect("node starts");
    assert_counts(&cache, 0, 3, 0, 0);
    let health = &cache.report().store;
    assert!(!health.readable() && !health.writable());
    assert!(
        health
            .read_error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains("a-file") && e.contains("Not a directory")),
        "{health:?}"
    );
    assert!(
        health.read_error.as_ref().is_some_and(|p| p.kind() == "refused"),
        "{health:?}"
    );
    assert!(cache.report().to_string().contains("store NOT WRITTEN"));
    assert_runs_like_fresh(&cache);
}

#[test]
fn store_inside_the_binary_root_is_refused() {
    let fx = Fixture::new();
    let start_refused = || {
        let cache = fx.builder().store(fx.root.join("cache")).build().expect("node starts");
        assert_counts(&cache, 0, 3, 0, 0);
        let health = &cache.report().store;
        assert!(
            health
                .read_error
                .as_ref()
                .is_some_and(|e| e.kind() == "inside_binary_root"),
            "{health:?}"
        );
    };
    start_refused();
    assert!(!fx.root.join("cache").exists(), "nothing created in the binary root");

    // An existing directory there is refused on its own descriptor, and left empty.
    std::fs::create_dir(fx.root.join("cache")).expect("mkdir");
    start_refused();
    assert_eq!(std::fs::read_dir(fx.root.join("cache")).expect("list").count(), 0);
}

#[test]
fn no_store_compiles_in_memory_like_the_seed() {
    let fx = Fixture::new();
    let (engine, components) =
        WasmNodeCache::init_wasm_engine_and_precompile_components(fx.whitelist.clone(), fx.root.display().to_string())
            .expect("seed path");
    assert_eq!(components.len(), 3);
    assert_eq!(call_add(&engine, &components[&common::adder_hash()], 2, 3), 5);
    assert!(!fx.store.exists());
}

#[test]
fn clones_share_components() {
    let fx = Fixture::new();
    let a = fx.start();
    let b = a.clone();
    assert_eq!(
        call_add(
            &b.wasm_engine,
            b.wasm_component_cache.get(&common::adder_hash()).expect("adder"),
            1,
            1
        ),
        2
    );
    assert_eq!(a.report().compiled, b.report().compiled);
}

#[test]
fn prune_store_removes_stale_and_unlisted_artifacts_by_unlinking_only() {
    let fx = Fixture::new();
    let adder = common::adder_hash();
    // A running node that has the adder mapped from the store.
    fx.start();
    let running = fx.start();
    assert_eq!(running.report().from_store, 3);
    // Another engine generation shares the store.
    let mut config = wasm_node_cache::node_config();
    config.cranelift_nan_canonicalization(false);
    fx.builder()
        .engine(wasmtime::Engine::new(&config).expect("engine"))
        .build()
        .expect("start-up");
    assert_eq!(common::artifact_count(&fx.store), 6);
    std::fs::write(fx.store.join(".tmp-left-by-a-crash.part"), b"partial").expect("temp file");

    let mut smaller = fx.whitelist.clone();
    smaller.remove(&adder);
    let node = fx
        .builder()
        .whitelist(smaller)
        .min_idle(std::time::Duration::ZERO)
        .build()
        .expect("start-up");
    let pruned = node.prune_store().expect("prune");
    assert_eq!(pruned.removed.len(), 4, "3 stale + the adder: {:?}", pruned.removed);
    assert!(pruned.bytes_freed > 0);
    assert_eq!(common::artifact_count(&fx.store), 2);
    assert!(common::files_with_prefix(&fx.store, ".tmp-").is_empty());

    // Unlinked, not truncated: the running node's mapped adder still runs.
    assert_eq!(
        call_add(
            &running.wasm_engine,
            running.wasm_component_cache.get(&adder).expect("adder"),
            20,
            1
        ),
        21
    );
    let after = fx
        .builder()
        .whitelist(node.wasm_hash_whitelist.clone())
        .build()
        .expect("start-up");
    assert_counts(&after, 2, 0, 0, 0);
    assert_eq!(
        after.report().unlisted,
        1,
        "the binary left outside the whitelist is unlisted, not skipped"
    );
    assert!(
        fx.builder()
            .no_store()
            .build()
            .expect("start-up")
            .prune_store()
            .is_err(),
        "no store, nothing to prune"
    );
}

/// Flips the byte at `offset` of the artifact at `path`.
fn flip(path: &std::path::Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x40;
    // Replace, not rewrite in place: the store's own rule, and what an operator's tool does.
    std::fs::remove_file(path).expect("unlink");
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn many_components_load_in_parallel_with_rejections_and_misses() {
    // Enough entries for the two-thread loading path, with a damaged and a missing one among them.
    let corpus = common::generated_corpus(9, 8);
    let store = corpus.dir.path().join("store");
    let start = || {
        WasmNodeCache::builder()
            .binary_root(&corpus.root)
            .whitelist(corpus.whitelist.clone())
            .store(&store)
            .build()
            .expect("start-up")
    };
    assert_counts(&start(), 0, 9, 0, 0);
    let mut hashes: Vec<_> = corpus.whitelist.iter().copied().collect();
    hashes.sort();
    flip(&common::artifact_of(&store, &hashes[2]), 300);
    std::fs::remove_file(common::artifact_of(&store, &hashes[6])).expect("unlink");
    let cache = start();
    assert_counts(&cache, 7, 2, 1, 0);
    assert!(
        cache
            .report()
            .entry(&hashes[2])
            .and_then(|e| e.rejected.as_ref().map(|r| r.to_string()))
            .is_some()
    );
    let index_of: std::collections::HashMap<_, u32> = (0..9)
        .map(|i| (sha256(&common::generated_component(i, 8)), i))
        .collect();
    for hash in &hashes {
        let component = cache.wasm_component_cache.get(hash).expect("every component loaded");
        let mut s = wasmtime::Store::new(&cache.wasm_engine, ());
        s.set_fuel(100_000).expect("fuel");
        let instance = wasmtime::component::Linker::new(&cache.wasm_engine)
            .instantiate(&mut s, component)
            .expect("inst");
        let get = instance.get_typed_func::<(), (u32,)>(&mut s, "get").expect("get");
        let (n,) = get.call(&mut s, ()).expect("call");
        assert_eq!(n, index_of[hash], "each component returns its own index");
    }
    assert_counts(&start(), 9, 0, 0, 0);
}

#[test]
fn a_store_given_max_size_stays_under_it_across_starts_that_add_components() {
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
    let fx = Fixture::new();
    let mut hashes: Vec<Hash32> = fx.whitelist.iter().copied().collect();
    hashes.sort();
    let (first, second): (HashSet<Hash32>, HashSet<Hash32>) = (
        hashes[..2].iter().copied().collect(),
        hashes[2..].iter().copied().collect(),
    );
    // Each artifact's size, from a start into a scratch store.
    let scratch = fx.dir.path().join("scratch");
    fx.builder().store(&scratch).build().expect("calibrate");
    let size = |set: &HashSet<Hash32>| -> u64 {
        set.iter()
            .map(|h| std::fs::metadata(common::artifact_of(&scratch, h)).expect("stat").len())
            .sum()
    };
    // Either half fits; both do not.
    let bound = size(&first).max(size(&second));
    let stored = || -> u64 {
        std::fs::read_dir(&fx.store)
            .expect("list")
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .map(|e| e.metadata().expect("stat").len())
            .sum()
    };
    let has = |h: &Hash32| {
        std::fs::read_dir(&fx.store).expect("list").any(|e| {
            e.expect("entry")
                .file_name()
                .to_string_lossy()
                .ends_with(&format!("-{}.cwasm", hex::encode(h)))
        })
    };
    let start = |set: &HashSet<Hash32>| {
        fx.builder()
            .whitelist(set.clone())
            .max_size(Some(bound))
            .build()
            .expect("start")
    };

    let one = start(&first);
    assert_eq!((one.report().store.written, one.report().store.evicted), (2, 0));
    assert!(stored() <= bound);
    // A week and a day later the next release's components arrive: the idle ones make room.
    for h in &first {
        let then = std::time::SystemTime::now() - 8 * DAY;
        std::fs::File::open(common::artifact_of(&fx.store, h))
            .expect("open")
            .set_times(std::fs::FileTimes::new().set_accessed(then).set_modified(then))
            .expect("age");
    }
    let two = start(&second);
    let evicted = two.report().store.evicted;
    assert_eq!(two.report().store.written, second.len());
    assert!(evicted >= 1, "{}", two.report());
    assert!(stored() <= bound, "{} > {bound}", stored());
    let gone = first.iter().filter(|h| !has(h)).count();
    assert_eq!(gone, evicted);
    assert!(second.iter().all(has));
    // Nothing a start uses, and nothing used within min_idle, is ever evicted: the store stays
    // above its bound rather than take an artifact another node loads.
    let three = start(&first);
    assert_eq!(
        (three.report().store.written, three.report().store.evicted),
        (evicted, 0)
    );
    assert!(hashes.iter().all(has));
    // And what the starts serve runs as a freshly compiled one does.
    let adder = common::adder_hash();
    let (cache, component) = [&two, &three]
        .into_iter()
        .find_map(|c| c.wasm_component_cache.get(&adder).map(|comp| (c, comp)))
        .expect("one half holds the adder");
    assert_eq!(call_add(&cache.wasm_engine, component, 40, 2), 42);
}
