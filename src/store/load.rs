//! Loading one artifact: open it relative to the store's descriptor, check the file on that
//! descriptor, verify trailer, key binding and payload checksum, and hand wasmtime bytes that are
//! the ones verified.
//!
//! Three ways to hand the bytes over, chosen per store mode (see [`LoadPath`]):
//! - plain mode maps the store file itself (through `/proc/self/fd`, so the verified inode),
//!   the way the dynamic loader maps a shared library;
//! - MAC mode copies the payload into a sealed memfd while authenticating it, so no later write,
//!   truncation or rename of any store file can change or crash the code that runs;
//! - where neither is possible, the verified bytes are copied into memory and deserialized there.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, OFlags};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Fault, Lookup, Rejection, Store};
use crate::artifact::{self, ArtifactError, Sealer, TRAILER_LEN, Trailer};
use crate::compiled::Compiled;
use crate::fs::GROUP_OR_OTHER_WRITE;
use crate::key::{ArtifactKey, Hash32, Kind};

/// How a loaded component's code reached wasmtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoadPath {
    /// Plain mode: wasmtime maps the store file that was verified. A later write into that file
    /// in place (which its mode forbids to all but root) changes or crashes the nodes that loaded
    /// it, as overwriting a loaded shared library does.
    Mapped,
    /// MAC mode: the payload was authenticated while being copied into a sealed memfd that
    /// nothing can write, shrink or grow; wasmtime maps that. No store file is used after loading.
    Sealed,
    /// The verified payload was copied into wasmtime's own memory (no `/proc/self/fd`, or
    /// executable memfds refused); no store file is used after loading.
    Copied,
}

impl LoadPath {
    /// `mapped`, `sealed` or `copied`: the JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadPath::Mapped => "mapped",
            LoadPath::Sealed => "sealed",
            LoadPath::Copied => "copied",
        }
    }
}

/// How a checked artifact is reopened for reading: never blocking.
const READ: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC);

/// Size of the buffer a payload is streamed through: small enough to stay in the core's L2 cache
/// and to come from the heap rather than from a fresh mapping in a new process (README,
/// Performance).
const STREAM_CHUNK: usize = 64 * 1024;

thread_local! {
    static STREAM_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's stream buffer, allocated and zeroed once per thread rather than
/// once per load or per start-up; a load nested in another on one thread (none today) gets a
/// buffer of its own rather than a panic.
pub(crate) fn with_stream_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    STREAM_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut Vec::new()),
    })
}

/// An artifact that passed every check, with the bytes wasmtime will load.
pub(crate) struct Verified {
    bytes: Bytes,
    payload_len: u64,
}

/// A checked artifact file open for reading, with its authenticated trailer.
struct Opened {
    file: File,
    trailer: Trailer,
    /// Access time (seconds), for [`Store::note_use`].
    accessed: i64,
    /// The whole file was read with the trailer (it fits the stream buffer): the payload is the
    /// buffer's first `trailer.payload_len` bytes, and is not read again.
    in_buf: bool,
}

enum Bytes {
    /// The open store file; wasmtime maps it through `/proc/self/fd`.
    Mapped(File),
    /// A sealed memfd holding exactly the authenticated payload.
    Sealed(File),
    /// The authenticated payload in memory.
    Copied(Vec<u8>),
}

