//! Operator maintenance of a store: pruning by fingerprint, whitelist and size, and clearing.
//!
//! Everything that removes files holds the exclusive lock (bounded wait) and only unlinks: a node
//! may have an artifact mapped, and an unlinked file stays valid for it while a truncated one would
//! not. A file that cannot be removed is reported and the rest are still removed.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::Failure;
use super::{Exclusive, ForeignFile, Store, StoredEntry};
use crate::key::{Fingerprint, Hash32, Kind};
use crate::serial;

/// Why [`ArtifactStore::prune`](crate::ArtifactStore::prune) or [`ArtifactStore::clear`](crate::ArtifactStore::clear) removed an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PruneReason {
    /// Compiled by another engine fingerprint.
    Stale,
    /// Its source hash is not in the kept set.
    NotWhitelisted,
    /// Among the oldest artifacts beyond the size budget.
    OverBudget,
    /// Not a regular file (a directory, FIFO, socket or link under an artifact's name): no node
    /// loads it, and it keeps the artifact from being stored.
    NotRegularFile,
    /// `clear` removes everything.
    Cleared,
}

impl PruneReason {
    /// The reason as one word or two, for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PruneReason::Stale => "stale",
            PruneReason::NotWhitelisted => "not whitelisted",
            PruneReason::OverBudget => "over size budget",
            PruneReason::NotRegularFile => "not a regular file",
            PruneReason::Cleared => "cleared",
        }
    }
}

impl serde::Serialize for PruneReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`ArtifactStore::prune`](crate::ArtifactStore::prune) removes. With every field at its
/// default, nothing is removed.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove artifacts compiled by another engine fingerprint (another wasmtime version, other
    /// settings, the other authentication mode), which this engine can never load, and files that
    /// are not the store's. This build's portable CPU profiles are current and kept.
    pub stale: bool,
    /// When set, remove artifacts whose source hash is not in the set.
    pub keep: Option<HashSet<Hash32>>,
    /// After the removals above, remove the oldest artifacts (by publish time) until the rest
    /// take at most this many bytes.
    pub max_size: Option<u64>,
    /// Decide and report, but remove nothing and take no lock.
    pub dry_run: bool,
    /// With `stale` and no key, remove this build's MAC-mode artifacts too. Without it they are
    /// kept: maintenance run without the node's key must not delete what a MAC-mode node loads.
    pub force: bool,
}

/// The fingerprints besides the store's own that `stale` keeps, which only the door (knowing
/// this build's CPU profiles and the key) can name.
#[derive(Debug, Default)]
pub(crate) struct Current {
    /// This engine's portable CPU profiles, whose artifacts are current.
    pub portable: Vec<Fingerprint>,
    /// This build in the other MAC mode: a node with (or without) the key uses them, so `stale`
    /// keeps them unless `force`.
    pub other_mode: Vec<Fingerprint>,
    /// How long another fingerprint's artifact must go unused (neither loaded nor written) before
    /// `stale` removes it.
    pub min_idle: std::time::Duration,
}

/// What [`ArtifactStore::prune`](crate::ArtifactStore::prune) or
/// [`ArtifactStore::clear`](crate::ArtifactStore::clear) removed (in a dry run: would remove).
#[derive(Debug, Default, Serialize)]
#[non_exhaustive]
pub struct PruneReport {
    /// Each removed artifact with the reason.
    pub removed: Vec<RemovedArtifact>,
    /// Files that are not the store's, removed by `stale`.
    pub foreign_removed: Vec<ForeignFile>,
    /// Each file that should have gone but could not be removed; the others were still removed.
    pub failed: Vec<RemovalFailure>,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
    /// Sum of the sizes of the removed artifacts.
    pub bytes_freed: u64,
    /// Artifacts left in the store (not counting failures).
    pub kept: usize,
    /// Of `kept`, artifacts of this build in MAC mode that `stale` kept because it ran without
    /// the key (a MAC-mode node loads them); `force` removes them.
    pub kept_other_mode: usize,
    /// Of `kept`, artifacts of other fingerprints that `stale` kept because they were used
    /// (loaded or written) more recently than the store's `min_idle`: a bake-ahead for the next
    /// release, or the previous release's, still in use somewhere.
    pub kept_recent: usize,
    /// True when nothing was removed: the report says what would have been.
    pub dry_run: bool,
}

