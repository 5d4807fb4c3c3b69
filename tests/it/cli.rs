//! The `wasm-node-cache` binary as an operator runs it: real processes, the shipped components,
//! temp-dir stores.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use wasm_node_cache::config::sha256;

use crate::common;

const SUBCOMMANDS: [&str; 5] = ["warm", "status", "verify", "prune", "clear"];

/// A working directory holding `config/wasm` and `config/wasm.conf` (copies of the shipped ones,
/// so the CLI's defaults apply) and a store path that does not exist yet.
///
/// Only the three WAT components are copied, and `wasm.conf` is cut down to them: the generated
/// mixer takes a good part of a second to compile, and most tests here start cold at least once.
struct Site {
    dir: tempfile::TempDir,
    store: PathBuf,
    hashes: Vec<String>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let wasm = dir.path().join("config").join("wasm");
        std::fs::create_dir_all(&wasm).expect("mkdir");
        let mut hashes: Vec<String> = common::shipped_sources()
            .iter()
            .map(|(_, bytes)| hex::encode(sha256(bytes)))
            .collect();
        hashes.sort();
        assert_eq!(hashes.len(), 3, "components/ holds three WAT components");
        for h in &hashes {
            std::fs::copy(shipped.join("wasm").join(h), wasm.join(h)).expect("copy component");
        }
        // The shipped wasm.conf's lines (comments included) minus the mixer's.
        let conf = std::fs::read_to_string(shipped.join("wasm.conf")).expect("read wasm.conf");
        let conf: String = conf
            .lines()
            .filter(|l| l.starts_with('#') || hashes.iter().any(|h| l.starts_with(h.as_str())))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(conf.lines().filter(|l| !l.starts_with('#')).count(), 3, "{conf}");
        std::fs::write(dir.path().join("config").join("wasm.conf"), conf).expect("write wasm.conf");
        let store = dir.path().join("store");
        Site { dir, store, hashes }
    }

    /// Runs the CLI in the site with `--store` appended; the environment cannot redirect it.
    fn run(&self, args: &[&str]) -> Output {
        self.run_raw(&[args, &["--store", self.store.to_str().expect("utf-8 path")]].concat())
    }

    fn run_raw(&self, args: &[&str]) -> Output {
        common::run_cli(self.dir.path(), args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert_ok(&out, args);
        serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
    }

    fn warm(&self) -> Value {
        self.json(&["warm", "--json"])
    }

    /// The artifact files in the store, sorted.
    fn artifacts(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.store)
            .expect("store exists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        v.sort();
        v
    }

    fn artifact_of(&self, hash: &str) -> PathBuf {
        let name = self
            .artifacts()
            .into_iter()
            .find(|n| n.ends_with(&format!("-{hash}.cwasm")))
            .expect("artifact of hash");
        self.store.join(name)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, args: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn hashes_of(status: &Value) -> Vec<String> {
    let mut v: Vec<String> = status["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["hash"].as_str().expect("hash").to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_help_exits_zero_with_examples_and_exit_codes() {
    let site = Site::new();
    let mut invocations: Vec<Vec<&str>> = vec![vec!["--help"]];
    invocations.extend(SUBCOMMANDS.iter().map(|c| vec![*c, "--help"]));
    for args in invocations {
        let out = site.run_raw(&args);
        assert_ok(&out, &args);
        let help = text(&out.stdout);
        assert!(help.contains("Examples"), "{args:?} has no examples:\n{help}");
        assert!(
            help.contains("Exit status"),
            "{args:?} documents no exit status:\n{help}"
        );
    }
}

#[test]
fn status_lists_what_warm_stored() {
    let site = Site::new();
    let warm = site.warm();
    assert_eq!(warm["compiled"], 3, "{warm}");
    let status = site.json(&["status", "--json"]);
    assert_eq!(hashes_of(&status), site.hashes);
    assert_eq!(status["path"], site.store.display().to_string());
    assert_eq!(status["fingerprint"], warm["store"]["fingerprint"]);
    assert_eq!(status["lock"]["state"], "free");
    for e in status["entries"].as_array().expect("entries") {
        assert_eq!(e["current"], true, "{e}");
        assert!(e["header_error"].is_null(), "{e}");
        assert!(e["size"].as_u64().expect("size") > 128, "{e}");
        assert!(e["created"].as_str().expect("created").ends_with("UTC"), "{e}");
    }
    let table = site.run(&["status"]);
    assert_ok(&table, &["status"]);
    let table = text(&table.stdout);
    for h in &site.hashes {
        assert!(table.contains(h), "table lacks {h}:\n{table}");
    }
    assert!(table.contains("3 current, 0 stale"), "{table}");
}

#[test]
fn verify_passes_a_sound_store_and_names_a_flipped_bit() {
    let site = Site::new();
    site.warm();
    let out = site.run(&["verify"]);
    assert_ok(&out, &["verify"]);
    assert!(text(&out.stdout).contains("3 ok, 0 bad"), "{}", text(&out.stdout));

    let victim = &site.hashes[1];
    let path = site.artifact_of(victim);
    let mut bytes = std::fs::read(&path).expect("read artifact");
    // Mid-file is payload: the trailer is the last 128 bytes.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, &bytes).expect("corrupt artifact");
    let before = site.artifacts();

    let out = site.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let bad: Vec<&str> = stdout.lines().filter(|l| l.starts_with("BAD")).collect();
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(bad[0].contains(victim.as_str()), "{stdout}");
    assert!(bad[0].contains("checksum"), "the reason is given: {stdout}");
    assert!(stdout.contains("2 ok, 1 bad"), "{stdout}");
    assert_eq!(site.artifacts(), before, "verify never modifies the store");
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "verify never repairs");
}

#[test]
fn prune_to_a_smaller_whitelist_then_warm_loads_all_of_it() {
    let site = Site::new();
    site.warm();
    let kept = &site.hashes[..2];
    let small = site.dir.path().join("small.conf");
    std::fs::write(&small, format!("# two of three\n{}\n", kept.join("\n"))).expect("write whitelist");
    let small = small.to_str().expect("utf-8");

    let out = site.run(&["prune", "--whitelist", small]);
    assert_ok(&out, &["prune"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&site.hashes[2]), "names what it removed: {stdout}");
    assert!(stdout.contains("not whitelisted"), "{stdout}");
    assert!(stdout.contains("removed 1 artifact(s)"), "{stdout}");
    let status = site.json(&["status", "--json"]);
    assert_eq!(hashes_of(&status), kept);

    let warm = site.json(&["warm", "--json", "--whitelist", small]);
    assert_eq!(
        (&warm["from_store"], &warm["compiled"]),
        (&2.into(), &0.into()),
        "{warm}"
    );
}

#[test]
fn dry_run_removes_nothing() {
    let site = Site::new();
    site.warm();
    let before = site.artifacts();
    let empty = site.dir.path().join("empty.conf");
    std::fs::write(&empty, "# nothing\n").expect("write whitelist");
    let args = [
        "prune",
        "--stale",
        "--whitelist",
        empty.to_str().expect("utf-8"),
        "--max-size",
        "0",
        "--dry-run",
    ];
    let out = site.run(&args);
    assert_ok(&out, &args);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("would remove")).count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("dry run"), "{stdout}");
    assert_eq!(site.artifacts(), before);
}

