//! [`ArtifactStore::status`](crate::ArtifactStore::status): what a store holds, read-only and
//! quick (trailers only, no payload hashing), as `status` and `status --json` show it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{LockKind, LockProblem, StoreError};
use crate::key::{Fingerprint, Hash32, Kind};
use crate::profile::{CpuProfile, ProfileStatus};
use crate::serial;
pub use crate::store::{ForeignFile as ForeignFileStatus, LockState};
use crate::store::{Rejection, Store, StoredEntry};

/// What [`ArtifactStore::status`](crate::ArtifactStore::status) found: a verdict, the writable
/// store, then each read-only store in the same form. Serializes as `status --json`'s object.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct StatusReport {
    /// True when nothing needs attention ([`StatusReport::problems`] is empty).
    pub healthy: bool,
    /// What needs attention, one sentence each: bad or refused artifacts, writable artifacts,
    /// leftover temp files, foreign files, a lock file others could open, a read-only store that is
    /// unusable or holds nothing for this engine, whitelisted components not stored.
    pub problems: Vec<String>,
    /// With a whitelist ([`StatusReport::with_whitelist`]): how many of its hashes the stores
    /// hold for this engine; `null` without one.
    pub whitelist: Option<Coverage>,
    /// The writable store (its fields at the top level of the JSON object).
    #[serde(flatten)]
    pub store: StoreStatus,
    /// Each read-only store, in the order configured.
    pub read_only_stores: Vec<ReadOnlyStatus>,
}

/// How much of a whitelist the stores hold for this engine.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Coverage {
    /// Hashes in the whitelist.
    pub listed: usize,
    /// Of them, those with an artifact this engine loads: its own fingerprint's, or a portable
    /// profile's that this CPU runs, in the writable store or a read-only one, with a sound
    /// trailer and trusted by the loader.
    pub stored: usize,
    /// Seen without the key: of the others, those held as this build's MAC-mode artifacts, which
    /// a node with the key loads but which cannot be checked here (sorted, hex in JSON).
    #[serde(serialize_with = "serial::hex_list")]
    pub mac_mode: Vec<Hash32>,
    /// The others, sorted (hex in JSON).
    #[serde(serialize_with = "serial::hex_list")]
    pub missing: Vec<Hash32>,
}

impl StatusReport {
    pub(crate) fn new(store: StoreStatus, read_only_stores: Vec<ReadOnlyStatus>) -> StatusReport {
        let mut report = StatusReport {
            healthy: true,
            problems: Vec::new(),
            whitelist: None,
            store,
            read_only_stores,
        };
        report.judge();
        report
    }

    /// The report with the coverage of `whitelist` (the node's `wasm.conf`), which counts in the
    /// verdict: a whitelisted component not stored is compiled at the next start.
    pub fn with_whitelist(mut self, whitelist: &std::collections::HashSet<Hash32>) -> StatusReport {
        let held = self.component_hashes(|s, e| {
            e.current
                && e.header_error.is_none()
                && e.refused.is_none()
                && s.fingerprints
                    .iter()
                    .find(|f| f.fingerprint == e.fingerprint)
                    .is_none_or(|f| f.current || f.runs_here != Some(false))
        });
        let mac = self.component_hashes(|_, e| e.mac_mode && e.refused.is_none());
        let (mut mac_mode, mut missing): (Vec<Hash32>, Vec<Hash32>) = whitelist
            .iter()
            .filter(|h| !held.contains(*h))
            .copied()
            .partition(|h| mac.contains(h));
        mac_mode.sort();
        missing.sort();
        self.whitelist = Some(Coverage {
            listed: whitelist.len(),
            stored: whitelist.len() - missing.len() - mac_mode.len(),
            mac_mode,
            missing,
        });
        self.judge();
        self
    }

    /// The hashes of the components that some store (writable or read-only) holds an artifact of
    /// for which `keep` holds.
    fn component_hashes(
        &self,
        keep: impl Fn(&StoreStatus, &ArtifactStatus) -> bool,
    ) -> std::collections::HashSet<Hash32> {
        let open = self.read_only_stores.iter().filter_map(|ro| match ro {
            ReadOnlyStatus::Open(s) => Some(s),
            ReadOnlyStatus::Unusable { .. } => None,
        });
        let keep = &keep;
        std::iter::once(&self.store)
            .chain(open)
            .flat_map(|s| {
                s.entries
                    .iter()
                    .filter(move |e| e.kind == Kind::Component && keep(s, e))
                    .map(|e| e.hash)
            })
            .collect()
    }

