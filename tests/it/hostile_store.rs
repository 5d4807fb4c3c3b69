//! Careless or hostile store directories: loose permissions, another owner, a link as the store's
//! path, and MAC keys the store cannot trust. Damaged artifacts and lock files, special files
//! under artifact names, a full disk, a read-only mount and MAC-mode artifacts are the scenarios of
//! `tests/common/scenarios.rs`, run through both doors by `store_scenarios`.

use crate::common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{Fixture, call_add};

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
    common::mark_store(&loose);
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

fn key_file(dir: &Path, mode_bits: u32) -> PathBuf {
    common::key_file(&dir.join("artifact.key"), 0x5a, mode_bits)
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
