//! Every store damage scenario, run through both doors: the node's
//! (`WasmNodeCache`) and the embedder's (`ArtifactStore`). The scenarios are in
//! `tests/common/scenarios.rs`, written once.

use crate::common;

use common::scenarios::{self, Door};

macro_rules! through_both_doors {
    ($($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        mod node {
            use super::*;
            $( #[test] $(#[$attr])* fn $scenario() { scenarios::$scenario(Door::Node) } )*
        }
        mod embedder {
            use super::*;
            $( #[test] $(#[$attr])* fn $scenario() { scenarios::$scenario(Door::Embedder) } )*
        }
    };
}

through_both_doors!(
    corrupt_artifact,
    flipped_trailer_byte,
    truncated_artifact,
    empty_artifact,
    garbage_artifact,
    swapped_artifact,
    #[ignore = "needs root: gives an artifact to uid 65534"]
    foreign_artifact,
    artifact_writable_by_others,
    symlinked_artifact,
    fifo_artifact,
    directory_artifact,
    non_empty_directory_artifact,
    missing_artifact,
    mac_without_valid_tag,
    mac_plain_artifact_of_another_component,
    mac_under_another_key,
    plain_artifacts_are_not_mac_candidates,
    symlinked_lock_file,
    read_only_store_served,
    corrupt_baked_artifact,
    #[ignore = "needs root: gives a baked artifact to uid 65534"]
    foreign_baked_artifact,
    corrupt_artifact_beside_a_bake,
    full_disk,
    read_only_file_system,
    directory_fsync_fails,
    #[ignore = "needs root: mounts a small tmpfs"]
    real_full_disk,
    #[ignore = "needs root: bind-mounts the store read-only"]
    read_only_mount,
);
