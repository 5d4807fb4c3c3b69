//! The embedder's door: `ArtifactStore` for components and core modules, across processes, with
//! the kind bound into every artifact, and its errors matched by variant.

use crate::common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wasm_node_cache::Fingerprint;
use wasm_node_cache::artifact_store::StoreWrite;
use wasm_node_cache::config::sha256;
use wasm_node_cache::error::ArtifactError;
use wasm_node_cache::error::Rejection;
use wasm_node_cache::testing::ArtifactKey;
use wasm_node_cache::testing::{Sealer, encode_trailer};
use wasm_node_cache::testing::{Store, deadline_after};
use wasm_node_cache::{ArtifactStore, CpuProfile, Kind, Origin, StoreError};
use wasmtime::{Engine, Instance, Module};

/// A core module exporting `add`.
fn core_module() -> Vec<u8> {
    wat::parse_str(r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#)
        .expect("WAT parses")
}

/// Calls the core module's `add`.
fn module_add(engine: &Engine, module: &Module, a: i32, b: i32) -> i32 {
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(1_000_000).ok();
    let instance = Instance::new(&mut store, module, &[]).expect("instantiate");
    let add = instance
        .get_typed_func::<(i32, i32), i32>(&mut store, "add")
        .expect("add export");
    add.call(&mut store, (a, b)).expect("call")
}

fn node_engine() -> Engine {
    wasm_node_cache::init_wasm_engine().expect("engine")
}

const CHILD_ENV: &str = "WNC_EMBEDDER_CHILD_STORE";

/// Runs `n` children of this test binary at once, each loading the adder component and a core
/// module from `store`; returns how many of each were compiled and loaded in all.
fn children_at_once(n: usize, store: &Path) -> [(usize, usize); 2] {
    let running: Vec<_> = (0..n)
        .map(|_| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "embedder_door::child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, store)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut counts = [(0, 0); 2];
    for child in running {
        let out = child.wait_with_output().expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child failed:\n{text}"
        );
        for (i, kind) in ["component", "module"].into_iter().enumerate() {
            counts[i].0 += text.matches(&format!("ORIGIN {kind} compiled")).count();
            counts[i].1 += text.matches(&format!("ORIGIN {kind} loaded")).count();
        }
    }
    counts
}

#[test]
fn four_processes_compile_each_component_and_module_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    // (compiled, loaded) for the component, then the module.
    assert_eq!(
        children_at_once(4, &store),
        [(1, 3), (1, 3)],
        "each compiled once in all four processes"
    );
    assert_eq!(
        children_at_once(4, &store),
        [(0, 4), (0, 4)],
        "the second round loads all"
    );
    let names: Vec<String> = std::fs::read_dir(&store)
        .expect("store")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".module.cwasm")).count(),
        1,
        "{names:?}"
    );
}

#[test]
#[ignore = "child process of four_processes_compile_each_component_and_module_once"]
fn child() {
    let Some(store) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let engine = node_engine();
    let artifacts = ArtifactStore::open(&store, &engine).expect("open");
    let component = artifacts.load_component(&common::shipped("adder")).expect("component");
    let module = artifacts.load_module(&core_module()).expect("module");
    assert_eq!(common::call_add(&engine, &component.value, 40, 2), 42);
    assert_eq!(module_add(&engine, &module.value, 40, 2), 42);
    for (kind, origin) in [("component", &component.origin), ("module", &module.origin)] {
        let how = match origin {
            Origin::Compiled {
                stored: StoreWrite::Stored,
                ..
            } => "compiled",
            Origin::Store { .. } => "loaded",
            other => panic!("unexpected origin {other}"),
        };
        println!("ORIGIN {kind} {how}");
    }
}

/// Forges, with the trailer encoder, an artifact of `kind` for `source` holding `payload`, and
/// writes it under `name` in `store`.
fn forge(store: &Path, name: &str, source: [u8; 32], kind: Kind, payload: &[u8], engine: &Engine) {
    let key = ArtifactKey {
        source,
        fingerprint: Fingerprint::of(engine, false),
        kind,
    };
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&encode_trailer(payload, &key, &Sealer::Plain, 0));
    let path = store.join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, bytes).expect("plant");
    common::chmod(&path, 0o444);
}

