//! gkfs-run start/status/stop in local mode, run as a user would; failed start-ups
//! (errors, timeouts, signals, the --local ceiling) leave nothing behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gkfs_client::{Client, ClientConfig};
use gkfs_tests::bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin("gkfs-run"));
    cmd.args(args).env_remove("LIBGKFS_HOSTS_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_status_stop() {
    let base = tempfile::tempdir().unwrap();
    let inst = base.path().join("inst");
    let root = base.path().join("root");
    let (code, out, err) = run(
        &[
            "start",
            "--local",
            "3",
            "--instance-dir",
            inst.to_str().unwrap(),
            "--rootdir",
            root.to_str().unwrap(),
            "--chunk-size",
            "65536",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let hosts = out
        .lines()
        .find_map(|l| l.strip_prefix("export LIBGKFS_HOSTS_FILE="))
        .expect("no hosts file line")
        .to_string();
    let mode = std::fs::metadata(&inst).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    let client = Client::new(&ClientConfig::new(&hosts)).unwrap();
    assert_eq!(client.daemons(), 3);
    let f = client.create("/hello", 0o644).unwrap();
    assert!(f.is_file());
    client.write_at("/hello", &vec![1u8; 300_000], 0).unwrap();

    let (code, out, err) = run(&["status", "--json"], &[("LIBGKFS_HOSTS_FILE", &hosts)]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["up"] == true));
    let files: u64 = rows.iter().map(|r| r["files"].as_u64().unwrap()).sum();
    let bytes: u64 = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert_eq!((files, bytes), (1, 300_000));
    let (code, table, _) = run(&["status", "--hosts-file", &hosts], &[]);
    assert_eq!(code, 0);
    assert!(
        table.contains("127.0.0.1:") && table.contains(" up "),
        "{table}"
    );

    let pids: Vec<i32> = rows
        .iter()
        .map(|r| r["pid"].as_i64().unwrap() as i32)
        .collect();
    let (code, _, err) = run(&["stop", "--hosts-file", &hosts], &[]);
    assert_eq!(code, 0, "{err}");
    for pid in pids {
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "daemon {pid} still running"
        );
    }
    assert!(!inst.exists(), "instance dir left behind");
    assert!(!root.exists(), "root dirs left behind");
}

