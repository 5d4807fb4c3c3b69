//! Serving from portable artifacts: what this engine's own fingerprint did not find, looked up
//! under each portable profile's fingerprint in every store, best profile first, and handed to
//! the node's own engine, whose compatibility check decides whether this CPU runs it.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Slots, load_pending, pending};
use crate::engine::engine_fingerprint;
use crate::key::{Fingerprint, Hash32};
use crate::profile::CpuProfile;
use crate::store::Store;

/// A store to search, and its index in the report's read-only stores (`None`: the writable one).
pub(super) struct Searched<'a> {
    pub store: &'a Store,
    pub read_only_index: Option<usize>,
    /// The fingerprints the store holds, when the caller listed it already.
    pub present: Option<BTreeSet<Fingerprint>>,
}

/// Loads every pending slot it can from portable artifacts in `stores` (the writable one only if
/// the caller holds its shared lock); returns the hits per read-only store index. Builds no engine
/// and reads no directory when nothing is pending, and builds no engine when no store holds an
/// artifact of a fingerprint other than `own`.
pub(super) fn load_portable(
    engine: &Engine,
    keyed: bool,
    own: Fingerprint,
    stores: &[Searched<'_>],
    slots: &mut Slots,
    components: &mut HashMap<Hash32, Component>,
) -> HashMap<usize, usize> {
    let mut ro_hits = HashMap::new();
    if pending(slots).is_empty() || stores.is_empty() || CpuProfile::portable().is_empty() {
        return ro_hits;
    }
    let started = Instant::now();
    // One directory listing per store: a profile no store holds costs no engine, and a store is
    // searched only for the fingerprints it holds (a miss costs a pass over every pending hash).
    let present: Vec<BTreeSet<Fingerprint>> = stores
        .iter()
        .map(|s| match &s.present {
            Some(present) => present.clone(),
            None => s.store.fingerprints_present().unwrap_or_default(),
        })
        .collect();
    if present.iter().flatten().all(|fp| *fp == own) {
        return ro_hits;
    }
    for &profile in CpuProfile::portable() {
        if pending(slots).is_empty() {
            break;
        }
        let fingerprint = match profile.engine() {
            Ok(profile_engine) => engine_fingerprint(&profile_engine, keyed),
            Err(e) => {
                log::warn!(
                    "portable artifacts of {profile} not looked up: {}",
                    crate::serial::Chain(&e)
                );
                continue;
            }
        };
        for (searched, present) in stores.iter().zip(&present) {
            if !present.contains(&fingerprint) || pending(slots).is_empty() {
                continue;
            }
            let store = searched.store.with_fingerprint(fingerprint);
            let hits = load_pending(&store, engine, Some(profile), slots, components);
            if let Some(i) = searched.read_only_index {
                *ro_hits.entry(i).or_default() += hits;
            }
        }
    }
    log::debug!("portable lookup took {:.2} ms", started.elapsed().as_secs_f64() * 1e3);
    ro_hits
}
