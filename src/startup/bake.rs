//! Baking for portable CPU profiles: every whitelisted component compiled once per profile with
//! that profile's engine and published under its fingerprint, with the same trailer, key binding,
//! MAC, lock and atomic publication as the node's own artifacts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::{Plan, Progress};
use crate::artifact_store::compile::{on_every_core, publish};
use crate::engine::engine_fingerprint;
use crate::key::{Hash32, Kind};
use crate::problem::{ProblemKind, StoreProblem};
use crate::profile::CpuProfile;
use crate::report::{BakeFailure, BakeReport, StoreWrite};
use crate::source::{SkipReason, read_verified};
use crate::store::{LockKind, Store};

/// Bakes every portable profile the stores are to hold into `store` (`None`: no writable store, so each
/// profile reports why nothing was baked). Artifacts already stored and verified are kept.
pub(super) fn bake_profiles(plan: &Plan, store: Option<&Store>, keyed: bool, deadline: Instant) -> Vec<BakeReport> {
    let mut profiles: Vec<CpuProfile> = plan
        .stores()
        .profiles
        .iter()
        .copied()
        .filter(|p| !p.is_native())
        .collect();
    profiles.sort_by(|a, b| b.cmp(a));
    profiles.dedup();
    if profiles.is_empty() {
        return Vec::new();
    }
    let mut hashes: Vec<Hash32> = plan.whitelist.iter().copied().collect();
    hashes.sort();
    // Read once for every profile, with no lock held (as a start-up reads its sources).
    let sources: Vec<(Hash32, Result<Vec<u8>, SkipReason>)> = hashes
        .iter()
        .map(|h| (*h, read_verified(&plan.binary_root, h)))
        .collect();
    profiles
        .into_iter()
        .map(|profile| bake_one(plan, store, keyed, deadline, profile, &sources))
        .collect()
}

fn bake_one(
    plan: &Plan,
    store: Option<&Store>,
    keyed: bool,
    deadline: Instant,
    profile: CpuProfile,
    sources: &[(Hash32, Result<Vec<u8>, SkipReason>)],
) -> BakeReport {
    let mut report = BakeReport {
        profile,
        fingerprint: String::new(),
        written: 0,
        present: 0,
        failed: Vec::new(),
        durability_error: None,
    };
    let fail_all = |report: &mut BakeReport, reason: StoreProblem| {
        log::warn!("nothing baked for CPU profile {profile}: {reason}");
        report.failed = sources
            .iter()
            .map(|(hash, _)| BakeFailure {
                hash: *hash,
                reason: reason.clone(),
            })
            .collect();
    };
    let engine = match profile.engine() {
        Ok(e) => e,
        Err(e) => {
            fail_all(
                &mut report,
                StoreProblem::new(ProblemKind::Profile, crate::serial::Chain(&e).to_string()),
            );
            return report;
        }
    };
    let fingerprint = engine_fingerprint(&engine, keyed);
    report.fingerprint = fingerprint.to_hex();
    let Some(store) = store else {
        fail_all(
            &mut report,
            StoreProblem::new(ProblemKind::NoStore, "no writable store"),
        );
        return report;
    };
    let store = store.with_fingerprint(fingerprint);
    let exclusive = match store.lock_exclusive(deadline, &format!("bake CPU profile {profile}")) {
        Ok(x) => x,
        Err(e) => {
            fail_all(
                &mut report,
                StoreProblem::lock_not_taken(LockKind::Exclusive, &store.lock_path(), &e),
            );
            return report;
        }
    };
    let mut jobs = Vec::new();
    for (hash, source) in sources {
        if store.check(&store.key(hash)).is_ok() {
            report.present += 1;
            continue;
        }
        match source {
            Ok(bytes) => jobs.push((*hash, bytes.as_slice())),
            Err(reason) => report.failed.push(BakeFailure {
                hash: *hash,
                reason: StoreProblem::new(ProblemKind::Source, reason.to_string()),
            }),
        }
    }
    let total = jobs.len();
    if let (Some(p), true) = (&plan.progress, total > 0) {
        p(Progress { done: 0, total });
    }
    let done = AtomicUsize::new(0);
    let results = on_every_core(&jobs, |(hash, bytes)| {
        let stored = match engine.precompile_component(bytes) {
            Ok(artifact) => publish(&exclusive, hash, Kind::Component, &artifact),
            Err(e) => StoreWrite::NotStored(StoreProblem::new(
                ProblemKind::Compile,
                format!("compilation failed: {e:#}"),
            )),
        };
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(p) = &plan.progress {
            p(Progress { done: n, total });
        }
        (*hash, stored)
    });
    for (hash, stored) in results {
        match stored {
            StoreWrite::Stored => report.written += 1,
            StoreWrite::DurabilityNotConfirmed(e) => {
                report.written += 1;
                report.durability_error.get_or_insert(e);
            }
            StoreWrite::NotStored(reason) => report.failed.push(BakeFailure { hash, reason }),
        }
    }
    report.failed.sort_by_key(|f| f.hash);
    report
}
