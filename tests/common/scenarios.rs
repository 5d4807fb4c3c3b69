//! Store scenarios written once and run through either door: the node's start-up
//! (`WasmNodeCache`) and the embedder's `ArtifactStore`. Each scenario starts the fixture's three
//! components through the door, damages the store the way a careless or hostile writer would,
//! and checks that the next start serves every component (compiling what it must), says why, and
//! heals the store.
//!
//! This is the one table of store damage cases: a node-only copy of one of them belongs here, not
//! in another test file. What only the node's report can say (its counts, `store.written`, its
//! text and JSON) is checked on `Door::Node`; the embedder's door checks the same through
//! `Loaded::origin`, `Origin::rejected` and `StoreWrite`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use wasm_node_cache::LoadReport;
use wasm_node_cache::artifact_store::StoreWrite;
use wasm_node_cache::config::sha256;
use wasm_node_cache::error::{ArtifactError, Rejection};
use wasm_node_cache::node::report::Outcome;
use wasm_node_cache::testing::Fault;
use wasm_node_cache::{ArtifactStore, Hash32, Origin};
use wasmtime::component::Component;

use super::Fixture;

/// Which door a scenario goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `WasmNodeCache::builder()...build()`: the whitelist, the binary root, the report.
    Node,
    /// `ArtifactStore::builder(..).open(&engine)?.components(..)` with the node's engine.
    Embedder,
}

/// Where one component came from, in terms both doors can say.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The writable store.
    Store,
    /// A read-only store, by path.
    ReadOnly(PathBuf),
    /// Compiled; `Ok` if published, else why not.
    Compiled(Result<(), String>),
}

/// One start through a door.
pub struct Run {
    pub engine: wasmtime::Engine,
    pub components: BTreeMap<Hash32, Component>,
    pub sources: BTreeMap<Hash32, Source>,
    pub rejected: BTreeMap<Hash32, Rejection>,
    /// What publishing each compiled component achieved (a node's `EntryReport::stored`, an
    /// embedder's `Origin::Compiled { stored }`).
    pub writes: BTreeMap<Hash32, StoreWrite>,
    /// The components asked for.
    pub expected: BTreeSet<Hash32>,
    /// The node's report; `None` through the embedder's door.
    pub report: Option<LoadReport>,
}

impl Run {
    pub fn count(&self, f: impl Fn(&Source) -> bool) -> usize {
        self.sources.values().filter(|s| f(s)).count()
    }

    pub fn compiled(&self) -> usize {
        self.count(|s| matches!(s, Source::Compiled(_)))
    }

    pub fn loaded(&self) -> usize {
        self.count(|s| *s == Source::Store)
    }

    /// Node door only: `(from_store, compiled, rejected, skipped)` of the report.
    pub fn assert_node_counts(&self, counts: (usize, usize, usize, usize)) {
        if let Some(r) = &self.report {
            assert_eq!(
                (r.from_store, r.compiled, r.rejected, r.skipped),
                counts,
                "(from_store, compiled, rejected, skipped)\n{r}"
            );
        }
    }

    /// Every component asked for is served and gives the same results as a fresh compilation.
    pub fn assert_serves_everything(&self) {
        assert_eq!(
            self.components.keys().copied().collect::<BTreeSet<_>>(),
            self.expected,
            "{:?}",
            self.sources
        );
        let engine = &self.engine;
        for (name, bytes) in super::shipped_sources() {
            let Some(cached) = self.components.get(&sha256(&bytes)) else {
                continue;
            };
            super::assert_same_results_as_fresh(engine, &name, cached, &bytes);
        }
    }
}

/// Options of a start.
#[derive(Default, Clone)]
pub struct Opts {
    pub store: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub read_only: Vec<PathBuf>,
    pub fault: Option<Fault>,
    /// The components asked for; every shipped one when `None`.
    pub only: Option<HashSet<Hash32>>,
}

