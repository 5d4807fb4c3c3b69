//! [`ArtifactStore::prune`](crate::ArtifactStore::prune) and
//! [`ArtifactStore::clear`](crate::ArtifactStore::clear): their options and report.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

use super::status::ForeignFileStatus;
use crate::key::{Fingerprint, Hash32, Kind};
use crate::serial;
use crate::store::StoredEntry;
use crate::store::maintenance;
pub use crate::store::maintenance::PruneReason;

/// What [`ArtifactStore::prune`](crate::ArtifactStore::prune) removes. With every field at its
/// default, nothing is removed.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove artifacts compiled by another engine fingerprint (another wasmtime version, other
    /// settings, the other authentication mode), which this engine can never load, and files that
    /// are not the store's. This build's portable CPU profiles are current and kept.
    pub stale: bool,
    /// When set, remove artifacts whose source hash is not in the set.
    pub keep: Option<HashSet<Hash32>>,
    /// After the removals above, remove the oldest artifacts (by publish time) until the rest
    /// take at most this many bytes.
    pub max_size: Option<u64>,
    /// Decide and report, but remove nothing and take no lock.
    pub dry_run: bool,
    /// With `stale` and no key, remove this build's MAC-mode artifacts too. Without it they are
    /// kept: maintenance run without the node's key must not delete what a MAC-mode node loads.
    pub force: bool,
}

/// What [`ArtifactStore::prune`](crate::ArtifactStore::prune) or
/// [`ArtifactStore::clear`](crate::ArtifactStore::clear) removed (in a dry run: would remove).
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct PruneReport {
    /// Each removed artifact with the reason.
    pub removed: Vec<RemovedArtifact>,
    /// Files that are not the store's, removed by `stale`.
    pub foreign_removed: Vec<ForeignFileStatus>,
    /// Each file that should have gone but could not be removed; the others were still removed.
    pub failed: Vec<RemovalFailure>,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
    /// Sum of the sizes of the removed artifacts.
    pub bytes_freed: u64,
    /// Artifacts left in the store (not counting failures).
    pub kept: usize,
    /// Of `kept`, artifacts of this build in MAC mode that `stale` kept because it ran without
    /// the key (a MAC-mode node loads them); `force` removes them.
    pub kept_other_mode: usize,
    /// True when nothing was removed: the report says what would have been.
    pub dry_run: bool,
}

impl PruneReport {
    /// True when everything selected was removed.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }

    pub(crate) fn from_removal(r: maintenance::PruneReport, dry_run: bool) -> PruneReport {
        let mut failed = Vec::new();
        failed.extend(r.foreign_failed.into_iter().map(|(f, error)| RemovalFailure {
            file: f.path,
            what: RemovedFile::Foreign,
            error,
        }));
        failed.extend(r.failed.into_iter().map(|(e, error)| RemovalFailure {
            file: e.path,
            what: RemovedFile::Artifact,
            error,
        }));
        failed.extend(r.temp_files_failed.into_iter().map(|(file, error)| RemovalFailure {
            file,
            what: RemovedFile::Temporary,
            error,
        }));
        PruneReport {
            removed: r
                .removed
                .into_iter()
                .map(|(e, reason)| RemovedArtifact::new(e, reason))
                .collect(),
            foreign_removed: r
                .foreign_removed
                .into_iter()
                .map(|f| ForeignFileStatus {
                    file: f.path,
                    size: f.size,
                    directory: f.is_dir,
                })
                .collect(),
            failed,
            temp_files_removed: r.temp_files_removed,
            bytes_freed: r.bytes_freed,
            kept: r.kept,
            kept_other_mode: r.kept_other_mode,
            dry_run,
        }
    }
}

/// An artifact removed (or to be removed), and why.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct RemovedArtifact {
    /// SHA-256 of the source.
    #[serde(serialize_with = "serial::hex")]
    pub hash: Hash32,
    /// Component or core module.
    pub kind: Kind,
    /// The fingerprint it was compiled under.
    #[serde(serialize_with = "serial::fingerprint")]
    pub fingerprint: Fingerprint,
    /// The file.
    #[serde(serialize_with = "serial::path")]
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Why it went.
    pub reason: PruneReason,
}

impl RemovedArtifact {
    fn new(e: StoredEntry, reason: PruneReason) -> RemovedArtifact {
        RemovedArtifact {
            hash: e.key.source,
            kind: e.key.kind,
            fingerprint: e.key.fingerprint,
            file: e.path,
            size: e.size,
            reason,
        }
    }
}

/// What kind of file a removal failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemovedFile {
    /// An artifact.
    Artifact,
    /// A file that is not the store's.
    Foreign,
    /// A leftover temporary file.
    Temporary,
}

/// A file that could not be removed.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct RemovalFailure {
    /// The file.
    #[serde(serialize_with = "serial::path")]
    pub file: PathBuf,
    /// What it is.
    pub what: RemovedFile,
    /// Why `unlink` failed.
    #[serde(serialize_with = "serial::display")]
    pub error: std::io::Error,
}
