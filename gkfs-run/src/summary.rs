//! The job's I/O summary, taken from every daemon's counters just before the file
//! system stops (`gkfs-run stop`, the job epilog): totals, how evenly the nodes were
//! loaded, the busiest request types with latency percentiles, the errnos answered, the
//! stage-in/out runs and the unsupported calls the preload library saw. A table for
//! people, JSON for tools; its size does not grow with the number of files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use gkfs_client::{Client, MetricsReply};
use gkfs_proto::msg::Opcode;
use serde::{Deserialize, Serialize};

use crate::stats::percentile_us;

/// Name of the file, in the instance dir, where stage runs append their figures.
pub const STAGES_FILE: &str = "stages.jsonl";
/// Request types listed (the busiest).
const TOP_REQUESTS: usize = 12;

/// One stage-in or stage-out run, as `gkfs-run stage-in|stage-out` recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageFigures {
    /// "in" or "out".
    pub direction: String,
    /// Source.
    pub src: String,
    /// Destination.
    pub dst: String,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Entries not copied.
    pub failures: u64,
}

/// One daemon's share.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeFigures {
    /// Index in the hosts file.
    pub index: u32,
    /// Node name.
    pub hostname: String,
    /// Did it answer? (A daemon down has no figures.)
    pub up: bool,
    /// Requests served.
    pub requests: u64,
    /// Bytes clients read from it.
    pub bytes_read: u64,
    /// Bytes clients wrote to it.
    pub bytes_written: u64,
    /// Metadata records it holds (files, directories, links).
    pub files: u64,
    /// Data it holds.
    pub chunk_bytes: u64,
}

/// The spread of one figure over the daemons that answered.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// Largest share.
    pub max: u64,
    /// Mean share.
    pub mean: f64,
    /// max / mean (1.0: perfectly even; 0 when nothing was counted).
    pub imbalance: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = u64>) -> Spread {
        let v: Vec<u64> = values.collect();
        let max = v.iter().copied().max().unwrap_or(0);
        let mean = if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        };
        Spread {
            max,
            mean,
            imbalance: if mean > 0.0 { max as f64 / mean } else { 0.0 },
        }
    }
}

/// How evenly the daemons were loaded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Balance {
    /// Bytes written per daemon.
    pub bytes_written: Spread,
    /// Bytes read per daemon.
    pub bytes_read: Spread,
    /// Metadata records per daemon.
    pub files: Spread,
    /// Requests per daemon.
    pub requests: Spread,
}

/// One request type over all daemons.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestFigures {
    /// The RPC's name.
    pub op: String,
    /// Requests.
    pub count: u64,
    /// Of them, answered with an error.
    pub errors: u64,
    /// Mean service time, µs.
    pub mean_us: f64,
    /// Percentiles of the service time (upper bounds of histogram buckets), µs.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
}

/// What the file system served during its life.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The Slurm job, if any.
    pub job: Option<String>,
    /// Mount dir.
    pub mountdir: String,
    /// Daemons in the hosts file.
    pub daemons: usize,
    /// The daemons that did not answer (their figures are missing).
    pub down: Vec<String>,
    /// The longest daemon uptime, s.
    pub seconds: f64,
    /// Requests served, all daemons.
    pub requests: u64,
    /// Of them, answered with an error.
    pub errors: u64,
    /// Bytes read by clients (stage-out included).
    pub bytes_read: u64,
    /// Bytes written by clients (stage-in included).
    pub bytes_written: u64,
    /// Metadata records held at the end (files, directories, links).
    pub files: u64,
    /// Data held at the end.
    pub chunk_bytes: u64,
    /// Per daemon.
    pub nodes: Vec<NodeFigures>,
    /// Spread over the daemons.
    pub balance: Balance,
    /// The busiest request types.
    pub top_requests: Vec<RequestFigures>,
    /// Errnos answered (symbolic or described: count).
    pub errnos: BTreeMap<String, u64>,
    /// Unsupported calls the preload library saw (name: count).
    pub unsupported: BTreeMap<String, u64>,
    /// Stage-in and stage-out runs.
    pub stages: Vec<StageFigures>,
    /// Time taken to collect this, s.
    pub collect_seconds: f64,
}

