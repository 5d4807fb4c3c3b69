//! CPU profiles: the node's engine settings compiled for a named CPU level instead of the CPU this
//! process runs on, so that one bake serves a fleet of mixed CPUs.
//!
//! The native engine lets Cranelift detect every feature of the host, and its fingerprint names
//! them all: a bake made on an AVX-512 machine is no use to a host without AVX-512. A profile
//! engine is the node's [`node_config`] plus `Config::target` (this binary's own triple, which
//! turns native detection off) plus one of Cranelift's presets: the same determinism settings,
//! tunables and wasm features, fewer CPU features. Wasmtime accepts such an artifact on any host
//! that has the features it was compiled with (a flag that is off is never probed), and refuses it
//! otherwise: that check, run by the node's own engine at deserialization, decides.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::engine::engine_fingerprint;
use crate::engine::node_config;
use crate::key::Fingerprint;

/// A named set of CPU features an artifact is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CpuProfile {
    /// Everything this host's CPU has, as the node's engine detects it.
    Native,
    /// x86-64 psABI level 2: SSE4.2, POPCNT, CMPXCHG16B (about every x86-64 server since 2009).
    X86_64V2,
    /// x86-64 psABI level 3: level 2 plus AVX, AVX2, BMI1, BMI2, FMA, LZCNT (Haswell, Zen 1).
    X86_64V3,
    /// x86-64 psABI level 4: level 3 plus AVX-512 F, DQ and VL (Skylake-SP, Zen 4).
    X86_64V4,
}

/// Portable profiles of this architecture, best first: the order a start-up tries them in.
#[cfg(target_arch = "x86_64")]
const PORTABLE: &[CpuProfile] = &[CpuProfile::X86_64V4, CpuProfile::X86_64V3, CpuProfile::X86_64V2];
// Cranelift has no presets for other architectures: only native there.
#[cfg(not(target_arch = "x86_64"))]
const PORTABLE: &[CpuProfile] = &[];

/// The smallest valid component, `(component)`: enough for wasmtime to record an engine's
/// settings in an artifact and for another engine to check them.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

impl CpuProfile {
    /// The profile's name, as `--cpu-profile` and the report spell it.
    pub fn name(self) -> &'static str {
        match self {
            CpuProfile::Native => "native",
            CpuProfile::X86_64V2 => "x86-64-v2",
            CpuProfile::X86_64V3 => "x86-64-v3",
            CpuProfile::X86_64V4 => "x86-64-v4",
        }
    }

    /// The portable profiles this binary's architecture has, best first (empty where Cranelift has
    /// no presets).
    pub fn portable() -> &'static [CpuProfile] {
        PORTABLE
    }

    /// `native` followed by [`CpuProfile::portable`].
    pub fn available() -> Vec<CpuProfile> {
        std::iter::once(CpuProfile::Native)
            .chain(PORTABLE.iter().copied())
            .collect()
    }

    /// True for [`CpuProfile::Native`].
    pub fn is_native(self) -> bool {
        self == CpuProfile::Native
    }

    /// The Cranelift presets and flags this profile enables. The presets follow LLVM's, which
    /// leave out two flags Cranelift needs for what the psABI level promises: its AVX and AVX2
    /// lowerings also require `has_avx`, and its AVX-512 lowerings `has_avx512f`.
    fn cranelift_flags(self) -> &'static [&'static str] {
        match self {
            CpuProfile::Native => &[],
            CpuProfile::X86_64V2 => &["x86-64-v2"],
            CpuProfile::X86_64V3 => &["x86-64-v3", "has_avx"],
            CpuProfile::X86_64V4 => &["x86-64-v4", "has_avx", "has_avx512f"],
        }
    }

    /// The engine configuration of this profile: exactly [`node_config`] for `native`; for a
    /// portable profile the same plus this binary's triple as an explicit target (no feature
    /// detection) and the profile's flags.
    pub fn config(self) -> Result<Config, ProfileError> {
        self.config_from(node_config())
    }

    /// This profile of another embedder's settings: `base` itself for `native`, else `base` plus
    /// this binary's triple as an explicit target and the profile's flags.
    pub fn config_from(self, base: Config) -> Result<Config, ProfileError> {
        let mut config = base;
        if self.is_native() {
            return Ok(config);
        }
        if !PORTABLE.contains(&self) {
            return Err(ProfileError::NotThisArchitecture { profile: self });
        }
        config.target(&host_triple()).map_err(|source| ProfileError::Engine {
            profile: self,
            source: std::sync::Arc::new(source),
        })?;
        for flag in self.cranelift_flags() {
            // SAFETY: these are Cranelift's own x86 presets and ISA feature flags: they only choose
            // which instructions the compiler may emit. Code using a feature the running CPU lacks
            // is never run: wasmtime probes every enabled feature on the real CPU before it loads
            // an artifact (`check_compatible_with_isa_flag`), and refuses the artifact otherwise.
            unsafe {
                config.cranelift_flag_enable(flag);
            }
        }
        Ok(config)
    }

    /// A new engine for this profile.
    pub fn engine(self) -> Result<Engine, ProfileError> {
        self.engine_from(None)
    }

    /// A new engine for this profile of `base` (the node's settings when `None`).
    pub(crate) fn engine_from(self, base: Option<Config>) -> Result<Engine, ProfileError> {
        let config = self.config_from(base.unwrap_or_else(node_config))?;
        Engine::new(&config).map_err(|source| ProfileError::Engine {
            profile: self,
            source: std::sync::Arc::new(source),
        })
    }
}

