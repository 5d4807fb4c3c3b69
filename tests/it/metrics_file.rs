//! `--metrics-file` in node_exporter's textfile directory, which another user owns or shares: the
//! attacks that worked on the old write (a file created by its predictable name
//! `.<name>.<pid>.tmp`, following links, then renamed over the path) as uid 65534 plays them, in
//! a directory of uid 65534 (0755), a shared one (0777) and a sticky one (1777). The real CLI, in
//! separate processes, as root; the attacker's files are made by `sh` as uid 65534, which needs
//! root (tests marked `#[ignore = "needs root: ..."]`).

use crate::common;

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, OTHER_UID, chmod, give_to_other_uid};

/// How long a command may take before the test calls it hung (a FIFO opened for writing).
const HUNG: Duration = Duration::from_secs(30);
/// Old temporary names planted per directory: the pids of the next so many processes.
const PIDS: u32 = 1000;
/// What the root-only file holds, before and after.
const SECRET: &[u8] = b"root only\n";

/// A textfile directory another user can write in, as a test sets it up.
struct Textfile {
    path: PathBuf,
    /// Its owner, as messages name it ("uid 65534", "uid 0").
    owner: u32,
}

/// The fixture, its store filled once (so later commands take milliseconds), a root-only 0600
/// file, and the three textfile directories: uid 65534's (0755), shared (0777), sticky (1777).
struct Setup {
    fx: Fixture,
    secret: PathBuf,
    dirs: Vec<Textfile>,
}

impl Setup {
    fn new() -> Setup {
        let fx = Fixture::new();
        // uid 65534 must reach the textfile directories; nobody but root may write here.
        chmod(fx.dir.path(), 0o755);
        let out = run(&fx, "warm", None);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let secret = fx.dir.path().join("secret");
        std::fs::write(&secret, SECRET).expect("write");
        chmod(&secret, 0o600);
        let mut dirs = Vec::new();
        for (name, mode, owner) in [
            ("theirs", 0o755, OTHER_UID),
            ("shared", 0o777, 0),
            ("sticky", 0o1777, 0),
        ] {
            let path = fx.dir.path().join(name);
            std::fs::create_dir(&path).expect("mkdir");
            if owner == OTHER_UID {
                give_to_other_uid(&path);
            }
            chmod(&path, mode);
            dirs.push(Textfile { path, owner });
        }
        Setup { fx, secret, dirs }
    }

    fn assert_secret_unchanged(&self) {
        let meta = std::fs::symlink_metadata(&self.secret).expect("stat");
        assert!(meta.is_file() && meta.uid() == 0 && meta.mode() & 0o777 == 0o600);
        let now = std::fs::read(&self.secret).expect("read");
        assert!(
            now == SECRET,
            "the root-only file changed: {}",
            String::from_utf8_lossy(&now)
        );
    }
}

/// `warm` (over the fixture's components into its store) or `status` (of the store), with
/// `--metrics-file metrics` when given; fails the test if it runs past [`HUNG`].
fn run(fx: &Fixture, command: &str, metrics: Option<&Path>) -> Output {
    run_with_pid(fx, command, metrics).0
}

/// [`run`], with the pid the command ran as.
fn run_with_pid(fx: &Fixture, command: &str, metrics: Option<&Path>) -> (Output, u32) {
    run_aimed(fx, command, metrics, |_| {})
}