impl Store {
    /// Looks up, verifies and deserializes the component artifact for `source`. Never reads the
    /// source binary.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn load(&self, engine: &Engine, source: &Hash32) -> Lookup {
        self.load_as::<Component>(engine, source)
    }

    /// [`Store::load`] for either kind of compiled code.
    pub(crate) fn load_as<T: Compiled>(&self, engine: &Engine, source: &Hash32) -> Lookup<T> {
        match with_stream_buf(|buf| self.open_verified(source, T::KIND, buf)) {
            Ok(verified) => verified.deserialize(engine),
            Err(lookup) => lookup,
        }
    }

    /// The first half of [`Store::load`]: open and fully verify, without wasmtime. Split out so
    /// that a start-up can verify on one core while it deserializes on another. `buf` is a buffer
    /// reused across calls on one thread.
    pub(crate) fn open_verified<T>(
        &self,
        source: &Hash32,
        kind: Kind,
        buf: &mut Vec<u8>,
    ) -> Result<Verified, Lookup<T>> {
        let key = self.key_of(source, kind);
        let opened = self.open_checked(&key, buf)?;
        artifact::check_binding(&opened.trailer, &key).map_err(|e| Lookup::Rejected(e.into()))?;
        let payload_len = opened.trailer.payload_len;
        let bytes = match self.path_for_mode() {
            LoadPath::Mapped => {
                stream_payload(&opened, &self.sealer, buf, |_| Ok(())).map_err(Lookup::Rejected)?;
                self.note_use(&opened.file, opened.accessed);
                return Ok(Verified {
                    bytes: Bytes::Mapped(opened.file),
                    payload_len,
                });
            }
            LoadPath::Sealed => match self.new_memfd() {
                Ok(mut memfd) => {
                    stream_payload(&opened, &self.sealer, buf, |chunk| memfd.write_all(chunk))
                        .map_err(Lookup::Rejected)?;
                    seal(&memfd).map_err(|e| Lookup::Rejected(Rejection::io("seal the in-memory copy", e)))?;
                    Bytes::Sealed(memfd)
                }
                Err(e) => {
                    if self.fault != Fault::MemfdRefused {
                        note_memfd_refused(&e);
                    }
                    copy_payload(&opened, &self.sealer, buf)?
                }
            },
            LoadPath::Copied => copy_payload(&opened, &self.sealer, buf)?,
        };
        self.note_use(&opened.file, opened.accessed);
        Ok(Verified { bytes, payload_len })
    }

    /// Fully checks the artifact for `key` without deserializing it, exactly as a start-up does:
    /// the `verify` subcommand.
    pub fn check(&self, key: &ArtifactKey) -> Result<Trailer, Rejection> {
        with_stream_buf(|buf| {
            let opened = self.open_listed(key, buf)?;
            artifact::check_binding(&opened.trailer, key)?;
            stream_payload(&opened, &self.sealer, buf, |_| Ok(()))?;
            Ok(opened.trailer)
        })
    }

    /// Reads only the trailer of the artifact for `key` (the `status` view): no payload hashing.
    pub fn read_trailer(&self, key: &ArtifactKey) -> Result<Trailer, Rejection> {
        with_stream_buf(|buf| self.open_listed(key, buf).map(|opened| opened.trailer))
    }

    /// [`Store::open_checked`] for an artifact a listing just showed: absence is an error (it was
    /// removed meanwhile), not a miss.
    fn open_listed(&self, key: &ArtifactKey, buf: &mut Vec<u8>) -> Result<Opened, Rejection> {
        self.open_checked::<Component>(key, buf).map_err(|lookup| match lookup {
            Lookup::Rejected(r) => r,
            Lookup::Absent | Lookup::Hit(..) => Rejection::io("open", std::io::ErrorKind::NotFound.into()),
        })
    }

    /// Finds the artifact for `key` on an `O_PATH` descriptor and checks it there (a regular file,
    /// owned as the store requires, writable by nobody else, of a length an artifact can have)
    /// before opening it; then reopens that inode and reads and authenticates its trailer. One
    /// `openat` more than a plain open, on the restart's hot path. Binding and payload are the
    /// caller's to check.
    ///
    /// A file that fits `buf` (the stream chunk) is read whole in that one read, trailer and
    /// payload: one system call instead of two for a small artifact.
    fn open_checked<T>(&self, key: &ArtifactKey, buf: &mut Vec<u8>) -> Result<Opened, Lookup<T>> {
        let name = key.file_name();
        // An `O_PATH` descriptor first: a device or FIFO planted under this name is never opened.
        let (path_fd, st) = match self.dir.open_path(&name) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Lookup::Absent),
            // Without O_PATH (not Linux) the open itself refuses a link.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(Lookup::Rejected(Rejection::Symlink));
            }
            Err(e) => return Err(Lookup::Rejected(Rejection::io("open", e))),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Symlink => return Err(Lookup::Rejected(Rejection::Symlink)),
            _ => return Err(Lookup::Rejected(Rejection::NotRegularFile)),
        }
        if !self.trusts_owner(st.st_uid) {
            return Err(Lookup::Rejected(Rejection::ForeignOwner { uid: st.st_uid }));
        }
        let mode = st.st_mode & 0o7777;
        if mode & GROUP_OR_OTHER_WRITE != 0 {
            return Err(Lookup::Rejected(Rejection::WritableByOthers { mode }));
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        artifact::check_file_len(len).map_err(|e| Lookup::Rejected(e.into()))?;
        let file = self
            .dir
            .reopen(&name, &path_fd, &st, READ)
            .map_err(|e| Lookup::Rejected(Rejection::io("open", e)))?;
        let (trailer, in_buf) = read_trailer(&file, len, &self.sealer, buf).map_err(Lookup::Rejected)?;
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        let accessed = st.st_atime as i64;
        Ok(Opened {
            file,
            trailer,
            accessed,
            in_buf,
        })
    }

    /// Records a verified hit as the artifact's last use: its access time, set through the open
    /// descriptor, at most once a day (a hit whose access time is younger writes nothing) and
    /// never in a read-only store, so that "unused for N days" (`min_idle`) can be decided
    /// without a write per load. On a `noatime` mount too. A failure only costs that record.
    fn note_use(&self, file: &File, accessed: i64) {
        const A_DAY: i64 = 24 * 60 * 60;
        if self.read_only {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if now.saturating_sub(accessed) < A_DAY {
            return;
        }
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: now,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
        };
        if let Err(e) = rustix::fs::futimens(file, &times) {
            log::debug!("cannot record the use of an artifact: {e}");
        }
    }

    fn new_memfd(&self) -> std::io::Result<File> {
        if self.fault == Fault::MemfdRefused {
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        }
        sealed_memfd()
    }

    /// The load path this store's mode asks for, before any fallback.
    fn path_for_mode(&self) -> LoadPath {
        if !crate::fs::unnamed::proc_fd_available() {
            LoadPath::Copied
        } else if self.sealer.is_keyed() {
            LoadPath::Sealed
        } else {
            LoadPath::Mapped
        }
    }
}

