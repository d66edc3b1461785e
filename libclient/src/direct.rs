//! Reading and writing a node-local daemon's chunks straight in its chunk files.
//!
//! A daemon on this node keeps chunk `k` of file `id` in the file
//! `<its chunk dir>/<gkfs_proto::chunk::chunk_file(id, k)>`, and tells the chunk dir
//! over its node-local socket ([`ChunkDirReq`]). Asking the daemon to read costs a
//! request, the daemon's pread into the shared window and this process's copy out of
//! it, with the bytes written by one core and read by the other; reading the chunk
//! file here costs one pread, as on a local file system. The same holds for writes
//! (`bulk.rs` writes every node-local share here when it can); the size update goes
//! to the file's metadata owner after the bytes are in place, as it does after the
//! daemon wrote them, unless that owner already said the file holds the range
//! ([`ChunkDir::size_known`]). A write here first checks that the chunk dir's file
//! system keeps the daemon's reserve free ([`ChunkDir::room`]; else the daemon writes,
//! and says ENOSPC when it must). Between two measurements of the free space a process
//! writes at most a [`MARGIN_SHARE`]th of the margin above the reserve, so processes
//! writing at the same moment do not take the reserve between them.
//!
//! Why what is read here is what the daemon would have read, and what is written here
//! lands where the daemon reads:
//! - The daemon changes a chunk's bytes only in place (a write, the cut of the
//!   boundary chunk) or removes the chunk file; it never puts another file in its place
//!   (`daemon/src/store/chunks.rs`), and it moves its [`Cut::Chunks`] counter when a
//!   removal starts and when it has ended ([`gkfs_fabric::cuts`]). A chunk file kept
//!   open here is used as it is while that counter reads what it read before the file
//!   was last found linked; when it moved, the file is checked (one fstat): once it has
//!   no links left it was removed, and the path is opened again (a missing file is a
//!   hole, or made for a write). A truncate or remove that finished before a read or
//!   write started has therefore always taken effect.
//! - A write inside what the file is known to hold needs no size update: the file's
//!   metadata owner, when it is a daemon on this node, said how large the file is, and
//!   its [`Cut::Sizes`] counter has not moved since ([`ChunkDir::size_known`]).
//! - The chunk dir is used only if its device and inode are the ones the daemon
//!   reported (another mount namespace could show another directory at that path).
//! - Any other failure (no permission, no descriptors left) leaves the read to the
//!   daemon, as before.
//!
//! A chunk file kept open here keeps its space after it is removed. So they are closed
//! when the program closes its last descriptor of the file in this process
//! ([`crate::Client::release_kept`]: the preload library and the FUSE mount call it),
//! and before this process cuts or removes the file's chunks itself; at most
//! `kept_max` stay open in all.
//!
//! The bytes read and written here are added to the daemon's counters through a
//! connection's control block ([`gkfs_fabric::shm::Channel::count_elsewhere`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use gkfs_fabric::cuts::{Cut, Cuts};
use gkfs_proto::msg::ChunkDirReply;

/// Chunk files kept open at most, whatever the descriptor limit.
const KEPT_MAX: u64 = 256;
/// Chunk files kept open at least.
const KEPT_MIN: u64 = 16;

/// Between two measurements of the free space, a process writes at most this fraction
/// of the margin above the daemon's reserve here (as the daemon itself admits writes).
const MARGIN_SHARE: u64 = 64;
/// ... and at most this many bytes.
const ALLOWANCE_MAX: u64 = 64 << 20;
/// Sizes known at most (all are forgotten when more are learnt).
const KNOWN_MAX: usize = 1024;

/// What the embedding program does with each chunk file this API keeps open.
static OWN_KEPT: OnceLock<fn(File) -> File> = OnceLock::new();

/// Sets what is done with each chunk file this API keeps open, just after it is opened
/// (once per process; later calls are ignored): the preload library moves them out of
/// the program's way, as its other descriptors.
pub fn set_own_kept(f: fn(File) -> File) {
    let _ = OWN_KEPT.set(f);
}

