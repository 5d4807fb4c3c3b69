//! The on-disk artifact format: wasmtime's precompiled bytes followed by a fixed trailer.
//!
//! ```text
//! [ payload: wasmtime .cwasm (ELF) ][ trailer: 128 bytes ]
//! ```
//!
//! The trailer sits *after* the payload so that the file still begins with wasmtime's ELF image
//! and can be handed to `Component::deserialize_file`, which maps the file privately and shares
//! pages with the page cache instead of copying it (README, Performance). Wasmtime locates
//! everything through ELF offsets and ignores trailing bytes; `tests/trailer_guard.rs` fails
//! loudly if an upgrade stops tolerating them.
//!
//! Trailer layout, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `WNCART\0\x01` |
//! | 8 | 4 | format version |
//! | 12 | 4 | flags (bit 0: header tag is a keyed MAC; bit 1: the payload is a core module, not a component) |
//! | 16 | 32 | SHA-256 of the source binary |
//! | 48 | 16 | engine fingerprint |
//! | 64 | 8 | payload length |
//! | 72 | 8 | created, seconds since the Unix epoch |
//! | 80 | 32 | payload checksum: plain mode XXH3-128 (16 bytes, then 16 zero bytes); MAC mode BLAKE3 |
//! | 112 | 16 | tag: BLAKE3 (plain: derive-key mode; MAC mode: keyed) over bytes 0..112 |
//!
//! The tag covers the payload checksum, so in MAC mode it authenticates the payload too; there the
//! checksum must resist forgery, hence BLAKE3. In plain mode it only guards against accidents
//! (whoever can write the store can recompute any unkeyed hash), so the faster XXH3-128 serves.

use std::fmt;
use std::hash::{Hash, Hasher};

use twox_hash::xxhash3_128::SecretBuffer;
use wasmtime::Engine;
use zerocopy::byteorder::{LE, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::key::{ArtifactKey, Fingerprint, Hash32, Kind};

/// Version of this file format; part of the engine fingerprint and of every trailer. Version 2
/// checksums plain-mode payloads with XXH3-128 instead of BLAKE3.
pub const FORMAT_VERSION: u32 = 2;
/// Size of the trailer in bytes.
pub const TRAILER_LEN: usize = 128;
/// Largest artifact the loader will look at: far above any real component, and it keeps a
/// corrupt length from ever driving a large mapping or allocation.
pub const MAX_ARTIFACT_LEN: u64 = 1 << 30;

const MAGIC: [u8; 8] = *b"WNCART\0\x01";

/// The trailer as it lies on disk: the table in the module docs, field for field. Every field has
/// alignment 1, so there is no padding, and any 128 bytes are a valid value: reading one from disk
/// cannot fail or panic; the checks below decide what it is worth.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawTrailer {
    magic: [u8; 8],
    format_version: U32<LE>,
    flags: U32<LE>,
    source_hash: [u8; 32],
    fingerprint: [u8; 16],
    payload_len: U64<LE>,
    created_unix: U64<LE>,
    payload_checksum: [u8; 32],
    tag: [u8; 16],
}
const TAGGED_LEN: usize = 112;
const FLAG_MAC: u32 = 1;
/// Set for a core module's artifact. Component artifacts, the only kind before modules were
/// stored, have it clear, so they keep their format version.
const FLAG_MODULE: u32 = 2;

fn kind_flag(kind: Kind) -> u32 {
    match kind {
        Kind::Component => 0,
        Kind::Module => FLAG_MODULE,
    }
}
const PLAIN_TAG_CONTEXT: &str = "wasm-node-cache 2026-11-25 artifact trailer tag v1";

/// How the trailer's tag is computed: a plain checksum, or a MAC under a secret key.
#[derive(Clone)]
pub enum Sealer {
    /// Integrity against corruption only.
    Plain,
    /// Integrity and authenticity: only holders of the key can produce an accepted artifact.
    Keyed([u8; 32]),
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        match self {
            Sealer::Plain => f.write_str("Plain"),
            Sealer::Keyed(_) => f.write_str("Keyed(<secret>)"),
        }
    }
}

