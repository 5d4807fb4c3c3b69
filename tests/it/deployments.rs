//! The deployments docs/deploying.md shows, one table: each platform's uids, gids, modes and
//! mount points made with `chown` and `chmod`, the node run as that uid with `setpriv` (and in a
//! mount namespace of its own where the root file system is read-only), as separate processes.
//! For each: the bake made as the docs make it (`warm --finish-bake`, as root) serves the first
//! start, the writable store takes what the bake lacks, the second start is all from stores, and
//! `warm --strict` exits 0 both times. Then what another user of a shared volume can do, and
//! root's maintenance of the node's store. Every test needs root (other uids, mounts).

use crate::common;

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{chmod, snapshot};
use serde_json::Value;

/// The node's uid and gid in the non-root shapes: a number with no name, as in an image.
const NODE: u32 = 4242;
/// A pod's `fsGroup`.
const FS_GROUP: u32 = 4343;
/// A uid systemd's `DynamicUser=yes` allocates (61184-65519).
const DYNAMIC: u32 = 61184;

/// Where a shape's writable store is, and what the platform made there.
#[derive(Clone, Copy)]
enum Volume {
    /// None at all: a read-only root file system, no `WASM_NODE_CACHE_DIR`.
    None,
    /// `WASM_NODE_CACHE_DIR` names a mount point the platform made: owner, group, mode.
    MountPoint { uid: u32, gid: u32, mode: u32 },
    /// systemd's `CacheDirectory=node-wasm`: `$CACHE_DIRECTORY`, owned by `User=`, `0755`.
    CacheDirectory,
    /// `DynamicUser=yes`: the directory lives in `private/` and the unit's name is a link to it
    /// (root's), as the service sees it in its mount namespace.
    DynamicUser,
}

struct Shape {
    name: &'static str,
    uid: u32,
    gid: u32,
    groups: &'static [u32],
    volume: Volume,
}

/// The table. The Kubernetes rows are the manifest of docs/deploying.md: `runAsUser: 4242`,
/// `runAsGroup: 4242`, `fsGroup: 4343`, `readOnlyRootFilesystem: true`, the volume at
/// `/var/cache/node-wasm`.
const SHAPES: &[Shape] = &[
    Shape {
        name: "docker, as root, named volume",
        uid: 0,
        gid: 0,
        groups: &[],
        volume: Volume::MountPoint {
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
    },
    Shape {
        name: "docker, USER node, named volume over the image's directory of the node's",
        uid: NODE,
        gid: NODE,
        groups: &[],
        volume: Volume::MountPoint {
            uid: NODE,
            gid: NODE,
            mode: 0o755,
        },
    },
    EMPTY_DIR,
    Shape {
        name: "kubernetes restricted, emptyDir with fsGroup",
        uid: NODE,
        gid: NODE,
        groups: &[FS_GROUP],
        volume: Volume::MountPoint {
            uid: 0,
            gid: FS_GROUP,
            mode: 0o2777,
        },
    },
    Shape {
        name: "kubernetes restricted, PersistentVolumeClaim with fsGroup",
        uid: NODE,
        gid: NODE,
        groups: &[FS_GROUP],
        volume: Volume::MountPoint {
            uid: 0,
            gid: FS_GROUP,
            mode: 0o2775,
        },
    },
    Shape {
        name: "kubernetes restricted, no volume, read-only root file system",
        uid: NODE,
        gid: NODE,
        groups: &[],
        volume: Volume::None,
    },
    Shape {
        name: "systemd, User= and CacheDirectory=",
        uid: NODE,
        gid: NODE,
        groups: &[],
        volume: Volume::CacheDirectory,
    },
    Shape {
        name: "systemd, DynamicUser=yes and CacheDirectory=",
        uid: DYNAMIC,
        gid: DYNAMIC,
        groups: &[],
        volume: Volume::DynamicUser,
    },
];

fn cli() -> &'static str {
    env!("CARGO_BIN_EXE_wasm-node-cache")
}