impl Store {
    /// What `engine` makes of the artifact `key`, which need not be of this store's fingerprint:
    /// the check of ours it fails, or wasmtime's own refusal when it passes them (which names the
    /// setting that differs: concurrency support, a wasm feature, a CPU flag), or why the
    /// fingerprints differ when wasmtime would load it. For saying why a bake does not serve.
    pub(crate) fn why_not_loaded(&self, engine: &Engine, key: &ArtifactKey) -> String {
        match key.kind {
            Kind::Component => self.why_not_loaded_as::<Component>(engine, key),
            Kind::Module => self.why_not_loaded_as::<wasmtime::Module>(engine, key),
        }
    }

    fn why_not_loaded_as<T: Compiled>(&self, engine: &Engine, key: &ArtifactKey) -> String {
        let theirs = self.with_fingerprint(key.fingerprint);
        match with_stream_buf(|buf| theirs.open_verified::<T>(&key.source, key.kind, buf)) {
            Err(Lookup::Rejected(r)) => r.to_string(),
            Err(_) => "the artifact disappeared while being read".to_owned(),
            // It passed every check of ours (a trusted store, its checksum or MAC): handing it to
            // the engine's deserializer runs wasmtime's compatibility check, and nothing of it.
            Ok(verified) => match verified.deserialize::<T>(engine) {
                Lookup::Rejected(Rejection::Deserialize(e)) => e,
                Lookup::Rejected(r) => r.to_string(),
                _ => "wasmtime itself would load it: the fingerprints differ in what wasmtime does not check at load (its patch version, this crate's format version, the MAC mode, or a setting such as NaN canonicalization)".to_owned(),
            },
        }
    }
}

impl Verified {
    /// Length of the verified payload in bytes.
    pub(crate) fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// The second half of [`Store::load`].
    pub(crate) fn deserialize<T: Compiled>(self, engine: &Engine) -> Lookup<T> {
        let (result, path) = match self.bytes {
            // SAFETY: the file behind this descriptor was fully verified just now (trailer tag,
            // binding to this source hash, engine fingerprint and kind `T`, payload checksum). It
            // is a store file that this crate never writes in place and publishes with no write
            // bit, so only root can change it under the mapping; that limit is documented in
            // SECURITY.md. wasmtime ignores the trailer after the payload (guarded by
            // tests/it/trailer_guard.rs).
            Bytes::Mapped(file) => (unsafe { T::deserialize_open(engine, file) }, LoadPath::Mapped),
            // SAFETY: as above, and this is a sealed memfd that nothing can write, shrink or grow.
            Bytes::Sealed(memfd) => (unsafe { T::deserialize_open(engine, memfd) }, LoadPath::Sealed),
            // SAFETY: these bytes passed every check just now (trailer tag, binding to this source
            // hash, engine fingerprint and kind, payload checksum, and in MAC mode the keyed MAC),
            // so they are an artifact this engine configuration produced, as `T`, from the bytes
            // of that hash; they live in this process's memory, out of reach of the store.
            Bytes::Copied(payload) => (unsafe { T::deserialize(engine, &payload) }, LoadPath::Copied),
        };
        match result {
            Ok(c) => Lookup::Hit(c, path),
            Err(e) => Lookup::Rejected(Rejection::Deserialize(format!("{e:#}"))),
        }
    }
}

/// Reads and authenticates the trailer (positional read): alone, or, for a file that fits the
/// stream buffer, with the payload in the same read (then `true`). `len` was checked by
/// `check_file_len`, so it is larger than a trailer.
fn read_trailer(file: &File, len: u64, sealer: &Sealer, buf: &mut Vec<u8>) -> Result<(Trailer, bool), Rejection> {
    let read_err = |e| Rejection::io("read the trailer", e);
    match usize::try_from(len).ok().filter(|&l| l <= STREAM_CHUNK) {
        Some(whole) => {
            stream_buffer(buf);
            file.read_exact_at(&mut buf[..whole], 0).map_err(read_err)?;
            let mut t = [0u8; TRAILER_LEN];
            t.copy_from_slice(&buf[whole - TRAILER_LEN..whole]);
            Ok((artifact::decode_trailer_bytes(&t, len, sealer)?, true))
        }
        None => {
            let mut t = [0u8; TRAILER_LEN];
            file.read_exact_at(&mut t, len - TRAILER_LEN as u64).map_err(read_err)?;
            Ok((artifact::decode_trailer_bytes(&t, len, sealer)?, false))
        }
    }
}

