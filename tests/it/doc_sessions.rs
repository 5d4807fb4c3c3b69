//! The docs are tests: every ```` ```console ```` block of README.md and docs/*.md is run, and what
//! the tool prints must match what the block shows, so a change in the output fails here until the
//! doc changes with it. The JSON field tables of docs/operating.md are checked against the JSON the
//! commands print, both ways.
//!
//! A block is a sequence of `$ command` lines, each followed by what it prints (standard output,
//! then standard error) and, when its exit status is not 0, a line `? N`. Matching is snapbox's:
//! `[..]` stands for any text within a line, `...` on a line of its own for any lines; this
//! engine's fingerprints print as `[FINGERPRINT]` (plain mode) and `[MAC_FINGERPRINT]`.
//!
//! Each block runs in a fresh sandbox, as the node's service would: the working directory holds
//! the repository's `config/` and stands for `/srv/node`; `/var/cache/node-wasm` (the store,
//! `$WASM_NODE_CACHE_DIR`), `/opt/wasm-bake`, `/etc/node` and node_exporter's
//! `/var/lib/node_exporter/textfile_collector` are directories of the sandbox, named
//! in commands and shown in output by those paths. Commands run with `sh -c`, with the CLI first on
//! `PATH`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use snapbox::{Assert, Redactions};
use wasm_node_cache::Fingerprint;

/// The paths a doc names, and where they are in the sandbox (most specific first).
const PATHS: &[(&str, &str)] = &[
    (
        "/var/lib/node_exporter/textfile_collector",
        "var/lib/node_exporter/textfile_collector",
    ),
    ("/var/cache/node-wasm", "var/cache/node-wasm"),
    ("/opt/wasm-bake", "opt/wasm-bake"),
    ("/etc/node", "etc/node"),
    ("/srv/node", ""),
];

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("srv-node");
        common::sh(
            &format!(
                "mkdir -p '{0}' '{0}/etc/node' '{0}/opt' '{0}/var/cache' '{0}/var/lib/node_exporter/textfile_collector' '{0}/tmp' && chmod 700 '{0}/etc/node' && cp -R '{1}/config' '{0}/config'",
                root.display(),
                common::repo().display()
            ),
            dir.path(),
        );
        Sandbox { _dir: dir, root }
    }

    fn real(&self, doc_path: &str) -> PathBuf {
        let (_, inside) = PATHS.iter().find(|(p, _)| *p == doc_path).expect("a doc path");
        self.root.join(inside)
    }

    /// `text` with the docs' paths made the sandbox's.
    fn to_real(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (doc, _) in PATHS {
            out = out.replace(doc, &self.real(doc).display().to_string().replace("//", "/"));
        }
        out
    }

    /// `text` with the sandbox's paths made the docs'.
    fn to_doc(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (doc, _) in PATHS {
            let real = self.real(doc).display().to_string();
            let real = real.trim_end_matches('/');
            out = out.replace(real, doc);
        }
        out
    }

    /// Runs one command line; returns what it printed and `? N` for a non-zero exit status.
    fn run(&self, line: &str) -> String {
        let bin = Path::new(env!("CARGO_BIN_EXE_wasm-node-cache"));
        let path = format!(
            "{}:{}",
            bin.parent().expect("bin dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(self.to_real(line))
            .current_dir(&self.root)
            .env("PATH", path)
            .env("WASM_NODE_CACHE_DIR", self.real("/var/cache/node-wasm"))
            .env("HOME", self.root.join("home"))
            .env("TMPDIR", self.root.join("tmp"))
            .env("COLUMNS", "100")
            .env_remove("WASM_NODE_CACHE_KEY_FILE")
            .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .expect("sh");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        match out.status.code() {
            Some(0) => {}
            Some(n) => text.push_str(&format!("? {n}\n")),
            None => text.push_str("? killed\n"),
        }
        self.to_doc(&text)
    }
}

/// One `$ command` of a block, with what the doc says it prints.
struct Step {
    line: usize,
    command: String,
    expected: String,
}

/// The ```` ```console ```` blocks of `text`, each as its steps.
fn console_blocks(text: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Step>> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```console" => current = Some(Vec::new()),
            None => {}
            Some(steps) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(steps));
                current = None;
            }
            Some(steps) => match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step {
                    line: i + 1,
                    command: command.to_owned(),
                    expected: String::new(),
                }),
                None => {
                    let step = steps.last_mut().expect("a block starts with a command");
                    step.expected.push_str(line);
                    step.expected.push('\n');
                }
            },
        }
    }
    assert!(current.is_none(), "an unclosed console block");
    blocks
}

fn redactions() -> Redactions {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let mut r = Redactions::new();
    r.insert("[MAC_FINGERPRINT]", Fingerprint::of(&engine, true).to_hex())
        .expect("placeholder");
    r.insert("[FINGERPRINT]", Fingerprint::of(&engine, false).to_hex())
        .expect("placeholder");
    r
}

fn check_doc(file: &str) {
    let path = common::repo().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let blocks = console_blocks(&text);
    let assert = Assert::new().redact_with(redactions());
    for block in blocks {
        let sandbox = Sandbox::new();
        for step in block {
            let actual = sandbox.run(&step.command);
            if let Err(e) = assert.try_eq(
                Some(&format!("{file}:{}: $ {}", step.line, step.command)),
                actual.clone().into(),
                step.expected.clone().into(),
            ) {
                panic!("{file}:{}: `$ {}` printed something else\n{e}", step.line, step.command);
            }
        }
    }
}

#[test]
fn the_sessions_of_operating_md_are_what_the_tool_prints() {
    check_doc("docs/operating.md");
}

#[test]
fn the_sessions_of_the_readme_are_what_the_tool_prints() {
    check_doc("README.md");
}

#[test]
fn the_sessions_of_deploying_md_are_what_the_tool_prints() {
    check_doc("docs/deploying.md");
}

/// The field names of the table that follows the line starting with `heading` in `text`: the
/// backticked names of each row's first cell (`` `a`, `b` `` names two).
fn table_fields(text: &str, heading: &str) -> Vec<String> {
    let start = text
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("no {heading:?} in operating.md"));
    let mut fields = Vec::new();
    for line in text.lines().skip(start + 1).skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cell = line.split('|').nth(1).unwrap_or_default();
        for name in cell.split('`').skip(1).step_by(2) {
            let name = name.trim_end_matches("[]");
            if !name.is_empty() && name != "field" {
                fields.push(name.to_owned());
            }
        }
    }
    fields.sort();
    fields.dedup();
    fields
}

