//! When a waiting thread polls before it blocks: for a short time, while polling pays
//! ([`Score`]), and while a poll slot is free ([`SpinSlot`]). Shared by the libfabric
//! endpoint (its completion queues) and the node-local channel ([`crate::shm`]).
//! A blocked wait costs two wake-ups per round trip (the kernel's wake-up path tops the
//! profile of small I/O); polling saves them when the other side answers within
//! microseconds, and wastes a core when it does not.

/// Longest poll of a node-local channel's waiting side before it blocks
/// (`GKFS_LOCAL_SPIN_US`, default 30; 0 = always block at once).
pub fn spin_time() -> std::time::Duration {
    static SPIN: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::time::Duration::from_micros(
            std::env::var("GKFS_LOCAL_SPIN_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_SPIN_US),
        )
    })
}

/// Default of `GKFS_LOCAL_SPIN_US`.
const DEFAULT_SPIN_US: u64 = 30;

/// Threads of this process polling right now (local sockets and libfabric queues), and
/// how many may.
static SPINNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Leave to poll: held while a thread polls, at most half the cores of the process at
/// once (a poller must not take the core the other side, or a handler of this
/// process, needs to answer).
pub struct SpinSlot(());

impl SpinSlot {
    /// A slot, if one is free.
    pub fn take() -> Option<SpinSlot> {
        use std::sync::atomic::Ordering;
        if SPINNING.fetch_add(1, Ordering::AcqRel) >= busy_max() {
            SPINNING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SpinSlot(()))
    }
}

impl Drop for SpinSlot {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Highest score of a [`Score`], and the score a probe starts with.
const SCORE_MAX: u8 = 16;
const SCORE_PROBE: u8 = 4;

/// Whether polling pays, learnt from the last waits: a score rises by 1 when the event
/// came during the poll and falls by 2 when not; at 0 the waiter blocks at once and
/// tries polling again every 64 waits. Lock-free: shared by the threads of one queue.
#[derive(Debug)]
pub struct Score {
    score: std::sync::atomic::AtomicU32,
    waits: std::sync::atomic::AtomicU32,
}

impl Default for Score {
    fn default() -> Self {
        Score {
            score: std::sync::atomic::AtomicU32::new(u32::from(SCORE_PROBE)),
            waits: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

impl Score {
    /// Should this wait poll first?
    pub fn worth_polling(&self) -> bool {
        use std::sync::atomic::Ordering;
        let w = self.waits.fetch_add(1, Ordering::Relaxed);
        if self.score.load(Ordering::Relaxed) > 0 {
            return true;
        }
        if w.is_multiple_of(64) {
            self.score.store(u32::from(SCORE_PROBE), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The poll caught the event (`hit`) or ran out.
    pub fn record(&self, hit: bool) {
        use std::sync::atomic::Ordering;
        let s = self.score.load(Ordering::Relaxed);
        let next = if hit {
            (s + 1).min(u32::from(SCORE_MAX))
        } else {
            s.saturating_sub(2)
        };
        self.score.store(next, Ordering::Relaxed);
    }
}

/// Reads the settings now (the core count costs a dozen system calls, the cgroup's CPU
/// quota included): at connection set-up, not in the middle of some later wait.
pub fn init() {
    spin_time();
    busy_max();
}

/// Threads of this process that should keep a core busy at once, polling or serving
/// short requests: half the cores (a busy thread must not take the core the other
/// side, or another process of the node, needs), at least one.
pub fn busy_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus / 2).max(1)
    })
}
