//! The alert rules an operator loads (`deploy/prometheus/wasm-node-cache.rules.yml`), run by
//! `promtool test rules` against the metrics files the real CLI wrote for each broken case: each
//! case fires exactly the alerts it should, and a healthy host fires none. `promtool check
//! metrics` finds nothing to fix in any of those files.

use crate::common;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Fixture, chmod, run_cli as cli};

const RULES: &str = "deploy/prometheus/wasm-node-cache.rules.yml";

/// `promtool`, which the test needs (Debian's `prometheus` package; `.ci/run` installs it).
fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .expect("needs promtool (Debian's prometheus package): run the ignored tests as .ci/run does")
}

/// Every alert the rules file defines, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// The `summary` and `description` annotations of `alert`, as the rules file spells them.
fn annotations(rules: &str, alert: &str) -> (String, String) {
    let start = rules
        .find(&format!("- alert: {alert}\n"))
        .unwrap_or_else(|| panic!("{alert} in {RULES}"));
    let field = |name: &str| {
        rules[start..]
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{alert} has a {name}"))
            .to_owned()
    };
    (field("summary"), field("description"))
}

/// The samples of a metrics file as `promtool test rules` input series, each constant for five
/// hours at one-minute steps. The file's own timestamp is taken as the test's start (time 0):
/// promtool's clock starts at the epoch.
fn input_series(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample: {line}"));
        let value = if series.starts_with("wasm_node_cache_last_run_timestamp_seconds") {
            "0"
        } else {
            value
        };
        let _ = writeln!(
            out,
            "      - series: '{}'\n        values: '{value}x300'",
            series.replace('\'', "''")
        );
    }
    out
}

/// One broken (or healthy) case: the metrics files written for it, when to look, and the alerts
/// that must fire then, each with its labels (besides `severity`).
struct Case {
    name: &'static str,
    files: Vec<PathBuf>,
    eval_minutes: u32,
    expected: Vec<(&'static str, Vec<(&'static str, String)>)>,
}

fn test_file(rules_path: &Path, rules: &str, cases: &[Case]) -> String {
    let severity = |alert: &str| {
        let start = rules.find(&format!("- alert: {alert}\n")).expect("alert");
        rules[start..]
            .lines()
            .find_map(|l| l.trim().strip_prefix("severity: "))
            .expect("severity")
            .to_owned()
    };
    let mut out = format!(
        "rule_files:\n  - '{}'\nevaluation_interval: 1m\ntests:\n",
        rules_path.display()
    );
    for case in cases {
        let _ = writeln!(out, "  # {}\n  - interval: 1m\n    input_series:", case.name);
        for file in &case.files {
            out.push_str(&input_series(file));
        }
        out.push_str("    alert_rule_test:\n");
        for alert in alert_names(rules) {
            let _ = writeln!(
                out,
                "      - eval_time: {}m\n        alertname: {alert}\n        exp_alerts:",
                case.eval_minutes
            );
            let (summary, description) = annotations(rules, &alert);
            for (_, labels) in case.expected.iter().filter(|(a, _)| *a == alert) {
                out.push_str("          - exp_labels:\n");
                let _ = writeln!(out, "              severity: {}", severity(&alert));
                for (k, v) in labels {
                    let _ = writeln!(out, "              {k}: '{}'", v.replace('\'', "''"));
                }
                let _ = writeln!(
                    out,
                    "            exp_annotations:\n              summary: {summary}\n              description: {description}"
                );
            }
            if !case.expected.iter().any(|(a, _)| *a == alert) {
                out.truncate(out.trim_end_matches('\n').len());
                out.push_str(" []\n");
            }
        }
    }
    out
}

fn s<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