    /// The one line `status` prints first: `healthy`, or `UNHEALTHY:` and what is wrong.
    pub fn verdict(&self) -> String {
        if self.healthy {
            "healthy".to_owned()
        } else {
            format!("UNHEALTHY: {}", self.problems.join("; "))
        }
    }

    /// The report judged again, after a door added what it found.
    pub(crate) fn judged(mut self) -> StatusReport {
        self.judge();
        self
    }

    fn judge(&mut self) {
        let mut problems = Vec::new();
        let store = |problems: &mut Vec<String>, s: &StoreStatus| {
            let name = if s.read_only {
                format!("read-only store {}", s.path.display())
            } else {
                "the store".to_owned()
            };
            // Only what this build loads: a stale artifact is never read, whatever its state.
            let bad = s.entries.iter().filter(|e| e.current && e.is_bad()).count();
            if bad > 0 {
                problems.push(format!(
                    "{bad} artifact(s) of this build in {name} bad or refused (the next start replaces them; `verify` names them)"
                ));
            }
            if s.writable > 0 {
                problems.push(format!("{} artifact(s) in {name} writable by someone", s.writable));
            }
            if s.temp_files > 0 {
                problems.push(format!("{} unfinished temp file(s) in {name}", s.temp_files));
            }
            if !s.foreign_files.is_empty() {
                problems.push(format!("{} foreign file(s) in {name}", s.foreign_files.len()));
            }
            if let Some(p) = &s.lock_problem {
                problems.push(format!("lock file of {name}: {p}"));
            }
            if let Some(e) = &s.lock_error {
                problems.push(format!(
                    "lock of {name} held exclusively past the lock timeout (every start waits that long): {}",
                    e.message()
                ));
            }
            if s.read_only && s.current == 0 && s.artifacts > 0 {
                problems.push(format!("{name} holds nothing for this engine"));
            }
        };
        store(&mut problems, &self.store);
        for ro in &self.read_only_stores {
            match ro {
                ReadOnlyStatus::Open(s) => store(&mut problems, s),
                ReadOnlyStatus::Unusable { path, error, .. } => problems.push(format!(
                    "read-only store {} not usable: {}",
                    path.display(),
                    error.message()
                )),
            }
        }
        if let Some(c) = &self.whitelist {
            if !c.missing.is_empty() {
                problems.push(format!(
                    "{} of {} whitelisted component(s) not stored for this engine (compiled at the next start)",
                    c.missing.len(),
                    c.listed
                ));
            }
            if !c.mac_mode.is_empty() {
                problems.push(format!(
                    "{} of {} whitelisted component(s) held only in MAC mode, which cannot be checked without the key (give --key-file)",
                    c.mac_mode.len(),
                    c.listed
                ));
            }
        }
        self.healthy = problems.is_empty();
        self.problems = problems;
    }

    /// How many read-only stores could not be opened.
    pub fn unusable_read_only(&self) -> usize {
        self.read_only_stores
            .iter()
            .filter(|r| matches!(r, ReadOnlyStatus::Unusable { .. }))
            .count()
    }
}

/// A read-only store: what it holds, or why it could not be opened.
#[derive(Debug, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
// A report made once per command: the size of its variants costs nothing worth a box in the API.
#[allow(clippy::large_enum_variant)]
pub enum ReadOnlyStatus {
    /// Opened and listed.
    Open(StoreStatus),
    /// Missing or refused.
    Unusable {
        /// The directory as configured.
        #[serde(serialize_with = "serial::path")]
        path: PathBuf,
        /// Always true (so that every store object of the JSON has the field).
        read_only: bool,
        /// Why it could not be opened ([`StoreError::Missing`] or [`StoreError::Refused`]);
        /// JSON: a store problem, `{"kind", "message"}`.
        error: StoreError,
    },
}

