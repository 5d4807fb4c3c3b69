//! One start-up: load what the store holds, compile only what it lacks, publish what was compiled.
//!
//! ```text
//! shared lock   ── load + verify every whitelisted hash ──> hits
//! exclusive lock ── re-check misses (another process may have compiled them meanwhile)
//!                ── remove leftover temp files
//!                ── read + SHA-256 sources, compile in parallel, publish atomically
//! ```
//! No failure of the store stops a start-up: it only turns hits into compilations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact::Sealer;
use crate::key::{Fingerprint, Hash32, is_hash_name, parse_hash};
use crate::report::{EntryReport, LoadReport, Outcome, StoreHealth};
use crate::source::{SkipReason, read_verified};
use crate::store::{LockKind, Lookup, Store, WriteFault};

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
    pub engine: Engine,
    pub binary_root: PathBuf,
    pub whitelist: HashSet<Hash32>,
    pub store: StoreChoice,
    pub lock_timeout: Duration,
    /// `Err` when MAC mode was asked for but the key could not be loaded: the store is then not
    /// used at all, since nothing in it could be authenticated.
    pub sealer: Result<Sealer, String>,
    pub write_fault: WriteFault,
    pub progress: Option<ProgressFn>,
}

#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    rejected: Option<String>,
    store_error: Option<String>,
}

pub(crate) fn run(plan: &Plan) -> (HashMap<Hash32, Component>, LoadReport) {
    let started = Instant::now();
    let keyed = plan.sealer.as_ref().map(Sealer::is_keyed).unwrap_or(true);
    let fingerprint = Fingerprint::of(&plan.engine, keyed);
    let mut health = StoreHealth {
        fingerprint: fingerprint.to_hex(),
        ..StoreHealth::default()
    };
    let mut slots: BTreeMap<Hash32, Slot> = plan.whitelist.iter().map(|h| (*h, Slot::default())).collect();
    let mut components = HashMap::new();

    let store = open_store(plan, fingerprint, &mut health);
    let mut can_write = store.is_some();

    if let Some(store) = &store {
        match store
            .lock()
            .acquire(LockKind::Shared, plan.lock_timeout, "load artifacts")
        {
            Ok(_shared) => load_pending(store, &plan.engine, &mut slots, &mut components),
            Err(e) => {
                let msg = format!(
                    "could not take the shared lock on {}: {e}",
                    store.lock().path().display()
                );
                log::warn!("artifact store not read, compiling everything in memory: {msg}");
                health.read_error = Some(msg.clone());
                health.write_error = Some(msg);
                can_write = false;
            }
        }
    }

    let mut pending: Vec<Hash32> = slots
        .iter()
        .filter(|(_, s)| s.outcome.is_none())
        .map(|(h, _)| *h)
        .collect();
    if !pending.is_empty() {
        let mut exclusive = None;
        if let (Some(store), true) = (&store, can_write) {
            let purpose = format!("compile {} component(s)", pending.len());
            match store.lock().acquire(LockKind::Exclusive, plan.lock_timeout, &purpose) {
                Ok(guard) => {
                    match store.remove_temp_files(&guard) {
                        Ok(n) => {
                            if n > 0 {
                                log::info!(
                                    "removed {n} unfinished temporary file(s) from {}",
                                    store.dir().display()
                                );
                            }
                            health.temp_files_removed = n;
                        }
                        Err(e) => log::warn!("cannot remove temporary files in {}: {e}", store.dir().display()),
                    }
                    // Another process may have compiled these while we waited for the lock.
                    load_pending(store, &plan.engine, &mut slots, &mut components);
                    pending.retain(|h| slots.get(h).is_some_and(|s| s.outcome.is_none()));
                    exclusive = Some(guard);
                }
                Err(e) => {
                    health.write_error = Some(format!(
                        "could not take the exclusive lock on {}: {e}; compiled in memory only",
                        store.lock().path().display()
                    ));
                }
            }
        }
        let publish_to = exclusive.as_ref().and(store.as_ref());
        let results = compile_all(plan, &pending, publish_to);
        for (hash, result) in results {
            let Some(slot) = slots.get_mut(&hash) else { continue };
            match result {
                Ok((component, store_result)) => {
                    components.insert(hash, component);
                    slot.outcome = Some(Outcome::Compiled);
                    match store_result {
                        Some(Ok(())) => health.written += 1,
                        Some(Err(e)) => {
                            health.write_error.get_or_insert_with(|| e.clone());
                            slot.store_error = Some(e);
                        }
                        None => {}
                    }
                }
                Err(reason) => slot.outcome = Some(Outcome::Skipped(reason)),
            }
        }
        drop(exclusive);
    }

    let mut report = LoadReport {
        store: health,
        ..LoadReport::default()
    };
    for (hash, slot) in slots {
        let outcome = slot.outcome.unwrap_or(Outcome::Skipped(SkipReason::Missing));
        report.entries.push(EntryReport {
            hash,
            outcome,
            rejected: slot.rejected,
            store_error: slot.store_error,
        });
    }
    for hash in not_whitelisted(&plan.binary_root, &plan.whitelist) {
        report.entries.push(EntryReport {
            hash,
            outcome: Outcome::Skipped(SkipReason::NotWhitelisted),
            rejected: None,
            store_error: None,
        });
    }
    report.entries.sort_by_key(|e| e.hash);
    for e in &report.entries {
        match &e.outcome {
            Outcome::FromStore => report.from_store += 1,
            Outcome::Compiled => report.compiled += 1,
            Outcome::Skipped(_) => report.skipped += 1,
        }
        if e.rejected.is_some() {
            report.rejected += 1;
        }
        // A rejection alone was already logged, naming the file, when it happened.
        let needs_warning = matches!(e.outcome, Outcome::Skipped(_)) || e.store_error.is_some();
        if let (true, Some(reason)) = (needs_warning, e.reason()) {
            log::warn!("component {}: {}: {reason}", hex::encode(e.hash), e.outcome.as_str());
        } else {
            log::debug!("component {}: {}", hex::encode(e.hash), e.outcome.as_str());
        }
    }
    if let (Some(e), None) = (&report.store.write_error, &report.store.read_error) {
        log::warn!("artifact store not written: {e}");
    }
    report.elapsed = started.elapsed();
    log::info!(
        "wasm components ready in {:.1} ms: {} from store, {} compiled, {} rejected, {} skipped; store {} (fingerprint {}, {} written)",
        report.elapsed.as_secs_f64() * 1e3,
        report.from_store,
        report.compiled,
        report.rejected,
        report.skipped,
        report
            .store
            .path
            .as_ref()
            .map_or_else(|| "disabled".to_owned(), |p| p.display().to_string()),
        report.store.fingerprint,
        report.store.written,
    );
    (components, report)
}

