//! The store's lock file: shared for loading, exclusive for compiling and writing, with a bounded
//! wait so that a hung holder can delay a start-up but never block it.
//!
//! These are OS advisory locks (`flock` on Unix, through std's `File::lock` family): they die with
//! the process that holds them, so a killed node never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fsutil;

/// Which lock to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Many holders at once: loading artifacts.
    Shared,
    /// One holder: compiling, publishing, pruning.
    Exclusive,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process held the lock for the whole wait.
    TimedOut { waited: Duration, holder: Option<u32> },
    /// The lock file could not be opened or locked.
    Io(std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::TimedOut { waited, holder } => {
                write!(
                    f,
                    "lock still held by another process after {:.1} s",
                    waited.as_secs_f64()
                )?;
                if let Some(pid) = holder {
                    write!(f, " (last exclusive holder: pid {pid})")?;
                }
                Ok(())
            }
            LockError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Who holds the store's lock right now, as seen by a probe that waits for nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nobody holds it (or the lock file does not exist yet).
    Free,
    /// One or more processes hold it shared: nodes loading artifacts.
    Shared,
    /// A process holds it exclusively (compiling, publishing, pruning); `last_holder` is the pid the
    /// last exclusive holder recorded, which is usually that process.
    Exclusive {
        /// Pid recorded in the lock file, if readable.
        last_holder: Option<u32>,
    },
}

impl std::fmt::Display for LockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockState::Free => f.write_str("free"),
            LockState::Shared => f.write_str("held shared (a node is loading artifacts)"),
            LockState::Exclusive { last_holder: Some(pid) } => {
                write!(
                    f,
                    "held exclusively (compiling or pruning; last exclusive holder pid {pid})"
                )
            }
            LockState::Exclusive { last_holder: None } => f.write_str("held exclusively (compiling or pruning)"),
        }
    }
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    kind: LockKind,
}

impl LockGuard {
    /// The kind of lock held.
    pub fn kind(&self) -> LockKind {
        self.kind
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first just releases it sooner.
        let _ = self.file.unlock();
    }
}

/// The lock file of one store.
#[derive(Debug, Clone)]
pub struct StoreLock {
    path: PathBuf,
}

impl StoreLock {
    /// The lock at `path` (created on first use).
    pub fn new(path: PathBuf) -> StoreLock {
        StoreLock { path }
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self, kind: LockKind) -> std::io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        fsutil::no_follow(&mut options);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Like the artifacts (tempfile creates them 0600): nothing in the store is for others.
            options.mode(0o600);
        }
        match options.open(&self.path) {
            Ok(f) => Ok(f),
            // On a read-only store a shared lock on a read-only descriptor still works.
            Err(e) if kind == LockKind::Shared => fsutil::open_no_follow(&self.path).map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    /// The pid recorded by the last exclusive holder, if readable.
    pub fn last_holder(&self) -> Option<u32> {
        let mut text = String::new();
        fsutil::open_no_follow(&self.path)
            .ok()?
            .take(32)
            .read_to_string(&mut text)
            .ok()?;
        text.trim().parse().ok()
    }

    /// Who holds the lock right now. Waits for nobody and never creates or writes the lock file;
    /// the probe holds the lock for an instant only (a node starting meanwhile retries within
    /// milliseconds).
    pub fn state(&self) -> std::io::Result<LockState> {
        let file = match fsutil::open_no_follow(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
            Err(e) => return Err(e),
        };
        // flock works on a read-only descriptor.
        match file.try_lock() {
            Ok(()) => {
                file.unlock()?;
                return Ok(LockState::Free);
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e),
        }
        match file.try_lock_shared() {
            Ok(()) => {
                file.unlock()?;
                Ok(LockState::Shared)
            }
            Err(TryLockError::WouldBlock) => Ok(LockState::Exclusive {
                last_holder: self.last_holder(),
            }),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the lock, waiting at most `timeout`. `purpose` says what the wait is for, in the log.
    pub fn acquire(&self, kind: LockKind, timeout: Duration, purpose: &str) -> Result<LockGuard, LockError> {
        let mut file = self.open(kind).map_err(LockError::Io)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut next_log = Duration::ZERO;
        loop {
            let attempt = match kind {
                LockKind::Shared => file.try_lock_shared(),
                LockKind::Exclusive => file.try_lock(),
            };
            match attempt {
                Ok(()) => break,
                Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
                Err(TryLockError::WouldBlock) => {}
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(LockError::TimedOut {
                    waited,
                    holder: self.last_holder(),
                });
            }
            if waited >= next_log {
                log::warn!(
                    "pid {} waiting for the {} lock on {} to {} (held by another process{}; giving up after {:.1} s)",
                    std::process::id(),
                    if kind == LockKind::Shared {
                        "shared"
                    } else {
                        "exclusive"
                    },
                    self.path.display(),
                    purpose,
                    self.last_holder()
                        .map(|p| format!(", last exclusive holder pid {p}"))
                        .unwrap_or_default(),
                    timeout.as_secs_f64(),
                );
                next_log = waited + Duration::from_secs(5);
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let waited = start.elapsed();
        if waited >= Duration::from_millis(100) {
            log::info!(
                "took the {kind:?} lock on {} after waiting {:.1} s",
                self.path.display(),
                waited.as_secs_f64()
            );
        }
        if kind == LockKind::Exclusive {
            // For diagnostics only: who to look for when others wait on us.
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = writeln!(file, "{}", std::process::id());
        }
        Ok(LockGuard { file, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_coexist_exclusive_waits_then_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = StoreLock::new(dir.path().join("lock"));
        let a = lock
            .acquire(LockKind::Shared, Duration::from_secs(1), "load")
            .expect("shared a");
        let _b = lock
            .acquire(LockKind::Shared, Duration::from_secs(1), "load")
            .expect("shared b");
        let err = lock
            .acquire(LockKind::Exclusive, Duration::from_millis(50), "compile")
            .unwrap_err();
        assert!(matches!(err, LockError::TimedOut { .. }), "{err}");
        drop(a);
        drop(_b);
        let x = lock
            .acquire(LockKind::Exclusive, Duration::from_secs(1), "compile")
            .expect("exclusive");
        assert!(matches!(lock.state().expect("probe"), LockState::Exclusive { .. }));
        assert_eq!(lock.last_holder(), Some(std::process::id()));
        drop(x);
        assert!(!matches!(lock.state().expect("probe"), LockState::Exclusive { .. }));
    }
}
