//! gkfs-bench: the core benchmark, through the client API (no preload).
//!
//! Starts its own daemons on this machine (root dirs under $TMPDIR; the README runs
//! it with TMPDIR=/dev/shm, a RAM disk as on a burst-buffer node) and prints medians
//! of repeated runs: RPC round trip, metadata ops/s, sequential write/read MB/s, each
//! with 1 and 2 daemons, then the daemon's RSS after many creates.
//!
//! Usage: gkfs-bench [--quick] [--rss-creates N] [--json FILE]
//!        gkfs-bench --remote [--quick] [--provider P] [--json FILE]   # the remote path against
//!        libfabric's own floor (fi_pingpong; RMA through gkfs_fabric, as Debian's
//!        libfabric-bin has no fi_rma_bw), side by side in one run

use std::time::{Duration, Instant};

use gkfs_client::{Client, OpenOptions};
use gkfs_tests::Cluster;

/// The core benchmark through the client API.
#[derive(clap::Parser)]
struct Opts {
    /// A short run: 3 repeats, 20 000 creates for the RSS measurement.
    #[arg(long)]
    quick: bool,
    /// Creates before the daemon's RSS is measured (default 1 000 000; 20 000 with --quick).
    #[arg(long)]
    rss_creates: Option<u64>,
    /// Write the rows as JSON to this file too.
    #[arg(long)]
    json: Option<String>,
    /// Runs per measurement (default 5; 3 with --quick).
    #[arg(long)]
    repeats: Option<usize>,
    /// Measure the remote path instead: one daemon without its node-local socket, so
    /// the client reaches it through libfabric as it does another node's daemon; each
    /// run alternates with `fi_pingpong` (Debian libfabric-bin) on the same provider.
    #[arg(long)]
    remote: bool,
    /// libfabric provider of --remote.
    #[arg(long, default_value = "tcp;ofi_rxm")]
    provider: String,
    /// With --remote: repeat one measurement for this many seconds instead of the
    /// table (to profile it): creates-1, creates-4, write-1m or read-1m.
    #[arg(long, value_name = "WHAT")]
    soak: Option<String>,
    /// Seconds of --soak.
    #[arg(long, default_value_t = 10)]
    soak_seconds: u64,
}

fn parse_args() -> Opts {
    let mut o = <Opts as clap::Parser>::parse();
    let (creates, repeats) = if o.quick { (20_000, 3) } else { (1_000_000, 5) };
    o.rss_creates.get_or_insert(creates);
    o.repeats.get_or_insert(repeats);
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Row {
    daemons: usize,
    what: String,
    threads: usize,
    value: f64,
    unit: &'static str,
}

fn ping_us(client: &Client, n: usize) -> f64 {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        client
            .ping((i % client.daemons() as usize) as u32)
            .expect("ping");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(lat)
}

/// Runs `op(thread, i)` for i in 0..per_thread on `threads` threads; returns ops/s.
fn ops_per_sec(threads: usize, per_thread: usize, op: impl Fn(usize, usize) + Sync) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let op = &op;
            s.spawn(move || {
                for i in 0..per_thread {
                    op(th, i)
                }
            });
        }
    });
    (threads * per_thread) as f64 / t.elapsed().as_secs_f64()
}

fn metadata(client: &Client, threads: usize, per_thread: usize, run: usize) -> (f64, f64, f64) {
    let dir = format!("/md-{threads}-{run}");
    client.mkdir(&dir, 0o755).unwrap();
    let path = |th: usize, i: usize| format!("{dir}/f{th}-{i}");
    let c = ops_per_sec(threads, per_thread, |th, i| {
        client.create(&path(th, i), 0o644).expect("create");
    });
    let s = ops_per_sec(threads, per_thread, |th, i| {
        client.stat(&path(th, i)).expect("stat");
    });
    let r = ops_per_sec(threads, per_thread, |th, i| {
        client.unlink(&path(th, i)).expect("unlink");
    });
    client.rmdir(&dir).unwrap();
    (c, s, r)
}

