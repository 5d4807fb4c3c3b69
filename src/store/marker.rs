//! The marker that makes a directory a store: a `CACHEDIR.TAG` (the Cache Directory Tagging
//! convention, which cargo writes into `target/` and which restic, borg and GNU tar honour, so
//! backups skip the store), written before anything else, and naming this crate.
//!
//! Nothing is written into or deleted from a directory that is not provably a store: one with this
//! marker, an empty one (which becomes a store), or one holding nothing but what an earlier
//! version of this crate wrote before markers existed (`lock`, artifact names, temp files) and at
//! least one artifact whose trailer verifies and names it, which is adopted. Names alone prove
//! nothing: a user's file called `lock` or `.tmp-notes` in an otherwise empty directory is never
//! touched. A home directory, `/`, or another program's cache is refused.

use std::ffi::OsString;
use std::io::{self, Read, Write};

use rustix::fs::{FileType, OFlags};

use super::{LOCK_NAME, TEMP_PREFIX};
use crate::fs::dir::Dir;
use crate::key::ArtifactKey;
use std::fmt;

/// The marker's file name.
pub(crate) const MARKER_NAME: &str = "CACHEDIR.TAG";

/// The convention's signature: the first line of every cache directory tag.
const SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
/// The line that says the tag is this crate's (another program's cache has the same signature).
const OURS: &str = "# This file is a cache directory tag created by wasm-node-cache.";

/// What the marker holds.
const CONTENT: &str = "Signature: 8a477f597d28d172789f06886806bc55
# This file is a cache directory tag created by wasm-node-cache.
# The directory holds precompiled WebAssembly artifacts, each recompiled when missing.
# For information about cache directory tags, see https://bford.info/cachedir/
";

/// What a directory is, by its marker and its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// It holds this crate's marker.
    Marked,
    /// No marker and nothing else: a new store.
    Empty,
    /// No marker, only what an earlier version of this crate wrote, and an artifact whose trailer
    /// verifies: a store made before markers, to be adopted.
    Unmarked,
    /// Not a store.
    Foreign(NotAStore),
}

/// Most artifact names whose trailers are read for proof before a directory is judged unproven.
const PROOF_TRIES: usize = 8;

/// Reads what `dir` is. `verifies` reads the trailer of the artifact named so and says whether it
/// authenticates and names that file. Never writes.
pub(crate) fn standing(dir: &Dir, verifies: impl Fn(&ArtifactKey) -> bool) -> io::Result<Standing> {
    let mut names = dir.names()?;
    if names.iter().any(|n| n == MARKER_NAME) {
        return read_marker(dir);
    }
    if names.is_empty() {
        return Ok(Standing::Empty);
    }
    names.sort();
    let foreign: Vec<&OsString> = names.iter().filter(|n| !written_by_a_store(n)).collect();
    if let Some(first) = foreign.first() {
        return Ok(Standing::Foreign(NotAStore::ForeignEntries {
            example: first.to_string_lossy().into_owned(),
            count: foreign.len(),
        }));
    }
    let proven = names
        .iter()
        .filter_map(|n| n.to_str().and_then(ArtifactKey::from_file_name))
        .take(PROOF_TRIES)
        .any(|key| verifies(&key));
    Ok(if proven {
        Standing::Unmarked
    } else {
        Standing::Foreign(NotAStore::Unproven {
            example: names[0].to_string_lossy().into_owned(),
        })
    })
}

/// Names an earlier version of this crate wrote into a store.
fn written_by_a_store(name: &OsString) -> bool {
    name.to_str()
        .is_some_and(|n| n == LOCK_NAME || n.starts_with(TEMP_PREFIX) || ArtifactKey::from_file_name(n).is_some())
}

/// Checks the marker: a regular file (never followed as a link) that begins with the signature
/// and names this crate.
fn read_marker(dir: &Dir) -> io::Result<Standing> {
    let (fd, st) = match dir.open_path(MARKER_NAME) {
        Ok(found) => found,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(Standing::Foreign(NotAStore::MarkerNotAFile));
        }
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(Standing::Foreign(NotAStore::MarkerNotAFile));
    }
    let file = dir.reopen(
        MARKER_NAME,
        &fd,
        &st,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
    )?;
    let mut text = String::new();
    // Our marker is a few hundred bytes; more says nothing more.
    let mut bytes = Vec::new();
    file.take(4096).read_to_end(&mut bytes)?;
    text.push_str(&String::from_utf8_lossy(&bytes));
    let mut lines = text.lines();
    let ours = lines.next() == Some(SIGNATURE) && text.lines().any(|l| l == OURS);
    Ok(if ours {
        Standing::Marked
    } else {
        Standing::Foreign(NotAStore::OtherProgramsTag)
    })
}

