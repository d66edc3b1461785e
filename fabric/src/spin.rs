//! Waiting for a node-local socket to become readable: poll briefly, then block, for
//! as long as polling pays on that connection. Used by both ends of the node-local
//! channel (`gkfs_proto::local` is its format).

/// Longest poll of a waiting side before it blocks in `read` (`GKFS_LOCAL_SPIN_US`,
/// default 30; 0 = always block at once).
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

/// Threads of this process polling right now, and how many may.
static SPINNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn max_spinning() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus / 2).max(1)
    })
}

/// Adaptive polling before a blocking read, one per connection. A blocking read costs
/// two wake-ups per round trip (the kernel's wake-up path tops the profile of small
/// I/O); polling saves them when the other side answers within microseconds, and wastes
/// a core when it does not. So: poll for up to [`spin_time`] while that keeps paying (a
/// score rises by 1 when the data came during the poll and falls by 2 when not; at 0
/// the connection blocks at once and tries again every 64 waits), and let at most half
/// the cores of this process poll at once.
#[derive(Debug)]
pub struct Spinner {
    score: u8,
    waits: u32,
}

impl Default for Spinner {
    fn default() -> Self {
        Spinner::new()
    }
}

/// Highest score of a [`Spinner`], and the score a probe starts with.
const SCORE_MAX: u8 = 16;
const SCORE_PROBE: u8 = 4;

impl Spinner {
    /// A spinner that polls until it stops paying.
    pub fn new() -> Spinner {
        Spinner {
            score: SCORE_PROBE,
            waits: 0,
        }
    }

    /// Polls `s` (while that pays) until it is readable; the caller then reads.
    pub fn wait(&mut self, s: &std::os::unix::net::UnixStream) {
        use std::sync::atomic::Ordering;
        let max = spin_time();
        if max.is_zero() {
            return;
        }
        self.waits = self.waits.wrapping_add(1);
        if self.score == 0 {
            if !self.waits.is_multiple_of(64) {
                return;
            }
            self.score = SCORE_PROBE;
        }
        if SPINNING.fetch_add(1, Ordering::AcqRel) >= max_spinning() {
            SPINNING.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let hit = spin_until_readable(s, max);
        SPINNING.fetch_sub(1, Ordering::AcqRel);
        self.score = if hit {
            (self.score + 1).min(SCORE_MAX)
        } else {
            self.score.saturating_sub(2)
        };
    }
}

/// Polls `s` without blocking for up to `spin` until it has data, an error or the end
/// of the stream pending; true if that happened within `spin`.
pub fn spin_until_readable(s: &std::os::unix::net::UnixStream, spin: std::time::Duration) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    if spin.is_zero() {
        return false;
    }
    let end = std::time::Instant::now() + spin;
    let mut b = [0u8; 1];
    loop {
        match recv(
            s.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                if std::time::Instant::now() >= end {
                    return false;
                }
                std::hint::spin_loop();
            }
            _ => return true,
        }
    }
}