/// One store as `status` shows it.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct StoreStatus {
    /// The directory, as opened.
    #[serde(serialize_with = "serial::path")]
    pub path: PathBuf,
    /// True for a read-only store.
    pub read_only: bool,
    /// Who holds the lock, probed without waiting; `None` for a read-only store, never locked.
    pub lock: Option<LockState>,
    /// What is wrong with the lock file (another owner, a mode that lets others open it, a link),
    /// if anything: the next start that finds it held by no process of this uid or root replaces
    /// it.
    #[serde(serialize_with = "serial::opt_display")]
    pub lock_problem: Option<LockProblem>,
    /// Only from [`ArtifactStore::health`](crate::ArtifactStore::health): the lock held
    /// exclusively past the lock timeout (a hung maintenance holder, which delays every start by
    /// that timeout); `null` otherwise.
    pub lock_error: Option<StoreError>,
    /// True when every current artifact's payload was checked as a start-up checks it
    /// ([`ArtifactStore::health`](crate::ArtifactStore::health)), false for names and trailers only.
    pub payloads_checked: bool,
    /// True when the store holds its marker (`CACHEDIR.TAG`); false for a store an earlier
    /// version made, which the next start, prune or clear marks.
    pub marker: bool,
    /// This build's engine fingerprint in the store's mode.
    pub fingerprint: Fingerprint,
    /// True in MAC mode.
    pub keyed: bool,
    /// Artifact files, of any fingerprint.
    pub artifacts: usize,
    /// Of them, artifacts of this build (its engine's or a portable profile's).
    pub current: usize,
    /// Of `current`, artifacts of a portable CPU profile.
    pub portable: usize,
    /// Artifacts of other fingerprints (not counting `mac_mode`).
    pub stale: usize,
    /// Seen without the key: artifacts of this build in MAC mode.
    pub mac_mode: usize,
    /// Artifacts with a bad trailer (not counting the other MAC mode's) or payload, or refused by
    /// the loader.
    pub bad_or_refused: usize,
    /// Artifacts anyone has write permission on.
    pub writable: usize,
    /// Sum of the artifacts' sizes.
    pub total_bytes: u64,
    /// The bound the writable store keeps itself within (`null`: unbounded, or a read-only store).
    pub max_size: Option<u64>,
    /// Unfinished temporary files.
    pub temp_files: usize,
    /// Each fingerprint present with its number of files: this engine's first, then its portable
    /// profiles best first, then stale ones.
    pub fingerprints: Vec<FingerprintStatus>,
    /// For a read-only store holding no artifact this build loads: wasmtime's own refusal of one
    /// of its artifacts by this engine, which names the setting that differs (a bake made by
    /// another build of the node, wasmtime version, engine settings or CPU). `null` otherwise.
    pub refusal: Option<String>,
    /// Every artifact, sorted by file name.
    pub entries: Vec<ArtifactStatus>,
    /// Files that are not the store's: never loaded, removed by `prune --stale`.
    pub foreign_files: Vec<ForeignFileStatus>,
}

/// One artifact file as `status` shows it.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct ArtifactStatus {
    /// SHA-256 of the source, from the file name.
    #[serde(serialize_with = "serial::hex")]
    pub hash: Hash32,
    /// Component or core module, from the file name.
    pub kind: Kind,
    /// The file.
    #[serde(serialize_with = "serial::path")]
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// The fingerprint in the file name.
    pub fingerprint: Fingerprint,
    /// Of this build: its engine's fingerprint or one of its portable CPU profiles'.
    pub current: bool,
    /// The CPU profile of a current artifact (`native` for this engine's own).
    pub profile: Option<CpuProfile>,
    /// When it was published, from its trailer (seconds since the Unix epoch).
    pub created_unix: Option<u64>,
    /// The same as a UTC date.
    #[serde(serialize_with = "serial::opt_display")]
    pub created: Option<UtcDate>,
    /// Why the trailer check failed: not intact, or naming another hash, fingerprint or kind
    /// than the file name (the loader's own check, `check_binding`).
    #[serde(serialize_with = "serial::opt_display")]
    pub header_error: Option<Rejection>,
    /// With the payloads checked: why a start-up would refuse this current artifact although its
    /// trailer fits its name (corrupted bytes, say); `null` when it is sound or was not checked.
    #[serde(serialize_with = "serial::opt_display")]
    pub payload_error: Option<Rejection>,
    /// The trailer is of the other authentication mode: not a defect, just not checkable here.
    pub other_mode: bool,
    /// Seen without the key: an artifact of this build in MAC mode, which a node with the key
    /// loads and `prune --stale` keeps (neither current here nor stale).
    pub mac_mode: bool,
    /// Owner uid.
    pub uid: u32,
    /// Permission bits (JSON: octal text).
    #[serde(serialize_with = "serial::octal_mode")]
    pub mode: u32,
    /// Anyone has write permission.
    pub writable: bool,
    /// Why the loader refuses the file before reading it (foreign owner, writable by others).
    #[serde(serialize_with = "serial::opt_display")]
    pub refused: Option<Rejection>,
}

