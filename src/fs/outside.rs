//! Writing a whole file outside the store ([`replace_file`]): a file in a directory that other
//! users may own or write, as node_exporter's textfile directory usually is (its own user's, or
//! shared `0777` / `1777`).
//!
//! In such a directory every name is another user's to plant first: a symbolic link or a FIFO
//! under a temporary name, a file with loose modes, a rename between two steps. So nothing there is
//! ever opened by a name another user could have made: the parent directory is opened once, after
//! a checked walk of every directory above it ([`super::walk`]), and everything else is relative to
//! that descriptor. The new content goes into a file only this process can have opened
//! (`O_TMPFILE`, or `O_CREAT | O_EXCL | O_NOFOLLOW` under an unpredictable name), and only names
//! change after that: it is linked, renamed over the target, and the target is checked to be it.
// Only the CLI (`--metrics-file`) writes outside the store so far; the library alone has no user.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::dir::FileId;
use super::refusal::PathRefusal;
use super::{euid, user_name, walk};

/// The longest file name the kernel takes (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// Random bytes in a temporary name (hex-encoded: twice as many characters).
const RANDOM_BYTES: usize = 12;
/// Fresh names tried when one is taken before giving up: only a collision of 96 random bits, or
/// a directory another user keeps full, takes more than one.
const NAME_TRIES: usize = 8;

/// Why [`replace_file`] wrote nothing, or could not make its file the one at the path. Each message
/// names the file, the directory (as resolved: links replaced by their targets) and its owner,
/// and the cause.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum OutsideWriteError {
    /// The path has no final name (`/`, `..`).
    NotAFilePath {
        /// The path as given.
        path: PathBuf,
    },
    /// The checked walk to the directory refused a directory or link on the way: another user
    /// could swap the directory for a link, or it does not exist, or is not a directory.
    Walk {
        /// The path as given.
        path: PathBuf,
        /// Why.
        refusal: PathRefusal,
    },
    /// What the path names exists and is not a regular file (a symbolic link, a FIFO, a device,
    /// a socket, a directory): it is never opened, followed or replaced.
    NotARegularFile {
        /// The path as given.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// The directory's owner.
        owner: u32,
        /// "a symbolic link", "a FIFO", "a character device"...
        kind: &'static str,
        /// The entry's owner.
        uid: u32,
    },
    /// The name the new file was given, or the target after the rename, is not the file this
    /// process wrote: another user renamed entries in the directory between the steps.
    Swapped {
        /// The path as given.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// The directory's owner.
        owner: u32,
        /// The name found not to be the new file.
        name: OsString,
    },
    /// A system call failed.
    Io {
        /// The path as given.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// The directory's owner.
        owner: u32,
        /// What was being done ("create a temporary file", "rename the new file"...).
        op: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for OutsideWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutsideWriteError::NotAFilePath { path } => write!(f, "{}: not a file path", path.display()),
            OutsideWriteError::Walk {
                path,
                refusal: PathRefusal::AncestorOwnedByOther { path: above, uid },
            } => write!(
                f,
                "the directory {} above {} is owned by {}, neither root nor this process's {}: that user could swap what lies below it for a link; give a directory whose parents are all {}",
                above.display(),
                path.display(),
                user_name(*uid),
                user_name(euid()),
                trusted_owners()
            ),
            OutsideWriteError::Walk {
                path,
                refusal: PathRefusal::AncestorWritableByOthers { path: above, mode, uid },
            } => write!(
                f,
                "the directory {} above {}, owned by {}, is writable by other users (mode {mode:04o}) and not sticky: any of them could swap what lies below it for a link; run `chmod go-w {}` or give another directory",
                above.display(),
                path.display(),
                user_name(*uid),
                above.display()
            ),
            OutsideWriteError::Walk { path, refusal } => write!(f, "{}: {refusal}", path.display()),
            OutsideWriteError::NotARegularFile {
                path,
                dir,
                owner,
                kind,
                uid,
            } => write!(
                f,
                "{} is {kind} of {}, not a regular file, in {} (owned by {}): it is never opened or replaced; give the path of a regular file, or of none yet",
                path.display(),
                user_name(*uid),
                dir.display(),
                user_name(*owner)
            ),
            OutsideWriteError::Swapped { path, dir, owner, name } => write!(
                f,
                "{}: {} is not the file just written: another user renamed entries of {} (owned by {}) meanwhile; nothing but a new file of this process's was written; give a directory where only {} can rename entries",
                path.display(),
                dir.join(name).display(),
                dir.display(),
                user_name(*owner),
                trusted_owners()
            ),
            OutsideWriteError::Io {
                path, dir, owner, op, ..
            } => write!(
                f,
                "{}: cannot {op} in {} (owned by {})",
                path.display(),
                dir.display(),
                user_name(*owner)
            ),
        }
    }
}

