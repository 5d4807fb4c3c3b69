//! THE pipeline: every artifact's life, for both doors. A resolution takes requests (a hash with
//! the source's bytes, or a source file read only on a miss) and, in order:
//!
//! ```text
//! shared lock    ── this engine's artifacts: the writable store, then each read-only store,
//!                   then portable artifacts, best CPU profile first, in all of them
//! no lock        ── the sources of what is still missing, read and checked against their hash
//! exclusive lock ── only if nobody holds the lock: remove leftover temp files, and writable-store
//!                   artifacts that were refused while another store served their code
//! shared lock    ── each missing artifact under its own lock: look again, compile, publish
//!                ── each CPU profile to bake: every request's artifact not stored yet
//! ```
//!
//! It returns one outcome per request and one record of what it did to the stores. Lock waits end
//! at a deadline ([`stores::Stores::deadline`]); no failure of a store fails a request: a hit
//! becomes a compilation, with the reason in its origin. A load of a stored artifact never waits
//! for another artifact's compilation: only maintenance takes the exclusive lock.

mod bake;
mod batch;
pub(crate) mod compile;
mod lookup;
pub(crate) mod outcome;
pub(crate) mod session;
pub(crate) mod stats;
pub(crate) mod stores;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::compiled::Compiled;
use crate::error::{LockKind, StoreError};
use crate::key::ArtifactKey;
use crate::key::Hash32;
use crate::source::{SkipReason, read_verified};
use crate::store::{ArtifactLock, LockGuard, Lookup, Rejection, Store};
use compile::{compile, on_every_core, publish};
use lookup::Tier;
use outcome::{Failure, Origin, PortableRefusal, Resolved, StoreWrite};
use session::{ReadOnlyStoreReport, Session};
use stores::{Stores, Writable};

/// Progress of a compile or bake phase, for progress bars.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Progress {
    /// Components compiled (or failed) so far.
    pub done: usize,
    /// Components to compile in this phase.
    pub total: usize,
}

/// A progress callback; called with `done == 0` before a phase starts, then after each item.
pub(crate) type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Where a request's wasm comes from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// The bytes, in memory.
    Bytes(&'a [u8]),
    /// `root/<hex hash>`, read and checked against the hash only when needed (a miss, or a bake).
    File(&'a Path),
    /// The caller's reader, called and its bytes checked against the hash only when needed.
    With(&'a dyn Fn() -> std::io::Result<Vec<u8>>),
}

/// One artifact to resolve.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub hash: Hash32,
    pub source: Source<'a>,
}

/// What became of one distinct hash so far.
pub(crate) struct Slot<'a, T> {
    source: Source<'a>,
    found: Option<(T, Origin)>,
    failure: Option<Failure>,
    /// Why the artifact under this engine's own key (writable or read-only store) was refused.
    rejected: Option<Rejection>,
    /// The rejected artifact lies in the writable store: removed if another store serves.
    rejected_in_writable: bool,
    portable_refused: Vec<PortableRefusal>,
    /// The source's bytes once read.
    bytes: Option<Result<Cow<'a, [u8]>, SkipReason>>,
}

impl<'a, T> Slot<'a, T> {
    fn pending(&self) -> bool {
        self.found.is_none() && self.failure.is_none()
    }

    /// Reads the source's bytes (checked against `hash`) if not read yet; `Err` when it cannot be.
    fn read_source(&mut self, hash: &Hash32) -> Result<(), SkipReason> {
        let source = self.source;
        match self.bytes.get_or_insert_with(|| match source {
            Source::Bytes(b) => Ok(Cow::Borrowed(b)),
            Source::File(root) => read_verified(root, hash).map(Cow::Owned),
            Source::With(read) => crate::source::check_read(read(), hash).map(Cow::Owned),
        }) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        }
    }

    /// The source's bytes, once [`Slot::read_source`] read them.
    fn bytes(&self) -> Option<&[u8]> {
        self.bytes.as_ref().and_then(|b| b.as_ref().ok()).map(|b| b.as_ref())
    }
}

pub(crate) type Slots<'a, T> = BTreeMap<Hash32, Slot<'a, T>>;

