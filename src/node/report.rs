//! What a start-up did: counts, per-component outcomes, the store's health, each read-only store
//! and each CPU profile baked. `Display` gives the summary the CLI prints; `Serialize` the same as
//! the CLI's `--json`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::StoreError;
use crate::key::Hash32;
use crate::profile::CpuProfile;
pub use crate::resolve::Progress;
pub use crate::resolve::outcome::PortableRefusal;
use crate::resolve::outcome::StoreWrite;
use crate::resolve::session::Session;
pub use crate::resolve::session::{BakeFailure, BakeReport, FingerprintCount, ReadOnlyStoreReport, StoreHealth};
use crate::source::SkipReason;
pub use crate::store::LockRepair;
use crate::store::{LoadPath, Rejection};

/// How one component ended up in (or out of) the cache. In JSON: `"outcome"`, and
/// `"skip_reason"` (the reason of a skipped component, `null` for the others).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Loaded from a verified stored artifact.
    FromStore,
    /// Compiled from its source binary in this start-up.
    Compiled,
    /// Whitelisted but not loaded; the node starts without it. This is the node's alarm.
    Skipped(SkipReason),
    /// A file in the binary root named by a hash that is not whitelisted (an old binary left after
    /// an upgrade, or a `wasm.conf` not yet edited): reported, never loaded, never an alarm.
    Unlisted,
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("outcome", self.as_str())?;
        let reason = match self {
            Outcome::Skipped(r) => Some(r.to_string()),
            _ => None,
        };
        m.serialize_entry("skip_reason", &reason)?;
        m.end()
    }
}

impl Outcome {
    /// `from_store`, `compiled`, `skipped` or `unlisted`: the JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::FromStore => "from_store",
            Outcome::Compiled => "compiled",
            Outcome::Skipped(_) => "skipped",
            Outcome::Unlisted => "unlisted",
        }
    }
}

/// One component's line in the report.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct EntryReport {
    /// Source SHA-256.
    #[serde(serialize_with = "crate::serial::hex")]
    pub hash: Hash32,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// For a component loaded from a store, that store's directory.
    #[serde(serialize_with = "crate::serial::opt_path")]
    pub store: Option<PathBuf>,
    /// For a component loaded from a store, how its code reached wasmtime.
    pub load_path: Option<LoadPath>,
    /// For a component loaded from a store, the CPU profile its artifact was compiled for:
    /// `native` (this engine's own fingerprint) or a portable profile such as `x86-64-v3`.
    pub profile: Option<CpuProfile>,
    /// Why a stored artifact under the current key was refused, if one was.
    #[serde(serialize_with = "crate::serial::opt_display")]
    pub rejected: Option<Rejection>,
    /// Portable artifacts that were tried and refused before the component was served or compiled,
    /// best profile first (for example wasmtime's reason when this CPU lacks a feature).
    pub portable_refused: Vec<PortableRefusal>,
    /// For a compiled component with a writable store: whether its artifact was stored.
    pub stored: Option<StoreWrite>,
}

