//! How many daemons `start --local` may start on this machine: checked before anything
//! is created, so that `--local 500` fails at once with the reason instead of spawning
//! until the machine runs out of memory.
//!
//! Two bounds, the lower one wins:
//! - memory: half of `MemAvailable` (/proc/meminfo; the other half stays for the job
//!   itself) divided by [`DAEMON_MEMORY`], what one daemon needs;
//! - cores: [`DAEMONS_PER_CORE`] per core (`available_parallelism`, which honours CPU
//!   affinity and cgroup quotas): each daemon runs `--threads` workers, and beyond a few
//!   daemons per core start-up and every request are context switches.

use anyhow::{bail, Result};

/// Memory one daemon needs, in bytes. Measured on the project's VM (Debian 12, tcp;ofi_rxm):
/// a freshly started gkfsd has an RSS of ~92 MiB (most of it libfabric and its
/// providers) and ~126 MiB after a million creates; rounded up.
pub const DAEMON_MEMORY: u64 = 128 << 20;

/// Daemons per core.
pub const DAEMONS_PER_CORE: usize = 4;

/// The ceiling and what it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    /// At most this many daemons.
    pub max: usize,
    /// `MemAvailable` in bytes, if /proc/meminfo said.
    pub mem_available: Option<u64>,
    /// The bound from memory, if known.
    pub by_memory: Option<usize>,
    /// Cores available to this process.
    pub cores: usize,
    /// The bound from cores.
    pub by_cores: usize,
}

impl Ceiling {
    /// The ceiling of this machine, now.
    pub fn here() -> Ceiling {
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| mem_available(&t));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ceiling::from(mem, cores)
    }

    /// The ceiling for `mem_available` bytes of free memory and `cores` cores.
    pub fn from(mem_available: Option<u64>, cores: usize) -> Ceiling {
        let by_memory = mem_available.map(|m| ((m / 2) / DAEMON_MEMORY) as usize);
        let by_cores = cores.max(1) * DAEMONS_PER_CORE;
        let max = by_memory.map_or(by_cores, |m| m.min(by_cores)).max(1);
        Ceiling {
            max,
            mem_available,
            by_memory,
            cores,
            by_cores,
        }
    }

    /// Fails, naming the ceiling and why, when `n` daemons are more than it.
    pub fn check(&self, n: usize) -> Result<()> {
        if n <= self.max {
            return Ok(());
        }
        let mib = |b: u64| b >> 20;
        let memory = match (self.mem_available, self.by_memory) {
            (Some(m), Some(b)) => format!(
                "half of MemAvailable ({} MiB) at {} MiB per daemon allows {b}",
                mib(m),
                mib(DAEMON_MEMORY)
            ),
            _ => "the memory bound is unknown (no MemAvailable in /proc/meminfo)".to_string(),
        };
        bail!(
            "--local {n}: this machine can run at most {max} daemons: {DAEMONS_PER_CORE} per core on {} cores allow {}; {memory}. \
             Start at most {max}; on a cluster, `gkfs-run start` in a Slurm allocation runs one per node",
            self.cores,
            self.by_cores,
            max = self.max,
        )
    }
}

/// `MemAvailable` of /proc/meminfo's text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let mut f = rest.split_whitespace();
        let v: u64 = f.next()?.parse().ok()?;
        match f.next() {
            Some("kB") | None => v.checked_mul(1024),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_or_cores_whichever_is_lower() {
        // 21 GiB free, 2 cores: cores bound.
        let c = Ceiling::from(Some(21 << 30), 2);
        assert_eq!((c.max, c.by_cores, c.by_memory), (8, 8, Some(84)));
        // 1 GiB free, 64 cores: memory bound (512 MiB / 128 MiB).
        let c = Ceiling::from(Some(1 << 30), 64);
        assert_eq!((c.max, c.by_memory), (4, Some(4)));
        // Almost nothing free: still one daemon may try.
        assert_eq!(Ceiling::from(Some(10 << 20), 2).max, 1);
        // No /proc/meminfo: cores only.
        assert_eq!(Ceiling::from(None, 3).max, 12);
    }

    #[test]
    fn the_message_names_the_ceiling_and_why() {
        let c = Ceiling::from(Some(1 << 30), 64);
        assert!(c.check(4).is_ok());
        let e = c.check(500).unwrap_err().to_string();
        assert!(e.contains("--local 500"), "{e}");
        assert!(e.contains("at most 4 daemons:"), "{e}");
        assert!(
            e.contains("half of MemAvailable (1024 MiB) at 128 MiB per daemon allows 4"),
            "{e}"
        );
        assert!(e.contains("4 per core on 64 cores allow 256"), "{e}");
        let e = Ceiling::from(None, 1).check(5).unwrap_err().to_string();
        assert!(e.contains("the memory bound is unknown"), "{e}");
    }

    #[test]
    fn reads_meminfo() {
        let t = "MemTotal:       24570368 kB\nMemFree:        21000000 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(mem_available(t), Some(22_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }
}
