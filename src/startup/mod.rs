//! One start-up: load what the store holds, compile only what it lacks, publish what was compiled.
//!
//! ```text
//! shared lock    ── load + verify every whitelisted hash ──> hits
//! no lock        ── the misses from each read-only store in turn (a baked image)
//! shared lock    ── the misses from portable artifacts, best CPU profile first, every store
//! exclusive lock ── remove writable-store artifacts rejected above whose component another store served
//! no lock        ── read + SHA-256 the sources of what is still missing
//! exclusive lock ── remove leftover temp files
//!                ── re-check misses (another process may have compiled them meanwhile)
//!                ── compile in parallel, publish atomically
//! exclusive lock ── bake: each portable CPU profile asked for (warm --cpu-profile), if any
//! ```
//! All lock waits share one deadline, `lock_timeout` after the start. No failure of the store
//! stops a start-up: it only turns hits into compilations.

mod bake;
mod compile;
mod portable;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact_store::batch::load_all;
use crate::artifact_store::{ArtifactStore, Inner, Writable};
use crate::key::{Fingerprint, Hash32, is_hash_name, parse_hash};
use crate::problem::StoreProblem;
use crate::profile::CpuProfile;
use crate::report::{
    EntryReport, FingerprintCount, LoadReport, Outcome, PortableRefusal, ReadOnlyStoreReport, StoreHealth, StoreWrite,
};
use crate::source::{SkipReason, read_verified};
use crate::store::{LoadPath, LockKind, Lookup, Rejection, Store, deadline_after};
use portable::Searched;

/// Progress of the compile phase, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Components compiled (or failed) so far.
    pub done: usize,
    /// Components to compile in this start-up.
    pub total: usize,
}

/// A progress callback; called with `done == 0` before compiling starts, then after each one.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Where artifacts live, as configured.
#[derive(Debug, Clone)]
pub(crate) enum StoreChoice {
    Disabled,
    Dir(PathBuf),
}

/// Everything a start-up needs, resolved by the builder.
pub(crate) struct Plan {
    /// The engine and the stores (writable, read-only, MAC mode, lock timeout, CPU profiles to
    /// store), as the embedder's door has them.
    pub stores: ArtifactStore,
    pub binary_root: PathBuf,
    pub whitelist: HashSet<Hash32>,
    pub progress: Option<ProgressFn>,
    /// When the start-up began (before its stores were opened): the report's time.
    pub started: Instant,
}

impl Plan {
    pub(super) fn stores(&self) -> &Inner {
        self.stores.inner()
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.stores().engine
    }
}

/// What became of one whitelisted hash so far.
#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    store: Option<PathBuf>,
    load_path: Option<LoadPath>,
    profile: Option<CpuProfile>,
    rejected: Option<Rejection>,
    /// The rejected artifact lies in the writable store: to be removed if another store serves.
    rejected_in_writable: bool,
    portable_refused: Vec<PortableRefusal>,
    stored: Option<StoreWrite>,
}

type Slots = BTreeMap<Hash32, Slot>;

