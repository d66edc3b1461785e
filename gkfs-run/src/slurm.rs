//! Inside a Slurm allocation: one daemon per allocated node, launched as one job step
//! with `srun --overlap` (it does not block the job's own steps); `stop` signals that
//! step with `scancel --signal=TERM`, so the daemons shut down cleanly and every node's
//! copy of the instance dir is removed.
//!
//! The instance dir (hosts file, token, data) is node-local and has the same path on
//! every node and on the host that ran `start` (default `$TMPDIR/gkfs-<uid>-<jobid>-<tag>`):
//! no shared file system is needed.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gkfs_client::{Client, ClientConfig};
use gkfs_proto::hosts::Hosts;
use serde::{Deserialize, Serialize};

use crate::instance::{self, Instance};
use crate::local::{daemon_args, daemon_program, tail, StartOptions};

/// Name of the daemons' job step.
const STEP_NAME: &str = "gkfsd";

/// What `stop` needs to end the daemons of a Slurm instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlurmInfo {
    /// The job.
    pub job_id: String,
    /// Nodes (one daemon each).
    pub nodes: Vec<String>,
    /// Root dir of every daemon (on its node).
    pub rootdir: PathBuf,
}

/// A set, non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The nodes of the allocation, expanded (`scontrol show hostnames`).
pub(crate) fn nodes() -> Result<Vec<String>> {
    let list = env("SLURM_JOB_NODELIST")
        .or_else(|| env("SLURM_NODELIST"))
        .context("SLURM_JOB_NODELIST is not set: run inside an allocation (salloc/sbatch)")?;
    Ok(scontrol(&["show", "hostnames", &list])?
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// Runs `scontrol ARGS` and returns its output.
pub(crate) fn scontrol(args: &[&str]) -> Result<String> {
    let out = Command::new("scontrol")
        .args(args)
        .output()
        .context("cannot run scontrol (is Slurm's client installed?)")?;
    if !out.status.success() {
        bail!(
            "scontrol {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prefix of the lines `gkfs-run daemon-task` prints for `start` to collect.
const ANNOUNCE: &str = "GKFS-HOST ";

/// Starts one daemon per allocated node and waits until all are registered and answer.
///
/// Nothing needs a shared file system: each node's `gkfs-run daemon-task` creates the
/// instance dir at the same path on its node (node-local), with the token it gets in
/// its environment; its daemon announces its hosts line on stdout, which srun brings
/// back here; `start` writes the hosts file and sends it to every task on srun's stdin.
pub fn start(opts: &StartOptions) -> Result<Instance> {
    let job_id = env("SLURM_JOB_ID").context("not inside a Slurm allocation")?;
    let nodes = nodes()?;
    let dir_default = std::env::temp_dir().join(format!(
        "gkfs-{}-{job_id}-{:08x}",
        nix::unistd::getuid().as_raw(),
        rand::random::<u32>()
    ));
    let dir = instance::create_dir(Some(opts.instance_dir.as_deref().unwrap_or(&dir_default)))?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let rootdir = opts
        .rootdir
        .as_ref()
        .map(|r| r.join(dir.file_name().unwrap_or_default()))
        .unwrap_or_else(|| dir.join("data"));
    let inst = Instance {
        dir: dir.clone(),
        mountdir: opts.mountdir.trim_end_matches('/').to_string(),
        provider: opts.provider.clone(),
        chunk_size: opts.chunk_size,
        daemons: Vec::new(),
        created_root: None,
        slurm: Some(SlurmInfo {
            job_id,
            nodes: nodes.clone(),
            rootdir: rootdir.clone(),
        }),
    };
    inst.save()?;
    let token = fs::read_to_string(dir.join(gkfs_proto::config::TOKEN_FILE_NAME))?;
    let gkfsd = daemon_program();
    let gkfsd = gkfsd.canonicalize().unwrap_or(gkfsd);
    let me = std::env::current_exe().context("cannot find gkfs-run itself")?;
    let n = nodes.len();
    let log_path = dir.join("srun.log");
    let srun_log = fs::File::create(&log_path)?;
    let mut srun = Command::new("srun")
        .args([
            "--overlap",
            &format!("--nodes={n}"),
            &format!("--ntasks={n}"),
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=0",
            "--input=all",
            "--unbuffered",
            &format!("--job-name={STEP_NAME}"),
        ])
        .arg(&me)
        .arg("daemon-task")
        .arg("--dir")
        .arg(&dir)
        .arg("--")
        .arg(&gkfsd)
        .args(daemon_args(
            &rootdir,
            &inst.mountdir,
            &opts.provider,
            opts.chunk_size,
            opts.threads,
        ))
        .env(TOKEN_ENV, token.trim())
        .stdin(Stdio::piped())
        .stdout(srun_log.try_clone()?)
        .stderr(srun_log)
        .process_group(0)
        .spawn()
        .context("cannot run srun")?;
    let deadline = Instant::now() + opts.timeout;
    let ready = collect_hosts(&inst, &nodes, &log_path, &mut srun, deadline).and_then(|hosts| {
        let mut stdin = srun.stdin.take().context("srun has no stdin")?;
        stdin
            .write_all(hosts.as_bytes())
            .context("cannot send the hosts file to the daemons' tasks")?;
        drop(stdin);
        wait_ready(&inst, &nodes, deadline)
    });
    if let Err(e) = ready {
        let _ = stop(&inst, false);
        return Err(e);
    }
    Ok(inst)
}

/// Environment variable that carries the job token to `gkfs-run daemon-task`.
const TOKEN_ENV: &str = "GKFS_INSTANCE_TOKEN";

/// Reads the daemons' announced lines from srun's output until every node's is there;
/// writes the hosts file (nodes in allocation order) and returns its text.
fn collect_hosts(
    inst: &Instance,
    nodes: &[String],
    log: &Path,
    srun: &mut std::process::Child,
    deadline: Instant,
) -> Result<String> {
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let mut lines: Vec<(usize, String)> = text
            .lines()
            .filter_map(|l| l.split_once(ANNOUNCE).map(|(_, r)| r.to_string()))
            .filter_map(|l| {
                let host = l.split_whitespace().next()?.to_string();
                let pos = nodes.iter().position(|n| *n == host).unwrap_or(usize::MAX);
                Some((pos, l))
            })
            .collect();
        if lines.len() >= nodes.len() {
            lines.sort();
            let mut hosts = String::from(
                "# gkfs hosts file written by `gkfs-run start` from the daemons' announcements\n",
            );
            for (_, l) in &lines {
                hosts.push_str(l);
                hosts.push('\n');
            }
            Hosts::parse(&inst.hosts_file().display().to_string(), &hosts)
                .context("a daemon announced a malformed line")?;
            instance::write_private(&inst.hosts_file(), hosts.as_bytes())?;
            return Ok(hosts);
        }
        let exited = srun.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let announced: Vec<&str> = lines
                .iter()
                .filter_map(|(_, l)| l.split_whitespace().next())
                .collect();
            let missing: Vec<&String> = nodes
                .iter()
                .filter(|n| !announced.contains(&n.as_str()))
                .collect();
            bail!(
                "the daemons on {missing:?} did not come up{}; srun's output ({}):\n{}",
                if exited.is_some() {
                    " (srun exited)"
                } else {
                    " in time"
                },
                log.display(),
                tail(&text, 6, "\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `gkfs-run daemon-task`: one task of the daemons' step, on its node. Creates the
/// instance dir there, runs gkfsd (`--announce`), passes its hosts line up, writes the
/// hosts file it gets on stdin, and on SIGTERM stops gkfsd and removes the dir.
pub fn daemon_task(dir: &Path, gkfsd: &[String]) -> Result<i32> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("cannot block SIGTERM")?;
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    instance::make_private_dir(dir)?;
    instance::write_private(
        &dir.join(gkfs_proto::config::TOKEN_FILE_NAME),
        token.as_bytes(),
    )?;
    let hosts_file = dir.join(gkfs_proto::config::HOSTS_FILE_NAME);
    let (program, args) = gkfsd.split_first().context("no daemon program given")?;
    let spawned = Command::new(program)
        .args(args)
        .arg("--hosts-file")
        .arg(&hosts_file)
        .arg("--socket")
        .arg(dir.join("gkfsd.sock"))
        .arg("--announce")
        .arg("--clean-rootdir-on-exit")
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_dir_all(dir);
            return Err(e);
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // SIGTERM/SIGINT (scancel of the step) go on to the daemon.
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        }
    });
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if !line.is_empty() {
        print!("{ANNOUNCE}{line}");
        std::io::stdout().flush()?;
        // The hosts file arrives on stdin; the daemon may be told to stop before that.
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let mut hosts = String::new();
            if std::io::stdin().read_to_string(&mut hosts).is_ok() && !hosts.is_empty() {
                let tmp = dir.join("hosts.tmp");
                if instance::write_private(&tmp, hosts.as_bytes()).is_ok() {
                    let _ = fs::rename(&tmp, dir.join(gkfs_proto::config::HOSTS_FILE_NAME));
                }
            }
        });
    }
    let status = child.wait()?;
    let _ = fs::remove_dir_all(dir);
    Ok(crate::exit_code(status))
}

fn wait_ready(inst: &Instance, nodes: &[String], deadline: Instant) -> Result<()> {
    let hosts_file = inst.hosts_file();
    loop {
        let text = fs::read_to_string(&hosts_file).unwrap_or_default();
        let listed: Vec<String> = Hosts::parse("", &text)
            .map(|h| h.entries.iter().map(|e| e.hostname.clone()).collect())
            .unwrap_or_default();
        if listed.len() >= nodes.len() {
            let client = Client::new(&ClientConfig {
                timeout: Duration::from_secs(2),
                ..ClientConfig::new(&hosts_file)
            })?;
            let down: Vec<&String> = (0..client.daemons())
                .filter(|d| client.ping(*d).is_err())
                .filter_map(|d| listed.get(d as usize))
                .collect();
            if down.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the daemons on {down:?} are registered but do not answer");
            }
        } else if Instant::now() >= deadline {
            let missing: Vec<&String> = nodes.iter().filter(|n| !listed.contains(n)).collect();
            bail!(
                "timed out waiting for the daemons on {missing:?} (logs: {}/gkfsd.<node>.log, {}/srun.log)",
                inst.dir.display(),
                inst.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The step id of the daemons (`<job>.<step>`), if it still runs.
fn daemon_step(job_id: &str) -> Option<String> {
    let out = Command::new("squeue")
        .args(["-h", "-s", "-j", job_id, "-o", "%i %j"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (id, name) = l.trim().split_once(' ')?;
        (name == STEP_NAME).then(|| id.to_string())
    })
}

/// Stops the daemons (SIGTERM to their step; they remove their root dirs), waits for
/// the step to end, and removes the instance directory unless `keep`.
pub fn stop(inst: &Instance, keep: bool) -> Result<()> {
    let Some(s) = &inst.slurm else {
        bail!("not a Slurm instance");
    };
    if let Some(step) = daemon_step(&s.job_id) {
        let st = Command::new("scancel")
            .args(["--signal=TERM", &step])
            .status()
            .context("cannot run scancel")?;
        if !st.success() {
            bail!("scancel --signal=TERM {step} failed");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while daemon_step(&s.job_id).is_some() {
            if Instant::now() >= deadline {
                let _ = Command::new("scancel").arg(&step).status();
                bail!("the daemons of step {step} did not stop within 20 s; cancelled the step");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if !keep {
        // On a node of the job, the daemon's task has removed it already.
        match fs::remove_dir_all(&inst.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", inst.dir.display()))
            }
            _ => {}
        }
    }
    Ok(())
}
