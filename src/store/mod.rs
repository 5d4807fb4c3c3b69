//! The on-disk store: one directory of verified artifacts, a lock file, nothing else.
//!
//! ```text
//! <store>/lock                                  advisory lock (last exclusive holder's pid)
//! <store>/<fingerprint>-<source sha256>.cwasm   artifact = wasmtime payload + trailer
//! <store>/.tmp-*                                an unfinished write; removed under the exclusive lock
//! ```
//!
//! Invariants: an artifact is published by renaming a fully written, fsynced temporary file over
//! its final name, then fsyncing the directory; a published file is never written again (a
//! replacement is a new file renamed over it; removal is an unlink), so a mapping of it stays valid.

pub mod fsutil;
pub mod lock;
pub mod maintenance;
mod publish;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::artifact::{self, ArtifactError, Sealer, TRAILER_LEN, Trailer};
use crate::key::{ArtifactKey, Fingerprint, Hash32};
pub use lock::{LockError, LockGuard, LockKind, LockState, StoreLock};
pub use publish::WriteFault;

/// Prefix of temporary files; never a valid artifact name.
pub const TEMP_PREFIX: &str = ".tmp-";

/// The result of looking an artifact up.
pub enum Lookup {
    /// Verified and deserialized.
    Hit(Component),
    /// No artifact under this key.
    Absent,
    /// An artifact exists under this key but was refused; the reason names the cause.
    Rejected(String),
}

/// One file in the store, as listed by [`Store::entries`].
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Key parsed from the file name.
    pub key: ArtifactKey,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time (the publish time).
    pub modified: Option<SystemTime>,
}

/// An open store directory for one engine fingerprint.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    fingerprint: Fingerprint,
    sealer: Sealer,
    lock: StoreLock,
    fault: WriteFault,
}

impl Store {
    /// Opens (creating if needed, owner-only) the store at `dir`. Fails when the directory cannot be
    /// created or is not trusted (owned by another user, or writable by group or others).
    ///
    /// If `dir` is a symbolic link it is followed, and the directory it resolves to must pass the
    /// same ownership and permission checks; links *inside* the store are never followed.
    pub fn open(dir: &Path, fingerprint: Fingerprint, sealer: Sealer) -> anyhow::Result<Store> {
        use anyhow::Context;
        if !dir.exists() {
            fsutil::create_private_dir(dir)
                .with_context(|| format!("cannot create store directory {}", dir.display()))?;
        }
        if let Some(reason) = fsutil::untrusted_reason(dir)
            .with_context(|| format!("cannot inspect store directory {}", dir.display()))?
        {
            anyhow::bail!("refusing to use the store: {reason}");
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            fingerprint,
            sealer,
            lock: StoreLock::new(dir.join("lock")),
            fault: WriteFault::None,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine fingerprint this store handle loads and writes.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The store's lock.
    pub fn lock(&self) -> &StoreLock {
        &self.lock
    }

    /// Injects a write failure, for tests of disk-full and read-only handling.
    #[doc(hidden)]
    pub fn set_write_fault(&mut self, fault: WriteFault) {
        self.fault = fault;
    }

    /// The key of `source` under this store's fingerprint.
    pub fn key(&self, source: &Hash32) -> ArtifactKey {
        ArtifactKey {
            source: *source,
            fingerprint: self.fingerprint,
        }
    }

    /// Path of the artifact for `source`.
    pub fn path_of(&self, source: &Hash32) -> PathBuf {
        self.dir.join(self.key(source).file_name())
    }

    /// Looks up, verifies and deserializes the artifact for `source`. Never reads the source binary.
    pub fn load(&self, engine: &Engine, source: &Hash32) -> Lookup {
        match self.open_verified(source, &mut Vec::new()) {
            Ok(verified) => verified.deserialize(engine),
            Err(lookup) => lookup,
        }
    }

    /// The first half of [`Store::load`]: open and fully verify, without wasmtime. Split out so that a
    /// start-up can checksum on one core while it deserializes on another. `scratch` is a buffer
    /// reused across calls on one thread.
    pub(crate) fn open_verified(&self, source: &Hash32, scratch: &mut Vec<u8>) -> Result<Verified, Lookup> {
        let path = self.path_of(source);
        let file = match fsutil::open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Lookup::Absent),
            Err(e) if fsutil::is_symlink_refusal(&e) => {
                return Err(Lookup::Rejected(
                    "is a symbolic link; links in the store are never followed".into(),
                ));
            }
            Err(e) => return Err(Lookup::Rejected(format!("cannot open: {e}"))),
        };
        let key = self.key(source);
        let verified = if proc_fd_available() {
            // wasmtime will map the file itself through /proc/self/fd, so our copy of the bytes is
            // needed only for the checks.
            verified_stream(&file, &key, &self.sealer, scratch).map(|trailer| (None, trailer))
        } else {
            verified_map(&file, &key, &self.sealer).map(|(map, trailer)| (Some(map), trailer))
        };
        match verified {
            Ok((map, trailer)) => Ok(Verified { file, map, trailer }),
            Err(reason) => Err(Lookup::Rejected(reason)),
        }
    }

