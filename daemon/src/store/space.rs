//! Headroom on the daemon's storage. Burst buffers run full routinely; when they do,
//! writes must fail with ENOSPC while removals, truncations, stats, listings and reads
//! keep working, and the daemon must recover by itself once space is freed. RocksDB
//! cannot promise that on a disk filled to the last block: a flush that hits ENOSPC
//! puts the database into a hard error that only clears when the free space exceeds
//! its write buffer. So the daemon keeps a reserve: data writes stop while the free
//! space is below it, creates stop at half of it, and the rest is always there for the
//! metadata changes that free space.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How long a measured free-space figure is trusted.
const FRESH_NS: u64 = 100_000_000;

/// Between measurements, at most this fraction of the margin above the reserve is
/// admitted: other writers on the same file system (another daemon, RocksDB, other
/// programs) consume space this daemon does not count, so it measures again long
/// before the margin could be gone.
const MARGIN_SHARE: u64 = 16;

/// Bytes a new metadata record may need on disk (with its share of RocksDB's flushes).
pub const RECORD_BYTES: u64 = 4096;

/// Free space of one file system, measured now and then.
pub struct Space {
    path: PathBuf,
    /// Data writes keep this many bytes free.
    reserve: u64,
    /// Free bytes (to unprivileged users) at the last measurement.
    free: AtomicU64,
    /// Bytes admitted since then.
    admitted: AtomicU64,
    /// When the last measurement was made (ns since `epoch`).
    measured_ns: AtomicU64,
    epoch: Instant,
}

pub use gkfs_fabric::chunk_file::usage;

impl Space {
    /// Watches the file system of `path`, keeping `reserve` bytes free for metadata.
    pub fn new(path: &Path, reserve: u64) -> io::Result<Space> {
        let (_, free) = usage(path)?;
        let epoch = Instant::now();
        Ok(Space {
            path: path.to_path_buf(),
            reserve,
            free: AtomicU64::new(free),
            admitted: AtomicU64::new(0),
            measured_ns: AtomicU64::new(0),
            epoch,
        })
    }

    /// The reserve, in bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn measure(&self) -> u64 {
        // A failed statvfs admits nothing new: the write itself then tells.
        let free = usage(&self.path).map(|(_, f)| f).unwrap_or(0);
        self.free.store(free, Ordering::Relaxed);
        self.admitted.store(0, Ordering::Relaxed);
        self.measured_ns.store(self.now_ns(), Ordering::Relaxed);
        free
    }

    /// May `len` more bytes be taken while `keep` bytes stay free? Answers without a
    /// system call while the last measurement is fresh and what was admitted since is
    /// a small share of the margin; else measures.
    fn admit(&self, len: u64, keep: u64) -> bool {
        let fresh = self.now_ns() - self.measured_ns.load(Ordering::Relaxed) < FRESH_NS;
        let margin = self.free.load(Ordering::Relaxed).saturating_sub(keep);
        let taken = self.admitted.load(Ordering::Relaxed);
        let ok = if fresh && taken.saturating_add(len) <= margin / MARGIN_SHARE {
            true
        } else {
            self.measure() >= keep.saturating_add(len)
        };
        if ok {
            self.admitted.fetch_add(len, Ordering::Relaxed);
        }
        ok
    }

    /// Admits a data write that may allocate `len` bytes; ENOSPC while the free space
    /// (after it) would be below the reserve.
    pub fn admit_data(&self, len: u64) -> io::Result<()> {
        if self.admit(len, self.reserve) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    /// Could `len` more bytes be taken while the reserve stays free? Measures now and
    /// admits nothing (for a quick refusal of a request far too large to try).
    pub fn could_hold(&self, len: u64) -> bool {
        self.measure() >= self.reserve.saturating_add(len)
    }

    /// Admits a new metadata record; ENOSPC once less than half the reserve is free.
    pub fn admit_record(&self) -> io::Result<()> {
        if self.admit(RECORD_BYTES, self.reserve / 2) {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_until_the_reserve_and_counts_down_in_between() {
        let d = tempfile::tempdir().unwrap();
        let (_, free) = usage(d.path()).unwrap();
        assert!(free > 1 << 20, "the test needs 1 MiB free");
        // A reserve above the free space: nothing is admitted, not even a record.
        let full = Space::new(d.path(), free + (64 << 20)).unwrap();
        assert!(full.admit_data(1).is_err());
        assert_eq!(
            full.admit_data(1).unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        // A reserve of half the free space: a quarter more may be taken, all of it not.
        let s = Space::new(d.path(), free / 2).unwrap();
        assert!(s.admit_data(free / 4).is_ok());
        assert!(s.admit_record().is_ok());
        assert!(s.admit_data(free).is_err());
        // Small writes are admitted from the last measurement, big ones measure again.
        let before = s.measured_ns.load(Ordering::Relaxed);
        assert!(s.admit_data(1).is_ok());
        assert_eq!(s.measured_ns.load(Ordering::Relaxed), before);
    }
}