pub(crate) fn run(plan: &Plan) -> (HashMap<Hash32, Component>, LoadReport) {
    let started = plan.started;
    let stores = plan.stores();
    let deadline = deadline_after(stores.lock_timeout);
    // Computed once with the stores: every store of this start-up is opened for this one fingerprint.
    let keyed = stores.keyed();
    let fingerprint = stores.fingerprint;
    let mut health = StoreHealth {
        fingerprint: fingerprint.to_hex(),
        ..StoreHealth::default()
    };
    let mut slots: Slots = plan.whitelist.iter().map(|h| (*h, Slot::default())).collect();
    let mut components = HashMap::new();

    let store = open_store(stores, &mut health);
    let mut can_write = store.is_some();
    if let Some(store) = store {
        can_write = load_shared(store, plan.engine(), deadline, &mut slots, &mut components, &mut health);
    }
    let (mut read_only, ro_stores) = load_read_only(plan, &mut slots, &mut components);
    // A bake that stores native artifacts too compiles them rather than serving its own host from
    // the portable ones it just made.
    if !stores.bakes_native() && stores.serves_portable() {
        load_portable(
            plan,
            keyed,
            fingerprint,
            store.filter(|_| can_write),
            &ro_stores,
            deadline,
            &mut slots,
            &mut components,
            &mut read_only,
        );
    }
    for (report, opened) in read_only.iter_mut().zip(&ro_stores) {
        if let (0, Some(opened)) = (report.hits, opened) {
            report.other_fingerprints = other_fingerprints_only(opened.store);
        }
    }
    if let Some(store) = store.filter(|_| can_write) {
        remove_rejected_served_elsewhere(store, plan.engine(), deadline, &slots, &mut health);
    }

    let sources = read_sources(plan, &pending(&slots));
    if !sources.is_empty() {
        // Without `native` among the profiles to store (a bake of portable profiles only), what
        // this host compiles for itself stays in memory.
        let publish = can_write && stores.profiles.contains(&CpuProfile::Native);
        let store = store.filter(|_| publish);
        compile_and_publish(plan, store, deadline, sources, &mut slots, &mut components, &mut health);
    }
    // After the native artifacts, so that a bake stores those first (where this CPU's native
    // fingerprint is a profile's, the profile finds them present).
    let baked = bake::bake_profiles(plan, store, keyed, deadline);

    if let Some(store) = store
        && let Some(mode) = store.lock_mode_repaired()
    {
        health.lock_repaired = Some(format!(
            "lock file {} could be opened by other users (mode {mode:03o}), who could hold the lock; made it 0600",
            store.lock_path().display()
        ));
    }
    let mut report = build_report(plan, slots, health, read_only, started.elapsed());
    report.baked = baked;
    report.log();
    (components, report)
}

/// Phase 1c: what no store held under this engine's fingerprint, from portable artifacts in the
/// writable store (under its shared lock) and the read-only stores.
#[allow(clippy::too_many_arguments)]
fn load_portable(
    plan: &Plan,
    keyed: bool,
    fingerprint: Fingerprint,
    writable: Option<&Store>,
    ro_stores: &[Option<ReadOnlyOpened<'_>>],
    deadline: Instant,
    slots: &mut Slots,
    components: &mut HashMap<Hash32, Component>,
    read_only: &mut [ReadOnlyStoreReport],
) {
    if pending(slots).is_empty() {
        return;
    }
    let shared = writable.and_then(|s| match s.lock_shared(deadline, "load portable artifacts") {
        Ok(guard) => Some((s, guard)),
        Err(e) => {
            log::warn!("portable artifacts in {} not looked up: {e}", s.dir().display());
            None
        }
    });
    let mut searched: Vec<Searched<'_>> = shared
        .iter()
        .map(|(store, _)| Searched {
            store,
            read_only_index: None,
            present: None,
        })
        .collect();
    searched.extend(ro_stores.iter().enumerate().filter_map(|(i, opened)| {
        opened.as_ref().map(|opened| Searched {
            store: opened.store,
            read_only_index: Some(i),
            present: opened.present.clone(),
        })
    }));
    let hits = portable::load_portable(plan.engine(), keyed, fingerprint, &searched, slots, components);
    for (i, n) in hits {
        if let Some(r) = read_only.get_mut(i) {
            r.hits += n;
        }
    }
}

/// Phase 1d: a writable-store artifact that was rejected while another store served its
/// component would be rejected again at every start (nothing recompiles it); remove it under the
/// exclusive lock, after checking again that it is still refused.
fn remove_rejected_served_elsewhere(
    store: &Store,
    engine: &Engine,
    deadline: Instant,
    slots: &Slots,
    health: &mut StoreHealth,
) {
    let victims: Vec<Hash32> = slots
        .iter()
        .filter(|(_, s)| s.rejected_in_writable && s.outcome == Some(Outcome::FromStore))
        .map(|(h, _)| *h)
        .collect();
    if victims.is_empty() {
        return;
    }
    let x = match store.lock_exclusive(deadline, "remove rejected artifacts") {
        Ok(x) => x,
        Err(e) => {
            log::warn!("rejected artifacts left in {}: {e}", store.dir().display());
            return;
        }
    };
    for hash in victims {
        // Another process may have replaced it with a sound one meanwhile.
        if !matches!(store.load(engine, &hash), Lookup::Rejected(_)) {
            continue;
        }
        match x.remove_artifact(&hash) {
            Ok(true) => {
                log::info!(
                    "removed rejected artifact {} (its component was served by another store)",
                    store.path_of(&hash).display()
                );
                health.rejected_removed += 1;
            }
            Ok(false) => {}
            Err(e) => log::warn!(
                "cannot remove rejected artifact {}: {e}",
                store.path_of(&hash).display()
            ),
        }
    }
}

/// The writable store the builder opened, if any; a refused one is recorded in `health`.
fn open_store<'a>(stores: &'a Inner, health: &mut StoreHealth) -> Option<&'a Store> {
    match &stores.writable {
        Writable::None => None,
        Writable::Open(store) => {
            health.path = Some(store.dir().to_path_buf());
            Some(store)
        }
        Writable::Refused { path, reason } => {
            health.path = Some(path.clone());
            log::warn!("writable artifact store unusable, nothing will be stored: {reason}");
            health.read_error = Some(reason.clone());
            health.write_error = Some(reason.clone());
            None
        }
    }
}