/// Builds the summary from each daemon's counters (`Err`: it did not answer).
pub fn from_metrics(
    hostnames: &[String],
    metrics: &[Result<MetricsReply, String>],
    stages: Vec<StageFigures>,
) -> Summary {
    let mut nodes = Vec::new();
    let mut down = Vec::new();
    let mut ops: BTreeMap<u16, (u64, u64, u64, Vec<u64>)> = BTreeMap::new();
    let mut errnos = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    let mut seconds = 0f64;
    for (i, m) in metrics.iter().enumerate() {
        let hostname = hostnames.get(i).cloned().unwrap_or_else(|| "?".into());
        let Ok(m) = m else {
            down.push(hostname.clone());
            nodes.push(NodeFigures {
                index: i as u32,
                hostname,
                up: false,
                requests: 0,
                bytes_read: 0,
                bytes_written: 0,
                files: 0,
                chunk_bytes: 0,
            });
            continue;
        };
        seconds = seconds.max(m.uptime_ns as f64 / 1e9);
        for o in &m.ops {
            let e = ops.entry(o.opcode).or_default();
            e.0 += o.count;
            e.1 += o.errors;
            e.2 += o.total_ns;
            if e.3.len() < o.buckets.len() {
                e.3.resize(o.buckets.len(), 0);
            }
            for (sum, n) in e.3.iter_mut().zip(&o.buckets) {
                *sum += n;
            }
        }
        for e in &m.errors {
            *errnos
                .entry(gkfs_client::Errno(e.errno).to_string())
                .or_insert(0) += e.count;
        }
        for c in &m.unsupported {
            *unsupported.entry(c.call.clone()).or_insert(0) += c.count;
        }
        nodes.push(NodeFigures {
            index: i as u32,
            hostname,
            up: true,
            requests: m.ops.iter().map(|o| o.count).sum(),
            bytes_read: m.bytes_read,
            bytes_written: m.bytes_written,
            files: m.records,
            chunk_bytes: m.chunk_bytes,
        });
    }
    let up = || nodes.iter().filter(|n| n.up);
    let balance = Balance {
        bytes_written: Spread::of(up().map(|n| n.bytes_written)),
        bytes_read: Spread::of(up().map(|n| n.bytes_read)),
        files: Spread::of(up().map(|n| n.files)),
        requests: Spread::of(up().map(|n| n.requests)),
    };
    let mut top_requests: Vec<RequestFigures> = ops
        .into_iter()
        .map(
            |(opcode, (count, errors, total_ns, buckets))| RequestFigures {
                op: Opcode::name_of(opcode),
                count,
                errors,
                mean_us: total_ns as f64 / count.max(1) as f64 / 1e3,
                p50_us: percentile_us(&buckets, 0.5),
                p90_us: percentile_us(&buckets, 0.9),
                p99_us: percentile_us(&buckets, 0.99),
            },
        )
        .collect();
    top_requests.sort_by(|a, b| b.count.cmp(&a.count).then(a.op.cmp(&b.op)));
    top_requests.truncate(TOP_REQUESTS);
    Summary {
        job: None,
        mountdir: String::new(),
        daemons: metrics.len(),
        down,
        seconds,
        requests: up().map(|n| n.requests).sum(),
        errors: all_errors(metrics),
        bytes_read: up().map(|n| n.bytes_read).sum(),
        bytes_written: up().map(|n| n.bytes_written).sum(),
        files: up().map(|n| n.files).sum(),
        chunk_bytes: up().map(|n| n.chunk_bytes).sum(),
        balance,
        nodes,
        top_requests,
        errnos,
        unsupported,
        stages,
        collect_seconds: 0.0,
    }
}

/// Errors over every request type (not only the busiest).
fn all_errors(metrics: &[Result<MetricsReply, String>]) -> u64 {
    metrics
        .iter()
        .flatten()
        .flat_map(|m| m.ops.iter().map(|o| o.errors))
        .sum()
}

