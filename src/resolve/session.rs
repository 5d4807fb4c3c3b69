//! What a resolution did to and found in the stores, beyond each request: the writable store's
//! health, each read-only store, each CPU profile baked. The node's report shows it; the
//! embedder's door drops it (each result's origin says what a caller needs).

use std::path::PathBuf;

use serde::Serialize;

use crate::error::StoreError;
use crate::key::{Fingerprint, Hash32};
use crate::profile::CpuProfile;
use crate::store::LockRepair;

/// The writable store's health during a start-up.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// The store directory, or `None` when the store is disabled.
    #[serde(serialize_with = "crate::serial::opt_path")]
    pub path: Option<PathBuf>,
    /// The engine fingerprint artifacts were looked up under.
    pub fingerprint: Fingerprint,
    /// True when the store is the default location, which nobody configured (no store given, no
    /// `$WASM_NODE_CACHE_DIR` or `$CACHE_DIRECTORY`): on a read-only root file system it cannot
    /// be made, which is no problem while read-only stores serve every component.
    pub default_location: bool,
    /// Why the store could not be read, if it could not (then everything was compiled).
    pub read_error: Option<StoreError>,
    /// Why the store could not be written, if it could not (then compiled artifacts live only in
    /// memory and the next start compiles them again).
    pub write_error: Option<StoreError>,
    /// Artifacts written in this start-up (including those whose durability is not confirmed).
    pub written: usize,
    /// Why the directory's fsync after publishing failed, if it did: the artifacts were stored,
    /// but a crash of the machine could still lose them.
    pub durability_error: Option<StoreError>,
    /// Rejected artifacts removed from this store because another store served their component
    /// (otherwise every start would reject them again).
    pub rejected_removed: usize,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
    /// Least recently used artifacts removed to keep the store within its size bound, after
    /// this call published.
    pub evicted: usize,
    /// Set when the store's lock file failed a check (others could open it, another owner, a
    /// link) and was replaced: what was found and done. JSON: a sentence.
    #[serde(serialize_with = "crate::serial::opt_display")]
    pub lock_repaired: Option<LockRepair>,
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
#[non_exhaustive]
pub struct FingerprintCount {
    /// The engine fingerprint.
    pub fingerprint: Fingerprint,
    /// Files of that fingerprint.
    pub files: usize,
}

/// What a start-up found in one read-only store.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ReadOnlyStoreReport {
    /// The store directory.
    #[serde(serialize_with = "crate::serial::path")]
    pub path: PathBuf,
    /// Why the store could not be used, if it could not.
    pub error: Option<StoreError>,
    /// Components loaded from it.
    pub hits: usize,
    /// Whether it holds artifacts this engine loads (its fingerprint's, or a portable profile's
    /// that this CPU runs); `None` when it was not looked at (everything came from the writable
    /// store; see [`Builder::check_read_only_stores`](crate::Builder::check_read_only_stores)).
    pub serves: Option<bool>,
    /// When the store holds artifacts only for other engine fingerprints (a bake made by another
    /// build, wasmtime version, engine settings or MAC mode): each fingerprint (hex) with its
    /// number of files. Empty otherwise.
    pub other_fingerprints: Vec<FingerprintCount>,
    /// With `other_fingerprints`: wasmtime's own refusal of one of those artifacts by this
    /// engine, which names the setting that differs (concurrency support, a wasm feature, an ISA
    /// flag), or why wasmtime would accept it and the fingerprints still differ.
    pub refusal: Option<String>,
}

impl ReadOnlyStoreReport {
    /// The one-line explanation of a bake that does not fit this engine, if it does not.
    pub fn mismatch(&self, fingerprint: &Fingerprint) -> Option<String> {
        if self.other_fingerprints.is_empty() {
            return None;
        }
        let files: usize = self.other_fingerprints.iter().map(|c| c.files).sum();
        let theirs: Vec<String> = self.other_fingerprints.iter().map(|c| c.fingerprint.to_hex()).collect();
        let mut line = format!(
            "read-only store {} holds {files} artifact(s) for fingerprint(s) {}, none for this engine's {fingerprint} (built by another build of the node, wasmtime version, engine settings, CPU or MAC mode); compiling locally",
            self.path.display(),
            theirs.join(", ")
        );
        if let Some(why) = &self.refusal {
            line.push_str("; wasmtime says of one of them: ");
            line.push_str(why);
        }
        Some(line)
    }
}

/// What a bake did for one portable CPU profile.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BakeReport {
    /// The profile.
    pub profile: CpuProfile,
    /// Its fingerprint: the artifacts' file names start with it (all zeros when the profile's
    /// engine could not be built).
    pub fingerprint: Fingerprint,
    /// Artifacts compiled and stored now.
    pub written: usize,
    /// Artifacts that were already stored.
    pub present: usize,
    /// Components that could not be baked, and why.
    pub failed: Vec<BakeFailure>,
    /// Why a directory fsync after publishing failed, if one did (the artifacts are stored).
    pub durability_error: Option<StoreError>,
}

/// A component a bake could not compile or store for a profile.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BakeFailure {
    /// Source SHA-256.
    #[serde(serialize_with = "crate::serial::hex")]
    pub hash: Hash32,
    /// Why.
    pub reason: StoreError,
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
                line.push_str(&format!(
                    "\n  {} not baked: {}",
                    hex::encode(fail.hash),
                    fail.reason.message()
                ));
            }
        }
        if let Some(e) = &self.durability_error {
            line.push_str(&format!("\n  stored, durability not confirmed: {}", e.message()));
        }
        line
    }
}

/// Everything a resolution records beyond its requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    pub health: StoreHealth,
    pub read_only: Vec<ReadOnlyStoreReport>,
    pub baked: Vec<BakeReport>,
    /// Wall time of the compile and bake phases.
    pub compile_time: std::time::Duration,
    /// Time spent waiting for locks, summed over every wait (in parallel ones too).
    pub lock_wait: std::time::Duration,
}
