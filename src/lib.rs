//! A persistent, locked, verified on-disk store of precompiled WebAssembly components, so that a
//! node restart deserializes artifacts in milliseconds instead of recompiling every component.
//!
//! The node's struct is unchanged ([`WasmNodeCache`], with its public fields and associated
//! functions); what changes is how its `HashMap<[u8; 32], Component>` is filled. See the README,
//! "Replacing the node's wasm.rs".
//!
//! Three doors, one store:
//! - the node's: [`WasmNodeCache`] and its [`Builder`], with a [`LoadReport`];
//! - the embedder's: [`ArtifactStore`] (components and core modules for any wasmtime engine);
//! - the operator's: [`ArtifactStore::status`], [`ArtifactStore::verify`],
//!   [`ArtifactStore::prune`], [`ArtifactStore::clear`], each returning a report that serializes
//!   to the CLI's JSON.
//!
//! Every store operation fails with a [`StoreError`]; a damaged store is never an error for a
//! valid wasm (it is compiled, and the report or [`Origin`] says why).
//!
//! Layout of the crate (private modules): `key` (what names an artifact), `artifact` (the
//! on-disk format: `trailer` and `seal`, pure functions over bytes), `store` (the directory
//! handle, its lock, publication, verified loading, maintenance), `artifact_store` (the
//! embedder's door and the lookups both doors share), `startup` (the node's start-up),
//! `operator` (status, verify, prune, clear), `report`, `cache` and `builder` (the node's door),
//! `defaults` (default paths and environment), `engine` (the node's settings and the engine
//! fingerprint), `profile` (CPU profiles), `whitelist`, `source`, `authkey`, `trusted_path`
//! (walking a path as given, checking every directory and link on the way) with `path_refusal`
//! (why it refused), `error` ([`StoreError`]) and `problem` ([`StoreProblem`], a failure as a
//! report holds it).

// Declared once for the whole crate: the store relies on descriptor-relative file operations
// (`openat` and friends), `flock`, Unix ownership and modes, and on Linux on `/proc/self/fd` and
// sealed memfds (other Unixes take the copy path).
#[cfg(not(unix))]
compile_error!("wasm-node-cache supports Unix only (Linux is where its guarantees are tested)");

// Some items are used only by the test-only `testing` module.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code, unused_imports))]
mod artifact;
mod artifact_store;
mod authkey;
mod builder;
mod cache;
#[cfg(feature = "cli")]
pub mod cli;
mod compiled;
mod defaults;
mod engine;
mod error;
mod key;
mod operator;
mod path_refusal;
mod problem;
mod profile;
mod report;
mod serial;
mod source;
mod startup;
// Some items are used only by the test-only `testing` module.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code, unused_imports))]
mod store;
mod trusted_path;
mod whitelist;

pub use artifact::ArtifactError;
pub use artifact_store::{ArtifactStore, ArtifactStoreBuilder, Loaded, Origin};
pub use authkey::{KeyError, load_key};
pub use builder::Builder;
pub use cache::WasmNodeCache;
pub use defaults::{
    DEFAULT_BINARY_ROOT, DEFAULT_LOCK_TIMEOUT, DEFAULT_WHITELIST_FILE, KEY_FILE_ENV, READ_ONLY_DIRS_ENV, STORE_DIR_ENV,
    default_store_dir, resolve_key_file, resolve_read_only_stores,
};
pub use engine::{engine_fingerprint, init_wasm_engine, node_config};
pub use error::StoreError;
pub use key::{ArtifactKey, Fingerprint, Hash32, Kind, ParseHashError, parse_hash};
pub use operator::{
    ArtifactCheck, ArtifactStatus, FingerprintStatus, ForeignFileStatus, HeaderProblem, PruneOptions, PruneReason,
    PruneReport, ReadOnlyStatus, ReadOnlyVerification, RemovalFailure, RemovedArtifact, RemovedFile, StatusReport,
    StoreStatus, StoreVerification, UtcDate, VerifyReport,
};
pub use path_refusal::PathRefusal;
pub use problem::{ProblemKind, StoreProblem};
pub use profile::{CpuProfile, ProfileError, ProfileStatus, host_triple, profile_statuses};
pub use report::{
    BakeFailure, BakeReport, EntryReport, FingerprintCount, LoadReport, Outcome, PortableRefusal, ReadOnlyStoreReport,
    StoreHealth, StoreWrite,
};
pub use source::{MAX_SOURCE_LEN, SkipReason, sha256};
pub use startup::{Progress, ProgressFn};
#[cfg(feature = "fault-injection")]
pub use store::Fault;
pub use store::{LoadPath, LockError, LockState, Rejection};

/// The store's internals for tests and benches that forge trailers, open stores by hand or inject
/// faults: only with the test-only `fault-injection` feature (the crate's dev-dependency on
/// itself turns it on), never part of the default API.
#[cfg(feature = "fault-injection")]
pub mod testing {
    pub use crate::artifact::{
        FORMAT_VERSION, MAX_ARTIFACT_LEN, Sealer, TRAILER_LEN, Trailer, check_binding, decode_trailer, encode_trailer,
        payload_checksum, verify,
    };
    pub use crate::profile::{portable_fingerprints, runs_on};
    pub use crate::store::{
        ARTIFACT_MODE, Exclusive, Fault, ForeignFile, LockGuard, LockKind, Lookup, Published, Store, StoredEntry,
        TEMP_PREFIX, deadline_after,
    };
}
pub use whitelist::{BadLineCause, WhitelistError, parse_whitelist, read_whitelist_file, whitelist_all_in_dir};