/// Seconds since the Unix epoch, shown as `YYYY-MM-DD HH:MM:SS UTC` (no time-zone database, the
/// same on every node of a fleet), or the raw number when beyond the calendar's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDate(pub u64);

impl fmt::Display for UtcDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match i64::try_from(self.0)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
        {
            Some(t) => write!(f, "{}", t.strftime("%Y-%m-%d %H:%M:%S UTC")),
            None => write!(f, "{} s after the epoch", self.0),
        }
    }
}

/// A fingerprint a store holds, with its number of files.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct FingerprintStatus {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Artifact files under it.
    pub files: usize,
    /// This build's engine's.
    pub current: bool,
    /// The CPU profile of this build the fingerprint belongs to, if any.
    pub profile: Option<CpuProfile>,
    /// Seen without the key: a fingerprint of this build in MAC mode.
    pub mac_mode: bool,
    /// For a profile: whether this CPU runs its code (wasmtime's check).
    pub runs_here: Option<bool>,
    /// For a profile this CPU cannot run: wasmtime's reason, in its words (text: wasmtime gives
    /// no stable kinds for it).
    pub refused: Option<String>,
}

/// This build's CPU profiles with their fingerprints, computed only when some store holds an
/// artifact of a fingerprint other than the engine's own (it builds an engine per profile).
pub(crate) struct Profiles {
    statuses: Vec<ProfileStatus>,
    /// Seen without the key: this build's fingerprints in MAC mode (its engine's and its
    /// profiles'), whose artifacts a MAC-mode node loads.
    mac: Vec<Fingerprint>,
}

impl Profiles {
    /// The profiles, when some store of `stores` holds a fingerprint other than the engine's own.
    pub(crate) fn if_needed<'a>(
        engine: &wasmtime::Engine,
        keyed: bool,
        stores: impl Iterator<Item = &'a Store> + Clone,
    ) -> Result<Profiles, StoreError> {
        let foreign = stores.clone().any(|s| {
            s.fingerprints_present()
                .is_ok_and(|fps| fps.iter().any(|fp| *fp != s.fingerprint()))
        });
        if !foreign {
            return Ok(Profiles {
                statuses: Vec::new(),
                mac: Vec::new(),
            });
        }
        let profile_error = |reason| StoreError::Profile { profile: None, reason };
        let statuses = crate::profile::profile_statuses(engine, keyed).map_err(profile_error)?;
        let mac = if keyed {
            Vec::new()
        } else {
            let mut mac: Vec<Fingerprint> = crate::profile::portable_fingerprints(true)
                .map_err(profile_error)?
                .into_iter()
                .map(|(_, fp)| fp)
                .collect();
            mac.push(crate::engine::engine_fingerprint(engine, true));
            mac
        };
        Ok(Profiles { statuses, mac })
    }

    fn of(&self, fp: &Fingerprint) -> Option<&ProfileStatus> {
        self.statuses.iter().find(|p| p.fingerprint == *fp)
    }

    fn is_mac(&self, fp: &Fingerprint) -> bool {
        self.mac.contains(fp)
    }
}

