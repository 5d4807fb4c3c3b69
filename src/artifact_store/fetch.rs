//! The embedder's lookup, for one wasm or a batch:
//!
//! ```text
//! shared lock    ── this engine's artifacts: writable store, then each read-only store,
//!                   then portable artifacts (best CPU profile first) in all of them
//! exclusive lock ── look again (another thread or process may have compiled meanwhile)
//!                ── compile what is still missing, in parallel; publish each atomically
//!                ── bake each portable profile asked for
//! ```
//! Both waits share one deadline, `lock_timeout` after the call. A lock not had in time, a
//! refused artifact or a failed write turns a hit into a compilation, with the reason in the
//! result; only a wasm that does not compile is an error.

use std::collections::BTreeMap;
use std::time::Instant;

use super::batch::load_all;
use super::compile::{compile, on_every_core, publish};
use super::portable::engines;
use super::{Inner, Loaded, Origin, Writable};
use crate::compiled::Compiled;
use crate::error::StoreError;
use crate::key::{ArtifactKey, Hash32};
use crate::problem::{ProblemKind, StoreProblem};
use crate::profile::CpuProfile;
use crate::report::StoreWrite;
use crate::source::sha256;
use crate::store::{LoadPath, LockKind, Lookup, Rejection, Store, deadline_after};

/// What became of one distinct wasm so far.
struct Slot<T> {
    found: Option<Result<(T, Origin), wasmtime::Error>>,
    rejected: Option<Rejection>,
}

impl<T> Slot<T> {
    fn pending(&self) -> bool {
        self.found.is_none()
    }
}

type Slots<T> = BTreeMap<Hash32, Slot<T>>;

fn pending<T>(slots: &Slots<T>) -> Vec<Hash32> {
    slots.iter().filter(|(_, s)| s.pending()).map(|(h, _)| *h).collect()
}

/// Loads or compiles every wasm of `wasm` as `T`; one result per input, in order. The same
/// bytes given twice are looked up and compiled once.
pub(crate) fn fetch<T: Compiled>(inner: &Inner, wasm: &[&[u8]]) -> Vec<Result<Loaded<T>, StoreError>> {
    let hashes = hash_all(wasm);
    let mut slots: Slots<T> = hashes
        .iter()
        .map(|h| {
            let slot = Slot {
                found: None,
                rejected: None,
            };
            (*h, slot)
        })
        .collect();
    let deadline = deadline_after(inner.lock_timeout);
    let not_stored = load_shared(inner, deadline, &mut slots);
    if !pending(&slots).is_empty() {
        let sources: BTreeMap<Hash32, &[u8]> = hashes.iter().copied().zip(wasm.iter().copied()).collect();
        compile_misses(inner, deadline, not_stored, &sources, &mut slots);
    }
    hashes
        .iter()
        .map(|hash| {
            let slot = slots.get_mut(hash);
            let (found, rejected) = match slot {
                Some(s) => (&mut s.found, s.rejected.clone()),
                None => (&mut None, None),
            };
            match found {
                Some(Ok((value, origin))) => Ok(Loaded {
                    value: value.clone(),
                    origin: origin.clone(),
                    hash: *hash,
                    kind: T::KIND,
                    rejected,
                }),
                // The first of equal inputs takes wasmtime's error, later ones a copy of its text.
                Some(Err(e)) => {
                    let copy = wasmtime::Error::msg(format!("{e:#}"));
                    Err(StoreError::Compile {
                        hash: *hash,
                        kind: T::KIND,
                        source: std::mem::replace(e, copy),
                    })
                }
                None => Err(StoreError::Compile {
                    hash: *hash,
                    kind: T::KIND,
                    source: wasmtime::Error::msg("internal error: neither loaded nor compiled"),
                }),
            }
        })
        .collect()
}

/// The SHA-256 of every input, in order: on every core for a batch (the hash is most of a warm
/// lookup's time).
fn hash_all(wasm: &[&[u8]]) -> Vec<Hash32> {
    // Below this, starting a thread costs more than it saves (SHA-256 runs at about 1.4 GB/s).
    const PARALLEL_HASH_MIN_BYTES: usize = 256 * 1024;
    if wasm.iter().map(|w| w.len()).sum::<usize>() < PARALLEL_HASH_MIN_BYTES {
        return wasm.iter().map(|w| sha256(w)).collect();
    }
    let indexed: Vec<(usize, &[u8])> = wasm.iter().copied().enumerate().collect();
    let mut hashed = on_every_core(&indexed, |(i, w)| (*i, sha256(w)));
    hashed.sort_unstable_by_key(|(i, _)| *i);
    hashed.into_iter().map(|(_, h)| h).collect()
}

