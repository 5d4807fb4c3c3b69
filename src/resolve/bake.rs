//! Baking for portable CPU profiles: every request's artifact compiled once per profile with that
//! profile's engine and published under its fingerprint, with the same trailer, key binding, MAC,
//! locks and atomic publication as this engine's own artifacts. Hits are baked as well as
//! compilations: a store whose native artifacts exist still gets its profiles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::compile::{on_every_core, publish};
use super::outcome::StoreWrite;
use super::session::{BakeFailure, BakeReport};
use super::stores::Stores;
use super::{Progress, ProgressFn, Slots};
use crate::artifact::check_binding;
use crate::compiled::Compiled;
use crate::error::{LockKind, StoreError};
use crate::key::ArtifactKey;
use crate::store::Store;

/// Bakes every portable profile `stores` is to hold into `store` (whose shared lock the caller
/// holds), best profile first. Artifacts already stored (an intact trailer that names them) are
/// kept.
pub(super) fn bake<T: Compiled>(
    stores: &Stores,
    store: &Store,
    deadline: Instant,
    slots: &mut Slots<'_, T>,
    progress: Option<&ProgressFn>,
) -> Vec<BakeReport> {
    let mut reports = Vec::new();
    for pe in stores
        .portable_engines()
        .iter()
        .filter(|pe| stores.profiles.contains(&pe.profile))
    {
        let mut report = BakeReport {
            profile: pe.profile,
            fingerprint: pe.fingerprint,
            written: 0,
            present: 0,
            failed: Vec::new(),
            durability_error: None,
        };
        let theirs = store.with_fingerprint(pe.fingerprint);
        let mut missing = Vec::new();
        for (hash, slot) in slots.iter_mut() {
            let key = theirs.key_of(hash, T::KIND);
            if is_stored(&theirs, &key) {
                report.present += 1;
                continue;
            }
            match slot.read_source(hash) {
                Ok(()) => missing.push(key),
                Err(reason) => report.failed.push(BakeFailure {
                    hash: *hash,
                    reason: StoreError::Source { hash: *hash, reason },
                }),
            }
        }
        let jobs: Vec<(ArtifactKey, &[u8])> = missing
            .into_iter()
            .filter_map(|key| slots.get(&key.source).and_then(|s| s.bytes()).map(|b| (key, b)))
            .collect();
        let total = jobs.len();
        if let (Some(p), true) = (progress, total > 0) {
            p(Progress { done: 0, total });
        }
        let done = AtomicUsize::new(0);
        let purpose = format!("bake CPU profile {}", pe.profile);
        let results = on_every_core(&jobs, |(key, bytes)| {
            // `None`: another process baked it while this one waited for its lock, which this
            // report counts as present, not written.
            let stored = match theirs.lock_artifact(key, deadline, &purpose) {
                Err(source) => Some(StoreWrite::NotStored(
                    theirs.lock_failure(LockKind::Artifact, source).into(),
                )),
                Ok(_) if is_stored(&theirs, key) => None,
                Ok(lock) => Some(match T::precompile(&pe.engine, bytes) {
                    Ok(artifact) => publish(&lock, &artifact),
                    Err(e) => StoreWrite::NotStored(StoreError::Compile {
                        hash: key.source,
                        kind: key.kind,
                        source: std::sync::Arc::new(e),
                    }),
                }),
            };
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(p) = progress {
                p(Progress { done: n, total });
            }
            (key.source, stored)
        });
        for (hash, stored) in results {
            match stored {
                None => report.present += 1,
                Some(StoreWrite::Stored) => report.written += 1,
                Some(StoreWrite::DurabilityNotConfirmed(e)) => {
                    report.written += 1;
                    report.durability_error.get_or_insert(e);
                }
                // A bake is always wanted.
                Some(StoreWrite::NotWanted) => {}
                Some(StoreWrite::NotStored(reason)) => {
                    log::warn!(
                        "{} artifact of {} not stored: {}",
                        pe.profile,
                        hex::encode(hash),
                        reason.message()
                    );
                    report.failed.push(BakeFailure { hash, reason });
                }
            }
        }
        report.failed.sort_by_key(|f| f.hash);
        log::info!("{}", report.summary());
        reports.push(report);
    }
    reports
}

/// True when `key`'s artifact is in `store` with an intact trailer that names it: a bake trusts
/// that much (the payload is checked whenever it is served, and by `verify`).
fn is_stored(store: &Store, key: &ArtifactKey) -> bool {
    store
        .read_trailer(key)
        .is_ok_and(|trailer| check_binding(&trailer, key).is_ok())
}
