//! What an operator alerts on and what maintenance must never do: a MAC-mode store survives
//! maintenance run without the node's key, `warm --strict` fails for each degraded case, `status`
//! gives one verdict and the whitelist's coverage, every command speaks JSON. The real CLI, in
//! separate processes.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Fixture, chmod, run_cli as cli, snapshot};
use serde_json::Value;

fn s<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `warm` over the fixture's components into its store, with `extra`.
fn warm(fx: &Fixture, extra: &[&OsStr]) -> Output {
    let mut args = s(&["warm", "--all-in-dir", "--wasm-dir"]);
    args.push(fx.root.as_os_str());
    args.extend(s(&["--store"]));
    args.push(fx.store.as_os_str());
    args.extend_from_slice(extra);
    cli(fx.dir.path(), &args)
}

/// The store's files but the lock, whose only content is the pid of the last exclusive holder.
fn store_files(store: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut all = snapshot(store);
    all.remove(&store.join("lock"));
    all
}

#[test]
fn a_mac_mode_store_survives_prune_and_verify_without_the_key_byte_for_byte() {
    let fx = Fixture::new();
    let key = common::key_file(&fx.dir.path().join("node.key"), 3, 0o600);
    let with_key = [OsStr::new("--key-file"), key.as_os_str()];
    let out = warm(&fx, &with_key);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let before = store_files(&fx.store);
    let store = [OsStr::new("--store"), fx.store.as_os_str()];

    let verify = cli(fx.dir.path(), &[&s(&["verify"])[..], &store].concat());
    let text = stdout(&verify);
    assert_eq!(
        verify.status.code(),
        Some(1),
        "what verify could not check is a problem: {text}"
    );
    assert!(
        text.contains("NOT CHECKED  3 artifact(s) of this build in MAC mode"),
        "{text}"
    );
    let prune = cli(fx.dir.path(), &[&s(&["prune", "--stale"])[..], &store].concat());
    let text = stdout(&prune);
    assert_eq!(prune.status.code(), Some(0), "{text}");
    assert!(text.contains("kept 3 artifact(s) of this build in MAC mode"), "{text}");
    // Status without the key says what they are, not "stale".
    let status = cli(fx.dir.path(), &[&s(&["status"])[..], &store].concat());
    let text = stdout(&status);
    assert!(
        text.contains("(0 current, 3 of this build in MAC mode, 0 stale)") && text.contains("  MAC mode  "),
        "{text}"
    );
    let v: Value =
        serde_json::from_slice(&cli(fx.dir.path(), &[&s(&["status", "--json"])[..], &store].concat()).stdout)
            .expect("json");
    assert_eq!((v["mac_mode"].as_u64(), v["stale"].as_u64()), (Some(3), Some(0)), "{v}");
    // Asked about the whitelist without the key, status says what it cannot check, not "missing".
    let whitelist = fx.dir.path().join("wasm.conf");
    let listed: Vec<String> = fx.whitelist.iter().map(hex::encode).collect();
    std::fs::write(&whitelist, listed.join("\n")).expect("write whitelist");
    let status = cli(
        fx.dir.path(),
        &[&s(&["status", "--whitelist"])[..], &[whitelist.as_os_str()], &store].concat(),
    );
    let text = stdout(&status);
    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("UNHEALTHY: 3 of 3 whitelisted component(s) held only in MAC mode")
            && !text.contains("missing"),
        "{text}"
    );
    let json = cli(
        fx.dir.path(),
        &[&s(&["prune", "--stale", "--json"])[..], &store].concat(),
    );
    let v: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(
        (v["removed"].as_array().map(Vec::len), v["kept_other_mode"].as_u64()),
        (Some(0), Some(3)),
        "{v}"
    );
    assert_eq!(
        store_files(&fx.store),
        before,
        "the node's artifacts are untouched, byte for byte"
    );

    // The node still starts warm; with its key, verify checks them all.
    let v: Value = serde_json::from_slice(&warm(&fx, &[&with_key[..], &s(&["--json"])].concat()).stdout).expect("json");
    assert_eq!(v["from_store"], 3, "{v}");
    let verify = cli(fx.dir.path(), &[&s(&["verify"])[..], &store, &with_key].concat());
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    // Another key: told apart from a corrupt artifact.
    let other = common::key_file(&fx.dir.path().join("other.key"), 9, 0o600);
    let verify = cli(
        fx.dir.path(),
        &[&s(&["verify", "--key-file"])[..], &[other.as_os_str()], &store].concat(),
    );
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(
        text.contains("another MAC key") && !text.contains("corrupted"),
        "{text}"
    );
    // Only --force removes them.
    let forced = cli(
        fx.dir.path(),
        &[&s(&["prune", "--stale", "--force", "--min-idle", "0"])[..], &store].concat(),
    );
    assert!(stdout(&forced).contains("removed 3 artifact(s)"), "{}", stdout(&forced));
}

