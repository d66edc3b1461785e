//! gkfs-bench: the core benchmark, through the client API (no preload).
//!
//! Starts its own daemons on this machine (root dirs under $TMPDIR; the README runs
//! it with TMPDIR=/dev/shm, a RAM disk as on a burst-buffer node) and prints medians
//! of repeated runs: RPC round trip, metadata ops/s, sequential write/read MB/s, each
//! with 1 and 2 daemons, then the daemon's RSS after many creates.
//!
//! Usage: gkfs-bench [--quick] [--rss-creates N] [--json FILE]

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

fn main() {
    let o = parse_args();
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
