//! The store's lock file and the locks taken on it, with waits that end at a deadline so that a
//! hung holder can delay a start-up but never block it.
//!
//! - **Shared** (`flock`): loading and publishing artifacts. Many holders at once.
//! - **Exclusive** (`flock`): maintenance only (prune, clear, removing rejected artifacts and temp
//!   files), which must see no writer in the middle of a publication.
//! - **Artifact** (an open-file-description byte-range lock on the same file, at an offset derived
//!   from the artifact's name; Linux): held while one artifact is compiled and published, so that
//!   each artifact is compiled once across threads and processes while loads of every other
//!   artifact go on. Where such locks do not exist, only the threads of one process exclude each
//!   other (two processes may then compile the same artifact; both publish atomically).
//!
//! All of them die with the process that holds them, so a killed node never leaves a stale lock.
//! Each acquisition opens the file anew, so threads of one process exclude each other exactly as
//! processes do.
//!
//! The lock file is trusted as an artifact is: found on an `O_PATH` descriptor without following a
//! link and checked with `fstat` (a regular file with one link, owned by this process's uid, that
//! nobody else may open) before it is opened. One that fails a check (left by an earlier version
//! with mode 0644, planted as a link, given a second name by a `cp -al` backup, chmodded or
//! chowned) is not repaired in place, since a descriptor someone opened earlier would keep working
//! on it: it is replaced by a new file, a new inode that only this uid can open. A lock is one lock
//! only while every user of the store locks the same inode, so the replacement excludes the old
//! file's holders: it happens only under an exclusive `flock` of the old file (nobody holds it) or
//! when every holder the kernel names runs as another uid than this one and root (a holder that can
//! only mean to delay the node). While a holder that may be one of the store's own users (a node
//! mid-start when its lock was chmodded) holds it, the old file is used as it is, by everyone.
//! Every acquisition, the per-artifact ones included, checks afterwards that the file it locked is
//! still the one named `lock`; the temporary-file sweep runs under the exclusive lock of that same
//! inode.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, FileType, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

use super::lock_holders::{self, kernel_holders, only_strangers, record, recorded, this_process_outside};
use super::lock_report::{Holder, LockError, LockHolder, LockKind, LockProblem, LockRepair, LockState};
use super::{Store, TEMP_PREFIX};
use crate::fs::dir::FileId;
use crate::key::ArtifactKey;

/// Name of the lock file in a store.
pub(crate) const LOCK_NAME: &str = "lock";

/// How the lock is opened to look at it without taking part: read-only, never blocking.
const PROBE: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC);
/// How the lock is opened to take part.
const RDWR: OFlags = OFlags::RDWR.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC);

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct LockGuard {
    /// `None` for a shared lock on a store on a read-only file system that has no lock file:
    /// nothing there can be written or removed, so there is nothing to exclude.
    file: Option<File>,
    kind: LockKind,
    registration: u64,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first just releases it sooner. An
        // artifact's byte-range lock goes with the descriptor.
        if let Some(file) = self.file.as_ref().filter(|_| self.kind != LockKind::Artifact) {
            let _ = file.unlock();
        }
        held::release(self.registration);
    }
}

/// The store under its exclusive lock: the only way to remove anything, so no removal can happen
/// without the lock.
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

/// One artifact's lock, held while it is compiled and published: the only way to publish
/// outside maintenance.
#[derive(Debug)]
pub struct ArtifactLock<'s> {
    pub(super) store: &'s Store,
    pub(super) key: ArtifactKey,
    _guard: LockGuard,
}

impl ArtifactLock<'_> {
    /// The locked store.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// The artifact it locks.
    pub fn key(&self) -> &ArtifactKey {
        &self.key
    }
}

/// What a checked look at the lock file found.
enum Found {
    Absent,
    Trusted(rustix::fd::OwnedFd, Stat),
    /// With an `O_PATH` descriptor of it, unless it is a link (never opened).
    Untrusted(LockProblem, Stat, Option<rustix::fd::OwnedFd>),
}

/// Whether an acquisition may create a missing lock file or replace an untrusted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// As a start-up or maintenance: create or replace as needed.
    Allowed,
    /// As `verify`, which changes nothing: lock the file that is there, as it is.
    Never,
}

