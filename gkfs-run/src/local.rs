//! Local mode: N daemons on this machine (no Slurm needed).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use gkfs_proto::hosts::Hosts;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ceiling::Ceiling;
use crate::instance::{self, DaemonInfo, Instance};
use crate::supervise::{self, Deadline, Grace, Poll, Proc, Undo};

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
    /// How long the whole start-up may take (spawning included).
    pub timeout: Duration,
    /// Worker threads per daemon.
    pub threads: usize,
    /// `gkfsd --metrics [ADDR:]PORT` (with --local N, daemon i gets PORT + i).
    pub metrics: Option<String>,
}

/// The `--metrics` of daemon `i` of a local start: PORT + i, so that the daemons of
/// one machine do not collide (PORT 0, any free port, stays 0).
pub(crate) fn metrics_for(spec: &str, i: usize) -> String {
    let (addr, port) = match spec.rsplit_once(':') {
        Some((a, p)) => (Some(a), p),
        None => (None, spec),
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {
            let p = p.saturating_add(i as u16);
            addr.map_or(p.to_string(), |a| format!("{a}:{p}"))
        }
        _ => spec.to_string(),
    }
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
/// size, worker threads, the Prometheus endpoint if asked for).
pub(crate) fn daemon_args(
    rootdir: &Path,
    mountdir: &str,
    provider: &str,
    chunk_size: u64,
    threads: usize,
    metrics: Option<String>,
) -> Vec<std::ffi::OsString> {
    let metrics = metrics
        .into_iter()
        .flat_map(|m| ["--metrics".into(), m.into()]);
    [
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
    .into_iter()
    .chain(metrics)
    .collect()
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

/// How often start-up looks at the daemons.
const POLL: Duration = Duration::from_millis(20);
/// How long `stop` gives the daemons between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Starts the daemons and waits until every one answers a ping. `opts.timeout` counts
/// from the call (spawning included); `opts.daemons` must be within the machine's
/// [`Ceiling`]. On any failure (also a signal to gkfs-run, see
/// [`supervise::catch_signals`]) nothing is left: the daemons are stopped and reaped,
/// and their root dirs, the instance dir and any parent dir this made are removed.
pub fn start(opts: &StartOptions) -> Result<Instance> {
    let deadline = Deadline::new(opts.timeout);
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
    Ceiling::here().check(opts.daemons)?;
    let mut undo = Undo::default();
    match start_in(opts, &deadline, &mut undo) {
        Ok(inst) => {
            undo.keep();
            Ok(inst)
        }
        Err(e) => Err(undo.fail(e)),
    }
}

fn start_in(opts: &StartOptions, deadline: &Deadline, undo: &mut Undo) -> Result<Instance> {
    let gkfsd = daemon_program();
    let (dir, mut created_parents) = instance::create_dir(opts.instance_dir.as_deref(), undo)?;
    let root = opts.rootdir.clone().unwrap_or_else(|| dir.join("root"));
    let root = std::path::absolute(&root).unwrap_or(root);
    let mut made = undo.create_dirs(&root, false)?;
    let created_root = made.pop_if(|d| *d == root);
    created_parents.extend(made);
    let mut inst = Instance {
        dir: dir.clone(),
        mountdir: opts.mountdir.trim_end_matches('/').to_string(),
        provider: opts.provider.clone(),
        chunk_size: opts.chunk_size,
        daemons: Vec::new(),
        created_root,
        created_parents,
        slurm: None,
    };
    inst.save()?;
    let n = opts.daemons;
    let pb = spinner(&format!("starting {n} daemons"));
    let r = spawn_all(opts, &gkfsd, &root, &mut inst, deadline, undo).and_then(|()| {
        pb.set_message(format!("waiting for {n} daemons"));
        wait_ready(&inst, undo.processes(), deadline)
    });
    pb.finish_and_clear();
    r.map(|()| inst)
}

fn spawn_all(
    opts: &StartOptions,
    gkfsd: &Path,
    root: &Path,
    inst: &mut Instance,
    deadline: &Deadline,
    undo: &mut Undo,
) -> Result<()> {
    let n = opts.daemons;
    let hosts_file = inst.hosts_file();
    for i in 0..n {
        supervise::check_interrupted()?;
        deadline.check(&format!("starting daemon {i} of {n}"))?;
        let rootdir = root.join(format!("d{i}"));
        if fs::symlink_metadata(&rootdir).is_err() {
            // gkfsd creates it: this start-up's, to remove if it fails.
            undo.tree(&rootdir);
        }
        let log = inst.dir.join(format!("gkfsd.{i}.log"));
        let logf =
            fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = supervise::command(gkfsd)
            .args(daemon_args(
                &rootdir,
                &inst.mountdir,
                &opts.provider,
                opts.chunk_size,
                opts.threads,
                opts.metrics.as_deref().map(|m| metrics_for(m, i)),
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
        undo.process(Proc::child(child, true));
        // Every daemon is on record at once: even a gkfs-run killed now (SIGKILL)
        // leaves an instance that `gkfs-run stop` can stop.
        inst.save()?;
    }
    Ok(())
}

/// Waits until every daemon is listed in the hosts file and answers.
fn wait_ready(inst: &Instance, procs: &mut [Proc], deadline: &Deadline) -> Result<()> {
    let hosts_file = inst.hosts_file();
    let timed_out = format!(
        "timed out after {} s (--timeout, counted from the start)",
        deadline.limit().as_secs_f64()
    );
    supervise::wait_for(deadline, POLL, || {
        for (d, p) in inst.daemons.iter().zip(procs.iter_mut()) {
            if p.exited() {
                let how = p
                    .exit_status()
                    .map_or_else(|| "an unknown status".to_string(), |s| s.to_string());
                bail!(
                    "daemon {} (pid {}) exited during start-up with {how}; its log:\n    {}",
                    d.index,
                    d.pid,
                    log_tail(&d.log, 5, "\n    ")
                );
            }
        }
        let text = fs::read_to_string(&hosts_file).unwrap_or_default();
        let parsed = Hosts::parse(&hosts_file.display().to_string(), &text);
        // With lines in it, a hosts file that does not parse is worth naming.
        let malformed = match &parsed {
            Err(e)
                if text
                    .lines()
                    .any(|l| !l.trim().is_empty() && !l.starts_with('#')) =>
            {
                format!(" ({e})")
            }
            _ => String::new(),
        };
        let hosts = parsed.ok();
        let listed: Vec<u32> = hosts
            .iter()
            .flat_map(|h| h.entries.iter().filter_map(|e| e.pid))
            .collect();
        let Some(hosts) = hosts.filter(|_| listed.len() >= inst.daemons.len()) else {
            let missing: Vec<String> = inst
                .daemons
                .iter()
                .filter(|d| !listed.contains(&d.pid))
                .map(|d| {
                    let last = log_tail(&d.log, 1, "");
                    if last.is_empty() {
                        format!("daemon {} (pid {})", d.index, d.pid)
                    } else {
                        format!("daemon {} (pid {}; its log: {last})", d.index, d.pid)
                    }
                })
                .collect();
            return Ok(Poll::Pending(anyhow!(
                "{timed_out} waiting for daemons to register: {}{malformed}",
                missing.join(", ")
            )));
        };
        let all: Vec<u32> = (0..hosts.len()).collect();
        let down = supervise::not_answering(&hosts_file, &hosts, &all, deadline)?;
        if down.is_empty() {
            return Ok(Poll::Ready(()));
        }
        Ok(Poll::Pending(anyhow!(
            "{timed_out}: daemons {down:?} are listed in {} but do not answer",
            hosts_file.display()
        )))
    })
}

/// Stops the daemons (SIGTERM, then SIGKILL after 10 s) and, unless `keep`, removes
/// their root dirs and the instance directory (and the parent dirs `start` made, when
/// empty).
pub fn stop(inst: &Instance, keep: bool) -> Result<()> {
    let hosts_file = inst.hosts_file();
    // A recorded pid counts only while it is still this instance's daemon.
    let mut procs: Vec<Proc> = inst
        .daemons
        .iter()
        .map(|d| {
            Proc::pid(d.pid)
                .leading_group()
                .holding_arg(hosts_file.as_os_str())
        })
        .collect();
    let killed = supervise::terminate(&mut procs, Grace::new(STOP_GRACE))?;
    if !killed.is_empty() {
        let stubborn: Vec<usize> = killed.iter().map(|i| inst.daemons[*i].index).collect();
        eprintln!(
            "gkfs-run: daemons {stubborn:?} did not stop within {} s and were killed",
            STOP_GRACE.as_secs()
        );
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
        // Only if empty: something else may have been put there since.
        for p in inst.created_parents.iter().rev() {
            let _ = fs::remove_dir(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::metrics_for;

    #[test]
    fn local_daemons_get_consecutive_metrics_ports() {
        assert_eq!(metrics_for("9100", 0), "9100");
        assert_eq!(metrics_for("9100", 2), "9102");
        assert_eq!(metrics_for("127.0.0.1:9100", 1), "127.0.0.1:9101");
        assert_eq!(metrics_for("127.0.0.1:0", 3), "127.0.0.1:0");
        assert_eq!(metrics_for("[::1]:9100", 1), "[::1]:9101");
        // Not a port: left for gkfsd to refuse with its message.
        assert_eq!(metrics_for("x:y", 1), "x:y");
    }
}
