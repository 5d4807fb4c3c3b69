//! Store scenarios written once and run through either door: the node's start-up
//! (`WasmNodeCache`) and the embedder's `ArtifactStore`. Each scenario starts the fixture's three
//! components through the door, damages the store the way a careless or hostile writer would,
//! and checks that the next start serves every component (compiling what it must), says why, and
//! heals the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wasm_node_cache::config::sha256;
use wasm_node_cache::error::{ArtifactError, Rejection};
use wasm_node_cache::node::report::{Outcome, StoreWrite};
use wasm_node_cache::testing::Fault;
use wasm_node_cache::{ArtifactStore, Hash32, Origin};
use wasmtime::component::Component;

use super::{Fixture, call_add};

/// Which door a scenario goes through.
#[derive(Debug, Clone, Copy)]
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

    /// Every component runs: the adder adds.
    pub fn assert_serves_everything(&self, fx: &Fixture) {
        assert_eq!(self.components.len(), fx.whitelist.len(), "{:?}", self.sources);
        let adder = &self.components[&super::adder_hash()];
        assert_eq!(call_add(&self.engine, adder, 40, 2), 42);
    }
}

/// Options of a start.
#[derive(Default, Clone)]
pub struct Opts {
    pub store: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub read_only: Vec<PathBuf>,
    pub fault: Option<Fault>,
}

/// Starts the fixture's components through `door`.
pub fn start(door: Door, fx: &Fixture, opts: &Opts) -> Run {
    let store = opts.store.clone().unwrap_or_else(|| fx.store.clone());
    match door {
        Door::Node => {
            let mut b = fx.builder().store(&store);
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
            for e in &r.entries {
                let source = match &e.outcome {
                    Outcome::FromStore if e.store.as_deref() == Some(store.as_path()) => Source::Store,
                    Outcome::FromStore => Source::ReadOnly(e.store.clone().expect("a hit names its store")),
                    Outcome::Compiled => Source::Compiled(stored(e.stored.as_ref())),
                    other => panic!("{} not served: {other:?}\n{r}", hex::encode(e.hash)),
                };
                sources.insert(e.hash, source);
                if let Some(why) = &e.rejected {
                    rejected.insert(e.hash, why.clone());
                }
            }
            Run {
                engine: cache.wasm_engine.clone(),
                components: cache.wasm_component_cache.clone().into_iter().collect(),
                sources,
                rejected,
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
            let sources_bytes: Vec<Vec<u8>> = super::shipped_sources().into_iter().map(|(_, b)| b).collect();
            let refs: Vec<&[u8]> = sources_bytes.iter().map(Vec::as_slice).collect();
            let mut run = Run {
                engine,
                components: BTreeMap::new(),
                sources: BTreeMap::new(),
                rejected: BTreeMap::new(),
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
                    Origin::Compiled { stored: s, .. } => Source::Compiled(stored(Some(s))),
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

/// Fills the store through `door`, damages the adder's artifact with `damage`, and checks that
/// the next start rejects it for a reason `check` accepts, compiles only the adder, and that the
/// one after loads everything.
fn rejected_and_healed(
    door: Door,
    opts: &Opts,
    damage: impl FnOnce(&Fixture, &Path),
    check: impl Fn(&Rejection) -> bool,
) {
    let fx = Fixture::new();
    let cold = start(door, &fx, opts);
    assert_eq!((cold.compiled(), cold.loaded()), (3, 0), "{:?}", cold.sources);
    let adder = super::adder_hash();
    damage(&fx, &fx.artifact_path(&adder));
    let damaged = start(door, &fx, opts);
    damaged.assert_serves_everything(&fx);
    assert_eq!(
        damaged.sources[&adder],
        Source::Compiled(Ok(())),
        "{:?}",
        damaged.sources
    );
    assert_eq!(damaged.loaded(), 2);
    let why = damaged.rejected.get(&adder).expect("the damaged artifact is rejected");
    assert!(check(why), "unexpected rejection: {why:?}");
    let healed = start(door, &fx, opts);
    assert_eq!(healed.loaded(), 3, "{:?}", healed.sources);
    assert!(healed.rejected.is_empty());
    healed.assert_serves_everything(&fx);
}

fn replace_file(path: &Path, bytes: &[u8]) {
    std::fs::remove_file(path).expect("unlink");
    std::fs::write(path, bytes).expect("write");
    super::chmod(path, 0o444);
}

/// A flipped payload byte.
pub fn corrupt_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| {
            let mut bytes = std::fs::read(path).expect("read");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            replace_file(path, &bytes);
        },
        |r| matches!(r, Rejection::Format(ArtifactError::PayloadChecksum)),
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
        |r| matches!(r, Rejection::Format(_)),
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
    );
}

/// The adder's artifact given to another uid (needs root).
pub fn foreign_artifact(door: Door) {
    rejected_and_healed(
        door,
        &Opts::default(),
        |_, path| super::give_to_other_uid(path),
        |r| matches!(r, Rejection::ForeignOwner { uid } if *uid == super::OTHER_UID),
    );
}

/// MAC mode: a well-formed plain artifact (made by the same door in a plain store) planted
/// under the MAC-mode name has no valid tag.
pub fn mac_without_valid_tag(door: Door) {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = super::key_file(&keys.path().join("artifact.key"), 0x5a, 0o600);
    let opts = Opts {
        key: Some(key),
        ..Opts::default()
    };
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
            let bytes = std::fs::read(super::artifact_of(&plain, &super::adder_hash())).expect("read");
            replace_file(path, &bytes);
        },
        |r| matches!(r, Rejection::Format(ArtifactError::WrongMode { artifact_keyed: false })),
    );
}

/// A bake made through the door, served read-only to a start with an empty writable store:
/// nothing compiled, nothing written into the bake.
pub fn read_only_store_served(door: Door) {
    let fx = Fixture::new();
    let bake = fx.dir.path().join("bake");
    let baking = Opts {
        store: Some(bake.clone()),
        ..Opts::default()
    };
    assert_eq!(start(door, &fx, &baking).compiled(), 3);
    std::fs::remove_file(bake.join("lock")).expect("a bake has no lock file");
    super::chmod(&bake, 0o555);
    let before: Vec<_> = std::fs::read_dir(&bake)
        .expect("bake")
        .map(|e| e.expect("e").path())
        .collect();
    let run = start(
        door,
        &fx,
        &Opts {
            read_only: vec![bake.clone()],
            ..Opts::default()
        },
    );
    run.assert_serves_everything(&fx);
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

/// A full disk (injected): every component compiled and served, none stored, the reason given,
/// no partial file left; once there is room again, the next start stores them.
pub fn full_disk(door: Door) {
    let fx = Fixture::new();
    let full = Opts {
        fault: Some(Fault::DiskFull),
        ..Opts::default()
    };
    let run = start(door, &fx, &full);
    run.assert_serves_everything(&fx);
    for source in run.sources.values() {
        match source {
            Source::Compiled(Err(why)) => assert!(why.contains("No space left on device"), "{why}"),
            other => panic!("expected compiled, not stored: {other:?}"),
        }
    }
    assert_eq!(super::artifact_count(&fx.store), 0);
    assert!(
        super::files_with_prefix(&fx.store, ".tmp-").is_empty(),
        "no partial file left"
    );
    let room = start(door, &fx, &Opts::default());
    assert_eq!(room.count(|s| *s == Source::Compiled(Ok(()))), 3, "{:?}", room.sources);
    assert_eq!(start(door, &fx, &Opts::default()).loaded(), 3);
}