#[test]
fn a_module_artifact_is_never_returned_for_a_component_and_the_reverse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let engine = node_engine();
    let artifacts = ArtifactStore::open(&store, &engine).expect("open");
    let (component, module) = (common::shipped("adder"), core_module());
    let (c_hash, m_hash) = (sha256(&component), sha256(&module));
    artifacts.component(&component).expect("component");
    artifacts.module(&module).expect("module");
    let key = |source, kind| ArtifactKey {
        source,
        fingerprint: Fingerprint::of(&engine, false),
        kind,
    };
    let c_name = key(c_hash, Kind::Component).file_name();
    let m_name = key(m_hash, Kind::Module).file_name();
    assert!(store.join(&c_name).is_file() && store.join(&m_name).is_file());

    // The module's artifact, with a trailer that names the component's hash as a module, under
    // the component's name; and the reverse.
    let module_payload = engine.precompile_module(&module).expect("precompile");
    let component_payload = engine.precompile_component(&component).expect("precompile");
    forge(&store, &c_name, c_hash, Kind::Module, &module_payload, &engine);
    forge(&store, &m_name, m_hash, Kind::Component, &component_payload, &engine);
    let c = artifacts.load_component(&component).expect("served");
    assert!(
        matches!(
            c.origin.rejected(),
            Some(Rejection::Format(ArtifactError::WrongKind { found: Kind::Module }))
        ),
        "{:?}",
        c.origin
    );
    assert!(c.origin.is_compiled(), "{}", c.origin);
    assert_eq!(common::call_add(&engine, &c.value, 2, 3), 5);
    let m = artifacts.load_module(&module).expect("served");
    assert!(
        matches!(
            m.origin.rejected(),
            Some(Rejection::Format(ArtifactError::WrongKind { found: Kind::Component }))
        ),
        "{:?}",
        m.origin
    );
    assert!(m.origin.is_compiled(), "{}", m.origin);
    assert_eq!(module_add(&engine, &m.value, 2, 3), 5);

    // A plain copy of the other kind's artifact under this kind's name: another source too.
    std::fs::copy(store.join(&m_name), dir.path().join("module.cwasm")).expect("copy");
    let _ = std::fs::remove_file(store.join(&c_name));
    std::fs::copy(dir.path().join("module.cwasm"), store.join(&c_name)).expect("copy");
    let c = artifacts.load_component(&component).expect("served");
    assert!(c.origin.rejected().is_some() && c.origin.is_compiled(), "{c:?}");
    // Healed: both load from the store now.
    assert!(matches!(
        artifacts.load_component(&component).expect("c").origin,
        Origin::Store { .. }
    ));
    assert!(matches!(
        artifacts.load_module(&module).expect("m").origin,
        Origin::Store { .. }
    ));
}

#[test]
fn module_artifacts_are_artifacts_to_listing_and_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let engine = node_engine();
    let artifacts = ArtifactStore::open(&store, &engine).expect("open");
    artifacts.module(&core_module()).expect("module");
    artifacts.component(&common::shipped("adder")).expect("component");
    let opened = Store::open_for(&engine, &store, Sealer::Plain, false).expect("open");
    assert!(
        opened.foreign_files().expect("list").is_empty(),
        "a module artifact is not foreign"
    );
    let entries = opened.entries().expect("list");
    let kinds: Vec<Kind> = entries.iter().map(|e| e.key.kind).collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&Kind::Module) && kinds.contains(&Kind::Component));
    for e in &entries {
        assert_eq!(opened.check(&e.key).expect("verifies").kind, e.key.kind);
    }
    // The operator's commands agree: verify finds nothing wrong, status lists both.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wasm-node-cache"))
            .args(args)
            .arg("--store")
            .arg(&store)
            .env_remove("WASM_NODE_CACHE_KEY_FILE")
            .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS")
            .output()
            .expect("run the CLI")
    };
    let verify = cli(&["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let status = cli(&["status", "--json"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("\"kind\": \"module\"") || text.contains("\"kind\":\"module\""),
        "{text}"
    );
}

