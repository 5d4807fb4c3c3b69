//! Compiling the misses on every core, publishing each artifact as soon as it is ready, with the
//! compile and publish primitives of the embedder's door.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Plan, Progress};
use crate::artifact_store::compile::{compile, on_every_core, publish};
use crate::key::{Hash32, Kind};
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
    let done = AtomicUsize::new(0);
    on_every_core(&jobs, |(hash, bytes)| {
        let result = compile_one(plan.engine(), hash, bytes, store);
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(p) = &plan.progress {
            p(Progress { done: n, total });
        }
        (*hash, result)
    })
}

fn compile_one(engine: &Engine, hash: &Hash32, bytes: &[u8], store: Option<&Exclusive<'_>>) -> CompileResult {
    let t = Instant::now();
    let (component, artifact) =
        compile::<Component>(engine, bytes).map_err(|e| SkipReason::CompileFailed(format!("{e:#}")))?;
    log::debug!(
        "compiled {} in {:.1} ms",
        hex::encode(hash),
        t.elapsed().as_secs_f64() * 1e3
    );
    let stored = store.map(|x| publish(x, hash, Kind::Component, &artifact));
    Ok((component, stored))
}
