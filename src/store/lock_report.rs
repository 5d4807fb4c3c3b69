//! What the store's lock says about itself, in reports and errors: which lock ([`LockKind`]), who
//! holds it ([`LockState`], [`Holder`], [`LockHolder`]), why it was not taken ([`LockError`]), and
//! what is wrong with a lock file ([`LockProblem`], [`LockRepair`]).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use serde::Serialize;

/// Who holds the store's lock right now, as seen by a probe that waits for nobody. In JSON
/// `{"state": "free" | "shared" | "exclusive" | "unknown", "holders": [{...}], "last_holder": null | {...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockState {
    /// Nobody holds it (or the lock file does not exist yet).
    Free,
    /// One or more processes hold it shared: nodes loading or publishing artifacts.
    Shared {
        /// The holders, from the kernel's lock table (empty where it cannot be read).
        holders: Vec<Holder>,
    },
    /// A process holds it exclusively (pruning, clearing, removing what it must).
    Exclusive {
        /// The holder, from the kernel's lock table (empty where it cannot be read).
        holders: Vec<Holder>,
        /// The process recorded in the lock file (only read from a lock file only this uid can
        /// write), whether that very process still runs, and its command line: usually the
        /// holder, unless a tool that records nothing (`flock`) holds the lock.
        last_holder: Option<Holder>,
    },
    /// This uid cannot open the lock file (another owner): who holds it is unknown.
    Unknown,
}

/// A process holding a lock, or the one the last exclusive holder wrote into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Holder {
    /// The pid, as seen from this pid namespace; for a process in another pid namespace, the pid
    /// it recorded there, or 0 when the kernel names a holder this namespace cannot see.
    pub pid: u32,
    /// Whether that process runs now. A recorded pid counts as running only while the process
    /// that recorded it does (same start time), never a later process given the same number.
    pub alive: bool,
    /// Its command line, from `/proc/PID/cmdline`, when readable: bytes its owner chose, escaped
    /// whenever printed as text.
    pub command: Option<String>,
    /// True for a process in another pid namespace (another container on a shared volume): its
    /// pid names nothing here.
    pub other_pid_namespace: bool,
}

impl Holder {
    /// A running process of this pid namespace: its command line is read now.
    pub(crate) fn of(pid: u32) -> Holder {
        let alive = match rustix::process::Pid::from_raw(pid as i32) {
            Some(p) => match rustix::process::test_kill_process(p) {
                Ok(()) => true,
                Err(e) => e == Errno::PERM,
            },
            None => false,
        };
        let command = std::fs::read(format!("/proc/{pid}/cmdline")).ok().and_then(|raw| {
            let text: String = String::from_utf8_lossy(&raw)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (!text.is_empty()).then(|| text.chars().take(200).collect())
        });
        Holder {
            pid,
            alive,
            command,
            other_pid_namespace: false,
        }
    }

    /// A process that recorded `pid` and has exited since (its pid may now be another's).
    pub(super) fn gone(pid: u32) -> Holder {
        Holder {
            pid,
            alive: false,
            command: None,
            other_pid_namespace: false,
        }
    }

    /// A process of another pid namespace: `pid` as it knows itself, 0 when unknown. Whether it
    /// runs cannot be told from here; a kernel holder does.
    pub(super) fn elsewhere(pid: u32, alive: bool) -> Holder {
        Holder {
            pid,
            alive,
            command: None,
            other_pid_namespace: true,
        }
    }

    /// `pid 12 (cmd)`, `a process in another pid namespace`: who, without whether it runs.
    fn who(&self) -> String {
        match (self.other_pid_namespace, self.pid, &self.command) {
            (true, 0, _) => "a process in another pid namespace".to_owned(),
            (true, pid, _) => format!("pid {pid} in another pid namespace"),
            (false, pid, Some(c)) => format!("pid {pid} ({})", crate::escape::escape_control(c)),
            (false, pid, None) => format!("pid {pid}"),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.other_pid_namespace {
            return f.write_str(&self.who());
        }
        write!(f, "pid {}", self.pid)?;
        match (&self.command, self.alive) {
            (Some(c), true) => write!(f, ", running: {}", crate::escape::escape_control(c)),
            (None, true) => f.write_str(", running"),
            (_, false) => f.write_str(", no longer running"),
        }
    }
}

impl LockState {
    /// `free`, `shared`, `exclusive` or `unknown`: the JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LockState::Free => "free",
            LockState::Shared { .. } => "shared",
            LockState::Exclusive { .. } => "exclusive",
            LockState::Unknown => "unknown",
        }
    }
}

impl serde::Serialize for LockState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("state", self.as_str())?;
        let (holders, last): (&[Holder], _) = match self {
            LockState::Shared { holders } => (holders, None),
            LockState::Exclusive { holders, last_holder } => (holders, last_holder.as_ref()),
            _ => (&[], None),
        };
        m.serialize_entry("holders", holders)?;
        m.serialize_entry("last_holder", &last)?;
        m.end()
    }
}