fn seq_io(client: &Client, threads: usize, xfer: usize, total: usize, run: usize) -> (f64, f64) {
    let per_thread = total / threads;
    let files: Vec<_> = (0..threads)
        .map(|t| {
            client
                .open(
                    &format!("/seq-{xfer}-{threads}-{run}-{t}"),
                    &OpenOptions {
                        create: true,
                        write: true,
                        mode: 0o644,
                        ..Default::default()
                    },
                )
                .unwrap()
        })
        .collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        for f in &files {
            s.spawn(move || {
                let buf = vec![0x5au8; xfer];
                let mut off = 0;
                while off < per_thread {
                    f.pwrite(&buf, off as u64).expect("write");
                    off += xfer;
                }
            });
        }
    });
    let w = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    std::thread::scope(|s| {
        for f in &files {
            s.spawn(move || {
                let mut buf = vec![0u8; xfer];
                let mut off = 0;
                while off < per_thread {
                    let n = f.pread(&mut buf, off as u64).expect("read");
                    assert_eq!(n, xfer);
                    off += xfer;
                }
            });
        }
    });
    let r = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    for f in &files {
        client.unlink(f.path()).unwrap();
    }
    (w, r)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `fi_pingpong` between two processes on this machine: (half round trip in µs, MB/s)
/// for messages of `size` bytes, from its last line (`usec/xfer` is half a round trip).
fn fi_pingpong(provider: &str, size: usize, iters: usize) -> (f64, f64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let args = |c: &mut std::process::Command| {
        c.args(["-p", provider, "-e", "rdm", "-I"])
            .arg(iters.to_string())
            .arg("-S")
            .arg(size.to_string());
    };
    let mut server = std::process::Command::new("fi_pingpong");
    args(&mut server);
    let mut server = server
        .arg("-B")
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("fi_pingpong (Debian: libfabric-bin)");
    std::thread::sleep(Duration::from_millis(300));
    let mut client = std::process::Command::new("fi_pingpong");
    args(&mut client);
    let out = client
        .arg("-P")
        .arg(port.to_string())
        .arg("127.0.0.1")
        .output()
        .expect("fi_pingpong client");
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let last: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let num = |i: usize| last.get(i).and_then(|v| v.parse::<f64>().ok());
    match (num(6), num(5)) {
        (Some(us), Some(mbs)) => (us, mbs),
        _ => panic!("cannot read fi_pingpong's output:\n{text}"),
    }
}

/// Median of `n` timed calls of `op`, in µs.
fn median_us(n: usize, mut op: impl FnMut()) -> f64 {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                op();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

/// libfabric's RMA floor on `provider` through gkfs's own endpoint (Debian's
/// libfabric-bin has no `fi_rma_bw`): in one process, one endpoint moves 1 MiB of
/// another's registered buffer `n` times back to back, by RMA read (what a daemon does
/// with a client's write) and by RMA write (with a read), one transfer in flight, no
/// gkfs protocol. Returns (read MB/s, write MB/s).
/// The storage's own floor for the remote write row: MB/s of `total` bytes written in
/// 1 MiB `pwrite`s to a fresh file in $TMPDIR, the file system the daemon's chunks are
/// on. (On tmpfs a fresh page costs about three times its copy: a daemon writing new
/// chunks is bounded by this, however fast the network.)
fn storage_write_floor(total: usize) -> f64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = std::fs::File::create(dir.path().join("floor")).expect("create");
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    for off in (0..total).step_by(buf.len()) {
        f.write_all_at(&buf, off as u64).expect("write");
    }
    total as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn rma_floor(provider: &str, n: usize) -> (f64, f64) {
    use gkfs_fabric::{Config, Endpoint, RemoteBuf};
    const MIB: usize = 1 << 20;
    let open = |node: Option<&str>| {
        Endpoint::open(&Config {
            provider: provider.into(),
            node: node.map(str::to_string),
            service: None,
        })
        .expect("a libfabric endpoint")
    };
    let server = open(Some("127.0.0.1"));
    server.serve(4, 4096).expect("serve");
    let client = open(None);
    let peer = client.peer(server.address()).expect("peer");
    let mover = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let req = server
            .next_request(deadline)
            .expect("request")
            .expect("a request");
        let rb = RemoteBuf::from_le_bytes(req.payload()).expect("a buffer");
        let mut buf = Vec::new();
        let t = Instant::now();
        for _ in 0..n {
            let op = server.start_read(req.from, rb, 0, buf, MIB, deadline);
            buf = op.and_then(|op| op.wait(deadline)).expect("RMA read");
        }
        let read = (n * MIB) as f64 / t.elapsed().as_secs_f64() / 1e6;
        let t = Instant::now();
        for _ in 0..n {
            let op = server.start_write(req.from, rb, 0, buf, deadline);
            buf = op.and_then(|op| op.wait(deadline)).expect("RMA write");
        }
        let write = (n * MIB) as f64 / t.elapsed().as_secs_f64() / 1e6;
        let mut reply = read.to_le_bytes().to_vec();
        reply.extend_from_slice(&write.to_le_bytes());
        server.reply(&req, reply).expect("reply");
        // Give the reply time to leave before the endpoint closes.
        std::thread::sleep(Duration::from_millis(100));
    });
    let mut buf = vec![0x5au8; MIB];
    let got = {
        let mr = client.register_mut(&mut buf).expect("register");
        let msg = mr.remote().to_le_bytes();
        // The client's wait drives its side of the transfers.
        client
            .call(peer, &msg, 64, Duration::from_secs(120))
            .expect("the RMA run")
    };
    mover.join().expect("the RMA thread");
    let f = |i: usize| f64::from_le_bytes(got[i * 8..i * 8 + 8].try_into().unwrap());
    (f(0), f(1))
}