#[test]
fn status_and_a_command_that_gave_up_name_the_process_holding_the_lock() {
    let fx = Fixture::new();
    assert_eq!(warm(&fx, &[]).status.code(), Some(0));
    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    // `flock` writes no pid into the lock file: only the kernel's lock table names it.
    let mut holder = common::hold_lock_exclusively(&fx.store.join("lock"));
    let pid = holder.id();
    let status = cli(
        fx.dir.path(),
        &[&s(&["status", "--lock-timeout", "0"])[..], &store].concat(),
    );
    let text = stdout(&status);
    assert!(
        text.contains(&format!(
            "lock:         held exclusively (maintenance) by pid {pid} (flock -o -x "
        )),
        "{text}"
    );
    let v: Value = serde_json::from_slice(
        &cli(
            fx.dir.path(),
            &[&s(&["status", "--json", "--lock-timeout", "0"])[..], &store].concat(),
        )
        .stdout,
    )
    .expect("json");
    assert_eq!(
        (
            v["lock"]["state"].as_str(),
            v["lock"]["holders"][0]["pid"].as_u64(),
            v["lock"]["holders"][0]["alive"].as_bool()
        ),
        (Some("exclusive"), Some(u64::from(pid)), Some(true)),
        "{v}"
    );
    let clear = cli(
        fx.dir.path(),
        &[&s(&["clear", "--lock-timeout", "1"])[..], &store].concat(),
    );
    let stderr = String::from_utf8_lossy(&clear.stderr);
    assert_eq!(clear.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "lock still held after 1.0 s by pid {pid}, running: flock -o -x "
        )),
        "{stderr}"
    );
    holder.kill().expect("kill");
    holder.wait().expect("wait");
}

