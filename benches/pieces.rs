//! The pieces of a warm start-up, each on its own (criterion):
//!
//! - `header_check`: `artifact::decode_trailer` (trailer tag, no payload hashing);
//! - `checksum`: BLAKE3 versus SHA-256 over a realistic artifact;
//! - `lookup`: `Store::load` of a hit (open, checks, full verification, deserialize);
//! - `publish`: `Exclusive::publish` (temp file, write, fsync, rename, fsync the directory).
//!
//! Components come from `$WASM_BENCH_DIR` (a directory of components named by their SHA-256),
//! else `config/wasm`: `WASM_BENCH_DIR=/path/to/corpus cargo bench --bench pieces`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;
use wasm_node_cache::Hash32;
use wasm_node_cache::config::sha256;
use wasm_node_cache::testing::{self as artifact, Lookup, Sealer, Store, deadline_after};

fn wasm_dir() -> PathBuf {
    std::env::var_os("WASM_BENCH_DIR").map_or_else(|| PathBuf::from("config/wasm"), PathBuf::from)
}

/// The largest and the smallest source of the corpus: `(hash, bytes)`.
fn pick_sources() -> Vec<(&'static str, Hash32, Vec<u8>)> {
    let dir = wasm_dir();
    let mut sources: Vec<(Hash32, Vec<u8>)> = wasm_node_cache::config::whitelist_all_in_dir(&dir)
        .expect("the wasm dir holds components")
        .into_iter()
        .map(|h| {
            let bytes = std::fs::read(dir.join(hex::encode(h))).expect("read a component");
            assert_eq!(sha256(&bytes), h, "a component is not named by its SHA-256");
            (h, bytes)
        })
        .collect();
    sources.sort_by_key(|(_, b)| b.len());
    let small = sources.first().cloned().expect("one component");
    let large = sources.last().cloned().expect("one component");
    vec![("largest", large.0, large.1), ("smallest", small.0, small.1)]
}

fn pieces(c: &mut Criterion) {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let fingerprint = wasm_node_cache::Fingerprint::of(&engine, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store"), fingerprint, Sealer::Plain).expect("open store");
    let exclusive = store
        .lock_exclusive(deadline_after(Duration::from_secs(5)), "bench")
        .expect("lock");
    let picked: Vec<(&str, Hash32, Vec<u8>)> = pick_sources()
        .into_iter()
        .map(|(name, h, src)| {
            let payload = engine.precompile_component(&src).expect("precompile");
            exclusive.publish(&h, &payload).expect("publish");
            (name, h, payload)
        })
        .collect();

    let mut g = c.benchmark_group("header_check");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, h, payload) in &picked {
        let file = std::fs::read(store.path_of(h)).expect("read artifact");
        let _ = payload;
        g.bench_function(*name, |b| {
            b.iter(|| artifact::decode_trailer(black_box(&file), &Sealer::Plain).expect("valid"))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("checksum");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, _, payload) in &picked {
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_function(format!("blake3/{name}"), |b| {
            b.iter(|| blake3::hash(black_box(payload)))
        });
        g.bench_function(format!("xxh3_128/{name}"), |b| {
            b.iter(|| twox_hash::XxHash3_128::oneshot(black_box(payload)))
        });
        g.bench_function(format!("blake3_keyed/{name}"), |b| {
            b.iter(|| blake3::keyed_hash(&[7; 32], black_box(payload)))
        });
        g.bench_function(format!("sha256/{name}"), |b| {
            b.iter(|| sha2::Sha256::digest(black_box(payload)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("lookup");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for (name, h, _) in &picked {
        g.bench_function(format!("hit/{name}"), |b| {
            b.iter(|| match store.load(&engine, h) {
                Lookup::Hit(c, _) => c,
                _ => panic!("a published artifact is a hit"),
            })
        });
    }
    let absent = [0xee; 32];
    g.bench_function("absent", |b| {
        b.iter(|| assert!(matches!(store.load(&engine, black_box(&absent)), Lookup::Absent)))
    });
    g.finish();

    let mut g = c.benchmark_group("publish");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for (name, h, payload) in &picked {
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_function(*name, |b| b.iter(|| exclusive.publish(h, payload).expect("publish")));
    }
    g.finish();
}

criterion_group!(benches, pieces);
criterion_main!(benches);