/// The remote path next to libfabric's floor: one daemon reached through libfabric.
fn remote(o: &Opts) {
    let reps = o.repeats.unwrap_or(5);
    let cluster = Cluster::start_custom(1, 512 * 1024, &o.provider, None, &|_| {
        let mut a = vec!["--socket".into(), "none".into()];
        if let Ok(t) = std::env::var("GKFS_BENCH_DAEMON_THREADS") {
            a.extend(["--threads".into(), t]);
        }
        a
    });
    let mut cfg = gkfs_client::ClientConfig::new(&cluster.hosts_file);
    cfg.fabric = gkfs_client::FabricUse::Direct;
    let client = Client::new(&cfg).expect("client");
    client.create("/probe", 0o644).expect("create");
    let n = if o.quick { 500 } else { 2000 };
    ping_us(&client, 200); // warm-up: the connection
    if let Some(what) = &o.soak {
        return soak(&client, what, Duration::from_secs(o.soak_seconds));
    }
    let mut runs: Vec<[f64; 11]> = Vec::new();
    for r in 0..reps {
        let (pp_half, _) = fi_pingpong(&o.provider, 64, 3000);
        // Warm again after fi_pingpong's run: on this VM the first few hundred round
        // trips after half a second without any take 130-430 µs against 25 (vCPUs
        // woken from halt), and fi_pingpong's own number is taken warm too.
        ping_us(&client, 1000);
        let ping = median_us(n, || {
            client.ping(0).expect("ping");
        });
        let stat = median_us(n, || {
            client.stat("/probe").expect("stat");
        });
        let per = if o.quick { 1000 } else { 2000 };
        let c1 = metadata(&client, 1, per, r).0;
        // As many creates per thread as the one thread made: long enough to be the
        // steady state, not the threads' start.
        let c4 = metadata(&client, 4, per, 100 + r).0;
        let total = if o.quick { 32 << 20 } else { 128 << 20 };
        let (w, rd) = seq_io(&client, 1, 1 << 20, total, r);
        let (_, pp_mbs) = fi_pingpong(&o.provider, 1 << 20, if o.quick { 100 } else { 300 });
        let (rma_read, rma_write) = rma_floor(&o.provider, if o.quick { 100 } else { 300 });
        let disk = storage_write_floor(total);
        runs.push([
            2.0 * pp_half,
            ping,
            stat,
            c1,
            c4,
            w,
            rd,
            pp_mbs,
            rma_read,
            rma_write,
            disk,
        ]);
        eprintln!("remote run {} of {reps} done", r + 1);
    }
    let col = |i: usize| -> Vec<f64> { runs.iter().map(|x| x[i]).collect() };
    // Moving a piece and storing it, one after the other, on one daemon thread.
    let serial: Vec<f64> = runs
        .iter()
        .map(|x| 1.0 / (1.0 / x[8] + 1.0 / x[10]))
        .collect();
    let rows = vec![
        RemoteRow::new(
            "round trip, client API ping",
            "µs",
            col(1),
            Some(("fi_pingpong 64 B", col(0))),
        ),
        RemoteRow::new(
            "round trip, client API stat",
            "µs",
            col(2),
            Some(("fi_pingpong 64 B", col(0))),
        ),
        RemoteRow::new("creates, 1 thread", "ops/s", col(3), None),
        RemoteRow::new(
            "creates, 4 threads",
            "ops/s",
            col(4),
            Some(("creates, 1 thread", col(3))),
        ),
        RemoteRow::new(
            "1 MiB write",
            "MB/s",
            col(5),
            Some(("fi_pingpong 1 MiB", col(7))),
        ),
        RemoteRow::new(
            "1 MiB read",
            "MB/s",
            col(6),
            Some(("fi_pingpong 1 MiB", col(7))),
        ),
        RemoteRow::new(
            "1 MiB write",
            "MB/s",
            col(5),
            Some(("RMA read of 1 MiB, gkfs_fabric", col(8))),
        ),
        RemoteRow::new(
            "1 MiB read",
            "MB/s",
            col(6),
            Some(("RMA write of 1 MiB, gkfs_fabric", col(9))),
        ),
        RemoteRow::new(
            "1 MiB write",
            "MB/s",
            col(5),
            Some(("pwrite of 1 MiB to a fresh file in $TMPDIR", col(10))),
        ),
        RemoteRow::new(
            "1 MiB write",
            "MB/s",
            col(5),
            Some(("RMA read, then pwrite: 1/(1/a+1/b)", serial)),
        ),
    ];
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let cell = |v: &[f64]| {
        let (lo, hi) = spread(v);
        let d = if median(v.to_vec()) < 100.0 { 1 } else { 0 };
        format!("{:.d$} ({lo:.d$}-{hi:.d$})", median(v.to_vec()))
    };
    println!(
        "Remote path, provider {}: 1 daemon reached through libfabric (no local socket), medians (min-max) of {reps}",
        o.provider
    );
    println!("| measurement | gkfs | floor | gkfs/floor |");
    println!("|---|---:|---:|---:|");
    for RemoteRow {
        what,
        unit,
        gkfs: g,
        floor,
    } in &rows
    {
        match floor {
            Some((name, f)) => println!(
                "| {what} ({unit}) | {} | {} ({name}) | {:.2}x |",
                cell(g),
                cell(f),
                median(g.clone()) / median(f.clone())
            ),
            None => println!("| {what} ({unit}) | {} | | |", cell(g)),
        }
    }
    if let Some(path) = &o.json {
        let stats = |v: &[f64]| {
            let (lo, hi) = spread(v);
            serde_json::json!({"median": median(v.to_vec()), "min": lo, "max": hi, "runs": v})
        };
        let v: Vec<_> = rows
            .iter()
            .map(|RemoteRow { what, unit, gkfs: g, floor }| {
                serde_json::json!({
                    "what": what,
                    "unit": unit,
                    "gkfs": stats(g),
                    "floor": floor.as_ref().map(|(name, f)| serde_json::json!({"name": name, "stats": stats(f)})),
                })
            })
            .collect();
        let doc = serde_json::json!({"provider": o.provider, "repeats": reps, "rows": v});
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).expect("write json");
    }
}

