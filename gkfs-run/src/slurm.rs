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
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use gkfs_proto::hosts::Hosts;
use serde::{Deserialize, Serialize};

use crate::instance::{self, Instance};
use crate::local::{daemon_args, daemon_program, tail, StartOptions};
use crate::supervise::{self, Deadline, Grace, Poll, Proc, Stoppable, Undo};

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

/// How often `start` looks at srun's output.
const POLL: Duration = Duration::from_millis(20);
/// How long `stop` gives the daemons' step between SIGTERM and cancelling it.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Starts one daemon per allocated node and waits until all are registered and answer.
/// `opts.timeout` counts from the call.
///
/// Nothing needs a shared file system: each node's `gkfs-run daemon-task` creates the
/// instance dir at the same path on its node (node-local), with the token it gets in
/// its environment; its daemon announces its hosts line on stdout, which srun brings
/// back here; `start` writes the hosts file and sends it to every task on srun's stdin.
///
/// A start that fails (also by a signal to gkfs-run) stops the step (its tasks remove
/// their nodes' instance dirs) and removes what it created here.
pub fn start(opts: &StartOptions) -> Result<Instance> {
    let deadline = Deadline::new(opts.timeout);
    let job_id = env("SLURM_JOB_ID").context("not inside a Slurm allocation")?;
    let nodes = nodes()?;
    let mut undo = Undo::default();
    let mut srun = None;
    match start_in(
        opts,
        &deadline,
        job_id.clone(),
        &nodes,
        &mut undo,
        &mut srun,
    ) {
        Ok(inst) => {
            undo.keep();
            Ok(inst)
        }
        Err(e) => {
            if let Some(srun) = srun {
                let mut step = [Step::new(&job_id, Some(srun))];
                match supervise::terminate(&mut step, step_grace()) {
                    Ok(killed) if !killed.is_empty() => eprintln!(
                        "gkfs-run: the daemons' step did not stop within {} s of SIGTERM; cancelled it",
                        STOP_GRACE.as_secs()
                    ),
                    Ok(_) => {}
                    Err(e) => eprintln!("gkfs-run: cannot stop the daemons' step: {e:#}"),
                }
            }
            Err(undo.fail(e))
        }
    }
}

fn start_in(
    opts: &StartOptions,
    deadline: &Deadline,
    job_id: String,
    nodes: &[String],
    undo: &mut Undo,
    srun_out: &mut Option<Proc>,
) -> Result<Instance> {
    let dir_default = std::env::temp_dir().join(format!(
        "gkfs-{}-{job_id}-{:08x}",
        nix::unistd::getuid().as_raw(),
        rand::random::<u32>()
    ));
    let (dir, _) = instance::create_dir(
        Some(opts.instance_dir.as_deref().unwrap_or(&dir_default)),
        undo,
    )?;
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
        created_parents: Vec::new(),
        slurm: Some(SlurmInfo {
            job_id,
            nodes: nodes.to_vec(),
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
    supervise::check_interrupted()?;
    let child = supervise::command("srun")
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
            opts.metrics.clone(),
        ))
        .env(TOKEN_ENV, token.trim())
        .stdin(Stdio::piped())
        .stdout(srun_log.try_clone()?)
        .stderr(srun_log)
        .process_group(0)
        .spawn()
        .context("cannot run srun")?;
    let srun = srun_out.insert(Proc::child(child, true));
    let (text, hosts) = collect_hosts(&inst, nodes, &log_path, srun, deadline)?;
    let mut stdin = srun.take_stdin().context("srun has no stdin")?;
    stdin
        .write_all(text.as_bytes())
        .context("cannot send the hosts file to the daemons' tasks")?;
    drop(stdin);
    wait_ready(&inst, &hosts, deadline)?;
    Ok(inst)
}

/// Environment variable that carries the job token to `gkfs-run daemon-task`.
const TOKEN_ENV: &str = "GKFS_INSTANCE_TOKEN";

/// Reads the daemons' announced lines from srun's output until every node's is there;
/// writes the hosts file (nodes in allocation order) and returns its text, parsed.
fn collect_hosts(
    inst: &Instance,
    nodes: &[String],
    log: &Path,
    srun: &mut Proc,
    deadline: &Deadline,
) -> Result<(String, Hosts)> {
    supervise::wait_for(deadline, POLL, || {
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
            let parsed = Hosts::parse(&inst.hosts_file().display().to_string(), &hosts)
                .context("a daemon announced a malformed line")?;
            instance::write_private(&inst.hosts_file(), hosts.as_bytes())?;
            return Ok(Poll::Ready((hosts, parsed)));
        }
        let exited = srun.exited();
        let announced: Vec<&str> = lines
            .iter()
            .filter_map(|(_, l)| l.split_whitespace().next())
            .collect();
        let missing: Vec<&String> = nodes
            .iter()
            .filter(|n| !announced.contains(&n.as_str()))
            .collect();
        let why = anyhow!(
            "the daemons on {missing:?} did not come up{}; srun's output:\n{}",
            if exited {
                " (srun exited)"
            } else {
                " in time (--timeout, counted from the start)"
            },
            tail(&text, 6, "\n")
        );
        if exited {
            return Err(why);
        }
        Ok(Poll::Pending(why))
    })
}

