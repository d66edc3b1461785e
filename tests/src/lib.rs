//! Test fixtures: a [`Cluster`] of real `gkfsd` processes on loopback with private
//! temporary root dirs, torn down (processes and files) when dropped.
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gkfs_client::{Client, ClientConfig, LocalData, Transport};
use gkfs_proto::hosts::Hosts;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The directory holding the workspace's built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries live in target/<profile>/deps, tools in target/<profile>.
    let dir = exe.parent().expect("exe dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; panics with a hint if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        p.display()
    );
    p
}

/// Reports that the calling test cannot run here and returns (the caller then returns
/// without asserting anything). Under `CI=true` a skip is a failure instead: a missing
/// package must never pass CI. Otherwise the reason goes to stderr and, when
/// `GKFS_SKIP_LOG` names a file (scripts/test.sh sets it), one line is appended there so
/// the run can print how many tests were skipped and why.
pub fn skip(test: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run here ({reason}); under CI=true a skipped test fails");
    }
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os("GKFS_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// How a test client reaches the test daemons (every one of which is on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// The node-local socket; chunk bytes moved by the client in the daemons' chunk
    /// files (reads and writes), size updates skipped where the owner said the size.
    Local,
    /// The node-local socket; chunk bytes moved by the daemons, through the window.
    LocalThroughDaemon,
    /// libfabric (RMA for large transfers), though a node-local socket is there.
    Fabric,
}

/// N daemons on this machine.
pub struct Cluster {
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
    /// The hosts file.
    pub hosts_file: PathBuf,
    /// Each daemon's root dir, in hosts-file (placement) order.
    pub rootdirs: Vec<PathBuf>,
    /// Chunk size.
    pub chunk_size: u64,
    /// Mount dir the daemons advertise (unique per cluster; it never exists on disk).
    pub mountdir: String,
}