impl Store {
    /// Path of the lock file, for messages.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.display_path(LOCK_NAME)
    }

    /// Why `kind` of this store's lock was not taken, as the layers above report it.
    pub(crate) fn lock_failure(&self, kind: LockKind, source: LockError) -> super::Failure {
        super::Failure::new(self.lock_path(), super::Cause::Lock(kind, source))
    }

    /// Takes the shared lock (loading, publishing), waiting until `deadline` at most. `purpose`
    /// says what the wait is for, in the log and to other threads of this process.
    pub fn lock_shared(&self, deadline: Instant, purpose: &str) -> Result<LockGuard, LockError> {
        self.acquire(LockKind::Shared, deadline, purpose, Repair::Allowed)
    }

    /// Takes the shared lock on the lock file that is there, as it is: never creates, replaces or
    /// writes it (what `verify`, which changes nothing, holds). Fails when there is no lock file,
    /// or it is a link, a directory, or a file this uid cannot open.
    pub fn lock_shared_as_is(&self, deadline: Instant, purpose: &str) -> Result<LockGuard, LockError> {
        self.acquire(LockKind::Shared, deadline, purpose, Repair::Never)
    }

    /// Takes the exclusive lock (maintenance), waiting until `deadline` at most.
    pub fn lock_exclusive(&self, deadline: Instant, purpose: &str) -> Result<Exclusive<'_>, LockError> {
        if self.read_only {
            return Err(LockError::ReadOnlyStore);
        }
        let guard = self.acquire(LockKind::Exclusive, deadline, purpose, Repair::Allowed)?;
        Ok(Exclusive {
            store: self,
            _guard: guard,
        })
    }

    /// Takes the exclusive lock only if nobody holds the lock now: for maintenance a start-up does
    /// in passing (temp files, rejected artifacts), which is never worth a wait.
    pub(crate) fn try_lock_exclusive(&self, purpose: &str) -> Option<Exclusive<'_>> {
        self.lock_exclusive(Instant::now(), purpose).ok()
    }

    /// Takes the lock of the artifact `key` (compiling and publishing it), waiting until
    /// `deadline` at most. The caller holds the shared lock.
    pub fn lock_artifact(
        &self,
        key: &ArtifactKey,
        deadline: Instant,
        purpose: &str,
    ) -> Result<ArtifactLock<'_>, LockError> {
        if self.read_only {
            return Err(LockError::ReadOnlyStore);
        }
        let offset = artifact_offset(key);
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        let (file, registration) = loop {
            let Some(file) = self.open_lock(LockKind::Artifact, Repair::Allowed)? else {
                return Err(io(std::io::Error::from_raw_os_error(libc::EROFS)));
            };
            let id = FileId::of(&rfs::fstat(&file).map_err(io)?);
            // Threads of this process first, then other processes.
            if let Some(registration) = held::claim_artifact(id, offset, purpose) {
                match range_lock::try_lock(&file, offset) {
                    // The file locked must still be the one named `lock`, the one whose shared
                    // lock the caller holds and whose exclusive lock a temp-file sweep takes.
                    Ok(true) if self.is_the_lock(id) => break (file, registration),
                    Ok(true) => {
                        held::release(registration);
                        continue;
                    }
                    Ok(false) => held::release(registration),
                    Err(e) => {
                        held::release(registration);
                        return Err(LockError::Io(std::sync::Arc::new(e)));
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let holder = held::holder_of(id, LockKind::Artifact, Some(offset)).unwrap_or(LockHolder::Unknown);
                return Err(LockError::TimedOut {
                    waited: now - start,
                    holder,
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        Ok(ArtifactLock {
            store: self,
            key: *key,
            _guard: LockGuard {
                file: Some(file),
                kind: LockKind::Artifact,
                registration,
            },
        })
    }

    /// The lock file's problem, if it has one, without changing anything: what `status` shows.
    pub fn lock_problem(&self) -> Option<LockProblem> {
        match self.look_at_lock() {
            Ok(Found::Untrusted(problem, _, _)) => Some(problem),
            _ => None,
        }
    }

    /// True when the file named `lock` is `id`.
    fn is_the_lock(&self, id: FileId) -> bool {
        self.dir.stat(LOCK_NAME).is_ok_and(|st| FileId::of(&st) == id)
    }

    /// What was wrong with a lock file this store's handles replaced, if they replaced one.
    pub fn lock_repair(&self) -> Option<LockRepair> {
        self.lock_repaired.lock().ok().and_then(|r| r.clone())
    }

    /// True when the store has a lock file (a start-up or maintenance has run here).
    pub fn has_lock_file(&self) -> bool {
        self.dir.stat(LOCK_NAME).is_ok()
    }

    /// The process the last exclusive holder recorded, read only from a lock file that passes
    /// every check (one that others could write proves nothing), and named only while that very
    /// process runs (its start time matches): a later process given the same pid is not it.
    pub fn last_lock_holder(&self) -> Option<Holder> {
        let Ok(Found::Trusted(fd, st)) = self.look_at_lock() else {
            return None;
        };
        let file = self.dir.reopen(LOCK_NAME, &fd, &st, PROBE).ok()?;
        let mut text = String::new();
        file.take(80).read_to_string(&mut text).ok()?;
        recorded(&text, |pid| {
            lock_holders::flock_holders(FileId::of(&st))
                .is_some_and(|holders| holders.iter().any(|h| h.pid == Some(pid)))
        })
    }

    /// Who holds the lock right now. Waits for nobody and never creates, changes or writes the
    /// lock file; the probe holds the lock for an instant only (a node starting meanwhile retries
    /// within milliseconds). A lock file that fails its checks is reported as such by
    /// [`Store::lock_problem`]; its state is still probed.
    pub fn lock_state(&self) -> Result<LockState, LockError> {
        let (fd, st) = match self.look_at_lock()? {
            Found::Absent => return Ok(LockState::Free),
            Found::Trusted(fd, st) => (fd, st),
            // A link is never opened; anything else is probed where it lies.
            Found::Untrusted(LockProblem::Symlink | LockProblem::NotRegularFile, _, _) => return Ok(LockState::Free),
            Found::Untrusted(_, st, Some(fd)) => (fd, st),
            Found::Untrusted(_, _, None) => return Ok(LockState::Free),
        };
        let id = FileId::of(&st);
        let file = match self.dir.reopen(LOCK_NAME, &fd, &st, PROBE) {
            Ok(file) => file,
            // Another owner's lock file (a `sudo warm` by mistake): shown as such, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(LockState::Unknown),
            Err(e) => return Err(io(e)),
        };
        // flock works on a read-only descriptor.
        match file.try_lock() {
            Ok(()) => {
                file.unlock().map_err(io)?;
                return Ok(LockState::Free);
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        match file.try_lock_shared() {
            Ok(()) => {
                file.unlock().map_err(io)?;
                Ok(LockState::Shared {
                    holders: kernel_holders(id),
                })
            }
            Err(TryLockError::WouldBlock) => Ok(LockState::Exclusive {
                holders: kernel_holders(id),
                last_holder: self.last_lock_holder(),
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Finds the lock file without following a link and checks it with `fstat`.
    fn look_at_lock(&self) -> Result<Found, LockError> {
        let (fd, st) = match self.dir.open_path(LOCK_NAME) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Absent),
            Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                let st = self.dir.stat(LOCK_NAME).map_err(io)?;
                return Ok(Found::Untrusted(LockProblem::Symlink, st, None));
            }
            Err(e) => return Err(io(e)),
        };
        Ok(match lock_problem(&st) {
            Some(problem) => Found::Untrusted(problem, st, Some(fd)),
            None => Found::Trusted(fd, st),
        })
    }

    /// Opens the lock file for taking a `kind` lock: creates it (`0600`) when missing, replaces it
    /// when it fails a check and none of its holders may be one of the store's users, and
    /// otherwise opens the inode that is there (see the module's docs). With [`Repair::Never`]
    /// nothing is created or replaced.
    /// `None`: a shared lock is wanted, there is no lock file, and the store is on a read-only
    /// file system, where none can be made and nothing can change.
    fn open_lock(&self, kind: LockKind, repair: Repair) -> Result<Option<File>, LockError> {
        // A few rounds at most: a lock created or replaced by another process meanwhile.
        for _ in 0..8 {
            match self.look_at_lock()? {
                Found::Trusted(fd, st) => {
                    return match self.dir.reopen(LOCK_NAME, &fd, &st, RDWR) {
                        Ok(file) => Ok(Some(file)),
                        // A store on a read-only file system: a shared lock on a read-only
                        // descriptor still keeps a prune elsewhere from unlinking mid-load.
                        Err(e) if kind == LockKind::Shared => {
                            self.dir.reopen(LOCK_NAME, &fd, &st, PROBE).map(Some).map_err(|_| io(e))
                        }
                        Err(e) => Err(io(e)),
                    };
                }
                Found::Absent if repair == Repair::Never => {
                    return Err(io(std::io::Error::from(std::io::ErrorKind::NotFound)));
                }
                Found::Absent => {
                    let create = RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
                    match self.dir.open_file(LOCK_NAME, create, 0o600) {
                        Ok(file) => return Ok(Some(file)),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem && kind == LockKind::Shared => {
                            return Ok(None);
                        }
                        Err(e) => return Err(io(e)),
                    }
                }
                // Nothing else can be renamed over a directory; it stays the operator's to remove.
                Found::Untrusted(problem @ LockProblem::NotRegularFile, st, _)
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory =>
                {
                    return Err(LockError::Untrusted { problem });
                }
                Found::Untrusted(problem, st, fd) => {
                    // A regular file's holders lock this store through it: it is opened to join
                    // them or to lock them out. Anything else (a FIFO, a device) is never opened.
                    let is_file = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
                    let old = fd.filter(|_| is_file).and_then(|fd| {
                        self.dir
                            .reopen(LOCK_NAME, &fd, &st, RDWR)
                            .or_else(|_| self.dir.reopen(LOCK_NAME, &fd, &st, PROBE))
                            .ok()
                    });
                    if repair == Repair::Never || (is_file && !self.may_replace(old.as_ref(), &st)) {
                        return old.map(Some).ok_or(LockError::Untrusted { problem });
                    }
                    // `old`, when open and locked by `may_replace`, stays locked until the new
                    // file is in place, so that nobody takes it in between.
                    self.replace_lock(problem, &st)?;
                    drop(old);
                }
            }
        }
        Err(LockError::Io(std::sync::Arc::new(std::io::Error::other(
            "the lock file was created or replaced again while being opened",
        ))))
    }

    /// Whether the untrusted lock file `st` (open as `old`, when this uid can open it) may be
    /// replaced now: when an exclusive `flock` on it, taken without waiting and held by `old`
    /// until the replacement is done, shows that nobody holds it; or when the kernel names every
    /// holder and none may be one of the store's users ([`only_strangers`]); or when this uid
    /// cannot open it and nobody holds it.
    fn may_replace(&self, old: Option<&File>, st: &Stat) -> bool {
        if let Some(file) = old {
            match file.try_lock() {
                Ok(()) => return true,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(_)) => return false,
            }
        }
        match lock_holders::flock_holders(FileId::of(st)) {
            Some(holders) if holders.is_empty() => old.is_none(),
            Some(holders) => only_strangers(&holders),
            None => false,
        }
    }

    /// Replaces the lock file described by `old` with a new one (`0600`, a new inode): a new file
    /// is written under a temporary name, locked exclusively, and atomically exchanged with
    /// `lock`. If what came out was not `old` (another process of this version replaced it first),
    /// it is exchanged back, so that a lock someone verified stays the lock. The new file is held
    /// locked until the exchange is settled, so nobody verifies it in between. The old inode is
    /// unlinked: whoever has it open holds nothing of this store's.
    /// Replaces the lock file with a new one only this uid can open, locked (so nobody takes it
    /// before it is in place) and exchanged with the old one; if another process's replacement
    /// came out instead, it is put back. The old inode is unlinked.
    fn replace_lock(&self, problem: LockProblem, old: &Stat) -> Result<(), LockError> {
        let temp_name = || format!("{TEMP_PREFIX}lock-{}-{}", std::process::id(), next_id());
        let fill = |fresh: &mut File| {
            fresh
                .try_lock()
                .map_err(|e| std::io::Error::other(format!("cannot lock a new lock file: {e:?}")))
        };
        let place = |temp: &str, fresh: File| {
            let exchange = || rfs::renameat_with(&*self.dir, temp, &*self.dir, LOCK_NAME, RenameFlags::EXCHANGE);
            match exchange() {
                Ok(()) => {
                    let out = self.dir.stat(temp).map(|st| FileId::of(&st))?;
                    if out != FileId::of(old) {
                        // Someone else's replacement came out: put it back.
                        let _ = exchange();
                    }
                }
                // A file system without exchange: a plain rename, the best it allows.
                Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => self.dir.rename(temp, LOCK_NAME)?,
                Err(e) => return Err(e.into()),
            }
            // Under the temporary name now: the old lock, or our file after exchanging back.
            let _ = self.dir.unlink(temp);
            let _ = self.dir.sync();
            drop(fresh);
            Ok(())
        };
        self.dir.write_new(temp_name, RDWR, 0o600, fill, place).map_err(io)?;
        let repair = LockRepair {
            path: self.lock_path(),
            problem,
        };
        log::warn!("{repair}");
        if let Ok(mut slot) = self.lock_repaired.lock() {
            slot.get_or_insert(repair);
        }
        Ok(())
    }

    fn acquire(
        &self,
        kind: LockKind,
        deadline: Instant,
        purpose: &str,
        repair: Repair,
    ) -> Result<LockGuard, LockError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut next_log = start;
        loop {
            let Some(mut file) = self.open_lock(kind, repair)? else {
                // Token 0 is never handed out: there is nothing to register.
                return Ok(LockGuard {
                    file: None,
                    kind,
                    registration: 0,
                });
            };
            let id = FileId::of(&rfs::fstat(&file).map_err(io)?);
            let attempt = match kind {
                LockKind::Shared => file.try_lock_shared(),
                _ => file.try_lock(),
            };
            match attempt {
                Ok(()) => {
                    // The file locked must still be the one named `lock`: a lock someone replaced
                    // meanwhile protects nothing.
                    if self.is_the_lock(id) {
                        // For diagnostics only: who to look for when others wait on us. Never
                        // into a file others may open (one used as it is), which would be theirs
                        // to read and to rewrite.
                        if kind == LockKind::Exclusive && repair == Repair::Allowed && self.lock_problem().is_none() {
                            let _ = file.set_len(0);
                            let _ = file.seek(SeekFrom::Start(0));
                            let _ = file.write_all(record().as_bytes());
                        }
                        let waited = start.elapsed();
                        if waited >= Duration::from_millis(100) {
                            log::info!(
                                "took the {kind} lock on {} after waiting {:.1} s",
                                self.lock_path().display(),
                                waited.as_secs_f64()
                            );
                        }
                        let registration = held::register(id, kind, None, purpose);
                        return Ok(LockGuard {
                            file: Some(file),
                            kind,
                            registration,
                        });
                    }
                    let _ = file.unlock();
                    continue;
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
                Err(TryLockError::WouldBlock) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::TimedOut {
                    waited: now - start,
                    holder: self.holder(id, kind),
                });
            }
            if now >= next_log {
                log::warn!(
                    "pid {} waiting for the {kind} lock on {} to {purpose} (held {}; giving up in {:.1} s)",
                    std::process::id(),
                    self.lock_path().display(),
                    self.holder(id, kind),
                    (deadline - now).as_secs_f64(),
                );
                next_log = now + Duration::from_secs(5);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

impl Store {
    /// Who holds the lock file `id` against a `kind` lock, as far as can be told: a thread of this
    /// process, the holders the kernel names, this process outside this crate, the last exclusive
    /// holder's record.
    fn holder(&self, id: FileId, kind: LockKind) -> LockHolder {
        held::holder_of(id, kind, None)
            .or_else(|| {
                let holders = kernel_holders(id);
                (!holders.is_empty()).then_some(LockHolder::Holding(holders))
            })
            .or_else(|| this_process_outside(id))
            .or_else(|| self.last_lock_holder().map(LockHolder::Recorded))
            .unwrap_or(LockHolder::Unknown)
    }
}

/// Why the lock file described by `st` must not be used as it is, if it must not.
fn lock_problem(st: &Stat) -> Option<LockProblem> {
    use crate::fs::PrivateFileProblem as P;
    Some(match crate::fs::private_file_problem(st, crate::fs::Owner::Me)? {
        P::Symlink => LockProblem::Symlink,
        P::NotRegularFile => LockProblem::NotRegularFile,
        P::HardLinks { links } => LockProblem::HardLinks { links },
        P::OwnedByOther { uid } => LockProblem::OwnedByOther { uid },
        P::OpenToOthers { mode } => LockProblem::OpenToOthers { mode },
    })
}

fn io(e: impl Into<std::io::Error>) -> LockError {
    LockError::Io(std::sync::Arc::new(e.into()))
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where in the lock file the byte of `key`'s artifact lock lies: a hash of its file name, below
/// 2^62 so that no offset arithmetic can overflow. Two artifacts sharing a byte only wait for each
/// other.
fn artifact_offset(key: &ArtifactKey) -> u64 {
    let digest = blake3::hash(key.file_name().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    1 + (u64::from_le_bytes(first) >> 2)
}

/// The deadline `timeout` from now; a timeout too large to represent waits forever in practice.
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Byte-range locks that belong to an open file description (`F_OFD_SETLK`): held per open, like
/// `flock`, so threads of one process exclude each other; released when the description closes.
mod range_lock {
    use std::fs::File;

    #[cfg(target_os = "linux")]
    pub(super) fn try_lock(file: &File, offset: u64) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        // SAFETY: `flock` is a plain C struct of integers; all zeros is a valid value, and the
        // fields that matter are set below (OFD locks require `l_pid` to be 0).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // Below 2^62 (see `artifact_offset`): it fits `off_t`.
        lock.l_start = offset as libc::off_t;
        lock.l_len = 1;
        // SAFETY: the descriptor is open for the duration of the call (borrowed from `file`), and
        // `lock` is a valid `flock` that lives across it; F_OFD_SETLK only reads it.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
            _ => Err(e),
        }
    }

    /// Without open-file-description locks only the threads of this process exclude each other
    /// (the caller's claim does that); processes may compile the same artifact twice, and both
    /// publish atomically.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn try_lock(_file: &File, _offset: u64) -> std::io::Result<bool> {
        Ok(true)
    }
}

/// The locks this process holds, by lock file: so that a wait that times out on a lock held by
/// another thread of this process says so instead of blaming "another process", and so that the
/// threads of this process exclude each other on an artifact even where the system's locks would
/// not.
mod held {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::super::lock_report::{LockHolder, LockKind};
    use crate::fs::dir::FileId;

    struct Held {
        token: u64,
        id: FileId,
        kind: LockKind,
        offset: Option<u64>,
        purpose: String,
    }

    static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(1);

    fn with<R>(f: impl FnOnce(&mut Vec<Held>) -> R) -> R {
        let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut held)
    }

    pub(super) fn register(id: FileId, kind: LockKind, offset: Option<u64>, purpose: &str) -> u64 {
        let token = NEXT.fetch_add(1, Ordering::Relaxed);
        with(|held| {
            held.push(Held {
                token,
                id,
                kind,
                offset,
                purpose: purpose.to_owned(),
            })
        });
        token
    }

    /// Registers an artifact lock unless another thread of this process holds it.
    pub(super) fn claim_artifact(id: FileId, offset: u64, purpose: &str) -> Option<u64> {
        let token = NEXT.fetch_add(1, Ordering::Relaxed);
        with(|held| {
            let taken = held
                .iter()
                .any(|h| h.id == id && h.kind == LockKind::Artifact && h.offset == Some(offset));
            (!taken).then(|| {
                held.push(Held {
                    token,
                    id,
                    kind: LockKind::Artifact,
                    offset: Some(offset),
                    purpose: purpose.to_owned(),
                });
                token
            })
        })
    }

    pub(super) fn release(token: u64) {
        with(|held| held.retain(|h| h.token != token));
    }

    /// A lock of this process on `id` that conflicts with taking `kind` (at `offset`), if any.
    pub(super) fn holder_of(id: FileId, kind: LockKind, offset: Option<u64>) -> Option<LockHolder> {
        with(|held| {
            held.iter()
                .find(|h| {
                    h.id == id
                        && match (kind, h.kind) {
                            (LockKind::Artifact, LockKind::Artifact) => h.offset == offset,
                            (LockKind::Artifact, _) | (_, LockKind::Artifact) => false,
                            (LockKind::Shared, LockKind::Shared) => false,
                            _ => true,
                        }
                })
                .map(|h| LockHolder::ThisProcess {
                    purpose: h.purpose.clone(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Sealer;
    use crate::key::{Fingerprint, Kind};

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
        assert!(
            matches!(&err, LockError::TimedOut { holder: LockHolder::ThisProcess { purpose }, .. } if purpose == "load"),
            "{err}"
        );
        drop(a);
        drop(b);
        let x = s.lock_exclusive(soon(), "compile").expect("exclusive");
        match s.lock_state().expect("probe") {
            LockState::Exclusive {
                last_holder: Some(h), ..
            } => {
                assert_eq!(h.pid, std::process::id());
                assert!(h.alive);
                assert!(h.command.is_some_and(|c| !c.is_empty()));
            }
            other => panic!("{other:?}"),
        }
        drop(x);
        assert!(!matches!(s.lock_state().expect("probe"), LockState::Exclusive { .. }));
    }

    #[test]
    fn a_lock_this_process_took_itself_is_named_as_this_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        drop(
            s.lock_shared(deadline_after(Duration::from_secs(1)), "create")
                .expect("shared"),
        );
        let own = File::open(s.lock_path()).expect("open");
        own.lock().expect("the host's own exclusive lock");
        let err = s
            .lock_shared(deadline_after(Duration::from_millis(50)), "load")
            .unwrap_err();
        assert!(
            matches!(&err, LockError::TimedOut { holder: LockHolder::ThisProcess { purpose }, .. } if purpose.contains("not through this crate")),
            "{err}"
        );
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

    #[test]
    fn an_artifact_lock_excludes_the_same_artifact_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        let key = |b| ArtifactKey {
            source: [b; 32],
            fingerprint: Fingerprint([1; 16]),
            kind: Kind::Component,
        };
        let soon = || deadline_after(Duration::from_millis(50));
        let _shared = s.lock_shared(soon(), "compile").expect("shared");
        let held = s.lock_artifact(&key(1), soon(), "compile one").expect("artifact lock");
        let err = s.lock_artifact(&key(1), soon(), "compile again").unwrap_err();
        assert!(
            matches!(&err, LockError::TimedOut { holder: LockHolder::ThisProcess { purpose }, .. } if purpose == "compile one"),
            "{err}"
        );
        s.lock_artifact(&key(2), soon(), "compile another")
            .expect("another artifact");
        drop(held);
        s.lock_artifact(&key(1), soon(), "compile again").expect("free again");
    }

    #[test]
    fn a_loose_lock_is_shared_with_its_holders_and_replaced_once_they_are_gone() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir);
        std::fs::write(s.lock_path(), b"").expect("lock");
        std::fs::set_permissions(s.lock_path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let before = std::fs::metadata(s.lock_path()).expect("stat").ino();
        // A descriptor opened before, holding a shared lock on the old file: a node of this uid
        // mid-start when the file was chmodded.
        let old = File::open(s.lock_path()).expect("open");
        old.lock_shared().expect("lock the old file");
        assert_eq!(s.lock_problem(), Some(LockProblem::OpenToOthers { mode: 0o644 }));
        // Its holder keeps taking part: a shared lock joins it on the same inode, the exclusive
        // lock waits for it, and nothing is replaced under it.
        let shared = s
            .lock_shared(deadline_after(Duration::from_millis(200)), "test")
            .expect("shared, on the old file");
        assert_eq!(std::fs::metadata(s.lock_path()).expect("stat").ino(), before);
        assert!(matches!(
            s.lock_exclusive(deadline_after(Duration::from_millis(100)), "test"),
            Err(LockError::TimedOut { .. })
        ));
        assert_eq!(std::fs::metadata(s.lock_path()).expect("stat").ino(), before);
        assert_eq!(s.lock_repair(), None);
        drop(shared);
        drop(old);
        let _x = s
            .lock_exclusive(deadline_after(Duration::from_millis(200)), "test")
            .expect("replaced once nobody holds it");
        let after = std::fs::metadata(s.lock_path()).expect("stat");
        assert_ne!(after.ino(), before);
        assert_eq!(after.mode() & 0o777, 0o600);
        assert_eq!(s.lock_problem(), None);
        assert!(matches!(
            s.lock_repair(),
            Some(LockRepair {
                problem: LockProblem::OpenToOthers { mode: 0o644 },
                ..
            })
        ));
        let temps = std::fs::read_dir(dir.path().join("s"))
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            })
            .count();
        assert_eq!(temps, 0, "no temp file left");
    }
}
