//! What a start-up did: counts, per-component outcomes, and the store's health.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::key::Hash32;
use crate::problem::StoreProblem;
use crate::profile::CpuProfile;
use crate::source::SkipReason;
use crate::store::{LoadPath, Rejection};

/// How one component ended up in (or out of) the cache. In JSON: `"outcome"`, and for a skipped
/// component `"skip_reason"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "skip_reason", rename_all = "snake_case")]
pub enum Outcome {
    /// Loaded from a verified stored artifact.
    FromStore,
    /// Compiled from its source binary in this start-up.
    Compiled,
    /// Whitelisted but not loaded; the node starts without it. This is the node's alarm.
    Skipped(#[serde(serialize_with = "crate::serial::display")] SkipReason),
    /// A file in the binary root named by a hash that is not whitelisted (an old binary left after
    /// an upgrade, or a `wasm.conf` not yet edited): reported, never loaded, never an alarm.
    Unlisted,
}

impl Outcome {
    /// `from_store`, `compiled` or `skipped`: the JSON name.
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

/// A portable artifact that was found and refused.
#[derive(Debug, Clone, Serialize)]
pub struct PortableRefusal {
    /// The profile it was compiled for.
    pub profile: CpuProfile,
    /// The store it lies in.
    #[serde(serialize_with = "crate::serial::path")]
    pub store: PathBuf,
    /// Why it was refused.
    #[serde(serialize_with = "crate::serial::display")]
    pub reason: Rejection,
}

/// What became of a freshly compiled artifact in the writable store. In JSON an object with
/// `status` and, for the failures, `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "error", rename_all = "snake_case")]
pub enum StoreWrite {
    /// Published and the directory fsynced: it survives a crash.
    Stored,
    /// Renamed into place and loadable, but the directory's fsync failed: a crash of the machine
    /// could still lose it (then the next start compiles it again).
    DurabilityNotConfirmed(StoreProblem),
    /// Not published; the next start compiles it again.
    NotStored(StoreProblem),
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
            Some(StoreWrite::NotStored(e)) => parts.push(format!("not stored: {e}")),
            Some(StoreWrite::DurabilityNotConfirmed(e)) => parts.push(format!("stored, durability not confirmed: {e}")),
            Some(StoreWrite::Stored) | None => {}
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The store's health during the start-up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreHealth {
    /// The store directory, or `None` when the store is disabled.
    #[serde(serialize_with = "crate::serial::opt_path")]
    pub path: Option<PathBuf>,
    /// The engine fingerprint (hex) artifacts were looked up under.
    pub fingerprint: String,
    /// Why the store could not be read, if it could not (then everything was compiled).
    pub read_error: Option<StoreProblem>,
    /// Why the store could not be written, if it could not (then compiled artifacts live only in
    /// memory and the next start compiles them again).
    pub write_error: Option<StoreProblem>,
    /// Artifacts written in this start-up (including those whose durability is not confirmed).
    pub written: usize,
    /// Why the directory's fsync after publishing failed, if it did: the artifacts were stored,
    /// but a crash of the machine could still lose them.
    pub durability_error: Option<StoreProblem>,
    /// Rejected artifacts removed from this store because another store served their component
    /// (otherwise every start would reject them again).
    pub rejected_removed: usize,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
    /// Set when the store's lock file could be opened by other users (who could then hold the
    /// lock) and was made `0600`: what was found and done.
    pub lock_repaired: Option<String>,
}

impl StoreHealth {
    /// True when the store was usable for reading.
    pub fn readable(&self) -> bool {
        self.path.is_some() && self.read_error.is_none()
    }

    /// True when every write the start-up attempted succeeded.
    pub fn writable(&self) -> bool {
        self.path.is_some() && self.write_error.is_none()
    }
}

/// A fingerprint and how many files a store holds for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FingerprintCount {
    /// The engine fingerprint, hex.
    pub fingerprint: String,
    /// Files of that fingerprint.
    pub files: usize,
}

/// What a start-up found in one read-only store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadOnlyStoreReport {
    /// The store directory.
    #[serde(serialize_with = "crate::serial::path")]
    pub path: PathBuf,
    /// Why the store could not be used, if it could not.
    pub error: Option<StoreProblem>,
    /// Components loaded from it.
    pub hits: usize,
    /// When the store holds artifacts only for other engine fingerprints (a bake made on another
    /// CPU, wasmtime version, engine settings or MAC mode): each fingerprint (hex) with its number
    /// of files. Empty otherwise.
    pub other_fingerprints: Vec<FingerprintCount>,
}

