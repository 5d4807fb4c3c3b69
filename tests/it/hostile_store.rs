//! Careless or hostile stores: loose permissions, another owner, links, special files, a full
//! disk, a read-only mount, and the authenticated (MAC) mode.

use crate::common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Fixture, call_add};
use wasm_node_cache::WasmNodeCache;
use wasm_node_cache::config::sha256;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

use common::chmod;

#[test]
fn new_store_directories_are_owner_only() {
    let fx = Fixture::new();
    let nested = fx.dir.path().join("a/b/store");
    let cache = fx.builder().store(&nested).build().expect("start-up");
    assert_eq!(cache.report().store.written, 3);
    for dir in [fx.dir.path().join("a"), fx.dir.path().join("a/b"), nested] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
}

#[test]
fn store_writable_by_others_is_never_loaded_from() {
    for loose in [0o770, 0o707, 0o777, 0o720] {
        let fx = Fixture::new();
        fx.start();
        chmod(&fx.store, loose);
        let before = common::artifact_count(&fx.store);
        let cache = fx.start();
        let r = cache.report();
        assert_eq!((r.from_store, r.compiled), (0, 3), "mode {loose:o}\n{r}");
        let err = r.store.read_error.as_ref().map(|p| p.message()).unwrap_or_default();
        assert!(
            err.contains("writable by other users") && err.contains(&format!("{loose:03o}")),
            "{err}"
        );
        assert!(r.to_string().contains("store NOT READ"), "{r}");
        assert_eq!(
            common::artifact_count(&fx.store),
            before,
            "nothing written into an untrusted store"
        );
        assert_eq!(
            call_add(
                &cache.wasm_engine,
                cache.wasm_component_cache.get(&common::adder_hash()).expect("adder"),
                2,
                2
            ),
            4
        );
    }
}

#[test]
#[ignore = "needs root: gives the store to uid 65534"]
fn store_owned_by_another_user_is_never_loaded_from() {
    let fx = Fixture::new();
    fx.start();
    common::give_to_other_uid(&fx.store);
    let r = fx.start().report().clone();
    assert_eq!((r.from_store, r.compiled), (0, 3), "{r}");
    assert!(
        r.store
            .read_error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains("owned by uid 65534")),
        "{r}"
    );
}

#[test]
fn store_path_that_is_a_link_is_followed_and_its_target_checked() {
    let fx = Fixture::new();
    fx.start();
    let link = fx.dir.path().join("store-link");
    symlink(&fx.store, &link).expect("symlink");
    let via_link = fx.builder().store(&link).build().expect("start-up");
    assert_eq!(via_link.report().from_store, 3, "{}", via_link.report());

    let loose = fx.dir.path().join("loose");
    std::fs::create_dir(&loose).expect("mkdir");
    chmod(&loose, 0o777);
    let link2 = fx.dir.path().join("loose-link");
    symlink(&loose, &link2).expect("symlink");
    let r = fx.builder().store(&link2).build().expect("start-up").report().clone();
    assert!(
        r.store
            .read_error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains("writable by other users")),
        "{r}"
    );
}

#[test]
fn symlinked_artifact_is_never_followed_and_is_replaced() {
    let fx = Fixture::new();
    fx.start();
    let adder = common::adder_hash();
    let path = fx.artifact_path(&adder);
    // A perfectly valid artifact, but reached through a link: still refused.
    let elsewhere = fx.dir.path().join("elsewhere.cwasm");
    std::fs::rename(&path, &elsewhere).expect("move");
    symlink(&elsewhere, &path).expect("symlink");
    let before = std::fs::read(&elsewhere).expect("read");
    let cache = fx.start();
    let r = cache.report();
    assert_eq!((r.from_store, r.compiled, r.rejected), (2, 1, 1), "{r}");
    assert!(
        r.entry(&adder)
            .and_then(|e| e.rejected.as_ref().map(|r| r.to_string()))
            .is_some_and(|e| e.contains("symbolic link")),
        "{r}"
    );
    assert!(
        !std::fs::symlink_metadata(&path).expect("stat").file_type().is_symlink(),
        "the link was replaced"
    );
    assert_eq!(
        std::fs::read(&elsewhere).expect("read"),
        before,
        "the link's target was not written through"
    );
    assert_eq!(fx.start().report().from_store, 3);
}

#[test]
fn symlinked_lock_file_is_never_followed_and_is_replaced() {
    let fx = Fixture::new();
    std::fs::create_dir(&fx.store).expect("mkdir");
    chmod(&fx.store, 0o700);
    let victim = fx.dir.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    symlink(&victim, fx.store.join("lock")).expect("symlink");
    let cache = fx.start();
    let r = cache.report();
    assert_eq!((r.compiled, r.store.written), (3, 3), "the node starts and stores\n{r}");
    assert!(
        r.store
            .lock_repaired
            .as_ref()
            .is_some_and(|repair| repair.to_string().contains("symbolic link")),
        "the link is reported: {r}"
    );
    let lock = std::fs::symlink_metadata(fx.store.join("lock")).expect("stat");
    assert!(
        lock.file_type().is_file(),
        "the link was replaced by a file of the store's"
    );
    assert_eq!(
        std::fs::read(&victim).expect("read"),
        b"precious",
        "the lock's target was not touched"
    );
    assert_eq!(fx.start().report().from_store, 3);
}

