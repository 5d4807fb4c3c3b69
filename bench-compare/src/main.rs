//! wasmtime's own `cache` feature, warm, against this crate's two doors, warm, in one process on
//! the same bytes:
//!
//! - `wasmtime_cache`: read + `Component::new` (or `Module::new`) of each source on an engine with
//!   wasmtime's cache, after one run filled that cache;
//! - `warm`: a `WasmNodeCache` start-up on a warm store, every artifact fully verified;
//! - `door`: read + `ArtifactStore::component` (or `::module`) of each source, one call each, on a
//!   warm store, every artifact fully verified.
//!
//! Components are the corpus's; core modules are the core modules embedded in those components
//! (extracted from their top-level core module sections), so they are real compiler output too.
//!
//! ```sh
//! cargo run --release -p bench-compare -- --wasm-dir ../shared/corpus [--reps 31]
//! ```
//!
//! Prints the medians in ms and the ratios. This is a crate of its own so that the `cache` feature
//! never reaches the root package's builds (see ../Cargo.toml).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// wasmtime 48's errors are its own type, converted with `anyhow::Error::from` before `.context`.
use anyhow::{Context, Result, ensure};
use wasm_node_cache::{ArtifactStore, Hash32, WasmNodeCache};
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Engine, Module};

/// wasmtime's cache (warm) against a warm `WasmNodeCache` start-up.
#[derive(clap::Parser)]
struct Args {
    /// Directory of components named by their SHA-256 (the real corpus: ../shared/corpus)
    #[arg(long, default_value = "config/wasm")]
    wasm_dir: PathBuf,
    /// Repetitions of each path (the median is reported)
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let dir = &args.wasm_dir;
    let whitelist = wasm_node_cache::config::whitelist_all_in_dir(dir)
        .with_context(|| format!("{}: cannot list components", dir.display()))?;
    ensure!(
        !whitelist.is_empty(),
        "{}: no component named by its SHA-256",
        dir.display()
    );
    let mut hashes: Vec<Hash32> = whitelist.iter().copied().collect();
    hashes.sort();
    let total_bytes = check_sources(dir, &hashes)?;
    let scratch = tempfile::tempdir().context("temp dir")?;

    // wasmtime's cache needs its own `Config`; it is the node's, plus the cache. Engine creation is
    // not timed, as in benches/restart.rs.
    let mut cache_config = CacheConfig::new();
    cache_config.with_directory(scratch.path().join("wasmtime-cache"));
    let mut config = wasm_node_cache::node_config();
    config.cache(Some(
        Cache::new(cache_config)
            .map_err(anyhow::Error::from)
            .context("wasmtime cache")?,
    ));
    let cache_engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("engine with wasmtime's cache")?;
    let first_fill = compile_all(&cache_engine, dir, &hashes)?;
    compile_all(&cache_engine, dir, &hashes)?; // warm-up round, not counted

    let engine = wasm_node_cache::init_wasm_engine().context("engine")?;
    let store = scratch.path().join("store");
    start_up(&engine, dir, &whitelist, &store, false)?; // fills the store
    start_up(&engine, dir, &whitelist, &store, true)?; // warm-up round, not counted

    // wasmtime's cache runs in its own block: its background worker keeps doing file I/O after
    // each hit, which would disturb the other path if they were interleaved.
    let mut wt_cache = Vec::new();
    for _ in 0..args.reps {
        wt_cache.push(compile_all(&cache_engine, dir, &hashes)?);
    }
    let mut warm = Vec::new();
    for _ in 0..args.reps {
        warm.push(start_up(&engine, dir, &whitelist, &store, true)?);
    }
    let (wt_cache, warm) = (median(wt_cache), median(warm));
    println!(
        "{} components ({total_bytes} bytes of wasm) from {}; median of {} runs",
        hashes.len(),
        dir.display(),
        args.reps
    );
    println!(
        "wasmtime_cache (wasmtime's `cache` feature, warm): {:.2} ms",
        ms(wt_cache)
    );
    println!(
        "warm (WasmNodeCache start-up, warm store, full verification): {:.2} ms",
        ms(warm)
    );
    println!(
        "wasmtime_cache/warm {:.1}x (target >= 5); filling wasmtime's cache took {:.0} ms",
        wt_cache.as_secs_f64() / warm.as_secs_f64(),
        ms(first_fill)
    );

