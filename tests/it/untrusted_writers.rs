//! What runs is what was verified: store files written in place or truncated under a running node;
//! directories swapped under the node; key files and sources that are links, FIFOs or another
//! user's. Writers and racers are separate processes (coreutils), as an operator's
//! `cp`/`rsync --inplace` or an attacker would be. Artifacts owned by someone else or writable by
//! others are the scenarios of `tests/common/scenarios.rs`, run through both doors.

use crate::common;

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, call_add, call_fib, call_fnv1a, chmod, sh};
use wasm_node_cache::artifact_store::LoadPath;
use wasm_node_cache::config::sha256;
use wasm_node_cache::testing::{ArtifactKey, Fault};
use wasm_node_cache::testing::{Sealer, encode_trailer};
use wasm_node_cache::{Kind, WasmNodeCache};

use common::OTHER_UID;

fn key_file(dir: &Path) -> PathBuf {
    common::key_file(&dir.join("node.key"), 7, 0o600)
}

/// Every result the shipped components give, computed by `cache`'s engine and components.
fn results(cache: &WasmNodeCache) -> (i32, u64, u32) {
    let get = |name: &str| {
        cache
            .wasm_component_cache
            .get(&sha256(&common::shipped(name)))
            .unwrap_or_else(|| panic!("{name} loaded"))
    };
    let e = &cache.wasm_engine;
    (
        call_add(e, get("adder"), 19, 23),
        call_fib(e, get("fib"), 30),
        call_fnv1a(e, get("fnv1a"), "what runs is what was verified"),
    )
}

fn fresh_results(fx: &Fixture) -> (i32, u64, u32) {
    results(&fx.builder().no_store().build().expect("fresh compile"))
}

fn store_files(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store)
        .expect("store")
        .map(|e| e.expect("entry").path())
        .collect()
}

/// In MAC mode, after a start-up, rewriting every store file in place and then truncating it (from
/// other processes) changes nothing for the started node: its code is not backed by store files.
fn mac_node_survives_every_store_file_rewritten_and_truncated(fault: Fault, expected_path: LoadPath) {
    let fx = Fixture::new();
    let key = key_file(fx.dir.path());
    let fresh = fresh_results(&fx);
    fx.builder().auth_key_file(&key).build().expect("cold start");
    let node = fx
        .builder()
        .auth_key_file(&key)
        .fault(fault)
        .build()
        .expect("warm start");
    let r = node.report();
    assert_eq!(r.from_store, 3, "{r}");
    assert!(
        r.entries.iter().all(|e| e.load_path == Some(expected_path)),
        "every component took the {expected_path:?} path: {:?}",
        r.entries.iter().map(|e| e.load_path).collect::<Vec<_>>()
    );
    assert_eq!(results(&node), fresh);

    for file in store_files(&fx.store) {
        let len = std::fs::metadata(&file).expect("stat").len();
        if len == 0 {
            continue; // an empty lock file: nothing to rewrite
        }
        // What `rsync --inplace` or a hostile writer does: new bytes into the same inode.
        sh(
            &format!(
                "dd if=/dev/urandom of='{}' bs={len} count=1 conv=notrunc status=none",
                file.display()
            ),
            fx.dir.path(),
        );
    }
    assert_eq!(results(&node), fresh, "in-place writes reached running code");
    for file in store_files(&fx.store) {
        sh(&format!("truncate -s 0 '{}'", file.display()), fx.dir.path());
    }
    assert_eq!(results(&node), fresh, "truncation reached running code");
    // A clone made afterwards (what the node does per message) runs the same code.
    assert_eq!(results(&node.clone()), fresh);
}

#[test]
fn mac_mode_runs_sealed_copies_that_no_store_write_or_truncation_reaches() {
    mac_node_survives_every_store_file_rewritten_and_truncated(Fault::None, LoadPath::Sealed);
}

#[test]
fn mac_mode_without_executable_memfds_copies_and_is_just_as_immune() {
    mac_node_survives_every_store_file_rewritten_and_truncated(Fault::MemfdRefused, LoadPath::Copied);
}

#[test]
fn plain_mode_maps_artifacts_published_with_no_write_bit() {
    let fx = Fixture::new();
    fx.start();
    let warm = fx.start();
    assert!(
        warm.report()
            .entries
            .iter()
            .all(|e| e.load_path == Some(LoadPath::Mapped)),
        "{}",
        warm.report()
    );
    let artifacts: Vec<PathBuf> = store_files(&fx.store)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 3);
    for a in artifacts {
        let mode = std::fs::metadata(&a).expect("stat").mode() & 0o777;
        assert_eq!(mode & 0o222, 0, "{} has a write bit: {mode:03o}", a.display());
    }
}