#[test]
fn invalid_wasm_is_the_only_error_of_a_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = node_engine();
    let artifacts = ArtifactStore::open(dir.path().join("store"), &engine).expect("open");
    let module = core_module();
    match artifacts.component(&module) {
        Err(StoreError::Compile { hash, kind, .. }) => {
            assert_eq!((hash, kind), (sha256(&module), Kind::Component));
        }
        other => panic!("expected a compile error, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        artifacts.module(b"not wasm"),
        Err(StoreError::Compile { kind: Kind::Module, .. })
    ));
    // A batch: one result per input, in order, the same bytes compiled once.
    let adder = common::shipped("adder");
    let fib = common::shipped("fib");
    let batch = artifacts.components(&[&adder, &module, &fib, &adder]);
    assert_eq!(batch.len(), 4);
    assert!(matches!(batch[1], Err(StoreError::Compile { .. })));
    assert!(batch[3].is_ok());
    let ok: Vec<_> = [0, 2, 3].iter().map(|&i| batch[i].as_ref().expect("valid")).collect();
    assert_eq!(
        (ok[0].hash, ok[1].hash, ok[2].hash),
        (sha256(&adder), sha256(&fib), sha256(&adder))
    );
    assert!(ok.iter().all(|l| l.origin.is_compiled()));
    assert_eq!(
        common::artifact_count(&dir.path().join("store")),
        2,
        "the adder compiled once"
    );
    let again = artifacts.components(&[&adder, &fib]);
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Ok(l) if matches!(l.origin, Origin::Store { .. })))
    );
}

#[test]
fn a_lock_held_past_the_timeout_compiles_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = node_engine();
    let artifacts = ArtifactStore::builder(&path)
        .lock_timeout(Duration::from_millis(200))
        .open(&engine)
        .expect("open");
    let holder = Store::open_for(&engine, &path, Sealer::Plain, false).expect("open");
    let held = holder
        .lock_exclusive(deadline_after(Duration::ZERO), "hold")
        .expect("lock");
    let loaded = artifacts.load_component(&common::shipped("adder")).expect("served");
    match &loaded.origin {
        Origin::Compiled {
            stored: StoreWrite::NotStored(why),
            ..
        } => assert!(why.kind() == "lock" && why.message().contains("lock"), "{why:?}"),
        other => panic!("expected compiled, not stored: {other}"),
    }
    assert_eq!(common::call_add(&engine, &loaded.value, 1, 1), 2);
    drop(held);
    assert!(
        artifacts
            .load_component(&common::shipped("adder"))
            .expect("c")
            .origin
            .is_compiled()
    );
    assert!(
        !artifacts
            .load_component(&common::shipped("adder"))
            .expect("c")
            .origin
            .is_compiled()
    );
}

#[test]
fn open_errors_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = node_engine();
    let store = dir.path().join("store");
    let missing = dir.path().join("no-such-bake");
    assert!(matches!(
        ArtifactStore::builder(&store).read_only_store(&missing).open(&engine),
        Err(StoreError::Missing { path }) if path == missing
    ));
    // A store someone made writable by everyone (an unmarked directory like it would be a
    // volume's mount point, holding the store in a directory of this uid's own).
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).expect("mkdir");
    common::mark_store(&loose);
    common::chmod(&loose, 0o777);
    let refused = ArtifactStore::open(&loose, &engine).expect_err("refused");
    assert!(
        matches!(&refused, StoreError::Refused { path, .. } if *path == loose),
        "{refused:?}"
    );
    // The cause is the source, printed once in the chain.
    let cause = std::error::Error::source(&refused).expect("a cause").to_string();
    assert!(cause.contains("writable by other users"), "{cause}");
    assert!(!refused.to_string().contains(&cause), "{refused}");

    let key = common::key_file(&dir.path().join("loose.key"), 1, 0o644);
    assert!(matches!(
        ArtifactStore::builder(&store).auth_key_file(&key).open(&engine),
        Err(StoreError::Key { .. })
    ));
    assert!(matches!(
        ArtifactStore::builder(&store).cpu_profiles(&[]).open(&engine),
        Err(StoreError::Profile { profile: None, .. })
    ));
    if let Some(&portable) = CpuProfile::portable().first() {
        assert!(matches!(
            ArtifactStore::builder(&store).cpu_profiles(&[portable]).open(&Engine::default()),
            Err(StoreError::Profile { profile: Some(p), .. }) if p == portable
        ));
        ArtifactStore::builder(&store)
            .cpu_profiles(&[CpuProfile::Native, portable])
            .open(&engine)
            .expect("the node's engine takes portable profiles");
    }
}

