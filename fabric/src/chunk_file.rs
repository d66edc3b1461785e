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

    fn scratch_file() -> File {
        let p = std::env::temp_dir().join(format!("gkfs-chunk-file-test-{}", std::process::id()));
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