/// Who may own the directories above a file written outside the store: "root's", or "root's or
/// uid 1000 (node)'s".
fn trusted_owners() -> String {
    match euid() {
        0 => "root's".to_owned(),
        me => format!("root's or {}'s", user_name(me)),
    }
}

impl std::error::Error for OutsideWriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OutsideWriteError::Io { source, .. } => Some(source),
            // The refusal's own text is in the message already; its cause, if any, comes next.
            OutsideWriteError::Walk { refusal, .. } => std::error::Error::source(refusal),
            _ => None,
        }
    }
}

/// Replaces the file at `path` with one holding `bytes`, with permission bits `mode`, owned by this
/// process's uid; the directory may be another user's or shared (`0777`, `1777`), the directories
/// above it may not (each must be root's or this uid's and not writable by others unless sticky:
/// [`walk::walk`]).
///
/// - The parent directory is walked and opened once; every later step is relative to it.
/// - What `path` names is looked at without following a link and never opened: anything but a
///   regular file (a link, a FIFO, a device, a socket, a directory) is refused.
/// - The content goes into an `O_TMPFILE` file of the directory (or, where the file system has
///   none, a file created `O_EXCL | O_NOFOLLOW` under a random name), is written, `fchmod`ed to
///   `mode` and fsynced, and only then gets a name: `.<name>.<24 hex digits>.tmp`.
/// - That name is renamed over `path`, the directory is fsynced, and `path` must then be the file
///   written (device and inode); otherwise another user renamed entries meanwhile, and the call
///   fails. A temporary name still holding the file written is removed on every failure.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), OutsideWriteError> {
    replace_file_as(path, bytes, mode, Temp::Anonymous)
}

/// How the new file is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Temp {
    /// `O_TMPFILE` where the kernel and file system have it, else [`Temp::Named`].
    Anonymous,
    /// `O_CREAT | O_EXCL | O_NOFOLLOW` under a random name (tests take this way on purpose).
    #[cfg_attr(not(test), allow(dead_code))]
    Named,
}

fn replace_file_as(path: &Path, bytes: &[u8], mode: u32, how: Temp) -> Result<(), OutsideWriteError> {
    let target = Target::open(path)?;
    target.refuse_anything_but_a_file()?;
    let mut random = File::open("/dev/urandom").map_err(|e| target.io("open /dev/urandom for a temporary name", e))?;
    // The descriptor stays open to the end: while it is, no other file can get the inode
    // number `ours` compares, even if another user unlinks the new file.
    let (_file, temp, ours) = target.write_new(&mut random, bytes, mode, how)?;
    let placed = target.put_in_place(&temp, ours);
    if placed.is_err() {
        target.remove_if_ours(&temp, ours);
    }
    placed
}

/// The directory, open, and the name to replace in it.
struct Target<'a> {
    /// The path as given, for messages.
    path: &'a Path,
    /// The directory (`O_RDONLY | O_DIRECTORY`: `*at` calls and `fsync`).
    dir: OwnedFd,
    /// The directory as resolved, for messages.
    dir_path: PathBuf,
    /// The directory's owner, for messages.
    owner: u32,
    /// The final name.
    name: OsString,
}