/// The example host, built by `cargo test` next to this test binary's directory.
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    // target/<profile>/deps/<test> -> target/<profile>/examples/embedder
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("examples").join("embedder"))
        .expect("target layout");
    assert!(
        path.is_file(),
        "{} not built: `cargo test` builds the examples (or run `cargo build --example embedder`)",
        path.display()
    );
    path
}

#[test]
fn the_example_host_compiles_nothing_on_its_second_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("wasm");
    std::fs::create_dir(&wasm).expect("mkdir");
    std::fs::write(wasm.join("get.wasm"), common::generated_component(7, 2)).expect("write");
    let answer = wat::parse_str(r#"(module (func (export "answer") (result i32) i32.const 42))"#).expect("WAT");
    std::fs::write(wasm.join("answer.wasm"), answer).expect("write");
    std::fs::write(wasm.join("notes.txt"), "not wasm, not looked at").expect("write");
    let store = dir.path().join("store");
    let run = || {
        let out = Command::new(example_binary())
            .arg(&wasm)
            .arg(&store)
            .output()
            .expect("run the example");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let first = run();
    assert_eq!(first.lines().count(), 2, "{first}");
    assert!(
        first.contains("answer.wasm: module, compiled and stored; answer() = [I32(42)]"),
        "{first}"
    );
    assert!(
        first.contains("get.wasm: component, compiled and stored; get() = [U32(7)]"),
        "{first}"
    );
    let second = run();
    assert_eq!(second.lines().count(), 2, "{second}");
    assert!(
        !second.contains("compiled"),
        "the second run compiles nothing:\n{second}"
    );
    assert_eq!(
        second
            .matches(&format!("loaded from {} (mapped)", store.display()))
            .count(),
        2,
        "{second}"
    );
    assert!(
        second.contains("answer() = [I32(42)]") && second.contains("get() = [U32(7)]"),
        "{second}"
    );
}

#[test]
fn threads_of_one_process_share_one_store_and_compile_once() {
    fn send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = node_engine();
    let artifacts = ArtifactStore::open(dir.path().join("store"), &engine).expect("open");
    send_sync_clone(&artifacts);
    let component = common::generated_component(3, 20);
    let barrier = std::sync::Barrier::new(8);
    let compiled: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (artifacts, component, barrier) = (artifacts.clone(), &component, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    usize::from(
                        artifacts
                            .load_component(component)
                            .expect("served")
                            .origin
                            .is_compiled(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).sum()
    });
    assert_eq!(compiled, 1, "one thread compiled, seven loaded");
}

#[test]
fn a_portable_profile_is_baked_and_then_serves_a_store_that_lacks_native_artifacts() {
    let Some(&portable) = CpuProfile::portable().last() else {
        return; // no portable profile on this architecture: nothing to bake
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = node_engine();
    let wasm = common::shipped("adder");
    let baker = ArtifactStore::builder(&path)
        .cpu_profiles(&[portable])
        .open(&engine)
        .expect("open");
    let baked = baker.load_component(&wasm).expect("served");
    match &baked.origin {
        Origin::Compiled {
            stored: StoreWrite::NotWanted,
            ..
        } => assert!(baked.origin.to_string().contains("native"), "{}", baked.origin),
        other => panic!("native artifacts are not stored: {other}"),
    }
    assert_eq!(common::artifact_count(&path), 1, "one portable artifact");
    let host = ArtifactStore::open(&path, &engine).expect("open");
    let loaded = host.load_component(&wasm).expect("served");
    assert!(
        matches!(&loaded.origin, Origin::Portable { profile, dir, .. } if *profile == portable && *dir == path),
        "{}",
        loaded.origin
    );
    assert_eq!(common::call_add(&engine, &loaded.value, 20, 22), 42);
}

#[test]
fn a_stored_artifact_loads_while_another_thread_compiles_the_mixer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = node_engine();
    let artifacts = ArtifactStore::open(dir.path().join("store"), &engine).expect("open");
    let adder = common::shipped("adder");
    assert!(artifacts.load_component(&adder).expect("adder").origin.is_compiled());
    let compiling = {
        let artifacts = artifacts.clone();
        std::thread::spawn(move || artifacts.load_component(&common::mixer::component()).expect("mixer"))
    };
    // Let the mixer's compilation start: it takes a good part of a second.
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    let loaded = artifacts.load_component(&adder).expect("adder");
    let took = t.elapsed();
    let overlapped = !compiling.is_finished();
    let mixer = compiling.join().expect("mixer thread");
    assert!(mixer.origin.is_compiled(), "{}", mixer.origin);
    assert!(matches!(loaded.origin, Origin::Store { .. }), "{}", loaded.origin);
    assert!(
        overlapped,
        "the mixer was compiled before the adder's load: nothing was tested"
    );
    assert!(
        took < Duration::from_millis(10),
        "a stored artifact waited {took:?} for another artifact's compilation"
    );
}

#[test]
fn a_held_lock_costs_one_timeout_for_21_separate_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = node_engine();
    let timeout = Duration::from_secs(2);
    let artifacts = ArtifactStore::builder(&path)
        .lock_timeout(timeout)
        .open(&engine)
        .expect("open");
    // Another process holds the store's exclusive lock (a hung prune, say).
    let lock = path.join("lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .expect("lock file");
    let mut holder = common::hold_lock_exclusively(&lock);
    let components: Vec<Vec<u8>> = (0..21).map(|i| common::generated_component(i, 2)).collect();
    let t = std::time::Instant::now();
    let mut firsts = Vec::new();
    for c in &components {
        let call = std::time::Instant::now();
        let loaded = artifacts.load_component(c).expect("served");
        firsts.push(call.elapsed());
        assert!(
            matches!(&loaded.origin, Origin::Compiled { stored: StoreWrite::NotStored(e), .. } if e.kind() == "lock"),
            "{}",
            loaded.origin
        );
    }
    let total = t.elapsed();
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    assert!(
        firsts[0] >= timeout,
        "the first call waits the timeout: {:?}",
        firsts[0]
    );
    // One timeout each would be 42 s; compiling 21 tiny components takes milliseconds.
    assert!(
        total < timeout * 2,
        "21 calls waited {total:?}: more than one timeout of {timeout:?} (per call: {firsts:?})"
    );
    // The holder gone, the next call stores again.
    let loaded = artifacts.load_component(&components[0]).expect("served");
    assert!(
        matches!(
            &loaded.origin,
            Origin::Compiled {
                stored: StoreWrite::Stored,
                ..
            }
        ),
        "{}",
        loaded.origin
    );
}

#[test]
fn a_second_open_of_the_same_directory_does_not_pay_the_same_holders_timeout_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = node_engine();
    let open = || {
        ArtifactStore::builder(&path)
            .lock_timeout(Duration::from_millis(600))
            .open(&engine)
            .expect("open")
    };
    let first = open();
    // Another process holds the store's lock exclusively and hangs.
    let lock = path.join("lock");
    let mut holder = common::hold_lock_exclusively(&lock);
    let adder = common::shipped("adder");
    let t = std::time::Instant::now();
    assert!(first.load_component(&adder).expect("served").origin.is_compiled());
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "the first call waits its timeout"
    );
    // A second object on the same directory, in the same process, learns nothing anew.
    let second = open();
    let t = std::time::Instant::now();
    assert!(second.load_component(&adder).expect("served").origin.is_compiled());
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "the second object waited {:?} for the same holder",
        t.elapsed()
    );
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    // Once the lock is free, both store and load again.
    let stored = second.load_component(&adder).expect("served");
    assert!(stored.origin.is_compiled(), "{}", stored.origin);
    assert!(!first.load_component(&adder).expect("served").origin.is_compiled());
}

