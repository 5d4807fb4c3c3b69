//! The authentication mode of a store: a plain checksum against accidents, or a keyed MAC, and
//! the payload checksum each mode computes while streaming.

use std::fmt;

use twox_hash::xxhash3_128::SecretBuffer;

const PLAIN_TAG_CONTEXT: &str = "wasm-node-cache 2026-11-25 artifact trailer tag v1";
const KEY_ID_CONTEXT: &str = "wasm-node-cache 2026-11-30 MAC key id v1";

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
    /// True when artifacts carry a keyed MAC.
    pub fn is_keyed(&self) -> bool {
        matches!(self, Sealer::Keyed(_))
    }

    /// The key's id: 16 bits derived from the key (never the key, nor enough of anything to
    /// guess it), recorded in every MAC-mode trailer so that an artifact sealed under another key
    /// is told apart from a corrupt one. Never 0, which marks "no id" (plain mode, or an artifact
    /// written before ids were recorded). `None` in plain mode.
    pub(crate) fn key_id(&self) -> Option<u16> {
        match self {
            Sealer::Plain => None,
            Sealer::Keyed(key) => {
                let derived = blake3::derive_key(KEY_ID_CONTEXT, key);
                let id = u16::from_le_bytes([derived[0], derived[1]]);
                Some(id.max(1))
            }
        }
    }

    /// A hasher for this mode's payload checksum.
    pub(crate) fn payload_hasher(&self) -> PayloadHasher {
        match self {
            Sealer::Plain => PayloadHasher::Fast(Xxh3::new(SecretBuffer::default())),
            Sealer::Keyed(_) => PayloadHasher::Strong(blake3::Hasher::new()),
        }
    }

    pub(super) fn tag(&self, tagged: &[u8]) -> [u8; 16] {
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
// Both variants live on the stack: verification must not allocate (tests/it/fuzz_artifact.rs counts),
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

/// The checksum of a payload in `sealer`'s mode, as stored in the trailer.
pub fn payload_checksum(payload: &[u8], sealer: &Sealer) -> [u8; 32] {
    let mut h = sealer.payload_hasher();
    h.update(payload);
    h.finalize()
}
