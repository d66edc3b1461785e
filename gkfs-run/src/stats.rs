//! `gkfs-run stats`: what every daemon served, from its request counters (the Metrics
//! RPC): requests and errors per type with latency percentiles, errnos answered, bytes
//! read and written. Once: totals since each daemon started, and averages over its
//! uptime. With `--watch SECS`: every SECS, the rates over the last interval (a live
//! table, or one JSON object per line).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use gkfs_client::{Client, MetricsReply, OpMetrics};
use gkfs_proto::msg::Opcode;
use serde::Serialize;

/// One request type, as reported.
#[derive(Debug, Serialize)]
pub struct OpRow {
    /// Request type (the RPC's name).
    pub op: String,
    /// Requests (in the interval, with --watch).
    pub count: u64,
    /// Of them, answered with an error.
    pub errors: u64,
    /// Requests per second.
    pub per_s: f64,
    /// Mean service time, µs.
    pub mean_us: f64,
    /// Median service time (upper bound of its histogram bucket), µs.
    pub p50_us: u64,
    /// 99th percentile (upper bound of its bucket), µs.
    pub p99_us: u64,
}

/// One daemon, as reported.
#[derive(Debug, Default, Serialize)]
pub struct DaemonRow {
    /// Index in the hosts file.
    pub index: u32,
    /// Node name.
    pub hostname: String,
    /// Does it answer?
    pub up: bool,
    /// Why not.
    pub error: Option<String>,
    /// Seconds the figures cover (uptime, or the --watch interval).
    pub seconds: f64,
    /// Requests.
    pub requests: u64,
    /// Requests per second.
    pub ops_per_s: f64,
    /// Replies with an error.
    pub errors: u64,
    /// MB (10^6 bytes) read by clients per second.
    pub read_mb_s: f64,
    /// MB written by clients per second.
    pub write_mb_s: f64,
    /// Bytes read by clients.
    pub bytes_read: u64,
    /// Bytes written by clients.
    pub bytes_written: u64,
    /// Metadata records stored now.
    pub records: u64,
    /// Chunk bytes stored now.
    pub chunk_bytes: u64,
    /// Bytes of the metadata database (RocksDB) now.
    pub meta_bytes: u64,
    /// Clients connected through the node-local socket now.
    pub local_connections: u64,
    /// libfabric peers known (each one connection with ofi_rxm).
    pub fabric_peers: u64,
    /// Its Prometheus endpoint ("" if off).
    pub metrics_address: String,
    /// Unsupported calls reported by preloaded processes at their exit (name: count; in
    /// the interval, with --watch).
    pub unsupported: BTreeMap<String, u64>,
    /// Per request type, busiest first.
    pub ops: Vec<OpRow>,
    /// Errnos answered (name: count).
    pub errnos: BTreeMap<String, u64>,
}

/// The upper bound (µs) of the bucket holding quantile `q` of `buckets`.
pub fn percentile_us(buckets: &[u64], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= want {
            return 1u64 << i;
        }
    }
    1u64 << (buckets.len() - 1)
}

/// `now` less `before` (the counters of one daemon between two samples).
fn minus(now: &MetricsReply, before: Option<&MetricsReply>) -> MetricsReply {
    let Some(b) = before else { return now.clone() };
    let ops = now
        .ops
        .iter()
        .map(|o| {
            let prev = b.ops.iter().find(|p| p.opcode == o.opcode);
            OpMetrics {
                opcode: o.opcode,
                count: o.count - prev.map_or(0, |p| p.count),
                errors: o.errors - prev.map_or(0, |p| p.errors),
                total_ns: o.total_ns - prev.map_or(0, |p| p.total_ns),
                buckets: o
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| n - prev.and_then(|p| p.buckets.get(i)).copied().unwrap_or(0))
                    .collect(),
            }
        })
        .filter(|o| o.count > 0)
        .collect();
    MetricsReply {
        uptime_ns: now.uptime_ns - b.uptime_ns,
        ops,
        errors: counts_since(
            &now.errors,
            &b.errors,
            |e| e.errno,
            |e| e.count,
            |e, count| gkfs_proto::msg::ErrnoCount { count, ..*e },
        ),
        bytes_read: now.bytes_read - b.bytes_read,
        bytes_written: now.bytes_written - b.bytes_written,
        unsupported: counts_since(
            &now.unsupported,
            &b.unsupported,
            |c| c.call.as_str(),
            |c| c.count,
            |c, count| gkfs_proto::msg::CallCount {
                call: c.call.clone(),
                count,
            },
        ),
        ..now.clone()
    }
}

