//! The operator's door (`status`, `verify`, `prune`, `clear` on `ArtifactStore`): its errors are
//! typed and matched by variant, never by their text.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use wasm_node_cache::error::{KeyError, LockError, PathRefusal};
use wasm_node_cache::operator::prune::PruneOptions;
use wasm_node_cache::testing::{Sealer, Store, deadline_after};
use wasm_node_cache::{ArtifactStore, Fingerprint, StoreError};
use wasmtime::Engine;

#[test]
fn verify_of_a_missing_store_is_missing_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-store-here");
    let err = ArtifactStore::builder(&path)
        .open_existing(&Engine::default())
        .and_then(|s| s.verify())
        .expect_err("no store");
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
    assert!(!path.exists(), "an operator's command never creates a store");
}

#[test]
fn a_store_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    std::fs::create_dir(&path).expect("mkdir");
    // A store, loosened: not a volume's mount point (which holds the store in a directory of
    // this uid's own).
    crate::common::mark_store(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = ArtifactStore::builder(&path)
        .open_existing(&Engine::default())
        .expect_err("refused");
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    let err = ArtifactStore::open(&path, &Engine::default()).expect_err("refused");
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    // The reason is typed: loose permissions, with the directory and its mode.
    assert!(
        matches!(
            &err,
            StoreError::Refused {
                reason: PathRefusal::WritableByOthers { path: p, mode: 0o777 },
                ..
            } if p.ends_with("store")
        ),
        "{err:?}"
    );
    // Below it, the same directory is an ancestor that is not sticky.
    let err = ArtifactStore::open(path.join("inner"), &Engine::default()).expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Refused {
                reason: PathRefusal::AncestorWritableByOthers { mode: 0o777, .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
#[ignore = "needs root: gives the store to uid 65534"]
fn a_store_owned_by_another_uid_is_refused_with_its_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    std::fs::create_dir(&path).expect("mkdir");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown (needs root)");
    for err in [
        ArtifactStore::open(&path, &Engine::default()).expect_err("refused"),
        ArtifactStore::builder(&path)
            .open_existing(&Engine::default())
            .expect_err("refused"),
    ] {
        assert!(
            matches!(
                &err,
                StoreError::Refused {
                    reason: PathRefusal::OwnedByOther {
                        uid: 65534,
                        root_allowed: false,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // A read-only store may be root's, never another user's.
    let err = ArtifactStore::builder(dir.path().join("own"))
        .read_only_store(&path)
        .open(&Engine::default())
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Refused {
                reason: PathRefusal::OwnedByOther {
                    uid: 65534,
                    root_allowed: true,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_key_of_all_equal_bytes_is_a_typed_key_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("node.key");
    std::fs::write(&key, [0u8; 32]).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = ArtifactStore::builder(dir.path().join("store"))
        .auth_key_file(&key)
        .open(&Engine::default())
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Key {
                reason: KeyError::NotRandom { byte: 0, .. },
                ..
            }
        ),
        "{err:?}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = ArtifactStore::builder(dir.path().join("store"))
        .auth_key_file(&key)
        .open(&Engine::default())
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Key {
                reason: KeyError::AccessibleToOthers { mode: 0o640, .. }
            }
        ),
        "group-readable: {err:?}"
    );
    let inside = dir.path().join("store/node.key");
    let err = ArtifactStore::builder(dir.path().join("store"))
        .auth_key_file(&inside)
        .open(&Engine::default())
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Key {
                reason: KeyError::InsideStore { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_held_lock_is_a_lock_error_with_its_cause_printed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let engine = Engine::default();
    let store = ArtifactStore::builder(&path)
        .lock_timeout(Duration::from_millis(50))
        .open(&engine)
        .expect("open");
    // Another holder of the exclusive lock: a second open file description, as another process has.
    let holder = Store::open(&path, Fingerprint::of(&engine, false), Sealer::Plain).expect("open");
    let _held = holder
        .lock_exclusive(deadline_after(Duration::from_secs(5)), "test")
        .expect("exclusive");
    for err in [
        store.verify().map(|_| ()).expect_err("verify waits, then gives up"),
        store.clear().map(|_| ()).expect_err("clear waits, then gives up"),
        store
            .prune(&PruneOptions {
                stale: true,
                ..PruneOptions::default()
            })
            .map(|_| ())
            .expect_err("prune waits, then gives up"),
    ] {
        assert!(
            matches!(
                err,
                StoreError::Lock {
                    source: LockError::TimedOut { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        // The outer message does not repeat the cause it returns as its source.
        let outer = err.to_string();
        let cause = std::error::Error::source(&err).expect("a source").to_string();
        assert!(!outer.contains(&cause), "{outer} / {cause}");
    }
    // A dry run takes no lock.
    let dry = store
        .prune(&PruneOptions {
            stale: true,
            dry_run: true,
            ..PruneOptions::default()
        })
        .expect("a dry run needs no lock");
    assert!(dry.dry_run && dry.removed.is_empty());
}

#[test]
fn a_node_without_a_store_has_nothing_to_prune() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = wasm_node_cache::WasmNodeCache::builder()
        .binary_root(dir.path())
        .whitelist(Default::default())
        .no_store()
        .build()
        .expect("start-up");
    let err = node.prune_store().expect_err("no store");
    assert!(matches!(err, StoreError::NoStore), "{err:?}");
}

#[test]
fn profile_whitelist_and_hash_errors_are_typed() {
    use wasm_node_cache::CpuProfile;
    use wasm_node_cache::error::{BadLineCause, ParseHashError, ProfileError, WhitelistError};
    assert!(matches!(
        "x86-64-v9".parse::<CpuProfile>(),
        Err(ProfileError::Unknown { name }) if name == "x86-64-v9"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ArtifactStore::builder(dir.path().join("store"))
        .cpu_profiles(&[])
        .open(&Engine::default())
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            StoreError::Profile {
                profile: None,
                reason: ProfileError::EmptyList
            }
        ),
        "{err:?}"
    );
    // The node's builder keeps its anyhow signature; the typed cause is still there.
    let Err(err) = wasm_node_cache::WasmNodeCache::builder()
        .no_store()
        .whitelist(Default::default())
        .cpu_profiles(Vec::new())
        .build()
    else {
        panic!("an empty profile list is refused");
    };
    assert!(
        matches!(err.downcast_ref::<ProfileError>(), Some(ProfileError::EmptyList)),
        "{err:?}"
    );

    let conf = dir.path().join("wasm.conf");
    std::fs::write(&conf, format!("{}\nzz{}\n", "ab".repeat(32), "cd".repeat(31))).expect("write");
    let err = wasm_node_cache::config::read_whitelist_file(&conf).expect_err("bad line");
    assert!(
        matches!(
            &err,
            WhitelistError::BadLine {
                line: 2,
                cause: BadLineCause::NotAHash(ParseHashError::NotHex { .. }),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        wasm_node_cache::config::read_whitelist_file(dir.path()),
        Err(WhitelistError::NotRegularFile {
            kind: "a directory",
            ..
        })
    ));
    assert!(matches!(
        wasm_node_cache::config::read_whitelist_file(&dir.path().join("absent.conf")),
        Err(WhitelistError::Io { op: "read", .. })
    ));
}