#[test]
fn prune_stale_and_max_size() {
    let site = Site::new();
    site.warm();
    // An artifact of another engine (say, before a wasmtime upgrade): same bytes, another name.
    let current = site.artifact_of(&site.hashes[0]);
    let stale_name = format!("{}-{}.cwasm", "00".repeat(16), site.hashes[0]);
    std::fs::copy(&current, site.store.join(&stale_name)).expect("plant stale artifact");
    let status = site.json(&["status", "--json"]);
    assert_eq!(status["stale"], 1, "{status}");

    // Planted just now: only without the age guard is it gone at once.
    let out = site.run(&["prune", "--stale"]);
    assert_ok(&out, &["prune", "--stale"]);
    assert!(site.artifacts().contains(&stale_name), "used within --min-idle: kept");
    let out = site.run(&["prune", "--stale", "--min-idle", "0"]);
    assert_ok(&out, &["prune", "--stale", "--min-idle", "0"]);
    assert!(text(&out.stdout).contains("stale"), "{}", text(&out.stdout));
    assert!(!site.artifacts().contains(&stale_name));
    assert_eq!(site.artifacts().len(), 3, "current artifacts are kept");

    let out = site.run(&["prune", "--max-size", "1K"]);
    assert_ok(&out, &["prune", "--max-size", "1K"]);
    assert!(text(&out.stdout).contains("over size budget"), "{}", text(&out.stdout));
    assert!(site.artifacts().is_empty(), "no artifact fits in 1 KiB");

    let out = site.run(&["prune", "--max-size", "12X"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("12X"), "{}", text(&out.stderr));
}

#[test]
fn clear_empties_the_store_and_keeps_the_directory() {
    let site = Site::new();
    site.warm();
    std::fs::write(site.store.join(".tmp-leftover"), b"half written").expect("temp file");
    let out = site.run(&["clear"]);
    assert_ok(&out, &["clear"]);
    assert!(
        text(&out.stdout).contains("removed 3 artifact(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(site.artifacts().is_empty());
    assert!(site.store.is_dir() && site.store.join("lock").exists());
    assert!(!site.store.join(".tmp-leftover").exists(), "temp files go too");
    let status = site.json(&["status", "--json"]);
    assert!(hashes_of(&status).is_empty());
    assert_eq!(site.warm()["compiled"], 3, "the next start compiles again");
}

#[test]
fn a_missing_store_is_named_in_one_line_and_not_created() {
    let site = Site::new();
    for cmd in [&["status"][..], &["verify"], &["prune", "--stale"], &["clear"]] {
        let out = site.run(cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{cmd:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {}: ", site.store.display())),
            "{cmd:?}: {stderr}"
        );
        assert!(stderr.contains("no store"), "{cmd:?}: {stderr}");
        assert!(!site.store.exists(), "{cmd:?} created the store");
    }
}

#[test]
fn prune_without_a_criterion_is_refused() {
    let site = Site::new();
    site.warm();
    let out = site.run(&["prune"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--stale"), "{}", text(&out.stderr));
    assert_eq!(site.artifacts().len(), 3);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `status | head -1`: the reader goes away before the CLI writes; it must not panic.
    let site = Site::new();
    site.json(&["warm", "--json"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm-node-cache"))
        .args(["status", "--store"])
        .arg(&site.store)
        .current_dir(site.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run status");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn numbers_that_do_not_fit_are_refused_with_exit_2_not_a_panic() {
    let site = Site::new();
    for value in ["1e20", "-1", "NaN", "inf"] {
        for cmd in ["warm", "verify", "clear"] {
            let out = site.run(&[cmd, &format!("--lock-timeout={value}")]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} --lock-timeout {value}: {stderr}");
            assert!(stderr.contains("--lock-timeout"), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
#[ignore = "needs root: gives an artifact to uid 65534"]
fn verify_and_status_flag_writable_and_foreign_owned_artifacts() {
    let site = Site::new();
    site.warm();
    let writable = site.artifact_of(&site.hashes[0]);
    std::fs::set_permissions(&writable, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let out = site.run(&["verify"]);
    assert_ok(&out, &["verify"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("writable (mode 644)"), "{stdout}");
    let status = text(&site.run(&["status"]).stdout);
    assert!(status.contains("1 writable"), "{status}");

    let foreign = site.artifact_of(&site.hashes[1]);
    common::give_to_other_uid(&foreign);
    let out = site.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    let bad: Vec<&str> = stdout.lines().filter(|l| l.starts_with("BAD")).collect();
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(
        bad[0].contains(&site.hashes[1]) && bad[0].contains("owned by uid 65534"),
        "{stdout}"
    );
    // A refused artifact makes the store unhealthy: status still prints its JSON, and exits 1.
    let out = site.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let status: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(status["healthy"], false, "{status}");
    let refused: Vec<&Value> = status["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| !e["refused"].is_null())
        .collect();
    assert_eq!(refused.len(), 1, "{status}");
    assert_eq!(refused[0]["uid"], 65534);
}

#[test]
#[ignore = "needs root: gives a home directory to uid 65534"]
fn the_default_store_is_never_below_another_users_home() {
    let site = Site::new();
    let home = site.dir.path().join("home");
    let tmp = site.dir.path().join("tmp");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::create_dir(&tmp).expect("mkdir");
    common::give_to_other_uid(&home);
    // What `sudo -E` leaves a root node with: the invoking user's $HOME.
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-node-cache"))
        .args(["warm", "--json"])
        .current_dir(site.dir.path())
        .env_remove("WASM_NODE_CACHE_DIR")
        .env_remove("WASM_NODE_CACHE_KEY_FILE")
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .output()
        .expect("run");
    assert_ok(&out, &["warm"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let path = v["store"]["path"].as_str().expect("store path");
    assert!(path.starts_with(tmp.to_str().expect("utf-8")), "{path}");
    assert_eq!(v["store"]["written"], 3, "{v}");
    assert!(
        std::fs::read_dir(&home).expect("home").next().is_none(),
        "nothing created in their home"
    );
}

/// A bake's portable artifacts are this build's too (served to hosts of other CPUs): `verify`
/// checks them as it checks native ones, instead of counting them as other fingerprints.
#[cfg(target_arch = "x86_64")]
#[test]
fn verify_checks_a_bakes_portable_artifacts_and_names_a_corrupt_one() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    // A bake of a portable profile alone: native artifacts were not asked for, so their absence
    // is no problem (`--strict` passes, the store is not said to be unwritable).
    let v = site.json(&["warm", "--cpu-profile", "x86-64-v2", "--strict", "--json"]);
    assert_eq!(v["baked"][0]["written"], 3, "{v}");
    assert!(v["store"]["write_error"].is_null(), "{v}");
    let out = site.run(&["verify"]);
    assert_ok(&out, &["verify"]);
    let stdout = text(&out.stdout);
    let ok: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok")).collect();
    assert_eq!(ok.len(), 3, "{stdout}");
    assert!(ok.iter().all(|l| l.contains("(x86-64-v2)")), "{stdout}");
    assert!(stdout.contains("3 ok, 0 bad"), "{stdout}");
    assert!(
        !stdout.contains("other fingerprints"),
        "none is left unchecked: {stdout}"
    );

    let victim = &site.hashes[1];
    let path = std::fs::read_dir(&site.store)
        .expect("store")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains(victim.as_str()))
        .expect("the victim's portable artifact");
    let mut bytes = std::fs::read(&path).expect("read artifact");
    // Mid-file is payload: the trailer is the last 128 bytes.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&path, &bytes).expect("corrupt artifact");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");

    let out = site.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let bad: Vec<&str> = stdout.lines().filter(|l| l.starts_with("BAD")).collect();
    assert_eq!(bad.len(), 1, "{stdout}");
    assert!(
        bad[0].contains(victim.as_str()) && bad[0].contains("x86-64-v2") && bad[0].contains("checksum"),
        "{stdout}"
    );
    assert!(stdout.contains("2 ok, 1 bad"), "{stdout}");
}
