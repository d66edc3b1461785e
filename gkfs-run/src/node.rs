//! The node side of a `--gkfs` Slurm job: `gkfs-run prolog` and `gkfs-run epilog`, run
//! as root on every node of the job by the SPANK plugin's job prolog/epilog (or by the
//! Prolog/Epilog scripts in share/slurm).
//!
//! Prologs run on all nodes at once and cannot talk to each other, so nothing is
//! exchanged: every node computes the same hosts file from the job's node list, each
//! node's `NodeAddr` and a port derived from the job id, and starts its daemon with
//! `--preregistered` (the daemon checks that its real address is the one listed). The
//! token is derived from a key every node holds (by default munge's key) and the job id,
//! so it also needs no exchange. Everything lives in `<rootdir>/gkfs-<jobid>/`, a 0700
//! directory owned by the job's user, on node-local storage.
//!
//! The prolog never leaves a node in a state Slurm would drain it for: a failure is
//! written to `failed` in the job dir, which the plugin turns into an error of every step
//! of the job, and into the job's stderr.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::os::unix::fs::{fchown, lchown, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gkfs_client::{Client, ClientConfig};
use gkfs_proto::config::{HOSTS_FILE_NAME, TOKEN_FILE_NAME};
use gkfs_proto::hosts::{sockaddr_in_address, HostEntry, Hosts};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::local::{daemon_args, daemon_program, log_tail};
use crate::slurm::env;
use crate::supervise::{self, Deadline, Grace, Poll, Proc};

/// Marker a failed prolog leaves in the job dir; the SPANK plugin reads it.
pub const FAILED_FILE: &str = "failed";

/// Settings of `gkfs-run prolog|epilog` (site defaults come from plugstack.conf or the
/// Prolog script; the job's choices from the SPANK_GKFS* variables the plugin sets).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Node-local directory holding each job's `gkfs-<jobid>` dir.
    #[arg(long, value_name = "DIR", default_value = "/tmp")]
    rootdir: PathBuf,
    /// Mount directory of the job (the plugin passes --gkfs's value as SPANK_GKFS).
    #[arg(
        long,
        value_name = "DIR",
        env = "SPANK_GKFS",
        default_value = "/tmp/gkfs"
    )]
    mountdir: String,
    /// SRC:DST[,SRC:DST...] copied into gkfs before the job's first task.
    #[arg(long, value_name = "SPECS", env = "SPANK_GKFS_STAGE_IN")]
    stage_in: Option<String>,
    /// SRC:DST[,SRC:DST...] copied out of gkfs after the job's last task.
    #[arg(long, value_name = "SPECS", env = "SPANK_GKFS_STAGE_OUT")]
    stage_out: Option<String>,
    /// Secret identical on every node, readable by root only; the job token is derived
    /// from it and the job id.
    #[arg(long, value_name = "FILE", default_value = "/etc/munge/munge.key")]
    keyfile: PathBuf,
    /// Daemons listen on port PORT_BASE + jobid % PORT_RANGE.
    #[arg(long, default_value_t = 47000)]
    port_base: u16,
    /// See --port-base.
    #[arg(long, default_value_t = 1000)]
    port_range: u16,
    /// libfabric provider (an IP provider: tcp;ofi_rxm, verbs;ofi_rxm, sockets).
    #[arg(long, default_value = "tcp;ofi_rxm")]
    provider: String,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = gkfs_proto::chunk::DEFAULT_CHUNK_SIZE)]
    chunk_size: u64,
    /// Worker threads of the daemon.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds to wait for the daemons to answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Seconds the epilogs of the other nodes wait for the stage-out on the first node.
    #[arg(long, default_value_t = 3600)]
    stage_timeout: u64,
    /// Serve each daemon's counters in the Prometheus text format on this port of its
    /// node's address (http://NODE:PORT/metrics). Off unless given.
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// The job's I/O summary at the end: `yes` appends it to the job's output file and
    /// writes it as JSON to `<workdir>/gkfs-<jobid>.summary.json`; `text` only the
    /// former; `no` neither.
    #[arg(long, value_enum, default_value_t = SummaryMode::Yes)]
    summary: SummaryMode,
    /// Also serve jobs that ask for gkfs with `#BB_LUA gkfs` directives
    /// (share/slurm/burst_buffer.lua): a job without --gkfs is looked up in slurmctld
    /// (`scontrol show job`); its directives give the mount dir and stage lists.
    #[arg(long)]
    burst_buffer: bool,
    /// The daemon program (default: $GKFS_DAEMON, else gkfsd next to gkfs-run).
    #[arg(long, value_name = "PATH")]
    gkfsd: Option<PathBuf>,
    /// How the job's programs reach gkfs, as the job asked (`--gkfs-mode`; the plugin
    /// passes it as SPANK_GKFS_MODE).
    #[arg(long, value_enum, env = "SPANK_GKFS_MODE")]
    mode: Option<Mode>,
    /// The site's choice for jobs that do not say (plugstack.conf `mode=`).
    #[arg(long, value_enum, default_value_t = Mode::Preload)]
    default_mode: Mode,
}