    // The embedder's door, components and then core modules, against wasmtime's cache on the
    // same files.
    let modules_dir = scratch.path().join("modules");
    let modules = extract_modules(dir, &hashes, &modules_dir)?;
    let components: Vec<PathBuf> = hashes.iter().map(|h| dir.join(hex::encode(h))).collect();
    let door = ArtifactStore::open(scratch.path().join("door-store"), &engine).context("open the door's store")?;
    for (kind, files) in [("components", &components), ("core modules", &modules)] {
        let module = kind == "core modules";
        let wasmtime_run = |engine: &Engine| load_files(engine, files, module);
        let door_run = |warm| door_files(&door, files, module, warm);
        let batch_run = || door_batch(&door, files, module);
        // The caller already has each hash (an OCI digest): computed once, outside the clock.
        let known: Vec<(Hash32, PathBuf)> = files
            .iter()
            .map(|f| Ok((wasm_node_cache::config::sha256(&std::fs::read(f)?), f.clone())))
            .collect::<std::io::Result<_>>()?;
        let by_hash_run = || door_by_hash(&door, &known, module);
        let by_hash_batch_run = || door_by_hash_batch(&door, &known, module);
        wasmtime_run(&cache_engine)?; // fills wasmtime's cache for the modules
        wasmtime_run(&cache_engine)?;
        door_run(false)?; // fills the store
        door_run(true)?;
        let mut wt = Vec::new();
        for _ in 0..args.reps {
            wt.push(wasmtime_run(&cache_engine)?);
        }
        let mut ours = Vec::new();
        for _ in 0..args.reps {
            ours.push(door_run(true)?);
        }
        let mut batch = Vec::new();
        for _ in 0..args.reps {
            batch.push(batch_run()?);
        }
        let mut by_hash = Vec::new();
        for _ in 0..args.reps {
            by_hash.push(by_hash_run()?);
        }
        let mut by_hash_batch = Vec::new();
        for _ in 0..args.reps {
            by_hash_batch.push(by_hash_batch_run()?);
        }
        let (wt, ours, batch) = (median(wt), median(ours), median(batch));
        let (by_hash, by_hash_batch) = (median(by_hash), median(by_hash_batch));
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        println!(
            "{kind}: {} files ({bytes} bytes of wasm): wasmtime_cache {:.2} ms; door, one call each {:.2} ms: {:.1}x; door, one batch {:.2} ms: {:.1}x (target >= 5)",
            files.len(),
            ms(wt),
            ms(ours),
            wt.as_secs_f64() / ours.as_secs_f64(),
            ms(batch),
            wt.as_secs_f64() / batch.as_secs_f64()
        );
        println!(
            "{kind}: known-hash door, one call each {:.2} ms: {:.1}x; one batch {:.2} ms: {:.1}x (target >= 5)",
            ms(by_hash),
            wt.as_secs_f64() / by_hash.as_secs_f64(),
            ms(by_hash_batch),
            wt.as_secs_f64() / by_hash_batch.as_secs_f64()
        );
    }
    Ok(())
}