#[test]
fn special_files_under_an_artifact_name_are_rejected_without_hanging() {
    let fx = Fixture::new();
    fx.start();
    let adder = common::adder_hash();
    let path = fx.artifact_path(&adder);
    std::fs::remove_file(&path).expect("unlink");
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: c_path is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let r = fx.start().report().clone();
    assert_eq!((r.from_store, r.rejected), (2, 1), "{r}");
    assert!(
        r.entry(&adder)
            .and_then(|e| e.rejected.as_ref().map(|r| r.to_string()))
            .is_some_and(|e| e.contains("not a regular file")),
        "{r}"
    );

    // An empty directory in the way is removed and replaced (nothing loads it).
    std::fs::remove_file(&path).ok();
    std::fs::create_dir(&path).expect("mkdir");
    let r = fx.start().report().clone();
    assert_eq!(
        (r.from_store, r.compiled, r.rejected, r.store.written),
        (2, 1, 1, 1),
        "{r}"
    );
    assert!(std::fs::symlink_metadata(&path).expect("stat").is_file(), "{r}");
    // One that holds something stays the operator's: the node still starts, and says so.
    std::fs::remove_file(&path).expect("unlink");
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::write(path.join("keep"), b"x").expect("a file inside");
    let r = fx.start().report().clone();
    assert_eq!((r.from_store, r.compiled, r.rejected), (2, 1, 1), "{r}");
    assert!(r.store.write_error.is_some(), "{r}");
}

/// A mount point that is unmounted when dropped, even if the test fails.
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) -> bool {
        Command::new("mount").args(args).status().is_ok_and(|s| s.success())
    }

    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let opts = format!("size={size},mode=0700");
        Self::run(&["-t", "tmpfs", "-o", &opts, "tmpfs", at.to_str()?]).then(|| Mount(at.to_path_buf()))
    }

    fn read_only_bind(src: &Path, at: &Path) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        if !Self::run(&["--bind", src.to_str()?, at.to_str()?]) {
            return None;
        }
        let m = Mount(at.to_path_buf());
        Self::run(&["-o", "remount,bind,ro", at.to_str()?]).then_some(m)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root: mounts a small tmpfs (without it, the write-fault seam in tests/store.rs covers this)"]
fn full_disk_starts_the_node_and_damages_nothing_stored() {
    let fx = Fixture::new();
    let at = fx.dir.path().join("small");
    let _mount = Mount::tmpfs(&at, "256k").expect("needs root: cannot mount a tmpfs here");
    let store = at.join("store");
    let adder = common::adder_hash();
    let only_adder = WasmNodeCache::builder()
        .binary_root(&fx.root)
        .whitelist([adder].into_iter().collect())
        .store(&store)
        .build()
        .expect("start-up");
    assert_eq!(only_adder.report().store.written, 1);
    let adder_artifact = std::fs::read(common::artifact_of(&store, &adder)).expect("read");
    // Fill the file system to the last byte.
    let filler = at.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    let cache = WasmNodeCache::builder()
        .binary_root(&fx.root)
        .whitelist(fx.whitelist.clone())
        .store(&store)
        .build();
    let cache = cache.expect("node starts on a full disk");
    let r = cache.report();
    assert_eq!((r.from_store, r.compiled, r.rejected), (1, 2, 0), "{r}");
    let err = r.store.write_error.as_ref().map(|p| p.message()).unwrap_or_default();
    assert!(err.contains("No space left on device"), "{r}");
    assert_eq!(
        std::fs::read(common::artifact_of(&store, &adder)).expect("read"),
        adder_artifact,
        "stored entry intact"
    );
    assert!(
        common::files_with_prefix(&store, ".tmp-").is_empty(),
        "no partial file left"
    );
    assert_eq!(
        call_add(
            &cache.wasm_engine,
            cache.wasm_component_cache.get(&adder).expect("adder"),
            5,
            6
        ),
        11
    );

    std::fs::remove_file(&filler).expect("free space");
    let healed = WasmNodeCache::builder()
        .binary_root(&fx.root)
        .whitelist(fx.whitelist.clone())
        .store(&store)
        .build();
    let r = healed.expect("start-up").report().clone();
    assert_eq!((r.from_store, r.compiled, r.store.written), (1, 2, 2), "{r}");
}