/// How a job's programs reach gkfs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The preload library in every task (LD_PRELOAD).
    Preload,
    /// A FUSE mount on every node, and no preload library.
    Fuse,
    /// Both: preloaded programs go straight to the daemons, others (static, Go)
    /// through the mount.
    Both,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Preload => "preload",
            Mode::Fuse => "fuse",
            Mode::Both => "both",
        }
    }
}

/// The job's mode, in its job dir: the plugin leaves LD_PRELOAD out for `fuse`.
pub const MODE_FILE: &str = "mode";

/// Where the epilog puts the job's I/O summary.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryMode {
    /// The job's output file and JSON in its work dir.
    Yes,
    /// The job's output file only.
    Text,
    /// None.
    No,
}

/// The job, as Slurm describes it to a prolog.
struct Job {
    id: u64,
    uid: u32,
    gid: u32,
    /// Expanded node list, in Slurm's order (daemon index = position).
    nodes: Vec<String>,
    /// This node's name.
    node: String,
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<T> {
    env(name)
        .with_context(|| {
            format!("{name} is not set: `gkfs-run prolog|epilog` runs from a Slurm prolog/epilog")
        })?
        .parse()
        .map_err(|_| anyhow::anyhow!("{name} is not a number"))
}

impl Job {
    fn from_env() -> Result<Job> {
        let nodes = crate::slurm::nodes()?;
        let node = env("SLURMD_NODENAME")
            .or_else(|| hostname::get().ok().and_then(|h| h.into_string().ok()))
            .context("SLURMD_NODENAME is not set")?;
        Ok(Job {
            id: env_num("SLURM_JOB_ID")?,
            uid: env_num("SLURM_JOB_UID")?,
            gid: env_num("SLURM_JOB_GID")?,
            nodes,
            node,
        })
    }

    fn dir(&self, a: &NodeArgs) -> PathBuf {
        a.rootdir.join(format!("gkfs-{}", self.id))
    }

    fn is_first(&self) -> bool {
        self.nodes.first() == Some(&self.node)
    }

    fn port(&self, a: &NodeArgs) -> Result<u16> {
        let range = u64::from(a.port_range.max(1));
        let port = u64::from(a.port_base) + self.id % range;
        u16::try_from(port).context("--port-base + --port-range exceeds 65535")
    }

    /// `cmd` run as the job's user (setpriv keeps the environment, sets the user's
    /// groups), in its own session so it outlives the prolog without holding its output.
    fn as_user(&self, program: &Path) -> Command {
        let mut c = Command::new("setsid");
        c.arg("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        if let Some(w) = env("SLURM_JOB_WORK_DIR") {
            c.current_dir(w);
        }
        c
    }
}

/// The token of job `id` of user `uid`: HMAC-SHA256 over both with the site key.
pub fn job_token(key: &[u8], id: u64, uid: u32) -> u128 {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("gkfs job token {id} {uid}").as_bytes());
    let out = mac.finalize().into_bytes();
    let mut t = [0u8; 16];
    t.copy_from_slice(&out[..16]);
    u128::from_be_bytes(t)
}