/// Writes the core modules embedded in the components of `hashes` (their top-level core module
/// sections) to `out`, one file each; returns their paths.
fn extract_modules(dir: &Path, hashes: &[Hash32], out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).context("modules dir")?;
    let mut paths = Vec::new();
    for h in hashes {
        let bytes = std::fs::read(dir.join(hex::encode(h)))?;
        for (i, module) in core_module_sections(&bytes).into_iter().enumerate() {
            let path = out.join(format!("{}-{i}.wasm", hex::encode(&h[..8])));
            std::fs::write(&path, module)?;
            paths.push(path);
        }
    }
    ensure!(
        !paths.is_empty(),
        "no core module in the components of {}",
        dir.display()
    );
    Ok(paths)
}

/// The payloads of a component binary's top-level core module sections (id 1): each a complete
/// core module. Stops at the first malformed section.
fn core_module_sections(component: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = component.get(8..).unwrap_or_default();
    while let Some((&id, after_id)) = rest.split_first() {
        let Some((len, after_len)) = leb128_u32(after_id) else {
            break;
        };
        let Some(body) = after_len.get(..len as usize) else {
            break;
        };
        if id == 1 && body.starts_with(b"\0asm\x01\0\0\0") {
            out.push(body);
        }
        rest = &after_len[len as usize..];
    }
    out
}

/// An unsigned LEB128 u32 and the bytes after it.
fn leb128_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Reads and compiles every file through wasmtime (its cache, when the engine has one).
fn load_files(engine: &Engine, files: &[PathBuf], module: bool) -> Result<Duration> {
    let t = Instant::now();
    let mut kept = (Vec::new(), Vec::new());
    for path in files {
        let bytes = std::fs::read(path)?;
        if module {
            kept.0.push(Module::new(engine, &bytes).map_err(anyhow::Error::from)?);
        } else {
            kept.1
                .push(Component::new(engine, &bytes).map_err(anyhow::Error::from)?);
        }
    }
    let elapsed = t.elapsed();
    drop(kept);
    Ok(elapsed)
}

/// Loads every file through the known-hash door, one call each: a hit reads no file; fails unless
/// the store served everything.
fn door_by_hash(door: &ArtifactStore, known: &[(Hash32, PathBuf)], module: bool) -> Result<Duration> {
    let t = Instant::now();
    let mut kept = (Vec::new(), Vec::new());
    for (hash, path) in known {
        let read = || std::fs::read(path);
        if module {
            kept.0.push(door.load_module_by_hash(hash, read)?);
        } else {
            kept.1.push(door.load_component_by_hash(hash, read)?);
        }
    }
    let elapsed = t.elapsed();
    let compiled = kept.0.iter().filter(|l| l.origin.is_compiled()).count()
        + kept.1.iter().filter(|l| l.origin.is_compiled()).count();
    ensure!(compiled == 0, "{compiled} compiled on a warm store");
    Ok(elapsed)
}

