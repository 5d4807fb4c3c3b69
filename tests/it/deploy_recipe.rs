//! The recipe of docs/deploying.md, run against directories instead of an image: bake at build
//! time, start a container on an empty volume, and start on a host whose engine differs.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{cli_command as cli, sh};
use serde_json::Value;

/// The image's file system and the container's volume, as directories.
struct Image {
    _dir: tempfile::TempDir,
    /// The build stage's working directory (the node's sources and config).
    src: PathBuf,
    /// `/opt/wasm-bake` in the image.
    bake: PathBuf,
    /// `/srv/node` in the image (config copied in, the node's working directory).
    workdir: PathBuf,
    /// `/var/cache/node-wasm`, the writable volume.
    volume: PathBuf,
}

impl Image {
    fn new() -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        copy_config(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            &src.join("config"),
        );
        let image = Image {
            src,
            bake: dir.path().join("opt/wasm-bake"),
            workdir: dir.path().join("srv/node"),
            volume: dir.path().join("var/cache/node-wasm"),
            _dir: dir,
        };
        // COPY --from=build /src/config /srv/node/config
        copy_config(&image.src.join("config"), &image.workdir.join("config"));
        image
    }

    /// The node's start-up in the container: `wasm-node-cache warm` with the image's environment.
    fn container_start(&self) -> (Value, String) {
        let out = cli(&self.workdir)
            .args(["warm", "--json"])
            .env("WASM_NODE_CACHE_READ_ONLY_DIRS", &self.bake)
            .env("WASM_NODE_CACHE_DIR", &self.volume)
            .output()
            .expect("run");
        json_ok(&out)
    }
}

fn copy_config(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("wasm")).expect("mkdir");
    std::fs::copy(from.join("wasm.conf"), to.join("wasm.conf")).expect("copy wasm.conf");
    for e in std::fs::read_dir(from.join("wasm")).expect("config/wasm") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join("wasm").join(e.file_name())).expect("copy component");
    }
}

fn json_ok(out: &Output) -> (Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).expect("one JSON object"), stderr)
}

fn whitelisted(image: &Image) -> u64 {
    let text = std::fs::read_to_string(image.src.join("config/wasm.conf")).expect("wasm.conf");
    wasm_node_cache::config::parse_whitelist(&text, "wasm.conf")
        .expect("parses")
        .len() as u64
}

/// The CPU profiles the README's Dockerfile bakes.
const PROFILES: &str = "native,x86-64-v2,x86-64-v3,x86-64-v4";

/// The build stage's bake step, exactly as docs/deploying.md's Dockerfile runs it (with `profiles`).
fn bake(image: &Image, profiles: &str) -> Value {
    let out = cli(&image.src)
        .args([
            "warm",
            "--wasm-dir",
            "./config/wasm",
            "--whitelist",
            "./config/wasm.conf",
            "--store",
        ])
        .arg(&image.bake)
        .args(["--cpu-profile", profiles, "--finish-bake"])
        .arg("--json")
        .output()
        .expect("run");
    let (v, _) = json_ok(&out);
    v
}

#[test]
fn the_recipe_bakes_at_build_time_and_starts_warm_on_an_empty_volume() {
    let image = Image::new();
    let n = whitelisted(&image);
    let baked = bake(&image, PROFILES);
    assert_eq!(
        (baked["compiled"].as_u64(), baked["store"]["written"].as_u64()),
        (Some(n), Some(n))
    );
    // Each profile's artifacts stored now, or already there: a CPU with exactly one level's
    // features (AVX2 without AVX-512 is x86-64-v3) has that level's fingerprint natively, and the
    // native pass stored those artifacts first.
    let profiles: Vec<(&str, u64)> = baked["baked"]
        .as_array()
        .expect("baked")
        .iter()
        .map(|b| {
            let count = |k: &str| b[k].as_u64().expect("count");
            assert_eq!(b["failed"].as_array().map(Vec::len), Some(0), "{baked}");
            (
                b["profile"].as_str().expect("profile"),
                count("written") + count("present"),
            )
        })
        .collect();
    assert_eq!(
        profiles,
        [("x86-64-v4", n), ("x86-64-v3", n), ("x86-64-v2", n)],
        "{baked}"
    );

    let (v, stderr) = image.container_start();
    assert_eq!(
        (v["from_store"].as_u64(), v["compiled"].as_u64(), v["skipped"].as_u64()),
        (Some(n), Some(0), Some(0)),
        "{v}\n{stderr}"
    );
    let bake = image.bake.display().to_string();
    assert!(
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["store"].as_str() == Some(bake.as_str())),
        "every component came from the bake: {v}"
    );
    assert_eq!(v["store"]["written"].as_u64(), Some(0), "nothing to write: {v}");
}

