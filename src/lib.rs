//! A persistent, locked, verified on-disk store of precompiled WebAssembly components, so that a
//! node restart deserializes artifacts in milliseconds instead of recompiling every component.
//!
//! The node's struct is unchanged ([`WasmNodeCache`], with its public fields and associated
//! functions); what changes is how its `HashMap<[u8; 32], Component>` is filled. See the README,
//! "Replacing the node's wasm.rs".
//!
//! Three doors, one store, one pipeline:
//! - the node's: [`WasmNodeCache`] and its [`Builder`], with a [`LoadReport`] ([`node`]);
//! - the embedder's: [`ArtifactStore`] (components and core modules for any wasmtime engine,
//!   [`artifact_store`]);
//! - the operator's: [`ArtifactStore::status`], [`ArtifactStore::verify`],
//!   [`ArtifactStore::prune`], [`ArtifactStore::clear`] ([`operator`]), each returning a report
//!   that serializes to the CLI's JSON, and the CLI itself ([`cli`], feature `cli`).
//!
//! Every store operation fails with a [`StoreError`] ([`error`] holds its typed causes); a damaged
//! store is never an error for a valid wasm (it is compiled, and the report or [`Origin`] says
//! why). Defaults, environment variables and the whitelist format are in [`config`].
//!
//! Layers, each using only those below it (the private modules in parentheses):
//!
//! ```text
//! cli                      the operator's commands: the public API, plus the crate's escaping of
//!                          text others chose and its one writer of a file outside the store
//! node                     the node's door: a client of the embedder's
//! operator                 status, verify, prune, clear: the embedder's door's maintenance methods
//! artifact_store           the embedder's door: opens the stores (with_config), a thin client of (resolve)
//! (resolve)                THE pipeline: lookups, sources, compile, publish, bake
//! error                    StoreError, made from the store's typed Failure in one place
//! (store)                  one directory: marker, lock, load + verify, publish, maintenance
//! (artifact)               the on-disk format: trailer and seal, pure functions over bytes
//! (fs)                     the path walk, its refusals, the directory handle
//! (engine, profile, key, authkey, source, whitelist, compiled, serial, escape), config:
//!                          shared vocabulary at the bottom
//! ```

// Declared once for the whole crate: the store relies on descriptor-relative file operations
// (`openat` and friends), `flock`, Unix ownership and modes, and on Linux on `/proc/self/fd`,
// open-file-description locks and sealed memfds (other Unixes take slower or weaker paths).
#[cfg(not(unix))]
compile_error!("wasm-node-cache supports Unix only (Linux is where its guarantees are tested)");

mod artifact;
pub mod artifact_store;
mod authkey;
#[cfg(feature = "cli")]
pub mod cli;
mod compiled;
pub mod config;
mod engine;
pub mod error;
mod escape;
mod fs;
mod key;
pub mod node;
pub mod operator;
mod profile;
mod resolve;
mod serial;
mod source;
mod store;
mod whitelist;

pub use artifact_store::{ArtifactStore, ArtifactStoreBuilder, Loaded, Origin};

// The README's examples compile, and its embedder's example runs, as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// What callers may match or read can grow without breaking them: every public enum and report
/// struct is `#[non_exhaustive]`, so an exhaustive `match` outside the crate does not compile...
///
/// ```compile_fail
/// fn name(kind: wasm_node_cache::Kind) -> &'static str {
///     match kind {
///         wasm_node_cache::Kind::Component => "component",
///         wasm_node_cache::Kind::Module => "module",
///     }
/// }
/// ```
///
/// ...and neither does building a report by hand...
///
/// ```compile_fail
/// let loaded = wasm_node_cache::Loaded {
///     value: (),
///     origin: todo!(),
///     hash: [0; 32],
///     kind: wasm_node_cache::Kind::Component,
/// };
/// ```
///
/// ...while a `match` with a wildcard arm, as every caller writes it, does:
///
/// ```
/// fn name(kind: wasm_node_cache::Kind) -> &'static str {
///     match kind {
///         wasm_node_cache::Kind::Component => "component",
///         wasm_node_cache::Kind::Module => "module",
///         _ => "other",
///     }
/// }
/// assert_eq!(name(wasm_node_cache::Kind::Module), "module");
/// ```
#[cfg(doctest)]
struct NonExhaustive;
pub use engine::{init_wasm_engine, node_config};
pub use error::StoreError;
pub use key::{Fingerprint, Hash32, Kind};
pub use node::{Builder, LoadReport, WasmNodeCache};
pub use profile::CpuProfile;

/// The store's internals for tests and benches that forge trailers, open stores by hand or inject
/// faults: only with the test-only `fault-injection` feature (the crate's dev-dependency on
/// itself turns it on), never part of the default API.
#[cfg(feature = "fault-injection")]
pub mod testing {
    pub use crate::artifact::{
        FORMAT_VERSION, MAX_ARTIFACT_LEN, Sealer, TRAILER_LEN, Trailer, check_binding, decode_trailer, encode_trailer,
        payload_checksum, verify,
    };
    pub use crate::key::ArtifactKey;
    pub use crate::profile::{portable_fingerprints, runs_on};
    pub use crate::store::{
        ARTIFACT_MODE, Exclusive, Fault, ForeignFile, LockGuard, Lookup, Published, Store, StoredEntry, TEMP_PREFIX,
        deadline_after,
    };
}