    /// Fully checks the artifact for `key` without deserializing it, exactly as a start-up does:
    /// the `verify` subcommand.
    pub fn check(&self, key: &ArtifactKey) -> Result<Trailer, String> {
        let file = self.open_artifact(key)?;
        verified_stream(&file, key, &self.sealer, &mut Vec::new())
    }

    /// Reads only the trailer of the artifact for `key` (the `status` view): no payload hashing.
    pub fn read_trailer(&self, key: &ArtifactKey) -> Result<Trailer, String> {
        let file = self.open_artifact(key)?;
        read_trailer(&file, &self.sealer).map(|(_, t)| t)
    }

    fn open_artifact(&self, key: &ArtifactKey) -> Result<std::fs::File, String> {
        fsutil::open_no_follow(&self.dir.join(key.file_name())).map_err(|e| format!("cannot open: {e}"))
    }

    /// Atomically publishes `payload` as the artifact for `source`.
    pub fn publish(&self, source: &Hash32, payload: &[u8]) -> std::io::Result<PathBuf> {
        let key = self.key(source);
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let trailer = artifact::encode_trailer(payload, &key, &self.sealer, created);
        publish::publish(&self.dir, &key.file_name(), &[payload, &trailer], &self.fault)
    }

    /// Every artifact file in the store, of any fingerprint, sorted by name. Temporary files, the
    /// lock and unrelated files are not listed; symbolic links are listed so they can be removed.
    pub fn entries(&self) -> std::io::Result<Vec<StoredEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(key) = entry.file_name().to_str().and_then(ArtifactKey::from_file_name) else {
                continue;
            };
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                // Unlinked between the listing and the stat (a prune elsewhere): not an entry.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(StoredEntry {
                key,
                path: entry.path(),
                size: meta.len(),
                modified: meta.modified().ok(),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes leftover temporary files. Call only while holding the exclusive lock, or a writer's
    /// unfinished file could be removed under it. Returns how many were removed.
    pub fn remove_temp_files(&self, _exclusive: &LockGuard) -> std::io::Result<usize> {
        debug_assert_eq!(_exclusive.kind(), LockKind::Exclusive);
        let mut removed = 0;
        for path in self.temp_files()? {
            std::fs::remove_file(path)?;
            removed += 1;
        }
        if removed > 0 {
            fsutil::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Leftover temporary files (unfinished writes).
    pub fn temp_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    /// Unlinks one artifact (never truncates it: a process may have it mapped). Call only while
    /// holding the exclusive lock.
    pub fn remove(&self, entry: &StoredEntry, _exclusive: &LockGuard) -> std::io::Result<()> {
        debug_assert_eq!(_exclusive.kind(), LockKind::Exclusive);
        std::fs::remove_file(&entry.path)
    }
}

/// The length of `file` if it is a regular file of a length an artifact can have.
fn checked_len(file: &std::fs::File) -> Result<u64, String> {
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let len = meta.len();
    artifact::check_file_len(len).map_err(|e| e.to_string())?;
    Ok(len)
}

fn map_file(file: &std::fs::File) -> Result<memmap2::Mmap, String> {
    checked_len(file)?;
    // SAFETY: the mapping is read-only and private to this function's caller. Its contents can
    // only change under us if another process writes the file in place, which this crate never
    // does (publish is rename, removal is unlink); an attacker who can rewrite a mapped file in
    // place is out of scope (SECURITY.md). The length was checked above, so no mapping of an
    // empty or absurdly large file is attempted.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("cannot map: {e}"))
}

fn verified_map(file: &std::fs::File, key: &ArtifactKey, sealer: &Sealer) -> Result<(memmap2::Mmap, Trailer), String> {
    let map = map_file(file)?;
    let trailer = artifact::verify(&map, key, sealer).map_err(|e| e.to_string())?;
    Ok((map, trailer))
}

/// Reads and authenticates the trailer alone (positional read: the descriptor's offset is left at
/// the start for streaming the payload). Returns the file length too.
fn read_trailer(file: &std::fs::File, sealer: &Sealer) -> Result<(u64, Trailer), String> {
    use std::os::unix::fs::FileExt;
    let len = checked_len(file)?;
    let mut t = [0u8; TRAILER_LEN];
    // `checked_len` guarantees len > TRAILER_LEN.
    file.read_exact_at(&mut t, len - TRAILER_LEN as u64)
        .map_err(|e| format!("cannot read: {e}"))?;
    let trailer = artifact::decode_trailer_bytes(&t, len, sealer).map_err(|e| e.to_string())?;
    Ok((len, trailer))
}

/// Size of the buffer a payload is streamed through: small enough to stay in the core's L2 cache
/// and to come from the heap rather than from a fresh mapping in a new process.
const STREAM_CHUNK: usize = 64 * 1024;

/// Full verification of `file` for a start-up's hits: the trailer read on its own, then the
/// payload streamed through `buf` in [`STREAM_CHUNK`] pieces into the checksum. The checks are
/// `artifact::verify`'s.
///
/// Streaming is measured, not assumed (README, Performance): mapping to check contends with the
/// concurrent `deserialize_file` for the address-space lock, and reading a whole artifact into one
/// buffer costs fresh pages in a new process (a 1 MB buffer is its own mapping under glibc); a
/// 64 KiB buffer avoids both. Whole-file read was 4.6 ms for a fresh process's start-up on the
/// real corpus, streaming 3.7 ms, and 1.62 against 1.58 ms in a warm process.
fn verified_stream(
    file: &std::fs::File,
    key: &ArtifactKey,
    sealer: &Sealer,
    buf: &mut Vec<u8>,
) -> Result<Trailer, String> {
    use std::io::Read;
    let (_, trailer) = read_trailer(file, sealer)?;
    artifact::check_binding(&trailer, key).map_err(|e| e.to_string())?;
    buf.resize(STREAM_CHUNK, 0);
    let mut hasher = blake3::Hasher::new();
    let mut payload = file.take(trailer.payload_len);
    let mut seen: u64 = 0;
    loop {
        let n = payload.read(buf).map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        seen += n as u64;
    }
    if seen != trailer.payload_len {
        return Err(format!(
            "{seen} payload bytes read of {}: file changed while being read",
            trailer.payload_len
        ));
    }
    if *hasher.finalize().as_bytes() != trailer.payload_checksum {
        return Err(ArtifactError::PayloadChecksum.to_string());
    }
    Ok(trailer)
}

/// Whether `/proc/self/fd` can re-open an open descriptor (Linux with procfs mounted).
fn proc_fd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cfg!(target_os = "linux") && Path::new("/proc/self/fd").is_dir())
}