/// A read-only store this start-up opened, with the fingerprints its listing showed (`None`:
/// it could not be listed).
struct ReadOnlyOpened<'a> {
    store: &'a Store,
    present: Option<std::collections::BTreeSet<Fingerprint>>,
}

/// Phase 1b: what the writable store lacks, from each read-only store in turn (no lock: nothing
/// ever writes them). A store that yields nothing is listed, so that a bake made for another
/// engine is reported rather than silently ignored.
fn load_read_only<'a>(
    plan: &'a Plan,
    slots: &mut Slots,
    components: &mut HashMap<Hash32, Component>,
) -> (Vec<ReadOnlyStoreReport>, Vec<Option<ReadOnlyOpened<'a>>>) {
    let stores = plan.stores();
    let mut reports = Vec::new();
    let mut opened = Vec::new();
    for (i, ro) in stores.read_only.iter().enumerate() {
        let mut report = ReadOnlyStoreReport {
            path: ro.path.clone(),
            ..ReadOnlyStoreReport::default()
        };
        // Everything is loaded already: nothing to look up, and nothing to warn about.
        if pending(slots).is_empty() {
            reports.push(report);
            opened.push(None);
            continue;
        }
        match stores.read_only_store(i) {
            Some(Ok(store)) => {
                // A bake of portable profiles only holds nothing under this engine's fingerprint:
                // one listing (kept for the portable lookup) then saves a pass of failed opens over
                // every pending hash.
                let present = store.fingerprints_present().ok();
                if present.as_ref().is_none_or(|fps| fps.contains(&store.fingerprint())) {
                    report.hits = load_pending(store, plan.engine(), Some(CpuProfile::Native), slots, components);
                }
                opened.push(Some(ReadOnlyOpened { store, present }));
            }
            Some(Err(e)) => {
                report.error = Some(e.clone());
                opened.push(None);
            }
            None => opened.push(None),
        }
        reports.push(report);
    }
    (reports, opened)
}

