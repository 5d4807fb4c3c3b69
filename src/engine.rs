//! The node's engine (the determinism settings every artifact is compiled under), and the
//! fingerprint that names what any engine compiles.

use std::hash::{Hash, Hasher};

use wasmtime::{Config, Engine};

use crate::artifact::FORMAT_VERSION;
use crate::key::Fingerprint;

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

/// The fingerprint of `engine` for a store in the given authentication mode: what an artifact must
/// have been compiled under to be loaded by this engine.
pub fn engine_fingerprint(engine: &Engine, keyed: bool) -> Fingerprint {
    let mut h = Blake3Hasher(blake3::Hasher::new_derive_key(
        "wasm-node-cache 2026-11-25 engine fingerprint v1",
    ));
    // `precompile_compatibility_hash` covers triple, compiler and ISA flags, tunables, wasm
    // features and wasmtime's own version. It feeds `Hasher::write_*` calls whose byte order is
    // the host's; a store is per machine, and wasmtime re-checks compatibility on load anyway.
    engine.precompile_compatibility_hash().hash(&mut h);
    FORMAT_VERSION.hash(&mut h);
    keyed.hash(&mut h);
    std::env::consts::ARCH.hash(&mut h);
    std::env::consts::OS.hash(&mut h);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.0.finalize().as_bytes()[..16]);
    Fingerprint(out)
}

/// Adapts BLAKE3 to `std::hash::Hasher`, which is stable across runs (unlike `DefaultHasher`,
/// whose algorithm std does not promise to keep).
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.0.finalize().as_bytes()[..8]);
        u64::from_le_bytes(a)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_settings_and_mode() {
        let a = Engine::default();
        let mut c = wasmtime::Config::new();
        c.cranelift_nan_canonicalization(true);
        let b = Engine::new(&c).expect("engine");
        assert_eq!(
            engine_fingerprint(&a, false),
            engine_fingerprint(&Engine::default(), false)
        );
        assert_ne!(engine_fingerprint(&a, false), engine_fingerprint(&b, false));
        assert_ne!(engine_fingerprint(&a, false), engine_fingerprint(&a, true));
    }
}
