//! Files and their data: open, pread, pwrite, append. A transfer is split into chunk
//! pieces, grouped per daemon, and sent to every daemon involved at once; how each
//! daemon's share travels is `bulk.rs`'s business.

use gkfs_proto::msg::*;
use gkfs_proto::place::{place, place_chunk};
use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::bulk::{Dir, Shares};
use crate::client::{check_path, file_time_now, Client};
use crate::rpc::{wait_all, SMALL_REPLY};

/// How to open a file (the `open(2)` flags that matter to the file system).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Create the file if it does not exist (O_CREAT).
    pub create: bool,
    /// With `create`: fail if it exists (O_EXCL).
    pub exclusive: bool,
    /// Cut an existing file to size 0 (O_TRUNC).
    pub truncate: bool,
    /// Writes go to the end (O_APPEND).
    pub append: bool,
    /// The caller will write (needed for `truncate`; opening a directory for writing
    /// fails with EISDIR).
    pub write: bool,
    /// Permission bits for a new file.
    pub mode: u32,
}

/// An open file (or directory): its path and file id. There is no client cache:
/// every call goes to the daemons.
#[derive(Clone)]
pub struct File {
    client: Client,
    path: String,
    record: Record,
    append: bool,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("id", &self.record.file_id)
            .finish()
    }
}

impl Client {
    /// Opens (and maybe creates or truncates) `p`.
    pub fn open(&self, p: &str, opts: &OpenOptions) -> Result<File, Errno> {
        let p = check_path(p)?;
        let record = if opts.create {
            let reply =
                self.create_record(&p, mode::S_IFREG | (opts.mode & 0o7777), opts.exclusive)?;
            reply.record
        } else {
            self.stat_norm(&p)?
        };
        if record.is_dir() && (opts.write || opts.truncate || opts.append) {
            return Err(Errno::EISDIR);
        }
        // A hard-linked name: the file is its inode record.
        let (p, record) = if record.is_linked() {
            (
                gkfs_proto::path::inode_path(record.file_id),
                self.resolve_linked(record)?,
            )
        } else {
            (p, record)
        };
        let mut file = File {
            client: self.clone(),
            path: p,
            record,
            append: opts.append,
        };
        if opts.truncate && opts.write && record.size > 0 {
            self.truncate(&file.path, 0)?;
            file.record.size = 0;
        }
        Ok(file)
    }

    /// A handle for a file opened earlier, possibly by another process (the preload
    /// library rebuilds handles after fork and exec from the path and record it kept).
    /// No message is sent.
    pub fn file_handle(&self, path: &str, record: Record, append: bool) -> File {
        let path = if record.is_linked() {
            gkfs_proto::path::inode_path(record.file_id)
        } else {
            path.to_string()
        };
        File {
            client: self.clone(),
            path,
            record,
            append,
        }
    }

    /// Creates a symbolic link at `p` pointing to `target` (stored as the link's data;
    /// the client follows links in the last path component only).
    pub fn symlink(&self, target: &str, p: &str) -> Result<(), Errno> {
        let p = check_path(p)?;
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > gkfs_proto::path::MAX_PATH {
            return Err(Errno::ENAMETOOLONG);
        }
        let rec = self.create_record(&p, mode::S_IFLNK | 0o777, true)?.record;
        self.write_data(&p, rec.file_id, target.as_bytes(), 0, true)
            .map(|_| ())
    }