impl Sealer {
    fn flags(&self) -> u32 {
        match self {
            Sealer::Plain => 0,
            Sealer::Keyed(_) => FLAG_MAC,
        }
    }

    /// True when artifacts carry a keyed MAC.
    pub fn is_keyed(&self) -> bool {
        matches!(self, Sealer::Keyed(_))
    }

    /// A hasher for this mode's payload checksum.
    pub(crate) fn payload_hasher(&self) -> PayloadHasher {
        match self {
            Sealer::Plain => PayloadHasher::Fast(Xxh3::new(SecretBuffer::default())),
            Sealer::Keyed(_) => PayloadHasher::Strong(blake3::Hasher::new()),
        }
    }

    fn tag(&self, tagged: &[u8]) -> [u8; 16] {
        let mut hasher = match self {
            Sealer::Plain => blake3::Hasher::new_derive_key(PLAIN_TAG_CONTEXT),
            Sealer::Keyed(key) => blake3::Hasher::new_keyed(key),
        };
        hasher.update(tagged);
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        out
    }
}

/// The payload checksum being computed, streamed (see the module docs for why each mode has its own).
// Both variants live on the stack: verification must not allocate (tests/fuzz_artifact.rs counts),
// which rules out boxing the larger one and twox-hash's default `Hasher` (it boxes its secret).
#[allow(clippy::large_enum_variant)]
pub(crate) enum PayloadHasher {
    /// Plain mode: XXH3-128 with the default secret, allocating nothing.
    Fast(Xxh3),
    /// MAC mode: BLAKE3.
    Strong(blake3::Hasher),
}

type Xxh3 = twox_hash::xxhash3_128::RawHasher<&'static [u8; twox_hash::xxhash3_128::DEFAULT_SECRET_LENGTH]>;

impl PayloadHasher {
    /// Adds `bytes`.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            PayloadHasher::Fast(h) => h.write(bytes),
            PayloadHasher::Strong(h) => {
                h.update(bytes);
            }
        }
    }

    /// The checksum as the trailer stores it.
    pub(crate) fn finalize(&self) -> [u8; 32] {
        match self {
            PayloadHasher::Fast(h) => {
                let mut out = [0u8; 32];
                out[..16].copy_from_slice(&h.finish_128().to_le_bytes());
                out
            }
            PayloadHasher::Strong(h) => *h.finalize().as_bytes(),
        }
    }
}

/// The decoded trailer of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Format version the artifact was written with.
    pub format_version: u32,
    /// Flag bits; bit 0 means the tag is a keyed MAC, bit 1 a core module.
    pub flags: u32,
    /// Component or core module (from the flags).
    pub kind: Kind,
    /// SHA-256 of the source Wasm binary.
    pub source_hash: Hash32,
    /// Fingerprint of the engine that compiled it.
    pub fingerprint: Fingerprint,
    /// Length of wasmtime's payload in front of the trailer.
    pub payload_len: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Checksum of the payload (XXH3-128 in plain mode, BLAKE3 in MAC mode).
    pub payload_checksum: [u8; 32],
}