fn open_store(plan: &Plan, fingerprint: Fingerprint, health: &mut StoreHealth) -> Option<Store> {
    let StoreChoice::Dir(dir) = &plan.store else {
        return None;
    };
    health.path = Some(dir.clone());
    let fail = |health: &mut StoreHealth, msg: String| {
        log::warn!("artifact store unusable, compiling in memory: {msg}");
        health.read_error = Some(msg.clone());
        health.write_error = Some(msg);
    };
    let sealer = match &plan.sealer {
        Ok(s) => s.clone(),
        Err(e) => {
            fail(health, e.clone());
            return None;
        }
    };
    match Store::open(dir, fingerprint, sealer) {
        Ok(mut store) => {
            log::debug!("artifact store {} open, fingerprint {fingerprint}", dir.display());
            store.set_write_fault(plan.write_fault);
            Some(store)
        }
        Err(e) => {
            fail(health, format!("{e:#}"));
            None
        }
    }
}

/// Loads every slot that has no outcome yet; a rejection is remembered once per hash.
fn load_pending(
    store: &Store,
    engine: &Engine,
    slots: &mut BTreeMap<Hash32, Slot>,
    components: &mut HashMap<Hash32, Component>,
) {
    let pending: Vec<Hash32> = slots
        .iter()
        .filter(|(_, s)| s.outcome.is_none())
        .map(|(h, _)| *h)
        .collect();
    for (hash, lookup) in load_all(store, engine, &pending) {
        let Some(slot) = slots.get_mut(&hash) else { continue };
        match lookup {
            Lookup::Hit(c) => {
                components.insert(hash, c);
                slot.outcome = Some(Outcome::FromStore);
            }
            Lookup::Absent => {}
            Lookup::Rejected(reason) => {
                if slot.rejected.is_none() {
                    log::warn!("stored artifact {} rejected: {reason}", store.path_of(&hash).display());
                    slot.rejected = Some(reason);
                }
            }
        }
    }
}