/// The stage runs recorded in `instance_dir` (unreadable lines are skipped).
pub fn stages_in(instance_dir: &Path) -> Vec<StageFigures> {
    std::fs::read_to_string(instance_dir.join(STAGES_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends a stage run's figures to the instance dir of `hosts_file` (best effort:
/// a summary without it is still right about everything else).
pub fn record_stage(hosts_file: &Path, figures: &StageFigures) {
    let Some(dir) = hosts_file.parent() else {
        return;
    };
    let Ok(line) = serde_json::to_string(figures) else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STAGES_FILE))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Asks every daemon of `client` for its counters and builds the summary.
pub fn collect(client: &Client, stages: Vec<StageFigures>, job: Option<String>) -> Summary {
    let t0 = Instant::now();
    let hostnames: Vec<String> = client
        .hosts()
        .entries
        .iter()
        .map(|e| e.hostname.clone())
        .collect();
    let metrics: Vec<Result<MetricsReply, String>> = (0..client.daemons())
        .map(|d| client.daemon_metrics(d).map_err(|e| e.to_string()))
        .collect();
    let mut s = from_metrics(&hostnames, &metrics, stages);
    s.job = job;
    s.mountdir = client.mountdir().to_string();
    s.collect_seconds = t0.elapsed().as_secs_f64();
    s
}

fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The summary as a few lines of text (for the job's output file or a terminal).
pub fn render(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let what = s
        .job
        .as_ref()
        .map_or_else(|| "gkfs".to_string(), |j| format!("gkfs, job {j}"));
    let _ = writeln!(
        t,
        "=== {what}: I/O summary of {} over {} daemon(s), {:.1} s ===",
        s.mountdir, s.daemons, s.seconds
    );
    let _ = writeln!(
        t,
        "written {} ({} B), read {} ({} B), {} requests ({} errors); at the end {} records, {} of data",
        size(s.bytes_written),
        s.bytes_written,
        size(s.bytes_read),
        s.bytes_read,
        s.requests,
        s.errors,
        s.files,
        size(s.chunk_bytes)
    );
    if !s.down.is_empty() {
        let _ = writeln!(
            t,
            "NOT COUNTED (daemons not answering): {}",
            s.down.join(", ")
        );
    }
    let _ = writeln!(
        t,
        "balance max/mean: written {:.2}, read {:.2}, records {:.2}, requests {:.2}",
        s.balance.bytes_written.imbalance,
        s.balance.bytes_read.imbalance,
        s.balance.files.imbalance,
        s.balance.requests.imbalance
    );
    let _ = writeln!(
        t,
        "{:>3}  {:<16} {:>10} {:>14} {:>14} {:>10} {:>14}",
        "#", "NODE", "REQUESTS", "WRITTEN B", "READ B", "RECORDS", "DATA B"
    );
    for n in &s.nodes {
        if n.up {
            let _ = writeln!(
                t,
                "{:>3}  {:<16} {:>10} {:>14} {:>14} {:>10} {:>14}",
                n.index,
                n.hostname,
                n.requests,
                n.bytes_written,
                n.bytes_read,
                n.files,
                n.chunk_bytes
            );
        } else {
            let _ = writeln!(t, "{:>3}  {:<16} DOWN", n.index, n.hostname);
        }
    }
    let ops: Vec<String> = s
        .top_requests
        .iter()
        .map(|r| {
            format!(
                "{} {} (p50/p90/p99 {}/{}/{} µs)",
                r.op, r.count, r.p50_us, r.p90_us, r.p99_us
            )
        })
        .collect();
    let _ = writeln!(t, "requests: {}", ops.join(", "));
    if !s.errnos.is_empty() {
        let e: Vec<String> = s.errnos.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(t, "errors answered: {}", e.join(", "));
    }
    for st in &s.stages {
        let _ = writeln!(
            t,
            "stage-{} {} -> {}: {} files, {} in {:.2} s{}",
            st.direction,
            st.src,
            st.dst,
            st.files,
            size(st.bytes),
            st.seconds,
            if st.failures > 0 {
                format!(", {} FAILED", st.failures)
            } else {
                String::new()
            }
        );
    }
    if !s.unsupported.is_empty() {
        let u: Vec<String> = s
            .unsupported
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            t,
            "unsupported calls (failed with an errno): {}",
            u.join(", ")
        );
    }
    t
}

/// Where and whether `gkfs-run stop` reports the summary.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SummaryArgs {
    /// No I/O summary.
    #[arg(long)]
    pub no_summary: bool,
    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "no_summary")]
    pub summary_json: Option<std::path::PathBuf>,
}