/// The hashes still without code or failure.
pub(crate) fn pending<T>(slots: &Slots<'_, T>) -> Vec<Hash32> {
    slots.iter().filter(|(_, s)| s.pending()).map(|(h, _)| *h).collect()
}

/// Resolves `requests` as `T`: one outcome per request, in order (the same hash twice is looked
/// up and compiled once), and the record of the session.
pub(crate) fn run<T: Compiled>(
    stores: &Stores,
    requests: &[Request<'_>],
    progress: Option<&ProgressFn>,
) -> (Vec<Resolved<T>>, Session) {
    let pass = Pass {
        stores,
        deadline: stores.deadline(Instant::now()),
        waited: LockWaits::default(),
        progress,
    };
    let mut session = Session::default();
    session.health.fingerprint = stores.fingerprint;
    session.health.path = stores.writable_dir().map(Path::to_path_buf);
    session.health.default_location = stores.default_location;
    session.read_only = stores
        .read_only
        .iter()
        .map(|ro| ReadOnlyStoreReport {
            path: ro.path.clone(),
            ..ReadOnlyStoreReport::default()
        })
        .collect();
    let mut slots: Slots<'_, T> = BTreeMap::new();
    for r in requests {
        slots.entry(r.hash).or_insert(Slot {
            source: r.source,
            found: None,
            failure: None,
            rejected: None,
            rejected_in_writable: false,
            portable_refused: Vec::new(),
            bytes: None,
        });
    }

    // The writable store, if it can be used.
    let mut writable = match &stores.writable {
        Writable::None => None,
        Writable::Open(store) => Some(store),
        Writable::Refused { reason, .. } => {
            log::warn!(
                "writable artifact store unusable, nothing will be stored: {}",
                reason.message()
            );
            session.health.read_error = Some(reason.clone());
            session.health.write_error = Some(reason.clone());
            None
        }
    };

    // Lookups, under the writable store's shared lock.
    let mut temps = 0;
    {
        let shared = writable.map(|store| pass.lock_shared(store, "load artifacts"));
        match &shared {
            Some(Err(e)) => {
                log::warn!("artifact store not read, compiling in memory: {}", e.message());
                session.health.read_error = Some(e.clone());
                session.health.write_error = Some(e.clone());
                writable = None;
            }
            Some(Ok(_)) => {
                if let Some(store) = writable {
                    lookup::load_pending(stores, store, Tier::Writable, &mut slots);
                    if stores.should_look_for_litter() {
                        temps = store.temp_file_count().unwrap_or(0);
                    }
                }
            }
            None => {}
        }
        let read_only = lookup::read_only(stores, &mut slots, &mut session.read_only);
        if !pending(&slots).is_empty() && stores.serves_portable() && !stores.bakes_native() {
            lookup::portable(stores, writable, &read_only, &mut slots, &mut session.read_only);
        }
        for opened in &read_only {
            let report = &mut session.read_only[opened.index];
            // A store whose listing holds this engine's fingerprint (or a portable one this CPU
            // runs) is no mismatch: it merely lacked what was pending. Only the others are listed
            // again to say why.
            let ours = report.hits > 0 || opened.present.as_ref().is_some_and(|p| lookup::serves(stores, p));
            report.serves = Some(ours);
            if !ours {
                lookup::explain_mismatch(stores, opened.store, report);
                if let Some(m) = report.mismatch(&session.health.fingerprint) {
                    log::warn!("{m}");
                }
            }
        }
    }

    // The sources of what is still missing, with no lock held.
    for hash in pending(&slots) {
        if let Some(slot) = slots.get_mut(&hash)
            && let Err(reason) = slot.read_source(&hash)
        {
            slot.failure = Some(Failure::Source(reason));
        }
    }

    if let Some(store) = writable {
        clean_up(stores, store, temps, &mut slots, &mut session);
    }

    // Compile what is still missing, each artifact under its own lock.
    let compiling = Instant::now();
    let jobs = pending(&slots);
    if !jobs.is_empty() {
        stores.look_for_litter_again();
        pass.compile_pending(writable, &jobs, &mut slots, &mut session);
    }

    // Bake the CPU profiles asked for, hits included.
    if stores.profiles.iter().any(|p| !p.is_native()) {
        match writable {
            Some(store) => match pass.lock_shared(store, "bake CPU profiles") {
                Ok(_guard) => session.baked = bake::bake(stores, store, pass.deadline, &mut slots, progress),
                Err(e) => session.baked = not_baked(stores, &slots, &e),
            },
            None => {
                let e = session.health.write_error.clone().unwrap_or(StoreError::NoStore);
                session.baked = not_baked(stores, &slots, &e);
            }
        }
    }

    stores.note_in_use(slots.keys().copied(), T::KIND);
    let published = session.health.written + session.baked.iter().map(|b| b.written).sum::<usize>();
    if let (Some(store), true) = (writable, published > 0) {
        session.health.evicted = keep_within_bound(stores, store);
    }

    session.compile_time = compiling.elapsed();
    session.lock_wait = pass.waited.total();
    if let Some(store) = stores.writable_store() {
        session.health.lock_repaired = store.lock_repair();
    }
    let results: Vec<Resolved<T>> = requests.iter().map(|r| resolved(r.hash, slots.get(&r.hash))).collect();
    stores.record(&results, &session);
    (results, session)
}

/// After a call that published: the least recently used artifacts idle for `min_idle` removed
/// until the writable store fits its bound, never one this process uses, and only if nobody holds
/// the lock (it is never worth a wait). Returns how many went.
fn keep_within_bound(stores: &Stores, store: &Store) -> usize {
    let Some(max_size) = stores.max_size() else {
        return 0;
    };
    // Looked at first without the lock: a store within its bound is never locked for it.
    let total: u64 = store.entries().map_or(0, |e| e.iter().map(|e| e.size).sum());
    if total <= max_size {
        return 0;
    }
    let Some(x) = store.try_lock_exclusive("keep the store within its size bound") else {
        log::debug!(
            "{}: the lock is held; the size bound is kept later",
            store.dir().display()
        );
        return 0;
    };
    x.evict_to(max_size, stores.min_idle(), |e| {
        stores.is_in_use(&e.key.source, e.key.kind)
    })
    .unwrap_or_else(|e| {
        log::warn!("cannot keep {} within its size bound: {e}", store.dir().display());
        0
    })
}

/// The outcome of `hash` from its slot.
fn resolved<T: Compiled>(hash: Hash32, slot: Option<&Slot<'_, T>>) -> Resolved<T> {
    let Some(slot) = slot else {
        return Resolved {
            hash,
            result: Err(Failure::Source(SkipReason::Missing)),
            portable_refused: Vec::new(),
        };
    };
    let result = match (&slot.found, &slot.failure) {
        (Some((value, origin)), _) => Ok((value.clone(), origin.clone().with_rejection(slot.rejected.clone()))),
        (None, Some(failure)) => Err(failure.clone()),
        (None, None) => Err(Failure::Source(SkipReason::Missing)),
    };
    Resolved {
        hash,
        result,
        portable_refused: slot.portable_refused.clone(),
    }
}

/// Maintenance in passing, only when nobody holds the lock (it is never worth a wait): leftover
/// temp files (no writer is mid-publication under the exclusive lock, so all are litter), and
/// writable-store artifacts refused while another store served their code (nothing would
/// replace them, and every start would refuse them again).
fn clean_up<T: Compiled>(
    stores: &Stores,
    store: &Store,
    temps: usize,
    slots: &mut Slots<'_, T>,
    session: &mut Session,
) {
    let victims: Vec<Hash32> = slots
        .iter()
        .filter(|(_, s)| s.rejected_in_writable && s.found.is_some())
        .map(|(h, _)| *h)
        .collect();
    if temps == 0 && victims.is_empty() {
        return;
    }
    let Some(x) = store.try_lock_exclusive("remove leftover temp files and rejected artifacts") else {
        log::debug!(
            "{}: the lock is held; maintenance left for a later start",
            store.dir().display()
        );
        return;
    };
    match x.remove_temp_files() {
        Ok(cleanup) => {
            if cleanup.removed > 0 {
                log::info!(
                    "removed {} unfinished temporary file(s) from {}",
                    cleanup.removed,
                    store.dir().display()
                );
            }
            session.health.temp_files_removed = cleanup.removed;
        }
        Err(e) => log::warn!("cannot list temporary files in {}: {e}", store.dir().display()),
    }
    for hash in victims {
        let key = store.key_of(&hash, T::KIND);
        // Another process may have replaced it with a sound one meanwhile.
        if !matches!(store.load_as::<T>(&stores.engine, &hash), Lookup::Rejected(_)) {
            continue;
        }
        match x.remove_key(&key) {
            Ok(true) => {
                log::info!(
                    "removed rejected artifact {} (its code was served by another store)",
                    store.path_of_key(&key).display()
                );
                session.health.rejected_removed += 1;
            }
            Ok(false) => {}
            Err(e) => log::warn!(
                "cannot remove rejected artifact {}: {e}",
                store.path_of_key(&key).display()
            ),
        }
    }
}

/// One resolution's context: the stores, the deadline of its lock waits, the time it waited, and
/// who is told of its progress.
struct Pass<'p> {
    stores: &'p Stores,
    deadline: Instant,
    waited: LockWaits,
    progress: Option<&'p ProgressFn>,
}