impl Cluster {
    /// Starts `n` daemons with the default chunk size.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, 512 * 1024)
    }

    /// Starts `n` daemons with `chunk_size` and waits until all answer.
    pub fn start_with(n: usize, chunk_size: u64) -> Cluster {
        let provider = std::env::var("GKFS_TEST_PROVIDER").unwrap_or_else(|_| "tcp;ofi_rxm".into());
        Cluster::start_full(n, chunk_size, &provider)
    }

    /// Starts `n` daemons on libfabric provider `provider`.
    pub fn start_full(n: usize, chunk_size: u64, provider: &str) -> Cluster {
        Cluster::start_in(n, chunk_size, provider, None)
    }

    /// Starts `n` daemons whose root dirs are made under `roots` (e.g. a
    /// [`SmallDisk`]); None: the cluster's own temporary dir.
    pub fn start_in(n: usize, chunk_size: u64, provider: &str, roots: Option<&Path>) -> Cluster {
        Cluster::start_custom(n, chunk_size, provider, roots, &|_| Vec::new())
    }

    /// Like [`Cluster::start_in`]; daemon `i` (in start order) also gets `extra(i)` as
    /// arguments (e.g. `--socket none`: clients reach it through libfabric only, as a
    /// daemon on another node).
    pub fn start_custom(
        n: usize,
        chunk_size: u64,
        provider: &str,
        roots: Option<&Path>,
        extra: &dyn Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("gkfs-test-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let token: u128 = rand::random();
        fs::write(
            dir.path().join("token"),
            gkfs_proto::config::format_token(token),
        )
        .unwrap();
        fs::set_permissions(dir.path().join("token"), fs::Permissions::from_mode(0o600)).unwrap();
        let hosts_file = dir.path().join("hosts");
        fs::write(&hosts_file, "").unwrap();
        let mountdir = format!(
            "/tmp/gkfs-mnt-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let gkfsd = bin("gkfsd");
        let mut children = Vec::new();
        let mut rootdirs = Vec::new();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        for i in 0..n {
            let root = match roots {
                Some(r) => r.join(format!("{tag}-root{i}")),
                None => dir.path().join(format!("root{i}")),
            };
            let log = fs::File::create(dir.path().join(format!("gkfsd.{i}.log"))).unwrap();
            let child = Command::new(&gkfsd)
                .arg("--rootdir")
                .arg(&root)
                .arg("--hosts-file")
                .arg(&hosts_file)
                .arg("--listen")
                .arg("127.0.0.1")
                .arg("--chunk-size")
                .arg(chunk_size.to_string())
                .arg("--mountdir")
                .arg(&mountdir)
                .arg("--provider")
                .arg(provider)
                .arg("--log-level")
                .arg("info")
                .args(extra(i))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn gkfsd");
            children.push(Some(child));
            rootdirs.push(root);
        }
        let mut c = Cluster {
            dir,
            children,
            hosts_file,
            rootdirs,
            chunk_size,
            mountdir,
        };
        c.wait_ready(n);
        c.sort_by_hosts_order();
        c
    }

    /// Daemons register in whatever order they come up: index everything (children,
    /// root dirs) by the hosts file's order, which is placement order.
    fn sort_by_hosts_order(&mut self) {
        let text = fs::read_to_string(&self.hosts_file).unwrap();
        let hosts = Hosts::parse("hosts", &text).unwrap();
        let mut children = Vec::new();
        let mut rootdirs = Vec::new();
        for e in &hosts.entries {
            let i = self
                .children
                .iter()
                .position(|c| c.as_ref().map(|c| c.id()) == e.pid)
                .expect("a listed daemon that this cluster did not start");
            children.push(self.children[i].take());
            rootdirs.push(self.rootdirs[i].clone());
        }
        self.children = children;
        self.rootdirs = rootdirs;
    }

    fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = fs::read_to_string(&self.hosts_file).unwrap_or_default();
            if let Ok(h) = Hosts::parse("hosts", &text) {
                if h.entries.len() == n {
                    let client = self.client_with_timeout(Duration::from_secs(2));
                    if client.ping_all().is_ok() {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemons did not come up:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client of this file system.
    pub fn client(&self) -> Client {
        self.client_with_timeout(Duration::from_secs(20))
    }

    /// A client with a given RPC deadline.
    /// (`LIBGKFS_TRANSPORT=fabric` in the environment forces libfabric.)
    pub fn client_with_timeout(&self, timeout: Duration) -> Client {
        let transport = match std::env::var("LIBGKFS_TRANSPORT").as_deref() {
            Ok("fabric") => gkfs_client::Transport::Fabric,
            _ => gkfs_client::Transport::Auto,
        };
        Client::new(&ClientConfig {
            timeout,
            transport,
            ..ClientConfig::new(&self.hosts_file)
        })
        .expect("client")
    }

    /// A client reaching the daemons over `carrier`.
    pub fn client_with(&self, carrier: Carrier) -> Client {
        let (transport, local_data) = match carrier {
            Carrier::Local => (Transport::Auto, LocalData::Direct),
            Carrier::LocalThroughDaemon => (Transport::Auto, LocalData::Daemon),
            Carrier::Fabric => (Transport::Fabric, LocalData::Direct),
        };
        Client::new(&ClientConfig {
            timeout: Duration::from_secs(20),
            transport,
            local_data,
            ..ClientConfig::new(&self.hosts_file)
        })
        .expect("client")
    }

    /// Sends a signal to daemon `i`: reaps it for SIGKILL, and for SIGSTOP returns
    /// only once every thread of it has stopped (signals land asynchronously).
    pub fn signal(&mut self, i: usize, sig: Signal) {
        if let Some(c) = &mut self.children[i] {
            kill(Pid::from_raw(c.id() as i32), sig).unwrap();
            if sig == Signal::SIGKILL {
                let _ = c.wait();
                self.children[i] = None;
            } else if sig == Signal::SIGSTOP {
                wait_stopped(c.id());
            }
        }
    }

    /// Stops daemon `i` with SIGTERM and returns its exit status code.
    pub fn stop_daemon(&mut self, i: usize) -> Option<i32> {
        let mut c = self.children[i].take()?;
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).ok()?;
        c.wait().ok()?.code()
    }

    /// The daemons' logs (for assertion messages).
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..self.rootdirs.len() {
            // Log files are numbered in spawn order.
            let p = self.dir.path().join(format!("gkfsd.{i}.log"));
            s.push_str(&format!(
                "--- gkfsd.{i}.log\n{}",
                fs::read_to_string(p).unwrap_or_default()
            ));
        }
        s
    }

    /// Every chunk file under the daemons' root dirs (`<root>/chunks/<file>/<chunk>`).
    pub fn chunk_paths(&self) -> Vec<PathBuf> {
        let dirs = |d: &Path| -> Vec<PathBuf> {
            fs::read_dir(d)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        self.rootdirs
            .iter()
            .flat_map(|r| dirs(&r.join("chunks")))
            .flat_map(|f| dirs(&f))
            .collect()
    }

    /// Number of chunk files under every root dir.
    pub fn chunk_files(&self) -> usize {
        self.chunk_paths().len()
    }

    /// Process ids of the running daemons.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().flatten().map(|c| c.id()).collect()
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        for c in self.children.iter_mut().flatten() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

/// Waits (up to 5 s) until every thread of `pid` is stopped (state T or t).
fn wait_stopped(pid: u32) {
    let stopped = || {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return true;
        };
        tasks.flatten().all(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // "tid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.trim().chars().next());
            matches!(state, Some('T') | Some('t') | None)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A small tmpfs of its own (root only), unmounted when dropped: a disk that fills up.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB; None (after [`skip`]) when not root.
    pub fn mount(test: &str, mib: u64) -> Option<SmallDisk> {
        if !nix::unistd::geteuid().is_root() {
            skip(
                test,
                "needs root to mount a small tmpfs as the daemons' storage",
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("gkfs-small-disk-")
            .tempdir()
            .unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Some(SmallDisk { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs a program that is expected to exit by itself (a daemon that must refuse to
/// start); if it is still running after `limit` it is killed and None returned, so a
/// test fails instead of hanging.
pub fn run_expecting_exit(cmd: &mut Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().ok()
}

/// A finished command's status, stdout and stderr, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A source tree like real inputs, for the tests that run programs on it: nested dirs,
/// an empty file and dir, a name with a space, text, a word list, and a random file of
/// `big` bytes (`big.bin`).
pub fn source_tree(dir: &Path, big: usize) {
    fs::create_dir_all(dir.join("dir1/dir2")).unwrap();
    fs::create_dir_all(dir.join("empty_dir")).unwrap();
    fs::write(dir.join("top.txt"), "top level\nsecond line\n").unwrap();
    fs::write(dir.join("empty"), "").unwrap();
    fs::write(dir.join("name with space.txt"), "spaced\n").unwrap();
    fs::write(dir.join("dir1/x.txt"), "x\n".repeat(1000)).unwrap();
    fs::write(dir.join("dir1/dir2/deep.txt"), "deep\n").unwrap();
    let words: Vec<String> = (0..5000)
        .map(|i| format!("w{}", (i * 7919) % 1237))
        .collect();
    fs::write(dir.join("words"), words.join("\n") + "\n").unwrap();
    let big: Vec<u8> = (0..big).map(|_| rand::random::<u8>()).collect();
    fs::write(dir.join("big.bin"), big).unwrap();
}

/// What a program run reports: exit status, stdout and stderr (directory names already
/// replaced by placeholders), for comparing the same scenario in two places.
pub type Outcome = (Option<i32>, String, String);

/// `script` run in a fresh directory `$D` it makes first (`set -e`).
pub fn in_fresh_dir(script: &str) -> String {
    format!("set -e\nmkdir \"$D\"\ncd \"$D\"\n{script}")
}

/// Asserts that scenario `name` did the same on a local directory and on gkfs (`where_`
/// names the way in), and that it succeeded; returns its stdout. `context` is shown on
/// failure (daemon logs...).
pub fn assert_same_outcome(
    name: &str,
    where_: &str,
    local: &Outcome,
    gkfs: &Outcome,
    context: &str,
) -> String {
    assert_eq!(
        local, gkfs,
        "scenario `{name}` differs (left: local dir, right: {where_}){context}"
    );
    assert_eq!(
        local.0,
        Some(0),
        "scenario `{name}` failed even locally: {}",
        local.2
    );
    local.1.clone()
}
