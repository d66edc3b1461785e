//! gkfs-run: starts, inspects and stops gkfs file systems. See `gkfs-run --help` and
//! gkfs-run/README.md.
#![forbid(unsafe_code)]

mod instance;
mod local;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gkfs_proto::config::{ENV_CLIENT_LIB, ENV_HOSTS_FILE};

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
    /// Stop the daemons and remove their data.
    Stop {
        /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
        #[arg(long, value_name = "FILE")]
        hosts_file: Option<PathBuf>,
        /// Keep the root dirs and the instance directory.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(clap::Args, Debug)]
struct StartArgs {
    /// Start N daemons on this machine (no Slurm needed). Required outside a Slurm
    /// allocation; multi-node start inside one is not implemented yet.
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
    /// Seconds to wait for the daemons.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Worker threads per daemon.
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

fn hosts_file_arg(given: Option<PathBuf>) -> Result<PathBuf> {
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

fn start(args: StartArgs) -> Result<()> {
    let Some(n) = args.local else {
        if std::env::var_os("SLURM_JOB_ID").is_some() {
            bail!(
                "multi-node start inside a Slurm allocation is not implemented yet; use --local N"
            );
        }
        bail!("outside a Slurm allocation, say how many daemons to start here: --local N");
    };
    let inst = local::start(&local::StartOptions {
        daemons: n,
        rootdir: args.rootdir,
        mountdir: args.mountdir,
        chunk_size: args.chunk_size,
        provider: args.provider,
        instance_dir: args.instance_dir,
        timeout: Duration::from_secs(args.timeout),
        threads: args.threads,
    })?;
    let mut env = format!(
        "export {ENV_HOSTS_FILE}={}\n",
        shell_quote(&inst.hosts_file().display().to_string())
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
        Cmd::Stop { hosts_file, keep } => {
            let hosts_file = hosts_file_arg(hosts_file)?;
            let inst = instance::Instance::load_for(&hosts_file)?;
            local::stop(&inst, keep)
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("GKFS_LOG", "warn")).init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("gkfs-run: error: {e:#}");
        std::process::exit(1);
    }
}