/// Why a non-empty directory is not taken for a store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAStore {
    /// It holds entries a store never holds, and no marker.
    ForeignEntries {
        /// One of them (the first by name).
        example: String,
        /// How many such entries there are.
        count: usize,
    },
    /// Its `CACHEDIR.TAG` was written by another program (a cargo `target/`, say).
    OtherProgramsTag,
    /// Its `CACHEDIR.TAG` is not a regular file.
    MarkerNotAFile,
    /// No marker, and only names a store uses (`lock`, `.tmp-*`, artifact names) but no artifact
    /// whose trailer verifies: a user's `lock` or `.tmp-notes` is not proof of a store.
    Unproven {
        /// One of its entries (the first by name).
        example: String,
    },
}

impl fmt::Display for NotAStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAStore::ForeignEntries { example, count: 1 } => write!(
                f,
                "it holds {example:?}, which a store never holds, and no CACHEDIR.TAG of wasm-node-cache; give an empty or new directory"
            ),
            NotAStore::ForeignEntries { example, count } => write!(
                f,
                "it holds {example:?} and {} other entries a store never holds, and no CACHEDIR.TAG of wasm-node-cache; give an empty or new directory",
                count - 1
            ),
            NotAStore::OtherProgramsTag => {
                f.write_str("its CACHEDIR.TAG was written by another program: it is another program's cache")
            }
            NotAStore::MarkerNotAFile => f.write_str("its CACHEDIR.TAG is not a regular file"),
            NotAStore::Unproven { example } => write!(
                f,
                "it holds {example:?} but no CACHEDIR.TAG of wasm-node-cache and no artifact whose trailer verifies, so it is not provably a store; give an empty or new directory"
            ),
        }
    }
}

impl std::error::Error for NotAStore {}

/// Writes the marker, the directory fsynced after. Where the kernel allows it, the marker is
/// written unnamed and linked whole as `CACHEDIR.TAG` ([`Dir::link_new`]): a start killed
/// meanwhile leaves no temporary file, which would make the directory one that holds only a
/// temporary name and no proof of a store. Elsewhere a temporary file is written, fsynced and
/// renamed into place. Threads and processes making one store at once write the same bytes; the
/// first link, or any rename, wins. No lock is held yet (the marker comes first), so a sweep of
/// leftover temporary files may remove a temporary one before its rename: [`Dir::write_new`]
/// makes it again.
pub(crate) fn write(dir: &Dir) -> io::Result<()> {
    let fill = |file: &mut std::fs::File| {
        file.write_all(CONTENT.as_bytes())?;
        file.sync_all()
    };
    match dir.link_new(MARKER_NAME, 0o444, fill) {
        Ok(true) => {}
        // Another start's marker, linked first: the same bytes.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Ok(false) => {
            dir.write_new(super::publish::temp_name, OFlags::WRONLY, 0o444, fill, |temp, _| {
                dir.rename(temp, MARKER_NAME)
            })?;
        }
        Err(e) => return Err(e),
    }
    dir.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Owner;

    fn open(path: &std::path::Path) -> Dir {
        Dir::open(path, true, Owner::Me).expect("open")
    }

    #[test]
    fn empty_marked_unmarked_and_foreign_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = open(&tmp.path().join("s"));
        assert_eq!(standing(&dir, |_| true).expect("read"), Standing::Empty);
        write(&dir).expect("write");
        assert_eq!(standing(&dir, |_| false).expect("read"), Standing::Marked);
        let text = std::fs::read_to_string(tmp.path().join("s").join(MARKER_NAME)).expect("read");
        assert!(
            text.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"),
            "{text}"
        );

        let old = open(&tmp.path().join("old"));
        std::fs::write(tmp.path().join("old/lock"), b"").expect("lock");
        std::fs::write(tmp.path().join("old/.tmp-1-2-3.part"), b"").expect("temp");
        let artifact = format!("{}-{}.cwasm", "ab".repeat(16), "cd".repeat(32));
        std::fs::write(tmp.path().join("old").join(&artifact), b"").expect("artifact");
        assert_eq!(standing(&old, |_| true).expect("read"), Standing::Unmarked);
        // The same names with no artifact that verifies: not provably a store.
        assert_eq!(
            standing(&old, |_| false).expect("read"),
            Standing::Foreign(NotAStore::Unproven {
                example: ".tmp-1-2-3.part".into()
            })
        );
        let notes = open(&tmp.path().join("notes"));
        std::fs::write(tmp.path().join("notes/lock"), b"my lock").expect("lock");
        assert_eq!(
            standing(&notes, |_| true).expect("read"),
            Standing::Foreign(NotAStore::Unproven { example: "lock".into() })
        );

        let home = open(&tmp.path().join("home"));
        for name in [".bashrc", "notes.txt"] {
            std::fs::write(tmp.path().join("home").join(name), b"x").expect("file");
        }
        assert_eq!(
            standing(&home, |_| true).expect("read"),
            Standing::Foreign(NotAStore::ForeignEntries {
                example: ".bashrc".into(),
                count: 2
            })
        );

        let cargo = open(&tmp.path().join("target"));
        std::fs::write(
            tmp.path().join("target").join(MARKER_NAME),
            "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by cargo.\n",
        )
        .expect("tag");
        assert_eq!(
            standing(&cargo, |_| true).expect("read"),
            Standing::Foreign(NotAStore::OtherProgramsTag)
        );
    }
}