/// One row of the remote table: a measurement, its unit, gkfs's runs and the floor's
/// name and runs (None: no floor).
struct RemoteRow {
    what: &'static str,
    unit: &'static str,
    gkfs: Vec<f64>,
    floor: Option<(&'static str, Vec<f64>)>,
}

impl RemoteRow {
    fn new(
        what: &'static str,
        unit: &'static str,
        gkfs: Vec<f64>,
        floor: Option<(&'static str, Vec<f64>)>,
    ) -> RemoteRow {
        RemoteRow {
            what,
            unit,
            gkfs,
            floor,
        }
    }
}

/// Repeats one remote measurement until `time` is over, printing each round's figure.
fn soak(client: &Client, what: &str, time: Duration) {
    const MIB: usize = 1 << 20;
    // Reads go over one file written once, so only reads are profiled.
    let file = (what == "read-1m").then(|| {
        let opts = OpenOptions {
            create: true,
            write: true,
            mode: 0o644,
            ..Default::default()
        };
        let f = client.open("/soak-read", &opts).expect("open");
        for i in 0..64 {
            f.pwrite(&vec![0x5au8; MIB], (i * MIB) as u64)
                .expect("write");
        }
        f
    });
    let before = client.daemon_metrics(0).expect("metrics");
    let end = Instant::now() + time;
    let mut round = 0;
    while Instant::now() < end {
        let v = match what {
            "creates-1" => metadata(client, 1, 2000, round).0,
            "creates-4" => metadata(client, 4, 2000, round).0,
            "write-1m" => seq_io(client, 1, 1 << 20, 64 << 20, round).0,
            "read-1m" => {
                let (f, mut buf) = (file.as_ref().expect("the file"), vec![0u8; MIB]);
                let t = Instant::now();
                for i in 0..64 {
                    assert_eq!(f.pread(&mut buf, (i * MIB) as u64).expect("read"), MIB);
                }
                (64 * MIB) as f64 / t.elapsed().as_secs_f64() / 1e6
            }
            _ => panic!("--soak takes creates-1, creates-4, write-1m or read-1m"),
        };
        println!("{what} round {round}: {v:.1}");
        round += 1;
    }
    // Where the round's time went: the daemon's own time per request.
    let after = client.daemon_metrics(0).expect("metrics");
    for op in &after.ops {
        let was = before.ops.iter().find(|b| b.opcode == op.opcode);
        let count = op.count - was.map_or(0, |b| b.count);
        let ns = op.total_ns - was.map_or(0, |b| b.total_ns);
        if count > 0 {
            println!(
                "daemon served {count} {}, {:.1} µs each",
                gkfs_proto::msg::Opcode::name_of(op.opcode),
                ns as f64 / count as f64 / 1e3
            );
        }
    }
}

fn main() {
    let o = parse_args();
    if o.remote {
        return remote(&o);
    }
    let mut rows = Vec::new();
    let reps = o.repeats.unwrap_or(5);
    for daemons in [1usize, 2] {
        let cluster = Cluster::start(daemons);
        let client = cluster.client();
        let pings = if o.quick { 500 } else { 2000 };
        ping_us(&client, 200); // warm-up: connections
        let v = median((0..reps).map(|_| ping_us(&client, pings)).collect());
        rows.push(Row {
            daemons,
            what: "ping round trip".into(),
            threads: 1,
            value: v,
            unit: "µs",
        });
        for threads in [1usize, 4] {
            let per = if o.quick { 1000 } else { 4000 } / threads;
            let runs: Vec<_> = (0..reps)
                .map(|r| metadata(&client, threads, per, r))
                .collect();
            for (i, name) in ["create", "stat", "remove"].iter().enumerate() {
                let v = median(runs.iter().map(|x| [x.0, x.1, x.2][i]).collect());
                rows.push(Row {
                    daemons,
                    what: name.to_string(),
                    threads,
                    value: v,
                    unit: "ops/s",
                });
            }
        }
        for xfer in [4096usize, 64 * 1024, 1 << 20] {
            let total = match (xfer, o.quick) {
                (4096, true) => 4 << 20,
                (4096, false) => 16 << 20,
                (_, true) => 32 << 20,
                (_, false) => 128 << 20,
            };
            for threads in [1usize, 4] {
                let runs: Vec<_> = (0..reps)
                    .map(|r| seq_io(&client, threads, xfer, total, r))
                    .collect();
                let label = if xfer >= 1 << 20 {
                    format!("{} MiB", xfer >> 20)
                } else {
                    format!("{} KiB", xfer >> 10)
                };
                let w = median(runs.iter().map(|x| x.0).collect());
                let r = median(runs.iter().map(|x| x.1).collect());
                rows.push(Row {
                    daemons,
                    what: format!("seq write {label}"),
                    threads,
                    value: w,
                    unit: "MB/s",
                });
                rows.push(Row {
                    daemons,
                    what: format!("seq read {label}"),
                    threads,
                    value: r,
                    unit: "MB/s",
                });
            }
        }
        eprintln!("done with {daemons} daemon(s)");
    }
    // Daemon memory after many creates.
    let cluster = Cluster::start(1);
    let client = cluster.client();
    let pid = cluster.pids()[0];
    let before = rss_kib(pid);
    let n = o.rss_creates.unwrap_or(1_000_000) as usize;
    let t = Instant::now();
    let rate = ops_per_sec(4, n / 4, |th, i| {
        client
            .create(&format!("/r{th}-{i}"), 0o644)
            .expect("create");
    });
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(pid);
    eprintln!("{n} creates in {:?}", t.elapsed());
    rows.push(Row {
        daemons: 1,
        what: format!("creates for RSS test ({n})"),
        threads: 4,
        value: rate,
        unit: "ops/s",
    });
    rows.push(Row {
        daemons: 1,
        what: "daemon RSS at start".into(),
        threads: 0,
        value: before as f64 / 1024.0,
        unit: "MiB",
    });
    rows.push(Row {
        daemons: 1,
        what: format!("daemon RSS after {n} creates"),
        threads: 0,
        value: after as f64 / 1024.0,
        unit: "MiB",
    });

    println!("| daemons | measurement | threads | median | unit |");
    println!("|---:|---|---:|---:|---|");
    for r in &rows {
        let v = if r.value >= 100.0 {
            format!("{:.0}", r.value)
        } else {
            format!("{:.1}", r.value)
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.daemons, r.what, r.threads, v, r.unit
        );
    }
    if let Some(path) = o.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"daemons": r.daemons, "what": r.what, "threads": r.threads, "value": r.value, "unit": r.unit}))
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).expect("write json");
    }
}