/// Fewer artifacts than this are loaded on the calling thread alone: a helper thread costs more to
/// start than it saves on a few checksums.
const PARALLEL_LOAD_MIN: usize = 4;
/// Verified artifacts (each an open descriptor) allowed to wait for deserialization, so that a
/// large store never runs into the descriptor limit.
const VERIFIED_QUEUE: usize = 8;

/// Loads every hash in `pending`, in any order.
///
/// A helper thread only verifies (open, read, checksum); this thread deserializes what is verified
/// and verifies too whenever nothing is waiting. Deserialization stays on one thread because two
/// concurrent `deserialize_file` calls measured slower than one after another on two cores: each
/// maps and mprotects, which serialises on the address-space lock and costs TLB shootdowns.
fn load_all(store: &Store, engine: &Engine, pending: &[Hash32]) -> Vec<(Hash32, Lookup)> {
    if pending.len() < PARALLEL_LOAD_MIN || cores() < 2 {
        return pending.iter().map(|h| (*h, store.load(engine, h))).collect();
    }
    let next = AtomicUsize::new(0);
    let claim = |scratch: &mut Vec<u8>| {
        pending
            .get(next.fetch_add(1, Ordering::Relaxed))
            .map(|h| (*h, store.open_verified(h, scratch)))
    };
    let finish = |(hash, verified): (Hash32, Result<crate::store::Verified, Lookup>)| {
        (hash, verified.map_or_else(|lookup| lookup, |v| v.deserialize(engine)))
    };
    let mut out = Vec::with_capacity(pending.len());
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(VERIFIED_QUEUE);
        let claim = &claim;
        let helper = std::thread::Builder::new()
            .name("wnc-verify".into())
            .spawn_scoped(scope, move || {
                let mut scratch = Vec::new();
                while let Some(item) = claim(&mut scratch) {
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = helper {
            // The closure, and with it the sender, is gone: this thread does all the work below.
            log::debug!("no verification thread ({e}); loading on one thread");
        }
        let mut scratch = Vec::new();
        loop {
            if let Ok(item) = rx.try_recv() {
                out.push(finish(item));
            } else if let Some(item) = claim(&mut scratch) {
                out.push(finish(item));
            } else if let Ok(item) = rx.recv() {
                out.push(finish(item));
            } else {
                break;
            }
        }
    });
    out
}

/// `available_parallelism` reads cgroup files on Linux (it showed up at 1% of a warm start-up's
/// profile), and the answer does not change during a process's life.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

type CompileResult = Result<(Component, Option<Result<(), String>>), SkipReason>;

fn compile_all(plan: &Plan, pending: &[Hash32], store: Option<&Store>) -> Vec<(Hash32, CompileResult)> {
    let total = pending.len();
    if total == 0 {
        return Vec::new();
    }
    if let Some(p) = &plan.progress {
        p(Progress { done: 0, total });
    }
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(total));
    let workers = cores().min(total);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(hash) = pending.get(i) else { break };
                    let result = compile_one(&plan.engine, &plan.binary_root, hash, store);
                    if let Ok(mut r) = results.lock() {
                        r.push((*hash, result));
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(p) = &plan.progress {
                        p(Progress { done: n, total });
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn compile_one(engine: &Engine, root: &Path, hash: &Hash32, store: Option<&Store>) -> CompileResult {
    let bytes = read_verified(root, hash)?;
    let t = Instant::now();
    let artifact = engine
        .precompile_component(&bytes)
        .map_err(|e| SkipReason::CompileFailed(format!("{e:#}")))?;
    log::debug!(
        "compiled {} in {:.1} ms",
        hex::encode(hash),
        t.elapsed().as_secs_f64() * 1e3
    );
    // SAFETY: `artifact` was produced a moment ago by `precompile_component` on this same engine,
    // from bytes whose SHA-256 is the whitelisted hash; it never left this process's memory.
    let component = unsafe { Component::deserialize(engine, &artifact) }
        .map_err(|e| SkipReason::CompileFailed(format!("cannot load own compilation: {e:#}")))?;
    let stored = store.map(|s| {
        s.publish(hash, &artifact)
            .map(|_| ())
            .map_err(|e| format!("cannot write {}: {e}", s.path_of(hash).display()))
    });
    Ok((component, stored))
}

fn not_whitelisted(root: &Path, whitelist: &HashSet<Hash32>) -> Vec<Hash32> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .filter(|n| is_hash_name(n))
                .and_then(|n| parse_hash(n).ok())
        })
        .filter(|h| !whitelist.contains(h))
        .collect()
}
