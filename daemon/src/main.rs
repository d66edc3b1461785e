//! gkfsd: the gkfs storage daemon. One runs on every node of a job; together they hold
//! the file system. See `gkfsd --help` and daemon/README.md.
#![deny(unsafe_code)]

mod handlers;
mod local;
mod locks;
mod metrics;
mod prometheus;
mod server;
mod state;
mod store;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use gkfs_fabric::{Config as FabricConfig, Endpoint};
use gkfs_proto::chunk::ChunkSize;
use gkfs_proto::hosts::HostEntry;
use nix::sys::signal::{SigSet, Signal};

/// Receive buffers kept posted for incoming requests.
const RECV_BUFFERS: usize = 64;

/// gkfsd: the gkfs storage daemon. Serves one node's share of a job-scoped file
/// system: metadata in RocksDB, data as chunk files under the root dir.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Node-local directory for this daemon's data (created with mode 0700).
    #[arg(long, value_name = "DIR")]
    rootdir: PathBuf,

    /// Mount directory advertised to clients: paths under it go to gkfs.
    #[arg(long, value_name = "DIR", default_value = "/tmp/gkfs")]
    mountdir: String,

    /// Hosts file to register in (one line is appended) and to read membership from.
    #[arg(long, value_name = "FILE")]
    hosts_file: PathBuf,

    /// Address or network interface to listen on (default: the address of this
    /// host's name, else 127.0.0.1).
    #[arg(long, value_name = "ADDR|IFACE")]
    listen: Option<String>,

    /// Port to listen on (default: any free port).
    #[arg(long)]
    port: Option<u16>,

    /// libfabric provider: tcp;ofi_rxm, verbs;ofi_rxm, shm or sockets.
    #[arg(long, env = "GKFS_PROVIDER", default_value = FabricConfig::DEFAULT_PROVIDER)]
    provider: String,

    /// Chunk size in bytes (power of two, 4 KiB to 1 GiB); every daemon of a file
    /// system must use the same.
    #[arg(long, value_name = "BYTES", default_value_t = gkfs_proto::chunk::DEFAULT_CHUNK_SIZE)]
    chunk_size: u64,

    /// Directory of the metadata database (default: <rootdir>/metadata).
    #[arg(long, value_name = "DIR")]
    metadir: Option<PathBuf>,

    /// File holding the job token (default: `token` beside the hosts file).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Remove the root dir (and metadir) when the daemon exits.
    #[arg(long)]
    clean_rootdir_on_exit: bool,

    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,

    /// Node-local unix socket for clients on this host ("none" to disable; default:
    /// gkfsd.<pid>.sock beside the hosts file).
    #[arg(long, value_name = "PATH|none")]
    socket: Option<String>,

    /// Write RocksDB's write-ahead log (off by default, as in GekkoFS: metadata reaches
    /// disk at clean shutdown; a crashed daemon's recent metadata is lost with the job).
    #[arg(long)]
    rocksdb_wal: bool,

    /// Worker threads serving requests.
    #[arg(long, default_value_t = 4)]
    threads: usize,

    /// The hosts file was written by the launcher and already lists this daemon (the
    /// Slurm prolog computes every node's address from its NodeAddr and --port): do
    /// not append a line, fail unless a line carries this daemon's address.
    #[arg(long, requires = "port", conflicts_with = "announce")]
    preregistered: bool,

    /// Print this daemon's hosts line on stdout instead of appending it to the hosts
    /// file; the launcher collects the lines and writes the hosts file (`gkfs-run start`
    /// in a Slurm job: no shared file system needed).
    #[arg(long)]
    announce: bool,

    /// Serve the counters in the Prometheus text format at http://ADDR:PORT/metrics
    /// (ADDR: default the address this daemon listens on, i.e. the node's; PORT 0: any
    /// free port, see `gkfs-run status --json`). Off unless given.
    #[arg(long, value_name = "[ADDR:]PORT")]
    metrics: Option<String>,
}

/// The address of `--metrics [ADDR:]PORT`; ADDR defaults to `listen`.
fn metrics_address(spec: &str, listen: Option<&str>) -> Result<std::net::SocketAddr> {
    let (addr, port) = match spec.rsplit_once(':') {
        Some((a, p)) => (a.trim_matches(|c| c == '[' || c == ']'), p),
        None => (listen.unwrap_or("127.0.0.1"), spec),
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("--metrics {spec}: {port} is not a port number"))?;
    let ip: std::net::IpAddr = addr.parse().with_context(|| {
        format!("--metrics {spec}: {addr} is not an IP address (give ADDR:PORT)")
    })?;
    Ok(std::net::SocketAddr::new(ip, port))
}

