//! Operator maintenance of a store: pruning by fingerprint, whitelist and size, clearing, and a
//! read-only look at the lock.
//!
//! Everything that removes files holds the exclusive lock (bounded wait) and only unlinks: a node
//! may have an artifact mapped, and an unlinked file stays valid for it while a truncated one would
//! not.

use std::collections::HashSet;

use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::{LockGuard, LockKind, Store, StoredEntry, fsutil};
use crate::key::Hash32;

/// Why [`Store::prune`] removed an artifact of another engine fingerprint.
pub const WHY_STALE: &str = "stale";
/// Why [`Store::prune`] removed an artifact whose source hash is not in the kept set.
pub const WHY_NOT_WHITELISTED: &str = "not whitelisted";
/// Why [`Store::prune`] removed an artifact to fit the size budget.
pub const WHY_OVER_BUDGET: &str = "over size budget";
/// Why [`Store::clear`] removed an artifact.
pub const WHY_CLEARED: &str = "cleared";

/// What [`Store::prune`] removes. With every field at its default, nothing is removed.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove artifacts compiled by another engine fingerprint (another wasmtime version, other
    /// settings, the other authentication mode): this engine can never load them.
    pub stale: bool,
    /// When set, remove artifacts whose source hash is not in the set.
    pub keep: Option<HashSet<Hash32>>,
    /// After the removals above, remove the oldest artifacts (by modification time, which is the
    /// publish time) until the remaining artifacts take at most this many bytes.
    pub max_size: Option<u64>,
    /// Decide and report, but remove nothing and take no exclusive lock.
    pub dry_run: bool,
}

/// What [`Store::prune`] or [`Store::clear`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Each removed artifact with the reason: [`WHY_STALE`], [`WHY_NOT_WHITELISTED`],
    /// [`WHY_OVER_BUDGET`] or [`WHY_CLEARED`].
    pub removed: Vec<(StoredEntry, &'static str)>,
    /// Sum of the sizes of the removed artifacts.
    pub bytes_freed: u64,
    /// Artifacts left in the store.
    pub kept: usize,
}

pub use super::lock::LockState;

impl Store {
    /// Removes what `opts` selects, under the exclusive lock (waiting at most `lock_timeout`), and
    /// leftover temporary files. In a dry run nothing is locked or removed; the report says what
    /// would have been.
    ///
    /// Order: artifacts of other fingerprints (`stale`), then those not in `keep`, then the oldest
    /// of the rest until they fit `max_size`.
    pub fn prune(&self, opts: &PruneOptions, lock_timeout: Duration) -> anyhow::Result<PruneReport> {
        let guard = if opts.dry_run {
            None
        } else {
            Some(self.exclusive(lock_timeout, "prune the store")?)
        };
        let entries = self
            .entries()
            .with_context(|| format!("{}: cannot list the store", self.dir().display()))?;
        let mut remove = Vec::new();
        let mut rest = Vec::new();
        for entry in entries {
            if opts.stale && entry.key.fingerprint != self.fingerprint() {
                remove.push((entry, WHY_STALE));
            } else if opts.keep.as_ref().is_some_and(|k| !k.contains(&entry.key.source)) {
                remove.push((entry, WHY_NOT_WHITELISTED));
            } else {
                rest.push(entry);
            }
        }
        if let Some(budget) = opts.max_size {
            // An entry without a modification time is treated as the oldest: nothing says it is
            // recent, and evicting it first is the conservative choice for a cache.
            rest.sort_by(|a, b| {
                let age = |e: &StoredEntry| e.modified.unwrap_or(SystemTime::UNIX_EPOCH);
                age(a).cmp(&age(b)).then_with(|| a.path.cmp(&b.path))
            });
            let mut total: u64 = rest.iter().map(|e| e.size).sum();
            let mut over = 0;
            while total > budget && over < rest.len() {
                total -= rest[over].size;
                over += 1;
            }
            remove.extend(rest.drain(..over).map(|e| (e, WHY_OVER_BUDGET)));
        }
        let kept = rest.len();
        self.finish(remove, kept, guard.as_ref())
    }

