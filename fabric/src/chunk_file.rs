//! Chunk files, for the daemon and for a client reading and writing its node's chunk
//! files itself: where one is and how it is opened for writing, the one rule for what a
//! chunk holds, and how free space is measured.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Chunk `chunk` of file `id` in chunk dir `root` ([`gkfs_proto::chunk::chunk_file`]).
pub fn path(root: &Path, id: u64, chunk: u64) -> PathBuf {
    root.join(gkfs_proto::chunk::chunk_file(id, chunk))
}

/// Opens chunk `chunk` of file `id` in `root` for reading and writing; with `create`,
/// makes it (and the file's directory) if missing, else None when it is missing.
pub fn open(root: &Path, id: u64, chunk: u64, create: bool) -> io::Result<Option<File>> {
    let path = path(root, id, chunk);
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)
    };
    match open() {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::NotFound && !create => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(root.join(gkfs_proto::chunk::file_dir(id)))?;
            open().map(Some)
        }
        Err(e) => Err(e),
    }
}

/// Gives chunk file `f` storage for bytes `offset..offset + len`, keeping its length
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`): ENOTSUP where the file system cannot.
pub fn allocate(f: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let (off, len) = match (i64::try_from(offset), i64::try_from(len)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(io::Error::from(ErrorKind::InvalidInput)),
    };
    loop {
        match fallocate(f.as_raw_fd(), FallocateFlags::FALLOC_FL_KEEP_SIZE, off, len) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Size and free space (to unprivileged users) of the file system holding `path`, in
/// bytes.
pub fn usage(path: &Path) -> io::Result<(u64, u64)> {
    let v = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let frag = v.fragment_size() as u64;
    Ok((v.blocks() as u64 * frag, v.blocks_available() as u64 * frag))
}

/// Reads chunk file `f` from `offset` into `buf`; returns the bytes it holds there. The
/// rest of `buf` (past the end of the chunk file: a hole) is zeroed.
pub fn read_held(f: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(done)
}

/// Pieces shorter than this are read into a buffer rather than sent from a mapping
/// ([`FileMap`]): a large piece sent from a mapping leaves out a copy that took as long
/// as the send itself (measured), a short one gains little.
pub const MAP_MIN: usize = 64 << 10;

/// A chunk file mapped read-only and shared, from its start: what an RMA write sends
/// straight from the page cache. Unmapped when the last [`HeldMap`] of it is dropped.
///
/// While it is mapped, the file must not be cut below the mapped length (a read past a
/// file's end through a mapping raises SIGBUS), nor may it have holes there (mapping a
/// hole of a tmpfs file allocates a page for it): the daemon's chunk store maps only
/// files with storage for all they hold, and drops their mappings before it cuts them.
pub struct FileMap {
    base: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is memory of the whole process, read-only, not of the thread
// that made it; it is only read through raw pointers (HeldMap).
unsafe impl Send for FileMap {}
// SAFETY: as above: nothing writes through it.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps all file `f` holds (`meta`: its metadata, just read), if it has storage
    /// for all of it; None otherwise (or if it is empty, or its file system cannot
    /// map it).
    pub fn new(f: &File, meta: &std::fs::Metadata) -> Option<FileMap> {
        use std::os::unix::fs::MetadataExt;
        if meta.blocks().saturating_mul(512) < meta.len() {
            return None;
        }
        let len = usize::try_from(meta.len()).ok()?;
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        // SAFETY: a new mapping at an address of the kernel's choosing (it overlaps no
        // memory of ours) of bytes the open file `f` holds; unmapped by Drop only.
        let base = unsafe {
            mmap(
                None,
                std::num::NonZeroUsize::new(len)?,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                f,
                0,
            )
        }
        .ok()?;
        Some(FileMap { base, len })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: an empty file is not mapped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: base/len are one mapping made by FileMap::new, unmapped once, here.
        let _ = unsafe { nix::sys::mman::munmap(self.base, self.len) };
    }
}

/// `len` bytes from `start` of a [`FileMap`]: one piece to send. Only the kernel (a
/// provider's send) and the NIC read through it, or [`HeldMap::copy_to`]: its bytes
/// may change under a concurrent write, as a pread's source would.
pub struct HeldMap {
    map: std::sync::Arc<FileMap>,
    start: usize,
    len: usize,
}

impl HeldMap {
    /// The piece `start..start + len` of `map`, if it lies inside it.
    pub fn new(map: std::sync::Arc<FileMap>, start: usize, len: usize) -> Option<HeldMap> {
        (start.checked_add(len)? <= map.len).then_some(HeldMap { map, start, len })
    }

    /// The piece's first byte.
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: start + len <= the mapping's length (checked by new).
        unsafe { self.map.base.as_ptr().cast::<u8>().add(self.start) }
    }

    /// The piece's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the piece empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the piece into the start of `dst` (at most its length); returns the
    /// bytes copied.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // SAFETY: the source is n mapped, readable bytes, which cannot overlap `dst`
        // (a unique borrow of our own memory). A concurrent write to the file may change
        // them meanwhile: the copy then holds some of the old bytes and some of the new,
        // as a pread racing that write would.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), dst.as_mut_ptr(), n) };
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_file_holds_then_zeros() {
        let mut f = scratch_file();
        std::io::Write::write_all(&mut f, b"abcdef").unwrap();
        let mut buf = [9u8; 6];
        assert_eq!(read_held(&f, 4, &mut buf).unwrap(), 2);
        assert_eq!(&buf, b"ef\0\0\0\0");
        assert_eq!(read_held(&f, 100, &mut buf).unwrap(), 0);
        assert_eq!(buf, [0; 6]);
    }

    #[test]
    fn a_mapped_piece_holds_what_the_file_holds_from_an_unaligned_offset() {
        let mut f = scratch_file();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut f, &data).unwrap();
        let map = std::sync::Arc::new(FileMap::new(&f, &f.metadata().unwrap()).expect("a mapping"));
        assert_eq!(map.len(), data.len());
        let piece = HeldMap::new(map.clone(), 1000, data.len() - 1000).expect("inside");
        let mut got = vec![0u8; 400_000];
        assert_eq!(piece.copy_to(&mut got), data.len() - 1000);
        assert!(got[..data.len() - 1000] == data[1000..]);
        assert!(
            HeldMap::new(map.clone(), 1000, data.len()).is_none(),
            "past the end"
        );
    }

    #[test]
    fn a_file_with_holes_is_not_mapped() {
        let f = scratch_file();
        f.write_all_at(b"end", 400_000).unwrap();
        assert!(FileMap::new(&f, &f.metadata().unwrap()).is_none());
    }

    fn scratch_file() -> File {
        // (One name per test: tests run in parallel.)
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("gkfs-chunk-file-test-{}-{n}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }
}
