//! The systemd units of docs/deploying.md: every ```` ```ini ```` block whose first line is
//! `# /etc/systemd/system/NAME` is that unit. systemd must accept them as written
//! (`systemd-analyze verify`), they must say what the doc's prose says of them, and the node's
//! `ExecStartPre=` line must do what the doc promises: store everything and report healthy.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const DOC: &str = "docs/deploying.md";
const UNIT_DIR: &str = "/etc/systemd/system/";
/// The paths the units name, and what a test puts in their place.
const TOOL: &str = "/usr/local/bin/node-wasm-cache";
const NODE: &str = "/usr/local/bin/node";
const TEXTFILE_DIR: &str = "/var/lib/node_exporter/textfile_collector";

/// `(NAME, text)` of every unit block of the doc, in the doc's order.
fn units() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(common::repo().join(DOC)).expect("docs/deploying.md is readable");
    let mut units = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() != "```ini" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim_end() != "```").collect();
        let name = block
            .first()
            .and_then(|first| first.strip_prefix("# ")?.strip_prefix(UNIT_DIR));
        if let Some(name) = name {
            units.push((name.to_owned(), block.join("\n") + "\n"));
        }
    }
    units
}

/// The unit `name` of the doc.
fn unit(name: &str) -> String {
    units()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{DOC} has no unit {name}"))
        .1
}

/// `(section, key)` to the values of a unit, in order (a key such as `Environment=` may repeat).
/// Enough of systemd's syntax for these units: no line continuations, no quoting.
fn keys(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut keys = BTreeMap::<_, Vec<String>>::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not `Key=value`: {line}"));
        assert!(!line.ends_with('\\'), "no line continuations: {line}");
        keys.entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    keys
}

/// The one value of `section`'s `key` in `text`.
fn value(text: &str, section: &str, key: &str) -> String {
    let all = keys(text);
    match all.get(&(section.to_owned(), key.to_owned())).map(Vec::as_slice) {
        Some([one]) => one.clone(),
        other => panic!("[{section}] {key}= should have one value, has {other:?}"),
    }
}

/// What the doc's prose says of each unit.
const EXPECTED: &[(&str, &str, &str, &str)] = &[
    ("node.service", "Service", "User", "node"),
    ("node.service", "Service", "Group", "node"),
    ("node.service", "Service", "WorkingDirectory", "/srv/node"),
    ("node.service", "Service", "CacheDirectory", "node-wasm"),
    (
        "node.service",
        "Service",
        "ExecStartPre",
        "-/usr/local/bin/node-wasm-cache warm --strict --metrics-file /var/lib/node_exporter/textfile_collector/node_wasm.prom",
    ),
    ("node.service", "Service", "ExecStart", "/usr/local/bin/node"),
    ("node.service", "Service", "Restart", "on-failure"),
    ("node-wasm-prune.service", "Service", "Type", "oneshot"),
    ("node-wasm-prune.service", "Service", "User", "node"),
    ("node-wasm-prune.service", "Service", "CacheDirectory", "node-wasm"),
    (
        "node-wasm-prune.service",
        "Service",
        "ExecStart",
        "/usr/local/bin/node-wasm-cache prune --stale --whitelist /srv/node/config/wasm.conf --max-size 2G",
    ),
    ("node-wasm-prune.timer", "Timer", "OnCalendar", "weekly"),
    ("node-wasm-prune.timer", "Timer", "RandomizedDelaySec", "6h"),
    ("node-wasm-prune.timer", "Timer", "Persistent", "true"),
    ("node-wasm-prune.timer", "Install", "WantedBy", "timers.target"),
    ("node-wasm-status.service", "Service", "Type", "oneshot"),
    ("node-wasm-status.service", "Service", "User", "node"),
    ("node-wasm-status.service", "Service", "CacheDirectory", "node-wasm"),
    (
        "node-wasm-status.service",
        "Service",
        "ExecStart",
        "-/usr/local/bin/node-wasm-cache status --whitelist /srv/node/config/wasm.conf --metrics-file /var/lib/node_exporter/textfile_collector/node_wasm_status.prom",
    ),
    ("node-wasm-status.timer", "Timer", "OnCalendar", "hourly"),
    ("node-wasm-status.timer", "Timer", "RandomizedDelaySec", "10min"),
    ("node-wasm-status.timer", "Install", "WantedBy", "timers.target"),
];

/// `systemd-analyze`, if this machine has it.
fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file())
}