/// The top-level keys of the JSON object `command` prints in a sandbox.
fn json_keys(sandbox: &Sandbox, command: &str) -> Vec<String> {
    let out = sandbox.run(command);
    let json = out.lines().next().unwrap_or_default();
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{command}: {e}: {out}"));
    let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    keys.sort();
    keys
}

#[test]
fn the_json_field_tables_of_operating_md_name_exactly_the_fields_printed() {
    let text = std::fs::read_to_string(common::repo().join("docs/operating.md")).expect("operating.md");
    let sandbox = Sandbox::new();
    sandbox.run("wasm-node-cache warm");
    for (heading, command) in [
        ("**`warm --json`**", "wasm-node-cache warm --json"),
        ("**`status --json`**", "wasm-node-cache status --json"),
        ("**`verify --json`**", "wasm-node-cache verify --json"),
        ("**`prune --json`**", "wasm-node-cache prune --stale --json"),
        ("**`host --json`**", "wasm-node-cache host --json"),
    ] {
        assert_eq!(
            table_fields(&text, heading),
            json_keys(&sandbox, command),
            "the table under {heading} and the keys `{command}` prints"
        );
    }
}

/// The names of every `fn` in the repository's Rust sources.
fn rust_fn_names() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, names: &mut std::collections::BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for rest in text.split("fn ").skip(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for dir in ["src", "tests", "benches", "examples", "node-build-check"] {
        walk(&common::repo().join(dir), &mut names);
    }
    names
}

/// A doc that names a test (or a function) by a name no longer in the code sends a reader to
/// nothing: every bare backticked snake_case name of four words or more must be a `fn` of the
/// repository. Anything else is written so that it cannot pass for one: a wasmtime setter as
/// `Config::name`, a metric with its labels (`name{command}`).
#[test]
fn every_test_the_docs_cite_exists() {
    let names = rust_fn_names();
    let mut missing = Vec::new();
    let docs = [
        "README.md",
        "SECURITY.md",
        "docs/operating.md",
        "docs/deploying.md",
        "docs/design.md",
        "docs/performance.md",
    ];
    for doc in docs {
        let text = std::fs::read_to_string(common::repo().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for token in text.split('`').skip(1).step_by(2) {
            // A scenario of tests/common/scenarios.rs, a test through each door.
            if let Some(scenario) = token.strip_prefix("store_scenarios::") {
                if scenario != "node::NAME"
                    && scenario != "embedder::NAME"
                    && scenario != "NAME"
                    && !names.contains(scenario)
                {
                    missing.push(format!("{doc}: {token}"));
                }
                continue;
            }
            let cited = token.matches('_').count() >= 3
                && token
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if cited && !names.contains(token) {
                missing.push(format!("{doc}: {token}"));
            }
        }
    }
    assert!(missing.is_empty(), "cited but not in the code:\n{}", missing.join("\n"));
}
