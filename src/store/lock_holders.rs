//! Who holds a lock file right now, from the kernel's own table (`/proc/locks`), so that an
//! operator is shown the process actually in the way, not only the pid the last exclusive holder
//! wrote into the file (another tool's `flock` writes nothing, and that pid may have exited).

use crate::fs::dir::FileId;

/// The processes holding a `flock` on the file `id`, as `(pid, exclusive)`, in the order the
/// kernel lists them; `None` when the table cannot be read (not Linux, `/proc` not mounted).
/// Waiters (`->` lines) and holders in another pid namespace (pid 0 or -1) are left out, as are
/// byte-range locks (the per-artifact ones, which name no process).
pub(crate) fn flock_holders(id: FileId) -> Option<Vec<(u32, bool)>> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse(&table, id))
}

fn parse(table: &str, id: FileId) -> Vec<(u32, bool)> {
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(id.dev()),
        rustix::fs::minor(id.dev()),
        id.ino()
    );
    let mut holders = Vec::new();
    for line in table.lines() {
        // `1: FLOCK  ADVISORY  WRITE 30156 fe:00:811027 0 EOF`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, class, _, mode, pid, file, ..] = fields.as_slice() else {
            continue;
        };
        if *class != "FLOCK" || *file != wanted {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == 0 || holders.iter().any(|(p, _)| *p == pid) {
            continue;
        }
        holders.push((pid, *mode == "WRITE"));
    }
    holders
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
        assert_eq!(parse(table, id), vec![(30156, true), (412, false)]);
    }

    #[test]
    fn sees_a_lock_this_process_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let file = std::fs::File::create(&path).expect("create");
        file.lock_shared().expect("lock");
        let id = FileId::of(&rustix::fs::fstat(&file).expect("fstat"));
        let pid = std::process::id();
        assert_eq!(flock_holders(id), Some(vec![(pid, false)]));
    }
}