/// [`run_with_pid`], calling `aim` with the command's pid before it runs: a shell prints its pid,
/// waits for a line, then becomes the command (same pid), so that what `aim` plants for that pid
/// is there whatever other processes a parallel test run starts meanwhile.
fn run_aimed(fx: &Fixture, command: &str, metrics: Option<&Path>, aim: impl FnOnce(u32)) -> (Output, u32) {
    use std::io::{BufRead, Read, Write};
    let mut c = Command::new("sh");
    c.args(["-c", r#"echo $$; read _; exec "$@""#, "sh"])
        .arg(env!("CARGO_BIN_EXE_wasm-node-cache"));
    c.current_dir(fx.dir.path())
        .arg(command)
        .env_remove("WASM_NODE_CACHE_DIR")
        .env_remove("WASM_NODE_CACHE_KEY_FILE")
        .env_remove("WASM_NODE_CACHE_READ_ONLY_DIRS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if command == "warm" {
        c.args(["--all-in-dir", "--wasm-dir"]).arg(&fx.root);
    }
    c.arg("--store").arg(&fx.store);
    if let Some(file) = metrics {
        c.arg("--metrics-file").arg(file);
    }
    let mut child = c.spawn().expect("run wasm-node-cache");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the pid");
    let pid: u32 = line.trim().parse().unwrap_or_else(|_| panic!("a pid, not {line:?}"));
    aim(pid);
    let _ = child.stdin.take().expect("stdin").write_all(b"\n");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    // Drained on threads, so that a command printing much never blocks on a full pipe.
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > HUNG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command} --metrics-file {metrics:?}` hung for {HUNG:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: out_reader.join().expect("stdout"),
        stderr: err_reader.join().expect("stderr"),
    };
    (output, pid)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The old temporary name of `name` for `pid`.
fn old_temp(dir: &Path, name: &str, pid: u32) -> PathBuf {
    dir.join(format!(".{name}.{pid}.tmp"))
}

/// Plants, as uid 65534, the old temporary names of `name` in `dir` for the pids of the next
/// [`PIDS`] processes: `link`s to `target` (one `ln` each, so the names start past the pids those
/// take), `fifo`s or 0666 `file`s (one `mkfifo` or `touch` for all).
fn plant_old_temps(dir: &Path, name: &str, kind: &str, target: &Path) {
    let script = r#"
        cd "$1" || exit 1
        name=$2 kind=$3 count=$4 target=$5
        max=$(cat /proc/sys/kernel/pid_max)
        last=$(cat /proc/sys/kernel/ns_last_pid)
        if [ "$kind" = link ]; then i=$((last + count)); else i=$((last + 1)); fi
        n=0 list=""
        while [ $n -lt $count ]; do
            [ $i -ge $max ] && i=300
            if [ "$kind" = link ]; then
                ln -s "$target" ".$name.$i.tmp" || exit 1
            else
                list="$list .$name.$i.tmp"
            fi
            i=$((i + 1)) n=$((n + 1))
        done
        case $kind in
            fifo) mkfifo -m 666 $list ;;
            file) touch $list && chmod 666 $list ;;
        esac
    "#;
    let count = PIDS.to_string();
    let out = sh_as_other_uid(
        script,
        &[
            dir.as_os_str(),
            name.as_ref(),
            kind.as_ref(),
            count.as_ref(),
            target.as_os_str(),
        ],
    );
    assert!(out.status.success(), "planting {kind}s: {}", stderr(&out));
}

/// `sh -c script sh args...` as uid 65534.
fn sh_as_other_uid(script: &str, args: &[&OsStr]) -> Output {
    let mut all: Vec<&OsStr> = vec!["-c".as_ref(), script.as_ref(), "sh".as_ref()];
    all.extend_from_slice(args);
    common::run_as_other_uid("sh", &all)
}

/// Plants, as uid 65534, the old temporary name of `name` for `pid` in `dir`, as
/// [`plant_old_temps`] does, unless the window planted it already; true when it planted it.
fn plant_one(dir: &Path, name: &str, kind: &str, target: &Path, pid: u32) -> bool {
    let script = r#"
        cd "$1" || exit 1
        f=".$2.$5.tmp"
        if [ -e "$f" ] || [ -L "$f" ]; then exit 3; fi
        case $3 in
            link) ln -s "$4" "$f" ;;
            fifo) mkfifo -m 666 "$f" ;;
            *) touch "$f" && chmod 666 "$f" ;;
        esac
    "#;
    let pid = pid.to_string();
    let out = sh_as_other_uid(
        script,
        &[
            dir.as_os_str(),
            name.as_ref(),
            kind.as_ref(),
            target.as_os_str(),
            pid.as_ref(),
        ],
    );
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!("planting {kind} for pid {pid}: {}", stderr(&out)),
    }
}

/// The metrics file both commands write in each directory.
const NAME: &str = "node.prom";
/// The commands that take `--metrics-file`, in the order the tests run them.
const COMMANDS: [&str; 2] = ["warm", "status"];

/// Plants the old temporary names of [`NAME`] in `dir` (as [`plant_old_temps`]), then runs `warm`
/// and `status` with `--metrics-file dir/NAME`; asserts that each wrote it, and that every
/// planted name still holds what uid 65534 put there (a link to the root-only file, a FIFO, an
/// empty 0666 file of uid 65534's), the names of the commands' own pids among them: the planting
/// was aimed right, and nothing was written through any of them.
fn run_against_old_temps(setup: &Setup, dir: &Path, kind: &str) {
    plant_old_temps(dir, NAME, kind, &setup.secret);
    let path = dir.join(NAME);
    for command in COMMANDS {
        let t = Instant::now();
        // The command's own pid, aimed at exactly, in case other processes of a parallel test
        // run took the window's pids.
        let mut aimed = false;
        let (out, pid) = run_aimed(&setup.fx, command, Some(&path), |pid| {
            aimed = plant_one(dir, NAME, kind, &setup.secret, pid);
        });
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{command} took {:?}",
            t.elapsed()
        );
        setup.assert_secret_unchanged();
        assert_written(&out, command, &path);
        let prefix = format!(".{NAME}.");
        let planted: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
            .collect();
        assert_eq!(
            planted.len(),
            PIDS as usize + usize::from(aimed),
            "every planted name is still there, and no other"
        );
        let own = old_temp(dir, NAME, pid);
        assert!(planted.contains(&own), "{} was not planted", own.display());
        for p in &planted {
            let meta = std::fs::symlink_metadata(p).expect("lstat");
            assert_eq!(meta.uid(), OTHER_UID, "{}", p.display());
            match kind {
                "link" => assert_eq!(std::fs::read_link(p).expect("a link"), setup.secret),
                "fifo" => assert!(meta.file_type().is_fifo(), "{}", p.display()),
                _ => assert!(
                    meta.is_file() && meta.len() == 0 && meta.mode() & 0o777 == 0o666,
                    "{}",
                    p.display()
                ),
            }
        }
    }
}

/// Removes the `.tmp` entries of `dir` (as root).
fn remove_temps(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().ends_with(".tmp") {
            std::fs::remove_file(&p).expect("rm");
        }
    }
}

/// The metrics file `path` is a regular file of root's, 0644, holding `command`'s metrics.
fn assert_metrics_file(path: &Path, command: &str) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(meta.is_file(), "{}: {:?}", path.display(), meta.file_type());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644), "{}", path.display());
    let text = std::fs::read_to_string(path).expect("read");
    assert!(
        text.contains(&format!("wasm_node_cache_healthy{{command=\"{command}\"}}")),
        "{text}"
    );
}

/// The command succeeded (warm 0; status 0 or 1, its verdict) and wrote `path`.
fn assert_written(out: &Output, command: &str, path: &Path) {
    let ok = match command {
        "warm" => out.status.code() == Some(0),
        _ => matches!(out.status.code(), Some(0 | 1)),
    };
    assert!(ok, "{command}: {:?}: {}", out.status, stderr(out));
    assert_metrics_file(path, command);
}

/// How messages name a directory's owner after its path: `(owned by uid 65534 (nobody))`, here
/// up to the number, as `/etc/passwd` may have no name for it.
fn owner_text(uid: u32) -> String {
    format!("(owned by uid {uid}")
}

/// Starts, as uid 65534, a loop that for at most 5 s replaces every `.*.tmp` entry of `dir` that
/// is not a link yet with a link to `target` (`ln -sf`: unlink, then link).
fn start_planting_loop(dir: &Path, target: &Path) -> Child {
    let script = r#"
        cd "$1" || exit 1
        while :; do
            for f in .*.tmp; do
                [ -L "$f" ] && continue
                [ -e "$f" ] || continue
                ln -sf "$2" "$f" 2>/dev/null
            done
        done
    "#;
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .args(["timeout", "5", "sh", "-c", script, "sh"])
        .arg(dir)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("needs root: cannot run setpriv ({e})"))
}

/// Ends the loop: SIGTERM to `timeout` (the process started, by its pid), which passes it on to
/// its `sh`.
fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id())
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();
}

#[test]
#[ignore = "needs root: a second uid plants files in the textfile directory"]
fn links_under_temporary_names_never_redirect_the_write() {
    let setup = Setup::new();
    for dir in &setup.dirs {
        // The old names, planted for the pids of the next commands.
        run_against_old_temps(&setup, &dir.path, "link");
        remove_temps(&dir.path);
        // Any temporary name, linked away as soon as uid 65534 sees it, while the commands run.
        let looping = start_planting_loop(&dir.path, &setup.secret);
        std::thread::sleep(Duration::from_millis(100));
        let path = dir.path.join(NAME);
        let (mut written, mut refused) = (0, 0);
        for command in std::iter::once("warm").chain(std::iter::repeat_n("status", 20)) {
            let out = run(&setup.fx, command, Some(&path));
            let text = stderr(&out);
            if out.status.code() == Some(2) {
                // Caught between two steps: the error names the directory and its owner.
                assert!(
                    text.contains(&format!("{} {}", dir.path.display(), owner_text(dir.owner))),
                    "{text}"
                );
                refused += 1;
            } else {
                assert_written(&out, command, &path);
                written += 1;
            }
            setup.assert_secret_unchanged();
        }
        stop(looping);
        setup.assert_secret_unchanged();
        eprintln!("{}: {written} written, {refused} refused", dir.path.display());
    }
}

#[test]
#[ignore = "needs root: a second uid plants files in the textfile directory"]
fn fifos_under_temporary_names_never_block_the_command() {
    let setup = Setup::new();
    for dir in &setup.dirs {
        // `run` fails the test past 30 s, and `run_against_old_temps` past 10 s a command.
        run_against_old_temps(&setup, &dir.path, "fifo");
    }
}

#[test]
#[ignore = "needs root: a second uid plants files in the textfile directory"]
fn a_file_planted_first_never_becomes_the_metrics_file_nor_receives_it() {
    let setup = Setup::new();
    for dir in &setup.dirs {
        let path = dir.path.join(NAME);
        let kept = dir.path.join("node.kept");
        // At the path itself, 0666, and a hard link of uid 65534's to see its inode later.
        let script = r#"cd "$1" && printf 'planted\n' > "$2" && chmod 666 "$2" && ln "$2" "$3""#;
        let out = common::run_as_other_uid(
            "sh",
            &[
                "-c".as_ref(),
                script.as_ref(),
                "sh".as_ref(),
                dir.path.as_os_str(),
                NAME.as_ref(),
                kept.as_os_str(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let planted_ino = std::fs::symlink_metadata(&kept).expect("planted").ino();
        // And at the old temporary names; both commands write the path.
        run_against_old_temps(&setup, &dir.path, "file");
        let planted = std::fs::symlink_metadata(&kept).expect("the planted inode");
        assert_eq!(
            (planted.ino(), planted.uid(), planted.mode() & 0o777, planted.nlink()),
            (planted_ino, OTHER_UID, 0o666, 1),
            "only uid 65534's own link is left to it"
        );
        assert_eq!(
            std::fs::read(&kept).expect("read"),
            b"planted\n",
            "it never got our text"
        );
        assert_ne!(planted.ino(), std::fs::metadata(&path).expect("stat").ino());
    }
}

#[test]
#[ignore = "needs root: a second uid plants files in the textfile directory"]
fn a_link_a_fifo_or_a_device_as_the_path_is_refused_naming_it() {
    let setup = Setup::new();
    for dir in &setup.dirs {
        let link = dir.path.join("link.prom");
        let fifo = dir.path.join("fifo.prom");
        let script = r#"cd "$1" && ln -s "$2" link.prom && mkfifo -m 666 fifo.prom"#;
        let out = common::run_as_other_uid(
            "sh",
            &[
                "-c".as_ref(),
                script.as_ref(),
                "sh".as_ref(),
                dir.path.as_os_str(),
                setup.secret.as_os_str(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        for command in COMMANDS {
            for (path, kind) in [(&link, "a symbolic link"), (&fifo, "a FIFO")] {
                let out = run(&setup.fx, command, Some(path));
                let text = stderr(&out);
                assert_eq!(out.status.code(), Some(2), "{command}: {text}");
                assert!(
                    text.contains(&format!("{} is {kind} of uid {OTHER_UID}", path.display()))
                        && text.contains(&format!("{} {}", dir.path.display(), owner_text(dir.owner))),
                    "{text}"
                );
            }
            assert_eq!(std::fs::read_link(&link).expect("still the link"), setup.secret);
            assert!(std::fs::symlink_metadata(&fifo).expect("stat").file_type().is_fifo());
            setup.assert_secret_unchanged();
            let names: Vec<String> = std::fs::read_dir(&dir.path)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        }
    }
    for command in COMMANDS {
        let out = run(&setup.fx, command, Some(Path::new("/dev/null")));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {text}");
        assert!(text.contains("/dev/null is a character device"), "{text}");
        let ty = std::fs::symlink_metadata("/dev/null").expect("stat").file_type();
        assert!(ty.is_char_device(), "/dev/null is still a character device");
    }
}

#[test]
#[ignore = "needs root: a second uid plants files in the textfile directory"]
fn a_directory_above_that_another_user_could_swap_is_refused_naming_it_and_its_owner() {
    let setup = Setup::new();
    let [theirs, shared, sticky] = &setup.dirs[..] else {
        panic!("three directories");
    };
    // A directory of uid 65534's inside its own, and root's inside the shared and sticky ones.
    let out = common::run_as_other_uid("mkdir", &[theirs.path.join("sub").as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::create_dir(shared.path.join("sub")).expect("mkdir");
    std::fs::create_dir(sticky.path.join("sub")).expect("mkdir");
    for (above, expect) in [
        (theirs, format!(" is owned by uid {OTHER_UID}")),
        (
            shared,
            ", owned by uid 0 (root), is writable by other users (mode 0777) and not sticky".to_owned(),
        ),
    ] {
        let path = above.path.join("sub").join(NAME);
        let expect = format!(
            "the directory {} above {}{expect}",
            above.path.display(),
            path.display()
        );
        for command in COMMANDS {
            let out = run(&setup.fx, command, Some(&path));
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{command}: {text}");
            assert!(text.contains(&expect), "{command}: {text}");
            assert!(!path.exists(), "nothing written");
        }
    }
    // Below a sticky directory nobody but an entry's owner renames it: written.
    let path = sticky.path.join("sub").join(NAME);
    for command in COMMANDS {
        let out = run(&setup.fx, command, Some(&path));
        assert_written(&out, command, &path);
    }
}
