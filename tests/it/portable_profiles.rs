//! Portable bakes: artifacts compiled for named CPU profiles (x86-64-v2, -v3, -v4), served by the
//! node's own engine on any host that runs them, best profile first, with wasmtime's own
//! compatibility check deciding.
#![cfg(target_arch = "x86_64")]

use crate::common;

use std::path::{Path, PathBuf};

use common::{Fixture, chmod, snapshot};
use wasm_node_cache::Fingerprint;
use wasm_node_cache::config::sha256;
use wasm_node_cache::node::report::Outcome;
use wasm_node_cache::testing::Sealer;
use wasm_node_cache::testing::portable_fingerprints;
use wasm_node_cache::testing::{Store, deadline_after};
use wasm_node_cache::{CpuProfile, LoadReport};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// The fixture plus the generated mixer (a component that takes real time to compile).
fn fixture_with_mixer() -> Fixture {
    let mut fx = Fixture::new();
    let mixer = common::mixer::component();
    let hash = sha256(&mixer);
    std::fs::write(fx.root.join(hex::encode(hash)), &mixer).expect("write the mixer");
    fx.whitelist.insert(hash);
    fx
}

/// Bakes `profiles` into `<fixture>/bake` as an image build does (no lock file, no write bits).
fn bake(fx: &Fixture, profiles: &[CpuProfile]) -> (PathBuf, LoadReport) {
    let bake = fx.dir.path().join("bake");
    let r = fx
        .builder()
        .store(&bake)
        .cpu_profiles(profiles.iter().copied())
        .build()
        .expect("bake")
        .report()
        .clone();
    std::fs::remove_file(bake.join("lock")).expect("no lock file in a bake");
    chmod(&bake, 0o555);
    (bake, r)
}

fn fingerprint_of(profile: CpuProfile, keyed: bool) -> String {
    portable_fingerprints(keyed)
        .expect("profile engines")
        .into_iter()
        .find(|(p, _)| *p == profile)
        .map(|(_, fp)| fp.to_hex())
        .expect("a portable profile")
}

/// Removes every artifact of `profile` from the bake.
fn remove_profile(bake: &Path, profile: CpuProfile) {
    let fp = fingerprint_of(profile, false);
    chmod(bake, 0o755);
    for name in common::files_with_prefix(bake, &fp) {
        std::fs::remove_file(bake.join(name)).expect("unlink");
    }
    chmod(bake, 0o555);
}

/// The portable profiles this CPU runs, best first, by wasmtime's own check.
fn runnable_here() -> Vec<CpuProfile> {
    let native = wasm_node_cache::init_wasm_engine().expect("engine");
    wasm_node_cache::operator::host::HostReport::of(&native, false)
        .expect("profiles")
        .profiles
        .into_iter()
        .filter(|p| p.runs_here && !p.profile.is_native())
        .map(|p| p.profile)
        .collect()
}

/// The node's native fingerprint on this CPU.
fn native_fingerprint() -> String {
    Fingerprint::of(&wasm_node_cache::init_wasm_engine().expect("engine"), false).to_hex()
}

/// The portable profiles whose fingerprint is not this CPU's native one, best first. A CPU with
/// exactly one level's features (an AVX2 machine without AVX-512 is x86-64-v3 to Cranelift) has
/// that level's fingerprint natively: its artifacts are the native ones, under the same names.
fn distinct_from_native() -> Vec<CpuProfile> {
    let native = native_fingerprint();
    CpuProfile::portable()
        .iter()
        .copied()
        .filter(|p| fingerprint_of(*p, false) != native)
        .collect()
}

/// How a report names the profile of an artifact baked for `profile`: `native` when this CPU's
/// native fingerprint is that profile's.
fn as_reported(profile: CpuProfile) -> CpuProfile {
    if fingerprint_of(profile, false) == native_fingerprint() {
        CpuProfile::Native
    } else {
        profile
    }
}

