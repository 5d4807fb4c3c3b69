//! Every store scenario of the node's start-up, run through both doors: the node's
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
    truncated_artifact,
    swapped_artifact,
    #[ignore = "needs root: gives an artifact to uid 65534"]
    foreign_artifact,
    mac_without_valid_tag,
    read_only_store_served,
    full_disk,
);