/// Why an artifact was refused. Every variant is a miss: the entry is recompiled and replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactError {
    /// Shorter than a trailer plus a minimal payload (includes zero-length files).
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// Longer than [`MAX_ARTIFACT_LEN`].
    TooLong {
        /// The file's length.
        len: u64,
    },
    /// The trailer does not start with our magic: not one of our artifacts, or truncated.
    BadMagic,
    /// Written by a format version this build does not read.
    UnsupportedVersion {
        /// The version in the trailer.
        found: u32,
    },
    /// The trailer's tag does not match: the trailer was corrupted or forged.
    BadTag {
        /// True when the tag is a keyed MAC.
        keyed: bool,
    },
    /// The artifact's MAC flag does not match the store's mode.
    WrongMode {
        /// True when the artifact carries a MAC.
        artifact_keyed: bool,
    },
    /// The payload length recorded in the trailer disagrees with the file's length.
    LengthMismatch {
        /// Payload length in the trailer.
        declared: u64,
        /// Payload length the file has.
        actual: u64,
    },
    /// The artifact was compiled from another source binary (for example copied under another name).
    WrongSource {
        /// The source hash in the trailer.
        found: Hash32,
    },
    /// The artifact was compiled by another engine configuration.
    WrongFingerprint {
        /// The fingerprint in the trailer.
        found: Fingerprint,
    },
    /// The payload does not match its checksum: corrupted bytes.
    PayloadChecksum,
    /// The artifact holds the other kind (a core module under a component's name, or the
    /// reverse): never handed to the other kind's deserializer.
    WrongKind {
        /// The kind in the trailer.
        found: Kind,
    },
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactError::TooShort { len } => write!(f, "truncated: {len} bytes is shorter than any artifact"),
            ArtifactError::TooLong { len } => write!(f, "{len} bytes exceeds the {MAX_ARTIFACT_LEN}-byte limit"),
            ArtifactError::BadMagic => f.write_str("no artifact trailer (bad magic): truncated or not an artifact"),
            ArtifactError::UnsupportedVersion { found } => {
                write!(f, "format version {found} is not {FORMAT_VERSION}")
            }
            ArtifactError::BadTag { keyed: true } => {
                f.write_str("MAC does not verify: trailer forged or corrupted, or another key")
            }
            ArtifactError::BadTag { keyed: false } => f.write_str("trailer checksum mismatch: trailer corrupted"),
            ArtifactError::WrongMode { artifact_keyed: true } => {
                f.write_str("artifact carries a MAC but the store is not in MAC mode")
            }
            ArtifactError::WrongMode { artifact_keyed: false } => {
                f.write_str("artifact carries no MAC but the store requires one")
            }
            ArtifactError::LengthMismatch { declared, actual } => {
                write!(
                    f,
                    "payload length {declared} recorded, {actual} present: truncated or extended"
                )
            }
            ArtifactError::WrongSource { found } => {
                write!(
                    f,
                    "compiled from another source ({}): artifact copied under the wrong name",
                    hex::encode(found)
                )
            }
            ArtifactError::WrongFingerprint { found } => {
                write!(f, "compiled by another engine (fingerprint {})", found.to_hex())
            }
            ArtifactError::PayloadChecksum => f.write_str("payload checksum mismatch: artifact bytes corrupted"),
            ArtifactError::WrongKind { found } => {
                write!(
                    f,
                    "holds a {found}, not the kind its name says: copied under the wrong name"
                )
            }
        }
    }
}

impl std::error::Error for ArtifactError {}

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

/// The checksum of a payload in `sealer`'s mode, as stored in the trailer.
pub fn payload_checksum(payload: &[u8], sealer: &Sealer) -> [u8; 32] {
    let mut h = sealer.payload_hasher();
    h.update(payload);
    h.finalize()
}

/// Builds the trailer that follows `payload` for `key`.
pub fn encode_trailer(payload: &[u8], key: &ArtifactKey, sealer: &Sealer, created_unix: u64) -> [u8; TRAILER_LEN] {
    let mut raw = RawTrailer {
        magic: MAGIC,
        format_version: FORMAT_VERSION.into(),
        flags: (sealer.flags() | kind_flag(key.kind)).into(),
        source_hash: key.source,
        fingerprint: key.fingerprint.0,
        payload_len: (payload.len() as u64).into(),
        created_unix: created_unix.into(),
        payload_checksum: payload_checksum(payload, sealer),
        tag: [0; 16],
    };
    raw.tag = sealer.tag(&raw.as_bytes()[..TAGGED_LEN]);
    zerocopy::transmute!(raw)
}

