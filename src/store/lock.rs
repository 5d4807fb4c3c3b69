//! The store's lock file: shared for loading, exclusive for compiling and writing, with waits that
//! end at a deadline so that a hung holder can delay a start-up but never block it.
//!
//! These are OS advisory locks (`flock` on Unix, through std's `File::lock` family) on a file
//! opened relative to the store's descriptor: they die with the process that holds them, so a
//! killed node never leaves a stale lock behind. Each acquisition opens the file anew, so threads
//! of one process exclude each other exactly as processes do.
//!
//! The lock file is trusted as an artifact is: found on an `O_PATH` descriptor without following a
//! link and checked with `fstat` (a regular file with one link, owned by this process's uid) before
//! it is opened, so a link or a hard link planted under its name is refused and never written.
//! It is created `0600`; an existing one that others can open is made `0600`, because anyone who
//! can open it can hold it and stall every start-up until its deadline.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags, Stat};

use super::Store;

/// Name of the lock file in a store.
pub(crate) const LOCK_NAME: &str = "lock";

/// How the lock is opened to look at it without taking part: read-only, never blocking.
const PROBE: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC);

/// Marks [`Store`]'s `lock_repaired` as set (above the permission bits it records).
pub(super) const REPAIRED: u32 = 1 << 16;

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
    /// Another process held the lock until the deadline.
    TimedOut {
        /// How long this acquisition waited.
        waited: Duration,
        /// The pid the last exclusive holder recorded, if readable.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Io(std::io::Error),
    /// A read-only store is never locked exclusively.
    ReadOnlyStore,
    /// The lock file failed a check (a link, a hard link, another owner, not a regular file):
    /// nothing was written into it, and the store is not used.
    Untrusted {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it.
        cause: String,
    },
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
            LockError::Io(_) => f.write_str("the lock file could not be opened or locked"),
            LockError::ReadOnlyStore => f.write_str("a read-only store is never written"),
            LockError::Untrusted { path, cause } => {
                write!(
                    f,
                    "lock file {} refused: {cause}; nothing was written into it",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Io(e) => Some(e),
            LockError::TimedOut { .. } | LockError::ReadOnlyStore | LockError::Untrusted { .. } => None,
        }
    }
}

/// Who holds the store's lock right now, as seen by a probe that waits for nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
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

/// The store under its exclusive lock: the only way to publish, remove or clean up, so none of
/// them can happen without the lock.
#[derive(Debug)]
pub struct Exclusive<'s> {
    pub(super) store: &'s Store,
    _guard: LockGuard,
}

impl Exclusive<'_> {
    /// The locked store.
    pub fn store(&self) -> &Store {
        self.store
    }
}