/// An artifact that passed every check, still open: the descriptor is what wasmtime will map, so the
/// bytes it loads are the bytes that were checked. `map` is kept only for the copy path (no /proc).
pub(crate) struct Verified {
    file: std::fs::File,
    map: Option<memmap2::Mmap>,
    trailer: Trailer,
}

impl Verified {
    /// The second half of [`Store::load`].
    pub(crate) fn deserialize(self, engine: &Engine) -> Lookup {
        match deserialize(engine, &self.file, self.map.as_ref(), &self.trailer) {
            Ok(c) => Lookup::Hit(c),
            Err(e) => Lookup::Rejected(format!("wasmtime refused the verified artifact: {e:#}")),
        }
    }
}

fn deserialize(
    engine: &Engine,
    file: &std::fs::File,
    map: Option<&memmap2::Mmap>,
    trailer: &Trailer,
) -> anyhow::Result<Component> {
    let Some(map) = map else {
        use std::os::unix::io::AsRawFd;
        // Through /proc/self/fd wasmtime opens the very inode we verified, not whatever the path
        // names now, so a rename between our check and its open cannot swap the bytes.
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        // SAFETY: the file at this descriptor was fully verified just above: its trailer binds it
        // to this source hash and this engine fingerprint, and its payload matches the checksum,
        // so it is an artifact this engine configuration produced from whitelisted bytes. It is
        // never modified in place (see `map_file`), and wasmtime ignores the trailing trailer
        // (guarded by tests/trailer_guard.rs).
        return Ok(unsafe { Component::deserialize_file(engine, &proc_path) }?);
    };
    let payload_len = usize::try_from(trailer.payload_len).map_err(|_| anyhow::anyhow!("payload too large"))?;
    let payload = map
        .get(..payload_len)
        .ok_or_else(|| anyhow::anyhow!("payload length out of range"))?;
    // SAFETY: as above, these bytes were verified against the key and checksum just now; this
    // path copies them into wasmtime's own memory, so later changes to the file cannot reach it.
    Ok(unsafe { Component::deserialize(engine, payload) }?)
}