/// Starts the fixture's components through `door`.
pub fn start(door: Door, fx: &Fixture, opts: &Opts) -> Run {
    let store = opts.store.clone().unwrap_or_else(|| fx.store.clone());
    let expected: BTreeSet<Hash32> = opts.only.as_ref().unwrap_or(&fx.whitelist).iter().copied().collect();
    match door {
        Door::Node => {
            let mut b = fx.builder().store(&store);
            if let Some(only) = &opts.only {
                b = b.whitelist(only.clone());
            }
            if let Some(k) = &opts.key {
                b = b.auth_key_file(k);
            }
            for ro in &opts.read_only {
                b = b.read_only_store(ro);
            }
            if let Some(f) = opts.fault {
                b = b.fault(f);
            }
            let cache = b.build().expect("the node starts");
            let r = cache.report();
            let mut sources = BTreeMap::new();
            let mut rejected = BTreeMap::new();
            let mut writes = BTreeMap::new();
            for e in &r.entries {
                let source = match &e.outcome {
                    // In the binary root, not asked for.
                    Outcome::Unlisted if !expected.contains(&e.hash) => continue,
                    Outcome::FromStore if e.store.as_deref() == Some(store.as_path()) => Source::Store,
                    Outcome::FromStore => Source::ReadOnly(e.store.clone().expect("a hit names its store")),
                    Outcome::Compiled => Source::Compiled(stored(e.stored.as_ref())),
                    other => panic!("{} not served: {other:?}\n{r}", hex::encode(e.hash)),
                };
                sources.insert(e.hash, source);
                if let Some(why) = &e.rejected {
                    rejected.insert(e.hash, why.clone());
                }
                if let Some(w) = &e.stored {
                    writes.insert(e.hash, w.clone());
                }
            }
            Run {
                engine: cache.wasm_engine.clone(),
                components: cache.wasm_component_cache.clone().into_iter().collect(),
                sources,
                rejected,
                writes,
                expected,
                report: Some(r.clone()),
            }
        }
        Door::Embedder => {
            let engine = wasm_node_cache::init_wasm_engine().expect("engine");
            let mut b = ArtifactStore::builder(&store);
            if let Some(k) = &opts.key {
                b = b.auth_key_file(k);
            }
            for ro in &opts.read_only {
                b = b.read_only_store(ro);
            }
            if let Some(f) = opts.fault {
                b = b.fault(f);
            }
            let artifacts = b.open(&engine).expect("the store opens");
            let sources_bytes: Vec<Vec<u8>> = super::shipped_sources()
                .into_iter()
                .map(|(_, b)| b)
                .filter(|b| expected.contains(&sha256(b)))
                .collect();
            let refs: Vec<&[u8]> = sources_bytes.iter().map(Vec::as_slice).collect();
            let mut run = Run {
                engine,
                components: BTreeMap::new(),
                sources: BTreeMap::new(),
                rejected: BTreeMap::new(),
                writes: BTreeMap::new(),
                expected,
                report: None,
            };
            for (bytes, loaded) in sources_bytes.iter().zip(artifacts.components(&refs)) {
                let loaded = loaded.expect("a valid component is always served");
                assert_eq!(loaded.hash, sha256(bytes));
                let source = match &loaded.origin {
                    Origin::Store { dir, .. } => {
                        assert_eq!(dir, &store);
                        Source::Store
                    }
                    Origin::ReadOnlyStore { dir, .. } => Source::ReadOnly(dir.clone()),
                    Origin::Compiled { stored: s, .. } => {
                        run.writes.insert(loaded.hash, s.clone());
                        Source::Compiled(stored(Some(s)))
                    }
                    other => panic!("unexpected origin {other:?}"),
                };
                run.sources.insert(loaded.hash, source);
                if let Some(why) = loaded.origin.rejected() {
                    run.rejected.insert(loaded.hash, why.clone());
                }
                run.components.insert(loaded.hash, loaded.value);
            }
            run
        }
    }
}

fn stored(s: Option<&StoreWrite>) -> Result<(), String> {
    match s {
        Some(StoreWrite::Stored | StoreWrite::DurabilityNotConfirmed(_)) => Ok(()),
        Some(StoreWrite::NotStored(e)) => Err(e.message()),
        Some(other) => panic!("an unknown store write: {other:?}"),
        None => Err("no store".to_owned()),
    }
}

/// The adder's rejection, as the node's report says it (node door only): its `EntryReport` names
/// it, and its text contains `text`.
fn assert_node_rejection_text(run: &Run, hash: &Hash32, text: &str) {
    if let Some(r) = &run.report {
        let reason = r
            .entry(hash)
            .and_then(|e| e.rejected.as_ref())
            .map(ToString::to_string)
            .unwrap_or_else(|| panic!("{} has no rejection in the report\n{r}", hex::encode(hash)));
        assert!(reason.contains(text), "reason {reason:?} lacks {text:?}\n{r}");
    }
}