impl ReadOnlyStoreReport {
    /// The one-line explanation of a bake that does not fit this engine, if it does not.
    pub fn mismatch(&self, fingerprint: &str) -> Option<String> {
        if self.other_fingerprints.is_empty() {
            return None;
        }
        let files: usize = self.other_fingerprints.iter().map(|c| c.files).sum();
        let theirs: Vec<&str> = self.other_fingerprints.iter().map(|c| c.fingerprint.as_str()).collect();
        Some(format!(
            "read-only store {} holds {files} artifact(s) for fingerprint(s) {}, none for this engine's {fingerprint} (built for another CPU, wasmtime version, engine settings or MAC mode); compiling locally",
            self.path.display(),
            theirs.join(", ")
        ))
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
}

/// What a bake did for one portable CPU profile.
#[derive(Debug, Clone, Serialize)]
pub struct BakeReport {
    /// The profile.
    pub profile: CpuProfile,
    /// Its fingerprint (hex): the artifacts' file names start with it.
    pub fingerprint: String,
    /// Artifacts compiled and stored now.
    pub written: usize,
    /// Artifacts that were already stored and verified.
    pub present: usize,
    /// Components that could not be baked, and why.
    pub failed: Vec<BakeFailure>,
    /// Why a directory fsync after publishing failed, if one did (the artifacts are stored).
    pub durability_error: Option<StoreProblem>,
}

/// A component a bake could not compile or store for a profile.
#[derive(Debug, Clone, Serialize)]
pub struct BakeFailure {
    /// Source SHA-256.
    #[serde(serialize_with = "crate::serial::hex")]
    pub hash: Hash32,
    /// Why.
    pub reason: StoreProblem,
}

impl LoadReport {
    /// The report of `entries`, counted.
    pub(crate) fn new(
        mut entries: Vec<EntryReport>,
        store: StoreHealth,
        read_only: Vec<ReadOnlyStoreReport>,
        elapsed: Duration,
    ) -> LoadReport {
        entries.sort_by_key(|e| e.hash);
        let mut report = LoadReport {
            elapsed,
            store,
            read_only,
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
            log::warn!("artifact store not written: {e}");
        }
        if let Some(e) = &self.store.durability_error {
            log::warn!("artifacts stored, but their durability is not confirmed: {e}");
        }
        for b in &self.baked {
            log::info!("{}", b.summary());
        }
        for ro in &self.read_only {
            if let Some(e) = &ro.error {
                log::warn!("read-only store {} not used: {e}", ro.path.display());
            }
            if let Some(m) = ro.mismatch(&self.store.fingerprint) {
                log::warn!("{m}");
            }
        }
        log::info!(
            "wasm components ready in {:.1} ms: {} from store{}, {} compiled, {} rejected, {} skipped, {} unlisted; store {} (fingerprint {}, {} written)",
            self.elapsed.as_secs_f64() * 1e3,
            self.from_store,
            self.portable_note(),
            self.compiled,
            self.rejected,
            self.skipped,
            self.unlisted,
            self.store
                .path
                .as_ref()
                .map_or_else(|| "disabled".to_owned(), |p| p.display().to_string()),
            self.store.fingerprint,
            self.store.written,
        );
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

    /// The entry for `hash`, if the start-up saw it.
    pub fn entry(&self, hash: &Hash32) -> Option<&EntryReport> {
        self.entries.iter().find(|e| &e.hash == hash)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} components in {:.1} ms: {} from store{}, {} compiled, {} rejected, {} skipped, {} unlisted",
            self.entries.len() - self.unlisted,
            self.elapsed.as_secs_f64() * 1e3,
            self.from_store,
            self.portable_note(),
            self.compiled,
            self.rejected,
            self.skipped,
            self.unlisted
        )?;
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
                    writeln!(f, "store written, durability NOT CONFIRMED: {e}")?;
                }
                if let Some(e) = &self.store.read_error {
                    writeln!(f, "store NOT READ: {e}")?;
                }
                if let Some(e) = &self.store.write_error {
                    writeln!(f, "store NOT WRITTEN: {e}")?;
                }
                if let Some(r) = &self.store.lock_repaired {
                    writeln!(f, "store lock repaired: {r}")?;
                }
            }
        }
        for ro in &self.read_only {
            match (&ro.error, ro.mismatch(&self.store.fingerprint)) {
                (Some(e), _) => writeln!(f, "read-only store {}: NOT USED: {e}", ro.path.display())?,
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

impl BakeReport {
    /// One line for people: what was baked for the profile, and what failed.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "baked {} (fingerprint {}): {} compiled and stored, {} already present",
            self.profile, self.fingerprint, self.written, self.present
        );
        if !self.failed.is_empty() {
            line.push_str(&format!(", {} FAILED", self.failed.len()));
            for fail in &self.failed {
                line.push_str(&format!("\n  {} not baked: {}", hex::encode(fail.hash), fail.reason));
            }
        }
        if let Some(e) = &self.durability_error {
            line.push_str(&format!("\n  stored, durability not confirmed: {e}"));
        }
        line
    }
}
