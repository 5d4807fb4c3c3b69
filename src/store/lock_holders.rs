//! Who holds a lock file right now, from the kernel's own table (`/proc/locks`), so that an
//! operator is shown the process actually in the way, not only the pid the last exclusive holder
//! wrote into the file (another tool's `flock` writes nothing, and that pid may have exited); and
//! what identifies a process beyond its pid (its start time and pid namespace), so that a pid
//! recorded in the lock file is never shown as another process that took that number later.

use super::lock_report::{Holder, LockHolder};
use crate::fs::dir::FileId;

/// A `flock` holder as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelHolder {
    /// Its pid in this pid namespace; `None` for a process this namespace cannot see (the kernel
    /// shows 0 for a holder in another pid namespace, a container's node on a shared volume).
    pub pid: Option<u32>,
    /// Holds it exclusively.
    pub exclusive: bool,
}

/// The processes holding a `flock` on the file `id`, in the order the kernel lists them; `None`
/// when the table cannot be read (not Linux, `/proc` not mounted). Waiters (`->` lines) and
/// byte-range locks (the per-artifact ones, which name no process) are left out.
pub(crate) fn flock_holders(id: FileId) -> Option<Vec<KernelHolder>> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse(&table, id))
}

fn parse(table: &str, id: FileId) -> Vec<KernelHolder> {
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(id.dev()),
        rustix::fs::minor(id.dev()),
        id.ino()
    );
    let mut holders: Vec<KernelHolder> = Vec::new();
    for line in table.lines() {
        // `1: FLOCK  ADVISORY  WRITE 30156 fe:00:811027 0 EOF`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, class, _, mode, pid, file, ..] = fields.as_slice() else {
            continue;
        };
        if *class != "FLOCK" || *file != wanted {
            continue;
        }
        let Ok(pid) = pid.parse::<i64>() else {
            continue;
        };
        let pid = u32::try_from(pid).ok().filter(|p| *p != 0);
        if pid.is_some() && holders.iter().any(|h| h.pid == pid) {
            continue;
        }
        holders.push(KernelHolder {
            pid,
            exclusive: *mode == "WRITE",
        });
    }
    holders
}

/// The effective uid `pid` runs as, from `/proc/PID/status`.
pub(crate) fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // `Uid:	real	effective	saved	filesystem`
    line.split_whitespace().nth(2)?.parse().ok()
}

/// When `pid` started, in clock ticks since boot (`/proc/PID/stat` field 22): with the pid, it
/// names one process, whatever later reuses the number.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; the start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This process's pid namespace, by the inode of `/proc/self/ns/pid`.
pub(crate) fn pid_namespace() -> Option<u64> {
    let st = rustix::fs::stat("/proc/self/ns/pid").ok()?;
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    Some(st.st_ino as u64)
}

/// This process as the holder of the lock file `id` when the kernel says it holds it but no handle
/// of this crate does: a `File::lock` the host took on `STORE/lock` itself.
pub(super) fn this_process_outside(id: FileId) -> Option<LockHolder> {
    let me = Some(std::process::id());
    flock_holders(id)?
        .iter()
        .any(|h| h.pid == me)
        .then(|| LockHolder::ThisProcess {
            purpose: "a lock this process took on the lock file itself, not through this crate".to_owned(),
        })
}

/// The processes other than this one the kernel lists as holding the lock file `id`.
pub(super) fn kernel_holders(id: FileId) -> Vec<Holder> {
    flock_holders(id)
        .unwrap_or_default()
        .into_iter()
        .filter(|h| h.pid != Some(std::process::id()))
        .map(|h| match h.pid {
            Some(pid) => Holder::of(pid),
            None => Holder::elsewhere(0, true),
        })
        .collect()
}

/// True when the kernel names `holders` and each runs as a uid other than this process's and
/// root's: no node or operator of this store among them, so replacing their lock file takes
/// nothing from the store's own users. A holder in another pid namespace cannot be told apart
/// from a node of this store in another container, so it counts as one of them.
pub(super) fn only_strangers(holders: &[KernelHolder]) -> bool {
    let me = crate::fs::euid();
    !holders.is_empty()
        && holders.iter().all(|h| {
            h.pid.is_some_and(|pid| {
                pid != std::process::id() && process_uid(pid).is_some_and(|uid| uid != me && uid != 0)
            })
        })
}

/// What the exclusive holder writes into the lock file: its pid, start time and pid namespace, so
/// that a reader names it only while that very process runs, and names a holder of another pid
/// namespace as such.
pub(super) fn record() -> String {
    let pid = std::process::id();
    format!(
        "{pid} {} {}\n",
        start_time(pid).unwrap_or(0),
        pid_namespace().unwrap_or(0)
    )
}

/// The process a lock file's `text` records, as it can be named now. A record without start time
/// (written by an earlier version) is believed only while the kernel lists that pid among the
/// file's holders (`holding`).
pub(super) fn recorded(text: &str, holding: impl FnOnce(u32) -> bool) -> Option<Holder> {
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let start: Option<u64> = fields.next().and_then(|f| f.parse().ok());
    let namespace: Option<u64> = fields.next().and_then(|f| f.parse().ok());
    Some(match (start, namespace) {
        (Some(start), Some(ns)) => {
            if ns != 0 && Some(ns) != pid_namespace() {
                Holder::elsewhere(pid, false)
            } else if start != 0 && start_time(pid) == Some(start) {
                Holder::of(pid)
            } else {
                Holder::gone(pid)
            }
        }
        _ if holding(pid) => Holder::of(pid),
        _ => Holder::gone(pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_flock_holders_of_one_file_and_nothing_else() {
        let id = FileId::from_parts(rustix::fs::makedev(0xfe, 0), 811027);
        let table = "\
1: FLOCK  ADVISORY  WRITE 30156 fe:00:811027 0 EOF
1: -> FLOCK  ADVISORY  WRITE 30200 fe:00:811027 0 EOF
2: OFDLCK ADVISORY  WRITE -1 fe:00:811027 10 10
3: FLOCK  ADVISORY  READ 30074 fe:00:8110270 0 EOF
4: FLOCK  ADVISORY  READ 30074 fe:01:811027 0 EOF
5: FLOCK  ADVISORY  READ 0 fe:00:811027 0 EOF
6: FLOCK  ADVISORY  READ 412 fe:00:811027 0 EOF
";
        let holder = |pid, exclusive| KernelHolder { pid, exclusive };
        assert_eq!(
            parse(table, id),
            vec![holder(Some(30156), true), holder(None, false), holder(Some(412), false)]
        );
    }

    #[test]
    fn sees_a_lock_this_process_holds_and_knows_this_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let file = std::fs::File::create(&path).expect("create");
        file.lock_shared().expect("lock");
        let id = FileId::of(&rustix::fs::fstat(&file).expect("fstat"));
        let pid = std::process::id();
        assert_eq!(
            flock_holders(id),
            Some(vec![KernelHolder {
                pid: Some(pid),
                exclusive: false
            }])
        );
        assert_eq!(process_uid(pid), Some(crate::fs::euid()));
        assert!(start_time(pid).is_some_and(|t| t > 0));
        assert_eq!(start_time(pid), start_time(pid));
        assert!(pid_namespace().is_some());
    }
}