/// Fills the store through `door`, damages the adder's artifact with `damage`, and checks that
/// the next start rejects it for a reason `check` accepts (whose text contains `text`), compiles
/// only the adder and replaces its artifact with a sound file of ours, and that the one after
/// loads everything. Returns the fixture for a scenario's own checks.
fn rejected_and_healed(
    door: Door,
    opts: &Opts,
    damage: impl FnOnce(&Fixture, &Path),
    check: impl Fn(&Rejection) -> bool,
    text: &str,
) -> Fixture {
    let fx = Fixture::new();
    let cold = start(door, &fx, opts);
    assert_eq!((cold.compiled(), cold.loaded()), (3, 0), "{:?}", cold.sources);
    let adder = super::adder_hash();
    damage(&fx, &fx.artifact_path(&adder));
    let damaged = start(door, &fx, opts);
    damaged.assert_serves_everything();
    assert_eq!(
        damaged.sources[&adder],
        Source::Compiled(Ok(())),
        "{:?}",
        damaged.sources
    );
    assert_eq!(damaged.loaded(), 2);
    assert_eq!(damaged.rejected.len(), 1, "only the adder: {:?}", damaged.rejected);
    let why = damaged.rejected.get(&adder).expect("the damaged artifact is rejected");
    assert!(check(why), "unexpected rejection: {why:?}");
    assert!(why.to_string().contains(text), "{why} lacks {text:?}");
    damaged.assert_node_counts((2, 1, 1, 0));
    assert_node_rejection_text(&damaged, &adder, text);
    if let Some(r) = &damaged.report {
        assert_eq!(r.store.written, 1, "{r}");
    }
    // Replaced by a rename: a regular file of ours that nobody can write, not what was there.
    let path = fx.artifact_path(&adder);
    let meta = std::fs::symlink_metadata(&path).expect("replaced");
    assert!(meta.file_type().is_file(), "{}: {:?}", path.display(), meta.file_type());
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(meta.mode() & 0o222, 0, "{:03o}", meta.mode() & 0o777);
    let healed = start(door, &fx, opts);
    assert_eq!(healed.loaded(), 3, "{:?}", healed.sources);
    assert!(healed.rejected.is_empty());
    healed.assert_node_counts((3, 0, 0, 0));
    healed.assert_serves_everything();
    fx
}

fn replace_file(path: &Path, bytes: &[u8]) {
    std::fs::remove_file(path).expect("unlink");
    std::fs::write(path, bytes).expect("write");
    super::chmod(path, 0o444);
}

/// `bytes` with the byte at `at` flipped.
fn flipped(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[at] ^= 0x40;
    bytes
}

/// A flipped payload byte.
pub fn corrupt_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| {
            let bytes = std::fs::read(path).expect("read");
            let middle = bytes.len() / 2;
            replace_file(path, &flipped(bytes, middle));
        },
        |r| matches!(r, Rejection::Format(ArtifactError::PayloadChecksum)),
        "payload checksum mismatch",
    );
}

/// A flipped byte inside the trailer's source-hash field.
pub fn flipped_trailer_byte(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| {
            let bytes = std::fs::read(path).expect("read");
            let at = bytes.len() - 100;
            replace_file(path, &flipped(bytes, at));
        },
        |r| matches!(r, Rejection::Format(ArtifactError::BadTag { keyed: false })),
        "trailer checksum mismatch",
    );
}

/// Cut to half its length.
pub fn truncated_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| {
            let bytes = std::fs::read(path).expect("read");
            replace_file(path, &bytes[..bytes.len() / 2]);
        },
        |r| matches!(r, Rejection::Format(ArtifactError::BadMagic)),
        "bad magic",
    );
}

/// An empty file under the adder's name.
pub fn empty_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| replace_file(path, b""),
        |r| matches!(r, Rejection::Format(ArtifactError::TooShort { len: 0 })),
        "truncated: 0 bytes",
    );
}

/// Bytes that are no artifact at all.
pub fn garbage_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| replace_file(path, &[0xa5u8; 5000]),
        |r| matches!(r, Rejection::Format(ArtifactError::BadMagic)),
        "bad magic",
    );
}

/// Another component's valid artifact copied under the adder's name.
pub fn swapped_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |fx, path| {
            let fib = fx.artifact_path(&sha256(&super::shipped("fib")));
            let bytes = std::fs::read(fib).expect("read");
            replace_file(path, &bytes);
        },
        |r| matches!(r, Rejection::Format(ArtifactError::WrongSource { .. })),
        "copied under the wrong name",
    );
}

/// The adder's artifact given to another uid (needs root).
pub fn foreign_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| super::give_to_other_uid(path),
        |r| matches!(r, Rejection::ForeignOwner { uid } if *uid == super::OTHER_UID),
        &format!("owned by uid {}", super::OTHER_UID),
    );
}

/// The adder's artifact made writable by everyone.
pub fn artifact_writable_by_others(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| super::chmod(path, 0o666),
        |r| matches!(r, Rejection::WritableByOthers { mode: 0o666 }),
        "writable by group or others (mode 666)",
    );
}