impl<'a> Target<'a> {
    /// Walks to the parent of `path`, checking every directory above it and every link on the
    /// way, and opens it; the parent itself may be anyone's.
    fn open(path: &'a Path) -> Result<Target<'a>, OutsideWriteError> {
        let refused = |refusal| OutsideWriteError::Walk {
            path: path.to_path_buf(),
            refusal,
        };
        let (walked, name) = match walk::walk_to_parent(path) {
            Err(PathRefusal::NotAFilePath { .. }) => {
                return Err(OutsideWriteError::NotAFilePath {
                    path: path.to_path_buf(),
                });
            }
            other => other.map_err(refused)?,
        };
        let dir = walked
            .open_dir()
            .map_err(|e| refused(PathRefusal::io(&walked.path, "open", e)))?;
        Ok(Target {
            path,
            dir,
            dir_path: walked.path,
            owner: walked.stat.st_uid,
            name,
        })
    }

    fn io(&self, op: &'static str, source: impl Into<io::Error>) -> OutsideWriteError {
        OutsideWriteError::Io {
            path: self.path.to_path_buf(),
            dir: self.dir_path.clone(),
            owner: self.owner,
            op,
            source: source.into(),
        }
    }

    fn swapped(&self, name: &OsStr) -> OutsideWriteError {
        OutsideWriteError::Swapped {
            path: self.path.to_path_buf(),
            dir: self.dir_path.clone(),
            owner: self.owner,
            name: name.to_os_string(),
        }
    }

    /// The identity of `name` in the directory, a link described and not followed; `None` when
    /// there is no such entry.
    fn id_of(&self, name: &OsStr) -> io::Result<Option<FileId>> {
        match rfs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileId::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a target that exists and is not a regular file, by `lstat` alone.
    fn refuse_anything_but_a_file(&self) -> Result<(), OutsideWriteError> {
        let st = match rfs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io("look at the file", e)),
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => return Ok(()),
            FileType::Symlink => "a symbolic link",
            FileType::Fifo => "a FIFO",
            FileType::CharacterDevice => "a character device",
            FileType::BlockDevice => "a block device",
            FileType::Socket => "a socket",
            FileType::Directory => "a directory",
            FileType::Unknown => "a special file",
        };
        Err(OutsideWriteError::NotARegularFile {
            path: self.path.to_path_buf(),
            dir: self.dir_path.clone(),
            owner: self.owner,
            kind,
            uid: st.st_uid,
        })
    }

    /// A fresh temporary name, `.<name>.<24 hex digits>.tmp` (the name shortened to fit).
    fn temp_name(&self, random: &mut File) -> Result<OsString, OutsideWriteError> {
        let mut bytes = [0u8; RANDOM_BYTES];
        random
            .read_exact(&mut bytes)
            .map_err(|e| self.io("read /dev/urandom for a temporary name", e))?;
        let suffix = format!(".{}.tmp", hex::encode(bytes));
        let name = self.name.as_bytes();
        let keep = name.len().min(NAME_MAX - 1 - suffix.len());
        let mut temp = Vec::with_capacity(NAME_MAX);
        temp.push(b'.');
        temp.extend_from_slice(&name[..keep]);
        temp.extend_from_slice(suffix.as_bytes());
        Ok(OsString::from_vec(temp))
    }

    /// Creates the new file, writes `bytes` into it, sets `mode` and fsyncs it, and gives it a
    /// fresh temporary name; returns it open, with that name and its identity.
    fn write_new(
        &self,
        random: &mut File,
        bytes: &[u8],
        mode: u32,
        how: Temp,
    ) -> Result<(File, OsString, FileId), OutsideWriteError> {
        if how == Temp::Anonymous
            && let Some(file) = self.open_anonymous()?
        {
            // Until it is linked the file has no name: a failure leaves nothing behind.
            let ours = self.id_of_open(&file)?;
            let file = self.fill(file, bytes, mode)?;
            if let Some(temp) = self.link_anonymous(&file, random)? {
                return Ok((file, temp, ours));
            }
        }
        let (file, temp) = self.create_named(random)?;
        // fstat of a descriptor just opened does not fail in practice; if it did, this process
        // could not tell the name holds its file, and would leave it.
        let ours = self.id_of_open(&file)?;
        match self.fill(file, bytes, mode) {
            Ok(file) => Ok((file, temp, ours)),
            Err(e) => {
                self.remove_if_ours(&temp, ours);
                Err(e)
            }
        }
    }