/// `now` less `before` for a list of counts by key (`with` makes an entry with another
/// count); keys left at 0 are dropped.
fn counts_since<'a, T, K: PartialEq + 'a>(
    now: &'a [T],
    before: &'a [T],
    key: impl Fn(&'a T) -> K,
    count: impl Fn(&T) -> u64,
    with: impl Fn(&T, u64) -> T,
) -> Vec<T> {
    now.iter()
        .filter_map(|n| {
            let earlier = before.iter().find(|p| key(p) == key(n)).map_or(0, &count);
            let d = count(n).saturating_sub(earlier);
            (d > 0).then(|| with(n, d))
        })
        .collect()
}

/// A daemon's row from counters `m` covering `m.uptime_ns`.
fn row(index: u32, hostname: &str, m: &MetricsReply) -> DaemonRow {
    let secs = (m.uptime_ns as f64 / 1e9).max(1e-9);
    let mut ops: Vec<OpRow> = m
        .ops
        .iter()
        .map(|o| OpRow {
            op: Opcode::name_of(o.opcode),
            count: o.count,
            errors: o.errors,
            per_s: o.count as f64 / secs,
            mean_us: o.total_ns as f64 / o.count.max(1) as f64 / 1e3,
            p50_us: percentile_us(&o.buckets, 0.5),
            p99_us: percentile_us(&o.buckets, 0.99),
        })
        .collect();
    ops.sort_by(|a, b| b.count.cmp(&a.count).then(a.op.cmp(&b.op)));
    let requests = m.ops.iter().map(|o| o.count).sum::<u64>();
    DaemonRow {
        index,
        hostname: hostname.to_string(),
        up: true,
        error: None,
        seconds: secs,
        requests,
        ops_per_s: requests as f64 / secs,
        errors: m.ops.iter().map(|o| o.errors).sum(),
        read_mb_s: m.bytes_read as f64 / secs / 1e6,
        write_mb_s: m.bytes_written as f64 / secs / 1e6,
        bytes_read: m.bytes_read,
        bytes_written: m.bytes_written,
        records: m.records,
        chunk_bytes: m.chunk_bytes,
        meta_bytes: m.meta_bytes,
        local_connections: m.local_connections,
        fabric_peers: m.fabric_peers,
        metrics_address: m.metrics_address.clone(),
        unsupported: m
            .unsupported
            .iter()
            .map(|c| (c.call.clone(), c.count))
            .collect(),
        ops,
        errnos: m
            .errors
            .iter()
            .map(|e| (gkfs_client::Errno(e.errno).to_string(), e.count))
            .collect(),
    }
}

/// One sample of every daemon's counters (None: it did not answer, with why).
fn sample(c: &Client) -> Vec<Result<MetricsReply, String>> {
    (0..c.daemons())
        .map(|d| c.daemon_metrics(d).map_err(|e| e.to_string()))
        .collect()
}

fn rows(
    c: &Client,
    now: &[Result<MetricsReply, String>],
    before: Option<&[Result<MetricsReply, String>]>,
) -> Vec<DaemonRow> {
    now.iter()
        .enumerate()
        .map(|(i, m)| {
            let host = c
                .hosts()
                .entries
                .get(i)
                .map_or("?", |e| e.hostname.as_str());
            match m {
                Ok(m) => {
                    let prev = before.and_then(|b| b.get(i)).and_then(|r| r.as_ref().ok());
                    row(i as u32, host, &minus(m, prev))
                }
                Err(e) => DaemonRow {
                    index: i as u32,
                    hostname: host.to_string(),
                    error: Some(e.clone()),
                    ..Default::default()
                },
            }
        })
        .collect()
}

fn table(rows: &[DaemonRow], top: usize) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>3}  {:<16} {:>10} {:>10} {:>8} {:>9} {:>9}  busiest requests (count, p50/p99 µs)",
        "#", "HOST", "REQUESTS", "OPS/S", "ERRORS", "READ MB/S", "WRITE MB/S"
    );
    for r in rows {
        if !r.up {
            let _ = writeln!(
                t,
                "{:>3}  {:<16} DOWN: {}",
                r.index,
                r.hostname,
                r.error.as_deref().unwrap_or("?")
            );
            continue;
        }
        let busiest: Vec<String> = r
            .ops
            .iter()
            .take(top)
            .map(|o| format!("{} {} ({}/{})", o.op, o.count, o.p50_us, o.p99_us))
            .collect();
        let _ = writeln!(
            t,
            "{:>3}  {:<16} {:>10} {:>10.0} {:>8} {:>9.1} {:>9.1}  {}",
            r.index,
            r.hostname,
            r.requests,
            r.ops_per_s,
            r.errors,
            r.read_mb_s,
            r.write_mb_s,
            busiest.join(", ")
        );
        if !r.errnos.is_empty() {
            let e: Vec<String> = r.errnos.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(t, "     errors answered: {}", e.join(", "));
        }
        if !r.unsupported.is_empty() {
            let u: Vec<String> = r
                .unsupported
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(t, "     unsupported calls: {}", u.join(", "));
        }
    }
    t
}