/// A chunk file kept open, and who it was when opened.
struct Kept {
    file: File,
    ino: u64,
    /// The [`Cut::Chunks`] counter read before the file was last found linked.
    checked: AtomicU64,
}

/// What a file's metadata owner (a daemon on this node) last said of its size.
struct Known {
    /// The path the size update went to.
    path: String,
    /// The size then (at least).
    size: u64,
    /// The owner's [`Cut::Sizes`] counter read before the update was sent.
    cuts: u64,
    /// The modification time the update carried.
    mtime: i64,
}

/// The chunk files kept open, by file (a program's close of a file releases its own at
/// once, [`ChunkDir::release`]) and chunk.
#[derive(Default)]
struct KeptFiles {
    files: HashMap<u64, HashMap<u64, Arc<Kept>>>,
    /// Chunk files in `files`.
    count: usize,
}

impl KeptFiles {
    fn get(&self, id: u64, chunk: u64) -> Option<Arc<Kept>> {
        self.files.get(&id)?.get(&chunk).cloned()
    }

    fn remove(&mut self, id: u64, chunk: u64) -> Option<Arc<Kept>> {
        let chunks = self.files.get_mut(&id)?;
        let k = chunks.remove(&chunk)?;
        if chunks.is_empty() {
            self.files.remove(&id);
        }
        self.count -= 1;
        Some(k)
    }

    /// Keeps `k`, closing all kept first if `max` are open.
    fn insert(&mut self, id: u64, chunk: u64, k: Arc<Kept>, max: usize) {
        if self.count >= max {
            *self = KeptFiles::default();
        }
        if self.files.entry(id).or_default().insert(chunk, k).is_none() {
            self.count += 1;
        }
    }

    fn release(&mut self, id: u64) {
        if let Some(chunks) = self.files.remove(&id) {
            self.count -= chunks.len();
        }
    }
}

/// A node-local daemon's chunk dir, opened for reading and writing here, and what this
/// process knows of the sizes of the files whose metadata that daemon owns.
pub(crate) struct ChunkDir {
    path: PathBuf,
    dev: u64,
    /// Free bytes the daemon keeps for its metadata (direct writes leave them).
    reserve: u64,
    /// Bytes this process may still write here before it measures the free space again.
    allowance: AtomicU64,
    /// The daemon's cut counters.
    cuts: Cuts,
    kept: Mutex<KeptFiles>,
    kept_max: usize,
    /// Sizes the daemon said, by file id.
    known: Mutex<HashMap<u64, Known>>,
}

/// At most an eighth of the soft descriptor limit (a program near its limit must not
/// find our chunk files in its way), within [`KEPT_MIN`]..=[`KEPT_MAX`].
fn kept_max() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    (soft / 8).clamp(KEPT_MIN, KEPT_MAX) as usize
}

