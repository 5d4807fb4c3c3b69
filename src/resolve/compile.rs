//! The compile and publish primitives of a resolution: compile, load the own compilation,
//! publish atomically and say what that achieved; and running jobs on every core.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::Engine;

use super::outcome::StoreWrite;
use crate::compiled::Compiled;
use crate::error::StoreError;
use crate::store::ArtifactLock;

/// Compiles `wasm` as `T` and loads the result: the compiled code and the artifact to publish.
pub(crate) fn compile<T: Compiled>(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(T, Vec<u8>)> {
    let artifact = T::precompile(engine, wasm)?;
    // SAFETY: `artifact` was produced a moment ago by `precompile` on this same engine, as `T`; it
    // never left this process's memory.
    let value = unsafe { T::deserialize(engine, &artifact) }?;
    Ok((value, artifact))
}

/// Publishes `artifact` under the locked key and says what that achieved, naming the file and
/// the cause.
pub(crate) fn publish(lock: &ArtifactLock<'_>, artifact: &[u8]) -> StoreWrite {
    let path = || lock.store().path_of_key(lock.key());
    match lock.publish(artifact) {
        Ok(p) => match p.durability_error {
            None => StoreWrite::Stored,
            Some(e) => StoreWrite::DurabilityNotConfirmed(StoreError::NotDurable {
                path: p.path,
                source: std::sync::Arc::new(e),
            }),
        },
        Err(e) => StoreWrite::NotStored(StoreError::NotWritten {
            path: path(),
            source: std::sync::Arc::new(e),
        }),
    }
}

/// Runs `f` over `jobs` on every core (at most one thread per job); results in any order.
pub(crate) fn on_every_core<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if jobs.len() == 1 {
        // One job: no thread to start.
        return jobs.iter().map(f).collect();
    }
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

/// `available_parallelism` reads cgroup files on Linux (it showed up at 1% of a warm start-up's
/// profile), and the answer does not change during a process's life.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}