/// Under the shared lock of the writable store: this engine's artifacts in every store, then
/// portable ones. Returns why nothing compiled now can be stored, if that is already known.
fn load_shared<T: Compiled>(inner: &Inner, deadline: Instant, slots: &mut Slots<T>) -> Option<StoreProblem> {
    let (writable, mut not_stored) = match &inner.writable {
        Writable::Open(store) => match store.lock_shared(deadline, "load artifacts") {
            Ok(guard) => (Some((store, guard)), None),
            Err(e) => {
                let problem = StoreProblem::lock_not_taken(LockKind::Shared, &store.lock_path(), &e);
                log::warn!("artifact store not read: {problem}");
                (None, Some(problem))
            }
        },
        Writable::Refused { path, reason } => (
            None,
            Some(StoreProblem::new(
                reason.kind,
                format!("the store {} is not used: {reason}", path.display()),
            )),
        ),
        Writable::None => (None, Some(StoreProblem::new(ProblemKind::NoStore, "no writable store"))),
    };
    if !inner.profiles.contains(&CpuProfile::Native) {
        not_stored.get_or_insert_with(|| {
            StoreProblem::new(
                ProblemKind::NativeNotStored,
                "the native profile is not among the CPU profiles to store",
            )
        });
    }
    let mut stores: Vec<&Store> = Vec::new();
    if let Some((store, _)) = &writable {
        load_pending(inner, store, None, slots, |dir, load_path| Origin::Store {
            dir,
            load_path,
        });
        stores.push(store);
    }
    for i in 0..inner.read_only.len() {
        if pending(slots).is_empty() {
            break;
        }
        match inner.read_only_store(i) {
            Some(Ok(store)) => {
                load_pending(inner, store, None, slots, |dir, load_path| Origin::ReadOnlyStore {
                    dir,
                    load_path,
                });
                stores.push(store);
            }
            Some(Err(e)) => log::warn!("read-only store not read: {e}"),
            None => {}
        }
    }
    if !pending(slots).is_empty() && !inner.bakes_native() {
        load_portable(inner, &stores, slots);
    }
    not_stored
}

/// Portable artifacts, best profile first, in every store that holds any of another fingerprint.
fn load_portable<T: Compiled>(inner: &Inner, stores: &[&Store], slots: &mut Slots<T>) {
    let present: Vec<_> = stores
        .iter()
        .map(|s| s.fingerprints_present().unwrap_or_default())
        .collect();
    if present.iter().flatten().all(|fp| *fp == inner.fingerprint) {
        return;
    }
    for pe in engines(inner) {
        for (store, fps) in stores.iter().zip(&present) {
            if pending(slots).is_empty() {
                return;
            }
            if !fps.contains(&pe.fingerprint) {
                continue;
            }
            let profile = pe.profile;
            let portable = store.with_fingerprint(pe.fingerprint);
            load_pending(inner, &portable, Some(profile), slots, |dir, load_path| {
                Origin::Portable {
                    profile,
                    dir,
                    load_path,
                }
            });
        }
    }
}

/// Loads every pending slot it can from `store` (`profile`: a portable profile's artifacts).
fn load_pending<T: Compiled>(
    inner: &Inner,
    store: &Store,
    profile: Option<CpuProfile>,
    slots: &mut Slots<T>,
    origin: impl Fn(std::path::PathBuf, LoadPath) -> Origin,
) {
    for (hash, lookup) in load_all::<T>(store, &inner.engine, &pending(slots)) {
        let Some(slot) = slots.get_mut(&hash) else { continue };
        match lookup {
            Lookup::Hit(value, load_path) => {
                slot.found = Some(Ok((value, origin(store.dir().to_path_buf(), load_path))))
            }
            Lookup::Absent => {}
            Lookup::Rejected(reason) => {
                let path = store.path_of_key(&store.key_of(&hash, T::KIND));
                match profile {
                    Some(p) => log::info!("portable {p} artifact {} refused: {reason}", path.display()),
                    None => {
                        log::warn!("stored artifact {} rejected: {reason}", path.display());
                        slot.rejected.get_or_insert(reason);
                    }
                }
            }
        }
    }
}