/// The node's engine as it is on a host of level x86-64-v3 without AVX-512, on any CPU that has
/// AVX2: the node's settings compiled for x86-64-v3, with wasmtime's feature probe told there is
/// no AVX-512. Another optimization level (a setting wasmtime ignores at load, but one the
/// fingerprint covers) keeps its fingerprint off every profile's, so only the portable lookup
/// serves it, as on a real host of that level. Given to the start-up with `simulated_cpu`.
fn simulated_v3_host() -> Engine {
    assert!(
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        "this test needs a CPU of level x86-64-v3 at least"
    );
    let mut config = CpuProfile::X86_64V3.config().expect("config");
    config.cranelift_opt_level(wasmtime::OptLevel::SpeedAndSize);
    // SAFETY: the probe answers from the real CPU except for AVX-512, which it denies: wasmtime then
    // refuses code that could use AVX-512, and loads nothing this CPU cannot run.
    unsafe {
        config.detect_host_feature(no_avx512);
    }
    let engine = Engine::new(&config).expect("engine");
    assert!(
        !portable_fingerprints(false)
            .expect("fps")
            .iter()
            .any(|(_, fp)| *fp == Fingerprint::of(&engine, false))
    );
    engine
}

#[test]
fn a_v2_only_bake_serves_every_component_with_v2_compiles_nothing_and_writes_nothing() {
    let fx = fixture_with_mixer();
    let (bake, baked) = bake(&fx, &[CpuProfile::X86_64V2]);
    assert_eq!(baked.baked.len(), 1, "{baked}");
    assert_eq!((baked.baked[0].written, baked.baked[0].failed.len()), (4, 0), "{baked}");
    assert_eq!(
        baked.store.written, 0,
        "no native artifact without native in the list: {baked}"
    );
    let native_fp = baked.store.fingerprint;
    assert!(common::files_with_prefix(&bake, &native_fp.to_hex()).is_empty());
    let before = snapshot(&bake);

    let cache = fx.builder().read_only_store(&bake).build().expect("start");
    let r = cache.report();
    assert_eq!(
        (r.from_store, r.from_portable, r.compiled, r.rejected),
        (4, 4, 0, 0),
        "{r}"
    );
    assert!(
        r.entries
            .iter()
            .all(|e| e.profile == Some(CpuProfile::X86_64V2) && e.store.as_deref() == Some(bake.as_path())),
        "{r}"
    );
    assert_eq!(r.read_only[0].hits, 4, "{r}");
    assert!(
        r.read_only[0].other_fingerprints.is_empty(),
        "a bake that served is no mismatch: {r}"
    );
    assert!(r.to_string().contains("4 from portable artifacts: x86-64-v2"), "{r}");
    assert_eq!(r.store.written, 0);
    assert_eq!(
        common::artifact_count(&fx.store),
        0,
        "nothing written to the writable store"
    );
    assert_eq!(snapshot(&bake), before, "the bake is untouched");
    let json = serde_json::to_value(r).expect("json");
    assert_eq!(json["entries"][0]["profile"], "x86-64-v2");

    // The same results as a fresh native compile.
    let native = wasm_node_cache::init_wasm_engine().expect("engine");
    let fresh = |name: &str| Component::new(&native, common::shipped(name)).expect("compile");
    let served = |name: &str| {
        cache
            .wasm_component_cache
            .get(&sha256(&common::shipped(name)))
            .expect("loaded")
    };
    let e = &cache.wasm_engine;
    for (a, b) in [(2, 40), (-7, 3), (i32::MAX, 1)] {
        assert_eq!(
            common::call_add(e, served("adder"), a, b),
            common::call_add(&native, &fresh("adder"), a, b)
        );
    }
    for n in [0, 1, 50, 93] {
        assert_eq!(
            common::call_fib(e, served("fib"), n),
            common::call_fib(&native, &fresh("fib"), n)
        );
    }
    let mixer = cache
        .wasm_component_cache
        .get(&sha256(&common::mixer::component()))
        .expect("mixer loaded");
    for seed in [0, 42, u64::MAX] {
        assert_eq!(common::call_mix(e, mixer, seed), common::mixer::expected_mix(seed));
    }
}

