//! [`Stats`]: what a store door has done since it was opened, for a long-running host's own
//! metrics: hits by tier, compilations, artifacts stored and not, rejections by kind, evictions,
//! lock waits.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::outcome::{Origin, Resolved, StoreWrite};
use super::session::Session;

/// Counters of an [`ArtifactStore`](crate::ArtifactStore) (and of its clones, which share them)
/// since it was opened: [`ArtifactStore::stats`](crate::ArtifactStore::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Loads served by the writable store, compiled for this engine.
    pub hits_writable: u64,
    /// Loads served by a read-only store, compiled for this engine.
    pub hits_read_only: u64,
    /// Loads served by a portable CPU profile's artifact, in any store.
    pub hits_portable: u64,
    /// Compilations (each miss, and each artifact refused and compiled again).
    pub compiles: u64,
    /// Artifacts published into the writable store, bakes included.
    pub stored: u64,
    /// Compilations whose artifact was not stored (full disk, read-only file system, a store
    /// refused or locked).
    pub not_stored: u64,
    /// Stored artifacts refused, by [`Rejection::kind`](crate::error::Rejection::kind) (a
    /// portable artifact's refusal included).
    pub rejections: BTreeMap<&'static str, u64>,
    /// Least recently used artifacts removed to keep the store within its size bound.
    pub evictions: u64,
    /// Time spent waiting for the store's locks, summed over every wait.
    pub lock_wait: Duration,
}

impl Stats {
    /// Adds what one resolution did.
    pub(crate) fn add<T>(&mut self, resolved: &[Resolved<T>], session: &Session) {
        for r in resolved {
            for refused in &r.portable_refused {
                *self.rejections.entry(refused.reason.kind()).or_default() += 1;
            }
            let Ok((_, origin)) = &r.result else { continue };
            if let Some(rejected) = origin.rejected() {
                *self.rejections.entry(rejected.kind()).or_default() += 1;
            }
            match origin {
                Origin::Store { .. } => self.hits_writable += 1,
                Origin::ReadOnlyStore { .. } => self.hits_read_only += 1,
                Origin::Portable { .. } => self.hits_portable += 1,
                Origin::Compiled { stored, .. } => {
                    self.compiles += 1;
                    if matches!(stored, StoreWrite::NotStored(_)) {
                        self.not_stored += 1;
                    }
                }
            }
        }
        let baked: usize = session.baked.iter().map(|b| b.written).sum();
        self.stored += (session.health.written + baked) as u64;
        self.evictions += session.health.evicted as u64;
        self.lock_wait += session.lock_wait;
    }
}
