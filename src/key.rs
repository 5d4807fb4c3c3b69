//! What names a stored artifact: the source binary's SHA-256, the engine fingerprint and the kind
//! of compiled code (component or core module).

use std::fmt;

/// A SHA-256 digest: the name of a Wasm source binary.
pub type Hash32 = [u8; 32];

/// A SHA-256 as 64 lowercase hexadecimal digits, as files and logs name it; [`parse_hash`] reads
/// it back.
///
/// ```
/// use wasm_node_cache::config::{hash_hex, parse_hash};
/// let text = hash_hex(&[0xab; 32]);
/// assert_eq!(text, "ab".repeat(32));
/// assert_eq!(parse_hash(&text), Ok([0xab; 32]));
/// ```
pub fn hash_hex(hash: &Hash32) -> String {
    hex::encode(hash)
}

/// Parses a 64-digit hexadecimal SHA-256 (either case).
///
/// ```
/// let h = wasm_node_cache::config::parse_hash(&"ab".repeat(32)).unwrap();
/// assert_eq!(h, [0xab; 32]);
/// assert!(wasm_node_cache::config::parse_hash("xyz").is_err());
/// ```
pub fn parse_hash(text: &str) -> Result<Hash32, ParseHashError> {
    if text.len() != 64 {
        return Err(ParseHashError::WrongLength {
            text: text.to_owned(),
            len: text.len(),
        });
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| ParseHashError::NotHex { text: text.to_owned() })?;
    Ok(out)
}

/// Why a text is not a SHA-256 ([`parse_hash`]). Each variant holds the text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseHashError {
    /// Not 64 characters long.
    WrongLength {
        /// The text.
        text: String,
        /// Its length in bytes.
        len: usize,
    },
    /// 64 characters, not all hexadecimal digits.
    NotHex {
        /// The text.
        text: String,
    },
}

impl fmt::Display for ParseHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseHashError::WrongLength { text, len } => write!(
                f,
                "{text:?} is not a SHA-256: expected 64 hex digits, found {len} characters"
            ),
            ParseHashError::NotHex { text } => write!(f, "{text:?} is not a SHA-256: not hexadecimal"),
        }
    }
}

impl std::error::Error for ParseHashError {}

