//! Read-only stores: artifacts baked into a container image, loaded when they fit this engine,
//! never written, and healed into the writable store when they do not. Damaged artifacts in a bake
//! or beside one are the scenarios of `tests/common/scenarios.rs`, run through both doors.

use crate::common;

use std::path::PathBuf;

use common::{Fixture, chmod, snapshot};
use wasm_node_cache::artifact_store::LoadPath;

/// A bake of the fixture's components at `<fixture>/bake`, made as an image build does, with the
/// lock file removed (a bake has none) and every write bit cleared.
fn bake(fx: &Fixture) -> PathBuf {
    let bake = fx.dir.path().join("bake");
    let r = fx.builder().store(&bake).build().expect("bake").report().clone();
    assert_eq!(r.store.written, 3, "{r}");
    std::fs::remove_file(bake.join("lock")).expect("no lock file in a bake");
    chmod(&bake, 0o555);
    bake
}

#[test]
fn a_container_start_loads_everything_from_the_bake_and_writes_nothing() {
    let fx = Fixture::new();
    let bake = bake(&fx);
    let before = snapshot(&bake);
    let cache = fx.builder().read_only_store(&bake).build().expect("start");
    let r = cache.report();
    assert_eq!((r.from_store, r.compiled, r.rejected), (3, 0, 0), "{r}");
    assert!(
        r.entries.iter().all(|e| e.store.as_deref() == Some(bake.as_path())),
        "every hit names the bake: {r}"
    );
    assert!(r.entries.iter().all(|e| e.load_path == Some(LoadPath::Mapped)));
    assert_eq!((r.read_only.len(), r.read_only[0].hits), (1, 3), "{r}");
    assert_eq!(r.store.written, 0);
    assert_eq!(snapshot(&bake), before, "the bake is never written, locked or cleaned");
    assert_eq!(common::node_add(&cache, 2, 2), 4);
}

#[test]
fn a_bake_for_another_engine_is_reported_and_compiled_locally() {
    let fx = Fixture::new();
    let bake = bake(&fx);
    // MAC mode has its own fingerprint: as far as this engine goes, the bake was made for another.
    let keys = tempfile::tempdir().expect("tempdir");
    let key = common::key_file(&keys.path().join("k"), 9, 0o600);
    let r = fx
        .builder()
        .read_only_store(&bake)
        .auth_key_file(&key)
        .build()
        .expect("start")
        .report()
        .clone();
    assert_eq!((r.from_store, r.compiled), (0, 3), "{r}");
    let ro = &r.read_only[0];
    assert_eq!(ro.other_fingerprints.len(), 1, "{r}");
    assert_eq!(ro.other_fingerprints[0].files, 3);
    let text = r.to_string();
    assert!(
        text.contains("holds 3 artifact(s) for fingerprint(s)") && text.contains(&r.store.fingerprint.to_hex()),
        "{text}"
    );
    // Compiled locally and stored: the next start is warm without the bake.
    let r = fx
        .builder()
        .auth_key_file(&key)
        .build()
        .expect("start")
        .report()
        .clone();
    assert_eq!(r.from_store, 3, "{r}");
}

#[test]
fn with_no_writable_store_the_bake_serves_and_the_rest_is_compiled_in_memory() {
    let fx = Fixture::new();
    let bake = bake(&fx);
    chmod(&bake, 0o755);
    std::fs::remove_file(common::artifact_of(&bake, &common::adder_hash())).expect("unlink");
    // A read-only root file system with no volume: the writable store cannot be created.
    let blocker = fx.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    let cache = fx
        .builder()
        .store(blocker.join("store"))
        .read_only_store(&bake)
        .build()
        .expect("the node starts");
    let r = cache.report();
    assert_eq!((r.from_store, r.compiled, r.skipped), (2, 1, 0), "{r}");
    assert_eq!(r.store.written, 0);
    assert!(r.to_string().contains("store NOT WRITTEN"), "{r}");
    assert!(
        r.store
            .write_error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains("not-a-dir")),
        "{r}"
    );
    assert_eq!(common::node_add(&cache, 5, 5), 10);
}

/// A bake directory writable by others is not used at all. (A damaged or foreign-owned artifact
/// in a bake is a scenario of `tests/common/scenarios.rs`.)
#[test]
fn a_bake_writable_by_others_is_not_used() {
    let fx = Fixture::new();
    let bake = bake(&fx);
    chmod(&bake, 0o777);
    let fx2 = Fixture::new();
    let r = fx2
        .builder()
        .read_only_store(&bake)
        .build()
        .expect("start")
        .report()
        .clone();
    assert!(
        r.read_only[0]
            .error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains("writable by other users")),
        "{r}"
    );
    assert_eq!(r.compiled, 3);
}

#[test]
fn mac_mode_bakes_load_through_sealed_copies_too() {
    let fx = Fixture::new();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = common::key_file(&keys.path().join("k"), 3, 0o600);
    let bake = fx.dir.path().join("bake");
    fx.builder().store(&bake).auth_key_file(&key).build().expect("bake");
    let r = fx
        .builder()
        .read_only_store(&bake)
        .auth_key_file(&key)
        .build()
        .expect("start")
        .report()
        .clone();
    assert_eq!(r.from_store, 3, "{r}");
    assert!(r.entries.iter().all(|e| e.load_path == Some(LoadPath::Sealed)), "{r}");
}

#[test]
#[ignore = "needs root: bind-mounts the bake read-only"]
fn a_bake_on_a_read_only_mount_with_no_lock_file_works() {
    let fx = Fixture::new();
    let bake = bake(&fx);
    let mount = fx.dir.path().join("ro");
    std::fs::create_dir(&mount).expect("mkdir");
    common::mount_or_fail(&[
        "--bind".as_ref(),
        "-o".as_ref(),
        "ro".as_ref(),
        bake.as_os_str(),
        mount.as_os_str(),
    ]);
    // Some kernels ignore `ro` on the first bind; remount makes it stick.
    let _ = std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&mount)
        .status();
    let r = fx
        .builder()
        .read_only_store(&mount)
        .build()
        .expect("start")
        .report()
        .clone();
    let _ = std::process::Command::new("umount").arg(&mount).status();
    assert_eq!((r.from_store, r.compiled), (3, 0), "{r}");
    assert!(!bake.join("lock").exists(), "no lock file was created");
}
