//! Helpers shared by the integration tests: real components, fixtures, and calling exports.
#![allow(dead_code)]

pub mod mixer;
pub mod scenarios;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use wasm_node_cache::Hash32;
use wasm_node_cache::config::sha256;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(name, wasm bytes)` of every WAT source in `components/`, sorted by name.
///
/// Deliberately not the generated `mixer` (also in config/wasm, see [`mixer`]): it takes a good part
/// of a second to compile, and the fixtures built from this list are compiled again and again.
/// Tests of the mixer itself use [`mixer::component`].
pub fn shipped_sources() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("components")).expect("components/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "wat") {
            let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
            out.push((name, wat::parse_file(&path).expect("WAT parses")));
        }
    }
    out.sort();
    out
}

/// The adder's hash (from its WAT source).
pub fn adder_hash() -> Hash32 {
    sha256(&shipped("adder"))
}

/// The wasm bytes of the shipped component `name` (`components/<name>.wat`).
pub fn shipped(name: &str) -> Vec<u8> {
    let path = repo().join("components").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The adder precompiled by `engine`: the payload of a real artifact.
pub fn precompiled_adder(engine: &Engine) -> Vec<u8> {
    engine
        .precompile_component(&shipped("adder"))
        .expect("precompile the adder")
}

/// A binary root in a temp dir holding every shipped component; returns (dir, root, whitelist).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub store: PathBuf,
    pub whitelist: HashSet<Hash32>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("wasm");
        std::fs::create_dir(&root).expect("mkdir");
        let mut whitelist = HashSet::new();
        for (_, bytes) in shipped_sources() {
            let h = sha256(&bytes);
            std::fs::write(root.join(hex::encode(h)), &bytes).expect("write binary");
            whitelist.insert(h);
        }
        let store = dir.path().join("store");
        Fixture {
            dir,
            root,
            store,
            whitelist,
        }
    }

    pub fn builder(&self) -> wasm_node_cache::Builder {
        wasm_node_cache::WasmNodeCache::builder()
            .binary_root(&self.root)
            .whitelist(self.whitelist.clone())
            .store(&self.store)
    }

    pub fn start(&self) -> wasm_node_cache::WasmNodeCache {
        self.builder().build().expect("start-up")
    }

    pub fn artifact_path(&self, hash: &Hash32) -> PathBuf {
        artifact_of(&self.store, hash)
    }
}

/// The artifact file of `hash` in `store` (any fingerprint; exactly one expected).
pub fn artifact_of(store: &Path, hash: &Hash32) -> PathBuf {
    let suffix = format!("-{}.cwasm", hex::encode(hash));
    let found: Vec<PathBuf> = std::fs::read_dir(store)
        .expect("store exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .collect();
    assert_eq!(found.len(), 1, "one artifact for {}", hex::encode(hash));
    found.into_iter().next().expect("one")
}

/// The shipped component `name` (`cached`, loaded from a store) gives the same results as `bytes`
/// compiled afresh by `engine`: what runs is what a compilation of the whitelisted bytes makes.
pub fn assert_same_results_as_fresh(engine: &Engine, name: &str, cached: &Component, bytes: &[u8]) {
    let fresh = Component::new(engine, bytes).expect("fresh compile");
    match name {
        "adder" => {
            for (a, b) in [(1, 2), (-7, 3), (i32::MAX, 1)] {
                assert_eq!(call_add(engine, cached, a, b), call_add(engine, &fresh, a, b));
            }
            assert_eq!(call_add(engine, cached, 40, 2), 42);
        }
        "fib" => assert_eq!(call_fib(engine, cached, 50), call_fib(engine, &fresh, 50)),
        "fnv1a" => assert_eq!(
            call_fnv1a(engine, cached, "what runs is what was verified"),
            call_fnv1a(engine, &fresh, "what runs is what was verified")
        ),
        other => panic!("no check for {other}"),
    }
}

/// Calls the adder's `add` with fuel, as the node would.
pub fn call_add(engine: &Engine, component: &Component, a: i32, b: i32) -> i32 {
    let mut store = Store::new(engine, ());
    store.set_fuel(1_000_000).expect("fuel enabled");
    let linker = Linker::new(engine);
    let instance = linker.instantiate(&mut store, component).expect("instantiate");
    let add = instance
        .get_typed_func::<(i32, i32), (i32,)>(&mut store, "add")
        .expect("add export");
    let (r,) = add.call(&mut store, (a, b)).expect("call");
    r
}

/// Calls `fib` with fuel.
pub fn call_fib(engine: &Engine, component: &Component, n: u32) -> u64 {
    let mut store = Store::new(engine, ());
    store.set_fuel(10_000_000).expect("fuel enabled");
    let linker = Linker::new(engine);
    let instance = linker.instantiate(&mut store, component).expect("instantiate");
    let f = instance
        .get_typed_func::<(u32,), (u64,)>(&mut store, "fib")
        .expect("fib export");
    f.call(&mut store, (n,)).expect("call").0
}

/// Calls `fnv1a` with fuel.
pub fn call_fnv1a(engine: &Engine, component: &Component, data: &str) -> u32 {
    let mut store = Store::new(engine, ());
    store.set_fuel(10_000_000).expect("fuel enabled");
    let linker = Linker::new(engine);
    let instance = linker.instantiate(&mut store, component).expect("instantiate");
    let f = instance
        .get_typed_func::<(&str,), (u32,)>(&mut store, "fnv1a")
        .expect("fnv1a export");
    f.call(&mut store, (data,)).expect("call").0
}

/// Calls the mixer's `mix` with fuel (it runs about half a million instructions).
pub fn call_mix(engine: &Engine, component: &Component, seed: u64) -> u64 {
    let mut store = Store::new(engine, ());
    store.set_fuel(10_000_000).expect("fuel enabled");
    let linker = Linker::new(engine);
    let instance = linker.instantiate(&mut store, component).expect("instantiate");
    let f = instance
        .get_typed_func::<(u64,), (u64,)>(&mut store, "mix")
        .expect("mix export");
    f.call(&mut store, (seed,)).expect("call").0
}

/// A distinct, valid component for index `i`: `get() -> u32` returns `i`; `funcs` extra core
/// functions make it bigger. Used where many components are needed.
pub fn generated_component(i: u32, funcs: u32) -> Vec<u8> {
    let mut body = String::new();
    for f in 0..funcs {
        body.push_str(&format!(
            "(func (export \"f{f}\") (param i32) (result i32) local.get 0 i32.const {} i32.mul i32.const {f} i32.add)\n",
            i.wrapping_mul(2654435761) | 1
        ));
    }
    let wat = format!(
        "(component (core module $m (func (export \"get\") (result i32) i32.const {i}) {body}) \
         (core instance $i (instantiate $m)) \
         (func (export \"get\") (result u32) (canon lift (core func $i \"get\"))))"
    );
    wat::parse_str(&wat).expect("generated WAT parses")
}

/// A binary root of `n` generated components (`funcs` extra functions each), named by SHA-256.
pub struct Generated {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub whitelist: HashSet<Hash32>,
}

pub fn generated_corpus(n: u32, funcs: u32) -> Generated {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("wasm");
    std::fs::create_dir(&root).expect("mkdir");
    let mut whitelist = HashSet::new();
    for i in 0..n {
        let bytes = generated_component(i, funcs);
        let h = sha256(&bytes);
        std::fs::write(root.join(hex::encode(h)), &bytes).expect("write");
        whitelist.insert(h);
    }
    Generated { dir, root, whitelist }
}

/// File names in `store` that start with `prefix`.
pub fn files_with_prefix(store: &Path, prefix: &str) -> Vec<String> {
    match std::fs::read_dir(store) {
        Ok(d) => d
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Number of artifact files in `store`.
pub fn artifact_count(store: &Path) -> usize {
    match std::fs::read_dir(store) {
        Ok(d) => d
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .count(),
        Err(_) => 0,
    }
}

/// Starts a node with `builder` and checks that it started without using its store, for a reason
/// that contains `expect`; returns the report.
pub fn start_without_store(builder: wasm_node_cache::Builder, expect: &str) -> wasm_node_cache::LoadReport {
    let r = builder.build().expect("the node starts").report().clone();
    assert!(
        r.store
            .read_error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains(expect)),
        "expected the store refused with {expect:?}: {r}"
    );
    r
}

/// The adder's `add(a, b)` as a started node runs it: its engine, its cached component.
pub fn node_add(cache: &wasm_node_cache::WasmNodeCache, a: i32, b: i32) -> i32 {
    let adder = cache
        .wasm_component_cache
        .get(&adder_hash())
        .expect("the adder is loaded");
    call_add(&cache.wasm_engine, adder, a, b)
}

/// Sets `path`'s permission bits.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Writes a MAC key file at `path` with permission bits `mode`: 32 bytes counting up from `byte`
/// (a key of 32 equal bytes is refused as not random), so each `byte` gives another key.
pub fn key_file(path: &Path, byte: u8, mode: u32) -> PathBuf {
    let key: Vec<u8> = (0..32u8).map(|i| byte.wrapping_add(i)).collect();
    std::fs::write(path, key).expect("write key");
    chmod(path, mode);
    path.to_path_buf()
}

/// Runs `script` with `sh -c` in `dir`, as a separate process, and asserts it succeeded.
pub fn sh(script: &str, dir: &Path) {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{script}");
}

/// Makes `dir` (existing, empty) a store by hand: the marker a start-up writes first, so that
/// what a test plants next (a lock file, a link) is planted in a store, not in a directory that
/// names alone would have to prove is one.
pub fn mark_store(dir: &Path) {
    std::fs::write(
        dir.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by wasm-node-cache.\n",
    )
    .expect("write the marker");
}

/// The crate's CLI as a separate process in `cwd`, with none of the environment that would choose
/// a store, a key or read-only stores for it (each test says what it wants), nor `RUST_LOG`.
pub fn cli_command(cwd: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wasm-node-cache"));
    c.current_dir(cwd);
    for var in [
        "WASM_NODE_CACHE_DIR",
        "WASM_NODE_CACHE_KEY_FILE",
        "WASM_NODE_CACHE_READ_ONLY_DIRS",
        "CACHE_DIRECTORY",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

/// [`cli_command`] with `args`, run to completion.
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> std::process::Output {
    cli_command(cwd).args(args).output().expect("run wasm-node-cache")
}

/// Starts `flock -o -x LOCK sleep 60` (the lock is flock's own, so killing it releases the lock)
/// and waits until it holds the lock: a hung holder in another process.
pub fn hold_lock_exclusively(lock: &Path) -> std::process::Child {
    let child = std::process::Command::new("flock")
        .args(["-o", "-x"])
        .arg(lock)
        .args(["sleep", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("flock");
    wait_until_held(lock);
    child
}

/// Waits (10 s at most) until some process holds `lock`: until this one can no longer take it
/// shared without waiting.
pub fn wait_until_held(lock: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::process::Command::new("flock")
        .args(["-n", "-s"])
        .arg(lock)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nobody took the lock {}",
            lock.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The second uid of the privileged tests (`nobody`).
pub const OTHER_UID: u32 = 65534;

/// Gives `path` (a link itself, not its target) to [`OTHER_UID`], or fails the test saying why.
/// Only tests marked `#[ignore = "needs root: ..."]` call it, so a run without root shows them as
/// not run, and `cargo test -- --ignored` without root fails instead of passing silently.
pub fn give_to_other_uid(path: &Path) {
    let euid = rustix::process::geteuid().as_raw();
    assert_ne!(
        euid, OTHER_UID,
        "needs root: this process runs as uid {OTHER_UID}, the uid these tests use as the other user"
    );
    std::os::unix::fs::lchown(path, Some(OTHER_UID), Some(OTHER_UID)).unwrap_or_else(|e| {
        panic!(
            "needs root: cannot chown {} to uid {OTHER_UID} ({e}); run the ignored tests as root (.ci/run does)",
            path.display()
        )
    });
}

/// Runs `mount` with `args`, or fails the test saying why (see [`give_to_other_uid`]).
pub fn mount_or_fail(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new("mount").args(args).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "needs root: mount {args:?} failed: {}; run the ignored tests as root (.ci/run does)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("needs root: cannot run mount ({e}); run the ignored tests as root (.ci/run does)"),
    }
}

/// Runs `program args` as [`OTHER_UID`] (through `setpriv`), returning its output; fails the test
/// when the switch itself is refused.
pub fn run_as_other_uid(program: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("needs root: cannot run setpriv ({e})"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("setpriv:"),
        "needs root: setpriv could not switch to uid {OTHER_UID}: {stderr}"
    );
    out
}

/// Every entry below `dir` with its bytes (or its link target, or nothing for a directory), to
/// show that nothing changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    snapshot_into(dir, &mut out);
    out
}

fn snapshot_into(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        let bytes = if meta.is_dir() {
            snapshot_into(&path, out);
            Vec::new()
        } else if meta.file_type().is_symlink() {
            std::fs::read_link(&path)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes()
        } else {
            std::fs::read(&path).expect("read")
        };
        out.insert(path, bytes);
    }
}