#[test]
#[ignore = "needs root: mounts a tmpfs read-only"]
fn a_store_on_a_read_only_file_system_is_read_and_says_it_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = node_engine();
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).expect("mkdir");
    common::mount_or_fail(&[
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "-o".as_ref(),
        "mode=0700".as_ref(),
        "tmpfs".as_ref(),
        mount.as_os_str(),
    ]);
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    // A store with the adder and no lock file, and an empty directory, then the mount read-only.
    let full = mount.join("full");
    ArtifactStore::open(&full, &engine)
        .expect("open")
        .load_component(&common::shipped("adder"))
        .expect("stored");
    std::fs::remove_file(full.join("lock")).expect("no lock file");
    let empty = mount.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    common::chmod(&empty, 0o700);
    common::mount_or_fail(&["-o".as_ref(), "remount,ro".as_ref(), mount.as_os_str()]);

    for (store_dir, served) in [(&full, true), (&empty, false)] {
        let store = ArtifactStore::open(store_dir, &engine).expect("opens on a read-only file system");
        let problem = store.store_problem().expect("says it cannot store").message();
        assert!(problem.contains("Read-only file system"), "{problem}");
        let loaded = store.load_component(&common::shipped("adder")).expect("served");
        assert_eq!(
            !loaded.origin.is_compiled(),
            served,
            "{}: {}",
            store_dir.display(),
            loaded.origin
        );
        assert_eq!(common::call_add(&engine, &loaded.value, 2, 3), 5);
        let fib = store.load_component(&common::shipped("fib")).expect("compiled");
        match &fib.origin {
            Origin::Compiled {
                stored: StoreWrite::NotStored(why),
                ..
            } => assert!(why.message().contains("Read-only file system"), "{why:?}"),
            other => panic!("expected compiled, not stored: {other}"),
        }
    }
}

