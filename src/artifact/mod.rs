//! The on-disk artifact format and its verification: pure functions over bytes (fuzzed).
//!
//! ```text
//! [ payload: wasmtime .cwasm (ELF) ][ trailer: 128 bytes ]
//! ```
//!
//! [`trailer`] is the format (layout, encoding, decoding, binding to a key); [`seal`] is the
//! authentication mode (plain checksum or keyed MAC) and the payload hashers. This module puts
//! them together into the full check of an artifact's bytes.

pub mod seal;
pub mod trailer;

use std::fmt;

use crate::key::{Fingerprint, Hash32, Kind};
pub use seal::Sealer;
#[cfg(any(test, feature = "fault-injection"))]
pub use seal::payload_checksum;
#[cfg(any(test, feature = "fault-injection"))]
pub use trailer::decode_trailer;
pub use trailer::{
    FORMAT_VERSION, MAX_ARTIFACT_LEN, TRAILER_LEN, Trailer, check_binding, check_file_len, decode_trailer_bytes,
    encode_trailer,
};

/// Why an artifact was refused. Every variant is a miss: the entry is recompiled and replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArtifactError {
    /// Shorter than a trailer plus a minimal payload (includes zero-length files).
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// Longer than the largest artifact the loader looks at (1 GiB).
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
    /// The artifact was sealed under another MAC key (its trailer records another key id): not a
    /// corrupt artifact, an artifact for a node with another key.
    OtherKey {
        /// The id recorded in the trailer (16 bits derived from that key).
        key_id: u16,
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

impl ArtifactError {
    /// A stable name for the check that failed: `too_short`, `too_long`, `bad_magic`,
    /// `unsupported_version`, `bad_tag`, `other_key`, `wrong_mode`, `length_mismatch`,
    /// `wrong_source`, `wrong_fingerprint`, `payload_checksum`, `wrong_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ArtifactError::TooShort { .. } => "too_short",
            ArtifactError::TooLong { .. } => "too_long",
            ArtifactError::BadMagic => "bad_magic",
            ArtifactError::UnsupportedVersion { .. } => "unsupported_version",
            ArtifactError::BadTag { .. } => "bad_tag",
            ArtifactError::OtherKey { .. } => "other_key",
            ArtifactError::WrongMode { .. } => "wrong_mode",
            ArtifactError::LengthMismatch { .. } => "length_mismatch",
            ArtifactError::WrongSource { .. } => "wrong_source",
            ArtifactError::WrongFingerprint { .. } => "wrong_fingerprint",
            ArtifactError::PayloadChecksum => "payload_checksum",
            ArtifactError::WrongKind { .. } => "wrong_kind",
        }
    }
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
            ArtifactError::BadTag { keyed: true } => f.write_str("MAC does not verify: trailer forged or corrupted"),
            ArtifactError::OtherKey { key_id } => write!(
                f,
                "sealed under another MAC key (key id {key_id:04x}): an artifact of a node with another key, not a corrupt one"
            ),
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

/// Full verification of an artifact's bytes against the key it was looked up under: trailer,
/// binding to the key, and payload checksum. On success returns the trailer; the payload is
/// `file[..trailer.payload_len]`.
#[cfg(any(test, feature = "fault-injection"))]
pub fn verify(file: &[u8], key: &crate::key::ArtifactKey, sealer: &Sealer) -> Result<Trailer, ArtifactError> {
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
    use crate::key::ArtifactKey;

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
        let another = artifact(b"p", &k, &theirs);
        let their_id = theirs.key_id().expect("keyed");
        assert_ne!(Some(their_id), mine.key_id());
        assert_eq!(
            verify(&another, &k, &mine),
            Err(ArtifactError::OtherKey { key_id: their_id }),
            "another key is told apart from a corrupt artifact"
        );
        let mut corrupt = artifact(b"p", &k, &mine);
        let tag_at = corrupt.len() - 1;
        corrupt[tag_at] ^= 1;
        assert_eq!(verify(&corrupt, &k, &mine), Err(ArtifactError::BadTag { keyed: true }));
        assert!(verify(&artifact(b"p", &k, &mine), &k, &mine).is_ok());
    }

    #[test]
    fn debug_never_prints_the_key() {
        assert_eq!(format!("{:?}", Sealer::Keyed([0xab; 32])), "Keyed(<secret>)");
    }
}
