//! Inside a Slurm allocation: one daemon per allocated node, launched as one job step
//! with `srun --overlap` (it does not block the job's own steps), each daemon's root dir
//! on node-local storage; `stop` signals that step with `scancel --signal=TERM`, so the
//! daemons shut down cleanly and remove their root dirs.
//!
//! The instance directory (hosts file, token, logs) must be visible on every node: by
//! default `.gkfs-<jobid>` in the submit directory.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gkfs_client::{Client, ClientConfig};
use gkfs_proto::hosts::Hosts;
use serde::{Deserialize, Serialize};

use crate::instance::{self, Instance};
use crate::local::{sibling_program, StartOptions};

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

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The nodes of the allocation, expanded (`scontrol show hostnames`).
pub(crate) fn nodes() -> Result<Vec<String>> {
    let list = env("SLURM_JOB_NODELIST")
        .or_else(|| env("SLURM_NODELIST"))
        .context("SLURM_JOB_NODELIST is not set: run inside an allocation (salloc/sbatch)")?;
    let out = Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .output()
        .context("cannot run scontrol (is Slurm's client installed?)")?;
    if !out.status.success() {
        bail!(
            "scontrol show hostnames {list}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// Starts one daemon per allocated node and waits until all are registered and answer.
pub fn start(opts: &StartOptions) -> Result<Instance> {
    let job_id = env("SLURM_JOB_ID").context("not inside a Slurm allocation")?;
    let nodes = nodes()?;
    let dir_default = PathBuf::from(env("SLURM_SUBMIT_DIR").unwrap_or_else(|| ".".into()))
        .join(format!(".gkfs-{job_id}"));
    let dir = instance::create_dir(Some(opts.instance_dir.as_deref().unwrap_or(&dir_default)))?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let rootdir = opts
        .rootdir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/gkfs-{job_id}")));
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
    let gkfsd = std::env::var_os("GKFS_DAEMON")
        .map(PathBuf::from)
        .unwrap_or_else(|| sibling_program("gkfsd"));
    let gkfsd = gkfsd.canonicalize().unwrap_or(gkfsd);
    let n = nodes.len();
    let srun_log = fs::File::create(dir.join("srun.log"))?;
    Command::new("srun")
        .args([
            "--overlap",
            &format!("--nodes={n}"),
            &format!("--ntasks={n}"),
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=0",
            &format!("--job-name={STEP_NAME}"),
        ])
        .arg(format!("--output={}/gkfsd.%N.log", dir.display()))
        .arg(&gkfsd)
        .arg("--rootdir")
        .arg(&rootdir)
        .arg("--hosts-file")
        .arg(inst.hosts_file())
        .arg("--mountdir")
        .arg(&inst.mountdir)
        .arg("--chunk-size")
        .arg(opts.chunk_size.to_string())
        .arg("--provider")
        .arg(&opts.provider)
        .arg("--threads")
        .arg(opts.threads.to_string())
        .arg("--clean-rootdir-on-exit")
        .stdin(Stdio::null())
        .stdout(srun_log.try_clone()?)
        .stderr(srun_log)
        .process_group(0)
        .spawn()
        .context("cannot run srun")?;
    inst.save()?;
    if let Err(e) = wait_ready(&inst, &nodes, Instant::now() + opts.timeout) {
        let _ = stop(&inst, false);
        return Err(e);
    }
    Ok(inst)
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
        fs::remove_dir_all(&inst.dir)
            .with_context(|| format!("cannot remove {}", inst.dir.display()))?;
    }
    Ok(())
}