impl fmt::Display for CpuProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for CpuProfile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl FromStr for CpuProfile {
    type Err = ProfileError;

    fn from_str(text: &str) -> Result<CpuProfile, ProfileError> {
        let all = [
            CpuProfile::Native,
            CpuProfile::X86_64V2,
            CpuProfile::X86_64V3,
            CpuProfile::X86_64V4,
        ];
        match all.into_iter().find(|p| p.name() == text) {
            Some(p) if CpuProfile::available().contains(&p) => Ok(p),
            Some(p) => Err(ProfileError::NotThisArchitecture { profile: p }),
            None => Err(ProfileError::Unknown { name: text.to_owned() }),
        }
    }
}

/// Why a CPU profile, or a list of them, cannot be used.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProfileError {
    /// No profile has this name.
    Unknown {
        /// The name as given.
        name: String,
    },
    /// The profile is not one of this architecture's (an x86-64 level on another CPU family).
    NotThisArchitecture {
        /// The profile.
        profile: CpuProfile,
    },
    /// The list of profiles to store is empty: it needs at least one (`native` is the engine's
    /// own).
    EmptyList,
    /// Portable profiles compile with the engine's own settings (the node's, or the profile
    /// config an embedder gave), and the engine given has others.
    EngineSettingsDiffer {
        /// The portable profile asked for.
        profile: CpuProfile,
    },
    /// wasmtime could not configure or create the profile's engine.
    Engine {
        /// The profile.
        profile: CpuProfile,
        /// wasmtime's error.
        source: std::sync::Arc<wasmtime::Error>,
    },
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let have = names(&CpuProfile::available());
        match self {
            ProfileError::Unknown { name } => write!(f, "unknown CPU profile {name:?}; this binary has: {have}"),
            ProfileError::NotThisArchitecture { profile } => write!(
                f,
                "CPU profile {profile} is not one of this architecture ({}); this binary has: {have}",
                std::env::consts::ARCH
            ),
            ProfileError::EmptyList => {
                f.write_str("the list is empty; it needs at least one profile (native is this engine's own)")
            }
            ProfileError::EngineSettingsDiffer { profile } => write!(
                f,
                "portable profile {profile} compiles with the settings of the profile config (the node's by default), and this engine's differ"
            ),
            ProfileError::Engine { profile, .. } => write!(f, "cannot create the {profile} engine"),
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProfileError::Engine { source, .. } => Some(source.as_ref().as_ref()),
            _ => None,
        }
    }
}

/// Checks a list of profiles to store: not empty, every portable profile one of this
/// architecture's, and portable profiles only with an engine that has the settings of `base` (the
/// node's when `None`), of which every portable profile is a variant.
pub(crate) fn check_list(profiles: &[CpuProfile], engine: &Engine, base: Option<&Config>) -> Result<(), ProfileError> {
    if profiles.is_empty() {
        return Err(ProfileError::EmptyList);
    }
    let mut same_settings = None;
    for &profile in profiles.iter().filter(|p| !p.is_native()) {
        if !CpuProfile::portable().contains(&profile) {
            return Err(ProfileError::NotThisArchitecture { profile });
        }
        if !*same_settings.get_or_insert_with(|| has_settings_of(engine, base)) {
            return Err(ProfileError::EngineSettingsDiffer { profile });
        }
    }
    Ok(())
}

