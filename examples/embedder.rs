//! A small wasmtime host on the embedder's door: loads every `.wasm` file of a directory, core
//! modules and components alike, through one `ArtifactStore`, and calls in each the first
//! exported function that takes no parameters (with fuel, so none can loop forever).
//!
//! ```text
//! cargo run --example embedder -- DIR [STORE]
//! ```
//! STORE defaults to `<temp dir>/wasm-node-cache-example-<uid>`. Run it twice: the second run
//! compiles nothing. One line per file: its name, its kind, where its code came from, and the
//! call made (or why none was).

use std::path::{Path, PathBuf};

use anyhow::Context;
use wasm_node_cache::{ArtifactStore, Loaded};
use wasmtime::component::{Component, Linker, Val};
use wasmtime::{Config, Engine, Instance, Module, Store};

const FUEL: u64 = 10_000_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let dir = PathBuf::from(args.next().context("usage: embedder DIR [STORE]")?);
    let store_dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "wasm-node-cache-example-{}",
            rustix::process::geteuid().as_raw()
        ))
    });
    let mut config = Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config)?;
    let artifacts = ArtifactStore::open(&store_dir, &engine)?;

    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.push((path, bytes));
        }
    }
    files.sort();
    let (components, modules): (Vec<_>, Vec<_>) = files.iter().partition(|(_, bytes)| is_component(bytes));

    // One batch per kind: what the store lacks is compiled in parallel.
    let wasm: Vec<&[u8]> = components.iter().map(|(_, b)| b.as_slice()).collect();
    for ((path, _), loaded) in components.iter().zip(artifacts.components(&wasm)) {
        report(
            path,
            "component",
            loaded.map(|l| (call_component(&engine, &l.value), l)),
        );
    }
    let wasm: Vec<&[u8]> = modules.iter().map(|(_, b)| b.as_slice()).collect();
    for ((path, _), loaded) in modules.iter().zip(artifacts.modules(&wasm)) {
        report(path, "module", loaded.map(|l| (call_module(&engine, &l.value), l)));
    }
    Ok(())
}

/// A component's header has layer 1 in bytes 6..8 (`\0asm`, a 16-bit version, a 16-bit layer);
/// a core module's has layer 0.
fn is_component(bytes: &[u8]) -> bool {
    bytes.get(6..8) == Some(&[1, 0][..])
}

fn report<T>(path: &Path, kind: &str, result: Result<(String, Loaded<T>), wasm_node_cache::StoreError>) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match result {
        Ok((call, loaded)) => println!("{name}: {kind}, {}; {call}", loaded.origin),
        Err(e) => println!("{name}: {kind}, not loaded: {e:#}", e = anyhow::Error::new(e)),
    }
}

/// Calls the component's first exported function without parameters.
fn call_component(engine: &Engine, component: &Component) -> String {
    let ty = component.component_type();
    let Some(name) = ty.exports(engine).find_map(|(name, item)| match item.ty {
        wasmtime::component::types::ComponentItem::ComponentFunc(f) if f.params().len() == 0 => Some(name.to_owned()),
        _ => None,
    }) else {
        return "no export without parameters to call".to_owned();
    };
    let mut store = Store::new(engine, ());
    let mut run = || -> anyhow::Result<String> {
        store.set_fuel(FUEL)?;
        let instance = Linker::new(engine).instantiate(&mut store, component)?;
        let func = instance.get_func(&mut store, &name).context("export vanished")?;
        let mut results = vec![Val::Bool(false); func.ty(&store).results().len()];
        func.call(&mut store, &[], &mut results)?;
        Ok(format!("{name}() = {results:?}"))
    };
    run().unwrap_or_else(|e| format!("{name}() failed: {e:#}"))
}

/// Calls the module's first exported function without parameters (a module with imports is not
/// instantiated: this host provides none).
fn call_module(engine: &Engine, module: &Module) -> String {
    if module.imports().len() > 0 {
        return "has imports; not instantiated".to_owned();
    }
    let Some(name) = module.exports().find_map(|e| match e.ty() {
        wasmtime::ExternType::Func(f) if f.params().len() == 0 => Some(e.name().to_owned()),
        _ => None,
    }) else {
        return "no export without parameters to call".to_owned();
    };
    let mut store = Store::new(engine, ());
    let mut run = || -> anyhow::Result<String> {
        store.set_fuel(FUEL)?;
        let instance = Instance::new(&mut store, module, &[])?;
        let func = instance.get_func(&mut store, &name).context("export vanished")?;
        let mut results = vec![wasmtime::Val::I32(0); func.ty(&store).results().len()];
        func.call(&mut store, &[], &mut results)?;
        Ok(format!("{name}() = {results:?}"))
    };
    run().unwrap_or_else(|e| format!("{name}() failed: {e:#}"))
}
