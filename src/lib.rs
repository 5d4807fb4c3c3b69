//! A persistent, locked, verified on-disk store of precompiled WebAssembly components, so that a
//! node restart deserializes artifacts in milliseconds instead of recompiling every component.
//!
//! The node's struct is unchanged ([`WasmNodeCache`], with its public fields and associated
//! functions); what changes is how its `HashMap<[u8; 32], Component>` is filled. See the README,
//! "Replacing the node's wasm.rs".
//!
//! Layout of the crate:
//! - [`key`]: what names an artifact (source SHA-256, engine fingerprint);
//! - [`artifact`]: the on-disk format and its verification (pure functions over bytes);
//! - [`store`]: the directory handle, its lock, atomic publication, verified loading, maintenance;
//! - `startup`: one start-up (load, read sources, re-check under the lock, compile, publish);
//! - [`report`]: what a start-up did;
//! - [`ArtifactStore`]: the store's door for any wasmtime embedder (components and core modules),
//!   on which the node's start-up is built too; [`StoreError`] its errors;
//! - `cache`, `builder`: the public [`WasmNodeCache`] and its [`Builder`];
//! - [`profile`]: CPU profiles, the portable engines a bake compiles for;
//! - `engine`, `whitelist`, `source`, `authkey`: the node's settings and inputs;
//! - `trusted_path`: walking a path as given, checking every directory and link on the way, and
//!   checking files on an `O_PATH` descriptor before opening them.

// Declared once for the whole crate: the store relies on descriptor-relative file operations
// (`openat` and friends), `flock`, Unix ownership and modes, and on Linux on `/proc/self/fd` and
// sealed memfds (other Unixes take the copy path).
#[cfg(not(unix))]
compile_error!("wasm-node-cache supports Unix only (Linux is where its guarantees are tested)");

pub mod artifact;
mod artifact_store;
mod authkey;
mod builder;
mod cache;
mod compiled;
mod defaults;
mod engine;
mod error;
pub mod key;
pub mod profile;
pub mod report;
mod serial;
mod source;
mod startup;
pub mod store;
mod trusted_path;
mod whitelist;

pub use artifact_store::{ArtifactStore, ArtifactStoreBuilder, Loaded, Origin};
pub use authkey::load_key;
pub use builder::Builder;
pub use cache::WasmNodeCache;
pub use defaults::{
    DEFAULT_BINARY_ROOT, DEFAULT_LOCK_TIMEOUT, DEFAULT_WHITELIST_FILE, KEY_FILE_ENV, READ_ONLY_DIRS_ENV, STORE_DIR_ENV,
    default_store_dir, resolve_key_file, resolve_read_only_stores,
};
pub use engine::{engine_fingerprint, init_wasm_engine, node_config};
pub use error::StoreError;
pub use key::{ArtifactKey, Fingerprint, Hash32, Kind, parse_hash};
pub use profile::CpuProfile;
pub use report::{
    BakeFailure, BakeReport, EntryReport, FingerprintCount, LoadReport, Outcome, PortableRefusal, ReadOnlyStoreReport,
    StoreHealth, StoreWrite,
};
pub use source::{MAX_SOURCE_LEN, SkipReason, sha256};
pub use startup::{Progress, ProgressFn};
#[cfg(feature = "fault-injection")]
pub use store::Fault;
pub use whitelist::{parse_whitelist, read_whitelist_file, whitelist_all_in_dir};
