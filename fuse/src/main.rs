//! gkfs-fuse: serves a gkfs file system through the kernel's FUSE, so that programs
//! the preload library cannot see (statically linked tools, Go binaries, anything
//! making system calls itself) reach the same files. Started by `gkfs-run mount`; see
//! fuse/README.md.
// One exception, where it is documented: the /dev/fuse descriptor fusermount3 sends.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod fs;
mod fusermount;
mod handles;
mod nodes;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fuser::{Config, MountOption};
use gkfs_client::{Client, ClientConfig, FabricUse};
use nix::sys::signal::{SigSet, Signal};

/// gkfs-fuse: mount a gkfs file system through FUSE (normally started by `gkfs-run
/// mount`). Runs until unmounted (`gkfs-run umount`, `fusermount3 -u DIR`) or sent
/// SIGTERM/SIGINT, which unmount.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Hosts file of the file system.
    #[arg(long, env = gkfs_proto::config::ENV_HOSTS_FILE, value_name = "FILE")]
    hosts_file: PathBuf,
    /// Where to mount (default: the file system's mount dir, as in the hosts file;
    /// created if missing).
    #[arg(long, value_name = "DIR")]
    mountdir: Option<PathBuf>,
    /// Threads answering the kernel's requests.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Let other users through the mount (needs `user_allow_other` in /etc/fuse.conf
    /// unless run as root). Permission bits are checked by the kernel either way.
    #[arg(long)]
    allow_other: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("GKFS_FUSE_LOG", "warn")).init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("gkfs-fuse: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    // SIGTERM and SIGINT are taken by the waiting thread below, in every thread.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .context("cannot block SIGTERM/SIGINT")?;

    let mut cfg = ClientConfig::new(&args.hosts_file);
    // A long-lived process: libfabric pays for itself at once.
    cfg.fabric = FabricUse::Direct;
    let client = Client::new(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    client.ping_all().map_err(|e| {
        anyhow::anyhow!(
            "the daemons of {} do not answer: {e}",
            args.hosts_file.display()
        )
    })?;
    let mountdir = args
        .mountdir
        .clone()
        .unwrap_or_else(|| PathBuf::from(client.mountdir()));
    if !mountdir.is_dir() {
        if mountdir.exists() {
            bail!("{} is not a directory", mountdir.display());
        }
        std::fs::create_dir_all(&mountdir)
            .with_context(|| format!("cannot create the mount dir {}", mountdir.display()))?;
    }

    let mut config = Config::default();
    let mut opts = vec![
        MountOption::FSName("gkfs".into()),
        MountOption::Subtype("gkfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::RW,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(usize::from(args.threads));
    config.clone_fd = true;
    let fs = fs::GkfsFs::new(client);
    let dir = mountdir.clone();
    let (session, unmount): (_, Box<dyn FnMut() -> Result<()> + Send>) = if nix::unistd::geteuid()
        .is_root()
    {
        config.mount_options = std::mem::take(&mut opts);
        let mut s = fuser::Session::new(fs, &mountdir, &config)
            .with_context(|| format!("cannot mount {}", mountdir.display()))?;
        let mut u = s.unmount_callable();
        (s, Box::new(move || Ok(u.unmount()?)))
    } else {
        // As a user, through the setuid helper (as libfuse does).
        let mut o = "fsname=gkfs,subtype=gkfs,default_permissions,nodev,nosuid,rw".to_string();
        if args.allow_other {
            o.push_str(",allow_other");
        }
        let fd = fusermount::mount(&mountdir, &o)?;
        let s = fuser::Session::from_fd(fs, fd, config.acl, config)
            .with_context(|| format!("cannot start the FUSE session on {}", mountdir.display()))?;
        (s, Box::new(move || fusermount::unmount(&dir, false)))
    };
    let mut unmount = unmount;
    let dir = mountdir.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                log::warn!("{sig}: unmounting {}", dir.display());
                if let Err(e) = unmount() {
                    log::error!("cannot unmount {}: {e:#}", dir.display());
                }
            }
        })
        .context("cannot start the signal thread")?;
    log::info!(
        "serving {} at {}",
        args.hosts_file.display(),
        mountdir.display()
    );
    session
        .run()
        .context("the FUSE session ended with an error")?;
    Ok(())
}