/// Collects the summary of the instance of `hosts_file` and reports it as `args` says:
/// the text on stderr, the JSON to `--summary-json` (and into the instance dir when
/// it is kept). Never fails the stop: a summary that cannot be made is said so.
pub fn report_at_stop(hosts_file: &Path, args: &SummaryArgs, keep: bool) {
    if args.no_summary {
        return;
    }
    let client = match crate::status::client(hosts_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gkfs-run: no I/O summary: {e:#}");
            return;
        }
    };
    let dir = hosts_file.parent().unwrap_or(Path::new("."));
    let job = std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty());
    let s = collect(&client, stages_in(dir), job);
    eprint!("{}", render(&s));
    let mut targets: Vec<std::path::PathBuf> = args.summary_json.iter().cloned().collect();
    if keep {
        targets.push(dir.join("summary.json"));
    }
    for t in targets {
        if let Err(e) = write_json(&t, &s) {
            eprintln!(
                "gkfs-run: cannot write the summary to {}: {e:#}",
                t.display()
            );
        }
    }
}

/// Writes the summary as JSON.
pub fn write_json(path: &Path, s: &Summary) -> Result<()> {
    let text = serde_json::to_string_pretty(s)? + "\n";
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gkfs_proto::msg::{CallCount, ErrnoCount, OpMetrics};

    fn daemon(written: u64, records: u64, creates: u64, slow: u64) -> MetricsReply {
        let mut buckets = vec![0u64; 24];
        buckets[2] = creates;
        buckets[10] = slow;
        MetricsReply {
            uptime_ns: 5_000_000_000,
            ops: vec![OpMetrics {
                opcode: Opcode::Create as u16,
                count: creates + slow,
                errors: 1,
                total_ns: (creates + slow) * 3_000,
                buckets,
            }],
            errors: vec![ErrnoCount {
                errno: 17, // EEXIST
                count: 1,
            }],
            bytes_written: written,
            records,
            unsupported: vec![CallCount {
                call: "mknod".into(),
                count: 2,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn totals_balance_and_percentiles_add_up() {
        let hosts = vec!["n1".to_string(), "n2".into(), "n3".into()];
        let m = vec![
            Ok(daemon(3000, 10, 89, 1)),
            Ok(daemon(1000, 30, 9, 1)),
            Err("timed out".to_string()),
        ];
        let stage = StageFigures {
            direction: "in".into(),
            src: "/pfs/in".into(),
            dst: "/tmp/gkfs/in".into(),
            files: 3,
            bytes: 1000,
            seconds: 0.5,
            failures: 0,
        };
        let s = from_metrics(&hosts, &m, vec![stage.clone()]);
        assert_eq!(s.daemons, 3);
        assert_eq!(s.down, vec!["n3".to_string()]);
        assert_eq!((s.bytes_written, s.files, s.requests), (4000, 40, 100));
        assert_eq!(s.errors, 2);
        assert_eq!(s.balance.bytes_written.max, 3000);
        assert_eq!(s.balance.bytes_written.mean, 2000.0);
        assert_eq!(s.balance.bytes_written.imbalance, 1.5);
        assert_eq!(s.balance.files.imbalance, 1.5);
        assert_eq!(s.balance.bytes_read.imbalance, 0.0);
        let c = &s.top_requests[0];
        assert_eq!((c.op.as_str(), c.count, c.errors), ("Create", 100, 2));
        // 98 requests in [2, 4) µs, 2 in [512, 1024) µs.
        assert_eq!((c.p50_us, c.p90_us, c.p99_us), (4, 4, 1024));
        assert_eq!(c.mean_us, 3.0);
        assert_eq!(s.unsupported.get("mknod"), Some(&4));
        assert_eq!(s.errnos.values().sum::<u64>(), 2);
        assert_eq!(s.stages, vec![stage]);
        let text = render(&s);
        assert!(
            text.contains("NOT COUNTED (daemons not answering): n3"),
            "{text}"
        );
        assert!(text.contains("mknod: 4"), "{text}");
        assert!(text.contains("written 3.9 KiB (4000 B)"), "{text}");
    }

    #[test]
    fn nothing_served_is_not_a_division_by_zero() {
        let s = from_metrics(&[], &[], Vec::new());
        assert_eq!(s.balance.requests.imbalance, 0.0);
        assert_eq!(s.balance.requests.mean, 0.0);
        assert!(render(&s).contains("0 requests"));
    }
}