/// A file system standing for the image and the host: `/srv/node/config` (the node's
/// components), `/opt/wasm-bake` (the bake), `/var/cache` and `/tmp`, all root's and readable by
/// everyone, as an image's are.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        chmod(dir.path(), 0o755);
        let root = Root { dir };
        for d in ["srv/node/config/wasm", "opt", "var/cache", "tmp", "usr/local/bin"] {
            std::fs::create_dir_all(root.path(d)).expect("mkdir");
        }
        // The tool where the image has it, reachable by every uid (the checkout may lie below a
        // directory only root can enter): a hard link, or a copy on another file system.
        let tool = root.tool();
        if std::fs::hard_link(cli(), &tool).is_err() {
            std::fs::copy(cli(), &tool).expect("copy the tool");
        }
        let repo = common::repo().join("config");
        std::fs::copy(repo.join("wasm.conf"), root.path("srv/node/config/wasm.conf")).expect("copy");
        for e in std::fs::read_dir(repo.join("wasm")).expect("config/wasm") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), root.path("srv/node/config/wasm").join(e.file_name())).expect("copy");
        }
        root
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `/usr/local/bin/wasm-node-cache` in the image.
    fn tool(&self) -> PathBuf {
        self.path("usr/local/bin/wasm-node-cache")
    }

    /// The Dockerfile's bake step, as root in the build stage.
    fn bake(&self) -> Value {
        let out = Command::new(cli())
            .current_dir(self.path("srv/node"))
            .args([
                "warm",
                "--json",
                "--wasm-dir",
                "./config/wasm",
                "--whitelist",
                "./config/wasm.conf",
            ])
            .arg("--store")
            .arg(self.path("opt/wasm-bake"))
            .args(["--cpu-profile", PROFILES, "--finish-bake"])
            .env_remove("WASM_NODE_CACHE_DIR")
            .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS")
            .env_remove("WASM_NODE_CACHE_KEY_FILE")
            .env_remove("CACHE_DIRECTORY")
            .output()
            .expect("bake");
        json(&out, "the bake")
    }

    /// One more component, in the node's config but not in the bake: what the writable store
    /// must take.
    fn add_unbaked_component(&self) {
        let bytes = common::generated_component(7, 3);
        let hash = hex::encode(wasm_node_cache::config::sha256(&bytes));
        std::fs::write(self.path("srv/node/config/wasm").join(&hash), bytes).expect("write");
        let conf = self.path("srv/node/config/wasm.conf");
        let mut text = std::fs::read_to_string(&conf).expect("wasm.conf");
        text.push_str(&format!("{hash}\n"));
        std::fs::write(conf, text).expect("write");
    }
}

/// The Dockerfile's CPU profiles.
#[cfg(target_arch = "x86_64")]
const PROFILES: &str = "native,x86-64-v2,x86-64-v3,x86-64-v4";
#[cfg(not(target_arch = "x86_64"))]
const PROFILES: &str = "native";

fn json(out: &Output, what: &str) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stderr}"))
}

/// `setpriv` arguments that run a command as `uid:gid` with exactly `groups`.
fn as_user(uid: u32, gid: u32, groups: &[u32]) -> Vec<String> {
    let mut args = vec![
        "--reuid".to_owned(),
        uid.to_string(),
        "--regid".to_owned(),
        gid.to_string(),
    ];
    if groups.is_empty() {
        args.push("--clear-groups".to_owned());
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        args.extend(["--groups".to_owned(), list.join(",")]);
    }
    args.push("--".to_owned());
    args
}