#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only tunes the allocator; no other thread runs yet.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
}

fn main() {
    // Buffers of 1 MiB and more (frames, chunk pieces) come straight from mmap and go
    // back to the system when freed. glibc would otherwise raise this threshold after
    // the first large free and keep such buffers in its heap: a burst of large
    // requests, or of half-sent ones, left hundreds of MiB behind.
    tune_allocator();
    let args = Args::parse();
    env_logger::Builder::new()
        .filter_level(args.log_level)
        .format_timestamp_micros()
        .init();
    if let Err(e) = run(args) {
        log::error!("{e:#}");
        eprintln!("gkfsd: error: {e:#}");
        std::process::exit(1);
    }
}

fn listen_address(listen: Option<&str>) -> Option<String> {
    if let Some(l) = listen {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs.filter(|a| a.interface_name == l) {
                if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                    return Some(sin.ip().to_string());
                }
            }
        }
        return Some(l.to_string());
    }
    let host = hostname::get().ok()?.into_string().ok()?;
    use std::net::ToSocketAddrs;
    let addr = (host.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .find(|a| a.is_ipv4())?;
    Some(addr.ip().to_string())
}

fn read_token(path: &Path) -> Result<u128> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the job token file {} (start daemons with gkfs-run, or pass --token-file)",
            path.display()
        )
    })?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "token file {} is readable by other users; it should be mode 0600",
                path.display()
            );
        }
    }
    gkfs_proto::config::parse_token(&text)
        .with_context(|| format!("{}: expected 32 hex digits", path.display()))
}

fn make_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn register(hosts_file: &Path, entry: &HostEntry) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(hosts_file)
        .with_context(|| format!("cannot open the hosts file {}", hosts_file.display()))?;
    // One write of the whole line: O_APPEND makes it atomic among daemons.
    f.write_all(entry.to_line().as_bytes())
        .with_context(|| format!("cannot append to {}", hosts_file.display()))
}