/// The fingerprints of `store`'s artifacts with their counts, when none is this store's own
/// (called only for a store that served nothing, natively or from a portable profile).
fn other_fingerprints_only(store: &Store) -> Vec<FingerprintCount> {
    let Ok(entries) = store.entries() else {
        return Vec::new();
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        if e.key.fingerprint == store.fingerprint() {
            return Vec::new();
        }
        *counts.entry(e.key.fingerprint.to_hex()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(fingerprint, files)| FingerprintCount { fingerprint, files })
        .collect()
}

/// Phase 1: every whitelisted hash the store holds, under the shared lock. Returns whether the
/// store may be written afterwards (false when even the shared lock could not be had).
fn load_shared(
    store: &Store,
    engine: &Engine,
    deadline: Instant,
    slots: &mut Slots,
    components: &mut HashMap<Hash32, Component>,
    health: &mut StoreHealth,
) -> bool {
    match store.lock_shared(deadline, "load artifacts") {
        Ok(_shared) => {
            load_pending(store, engine, Some(CpuProfile::Native), slots, components);
            true
        }
        Err(e) => {
            let problem = StoreProblem::lock_not_taken(LockKind::Shared, &store.lock_path(), &e);
            log::warn!("artifact store not read, compiling everything in memory: {problem}");
            health.read_error = Some(problem.clone());
            health.write_error = Some(problem);
            false
        }
    }
}

fn pending(slots: &Slots) -> Vec<Hash32> {
    slots
        .iter()
        .filter(|(_, s)| s.outcome.is_none())
        .map(|(h, _)| *h)
        .collect()
}

/// Phase 2: the sources of the misses, read and checked before the exclusive lock is taken, so
/// that slow or hostile files in the binary root never hold up other nodes waiting on the lock.
fn read_sources(plan: &Plan, pending: &[Hash32]) -> Vec<(Hash32, Result<Vec<u8>, SkipReason>)> {
    pending
        .iter()
        .map(|h| (*h, read_verified(&plan.binary_root, h)))
        .collect()
}

/// Phase 3: under the exclusive lock (when the store is writable and the lock is had before the
/// deadline), clean up, re-check the misses, compile what is still missing and publish it.
fn compile_and_publish(
    plan: &Plan,
    store: Option<&Store>,
    deadline: Instant,
    sources: Vec<(Hash32, Result<Vec<u8>, SkipReason>)>,
    slots: &mut Slots,
    components: &mut HashMap<Hash32, Component>,
    health: &mut StoreHealth,
) {
    let purpose = format!("compile {} component(s)", sources.len());
    let exclusive = store.and_then(|store| match store.lock_exclusive(deadline, &purpose) {
        Ok(x) => Some(x),
        Err(e) => {
            health.write_error = Some({
                let mut problem = StoreProblem::lock_not_taken(LockKind::Exclusive, &store.lock_path(), &e);
                problem.message.push_str("; compiled in memory only");
                problem
            });
            None
        }
    });
    if let Some(x) = &exclusive {
        match x.remove_temp_files() {
            Ok(cleanup) => {
                if cleanup.removed > 0 {
                    log::info!(
                        "removed {} unfinished temporary file(s) from {}",
                        cleanup.removed,
                        x.store().dir().display()
                    );
                }
                health.temp_files_removed = cleanup.removed;
            }
            Err(e) => log::warn!("cannot list temporary files in {}: {e}", x.store().dir().display()),
        }
        // Another process may have compiled these while we waited for the lock.
        load_pending(x.store(), plan.engine(), Some(CpuProfile::Native), slots, components);
    }
    let mut jobs = Vec::new();
    for (hash, source) in sources {
        let Some(slot) = slots.get_mut(&hash).filter(|s| s.outcome.is_none()) else {
            continue;
        };
        match source {
            Ok(bytes) => jobs.push((hash, bytes)),
            Err(reason) => slot.outcome = Some(Outcome::Skipped(reason)),
        }
    }
    for (hash, result) in compile::compile_all(plan, jobs, exclusive.as_ref()) {
        let Some(slot) = slots.get_mut(&hash) else { continue };
        match result {
            Ok((component, stored)) => {
                components.insert(hash, component);
                slot.outcome = Some(Outcome::Compiled);
                match &stored {
                    Some(StoreWrite::Stored) => health.written += 1,
                    Some(StoreWrite::DurabilityNotConfirmed(e)) => {
                        health.written += 1;
                        health.durability_error.get_or_insert_with(|| e.clone());
                    }
                    Some(StoreWrite::NotStored(e)) => {
                        health.write_error.get_or_insert_with(|| e.clone());
                    }
                    None => {}
                }
                slot.stored = stored;
            }
            Err(reason) => slot.outcome = Some(Outcome::Skipped(reason)),
        }
    }
}

/// Loads every slot that has no outcome yet from `store`, whose artifacts were compiled for
/// `profile` (`Native`: this engine's own fingerprint). A rejection under this engine's own
/// fingerprint is remembered once per hash; a portable artifact's refusal is listed with its
/// profile. Returns how many were loaded.
fn load_pending(
    store: &Store,
    engine: &Engine,
    profile: Option<CpuProfile>,
    slots: &mut Slots,
    components: &mut HashMap<Hash32, Component>,
) -> usize {
    let portable = profile.filter(|p| !p.is_native());
    let mut hits = 0;
    for (hash, lookup) in load_all::<Component>(store, engine, &pending(slots)) {
        let Some(slot) = slots.get_mut(&hash) else { continue };
        match lookup {
            Lookup::Hit(c, path) => {
                components.insert(hash, c);
                slot.outcome = Some(Outcome::FromStore);
                slot.store = Some(store.dir().to_path_buf());
                slot.load_path = Some(path);
                slot.profile = profile;
                hits += 1;
            }
            Lookup::Absent => {}
            Lookup::Rejected(reason) => match portable {
                Some(profile) => {
                    log::info!(
                        "portable {profile} artifact {} refused: {reason}",
                        store.path_of(&hash).display()
                    );
                    slot.portable_refused.push(PortableRefusal {
                        profile,
                        store: store.dir().to_path_buf(),
                        reason,
                    });
                }
                None if slot.rejected.is_none() => {
                    log::warn!("stored artifact {} rejected: {reason}", store.path_of(&hash).display());
                    slot.rejected = Some(reason);
                    slot.rejected_in_writable = !store.is_read_only();
                }
                None => {}
            },
        }
    }
    hits
}

/// Phase 4: one entry per whitelisted hash, plus the unlisted files of the binary root.
fn build_report(
    plan: &Plan,
    slots: Slots,
    health: StoreHealth,
    read_only: Vec<ReadOnlyStoreReport>,
    elapsed: Duration,
) -> LoadReport {
    let mut entries: Vec<EntryReport> = slots
        .into_iter()
        .map(|(hash, slot)| EntryReport {
            hash,
            outcome: slot.outcome.unwrap_or(Outcome::Skipped(SkipReason::Missing)),
            store: slot.store,
            load_path: slot.load_path,
            profile: slot.profile,
            rejected: slot.rejected,
            portable_refused: slot.portable_refused,
            stored: slot.stored,
        })
        .collect();
    entries.extend(unlisted(plan).into_iter().map(|hash| EntryReport {
        hash,
        outcome: Outcome::Unlisted,
        store: None,
        load_path: None,
        profile: None,
        rejected: None,
        portable_refused: Vec::new(),
        stored: None,
    }));
    LoadReport::new(entries, health, read_only, elapsed)
}

/// Files in the binary root named by a hash that is not whitelisted.
fn unlisted(plan: &Plan) -> Vec<Hash32> {
    let Ok(dir) = std::fs::read_dir(&plan.binary_root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .filter(|n| is_hash_name(n))
                .and_then(|n| parse_hash(n).ok())
        })
        .filter(|h| !plan.whitelist.contains(h))
        .collect()
}
