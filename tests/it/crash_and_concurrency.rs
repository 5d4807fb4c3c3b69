//! Real processes: a start-up killed with SIGKILL at moments spread over its compile-and-write
//! phase, several start-ups racing on one empty store, a lock holder that hangs, and one that dies.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasm_node_cache::artifact_store::StoreWrite;
use wasm_node_cache::testing::{Sealer, Store, deadline_after};
use wasm_node_cache::{Fingerprint, WasmNodeCache};

const BIN: &str = env!("CARGO_BIN_EXE_wasm-node-cache");

fn warm_cmd(root: &Path, store: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("warm")
        .arg("--wasm-dir")
        .arg(root)
        .arg("--all-in-dir")
        .arg("--store")
        .arg(store)
        .arg("--json");
    cmd.env_remove("RUST_LOG")
        .env_remove(wasm_node_cache::config::KEY_FILE_ENV);
    cmd
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "exit {:?}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn count(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[test]
fn killed_at_any_moment_never_leaves_a_partial_artifact() {
    let corpus = common::generated_corpus(16, 400);
    let n = corpus.whitelist.len();

    // One undisturbed cold start-up tells how long the phase to spread the kills over lasts.
    let probe = corpus.dir.path().join("probe-store");
    let t = Instant::now();
    let full = json_of(&warm_cmd(&corpus.root, &probe).output().expect("run warm"));
    let phase = t.elapsed();
    assert_eq!(count(&full, "compiled"), n as u64);

    let rounds: u32 = std::env::var("WNC_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut present_at_kill = Vec::new();
    let mut kills_mid_write = 0;
    for round in 0..rounds {
        let store = corpus.dir.path().join(format!("store-{round}"));
        let mut child = warm_cmd(&corpus.root, &store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Spread over the whole run, slightly past its end so that the last kills hit finished work.
        std::thread::sleep(phase.mul_f64(1.1 * f64::from(round) / f64::from(rounds)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let artifacts = common::artifact_count(&store);
        present_at_kill.push(artifacts);
        if !common::files_with_prefix(&store, ".tmp-").is_empty() {
            kills_mid_write += 1;
        }

        let cache = WasmNodeCache::builder()
            .binary_root(&corpus.root)
            .whitelist(corpus.whitelist.clone())
            .store(&store)
            .build()
            .expect("start-up after a kill");
        let r = cache.report();
        assert_eq!(
            r.rejected, 0,
            "round {round}: a killed writer left a partial artifact\n{r}"
        );
        assert_eq!(
            r.from_store, artifacts,
            "round {round}: every artifact present after the kill is sound\n{r}"
        );
        assert_eq!(r.from_store + r.compiled, n, "round {round}\n{r}");
        assert_eq!(cache.wasm_component_cache.len(), n);
        if r.compiled > 0 {
            assert!(
                common::files_with_prefix(&store, ".tmp-").is_empty(),
                "round {round}: temp files left after a start-up held the lock"
            );
        }
    }
    present_at_kill.sort_unstable();
    present_at_kill.dedup();
    eprintln!(
        "artifacts present at the kill, distinct counts over {rounds} rounds: {present_at_kill:?}; \
         {kills_mid_write} kills left a temp file behind"
    );
    assert!(
        present_at_kill.len() >= 3,
        "kills did not spread over the write phase: {present_at_kill:?}"
    );
}

#[test]
fn concurrent_cold_start_ups_compile_each_component_once() {
    let corpus = common::generated_corpus(12, 200);
    let n = corpus.whitelist.len() as u64;
    let store = corpus.dir.path().join("store");
    let children: Vec<Child> = (0..4)
        .map(|_| {
            warm_cmd(&corpus.root, &store)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut compiled_total = 0;
    for child in children {
        let v = json_of(&child.wait_with_output().expect("wait"));
        assert_eq!(count(&v, "from_store") + count(&v, "compiled"), n, "{v}");
        assert_eq!(count(&v, "rejected"), 0, "{v}");
        compiled_total += count(&v, "compiled");
    }
    assert_eq!(
        compiled_total, n,
        "each component compiled exactly once across all processes"
    );
    assert_eq!(common::artifact_count(&store), n as usize);
}

/// Re-runs this test binary as a child that takes the store's exclusive lock and holds it until
/// killed. Returns once the child holds the lock.
fn spawn_lock_holder(store: &Path) -> Child {
    spawn_lock_holder_with(store, "hold")
}

/// [`spawn_lock_holder`], with `mode` `hold` (exclusive until killed) or `switch` (the adder's
/// artifact lock until killed, and the exclusive lock for its first 1.5 s).
fn spawn_lock_holder_with(store: &Path, mode: &str) -> Child {
    std::fs::create_dir_all(store).expect("mkdir store");
    std::fs::set_permissions(store, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_and_concurrency::lock_holder_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WNC_HOLD_LOCK", store.join("lock"))
        .env("WNC_HOLD_MODE", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lock holder");
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        if line.expect("read child").contains("LOCKED") {
            return child;
        }
    }
    let status = child.wait();
    panic!("lock holder exited without taking the lock: {status:?}");
}

#[test]
#[ignore = "child process of the lock tests; does nothing unless they spawn it"]
fn lock_holder_child() {
    let Some(path) = std::env::var_os("WNC_HOLD_LOCK") else {
        return;
    };
    let lock_path = std::path::PathBuf::from(path);
    let dir = lock_path.parent().expect("lock file in a store");
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let store = Store::open(dir, Fingerprint::of(&engine, false), Sealer::Plain).expect("store");
    if std::env::var("WNC_HOLD_MODE").as_deref() == Ok("switch") {
        let soon = || deadline_after(Duration::from_secs(10));
        let exclusive = store.lock_exclusive(soon(), "hold it for a test").expect("exclusive");
        let _adder = store
            .lock_artifact(
                &store.key(&common::adder_hash()),
                soon(),
                "compile the adder for a test",
            )
            .expect("the adder's lock");
        println!("LOCKED");
        std::thread::sleep(Duration::from_millis(1500));
        drop(exclusive);
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let _guard = store
        .lock_exclusive(deadline_after(Duration::from_secs(10)), "hold it for a test")
        .expect("lock");
    println!("LOCKED");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn hung_lock_holder_delays_the_start_up_but_never_blocks_it() {
    let fx = common::Fixture::new();
    let mut holder = spawn_lock_holder(&fx.store);
    let t = Instant::now();
    let output = warm_cmd(&fx.root, &fx.store)
        .args(["--lock-timeout", "0.5"])
        .output()
        .expect("run warm");
    let waited = t.elapsed();
    holder.kill().expect("kill holder");
    holder.wait().expect("reap");
    let v = json_of(&output);
    assert_eq!(count(&v, "compiled"), 3, "{v}");
    let write_error = v["store"]["write_error"]["message"].as_str().unwrap_or_default();
    assert!(write_error.contains("lock still held"), "{v}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("waiting for the shared lock"),
        "the wait is logged: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", holder.id())),
        "the log names the holder: {stderr}"
    );
    assert!(waited < Duration::from_secs(20), "bounded wait, took {waited:?}");
}

#[test]
fn all_lock_waits_of_a_start_up_share_one_deadline() {
    let fx = common::Fixture::new();
    // The exclusive lock for 1.5 s, and the adder's artifact lock until killed: the start-up
    // waits for the shared lock, loads nothing (empty store), then compiles: the fib and the
    // fnv1a under their own locks, the adder after waiting for its lock, which never comes.
    let mut holder = spawn_lock_holder_with(&fx.store, "switch");
    let timeout = Duration::from_secs(2);
    let cache = fx.builder().lock_timeout(timeout).build().expect("start-up");
    holder.kill().expect("kill holder");
    holder.wait().expect("reap");
    let r = cache.report();
    assert_eq!((r.compiled, r.store.written), (3, 2), "{r}");
    let adder = r.entry(&common::adder_hash()).expect("the adder");
    assert!(
        matches!(&adder.stored, Some(StoreWrite::NotStored(e)) if e.message().contains("lock still held")),
        "{r}"
    );
    // Two separate timeouts would wait about 1.5 + 2 s; one deadline ends the waiting at 2 s.
    // Compiling the three small components takes milliseconds on top.
    assert!(
        r.elapsed < timeout + Duration::from_millis(800),
        "lock waits exceeded the one timeout: {:?}",
        r.elapsed
    );
}

#[test]
fn lock_of_a_killed_process_blocks_nobody() {
    let fx = common::Fixture::new();
    let mut holder = spawn_lock_holder(&fx.store);
    holder.kill().expect("SIGKILL holder");
    holder.wait().expect("reap");
    let cache = fx
        .builder()
        .lock_timeout(Duration::from_secs(30))
        .build()
        .expect("start-up");
    let r = cache.report();
    assert_eq!((r.compiled, r.rejected), (3, 0), "{r}");
    assert!(r.store.write_error.is_none(), "the dead holder's lock is gone: {r}");
    assert_eq!(r.store.written, 3);
    assert!(
        r.elapsed < Duration::from_secs(10),
        "no wait on a dead process's lock: {:?}",
        r.elapsed
    );
}
