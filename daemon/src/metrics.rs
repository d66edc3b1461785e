//! Request counters: per request type, how many, how many answered with an error, the
//! time spent and a latency histogram; per errno, how often it was answered. Updated
//! by every worker after each request (relaxed atomic adds, no lock), read by the
//! Metrics RPC (`gkfs-run stats`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::Mutex;

use gkfs_proto::msg::{CallCount, ErrnoCount, MetricsReply, OpMetrics, LATENCY_BUCKETS};

/// Opcodes counted (higher ones, unknown to this daemon, are not).
const OPCODES: usize = 64;
/// Errnos counted (Linux's are below 134).
const ERRNOS: usize = 256;
/// Names of unsupported calls kept (the preload library reports a handful), and their
/// longest name: a client cannot make the daemon hold more.
const UNSUPPORTED_NAMES: usize = 64;
const UNSUPPORTED_NAME_LEN: usize = 32;

struct Op {
    count: AtomicU64,
    errors: AtomicU64,
    total_ns: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

/// The counters of one daemon.
pub struct Metrics {
    start: Instant,
    ops: Vec<Op>,
    errnos: Vec<AtomicU64>,
    /// Unsupported calls reported by preloaded processes at exit (off the request path:
    /// one report per process that made such calls).
    unsupported: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            start: Instant::now(),
            ops: (0..OPCODES)
                .map(|_| Op {
                    count: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    total_ns: AtomicU64::new(0),
                    buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
                })
                .collect(),
            errnos: (0..ERRNOS).map(|_| AtomicU64::new(0)).collect(),
            unsupported: Mutex::default(),
        }
    }
}

/// The histogram bucket of a latency (see [`LATENCY_BUCKETS`]).
pub fn bucket(d: Duration) -> usize {
    let us = d.as_micros() as u64;
    let b = if us == 0 {
        0
    } else {
        (u64::BITS - us.leading_zeros()) as usize
    };
    b.min(LATENCY_BUCKETS - 1)
}

impl Metrics {
    /// Counts one request of `opcode`, answered with `status` (0 or an errno) after
    /// `took`.
    pub fn record(&self, opcode: u16, status: i32, took: Duration) {
        if let Some(op) = self.ops.get(opcode as usize) {
            op.count.fetch_add(1, Ordering::Relaxed);
            op.total_ns
                .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
            op.buckets[bucket(took)].fetch_add(1, Ordering::Relaxed);
            if status != 0 {
                op.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if status != 0 {
            if let Some(e) = usize::try_from(status)
                .ok()
                .and_then(|s| self.errnos.get(s))
            {
                e.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds a process's report of unsupported calls.
    pub fn add_unsupported(&self, calls: &[CallCount]) {
        let mut m = self.unsupported.lock().unwrap_or_else(|e| e.into_inner());
        for c in calls {
            let name: String = c.call.chars().take(UNSUPPORTED_NAME_LEN).collect();
            if m.len() >= UNSUPPORTED_NAMES && !m.contains_key(&name) {
                continue;
            }
            let n = m.entry(name).or_default();
            *n = n.saturating_add(c.count);
        }
    }

    /// Requests served since start (all types).
    pub fn requests(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| op.count.load(Ordering::Relaxed))
            .sum()
    }

    /// The counters as they are now (request types and errnos seen at least once).
    pub fn snapshot(&self) -> MetricsReply {
        let ops = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.count.load(Ordering::Relaxed) > 0)
            .map(|(i, op)| OpMetrics {
                opcode: i as u16,
                count: op.count.load(Ordering::Relaxed),
                errors: op.errors.load(Ordering::Relaxed),
                total_ns: op.total_ns.load(Ordering::Relaxed),
                buckets: op
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect(),
            })
            .collect();
        let errors = self
            .errnos
            .iter()
            .enumerate()
            .filter(|(_, c)| c.load(Ordering::Relaxed) > 0)
            .map(|(i, c)| ErrnoCount {
                errno: i as i32,
                count: c.load(Ordering::Relaxed),
            })
            .collect();
        let unsupported = self
            .unsupported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(call, &count)| CallCount {
                call: call.clone(),
                count,
            })
            .collect();
        MetricsReply {
            uptime_ns: self.start.elapsed().as_nanos() as u64,
            ops,
            errors,
            unsupported,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        let us = Duration::from_micros;
        assert_eq!(bucket(Duration::from_nanos(999)), 0);
        assert_eq!(bucket(us(1)), 1);
        assert_eq!(bucket(us(2)), 2);
        assert_eq!(bucket(us(3)), 2);
        assert_eq!(bucket(us(4)), 3);
        assert_eq!(bucket(us(1023)), 10);
        assert_eq!(bucket(us(1024)), 11);
        assert_eq!(bucket(Duration::from_secs(3600)), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn counts_add_up() {
        let m = Metrics::default();
        for i in 0..10 {
            m.record(4, if i % 5 == 0 { 2 } else { 0 }, Duration::from_micros(i));
        }
        m.record(3, 17, Duration::from_millis(2));
        m.record(999, 5, Duration::ZERO);
        let s = m.snapshot();
        assert_eq!(s.ops.len(), 2);
        let stat = s.ops.iter().find(|o| o.opcode == 4).unwrap();
        assert_eq!((stat.count, stat.errors), (10, 2));
        assert_eq!(stat.buckets.iter().sum::<u64>(), 10);
        assert_eq!(stat.total_ns, 45_000);
        let errs: Vec<(i32, u64)> = s.errors.iter().map(|e| (e.errno, e.count)).collect();
        assert_eq!(errs, vec![(2, 2), (5, 1), (17, 1)]);
    }

    #[test]
    fn unsupported_reports_add_up_and_are_bounded() {
        let m = Metrics::default();
        let call = |name: &str, count| CallCount {
            call: name.into(),
            count,
        };
        m.add_unsupported(&[call("mknod", 2), call("xattr", 1)]);
        m.add_unsupported(&[call("mknod", 3), call("fcntl", u64::MAX)]);
        m.add_unsupported(&[call("fcntl", 1)]);
        let got: Vec<(String, u64)> = m
            .snapshot()
            .unsupported
            .into_iter()
            .map(|c| (c.call, c.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("fcntl".into(), u64::MAX),
                ("mknod".into(), 5),
                ("xattr".into(), 1)
            ]
        );
        let many: Vec<CallCount> = (0..200)
            .map(|i| call(&format!("call{i}-{}", "y".repeat(40)), 1))
            .collect();
        m.add_unsupported(&many);
        let s = m.snapshot().unsupported;
        assert_eq!(s.len(), UNSUPPORTED_NAMES);
        assert!(s.iter().all(|c| c.call.len() <= UNSUPPORTED_NAME_LEN));
    }
}