/// True when `engine` has the settings of `base` (the node's when `None`), of which every
/// portable profile is a variant: the same fingerprint as an engine built from it on this host.
pub(crate) fn has_settings_of(engine: &Engine, base: Option<&Config>) -> bool {
    CpuProfile::Native
        .engine_from(base.cloned())
        .is_ok_and(|own| engine_fingerprint(&own, false) == engine_fingerprint(engine, false))
}

fn names(profiles: &[CpuProfile]) -> String {
    profiles.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
}

/// The target triple this binary was built for, as wasmtime's native engine uses it.
pub(crate) fn host_triple() -> String {
    target_lexicon::HOST.to_string()
}

/// One profile as seen from this host: its fingerprint and whether this CPU runs its code.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProfileStatus {
    /// The profile's name (`name` in JSON).
    #[serde(rename = "name")]
    pub profile: CpuProfile,
    /// The fingerprint its artifacts are stored under.
    pub fingerprint: Fingerprint,
    /// True when the node's engine accepts this profile's code.
    pub runs_here: bool,
    /// Why not, in wasmtime's words, when it does not (text: wasmtime gives no stable kinds for
    /// it).
    pub refused: Option<String>,
}

/// Every profile of this architecture (native first, then best portable first) with its
/// fingerprint in the given authentication mode and whether `native` accepts its code. Whether it
/// runs is wasmtime's own check: a tiny component compiled by the profile's engine is deserialized
/// by `native`.
pub(crate) fn profile_statuses(native: &Engine, keyed: bool) -> Result<Vec<ProfileStatus>, ProfileError> {
    let mut out = vec![ProfileStatus {
        profile: CpuProfile::Native,
        fingerprint: engine_fingerprint(native, keyed),
        runs_here: true,
        refused: None,
    }];
    for &profile in PORTABLE {
        let engine = profile.engine()?;
        let refused = runs_on(&engine, native).err();
        out.push(ProfileStatus {
            profile,
            fingerprint: engine_fingerprint(&engine, keyed),
            runs_here: refused.is_none(),
            refused,
        });
    }
    Ok(out)
}

/// The fingerprints of this architecture's portable profiles in the given mode: artifacts stored
/// under them are current for this build, not stale.
pub fn portable_fingerprints(keyed: bool) -> Result<Vec<(CpuProfile, Fingerprint)>, ProfileError> {
    PORTABLE
        .iter()
        .map(|&p| Ok((p, engine_fingerprint(&p.engine()?, keyed))))
        .collect()
}

/// Whether `native` accepts code compiled by `profile_engine`, by wasmtime's own check.
pub fn runs_on(profile_engine: &Engine, native: &Engine) -> Result<(), String> {
    let artifact = profile_engine
        .precompile_component(EMPTY_COMPONENT)
        .map_err(|e| format!("cannot compile a test component: {e:#}"))?;
    // SAFETY: `artifact` was produced a moment ago by `precompile_component` in this process and
    // never left its memory; deserializing it is exactly the check wanted (and the empty component
    // has no code to run).
    unsafe { Component::deserialize(native, &artifact) }
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_what_exists() {
        for p in CpuProfile::available() {
            assert_eq!(p.name().parse::<CpuProfile>().ok(), Some(p));
        }
        let e = "x86-64-v9".parse::<CpuProfile>().unwrap_err();
        assert!(
            matches!(&e, ProfileError::Unknown { name } if name == "x86-64-v9"),
            "{e:?}"
        );
        assert!(e.to_string().contains("native"), "{e}");
        #[cfg(not(target_arch = "x86_64"))]
        assert!(matches!(
            "x86-64-v2".parse::<CpuProfile>(),
            Err(ProfileError::NotThisArchitecture { .. })
        ));
    }

    #[test]
    fn the_native_profile_is_the_node_engine() {
        let native = CpuProfile::Native.engine().expect("engine");
        let node = crate::init_wasm_engine().expect("engine");
        assert_eq!(engine_fingerprint(&native, false), engine_fingerprint(&node, false));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_portable_profile_has_its_own_fingerprint_and_native_shares_at_most_one() {
        let portable: Vec<Fingerprint> = portable_fingerprints(false)
            .expect("engines")
            .into_iter()
            .map(|(_, fp)| fp)
            .collect();
        let mut distinct = portable.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            portable.len(),
            "v2, v3, v4 each have a fingerprint of their own"
        );
        // A CPU with exactly one level's features (AVX2 without AVX-512 is x86-64-v3 to
        // Cranelift) compiles natively what that level's engine compiles: same fingerprint.
        let native = engine_fingerprint(&crate::init_wasm_engine().expect("engine"), false);
        assert!(portable.iter().filter(|fp| **fp == native).count() <= 1);
    }
}