/// Makes `buf` the stream chunk's length; zeroes only what it grows by, so a reused buffer costs
/// nothing.
fn stream_buffer(buf: &mut Vec<u8>) {
    if buf.len() < STREAM_CHUNK {
        buf.resize(STREAM_CHUNK, 0);
    }
}

/// Streams the payload through `buf` into the checksum and into `sink`, then compares the
/// checksum with the (authenticated) trailer's. What `sink` received is exactly what was hashed.
fn stream_payload(
    opened: &Opened,
    sealer: &Sealer,
    buf: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), Rejection> {
    let (file, trailer) = (&opened.file, &opened.trailer);
    let mut hasher = sealer.payload_hasher();
    if opened.in_buf {
        // `decode_trailer_bytes` checked that the payload is the file minus its trailer, and the
        // whole file is in `buf`.
        let payload = usize::try_from(trailer.payload_len)
            .ok()
            .and_then(|len| buf.get(..len))
            .ok_or(Rejection::ChangedWhileRead {
                read: 0,
                expected: trailer.payload_len,
            })?;
        hasher.update(payload);
        if hasher.finalize() != trailer.payload_checksum {
            return Err(ArtifactError::PayloadChecksum.into());
        }
        return sink(payload).map_err(|e| Rejection::io("copy the payload into memory", e));
    }
    stream_buffer(buf);
    let mut offset: u64 = 0;
    while offset < trailer.payload_len {
        let want = usize::try_from(trailer.payload_len - offset).map_or(buf.len(), |rest| rest.min(buf.len()));
        let n = file
            .read_at(&mut buf[..want], offset)
            .map_err(|e| Rejection::io("read", e))?;
        if n == 0 {
            return Err(Rejection::ChangedWhileRead {
                read: offset,
                expected: trailer.payload_len,
            });
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n]).map_err(|e| Rejection::io("copy the payload into memory", e))?;
        offset += n as u64;
    }
    if hasher.finalize() != trailer.payload_checksum {
        return Err(ArtifactError::PayloadChecksum.into());
    }
    Ok(())
}

fn copy_payload<T>(opened: &Opened, sealer: &Sealer, buf: &mut Vec<u8>) -> Result<Bytes, Lookup<T>> {
    // The length comes from an authenticated trailer that matched the file's length, which
    // `check_file_len` bounds: never a wild allocation.
    let mut payload = Vec::with_capacity(usize::try_from(opened.trailer.payload_len).unwrap_or(0));
    stream_payload(opened, sealer, buf, |chunk| {
        payload.extend_from_slice(chunk);
        Ok(())
    })
    .map_err(Lookup::Rejected)?;
    Ok(Bytes::Copied(payload))
}

/// Set once executable memfds were refused in this process, so the copy path is taken at once.
static MEMFD_REFUSED: AtomicBool = AtomicBool::new(false);

fn note_memfd_refused(e: &std::io::Error) {
    if !MEMFD_REFUSED.swap(true, Ordering::Relaxed) {
        log::info!("executable memfds unavailable ({e}); MAC mode copies verified artifacts into memory instead");
    }
}

/// A new memfd that can be sealed and mapped executable.
#[cfg(target_os = "linux")]
fn sealed_memfd() -> std::io::Result<File> {
    use rustix::fs::{MemfdFlags, memfd_create};
    if MEMFD_REFUSED.load(Ordering::Relaxed) {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    let name = c"wasm-node-cache-artifact";
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match memfd_create(name, flags | MemfdFlags::EXEC) {
        Ok(fd) => Ok(File::from(fd)),
        // Kernels before 6.3 do not know MFD_EXEC; their memfds are executable by default.
        Err(rustix::io::Errno::INVAL) => Ok(File::from(memfd_create(name, flags)?)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn sealed_memfd() -> std::io::Result<File> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Seals the memfd against writes, shrinking, growing and further sealing. wasmtime's private
/// mapping stays allowed: its writes are copy-on-write and never reach the memfd.
#[cfg(target_os = "linux")]
fn seal(memfd: &File) -> std::io::Result<()> {
    use rustix::fs::{SealFlags, fcntl_add_seals};
    Ok(fcntl_add_seals(
        memfd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?)
}

#[cfg(not(target_os = "linux"))]
fn seal(_memfd: &File) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
