//! gkfs-run: starts, inspects and stops gkfs file systems. See `gkfs-run --help` and
//! gkfs-run/README.md.
// One exception, documented where it is: supervise::command unblocks signals in a
// child between fork and exec (pre_exec).
#![deny(unsafe_code)]

mod bb;
mod ceiling;
mod instance;
mod local;
mod mount;
mod node;
mod slurm;
mod stage;
mod stats;
mod status;
mod summary;
mod supervise;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gkfs_proto::config::{ENV_CLIENT_LIB, ENV_HOSTS_FILE, ENV_MOUNTDIR};
use gkfs_proto::hosts::Hosts;

/// gkfs-run: the launcher of gkfs, the job-scoped burst-buffer file system.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a file system and print the client environment (`eval $(gkfs-run start ...)`).
    Start(StartArgs),
    /// Show every daemon: address, up/down, files, chunks, bytes.
    Status {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What every daemon served: requests and errors per type with latency
    /// percentiles, errnos, MB/s. Once: totals and averages since each daemon started;
    /// with --watch SECS, the rates of every interval (a live table, or JSON lines)
    Stats {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
        /// Print JSON instead of a table (with --watch: one JSON array per line).
        #[arg(long)]
        json: bool,
        /// Report the rates every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
        /// With --watch: stop after this many reports.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Run a command with the preload library set, so it sees the file system under
    /// the mount dir (`gkfs-run exec -- cp -r data /tmp/gkfs/`).
    Exec {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Start a file system on this machine, run a command on it, stop it; exits with the
    /// command's status (`gkfs-run run --local 2 -- ./app`).
    Run {
        #[command(flatten)]
        start: StartArgs,
        #[command(flatten)]
        summary: summary::SummaryArgs,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Mount the file system through FUSE (gkfs-fuse, in the background; pid and log
    /// in the instance dir), for programs the preload library cannot see: static and
    /// Go binaries. Preloaded processes keep going straight to the daemons.
    Mount {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
        #[command(flatten)]
        args: mount::MountArgs,
        /// Stay in the foreground until unmounted (SIGINT/SIGTERM unmount).
        #[arg(long)]
        foreground: bool,
    },
    /// End the FUSE mount (`stop` does it too); a mount left by a killed gkfs-fuse is
    /// detached.
    Umount {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
    },
    /// Copy a file or tree from the parallel file system into gkfs (DST under the
    /// mount dir), in parallel, with a manifest; a rerun resumes.
    StageIn {
        /// Source (file or directory).
        src: String,
        /// Destination under the mount dir.
        dst: String,
        #[command(flatten)]
        args: stage::StageArgs,
    },
    /// Copy a file or tree out of gkfs (SRC under the mount dir) to the parallel file
    /// system; exits non-zero and lists the files unless every one was copied whole.
    StageOut {
        /// Source under the mount dir.
        src: String,
        /// Destination.
        dst: String,
        #[command(flatten)]
        args: stage::StageArgs,
    },
    /// Run by Slurm as root on every node of a `--gkfs` job before it starts (SPANK
    /// plugin or share/slurm/prolog.sh): start this node's daemon as the job's user; on
    /// the first node, stage in. Settings: see share/slurm/README.md.
    Prolog(node::NodeArgs),
    /// Run by Slurm as root on every node of a `--gkfs` job after it ends: stage out on
    /// the first node, stop this node's daemon, remove its data.
    Epilog(node::NodeArgs),
    /// The gkfs side of share/slurm/burst_buffer.lua (burst_buffer/lua on the Slurm
    /// controller): checks a job's `#BB_LUA gkfs` directives, waits for its stage-out.
    #[command(subcommand)]
    BurstBuffer(BurstBufferCmd),
    /// One task of the daemons' step of `start` in a Slurm job (internal).
    #[command(hide = true)]
    DaemonTask {
        /// The node-local instance dir.
        #[arg(long)]
        dir: PathBuf,
        /// gkfsd and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        gkfsd: Vec<String>,
    },
    /// Stop the daemons and remove their data.
    Stop {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
        /// Keep the root dirs and the instance directory.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        summary: summary::SummaryArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BurstBufferCmd {
    /// Checks the `#BB_LUA gkfs` directives of a job script (slurm_bb_job_process):
    /// exit 1 with the reason if one is wrong; for a gkfs job, prints `mountdir=DIR`.
    Check {
        /// The job script.
        script: PathBuf,
        /// The site's mount dir, for directives that name none.
        #[arg(long, value_name = "DIR", default_value = "/tmp/gkfs")]
        mountdir: String,
    },
    /// Waits until the first node's epilog has recorded the job's stage-out outcome
    /// (slurm_bb_data_out); exit 1 with the reason if the stage-out failed.
    WaitStageOut {
        /// The job.
        job_id: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 86400)]
        timeout: u64,
        /// The site's mount dir, for directives that name none.
        #[arg(long, value_name = "DIR", default_value = "/tmp/gkfs")]
        mountdir: String,
    },
}

#[derive(clap::Args, Debug)]
struct StartArgs {
    /// Start N daemons on this machine (no Slurm needed; at most 4 per core, and as
    /// many as half of the available memory holds: see gkfs-run/README.md). Without it,
    /// inside a Slurm allocation: one daemon per allocated node (srun), the instance dir
    /// node-local at the same path on every node ($TMPDIR/gkfs-<uid>-<jobid>-<tag>),
    /// data inside it.
    #[arg(long, value_name = "N")]
    local: Option<usize>,
    /// Parent directory of the daemons' root dirs (default: inside the instance dir).
    #[arg(long, value_name = "DIR")]
    rootdir: Option<PathBuf>,
    /// Mount directory applications use.
    #[arg(long, value_name = "DIR", default_value = "/tmp/gkfs")]
    mountdir: String,
    /// Chunk size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = gkfs_proto::chunk::DEFAULT_CHUNK_SIZE)]
    chunk_size: u64,
    /// libfabric provider: tcp;ofi_rxm, verbs;ofi_rxm, shm, sockets.
    #[arg(long, env = "GKFS_PROVIDER", default_value = "tcp;ofi_rxm")]
    provider: String,
    /// Instance directory to create (default: a new one under $TMPDIR).
    #[arg(long, value_name = "DIR")]
    instance_dir: Option<PathBuf>,
    /// Seconds the whole start-up may take (spawning included); a start that fails
    /// leaves nothing behind.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Worker threads per daemon.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Serve each daemon's counters in the Prometheus text format at
    /// http://ADDR:PORT/metrics (ADDR: default the daemon's listen address; with
    /// --local N, daemon i gets PORT + i; PORT 0: any free port, shown by
    /// `gkfs-run stats --json`). Off unless given.
    #[arg(long, value_name = "[ADDR:]PORT")]
    metrics: Option<String>,
    /// Also mount the file system through FUSE at the mount dir once it is up (as
    /// `gkfs-run mount`); `stop` unmounts it.
    #[arg(long)]
    fuse: bool,
}

pub(crate) fn hosts_file_arg(given: Option<PathBuf>) -> Result<PathBuf> {
    given
        .or_else(|| std::env::var_os(ENV_HOSTS_FILE).map(PathBuf::from))
        .context("no instance given: pass --hosts-file or set LIBGKFS_HOSTS_FILE (printed by `gkfs-run start`)")
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The preload library: $GKFS_CLIENT_LIB, else libgkfs_client.so next to gkfs-run.
fn client_lib() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_CLIENT_LIB) {
        return Ok(PathBuf::from(p));
    }
    let lib = local::sibling_program("libgkfs_client.so");
    if !lib.is_file() {
        bail!(
            "the preload library libgkfs_client.so is not next to gkfs-run ({}); set {ENV_CLIENT_LIB}",
            lib.display()
        );
    }
    Ok(lib.canonicalize().unwrap_or(lib))
}

/// `cmd` with the preload library and the instance's environment.
fn preloaded(cmd: &[String], hosts_file: &std::path::Path) -> Result<std::process::Command> {
    let lib = client_lib()?;
    let mut preload = lib.display().to_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload = format!("{preload}:{}", old.to_string_lossy());
    }
    let mut c = supervise::command(&cmd[0]);
    c.args(&cmd[1..])
        .env("LD_PRELOAD", preload)
        .env(ENV_HOSTS_FILE, hosts_file)
        .env(ENV_CLIENT_LIB, lib);
    // The mount dir is named outright, so that a hosts file damaged later still
    // leaves the library knowing which paths it must not hand to the disk below.
    if let Some(m) = std::fs::read_to_string(hosts_file)
        .ok()
        .and_then(|t| Hosts::scan_mountdir(&t).map(str::to_string))
    {
        c.env(ENV_MOUNTDIR, m);
    }
    Ok(c)
}

/// Exit code of a finished command (128 + signal, as shells report it).
pub(crate) fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

fn exec(hosts_file: Option<PathBuf>, cmd: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let hosts_file = hosts_file_arg(hosts_file)?;
    let hosts_file = hosts_file
        .canonicalize()
        .with_context(|| format!("hosts file {}", hosts_file.display()))?;
    let err = preloaded(cmd, &hosts_file)?.exec();
    bail!("cannot run {}: {err}", cmd[0])
}

fn run_once(args: StartArgs, summary: &summary::SummaryArgs, cmd: &[String]) -> Result<i32> {
    client_lib()?;
    let inst = start_instance(args)?;
    let hosts_file = inst.hosts_file();
    let since = supervise::signal_count();
    let status = supervise::check_interrupted()
        .and_then(|()| preloaded(cmd, &hosts_file))
        .and_then(|c| run_passing_signals(c, &cmd[0], since));
    summary::report_at_stop(&hosts_file, summary, false);
    let stopped = stop_instance(&inst, false);
    let code = exit_code(status?);
    stopped?;
    Ok(code)
}

/// Runs `c` to its end; signals caught meanwhile (after the `since`-th) go on to it
/// (unless the terminal sent them to it already), so that the file system is stopped
/// after it, not orphaned.
fn run_passing_signals(
    mut c: std::process::Command,
    name: &str,
    since: u64,
) -> Result<std::process::ExitStatus> {
    let mut child = c.spawn().with_context(|| format!("cannot run {name}"))?;
    supervise::pass_signals_to(child.id(), since);
    let exited = supervise::wait_exited(child.id());
    supervise::stop_passing_signals();
    exited?;
    child
        .wait()
        .with_context(|| format!("cannot wait for {name}"))
}

/// Stops an instance: its FUSE mount first (never left behind), then the daemons.
fn stop_instance(inst: &instance::Instance, keep: bool) -> Result<()> {
    let unmounted = mount::unmount(&inst.dir, &inst.hosts_file());
    if inst.slurm.is_some() {
        slurm::stop(inst, keep)?;
    } else {
        local::stop(inst, keep)?;
    }
    unmounted.map(|_| ())
}

/// Starts the daemons (and, with --fuse, the mount); a start that fails leaves
/// nothing behind.
fn start_instance(args: StartArgs) -> Result<instance::Instance> {
    let fuse = args.fuse;
    let local = args.local.is_some();
    let inst = start_daemons(args)?;
    if fuse {
        if !local {
            let _ = stop_instance(&inst, false);
            bail!("--fuse mounts on this machine only: use it with --local N (in a Slurm job, mount on every node with srun --gkfs-mode=fuse)");
        }
        let hosts_file = inst.hosts_file();
        if let Err(e) = mount::mount(
            &inst.dir,
            &hosts_file,
            &inst.mountdir,
            &mount::MountArgs::default(),
            false,
        ) {
            let _ = stop_instance(&inst, false);
            return Err(e);
        }
    }
    Ok(inst)
}

fn start_daemons(args: StartArgs) -> Result<instance::Instance> {
    let in_slurm = std::env::var("SLURM_JOB_ID").is_ok_and(|v| !v.is_empty());
    let Some(n) = args.local.or(in_slurm.then_some(0)) else {
        bail!("outside a Slurm allocation, say how many daemons to start here: --local N");
    };
    let opts = local::StartOptions {
        daemons: n,
        rootdir: args.rootdir,
        mountdir: args.mountdir,
        chunk_size: args.chunk_size,
        provider: args.provider,
        instance_dir: args.instance_dir,
        timeout: Duration::from_secs(args.timeout),
        threads: args.threads,
        metrics: args.metrics,
    };
    if args.local.is_none() {
        // One daemon per node of the allocation.
        return slurm::start(&opts);
    }
    local::start(&opts)
}

fn start(args: StartArgs) -> Result<()> {
    let inst = start_instance(args)?;
    if let Err(e) = supervise::check_interrupted() {
        // Caught as the start-up finished: nothing was printed, so nothing may stay.
        let _ = stop_instance(&inst, false);
        return Err(e);
    }
    let mut env = format!(
        "export {ENV_HOSTS_FILE}={}\nexport {ENV_MOUNTDIR}={}\n",
        shell_quote(&inst.hosts_file().display().to_string()),
        shell_quote(&inst.mountdir)
    );
    let lib = local::sibling_program("libgkfs_client.so");
    if lib.is_file() {
        let lib = lib.canonicalize().unwrap_or(lib);
        env.push_str(&format!(
            "export {ENV_CLIENT_LIB}={}\n",
            shell_quote(&lib.display().to_string())
        ));
    } else {
        env.push_str("# the preload library libgkfs_client.so was not found next to gkfs-run\n");
    }
    instance::write_private(&inst.dir.join(instance::ENV_FILE), env.as_bytes())?;
    print!("{env}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if matches!(cli.cmd, Cmd::Start(_) | Cmd::Run { .. }) {
        // Before any thread starts: a signal during start-up is caught, and the start
        // fails and cleans up instead of leaving daemons behind.
        supervise::catch_signals(supervise::START_SIGNALS)?;
    }
    match cli.cmd {
        Cmd::Start(args) => start(args),
        Cmd::Status { hosts_file, json } => {
            let hosts_file = hosts_file_arg(hosts_file)?;
            let rows = status::collect(&hosts_file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                status::print_table(&rows);
            }
            if rows.iter().any(|r| !r.up) {
                std::process::exit(3);
            }
            Ok(())
        }
        Cmd::Stats {
            hosts_file,
            json,
            watch,
            count,
        } => {
            let hosts_file = hosts_file_arg(hosts_file)?;
            if !stats::run(&hosts_file, json, watch, count)? {
                std::process::exit(3);
            }
            Ok(())
        }
        Cmd::Exec { hosts_file, cmd } => exec(hosts_file, &cmd),
        Cmd::Mount {
            hosts_file,
            args,
            foreground,
        } => {
            let (dir, hosts_file, mountdir) = mount::instance_of(&hosts_file_arg(hosts_file)?)?;
            if foreground {
                supervise::catch_signals(supervise::START_SIGNALS)?;
            }
            mount::mount(&dir, &hosts_file, &mountdir, &args, foreground)
        }
        Cmd::Umount { hosts_file } => {
            let (dir, hosts_file, _) = mount::instance_of(&hosts_file_arg(hosts_file)?)?;
            if !mount::unmount(&dir, &hosts_file)? {
                bail!("{} has no FUSE mount", hosts_file.display());
            }
            Ok(())
        }
        Cmd::StageIn { src, dst, args } => {
            std::process::exit(stage::stage(gkfs_stage::Direction::In, &src, &dst, args)?)
        }
        Cmd::StageOut { src, dst, args } => {
            std::process::exit(stage::stage(gkfs_stage::Direction::Out, &src, &dst, args)?)
        }
        Cmd::Run {
            start,
            summary,
            cmd,
        } => {
            let code = run_once(start, &summary, &cmd)?;
            std::process::exit(code);
        }
        Cmd::BurstBuffer(BurstBufferCmd::Check { script, mountdir }) => {
            bb::check(&script, &mountdir)
        }
        Cmd::BurstBuffer(BurstBufferCmd::WaitStageOut {
            job_id,
            timeout,
            mountdir,
        }) => bb::wait_stage_out(job_id, Duration::from_secs(timeout), &mountdir),
        Cmd::DaemonTask { dir, gkfsd } => std::process::exit(slurm::daemon_task(&dir, &gkfsd)?),
        Cmd::Prolog(a) => node::prolog(&a),
        Cmd::Epilog(a) => node::epilog(&a),
        Cmd::Stop {
            hosts_file,
            keep,
            summary,
        } => {
            let hosts_file = hosts_file_arg(hosts_file)?;
            let inst = instance::Instance::load_for(&hosts_file)?;
            summary::report_at_stop(&hosts_file, &summary, keep);
            stop_instance(&inst, keep)
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("GKFS_LOG", "warn")).init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("gkfs-run: error: {e:#}");
        // Ended by a signal: the status a shell reports for one (130 for SIGINT).
        let code = e
            .downcast_ref::<supervise::Interrupted>()
            .map_or(1, |i| 128 + i.0 as i32);
        std::process::exit(code);
    }
}