impl StoreStatus {
    pub(crate) fn collect(
        store: &Store,
        engine: &wasmtime::Engine,
        profiles: &Profiles,
        payloads: bool,
    ) -> Result<StoreStatus, StoreError> {
        let path = store.dir().to_path_buf();
        let list_error = |source| StoreError::io(path.clone(), "list", source);
        let (lock, lock_problem) = if store.is_read_only() {
            (None, None)
        } else {
            let state = store
                .lock_state()
                .map_err(|source| store.lock_failure(LockKind::Shared, source))?;
            (Some(state), store.lock_problem())
        };
        let marker = matches!(store.standing(), Ok(crate::store::marker::Standing::Marked));
        let entries = store.entries().map_err(list_error)?;
        let temp_files = store.temp_file_count().map_err(list_error)?;
        let mut counts: BTreeMap<Fingerprint, usize> = BTreeMap::new();
        for e in &entries {
            *counts.entry(e.key.fingerprint).or_default() += 1;
        }
        let mut fingerprints: Vec<FingerprintStatus> = counts
            .into_iter()
            .map(|(fp, files)| {
                let profile = profiles.of(&fp);
                let native = fp == store.fingerprint();
                FingerprintStatus {
                    fingerprint: fp,
                    files,
                    current: native,
                    profile: profile.map(|p| p.profile).or(native.then_some(CpuProfile::Native)),
                    mac_mode: profiles.is_mac(&fp),
                    runs_here: profile.map(|p| p.runs_here),
                    refused: profile.and_then(|p| p.refused.clone()),
                }
            })
            .collect();
        // This engine's first, then its portable profiles best first, then stale ones.
        fingerprints.sort_by_key(|f| (!f.current, f.profile.is_none(), std::cmp::Reverse(f.profile)));
        let foreign_files = store.foreign_files().map_err(list_error)?;
        let rows: Vec<ArtifactStatus> = entries
            .into_iter()
            .map(|entry| ArtifactStatus::collect(store, profiles, entry, payloads))
            .collect();
        let current = rows.iter().filter(|r| r.current).count();
        let refusal = match rows.iter().find(|r| !r.current && r.refused.is_none()) {
            Some(r) if store.is_read_only() && current == 0 => Some(store.why_not_loaded(
                engine,
                &crate::key::ArtifactKey {
                    source: r.hash,
                    fingerprint: r.fingerprint,
                    kind: r.kind,
                },
            )),
            _ => None,
        };
        let portable = rows
            .iter()
            .filter(|r| r.profile.is_some_and(|p| !p.is_native()))
            .count();
        let mac_mode = rows.iter().filter(|r| r.mac_mode).count();
        Ok(StoreStatus {
            path,
            read_only: store.is_read_only(),
            lock,
            lock_problem,
            lock_error: None,
            payloads_checked: payloads,
            marker,
            fingerprint: store.fingerprint(),
            keyed: store.is_keyed(),
            artifacts: rows.len(),
            current,
            portable,
            stale: rows.len() - current - mac_mode,
            mac_mode,
            bad_or_refused: rows.iter().filter(|r| r.is_bad()).count(),
            writable: rows.iter().filter(|r| r.writable).count(),
            total_bytes: rows.iter().map(|r| r.size).sum(),
            max_size: None,
            temp_files,
            fingerprints,
            refusal,
            entries: rows,
            foreign_files,
        })
    }
}

impl ArtifactStatus {
    /// A bad trailer (not the other MAC mode's) or payload, or refused by the loader.
    fn is_bad(&self) -> bool {
        (self.header_error.is_some() && !self.other_mode) || self.payload_error.is_some() || self.refused.is_some()
    }

    fn collect(store: &Store, profiles: &Profiles, entry: StoredEntry, payloads: bool) -> ArtifactStatus {
        let refused = entry.trust_problem(|uid| store.trusts_owner(uid));
        let trailer = store.read_trailer(&entry.key);
        let other_mode = trailer.as_ref().is_err_and(Rejection::is_other_mode);
        let header_error = match &trailer {
            Err(e) => Some(e.clone()),
            Ok(t) => crate::artifact::check_binding(t, &entry.key)
                .err()
                .map(Rejection::Format),
        };
        let created_unix = trailer.ok().map(|t| t.created_unix);
        let native = entry.key.fingerprint == store.fingerprint();
        let current = native || profiles.of(&entry.key.fingerprint).is_some();
        // The whole file, read as a start-up reads it: only what this build loads, and only when
        // the cheap checks passed (their verdict stands).
        let payload_error = (payloads && current && header_error.is_none() && refused.is_none())
            .then(|| store.with_fingerprint(entry.key.fingerprint).check(&entry.key).err())
            .flatten();
        ArtifactStatus {
            hash: entry.key.source,
            kind: entry.key.kind,
            file: entry.path.clone(),
            size: entry.size,
            fingerprint: entry.key.fingerprint,
            current,
            profile: if native {
                Some(CpuProfile::Native)
            } else {
                profiles.of(&entry.key.fingerprint).map(|p| p.profile)
            },
            created_unix,
            created: created_unix.map(UtcDate),
            header_error,
            payload_error,
            other_mode,
            mac_mode: profiles.is_mac(&entry.key.fingerprint),
            uid: entry.uid,
            mode: entry.mode,
            writable: entry.has_write_bit(),
            refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UtcDate;

    #[test]
    fn utc_dates() {
        assert_eq!(UtcDate(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(UtcDate(951_782_400).to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(UtcDate(1_700_000_000).to_string(), "2023-11-14 22:13:20 UTC");
        assert_eq!(UtcDate(4_102_444_799).to_string(), "2099-12-31 23:59:59 UTC");
        assert_eq!(UtcDate(u64::MAX).to_string(), format!("{} s after the epoch", u64::MAX));
    }
}