/// `gkfs-run daemon-task`: one task of the daemons' step, on its node. Creates the
/// instance dir there, runs gkfsd (`--announce`), passes its hosts line up, writes the
/// hosts file it gets on stdin, and on SIGTERM stops gkfsd and removes the dir.
pub fn daemon_task(dir: &Path, gkfsd: &[String]) -> Result<i32> {
    use nix::sys::signal::Signal;
    supervise::catch_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
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
    let pid = child.id();
    // SIGTERM/SIGINT (scancel of the step) go on to the daemon.
    supervise::terminate_on_signal(pid);
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
    // Not reaped before the signal thread is told: its pid stays the daemon's.
    supervise::wait_exited(pid)?;
    supervise::stop_passing_signals();
    let status = child.wait()?;
    let _ = fs::remove_dir_all(dir);
    Ok(crate::exit_code(status))
}

fn wait_ready(inst: &Instance, hosts: &Hosts, deadline: &Deadline) -> Result<()> {
    let hosts_file = inst.hosts_file();
    let all: Vec<u32> = (0..hosts.len()).collect();
    supervise::wait_for(deadline, POLL, || {
        let down: Vec<&str> = supervise::not_answering(&hosts_file, hosts, &all, deadline)?
            .iter()
            .filter_map(|d| hosts.entries.get(*d as usize))
            .map(|e| e.hostname.as_str())
            .collect();
        if down.is_empty() {
            return Ok(Poll::Ready(()));
        }
        Ok(Poll::Pending(anyhow!(
            "the daemons on {down:?} are registered but do not answer"
        )))
    })
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

/// The daemons' job step, for [`supervise::terminate`]: SIGTERM is `scancel
/// --signal=TERM` of the step (each task stops its daemon and removes its node's
/// instance dir; SIGTERM to srun itself would make it SIGKILL the tasks), SIGKILL
/// cancels it. With the `srun` that runs it (a failed `start`), a step not yet visible
/// to squeue is signalled as soon as it shows, and the step has ended when srun has.
struct Step<'a> {
    job_id: &'a str,
    srun: Option<Proc>,
    id: Option<String>,
    asked: bool,
}

impl<'a> Step<'a> {
    fn new(job_id: &'a str, srun: Option<Proc>) -> Step<'a> {
        Step {
            job_id,
            srun,
            id: None,
            asked: false,
        }
    }
}

fn scancel_term(step: &str) -> Result<()> {
    let st = Command::new("scancel")
        .args(["--signal=TERM", step])
        .status()
        .context("cannot run scancel")?;
    if !st.success() {
        bail!("scancel --signal=TERM {step} failed");
    }
    Ok(())
}

impl Stoppable for Step<'_> {
    fn signal(&mut self, sig: nix::sys::signal::Signal) -> Result<()> {
        if self.id.is_none() {
            self.id = daemon_step(self.job_id);
        }
        if sig == nix::sys::signal::Signal::SIGTERM {
            self.asked = true;
            if let Some(step) = &self.id {
                scancel_term(step)?;
            }
        } else {
            if let Some(step) = &self.id {
                let _ = Command::new("scancel").arg(step).status();
            }
            if let Some(srun) = &mut self.srun {
                srun.signal(sig)?;
            }
        }
        Ok(())
    }

    fn ended(&mut self) -> bool {
        let Some(srun) = &mut self.srun else {
            return daemon_step(self.job_id).is_none();
        };
        // Its srun's end is the step's end (squeue may list it a moment longer).
        if srun.ended() {
            return true;
        }
        if self.asked && self.id.is_none() {
            self.id = daemon_step(self.job_id);
            if let Some(s) = &self.id {
                let _ = scancel_term(s);
            }
        }
        false
    }
}

fn step_grace() -> Grace {
    Grace {
        poll: Duration::from_millis(100),
        ..Grace::new(STOP_GRACE)
    }
}

/// Stops the daemons (SIGTERM to their step; they remove their root dirs), waits for
/// the step to end, and removes the instance directory unless `keep`.
pub fn stop(inst: &Instance, keep: bool) -> Result<()> {
    let Some(s) = &inst.slurm else {
        bail!("not a Slurm instance");
    };
    let mut step = [Step::new(&s.job_id, None)];
    if !supervise::terminate(&mut step, step_grace())?.is_empty() {
        bail!(
            "the daemons of step {} did not stop within {} s; cancelled the step",
            step[0].id.as_deref().unwrap_or("?"),
            STOP_GRACE.as_secs()
        );
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