/// The adder's valid artifact moved elsewhere and reached through a symbolic link: never
/// followed, the link replaced, its target never written through.
pub fn symlinked_artifact(door: Door) {
    let mut target = None;
    let fx = rejected_and_healed(
        door,
        &Opts::default(),
        |fx, path| {
            let elsewhere = fx.dir.path().join("elsewhere.cwasm");
            std::fs::rename(path, &elsewhere).expect("move");
            symlink(&elsewhere, path).expect("symlink");
            target = Some(std::fs::read(&elsewhere).expect("read"));
        },
        |r| matches!(r, Rejection::Symlink),
        "symbolic link",
    );
    assert_eq!(
        std::fs::read(fx.dir.path().join("elsewhere.cwasm")).ok(),
        target,
        "the link's target was not written through"
    );
}

/// A FIFO under the adder's name: rejected without opening it (which would hang), replaced.
pub fn fifo_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| {
            std::fs::remove_file(path).expect("unlink");
            rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600)).expect("mkfifo");
        },
        |r| matches!(r, Rejection::NotRegularFile),
        "not a regular file",
    );
}

/// An empty directory under the adder's name: nothing loads it, so it is removed and replaced.
pub fn directory_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| {
            std::fs::remove_file(path).expect("unlink");
            std::fs::create_dir(path).expect("mkdir");
        },
        |r| matches!(r, Rejection::NotRegularFile),
        "not a regular file",
    );
}

/// A directory that holds something, under the adder's name: it stays the operator's. The adder
/// is compiled and served, not stored, and the start says why.
pub fn non_empty_directory_artifact(door: Door) {
    let fx = Fixture::new();
    let opts = Opts::default();
    start(door, &fx, &opts);
    let adder = super::adder_hash();
    let path = fx.artifact_path(&adder);
    std::fs::remove_file(&path).expect("unlink");
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::write(path.join("keep"), b"x").expect("a file inside");
    let run = start(door, &fx, &opts);
    run.assert_serves_everything();
    assert_eq!(run.loaded(), 2, "{:?}", run.sources);
    assert!(
        matches!(&run.sources[&adder], Source::Compiled(Err(_))),
        "compiled, not stored: {:?}",
        run.sources
    );
    assert!(
        matches!(run.rejected.get(&adder), Some(Rejection::NotRegularFile)),
        "{:?}",
        run.rejected
    );
    run.assert_node_counts((2, 1, 1, 0));
    assert_node_rejection_text(&run, &adder, "not a regular file");
    if let Some(r) = &run.report {
        assert!(r.store.write_error.is_some(), "{r}");
    }
    assert_eq!(
        std::fs::read(path.join("keep")).expect("kept"),
        b"x",
        "nothing inside the directory is touched"
    );
}

/// The adder's artifact removed: the only component compiled (nothing to reject), then stored.
pub fn missing_artifact(door: Door) {
    let fx = Fixture::new();
    let opts = Opts::default();
    start(door, &fx, &opts);
    let adder = super::adder_hash();
    std::fs::remove_file(fx.artifact_path(&adder)).expect("remove");
    let run = start(door, &fx, &opts);
    run.assert_serves_everything();
    assert_eq!(run.sources[&adder], Source::Compiled(Ok(())), "{:?}", run.sources);
    assert_eq!(run.loaded(), 2);
    assert!(run.rejected.is_empty(), "{:?}", run.rejected);
    run.assert_node_counts((2, 1, 0, 0));
    if let Some(r) = &run.report {
        assert_eq!(r.entry(&adder).map(|e| &e.outcome), Some(&Outcome::Compiled), "{r}");
    }
    assert_eq!(start(door, &fx, &opts).loaded(), 3);
}

/// A MAC-mode store (key byte 0x5a) and its options.
fn mac_opts() -> (tempfile::TempDir, Opts) {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = super::key_file(&keys.path().join("artifact.key"), 0x5a, 0o600);
    let opts = Opts {
        key: Some(key),
        ..Opts::default()
    };
    (keys, opts)
}

/// MAC mode: a well-formed plain artifact of `planted` (made by the same door in a plain store)
/// planted under the adder's MAC-mode name has no valid tag.
fn mac_with_plain_artifact_of(door: Door, planted: &str) {
    let (_keys, opts) = mac_opts();
    rejected_and_healed(
        door,
        &opts,
        |fx, path| {
            let plain = fx.dir.path().join("plain");
            start(
                door,
                fx,
                &Opts {
                    store: Some(plain.clone()),
                    ..Opts::default()
                },
            );
            let bytes = std::fs::read(super::artifact_of(&plain, &sha256(&super::shipped(planted)))).expect("read");
            replace_file(path, &bytes);
        },
        |r| matches!(r, Rejection::Format(ArtifactError::WrongMode { artifact_keyed: false })),
        "no MAC",
    );
}

