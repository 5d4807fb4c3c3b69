//! A restart measured against every alternative, in one process, on the same components:
//!
//! - `cold`: `Component::new` for each source, as the node did before this crate;
//! - `warm`: a `WasmNodeCache` start-up on a warm store, every artifact fully verified;
//! - `warm_mac`: the same in authenticated (MAC) mode;
//! - `warm_read_only`: `warm` with an empty writable store, everything from a read-only store;
//! - `warm_portable`: the same from a bake of portable CPU profiles only (v4, v3, v2): what a host
//!   whose CPU differs from the build machine's does;
//! - `floor`: bare `Component::deserialize_file` of precompiled files, no checks at all.
//!
//! ```sh
//! cargo bench --bench restart -- --wasm-dir DIR [--reps 31] [--cold-reps 3]
//! ```
//! Prints a table, then one JSON object as the last line.
//!
//! wasmtime's own `cache` feature is compared in `bench-compare/`, a crate of its own, so that the
//! feature never reaches this package's test builds (`cargo run --release -p bench-compare`).

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Corpus, median, ms};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Restart benchmark: cold, warm, warm with MAC, and the deserialization floor.
#[derive(clap::Parser)]
struct Args {
    /// Directory of components named by their SHA-256 (a real corpus, passed by path)
    #[arg(long, default_value = "config/wasm")]
    wasm_dir: PathBuf,
    /// Repetitions of every fast path (the median is reported)
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Repetitions of `cold` (seconds each on the real corpus)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    cold_reps: u32,
    /// Profiling aid: run only `warm`, `warm_mac`, `warm_read_only`, `warm_portable` or `floor`, `reps` times, and print its median
    #[arg(long)]
    only: Option<String>,
    /// Repetitions of the fresh-process paths (each spawns a process)
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    fresh_reps: u32,
    /// Child mode of the fresh-process floor: deserialize every file in DIR once, print the ms.
    #[arg(long, hide = true, value_name = "DIR")]
    fresh_floor_child: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Name filters passed through by `cargo bench`; ignored.
    #[arg(hide = true)]
    _filters: Vec<String>,
}