/// Writes a report to stdout; false once the reader has gone (`| head`).
fn emit(text: &str) -> Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs `gkfs-run stats`. Returns false if a daemon did not answer.
pub fn run(hosts_file: &Path, json: bool, watch: Option<f64>, count: Option<u64>) -> Result<bool> {
    let c = crate::status::client(hosts_file)?;
    let Some(every) = watch else {
        let r = rows(&c, &sample(&c), None);
        let text = if json {
            serde_json::to_string_pretty(&r)? + "\n"
        } else {
            table(&r, 4)
        };
        emit(&text)?;
        return Ok(r.iter().all(|r| r.up));
    };
    anyhow::ensure!(every > 0.0, "--watch needs a positive number of seconds");
    let mut before = sample(&c);
    let mut reports = 0;
    let mut all_up = true;
    loop {
        std::thread::sleep(Duration::from_secs_f64(every));
        let now = sample(&c);
        let r = rows(&c, &now, Some(&before));
        all_up &= r.iter().all(|r| r.up);
        let text = if json {
            serde_json::to_string(&r)? + "\n"
        } else {
            table(&r, 4) + "\n"
        };
        if !emit(&text)? {
            return Ok(all_up);
        }
        before = now;
        reports += 1;
        if count.is_some_and(|n| reports >= n) {
            return Ok(all_up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_upper_bounds() {
        // 90 requests under 1 µs, 9 in [4, 8) µs, 1 in [512, 1024) µs.
        let mut b = vec![0u64; 24];
        b[0] = 90;
        b[3] = 9;
        b[10] = 1;
        assert_eq!(percentile_us(&b, 0.5), 1);
        assert_eq!(percentile_us(&b, 0.95), 8);
        assert_eq!(percentile_us(&b, 0.99), 8);
        assert_eq!(percentile_us(&b, 1.0), 1024);
        assert_eq!(percentile_us(&[0; 24], 0.5), 0);
    }

    #[test]
    fn intervals_subtract_and_rates_divide() {
        let op = |count, ns| OpMetrics {
            opcode: 3,
            count,
            errors: 1,
            total_ns: ns,
            buckets: vec![count, 0, 0],
        };
        let call = |name: &str, count| gkfs_proto::msg::CallCount {
            call: name.into(),
            count,
        };
        let a = MetricsReply {
            uptime_ns: 1_000_000_000,
            ops: vec![op(10, 10_000)],
            bytes_written: 1_000_000,
            unsupported: vec![call("mknod", 2), call("xattr", 1)],
            ..Default::default()
        };
        let b = MetricsReply {
            uptime_ns: 3_000_000_000,
            ops: vec![op(30, 50_000)],
            bytes_written: 5_000_000,
            unsupported: vec![call("fcntl", 1), call("mknod", 5), call("xattr", 1)],
            ..Default::default()
        };
        let r = row(0, "n", &minus(&b, Some(&a)));
        let unsupported: Vec<(&str, u64)> = r
            .unsupported
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(unsupported, vec![("fcntl", 1), ("mknod", 3)]);
        assert_eq!((r.requests, r.seconds), (20, 2.0));
        assert_eq!((r.ops_per_s, r.write_mb_s), (10.0, 2.0));
        assert_eq!(r.ops[0].op, "Create");
        assert_eq!(
            (r.ops[0].count, r.ops[0].errors, r.ops[0].mean_us),
            (20, 0, 2.0)
        );
    }
}