/// Under the exclusive lock (when the store can be written and the lock is had in time): look
/// again, compile what is still missing in parallel, publish it, bake the portable profiles.
fn compile_misses<T: Compiled>(
    inner: &Inner,
    deadline: Instant,
    mut not_stored: Option<StoreProblem>,
    sources: &BTreeMap<Hash32, &[u8]>,
    slots: &mut Slots<T>,
) {
    let store = inner.writable_store();
    let exclusive = match (store, &not_stored) {
        (Some(store), None) => {
            let purpose = format!("compile {} {}(s)", pending(slots).len(), T::KIND);
            match store.lock_exclusive(deadline, &purpose) {
                Ok(x) => Some(x),
                Err(e) => {
                    not_stored = Some(StoreProblem::lock_not_taken(
                        LockKind::Exclusive,
                        &store.lock_path(),
                        &e,
                    ));
                    None
                }
            }
        }
        // Portable profiles only: nothing native is stored, but the bake still needs the lock.
        (Some(store), Some(_)) if inner.profiles.iter().any(|p| !p.is_native()) => {
            store.lock_exclusive(deadline, "bake CPU profiles").ok()
        }
        _ => None,
    };
    if let Some(x) = &exclusive {
        // Another thread or process may have compiled these while this one waited.
        load_pending(inner, x.store(), None, slots, |dir, load_path| Origin::Store {
            dir,
            load_path,
        });
    }
    let jobs: Vec<(Hash32, &[u8])> = pending(slots)
        .into_iter()
        .filter_map(|h| sources.get(&h).map(|w| (h, *w)))
        .collect();
    let publish_native = exclusive.as_ref().filter(|_| not_stored.is_none());
    let results = on_every_core(&jobs, |(hash, wasm)| {
        let result = compile::<T>(&inner.engine, wasm).map(|(value, artifact)| {
            let stored = match publish_native {
                Some(x) => publish(x, hash, T::KIND, &artifact),
                None => StoreWrite::NotStored(
                    not_stored
                        .clone()
                        .unwrap_or_else(|| StoreProblem::new(ProblemKind::NoStore, "no writable store")),
                ),
            };
            (value, Origin::Compiled { stored })
        });
        (*hash, result)
    });
    let mut compiled = Vec::new();
    for (hash, result) in results {
        if let Some(slot) = slots.get_mut(&hash) {
            if result.is_ok() {
                compiled.push(hash);
            }
            slot.found = Some(result);
        }
    }
    if let Some(x) = &exclusive {
        compiled.sort();
        bake::<T>(inner, x, &compiled, sources);
    }
}

/// Compiles each of `hashes` for every portable profile asked for and publishes it under that
/// profile's fingerprint, unless a verified artifact is there already. Failures are logged: the
/// caller has its code.
fn bake<T: Compiled>(
    inner: &Inner,
    x: &crate::store::Exclusive<'_>,
    hashes: &[Hash32],
    sources: &BTreeMap<Hash32, &[u8]>,
) {
    for pe in engines(inner).iter().filter(|pe| inner.profiles.contains(&pe.profile)) {
        let jobs: Vec<(ArtifactKey, &[u8])> = hashes
            .iter()
            .filter_map(|h| sources.get(h).map(|w| (*h, *w)))
            .map(|(source, wasm)| {
                let key = ArtifactKey {
                    source,
                    fingerprint: pe.fingerprint,
                    kind: T::KIND,
                };
                (key, wasm)
            })
            .filter(|(key, _)| x.store().check(key).is_err())
            .collect();
        on_every_core(&jobs, |(key, wasm)| {
            let path = x.store().path_of_key(key);
            match T::precompile(&pe.engine, wasm) {
                Ok(artifact) => {
                    if let Err(e) = x.publish_key(key, &artifact) {
                        log::warn!("{} artifact {} not stored: {e}", pe.profile, path.display());
                    }
                }
                Err(e) => log::warn!("{} artifact {} not compiled: {e:#}", pe.profile, path.display()),
            }
        });
    }
}