/// Each node's name and IPv4 address (`NodeAddr` from `scontrol show node`, resolved).
fn node_addrs(nodes: &[String]) -> Result<Vec<(String, Ipv4Addr)>> {
    let text = crate::slurm::scontrol(&["-o", "show", "node", &nodes.join(",")])?;
    nodes
        .iter()
        .map(|n| {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().any(|f| f == format!("NodeName={n}")))
                .with_context(|| format!("scontrol does not know node {n}"))?;
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(key))
                    .filter(|v| !v.is_empty() && *v != "(null)")
            };
            let addr = field("NodeAddr=").unwrap_or(n);
            let host = field("NodeHostName=").unwrap_or(n).to_string();
            let ip = match addr.parse::<Ipv4Addr>() {
                Ok(ip) => ip,
                Err(_) => (addr, 0)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve NodeAddr {addr} of node {n}"))?
                    .find_map(|s| match s.ip() {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        _ => None,
                    })
                    .with_context(|| format!("NodeAddr {addr} of node {n} has no IPv4 address"))?,
            };
            Ok((host, ip))
        })
        .collect()
}

/// Writes `data` to a new file `path` (mode 0600), gives it to the job's user, and
/// returns it open for more writing.
fn write_owned(path: &Path, data: &[u8], job: &Job) -> Result<fs::File> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)?;
    fchown(&f, Some(job.uid), Some(job.gid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    Ok(f)
}

/// `gkfs-run prolog`: starts this node's daemon as the job's user; on the first node,
/// waits for all daemons and stages in. A failure is also left in the job dir.
pub fn prolog(a: &NodeArgs) -> Result<()> {
    let job = Job::from_env()?;
    let Some(a) = &for_job(a, &job)? else {
        return Ok(());
    };
    let dir = job.dir(a);
    let r = prolog_in(a, &job, &dir);
    if let Err(e) = &r {
        if dir.is_dir() {
            let _ = write_owned(
                &dir.join(FAILED_FILE),
                format!("gkfs on node {}: {e:#}\n", job.node).as_bytes(),
                &job,
            );
            // So that the job's tasks (the user) can read why.
            let _ = lchown(&dir, Some(job.uid), Some(job.gid));
        }
    }
    r
}

fn prolog_in(a: &NodeArgs, job: &Job, dir: &Path) -> Result<()> {
    // The whole start-up counts, a requeued job's leftovers included.
    let deadline = Deadline::new(Duration::from_secs(a.timeout));
    if let Ok(m) = dir.symlink_metadata() {
        // A requeued job's, or something else (the rootdir may be /tmp).
        if m.is_dir() {
            stop_daemon(dir, job.uid);
            fs::remove_dir_all(dir)
        } else {
            fs::remove_file(dir)
        }
        .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    // Root's until everything is in place, then the user's: the user cannot swap a file
    // for a symlink while root writes. Not recursive: fails if someone made it meanwhile.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if !a.mountdir.starts_with('/') {
        bail!("the mount dir {} is not an absolute path", a.mountdir);
    }
    let key = fs::read(&a.keyfile).with_context(|| {
        format!(
            "cannot read the key file {} (the job token is derived from it; set keyfile= in plugstack.conf)",
            a.keyfile.display()
        )
    })?;
    let token = job_token(&key, job.id, job.uid);
    write_owned(
        &dir.join(TOKEN_FILE_NAME),
        gkfs_proto::config::format_token(token).as_bytes(),
        job,
    )?;
    let port = job.port(a)?;
    let socket = dir.join("gkfsd.sock");
    let addrs = node_addrs(&job.nodes)?;
    let mut hosts = String::from(
        "# gkfs hosts file of a Slurm job, written by `gkfs-run prolog` on every node\n",
    );
    let mut my_ip = None;
    for ((host, ip), name) in addrs.iter().zip(&job.nodes) {
        if *name == job.node {
            my_ip = Some(*ip);
        }
        let e = HostEntry {
            hostname: host.clone(),
            provider: a.provider.clone(),
            address: sockaddr_in_address(*ip, port),
            chunk_size: a.chunk_size,
            mountdir: a.mountdir.trim_end_matches('/').to_string(),
            pid: None,
            socket: Some(socket.display().to_string()),
        };
        hosts.push_str(&e.to_line());
    }
    let my_ip = my_ip.with_context(|| {
        format!(
            "this node ({}) is not in the job's node list {:?}",
            job.node, job.nodes
        )
    })?;
    let hosts_file = dir.join(HOSTS_FILE_NAME);
    write_owned(&hosts_file, hosts.as_bytes(), job)?;
    let log_path = dir.join("gkfsd.log");
    let log = write_owned(&log_path, b"", job)?;
    let mut pid_file = write_owned(&dir.join("gkfsd.pid"), b"", job)?;
    lchown(dir, Some(job.uid), Some(job.gid))
        .with_context(|| format!("cannot chown {}", dir.display()))?;
    let gkfsd = a.gkfsd.clone().unwrap_or_else(daemon_program);
    let child = job
        .as_user(&gkfsd)
        .args(daemon_args(
            &dir.join("data"),
            &a.mountdir,
            &a.provider,
            a.chunk_size,
            a.threads,
            a.metrics_port.map(|p| p.to_string()),
        ))
        .arg("--hosts-file")
        .arg(&hosts_file)
        .arg("--listen")
        .arg(my_ip.to_string())
        .arg("--port")
        .arg(port.to_string())
        .arg("--preregistered")
        .arg("--socket")
        .arg(&socket)
        .arg("--clean-rootdir-on-exit")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (setsid and setpriv come with util-linux)",
                gkfsd.display()
            )
        })?;
    pid_file.write_all(child.id().to_string().as_bytes())?;
    let me = job.nodes.iter().position(|n| *n == job.node).unwrap_or(0) as u32;
    wait_answering(&hosts_file, &[me], &deadline, &log_path, child.id())?;
    let all: Vec<u32> = (0..job.nodes.len() as u32).collect();
    if job.is_first() {
        if let Some(specs) = &a.stage_in {
            wait_answering(&hosts_file, &all, &deadline, &log_path, child.id())
                .context("stage-in needs every node's daemon")?;
            stage(job, dir, "stage-in", specs, &hosts_file)?;
        }
    }
    let mode = a.mode.unwrap_or(a.default_mode);
    write_owned(&dir.join(MODE_FILE), mode.name().as_bytes(), job)?;
    if mode != Mode::Preload {
        wait_answering(&hosts_file, &all, &deadline, &log_path, child.id())
            .context("the FUSE mount needs every node's daemon")?;
        mount_as_user(job, &hosts_file)?;
    }
    Ok(())
}

