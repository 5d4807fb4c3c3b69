//! What a resolution says about each request: where its compiled code came from
//! ([`Origin`]), what became of a freshly compiled artifact ([`StoreWrite`]), and the artifacts
//! that were found and refused on the way.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::error::StoreError;
use crate::key::Hash32;
use crate::profile::CpuProfile;
use crate::source::SkipReason;
use crate::store::{LoadPath, Rejection};

/// Where an [`ArtifactStore`](crate::ArtifactStore) found, or how it made, compiled code.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Origin {
    /// A verified artifact of the writable store, compiled for this engine.
    Store {
        /// The store directory.
        dir: PathBuf,
        /// How its code reached wasmtime.
        load_path: LoadPath,
    },
    /// A verified artifact of a read-only store (a bake), compiled for this engine.
    ReadOnlyStore {
        /// The read-only store's directory.
        dir: PathBuf,
        /// How its code reached wasmtime.
        load_path: LoadPath,
        /// Why the writable store's artifact was refused, if one was (it is then removed).
        rejected: Option<Rejection>,
    },
    /// A verified artifact compiled for a portable CPU profile, which this engine accepted for
    /// this CPU.
    Portable {
        /// The profile it was compiled for.
        profile: CpuProfile,
        /// The store (writable or read-only) that held it.
        dir: PathBuf,
        /// How its code reached wasmtime.
        load_path: LoadPath,
        /// Why the writable store's artifact was refused, if one was (it is then removed).
        rejected: Option<Rejection>,
    },
    /// Compiled in this call, and what publishing the artifact achieved (with the reason when it
    /// was not stored: lock held past the timeout, full disk, read-only file system...).
    Compiled {
        /// Stored, stored without a confirmed directory fsync, or not stored and why.
        stored: StoreWrite,
        /// Why the writable store's artifact was refused, if one was (it is then replaced).
        rejected: Option<Rejection>,
    },
}

impl Origin {
    /// True when the code was compiled in this call rather than loaded.
    pub fn is_compiled(&self) -> bool {
        matches!(self, Origin::Compiled { .. })
    }

    /// Why an artifact found under this engine's own key in the writable store was refused, if
    /// one was.
    pub fn rejected(&self) -> Option<&Rejection> {
        match self {
            Origin::Store { .. } => None,
            Origin::ReadOnlyStore { rejected, .. }
            | Origin::Portable { rejected, .. }
            | Origin::Compiled { rejected, .. } => rejected.as_ref(),
        }
    }

    /// The same origin, noting that the writable store's artifact was refused.
    pub(crate) fn with_rejection(mut self, why: Option<Rejection>) -> Origin {
        match &mut self {
            Origin::Store { .. } => {}
            Origin::ReadOnlyStore { rejected, .. }
            | Origin::Portable { rejected, .. }
            | Origin::Compiled { rejected, .. } => *rejected = why,
        }
        self
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Store { dir, load_path } => {
                write!(f, "loaded from {} ({})", dir.display(), load_path.as_str())
            }
            Origin::ReadOnlyStore { dir, load_path, .. } => {
                write!(
                    f,
                    "loaded from read-only store {} ({})",
                    dir.display(),
                    load_path.as_str()
                )
            }
            Origin::Portable {
                profile,
                dir,
                load_path,
                ..
            } => write!(
                f,
                "loaded {profile} artifact from {} ({})",
                dir.display(),
                load_path.as_str()
            ),
            Origin::Compiled { stored, .. } => match stored {
                StoreWrite::Stored => f.write_str("compiled and stored"),
                StoreWrite::DurabilityNotConfirmed(e) => {
                    write!(f, "compiled and stored, durability not confirmed: {e}")
                }
                StoreWrite::NotStored(e) => write!(f, "compiled, not stored: {}", e.message()),
                StoreWrite::NotWanted => {
                    f.write_str("compiled, not stored: the native profile is not among the CPU profiles to store")
                }
            },
        }?;
        if let Some(r) = self.rejected() {
            write!(f, "; the stored artifact was rejected: {r}")?;
        }
        Ok(())
    }
}

/// What became of a freshly compiled artifact in the writable store. In JSON
/// `{"status", "error"}`: `error` is the failure (`{"kind", "message"}`), `null` when none.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreWrite {
    /// Published and the directory fsynced: it survives a crash.
    Stored,
    /// Renamed into place and loadable, but the directory's fsync failed: a crash of the machine
    /// could still lose it (then the next start compiles it again).
    DurabilityNotConfirmed(StoreError),
    /// Not published; the next start compiles it again.
    NotStored(StoreError),
    /// Not published, as asked: this engine's own artifacts are not among the CPU profiles to
    /// store (a bake of portable profiles alone), so they stay in memory. Nothing went wrong.
    NotWanted,
}

impl Serialize for StoreWrite {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (status, error) = match self {
            StoreWrite::Stored => ("stored", None),
            StoreWrite::DurabilityNotConfirmed(e) => ("durability_not_confirmed", Some(e)),
            StoreWrite::NotStored(e) => ("not_stored", Some(e)),
            StoreWrite::NotWanted => ("not_wanted", None),
        };
        let mut st = s.serialize_struct("StoreWrite", 2)?;
        st.serialize_field("status", status)?;
        st.serialize_field("error", &error)?;
        st.end()
    }
}

impl StoreWrite {
    /// True when the artifact is in the store (durably or not).
    pub fn is_stored(&self) -> bool {
        matches!(self, StoreWrite::Stored | StoreWrite::DurabilityNotConfirmed(_))
    }
}

/// A portable artifact that was found and refused.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PortableRefusal {
    /// The profile it was compiled for.
    pub profile: CpuProfile,
    /// The store it lies in.
    #[serde(serialize_with = "crate::serial::path")]
    pub store: PathBuf,
    /// Why it was refused.
    #[serde(serialize_with = "crate::serial::display")]
    pub reason: Rejection,
}

/// Why a request has no compiled code.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Its source could not be read or did not match its hash (a named source).
    Source(SkipReason),
    /// wasmtime refused to compile it.
    Compile(Arc<wasmtime::Error>),
}

/// What a resolution did for one request.
pub(crate) struct Resolved<T> {
    pub hash: Hash32,
    pub result: Result<(T, Origin), Failure>,
    /// Portable artifacts tried and refused before it was served or compiled, best first.
    pub portable_refused: Vec<PortableRefusal>,
}

#[cfg(test)]
mod tests {
    use super::StoreWrite;

    /// Every form has both fields, as the docs' table says: `error` is `null`, never left out.
    #[test]
    fn a_store_write_always_has_status_and_error() {
        let json = |w: &StoreWrite| serde_json::to_value(w).expect("serializes");
        assert_eq!(
            json(&StoreWrite::Stored),
            serde_json::json!({"status": "stored", "error": null})
        );
        assert_eq!(
            json(&StoreWrite::NotWanted),
            serde_json::json!({"status": "not_wanted", "error": null})
        );
        let e = crate::error::StoreError::NoStore;
        let not_stored = json(&StoreWrite::NotStored(e));
        assert_eq!(not_stored["status"], "not_stored");
        assert_eq!(not_stored["error"]["kind"], "no_store");
    }
}
