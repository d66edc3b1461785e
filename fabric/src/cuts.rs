//! Cut counters: how a node-local process learns, with one load from shared memory,
//! that nothing it holds on to may have been taken away since it last looked.
//!
//! A process reading and writing its node's chunk files itself keeps them open, and
//! remembers how large the files it writes are known to be (so a write inside a file
//! needs no size update). Both go stale only when the daemon takes something away: it
//! removes a chunk file (a truncate, a remove), or it cuts or replaces a file's record
//! (a truncate, a remove, a rename over it, a change of links). The daemon keeps one
//! counter for each kind ([`Cut`]) in a small file beside its chunks that its clients
//! map read-only, and bumps it when such a change starts and again when it has ended
//! ([`Cuts::cutting`]). A process that read a counter before it checked what it holds
//! may trust it for as long as the counter reads the same: a change that ended before
//! any later operation began has moved it (its second bump), and one still running is
//! concurrent with that operation, which may then see either side of it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Chunk files removed (a process keeping one open must look again).
    Chunks = 0,
    /// File records cut or replaced (a size a process knows may be too large now).
    Sizes = 1,
}

/// Bytes of the counters file (one page; the counters at its start).
const LEN: usize = 4096;
/// First word of the file ("GKCUTS01").
const MAGIC: u64 = u64::from_le_bytes(*b"GKCUTS01");

/// A daemon's cut counters, mapped (writable in the daemon, read-only in its clients).
pub struct Cuts {
    ptr: NonNull<u8>,
    writable: bool,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Cuts {}
// SAFETY: as above.
unsafe impl Sync for Cuts {}

impl std::fmt::Debug for Cuts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuts")
            .field("chunks", &self.now(Cut::Chunks))
            .field("sizes", &self.now(Cut::Sizes))
            .finish()
    }
}

impl Cuts {
    /// The daemon's side: maps `path` (made if missing) writable. A file left by an
    /// earlier daemon is taken over and both counters are bumped, so its clients'
    /// knowledge counts as stale.
    pub fn create(path: &Path) -> io::Result<Cuts> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if f.metadata()?.len() < LEN as u64 {
            f.set_len(LEN as u64)?;
        }
        let c = Cuts::map(&f, true)?;
        c.word(2).store(MAGIC, Ordering::Release);
        for cut in [Cut::Chunks, Cut::Sizes] {
            c.word(cut as usize).fetch_add(2, Ordering::SeqCst);
        }
        Ok(c)
    }

    /// A client's side: maps the daemon's counters at `path` read-only.
    pub fn open(path: &Path) -> io::Result<Cuts> {
        let f = File::open(path)?;
        if f.metadata()?.len() < LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a gkfs cut counters file", path.display()),
            ));
        }
        let c = Cuts::map(&f, false)?;
        if c.word(2).load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a gkfs cut counters file", path.display()),
            ));
        }
        Ok(c)
    }

    fn map(f: &File, writable: bool) -> io::Result<Cuts> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        let len = std::num::NonZeroUsize::new(LEN).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of a file at least LEN bytes long (checked by
        // the callers), owned by the Cuts from here.
        let p = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, f.as_fd(), 0)? };
        Ok(Cuts {
            ptr: p.cast(),
            writable,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < 3);
        // SAFETY: inside the mapping (LEN bytes, page aligned, so 8-byte aligned), any
        // bit pattern is a valid AtomicU64, and it lives as long as &self.
        unsafe { &*self.ptr.as_ptr().add(8 * i).cast::<AtomicU64>() }
    }

    /// Counter `cut` now.
    pub fn now(&self, cut: Cut) -> u64 {
        self.word(cut as usize).load(Ordering::SeqCst)
    }

    /// Bumps counter `cut` now and again when the guard is dropped: hold it while the
    /// change is made (the daemon's side; a no-op on a read-only mapping).
    pub fn cutting(&self, cut: Cut) -> Cutting<'_> {
        self.bump(cut);
        Cutting(self, cut)
    }

    fn bump(&self, cut: Cut) {
        if self.writable {
            self.word(cut as usize).fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Cuts {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`; every borrow of it borrows self.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), LEN) };
    }
}

/// A change in progress ([`Cuts::cutting`]): bumps its counter again when dropped.
#[must_use = "the counter is bumped again when the change has been made"]
pub struct Cutting<'a>(&'a Cuts, Cut);

impl Drop for Cutting<'_> {
    fn drop(&mut self) {
        self.0.bump(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> std::path::PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        std::env::temp_dir().join(format!(
            "gkfs-cuts-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn a_change_moves_its_counter_when_it_starts_and_when_it_ends() {
        let p = scratch();
        let daemon = Cuts::create(&p).unwrap();
        let client = Cuts::open(&p).unwrap();
        let (c0, s0) = (client.now(Cut::Chunks), client.now(Cut::Sizes));
        {
            let _g = daemon.cutting(Cut::Chunks);
            assert_eq!(client.now(Cut::Chunks), c0 + 1, "seen while it runs");
        }
        assert_eq!(client.now(Cut::Chunks), c0 + 2, "and after it ended");
        assert_eq!(client.now(Cut::Sizes), s0, "the other counter stays");
        // The client's mapping is read-only: its guard changes nothing.
        drop(client.cutting(Cut::Sizes));
        assert_eq!(client.now(Cut::Sizes), s0);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_daemon_taking_over_the_file_makes_what_clients_knew_stale() {
        let p = scratch();
        let first = Cuts::create(&p).unwrap();
        let client = Cuts::open(&p).unwrap();
        let before = client.now(Cut::Sizes);
        drop(first);
        let _second = Cuts::create(&p).unwrap();
        assert_ne!(client.now(Cut::Sizes), before);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_counters_file_is_refused() {
        let p = scratch();
        std::fs::write(&p, vec![0u8; LEN]).unwrap();
        assert!(Cuts::open(&p).is_err());
        std::fs::write(&p, b"short").unwrap();
        assert!(Cuts::open(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