/// Decodes and authenticates the trailer at the end of `file`, and checks that the recorded
/// payload length matches the file. Does not look at the payload bytes.
///
/// Never panics and never allocates from a length field, whatever `file` holds.
pub fn decode_trailer(file: &[u8], sealer: &Sealer) -> Result<Trailer, ArtifactError> {
    let len = file.len() as u64;
    check_file_len(len)?;
    let mut t = [0u8; TRAILER_LEN];
    t.copy_from_slice(&file[file.len() - TRAILER_LEN..]);
    decode_trailer_bytes(&t, len, sealer)
}

/// The length checks of [`decode_trailer`], for a file not yet read: too short to hold a trailer
/// and a payload, or above [`MAX_ARTIFACT_LEN`].
pub fn check_file_len(len: u64) -> Result<(), ArtifactError> {
    if len > MAX_ARTIFACT_LEN {
        return Err(ArtifactError::TooLong { len });
    }
    if len <= TRAILER_LEN as u64 {
        return Err(ArtifactError::TooShort { len });
    }
    Ok(())
}

/// [`decode_trailer`] for a trailer read on its own from the end of a file of `file_len` bytes,
/// so that a loader can stream the payload instead of holding the whole file.
pub fn decode_trailer_bytes(t: &[u8; TRAILER_LEN], file_len: u64, sealer: &Sealer) -> Result<Trailer, ArtifactError> {
    check_file_len(file_len)?;
    let payload_actual = file_len - TRAILER_LEN as u64;
    let raw: RawTrailer = zerocopy::transmute!(*t);
    if raw.magic != MAGIC {
        return Err(ArtifactError::BadMagic);
    }
    let format_version = raw.format_version.get();
    if format_version != FORMAT_VERSION {
        return Err(ArtifactError::UnsupportedVersion { found: format_version });
    }
    let flags = raw.flags.get();
    let artifact_keyed = flags & FLAG_MAC != 0;
    if artifact_keyed != sealer.is_keyed() {
        return Err(ArtifactError::WrongMode { artifact_keyed });
    }
    // Tag first: nothing else in the trailer is trusted before it verifies. The comparison is
    // constant-time (blake3's `Hash` equality) because in MAC mode the tag is secret-derived.
    let padded = |tag: [u8; 16]| {
        let mut a = [0u8; 32];
        a[..16].copy_from_slice(&tag);
        blake3::Hash::from_bytes(a)
    };
    if padded(sealer.tag(&t[..TAGGED_LEN])) != padded(raw.tag) {
        return Err(ArtifactError::BadTag {
            keyed: sealer.is_keyed(),
        });
    }
    let payload_len = raw.payload_len.get();
    if payload_len != payload_actual {
        return Err(ArtifactError::LengthMismatch {
            declared: payload_len,
            actual: payload_actual,
        });
    }
    let kind = if flags & FLAG_MODULE != 0 {
        Kind::Module
    } else {
        Kind::Component
    };
    Ok(Trailer {
        format_version,
        flags,
        kind,
        source_hash: raw.source_hash,
        fingerprint: Fingerprint(raw.fingerprint),
        payload_len,
        created_unix: raw.created_unix.get(),
        payload_checksum: raw.payload_checksum,
    })
}

/// Checks that an authenticated trailer names `key`: an artifact copied under another hash's
/// name, renamed from another engine's, or from the other kind's, is refused here.
pub fn check_binding(trailer: &Trailer, key: &ArtifactKey) -> Result<(), ArtifactError> {
    if trailer.source_hash != key.source {
        return Err(ArtifactError::WrongSource {
            found: trailer.source_hash,
        });
    }
    if trailer.fingerprint != key.fingerprint {
        return Err(ArtifactError::WrongFingerprint {
            found: trailer.fingerprint,
        });
    }
    if trailer.kind != key.kind {
        return Err(ArtifactError::WrongKind { found: trailer.kind });
    }
    Ok(())
}