#[test]
fn a_bake_of_every_profile_serves_the_best_this_cpu_runs_then_the_next_when_it_is_gone() {
    let fx = Fixture::new();
    let (bake, _) = bake(&fx, &[CpuProfile::X86_64V2, CpuProfile::X86_64V3, CpuProfile::X86_64V4]);
    let mut runnable = runnable_here();
    assert!(!runnable.is_empty(), "every x86-64 CPU runs x86-64-v2");
    let served_by = |r: &LoadReport| -> Vec<Option<CpuProfile>> { r.entries.iter().map(|e| e.profile).collect() };
    let start = || {
        fx.builder()
            .store(fx.dir.path().join("empty-store"))
            .read_only_store(&bake)
            .build()
            .expect("start")
            .report()
            .clone()
    };
    // Best first: each start is served by the best profile left, then that profile goes.
    while let Some(best) = runnable.first().copied() {
        let r = start();
        assert_eq!((r.from_store, r.compiled), (3, 0), "{r}");
        assert_eq!(served_by(&r), vec![Some(as_reported(best)); 3], "{r}");
        // Only a better profile this CPU does not run (x86-64-v4 without AVX-512) is refused.
        assert!(
            r.entries
                .iter()
                .flat_map(|e| &e.portable_refused)
                .all(|refusal| refusal.profile > best && !runnable_here().contains(&refusal.profile)),
            "{r}"
        );
        remove_profile(&bake, best);
        runnable.remove(0);
    }
    let r = start();
    assert_eq!((r.from_store, r.compiled), (0, 3), "nothing this CPU runs is left: {r}");
}

/// Compiles the adder with `profile`'s engine changed by `change`, and publishes it with a valid
/// trailer under `profile`'s genuine fingerprint in `dir`: an artifact whose name and trailer say
/// `profile` but whose code wasmtime sees was compiled otherwise.
fn forge_adder(dir: &Path, profile: CpuProfile, change: impl FnOnce(&mut Config)) {
    let mut config = profile.config().expect("config");
    change(&mut config);
    let forged = Engine::new(&config).expect("engine");
    let payload = forged
        .precompile_component(&common::shipped("adder"))
        .expect("precompile");
    let fp = wasm_node_cache::Fingerprint::from_hex(&fingerprint_of(profile, false)).expect("hex");
    let store = Store::open(dir, fp, Sealer::Plain).expect("store");
    store
        .lock_exclusive(deadline_after(std::time::Duration::from_secs(5)), "forge")
        .expect("lock")
        .publish(&common::adder_hash(), &payload)
        .expect("publish");
}