impl Store {
    /// Path of the lock file, for messages.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.display_path(LOCK_NAME)
    }

    /// Takes the shared lock (loading), waiting until `deadline` at most. `purpose` says what the
    /// wait is for, in the log.
    pub fn lock_shared(&self, deadline: Instant, purpose: &str) -> Result<LockGuard, LockError> {
        self.acquire(LockKind::Shared, deadline, purpose)
    }

    /// Takes the exclusive lock (compiling, publishing, pruning), waiting until `deadline` at most.
    pub fn lock_exclusive(&self, deadline: Instant, purpose: &str) -> Result<Exclusive<'_>, LockError> {
        if self.read_only {
            return Err(LockError::ReadOnlyStore);
        }
        let guard = self.acquire(LockKind::Exclusive, deadline, purpose)?;
        Ok(Exclusive {
            store: self,
            _guard: guard,
        })
    }

    fn untrusted(&self, cause: impl Into<String>) -> LockError {
        LockError::Untrusted {
            path: self.lock_path(),
            cause: cause.into(),
        }
    }

    /// Why the lock file described by `st` must not be opened, if it must not.
    fn lock_problem(st: &Stat) -> Option<String> {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => return Some("is a symbolic link".into()),
            _ => return Some("is not a regular file".into()),
        }
        if st.st_nlink != 1 {
            return Some(format!(
                "has {} hard links: another name for it may be a file outside the store",
                st.st_nlink
            ));
        }
        if st.st_uid != super::euid() {
            return Some(format!(
                "is owned by uid {}, not by this process's uid {}",
                st.st_uid,
                super::euid()
            ));
        }
        None
    }

    /// Opens the existing lock file after checking it, with `flags`; `Ok(None)` when there is none.
    fn open_existing_lock(&self, flags: OFlags) -> Result<Option<(File, Stat)>, LockError> {
        let (fd, st) = match self.dir.open_path(LOCK_NAME) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(self.untrusted("is a symbolic link"));
            }
            Err(e) => return Err(LockError::Io(e)),
        };
        if let Some(cause) = Self::lock_problem(&st) {
            return Err(self.untrusted(cause));
        }
        let file = self.dir.reopen(LOCK_NAME, &fd, &st, flags).map_err(LockError::Io)?;
        Ok(Some((file, st)))
    }

    /// Opens (or creates, `0600`) the lock file for taking a `kind` lock. An existing lock file is
    /// checked before it is opened, and one that others may open is made `0600` (logged, and
    /// reported through [`Store::lock_mode_repaired`]).
    fn open_lock(&self, kind: LockKind) -> Result<File, LockError> {
        let rw = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC;
        // Twice at most: a lock created by another process between our look and our create.
        for _ in 0..2 {
            let existing = match self.open_existing_lock(rw) {
                // On a read-only file system a shared lock on a read-only descriptor still works.
                Err(LockError::Io(e)) if kind == LockKind::Shared => self
                    .open_existing_lock(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC)
                    .map_err(|_| LockError::Io(e))?,
                other => other?,
            };
            if let Some((file, st)) = existing {
                let mode = st.st_mode & 0o7777;
                if mode & 0o077 != 0 {
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o600)).map_err(|e| {
                        self.untrusted(format!(
                            "other users may open it (mode {mode:03o}) and it cannot be made 0600: {}",
                            std::io::Error::from(e)
                        ))
                    })?;
                    log::warn!(
                        "lock file {} could be opened by other users (mode {mode:03o}), so they could hold the lock; made it 0600",
                        self.lock_path().display()
                    );
                    self.lock_repaired.store(mode | REPAIRED, Ordering::Relaxed);
                }
                return Ok(file);
            }
            let create = rw | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
            match self.dir.open_file(LOCK_NAME, create, 0o600) {
                Ok(file) => return Ok(file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(LockError::Io(e)),
            }
        }
        Err(self.untrusted("created and replaced again while being opened"))
    }

    /// The permission bits a lock file had when this store handle found that other users could
    /// open it and made it `0600`, if that happened.
    pub fn lock_mode_repaired(&self) -> Option<u32> {
        let v = self.lock_repaired.load(Ordering::Relaxed);
        (v & REPAIRED != 0).then_some(v & 0o7777)
    }

    /// True when the store has a lock file (a start-up or maintenance has run here).
    pub fn has_lock_file(&self) -> bool {
        self.dir.stat(LOCK_NAME).is_ok()
    }

    /// The pid recorded by the last exclusive holder, if readable (and the lock file is trusted).
    pub fn last_lock_holder(&self) -> Option<u32> {
        let (file, _) = self.open_existing_lock(PROBE).ok()??;
        let mut text = String::new();
        file.take(32).read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// Who holds the lock right now. Waits for nobody and never creates, changes or writes the
    /// lock file; the probe holds the lock for an instant only (a node starting meanwhile retries
    /// within milliseconds). A lock file that fails its checks is an error naming it.
    pub fn lock_state(&self) -> std::io::Result<LockState> {
        let file = match self.open_existing_lock(PROBE) {
            Ok(Some((f, _))) => f,
            Ok(None) => return Ok(LockState::Free),
            Err(LockError::Io(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
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
                last_holder: self.last_lock_holder(),
            }),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn acquire(&self, kind: LockKind, deadline: Instant, purpose: &str) -> Result<LockGuard, LockError> {
        let mut file = self.open_lock(kind)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut next_log = start;
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
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::TimedOut {
                    waited: now - start,
                    holder: self.last_lock_holder(),
                });
            }
            if now >= next_log {
                log::warn!(
                    "pid {} waiting for the {} lock on {} to {} (held by another process{}; giving up in {:.1} s)",
                    std::process::id(),
                    if kind == LockKind::Shared {
                        "shared"
                    } else {
                        "exclusive"
                    },
                    self.lock_path().display(),
                    purpose,
                    self.last_lock_holder()
                        .map(|p| format!(", last exclusive holder pid {p}"))
                        .unwrap_or_default(),
                    (deadline - now).as_secs_f64(),
                );
                next_log = now + Duration::from_secs(5);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let waited = start.elapsed();
        if waited >= Duration::from_millis(100) {
            log::info!(
                "took the {kind:?} lock on {} after waiting {:.1} s",
                self.lock_path().display(),
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

/// The deadline `timeout` from now; a timeout too large to represent waits forever in practice.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Sealer;
    use crate::key::Fingerprint;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("s"), Fingerprint([1; 16]), Sealer::Plain).expect("open")
    }

    #[test]
    fn shared_coexist_exclusive_waits_then_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let soon = || deadline_after(Duration::from_secs(1));
        let a = s.lock_shared(soon(), "load").expect("shared a");
        let b = s.lock_shared(soon(), "load").expect("shared b");
        let err = s
            .lock_exclusive(deadline_after(Duration::from_millis(50)), "compile")
            .unwrap_err();
        assert!(matches!(err, LockError::TimedOut { .. }), "{err}");
        drop(a);
        drop(b);
        let x = s.lock_exclusive(soon(), "compile").expect("exclusive");
        assert!(matches!(s.lock_state().expect("probe"), LockState::Exclusive { .. }));
        assert_eq!(s.last_lock_holder(), Some(std::process::id()));
        drop(x);
        assert!(!matches!(s.lock_state().expect("probe"), LockState::Exclusive { .. }));
    }

    #[test]
    fn a_past_deadline_fails_at_once_and_huge_timeouts_do_not_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let _x = s
            .lock_exclusive(deadline_after(Duration::MAX), "hold")
            .expect("exclusive");
        let t = Instant::now();
        assert!(s.lock_shared(Instant::now(), "load").is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