/// Spawns a shell loop that keeps swapping `a` and `b` in `dir` by rename, until killed.
fn swapper(dir: &Path, a: &str, b: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("while :; do mv -T {a} .x; mv -T {b} {a}; mv -T .x {b}; done"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn swapper")
}

#[test]
#[ignore = "needs root: gives a directory to uid 65534"]
fn a_rename_race_under_another_users_directory_never_loads_a_foreign_artifact() {
    let fx = Fixture::new();
    let fresh = fresh_results(&fx);
    let adder = common::adder_hash();
    // The node's store, filled while its path was trusted, then moved under a directory owned by
    // another user (a root node started with `sudo -E` lands in that user's ~/.cache).
    let good = fx.dir.path().join("good");
    fx.builder().store(good.join("store")).build().expect("fill");
    let theirs = fx.dir.path().join("home");
    std::fs::create_dir(&theirs).expect("mkdir");
    chmod(&theirs, 0o755);
    common::give_to_other_uid(&theirs);
    std::fs::rename(&good, theirs.join("node")).expect("move the store");
    // Their swapped-in store: fib's code under the adder's name, with a valid plain trailer
    // (anyone can compute one), so a node that accepted the directory would load it.
    let evil = theirs.join("evil/store");
    std::fs::create_dir_all(&evil).expect("mkdir");
    chmod(&evil, 0o700);
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let fp = wasm_node_cache::Fingerprint::of(&engine, false);
    let payload = engine
        .precompile_component(&common::shipped("fib"))
        .expect("precompile");
    let key = ArtifactKey {
        source: adder,
        fingerprint: fp,
        kind: Kind::Component,
    };
    let mut forged = payload.clone();
    forged.extend_from_slice(&encode_trailer(&payload, &key, &Sealer::Plain, 0));
    std::fs::write(evil.join(key.file_name()), forged).expect("plant");

    let mut racer = swapper(&theirs, "node", "evil");
    let mut loaded_from_store = 0;
    for _ in 0..30 {
        let cache = fx
            .builder()
            .store(theirs.join("node/store"))
            .build()
            .expect("node starts");
        let r = cache.report();
        loaded_from_store += r.from_store;
        assert!(
            r.store
                .read_error
                .as_ref()
                .map(|p| p.message())
                .is_some_and(|e| e.contains(&OTHER_UID.to_string())),
            "store under another user's directory accepted: {r}"
        );
        assert_eq!(results(&cache), fresh);
    }
    racer.kill().ok();
    racer.wait().ok();
    assert_eq!(
        loaded_from_store, 0,
        "an artifact was loaded from a directory another user controls"
    );
}

#[test]
fn ancestors_must_not_be_writable_by_others_unless_sticky() {
    let fx = Fixture::new();
    let open = fx.dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o777);
    let r = common::start_without_store(fx.builder().store(open.join("store")), "writable by other users");
    assert_eq!(r.compiled, 3);
    // Sticky, like /tmp: others cannot rename what they do not own, so the store is fine.
    chmod(&open, 0o1777);
    let r = fx
        .builder()
        .store(open.join("store2"))
        .build()
        .expect("starts")
        .report()
        .clone();
    assert!(r.store.read_error.is_none(), "{r}");
    assert_eq!(r.store.written, 3);
}

/// The store is disabled (and the node starts, compiling in memory) with `expect` in the reason.
fn key_refused(fx: &Fixture, key: &Path, expect: &str) {
    let t = Instant::now();
    let r = common::start_without_store(fx.builder().auth_key_file(key), expect);
    assert!(t.elapsed() < Duration::from_secs(30), "key file check hung");
    assert_eq!(r.compiled, 3);
}

#[test]
#[ignore = "needs root: gives the key file to uid 65534"]
fn key_file_owned_by_another_uid_is_refused() {
    let fx = Fixture::new();
    let key = key_file(fx.dir.path());
    common::give_to_other_uid(&key);
    key_refused(&fx, &key, "owned by uid 65534");
}

#[test]
fn key_file_reached_through_a_link_is_refused() {
    let fx = Fixture::new();
    let key = key_file(fx.dir.path());
    let link = fx.dir.path().join("link.key");
    symlink(&key, &link).expect("symlink");
    key_refused(&fx, &link, "symbolic link");
}

#[test]
fn key_file_that_is_a_fifo_is_refused_without_hanging() {
    let fx = Fixture::new();
    let fifo = fx.dir.path().join("fifo.key");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).expect("mkfifo");
    key_refused(&fx, &fifo, "not a regular file");
}

#[test]
fn key_file_under_a_directory_others_can_write_is_refused() {
    let fx = Fixture::new();
    let open = fx.dir.path().join("keys");
    std::fs::create_dir(&open).expect("mkdir");
    let key = key_file(&open);
    chmod(&open, 0o777);
    key_refused(&fx, &key, "writable by other users");
}

#[test]
fn a_fifo_under_a_whitelisted_name_is_skipped_without_hanging() {
    let fx = Fixture::new();
    let adder = common::adder_hash();
    let source = fx.root.join(hex::encode(adder));
    std::fs::remove_file(&source).expect("unlink");
    rustix::fs::mkfifoat(rustix::fs::CWD, &source, rustix::fs::Mode::from_raw_mode(0o600)).expect("mkfifo");
    let builder = fx.builder();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(builder.build().map(|c| c.report().clone()));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("start-up hung on a FIFO")
        .expect("node starts");
    assert_eq!((r.compiled, r.skipped), (2, 1), "{r}");
    assert!(
        r.entry(&adder)
            .and_then(|e| e.reason())
            .is_some_and(|e| e.contains("not a regular file")),
        "{r}"
    );
}
