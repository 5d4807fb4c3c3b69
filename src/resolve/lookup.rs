//! The lookup tiers of a resolution: this engine's artifacts in the writable store, then in each
//! read-only store, then portable artifacts best CPU profile first, in every store that holds any.

use std::collections::{BTreeMap, BTreeSet};

use super::batch::load_all;
use super::outcome::{Origin, PortableRefusal};
use super::session::{FingerprintCount, ReadOnlyStoreReport};
use super::stores::Stores;
use super::{Slots, pending};
use crate::compiled::Compiled;
use crate::key::Fingerprint;
use crate::profile::CpuProfile;
use crate::store::{Lookup, Store};

/// Which store a lookup reads, for the origin it gives a hit.
#[derive(Clone, Copy)]
pub(super) enum Tier {
    Writable,
    ReadOnly,
    Portable(CpuProfile),
}

/// Loads every pending slot it can from `store`, under the key of `tier`. A refusal under this
/// engine's own key is remembered once per request; a portable artifact's refusal is listed with
/// its profile. Returns how many were loaded.
pub(super) fn load_pending<T: Compiled>(stores: &Stores, store: &Store, tier: Tier, slots: &mut Slots<'_, T>) -> usize {
    let mut hits = 0;
    for (hash, lookup) in load_all::<T>(store, &stores.engine, &pending(slots)) {
        let Some(slot) = slots.get_mut(&hash) else { continue };
        match lookup {
            Lookup::Hit(value, load_path) => {
                let dir = store.dir().to_path_buf();
                let origin = match tier {
                    Tier::Writable => Origin::Store { dir, load_path },
                    Tier::ReadOnly => Origin::ReadOnlyStore {
                        dir,
                        load_path,
                        rejected: None,
                    },
                    Tier::Portable(profile) => Origin::Portable {
                        profile,
                        dir,
                        load_path,
                        rejected: None,
                    },
                };
                slot.found = Some((value, origin));
                hits += 1;
            }
            Lookup::Absent => {}
            Lookup::Rejected(reason) => {
                let path = store.path_of_key(&store.key_of(&hash, T::KIND));
                match tier {
                    Tier::Portable(profile) => {
                        log::info!("portable {profile} artifact {} refused: {reason}", path.display());
                        slot.portable_refused.push(PortableRefusal {
                            profile,
                            store: store.dir().to_path_buf(),
                            reason,
                        });
                    }
                    Tier::Writable | Tier::ReadOnly if slot.rejected.is_none() => {
                        log::warn!("stored artifact {} rejected: {reason}", path.display());
                        slot.rejected = Some(reason);
                        slot.rejected_in_writable = matches!(tier, Tier::Writable);
                    }
                    Tier::Writable | Tier::ReadOnly => {}
                }
            }
        }
    }
    hits
}

/// A read-only store this resolution opened, with the fingerprints its listing showed (`None`:
/// it could not be listed).
pub(super) struct Opened<'s> {
    pub store: &'s Store,
    pub index: usize,
    pub present: Option<BTreeSet<Fingerprint>>,
}

/// What the writable store lacks, from each read-only store in turn (no lock: nothing ever writes
/// them). Each is opened at its first use and listed once; a store whose listing holds nothing
/// under this engine's fingerprint (a bake of portable profiles only) costs no pass of failed
/// opens.
pub(super) fn read_only<'s, T: Compiled>(
    stores: &'s Stores,
    slots: &mut Slots<'_, T>,
    reports: &mut [ReadOnlyStoreReport],
) -> Vec<Opened<'s>> {
    let mut opened = Vec::new();
    for (i, report) in reports.iter_mut().enumerate() {
        // Everything is loaded already: nothing to look up, and nothing to warn about, unless
        // a health check asks about every store.
        if pending(slots).is_empty() && !stores.check_read_only {
            break;
        }
        match stores.read_only_store(i) {
            Some(Ok(store)) => {
                let present = store.fingerprints_present().ok();
                if present.as_ref().is_none_or(|fps| fps.contains(&stores.fingerprint)) {
                    report.hits += load_pending(stores, store, Tier::ReadOnly, slots);
                }
                opened.push(Opened {
                    store,
                    index: i,
                    present,
                });
            }
            Some(Err(e)) => {
                log::warn!("read-only store {} not used: {}", report.path.display(), e.message());
                report.error = Some(e.clone());
            }
            None => {}
        }
    }
    opened
}

/// What no store held under this engine's fingerprint, from portable artifacts: best profile
/// first, in `writable` (when the caller holds its shared lock) and every opened read-only store,
/// each searched only for the fingerprints its listing holds. Counts read-only hits in `reports`.
pub(super) fn portable<T: Compiled>(
    stores: &Stores,
    writable: Option<&Store>,
    read_only: &[Opened<'_>],
    slots: &mut Slots<'_, T>,
    reports: &mut [ReadOnlyStoreReport],
) {
    let mut searched: Vec<(&Store, Option<usize>, BTreeSet<Fingerprint>)> = Vec::new();
    if let Some(store) = writable {
        searched.push((store, None, store.fingerprints_present().unwrap_or_default()));
    }
    for o in read_only {
        let present = match &o.present {
            Some(p) => p.clone(),
            None => o.store.fingerprints_present().unwrap_or_default(),
        };
        searched.push((o.store, Some(o.index), present));
    }
    // A profile no store holds costs no engine.
    if searched
        .iter()
        .all(|(_, _, fps)| fps.iter().all(|fp| *fp == stores.fingerprint))
    {
        return;
    }
    for pe in stores.portable_engines() {
        for (store, index, present) in &searched {
            if pending(slots).is_empty() {
                return;
            }
            if !present.contains(&pe.fingerprint) {
                continue;
            }
            let hits = load_pending(
                stores,
                &store.with_fingerprint(pe.fingerprint),
                Tier::Portable(pe.profile),
                slots,
            );
            if let Some(report) = index.and_then(|i| reports.get_mut(i)) {
                report.hits += hits;
            }
        }
    }
}

/// True when a store whose artifacts have the fingerprints `present` holds some this engine
/// loads: its own fingerprint's, or a portable profile's when portable artifacts may serve it.
pub(super) fn serves(stores: &Stores, present: &BTreeSet<Fingerprint>) -> bool {
    // An empty listing serves nothing, and must not cost the portable engines' construction.
    present.contains(&stores.fingerprint)
        || (!present.is_empty()
            && stores.serves_portable()
            && !stores.bakes_native()
            && stores
                .portable_engines()
                .iter()
                .any(|pe| present.contains(&pe.fingerprint)))
}

/// For a read-only store that served nothing: the fingerprints of its artifacts with their
/// counts when none is this engine's, and wasmtime's own refusal of one of them.
pub(super) fn explain_mismatch(stores: &Stores, store: &Store, report: &mut ReadOnlyStoreReport) {
    let Ok(entries) = store.entries() else { return };
    let mut counts: BTreeMap<Fingerprint, usize> = BTreeMap::new();
    for e in &entries {
        if e.key.fingerprint == store.fingerprint() {
            return;
        }
        *counts.entry(e.key.fingerprint).or_default() += 1;
    }
    report.other_fingerprints = counts
        .into_iter()
        .map(|(fingerprint, files)| FingerprintCount { fingerprint, files })
        .collect();
    report.refusal = entries
        .iter()
        .find(|e| e.is_file)
        .map(|e| store.why_not_loaded(&stores.engine, &e.key));
}