impl PruneReport {
    /// True when everything selected was removed.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// An artifact removed (or to be removed), and why.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct RemovedArtifact {
    /// SHA-256 of the source.
    #[serde(serialize_with = "serial::hex")]
    pub hash: Hash32,
    /// Component or core module.
    pub kind: Kind,
    /// The fingerprint it was compiled under.
    pub fingerprint: Fingerprint,
    /// The file.
    #[serde(serialize_with = "serial::path")]
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Why it went.
    pub reason: PruneReason,
}

impl RemovedArtifact {
    fn new(e: StoredEntry, reason: PruneReason) -> RemovedArtifact {
        RemovedArtifact {
            hash: e.key.source,
            kind: e.key.kind,
            fingerprint: e.key.fingerprint,
            file: e.path,
            size: e.size,
            reason,
        }
    }
}

/// What kind of file a removal failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemovedFile {
    /// An artifact.
    Artifact,
    /// A file that is not the store's.
    Foreign,
    /// A leftover temporary file.
    Temporary,
}

/// A file that could not be removed.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct RemovalFailure {
    /// The file.
    #[serde(serialize_with = "serial::path")]
    pub file: PathBuf,
    /// What it is.
    pub what: RemovedFile,
    /// Why `unlink` failed.
    #[serde(serialize_with = "serial::display")]
    pub error: std::io::Error,
}

impl Store {
    /// Removes what `opts` selects, under the exclusive lock (waiting until `deadline` at most),
    /// and leftover temporary files. In a dry run nothing is locked or removed; the report says
    /// what would have been.
    ///
    /// Order: artifacts of other fingerprints (`stale`), then those not in `keep`, then the oldest
    /// of the rest until they fit `max_size`.
    pub(crate) fn prune(
        &self,
        opts: &PruneOptions,
        current: &Current,
        deadline: Instant,
    ) -> Result<PruneReport, Failure> {
        let exclusive = if opts.dry_run {
            None
        } else {
            Some(self.exclusive(deadline, "prune the store")?)
        };
        let entries = self.entries().map_err(|e| self.io_error("list", e))?;
        let mut remove = Vec::new();
        let mut rest = Vec::new();
        let mut kept_other_mode = 0;
        let mut recent = HashSet::new();
        let now = SystemTime::now();
        let idle = |e: &StoredEntry| {
            e.last_used()
                .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= current.min_idle)
        };
        for entry in entries {
            let fp = &entry.key.fingerprint;
            let other_mode = current.other_mode.contains(fp) && !opts.force;
            let is_current = *fp == self.fingerprint() || current.portable.contains(fp) || other_mode;
            if opts.stale && other_mode && entry.is_file {
                kept_other_mode += 1;
            }
            if opts.stale && !entry.is_file {
                remove.push((entry, PruneReason::NotRegularFile));
            } else if opts.stale && !is_current && !idle(&entry) {
                recent.insert(entry.name.clone());
                rest.push(entry);
            } else if opts.stale && !is_current {
                remove.push((entry, PruneReason::Stale));
            } else if opts.keep.as_ref().is_some_and(|k| !k.contains(&entry.key.source)) {
                remove.push((entry, PruneReason::NotWhitelisted));
            } else {
                rest.push(entry);
            }
        }
        if let Some(budget) = opts.max_size {
            // An entry without a modification time is treated as the oldest: nothing says it is
            // recent, and evicting it first is the conservative choice for a cache.
            rest.sort_by(|a, b| {
                let age = |e: &StoredEntry| e.modified.unwrap_or(SystemTime::UNIX_EPOCH);
                age(a).cmp(&age(b)).then_with(|| a.name.cmp(&b.name))
            });
            let mut total: u64 = rest.iter().map(|e| e.size).sum();
            let mut over = 0;
            while total > budget && over < rest.len() {
                total -= rest[over].size;
                over += 1;
            }
            remove.extend(rest.drain(..over).map(|e| (e, PruneReason::OverBudget)));
        }
        let kept_recent = rest.iter().filter(|e| recent.contains(&e.name)).count();
        let kept = rest.len();
        let foreign = if opts.stale {
            self.foreign_files().map_err(|e| self.io_error("list", e))?
        } else {
            Vec::new()
        };
        let mut report = match exclusive {
            Some(x) => {
                let mut report = x.remove_all(remove, kept)?;
                x.remove_foreign(foreign, &mut report);
                report
            }
            None => PruneReport {
                foreign_removed: foreign,
                dry_run: true,
                ..dry_run_report(remove, kept)
            },
        };
        report.kept_other_mode = kept_other_mode;
        report.kept_recent = kept_recent;
        Ok(report)
    }

    /// Removes every artifact (any fingerprint) and leftover temporary files, under the exclusive
    /// lock. The directory and its lock file stay: a node waiting on the lock keeps waiting on the
    /// same file.
    pub(crate) fn clear(&self, deadline: Instant) -> Result<PruneReport, Failure> {
        let exclusive = self.exclusive(deadline, "clear the store")?;
        let entries = self.entries().map_err(|e| self.io_error("list", e))?;
        let remove = entries.into_iter().map(|e| (e, PruneReason::Cleared)).collect();
        exclusive.remove_all(remove, 0)
    }

    fn exclusive(&self, deadline: Instant, purpose: &str) -> Result<Exclusive<'_>, Failure> {
        self.lock_exclusive(deadline, purpose)
            .map_err(|source| self.lock_failure(super::LockKind::Exclusive, source))
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> Failure {
        Failure::io(self.dir(), op, source)
    }
}