impl EntryReport {
    /// The reason behind the outcome, for people: a skip reason, a rejection, a store failure.
    pub fn reason(&self) -> Option<String> {
        let mut parts = Vec::new();
        match &self.outcome {
            Outcome::Skipped(r) => parts.push(r.to_string()),
            Outcome::Unlisted => parts.push("in the binary root but not whitelisted; not loaded".to_owned()),
            Outcome::FromStore | Outcome::Compiled => {}
        }
        if let Some(r) = &self.rejected {
            parts.push(format!("stored artifact rejected: {r}"));
        }
        if let Some(p) = self.profile.filter(|p| !p.is_native()) {
            parts.push(format!("served by the portable {p} artifact"));
        }
        for r in &self.portable_refused {
            parts.push(format!(
                "portable {} artifact in {} refused: {}",
                r.profile,
                r.store.display(),
                r.reason
            ));
        }
        match &self.stored {
            Some(StoreWrite::NotStored(e)) => parts.push(format!("not stored: {}", e.message())),
            Some(StoreWrite::DurabilityNotConfirmed(e)) => {
                parts.push(format!("stored, durability not confirmed: {}", e.message()))
            }
            Some(StoreWrite::NotWanted) => {
                parts.push("not stored: the native profile is not among the CPU profiles to store".to_owned())
            }
            Some(StoreWrite::Stored) | None => {}
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The report of one start-up. `Display` prints the summary the CLI shows; `Serialize` gives the
/// same as structured data (the CLI's `--json`, or a node's structured log).
///
/// ```no_run
/// let cache = wasm_node_cache::WasmNodeCache::new()?;
/// let json = serde_json::to_string(cache.report())?;
/// # anyhow::Ok(())
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct LoadReport {
    /// Components loaded from the store.
    pub from_store: usize,
    /// Components compiled (including every rejected one that was recompiled).
    pub compiled: usize,
    /// Stored artifacts under the current key that were refused (corrupt, truncated, foreign,
    /// failed to deserialize). Each is also recompiled, if its source is available.
    pub rejected: usize,
    /// Whitelisted components not loaded: the node runs without them.
    pub skipped: usize,
    /// Files in the binary root named by a hash that is not whitelisted; never loaded.
    pub unlisted: usize,
    /// Wall time of the start-up (`elapsed_ms` in JSON).
    #[serde(rename = "elapsed_ms", serialize_with = "crate::serial::millis")]
    pub elapsed: Duration,
    /// One line per component, sorted by hash.
    pub entries: Vec<EntryReport>,
    /// The writable store's health.
    pub store: StoreHealth,
    /// Each read-only store, in the order searched (`read_only_stores` in JSON).
    #[serde(rename = "read_only_stores")]
    pub read_only: Vec<ReadOnlyStoreReport>,
    /// Of `from_store`, the components served by a portable profile's artifact.
    pub from_portable: usize,
    /// What was baked for each portable CPU profile asked for ([`crate::Builder::cpu_profiles`]);
    /// empty for a node's start-up.
    pub baked: Vec<BakeReport>,
    /// Wall time of the compile and bake phases (`compile_ms` in JSON).
    #[serde(rename = "compile_ms", serialize_with = "crate::serial::millis")]
    pub compile_time: Duration,
    /// Time spent waiting for the store's locks, summed over every wait (`lock_wait_ms`).
    #[serde(rename = "lock_wait_ms", serialize_with = "crate::serial::millis")]
    pub lock_wait: Duration,
    /// The binary root did not exist: only stored artifacts could be served.
    pub binary_root_missing: bool,
}

/// An artifact a start-up was to store and did not ([`LoadReport::not_stored`]).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NotStored {
    /// Source SHA-256.
    #[serde(serialize_with = "crate::serial::hex")]
    pub hash: Hash32,
    /// The CPU profile it was to be stored for (`native`: this engine's own).
    pub profile: CpuProfile,
    /// Why not.
    pub reason: StoreError,
}

impl LoadReport {
    /// The report of `entries` and of what the start-up did to the stores, counted.
    pub(crate) fn new(mut entries: Vec<EntryReport>, session: Session, elapsed: Duration) -> LoadReport {
        entries.sort_by_key(|e| e.hash);
        let mut report = LoadReport {
            elapsed,
            store: session.health,
            read_only: session.read_only,
            baked: session.baked,
            compile_time: session.compile_time,
            lock_wait: session.lock_wait,
            ..LoadReport::default()
        };
        for e in &entries {
            match &e.outcome {
                Outcome::FromStore => {
                    report.from_store += 1;
                    if e.profile.is_some_and(|p| !p.is_native()) {
                        report.from_portable += 1;
                    }
                }
                Outcome::Compiled => report.compiled += 1,
                Outcome::Skipped(_) => report.skipped += 1,
                Outcome::Unlisted => report.unlisted += 1,
            }
            if e.rejected.is_some() {
                report.rejected += 1;
            }
        }
        report.entries = entries;
        report
    }

    /// Logs one line per component that needs attention, then the summary.
    pub(crate) fn log(&self) {
        for e in &self.entries {
            // A rejection alone was already logged, naming the file, when it happened.
            let needs_warning = matches!(e.outcome, Outcome::Skipped(_))
                || matches!(
                    e.stored,
                    Some(StoreWrite::NotStored(_) | StoreWrite::DurabilityNotConfirmed(_))
                );
            match (needs_warning, e.reason()) {
                (true, Some(reason)) => {
                    log::warn!("component {}: {}: {reason}", hex::encode(e.hash), e.outcome.as_str())
                }
                _ => log::debug!("component {}: {}", hex::encode(e.hash), e.outcome.as_str()),
            }
        }
        if let (Some(e), None) = (&self.store.write_error, &self.store.read_error) {
            log::warn!("artifact store not written: {}", e.message());
        }
        if let Some(e) = &self.store.durability_error {
            log::warn!(
                "artifacts stored, but their durability is not confirmed: {}",
                e.message()
            );
        }
        for b in &self.baked {
            log::info!("{}", b.summary());
        }
        log::info!(
            "wasm components ready in {:.1} ms: {}; store {} (fingerprint {}, {} written)",
            self.elapsed.as_secs_f64() * 1e3,
            self.counts(),
            self.store
                .path
                .as_ref()
                .map_or_else(|| "disabled".to_owned(), |p| p.display().to_string()),
            self.store.fingerprint,
            self.store.written,
        );
    }

    /// `3 from store, 1 compiled, 0 rejected, 0 skipped, 2 unlisted`, with the portable note.
    fn counts(&self) -> String {
        format!(
            "{} from store{}, {} compiled, {} rejected, {} skipped, {} unlisted",
            self.from_store,
            self.portable_note(),
            self.compiled,
            self.rejected,
            self.skipped,
            self.unlisted
        )
    }

    /// ` (N from portable artifacts)` when any were, else nothing.
    fn portable_note(&self) -> String {
        if self.from_portable == 0 {
            return String::new();
        }
        let mut profiles: Vec<CpuProfile> = self
            .entries
            .iter()
            .filter_map(|e| e.profile.filter(|p| !p.is_native()))
            .collect();
        profiles.sort_by(|a, b| b.cmp(a));
        profiles.dedup();
        let names: Vec<&str> = profiles.iter().map(|p| p.name()).collect();
        format!(
            " ({} from portable artifacts: {})",
            self.from_portable,
            names.join(", ")
        )
    }

    /// What went wrong, one sentence each: components skipped, stored artifacts rejected, a store
    /// that could not be read or written (refused, lock timed out, full disk), a durability not
    /// confirmed, a read-only store unusable or holding only another build's artifacts, an
    /// artifact of a bake not stored, a missing binary root. Empty for a healthy start: what
    /// `warm --strict` fails on, and what to alert on.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.binary_root_missing {
            out.push("the binary root does not exist: only stored artifacts could be served".to_owned());
        }
        if self.skipped > 0 {
            out.push(format!(
                "{} component(s) skipped: the node runs without them",
                self.skipped
            ));
        }
        if self.rejected > 0 {
            out.push(format!("{} stored artifact(s) rejected", self.rejected));
        }
        // A default location nobody asked for, unusable (a read-only root file system) while the
        // bake served everything: the node runs as deployed, with nothing to store.
        let unasked = self.store.default_location && self.compiled == 0 && self.skipped == 0;
        if let Some(e) = self.store.read_error.as_ref().filter(|_| !unasked) {
            out.push(format!("store not read: {}", e.message()));
        } else if let Some(e) = self.store.write_error.as_ref().filter(|_| !unasked) {
            out.push(format!("store not written: {}", e.message()));
        }
        if let Some(e) = &self.store.durability_error {
            out.push(format!("store durability not confirmed: {}", e.message()));
        }
        for ro in &self.read_only {
            if let Some(e) = &ro.error {
                out.push(format!(
                    "read-only store {} not used: {}",
                    ro.path.display(),
                    e.message()
                ));
            } else if let Some(m) = ro.mismatch(&self.store.fingerprint) {
                out.push(m);
            } else if ro.serves == Some(false) {
                out.push(format!(
                    "read-only store {} holds no artifact for this engine",
                    ro.path.display()
                ));
            }
        }
        let baked: usize = self.baked.iter().map(|b| b.failed.len()).sum();
        if baked > 0 {
            out.push(format!("{baked} artifact(s) of the bake not stored"));
        }
        out
    }