/// True when `name` is a source binary's file name: 64 lowercase hex digits, the only spelling
/// under which a binary is ever looked up (`hex::encode`). An uppercase name would be whitelisted
/// and then never found.
pub fn is_hash_name(name: &str) -> bool {
    name.len() == 64 && is_lower_hex(name)
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Identifies the engine configuration (wasmtime version, target, compiler settings, wasm
/// features), this crate's artifact format, and the store's authentication mode. Artifacts are
/// only ever loaded by an engine with the same fingerprint; `engine::engine_fingerprint`
/// computes it.
/// Shown and serialized as 32 lowercase hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 16]);

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl Fingerprint {
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`Fingerprint::to_hex`]'s output: exactly 32 lowercase hex digits, the only spelling
    /// this crate writes, so that one fingerprint has one file name (an uppercase twin is a
    /// foreign file, never read as the current key).
    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        if text.len() != 32 || !is_lower_hex(text) {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What an artifact holds: a component or a core module. The same bytes are never both (a
/// binary's header says which it is), but the kind is part of the key and of the trailer anyway,
/// so that no artifact is ever deserialized as the other kind, whatever its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// A component (`Component::deserialize`): the node's kind.
    Component,
    /// A core module (`Module::deserialize`).
    Module,
}

impl Kind {
    /// `component` or `module`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Component => "component",
            Kind::Module => "module",
        }
    }

    /// The end of this kind's artifact file names.
    fn suffix(self) -> &'static str {
        match self {
            Kind::Component => ".cwasm",
            Kind::Module => ".module.cwasm",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The full key of a stored artifact. The format version is folded into the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    /// SHA-256 of the source binary.
    pub source: Hash32,
    /// Engine fingerprint.
    pub fingerprint: Fingerprint,
    /// Component or core module.
    pub kind: Kind,
}

impl ArtifactKey {
    /// The artifact's file name in the store: `<fingerprint>-<source hash>.cwasm` for a
    /// component, `<fingerprint>-<source hash>.module.cwasm` for a core module.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}{}",
            self.fingerprint.to_hex(),
            hex::encode(self.source),
            self.kind.suffix()
        )
    }

    /// Inverse of [`ArtifactKey::file_name`]; `None` for any other name, including the same name
    /// in another case: only lowercase hex names are artifacts.
    pub fn from_file_name(name: &str) -> Option<ArtifactKey> {
        // The module suffix first: it ends with the component's.
        let (stem, kind) = match name.strip_suffix(Kind::Module.suffix()) {
            Some(stem) => (stem, Kind::Module),
            None => (name.strip_suffix(Kind::Component.suffix())?, Kind::Component),
        };
        let (fp, source) = stem.split_once('-')?;
        if fp.len() != 32 || !is_hash_name(source) {
            return None;
        }
        let fingerprint = Fingerprint::from_hex(fp)?;
        let mut src = [0u8; 32];
        hex::decode_to_slice(source, &mut src).ok()?;
        Some(ArtifactKey {
            source: src,
            fingerprint,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_round_trip() {
        let k = ArtifactKey {
            source: [0x5a; 32],
            fingerprint: Fingerprint([0x01; 16]),
            kind: Kind::Component,
        };
        assert_eq!(ArtifactKey::from_file_name(&k.file_name()), Some(k));
        let m = ArtifactKey {
            kind: Kind::Module,
            ..k
        };
        assert!(m.file_name().ends_with(".module.cwasm"), "{}", m.file_name());
        assert_eq!(ArtifactKey::from_file_name(&m.file_name()), Some(m));
        assert_ne!(m.file_name(), k.file_name());
        assert_eq!(
            ArtifactKey::from_file_name(&k.file_name().replace(".cwasm", ".other.cwasm")),
            None
        );
        assert_eq!(ArtifactKey::from_file_name("lock"), None);
        assert_eq!(ArtifactKey::from_file_name(".tmp-abc"), None);
        assert_eq!(
            ArtifactKey::from_file_name(&format!("{}-{}.cwasm", "zz".repeat(16), "00".repeat(32))),
            None
        );
        let upper_fp = format!("{}-{}.cwasm", "AB".repeat(16), "00".repeat(32));
        assert_eq!(ArtifactKey::from_file_name(&upper_fp), None);
        let upper_src = format!("{}-{}.cwasm", "ab".repeat(16), "0A".repeat(32));
        assert_eq!(ArtifactKey::from_file_name(&upper_src), None);
        assert_eq!(Fingerprint::from_hex(&"AB".repeat(16)), None);
        assert_eq!(Fingerprint::from_hex(&"ab".repeat(16)), Some(Fingerprint([0xab; 16])));
    }

    #[test]
    fn hash_names_are_lowercase_only() {
        assert!(is_hash_name(&"ab".repeat(32)));
        assert!(
            !is_hash_name(&"AB".repeat(32)),
            "binaries are looked up by lowercase name only"
        );
        assert!(!is_hash_name(&"ab".repeat(31)));
    }

    #[test]
    fn parse_hash_errors_name_the_text() {
        let e = parse_hash("nothex").unwrap_err();
        assert!(
            matches!(&e, ParseHashError::WrongLength { text, len: 6 } if text == "nothex"),
            "{e:?}"
        );
        assert!(e.to_string().contains("nothex"), "{e}");
        let e = parse_hash(&"g".repeat(64)).unwrap_err();
        assert!(matches!(&e, ParseHashError::NotHex { .. }), "{e:?}");
        assert!(e.to_string().contains("not hexadecimal"), "{e}");
    }
}