impl Exclusive<'_> {
    /// Keeps the store within `max_size` bytes: while its artifacts (of every fingerprint) take
    /// more, removes the least recently used ([`StoredEntry::last_used`]) among those unused for
    /// at least `min_idle` and not `in_use`. Returns how many it removed; one it cannot remove is
    /// skipped. What stays above the bound (everything else is in use or recent) stays.
    pub(crate) fn evict_to(
        &self,
        max_size: u64,
        min_idle: std::time::Duration,
        in_use: impl Fn(&StoredEntry) -> bool,
    ) -> std::io::Result<usize> {
        let mut entries: Vec<StoredEntry> = self.store().entries()?.into_iter().filter(|e| e.is_file).collect();
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        if total <= max_size {
            return Ok(0);
        }
        let now = SystemTime::now();
        entries.sort_by(|a, b| a.last_used().cmp(&b.last_used()).then_with(|| a.name.cmp(&b.name)));
        let mut evicted = 0;
        for entry in entries {
            if total <= max_size {
                break;
            }
            let idle = entry
                .last_used()
                .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= min_idle);
            if !idle || in_use(&entry) {
                continue;
            }
            match self.remove(&entry) {
                Ok(()) => {
                    log::info!(
                        "evicted {} ({} bytes, least recently used) to keep the store within {max_size} bytes",
                        entry.path.display(),
                        entry.size
                    );
                    total -= entry.size;
                    evicted += 1;
                }
                Err(e) => log::warn!("cannot evict {}: {e}", entry.path.display()),
            }
        }
        if evicted > 0 {
            self.store().dir.sync()?;
        }
        if total > max_size {
            log::warn!(
                "store {} holds {total} bytes, above its bound of {max_size}: the rest is in use or used within min_idle",
                self.store().dir().display()
            );
        }
        Ok(evicted)
    }
}

fn dry_run_report(remove: Vec<(StoredEntry, PruneReason)>, kept: usize) -> PruneReport {
    for (entry, why) in &remove {
        log::debug!("would remove {} ({why}, {} bytes)", entry.path.display(), entry.size);
    }
    PruneReport {
        bytes_freed: remove.iter().map(|(e, _)| e.size).sum(),
        removed: remove
            .into_iter()
            .map(|(e, why)| RemovedArtifact::new(e, why))
            .collect(),
        kept,
        ..PruneReport::default()
    }
}

