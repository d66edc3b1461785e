//! Local mode: N daemons on this machine (no Slurm needed).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gkfs_client::{Client, ClientConfig};
use gkfs_proto::hosts::Hosts;
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::instance::{self, DaemonInfo, Instance};

/// Options of `start --local`.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Number of daemons.
    pub daemons: usize,
    /// Parent of the daemons' root dirs (default: `<instance>/root`).
    pub rootdir: Option<PathBuf>,
    /// Mount dir advertised to clients.
    pub mountdir: String,
    /// Chunk size.
    pub chunk_size: u64,
    /// Provider.
    pub provider: String,
    /// Instance directory (default: a new one under $TMPDIR).
    pub instance_dir: Option<PathBuf>,
    /// How long to wait for the daemons.
    pub timeout: Duration,
    /// Worker threads per daemon.
    pub threads: usize,
}

/// Finds a sibling program of this executable (same build or install dir), else PATH.
pub fn sibling_program(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for cand in [dir.join(name), dir.join("..").join(name)] {
                if cand.is_file() {
                    return cand;
                }
            }
        }
    }
    PathBuf::from(name)
}

/// The daemon program: $GKFS_DAEMON, else gkfsd next to gkfs-run, else from PATH.
pub(crate) fn daemon_program() -> PathBuf {
    std::env::var_os("GKFS_DAEMON")
        .map(PathBuf::from)
        .unwrap_or_else(|| sibling_program("gkfsd"))
}

/// The daemon arguments every launcher passes (data dir, mount dir, provider, chunk
/// size, worker threads).
pub(crate) fn daemon_args(
    rootdir: &Path,
    mountdir: &str,
    provider: &str,
    chunk_size: u64,
    threads: usize,
) -> Vec<std::ffi::OsString> {
    vec![
        "--rootdir".into(),
        rootdir.into(),
        "--mountdir".into(),
        mountdir.into(),
        "--provider".into(),
        provider.into(),
        "--chunk-size".into(),
        chunk_size.to_string().into(),
        "--threads".into(),
        threads.to_string().into(),
    ]
}

/// The last `n` lines of `text`, joined by `sep`.
pub(crate) fn tail(text: &str, n: usize, sep: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(sep)
}

/// The last `n` lines of the file at `path` (empty if unreadable), joined by `sep`.
pub(crate) fn log_tail(path: &Path, n: usize, sep: &str) -> String {
    tail(&fs::read_to_string(path).unwrap_or_default(), n, sep)
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// Starts the daemons and waits until every one answers a ping.
pub fn start(opts: &StartOptions) -> Result<Instance> {
    if opts.daemons == 0 {
        bail!("--local needs at least one daemon");
    }
    if !opts.mountdir.starts_with('/') {
        bail!("--mountdir {} must be an absolute path", opts.mountdir);
    }
    if gkfs_proto::chunk::ChunkSize::new(opts.chunk_size).is_none() {
        bail!(
            "--chunk-size {} is not a power of two from 4096 to 1 GiB",
            opts.chunk_size
        );
    }
    let gkfsd = daemon_program();
    let dir = instance::create_dir(opts.instance_dir.as_deref())?;
    let root = opts.rootdir.clone().unwrap_or_else(|| dir.join("root"));
    let created_root = (!root.exists()).then(|| root.clone());
    instance::make_private_dir(&root)?;
    let mut inst = Instance {
        dir: dir.clone(),
        mountdir: opts.mountdir.trim_end_matches('/').to_string(),
        provider: opts.provider.clone(),
        chunk_size: opts.chunk_size,
        daemons: Vec::new(),
        created_root,
        slurm: None,
    };
    let hosts_file = inst.hosts_file();
    let mut children = Vec::new();
    for i in 0..opts.daemons {
        let rootdir = root.join(format!("d{i}"));
        let log = dir.join(format!("gkfsd.{i}.log"));
        let logf =
            fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&gkfsd)
            .args(daemon_args(
                &rootdir,
                &inst.mountdir,
                &opts.provider,
                opts.chunk_size,
                opts.threads,
            ))
            .arg("--hosts-file")
            .arg(&hosts_file)
            .arg("--listen")
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            // Its own process group: a Ctrl-C in the user's shell does not kill it.
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (set GKFS_DAEMON to its path)",
                    gkfsd.display()
                )
            })?;
        inst.daemons.push(DaemonInfo {
            index: i,
            pid: child.id(),
            rootdir,
            log,
        });
        children.push(child);
    }
    inst.save()?;
    let pb = spinner(&format!("waiting for {} daemons", opts.daemons));
    let deadline = Instant::now() + opts.timeout;
    let result = wait_ready(&inst, &mut children, deadline);
    pb.finish_and_clear();
    if let Err(e) = result {
        let _ = stop(&inst, false);
        return Err(e);
    }
    Ok(inst)
}

