//! [`ArtifactStore::prune`](crate::ArtifactStore::prune) and
//! [`ArtifactStore::clear`](crate::ArtifactStore::clear): their options and report, which the
//! store's maintenance fills directly.

pub use crate::store::maintenance::{
    PruneOptions, PruneReason, PruneReport, RemovalFailure, RemovedArtifact, RemovedFile,
};
