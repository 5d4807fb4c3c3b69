//! A persistent, locked, verified on-disk store of precompiled WebAssembly components, so that a
//! node restart deserializes artifacts in milliseconds instead of recompiling every component.
//!
//! The map the node uses is unchanged (`HashMap<[u8; 32], Component>` in [`WasmNodeCache`]); what
//! changes is how it is filled, see [`startup`](crate::WasmNodeCache::builder) and the README.
//!
//! Layout of the crate:
//! - [`key`]: what names an artifact (source SHA-256, engine fingerprint);
//! - [`artifact`]: the on-disk format and its verification (pure functions over bytes);
//! - [`store`]: the directory, its lock, atomic publication, verified loading;
//! - `startup`: one start-up (load, re-check under the lock, compile, publish);
//! - [`report`]: what a start-up did;
//! - `cache`: the public [`WasmNodeCache`] and its [`Builder`];
//! - `engine`, `whitelist`, `source`, `authkey`: the node's settings and inputs.

pub mod artifact;
mod authkey;
mod cache;
mod engine;
pub mod key;
pub mod report;
mod source;
mod startup;
pub mod store;
mod whitelist;

pub use authkey::load_key;
pub use cache::{
    Builder, DEFAULT_BINARY_ROOT, DEFAULT_LOCK_TIMEOUT, DEFAULT_WHITELIST_FILE, KEY_FILE_ENV, STORE_DIR_ENV,
    WasmNodeCache, default_store_dir, resolve_key_file,
};
pub use engine::{init_wasm_engine, node_config};
pub use key::{ArtifactKey, Fingerprint, Hash32, parse_hash};
pub use report::{EntryReport, LoadReport, Outcome, StoreHealth};
pub use source::{SkipReason, sha256};
pub use startup::{Progress, ProgressFn};
pub use store::WriteFault;
pub use whitelist::{parse_whitelist, read_whitelist_file, whitelist_all_in_dir};
