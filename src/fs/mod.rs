//! The file-system layer: walking a path as given and checking every directory and link on the
//! way ([`walk`]), why a walk refused a path ([`refusal`]), and a directory held open by descriptor
//! ([`dir`]), through which everything above works, and writing a whole file outside the store in
//! a directory other users may write ([`outside`]). It knows nothing of stores, keys or artifacts.

pub(crate) mod dir;
pub(crate) mod outside;
pub(crate) mod refusal;
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