/// `gkfs-run mount` as the job's user (gkfs-fuse through fusermount3).
fn mount_as_user(job: &Job, hosts_file: &Path) -> Result<()> {
    let me = std::env::current_exe().context("cannot find gkfs-run itself")?;
    let out = job
        .as_user(&me)
        .arg("mount")
        .arg("--hosts-file")
        .arg(hosts_file)
        .output()
        .with_context(|| format!("cannot run {}", me.display()))?;
    if !out.status.success() {
        bail!(
            "the FUSE mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Does this job come through the burst-buffer path (no --gkfs, `--burst-buffer` on)?
fn is_burst_buffer_job(a: &NodeArgs) -> bool {
    a.burst_buffer && env("SPANK_GKFS").is_none()
}

/// The settings of this job: `a` for a --gkfs job; for a burst-buffer job, `a` with
/// its directives' mount dir and stage lists (PFS sides relative to the job's work
/// dir); None if the job asked for no gkfs at all.
fn for_job(a: &NodeArgs, job: &Job) -> Result<Option<NodeArgs>> {
    if !is_burst_buffer_job(a) {
        return Ok(Some(a.clone()));
    }
    let Some(d) = crate::bb::of_job(job.id, &a.mountdir)? else {
        return Ok(None);
    };
    let mountdir = d.mountdir_or(&a.mountdir).to_string();
    let work = work_dir();
    let absolute = |list: Option<String>, way, opt| -> Result<Option<String>> {
        list.map(|l| {
            gkfs_proto::stage_list::check_stage_list(&l, way, &mountdir, Path::new(&work), opt)
                .map_err(|e| anyhow::anyhow!(e))
        })
        .transpose()
    };
    use gkfs_proto::stage_list::Way;
    Ok(Some(NodeArgs {
        stage_in: absolute(d.stage_in_list(), Way::In, "stage_in")?,
        stage_out: absolute(d.stage_out_list(), Way::Out, "stage_out")?,
        mountdir,
        ..a.clone()
    }))
}

/// Waits until the daemons `which` answer a ping.
fn wait_answering(
    hosts_file: &Path,
    which: &[u32],
    deadline: &Deadline,
    log: &Path,
    pid: u32,
) -> Result<()> {
    let text = fs::read_to_string(hosts_file)
        .with_context(|| format!("cannot read {}", hosts_file.display()))?;
    let hosts = Hosts::parse(&hosts_file.display().to_string(), &text)?;
    let names: Vec<String> = hosts.entries.iter().map(|e| e.hostname.clone()).collect();
    supervise::wait_for(deadline, Duration::from_millis(50), || {
        let down: Vec<&String> = supervise::not_answering(hosts_file, &hosts, which, deadline)?
            .iter()
            .filter_map(|d| names.get(*d as usize))
            .collect();
        if down.is_empty() {
            return Ok(Poll::Ready(()));
        }
        if !supervise::running(pid) {
            bail!("the daemon exited at start: {}", log_tail(log, 5, " / "));
        }
        Ok(Poll::Pending(anyhow::anyhow!(
            "the daemons on {down:?} do not answer"
        )))
    })
}

/// Runs `gkfs-run stage-in|stage-out` as the job's user for every SRC:DST pair.
fn stage(job: &Job, dir: &Path, what: &str, specs: &str, hosts_file: &Path) -> Result<()> {
    let me = std::env::current_exe().context("cannot find gkfs-run itself")?;
    let log_path = dir.join(format!("{what}.log"));
    let log = write_owned(&log_path, b"", job)?;
    for (i, spec) in specs.split(',').filter(|s| !s.is_empty()).enumerate() {
        let (src, dst) = spec
            .split_once(':')
            .with_context(|| format!("--gkfs-{what} {spec}: expected SRC:DST"))?;
        let st = job
            .as_user(&me)
            .arg(what)
            .arg(src)
            .arg(dst)
            .arg("--hosts-file")
            .arg(hosts_file)
            .arg("--quiet")
            .args(["--rank", "0", "--nranks", "1", "--manifest"])
            .arg(dir.join(format!("{what}-{i}.manifest.json")))
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .with_context(|| format!("cannot run {}", me.display()))?;
        if !st.success() {
            bail!(
                "{what} {src} -> {dst} failed:\n{}",
                log_tail(&log_path, 8, "\n")
            );
        }
    }
    Ok(())
}

/// Stops the daemon recorded in `dir` (SIGTERM, then SIGKILL after 15 s).
fn stop_daemon(dir: &Path, uid: u32) {
    let Some(pid) = fs::read_to_string(dir.join("gkfsd.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    // Only this job's gkfsd: the pid may have been reused since, and the pid file is in
    // the user's dir (a user must not get root to signal another job's daemon).
    if !is_job_daemon(pid, uid, dir) || !supervise::running(pid) {
        return;
    }
    let grace = Grace {
        poll: Duration::from_millis(20),
        ..Grace::new(Duration::from_secs(15))
    };
    let daemon = Proc::pid(pid).holding_arg(dir.join(HOSTS_FILE_NAME));
    let _ = supervise::terminate(&mut [daemon], grace);
}

/// Is `pid` a gkfsd of user `uid` serving the job dir `dir`?
fn is_job_daemon(pid: u32, uid: u32, dir: &Path) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
    let serves_dir = supervise::cmdline_has(pid, dir.join(HOSTS_FILE_NAME).as_os_str());
    comm.trim() == "gkfsd" && real_uid == Some(uid) && serves_dir == Some(true)
}

/// `gkfs-run epilog`: on the first node, stages out while every daemon still runs (the
/// other nodes wait for it: they stop once the first node's daemon is gone); then stops
/// this node's daemon and removes the job dir.
pub fn epilog(a: &NodeArgs) -> Result<()> {
    let job = Job::from_env()?;
    let dir = job.dir(a);
    if !dir.is_dir() {
        return Ok(());
    }
    let from_bb = is_burst_buffer_job(a);
    // The job dir exists: whatever slurmctld says now, this node's daemon stops and its
    // data goes (without the directives, nothing is staged out).
    let settings = for_job(a, &job);
    let a = match &settings {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => a,
    };
    let unknown = !matches!(settings, Ok(Some(_)));
    let failed_before = dir.join(FAILED_FILE).exists() || unknown;
    // Does slurm_bb_data_out wait for an outcome from this node?
    let outcome_awaited = from_bb && job.is_first() && (a.stage_out.is_some() || unknown);
    let hosts_file = dir.join(HOSTS_FILE_NAME);
    let summary = a.summary != SummaryMode::No && !failed_before;
    let stage_out = a.stage_out.as_deref().filter(|_| !failed_before);
    let mut result = match &settings {
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the job's #BB_LUA directives: nothing staged out: {e:#}"
        )),
        Ok(_) => Ok(()),
    };
    if job.is_first() {
        if let Some(specs) = stage_out {
            result = stage(&job, &dir, "stage-out", specs, &hosts_file);
            if let Err(e) = &result {
                report_stage_out_failure(&job, e);
            }
        } else if from_bb && failed_before && result.is_ok() {
            result = Err(anyhow::anyhow!(
                "gkfs did not start for this job (see its output): nothing staged out"
            ));
        }
        if outcome_awaited {
            // What slurm_bb_data_out waits for, whatever happened here.
            let file = crate::bb::outcome_file(&work_dir(), job.id);
            let text = crate::bb::outcome_text(&result);
            write_as_user(&job, &file.display().to_string(), ">", text.as_bytes());
        }
        if summary {
            report_summary(&job, &dir, &hosts_file, a.summary);
        }
    } else if stage_out.is_some() || summary {
        // The first node's stage-out and summary need every daemon.
        wait_first_gone(&hosts_file, Duration::from_secs(a.stage_timeout));
    }
    if let Err(e) = crate::mount::unmount(&dir, &hosts_file) {
        log::error!("job {}: {e:#}", job.id);
    }
    stop_daemon(&dir, job.uid);
    fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    result
}

/// Waits until the first node's daemon stops answering (it stops after the stage-out).
fn wait_first_gone(hosts_file: &Path, limit: Duration) {
    let Ok(client) = Client::new(&ClientConfig {
        timeout: Duration::from_secs(1),
        ..ClientConfig::new(hosts_file)
    }) else {
        return;
    };
    let deadline = Instant::now() + limit;
    while client.ping(0).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Expands a job output file pattern (`%j`, `%u`, `%N`, `%%`) as Slurm does; `None`
/// for patterns this cannot know (job name, array ids, tasks).
fn expand_output_pattern(pattern: &str, job: &Job, user: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Slurm allows a field width between % and the letter (%4j); not handled.
        match chars.next()? {
            'j' => out.push_str(&job.id.to_string()),
            'u' => out.push_str(user),
            'N' => out.push_str(job.nodes.first()?),
            '%' => out.push('%'),
            _ => return None,
        }
    }
    Some(out)
}

/// The job's output file (`first` of SLURM_JOB_STDERR / SLURM_JOB_STDOUT, else the
/// other), expanded; None for jobs without one (an interactive srun) or with a
/// pattern this cannot expand.
fn job_output_file(job: &Job, first: &str, second: &str) -> Option<String> {
    let user = env("SLURM_JOB_USER").unwrap_or_default();
    env(first)
        .or_else(|| env(second))
        .filter(|t| t.starts_with('/'))
        .and_then(|t| expand_output_pattern(&t, job, &user))
}

/// The job's work dir (files for the user go there).
fn work_dir() -> String {
    env("SLURM_JOB_WORK_DIR").unwrap_or_else(|| "/tmp".into())
}

/// `<workdir>/gkfs-<jobid>.<suffix>`.
fn work_dir_file(job: &Job, suffix: &str) -> String {
    format!("{}/gkfs-{}.{suffix}", work_dir(), job.id)
}

/// Writes `data` to `target` as the job's user (`>>` appends, `>` replaces): never
/// as root into a path the user controls.
fn write_as_user(job: &Job, target: &str, redirect: &str, data: &[u8]) {
    let script = format!("cat {redirect} \"$1\"");
    if let Ok(mut c) = job
        .as_user(Path::new("sh"))
        .args(["-c", &script, "sh", target])
        .stdin(Stdio::piped())
        .spawn()
    {
        if let Some(mut i) = c.stdin.take() {
            let _ = i.write_all(data);
        }
        let _ = c.wait();
    }
}

/// Tells the user: appends the message, as the user, to the job's stderr file (a batch
/// job's, else `<workdir>/gkfs-<jobid>.stage-out-failed`), and to slurmd's log. The job
/// itself has ended when the epilog runs: Slurm lets nothing change its exit code then.
fn report_stage_out_failure(job: &Job, e: &anyhow::Error) {
    let msg = format!(
        "gkfs: stage-out of job {} FAILED; the job's gkfs files are removed with the job:\n{e:#}\n",
        job.id
    );
    eprint!("{msg}");
    let target = job_output_file(job, "SLURM_JOB_STDERR", "SLURM_JOB_STDOUT")
        .unwrap_or_else(|| work_dir_file(job, "stage-out-failed"));
    write_as_user(job, &target, ">>", msg.as_bytes());
}

/// The job's I/O summary, from every daemon's counters while they all still run:
/// appended to the job's output file (else written to `<workdir>/gkfs-<jobid>.summary`)
/// and, with `mode` yes, as JSON to `<workdir>/gkfs-<jobid>.summary.json`.
fn report_summary(job: &Job, dir: &Path, hosts_file: &Path, mode: SummaryMode) {
    let client = match crate::status::client(hosts_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gkfs: no I/O summary for job {}: {e:#}", job.id);
            return;
        }
    };
    let s = crate::summary::collect(
        &client,
        crate::summary::stages_in(dir),
        Some(job.id.to_string()),
    );
    let text = crate::summary::render(&s);
    match job_output_file(job, "SLURM_JOB_STDOUT", "SLURM_JOB_STDERR") {
        Some(out) => write_as_user(job, &out, ">>", text.as_bytes()),
        None => write_as_user(job, &work_dir_file(job, "summary"), ">", text.as_bytes()),
    }
    if mode == SummaryMode::Yes {
        if let Ok(json) = serde_json::to_string_pretty(&s) {
            write_as_user(
                job,
                &work_dir_file(job, "summary.json"),
                ">",
                (json + "\n").as_bytes(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_patterns() {
        let job = Job {
            id: 42,
            uid: 1,
            gid: 1,
            nodes: vec!["n7".into(), "n8".into()],
            node: "n8".into(),
        };
        let e = |p: &str| expand_output_pattern(p, &job, "ann");
        assert_eq!(e("/w/slurm-%j.out").as_deref(), Some("/w/slurm-42.out"));
        assert_eq!(e("/w/%u-%N-%%.err").as_deref(), Some("/w/ann-n7-%.err"));
        assert_eq!(e("/w/%x.out"), None);
        assert_eq!(e("/w/%"), None);
    }

    #[test]
    fn token_depends_on_key_job_and_user() {
        let t = job_token(b"key", 7, 1000);
        assert_eq!(t, job_token(b"key", 7, 1000));
        assert_ne!(t, job_token(b"key", 8, 1000));
        assert_ne!(t, job_token(b"key", 7, 1001));
        assert_ne!(t, job_token(b"other", 7, 1000));
    }
}