#[test]
fn a_host_following_the_readme_starts_on_a_loose_or_foreign_directory_and_compiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = node_engine();
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).expect("mkdir");
    common::mark_store(&loose);
    common::chmod(&loose, 0o777);
    let foreign = dir.path().join("home");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join(".bashrc"), b"export PS1='$ '\n").expect("write");
    common::chmod(&foreign, 0o700);
    for (path, kind) in [(&loose, "refused"), (&foreign, "not_a_store")] {
        let before = common::snapshot(path);
        // What the README shows: open_or_compile, then store_problem.
        let store = ArtifactStore::builder(path)
            .open_or_compile(&engine)
            .expect("never fails for the store");
        let problem = store.store_problem().expect("says why");
        assert_eq!(problem.kind(), kind, "{}: {problem}", path.display());
        let loaded = store.load_component(&common::shipped("adder")).expect("compiled");
        assert!(loaded.origin.is_compiled(), "{}", loaded.origin);
        assert_eq!(common::call_add(&engine, &loaded.value, 40, 2), 42);
        assert_eq!(common::snapshot(path), before, "{} was changed", path.display());
    }
}

#[test]
fn stats_count_hits_by_tier_compiles_and_rejections_since_the_store_was_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = node_engine();
    let wasm = common::shipped("adder");
    let store = ArtifactStore::open(&path, &engine).expect("open");
    assert_eq!(store.stats(), Default::default(), "nothing yet");
    store.load_component(&wasm).expect("compiled");
    store.load_module(&core_module()).expect("compiled");
    // A clone shares the counters.
    let clone = store.clone();
    let hit = clone.load_component(&wasm).expect("served");
    assert!(matches!(hit.origin, Origin::Store { .. }), "{}", hit.origin);
    let stats = store.stats();
    assert_eq!(
        (stats.compiles, stats.stored, stats.hits_writable, stats.not_stored),
        (2, 2, 1, 0),
        "{stats:?}"
    );
    assert!(stats.rejections.is_empty(), "{stats:?}");

    // A flipped payload byte: the next door refuses the artifact, compiles and stores it again.
    let artifact = common::artifact_of(&path, &sha256(&wasm));
    let mut bytes = std::fs::read(&artifact).expect("read");
    let middle = (bytes.len() - 128) / 2;
    bytes[middle] ^= 1;
    std::fs::set_permissions(&artifact, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    std::fs::write(&artifact, &bytes).expect("corrupt");
    std::fs::set_permissions(&artifact, std::os::unix::fs::PermissionsExt::from_mode(0o444)).expect("chmod");
    let again = ArtifactStore::open(&path, &engine).expect("open");
    let loaded = again.load_component(&wasm).expect("compiled");
    assert_eq!(common::call_add(&engine, &loaded.value, 40, 2), 42);
    let stats = again.stats();
    assert_eq!(
        (stats.compiles, stats.stored, stats.hits_writable),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.rejections.get("payload_checksum"), Some(&1), "{stats:?}");

    // The read-only tier.
    let reader = ArtifactStore::builder(dir.path().join("empty"))
        .read_only_store(&path)
        .open(&engine)
        .expect("open");
    reader.load_component(&wasm).expect("served");
    let stats = reader.stats();
    assert_eq!((stats.hits_read_only, stats.compiles), (1, 0), "{stats:?}");
}

