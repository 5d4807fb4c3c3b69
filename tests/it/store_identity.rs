//! Only a store is a store: nothing is written into or deleted from a directory without the
//! store's marker (an empty one becomes a store, an earlier version's is adopted), a lock file
//! others could open is replaced so that no descriptor opened earlier keeps the lock, "same file"
//! is decided by device and inode, litter always goes, and a bake is complete or fails. Each test
//! runs the real CLI in separate processes; the attacks that need a second uid or a mount are
//! marked `#[ignore = "needs root: ..."]`.

use crate::common;

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, chmod, run_cli as cli, snapshot};
use serde_json::Value;

/// `warm --json` over the fixture's components with `extra`; the node always starts.
fn warm(fx: &Fixture, extra: &[&OsStr]) -> Value {
    let mut args: Vec<&OsStr> = vec!["warm".as_ref(), "--json".as_ref(), "--all-in-dir".as_ref()];
    args.extend(["--wasm-dir".as_ref(), fx.root.as_os_str()]);
    args.extend_from_slice(extra);
    let out = cli(fx.dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A home directory, as a mistyped `--store ~` would name it.
fn home(fx: &Fixture) -> PathBuf {
    let home = fx.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    std::fs::write(home.join(".bashrc"), b"export PS1='$ '\n").expect("write");
    std::fs::write(home.join(".ssh/id_ed25519"), b"-----BEGIN OPENSSH PRIVATE KEY-----\n").expect("write");
    std::fs::write(home.join("notes.txt"), b"do not delete\n").expect("write");
    chmod(&home.join(".ssh/id_ed25519"), 0o600);
    chmod(&home, 0o700);
    home
}

#[test]
fn a_home_directory_is_left_byte_for_byte_unchanged_by_every_command() {
    let fx = Fixture::new();
    let home = home(&fx);
    let before = snapshot(&home);
    let store = ["--store".as_ref(), home.as_os_str()];
    for (command, extra) in [
        ("status", &[][..]),
        ("verify", &[][..]),
        ("clear", &[][..]),
        ("prune", &["--stale".as_ref()][..]),
    ] {
        let mut args: Vec<&OsStr> = vec![command.as_ref()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&store);
        let out = cli(fx.dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("not a wasm-node-cache store: {}", home.display())) && stderr.contains(".bashrc"),
            "{command}: {stderr}"
        );
        assert_eq!(snapshot(&home), before, "{command} changed the home directory");
    }
    // The environment's store too, as `WASM_NODE_CACHE_DIR=$HOME prune --stale` would have it.
    let out = common::cli_command(fx.dir.path())
        .args(["prune", "--stale"])
        .env("WASM_NODE_CACHE_DIR", &home)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // A start refuses it, says why, and starts anyway.
    let v = warm(&fx, &store);
    assert_eq!(v["compiled"], 3, "{v}");
    assert_eq!(text(&v, "/store/read_error/kind"), "not_a_store", "{v}");
    assert!(text(&v, "/store/read_error/message").contains(".bashrc"), "{v}");
    assert_eq!(snapshot(&home), before, "warm changed the home directory");
}

#[test]
fn an_empty_directory_becomes_a_store_and_an_earlier_versions_store_is_adopted() {
    let fx = Fixture::new();
    std::fs::create_dir(&fx.store).expect("mkdir");
    chmod(&fx.store, 0o700);
    let v = warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    assert_eq!(v["store"]["written"], 3, "{v}");
    let marker = std::fs::read_to_string(fx.store.join("CACHEDIR.TAG")).expect("the marker");
    assert!(
        marker.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"),
        "{marker}"
    );
    assert!(marker.contains("wasm-node-cache"), "{marker}");

    // What an earlier version left: the same files, no marker. Looking changes nothing...
    std::fs::remove_file(fx.store.join("CACHEDIR.TAG")).expect("unlink");
    std::fs::write(fx.store.join(".tmp-4242-0-00000000.part"), b"half").expect("temp");
    let before = snapshot(&fx.store);
    let status = cli(
        fx.dir.path(),
        &[
            "status".as_ref(),
            "--json".as_ref(),
            "--store".as_ref(),
            fx.store.as_os_str(),
        ],
    );
    // Unhealthy (a leftover temp file), and says so with exit status 1.
    assert_eq!(
        status.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let s: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        (s["marker"].as_bool(), s["artifacts"].as_u64()),
        (Some(false), Some(3)),
        "{s}"
    );
    assert_eq!(snapshot(&fx.store), before, "status wrote into the store");
    // ...and the next start adopts it: the marker, and the litter gone.
    let v = warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    assert_eq!(
        (v["from_store"].as_u64(), v["store"]["temp_files_removed"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    assert!(fx.store.join("CACHEDIR.TAG").is_file());
}

#[test]
fn another_programs_cache_directory_is_not_a_store() {
    let fx = Fixture::new();
    let target = fx.dir.path().join("target");
    std::fs::create_dir_all(target.join("debug")).expect("mkdir");
    std::fs::write(
        target.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by cargo.\n",
    )
    .expect("tag");
    chmod(&target, 0o700);
    let before = snapshot(&target);
    let out = cli(
        fx.dir.path(),
        &["clear".as_ref(), "--store".as_ref(), target.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another program"), "{stderr}");
    let v = warm(&fx, &["--store".as_ref(), target.as_os_str()]);
    assert_eq!(text(&v, "/store/read_error/kind"), "not_a_store", "{v}");
    assert_eq!(snapshot(&target), before);
}

/// Starts `flock -x LOCK sleep 60` as uid 65534 and waits until it holds the lock.
fn other_uid_holds(lock: &Path) -> Child {
    other_uid_holds_as(lock, &[])
}

/// [`other_uid_holds`], with `sh -c 'sleep 60' ARGS...` as the command: a command line the other
/// user chose.
fn other_uid_holds_as(lock: &Path, args: &[&str]) -> Child {
    let child = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            "flock",
            "-o",
            "-x",
        ])
        .arg(lock)
        .args(["sh", "-c", "sleep 60", "sh"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("needs root: cannot run setpriv ({e})"));
    common::wait_until_held(lock);
    child
}

/// A store as an earlier version left it, which another user can reach: directory `0755`, lock
/// `0644`. Returns the lock file.
fn store_with_a_loose_lock(fx: &Fixture) -> PathBuf {
    chmod(fx.dir.path(), 0o755);
    warm(fx, &["--store".as_ref(), fx.store.as_os_str()]);
    chmod(&fx.store, 0o755);
    let lock = fx.store.join("lock");
    chmod(&lock, 0o644);
    lock
}

#[test]
#[ignore = "needs root: uid 65534 opens and holds the lock file"]
fn a_lock_descriptor_opened_before_the_upgrade_cannot_delay_a_later_start() {
    let fx = Fixture::new();
    let lock = store_with_a_loose_lock(&fx);
    let mut holder = other_uid_holds(&lock);
    let timed = |label: &str| {
        let t = Instant::now();
        let v = warm(
            &fx,
            &[
                "--store".as_ref(),
                fx.store.as_os_str(),
                "--lock-timeout".as_ref(),
                "4".as_ref(),
            ],
        );
        let took = t.elapsed();
        assert_eq!(v["from_store"], 3, "{label}: {v}");
        assert!(
            took < Duration::from_secs(1),
            "{label} waited {took:?} for the old descriptor: {v}"
        );
        v
    };
    let first = timed("the upgraded node's first start");
    assert!(text(&first, "/store/lock_repaired").contains("mode 644"), "{first}");
    assert_eq!(std::fs::metadata(&lock).expect("lock").mode() & 0o777, 0o600);
    let second = timed("the next start");
    assert!(second["store"]["lock_repaired"].is_null(), "{second}");
    // The new lock is out of the other user's reach.
    let out = common::run_as_other_uid("flock", &["-n".as_ref(), lock.as_os_str(), "true".as_ref()]);
    assert!(!out.status.success(), "uid 65534 can open the new lock");
    holder.kill().expect("kill");
    holder.wait().expect("reap");
}

#[test]
fn status_shows_a_loose_lock_and_never_a_pid_others_could_write() {
    let fx = Fixture::new();
    warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    let lock = fx.store.join("lock");
    // Anyone could have written this pid.
    std::fs::write(&lock, b"1\n").expect("write");
    chmod(&lock, 0o666);
    let mut holder = common::hold_lock_exclusively(&lock);
    let out = cli(
        fx.dir.path(),
        &[
            "status".as_ref(),
            "--json".as_ref(),
            "--lock-timeout".as_ref(),
            "0".as_ref(),
            "--store".as_ref(),
            fx.store.as_os_str(),
        ],
    );
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["lock"]["state"], "exclusive", "{v}");
    assert!(
        v["lock"]["last_holder"].is_null(),
        "a pid from a file others can write: {v}"
    );
    assert!(text(&v, "/lock_problem").contains("mode 666"), "{v}");
    let out = cli(
        fx.dir.path(),
        &["status".as_ref(), "--store".as_ref(), fx.store.as_os_str()],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("mode 666") && !shown.contains("pid 1)"), "{shown}");
}

/// A MAC key, 0600.
fn key_at(path: &Path) -> PathBuf {
    common::key_file(path, 7, 0o600)
}

/// The warm report's store error for `--key-file key` and `--store store`.
fn key_refusal(fx: &Fixture, cwd: &Path, key: &Path, store: &OsStr) -> Value {
    let mut args: Vec<&OsStr> = vec!["warm".as_ref(), "--json".as_ref(), "--all-in-dir".as_ref()];
    args.extend(["--wasm-dir".as_ref(), fx.root.as_os_str()]);
    args.extend(["--store".as_ref(), store, "--key-file".as_ref(), key.as_os_str()]);
    let out = cli(cwd, &args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["compiled"], 3, "the node starts: {v}");
    v
}

#[test]
fn a_key_hard_linked_into_the_store_is_refused() {
    let fx = Fixture::new();
    warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    let key = key_at(&fx.dir.path().join("node.key"));
    std::fs::hard_link(&key, fx.store.join("node.key")).expect("link");
    let v = key_refusal(&fx, fx.dir.path(), &key, fx.store.as_os_str());
    assert_eq!(text(&v, "/store/read_error/kind"), "key", "{v}");
    assert!(text(&v, "/store/read_error/message").contains("2 links"), "{v}");
}

#[test]
fn a_key_beside_a_store_named_through_a_missing_directory_and_dot_dot_is_refused() {
    let fx = Fixture::new();
    let s = fx.dir.path().join("s");
    std::fs::create_dir(&s).expect("mkdir");
    chmod(&s, 0o700);
    let key = key_at(&s.join("node.key"));
    // `s/new/..` is `s` once `new` exists; on a first start it does not, and text says otherwise.
    let v = key_refusal(&fx, fx.dir.path(), &key, "s/new/..".as_ref());
    assert!(
        text(&v, "/store/read_error/message").contains("inside the store"),
        "{v}"
    );
}

#[test]
fn a_key_path_longer_than_path_max_inside_the_store_is_refused() {
    let fx = Fixture::new();
    warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    let segment = "d".repeat(250);
    // 20 levels of 251 bytes: over 5000 bytes, past PATH_MAX (4096). Made relative to each new
    // directory's descriptor, as no path that long can be opened.
    use rustix::fs::{Mode, OFlags, mkdirat, openat};
    let mut dir = openat(
        rustix::fs::CWD,
        &fx.store,
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    )
    .expect("open");
    for _ in 0..20 {
        mkdirat(&dir, segment.as_str(), Mode::from_raw_mode(0o700)).expect("mkdir");
        dir = openat(
            &dir,
            segment.as_str(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .expect("open");
    }
    let key_fd = openat(
        &dir,
        "node.key",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o600),
    )
    .expect("create");
    rustix::io::write(&key_fd, &(1..=32u8).collect::<Vec<u8>>()).expect("write the key");
    let mut key = fx.store.clone();
    for _ in 0..20 {
        key.push(&segment);
    }
    key.push("node.key");
    assert!(key.as_os_str().len() > 4096);
    let v = key_refusal(&fx, fx.dir.path(), &key, fx.store.as_os_str());
    assert!(
        text(&v, "/store/read_error/message").contains("inside the store"),
        "{v}"
    );
}

#[test]
#[ignore = "needs root: bind-mounts the store"]
fn a_key_reached_through_a_bind_mount_of_the_store_is_refused() {
    let fx = Fixture::new();
    warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    key_at(&fx.store.join("node.key"));
    let alias = fx.dir.path().join("alias");
    std::fs::create_dir(&alias).expect("mkdir");
    chmod(&alias, 0o700);
    common::mount_or_fail(&["--bind".as_ref(), fx.store.as_os_str(), alias.as_os_str()]);
    let v = key_refusal(&fx, fx.dir.path(), &alias.join("node.key"), fx.store.as_os_str());
    let unmounted = Command::new("umount").arg(&alias).status().is_ok_and(|s| s.success());
    assert!(unmounted, "umount {}", alias.display());
    assert!(
        text(&v, "/store/read_error/message").contains("inside the store"),
        "{v}"
    );
}

#[test]
fn a_store_named_through_a_missing_directory_that_is_the_binary_root_is_refused() {
    let fx = Fixture::new();
    let before = snapshot(&fx.root);
    // `--store nx/../wasm` with `--wasm-dir wasm`, from the fixture's directory.
    let out = cli(
        fx.dir.path(),
        &[
            "warm",
            "--json",
            "--all-in-dir",
            "--wasm-dir",
            "wasm",
            "--store",
            "nx/../wasm",
        ]
        .map(OsStr::new),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["compiled"], 3, "{v}");
    assert_eq!(text(&v, "/store/read_error/kind"), "inside_binary_root", "{v}");
    assert_eq!(snapshot(&fx.root), before, "the binary root is untouched");
}

#[test]
fn litter_goes_temp_files_and_non_files_under_artifact_names() {
    let fx = Fixture::new();
    let store = ["--store".as_ref(), fx.store.as_os_str()];
    warm(&fx, &store);
    // Left by a writer killed mid-publication: the next start removes it.
    std::fs::write(fx.store.join(".tmp-99999-0-00000000.part"), b"half").expect("temp");
    let v = warm(&fx, &store);
    assert_eq!(
        (v["from_store"].as_u64(), v["store"]["temp_files_removed"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    assert!(common::files_with_prefix(&fx.store, ".tmp-").is_empty());

    // A temp file, an empty directory, a FIFO and a non-empty directory under artifact names.
    let name = |b: u8| format!("{}-{}.cwasm", "ab".repeat(16), hex::encode([b; 32]));
    std::fs::write(fx.store.join(".tmp-99999-1-00000000.part"), b"half").expect("temp");
    std::fs::create_dir(fx.store.join(name(1))).expect("mkdir");
    common::sh(&format!("mkfifo {}", name(2)), &fx.store);
    std::fs::create_dir(fx.store.join(name(3))).expect("mkdir");
    std::fs::write(fx.store.join(name(3)).join("kept"), b"x").expect("write");
    let status = cli(fx.dir.path(), &[&["status".as_ref()], &store[..]].concat());
    let shown = String::from_utf8_lossy(&status.stdout);
    for b in [1, 2, 3] {
        assert!(shown.contains(&hex::encode([b; 32])), "named by status: {shown}");
    }
    let out = cli(
        fx.dir.path(),
        &[&["prune".as_ref(), "--stale".as_ref()], &store[..]].concat(),
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "the non-empty directory is left: {printed}");
    assert!(printed.contains(&name(3)), "and named: {printed}");
    assert!(
        !fx.store.join(name(1)).exists() && !fx.store.join(name(2)).exists(),
        "{printed}"
    );
    assert!(
        fx.store.join(name(3)).join("kept").exists(),
        "nothing inside a directory is deleted"
    );
    assert!(common::files_with_prefix(&fx.store, ".tmp-").is_empty(), "{printed}");
    assert_eq!(warm(&fx, &store)["from_store"], 3);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_bake_that_cannot_store_everything_fails_with_the_native_artifacts_stored() {
    let fx = Fixture::new();
    let mixer = common::mixer::component();
    std::fs::write(
        fx.root.join(hex::encode(wasm_node_cache::config::sha256(&mixer))),
        &mixer,
    )
    .expect("mixer");
    let disk = fx.dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    // Room for the native artifacts (the mixer's is about 1.7 MiB), not for three more bakes.
    common::mount_or_fail(&[
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "-o".as_ref(),
        "size=3m,mode=0700".as_ref(),
        "tmpfs".as_ref(),
        disk.as_os_str(),
    ]);
    let bake = disk.join("bake");
    let out = cli(
        fx.dir.path(),
        &[
            "warm".as_ref(),
            "--json".as_ref(),
            "--all-in-dir".as_ref(),
            "--wasm-dir".as_ref(),
            fx.root.as_os_str(),
            "--store".as_ref(),
            bake.as_os_str(),
            "--cpu-profile".as_ref(),
            "native,x86-64-v2,x86-64-v3,x86-64-v4".as_ref(),
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let names = common::files_with_prefix(&bake, "").len();
    let unmounted = Command::new("umount").arg(&disk).status().is_ok_and(|s| s.success());
    assert!(unmounted, "umount {}", disk.display());
    assert_eq!(out.status.code(), Some(1), "an incomplete bake fails: {stderr}\n{v}");
    assert_eq!(v["store"]["written"], 4, "native artifacts first, all stored: {v}");
    assert!(stderr.contains("incomplete bake"), "{stderr}");
    let failed: usize = v["baked"]
        .as_array()
        .expect("baked")
        .iter()
        .map(|b| b["failed"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(failed > 0, "{v}");
    let named = stderr.lines().filter(|l| l.starts_with("  x86-64")).count();
    assert_eq!(named, failed, "each artifact not stored is named: {stderr}");
    assert!(names >= 4, "{names}");
}

/// What a user keeps in a directory: names a store uses, and nothing that proves one.
fn users_directories(fx: &Fixture) -> Vec<PathBuf> {
    let make = |name: &str, fill: &dyn Fn(&Path)| {
        let dir = fx.dir.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        fill(&dir);
        chmod(&dir, 0o700);
        dir
    };
    vec![
        make("lock-file", &|d| {
            std::fs::write(d.join("lock"), b"my own lock, not a pid\n").expect("write");
            chmod(&d.join("lock"), 0o644);
        }),
        make("notes", &|d| {
            std::fs::write(d.join(".tmp-notes.txt"), b"draft\n").expect("write")
        }),
        make("work", &|d| {
            std::fs::create_dir(d.join(".tmp-work")).expect("mkdir");
            std::fs::write(d.join(".tmp-work/todo"), b"x\n").expect("write");
        }),
        make("lock-dir", &|d| std::fs::create_dir(d.join("lock")).expect("mkdir")),
        make("empty-artifact", &|d| {
            std::fs::write(d.join("lock"), b"").expect("write");
            std::fs::write(d.join(format!("{}-{}.cwasm", "ab".repeat(16), "cd".repeat(32))), b"").expect("write");
        }),
    ]
}

#[test]
fn a_users_lock_or_temp_file_alone_is_never_taken_for_a_store() {
    let fx = Fixture::new();
    for dir in users_directories(&fx) {
        let before = snapshot(&dir);
        let store = [OsStr::new("--store"), dir.as_os_str()];
        let v = warm(&fx, &store);
        assert_eq!(
            text(&v, "/store/read_error/kind"),
            "not_a_store",
            "{}: {v}",
            dir.display()
        );
        assert!(
            text(&v, "/store/read_error/message").contains("not provably a store"),
            "{v}"
        );
        assert_eq!(v["compiled"], 3, "the node starts: {v}");
        for command in [&["clear"][..], &["prune", "--stale"], &["verify"], &["status"]] {
            let args: Vec<&OsStr> = command.iter().map(OsStr::new).chain(store).collect();
            let out = cli(fx.dir.path(), &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?} on {}: {stderr}", dir.display());
            assert!(stderr.contains("not provably a store"), "{command:?}: {stderr}");
        }
        assert_eq!(snapshot(&dir), before, "{} was changed", dir.display());
        assert!(!dir.join("CACHEDIR.TAG").exists(), "a marker in {}", dir.display());
    }
}

/// `warm --json` over `root` into `store`, as a separate process whose output is read later.
fn spawn_warm(root: &Path, store: &Path) -> Child {
    common::cli_command(root)
        .args(["warm", "--json", "--all-in-dir", "--wasm-dir"])
        .arg(root)
        .arg("--store")
        .arg(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wasm-node-cache")
}

fn finish(child: Child, what: &str) -> Value {
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stderr}"))
}

/// True while some process holds `lock` (root cannot take it exclusively without waiting).
fn is_held(lock: &Path) -> bool {
    lock.exists()
        && !Command::new("flock")
            .args(["-n", "-x"])
            .arg(lock)
            .arg("true")
            .status()
            .is_ok_and(|s| s.success())
}

#[test]
fn a_hard_link_or_chmod_of_the_lock_during_a_cold_start_splits_nothing() {
    const N: usize = 32;
    let corpus = common::generated_corpus(N as u32, 400);
    for mutation in ["a hard link (cp -al)", "chmod 644"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let backup = dir.path().join("backup");
        std::fs::create_dir(&backup).expect("mkdir");
        let lock = store.join("lock");
        let mut first = spawn_warm(&corpus.root, &store);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_held(&lock) {
            assert!(Instant::now() < deadline, "the first start never took its lock");
            std::thread::sleep(Duration::from_millis(2));
        }
        if mutation.starts_with("a hard link") {
            std::fs::hard_link(&lock, backup.join("lock")).expect("link");
        } else {
            chmod(&lock, 0o644);
        }
        let second = spawn_warm(&corpus.root, &store);
        let prune = common::cli_command(dir.path())
            .args(["prune", "--stale", "--json", "--store"])
            .arg(&store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prune");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            first.try_wait().expect("poll").is_none(),
            "the first start ended before the second and the prune began: this run proves nothing (make the corpus larger)"
        );
        let first = finish(first, "first start");
        let second = finish(second, "second start");
        let pruned = prune.wait_with_output().expect("prune");
        assert_eq!(
            pruned.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&pruned.stderr)
        );
        let compiled = first["compiled"].as_u64().unwrap_or(0) + second["compiled"].as_u64().unwrap_or(0);
        assert_eq!(
            compiled, N as u64,
            "after {mutation}, each component compiled once across both starts: {first}\n{second}"
        );
        for v in [&first, &second] {
            assert!(
                v["store"]["write_error"].is_null() && v["store"]["read_error"].is_null(),
                "after {mutation}, no publish failed: {v}"
            );
            assert_eq!(v["store"]["written"], v["compiled"], "{v}");
            assert_eq!(
                v["compiled"].as_u64().unwrap_or(0) + v["from_store"].as_u64().unwrap_or(0),
                N as u64,
                "{v}"
            );
        }
        assert_eq!(common::artifact_count(&store), N, "after {mutation}");
        // Once nobody holds it, the next start replaces it: a lock only this uid can open.
        warm_quietly(&corpus.root, &store);
        let st = std::fs::metadata(&lock).expect("lock");
        assert_eq!((st.nlink(), st.mode() & 0o777), (1, 0o600), "after {mutation}");
    }
}

fn warm_quietly(root: &Path, store: &Path) -> Value {
    finish(spawn_warm(root, store), "a later start")
}

#[test]
fn verify_never_changes_a_loose_lock_or_anything_else() {
    let fx = Fixture::new();
    warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    let lock = fx.store.join("lock");
    chmod(&lock, 0o644);
    let ino = std::fs::metadata(&lock).expect("lock").ino();
    let before = snapshot(&fx.store);
    for args in [&["verify"][..], &["verify", "--json"]] {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([OsStr::new("--store"), fx.store.as_os_str()]);
        let out = cli(fx.dir.path(), &all);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let st = std::fs::metadata(&lock).expect("lock");
    assert_eq!((st.ino(), st.mode() & 0o777), (ino, 0o644), "verify replaced the lock");
    assert_eq!(snapshot(&fx.store), before);
}

#[test]
#[ignore = "needs root: uid 65534 holds the lock with a command line of its choosing"]
fn status_escapes_what_another_user_wrote_and_names_only_the_process_that_recorded_itself() {
    let fx = Fixture::new();
    let lock = store_with_a_loose_lock(&fx);
    let forged = "x\x1b[2J\x1b[H\nlock:         free";
    let mut holder = other_uid_holds_as(&lock, &[forged]);
    let status = |json: bool| {
        // The lock is held throughout: what status shows of the holder, without waiting for it.
        let mut args: Vec<&OsStr> = vec!["status".as_ref(), "--lock-timeout".as_ref(), "0".as_ref()];
        if json {
            args.push("--json".as_ref());
        }
        args.extend([OsStr::new("--store"), fx.store.as_os_str()]);
        cli(fx.dir.path(), &args)
    };
    let out = status(false);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout.contains(&0x1b),
        "an escape byte reached the terminal: {shown:?}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("lock:         free")),
        "a forged line: {shown}"
    );
    assert!(shown.contains(r"x\x1b[2J\x1b[H\nlock:         free"), "{shown}");
    let v: Value = serde_json::from_slice(&status(true).stdout).expect("json");
    assert_eq!(
        v["lock"]["holders"][0]["command"].as_str().map(|c| c.contains(forged)),
        Some(true),
        "{v}"
    );
    holder.kill().expect("kill");
    holder.wait().expect("reap");

    // A record naming a process that did not write it (a pid reused), and one from another pid
    // namespace (pid 1 there): neither is shown as a process of this namespace.
    chmod(&lock, 0o600);
    let mut bystander = Command::new("sleep").arg("60").spawn().expect("sleep");
    let reused = format!("pid {}, no longer running", bystander.id());
    for (record, expect, other_namespace) in [
        (format!("{} 1 0\n", bystander.id()), reused.as_str(), false),
        ("1 12345 1\n".to_owned(), "pid 1 in another pid namespace", true),
    ] {
        std::fs::write(&lock, &record).expect("record");
        // `flock` records nothing: the record above stays the last exclusive holder's.
        let mut flock = Command::new("flock")
            .args(["-o", "-x"])
            .arg(&lock)
            .args(["sleep", "60"])
            .spawn()
            .expect("flock");
        common::wait_until_held(&lock);
        let shown = String::from_utf8_lossy(&status(false).stdout).into_owned();
        assert!(
            shown.contains(&format!("last exclusive holder recorded: {expect}")),
            "{record:?}: {shown}"
        );
        let v: Value = serde_json::from_slice(&status(true).stdout).expect("json");
        let last = &v["lock"]["last_holder"];
        assert_eq!(
            (
                last["alive"].as_bool(),
                last["command"].is_null(),
                last["other_pid_namespace"].as_bool()
            ),
            (Some(false), true, Some(other_namespace)),
            "{record:?}: {v}"
        );
        flock.kill().expect("kill");
        flock.wait().expect("reap");
    }
    bystander.kill().expect("kill");
    bystander.wait().expect("reap");
}
