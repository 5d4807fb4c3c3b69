//! [`ArtifactStore::verify`](crate::ArtifactStore::verify): the full check of every artifact this
//! engine would load, exactly as a start-up checks it; changes nothing.

use std::path::PathBuf;

use serde::Serialize;

use super::status::ForeignFileStatus;
use crate::error::StoreError;
use crate::key::{Fingerprint, Hash32, Kind};
use crate::profile::CpuProfile;
use crate::serial;
use crate::store::{Rejection, Store};

/// What [`ArtifactStore::verify`](crate::ArtifactStore::verify) found: the writable store, then
/// each read-only store.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The writable store.
    pub store: StoreVerification,
    /// Each read-only store, in the order configured.
    pub read_only_stores: Vec<ReadOnlyVerification>,
}

impl VerifyReport {
    /// Bad artifacts in every store, artifacts of this build that could not be checked (the other
    /// MAC mode's), plus read-only stores that could not be opened: zero when everything a node
    /// would load is sound.
    pub fn problems(&self) -> usize {
        self.store.bad()
            + self.store.other_mode
            + self
                .read_only_stores
                .iter()
                .map(|r| match r {
                    ReadOnlyVerification::Checked(s) => s.bad() + s.other_mode,
                    ReadOnlyVerification::Unusable { .. } => 1,
                })
                .sum::<usize>()
    }
}

/// A read-only store: its check, or why it could not be opened.
#[derive(Debug, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ReadOnlyVerification {
    /// Opened and checked.
    Checked(StoreVerification),
    /// Missing or refused.
    Unusable {
        /// The directory as configured.
        #[serde(serialize_with = "serial::path")]
        path: PathBuf,
        /// Why it could not be opened ([`StoreError::Missing`] or [`StoreError::Refused`]);
        /// JSON: a store problem, `{"kind", "message"}`.
        error: StoreError,
    },
}

/// One store's check.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct StoreVerification {
    /// The directory, as opened.
    #[serde(serialize_with = "serial::path")]
    pub path: PathBuf,
    /// True for a read-only store.
    pub read_only: bool,
    /// This build's engine fingerprint, in the store's mode.
    pub fingerprint: Fingerprint,
    /// True in MAC mode.
    pub keyed: bool,
    /// Every artifact this build serves, sorted by file name, with its verdict: those of
    /// [`StoreVerification::fingerprint`] and those of this build's portable CPU profiles (a
    /// bake's, served to hosts of other CPUs).
    pub artifacts: Vec<ArtifactCheck>,
    /// Artifacts of other fingerprints (another wasmtime, engine settings or build): counted, not
    /// checked (never loaded by this build).
    pub other_fingerprints: usize,
    /// Artifacts of this build in the other MAC mode: a node with (or without) the key loads
    /// them, and they cannot be checked without that key. Counted as unchecked: `verify` exits 1
    /// until it is given the mode they were written in.
    pub other_mode: usize,
    /// Files that are not the store's: never loaded, removed by `prune --stale`.
    pub foreign_files: Vec<ForeignFileStatus>,
}

impl StoreVerification {
    /// How many artifacts failed the check.
    pub fn bad(&self) -> usize {
        self.artifacts.iter().filter(|a| a.problem.is_some()).count()
    }

    /// Checks `store`'s artifacts of its own fingerprint and of `portable` (this build's portable
    /// profiles, in the store's mode).
    pub(crate) fn check(
        store: &Store,
        portable: &[(CpuProfile, Fingerprint)],
        other_mode: &[Fingerprint],
    ) -> Result<StoreVerification, StoreError> {
        let list_error = |source| StoreError::io(store.dir(), "list", source);
        let entries = store.entries().map_err(list_error)?;
        let profile_of = |fp: Fingerprint| {
            if fp == store.fingerprint() {
                Some(CpuProfile::Native)
            } else {
                portable.iter().find(|(_, p)| *p == fp).map(|(profile, _)| *profile)
            }
        };
        let (current, other): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| profile_of(e.key.fingerprint).is_some());
        let other_mode = other.iter().filter(|e| other_mode.contains(&e.key.fingerprint)).count();
        let artifacts = current
            .into_iter()
            .map(|entry| {
                // The same checks a start-up makes before it deserializes a portable artifact.
                let problem = store.with_fingerprint(entry.key.fingerprint).check(&entry.key).err();
                if let Some(reason) = &problem {
                    log::info!("artifact {} is bad: {reason}", entry.path.display());
                }
                ArtifactCheck {
                    hash: entry.key.source,
                    kind: entry.key.kind,
                    profile: profile_of(entry.key.fingerprint).unwrap_or(CpuProfile::Native),
                    writable: entry.has_write_bit(),
                    file: entry.path,
                    size: entry.size,
                    mode: entry.mode,
                    problem,
                }
            })
            .collect();
        let foreign_files = store.foreign_files().map_err(list_error)?;
        Ok(StoreVerification {
            path: store.dir().to_path_buf(),
            read_only: store.is_read_only(),
            fingerprint: store.fingerprint(),
            keyed: store.is_keyed(),
            artifacts,
            other_fingerprints: other.len() - other_mode,
            other_mode,
            foreign_files,
        })
    }
}

/// One artifact's verdict.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct ArtifactCheck {
    /// SHA-256 of the source.
    #[serde(serialize_with = "serial::hex")]
    pub hash: Hash32,
    /// Component or core module.
    pub kind: Kind,
    /// The CPU profile it was compiled for: `native` (this engine's own fingerprint) or a
    /// portable profile of this build.
    pub profile: CpuProfile,
    /// The file.
    #[serde(serialize_with = "serial::path")]
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (JSON: octal text).
    #[serde(serialize_with = "serial::octal_mode")]
    pub mode: u32,
    /// Passes, but anyone has write permission: a write into a loaded artifact changes the nodes
    /// running it.
    pub writable: bool,
    /// Why a start-up would refuse it; `None` when it is sound.
    #[serde(serialize_with = "serial::opt_display")]
    pub problem: Option<Rejection>,
}
