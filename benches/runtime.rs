//! Run time of the shipped components' exports, and of the corpus's heaviest import-free call
//! (`calc-pi`'s `add`, about 4.7 million units of fuel a call) when `--wasm-dir` names the corpus,
//! compiled for each CPU profile and all run by the node's own (native) engine: does native code
//! run faster than the best portable profile this host can run? (If so by more than 3%, a
//! start-up served by portable artifacts should compile native ones in the background; see
//! docs/performance.md.)
//!
//! ```sh
//! cargo bench --bench runtime -- [--reps 31] [--calls 20] [--wasm-dir $CORPUS]
//! ```
//! Prints a table, then one JSON object as the last line.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{median, ms};
use wasm_node_cache::CpuProfile;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// Run time of the shipped components under every CPU profile.
#[derive(clap::Parser)]
struct Args {
    /// Samples per export and profile (the median is reported)
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Calls per sample
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// Another directory of components (the corpus) whose known exports are timed too
    #[arg(long, value_name = "DIR")]
    wasm_dir: Option<std::path::PathBuf>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Name filters passed through by `cargo bench`; ignored.
    #[arg(hide = true)]
    _filters: Vec<String>,
}

/// An export to time: its name and how to call it once.
struct Export {
    name: &'static str,
    call: fn(&mut Store<()>, &wasmtime::component::Instance, u64) -> u64,
}

const EXPORTS: &[Export] = &[
    Export {
        name: "mix",
        call: |store, instance, i| {
            let f = instance
                .get_typed_func::<(u64,), (u64,)>(&mut *store, "mix")
                .expect("mix");
            f.call(&mut *store, (i,)).expect("mix call").0
        },
    },
    Export {
        name: "fib",
        call: |store, instance, i| {
            let f = instance
                .get_typed_func::<(u32,), (u64,)>(&mut *store, "fib")
                .expect("fib");
            f.call(&mut *store, (100_000 + (i % 2) as u32,)).expect("fib call").0
        },
    },
    Export {
        name: "fnv1a",
        call: |store, instance, i| {
            let f = instance
                .get_typed_func::<(&str,), (u32,)>(&mut *store, "fnv1a")
                .expect("fnv1a");
            let data = &fnv_input()[(i % 2) as usize..];
            u64::from(f.call(&mut *store, (data,)).expect("fnv1a call").0)
        },
    },
    Export {
        name: "calc-pi",
        call: |store, instance, i| {
            let iface = instance
                .get_export_index(&mut *store, None, "docs:calc-pi/calc-interface@0.1.0")
                .expect("calc-pi interface");
            let func = instance
                .get_export_index(&mut *store, Some(&iface), "add")
                .expect("calc-pi add");
            let f = instance
                .get_typed_func::<(Vec<u8>,), (Vec<u8>,)>(&mut *store, &func)
                .expect("calc-pi add type");
            let input = if i % 2 == 0 { b"100".to_vec() } else { b"1000".to_vec() };
            let out = f.call(&mut *store, (input,)).expect("calc-pi call").0;
            out.iter().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(*b))
        },
    },
];

/// The top-level export that marks a component as carrying `export`.
fn export_marker(export: &Export) -> &'static str {
    match export.name {
        "calc-pi" => "docs:calc-pi/calc-interface@0.1.0",
        other => other,
    }
}

/// 64 KiB of text made here, so that the input never changes with the repository's files.
fn fnv_input() -> &'static str {
    static INPUT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INPUT.get_or_init(|| {
        (0..8192u32)
            .map(|i| format!("{:07x} ", i.wrapping_mul(2_654_435_761)))
            .collect()
    })
}

/// Every shipped component, compiled by `profile`'s engine and loaded by the node's engine (as a
/// start-up served by a portable artifact does), with the export it carries.
fn load(native: &Engine, profile: CpuProfile, extra: Option<&std::path::Path>) -> Vec<(&'static Export, Component)> {
    let compiler = match profile {
        CpuProfile::Native => native.clone(),
        p => p.engine().expect("profile engine"),
    };
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wasm");
    let mut out = Vec::new();
    let files = std::iter::once(shipped.as_path())
        .chain(extra)
        .flat_map(|dir| std::fs::read_dir(dir).expect("read the component directory"))
        .map(|entry| entry.expect("entry").path());
    for path in files {
        let bytes = std::fs::read(&path).expect("read component");
        let artifact = compiler.precompile_component(&bytes).expect("precompile");
        // SAFETY: produced just now by `precompile_component` in this process.
        let component = unsafe { Component::deserialize(native, &artifact) }.expect("the node's engine loads it");
        let names: Vec<String> = component
            .component_type()
            .exports(native)
            .map(|(n, _)| n.to_string())
            .collect();
        if let Some(export) = EXPORTS.iter().find(|e| names.iter().any(|n| n == export_marker(e))) {
            out.push((export, component));
        }
    }
    out
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let native = wasm_node_cache::init_wasm_engine().expect("engine");
    let profiles: Vec<CpuProfile> = CpuProfile::available()
        .into_iter()
        .filter(|p| p.is_native() || wasm_node_cache::testing::runs_on(&p.engine().expect("engine"), &native).is_ok())
        .collect();
    let linker = Linker::new(&native);
    // One instance per (profile, export), made once: only calls are timed.
    let mut runs = Vec::new();
    for &profile in &profiles {
        for (export, component) in load(&native, profile, args.wasm_dir.as_deref()) {
            let mut store = Store::new(&native, ());
            store.set_fuel(u64::MAX).expect("fuel");
            let instance = linker.instantiate(&mut store, &component).expect("instantiate");
            runs.push((profile, export, store, instance, Vec::<Duration>::new(), 0u64));
        }
    }
    // Interleaved rounds with a rotating start, so drift hits every profile alike.
    for round in 0..args.reps as usize {
        let n = runs.len();
        for k in 0..n {
            let (_, export, store, instance, samples, check) = &mut runs[(round + k) % n];
            store.set_fuel(u64::MAX).expect("fuel");
            let t = Instant::now();
            for i in 0..u64::from(args.calls) {
                *check ^= (export.call)(store, instance, i);
            }
            samples.push(t.elapsed() / args.calls);
        }
    }
    println!(
        "run time per call, median of {} samples of {} calls; every profile's code run by the native engine",
        args.reps, args.calls
    );
    println!();
    println!("| export | profile | us per call | vs native |");
    println!("|---|---|---:|---:|");
    let mut json = serde_json::Map::new();
    for export in EXPORTS {
        let of = |p: CpuProfile| {
            runs.iter()
                .find(|r| r.0 == p && r.1.name == export.name)
                .map(|r| (median(r.4.clone()), r.5))
        };
        let Some((base, base_check)) = of(CpuProfile::Native) else {
            continue;
        };
        for &p in &profiles {
            let Some((d, check)) = of(p) else { continue };
            assert_eq!(check, base_check, "{} under {p} computes what native does", export.name);
            let ratio = d.as_secs_f64() / base.as_secs_f64();
            println!("| {} | {p} | {:.1} | {ratio:.3}x |", export.name, ms(d) * 1e3);
            json.insert(
                format!("{}_{}_us", export.name.replace('-', "_"), p.name().replace('-', "_")),
                (ms(d) * 1e3).into(),
            );
        }
    }
    println!("{}", serde_json::Value::Object(json));
}
