//! gkfs-run start/status/stop in local mode, run as a user would.

use std::fs;
use std::path::Path;
use std::process::Command;

use gkfs_client::{Client, ClientConfig};
use gkfs_tests::bin;

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
