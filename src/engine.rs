//! The node's engine (the determinism settings every artifact is compiled under), and the
//! fingerprint that names what any engine compiles.

use std::hash::{Hash, Hasher};

use wasmtime::{Config, Engine, OptLevel, Strategy, WasmBacktraceDetails, WasmFeatures};

use crate::artifact::FORMAT_VERSION;
use crate::key::Fingerprint;

/// The wasm proposals the node's engine accepts: exactly these, whatever cargo features the
/// build gives wasmtime. They are what wasmtime 48 enables by default in this crate's own build
/// (`default-features = false`), so artifacts stored before the set was pinned stay current.
/// Threads, exceptions, GC types, stack switching and the component model's async and threading
/// extensions are off: wasmtime turns them on with its `threads`, `gc` and
/// `component-model-async` cargo features, which any other crate of a node's dependency tree may
/// enable (cargo unifies features).
pub(crate) const NODE_WASM_FEATURES: WasmFeatures = WasmFeatures::MUTABLE_GLOBAL
    .union(WasmFeatures::SATURATING_FLOAT_TO_INT)
    .union(WasmFeatures::SIGN_EXTENSION)
    .union(WasmFeatures::REFERENCE_TYPES)
    .union(WasmFeatures::MULTI_VALUE)
    .union(WasmFeatures::BULK_MEMORY)
    .union(WasmFeatures::SIMD)
    .union(WasmFeatures::RELAXED_SIMD)
    .union(WasmFeatures::TAIL_CALL)
    .union(WasmFeatures::FLOATS)
    .union(WasmFeatures::MULTI_MEMORY)
    .union(WasmFeatures::MEMORY64)
    .union(WasmFeatures::EXTENDED_CONST)
    .union(WasmFeatures::FUNCTION_REFERENCES)
    // The GC proposal's flag without `GC_TYPES`: its types are refused at validation. This is the
    // combination wasmtime's defaults give a build without its `gc` feature.
    .union(WasmFeatures::GC)
    .union(WasmFeatures::COMPONENT_MODEL);

/// The wasmtime configuration the node runs with.
///
/// Determinism matters more than speed here: every node must compute the same result and burn the
/// same fuel for the same input, and every build of the node must build the same engine. So every
/// setting that wasmtime would otherwise derive from its cargo features or from the environment
/// is set explicitly: the whole set of wasm proposals ([`WasmFeatures`]), concurrency support,
/// the compiler, backtrace details (`WASMTIME_BACKTRACE_DETAILS` would otherwise change the
/// compiled code), signals-based traps and the linear-memory layout. A node built with wasmtime's
/// default features then has the engine, and the fingerprint, of this crate's own CLI, and accepts
/// the same components. docs/design.md lists each pinned setting with its reason.
///
/// ```
/// let engine = wasmtime::Engine::new(&wasm_node_cache::node_config())?;
/// assert!(engine.get_consume_fuel());
/// assert!(!engine.get_wasm_features().contains(wasmtime::WasmFeatures::THREADS));
/// # anyhow::Ok(())
/// ```
pub fn node_config() -> Config {
    let mut config = Config::new();
    // The node's determinism settings.
    config
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true);
    // The node's own wasm.rs, which this crate replaces, also set `cranelift_pcc(true)`
    // (proof-carrying code checks). That option no longer exists in current wasmtime (removed
    // upstream), so there is nothing to set.

    // Exactly this set of proposals: off first, then on (an explicit setting wins over every
    // default wasmtime derives from its cargo features).
    config
        .wasm_features(WasmFeatures::all(), false)
        .wasm_features(NODE_WASM_FEATURES, true);
    // The component model's async support follows wasmtime's `component-model-async` feature
    // unless set, and enables async proposals and a tunable that is compiled into every artifact.
    config.concurrency_support(false);
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_backtrace_details(WasmBacktraceDetails::Disable)
        .signals_based_traps(true);
    // Linear memories as wasmtime lays them out on 64-bit hosts by default: the compiled bounds
    // checks depend on them, and wasmtime derives them from build-time platform support.
    #[cfg(target_pointer_width = "64")]
    config
        .memory_reservation(1 << 32)
        .memory_guard_size(32 << 20)
        .memory_reservation_for_growth(2 << 30)
        .memory_may_move(true)
        .guard_before_linear_memory(true)
        .memory_init_cow(true)
        .table_lazy_init(true);
    config
}

/// Builds the node's engine from [`node_config`].
pub fn init_wasm_engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(&node_config())?)
}

/// The fingerprint of `engine` for a store in the given authentication mode: what an artifact must
/// have been compiled under to be loaded by this engine ([`Fingerprint::of`]).
pub(crate) fn engine_fingerprint(engine: &Engine, keyed: bool) -> Fingerprint {
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

impl Fingerprint {
    /// The fingerprint of `engine` in a store's authentication mode (`keyed`: MAC mode): what an
    /// artifact must have been compiled under to be loaded by this engine. It covers wasmtime's
    /// own compatibility hash (triple, compiler and CPU flags, tunables, wasm features, wasmtime's
    /// full version), this crate's format version, the MAC mode, the architecture and the OS.
    ///
    /// ```
    /// let engine = wasm_node_cache::init_wasm_engine()?;
    /// let plain = wasm_node_cache::Fingerprint::of(&engine, false);
    /// assert_ne!(plain, wasm_node_cache::Fingerprint::of(&engine, true));
    /// println!("{plain}");
    /// # anyhow::Ok(())
    /// ```
    pub fn of(engine: &Engine, keyed: bool) -> Fingerprint {
        engine_fingerprint(engine, keyed)
    }
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

    #[test]
    fn the_node_engine_has_exactly_the_pinned_proposals_and_no_concurrency() {
        let engine = init_wasm_engine().expect("engine");
        assert_eq!(engine.get_wasm_features(), NODE_WASM_FEATURES);
        assert!(!engine.get_concurrency_support());
        assert!(engine.get_consume_fuel());
        assert!(engine.get_signals_based_traps());
    }

    /// Pinning changed nothing in this crate's own build (where wasmtime has only the cargo
    /// features Cargo.toml names): stores and bakes made before it stay current. A node built
    /// with wasmtime's default features is checked against the same fingerprint by the
    /// `node-build-check` workspace member, which `.ci/run` builds that way.
    #[test]
    fn pinning_keeps_the_fingerprint_the_crate_build_had_with_wasmtime_defaults() {
        let mut unpinned = Config::new();
        unpinned
            .wasm_component_model(true)
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(true)
            .relaxed_simd_deterministic(true);
        let unpinned = Engine::new(&unpinned).expect("engine");
        let pinned = init_wasm_engine().expect("engine");
        assert_eq!(unpinned.get_wasm_features(), pinned.get_wasm_features());
        assert_eq!(engine_fingerprint(&unpinned, false), engine_fingerprint(&pinned, false));
    }
}
