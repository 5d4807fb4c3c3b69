//! Portable CPU profiles for the embedder's door: their engines, built once per store at the
//! first lookup that needs them, and only for an engine with the node's settings (a profile is
//! the node's settings for a CPU level; its artifacts are of no use to any other engine).

use wasmtime::Engine;

use super::Inner;
use crate::engine::engine_fingerprint;
use crate::key::Fingerprint;
use crate::profile::CpuProfile;

/// A portable profile's engine and its fingerprint in the store's mode.
pub(crate) struct ProfileEngine {
    pub profile: CpuProfile,
    pub engine: Engine,
    pub fingerprint: Fingerprint,
}

/// The portable profiles' engines, best first; empty when the store's engine is not the node's
/// or this architecture has none.
pub(crate) fn engines(inner: &Inner) -> &[ProfileEngine] {
    inner.portable.get_or_init(|| {
        if CpuProfile::portable().is_empty() || !inner.serves_portable() {
            return Vec::new();
        }
        CpuProfile::portable()
            .iter()
            .filter_map(|&profile| match profile.engine() {
                Ok(engine) => Some(ProfileEngine {
                    profile,
                    fingerprint: engine_fingerprint(&engine, inner.keyed()),
                    engine,
                }),
                Err(e) => {
                    log::warn!("portable artifacts of {profile} not used: {}", crate::serial::Chain(&e));
                    None
                }
            })
            .collect()
    })
}

/// True when `engine` has the node's settings, of which every portable profile is a variant.
pub(crate) fn is_node_engine(engine: &Engine) -> bool {
    CpuProfile::Native
        .engine()
        .is_ok_and(|node| engine_fingerprint(&node, false) == engine_fingerprint(engine, false))
}