impl Exclusive<'_> {
    /// Unlinks each foreign file, going on past each one it cannot remove.
    fn remove_foreign(&self, foreign: Vec<ForeignFile>, report: &mut PruneReport) {
        let dir = &self.store().dir;
        let mut failed = Vec::new();
        for file in foreign {
            let removed = if file.directory {
                dir.remove_dir(&file.name)
            } else {
                dir.unlink(&file.name)
            };
            match removed {
                Ok(()) => {
                    log::info!("removed foreign file {}", file.file.display());
                    report.foreign_removed.push(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!("cannot remove foreign file {}: {e}", file.file.display());
                    failed.push(RemovalFailure {
                        file: file.file,
                        what: RemovedFile::Foreign,
                        error: e,
                    });
                }
            }
        }
        // Foreign files first, as listed.
        report.failed.splice(0..0, failed);
        if !report.foreign_removed.is_empty()
            && let Err(e) = dir.sync()
        {
            log::warn!("cannot sync {}: {e}", dir.path().display());
        }
    }

    /// Unlinks `remove` and the temporary files, going on past each file it cannot remove.
    fn remove_all(&self, remove: Vec<(StoredEntry, PruneReason)>, kept: usize) -> Result<PruneReport, Failure> {
        let dir = self.store().dir().to_path_buf();
        let mut report = PruneReport {
            kept,
            ..PruneReport::default()
        };
        for (entry, why) in remove {
            match self.remove(&entry) {
                Ok(()) => {
                    log::info!("removed {} ({why}, {} bytes)", entry.path.display(), entry.size);
                    report.bytes_freed += entry.size;
                    report.removed.push(RemovedArtifact::new(entry, why));
                }
                // Gone already (removed by hand meanwhile): the goal is met, nothing was freed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log::debug!("{} was already gone", entry.path.display());
                }
                Err(e) => {
                    log::warn!("cannot remove {}: {e}", entry.path.display());
                    report.failed.push(RemovalFailure {
                        file: entry.path,
                        what: RemovedFile::Artifact,
                        error: e,
                    });
                }
            }
        }
        if !report.removed.is_empty() {
            self.store().dir.sync().map_err(|e| self.store().io_error("sync", e))?;
        }
        let temps = self.remove_temp_files().map_err(|e| self.store().io_error("list", e))?;
        if temps.removed > 0 {
            log::info!(
                "removed {} leftover temporary file(s) in {}",
                temps.removed,
                dir.display()
            );
        }
        report.temp_files_removed = temps.removed;
        report
            .failed
            .extend(temps.failed.into_iter().map(|(file, error)| RemovalFailure {
                file,
                what: RemovedFile::Temporary,
                error,
            }));
        log::info!(
            "store {}: removed {} artifact(s), freed {} bytes, kept {}, {} could not be removed",
            dir.display(),
            report.removed.len(),
            report.bytes_freed,
            report.kept,
            report.failed.len(),
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::artifact::Sealer;
    use crate::key::Fingerprint;
    use crate::store::LockState;

    const FP: Fingerprint = Fingerprint([1; 16]);
    const OTHER_FP: Fingerprint = Fingerprint([2; 16]);

    /// A store with fingerprint `FP` in a temp dir. Artifacts are written through `publish` (the
    /// store never looks inside them here), so no engine is needed.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store"), FP, Sealer::Plain).expect("open");
        (dir, store)
    }

    fn put(store: &Store, fp: Fingerprint, source: u8, size: usize, age_secs: u64) {
        let other = Store::open(store.dir(), fp, Sealer::Plain).expect("open");
        let path = other
            .lock_exclusive(t(), "put")
            .expect("lock")
            .publish(&[source; 32], &vec![source; size])
            .expect("publish")
            .path;
        let mtime = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }

    fn sources(report: &PruneReport) -> Vec<(u8, PruneReason)> {
        let mut v: Vec<_> = report.removed.iter().map(|r| (r.hash[0], r.reason)).collect();
        v.sort();
        v
    }

    fn left(store: &Store) -> Vec<u8> {
        store
            .entries()
            .expect("entries")
            .iter()
            .map(|e| e.key.source[0])
            .collect()
    }

    fn t() -> Instant {
        crate::store::deadline_after(Duration::from_secs(5))
    }

    #[test]
    fn stale_removes_only_other_fingerprints() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        put(&s, OTHER_FP, 2, 100, 0);
        put(&s, OTHER_FP, 1, 100, 0);
        let opts = PruneOptions {
            stale: true,
            ..PruneOptions::default()
        };
        let r = s.prune(&opts, &Current::default(), t()).expect("prune");
        assert_eq!(sources(&r), vec![(1, PruneReason::Stale), (2, PruneReason::Stale)]);
        assert_eq!(r.kept, 1);
        assert_eq!(left(&s), vec![1]);
        assert_eq!(s.entries().expect("entries")[0].key.fingerprint, FP);
    }

    #[test]
    fn keep_removes_hashes_outside_the_set() {
        let (_d, s) = store();
        for i in 1..=4 {
            put(&s, FP, i, 100, 0);
        }
        let opts = PruneOptions {
            keep: Some([[1; 32], [3; 32]].into_iter().collect()),
            ..PruneOptions::default()
        };
        let r = s.prune(&opts, &Current::default(), t()).expect("prune");
        assert_eq!(
            sources(&r),
            vec![(2, PruneReason::NotWhitelisted), (4, PruneReason::NotWhitelisted)]
        );
        assert_eq!(left(&s), vec![1, 3]);
        assert_eq!(r.kept, 2);
    }

    #[test]
    fn size_budget_evicts_oldest_first() {
        let (_d, s) = store();
        put(&s, FP, 1, 1000, 30);
        put(&s, FP, 2, 1000, 10);
        put(&s, FP, 3, 1000, 20);
        let each = s.entries().expect("entries")[0].size;
        let opts = PruneOptions {
            max_size: Some(each * 2 - 1),
            ..PruneOptions::default()
        };
        let r = s.prune(&opts, &Current::default(), t()).expect("prune");
        assert_eq!(
            sources(&r),
            vec![(1, PruneReason::OverBudget), (3, PruneReason::OverBudget)]
        );
        assert_eq!(r.bytes_freed, each * 2);
        assert_eq!(left(&s), vec![2]);
        // A budget the store already fits removes nothing.
        let opts = PruneOptions {
            max_size: Some(each),
            ..PruneOptions::default()
        };
        assert!(
            s.prune(&opts, &Current::default(), t())
                .expect("prune")
                .removed
                .is_empty()
        );
    }

    #[test]
    fn stale_removes_foreign_files_such_as_an_uppercase_artifact_name() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        let real = s.entries().expect("entries")[0].path.clone();
        // An artifact of a fingerprint with letters, named in uppercase.
        let upper = s.dir().join(format!("{}-{}.cwasm", "AB".repeat(16), "01".repeat(32)));
        std::fs::copy(&real, &upper).expect("copy");
        std::fs::write(s.dir().join(".tmp-leftover"), b"x").expect("temp file");
        let foreign = s.foreign_files().expect("list");
        assert_eq!(foreign.len(), 1, "{foreign:?}");
        assert_eq!(foreign[0].file, upper);
        assert_eq!(left(&s), vec![1], "the uppercase twin is not an artifact");
        let opts = PruneOptions {
            stale: true,
            ..PruneOptions::default()
        };
        let dry = s
            .prune(
                &PruneOptions {
                    dry_run: true,
                    ..opts.clone()
                },
                &Current::default(),
                t(),
            )
            .expect("dry run");
        assert_eq!(dry.foreign_removed.len(), 1);
        assert!(upper.exists());
        let r = s.prune(&opts, &Current::default(), t()).expect("prune");
        assert_eq!(r.foreign_removed.len(), 1);
        assert!(!upper.exists() && real.exists() && s.lock_path().exists());
        assert_eq!(r.kept, 1);
    }

    #[test]
    fn dry_run_removes_nothing_and_reports_the_same() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        put(&s, OTHER_FP, 2, 100, 0);
        std::fs::write(s.dir().join(".tmp-leftover"), b"x").expect("temp file");
        let opts = PruneOptions {
            stale: true,
            keep: Some(HashSet::new()),
            dry_run: true,
            ..PruneOptions::default()
        };
        let dry = s.prune(&opts, &Current::default(), t()).expect("dry run");
        assert_eq!(left(&s), vec![1, 2]);
        assert_eq!(s.temp_file_count().expect("count"), 1);
        // Even with another process holding the lock a dry run answers at once.
        let _held = s.lock_exclusive(t(), "test").expect("exclusive");
        let dry_locked = s
            .prune(
                &opts,
                &Current::default(),
                crate::store::deadline_after(Duration::from_millis(10)),
            )
            .expect("dry run needs no lock");
        assert_eq!(sources(&dry), sources(&dry_locked));
        assert_eq!(
            sources(&dry),
            vec![(1, PruneReason::NotWhitelisted), (2, PruneReason::Stale)]
        );
        assert!(dry.bytes_freed > 0);
    }

    #[test]
    fn clear_removes_everything_but_the_directory_and_lock() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        put(&s, OTHER_FP, 2, 100, 0);
        std::fs::write(s.dir().join(".tmp-leftover"), b"x").expect("temp file");
        std::fs::write(s.dir().join("README"), b"not ours").expect("foreign file");
        let r = s.clear(t()).expect("clear");
        assert_eq!(sources(&r), vec![(1, PruneReason::Cleared), (2, PruneReason::Cleared)]);
        assert_eq!(r.kept, 0);
        assert!(left(&s).is_empty());
        assert_eq!(s.temp_file_count().expect("count"), 0);
        assert!(s.lock_path().exists());
        assert!(
            s.dir().join("README").exists(),
            "files that are not artifacts are left alone"
        );
    }

    #[test]
    fn removal_waits_for_the_lock_then_gives_up() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        let held = s.lock_shared(t(), "test").expect("shared");
        let err = s
            .clear(crate::store::deadline_after(Duration::from_millis(50)))
            .unwrap_err();
        assert!(
            matches!(
                err.cause,
                crate::store::Cause::Lock(_, crate::store::LockError::TimedOut { .. })
            ),
            "{err:?}"
        );
        assert_eq!(left(&s), vec![1], "nothing removed without the lock");
        drop(held);
        assert_eq!(s.clear(t()).expect("clear").removed.len(), 1);
    }

    #[test]
    fn removal_unlinks_so_open_files_stay_readable() {
        let (_d, s) = store();
        put(&s, FP, 1, 4096, 0);
        let path = s.entries().expect("entries")[0].path.clone();
        let before = std::fs::read(&path).expect("read");
        let mut open = std::fs::File::open(&path).expect("open");
        s.clear(t()).expect("clear");
        let mut after = Vec::new();
        std::io::Read::read_to_end(&mut open, &mut after).expect("read after unlink");
        assert_eq!(
            before, after,
            "an unlinked file keeps its bytes for whoever has it open"
        );
    }

    #[test]
    fn lock_state_sees_holders_without_creating_the_lock() {
        let (_d, s) = store();
        assert_eq!(s.lock_state().expect("probe"), LockState::Free);
        assert!(!s.lock_path().exists(), "the probe never creates the lock file");
        let shared = s.lock_shared(t(), "test").expect("shared");
        assert_eq!(
            s.lock_state().expect("probe"),
            LockState::Shared { holders: Vec::new() }
        );
        drop(shared);
        let _x = s.lock_exclusive(t(), "test").expect("exclusive");
        assert!(matches!(
            s.lock_state().expect("probe"),
            LockState::Exclusive { last_holder: Some(h), .. } if h.pid == std::process::id() && h.alive
        ));
    }

    #[test]
    fn removal_goes_on_past_a_file_it_cannot_remove() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        put(&s, FP, 3, 100, 0);
        // A directory under an artifact's name that holds a file: it cannot be removed, and that
        // must not stop the rest. An empty one is removed.
        let key = |b| crate::key::ArtifactKey {
            source: [b; 32],
            fingerprint: FP,
            kind: crate::key::Kind::Component,
        };
        let blocked = key(2);
        std::fs::create_dir(s.dir().join(blocked.file_name())).expect("mkdir");
        std::fs::write(s.dir().join(blocked.file_name()).join("x"), b"x").expect("a file inside");
        std::fs::create_dir(s.dir().join(key(4).file_name())).expect("mkdir");
        std::fs::write(s.dir().join(".tmp-leftover"), b"x").expect("temp file");
        let r = s.clear(t()).expect("clear runs");
        assert_eq!(
            sources(&r),
            vec![
                (1, PruneReason::Cleared),
                (3, PruneReason::Cleared),
                (4, PruneReason::Cleared)
            ]
        );
        assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
        assert_eq!(r.failed[0].file, s.dir().join(blocked.file_name()));
        assert!(!r.complete());
        assert_eq!(r.temp_files_removed, 1, "temp files are still cleaned up");
        assert_eq!(left(&s), vec![2]);
    }
}
