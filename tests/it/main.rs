//! The integration tests, one crate so that wasmtime is linked once. `tests/node_compat.rs`, the
//! node's own code, stays a binary of its own, as the node builds it.

#[path = "../common/mod.rs"]
mod common;

mod alert_rules;
mod cli;
mod crash_and_concurrency;
mod deploy_recipe;
mod deployments;
mod doc_sessions;
mod embedder_door;
mod engine_identity;
mod fuzz_artifact;
mod hostile_store;
mod metrics_file;
mod mixer_component;
mod operator_door;
mod operator_health;
mod path_trust;
mod portable_profiles;
mod read_only_stores;
mod shipped_components;
mod store;
mod store_identity;
mod store_scenarios;
mod systemd_units;
mod trailer_guard;
mod untrusted_writers;