#[test]
fn an_artifact_wasmtime_refuses_falls_through_to_the_next_profile_then_to_compiling() {
    // The setting: fuel metering off. Wasmtime compares tunables exactly, so the node's engine
    // (fuel on) refuses the artifact at deserialization, after every check of ours passed.
    // (NaN canonicalization would not do: wasmtime does not check it, see below.)
    // The host is a simulated x86-64-v3 one, so that both profiles are portable to it on any CPU.
    let fx = Fixture::new();
    let adder = common::adder_hash();
    let (bake, _) = bake(&fx, &[CpuProfile::X86_64V2]);
    chmod(&bake, 0o755);
    forge_adder(&bake, CpuProfile::X86_64V3, |c| {
        c.consume_fuel(false);
    });
    std::fs::remove_file(bake.join("lock")).expect("unlink lock");
    chmod(&bake, 0o555);
    let host = simulated_v3_host();

    let cache = fx
        .builder()
        .simulated_cpu(host.clone())
        .read_only_store(&bake)
        .build()
        .expect("start");
    let r = cache.report();
    let e = r.entry(&adder).expect("entry");
    assert_eq!(
        (e.outcome.clone(), e.profile),
        (Outcome::FromStore, Some(CpuProfile::X86_64V2)),
        "{r}"
    );
    assert_eq!(e.portable_refused.len(), 1, "{r}");
    assert_eq!(e.portable_refused[0].profile, CpuProfile::X86_64V3);
    let why = e.portable_refused[0].reason.to_string();
    assert!(
        why.contains("wasmtime refused") && why.contains("fuel"),
        "wasmtime's reason: {why}"
    );
    assert!(r.to_string().contains("portable x86-64-v3 artifact"), "{r}");
    assert_eq!(common::node_add(&cache, 40, 2), 42);

    // Without the v2 artifact the start-up compiles, and still says why v3 was refused.
    remove_profile(&bake, CpuProfile::X86_64V2);
    let r = fx
        .builder()
        .simulated_cpu(host)
        .read_only_store(&bake)
        .build()
        .expect("start")
        .report()
        .clone();
    let e = r.entry(&adder).expect("entry");
    assert_eq!((e.outcome.clone(), e.profile), (Outcome::Compiled, None), "{r}");
    assert!(e.portable_refused[0].reason.to_string().contains("fuel"), "{r}");
    let json = serde_json::to_value(&r).expect("json");
    let entry = json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|j| j["hash"] == hex::encode(adder))
        .expect("adder")
        .clone();
    assert_eq!(entry["profile"], serde_json::Value::Null);
    assert_eq!(entry["portable_refused"][0]["profile"], "x86-64-v3");
}

/// Host feature detection that reports no AVX-512 and answers the rest truthfully: a node on a
/// CPU of level x86-64-v3, as wasmtime's own check sees it.
fn no_avx512(feature: &str) -> Option<bool> {
    Some(match feature {
        f if f.starts_with("avx512") => false,
        "sse3" => std::is_x86_feature_detected!("sse3"),
        "ssse3" => std::is_x86_feature_detected!("ssse3"),
        "sse4.1" => std::is_x86_feature_detected!("sse4.1"),
        "sse4.2" => std::is_x86_feature_detected!("sse4.2"),
        "popcnt" => std::is_x86_feature_detected!("popcnt"),
        "avx" => std::is_x86_feature_detected!("avx"),
        "avx2" => std::is_x86_feature_detected!("avx2"),
        "fma" => std::is_x86_feature_detected!("fma"),
        "bmi1" => std::is_x86_feature_detected!("bmi1"),
        "bmi2" => std::is_x86_feature_detected!("bmi2"),
        "lzcnt" => std::is_x86_feature_detected!("lzcnt"),
        "cmpxchg16b" => std::is_x86_feature_detected!("cmpxchg16b"),
        _ => return None,
    })
}

#[test]
fn on_a_cpu_without_avx512_wasmtime_refuses_v4_for_the_missing_feature_and_v3_serves() {
    let v3_host = simulated_v3_host();
    let fx = Fixture::new();
    let (bake, _) = bake(&fx, &[CpuProfile::X86_64V3, CpuProfile::X86_64V4]);
    let r = fx
        .builder()
        .simulated_cpu(v3_host.clone())
        .read_only_store(&bake)
        .build()
        .expect("start")
        .report()
        .clone();
    assert_eq!((r.from_store, r.from_portable, r.compiled), (3, 3, 0), "{r}");
    for e in &r.entries {
        assert_eq!(e.profile, Some(CpuProfile::X86_64V3), "{r}");
        let why = e.portable_refused[0].reason.to_string();
        assert_eq!(e.portable_refused[0].profile, CpuProfile::X86_64V4);
        assert!(
            why.contains("\"has_avx512") && why.contains("is enabled, but not available on the host"),
            "wasmtime's own CPU check: {why}"
        );
    }
}