impl ChunkDir {
    /// The chunk dir the daemon reported, if this process sees the same directory.
    pub fn open(reply: &ChunkDirReply) -> io::Result<ChunkDir> {
        let path = PathBuf::from(&reply.path);
        let meta = std::fs::metadata(&path)?;
        if !meta.is_dir() || meta.dev() != reply.dev || meta.ino() != reply.ino {
            return Err(io::Error::other(format!(
                "{} is not the daemon's chunk directory in this process",
                path.display()
            )));
        }
        let cuts = Cuts::open(Path::new(&reply.cuts))?;
        Ok(ChunkDir {
            path,
            dev: reply.dev,
            reserve: reply.reserve,
            allowance: AtomicU64::new(0),
            cuts,
            kept: Mutex::default(),
            kept_max: kept_max(),
            known: Mutex::default(),
        })
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, KeptFiles> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chunk `chunk` of file `id`, open read-write; None if it does not exist (a hole),
    /// unless `create` (then it is made, with its directory).
    fn chunk(&self, id: u64, chunk: u64, create: bool) -> io::Result<Option<Arc<Kept>>> {
        let now = self.cuts.now(Cut::Chunks);
        let found = self.kept().get(id, chunk);
        if let Some(k) = found {
            if k.checked.load(Ordering::Acquire) == now {
                return Ok(Some(k));
            }
            let st = nix::sys::stat::fstat(k.file.as_raw_fd())?;
            if st.st_nlink > 0 && st.st_ino == k.ino {
                k.checked.store(now, Ordering::Release);
                return Ok(Some(k));
            }
            // Removed since: closed, and opened again below. Or the number names another
            // file now (outside the preload a program can dup2 over it; the preload
            // refuses that): then it is not ours to close.
            let taken_over = st.st_ino != k.ino;
            drop(k);
            let gone = self.kept().remove(id, chunk);
            if let (true, Some(Ok(k))) = (taken_over, gone.map(Arc::try_unwrap)) {
                let _ = k.file.into_raw_fd();
            }
        }
        let Some(file) = gkfs_fabric::chunk_file::open(&self.path, id, chunk, create)? else {
            return Ok(None);
        };
        let file = match OWN_KEPT.get() {
            Some(own) => own(file),
            None => file,
        };
        let st = nix::sys::stat::fstat(file.as_raw_fd())?;
        if st.st_dev != self.dev {
            return Err(io::Error::other("a chunk file on another file system"));
        }
        let k = Arc::new(Kept {
            file,
            ino: st.st_ino,
            checked: AtomicU64::new(now),
        });
        self.kept().insert(id, chunk, k.clone(), self.kept_max);
        Ok(Some(k))
    }

    /// Is there room for `bytes` more on the chunk dir's file system, above the
    /// daemon's reserve? (Otherwise the daemon writes, and says ENOSPC when it must.)
    /// Measures the free space when this process's allowance is spent.
    pub fn room(&self, bytes: u64) -> bool {
        let spent = self
            .allowance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            });
        if spent.is_ok() {
            return true;
        }
        let Ok((_, free)) = gkfs_fabric::chunk_file::usage(&self.path) else {
            return false;
        };
        let margin = free.saturating_sub(self.reserve);
        let allow = (margin / MARGIN_SHARE).min(ALLOWANCE_MAX);
        self.allowance
            .store(allow.saturating_sub(bytes), Ordering::Release);
        margin >= bytes
    }

    /// Writes `data` at `offset` of chunk `chunk` of file `id` (the chunk file and its
    /// directory made if missing), as the daemon's write does.
    pub fn write(&self, id: u64, chunk: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        self.chunk(id, chunk, true)?
            .ok_or_else(|| io::Error::from(ErrorKind::NotFound))?
            .file
            .write_all_at(data, offset)
    }

    /// The daemon's [`Cut::Sizes`] counter now: read it before a size update whose
    /// answer is to be learnt ([`ChunkDir::learn_size`]).
    pub fn size_cuts(&self) -> u64 {
        self.cuts.now(Cut::Sizes)
    }

    /// Would a size update of file `id` at `path` to `end`, with modification time
    /// `mtime`, change nothing the daemon has? So if the daemon said the file holds at
    /// least `end` bytes, at this `mtime`, and has cut or replaced no record since.
    pub fn size_known(&self, id: u64, path: &str, end: u64, mtime: i64) -> bool {
        let cuts = self.size_cuts();
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(&id)
            .is_some_and(|k| k.cuts == cuts && k.mtime == mtime && end <= k.size && k.path == path)
    }

    /// Remembers what the daemon answered a size update of file `id` at `path`
    /// (`size`, the update's `mtime`), sent after its [`Cut::Sizes`] counter read `cuts`.
    pub fn learn_size(&self, id: u64, path: &str, size: u64, cuts: u64, mtime: i64) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        // (Each write that grows a file learns again: no new path string for it.)
        if let Some(k) = known.get_mut(&id).filter(|k| k.path == path) {
            (k.size, k.cuts, k.mtime) = (size, cuts, mtime);
            return;
        }
        if known.len() >= KNOWN_MAX && !known.contains_key(&id) {
            known.clear();
        }
        known.insert(
            id,
            Known {
                path: path.to_string(),
                size,
                cuts,
                mtime,
            },
        );
    }

    /// Closes the chunk files of file `id` kept open here, and forgets its size.
    pub fn release(&self, id: u64) {
        self.kept().release(id);
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Reads into `buf` from `offset` of chunk `chunk` of file `id`; returns the bytes
    /// present (the rest of `buf` is zeroed: a hole), as the daemon's read does.
    pub fn read(&self, id: u64, chunk: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(k) = self.chunk(id, chunk, false)? else {
            buf.fill(0);
            return Ok(0);
        };
        gkfs_fabric::chunk_file::read_held(&k.file, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The cut counters of a daemon on chunk dir `d` (made there if missing).
    fn daemon_cuts(d: &std::path::Path) -> Cuts {
        Cuts::create(&d.join("cuts")).unwrap()
    }

    fn reply_for(d: &std::path::Path) -> ChunkDirReply {
        let m = std::fs::metadata(d).unwrap();
        ChunkDirReply {
            path: d.display().to_string(),
            dev: m.dev(),
            ino: m.ino(),
            reserve: 0,
            cuts: d.join("cuts").display().to_string(),
        }
    }

    fn dir_of(d: &std::path::Path) -> ChunkDir {
        if !d.join("cuts").exists() {
            daemon_cuts(d);
        }
        ChunkDir::open(&reply_for(d)).unwrap()
    }

    fn put(d: &std::path::Path, id: u64, chunk: u64, data: &[u8]) {
        let p = d.join(gkfs_proto::chunk::chunk_file(id, chunk));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn reads_what_the_chunk_holds_and_zeros_past_it() {
        let t = tempfile::tempdir().unwrap();
        put(t.path(), 5, 2, b"hello");
        let cd = dir_of(t.path());
        let mut buf = [9u8; 8];
        assert_eq!(cd.read(5, 2, 1, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"ello\0\0\0\0");
        // A chunk that is not there is a hole.
        let mut buf = [9u8; 4];
        assert_eq!(cd.read(5, 3, 0, &mut buf).unwrap(), 0);
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn a_removed_chunk_is_never_read_through_the_descriptor_kept() {
        let t = tempfile::tempdir().unwrap();
        put(t.path(), 1, 0, b"old bytes");
        let daemon = daemon_cuts(t.path());
        let cd = dir_of(t.path());
        let mut buf = [0u8; 9];
        assert_eq!(cd.read(1, 0, 0, &mut buf).unwrap(), 9);
        // Removed (a truncate to 0, as the daemon makes it), then written again (a new
        // file at the path).
        {
            let _cut = daemon.cutting(Cut::Chunks);
            std::fs::remove_file(t.path().join(gkfs_proto::chunk::chunk_file(1, 0))).unwrap();
        }
        let mut buf = [7u8; 9];
        assert_eq!(
            cd.read(1, 0, 0, &mut buf).unwrap(),
            0,
            "a removed chunk is a hole"
        );
        {
            let _cut = daemon.cutting(Cut::Chunks);
            put(t.path(), 1, 0, b"new");
        }
        assert_eq!(cd.read(1, 0, 0, &mut buf).unwrap(), 3);
        assert_eq!(&buf, b"new\0\0\0\0\0\0");
        // A cut in place shows through the same descriptor.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path().join(gkfs_proto::chunk::chunk_file(1, 0)))
            .unwrap();
        f.set_len(1).unwrap();
        assert_eq!(cd.read(1, 0, 0, &mut buf).unwrap(), 1);
    }

    #[test]
    fn a_write_makes_the_chunk_file_and_lands_where_the_daemon_reads() {
        let t = tempfile::tempdir().unwrap();
        let cd = dir_of(t.path());
        cd.write(3, 1, 4, b"abc").unwrap();
        cd.write(3, 1, 0, b"xy").unwrap();
        let p = t.path().join(gkfs_proto::chunk::chunk_file(3, 1));
        assert_eq!(std::fs::read(p).unwrap(), b"xy\0\0abc");
        let mut buf = [0u8; 7];
        assert_eq!(cd.read(3, 1, 0, &mut buf).unwrap(), 7);
        // No room above a reserve larger than the disk: the daemon writes (and says
        // ENOSPC).
        assert!(cd.room(1));
        let full = ChunkDir {
            reserve: u64::MAX / 2,
            ..dir_of(t.path())
        };
        assert!(!full.room(1));
    }

    #[test]
    fn another_directory_at_the_path_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let m = std::fs::metadata(t.path()).unwrap();
        daemon_cuts(t.path());
        let got = ChunkDir::open(&ChunkDirReply {
            ino: m.ino() + 1,
            ..reply_for(t.path())
        });
        assert!(got.is_err());
        // Nor is a chunk dir without the daemon's cut counters.
        std::fs::remove_file(t.path().join("cuts")).unwrap();
        assert!(ChunkDir::open(&reply_for(t.path())).is_err());
    }

    #[test]
    fn a_write_after_a_removal_lands_in_the_chunk_file_the_path_names() {
        let t = tempfile::tempdir().unwrap();
        let daemon = daemon_cuts(t.path());
        let cd = dir_of(t.path());
        let p = t.path().join(gkfs_proto::chunk::chunk_file(4, 0));
        cd.write(4, 0, 0, b"first").unwrap();
        {
            let _cut = daemon.cutting(Cut::Chunks);
            std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        }
        // The descriptor kept from the first write names a removed file now: the write
        // makes the chunk file again instead of vanishing into the old one.
        cd.write(4, 0, 0, b"again").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"again");
    }

    #[test]
    fn a_size_is_known_while_no_record_was_cut() {
        let t = tempfile::tempdir().unwrap();
        let daemon = daemon_cuts(t.path());
        let cd = dir_of(t.path());
        assert!(!cd.size_known(7, "/f", 1, 5), "nothing learnt yet");
        let cuts = cd.size_cuts();
        cd.learn_size(7, "/f", 4096, cuts, 5);
        assert!(cd.size_known(7, "/f", 4096, 5));
        assert!(cd.size_known(7, "/f", 1, 5));
        assert!(!cd.size_known(7, "/f", 4097, 5), "past the known size");
        assert!(!cd.size_known(7, "/f", 1, 6), "a later modification time");
        assert!(!cd.size_known(7, "/g", 1, 5), "another name");
        assert!(!cd.size_known(8, "/f", 1, 5), "another file");
        // A truncate (or remove, rename over, link change) at the daemon, even one that
        // started before the update was sent, makes it unknown.
        let _running = daemon.cutting(Cut::Sizes);
        assert!(!cd.size_known(7, "/f", 1, 5));
        cd.learn_size(7, "/f", 4096, cd.size_cuts(), 5);
        drop(_running);
        assert!(
            !cd.size_known(7, "/f", 1, 5),
            "the cut ended after the update"
        );
        cd.learn_size(7, "/f", 4096, cd.size_cuts(), 5);
        assert!(cd.size_known(7, "/f", 1, 5));
        // The last close of the file forgets it.
        cd.release(7);
        assert!(!cd.size_known(7, "/f", 1, 5));
    }

    #[test]
    fn a_release_closes_the_chunk_files_of_that_file_only() {
        let t = tempfile::tempdir().unwrap();
        for (id, chunk) in [(1, 0), (1, 1), (2, 0)] {
            put(t.path(), id, chunk, b"x");
        }
        let cd = dir_of(t.path());
        let mut b = [0u8; 1];
        for (id, chunk) in [(1, 0), (1, 1), (2, 0)] {
            assert_eq!(cd.read(id, chunk, 0, &mut b).unwrap(), 1);
        }
        assert_eq!(cd.kept().count, 3);
        cd.release(1);
        let kept = cd.kept();
        assert_eq!(kept.count, 1);
        assert!(kept.get(1, 0).is_none() && kept.get(1, 1).is_none());
        assert!(kept.get(2, 0).is_some());
    }

    #[test]
    fn at_most_kept_max_chunk_files_stay_open() {
        let t = tempfile::tempdir().unwrap();
        let cd = dir_of(t.path());
        let n = cd.kept_max as u64 + 5;
        for k in 0..n {
            put(t.path(), 9, k, &[k as u8]);
        }
        let mut b = [0u8; 1];
        for k in 0..n {
            assert_eq!(cd.read(9, k, 0, &mut b).unwrap(), 1);
            assert_eq!(b[0], k as u8);
            assert!(cd.kept().count <= cd.kept_max);
        }
    }
}