/// The node's start in `shape`: `warm --strict --json` as its uid, in `/srv/node`, with the
/// image's environment; with no volume, in a mount namespace whose `/tmp` is read-only.
fn start(root: &Root, shape: &Shape, env: &[(&str, PathBuf)]) -> Output {
    let mut cmd = if matches!(shape.volume, Volume::None) {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(root.path("tmp"))
            .arg("setpriv");
        c
    } else {
        Command::new("setpriv")
    };
    cmd.args(as_user(shape.uid, shape.gid, shape.groups))
        .arg(root.tool())
        .args(["warm", "--strict", "--json"])
        .current_dir(root.path("srv/node"))
        .env_remove("WASM_NODE_CACHE_DIR")
        .env_remove("WASM_NODE_CACHE_KEY_FILE")
        .env_remove("CACHE_DIRECTORY")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("RUST_LOG")
        .env("HOME", "/nonexistent")
        .env("TMPDIR", root.path("tmp"))
        .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS");
    let bake = root.path("opt/wasm-bake");
    if bake.exists() {
        cmd.env("WASM_NODE_CACHE_READ_ONLY_DIRS", bake);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("needs root: cannot run setpriv or unshare ({e})"))
}

/// Makes what the platform makes for `shape`; returns the environment the node gets and where its
/// writable store is expected.
fn provision(root: &Root, shape: &Shape) -> (Vec<(&'static str, PathBuf)>, Option<PathBuf>) {
    let own = |p: &Path, uid: u32, gid: u32, mode: u32| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("needs root: cannot chown {} ({e})", p.display()));
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let volume = root.path("var/cache/node-wasm");
    match shape.volume {
        Volume::None => (Vec::new(), None),
        Volume::MountPoint { uid, gid, mode } => {
            std::fs::create_dir(&volume).expect("mkdir");
            own(&volume, uid, gid, mode);
            // The node's own directory when the mount point is not the node's alone.
            let store = if uid == shape.uid && mode & 0o022 == 0 {
                volume.clone()
            } else {
                volume.join(format!("wasm-node-cache-{}", shape.uid))
            };
            (vec![("WASM_NODE_CACHE_DIR", volume)], Some(store))
        }
        Volume::CacheDirectory => {
            std::fs::create_dir(&volume).expect("mkdir");
            own(&volume, shape.uid, shape.gid, 0o755);
            (vec![("CACHE_DIRECTORY", volume.clone())], Some(volume))
        }
        Volume::DynamicUser => {
            let private = root.path("var/cache/private");
            std::fs::create_dir_all(private.join("node-wasm")).expect("mkdir");
            own(&private.join("node-wasm"), shape.uid, shape.gid, 0o755);
            symlink("private/node-wasm", &volume).expect("symlink");
            (vec![("CACHE_DIRECTORY", volume)], Some(private.join("node-wasm")))
        }
    }
}

#[test]
#[ignore = "needs root: runs the node as other uids and gids, and mounts a read-only /tmp"]
fn every_documented_deployment_starts_warm_from_the_bake_and_keeps_its_store() {
    let template = Root::new();
    let baked = template.bake();
    let n = baked["entries"].as_array().map_or(0, Vec::len);
    assert!(n > 0, "{baked}");
    let bake = template.path("opt/wasm-bake");
    let st = std::fs::metadata(&bake).expect("bake");
    assert_eq!((st.uid(), st.mode() & 0o7777), (0, 0o555), "a finished bake");
    assert!(!bake.join("lock").exists(), "a finished bake has no lock file");
    for e in std::fs::read_dir(&bake).expect("bake") {
        let m = e.expect("entry").metadata().expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o444, "every file of a finished bake is 0444");
    }

    for shape in SHAPES {
        let root = Root::new();
        common::sh(
            &format!("cp -a '{}' '{}'", bake.display(), root.path("opt").display()),
            root.dir.path(),
        );
        let has_volume = !matches!(shape.volume, Volume::None);
        if has_volume {
            root.add_unbaked_component();
        }
        let (env, store) = provision(&root, shape);
        let what = shape.name;

        let first = json(&start(&root, shape, &env), what);
        let from_bake = first["read_only_stores"][0]["hits"].as_u64();
        assert_eq!(
            from_bake,
            Some(n as u64),
            "{what}: the bake serves the first start: {first}"
        );
        let extra = u64::from(has_volume);
        assert_eq!(
            (first["compiled"].as_u64(), first["store"]["written"].as_u64()),
            (Some(extra), Some(extra)),
            "{what}: what the bake lacks is compiled once and stored: {first}"
        );
        let second = json(&start(&root, shape, &env), what);
        assert_eq!(
            (second["from_store"].as_u64(), second["compiled"].as_u64()),
            (Some(n as u64 + extra), Some(0)),
            "{what}: the second start is all from stores: {second}"
        );

        match &store {
            Some(store) => {
                assert_eq!(
                    second["store"]["path"].as_str().map(PathBuf::from).as_deref(),
                    Some(store.as_path()),
                    "{what}: {second}"
                );
                let st = std::fs::metadata(store).expect("the store");
                assert_eq!(st.uid(), shape.uid, "{what}: the store is the node's");
                assert_eq!(st.mode() & 0o022, 0, "{what}: nobody else can write the store");
                for e in std::fs::read_dir(store).expect("store") {
                    let e = e.expect("entry");
                    assert_eq!(
                        e.metadata().expect("stat").uid(),
                        shape.uid,
                        "{what}: {} is not the node's",
                        e.path().display()
                    );
                }
                assert_eq!(common::artifact_count(store), 1, "{what}");
            }
            None => {
                assert_eq!(second["store"]["default_location"], true, "{what}: {second}");
                assert!(
                    !second["store"]["write_error"].is_null(),
                    "{what}: nothing can be written: {second}"
                );
            }
        }
    }
}