impl Pass<'_> {
    /// Takes `store`'s shared lock for `purpose`: the wait timed and noted (a hung holder costs one
    /// timeout per [`Stores`]), a failure as the reports show it.
    fn lock_shared(&self, store: &Store, purpose: &str) -> Result<LockGuard, StoreError> {
        let shared = self.waited.time(|| store.lock_shared(self.deadline, purpose));
        self.stores.note_lock(&shared);
        shared.map_err(|source| store.lock_failure(LockKind::Shared, source).into())
    }

    /// Takes the lock of the artifact `key` in `store`, as [`Pass::lock_shared`] takes the
    /// shared one.
    fn lock_artifact<'s>(
        &self,
        store: &'s Store,
        key: &ArtifactKey,
        purpose: &str,
    ) -> Result<ArtifactLock<'s>, StoreError> {
        let lock = self.waited.time(|| store.lock_artifact(key, self.deadline, purpose));
        self.stores.note_lock(&lock);
        lock.map_err(|source| store.lock_failure(LockKind::Artifact, source).into())
    }

    /// Compiles every pending slot in parallel. With a writable store that stores this engine's
    /// artifacts, each is compiled under its own lock after looking again (another thread or
    /// process may have published it meanwhile) and published; otherwise it is compiled in
    /// memory, with the reason it was not stored.
    fn compile_pending<T: Compiled>(
        &self,
        writable: Option<&Store>,
        jobs: &[Hash32],
        slots: &mut Slots<'_, T>,
        session: &mut Session,
    ) {
        let stores = self.stores;
        // Where each artifact goes, or why it stays in memory.
        let target = match writable {
            _ if !stores.stores_native() => Err(StoreWrite::NotWanted),
            // No error recorded: the store is off (`no_store()`).
            None => Err(StoreWrite::NotStored(
                session.health.write_error.clone().unwrap_or(StoreError::NoStore),
            )),
            Some(store) => Ok(store),
        };
        // Held until every artifact is published.
        let _shared = match target {
            Ok(store) => match self.lock_shared(store, "publish artifacts") {
                Ok(guard) => Some(guard),
                Err(e) => return self.compile_all(Err(StoreWrite::NotStored(e)), jobs, slots, session),
            },
            Err(_) => None,
        };
        self.compile_all(target, jobs, slots, session);
    }

    /// Compiles every job, publishing each into `target` or, when it is `Err`, keeping it in
    /// memory with that reason.
    fn compile_all<T: Compiled>(
        &self,
        target: Result<&Store, StoreWrite>,
        jobs: &[Hash32],
        slots: &mut Slots<'_, T>,
        session: &mut Session,
    ) {
        let work: Vec<(Hash32, &[u8])> = jobs
            .iter()
            .filter_map(|h| slots.get(h).and_then(Slot::bytes).map(|b| (*h, b)))
            .collect();
        let total = work.len();
        if let (Some(p), true) = (self.progress, total > 0) {
            p(Progress { done: 0, total });
        }
        let done = AtomicUsize::new(0);
        let purpose = format!("compile {} {}(s)", total, T::KIND);
        let results = on_every_core(&work, |(hash, bytes)| {
            let result = self.compile_one::<T>(target.as_ref(), hash, bytes, &purpose);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(p) = self.progress {
                p(Progress { done: n, total });
            }
            (*hash, result)
        });
        for (hash, result) in results {
            let Some(slot) = slots.get_mut(&hash) else { continue };
            match result {
                Ok((value, origin)) => {
                    if let Origin::Compiled { stored, .. } = &origin {
                        match stored {
                            StoreWrite::Stored => session.health.written += 1,
                            StoreWrite::DurabilityNotConfirmed(e) => {
                                session.health.written += 1;
                                session.health.durability_error.get_or_insert_with(|| e.clone());
                            }
                            StoreWrite::NotWanted => {}
                            StoreWrite::NotStored(e) => {
                                session.health.write_error.get_or_insert_with(|| e.clone());
                            }
                        }
                    }
                    slot.found = Some((value, origin));
                }
                Err(e) => slot.failure = Some(Failure::Compile(Arc::new(e))),
            }
        }
    }

    fn compile_one<T: Compiled>(
        &self,
        target: Result<&&Store, &StoreWrite>,
        hash: &Hash32,
        bytes: &[u8],
        purpose: &str,
    ) -> wasmtime::Result<(T, Origin)> {
        let t = Instant::now();
        let compiled = |stored| {
            compile::<T>(&self.stores.engine, bytes).map(|(value, artifact)| {
                log::debug!(
                    "compiled {} in {:.1} ms",
                    hex::encode(hash),
                    t.elapsed().as_secs_f64() * 1e3
                );
                (value, artifact, stored)
            })
        };
        let store = match target {
            Ok(store) => *store,
            Err(not_stored) => {
                return compiled(()).map(|(value, _, ())| {
                    (
                        value,
                        Origin::Compiled {
                            stored: not_stored.clone(),
                            rejected: None,
                        },
                    )
                });
            }
        };
        let key = store.key_of(hash, T::KIND);
        match self.lock_artifact(store, &key, purpose) {
            Ok(lock) => {
                if let Lookup::Hit(value, load_path) = store.load_as::<T>(&self.stores.engine, hash) {
                    let dir = store.dir().to_path_buf();
                    return Ok((value, Origin::Store { dir, load_path }));
                }
                let (value, artifact, ()) = compiled(())?;
                let stored = publish(&lock, &artifact);
                Ok((value, Origin::Compiled { stored, rejected: None }))
            }
            Err(reason) => {
                log::warn!("{}", reason.message());
                let (value, _, ()) = compiled(())?;
                Ok((
                    value,
                    Origin::Compiled {
                        stored: StoreWrite::NotStored(reason),
                        rejected: None,
                    },
                ))
            }
        }
    }
}

