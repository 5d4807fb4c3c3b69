//! How a warm start-up scales with the number of components, and what it costs in memory.
//!
//! 1. Generated components (10, 100, 1,000 by default): median `warm` (a `WasmNodeCache` start-up
//!    on a warm store, full verification) and median `floor` (bare `deserialize_file` of the same
//!    payloads), and the per-component overhead `(warm - floor) / n`.
//! 2. Peak RSS of whole processes (`/usr/bin/time -v` of the CLI): a cold start-up without a store,
//!    a first start-up (compile + publish), and a warm one, on the generated 1,000 and on
//!    `--wasm-dir` (default `config/wasm`).
//!
//! ```sh
//! cargo bench --bench scaling -- --wasm-dir DIR [--counts 10,100,1000] [--reps 11]
//! ```
//! The last line is one JSON object.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::{Corpus, median, ms};
use wasm_node_cache::testing::TRAILER_LEN;

/// Extra core functions per generated component: about 4 KB of wasm and 20 KB of artifact each.
const FUNCS: u32 = 40;

/// Scaling benchmark: warm versus floor over generated components, and peak RSS of whole processes.
#[derive(clap::Parser)]
struct Args {
    /// Directory of real components for the RSS comparison (a real corpus, passed by path)
    #[arg(long, default_value = "config/wasm")]
    wasm_dir: PathBuf,
    /// Numbers of generated components to measure
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000", value_parser = clap::value_parser!(u32).range(1..))]
    counts: Vec<u32>,
    /// Repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Profiling aid: run only `warm` or `floor` on the first of `--counts`, `reps` times, and
    /// print its median (no table, no RSS)
    #[arg(long, value_parser = ["warm", "floor"])]
    only: Option<String>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Name filters passed through by `cargo bench`; ignored.
    #[arg(hide = true)]
    _filters: Vec<String>,
}

/// Writes the payload (the artifact minus its trailer, i.e. `precompile_component`'s output) of
/// every stored artifact to a plain file, so the floor needs no second compilation.
fn floor_files_from_store(store: &Path, out: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(store).expect("list store") {
        let path = entry.expect("store entry").path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.ends_with(".cwasm"))
        else {
            continue;
        };
        let bytes = std::fs::read(&path).expect("read artifact");
        let payload = &bytes[..bytes.len() - TRAILER_LEN];
        let dest = out.join(name);
        std::fs::write(&dest, payload).expect("write payload");
        files.push(dest);
    }
    files.sort();
    files
}

struct Point {
    n: usize,
    warm_ms: f64,
    floor_ms: f64,
    first_ms: f64,
}

/// `n` generated components, their store after a first start-up (and how long that took), and
/// the floor's plain payload files.
struct Setup {
    _generated: common::Generated,
    corpus: Corpus,
    store: PathBuf,
    files: Vec<PathBuf>,
    first: std::time::Duration,
}

fn set_up(engine: &wasmtime::Engine, n: u32) -> Setup {
    let generated = common::generated_corpus(n, FUNCS);
    let corpus = Corpus::load(&generated.root);
    let store = generated.dir.path().join("store");
    let first = support::start_up(engine, &corpus, &store, None, false);
    let plain = generated.dir.path().join("plain");
    std::fs::create_dir(&plain).expect("mkdir plain");
    let files = floor_files_from_store(&store, &plain);
    assert_eq!(files.len(), corpus.len(), "one artifact per component");
    Setup {
        _generated: generated,
        corpus,
        store,
        files,
        first,
    }
}

fn measure(engine: &wasmtime::Engine, n: u32, reps: usize) -> Point {
    // The generated directory is bound so that it lives until the end: it holds the store.
    let Setup {
        _generated: _dir,
        corpus,
        store,
        files,
        first,
    } = set_up(engine, n);
    support::start_up(engine, &corpus, &store, None, true);
    support::floor(engine, &files);
    let (mut warm, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        floor.push(support::floor(engine, &files));
        warm.push(support::start_up(engine, &corpus, &store, None, true));
    }
    Point {
        n: corpus.len(),
        warm_ms: ms(median(warm)),
        floor_ms: ms(median(floor)),
        first_ms: ms(first),
    }
}

/// `--only`: one path alone, for a profiler attached to the whole run.
fn profile_one(engine: &wasmtime::Engine, only: &str, n: u32, reps: usize) {
    let Setup {
        _generated: _dir,
        corpus,
        store,
        files,
        ..
    } = set_up(engine, n);
    let samples: Vec<_> = (0..reps)
        .map(|_| match only {
            "floor" => support::floor(engine, &files),
            _ => support::start_up(engine, &corpus, &store, None, true),
        })
        .collect();
    println!(
        "{only}: median {:.3} ms over {reps} runs of {n} components",
        ms(median(samples))
    );
}

/// Peak RSS in KiB of one CLI run, from `/usr/bin/time -v`.
fn peak_rss_kib(args: &[&std::ffi::OsStr]) -> u64 {
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_wasm-node-cache"))
        .args(args)
        .output()
        .expect("run /usr/bin/time -v wasm-node-cache");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wasm-node-cache failed: {stderr}");
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .expect("/usr/bin/time -v reports the maximum resident set size")
}