/// Full verification of an artifact's bytes against the key it was looked up under: trailer,
/// binding to the key, and payload checksum. On success returns the trailer; the payload is
/// `file[..trailer.payload_len]`.
pub fn verify(file: &[u8], key: &ArtifactKey, sealer: &Sealer) -> Result<Trailer, ArtifactError> {
    let trailer = decode_trailer(file, sealer)?;
    check_binding(&trailer, key)?;
    // decode_trailer checked payload_len == file.len() - TRAILER_LEN, so this is in bounds.
    let payload = &file[..file.len() - TRAILER_LEN];
    if payload_checksum(payload, sealer) != trailer.payload_checksum {
        return Err(ArtifactError::PayloadChecksum);
    }
    Ok(trailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: u8, fp: u8) -> ArtifactKey {
        ArtifactKey {
            source: [source; 32],
            fingerprint: Fingerprint([fp; 16]),
            kind: Kind::Component,
        }
    }

    fn artifact(payload: &[u8], key: &ArtifactKey, sealer: &Sealer) -> Vec<u8> {
        let mut v = payload.to_vec();
        v.extend_from_slice(&encode_trailer(payload, key, sealer, 1_700_000_000));
        v
    }

    #[test]
    fn round_trip() {
        let k = key(1, 2);
        let a = artifact(b"payload bytes", &k, &Sealer::Plain);
        let t = verify(&a, &k, &Sealer::Plain).expect("verifies");
        assert_eq!(t.payload_len, 13);
        assert_eq!(t.created_unix, 1_700_000_000);
        assert_eq!(t.source_hash, k.source);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let k = key(1, 2);
        let a = artifact(b"some payload", &k, &Sealer::Plain);
        for byte in 0..a.len() {
            for bit in 0..8 {
                let mut b = a.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    verify(&b, &k, &Sealer::Plain).is_err(),
                    "flip at byte {byte} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn bound_to_its_key() {
        let a = artifact(b"x", &key(1, 2), &Sealer::Plain);
        assert!(matches!(
            verify(&a, &key(3, 2), &Sealer::Plain),
            Err(ArtifactError::WrongSource { .. })
        ));
        assert!(matches!(
            verify(&a, &key(1, 4), &Sealer::Plain),
            Err(ArtifactError::WrongFingerprint { .. })
        ));
    }

    #[test]
    fn bound_to_its_kind() {
        let component = key(1, 2);
        let module = ArtifactKey {
            kind: Kind::Module,
            ..component
        };
        for sealer in [Sealer::Plain, Sealer::Keyed([7; 32])] {
            let m = artifact(b"x", &module, &sealer);
            assert_eq!(verify(&m, &module, &sealer).map(|t| t.kind), Ok(Kind::Module));
            assert_eq!(
                verify(&m, &component, &sealer),
                Err(ArtifactError::WrongKind { found: Kind::Module })
            );
            let c = artifact(b"x", &component, &sealer);
            assert_eq!(
                verify(&c, &module, &sealer),
                Err(ArtifactError::WrongKind { found: Kind::Component })
            );
        }
    }

    #[test]
    fn truncations_are_rejected() {
        let k = key(1, 2);
        let a = artifact(&[7u8; 300], &k, &Sealer::Plain);
        for len in 0..a.len() {
            assert!(
                verify(&a[..len], &k, &Sealer::Plain).is_err(),
                "truncation to {len} accepted"
            );
        }
    }

    #[test]
    fn mac_mode_rejects_plain_and_other_keys() {
        let k = key(1, 2);
        let plain = artifact(b"p", &k, &Sealer::Plain);
        let mine = Sealer::Keyed([9; 32]);
        let theirs = Sealer::Keyed([8; 32]);
        assert_eq!(
            verify(&plain, &k, &mine),
            Err(ArtifactError::WrongMode { artifact_keyed: false })
        );
        let forged = artifact(b"p", &k, &theirs);
        assert_eq!(verify(&forged, &k, &mine), Err(ArtifactError::BadTag { keyed: true }));
        assert!(verify(&artifact(b"p", &k, &mine), &k, &mine).is_ok());
    }

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
    fn debug_never_prints_the_key() {
        assert_eq!(format!("{:?}", Sealer::Keyed([0xab; 32])), "Keyed(<secret>)");
    }
}