/// MAC mode: the adder's own plain artifact under its MAC-mode name.
pub fn mac_without_valid_tag(door: Door) {
    mac_with_plain_artifact_of(door, "adder");
}

/// MAC mode: another component's plain artifact under the adder's MAC-mode name, as someone
/// without the key would plant it.
pub fn mac_plain_artifact_of_another_component(door: Door) {
    mac_with_plain_artifact_of(door, "fib");
}

/// MAC mode: a store filled under another key. Every artifact is refused as another key's (not
/// as corrupt), compiled again and replaced under this key; the start after loads everything.
pub fn mac_under_another_key(door: Door) {
    let fx = Fixture::new();
    let (_keys, theirs) = mac_opts();
    assert_eq!(start(door, &fx, &theirs).compiled(), 3);
    let other_keys = tempfile::tempdir().expect("tempdir");
    let ours = Opts {
        key: Some(super::key_file(&other_keys.path().join("other.key"), 0x11, 0o600)),
        ..Opts::default()
    };
    let run = start(door, &fx, &ours);
    run.assert_serves_everything();
    assert_eq!(run.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", run.sources);
    assert_eq!(run.rejected.len(), 3, "{:?}", run.rejected);
    for why in run.rejected.values() {
        assert!(
            matches!(why, Rejection::Format(ArtifactError::OtherKey { .. })),
            "{why:?}"
        );
        assert!(why.to_string().contains("another MAC key"), "{why}");
    }
    run.assert_node_counts((0, 3, 3, 0));
    for hash in &fx.whitelist {
        assert_node_rejection_text(&run, hash, "another MAC key");
    }
    let healed = start(door, &fx, &ours);
    assert_eq!(healed.loaded(), 3, "{:?}", healed.sources);
    assert!(healed.rejected.is_empty(), "{:?}", healed.rejected);
    healed.assert_serves_everything();
}

/// Plain artifacts in the store are no candidates for a MAC-mode start (another fingerprint):
/// nothing rejected, everything compiled; then the MAC-mode start is warm, and the plain
/// artifacts are still there for a plain start.
pub fn plain_artifacts_are_not_mac_candidates(door: Door) {
    let fx = Fixture::new();
    assert_eq!(start(door, &fx, &Opts::default()).compiled(), 3);
    let (_keys, mac) = mac_opts();
    let cold = start(door, &fx, &mac);
    cold.assert_serves_everything();
    assert_eq!(cold.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", cold.sources);
    assert!(cold.rejected.is_empty(), "{:?}", cold.rejected);
    cold.assert_node_counts((0, 3, 0, 0));
    let warm = start(door, &fx, &mac);
    warm.assert_serves_everything();
    warm.assert_node_counts((3, 0, 0, 0));
    assert_eq!(warm.loaded(), 3, "{:?}", warm.sources);
    assert_eq!(start(door, &fx, &Opts::default()).loaded(), 3);
}

/// A symbolic link at the store's lock file, into a file elsewhere, in a store made by hand:
/// never followed, replaced by a lock file of the store's; the start compiles and stores
/// everything, and the link's target is untouched.
pub fn symlinked_lock_file(door: Door) {
    let fx = Fixture::new();
    std::fs::create_dir(&fx.store).expect("mkdir");
    super::chmod(&fx.store, 0o700);
    let victim = fx.dir.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");
    super::mark_store(&fx.store);
    symlink(&victim, fx.store.join("lock")).expect("symlink");
    let run = start(door, &fx, &Opts::default());
    run.assert_serves_everything();
    assert_eq!(run.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", run.sources);
    if let Some(r) = &run.report {
        assert_eq!((r.compiled, r.store.written), (3, 3), "the node starts and stores\n{r}");
        assert!(
            r.store
                .lock_repaired
                .as_ref()
                .is_some_and(|repair| repair.to_string().contains("symbolic link")),
            "the link is reported: {r}"
        );
    }
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
    assert_eq!(start(door, &fx, &Opts::default()).loaded(), 3);
}

/// A bake of the fixture's components made through `door` at `<fixture>/bake`, as an image build
/// does: the lock file removed (a bake has none) and every write bit of the directory cleared.
fn bake(door: Door, fx: &Fixture) -> PathBuf {
    let bake = fx.dir.path().join("bake");
    let baking = Opts {
        store: Some(bake.clone()),
        ..Opts::default()
    };
    let run = start(door, fx, &baking);
    assert_eq!(run.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", run.sources);
    if let Some(r) = &run.report {
        assert_eq!(r.store.written, 3, "{r}");
    }
    std::fs::remove_file(bake.join("lock")).expect("a bake has no lock file");
    super::chmod(&bake, 0o555);
    bake
}

/// Options of a start with `bake` as its read-only store.
fn with_bake(bake: &Path) -> Opts {
    Opts {
        read_only: vec![bake.to_path_buf()],
        ..Opts::default()
    }
}

/// A bake made through the door, served read-only to a start with an empty writable store:
/// nothing compiled, nothing written into the bake.
pub fn read_only_store_served(door: Door) {
    let fx = Fixture::new();
    let bake = bake(door, &fx);
    let before: Vec<_> = std::fs::read_dir(&bake)
        .expect("bake")
        .map(|e| e.expect("e").path())
        .collect();
    let run = start(door, &fx, &with_bake(&bake));
    run.assert_serves_everything();
    assert_eq!(
        run.count(|s| *s == Source::ReadOnly(bake.clone())),
        3,
        "{:?}",
        run.sources
    );
    let after: Vec<_> = std::fs::read_dir(&bake)
        .expect("bake")
        .map(|e| e.expect("e").path())
        .collect();
    assert_eq!(before, after, "the bake is never written");
    assert_eq!(super::artifact_count(&fx.store), 0, "nothing compiled, nothing stored");
}

/// A baked artifact damaged by `damage` (the bake's directory writable meanwhile): refused for a
/// reason `check` accepts, the adder compiled and healed into the writable store, the bake left
/// byte for byte as it was; the next start takes the adder from the writable store, searched
/// first, and the rest from the bake.
fn baked_artifact_rejected_and_healed(door: Door, damage: impl FnOnce(&Path), check: impl Fn(&Rejection) -> bool) {
    let fx = Fixture::new();
    let bake = bake(door, &fx);
    let adder = super::adder_hash();
    super::chmod(&bake, 0o755);
    damage(&super::artifact_of(&bake, &adder));
    super::chmod(&bake, 0o555);
    let before = super::snapshot(&bake);

    let run = start(door, &fx, &with_bake(&bake));
    run.assert_serves_everything();
    assert_eq!(run.sources[&adder], Source::Compiled(Ok(())), "{:?}", run.sources);
    assert_eq!(
        run.count(|s| *s == Source::ReadOnly(bake.clone())),
        2,
        "{:?}",
        run.sources
    );
    let why = run.rejected.get(&adder).expect("the baked artifact is rejected");
    assert!(check(why), "unexpected rejection: {why:?}");
    run.assert_node_counts((2, 1, 1, 0));
    if let Some(r) = &run.report {
        assert_eq!(
            r.store.written, 1,
            "the healed artifact goes to the writable store: {r}"
        );
    }
    assert_eq!(super::snapshot(&bake), before, "the bake is untouched");
    assert_eq!(super::artifact_count(&fx.store), 1);

    let next = start(door, &fx, &with_bake(&bake));
    next.assert_serves_everything();
    assert_eq!(
        next.sources[&adder],
        Source::Store,
        "the writable store is searched first: {:?}",
        next.sources
    );
    assert_eq!(
        next.count(|s| *s == Source::ReadOnly(bake.clone())),
        2,
        "{:?}",
        next.sources
    );
    assert!(next.rejected.is_empty(), "{:?}", next.rejected);
    next.assert_node_counts((3, 0, 0, 0));
    if let Some(r) = &next.report {
        assert_eq!(
            r.entry(&adder).and_then(|e| e.store.clone()).as_deref(),
            Some(fx.store.as_path()),
            "{r}"
        );
    }
}

/// A corrupt artifact in the bake.
pub fn corrupt_baked_artifact(door: Door) {
    baked_artifact_rejected_and_healed(
        door,
        |path| {
            let bytes = std::fs::read(path).expect("read");
            let middle = bytes.len() / 2;
            replace_file(path, &flipped(bytes, middle));
        },
        |r| matches!(r, Rejection::Format(ArtifactError::PayloadChecksum)),
    );
}

/// An artifact in the bake given to another uid (needs root): a bake is checked like the
/// writable store.
pub fn foreign_baked_artifact(door: Door) {
    baked_artifact_rejected_and_healed(
        door,
        super::give_to_other_uid,
        |r| matches!(r, Rejection::ForeignOwner { uid } if *uid == super::OTHER_UID),
    );
}

/// A corrupt artifact in the writable store for a component the bake serves: the bake serves it,
/// the rejected file is removed (not replaced: nothing was compiled), and the start says so;
/// the next start reports nothing.
pub fn corrupt_artifact_beside_a_bake(door: Door) {
    let fx = Fixture::new();
    let bake = bake(door, &fx);
    let adder = super::adder_hash();
    start(door, &fx, &Opts::default());
    let victim = fx.artifact_path(&adder);
    let bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    replace_file(&victim, &flipped(bytes, middle));
    for hash in &fx.whitelist {
        if *hash != adder {
            std::fs::remove_file(fx.artifact_path(hash)).expect("unlink");
        }
    }

    let run = start(door, &fx, &with_bake(&bake));
    run.assert_serves_everything();
    assert_eq!(
        run.count(|s| *s == Source::ReadOnly(bake.clone())),
        3,
        "{:?}",
        run.sources
    );
    assert!(
        matches!(
            run.rejected.get(&adder),
            Some(Rejection::Format(ArtifactError::PayloadChecksum))
        ),
        "{:?}",
        run.rejected
    );
    assert_eq!(run.rejected.len(), 1, "{:?}", run.rejected);
    assert!(!victim.exists(), "the rejected file is gone");
    run.assert_node_counts((3, 0, 1, 0));
    if let Some(r) = &run.report {
        assert_eq!(
            r.entry(&adder).and_then(|e| e.store.clone()).as_deref(),
            Some(bake.as_path()),
            "{r}"
        );
        assert_eq!(r.store.rejected_removed, 1, "{r}");
        assert!(r.to_string().contains("1 rejected artifact(s) removed"), "{r}");
    }

    let next = start(door, &fx, &with_bake(&bake));
    assert_eq!(
        next.count(|s| *s == Source::ReadOnly(bake.clone())),
        3,
        "{:?}",
        next.sources
    );
    assert!(
        next.rejected.is_empty(),
        "the next start reports nothing: {:?}",
        next.rejected
    );
    next.assert_node_counts((3, 0, 0, 0));
    if let Some(r) = &next.report {
        assert_eq!(r.store.rejected_removed, 0, "{r}");
    }
}

/// An injected failure to write (`fault`): every component compiled and served, none stored, the
/// reason (containing `why`) given, nothing half-written left; once the store can be written
/// again, the next start stores them.
fn write_fails(door: Door, fault: Fault, why: &str) {
    let fx = Fixture::new();
    let failing = Opts {
        fault: Some(fault),
        ..Opts::default()
    };
    let run = start(door, &fx, &failing);
    run.assert_serves_everything();
    for source in run.sources.values() {
        match source {
            Source::Compiled(Err(e)) => assert!(e.contains(why) && e.contains("cannot write"), "{e}"),
            other => panic!("expected compiled, not stored: {other:?}"),
        }
    }
    for w in run.writes.values() {
        assert!(matches!(w, StoreWrite::NotStored(e) if e.kind() == "write"), "{w:?}");
    }
    run.assert_node_counts((0, 3, 0, 0));
    if let Some(r) = &run.report {
        let err = r.store.write_error.clone().expect("write error reported");
        assert!(err.kind() == "write", "{err:?}");
        assert!(
            err.message().contains("cannot write") && err.message().contains(why),
            "{err}"
        );
        assert_eq!(r.store.written, 0, "{r}");
    }
    assert_eq!(super::artifact_count(&fx.store), 0);
    let leftovers: Vec<_> = std::fs::read_dir(&fx.store)
        .expect("store")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert!(
        leftovers.iter().all(|n| n == "lock" || n == "CACHEDIR.TAG"),
        "nothing half-written left: {leftovers:?}"
    );
    let room = start(door, &fx, &Opts::default());
    assert_eq!(room.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", room.sources);
    assert_eq!(start(door, &fx, &Opts::default()).loaded(), 3);
}

/// A full disk (injected).
pub fn full_disk(door: Door) {
    write_fails(door, Fault::DiskFull, "No space left on device");
}

/// A read-only file system (injected).
pub fn read_only_file_system(door: Door) {
    write_fails(door, Fault::ReadOnly, "Read-only file system");
}

/// The directory's fsync fails after each artifact is renamed into place (injected): stored, but
/// durability not confirmed, and said so; the next start loads them.
pub fn directory_fsync_fails(door: Door) {
    let fx = Fixture::new();
    let run = start(
        door,
        &fx,
        &Opts {
            fault: Some(Fault::DirSyncFails),
            ..Opts::default()
        },
    );
    run.assert_serves_everything();
    assert_eq!(run.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", run.sources);
    assert_eq!(run.writes.len(), 3);
    for w in run.writes.values() {
        assert!(
            matches!(w, StoreWrite::DurabilityNotConfirmed(why) if why.kind() == "durability" && why.message().contains("renamed into place")),
            "{w:?}"
        );
    }
    run.assert_node_counts((0, 3, 0, 0));
    if let Some(r) = &run.report {
        assert_eq!(r.store.written, 3, "the artifacts are in place: {r}");
        assert!(r.store.write_error.is_none(), "not a failure to store: {r}");
        assert!(
            r.store
                .durability_error
                .as_ref()
                .map(|p| p.message())
                .is_some_and(|e| e.contains("fsync")),
            "{r}"
        );
        let text = r.to_string();
        assert!(
            text.contains("stored, durability not confirmed") && !text.contains("not stored"),
            "{text}"
        );
        let json = serde_json::to_value(r).expect("json");
        assert_eq!(json["entries"][0]["stored"]["status"], "durability_not_confirmed");
    }
    // And they are really there: the next start loads them, and has nothing to store.
    let next = start(door, &fx, &Opts::default());
    assert_eq!(next.loaded(), 3, "{:?}", next.sources);
    assert!(next.writes.is_empty(), "{:?}", next.writes);
    next.assert_node_counts((3, 0, 0, 0));
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

/// A real full disk (a small tmpfs filled to the last byte, needs root): the stored adder still
/// loads and is left intact, the other two are compiled and served but not stored, nothing
/// half-written is left, and once there is room the next start stores them.
pub fn real_full_disk(door: Door) {
    let fx = Fixture::new();
    let at = fx.dir.path().join("small");
    let _mount = Mount::tmpfs(&at, "256k").expect("needs root: cannot mount a tmpfs here");
    let adder = super::adder_hash();
    let only_adder = Opts {
        store: Some(at.join("store")),
        only: Some([adder].into_iter().collect()),
        ..Opts::default()
    };
    let everything = Opts {
        only: None,
        ..only_adder.clone()
    };
    let store = at.join("store");
    let first = start(door, &fx, &only_adder);
    assert_eq!(first.sources[&adder], Source::Compiled(Ok(())), "{:?}", first.sources);
    if let Some(r) = &first.report {
        assert_eq!(r.store.written, 1, "{r}");
    }
    let adder_artifact = std::fs::read(super::artifact_of(&store, &adder)).expect("read");
    // Fill the file system to the last byte.
    let filler = at.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    let run = start(door, &fx, &everything);
    run.assert_serves_everything();
    assert_eq!(run.sources[&adder], Source::Store, "{:?}", run.sources);
    for (hash, source) in &run.sources {
        if *hash != adder {
            assert!(
                matches!(source, Source::Compiled(Err(e)) if e.contains("No space left on device")),
                "{source:?}"
            );
        }
    }
    assert!(run.rejected.is_empty(), "{:?}", run.rejected);
    assert_eq!(run.count(|s| matches!(s, Source::Compiled(_))), 2);
    if let Some(r) = &run.report {
        assert_eq!((r.from_store, r.compiled, r.rejected), (1, 2, 0), "{r}");
        let err = r.store.write_error.as_ref().map(|p| p.message()).unwrap_or_default();
        assert!(err.contains("No space left on device"), "{r}");
    }
    assert_eq!(
        std::fs::read(super::artifact_of(&store, &adder)).expect("read"),
        adder_artifact,
        "stored entry intact"
    );
    assert!(
        super::files_with_prefix(&store, ".tmp-").is_empty(),
        "no partial file left"
    );

    std::fs::remove_file(&filler).expect("free space");
    let healed = start(door, &fx, &everything);
    healed.assert_serves_everything();
    assert_eq!(healed.loaded(), 1, "{:?}", healed.sources);
    assert_eq!(
        healed.count(|s| *s == Source::Compiled(Ok(()))),
        2,
        "{:?}",
        healed.sources
    );
    if let Some(r) = &healed.report {
        assert_eq!((r.from_store, r.compiled, r.store.written), (1, 2, 2), "{r}");
    }
}

/// The writable store on a read-only mount (a bind mount, needs root), holding two of the three
/// artifacts: it still serves what it holds, the third is compiled and served but not stored, and
/// the start says why.
pub fn read_only_mount(door: Door) {
    let fx = Fixture::new();
    let adder = super::adder_hash();
    let mut partial = fx.whitelist.clone();
    partial.remove(&adder);
    let two = start(
        door,
        &fx,
        &Opts {
            only: Some(partial),
            ..Opts::default()
        },
    );
    assert_eq!(two.count(|s| *s == Source::Compiled(Ok(()))), 2, "store two of three");
    let ro = fx.dir.path().join("ro-store");
    let _mount = Mount::read_only_bind(&fx.store, &ro).expect("needs root: cannot bind-mount read-only here");
    let run = start(
        door,
        &fx,
        &Opts {
            store: Some(ro.clone()),
            ..Opts::default()
        },
    );
    run.assert_serves_everything();
    assert_eq!(run.loaded(), 2, "{:?}", run.sources);
    assert!(run.rejected.is_empty(), "{:?}", run.rejected);
    assert!(
        matches!(&run.sources[&adder], Source::Compiled(Err(e)) if e.contains("Read-only file system")),
        "{:?}",
        run.sources
    );
    if let Some(r) = &run.report {
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
    }
}
