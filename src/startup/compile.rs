//! Compiling the misses on every core, publishing each artifact as soon as it is ready.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Plan, Progress, cores};
use crate::key::Hash32;
use crate::report::StoreWrite;
use crate::source::SkipReason;
use crate::store::Exclusive;

/// A compiled component and, when a store was writable, what publishing it achieved.
pub(super) type CompileResult = Result<(Component, Option<StoreWrite>), SkipReason>;

pub(super) fn compile_all(
    plan: &Plan,
    jobs: Vec<(Hash32, Vec<u8>)>,
    store: Option<&Exclusive<'_>>,
) -> Vec<(Hash32, CompileResult)> {
    let total = jobs.len();
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
                    let Some((hash, bytes)) = jobs.get(i) else { break };
                    let result = compile_one(&plan.engine, hash, bytes, store);
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

fn compile_one(engine: &Engine, hash: &Hash32, bytes: &[u8], store: Option<&Exclusive<'_>>) -> CompileResult {
    let t = Instant::now();
    let artifact = engine
        .precompile_component(bytes)
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
    let stored = store.map(|x| publish(x, hash, &artifact));
    Ok((component, stored))
}

/// Publishes `artifact` and says what that achieved, naming the file and the cause.
pub(super) fn publish(x: &Exclusive<'_>, hash: &Hash32, artifact: &[u8]) -> StoreWrite {
    match x.publish(hash, artifact) {
        Ok(p) => match p.durability_error {
            None => StoreWrite::Stored,
            Some(e) => StoreWrite::DurabilityNotConfirmed(format!(
                "{} was renamed into place, but fsync of {} failed: {e}",
                p.path.display(),
                x.store().dir().display()
            )),
        },
        Err(e) => StoreWrite::NotStored(format!("cannot write {}: {e}", x.store().path_of(hash).display())),
    }
}

/// Runs `f` over `jobs` on every core (at most one thread per job); results in any order.
pub(super) fn on_every_core<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|scope| {
        for _ in 0..cores().min(jobs.len()) {
            scope.spawn(|| {
                while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = f(job);
                    if let Ok(mut out) = results.lock() {
                        out.push(r);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}
