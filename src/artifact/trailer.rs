//! The trailer's format: its fixed layout, encoding, decoding and binding to a key.
//!
//! The trailer sits *after* the payload so that the file still begins with wasmtime's ELF image
//! and can be handed to `Component::deserialize_file`, which maps the file privately and shares
//! pages with the page cache instead of copying it (README, Performance). Wasmtime locates
//! everything through ELF offsets and ignores trailing bytes; `tests/it/trailer_guard.rs` fails
//! loudly if an upgrade stops tolerating them.
//!
//! Trailer layout, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `WNCART\0\x01` |
//! | 8 | 4 | format version |
//! | 12 | 4 | flags (bit 0: header tag is a keyed MAC; bit 1: the payload is a core module, not a component; bits 16-31: in MAC mode, the key's id, 0 when unknown) |
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

use zerocopy::byteorder::{LE, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ArtifactError;
use super::seal::{Sealer, payload_checksum};
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
/// Where a MAC-mode trailer records its key's id ([`Sealer::key_id`]). Readers before ids ignore
/// these bits, so recording them needs no new format version; artifacts written before have 0.
const KEY_ID_SHIFT: u32 = 16;

fn kind_flag(kind: Kind) -> u32 {
    match kind {
        Kind::Component => 0,
        Kind::Module => FLAG_MODULE,
    }
}

/// The flag bit of `sealer`'s mode.
fn mode_flag(sealer: &Sealer) -> u32 {
    match sealer.key_id() {
        Some(id) => FLAG_MAC | (u32::from(id) << KEY_ID_SHIFT),
        None => 0,
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

/// Builds the trailer that follows `payload` for `key`.
pub fn encode_trailer(payload: &[u8], key: &ArtifactKey, sealer: &Sealer, created_unix: u64) -> [u8; TRAILER_LEN] {
    let mut raw = RawTrailer {
        magic: MAGIC,
        format_version: FORMAT_VERSION.into(),
        flags: (mode_flag(sealer) | kind_flag(key.kind)).into(),
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
#[cfg(any(test, feature = "fault-injection"))]
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
        // The recorded key id is not authenticated (the tag just failed): a diagnosis, never a
        // reason to trust anything.
        let theirs = (flags >> KEY_ID_SHIFT) as u16;
        if let Some(ours) = sealer.key_id()
            && theirs != 0
            && theirs != ours
        {
            return Err(ArtifactError::OtherKey { key_id: theirs });
        }
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