/// An `emptyDir` (root, `0777`) holding the node's store, the node's uid, and another uid of the
/// pod that shares the volume.
struct SharedVolume {
    root: Root,
    volume: PathBuf,
    store: PathBuf,
}

/// The manifest's pod with an `emptyDir`.
const EMPTY_DIR: Shape = Shape {
    name: "kubernetes restricted, emptyDir",
    uid: NODE,
    gid: NODE,
    groups: &[],
    volume: Volume::MountPoint {
        uid: 0,
        gid: 0,
        mode: 0o777,
    },
};

impl SharedVolume {
    fn new() -> SharedVolume {
        let root = Root::new();
        let (_, store) = provision(&root, &EMPTY_DIR);
        SharedVolume {
            volume: root.path("var/cache/node-wasm"),
            store: store.expect("a store"),
            root,
        }
    }

    /// A start as the node; with `--strict`, a refused store exits 1, and the report is read
    /// either way.
    fn start(&self) -> Value {
        let out = start(&self.root, &EMPTY_DIR, &[("WASM_NODE_CACHE_DIR", self.volume.clone())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(0 | 1)), "the node starts: {stderr}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
    }

    /// `script` run by `sh` as uid 65534 in the volume.
    fn as_other(&self, script: &str) {
        let out = common::run_as_other_uid("sh", &[OsStr::new("-c"), OsStr::new(script)]);
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Artifacts the other user could have copied from anywhere: the node's own, as files of theirs.
fn plant_their_copy(v: &SharedVolume, source: &Path, at: &Path) {
    v.as_other(&format!(
        "mkdir -p '{at}' && for f in '{src}'/*.cwasm; do cp \"$f\" '{at}'/; done; chmod 755 '{at}'",
        at = at.display(),
        src = source.display()
    ));
}

#[test]
#[ignore = "needs root: uid 65534 plants files in a volume the node (uid 4242) shares"]
fn another_user_of_a_shared_volume_never_makes_the_node_load_what_they_wrote() {
    // Real artifacts of the node's components, readable by the other user: a finished bake.
    let donor = Root::new();
    donor.bake();
    let source = donor.path("opt/wasm-bake");

    type Plant = fn(&SharedVolume, &Path);
    let plants: &[(&str, Plant)] = &[
        (
            "their directory under the store's name, holding valid artifacts",
            |v, source| plant_their_copy(v, source, &v.store),
        ),
        ("a link under the store's name to their directory", |v, source| {
            let theirs = v.volume.join("theirs");
            plant_their_copy(v, source, &theirs);
            v.as_other(&format!("ln -s theirs '{}'", v.store.display()));
        }),
        ("a file under the store's name", |v, _| {
            v.as_other(&format!("echo x > '{}'", v.store.display()))
        }),
        (
            "the node's store renamed away and theirs put in its place",
            |v, source| {
                let _ = v.start();
                v.as_other(&format!("mv '{0}' '{0}.moved'", v.store.display()));
                plant_their_copy(v, source, &v.store);
            },
        ),
    ];
    for (what, plant) in plants {
        // No bake: a load could only come from their files.
        let v = SharedVolume::new();
        plant(&v, &source);
        let r = v.start();
        assert_eq!(r["from_store"].as_u64(), Some(0), "{what}: nothing loaded: {r}");
        assert!(r["compiled"].as_u64().is_some_and(|c| c > 0), "{what}: {r}");
        let why = r["store"]["read_error"]["message"].as_str().unwrap_or_default();
        assert!(
            why.contains("not a directory of this process's") || why.contains("symbolic link"),
            "{what}: the report says why: {r}"
        );
    }

    // The store as the node made it: the other user can neither open its lock nor list it.
    let v = SharedVolume::new();
    let r = v.start();
    assert!(r["store"]["written"].as_u64().is_some_and(|w| w > 0), "{r}");
    let lock = v.store.join("lock");
    let out = common::run_as_other_uid("flock", &["-n".as_ref(), lock.as_os_str(), "true".as_ref()]);
    assert!(!out.status.success(), "uid 65534 took the lock of the node's store");
    let out = common::run_as_other_uid("ls", &[v.store.as_os_str()]);
    assert!(!out.status.success(), "uid 65534 listed the node's store");
    // Renaming the whole store away between starts only costs a compile; nothing of theirs loads.
    v.as_other(&format!("mv '{0}' '{0}.gone' && mkdir '{0}'", v.store.display()));
    let r = v.start();
    assert_eq!(r["from_store"].as_u64(), Some(0), "{r}");
}

#[test]
#[ignore = "needs root: the node's store belongs to uid 4242, and root maintains it"]
fn root_maintaining_the_nodes_store_is_told_to_run_as_its_owner_and_leaves_nothing_of_roots() {
    let v = SharedVolume::new();
    v.start();
    let before = snapshot(&v.store);
    for args in [&["status"][..], &["verify"], &["prune", "--stale"], &["clear"]] {
        let out = Command::new(cli())
            .current_dir(v.root.path("srv/node"))
            .args(args)
            .env("WASM_NODE_CACHE_DIR", &v.volume)
            .env_remove("CACHE_DIRECTORY")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&v.store.display().to_string()),
            "{args:?} names the node's store: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "setpriv --reuid {NODE} --regid {NODE} --clear-groups -- wasm-node-cache"
            )),
            "{args:?} names the command that works: {stderr}"
        );
        assert!(
            !stderr.contains("chown"),
            "{args:?} suggests handing the store to root: {stderr}"
        );
    }
    // A start as root by mistake keeps a store of root's own beside it, never in the node's.
    let out = Command::new(cli())
        .current_dir(v.root.path("srv/node"))
        .args(["warm", "--json"])
        .env("WASM_NODE_CACHE_DIR", &v.volume)
        .env_remove("CACHE_DIRECTORY")
        .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS")
        .output()
        .expect("run");
    let r = json(&out, "warm as root");
    let roots = v.volume.join("wasm-node-cache-0");
    assert_eq!(r["store"]["path"].as_str().map(PathBuf::from), Some(roots), "{r}");
    assert_eq!(snapshot(&v.store), before, "root changed the node's store");
    for e in std::fs::read_dir(&v.store).expect("store") {
        let e = e.expect("entry");
        assert_eq!(
            e.metadata().expect("stat").uid(),
            NODE,
            "{} is root's",
            e.path().display()
        );
    }
    // The command it names works.
    let out = Command::new("setpriv")
        .args(as_user(NODE, NODE, &[]))
        .arg(v.root.tool())
        .arg("verify")
        .env("WASM_NODE_CACHE_DIR", &v.volume)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