#[test]
fn on_another_cpu_the_best_portable_profile_serves_and_nothing_is_compiled() {
    let image = Image::new();
    let n = whitelisted(&image);
    let baked = bake(&image, PROFILES);
    // A host whose CPU differs from the build machine's has another native fingerprint: the
    // native artifacts are invisible to it. Removing them shows this host what that one sees.
    let native = baked["store"]["fingerprint"].as_str().expect("fingerprint").to_owned();
    sh(
        &format!("chmod u+w . && rm -f {native}-*.cwasm && chmod a-w ."),
        &image.bake,
    );

    let (v, stderr) = image.container_start();
    assert_eq!(
        (
            v["from_store"].as_u64(),
            v["from_portable"].as_u64(),
            v["compiled"].as_u64()
        ),
        (Some(n), Some(n), Some(0)),
        "{v}\n{stderr}"
    );
    let host = cli(&image.workdir).args(["host", "--json"]).output().expect("run");
    let (host, _) = json_ok(&host);
    // The best profile this CPU runs whose artifacts were not removed with the native ones (a
    // profile with this CPU's native fingerprint has the same file names).
    let best = host["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .find(|p| p["name"] != "native" && p["runs_here"] == true && p["fingerprint"] != native.as_str())
        .expect("a portable profile runs here")["name"]
        .clone();
    assert!(
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["profile"] == best),
        "every component from the best portable profile this CPU runs ({best}): {v}"
    );
    assert_eq!(
        v["store"]["written"].as_u64(),
        Some(0),
        "nothing compiled, nothing written: {v}"
    );
}

#[test]
fn on_a_host_whose_engine_differs_the_bake_is_reported_and_the_volume_takes_over() {
    let image = Image::new();
    let n = whitelisted(&image);
    bake(&image, "native");
    // What a bake made on a CI machine with other CPU features looks like from here: every file
    // under a fingerprint that is not this engine's.
    let other = "0123456789abcdef0123456789abcdef";
    sh(
        &format!("chmod u+w . && for f in *.cwasm; do mv \"$f\" \"{other}-${{f#*-}}\"; done && chmod a-w ."),
        &image.bake,
    );

    let (v, stderr) = image.container_start();
    assert_eq!(
        (v["from_store"].as_u64(), v["compiled"].as_u64()),
        (Some(0), Some(n)),
        "{v}"
    );
    let ro = &v["read_only_stores"][0];
    assert_eq!(ro["hits"].as_u64(), Some(0), "{v}");
    assert_eq!(ro["other_fingerprints"][0]["fingerprint"].as_str(), Some(other), "{v}");
    assert_eq!(ro["other_fingerprints"][0]["files"].as_u64(), Some(n), "{v}");
    assert!(
        stderr.contains(other) && stderr.contains(&format!("holds {n} artifact(s)")),
        "one warning names the bake and its fingerprint: {stderr}"
    );
    assert_eq!(
        v["store"]["written"].as_u64(),
        Some(n),
        "compiled locally into the volume: {v}"
    );

    let (v, _) = image.container_start();
    assert_eq!(
        v["from_store"].as_u64(),
        Some(n),
        "the next start is warm from the volume: {v}"
    );
}
