//! The opt-in Prometheus endpoint (`gkfsd --metrics [ADDR:]PORT`): `GET /metrics`
//! answers the daemon's counters (the same as the Metrics RPC) in the Prometheus text
//! format. One thread of its own serves it; scrapes read the counters and never touch
//! the request path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use gkfs_proto::msg::{MetricsReply, Opcode, LATENCY_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::state::State;

/// The running endpoint.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub address: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and serves scrapes of `state` until [`MetricsServer::stop`].
    pub fn start(addr: SocketAddr, state: Arc<State>) -> Result<MetricsServer> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot listen on {addr} for --metrics"))?;
        let address = server
            .server_addr()
            .to_ip()
            .context("the metrics endpoint has no IP address")?;
        let server = Arc::new(server);
        let thread = {
            let server = server.clone();
            std::thread::Builder::new()
                .name("gkfsd-metrics".into())
                .spawn(move || serve(&server, &state))
                .context("cannot start the metrics thread")?
        };
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            address,
        })
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, state: &State) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let response = if *req.method() != tiny_http::Method::Get {
            tiny_http::Response::from_string("only GET /metrics\n").with_status_code(405)
        } else if path != "/metrics" {
            tiny_http::Response::from_string("gkfsd serves GET /metrics\n").with_status_code(404)
        } else {
            match crate::handlers::mgmt::metrics(state).map(|m| encode(&m)) {
                Ok(Ok(text)) => tiny_http::Response::from_string(text).with_header(
                    tiny_http::Header::from_bytes(
                        "Content-Type",
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )
                    .expect("a valid header"),
                ),
                _ => tiny_http::Response::from_string("cannot encode the metrics\n")
                    .with_status_code(500),
            }
        };
        if let Err(e) = req.respond(response) {
            log::debug!("metrics scrape: {e}");
        }
    }
}

/// One sample of the counters, encoded on a scrape.
#[derive(Debug)]
struct Sample(MetricsReply);

/// `ENOENT` for 2 (the number for errnos nix does not name).
fn errno_name(e: i32) -> String {
    match nix::errno::Errno::from_raw(e) {
        nix::errno::Errno::UnknownErrno => format!("errno{e}"),
        known => format!("{known:?}"),
    }
}

/// The upper bound of latency bucket `i`, in seconds ([`LATENCY_BUCKETS`]: bucket 0
/// counts requests under 1 µs, bucket i those under 2^i µs); the last is +Inf.
fn bucket_bound(i: usize) -> f64 {
    if i + 1 >= LATENCY_BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << i) as f64 * 1e-6
    }
}