fn wait_ready(
    inst: &Instance,
    children: &mut [std::process::Child],
    deadline: Instant,
) -> Result<()> {
    let hosts_file = inst.hosts_file();
    loop {
        for (d, c) in inst.daemons.iter().zip(children.iter_mut()) {
            if let Ok(Some(status)) = c.try_wait() {
                bail!(
                    "daemon {} (pid {}) exited during start-up with {status}; its log {}:\n    {}",
                    d.index,
                    d.pid,
                    d.log.display(),
                    log_tail(&d.log, 5, "\n    ")
                );
            }
        }
        let text = fs::read_to_string(&hosts_file).unwrap_or_default();
        let listed: Vec<u32> = Hosts::parse("", &text)
            .map(|h| h.entries.iter().filter_map(|e| e.pid).collect())
            .unwrap_or_default();
        if listed.len() >= inst.daemons.len() {
            let client = Client::new(&ClientConfig {
                timeout: Duration::from_secs(2),
                ..ClientConfig::new(&hosts_file)
            })
            .with_context(|| format!("cannot use {}", hosts_file.display()))?;
            let mut down = Vec::new();
            for d in 0..client.daemons() {
                if client.ping(d).is_err() {
                    down.push(d);
                }
            }
            if down.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "daemons {down:?} are listed in {} but do not answer",
                    hosts_file.display()
                );
            }
        } else if Instant::now() >= deadline {
            let missing: Vec<String> = inst
                .daemons
                .iter()
                .filter(|d| !listed.contains(&d.pid))
                .map(|d| {
                    format!(
                        "daemon {} (pid {}, log {})",
                        d.index,
                        d.pid,
                        d.log.display()
                    )
                })
                .collect();
            bail!(
                "timed out waiting for daemons to register: {}",
                missing.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Stops the daemons (SIGTERM, then SIGKILL after 10 s) and, unless `keep`, removes
/// their root dirs and the instance directory.
pub fn stop(inst: &Instance, keep: bool) -> Result<()> {
    for d in &inst.daemons {
        if alive(d.pid) {
            let _ = kill(Pid::from_raw(d.pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stubborn = Vec::new();
    for d in &inst.daemons {
        while alive(d.pid) && !is_zombie(d.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(d.pid) && !is_zombie(d.pid) {
            let _ = kill(Pid::from_raw(d.pid as i32), Signal::SIGKILL);
            stubborn.push(d.index);
        }
    }
    if !stubborn.is_empty() {
        eprintln!("gkfs-run: daemons {stubborn:?} did not stop within 10 s and were killed");
    }
    if !keep {
        for d in &inst.daemons {
            if d.rootdir.exists() {
                fs::remove_dir_all(&d.rootdir)
                    .with_context(|| format!("cannot remove {}", d.rootdir.display()))?;
            }
        }
        if let Some(root) = &inst.created_root {
            let _ = fs::remove_dir(root);
        }
        fs::remove_dir_all(&inst.dir)
            .with_context(|| format!("cannot remove {}", inst.dir.display()))?;
    }
    Ok(())
}

/// A process that has exited but was not reaped (our own child) counts as stopped.
fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