#[test]
fn wasmtime_does_not_check_nan_canonicalization_so_profiles_must_keep_the_node_settings() {
    // Why a profile engine is exactly node_config() plus target and CPU flags, and why the
    // fingerprint (which covers every shared flag) guards the lookup: wasmtime itself loads an
    // artifact compiled without the node's NaN canonicalization.
    let mut config = CpuProfile::X86_64V2.config().expect("config");
    config.cranelift_nan_canonicalization(false);
    let other = Engine::new(&config).expect("engine");
    let payload = other
        .precompile_component(&common::shipped("adder"))
        .expect("precompile");
    let native = wasm_node_cache::init_wasm_engine().expect("engine");
    // SAFETY: produced just now by `precompile_component` in this process.
    assert!(unsafe { Component::deserialize(&native, &payload) }.is_ok());
    let v2 = CpuProfile::X86_64V2.engine().expect("engine");
    assert_ne!(Fingerprint::of(&other, false), Fingerprint::of(&v2, false));
}

/// A component whose `nan(a, b)` returns the bits of `a / b`: 0/0 shows whether NaNs are
/// canonicalized (0x7fc00000) or left as x86 makes them (0xffc00000).
fn nan_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (core module $m
              (func (export "nan") (param f32 f32) (result i32)
                local.get 0 local.get 1 f32.div i32.reinterpret_f32))
            (core instance $i (instantiate $m))
            (func (export "nan") (param "a" f32) (param "b" f32) (result u32)
              (canon lift (core func $i "nan"))))"#,
    )
    .expect("WAT parses")
}

fn call_nan(engine: &Engine, component: &Component) -> u32 {
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(1_000).expect("fuel");
    let instance = wasmtime::component::Linker::new(engine)
        .instantiate(&mut store, component)
        .expect("instantiate");
    let f = instance
        .get_typed_func::<(f32, f32), (u32,)>(&mut store, "nan")
        .expect("nan export");
    f.call(&mut store, (0.0, 0.0)).expect("call").0
}

#[test]
fn every_shipped_export_gives_identical_results_under_every_profile() {
    let native = wasm_node_cache::init_wasm_engine().expect("engine");
    let mixer = common::mixer::component();
    let run = |profile: CpuProfile| {
        let compiler = profile.engine().expect("engine");
        // Compiled by the profile's engine, run by the node's, as a start-up serves it.
        let load = |bytes: &[u8]| {
            let payload = compiler.precompile_component(bytes).expect("precompile");
            // SAFETY: produced just now by `precompile_component` in this process.
            unsafe { Component::deserialize(&native, &payload) }.expect("this CPU runs the profile")
        };
        let (adder, fib, fnv) = (
            load(&common::shipped("adder")),
            load(&common::shipped("fib")),
            load(&common::shipped("fnv1a")),
        );
        let mix = load(&mixer);
        (
            [(1, 2), (-5, 5), (i32::MIN, -1)].map(|(a, b)| common::call_add(&native, &adder, a, b)),
            [0, 1, 10, 93, 100].map(|n| common::call_fib(&native, &fib, n)),
            ["", "a", "foobar", "wasm-node-cache"].map(|s| common::call_fnv1a(&native, &fnv, s)),
            [0, 7, u64::MAX].map(|s| common::call_mix(&native, &mix, s)),
            call_nan(&native, &load(&nan_component())),
        )
    };
    let expected = run(CpuProfile::Native);
    assert_eq!(expected.3, [0, 7, u64::MAX].map(common::mixer::expected_mix));
    assert_eq!(expected.4, 0x7fc0_0000, "the node canonicalizes NaNs");
    // Only the profiles this CPU runs can run here (x86-64-v4 needs AVX-512).
    let runnable = runnable_here();
    assert!(runnable.contains(&CpuProfile::X86_64V2), "{runnable:?}");
    for profile in &runnable {
        assert_eq!(run(*profile), expected, "{profile}");
    }
    // Control: without canonicalization this CPU gives another NaN, so the check above can fail.
    let mut config = wasm_node_cache::node_config();
    config.cranelift_nan_canonicalization(false);
    let raw = Engine::new(&config).expect("engine");
    let c = Component::new(&raw, nan_component()).expect("compile");
    assert_ne!(call_nan(&raw, &c), 0x7fc0_0000);
}

