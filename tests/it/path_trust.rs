//! Paths are trusted as given, step by step: a symbolic link another user owns never redirects a
//! store, a read-only store, the key file or the default location; the lock file is trusted like
//! an artifact; names are exact; maintenance survives a bad read-only store; whitelist files
//! never block. The node is the real binary, in a separate process; the attacker's files belong
//! to a second uid (65534), which needs root (tests marked `#[ignore = "needs root: ..."]`).

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, chmod, give_to_other_uid, snapshot};
use serde_json::Value;

/// The CLI, with an environment that cannot redirect it.
fn cli(fx: &Fixture, args: &[&std::ffi::OsStr]) -> Output {
    cli_command(fx).args(args).output().expect("run wasm-node-cache")
}

fn cli_command(fx: &Fixture) -> Command {
    common::cli_command(fx.dir.path())
}

/// `warm --json` over the fixture's components, plus `extra`; the node must start.
fn warm(fx: &Fixture, extra: &[&std::ffi::OsStr]) -> Value {
    let mut args: Vec<&std::ffi::OsStr> = vec!["warm".as_ref(), "--json".as_ref(), "--wasm-dir".as_ref()];
    args.push(fx.root.as_os_str());
    args.push("--all-in-dir".as_ref());
    args.extend_from_slice(extra);
    let out = cli(fx, &args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// A root-owned, owner-only directory holding what a root node's store would hold (a lock with a
/// pid, a temp file), and a link to it owned by uid 65534 in a directory uid 65534 owns: the
/// attack of a local user on a root node told to use a path below that user's directory.
struct Planted {
    target: PathBuf,
    link: PathBuf,
    before: BTreeMap<PathBuf, Vec<u8>>,
}

impl Planted {
    fn new(fx: &Fixture, fill: impl FnOnce(&Path)) -> Planted {
        let target = fx.dir.path().join("root-only");
        std::fs::create_dir(&target).expect("mkdir");
        chmod(&target, 0o700);
        fill(&target);
        let theirs = fx.dir.path().join("nobody");
        std::fs::create_dir(&theirs).expect("mkdir");
        chmod(&theirs, 0o755);
        give_to_other_uid(&theirs);
        let link = theirs.join("link");
        symlink(&target, &link).expect("symlink");
        give_to_other_uid(&link);
        Planted {
            before: snapshot(&target),
            target,
            link,
        }
    }

    fn assert_untouched(&self) {
        assert_eq!(
            snapshot(&self.target),
            self.before,
            "something was written, truncated or deleted in {}",
            self.target.display()
        );
    }
}

/// What a store root's node leaves in its directory: a lock with a pid and an unfinished write.
fn store_leftovers(dir: &Path) {
    std::fs::write(dir.join("lock"), b"4242\n").expect("lock");
    chmod(&dir.join("lock"), 0o600);
    std::fs::write(dir.join(".tmp-unfinished"), b"half an artifact").expect("temp");
}

fn error_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The message of the store problem (`{"kind", "message"}`) at `pointer`: it names the path and
/// the cause.
fn problem_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    error_of(v, &format!("{pointer}/message"))
}

#[test]
#[ignore = "needs root: plants a link owned by uid 65534"]
fn a_link_owned_by_another_user_never_redirects_the_store() {
    let fx = Fixture::new();
    let planted = Planted::new(&fx, store_leftovers);
    let v = warm(&fx, &["--store".as_ref(), planted.link.join("store").as_os_str()]);
    assert_eq!(v["compiled"], 3, "{v}");
    let e = problem_of(&v, "/store/read_error");
    assert!(e.contains("65534"), "{v}");
    // The link itself, as the store path: refused the same way.
    let v = warm(&fx, &["--store".as_ref(), planted.link.as_os_str()]);
    assert!(problem_of(&v, "/store/read_error").contains("65534"), "{v}");
    // Their link in a directory of root's (chowned there): refused for its owner alone.
    let loose_link = fx.dir.path().join("their-link");
    symlink(&planted.target, &loose_link).expect("symlink");
    give_to_other_uid(&loose_link);
    let v = warm(&fx, &["--store".as_ref(), loose_link.as_os_str()]);
    let e = problem_of(&v, "/store/read_error");
    assert!(e.contains("symbolic link owned by uid 65534"), "{v}");
    planted.assert_untouched();
    // The same target reached without the foreign link is a fine store (once it is one: a lock
    // and a temp file alone prove nothing).
    common::mark_store(&planted.target);
    let v = warm(&fx, &["--store".as_ref(), planted.target.as_os_str()]);
    assert_eq!(v["store"]["written"], 3, "{v}");
}

#[test]
#[ignore = "needs root: plants a link owned by uid 65534"]
fn a_link_owned_by_another_user_never_redirects_a_read_only_store() {
    let fx = Fixture::new();
    let planted = Planted::new(&fx, |dir| {
        // A sound bake of every component, so that only the path check can refuse it.
        fx.builder().store(dir.join("bake")).build().expect("bake");
        std::fs::remove_file(dir.join("bake/lock")).expect("no lock in a bake");
    });
    let own = fx.dir.path().join("own-store");
    let v = warm(
        &fx,
        &[
            "--store".as_ref(),
            own.as_os_str(),
            "--read-only-store".as_ref(),
            planted.link.join("bake").as_os_str(),
        ],
    );
    assert_eq!(
        (v["from_store"].as_u64(), v["compiled"].as_u64()),
        (Some(0), Some(3)),
        "{v}"
    );
    assert!(problem_of(&v, "/read_only_stores/0/error").contains("65534"), "{v}");
    planted.assert_untouched();
}

#[test]
#[ignore = "needs root: plants a link owned by uid 65534"]
fn a_key_file_reached_through_another_users_link_is_refused() {
    let fx = Fixture::new();
    let planted = Planted::new(&fx, |dir| {
        common::key_file(&dir.join("node.key"), 9, 0o600);
    });
    let own = fx.dir.path().join("own-store");
    let v = warm(
        &fx,
        &[
            "--store".as_ref(),
            own.as_os_str(),
            "--key-file".as_ref(),
            planted.link.join("node.key").as_os_str(),
        ],
    );
    assert_eq!(v["compiled"], 3, "{v}");
    let e = problem_of(&v, "/store/read_error");
    assert!(e.contains("MAC key file") && e.contains("65534"), "{v}");
    assert_eq!(common::artifact_count(&own), 0, "nothing stored without a trusted key");
    planted.assert_untouched();
}

#[test]
#[ignore = "needs root: plants a link owned by uid 65534 in a sticky directory"]
fn the_default_store_never_follows_a_link_another_user_planted_in_tmp() {
    let fx = Fixture::new();
    // A private `/tmp`: root's, sticky, writable by all.
    let tmp = fx.dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    chmod(&tmp, 0o1777);
    let target = fx.dir.path().join("root-only");
    std::fs::create_dir(&target).expect("mkdir");
    chmod(&target, 0o700);
    store_leftovers(&target);
    let before = snapshot(&target);
    let euid = rustix::process::geteuid().as_raw();
    let link = tmp.join(format!("wasm-node-cache-{euid}"));
    symlink(&target, &link).expect("symlink");
    give_to_other_uid(&link);
    let out = cli_command(&fx)
        .args(["warm", "--json", "--all-in-dir", "--wasm-dir"])
        .arg(&fx.root)
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("TMPDIR", &tmp)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(error_of(&v, "/store/path"), link.to_str().expect("utf-8"), "{v}");
    let e = problem_of(&v, "/store/read_error");
    assert!(e.contains("symbolic link owned by uid 65534"), "{v}");
    assert_eq!(v["compiled"], 3, "{v}");
    assert_eq!(snapshot(&target), before, "the link's target was touched");
}

#[test]
fn a_hard_linked_lock_file_is_left_byte_for_byte_unchanged() {
    let fx = Fixture::new();
    let store = fx.dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir");
    chmod(&store, 0o700);
    let victim = fx.dir.path().join("victim");
    let precious = b"precious: not a pid\n".repeat(100);
    std::fs::write(&victim, &precious).expect("write");
    chmod(&victim, 0o600);
    common::mark_store(&store);
    std::fs::hard_link(&victim, store.join("lock")).expect("hard link");
    let v = warm(&fx, &["--store".as_ref(), store.as_os_str()]);
    assert_eq!(v["compiled"], 3, "the node starts: {v}");
    let repaired = v["store"]["lock_repaired"].as_str().unwrap_or_default();
    assert!(repaired.contains("2 hard links"), "the lock was replaced: {v}");
    assert_eq!(std::fs::read(&victim).expect("read"), precious);
    assert_eq!(
        std::fs::metadata(&victim).expect("stat").nlink(),
        1,
        "the store's name for it is gone; the victim is whole"
    );
    assert_eq!(common::artifact_count(&store), 3, "the store works with its own lock");
}

/// Whether uid 65534 can take the lock of `lock` (`flock -n`, as an attacker would hold it).
fn other_uid_can_lock(lock: &Path) -> bool {
    let out = common::run_as_other_uid("flock", &["-n".as_ref(), lock.as_os_str(), "true".as_ref()]);
    out.status.success()
}

#[test]
#[ignore = "needs root: runs flock as uid 65534"]
fn another_uid_can_never_hold_the_lock_of_a_store_the_node_created() {
    let fx = Fixture::new();
    // Everything on the way open to others, as an operator might loosen it.
    chmod(fx.dir.path(), 0o755);
    let v = warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    assert_eq!(v["store"]["written"], 3, "{v}");
    chmod(&fx.store, 0o755);
    let lock = fx.store.join("lock");
    assert_eq!(std::fs::metadata(&lock).expect("lock").mode() & 0o777, 0o600);
    assert!(!other_uid_can_lock(&lock), "uid 65534 could take the node's lock");

    // A lock file others could open (left by an older version, or by a careless chmod) is
    // replaced by a new 0600 file by the next start-up, which says so.
    chmod(&lock, 0o644);
    assert!(
        other_uid_can_lock(&lock),
        "the test's premise: a 0644 lock can be held by others"
    );
    let v = warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    assert_eq!(v["from_store"], 3, "{v}");
    let repaired = error_of(&v, "/store/lock_repaired");
    assert!(repaired.contains("mode 644") && repaired.contains("0600"), "{v}");
    assert_eq!(std::fs::metadata(&lock).expect("lock").mode() & 0o777, 0o600);
    assert!(!other_uid_can_lock(&lock), "uid 65534 could take the repaired lock");
}

#[test]
fn an_uppercase_artifact_name_is_foreign_junk_reported_and_pruned() {
    let fx = Fixture::new();
    let store = ["--store".as_ref(), fx.store.as_os_str()];
    warm(&fx, &store);
    let real = common::artifact_of(&fx.store, &common::adder_hash());
    let name = real.file_name().expect("name").to_str().expect("utf-8");
    let (fp, rest) = name.split_once('-').expect("fingerprint-hash");
    let upper = fx.store.join(format!("{}-{rest}", fp.to_uppercase()));
    std::fs::copy(&real, &upper).expect("copy");

    let out = cli(&fx, &[&["verify".as_ref()], &store[..]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("3 artifact(s)") && stdout.contains("3 ok"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("foreign") && l.contains(upper.to_str().expect("utf-8"))),
        "{stdout}"
    );
    let out = cli(&fx, &[&["status".as_ref(), "--json".as_ref()], &store[..]].concat());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["artifacts"], 3, "{v}");
    assert_eq!(v["foreign_files"][0]["file"], upper.to_str().expect("utf-8"), "{v}");
    let out = cli(&fx, &[&["status".as_ref()], &store[..]].concat());
    assert!(String::from_utf8_lossy(&out.stdout).contains("foreign:"));

    let out = cli(&fx, &[&["prune".as_ref(), "--stale".as_ref()], &store[..]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("foreign file"), "{stdout}");
    assert!(!upper.exists(), "the uppercase twin was pruned");
    assert!(real.exists(), "the real artifact stays");
    let out = cli(&fx, &[&["status".as_ref(), "--json".as_ref()], &store[..]].concat());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["foreign_files"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn status_and_verify_report_a_missing_read_only_store_and_go_on() {
    let fx = Fixture::new();
    let bake = fx.dir.path().join("bake");
    fx.builder().store(&bake).build().expect("bake");
    warm(&fx, &["--store".as_ref(), fx.store.as_os_str()]);
    let missing = fx.dir.path().join("no-such-bake");
    let args = |cmd: &'static str| -> Vec<std::ffi::OsString> {
        vec![
            cmd.into(),
            "--store".into(),
            fx.store.clone().into(),
            "--read-only-store".into(),
            missing.clone().into(),
            "--read-only-store".into(),
            bake.clone().into(),
        ]
    };
    let mut status = args("status");
    status.push("--json".into());
    let status: Vec<&std::ffi::OsStr> = status.iter().map(|a| a.as_os_str()).collect();
    let out = cli(&fx, &status);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("still one valid JSON object");
    let ro = v["read_only_stores"].as_array().expect("read_only_stores");
    assert_eq!(ro.len(), 2, "{v}");
    assert_eq!(ro[0]["path"], missing.to_str().expect("utf-8"));
    assert_eq!(ro[0]["error"]["kind"], "missing", "{v}");
    assert_eq!(ro[1]["artifacts"], 3, "the next store is still shown: {v}");
    assert_eq!(v["artifacts"], 3, "{v}");

    let verify = args("verify");
    let verify: Vec<&std::ffi::OsStr> = verify.iter().map(|a| a.as_os_str()).collect();
    let out = cli(&fx, &verify);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(missing.to_str().expect("utf-8")), "{stdout}");
    assert!(
        stdout.contains(&format!("read-only store {}: 3 ok", bake.display())),
        "the next store is still verified: {stdout}"
    );
}

/// The whitelist `conf` (written by `write`) given to `warm`; returns its output, which must
/// come within a second.
fn warm_with_whitelist(fx: &Fixture, write: impl FnOnce(&Path)) -> Output {
    let conf = fx.dir.path().join("wasm.conf");
    write(&conf);
    let mut child = cli_command(fx)
        .args(["warm", "--json", "--wasm-dir"])
        .arg(&fx.root)
        .arg("--store")
        .arg(&fx.store)
        .arg("--whitelist")
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t = Instant::now();
    // Reading the whitelist comes first and must never block; compiling takes longer.
    while child.try_wait().expect("wait").is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("warm hung on the whitelist file");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_fifo_whitelist_file_is_an_error_naming_it_within_a_second() {
    let fx = Fixture::new();
    let t = Instant::now();
    let out = warm_with_whitelist(&fx, |conf| {
        rustix::fs::mkfifoat(rustix::fs::CWD, conf, rustix::fs::Mode::from_raw_mode(0o600)).expect("mkfifo");
    });
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wasm.conf") && stderr.contains("FIFO"), "{stderr}");
}

#[test]
fn a_whitelist_with_a_bom_and_latin1_comments_loads() {
    let fx = Fixture::new();
    let out = warm_with_whitelist(&fx, |conf| {
        let mut bytes = b"\xef\xbb\xbf# composants de d\xe9monstration (Latin-1)\r\n".to_vec();
        for h in &fx.whitelist {
            bytes.extend_from_slice(hex::encode(h).as_bytes());
            bytes.extend_from_slice(b"  # v\xe9rifi\xe9\r\n");
        }
        std::fs::write(conf, bytes).expect("write");
    });
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["compiled"], 3, "{v}");
}