    /// The identity of the new file, from its descriptor.
    fn id_of_open(&self, file: &File) -> Result<FileId, OutsideWriteError> {
        rfs::fstat(file)
            .map(|st| FileId::of(&st))
            .map_err(|e| self.io("stat the new file", e))
    }

    /// An `O_TMPFILE` file in the directory: it has no name, so nobody else can have opened it;
    /// `None` where the kernel or the file system has no `O_TMPFILE`.
    fn open_anonymous(&self) -> Result<Option<File>, OutsideWriteError> {
        super::unnamed::open_unnamed(&self.dir, 0o600).map_err(|e| self.io("create a temporary file", e))
    }

    /// Links the `O_TMPFILE` file under a fresh temporary name: through `/proc/self/fd`, or with
    /// `AT_EMPTY_PATH` where `/proc` is not mounted. `linkat` never follows or replaces what the
    /// new name holds: a name taken (by anyone) is `EEXIST`, and another is tried. `None` when the
    /// file cannot be linked at all (no `/proc`, and `AT_EMPTY_PATH` not permitted).
    fn link_anonymous(&self, file: &File, random: &mut File) -> Result<Option<OsString>, OutsideWriteError> {
        for _ in 0..NAME_TRIES {
            let temp = self.temp_name(random)?;
            match super::unnamed::link_unnamed(file, &self.dir, &temp) {
                Ok(true) => return Ok(Some(temp)),
                Ok(false) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io("link the new file into the directory", e)),
            }
        }
        Err(self.io(
            "find a free temporary name",
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// Creates a new file under a fresh random name, exclusively and without following a link:
    /// whatever is found under the name (a link, a FIFO, anyone's file) is `EEXIST`, never opened.
    fn create_named(&self, random: &mut File) -> Result<(File, OsString), OutsideWriteError> {
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
        for _ in 0..NAME_TRIES {
            let temp = self.temp_name(random)?;
            match rfs::openat(&self.dir, &temp, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((File::from(fd), temp)),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(self.io("create a temporary file", e)),
            }
        }
        Err(self.io(
            "find a free temporary name",
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// Writes `bytes`, sets `mode` (not subject to the umask, as a create mode would be) and
    /// fsyncs.
    fn fill(&self, mut file: File, bytes: &[u8], mode: u32) -> Result<File, OutsideWriteError> {
        file.write_all(bytes).map_err(|e| self.io("write the new file", e))?;
        rfs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|e| self.io("set the new file's mode", e))?;
        rfs::fsync(&file).map_err(|e| self.io("fsync the new file", e))?;
        Ok(file)
    }

    /// Renames `temp` over the target and fsyncs the directory; before and after, the names must
    /// hold the file written (`ours`).
    fn put_in_place(&self, temp: &OsStr, ours: FileId) -> Result<(), OutsideWriteError> {
        let is_ours = |name: &OsStr| -> Result<bool, OutsideWriteError> {
            Ok(self.id_of(name).map_err(|e| self.io("look at the new file", e))? == Some(ours))
        };
        if !is_ours(temp)? {
            return Err(self.swapped(temp));
        }
        rfs::renameat(&self.dir, temp, &self.dir, &self.name)
            .map_err(|e| self.io("rename the new file over the old", e))?;
        rfs::fsync(&self.dir).map_err(|e| self.io("fsync the directory", e))?;
        if !is_ours(&self.name)? {
            return Err(self.swapped(&self.name));
        }
        Ok(())
    }

    /// Unlinks `temp` if it still holds the file written; what another user put under the name
    /// meanwhile is left alone (as far as the check can tell, in a directory they may rename in).
    fn remove_if_ours(&self, temp: &OsStr, ours: FileId) {
        if matches!(self.id_of(temp), Ok(Some(id)) if id == ours) {
            let _ = rfs::unlinkat(&self.dir, temp, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::sync::mpsc;
    use std::time::Duration;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// `replace_file_as` in a thread: a call that opened a FIFO would block forever, so it must
    /// answer within ten seconds.
    fn promptly(path: &Path, how: Temp) -> Result<(), OutsideWriteError> {
        let (tx, rx) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(replace_file_as(&path, b"new\n", 0o644, how));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("answered within 10 s: nothing waits on a FIFO")
    }

    #[test]
    fn writes_then_replaces_a_regular_file_with_a_new_one_of_its_mode() {
        for how in [Temp::Anonymous, Temp::Named] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("node.prom");
            replace_file_as(&path, b"first\n", 0o644, how).expect("write");
            assert_eq!(std::fs::read(&path).expect("read"), b"first\n");
            let before = std::fs::symlink_metadata(&path).expect("stat");
            assert!(before.is_file());
            assert_eq!(before.permissions().mode() & 0o7777, 0o644, "{how:?}");
            assert_eq!(before.uid(), euid());
            // The old file, kept open elsewhere, is replaced, not written into.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
            std::fs::hard_link(&path, dir.path().join("kept")).expect("link");
            replace_file_as(&path, b"second, longer\n", 0o640, how).expect("replace");
            let after = std::fs::symlink_metadata(&path).expect("stat");
            assert_eq!(std::fs::read(&path).expect("read"), b"second, longer\n");
            assert_eq!(
                after.permissions().mode() & 0o7777,
                0o640,
                "the mode given, whatever was there"
            );
            assert_ne!(after.ino(), before.ino(), "a new inode");
            assert_eq!(std::fs::read(dir.path().join("kept")).expect("read"), b"first\n");
            assert_eq!(
                names(dir.path()),
                ["kept", "node.prom"],
                "no temporary file left ({how:?})"
            );
        }
    }

    #[test]
    fn refuses_a_link_a_fifo_and_a_directory_at_the_name_promptly_and_leaves_them() {
        for how in [Temp::Anonymous, Temp::Named] {
            let dir = tempfile::tempdir().expect("tempdir");
            let secret = dir.path().join("secret");
            std::fs::write(&secret, b"secret\n").expect("write");
            let link = dir.path().join("link.prom");
            symlink(&secret, &link).expect("symlink");
            let fifo = dir.path().join("fifo.prom");
            rfs::mknodat(rfs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o666), 0).expect("mkfifo");
            let subdir = dir.path().join("dir.prom");
            std::fs::create_dir(&subdir).expect("mkdir");
            for (path, kind) in [(&link, "a symbolic link"), (&fifo, "a FIFO"), (&subdir, "a directory")] {
                let err = promptly(path, how).expect_err("refused");
                assert!(
                    matches!(&err, OutsideWriteError::NotARegularFile { kind: k, .. } if *k == kind),
                    "{err:?}"
                );
                let text = err.to_string();
                assert!(
                    text.contains(&path.display().to_string()) && text.contains(kind),
                    "names the path and what it is: {text}"
                );
                assert!(text.contains(&user_name(euid())), "names the directory's owner: {text}");
            }
            assert_eq!(std::fs::read(&secret).expect("read"), b"secret\n");
            assert_eq!(std::fs::read_link(&link).expect("still a link"), secret);
            let fifo_type = std::fs::symlink_metadata(&fifo).expect("stat").file_type();
            assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo_type));
            assert!(subdir.is_dir());
            assert_eq!(
                names(dir.path()),
                ["dir.prom", "fifo.prom", "link.prom", "secret"],
                "no temporary file left ({how:?})"
            );
        }
    }

    #[test]
    fn a_device_given_as_the_path_is_refused_and_stays_a_device() {
        let err = replace_file(Path::new("/dev/null"), b"x", 0o644).expect_err("refused");
        assert!(err.to_string().starts_with("/dev/null is a character device"), "{err}");
        let ty = std::fs::symlink_metadata("/dev/null").expect("stat").file_type();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&ty));
    }

    #[test]
    fn a_missing_directory_or_a_path_without_a_name_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent/node.prom");
        let err = replace_file(&path, b"x", 0o644).expect_err("no directory");
        assert!(
            matches!(
                &err,
                OutsideWriteError::Walk {
                    refusal: PathRefusal::Missing { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("absent"), "{err}");
        let err = replace_file(Path::new("/"), b"x", 0o644).expect_err("no name");
        assert!(matches!(err, OutsideWriteError::NotAFilePath { .. }), "{err:?}");
    }

    #[test]
    fn temporary_names_are_fresh_fit_name_max_and_look_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = "n".repeat(NAME_MAX);
        let path = dir.path().join(&long);
        let target = Target::open(&path).expect("open");
        let mut random = File::open("/dev/urandom").expect("urandom");
        let a = target.temp_name(&mut random).expect("name");
        let b = target.temp_name(&mut random).expect("name");
        assert_ne!(a, b);
        for t in [&a, &b] {
            let t = t.to_str().expect("ascii");
            assert!(
                t.len() <= NAME_MAX && t.starts_with(".nnn") && t.ends_with(".tmp"),
                "{t}"
            );
        }
        replace_file(&path, b"long\n", 0o644).expect("a name of NAME_MAX bytes");
        assert_eq!(names(dir.path()), [long]);
    }

    #[test]
    fn a_temporary_name_swapped_before_the_rename_fails_naming_the_directory_and_moves_nothing() {
        for how in [Temp::Anonymous, Temp::Named] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("node.prom");
            std::fs::write(&path, b"old\n").expect("write");
            let secret = dir.path().join("secret");
            std::fs::write(&secret, b"secret\n").expect("write");
            let target = Target::open(&path).expect("open");
            let mut random = File::open("/dev/urandom").expect("urandom");
            let (_file, temp, ours) = target.write_new(&mut random, b"new\n", 0o644, how).expect("write");
            let temp_path = dir.path().join(&temp);
            assert_eq!(std::fs::read(&temp_path).expect("read"), b"new\n");
            // Another user renames the new file away and plants a link under its name.
            std::fs::rename(&temp_path, dir.path().join("moved")).expect("rename");
            symlink(&secret, &temp_path).expect("symlink");
            let err = target.put_in_place(&temp, ours).expect_err("swapped");
            assert!(
                matches!(&err, OutsideWriteError::Swapped { name, .. } if *name == temp),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("{} (owned by {})", dir.path().display(), user_name(euid()))),
                "names the directory and its owner: {text}"
            );
            target.remove_if_ours(&temp, ours);
            assert_eq!(std::fs::read_link(&temp_path).expect("their link, left"), secret);
            assert_eq!(std::fs::read(&path).expect("read"), b"old\n", "the target is untouched");
            assert_eq!(std::fs::read(&secret).expect("read"), b"secret\n");
            // Put back, the name holds the new file again, and a failure removes it.
            std::fs::remove_file(&temp_path).expect("rm");
            std::fs::rename(dir.path().join("moved"), &temp_path).expect("rename");
            target.remove_if_ours(&temp, ours);
            assert_eq!(names(dir.path()), ["node.prom", "secret"], "{how:?}");
        }
    }

    #[test]
    fn a_directory_above_that_others_can_write_is_refused_naming_it_and_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        std::fs::create_dir_all(open.join("textfile")).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let path = open.join("textfile/node.prom");
        let err = replace_file(&path, b"x", 0o644).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "the directory {} above {}, owned by {}, is writable by other users (mode 0777)",
                open.display(),
                path.display(),
                user_name(euid())
            )),
            "{text}"
        );
        assert!(!path.exists());
        // The same directory as the file's own is fine: nothing above it can be swapped.
        replace_file(&open.join("node.prom"), b"x\n", 0o644).expect("written");
        assert_eq!(std::fs::read(open.join("node.prom")).expect("read"), b"x\n");
    }
}