/// `warm --strict --json` exits 1 and its report says `expect`.
fn strict_fails(fx: &Fixture, extra: &[&OsStr], expect: &str) {
    let out = warm(fx, &[&s(&["--strict", "--json"])[..], extra].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{expect}: {stderr}");
    assert!(stderr.contains(expect), "{expect}: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("the report is still printed");
    assert!(v["entries"].is_array(), "{v}");
}

/// A read-only store made of copies of the fixture's artifacts, each under the name `rename`
/// gives it.
fn bake_from_store(fx: &Fixture, name: &str, rename: impl Fn(&str) -> Option<String>) -> std::path::PathBuf {
    let dir = fx.dir.path().join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    for entry in std::fs::read_dir(&fx.store).expect("list") {
        let file = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if let Some(to) = rename(&file).filter(|_| file.ends_with(".cwasm")) {
            std::fs::copy(fx.store.join(&file), dir.join(to)).expect("copy");
        }
    }
    chmod(&dir, 0o700);
    dir
}

#[test]
fn warm_strict_fails_for_each_degraded_case() {
    let fx = Fixture::new();
    let healthy = warm(&fx, &s(&["--strict"]));
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert_eq!(warm(&fx, &s(&["--strict"])).status.code(), Some(0), "warm and healthy");

    // A rejected artifact (truncated on disk).
    let adder = common::artifact_of(&fx.store, &common::adder_hash());
    chmod(&adder, 0o644);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&adder)
        .expect("open")
        .set_len(100)
        .expect("truncate");
    strict_fails(&fx, &[], "rejected");
    // The lock held past the timeout.
    let mut holder = common::hold_lock_exclusively(&fx.store.join("lock"));
    strict_fails(&fx, &s(&["--lock-timeout", "0.2"]), "store not read");
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    // The store refused (writable by everyone).
    chmod(&fx.store, 0o777);
    strict_fails(&fx, &[], "store not read");
    chmod(&fx.store, 0o700);
    // Read-only stores that serve nothing, while the writable store serves everything: one
    // missing, one empty, one holding only another engine's artifacts.
    let missing_ro = fx.dir.path().join("no-such-bake");
    strict_fails(
        &fx,
        &[OsStr::new("--read-only-store"), missing_ro.as_os_str()],
        "no-such-bake not used",
    );
    let empty_ro = fx.dir.path().join("empty-bake");
    std::fs::create_dir(&empty_ro).expect("mkdir");
    chmod(&empty_ro, 0o700);
    strict_fails(
        &fx,
        &[OsStr::new("--read-only-store"), empty_ro.as_os_str()],
        "empty-bake holds no artifact for this engine",
    );
    let other_ro = bake_from_store(&fx, "other-bake", |name| {
        name.split_once('-')
            .map(|(_, rest)| format!("{}-{rest}", "0".repeat(32)))
    });
    strict_fails(
        &fx,
        &[OsStr::new("--read-only-store"), other_ro.as_os_str()],
        "none for this engine's",
    );
    // Without --strict the node's start-up does not even walk them, and exits 0.
    let out = warm(&fx, &[OsStr::new("--read-only-store"), missing_ro.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // A read-only store that serves this engine is healthy.
    let good_ro = bake_from_store(&fx, "good-bake", |name| Some(name.to_owned()));
    let out = warm(
        &fx,
        &[
            OsStr::new("--strict"),
            OsStr::new("--read-only-store"),
            good_ro.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Every component skipped: the whitelist names binaries nobody has.
    let empty = fx.dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let conf = fx.dir.path().join("other.conf");
    std::fs::write(&conf, format!("{}\n", "ab".repeat(32))).expect("write");
    let out = cli(
        fx.dir.path(),
        &[
            &s(&["warm", "--strict", "--wasm-dir"])[..],
            &[
                empty.as_os_str(),
                OsStr::new("--whitelist"),
                conf.as_os_str(),
                OsStr::new("--store"),
                fx.store.as_os_str(),
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 component(s) skipped"));
    // A missing binary root: a warning, and a failure with --strict.
    let missing = fx.dir.path().join("nonexistent");
    let out = cli(
        fx.dir.path(),
        &[
            &s(&["warm", "--wasm-dir"])[..],
            &[
                missing.as_os_str(),
                OsStr::new("--whitelist"),
                conf.as_os_str(),
                OsStr::new("--store"),
                fx.store.as_os_str(),
            ],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("does not exist"), "a warning: {stderr}");
    assert!(stdout(&out).contains("binary root MISSING"), "{}", stdout(&out));
}

#[test]
#[ignore = "needs root: mounts a full tmpfs"]
fn warm_strict_fails_on_a_full_disk() {
    let fx = Fixture::new();
    let disk = fx.dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let mut mount = s(&["-t", "tmpfs", "-o", "size=32k,mode=0700", "tmpfs"]);
    mount.push(disk.as_os_str());
    common::mount_or_fail(&mount);
    let store = disk.join("store");
    let mut args = s(&["warm", "--strict", "--all-in-dir", "--wasm-dir"]);
    args.push(fx.root.as_os_str());
    args.push(OsStr::new("--store"));
    args.push(store.as_os_str());
    let out = cli(fx.dir.path(), &args);
    let unmounted = Command::new("umount").arg(&disk).status().is_ok_and(|s| s.success());
    assert!(unmounted, "umount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store not written"), "{stderr}");
}

#[test]
fn status_gives_one_verdict_and_the_whitelists_coverage() {
    let fx = Fixture::new();
    warm(&fx, &[]);
    let conf = fx.dir.path().join("wasm.conf");
    let listed: Vec<String> = fx.whitelist.iter().map(hex::encode).collect();
    std::fs::write(&conf, format!("{}\n{}\n", listed.join("\n"), "cd".repeat(32))).expect("write");
    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    let out = cli(fx.dir.path(), &[&s(&["status"])[..], &store].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out).lines().next(), Some("healthy"), "{}", stdout(&out));
    let out = cli(
        fx.dir.path(),
        &[&s(&["status", "--whitelist"])[..], &[conf.as_os_str()], &store].concat(),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("UNHEALTHY: 1 of 4 whitelisted component(s) not stored"),
        "{text}"
    );
    assert!(
        text.contains("3 of 4 listed component(s) stored") && text.contains(&"cd".repeat(32)),
        "{text}"
    );
    let out = cli(
        fx.dir.path(),
        &[
            &s(&["status", "--json", "--whitelist"])[..],
            &[conf.as_os_str()],
            &store,
        ]
        .concat(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["healthy"], false, "{v}");
    assert_eq!(
        (v["whitelist"]["listed"].as_u64(), v["whitelist"]["stored"].as_u64()),
        (Some(4), Some(3)),
        "{v}"
    );
    assert_eq!(v["whitelist"]["missing"][0], "cd".repeat(32), "{v}");
    assert_eq!(v["lock"]["last_holder"], Value::Null, "absent values are null: {v}");
    for e in v["entries"].as_array().expect("entries") {
        assert!(e.get("header_error").is_some() && e.get("refused").is_some(), "{e}");
    }
}

#[test]
fn every_subcommand_speaks_json() {
    let fx = Fixture::new();
    let warmed = warm(&fx, &s(&["--json"]));
    let v: Value = serde_json::from_slice(&warmed.stdout).expect("warm --json");
    for e in v["entries"].as_array().expect("entries") {
        assert!(
            e.get("skip_reason").is_some_and(Value::is_null),
            "absent values are null: {e}"
        );
    }
    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    for args in [
        &["status", "--json"][..],
        &["verify", "--json"],
        &["prune", "--stale", "--json"],
        &["clear", "--json"],
    ] {
        let out = cli(fx.dir.path(), &[&s(args)[..], &store].concat());
        assert!(
            serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v.is_object()),
            "{args:?}: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let host = cli(fx.dir.path(), &s(&["host", "--json"]));
    assert!(serde_json::from_slice::<Value>(&host.stdout).is_ok_and(|v| v.is_object()));
    // An unreadable key is an error, for host too.
    let out = cli(fx.dir.path(), &s(&["host", "--key-file", "/nonexistent/node.key"]));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Checks `text` line by line against the Prometheus text format: `# HELP name text`,
/// `# TYPE name gauge`, other comments, and samples `name{label="value",...} number`.
fn assert_prometheus_text(text: &str) -> Vec<(String, f64)> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(name_ok(rest.split(' ').next().unwrap_or_default()), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            assert!(name_ok(parts.next().unwrap_or_default()), "{line}");
            assert!(matches!(parts.next(), Some("gauge" | "counter")), "{line}");
        } else if line.starts_with('#') {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(name_ok(k) && !v.contains('\n'), "{line}");
                    }
                    name
                }
                None => series,
            };
            assert!(name_ok(name), "{line}");
            samples.push((series.to_owned(), value));
        }
    }
    samples
}

#[test]
fn the_metrics_files_parse_as_prometheus_text() {
    let fx = Fixture::new();
    let warm_file = fx.dir.path().join("warm.prom");
    let out = warm(&fx, &[OsStr::new("--metrics-file"), warm_file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let warm_samples = assert_prometheus_text(&std::fs::read_to_string(&warm_file).expect("warm.prom"));
    let value = |samples: &[(String, f64)], series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} in {samples:?}"))
    };
    assert_eq!(
        value(&warm_samples, r#"wasm_node_cache_components{origin="compiled"}"#),
        3.0
    );
    assert_eq!(value(&warm_samples, r#"wasm_node_cache_healthy{command="warm"}"#), 1.0);
    assert!(value(&warm_samples, "wasm_node_cache_compile_seconds") > 0.0);
    // Truncate an artifact: the next start rejects it, and the file counts it by reason.
    let adder = common::artifact_of(&fx.store, &common::adder_hash());
    chmod(&adder, 0o644);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&adder)
        .expect("open")
        .set_len(100)
        .expect("truncate");
    warm(&fx, &[OsStr::new("--metrics-file"), warm_file.as_os_str()]);
    let again = assert_prometheus_text(&std::fs::read_to_string(&warm_file).expect("warm.prom"));
    assert_eq!(
        value(&again, r#"wasm_node_cache_rejections{reason="too_short"}"#),
        1.0,
        "{again:?}"
    );

    let status_file = fx.dir.path().join("status.prom");
    let out = cli(
        fx.dir.path(),
        &[
            OsStr::new("status"),
            OsStr::new("--store"),
            fx.store.as_os_str(),
            OsStr::new("--metrics-file"),
            status_file.as_os_str(),
        ],
    );
    assert!(out.status.code().is_some(), "{}", String::from_utf8_lossy(&out.stderr));
    let status_samples = assert_prometheus_text(&std::fs::read_to_string(&status_file).expect("status.prom"));
    let store = fx.store.display();
    assert_eq!(
        value(
            &status_samples,
            &format!(r#"wasm_node_cache_store_artifacts{{store="{store}",group="current"}}"#)
        ),
        3.0
    );
    assert!(
        value(
            &status_samples,
            &format!(r#"wasm_node_cache_store_bytes{{store="{store}",group="current"}}"#)
        ) > 0.0
    );
    assert_eq!(
        value(&status_samples, r#"wasm_node_cache_lock_state{state="free"}"#),
        1.0
    );
    // Written atomically: nothing else is left beside the files.
    let names: Vec<String> = std::fs::read_dir(fx.dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn under_the_journal_log_lines_carry_a_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    let conf = fx.dir.path().join("wasm.conf");
    std::fs::write(&conf, format!("{}\n", "ab".repeat(32))).expect("write");
    let missing = fx.dir.path().join("nonexistent");
    let run = |journal: Option<&Path>, extra: &[&str]| {
        let err_file = fx.dir.path().join("stderr");
        let stderr = std::fs::File::create(&err_file).expect("stderr file");
        let meta = stderr.metadata().expect("stat");
        let mut c = Command::new(env!("CARGO_BIN_EXE_wasm-node-cache"));
        c.args(["warm", "--wasm-dir"])
            .arg(&missing)
            .arg("--whitelist")
            .arg(&conf)
            .arg("--store")
            .arg(&fx.store)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr);
        match journal {
            // As systemd sets it: the device and inode of the service's standard error.
            Some(_) => c.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
            None => c.env_remove("JOURNAL_STREAM"),
        };
        assert!(c.status().expect("run").success());
        std::fs::read_to_string(&err_file).expect("read")
    };
    let journal = run(Some(fx.dir.path()), &[]);
    let line = journal
        .lines()
        .find(|l| l.contains("does not exist"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(
        line.starts_with("<4>wasm_node_cache"),
        "a warning, priority 4, no timestamp: {line}"
    );
    let text = run(None, &[]);
    let line = text
        .lines()
        .find(|l| l.contains("does not exist"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with('[') && line.contains("WARN"),
        "a timestamp on a terminal or file: {line}"
    );
    let json = run(None, &["--log-format", "json"]);
    let line = json
        .lines()
        .find(|l| l.contains("does not exist"))
        .unwrap_or_else(|| panic!("{json}"));
    let v: Value = serde_json::from_str(line).expect("one JSON object a line");
    assert_eq!(v["level"], "warn", "{v}");
    assert!(v["time"].is_string() && v["target"].is_string(), "{v}");
}

/// Flips one byte in the middle of `artifact`'s payload, in place (its trailer stays intact), and
/// gives it back its mode.
fn flip_a_payload_byte(artifact: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    chmod(artifact, 0o644);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(artifact)
        .expect("open");
    let len = file.metadata().expect("stat").len();
    let middle = (len - 128) / 2;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(middle)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x01;
    file.seek(SeekFrom::Start(middle)).expect("seek");
    file.write_all(&byte).expect("write");
    drop(file);
    chmod(artifact, 0o444);
}

#[test]
fn status_finds_a_flipped_payload_byte_that_the_trailer_hides() {
    let fx = Fixture::new();
    assert_eq!(warm(&fx, &[]).status.code(), Some(0));
    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    flip_a_payload_byte(&common::artifact_of(&fx.store, &common::adder_hash()));

    let quick = cli(fx.dir.path(), &[&s(&["status", "--quick"])[..], &store].concat());
    assert_eq!(
        (quick.status.code(), stdout(&quick).lines().next()),
        (Some(0), Some("healthy")),
        "the trailer alone cannot tell: {}",
        stdout(&quick)
    );
    let out = cli(fx.dir.path(), &[&s(&["status"])[..], &store].concat());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("UNHEALTHY: 1 artifact(s) of this build in the store bad or refused"),
        "{text}"
    );
    assert!(text.contains("BAD: payload checksum mismatch"), "{text}");
    let v: Value =
        serde_json::from_slice(&cli(fx.dir.path(), &[&s(&["status", "--json"])[..], &store].concat()).stdout)
            .expect("json");
    assert_eq!(
        (v["payloads_checked"].as_bool(), v["bad_or_refused"].as_u64()),
        (Some(true), Some(1)),
        "{v}"
    );
    let bad: Vec<&Value> = v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| !e["payload_error"].is_null())
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["hash"], hex::encode(common::adder_hash()), "{v}");
    // The node agrees: it refuses the artifact and compiles.
    let again = warm(&fx, &[OsStr::new("--json")]);
    let report: Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(report["rejected"], 1, "{report}");
}

#[test]
fn status_is_unhealthy_while_a_hung_holder_keeps_the_lock_past_the_timeout() {
    let fx = Fixture::new();
    assert_eq!(warm(&fx, &[]).status.code(), Some(0));
    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    let mut holder = common::hold_lock_exclusively(&fx.store.join("lock"));
    let started = std::time::Instant::now();
    let out = cli(
        fx.dir.path(),
        &[&s(&["status", "--json", "--lock-timeout", "1"])[..], &store].concat(),
    );
    let waited = started.elapsed();
    holder.kill().expect("kill");
    holder.wait().expect("wait");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["lock_error"]["kind"], "lock", "{v}");
    assert!(
        v["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("held exclusively past the lock timeout")),
        "{v}"
    );
    assert!(
        waited >= std::time::Duration::from_secs(1),
        "it waited the timeout: {waited:?}"
    );
    // Once the holder is gone the store is healthy again.
    let out = cli(
        fx.dir.path(),
        &[&s(&["status", "--lock-timeout", "1"])[..], &store].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn no_failure_leaves_a_healthy_metrics_file_behind() {
    let fx = Fixture::new();
    let healthy = |file: &Path, command: &str| -> f64 {
        let text = std::fs::read_to_string(file).expect("metrics file");
        let samples = assert_prometheus_text(&text);
        let info = samples
            .iter()
            .find(|(s, _)| s.starts_with("wasm_node_cache_info{") && s.contains(&format!("command=\"{command}\"")))
            .unwrap_or_else(|| panic!("no info gauge: {text}"));
        assert!(
            info.0.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))) && info.0.contains("wasmtime=\"48."),
            "{text}"
        );
        samples
            .iter()
            .find(|(s, _)| *s == format!("wasm_node_cache_healthy{{command=\"{command}\"}}"))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no healthy gauge: {text}"))
    };
    let metrics = fx.dir.path().join("node_wasm.prom");
    let with_metrics = [OsStr::new("--metrics-file"), metrics.as_os_str()];
    assert_eq!(warm(&fx, &with_metrics).status.code(), Some(0));
    assert_eq!(healthy(&metrics, "warm"), 1.0);
    // A start that cannot read its whitelist never gets to a report.
    let missing = [
        OsStr::new("--metrics-file"),
        metrics.as_os_str(),
        OsStr::new("--whitelist"),
        OsStr::new("/nonexistent/wasm.conf"),
    ];
    let mut args = s(&["warm", "--wasm-dir"]);
    args.push(fx.root.as_os_str());
    args.extend([OsStr::new("--store"), fx.store.as_os_str()]);
    args.extend(missing);
    assert_eq!(cli(fx.dir.path(), &args).status.code(), Some(2));
    assert_eq!(healthy(&metrics, "warm"), 0.0, "no healthy 1 left behind");

    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    let status_file = fx.dir.path().join("status.prom");
    let status = [
        &s(&["status", "--metrics-file"])[..],
        &[status_file.as_os_str()],
        &store,
    ]
    .concat();
    assert_eq!(cli(fx.dir.path(), &status).status.code(), Some(0));
    assert_eq!(healthy(&status_file, "status"), 1.0);
    let verify_file = fx.dir.path().join("verify.prom");
    let verify = [
        &s(&["verify", "--metrics-file"])[..],
        &[verify_file.as_os_str()],
        &store,
    ]
    .concat();
    assert_eq!(cli(fx.dir.path(), &verify).status.code(), Some(0));
    assert_eq!(healthy(&verify_file, "verify"), 1.0);

    flip_a_payload_byte(&common::artifact_of(&fx.store, &common::adder_hash()));
    assert_eq!(cli(fx.dir.path(), &verify).status.code(), Some(1));
    assert_eq!(healthy(&verify_file, "verify"), 0.0);
    // A store that status refuses to read (writable by others) is no report at all.
    chmod(&fx.store, 0o777);
    assert_eq!(cli(fx.dir.path(), &status).status.code(), Some(2));
    assert_eq!(healthy(&status_file, "status"), 0.0, "no healthy 1 left behind");
    chmod(&fx.store, 0o700);
}

/// Sets `file`'s access and modification times to `age` ago.
fn age(file: &Path, age: std::time::Duration) {
    let then = std::time::SystemTime::now() - age;
    std::fs::File::open(file)
        .expect("open")
        .set_times(std::fs::FileTimes::new().set_accessed(then).set_modified(then))
        .expect("set times");
}

#[test]
fn a_bake_ahead_survives_the_weekly_prune_while_artifacts_idle_past_min_idle_go() {
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
    let fx = Fixture::new();
    assert_eq!(warm(&fx, &[]).status.code(), Some(0));
    let store = [OsStr::new("--store"), fx.store.as_os_str()];
    let current = common::artifact_of(&fx.store, &common::adder_hash());
    let hash = hex::encode(common::adder_hash());
    // The previous release's artifact, last used eight days ago, and the next release's
    // bake-ahead, written just now: both of fingerprints this build never loads.
    let previous = fx.store.join(format!("{}-{hash}.cwasm", "11".repeat(16)));
    let next = fx.store.join(format!("{}-{hash}.cwasm", "22".repeat(16)));
    for file in [&previous, &next] {
        std::fs::copy(&current, file).expect("plant");
    }
    age(&previous, 8 * DAY);

    let out = cli(
        fx.dir.path(),
        &[&s(&["prune", "--stale", "--json"])[..], &store].concat(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        (v["removed"].as_array().map(Vec::len), v["kept_recent"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert!(!previous.exists(), "idle past the default week: gone");
    assert!(next.exists(), "the bake-ahead survives the weekly prune");
    // Eight days later, unused, it goes too; `--min-idle` decides how long.
    age(&next, 8 * DAY);
    let kept = cli(
        fx.dir.path(),
        &[&s(&["prune", "--stale", "--min-idle", "9d"])[..], &store].concat(),
    );
    assert_eq!(kept.status.code(), Some(0), "{}", stdout(&kept));
    assert!(next.exists(), "younger than --min-idle 9d: {}", stdout(&kept));
    let out = cli(fx.dir.path(), &[&s(&["prune", "--stale"])[..], &store].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!next.exists(), "{}", stdout(&out));
}

/// The store's own record of a use, where the kernel keeps none: on a `noatime` mount only the
/// store sets an access time, so what is set here is its doing.
#[test]
#[ignore = "needs root: mounts a noatime tmpfs"]
fn a_hit_records_the_artifacts_use_at_most_once_a_day_and_never_in_a_read_only_store() {
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
    let fx = Fixture::new();
    let disk = fx.dir.path().join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let mut mount = s(&["-t", "tmpfs", "-o", "noatime,mode=0700", "tmpfs"]);
    mount.push(disk.as_os_str());
    common::mount_or_fail(&mount);
    let store = disk.join("store");
    let warm_into = |store: &Path, extra: &[&OsStr]| {
        let mut args = s(&["warm", "--all-in-dir", "--wasm-dir"]);
        args.push(fx.root.as_os_str());
        args.push(OsStr::new("--store"));
        args.push(store.as_os_str());
        args.extend_from_slice(extra);
        cli(fx.dir.path(), &args).status.code()
    };
    let atime = |file: &Path| std::fs::metadata(file).expect("stat").accessed().expect("atime");
    assert_eq!(warm_into(&store, &[]), Some(0));
    let artifact = common::artifact_of(&store, &common::adder_hash());

    age(&artifact, 8 * DAY);
    let published = std::fs::metadata(&artifact).expect("stat").modified().expect("mtime");
    assert_eq!(warm_into(&store, &[]), Some(0));
    let since = std::time::SystemTime::now()
        .duration_since(atime(&artifact))
        .unwrap_or_default();
    assert!(
        since < std::time::Duration::from_secs(60),
        "a hit is a use: {since:?} ago"
    );
    assert_eq!(
        std::fs::metadata(&artifact).expect("stat").modified().expect("mtime"),
        published,
        "a load never changes the artifact's modification time"
    );
    // At most once a day: an access time younger than a day is left as it is.
    let recent = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&artifact)
        .expect("open")
        .set_times(std::fs::FileTimes::new().set_accessed(recent))
        .expect("set atime");
    assert_eq!(warm_into(&store, &[]), Some(0));
    assert_eq!(atime(&artifact), recent, "no write for a hit within a day");
    // A read-only store is never written, not even its access times.
    age(&artifact, 8 * DAY);
    let old = atime(&artifact);
    let other = fx.dir.path().join("writable");
    assert_eq!(
        warm_into(&other, &[OsStr::new("--read-only-store"), store.as_os_str()]),
        Some(0)
    );
    assert_eq!(common::artifact_count(&other), 0, "served from the read-only store");
    assert_eq!(atime(&artifact), old);
    let unmounted = Command::new("umount").arg(&disk).status().is_ok_and(|s| s.success());
    assert!(unmounted, "umount");
}
