//! `host`: what a bake must match on this host. Its triple, this engine's fingerprint and, for each
//! CPU profile, its fingerprint and whether this CPU runs its code (wasmtime's own check).

use serde::Serialize;
use wasmtime::Engine;

use crate::engine::engine_fingerprint;
use crate::error::StoreError;
pub use crate::profile::ProfileStatus;

/// This host as a bake sees it; serializes as `host --json`'s object.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HostReport {
    /// The target triple this binary was built for.
    pub triple: String,
    /// The engine's fingerprint in the mode asked for.
    pub fingerprint: crate::key::Fingerprint,
    /// `native` first, then each portable profile best first.
    pub profiles: Vec<ProfileStatus>,
}

impl HostReport {
    /// The report for `engine` in plain mode or, with `keyed`, MAC mode. Builds one engine per
    /// portable profile.
    ///
    /// ```no_run
    /// let engine = wasm_node_cache::init_wasm_engine()?;
    /// let host = wasm_node_cache::operator::host::HostReport::of(&engine, false)?;
    /// for p in host.profiles.iter().filter(|p| p.runs_here) {
    ///     println!("{} {}", p.profile, p.fingerprint);
    /// }
    /// # anyhow::Ok(())
    /// ```
    pub fn of(engine: &Engine, keyed: bool) -> Result<HostReport, StoreError> {
        Ok(HostReport {
            triple: crate::profile::host_triple(),
            fingerprint: engine_fingerprint(engine, keyed),
            profiles: crate::profile::profile_statuses(engine, keyed)
                .map_err(|reason| StoreError::Profile { profile: None, reason })?,
        })
    }
}