#[test]
fn the_known_hash_door_reads_nothing_on_a_hit_and_checks_the_source_on_a_miss() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = node_engine();
    let store = ArtifactStore::open(&path, &engine).expect("open");
    let wasm = common::shipped("adder");
    let hash = sha256(&wasm);
    let reads = AtomicUsize::new(0);
    let source = || {
        reads.fetch_add(1, Ordering::Relaxed);
        Ok(wasm.clone())
    };
    let compiled = store.load_component_by_hash(&hash, source).expect("compiled");
    assert!(compiled.origin.is_compiled(), "{}", compiled.origin);
    assert_eq!(common::call_add(&engine, &compiled.value, 40, 2), 42);
    let hit = store.load_component_by_hash(&hash, source).expect("served");
    assert!(matches!(hit.origin, Origin::Store { .. }), "{}", hit.origin);
    assert_eq!(common::call_add(&engine, &hit.value, 40, 2), 42);
    assert_eq!(reads.load(Ordering::Relaxed), 1, "a hit reads nothing");

    // Bytes of another hash: an error naming both, and nothing stored.
    let claimed = [7u8; 32];
    let err = store
        .load_component_by_hash(&claimed, || Ok(wasm.clone()))
        .expect_err("a mismatch");
    assert!(
        matches!(&err, StoreError::Source { hash: h, reason: wasm_node_cache::error::SkipReason::HashMismatch { actual } }
            if *h == claimed && *actual == hash),
        "{err:?}"
    );
    let message = err.message();
    assert!(
        message.contains(&hex::encode(claimed)) && message.contains(&hex::encode(hash)),
        "{message}"
    );
    assert_eq!(common::artifact_count(&path), 1, "nothing stored for it");

    // Core modules, in a batch: a source that is not there is missing, and the rest still loads.
    let module = core_module();
    let module_hash = sha256(&module);
    let read_module = || Ok(module.clone());
    let absent = || Err(std::io::ErrorKind::NotFound.into());
    let results = store.modules_by_hash(&[(module_hash, &read_module), ([9u8; 32], &absent)]);
    let loaded = results[0].as_ref().expect("compiled");
    assert_eq!(module_add(&engine, &loaded.value, 40, 2), 42);
    assert!(
        matches!(
            &results[1],
            Err(StoreError::Source {
                reason: wasm_node_cache::error::SkipReason::Missing,
                ..
            })
        ),
        "{:?}",
        results[1].as_ref().err()
    );
    let never = || -> std::io::Result<Vec<u8>> { panic!("a hit reads no source") };
    let again = store.components_by_hash(&[(hash, &never)]);
    assert!(matches!(again[0].as_ref().map(|l| &l.origin), Ok(Origin::Store { .. })));
    assert!(matches!(
        store.load_module_by_hash(&module_hash, never).map(|l| l.origin),
        Ok(Origin::Store { .. })
    ));
}