struct Rss {
    cold_kib: u64,
    first_kib: u64,
    warm_kib: u64,
}

/// Median peak RSS of a cold (no store), a first (empty store) and a warm start-up on `dir`.
fn rss(dir: &Path, scratch: &Path, reps: usize) -> Rss {
    use std::ffi::OsStr;
    let common_args = [
        OsStr::new("warm"),
        OsStr::new("--wasm-dir"),
        dir.as_os_str(),
        OsStr::new("--all-in-dir"),
    ];
    let mut cold_args = common_args.to_vec();
    cold_args.extend([OsStr::new("--no-store"), OsStr::new("--json")]);
    let mut first = Vec::new();
    for i in 0..reps {
        let store = scratch.join(format!("rss-store-{i}"));
        let mut a = common_args.to_vec();
        a.extend([OsStr::new("--store"), store.as_os_str(), OsStr::new("--json")]);
        first.push(peak_rss_kib(&a));
    }
    let store = scratch.join("rss-store-0");
    let mut warm_args = common_args.to_vec();
    warm_args.extend([OsStr::new("--store"), store.as_os_str(), OsStr::new("--json")]);
    let med = |args: &[&OsStr]| {
        let mut v: Vec<u64> = (0..reps).map(|_| peak_rss_kib(args)).collect();
        v.sort();
        v[v.len() / 2]
    };
    let cold_kib = med(&cold_args);
    let warm_kib = med(&warm_args);
    first.sort();
    Rss {
        cold_kib,
        first_kib: first[first.len() / 2],
        warm_kib,
    }
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let started = Instant::now();
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    if let Some(only) = &args.only {
        profile_one(&engine, only, args.counts[0], args.reps as usize);
        return;
    }
    let points: Vec<Point> = args
        .counts
        .iter()
        .map(|&n| measure(&engine, n, args.reps as usize))
        .collect();

    println!(
        "warm start-up versus floor over generated components ({FUNCS} extra functions each); median of {} runs",
        args.reps
    );
    println!();
    println!(
        "| components | first start (ms) | floor (ms) | warm (ms) | warm/floor | floor per component (us) | warm per component (us) | overhead per component (us) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let per = |total_ms: f64, n: usize| total_ms * 1e3 / n as f64;
    for p in &points {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
            p.n,
            p.first_ms,
            p.floor_ms,
            p.warm_ms,
            p.warm_ms / p.floor_ms,
            per(p.floor_ms, p.n),
            per(p.warm_ms, p.n),
            per(p.warm_ms - p.floor_ms, p.n)
        );
    }

    let scratch = tempfile::tempdir().expect("tempdir");
    let rss_reps = 3;
    let generated = common::generated_corpus(*args.counts.iter().max().expect("a count"), FUNCS);
    let rss_generated = rss(&generated.root, scratch.path(), rss_reps);
    let real_scratch = scratch.path().join("real");
    std::fs::create_dir(&real_scratch).expect("mkdir");
    let rss_real = rss(&args.wasm_dir, &real_scratch, rss_reps);
    let gen_label = format!("{} generated", generated.whitelist.len());
    let real_label = args.wasm_dir.display().to_string();
    println!();
    println!("peak RSS of whole `wasm-node-cache warm` processes (/usr/bin/time -v), median of {rss_reps}");
    println!();
    println!("| components | cold, no store (MiB) | first, compile + publish (MiB) | warm (MiB) | warm/cold |");
    println!("|---|---:|---:|---:|---:|");
    for (label, r) in [(&gen_label, &rss_generated), (&real_label, &rss_real)] {
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.cold_kib as f64 / 1024.0,
            r.first_kib as f64 / 1024.0,
            r.warm_kib as f64 / 1024.0,
            r.warm_kib as f64 / r.cold_kib as f64
        );
    }
    println!();
    println!("bench wall time {:.1} s", started.elapsed().as_secs_f64());

    let json_points: Vec<serde_json::Value> = points
        .iter()
        .map(|p| {
            serde_json::json!({
                "components": p.n,
                "first_start_ms": p.first_ms,
                "floor_ms": p.floor_ms,
                "warm_ms": p.warm_ms,
                "warm_over_floor": p.warm_ms / p.floor_ms,
                "overhead_per_component_us": per(p.warm_ms - p.floor_ms, p.n),
                "warm_per_component_us": per(p.warm_ms, p.n),
            })
        })
        .collect();
    let json_rss =
        |r: &Rss| serde_json::json!({"cold_kib": r.cold_kib, "first_kib": r.first_kib, "warm_kib": r.warm_kib});
    println!(
        "{}",
        serde_json::json!({
            "scaling": json_points,
            "peak_rss": {
                "generated": json_rss(&rss_generated),
                "generated_components": generated.whitelist.len(),
                "wasm_dir": json_rss(&rss_real),
                "wasm_dir_path": real_label,
            },
        })
    );
}