/// Reads every source from disk and compiles it: the node's start-up before this crate.
fn compile_all(engine: &Engine, corpus: &Corpus) -> Duration {
    let t = Instant::now();
    let components: Vec<Component> = corpus
        .sources
        .iter()
        .map(|(h, _)| {
            let bytes = std::fs::read(corpus.dir.join(hex::encode(h))).expect("read source");
            Component::new(engine, &bytes).expect("compile")
        })
        .collect();
    let elapsed = t.elapsed();
    drop(components);
    elapsed
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Some(dir) = &args.fresh_floor_child {
        fresh_floor_child(dir);
        return;
    }
    let corpus = Corpus::load(&args.wasm_dir);
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let scratch = tempfile::tempdir().expect("tempdir");
    let bench_started = Instant::now();

    // Prepare every warm state once; none of this is timed.
    let store = scratch.path().join("store");
    let mac_store = scratch.path().join("store-mac");
    let key_dir = scratch.path().join("key");
    std::fs::create_dir(&key_dir).expect("mkdir key");
    let key_file = key_dir.join("mac.key");
    support::write_key_file(&key_file);
    let first_start = support::start_up(&engine, &corpus, &store, None, false);
    support::start_up(&engine, &corpus, &mac_store, Some(&key_file), false);
    let plain = scratch.path().join("plain");
    std::fs::create_dir(&plain).expect("mkdir plain");
    let floor_files = support::write_precompiled(&engine, &corpus, &plain);

    // A container start: an empty writable store, everything in a read-only bake (the warm store).
    let empty = scratch.path().join("store-empty");
    let from_bake = || support::start_up_with(&engine, &corpus, &empty, Some(&store), None, true);
    // A bake of the portable profiles only, as an image built on another machine holds.
    let portable_bake = scratch.path().join("bake-portable");
    support::bake_portable(&corpus, &portable_bake);
    let empty_portable = scratch.path().join("store-empty-portable");
    let from_portable = || support::start_up_with(&engine, &corpus, &empty_portable, Some(&portable_bake), None, true);

    if let Some(only) = &args.only {
        let run = || match only.as_str() {
            "warm" => support::start_up(&engine, &corpus, &store, None, true),
            "warm_mac" => support::start_up(&engine, &corpus, &mac_store, Some(&key_file), true),
            "floor" => support::floor(&engine, &floor_files),
            "warm_read_only" => from_bake(),
            "warm_portable" => from_portable(),
            other => panic!("--only takes warm, warm_mac, warm_read_only, warm_portable or floor, not {other}"),
        };
        let samples: Vec<Duration> = (0..args.reps).map(|_| run()).collect();
        println!("{only}: median {:.3} ms over {} runs", ms(median(samples)), args.reps);
        return;
    }
    // One warm-up round so that every path starts with the same page cache and allocator state.
    support::start_up(&engine, &corpus, &store, None, true);
    from_bake();
    from_portable();
    support::start_up(&engine, &corpus, &mac_store, Some(&key_file), true);
    support::floor(&engine, &floor_files);

    // Interleaved rounds with a rotating order: drift (frequency, other load) and the position in a
    // round (caches just used by another path) hit every path alike.
    let mut samples: [Vec<Duration>; 6] = Default::default();
    for round in 0..args.reps as usize {
        for k in 0..6 {
            let path = (round + k) % 6;
            let d = match path {
                0 => support::floor(&engine, &floor_files),
                1 => support::start_up(&engine, &corpus, &store, None, true),
                2 => support::start_up(&engine, &corpus, &mac_store, Some(&key_file), true),
                3 => from_bake(),
                4 => from_portable(),
                _ => support::floor_parallel(&engine, &floor_files, threads),
            };
            samples[path].push(d);
        }
    }
    let [floor, warm, warm_mac, warm_read_only, warm_portable, floor_par] = samples;
    // A real restart is a new process: no warm heap, no engine state from earlier start-ups. Both
    // sides time themselves after creating their engine, as the in-process paths do.
    let (mut warm_fresh, mut floor_fresh, mut warm_mac_fresh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.fresh_reps {
        floor_fresh.push(fresh_floor(&plain));
        warm_fresh.push(fresh_warm(&corpus, &store, None));
        warm_mac_fresh.push(fresh_warm(&corpus, &mac_store, Some(&key_file)));
    }
    let cold: Vec<Duration> = (0..args.cold_reps).map(|_| compile_all(&engine, &corpus)).collect();

    let warm = median(warm);
    let warm_mac = median(warm_mac);
    let warm_read_only = median(warm_read_only);
    let warm_portable = median(warm_portable);
    let floor = median(floor);
    let floor_par = median(floor_par);
    let cold = median(cold);
    let warm_fresh = median(warm_fresh);
    let floor_fresh = median(floor_fresh);
    let warm_mac_fresh = median(warm_mac_fresh);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let artifact_bytes = support::artifact_bytes(&store);

    println!(
        "restart of {} components ({} bytes of wasm, {} bytes of artifacts) from {}; {} cores; median of {} runs ({} for cold)",
        corpus.len(),
        corpus.total_bytes(),
        artifact_bytes,
        corpus.dir.display(),
        threads,
        args.reps,
        args.cold_reps
    );
    println!();
    println!("| path | what | ms | vs warm |");
    println!("|---|---|---:|---:|");
    let rows = [
        ("cold", "read + `Component::new` each (before this crate)", cold),
        ("warm", "`WasmNodeCache` start-up, warm store, full verification", warm),
        (
            "warm_mac",
            "the same in MAC mode (keyed BLAKE3, sealed memfd copies)",
            warm_mac,
        ),
        (
            "warm_read_only",
            "`warm` served entirely from a read-only store (empty writable store)",
            warm_read_only,
        ),
        (
            "warm_portable",
            "`warm` served entirely from a bake of portable CPU profiles (empty writable store)",
            warm_portable,
        ),
        ("floor", "bare `deserialize_file`, sequential, no checks", floor),
        ("floor_parallel", "bare `deserialize_file` on every core", floor_par),
        (
            "warm_fresh",
            "`warm`, each in a new process (the CLI, as a node restart)",
            warm_fresh,
        ),
        ("floor_fresh", "`floor`, each in a new process", floor_fresh),
        ("warm_mac_fresh", "`warm_mac`, each in a new process", warm_mac_fresh),
    ];
    for (name, what, d) in rows {
        println!("| {name} | {what} | {:.2} | {:.2}x |", ms(d), ratio(d, warm));
    }
    println!();
    println!(
        "cold/warm {:.0}x (target >= 200), warm/floor {:.2} (target <= 2.0), first start-up (compile + publish) {:.0} ms",
        ratio(cold, warm),
        ratio(warm, floor),
        ms(first_start)
    );
    println!(
        "warm_read_only/warm {:.2} (budget <= 1.10); warm_portable/warm {:.2} (budget <= 1.10); warm_mac/floor {:.2} (budget <= 3.5); in new processes: warm {:.2} ms, warm_mac {:.2} ms, floor {:.2} ms, warm/floor {:.2} (budget <= 2.0), warm_mac/floor {:.2}",
        ratio(warm_read_only, warm),
        ratio(warm_portable, warm),
        ratio(warm_mac, floor),
        ms(warm_fresh),
        ms(warm_mac_fresh),
        ms(floor_fresh),
        ratio(warm_fresh, floor_fresh),
        ratio(warm_mac_fresh, floor_fresh)
    );
    println!(
        "wasmtime's own cache (target wasmtime_cache/warm >= 5) is compared in bench-compare/: cargo run --release -p bench-compare -- --wasm-dir {}",
        corpus.dir.display()
    );
    println!("bench wall time {:.1} s", bench_started.elapsed().as_secs_f64());
    let json = serde_json::json!({
        "components": corpus.len(),
        "total_bytes": corpus.total_bytes(),
        "artifact_bytes": artifact_bytes,
        "reps": args.reps,
        "cold_reps": args.cold_reps,
        "cores": threads,
        "cold_ms": ms(cold),
        "warm_ms": ms(warm),
        "warm_mac_ms": ms(warm_mac),
        "warm_read_only_ms": ms(warm_read_only),
        "warm_read_only_over_warm": ratio(warm_read_only, warm),
        "warm_portable_ms": ms(warm_portable),
        "warm_portable_over_warm": ratio(warm_portable, warm),
        "floor_ms": ms(floor),
        "floor_parallel_ms": ms(floor_par),
        "first_start_ms": ms(first_start),
        "cold_over_warm": ratio(cold, warm),
        "warm_over_floor": ratio(warm, floor),
        "warm_mac_over_floor": ratio(warm_mac, floor),
        "warm_over_floor_parallel": ratio(warm, floor_par),
        "fresh_reps": args.fresh_reps,
        "warm_fresh_ms": ms(warm_fresh),
        "floor_fresh_ms": ms(floor_fresh),
        "warm_fresh_over_floor_fresh": ratio(warm_fresh, floor_fresh),
        "warm_mac_fresh_ms": ms(warm_mac_fresh),
        "warm_mac_fresh_over_floor_fresh": ratio(warm_mac_fresh, floor_fresh),
    });
    println!("{json}");
}

/// The floor in a new process: this binary re-run in child mode.
fn fresh_floor(dir: &std::path::Path) -> Duration {
    let out = std::process::Command::new(std::env::current_exe().expect("bench binary"))
        .arg("--fresh-floor-child")
        .arg(dir)
        .output()
        .expect("spawn floor child");
    assert!(
        out.status.success(),
        "floor child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let ms: f64 = text
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("floor child printed {text:?}: {e}"));
    Duration::from_secs_f64(ms / 1e3)
}

fn fresh_floor_child(dir: &std::path::Path) {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list floor files")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    println!("{}", ms(support::floor(&engine, &files)));
}

/// `warm` in a new process: the CLI, reading its own start-up time from its JSON report.
fn fresh_warm(corpus: &Corpus, store: &std::path::Path, key_file: Option<&std::path::Path>) -> Duration {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wasm-node-cache"));
    cmd.arg("warm");
    if let Some(key) = key_file {
        cmd.arg("--key-file").arg(key);
    }
    let out = cmd
        .arg("--wasm-dir")
        .arg(&corpus.dir)
        .arg("--all-in-dir")
        .arg("--store")
        .arg(store)
        .arg("--json")
        .env_remove(wasm_node_cache::config::KEY_FILE_ENV)
        .output()
        .expect("spawn the CLI");
    assert!(
        out.status.success(),
        "warm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("warm --json");
    assert_eq!(
        report["from_store"].as_u64(),
        Some(corpus.len() as u64),
        "a warm restart: {report}"
    );
    Duration::from_secs_f64(report["elapsed_ms"].as_f64().expect("elapsed_ms") / 1e3)
}
