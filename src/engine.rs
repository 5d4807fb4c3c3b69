//! The node's engine: the determinism settings every artifact is compiled under.

use wasmtime::{Config, Engine};

/// The wasmtime configuration the node runs with.
///
/// Determinism matters more than speed here: every node must compute the same result and burn the
/// same fuel for the same input.
pub fn node_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(true)
        .relaxed_simd_deterministic(true);
    // The node's own wasm.rs, which this crate replaces, also set `cranelift_pcc(true)`
    // (proof-carrying code checks). That option no longer exists in current wasmtime (removed
    // upstream), so there is nothing to set.
    config
}

/// Builds the node's engine from [`node_config`].
pub fn init_wasm_engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(&node_config())?)
}