/// A component whose `add4` adds two vectors of four i32 lanes (SIMD).
fn simd_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (core module $m
              (memory (export "memory") 1)
              (func (export "add4") (param i32) (result i32)
                (v128.store (i32.const 0)
                  (i32x4.add (v128.load (i32.const 16)) (v128.load (i32.const 32))))
                (i32.load (local.get 0))))
            (core instance $i (instantiate $m))
            (func (export "add4") (param "at" u32) (result u32)
              (canon lift (core func $i "add4"))))"#,
    )
    .expect("WAT parses")
}

/// Probe that denies AVX2 (and AVX-512) and answers the rest from the real CPU.
fn no_avx2(feature: &str) -> Option<bool> {
    match feature {
        "avx2" => Some(false),
        f => no_avx512(f),
    }
}

/// The bytes of the ELF section `name` in `elf` (64-bit little-endian, as wasmtime writes).
fn elf_section<'a>(elf: &'a [u8], name: &str) -> &'a [u8] {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes")) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes")) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 24);
    (0..shnum)
        .find_map(|i| {
            let h = header(i);
            let n = strtab + u32_at(h);
            let end = n + elf[n..].iter().position(|b| *b == 0)?;
            (&elf[n..end] == name.as_bytes()).then(|| &elf[u64_at(h + 24)..u64_at(h + 24) + u64_at(h + 32)])
        })
        .unwrap_or_else(|| panic!("no section {name}"))
}

/// Does `code` hold `vpaddd` with a VEX prefix: `C5 [R vvvv L=0 pp=01] FE` (two-byte VEX) or
/// `C4 [RXB m=00001] [W vvvv L=0 pp=01] FE` (three-byte VEX)?
fn has_vex_paddd(code: &[u8]) -> bool {
    code.windows(3)
        .any(|w| w[0] == 0xc5 && w[1] & 0x07 == 0x01 && w[2] == 0xfe)
        || code
            .windows(4)
            .any(|w| w[0] == 0xc4 && w[1] & 0x1f == 0x01 && w[2] & 0x07 == 0x01 && w[3] == 0xfe)
}

/// Does `code` hold SSE2's `paddd`: `66 [REX] 0F FE`?
fn has_sse_paddd(code: &[u8]) -> bool {
    code.windows(3).any(|w| w[0] == 0x66 && w[1] == 0x0f && w[2] == 0xfe)
        || code
            .windows(4)
            .any(|w| w[0] == 0x66 && w[1] & 0xf0 == 0x40 && w[2] == 0x0f && w[3] == 0xfe)
}

#[test]
fn v3_artifacts_carry_avx2_code_and_v2_artifacts_none() {
    let compile = |p: CpuProfile| {
        p.engine()
            .expect("engine")
            .precompile_component(&simd_component())
            .expect("precompile")
    };
    let (v2, v3) = (compile(CpuProfile::X86_64V2), compile(CpuProfile::X86_64V3));
    // The instructions: VEX-encoded vpaddd in v3 (AVX), SSE2 paddd and no VEX form in v2.
    let (text2, text3) = (elf_section(&v2, ".text"), elf_section(&v3, ".text"));
    assert!(has_vex_paddd(text3), "v3 adds the lanes with VEX-encoded vpaddd");
    assert!(!has_vex_paddd(text2) && has_sse_paddd(text2), "v2 uses SSE2 paddd only");
    // The flags recorded in the artifact, by wasmtime's own check: an engine on a CPU without AVX2
    // refuses the v3 artifact for has_avx2 and loads the v2 one.
    let mut config = CpuProfile::X86_64V2.config().expect("config");
    // SAFETY: the probe denies AVX2 and AVX-512 and answers the rest from the real CPU, so the
    // engine only loads what this CPU runs.
    unsafe {
        config.detect_host_feature(no_avx2);
    }
    let no_avx2_host = Engine::new(&config).expect("engine");
    // SAFETY: both artifacts were produced just now by `precompile_component` in this process.
    let refused = unsafe { Component::deserialize(&no_avx2_host, &v3) }
        .err()
        .map(|e| format!("{e:#}"))
        .expect("v3 refused without AVX2");
    assert!(
        refused.contains("\"has_avx2\" is enabled, but not available"),
        "{refused}"
    );
    // SAFETY: as above.
    assert!(unsafe { Component::deserialize(&no_avx2_host, &v2) }.is_ok());
}