#[test]
#[ignore = "needs root: bind-mounts the store read-only (without it, the write-fault seam in tests/store.rs covers this)"]
fn read_only_store_starts_the_node_and_still_serves_what_it_holds() {
    let fx = Fixture::new();
    let adder = common::adder_hash();
    let mut partial = fx.whitelist.clone();
    partial.remove(&adder);
    fx.builder().whitelist(partial).build().expect("store two of three");
    let ro = fx.dir.path().join("ro-store");
    let _mount = Mount::read_only_bind(&fx.store, &ro).expect("needs root: cannot bind-mount read-only here");
    let cache = fx
        .builder()
        .store(&ro)
        .build()
        .expect("node starts on a read-only store");
    let r = cache.report();
    assert_eq!((r.from_store, r.compiled, r.rejected), (2, 1, 0), "{r}");
    assert!(
        r.store
            .write_error
            .as_ref()
            .map(|p| p.message())
            .is_some_and(|e| e.contains("Read-only file system")),
        "{r}"
    );
    assert!(r.store.read_error.is_none(), "{r}");
    assert_eq!(
        call_add(
            &cache.wasm_engine,
            cache.wasm_component_cache.get(&adder).expect("adder"),
            1,
            2
        ),
        3
    );
}

fn key_file(dir: &Path, mode_bits: u32) -> PathBuf {
    common::key_file(&dir.join("artifact.key"), 0x5a, mode_bits)
}

#[test]
fn mac_mode_loads_only_what_carries_a_valid_mac() {
    let fx = Fixture::new();
    let keys = tempfile::tempdir().expect("tempdir");
    let key = key_file(keys.path(), 0o600);
    // Plain artifacts in the same store are not candidates: another fingerprint.
    fx.start();
    let cold = fx.builder().auth_key_file(&key).build().expect("start-up");
    assert_eq!(
        (cold.report().from_store, cold.report().compiled),
        (0, 3),
        "{}",
        cold.report()
    );
    let warm = fx.builder().auth_key_file(&key).build().expect("start-up");
    assert_eq!(warm.report().from_store, 3, "{}", warm.report());
    assert_eq!(
        call_add(
            &warm.wasm_engine,
            warm.wasm_component_cache.get(&common::adder_hash()).expect("adder"),
            3,
            4
        ),
        7
    );

    // Someone without the key writes a well-formed plain artifact under the MAC-mode name.
    let adder = common::adder_hash();
    let mac_path = std::fs::read_dir(&fx.store)
        .expect("store")
        .map(|e| e.expect("e").path())
        .find(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.ends_with(&format!("{}.cwasm", hex::encode(adder))) && n.starts_with(&warm.report().store.fingerprint)
        })
        .expect("MAC-mode adder artifact");
    let fib = common::shipped("fib");
    let plain_fib = common::artifact_of(
        &{
            // A plain store's artifact of another component, retargeted by name only.
            let plain = fx.dir.path().join("plain");
            fx.builder().store(&plain).build().expect("plain store");
            plain
        },
        &sha256(&fib),
    );
    std::fs::remove_file(&mac_path).expect("unlink");
    std::fs::copy(plain_fib, &mac_path).expect("plant");
    let r = fx
        .builder()
        .auth_key_file(&key)
        .build()
        .expect("start-up")
        .report()
        .clone();
    assert_eq!((r.from_store, r.compiled, r.rejected), (2, 1, 1), "{r}");
    assert!(
        r.entry(&adder)
            .and_then(|e| e.rejected.as_ref().map(|r| r.to_string()))
            .is_some_and(|e| e.contains("no MAC")),
        "{r}"
    );

    // Artifacts made under another key are refused too.
    let other_keys = tempfile::tempdir().expect("tempdir");
    let other = common::key_file(&other_keys.path().join("other.key"), 0x11, 0o600);
    let r = fx
        .builder()
        .auth_key_file(&other)
        .build()
        .expect("start-up")
        .report()
        .clone();
    assert_eq!((r.from_store, r.rejected), (0, 3), "{r}");
    assert!(
        r.entries.iter().all(|e| e
            .rejected
            .as_ref()
            .map(|r| r.to_string())
            .is_some_and(|x| x.contains("another MAC key"))),
        "{r}"
    );
}

#[test]
fn mac_key_that_others_can_read_or_that_lives_in_the_store_disables_the_store() {
    let fx = Fixture::new();
    let keys = tempfile::tempdir().expect("tempdir");
    let loose = key_file(keys.path(), 0o644);
    let r = common::start_without_store(fx.builder().auth_key_file(&loose), "accessible to other users");
    assert_eq!(r.compiled, 3);
    assert!(
        !fx.store.exists() || common::artifact_count(&fx.store) == 0,
        "nothing stored without a usable key"
    );

    std::fs::create_dir_all(&fx.store).expect("mkdir");
    chmod(&fx.store, 0o700);
    let inside = key_file(&fx.store, 0o600);
    common::start_without_store(fx.builder().auth_key_file(&inside), "inside the store");
}