#[test]
fn bad_usage_gets_clear_errors() {
    let (code, _, err) = run(&["start"], &[("SLURM_JOB_ID", "")]);
    assert_ne!(code, 0);
    assert!(err.contains("--local"), "{err}");
    let (code, _, err) = run(&["start", "--local", "0"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("at least one daemon"), "{err}");
    let (code, _, err) = run(&["start", "--local", "1", "--chunk-size", "1000"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("power of two"), "{err}");
    let (code, _, err) = run(&["status"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("LIBGKFS_HOSTS_FILE"), "{err}");
    let (code, _, err) = run(&["stop", "--hosts-file", "/nonexistent/hosts"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("gkfs-run start"), "{err}");
}

/// No gkfsd process mentions `needle` on its command line any more.
fn no_daemon_mentions(needle: &str) -> bool {
    fs::read_dir("/proc").unwrap().flatten().all(|e| {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        !(cmd.contains("gkfsd") && cmd.contains(needle))
    })
}

#[test]
fn run_starts_runs_stops_and_passes_the_exit_status() {
    let base = tempfile::tempdir().unwrap();
    let inst = base.path().join("inst");
    let mnt = format!("/tmp/gkfs-run-test-{}", std::process::id());
    let (code, out, err) = run(
        &[
            "run",
            "--local",
            "2",
            "--instance-dir",
            inst.to_str().unwrap(),
            "--mountdir",
            &mnt,
            "--",
            "bash",
            "-c",
            &format!("echo hi > {mnt}/f && cat {mnt}/f && ls {mnt} && exit 3"),
        ],
        &[],
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert_eq!(out, "hi\nf\n", "{err}");
    assert!(!inst.exists(), "instance dir left behind");
    assert!(
        no_daemon_mentions(inst.to_str().unwrap()),
        "a daemon outlived `run`"
    );
    assert!(
        !Path::new(&mnt).exists(),
        "the mount dir must never be created on disk"
    );
}

#[test]
fn exec_runs_a_command_on_a_started_instance() {
    let base = tempfile::tempdir().unwrap();
    let inst = base.path().join("inst");
    let mnt = format!("/tmp/gkfs-exec-test-{}", std::process::id());
    let (code, _, err) = run(
        &[
            "start",
            "--local",
            "1",
            "--instance-dir",
            inst.to_str().unwrap(),
            "--mountdir",
            &mnt,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let hosts = inst.join("hosts");
    let h = hosts.to_str().unwrap();
    let (code, out, err) = run(
        &[
            "exec",
            "--hosts-file",
            h,
            "--",
            "sh",
            "-c",
            &format!("seq 3 > {mnt}/n; wc -l < {mnt}/n"),
        ],
        &[],
    );
    assert_eq!((code, out.trim()), (0, "3"), "{err}");
    let (code, out, _) = run(
        &["exec", "--hosts-file", h, "--", "cat", &format!("{mnt}/n")],
        &[],
    );
    assert_eq!((code, out.as_str()), (0, "1\n2\n3\n"));
    let (code, _, err) = run(&["exec", "--hosts-file", h, "--", "false"], &[]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&["exec", "--hosts-file", h, "--", "/nonexistent/cmd"], &[]);
    assert!(code != 0 && err.contains("cannot run"), "{err}");
    let (code, _, err) = run(&["stop", "--hosts-file", h], &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_readme_demo_job_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let base = tempfile::tempdir().unwrap();
    let out = base.path().join("out");
    let mnt = format!("/tmp/gkfs-demo-test-{}", std::process::id());
    let o = Command::new(bin("gkfs-run"))
        .args(["run", "--local", "2", "--mountdir", &mnt, "--"])
        .arg(root.join("scripts/demo-job.sh"))
        .arg(root.join("proto"))
        .arg(&out)
        .env("GKFS_MOUNTDIR", &mnt)
        .env_remove("LIBGKFS_HOSTS_FILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("round trip identical"),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---------------------------------------------------------------------------------
// Failed start-ups leave nothing behind; the --local ceiling; the timeout counts from
// the beginning; signals during start-up (and `run`).

/// Writes the executable script `name` into `dir`.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A daemon program that never registers (a shell loop: its command line names the
/// script, so a leftover is found by the test's directory).
const NEVER_REGISTERS: &str = "#!/bin/sh\nwhile :; do sleep 0.1; done\n";

/// A daemon program that registers in the hosts file, with a node-local socket that
/// accepts connections and never answers: a hung daemon.
const REGISTERS_NEVER_ANSWERS: &str = r#"#!/usr/bin/env python3
import os, socket, struct, sys, time
a = sys.argv[1:]
opt = lambda n: a[a.index(n) + 1]
hosts = opt("--hosts-file")
path = os.path.join(os.path.dirname(hosts), "hung.%d.sock" % os.getpid())
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(64)
port = 10000 + os.getpid() % 50000  # an address of its own: the hosts file lists each once
addr = struct.pack("=H", socket.AF_INET) + struct.pack(">H", port) + bytes([127, 0, 0, 1]) + bytes(8)
line = "%s %s %s chunk_size=%s mountdir=%s pid=%d socket=%s\n" % (
    socket.gethostname(), opt("--provider"), addr.hex(), opt("--chunk-size"),
    opt("--mountdir"), os.getpid(), path)
with open(hosts, "a") as f:
    f.write(line)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
"#;

/// Live processes (zombies excluded) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat
                .rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'));
            (!zombie && cmd.contains(needle))
                .then(|| format!("{} {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Everything under `dir`, as sorted relative paths.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A private directory for one test; whatever process still mentions it when the test
/// ends (a failed assertion) is killed, so that a failing test leaves nothing either.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix("gkfs-run-test-")
                .tempdir()
                .unwrap(),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn s(&self, rel: &str) -> String {
        self.path().join(rel).display().to_string()
    }

    /// Fails unless no process mentions the directory and it holds exactly `expect`.
    fn assert_only(&self, expect: &[&str], context: &str) {
        let procs = processes_mentioning(&self.path().display().to_string());
        assert!(
            procs.is_empty(),
            "processes left behind: {procs:?}\n{context}"
        );
        let mut expect: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
        expect.sort();
        assert_eq!(tree(self.path()), expect, "files left behind\n{context}");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in processes_mentioning(&self.path().display().to_string()) {
            if let Some(pid) = p.split(' ').next().and_then(|s| s.parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The exit code of a finished gkfs-run and its stderr, and how long it took.
fn timed(args: &[&str], env: &[(&str, &str)]) -> (i32, String, Duration) {
    let t = Instant::now();
    let (code, _, err) = run(args, env);
    (code, err, t.elapsed())
}

#[test]
fn a_start_that_cannot_create_its_root_dirs_leaves_nothing() {
    let s = Scratch::new();
    fs::write(s.path().join("file"), b"").unwrap();
    // The root dirs' parent would be under a regular file: it cannot be created (even
    // by root). The instance dir and its two parents can, and must go again.
    let (code, err, _) = timed(
        &[
            "start",
            "--local",
            "2",
            "--instance-dir",
            &s.s("new/er/inst"),
            "--rootdir",
            &s.s("file/root"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot create") && err.contains("file/root"),
        "{err}"
    );
    s.assert_only(&["file"], &err);
    if !nix::unistd::geteuid().is_root() {
        // An unwritable parent (root may write anywhere, so only as another user).
        fs::create_dir(s.path().join("ro")).unwrap();
        fs::set_permissions(s.path().join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let (code, err, _) = timed(
            &[
                "start",
                "--local",
                "2",
                "--instance-dir",
                &s.s("inst"),
                "--rootdir",
                &s.s("ro/root"),
            ],
            &[],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("cannot create"), "{err}");
        s.assert_only(&["file", "ro"], &err);
    }
}

#[test]
fn a_start_whose_daemons_exit_at_once_leaves_nothing() {
    let s = Scratch::new();
    // A root parent that exists and holds something: that stays, the rest goes.
    fs::create_dir(s.path().join("roots")).unwrap();
    fs::write(s.path().join("roots/keep"), b"mine").unwrap();
    for (daemon, provider, says) in [
        // A program that exits at once.
        ("/bin/false", "tcp;ofi_rxm", "exit status: 1"),
        // The real gkfsd, which cannot open a provider that does not exist.
        (
            bin("gkfsd").to_str().unwrap(),
            "no-such-provider",
            "gkfsd: error",
        ),
    ] {
        let (code, err, _) = timed(
            &[
                "start",
                "--local",
                "3",
                "--instance-dir",
                &s.s("a/b/inst"),
                "--rootdir",
                &s.s("roots"),
                "--provider",
                provider,
            ],
            &[("GKFS_DAEMON", daemon)],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("exited during start-up") && err.contains(says),
            "{daemon}: {err}"
        );
        s.assert_only(&["roots", "roots/keep"], &err);
    }
}

#[test]
fn a_start_that_times_out_fails_at_the_timeout_and_leaves_nothing() {
    let s = Scratch::new();
    let hung = script(s.path(), "hung-daemon", REGISTERS_NEVER_ANSWERS);
    let quiet = script(s.path(), "quiet-daemon", NEVER_REGISTERS);
    let files = ["hung-daemon", "quiet-daemon"];
    // Four hung daemons: every ping waits for its answer in vain (up to 2 s). The whole
    // start-up must still end at --timeout (plus the clean-up), not after a round of
    // pings (4 x 2 s) that began before the deadline (it took 9 s before).
    let (code, err, took) = timed(
        &[
            "start",
            "--local",
            "4",
            "--instance-dir",
            &s.s("inst"),
            "--rootdir",
            &s.s("roots/here"),
            "--timeout",
            "3",
        ],
        &[("GKFS_DAEMON", hung.to_str().unwrap())],
    );
    assert!(
        took < Duration::from_secs(5),
        "--timeout 3 took {took:?}: {err}"
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("timed out after 3 s") && err.contains("do not answer"),
        "{err}"
    );
    s.assert_only(&files, &err);
    // Daemons that never register.
    let (code, err, took) = timed(
        &[
            "start",
            "--local",
            "3",
            "--instance-dir",
            &s.s("inst"),
            "--timeout",
            "2",
        ],
        &[("GKFS_DAEMON", quiet.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("timed out after 2 s") && err.contains("waiting for daemons to register"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(5500),
        "--timeout 2 took {took:?}: {err}"
    );
    s.assert_only(&files, &err);
}

/// Starts gkfs-run with `args` and GKFS_DAEMON=`daemon`, waits until `ready` holds,
/// sends it `sig`, and returns its exit code and stderr.
fn signal_during(
    args: &[&str],
    daemon: &Path,
    ready: impl Fn() -> bool,
    sig: Signal,
) -> (i32, String) {
    let mut child = Command::new(bin("gkfs-run"))
        .args(args)
        .env_remove("LIBGKFS_HOSTS_FILE")
        .env("GKFS_DAEMON", daemon)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() >= until || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("never ready:\n{}", gkfs_tests::output_text(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?} after {sig}: {err}",
        t.elapsed()
    );
    (out.status.code().unwrap_or(-1), err)
}

/// Daemons (not comments) listed in a hosts file.
fn listed(hosts: &Path) -> usize {
    fs::read_to_string(hosts)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

#[test]
fn a_start_interrupted_by_a_signal_leaves_nothing() {
    let s = Scratch::new();
    // Daemon 0 is the real gkfsd (it makes its root dir, RocksDB, a socket); the
    // others never register, so the start-up is still waiting when the signal comes.
    let mixed = script(
        s.path(),
        "mixed-daemon",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *'/d0 '*) exec {} \"$@\";; esac\nwhile :; do sleep 0.1; done\n",
            bin("gkfsd").display()
        ),
    );
    fs::create_dir(s.path().join("roots")).unwrap();
    let inst = s.path().join("inst");
    let hosts = inst.join("hosts");
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let (code, err) = signal_during(
            &[
                "start",
                "--local",
                "3",
                "--instance-dir",
                inst.to_str().unwrap(),
                "--rootdir",
                &s.s("roots"),
                "--timeout",
                "60",
            ],
            &mixed,
            || listed(&hosts) == 1 && s.path().join("roots/d0").is_dir(),
            sig,
        );
        assert_eq!(code, 128 + sig as i32, "{sig}: {err}");
        assert!(
            err.contains(&format!("interrupted by {}", sig.as_str())),
            "{err}"
        );
        s.assert_only(&["mixed-daemon", "roots"], &err);
    }
}

#[test]
fn run_passes_a_signal_on_and_still_stops_the_file_system() {
    let s = Scratch::new();
    let started = s.path().join("started");
    let mnt = format!("/tmp/gkfs-run-sig-test-{}", std::process::id());
    let (code, err) = signal_during(
        &[
            "run",
            "--local",
            "1",
            "--instance-dir",
            &s.s("inst"),
            "--mountdir",
            &mnt,
            "--",
            "sh",
            "-c",
            &format!("touch {}; exec sleep 60", started.display()),
        ],
        &bin("gkfsd"),
        || started.exists(),
        Signal::SIGTERM,
    );
    // The command got the SIGTERM (128 + 15), then the file system was stopped.
    assert_eq!(code, 143, "{err}");
    s.assert_only(&["started"], &err);
}

#[test]
fn a_local_count_above_the_ceiling_is_refused_before_anything_starts() {
    let s = Scratch::new();
    let ran = s.path().join("ran");
    let daemon = script(
        s.path(),
        "marking-daemon",
        &format!(
            "#!/bin/sh\ntouch {}\nwhile :; do sleep 0.1; done\n",
            ran.display()
        ),
    );
    let env = [("GKFS_DAEMON", daemon.to_str().unwrap())];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Above the cores' bound (4 per core), whatever the memory bound.
    let n = (cores * 4 + 1).to_string();
    let args = |n: &str| {
        vec![
            "start".to_string(),
            "--local".into(),
            n.to_string(),
            "--instance-dir".into(),
            s.s("a/inst"),
            "--rootdir".into(),
            s.s("b/roots"),
            "--timeout".into(),
            "1".into(),
        ]
    };
    let a = args(&n);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, err, took) = timed(&a, &env);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("--local {n}: this machine can run at most "))
            && err.contains(&format!("4 per core on {cores} cores allow {}", cores * 4))
            && err.contains("half of MemAvailable ("),
        "{err}"
    );
    assert!(took < Duration::from_secs(1), "refused only after {took:?}");
    assert!(!ran.exists(), "a daemon was started");
    s.assert_only(&["marking-daemon"], &err);
    // The ceiling named is the one applied: that many daemons may start.
    let max: usize = err
        .split("at most ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no ceiling in {err}"));
    assert!((1..=cores * 4).contains(&max), "{err}");
    if max <= 16 {
        let a = args(&max.to_string());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, err, _) = timed(&a, &env);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("waiting for daemons to register"),
            "{max} daemons must be allowed: {err}"
        );
        assert!(ran.exists(), "no daemon was started");
        s.assert_only(&["marking-daemon", "ran"], &err);
    }
}

/// `gkfs-run stats` reports what the daemons served: per request type counts that add
/// up to what the test did, the bytes it wrote, the errno it provoked, and non-zero
/// rates with --watch while a workload runs.
#[test]
fn stats_report_what_the_daemons_served() {
    let cluster = gkfs_tests::Cluster::start(2);
    let hosts = cluster.hosts_file.display().to_string();
    // Its data goes through the daemons (WriteChunks requests), not straight into
    // their chunk files.
    let c = cluster.client_with(gkfs_tests::Carrier::LocalThroughDaemon);
    let data = vec![7u8; 3 * 1024 * 1024 + 5];
    c.mkdir("/d", 0o755).unwrap();
    for i in 0..50 {
        c.create(&format!("/d/f{i}"), 0o644).unwrap();
    }
    c.write_at("/d/f0", &data, 0).unwrap();
    assert!(c.stat("/d/missing").is_err());
    let stats = |args: &[&str]| {
        let mut all = vec!["stats", "--hosts-file", &hosts];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all, &[]);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    let v: serde_json::Value = serde_json::from_str(&stats(&["--json"])).unwrap();
    let daemons = v.as_array().unwrap();
    assert_eq!(daemons.len(), 2);
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| daemons.iter().map(f).sum::<u64>();
    let op_count = |op: &str| {
        sum(&|d| {
            d["ops"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["op"] == op)
                .map(|o| o["count"].as_u64().unwrap())
                .sum()
        })
    };
    // 50 creates and a mkdir, each one Create request at the path's daemon.
    assert_eq!(op_count("Create"), 51, "{v:#}");
    assert_eq!(
        sum(&|d| d["bytes_written"].as_u64().unwrap()),
        data.len() as u64,
        "{v:#}"
    );
    assert!(op_count("WriteChunks") >= 2, "{v:#}");
    let enoent = sum(&|d| {
        d["errnos"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("No such file"))
            .map(|(_, n)| n.as_u64().unwrap())
            .sum()
    });
    assert!(enoent >= 1, "{v:#}");
    for d in daemons {
        for o in d["ops"].as_array().unwrap() {
            assert!(
                o["p50_us"].as_u64().unwrap() <= o["p99_us"].as_u64().unwrap(),
                "{o}"
            );
        }
    }
    let table = stats(&[]);
    assert!(
        table.contains("REQUESTS") && table.contains("Create"),
        "{table}"
    );

    // Rates over an interval, while a writer keeps going.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (cluster.client(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.create(&format!("/d/w{i}"), 0o644).unwrap();
                i += 1;
            }
        })
    };
    let line = stats(&["--json", "--watch", "0.5", "--count", "1"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let rate: f64 = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ops_per_s"].as_f64().unwrap())
        .sum();
    assert!(rate > 10.0, "{v:#}");
}

/// The hosts file named by `gkfs-run start`'s output.
fn hosts_of(start_output: &str) -> String {
    start_output
        .lines()
        .find_map(|l| l.strip_prefix("export LIBGKFS_HOSTS_FILE="))
        .expect("no hosts file line")
        .to_string()
}

/// Stops the instance of a hosts file when dropped (a failing test leaves no daemon).
struct StopOnDrop(String);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if Path::new(&self.0).exists() {
            let _ = run(&["stop", "--no-summary", "--hosts-file", &self.0], &[]);
        }
    }
}

#[test]
fn the_summary_at_stop_adds_up_to_what_was_written() {
    let base = tempfile::tempdir().unwrap();
    let mount = format!("/tmp/gkfs-sum-{}", std::process::id());
    let inst = base.path().join("inst");
    let (code, out, err) = run(
        &[
            "start",
            "--local",
            "3",
            "--mountdir",
            &mount,
            "--instance-dir",
            inst.to_str().unwrap(),
            "--chunk-size",
            "65536",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let hosts = hosts_of(&out);
    let _stop = StopOnDrop(hosts.clone());
    let env = [("LIBGKFS_HOSTS_FILE", hosts.as_str())];
    // Staged in: two files, 3345 bytes.
    let src = base.path().join("in");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), vec![1u8; 1000]).unwrap();
    fs::write(src.join("b"), vec![2u8; 2345]).unwrap();
    let manifest = base.path().join("m.json");
    let (code, _, err) = run(
        &[
            "stage-in",
            src.to_str().unwrap(),
            &format!("{mount}/in"),
            "--quiet",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    // The job: 12 files of different sizes (one spans many chunks), one unsupported
    // call (mkfifo) by a process that then forks three children (which must not
    // report it again), and a read of what it wrote.
    let job = format!(
        "set -e; for i in $(seq 0 11); do head -c $((i * 40013)) /dev/urandom > {mount}/f$i; done; \
         python3 -c 'import os, sys\ntry: os.mkfifo(\"{mount}/fifo\")\nexcept OSError: pass\nelse: sys.exit(9)\n\
         for i in range(3):\n    pid = os.fork()\n    if pid == 0: sys.exit(0)\n    os.waitpid(pid, 0)\n'; \
         cat {mount}/f11 > /dev/null"
    );
    let (code, _, err) = run(&["exec", "--", "sh", "-c", &job], &env);
    assert_eq!(code, 0, "{err}");
    let written: u64 = (0..12).map(|i| i * 40013).sum::<u64>() + 3345;
    let json = base.path().join("summary.json");
    let (code, _, err) = run(&["stop", "--summary-json", json.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("I/O summary of"), "{err}");
    let s: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&s["bytes_written"]), written, "{s:#}");
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().map(|d| n(&d["bytes_written"])).sum::<u64>(),
        written
    );
    assert_eq!(
        nodes.iter().map(|d| n(&d["chunk_bytes"])).sum::<u64>(),
        written,
        "nothing was removed: every byte written is still held"
    );
    // 12 files, the fifo's failed attempt leaves nothing, 2 staged files, 1 dir.
    assert_eq!(n(&s["files"]), 15, "{s:#}");
    assert!(n(&s["bytes_read"]) >= 11 * 40013, "{s:#}");
    let max = n(&s["balance"]["bytes_written"]["max"]);
    assert!(nodes.iter().any(|d| n(&d["bytes_written"]) == max));
    assert_eq!(n(&s["unsupported"]["mknod"]), 1, "{s:#}");
    let stage = &s["stages"][0];
    assert_eq!(
        (
            stage["direction"].as_str(),
            n(&stage["files"]),
            n(&stage["bytes"])
        ),
        (Some("in"), 2, 3345),
        "{s:#}"
    );
    let ops = s["top_requests"].as_array().unwrap();
    let creates = ops.iter().find(|o| o["op"] == "Create").unwrap();
    assert!(n(&creates["count"]) >= 15, "{s:#}");
    assert!(n(&creates["p50_us"]) <= n(&creates["p99_us"]));
    assert!(!inst.exists());
    // The off switch.
    let (code, _, err) = run(
        &[
            "run",
            "--local",
            "1",
            "--mountdir",
            &mount,
            "--no-summary",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("I/O summary"), "{err}");
}

/// The TCP ports `pid` listens on (its sockets in state LISTEN).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn the_metrics_port_answers_prometheus_text_and_is_closed_unless_asked_for() {
    let mount = format!("/tmp/gkfs-prom-{}", std::process::id());
    let (code, out, err) = run(
        &[
            "start",
            "--local",
            "2",
            "--mountdir",
            &mount,
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let hosts = hosts_of(&out);
    let _stop = StopOnDrop(hosts.clone());
    let env = [("LIBGKFS_HOSTS_FILE", hosts.as_str())];
    let c = Client::new(&ClientConfig::new(&hosts)).unwrap();
    for i in 0..40 {
        c.create(&format!("/f{i}"), 0o644).unwrap();
    }
    c.write_at("/f0", &vec![5u8; 1_000_003], 0).unwrap();
    let (code, out, err) = run(&["status", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut creates = 0.0;
    let mut written = 0.0;
    for r in rows.as_array().unwrap() {
        let addr = r["metrics_address"].as_str().expect("a metrics address");
        let (head, body) = http_get(addr, "/metrics");
        assert!(head.contains(" 200 "), "{head}");
        assert!(
            head.to_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let value = |name: &str, label: Option<(&str, &str)>| -> Option<f64> {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| match &s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => *v,
                    other => panic!("{name} is {other:?}"),
                })
        };
        creates += value("gkfs_requests_total", Some(("op", "Create"))).unwrap_or(0.0);
        written += value("gkfs_written_bytes_total", None).expect("bytes written");
        assert!(value("gkfs_uptime_seconds", None).unwrap() > 0.0);
        assert!(value("gkfs_metadata_bytes", None).is_some(), "{body}");
        assert!(value("gkfs_connections", Some(("carrier", "fabric"))).is_some());
        let hist = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "gkfs_request_duration_seconds" && s.labels.get("op") == Some("Metrics")
            })
            .expect("a latency histogram");
        let prometheus_parse::Value::Histogram(buckets) = &hist.value else {
            panic!("{hist:?}")
        };
        assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
        assert!(buckets.last().unwrap().less_than.is_infinite());
        let (head, _) = http_get(addr, "/other");
        assert!(head.contains(" 404 "), "{head}");
    }
    assert_eq!(creates, 40.0);
    assert_eq!(written, 1_000_003.0);
    let (code, _, err) = run(&["stop", "--no-summary"], &env);
    assert_eq!(code, 0, "{err}");
    // Without --metrics a daemon listens on its libfabric port only.
    let (code, out, err) = run(&["start", "--local", "1", "--mountdir", &mount], &[]);
    assert_eq!(code, 0, "{err}");
    let hosts = hosts_of(&out);
    let _stop = StopOnDrop(hosts.clone());
    let env = [("LIBGKFS_HOSTS_FILE", hosts.as_str())];
    let (_, out, _) = run(&["status", "--json"], &env);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pid = rows[0]["pid"].as_u64().unwrap() as u32;
    let fabric_port: u16 = rows[0]["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows[0]["metrics_address"].is_null(), "{rows}");
    assert_eq!(listening_ports(pid), vec![fabric_port]);
    let (code, _, err) = run(&["stop", "--no-summary"], &env);
    assert_eq!(code, 0, "{err}");
}