#[test]
fn mac_mode_refuses_portable_artifacts_without_a_valid_mac() {
    let fx = Fixture::new();
    let keys = tempfile::tempdir().expect("tempdir");
    let theirs = common::key_file(&keys.path().join("theirs"), 1, 0o600);
    let mine = common::key_file(&keys.path().join("mine"), 2, 0o600);
    let bake = fx.dir.path().join("bake");
    let r = fx
        .builder()
        .store(&bake)
        .auth_key_file(&theirs)
        .cpu_profiles([CpuProfile::X86_64V2])
        .build()
        .expect("bake")
        .report()
        .clone();
    assert_eq!(r.baked[0].written, 3, "{r}");
    // Baked under another key: found under the MAC-mode v2 fingerprint, refused for its MAC.
    let r = fx
        .builder()
        .read_only_store(&bake)
        .auth_key_file(&mine)
        .build()
        .expect("start")
        .report()
        .clone();
    assert_eq!((r.from_store, r.compiled), (0, 3), "{r}");
    for e in &r.entries {
        assert_eq!(e.portable_refused.len(), 1, "{r}");
        assert_eq!(e.portable_refused[0].profile, CpuProfile::X86_64V2);
        assert!(
            e.portable_refused[0].reason.to_string().contains("another MAC key"),
            "{r}"
        );
    }
    // Under the right key the same bake serves.
    let r = fx
        .builder()
        .store(fx.dir.path().join("other"))
        .read_only_store(&bake)
        .auth_key_file(&theirs)
        .build()
        .expect("start")
        .report()
        .clone();
    assert_eq!((r.from_store, r.from_portable, r.compiled), (3, 3, 0), "{r}");
}

#[test]
fn portable_artifacts_are_not_looked_at_when_the_native_lookup_finds_everything() {
    // A native start-up with a refusable portable artifact beside: nothing is pending after the
    // native lookup, so no portable artifact is looked at (none is reported, refused or loaded).
    let fx = Fixture::new();
    fx.start();
    chmod(&fx.store, 0o700);
    forge_adder(&fx.store, CpuProfile::X86_64V4, |c| {
        c.consume_fuel(false);
    });
    let r = fx.start().report().clone();
    assert_eq!((r.from_store, r.from_portable), (3, 0), "{r}");
    assert!(
        r.entries
            .iter()
            .all(|e| e.profile == Some(CpuProfile::Native) && e.portable_refused.is_empty())
    );
}

fn cli(args: &[&str]) -> std::process::Output {
    common::run_cli(std::path::Path::new("."), args)
}

#[test]
fn concurrent_bakes_count_as_written_only_what_each_wrote() {
    let fx = Fixture::new();
    let profile = distinct_from_native()[0].name();
    let bakes: Vec<_> = (0..4)
        .map(|_| {
            common::cli_command(fx.dir.path())
                .args(["warm", "--json", "--all-in-dir", "--cpu-profile", profile, "--wasm-dir"])
                .arg(&fx.root)
                .arg("--store")
                .arg(&fx.store)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("bake")
        })
        .collect();
    let mut written = 0;
    for bake in bakes {
        let out = bake.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let baked = &v["baked"][0];
        let (w, p) = (baked["written"].as_u64(), baked["present"].as_u64());
        assert_eq!(
            w.zip(p).map(|(w, p)| w + p),
            Some(3),
            "every artifact written or present: {v}"
        );
        written += w.unwrap_or(0);
    }
    assert_eq!(
        written, 3,
        "each artifact counted as written by the one process that wrote it"
    );
}