/// A counter family with one label: `name{key="value"} count` for each item.
fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    items: impl Iterator<Item = (String, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in items {
        ConstCounter::new(count).encode(family.encode_family(&[(key, value.as_str())])?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(enc.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for Sample {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        single(
            &mut enc,
            "gkfs_uptime",
            "Time since the daemon started.",
            Some(&Unit::Seconds),
            ConstGauge::new(m.uptime_ns as f64 / 1e9),
        )?;
        counter_family(
            &mut enc,
            "gkfs_requests",
            "Requests served, by type.",
            "op",
            m.ops.iter().map(|o| (Opcode::name_of(o.opcode), o.count)),
        )?;
        counter_family(
            &mut enc,
            "gkfs_request_errors",
            "Requests answered with an error, by type.",
            "op",
            m.ops.iter().map(|o| (Opcode::name_of(o.opcode), o.errors)),
        )?;
        {
            let mut family = enc.encode_descriptor(
                "gkfs_request_duration",
                "Service time of requests, by type.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for o in &m.ops {
                let labels = [("op", Opcode::name_of(o.opcode))];
                // Per-bucket counts: the encoder writes them cumulative.
                let buckets: Vec<(f64, u64)> = o
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (bucket_bound(i), n))
                    .collect();
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        o.total_ns as f64 / 1e9,
                        o.count,
                        &buckets,
                        None,
                    )?;
            }
        }
        counter_family(
            &mut enc,
            "gkfs_errors",
            "Replies with an error, by errno.",
            "errno",
            m.errors.iter().map(|e| (errno_name(e.errno), e.count)),
        )?;
        single(
            &mut enc,
            "gkfs_read",
            "Data read by clients.",
            Some(&Unit::Bytes),
            ConstCounter::new(m.bytes_read),
        )?;
        single(
            &mut enc,
            "gkfs_written",
            "Data written by clients.",
            Some(&Unit::Bytes),
            ConstCounter::new(m.bytes_written),
        )?;
        single(
            &mut enc,
            "gkfs_records",
            "Metadata records stored.",
            None,
            ConstGauge::new(m.records as f64),
        )?;
        single(
            &mut enc,
            "gkfs_chunks",
            "Chunk files stored.",
            None,
            ConstGauge::new(m.chunks as f64),
        )?;
        single(
            &mut enc,
            "gkfs_chunk",
            "Data in chunk files.",
            Some(&Unit::Bytes),
            ConstGauge::new(m.chunk_bytes as f64),
        )?;
        single(
            &mut enc,
            "gkfs_metadata",
            "Size of the metadata database (RocksDB files and memtables).",
            Some(&Unit::Bytes),
            ConstGauge::new(m.meta_bytes as f64),
        )?;
        {
            let mut family = enc.encode_descriptor(
                "gkfs_connections",
                "Clients connected, by carrier (fabric: libfabric peers known).",
                None,
                MetricType::Gauge,
            )?;
            for (carrier, n) in [("local", m.local_connections), ("fabric", m.fabric_peers)] {
                ConstGauge::new(n as f64).encode(family.encode_family(&[("carrier", carrier)])?)?;
            }
        }
        counter_family(
            &mut enc,
            "gkfs_unsupported_calls",
            "Unsupported calls the preload library saw, as reported at process exit.",
            "call",
            m.unsupported.iter().map(|c| (c.call.clone(), c.count)),
        )?;
        Ok(())
    }
}

/// The counters in the Prometheus text format (version 0.0.4).
pub fn encode(m: &MetricsReply) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Sample(m.clone())));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gkfs_proto::msg::{CallCount, ErrnoCount, OpMetrics};

    #[test]
    fn text_has_every_family_and_cumulative_buckets() {
        let mut buckets = vec![0u64; LATENCY_BUCKETS];
        buckets[0] = 2;
        buckets[3] = 5;
        buckets[LATENCY_BUCKETS - 1] = 1;
        let m = MetricsReply {
            uptime_ns: 2_500_000_000,
            ops: vec![OpMetrics {
                opcode: Opcode::Create as u16,
                count: 8,
                errors: 1,
                total_ns: 3_000,
                buckets,
            }],
            errors: vec![ErrnoCount {
                errno: libc::EEXIST,
                count: 1,
            }],
            bytes_written: 4096,
            local_connections: 2,
            unsupported: vec![CallCount {
                call: "mknod".into(),
                count: 3,
            }],
            ..Default::default()
        };
        let t = encode(&m).unwrap();
        for line in [
            "gkfs_uptime_seconds 2.5",
            "gkfs_requests_total{op=\"Create\"} 8",
            "gkfs_request_errors_total{op=\"Create\"} 1",
            "gkfs_request_duration_seconds_bucket{op=\"Create\",le=\"1e-06\"} 2",
            "gkfs_request_duration_seconds_bucket{op=\"Create\",le=\"4e-06\"} 2",
            "gkfs_request_duration_seconds_bucket{op=\"Create\",le=\"8e-06\"} 7",
            "gkfs_request_duration_seconds_bucket{op=\"Create\",le=\"4.194304\"} 7",
            "gkfs_request_duration_seconds_bucket{op=\"Create\",le=\"+Inf\"} 8",
            "gkfs_request_duration_seconds_count{op=\"Create\"} 8",
            "gkfs_errors_total{errno=\"EEXIST\"} 1",
            "gkfs_written_bytes_total 4096",
            "gkfs_connections{carrier=\"local\"} 2",
            "gkfs_unsupported_calls_total{call=\"mknod\"} 3",
        ] {
            assert!(
                t.lines()
                    .any(|l| l == line || l.strip_suffix(".0") == Some(line)),
                "missing `{line}` in\n{t}"
            );
        }
    }
}