/// Runs the CLI with `args` and `--metrics-file FILE`; returns FILE.
fn metrics(fx: &Fixture, name: &str, args: &[&OsStr]) -> PathBuf {
    let file = fx.dir.path().join(format!("{name}.prom"));
    let mut all = args.to_vec();
    all.extend([OsStr::new("--metrics-file"), file.as_os_str()]);
    let out = cli(fx.dir.path(), &all);
    assert!(
        out.status.code().is_some() && file.is_file(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

fn warm_args(fx: &Fixture, store: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = s(&["warm", "--all-in-dir", "--wasm-dir"])
        .into_iter()
        .map(Into::into)
        .collect();
    args.push(fx.root.clone().into());
    args.push("--store".into());
    args.push(store.into());
    args
}

fn os(args: &[std::ffi::OsString]) -> Vec<&OsStr> {
    args.iter().map(|a| a.as_os_str()).collect()
}

#[test]
#[ignore = "needs promtool (Debian's prometheus package): .ci/run installs it"]
fn the_alert_rules_fire_for_each_broken_case_and_never_for_a_healthy_host() {
    let promtool = promtool();
    let rules_path = common::repo().join(RULES);
    let rules = std::fs::read_to_string(&rules_path).expect("the rules file");
    let check = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
        .expect("promtool");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let fx = Fixture::new();
    let store = fx.store.clone();
    let store_label = store.display().to_string();
    let on_store = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = extra.iter().map(Into::into).collect();
        args.extend(["--store".into(), store.clone().into_os_string()]);
        args
    };
    let warm = warm_args(&fx, &store);
    // A healthy host: every file says so.
    let healthy = vec![
        metrics(&fx, "healthy-warm", &os(&warm)),
        metrics(&fx, "healthy-status", &os(&on_store(&["status"]))),
        metrics(&fx, "healthy-verify", &os(&on_store(&["verify"]))),
    ];
    // A stored artifact corrupted: status (which reads payloads) and verify see it.
    let adder = common::artifact_of(&store, &common::adder_hash());
    let pristine = std::fs::read(&adder).expect("read");
    let mut flipped = pristine.clone();
    let middle = (flipped.len() - 128) / 2;
    flipped[middle] ^= 1;
    chmod(&adder, 0o644);
    std::fs::write(&adder, &flipped).expect("corrupt");
    chmod(&adder, 0o444);
    let corrupt = vec![
        metrics(&fx, "corrupt-status", &os(&on_store(&["status"]))),
        metrics(&fx, "corrupt-verify", &os(&on_store(&["verify"]))),
    ];
    chmod(&adder, 0o644);
    std::fs::write(&adder, &pristine).expect("repair");
    chmod(&adder, 0o444);
    // A hung holder of the lock.
    let mut holder = common::hold_lock_exclusively(&store.join("lock"));
    let locked = metrics(&fx, "locked-status", &os(&on_store(&["status", "--lock-timeout", "0"])));
    holder.kill().expect("kill");
    holder.wait().expect("reap");
    // The store near its bound.
    let total: u64 = std::fs::read_dir(&store)
        .expect("list")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .map(|e| e.metadata().expect("stat").len())
        .sum();
    let bound = (total + total / 20).to_string();
    let full = metrics(&fx, "full-status", &os(&on_store(&["status", "--max-size", &bound])));
    // A start that cannot store: its store is refused (writable by others).
    let refused_store = fx.dir.path().join("refused");
    assert!(
        cli(fx.dir.path(), &os(&warm_args(&fx, &refused_store)))
            .status
            .success()
    );
    chmod(&refused_store, 0o777);
    let not_stored = metrics(&fx, "not-stored-warm", &os(&warm_args(&fx, &refused_store)));
    chmod(&refused_store, 0o700);
    // A whitelisted component whose binary was not shipped.
    let conf = fx.dir.path().join("wasm.conf");
    let listed: Vec<String> = fx.whitelist.iter().map(hex::encode).collect();
    std::fs::write(&conf, format!("{}\n{}\n", listed.join("\n"), "cd".repeat(32))).expect("whitelist");
    let mut skipping = s(&["warm", "--wasm-dir"]);
    skipping.extend([fx.root.as_os_str(), OsStr::new("--whitelist"), conf.as_os_str()]);
    skipping.extend([OsStr::new("--store"), store.as_os_str()]);
    let skipped = metrics(&fx, "skipped-warm", &skipping);

    let command = |c: &str| vec![("command", c.to_owned())];
    let cases = [
        Case {
            name: "a healthy host",
            files: healthy.clone(),
            eval_minutes: 90,
            expected: vec![],
        },
        Case {
            name: "status has stopped running",
            files: healthy,
            eval_minutes: 4 * 60,
            expected: vec![("WasmNodeCacheStatusStale", command("status"))],
        },
        Case {
            name: "a corrupt artifact",
            files: corrupt,
            eval_minutes: 20,
            expected: vec![
                ("WasmNodeCacheStoreUnhealthy", command("status")),
                ("WasmNodeCacheStoreUnhealthy", command("verify")),
            ],
        },
        Case {
            name: "a hung lock holder",
            files: vec![locked],
            eval_minutes: 20,
            expected: vec![
                ("WasmNodeCacheStoreUnhealthy", command("status")),
                ("WasmNodeCacheLockHeld", vec![]),
            ],
        },
        Case {
            name: "a store near its bound",
            files: vec![full],
            eval_minutes: 70,
            expected: vec![("WasmNodeCacheSizeNearBound", vec![("store", store_label.clone())])],
        },
        Case {
            name: "a start that could not store",
            files: vec![not_stored],
            eval_minutes: 20,
            expected: vec![
                ("WasmNodeCacheStartupUnhealthy", command("warm")),
                ("WasmNodeCacheNotStored", vec![]),
            ],
        },
        Case {
            name: "a whitelisted component skipped",
            files: vec![skipped],
            eval_minutes: 20,
            expected: vec![
                ("WasmNodeCacheStartupUnhealthy", command("warm")),
                ("WasmNodeCacheComponentSkipped", vec![("origin", "skipped".to_owned())]),
            ],
        },
    ];
    for case in &cases {
        for file in &case.files {
            let out = Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(file).expect("metrics file"))
                .output()
                .expect("promtool");
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "promtool check metrics {}: {}{}",
                file.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let tests = fx.dir.path().join("rules.test.yml");
    std::fs::write(&tests, test_file(&rules_path, &rules, &cases)).expect("write the tests");
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&tests).unwrap_or_default()
    );
}