#[test]
fn prune_stale_keeps_profile_artifacts_and_removes_another_engines() {
    let fx = Fixture::new();
    // Two profiles whose artifacts are not the native ones on this CPU.
    let profiles = distinct_from_native();
    let (p1, p2) = (profiles[0], profiles[1]);
    let r = fx
        .builder()
        .cpu_profiles([CpuProfile::Native, p1, p2])
        .build()
        .expect("bake")
        .report()
        .clone();
    assert_eq!(
        (r.store.written, r.baked[0].written, r.baked[1].written),
        (3, 3, 3),
        "{r}"
    );
    // A genuinely other engine: the node's settings without fuel metering.
    let mut config = wasm_node_cache::node_config();
    config.consume_fuel(false);
    let other = Engine::new(&config).expect("engine");
    let other_fp = Fingerprint::of(&other, false);
    Store::open(&fx.store, other_fp, Sealer::Plain)
        .expect("store")
        .lock_exclusive(deadline_after(std::time::Duration::from_secs(5)), "test")
        .expect("lock")
        .publish(
            &common::adder_hash(),
            &other.precompile_component(&common::shipped("adder")).expect("compile"),
        )
        .expect("publish");
    assert_eq!(common::artifact_count(&fx.store), 10);

    let store = fx.store.to_str().expect("utf-8");
    let status = cli(&["status", "--store", store]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    let runnable = runnable_here();
    for p in [p1, p2] {
        let label = if runnable.contains(&p) {
            format!("portable {p}: runs on this CPU")
        } else {
            format!("portable {p}: does NOT run on this CPU")
        };
        assert!(text.contains(&label), "{label}: {text}");
    }
    assert!(
        text.contains(&format!("fingerprint {other_fp}: 1 file(s)  stale")),
        "{text}"
    );
    assert!(text.contains("10 (9 current, of which 6 portable, 1 stale)"), "{text}");

    let out = cli(&["prune", "--stale", "--min-idle", "0", "--store", store]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("removed 1 artifact(s)") && text.contains("9 kept"),
        "{text}"
    );
    assert!(common::files_with_prefix(&fx.store, &other_fp.to_hex()).is_empty());
    for profile in [p1, p2] {
        assert_eq!(
            common::files_with_prefix(&fx.store, &fingerprint_of(profile, false)).len(),
            3
        );
    }
    // The library's prune keeps them too.
    let pruned = fx.start().prune_store().expect("prune");
    assert!(pruned.removed.is_empty(), "{:?}", pruned.removed);
    assert_eq!(common::artifact_count(&fx.store), 9);
}

#[test]
fn host_prints_the_triple_the_fingerprint_and_which_profiles_run_here() {
    let out = cli(&["host", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let native = wasm_node_cache::init_wasm_engine().expect("engine");
    assert_eq!(v["triple"], "x86_64-unknown-linux-gnu");
    assert_eq!(v["fingerprint"], Fingerprint::of(&native, false).to_hex());
    let names: Vec<&str> = v["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["native", "x86-64-v4", "x86-64-v3", "x86-64-v2"]);
    for p in v["profiles"].as_array().expect("profiles") {
        let name: CpuProfile = p["name"].as_str().expect("name").parse().expect("profile");
        if !name.is_native() {
            assert_eq!(p["fingerprint"], fingerprint_of(name, false));
        }
        // This CPU runs x86-64-v2 wherever this suite runs.
        if name == CpuProfile::X86_64V2 {
            assert_eq!(p["runs_here"], true);
        }
    }
    let text = cli(&["host"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("x86-64-v3"));
    let bad = cli(&["warm", "--cpu-profile", "x86-64-v9", "--no-store"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown CPU profile"));
}