#[test]
fn the_units_of_deploying_md_are_valid_and_say_what_the_doc_says() {
    let units = units();
    let mut names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "node-wasm-prune.service",
            "node-wasm-prune.timer",
            "node-wasm-status.service",
            "node-wasm-status.timer",
            "node.service"
        ],
        "the units of {DOC}"
    );
    // The values the prose explains, so that prose and units cannot drift apart. Checked with or
    // without systemd: systemd-analyze says a unit is valid, not that it is this one.
    for (name, section, key, expected) in EXPECTED {
        assert_eq!(
            &value(&unit(name), section, key),
            expected,
            "{name}: [{section}] {key}="
        );
    }

    let Some(analyze) = systemd_analyze() else {
        // Not a silent pass: the log says what was not checked.
        println!("systemd_units: no systemd-analyze here; checked the units' keys only");
        return;
    };
    println!("systemd_units: verifying with {}", analyze.display());
    // The units as a host would have them, with binaries this machine has: systemd checks that
    // every Exec*= command is an executable file.
    let dir = tempfile::tempdir().expect("a directory for the units");
    let mut files = Vec::new();
    for (name, text) in &units {
        let text = text
            .replace(TOOL, env!("CARGO_BIN_EXE_wasm-node-cache"))
            .replace(NODE, "/bin/true");
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write the unit");
        files.push(file);
    }
    // No running systemd is needed: `verify` loads the files (and the units they name) itself.
    // --man=no: no man pages in a container; --generators=no: generators need a booted system;
    // --recursive-errors=no: fail on warnings about these units, not about the host's units
    // they pull in (network-online.target's). Logs to the console (not to a journal the test may
    // run under), at warning level: every line printed is a warning or an error.
    let out = Command::new(&analyze)
        .args(["verify", "--man=no", "--generators=no", "--recursive-errors=no"])
        .args(&files)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .env("SYSTEMD_LOG_TARGET", "console")
        .env("SYSTEMD_LOG_COLOR", "0")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run systemd-analyze");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{printed}");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}\n{printed}",
        out.status
    );
    let dir_name = dir.path().display().to_string();
    let ours: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains(&dir_name) || units.iter().any(|(n, _)| l.contains(n.as_str())))
        .collect();
    assert!(ours.is_empty(), "warnings about the doc's units: {ours:#?}");
}

/// Expands `%C` (the cache directory of a system unit, `/var/cache`) to `cache`.
fn expand(text: &str, cache: &Path) -> String {
    text.replace("%C", &cache.display().to_string())
}

#[test]
fn the_node_units_exec_start_pre_stores_everything_and_reports_healthy() {
    let unit = unit("node.service");
    let pre = value(&unit, "Service", "ExecStartPre");
    // `-`: systemd starts the node whatever the line exits with; here it must be 0.
    let line = pre.strip_prefix('-').expect("ExecStartPre=- (the node starts anyway)");
    assert!(!line.contains(['"', '\'']), "no quoting to undo: {line}");

    let dir = tempfile::tempdir().expect("tempdir");
    let (cache, textfile, workdir) = (
        dir.path().join("cache"),
        dir.path().join("textfile"),
        dir.path().join("srv-node"),
    );
    // CacheDirectory= makes %C/NAME before the first command, owned by User= and mode 0755.
    let cache_dir = value(&unit, "Service", "CacheDirectory");
    let store = cache.join(&cache_dir);
    // WorkingDirectory=/srv/node holds the node's config/, as in the doc's sessions.
    assert_eq!(value(&unit, "Service", "WorkingDirectory"), "/srv/node");
    common::sh(
        &format!(
            "mkdir -p '{store}' '{textfile}' '{workdir}' && chmod 755 '{store}' && cp -R '{repo}/config' '{workdir}/config'",
            store = store.display(),
            textfile = textfile.display(),
            workdir = workdir.display(),
            repo = common::repo().display(),
        ),
        dir.path(),
    );

    let line = expand(line, &cache)
        .replace(TOOL, env!("CARGO_BIN_EXE_wasm-node-cache"))
        .replace(TEXTFILE_DIR, &textfile.display().to_string());
    let mut words = line.split_whitespace();
    let program = words.next().expect("a command");
    // No Environment= line: systemd names the directory in $CACHE_DIRECTORY, the store's default.
    assert!(
        !keys(&unit).contains_key(&("Service".to_owned(), "Environment".to_owned())),
        "the unit needs no Environment= line"
    );
    let out = Command::new(program)
        .args(words)
        .current_dir(&workdir)
        .env("CACHE_DIRECTORY", &store)
        .env_remove("WASM_NODE_CACHE_DIR")
        .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS")
        .env_remove("WASM_NODE_CACHE_KEY_FILE")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the ExecStartPre= line");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{line}\n{printed}");

    let metrics = std::fs::read_to_string(textfile.join("node_wasm.prom")).expect("the metrics file is written");
    let healthy = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasm_node_cache_healthy{command=\"warm\"} "))
        .unwrap_or_else(|| panic!("no healthy gauge of warm: {metrics}"));
    assert_eq!(healthy.parse::<f64>().ok(), Some(1.0), "{metrics}\n{printed}");
    // The node starts warm: every whitelisted component is now in the store.
    let conf = std::fs::read_to_string(workdir.join("config/wasm.conf")).expect("wasm.conf");
    let listed = wasm_node_cache::config::parse_whitelist(&conf, "wasm.conf").expect("parses");
    assert_eq!(common::artifact_count(&store), listed.len(), "{printed}");
}