    /// The target of the symbolic link `p` (EINVAL if it is not one).
    pub fn readlink(&self, p: &str) -> Result<String, Errno> {
        let p = check_path(p)?;
        let rec = self.stat_norm(&p)?;
        if rec.mode & mode::S_IFMT != mode::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        let mut buf = vec![0u8; rec.size.min(gkfs_proto::path::MAX_PATH as u64) as usize];
        let n = self.read_data(&p, rec.file_id, &mut buf, 0)?;
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| Errno::EIO)
    }

    /// Writes `data` at `off` of `p` in one call (the file must exist).
    pub fn write_at(&self, p: &str, data: &[u8], off: u64) -> Result<usize, Errno> {
        self.open(
            p,
            &OpenOptions {
                write: true,
                ..Default::default()
            },
        )?
        .pwrite(data, off)
    }

    /// Reads up to `buf.len()` bytes at `off` of `p` in one call.
    pub fn read_at(&self, p: &str, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        self.open(p, &OpenOptions::default())?.pread(buf, off)
    }

    /// Each daemon's share of `len` bytes at `off` of file `id`.
    fn shares(&self, id: u64, off: u64, len: u64) -> Shares {
        let n = self.daemons();
        let mut shares = Shares::new();
        for piece in self.inner.chunk_size.split(off, len) {
            let g = shares.entry(place_chunk(id, piece.chunk, n)).or_default();
            g.pieces.push(ChunkIo {
                chunk: piece.chunk,
                offset: piece.chunk_offset,
                len: piece.len,
                buf_offset: piece.buf_offset,
            });
            g.bytes += piece.len;
        }
        shares
    }

    /// How a transfer of `len` bytes at `off` is cut: None when one data call moves it
    /// (each daemon's share fits what one call moves to it, [`Rpcs::share_max`]),
    /// else the length of the spans it is cut into ([`Rpcs::span_max`]).
    fn spans(&self, id: u64, off: u64, len: u64, dir: Dir) -> Option<usize> {
        let rpc = self.rpc();
        let span = rpc.span_max(dir);
        if len <= span {
            return None;
        }
        let n = self.daemons();
        let mut share = std::collections::BTreeMap::<u32, u64>::new();
        for piece in self.inner.chunk_size.split(off, len) {
            *share.entry(place_chunk(id, piece.chunk, n)).or_default() += piece.len;
        }
        share
            .iter()
            .any(|(&d, &bytes)| bytes > rpc.share_max(d, dir))
            .then_some(span as usize)
    }

    fn write_data(
        &self,
        path: &str,
        id: u64,
        data: &[u8],
        off: u64,
        update_size: bool,
    ) -> Result<(), Errno> {
        let Some(span) = self.spans(id, off, data.len() as u64, Dir::Write) else {
            return self.write_span(path, id, data, off, update_size);
        };
        for (i, part) in data.chunks(span).enumerate() {
            self.write_span(path, id, part, off + (i * span) as u64, update_size)?;
        }
        Ok(())
    }

    fn write_span(
        &self,
        path: &str,
        id: u64,
        data: &[u8],
        off: u64,
        update_size: bool,
    ) -> Result<(), Errno> {
        let end = off
            .checked_add(data.len() as u64)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or(Errno::EFBIG)?;
        let shares = self.shares(id, off, data.len() as u64);
        let rpc = self.rpc();
        let owner = place(path, self.daemons());
        rpc.all_up(shares.keys().copied().chain([owner]))?;
        let mtime = file_time_now();
        // A metadata owner on this node may have said already that the file holds the
        // range (and no record was cut since): then no size update at all. Else what it
        // answers is learnt, if it is on this node.
        let owner_here = rpc.chunk_dir(owner).map(|(_, dir)| dir);
        let update = (update_size
            && !owner_here.is_some_and(|dir| dir.size_known(id, path, end, mtime)))
        .then(|| SizeUpdate {
            path: path.to_string(),
            end,
            mtime,
        });
        let cuts_before = owner_here
            .filter(|_| update.is_some())
            .map(|dir| dir.size_cuts());
        // The size update rides with the data to the metadata owner when it also holds
        // some of the chunks; otherwise it is a call of its own, alongside the data.
        let merged = update.is_some() && shares.contains_key(&owner);
        let writes = rpc.start_writes(id, data, shares, |d| {
            // (Cloned for the owner alone: it holds the path.)
            (merged && d == owner).then(|| update.clone()).flatten()
        })?;
        let size = update
            .filter(|_| !merged)
            .map(|u| rpc.start(owner, &UpdateSizeReq::from(u), SMALL_REPLY))
            .transpose();
        let written = writes.finish();
        let sized = size.and_then(|s| s.map(|s| s.wait()).transpose());
        let size = match (written?, sized?) {
            (_, Some(reply)) => Some(reply.size),
            (riding, None) => riding,
        };
        if let (Some(dir), Some(cuts), Some(size)) = (owner_here, cuts_before, size) {
            dir.learn_size(id, path, size, cuts, mtime);
        }
        Ok(())
    }

    fn read_data(&self, path: &str, id: u64, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        let Some(span) = self.spans(id, off, buf.len() as u64, Dir::Read) else {
            return self.read_span(path, id, buf, off);
        };
        let mut done = 0;
        for (i, part) in buf.chunks_mut(span).enumerate() {
            let want = part.len();
            let n = self.read_span(path, id, part, off + (i * span) as u64)?;
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    fn read_span(&self, path: &str, id: u64, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let rpc = self.rpc();
        let shares = self.shares(id, off, buf.len() as u64);
        rpc.all_up(shares.keys().copied())?;
        let len = buf.len();
        // Every piece held whole: the file reaches past the range, no size lookup.
        let whole = rpc.read_shares(id, buf, shares)?;
        if whole {
            return Ok(len);
        }
        // A short piece is a hole or the end of the file: the size says which.
        let size = rpc
            .call(
                place(path, self.daemons()),
                &GetSizeReq {
                    path: path.to_string(),
                },
            )?
            .size;
        Ok((size.saturating_sub(off)).min(len as u64) as usize)
    }
}

impl File {
    /// Path inside the file system.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The record read or created at open time.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The file id (data placement key).
    pub fn id(&self) -> u64 {
        self.record.file_id
    }

    /// [`Client::release_kept`] of this file: at the program's last close of it.
    pub fn release_kept(&self) {
        self.client.release_kept(self.id());
    }

    /// Writes all of `data` at `off` (or, if opened with `append`, at the end).
    /// Returns the bytes written.
    pub fn pwrite(&self, data: &[u8], off: u64) -> Result<usize, Errno> {
        if self.record.is_dir() {
            return Err(Errno::EISDIR);
        }
        if self.append {
            return self.append(data).map(|_| data.len());
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.client.on_attrs(&self.path, |p| {
            self.client
                .write_data(p, self.record.file_id, data, off, true)
        })?;
        Ok(data.len())
    }

    /// Gives the file storage for bytes `off..off + len` on the daemons that hold
    /// them (fallocate): later writes there do not fail for want of space. Unless
    /// `keep_size`, a file shorter than `off + len` grows to it (never shrinks: the
    /// size update takes the larger size, whatever another process wrote meanwhile).
    pub fn allocate(&self, off: u64, len: u64, keep_size: bool) -> Result<(), Errno> {
        if self.record.is_dir() {
            return Err(Errno::EISDIR);
        }
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = off
            .checked_add(len)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or(Errno::EFBIG)?;
        let client = &self.client;
        let cs = client.inner.chunk_size;
        let id = self.record.file_id;
        let daemons = client.daemons();
        let pending = client
            .chunk_owners(id, cs.chunk_of(off), cs.chunks_for_size(end))
            .into_iter()
            .map(|d| {
                client.rpc().start(
                    d,
                    &AllocateChunksReq {
                        file_id: id,
                        offset: off,
                        len,
                        daemons,
                    },
                    SMALL_REPLY,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        wait_all(pending)?;
        if keep_size {
            return Ok(());
        }
        client.on_attrs(&self.path, |p| {
            client
                .rpc()
                .call(
                    place(p, daemons),
                    &UpdateSizeReq::from(SizeUpdate {
                        path: p.to_string(),
                        end,
                        mtime: file_time_now(),
                    }),
                )
                .map(|_| ())
        })
    }

    /// Appends `data` atomically (the metadata owner reserves the range); returns the
    /// offset it was written at.
    pub fn append(&self, data: &[u8]) -> Result<u64, Errno> {
        if data.is_empty() {
            return self.size();
        }
        let rpc = self.client.rpc();
        let (path, offset) = self.client.on_attrs(&self.path, |p| {
            let offset = rpc
                .call(
                    place(p, self.client.daemons()),
                    &UpdateSizeReq {
                        path: p.to_string(),
                        end: 0,
                        append_len: data.len() as u64,
                        mtime: file_time_now(),
                    },
                )?
                .offset;
            Ok((p.to_string(), offset))
        })?;
        self.client
            .write_data(&path, self.record.file_id, data, offset, false)?;
        Ok(offset)
    }

    /// Reads up to `buf.len()` bytes at `off`; returns the bytes read (0 at EOF).
    /// Holes read as zeros.
    pub fn pread(&self, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        if self.record.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.client.on_attrs(&self.path, |p| {
            self.client.read_data(p, self.record.file_id, buf, off)
        })
    }

    /// The current size.
    pub fn size(&self) -> Result<u64, Errno> {
        self.client.on_attrs(&self.path, |p| {
            Ok(self
                .client
                .rpc()
                .call(
                    place(p, self.client.daemons()),
                    &GetSizeReq {
                        path: p.to_string(),
                    },
                )?
                .size)
        })
    }

    /// Sets the size.
    pub fn truncate(&self, size: u64) -> Result<(), Errno> {
        self.client.truncate(&self.path, size)
    }
}
