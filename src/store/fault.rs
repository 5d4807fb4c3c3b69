//! Failures a test can inject into a store, standing in for conditions a test cannot always
//! create: running as root defeats permission bits, mounting a full tmpfs needs privileges, and
//! `vm.memfd_noexec` is a machine-wide setting. Public only with the `fault-injection` feature.

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Normal operation.
    #[default]
    None,
    /// Publishing fails as a full disk does (ENOSPC) after writing the first bytes of the temp file.
    DiskFull,
    /// Publishing fails as a read-only file system does (EROFS) when creating the temp file.
    ReadOnly,
    /// Publishing renames the artifact into place, then the directory's fsync fails (EIO).
    DirSyncFails,
    /// Executable memfds are refused, as with `vm.memfd_noexec = 2`: MAC mode takes the copy path.
    MemfdRefused,
}