    /// Removes every artifact (any fingerprint) and leftover temporary files, under the exclusive
    /// lock. The directory and its lock file stay: a node waiting on the lock keeps waiting on the
    /// same file.
    pub fn clear(&self, lock_timeout: Duration) -> anyhow::Result<PruneReport> {
        let guard = self.exclusive(lock_timeout, "clear the store")?;
        let entries = self
            .entries()
            .with_context(|| format!("{}: cannot list the store", self.dir().display()))?;
        let remove = entries.into_iter().map(|e| (e, WHY_CLEARED)).collect();
        self.finish(remove, 0, Some(&guard))
    }

    /// Who holds the store's lock right now; see [`StoreLock::state`](super::StoreLock::state).
    pub fn lock_state(&self) -> std::io::Result<LockState> {
        self.lock().state()
    }

    /// Leftover temporary files (unfinished writes), without removing them.
    pub fn temp_file_count(&self) -> std::io::Result<usize> {
        Ok(self.temp_files()?.len())
    }

    fn exclusive(&self, timeout: Duration, purpose: &str) -> anyhow::Result<LockGuard> {
        self.lock()
            .acquire(LockKind::Exclusive, timeout, purpose)
            .map_err(|e| anyhow::anyhow!("{}: cannot {purpose}: {e}", self.lock().path().display()))
    }

    /// Unlinks `remove` (unless `guard` is `None`: a dry run) and the temporary files.
    fn finish(
        &self,
        remove: Vec<(StoredEntry, &'static str)>,
        kept: usize,
        guard: Option<&LockGuard>,
    ) -> anyhow::Result<PruneReport> {
        let mut report = PruneReport {
            kept,
            ..PruneReport::default()
        };
        let Some(guard) = guard else {
            for (entry, why) in &remove {
                log::debug!("would remove {} ({why}, {} bytes)", entry.path.display(), entry.size);
            }
            report.bytes_freed = remove.iter().map(|(e, _)| e.size).sum();
            report.removed = remove;
            return Ok(report);
        };
        for (entry, why) in remove {
            match self.remove(&entry, guard) {
                Ok(()) => {}
                // Gone already (removed by hand meanwhile): the goal is met, nothing was freed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    log::debug!("{} was already gone", entry.path.display());
                    continue;
                }
                Err(e) => {
                    log::warn!("cannot remove {}: {e}", entry.path.display());
                    return Err(anyhow::anyhow!("{}: cannot remove: {e}", entry.path.display()));
                }
            }
            log::info!("removed {} ({why}, {} bytes)", entry.path.display(), entry.size);
            report.bytes_freed += entry.size;
            report.removed.push((entry, why));
        }
        if !report.removed.is_empty() {
            fsutil::sync_dir(self.dir())
                .with_context(|| format!("{}: cannot sync the directory", self.dir().display()))?;
        }
        match self.remove_temp_files(guard) {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} leftover temporary file(s) in {}", self.dir().display()),
            Err(e) => log::warn!("cannot remove temporary files in {}: {e}", self.dir().display()),
        }
        log::info!(
            "store {}: removed {} artifact(s), freed {} bytes, kept {}",
            self.dir().display(),
            report.removed.len(),
            report.bytes_freed,
            report.kept
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Sealer;
    use crate::key::Fingerprint;

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
        let path = other.publish(&[source; 32], &vec![source; size]).expect("publish");
        let mtime = SystemTime::now() - Duration::from_secs(age_secs);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }

    fn sources(report: &PruneReport) -> Vec<(u8, &'static str)> {
        let mut v: Vec<_> = report.removed.iter().map(|(e, why)| (e.key.source[0], *why)).collect();
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

    const T: Duration = Duration::from_secs(5);

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
        let r = s.prune(&opts, T).expect("prune");
        assert_eq!(sources(&r), vec![(1, WHY_STALE), (2, WHY_STALE)]);
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
        let r = s.prune(&opts, T).expect("prune");
        assert_eq!(sources(&r), vec![(2, WHY_NOT_WHITELISTED), (4, WHY_NOT_WHITELISTED)]);
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
        let r = s.prune(&opts, T).expect("prune");
        assert_eq!(sources(&r), vec![(1, WHY_OVER_BUDGET), (3, WHY_OVER_BUDGET)]);
        assert_eq!(r.bytes_freed, each * 2);
        assert_eq!(left(&s), vec![2]);
        // A budget the store already fits removes nothing.
        let opts = PruneOptions {
            max_size: Some(each),
            ..PruneOptions::default()
        };
        assert!(s.prune(&opts, T).expect("prune").removed.is_empty());
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
        let dry = s.prune(&opts, T).expect("dry run");
        assert_eq!(left(&s), vec![1, 2]);
        assert_eq!(s.temp_file_count().expect("count"), 1);
        // Even with another process holding the lock a dry run answers at once.
        let _held = s.lock().acquire(LockKind::Exclusive, T, "test").expect("exclusive");
        let dry_locked = s
            .prune(&opts, Duration::from_millis(10))
            .expect("dry run needs no lock");
        assert_eq!(sources(&dry), sources(&dry_locked));
        assert_eq!(sources(&dry), vec![(1, WHY_NOT_WHITELISTED), (2, WHY_STALE)]);
        assert!(dry.bytes_freed > 0);
    }

    #[test]
    fn clear_removes_everything_but_the_directory_and_lock() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        put(&s, OTHER_FP, 2, 100, 0);
        std::fs::write(s.dir().join(".tmp-leftover"), b"x").expect("temp file");
        std::fs::write(s.dir().join("README"), b"not ours").expect("foreign file");
        let r = s.clear(T).expect("clear");
        assert_eq!(sources(&r), vec![(1, WHY_CLEARED), (2, WHY_CLEARED)]);
        assert_eq!(r.kept, 0);
        assert!(left(&s).is_empty());
        assert_eq!(s.temp_file_count().expect("count"), 0);
        assert!(s.dir().join("lock").exists());
        assert!(
            s.dir().join("README").exists(),
            "files that are not artifacts are left alone"
        );
    }

    #[test]
    fn removal_waits_for_the_lock_then_gives_up() {
        let (_d, s) = store();
        put(&s, FP, 1, 100, 0);
        let held = s.lock().acquire(LockKind::Shared, T, "test").expect("shared");
        let err = s.clear(Duration::from_millis(50)).unwrap_err().to_string();
        assert!(err.contains("lock"), "{err}");
        assert_eq!(left(&s), vec![1], "nothing removed without the lock");
        drop(held);
        assert_eq!(s.clear(T).expect("clear").removed.len(), 1);
    }

    #[test]
    fn removal_unlinks_so_open_files_stay_readable() {
        let (_d, s) = store();
        put(&s, FP, 1, 4096, 0);
        let path = s.entries().expect("entries")[0].path.clone();
        let before = std::fs::read(&path).expect("read");
        let mut open = std::fs::File::open(&path).expect("open");
        s.clear(T).expect("clear");
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
        assert!(!s.lock().path().exists(), "the probe never creates the lock file");
        let shared = s.lock().acquire(LockKind::Shared, T, "test").expect("shared");
        assert_eq!(s.lock_state().expect("probe"), LockState::Shared);
        drop(shared);
        let _x = s.lock().acquire(LockKind::Exclusive, T, "test").expect("exclusive");
        assert_eq!(
            s.lock_state().expect("probe"),
            LockState::Exclusive {
                last_holder: Some(std::process::id())
            }
        );
    }
}
