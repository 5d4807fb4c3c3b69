//! The file-system layer: walking a path as given and checking every directory and link on the
//! way ([`walk`]), why a walk refused a path ([`refusal`]), and a directory held open by descriptor
//! ([`dir`]), through which everything above works, and writing a whole file outside the store in
//! a directory other users may write ([`outside`]); reaching open files through `/proc/self/fd`
//! and files made without a name ([`unnamed`]) serve them all. It knows nothing of stores, keys or
//! artifacts.

pub(crate) mod dir;
pub(crate) mod outside;
pub(crate) mod refusal;
pub(crate) mod unnamed;
pub(crate) mod walk;

/// Most symbolic links one walk follows, as the kernel's `ELOOP` limit.
pub(crate) const MAX_LINKS: usize = 40;

/// Write permission for group or others.
pub(crate) const GROUP_OR_OTHER_WRITE: u32 = 0o022;
/// The sticky bit: in such a directory only an entry's owner (or the directory's) may rename or
/// remove it.
pub(crate) const STICKY: u32 = 0o1000;

/// Who may own a checked directory or file, besides nobody else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This process's effective uid only: a store the node writes.
    Me,
    /// This process's effective uid or root: keys and read-only stores an image was baked with.
    MeOrRoot,
}

impl Owner {
    pub(crate) fn allows(self, uid: u32) -> bool {
        uid == euid() || (self == Owner::MeOrRoot && uid == 0)
    }
}

/// What makes a private file (the MAC key, the store's lock) unfit, from its `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrivateFileProblem {
    /// A symbolic link under its name.
    Symlink,
    /// Not a regular file.
    NotRegularFile,
    /// More than one link: another name for it may lie where others can write.
    HardLinks { links: u64 },
    /// Owned by a uid `owner` does not allow.
    OwnedByOther { uid: u32 },
    /// Group or others have some permission on it (`mode`: its permission bits, `0o7777`).
    OpenToOthers { mode: u32 },
}

/// The first problem of the private file whose `fstat` is `st`, checked in the order above, or
/// `None` when it is a regular file with one link, owned as `owner` allows, that nobody else may
/// open.
pub(crate) fn private_file_problem(st: &rustix::fs::Stat, owner: Owner) -> Option<PrivateFileProblem> {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => return Some(PrivateFileProblem::Symlink),
        _ => return Some(PrivateFileProblem::NotRegularFile),
    }
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let links = st.st_nlink as u64;
    if links != 1 {
        return Some(PrivateFileProblem::HardLinks { links });
    }
    if !owner.allows(st.st_uid) {
        return Some(PrivateFileProblem::OwnedByOther { uid: st.st_uid });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Some(PrivateFileProblem::OpenToOthers { mode });
    }
    None
}

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A uid as messages name it: `uid 65534 (nobody)`, or `uid 65534` when `/etc/passwd` does not
/// list it (users from LDAP or another NSS source are shown by number).
pub(crate) fn user_name(uid: u32) -> String {
    match passwd_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The login name of `uid` for a `chown NAME:` hint, or the number when it has none.
pub(crate) fn login_name(uid: u32) -> String {
    passwd_name(uid).unwrap_or_else(|| uid.to_string())
}

/// The name `/etc/passwd` gives `uid`. Read by hand rather than through `getpwuid_r`, which would
/// load NSS modules into the node; a miss only costs a name in a message.
fn passwd_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}