/// A bake that could not run: every request fails for every profile, for `why`.
fn not_baked<T>(stores: &Stores, slots: &Slots<'_, T>, why: &StoreError) -> Vec<session::BakeReport> {
    let mut profiles: Vec<_> = stores.profiles.iter().copied().filter(|p| !p.is_native()).collect();
    profiles.sort_by(|a, b| b.cmp(a));
    profiles.dedup();
    profiles
        .into_iter()
        .map(|profile| {
            log::warn!("nothing baked for CPU profile {profile}: {}", why.message());
            session::BakeReport {
                profile,
                fingerprint: profile
                    .engine()
                    .map(|e| crate::engine::engine_fingerprint(&e, stores.keyed()))
                    .unwrap_or_default(),
                written: 0,
                present: 0,
                failed: slots
                    .keys()
                    .map(|hash| session::BakeFailure {
                        hash: *hash,
                        reason: why.clone(),
                    })
                    .collect(),
                durability_error: None,
            }
        })
        .collect()
}

/// The time a resolution spent waiting for locks, summed over its threads.
#[derive(Default)]
struct LockWaits(std::sync::atomic::AtomicU64);

impl LockWaits {
    /// Runs `take` (a lock acquisition) and adds its duration.
    fn time<R>(&self, take: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = take();
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
        r
    }

    fn total(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}