    /// Each artifact this start-up was to store and did not, with why: for this engine (when the
    /// native profile is among those to store) every whitelisted component not stored, and for
    /// each portable profile baked every failure. Empty when everything asked for is stored (now
    /// or before). What `warm --cpu-profile` fails on: a bake is complete or it fails.
    pub fn not_stored(&self) -> Vec<NotStored> {
        let mut out = Vec::new();
        for e in &self.entries {
            let reason = match (&e.outcome, &e.stored) {
                (Outcome::Compiled, Some(StoreWrite::NotStored(why))) => Some(why.clone()),
                (Outcome::Skipped(reason), _) => Some(StoreError::Source {
                    hash: e.hash,
                    reason: reason.clone(),
                }),
                _ => None,
            };
            if let Some(reason) = reason {
                out.push(NotStored {
                    hash: e.hash,
                    profile: CpuProfile::Native,
                    reason,
                });
            }
        }
        for b in &self.baked {
            out.extend(b.failed.iter().map(|f| NotStored {
                hash: f.hash,
                profile: b.profile,
                reason: f.reason.clone(),
            }));
        }
        out
    }

    /// The entry for `hash`, if the start-up saw it.
    pub fn entry(&self, hash: &Hash32) -> Option<&EntryReport> {
        self.entries.iter().find(|e| &e.hash == hash)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} components in {:.1} ms: {}",
            self.entries.len() - self.unlisted,
            self.elapsed.as_secs_f64() * 1e3,
            self.counts()
        )?;
        if self.binary_root_missing {
            writeln!(f, "binary root MISSING: only stored artifacts could be served")?;
        }
        match &self.store.path {
            None => writeln!(f, "store: disabled")?,
            Some(p) => {
                write!(
                    f,
                    "store: {} (fingerprint {}): {} written",
                    p.display(),
                    self.store.fingerprint,
                    self.store.written
                )?;
                if self.store.temp_files_removed > 0 {
                    write!(f, ", {} unfinished temp file(s) removed", self.store.temp_files_removed)?;
                }
                if self.store.rejected_removed > 0 {
                    write!(
                        f,
                        ", {} rejected artifact(s) removed (served by another store)",
                        self.store.rejected_removed
                    )?;
                }
                writeln!(f)?;
                if let Some(e) = &self.store.durability_error {
                    writeln!(f, "store written, durability NOT CONFIRMED: {}", e.message())?;
                }
                if let Some(e) = &self.store.read_error {
                    writeln!(f, "store NOT READ: {}", e.message())?;
                }
                if let Some(e) = &self.store.write_error {
                    writeln!(f, "store NOT WRITTEN: {}", e.message())?;
                }
                if let Some(r) = &self.store.lock_repaired {
                    writeln!(f, "store lock repaired: {r}")?;
                }
            }
        }
        for ro in &self.read_only {
            match (&ro.error, ro.mismatch(&self.store.fingerprint)) {
                (Some(e), _) => writeln!(f, "read-only store {}: NOT USED: {}", ro.path.display(), e.message())?,
                (None, Some(m)) => writeln!(f, "{m}")?,
                (None, None) => writeln!(f, "read-only store {}: {} loaded", ro.path.display(), ro.hits)?,
            }
        }
        for b in &self.baked {
            writeln!(f, "{}", b.summary())?;
        }
        for e in &self.entries {
            if let Some(reason) = e.reason() {
                writeln!(f, "  {} {}: {}", hex::encode(e.hash), e.outcome.as_str(), reason)?;
            }
        }
        Ok(())
    }
}