/// Fails unless the hosts file has a line with this daemon's address.
fn check_listed(hosts_file: &Path, address: &[u8]) -> Result<()> {
    let text = fs::read_to_string(hosts_file)
        .with_context(|| format!("cannot read the hosts file {}", hosts_file.display()))?;
    let hosts = gkfs_proto::hosts::Hosts::parse(&hosts_file.display().to_string(), &text)?;
    if !hosts.entries.iter().any(|e| e.address == address) {
        let listed: Vec<String> = hosts
            .entries
            .iter()
            .map(|e| gkfs_proto::hosts::hex(&e.address))
            .collect();
        bail!(
            "--preregistered: the hosts file {} does not list this daemon's address {} \
             (listed: {}); check --listen and --port against the addresses the launcher wrote",
            hosts_file.display(),
            gkfs_proto::hosts::hex(address),
            listed.join(", ")
        );
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    // Block SIGTERM/SIGINT before any thread exists (RocksDB's, libfabric's, ours):
    // every thread inherits the mask and only the main thread takes them, with
    // sigwait below. No handler runs, so no library's own handler can exit early.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .context("cannot block SIGTERM/SIGINT")?;
    let chunk_size = ChunkSize::new(args.chunk_size).with_context(|| {
        format!(
            "--chunk-size {} is not a power of two from 4096 to 1 GiB",
            args.chunk_size
        )
    })?;
    if !args.mountdir.starts_with('/') || args.mountdir.trim_end_matches('/').is_empty() {
        bail!(
            "--mountdir {} must be an absolute path other than / (e.g. /tmp/gkfs)",
            args.mountdir
        );
    }
    let token_file = args.token_file.clone().unwrap_or_else(|| {
        args.hosts_file
            .parent()
            .unwrap_or(Path::new("."))
            .join(gkfs_proto::config::TOKEN_FILE_NAME)
    });
    let token = read_token(&token_file)?;
    make_private_dir(&args.rootdir)?;
    let metadir = args
        .metadir
        .clone()
        .unwrap_or_else(|| args.rootdir.join("metadata"));
    make_private_dir(&metadir)?;
    let meta = store::meta::MetaStore::open(&metadir, args.rocksdb_wal)
        .with_context(|| format!("cannot open the metadata database in {}", metadir.display()))?;
    // Data keeps the metadata's headroom free when both share a file system (the
    // usual case), else a little for the chunk dirs themselves.
    let chunk_dir = args.rootdir.join("chunks");
    std::fs::create_dir_all(&chunk_dir)
        .with_context(|| format!("cannot create the chunk dir {}", chunk_dir.display()))?;
    let same_fs = |a: &std::path::Path, b: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if x.dev() == y.dev())
    };
    let data_reserve = if same_fs(&chunk_dir, &metadir) {
        meta.reserve()
    } else {
        1 << 20
    };
    let chunks = store::chunks::ChunkStore::open(&chunk_dir, chunk_size.get(), data_reserve)
        .with_context(|| {
            format!(
                "cannot create the chunk dir under {}",
                args.rootdir.display()
            )
        })?;
    // shm names its endpoints itself (unique per process); an IP would collide.
    let shm = args.provider.split(';').next() == Some("shm");
    let fcfg = FabricConfig {
        provider: args.provider.clone(),
        node: if shm {
            None
        } else {
            listen_address(args.listen.as_deref()).or_else(|| Some("127.0.0.1".into()))
        },
        service: if shm {
            None
        } else {
            args.port.map(|p| p.to_string())
        },
    };
    let ep = Endpoint::open(&fcfg).with_context(|| {
        format!(
            "cannot open a {} endpoint on {:?}",
            fcfg.provider, fcfg.node
        )
    })?;
    let state = Arc::new(
        state::State::new(
            meta,
            chunks,
            ep.clone(),
            token,
            chunk_size,
            args.hosts_file.clone(),
            args.rootdir.clone(),
        )
        .map_err(|e| anyhow::anyhow!("cannot read the file-id counter: {e}"))?,
    );
    let metrics = match &args.metrics {
        Some(spec) => {
            let addr = metrics_address(spec, fcfg.node.as_deref())?;
            let m = prometheus::MetricsServer::start(addr, state.clone())?;
            log::info!("Prometheus metrics at http://{}/metrics", m.address);
            let _ = state.metrics_address.set(m.address.to_string());
            Some(m)
        }
        None => None,
    };
    ep.serve(RECV_BUFFERS, gkfs_proto::limits::MAX_REQUEST)
        .context("cannot post receive buffers")?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = server::start(state.clone(), args.threads, stop.clone());
    let socket_path = match args.socket.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(
            args.hosts_file
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("gkfsd.{}.sock", std::process::id())),
        ),
    };
    let local = match socket_path {
        Some(p) if p.to_string_lossy().contains(char::is_whitespace) => {
            log::warn!(
                "no node-local socket: its path {} contains white space (the hosts file \
                 separates fields by it)",
                p.display()
            );
            None
        }
        Some(p) => match local::LocalServer::start(&p, state.clone()) {
            Ok(l) => Some((l, p)),
            Err(e) if args.socket.is_some() => return Err(e),
            Err(e) => {
                log::warn!(
                    "{e:#}; clients on this node will use {} instead",
                    args.provider
                );
                None
            }
        },
        None => None,
    };
    let entry = HostEntry {
        hostname: hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
        provider: args.provider.clone(),
        address: ep.address().to_vec(),
        chunk_size: chunk_size.get(),
        mountdir: args.mountdir.trim_end_matches('/').to_string(),
        pid: Some(std::process::id()),
        socket: local.as_ref().map(|(_, p)| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        }),
    };
    if args.preregistered {
        check_listed(&args.hosts_file, ep.address())?;
    } else if args.announce {
        let mut out = std::io::stdout().lock();
        out.write_all(entry.to_line().as_bytes())
            .and_then(|_| out.flush())
            .context("cannot announce this daemon on stdout")?;
    } else {
        register(&args.hosts_file, &entry)?;
    }
    log::info!(
        "serving {} on {:?} ({} workers, chunk size {}), root {}",
        args.provider,
        fcfg.node,
        args.threads,
        chunk_size.get(),
        args.rootdir.display()
    );
    let sig = signals.wait().context("sigwait")?;
    log::info!("{sig} received: shutting down");
    stop.store(true, Ordering::Relaxed);
    if let Some((l, _)) = local {
        l.stop();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    ep.shutdown();
    for w in workers {
        let _ = w.join();
    }
    if let Err(e) = state.meta.flush() {
        log::warn!("flush on shutdown: {e}");
    }
    drop(state);
    if args.clean_rootdir_on_exit {
        if let Err(e) = fs::remove_dir_all(&args.rootdir) {
            log::warn!("cannot remove {}: {e}", args.rootdir.display());
        }
        if args.metadir.is_some() {
            let _ = fs::remove_dir_all(&metadir);
        }
    }
    log::info!("stopped");
    Ok(())
}