/// Loads every file through the known-hash door in one batch call.
fn door_by_hash_batch(door: &ArtifactStore, known: &[(Hash32, PathBuf)], module: bool) -> Result<Duration> {
    let t = Instant::now();
    let readers: Vec<Box<dyn Fn() -> std::io::Result<Vec<u8>> + '_>> = known
        .iter()
        .map(|(_, path)| Box::new(move || std::fs::read(path)) as Box<dyn Fn() -> std::io::Result<Vec<u8>>>)
        .collect();
    let requests: Vec<(Hash32, &wasm_node_cache::artifact_store::SourceFn<'_>)> = known
        .iter()
        .zip(&readers)
        .map(|((hash, _), read)| (*hash, read.as_ref()))
        .collect();
    let (elapsed, compiled) = if module {
        let loaded = door
            .modules_by_hash(&requests)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        (t.elapsed(), loaded.iter().filter(|l| l.origin.is_compiled()).count())
    } else {
        let loaded = door
            .components_by_hash(&requests)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        (t.elapsed(), loaded.iter().filter(|l| l.origin.is_compiled()).count())
    };
    ensure!(compiled == 0, "{compiled} compiled on a warm store");
    Ok(elapsed)
}

/// Reads every file and loads them all through the embedder's door in one batch call; fails unless
/// the store served everything.
fn door_batch(door: &ArtifactStore, files: &[PathBuf], module: bool) -> Result<Duration> {
    let t = Instant::now();
    let bytes = files.iter().map(std::fs::read).collect::<std::io::Result<Vec<_>>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    // Kept until after the clock stops, as in the other paths: dropping unmaps.
    let (elapsed, compiled) = if module {
        let loaded = door.modules(&refs).into_iter().collect::<Result<Vec<_>, _>>()?;
        (t.elapsed(), loaded.iter().filter(|l| l.origin.is_compiled()).count())
    } else {
        let loaded = door.components(&refs).into_iter().collect::<Result<Vec<_>, _>>()?;
        (t.elapsed(), loaded.iter().filter(|l| l.origin.is_compiled()).count())
    };
    ensure!(compiled == 0, "{compiled} compiled on a warm store");
    Ok(elapsed)
}

/// Reads every file and loads it through the embedder's door, one call each; with `expect_warm`,
/// fails unless the store served everything.
fn door_files(door: &ArtifactStore, files: &[PathBuf], module: bool, expect_warm: bool) -> Result<Duration> {
    let t = Instant::now();
    let mut kept = (Vec::new(), Vec::new());
    let mut compiled = 0;
    for path in files {
        let bytes = std::fs::read(path)?;
        if module {
            let l = door.load_module(&bytes)?;
            compiled += usize::from(l.origin.is_compiled());
            kept.0.push(l.value);
        } else {
            let l = door.load_component(&bytes)?;
            compiled += usize::from(l.origin.is_compiled());
            kept.1.push(l.value);
        }
    }
    let elapsed = t.elapsed();
    drop(kept);
    ensure!(!expect_warm || compiled == 0, "{compiled} compiled on a warm store");
    Ok(elapsed)
}

/// Checks that every source is named by its SHA-256; returns their total size.
fn check_sources(dir: &Path, hashes: &[Hash32]) -> Result<u64> {
    let mut total = 0;
    for h in hashes {
        let path = dir.join(hex::encode(h));
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        ensure!(
            wasm_node_cache::config::sha256(&bytes) == *h,
            "{} is not named by its SHA-256",
            path.display()
        );
        total += bytes.len() as u64;
    }
    Ok(total)
}

/// Reads every source and compiles it, as the node did before this crate (here through wasmtime's
/// cache, which turns the compilation into a cache lookup).
fn compile_all(engine: &Engine, dir: &Path, hashes: &[Hash32]) -> Result<Duration> {
    let t = Instant::now();
    let mut components = Vec::with_capacity(hashes.len());
    for h in hashes {
        let path = dir.join(hex::encode(h));
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        components.push(
            Component::new(engine, &bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("compile {}", path.display()))?,
        );
    }
    let elapsed = t.elapsed();
    drop(components);
    Ok(elapsed)
}

/// One `WasmNodeCache` start-up on `store`; with `expect_warm`, fails unless all came from the store.
fn start_up(
    engine: &Engine,
    dir: &Path,
    whitelist: &HashSet<Hash32>,
    store: &Path,
    expect_warm: bool,
) -> Result<Duration> {
    let builder = WasmNodeCache::builder()
        .engine(engine.clone())
        .binary_root(dir)
        .whitelist(whitelist.clone())
        .store(store);
    let t = Instant::now();
    let cache = builder.build().context("start-up")?;
    let elapsed = t.elapsed();
    let report = cache.report();
    ensure!(
        cache.wasm_component_cache.len() == whitelist.len(),
        "not every component loaded: {report}"
    );
    ensure!(
        !expect_warm || (report.from_store, report.compiled, report.rejected) == (whitelist.len(), 0, 0),
        "a warm start loads everything from the store: {report}"
    );
    // Dropped outside the timed region, as the components would live for the node's life.
    drop(cache);
    Ok(elapsed)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
