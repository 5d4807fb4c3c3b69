//! Measurement helpers shared by the `restart` and `scaling` benchmarks (not a bench target itself:
//! cargo only discovers `benches/*.rs` and `benches/*/main.rs`).
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasm_node_cache::config::sha256;
use wasm_node_cache::{Hash32, WasmNodeCache};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Source binaries named by their SHA-256, read once so that every path sees the same bytes.
pub struct Corpus {
    pub dir: PathBuf,
    pub sources: Vec<(Hash32, Vec<u8>)>,
    pub whitelist: HashSet<Hash32>,
}

impl Corpus {
    /// Every file in `dir` named by 64 hex digits whose content matches its name.
    pub fn load(dir: &Path) -> Corpus {
        let whitelist = wasm_node_cache::config::whitelist_all_in_dir(dir).expect("the wasm dir holds components");
        let mut sources: Vec<(Hash32, Vec<u8>)> = whitelist
            .iter()
            .map(|h| {
                let bytes = std::fs::read(dir.join(hex::encode(h))).expect("read a component");
                assert_eq!(&sha256(&bytes), h, "{} is not named by its SHA-256", hex::encode(h));
                (*h, bytes)
            })
            .collect();
        sources.sort();
        Corpus {
            dir: dir.to_path_buf(),
            sources,
            whitelist,
        }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.sources.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

/// Median of `samples` (upper median for an even count).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    assert!(!samples.is_empty(), "at least one sample");
    samples.sort();
    samples[samples.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One `WasmNodeCache` start-up on `store`; returns its wall time. Panics unless every component
/// came from the store (a warm start) when `expect_warm` is set.
pub fn start_up(
    engine: &Engine,
    corpus: &Corpus,
    store: &Path,
    key_file: Option<&Path>,
    expect_warm: bool,
) -> Duration {
    start_up_with(engine, corpus, store, None, key_file, expect_warm)
}

/// [`start_up`] with a read-only store searched after `store`.
pub fn start_up_with(
    engine: &Engine,
    corpus: &Corpus,
    store: &Path,
    read_only: Option<&Path>,
    key_file: Option<&Path>,
    expect_warm: bool,
) -> Duration {
    let mut builder = WasmNodeCache::builder()
        .engine(engine.clone())
        .binary_root(&corpus.dir)
        .whitelist(corpus.whitelist.clone())
        .store(store);
    if let Some(dir) = read_only {
        builder = builder.read_only_store(dir);
    }
    if let Some(key) = key_file {
        builder = builder.auth_key_file(key);
    }
    let t = Instant::now();
    let cache = builder.build().expect("start-up");
    let elapsed = t.elapsed();
    let report = cache.report();
    assert_eq!(
        cache.wasm_component_cache.len(),
        corpus.len(),
        "every component loaded: {report}"
    );
    if expect_warm {
        assert_eq!(
            (report.from_store, report.compiled, report.rejected),
            (corpus.len(), 0, 0),
            "a warm start loads everything from the store: {report}"
        );
    }
    // Components are dropped here, outside the timed region, as they would live for the node's life.
    drop(cache);
    elapsed
}

/// Bakes every portable CPU profile of this architecture (and not `native`) for `corpus` into
/// `dir`, as `warm --cpu-profile x86-64-v2,x86-64-v3,x86-64-v4` does on a build machine.
pub fn bake_portable(corpus: &Corpus, dir: &Path) {
    let cache = WasmNodeCache::builder()
        .binary_root(&corpus.dir)
        .whitelist(corpus.whitelist.clone())
        .store(dir)
        .cpu_profiles(wasm_node_cache::CpuProfile::portable().iter().copied())
        .build()
        .expect("bake");
    let r = cache.report();
    assert!(
        r.baked.iter().all(|b| b.failed.is_empty()) && r.store.written == 0,
        "portable profiles only: {r}"
    );
}

/// Writes `engine.precompile_component` output of every source to a plain file in `dir`.
pub fn write_precompiled(engine: &Engine, corpus: &Corpus, dir: &Path) -> Vec<PathBuf> {
    corpus
        .sources
        .iter()
        .map(|(h, bytes)| {
            let artifact = engine.precompile_component(bytes).expect("precompile");
            let path = dir.join(format!("{}.cwasm", hex::encode(h)));
            std::fs::write(&path, &artifact).expect("write precompiled file");
            path
        })
        .collect()
}

/// The floor: bare `Component::deserialize_file` of each file, no checks at all.
pub fn floor(engine: &Engine, files: &[PathBuf]) -> Duration {
    let t = Instant::now();
    let components: Vec<Component> = files
        .iter()
        // SAFETY: these files were written by `write_precompiled` with this engine, in a private
        // temporary directory, and nothing modifies them.
        .map(|p| unsafe { Component::deserialize_file(engine, p) }.expect("deserialize_file"))
        .collect();
    let elapsed = t.elapsed();
    drop(components);
    elapsed
}

/// The floor spread over `threads` threads, for comparison with a parallel loader.
pub fn floor_parallel(engine: &Engine, files: &[PathBuf], threads: usize) -> Duration {
    let chunk = files.len().div_ceil(threads.max(1)).max(1);
    let t = Instant::now();
    let components: Vec<Vec<Component>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        // SAFETY: as in `floor`.
                        .map(|p| unsafe { Component::deserialize_file(engine, p) }.expect("deserialize_file"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("floor thread")).collect()
    });
    let elapsed = t.elapsed();
    drop(components);
    elapsed
}

/// A 32-byte MAC key in a file of mode 0600.
pub fn write_key_file(path: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key: [u8; 32] = *blake3::hash(b"wasm-node-cache benchmark key").as_bytes();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create key file");
    f.write_all(&key).expect("write key file");
}

/// Total size of the files in `dir` whose name ends in `.cwasm`.
pub fn artifact_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list store")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}