impl std::fmt::Display for LockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockState::Free => f.write_str("free"),
            LockState::Shared { holders } => {
                f.write_str("held shared (nodes loading or compiling artifacts)")?;
                write_holders(f, holders)
            }
            LockState::Exclusive { holders, last_holder } => {
                f.write_str("held exclusively (maintenance)")?;
                write_holders(f, holders)?;
                match last_holder {
                    Some(h) if !holders.iter().any(|k| k.pid == h.pid) => {
                        write!(f, "; last exclusive holder recorded: {h}")
                    }
                    _ => Ok(()),
                }
            }
            LockState::Unknown => f.write_str("unknown (this uid cannot open the lock file)"),
        }
    }
}

/// ` by pid 1 (running: cmd), pid 2 (...)`, or nothing when no holder is known.
pub(crate) fn write_holders(f: &mut std::fmt::Formatter<'_>, holders: &[Holder]) -> std::fmt::Result {
    for (i, h) in holders.iter().enumerate() {
        f.write_str(if i == 0 { " by " } else { ", " })?;
        f.write_str(&h.who())?;
    }
    Ok(())
}

/// A lock file that failed a check and was replaced by a new one, as a start-up reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockRepair {
    /// The lock file.
    pub path: PathBuf,
    /// What was wrong with the old one.
    pub problem: LockProblem,
}

impl std::fmt::Display for LockRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lock file {}: {}; replaced it with a new file (mode 0600) that only this uid can open, so no descriptor opened earlier holds the store's lock",
            self.path.display(),
            self.problem
        )
    }
}

/// Which lock of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LockKind {
    /// Many holders at once: loading and publishing artifacts.
    Shared,
    /// One holder: maintenance (pruning, clearing, removing rejected artifacts and temp files).
    Exclusive,
    /// One artifact's, so that it is compiled once across threads and processes.
    Artifact,
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
            LockKind::Artifact => "artifact",
        })
    }
}

/// Why a lock was not taken.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LockError {
    /// Another holder kept the lock until the deadline.
    TimedOut {
        /// How long this acquisition waited (zero when an earlier call of the same
        /// [`ArtifactStore`](crate::ArtifactStore) already waited its whole timeout).
        waited: Duration,
        /// Who holds it, as far as can be told.
        holder: LockHolder,
    },
    /// The lock file could not be opened, created or locked.
    Io(Arc<io::Error>),
    /// A read-only store is never locked.
    ReadOnlyStore,
    /// The lock file failed a check and could not be replaced: nothing was written into it, and
    /// the store is not used.
    Untrusted {
        /// What is wrong with it.
        problem: LockProblem,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::TimedOut { waited, holder } => {
                write!(f, "lock still held after {:.1} s {holder}", waited.as_secs_f64())
            }
            LockError::Io(e) => write!(f, "the lock file could not be opened or locked: {e}"),
            LockError::ReadOnlyStore => f.write_str("a read-only store is never locked"),
            LockError::Untrusted { problem } => write!(f, "lock file refused: {problem}; nothing was written into it"),
        }
    }
}

impl std::error::Error for LockError {}

/// Who holds a lock that was not obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockHolder {
    /// Nothing says who.
    Unknown,
    /// Another thread of this very process holds it.
    ThisProcess {
        /// What it holds the lock for.
        purpose: String,
    },
    /// The processes the kernel's lock table names as holding it (Linux `/proc/locks`).
    Holding(Vec<Holder>),
    /// The process the last exclusive holder wrote into the lock file (only read from a lock
    /// file only this uid can write): its pid, whether it runs, its command line.
    Recorded(Holder),
}

/// `by this process (...)`, `by pid 12, running: cmd`, `by another process (...)`: who, as a
/// wait or a failure names the holder.
impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockHolder::ThisProcess { purpose } => {
                write!(f, "by this process ({purpose}, pid {})", std::process::id())
            }
            LockHolder::Holding(holders) => {
                let list: Vec<String> = holders.iter().map(ToString::to_string).collect();
                write!(f, "by {}", list.join(", "))
            }
            LockHolder::Recorded(h) => write!(f, "by another process (last exclusive holder: {h})"),
            LockHolder::Unknown => f.write_str("by another process"),
        }
    }
}

/// What is wrong with a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockProblem {
    /// A symbolic link under the lock's name.
    Symlink,
    /// Not a regular file (a directory, FIFO, socket or device under the lock's name).
    NotRegularFile,
    /// More than one link: another name for it may lie outside the store.
    HardLinks {
        /// Its link count.
        links: u64,
    },
    /// Owned by a uid other than this process's.
    OwnedByOther {
        /// Its owner.
        uid: u32,
    },
    /// Others may open it (and so hold the lock).
    OpenToOthers {
        /// Its permission bits.
        mode: u32,
    },
}

impl fmt::Display for LockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockProblem::Symlink => f.write_str("it is a symbolic link"),
            LockProblem::NotRegularFile => f.write_str("it is not a regular file"),
            LockProblem::HardLinks { links } => write!(
                f,
                "it has {links} hard links: another name for it may be a file outside the store"
            ),
            LockProblem::OwnedByOther { uid } => write!(
                f,
                "it is owned by {}, not by this process's {}",
                crate::fs::user_name(*uid),
                crate::fs::user_name(crate::fs::euid())
            ),
            LockProblem::OpenToOthers { mode } => {
                write!(f, "other users may open it (mode {mode:03o}) and so hold the lock")
            }
        }
    }
}
