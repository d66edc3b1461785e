//! Data handlers: chunk pieces moved inline, or as bulk data through the request's
//! [`Sender`] (the transport decides how: in place in a node-local client's shared
//! window, or by RMA with the next transfer in flight while the disk works).

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gkfs_fabric::bulk::{BulkError, Sender};
use gkfs_proto::msg::*;
use gkfs_proto::wire::Bytes;
use gkfs_proto::Errno;

use crate::state::State;

/// Longest time one bulk transfer of a request may take.
const RMA_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed bulk transfer as the client sees it.
fn bulk_err(what: &'static str) -> impl Fn(BulkError<RemoteError>) -> RemoteError {
    move |e| match e {
        BulkError::Handler(e) => e,
        BulkError::WindowBusy => RemoteError::new(
            Errno::EBUSY,
            "the shared window is in use by another request",
        ),
        BulkError::OutsideWindow => {
            RemoteError::new(Errno::EINVAL, "bulk range outside the shared window")
        }
        BulkError::NoWindow => RemoteError::new(
            Errno::EINVAL,
            "bulk transfer over the node-local socket without a shared window",
        ),
        BulkError::Read(e) => io_err("read chunk", e),
        BulkError::Transfer(e) => {
            log::warn!("{what}: {e}");
            RemoteError::new(Errno(e.errno()), format!("{what}: {e}"))
        }
    }
}

/// Where piece `p` lies in the client's buffer.
fn in_buffer(p: &ChunkIo) -> (u64, u64) {
    (p.buf_offset, p.len)
}

fn io_err(what: &str, e: std::io::Error) -> RemoteError {
    let errno = Errno::from(&e);
    if errno == Errno::ENOSPC {
        log::warn!("{what}: the daemon's storage is full");
    } else {
        log::error!("{what}: {e}");
    }
    RemoteError::new(errno, format!("{what}: {e}"))
}

fn check_pieces(st: &State, pieces: &[ChunkIo], buf_len: u64) -> Result<(), RemoteError> {
    let cs = st.chunk_size.get();
    for p in pieces {
        let in_chunk = p.offset.checked_add(p.len).is_some_and(|e| e <= cs);
        let in_buf = p
            .buf_offset
            .checked_add(p.len)
            .is_some_and(|e| e <= buf_len);
        if !in_chunk || !in_buf {
            return Err(RemoteError::new(
                Errno::EINVAL,
                "piece outside its chunk or buffer",
            ));
        }
    }
    Ok(())
}

pub fn write_chunks(
    st: &State,
    from: &Sender,
    mut req: WriteChunksReq,
) -> Result<WriteChunksReply, RemoteError> {
    let size_update = req.size_update.take();
    let reply = write_data(st, from, req)?;
    if let Some(u) = size_update {
        super::meta::update_size(st, u.into())?;
    }
    Ok(reply)
}

fn write_data(
    st: &State,
    from: &Sender,
    req: WriteChunksReq,
) -> Result<WriteChunksReply, RemoteError> {
    let id = req.file_id;
    let mut written = 0u64;
    match &req.bulk {
        None => {
            check_pieces(st, &req.pieces, req.inline.0.len() as u64)?;
            for p in &req.pieces {
                let data = &req.inline.0[p.buf_offset as usize..(p.buf_offset + p.len) as usize];
                st.chunks
                    .write(id, p.chunk, p.offset, data)
                    .map_err(|e| io_err("write chunk", e))?;
                written += p.len;
            }
        }
        Some(bulk) => {
            check_pieces(st, &req.pieces, bulk.len)?;
            let deadline = Instant::now() + RMA_TIMEOUT;
            from.pull(bulk, &req.pieces, in_buffer, deadline, |p, data| {
                st.chunks
                    .write(id, p.chunk, p.offset, data)
                    .map_err(|e| io_err("write chunk", e))?;
                written += p.len;
                Ok(())
            })
            .map_err(bulk_err("pull data from client"))?;
        }
    }
    st.counters
        .bytes_written
        .fetch_add(written, Ordering::Relaxed);
    Ok(WriteChunksReply { written })
}

pub fn read_chunks(
    st: &State,
    from: &Sender,
    req: ReadChunksReq,
) -> Result<ReadChunksReply, RemoteError> {
    let id = req.file_id;
    let total: u64 = req.pieces.iter().map(|p| p.len).sum();
    match &req.bulk {
        None => {
            let limit = if from.is_local() {
                gkfs_proto::local::max_data(st.chunk_size.get())
            } else {
                gkfs_proto::limits::INLINE_READ_MAX
            };
            if total > limit {
                return Err(RemoteError::new(Errno::EINVAL, "inline read too large"));
            }
            let end = req
                .pieces
                .iter()
                .map(|p| p.buf_offset + p.len)
                .max()
                .unwrap_or(0);
            check_pieces(st, &req.pieces, end)?;
            let mut lens = Vec::with_capacity(req.pieces.len());
            let mut out = vec![0u8; end as usize];
            for p in &req.pieces {
                let buf = &mut out[p.buf_offset as usize..(p.buf_offset + p.len) as usize];
                lens.push(
                    st.chunks
                        .read(id, p.chunk, p.offset, buf)
                        .map_err(|e| io_err("read chunk", e))? as u64,
                );
            }
            count_read(st, &lens);
            Ok(ReadChunksReply {
                lens,
                inline: Bytes(out),
            })
        }
        Some(bulk) => {
            check_pieces(st, &req.pieces, bulk.len)?;
            let deadline = Instant::now() + RMA_TIMEOUT;
            // Pieces may be sent straight from their chunk files: none is cut meanwhile.
            let sends = st.chunks.sends(id);
            let lens = from
                .push(bulk, &req.pieces, in_buffer, deadline, |p| {
                    sends
                        .held(p.chunk, p.offset, p.len)
                        .map_err(|e| io_err("read chunk", e))
                })
                .map_err(bulk_err("push data to client"))?;
            count_read(st, &lens);
            Ok(ReadChunksReply {
                lens,
                inline: Bytes::default(),
            })
        }
    }
}

/// Counts what a read returned: the bytes found in chunks (not holes, not what lies
/// past the end of the data, which the client zero-fills or cuts).
fn count_read(st: &State, lens: &[u64]) {
    st.counters
        .bytes_read
        .fetch_add(lens.iter().sum::<u64>(), Ordering::Relaxed);
}

/// Where this daemon's chunk files are, for a process on this node to read them itself.
pub fn chunk_dir(st: &State) -> Result<ChunkDirReply, RemoteError> {
    if !st.chunks.has_cuts() {
        return Err(RemoteError::new(
            Errno::ENOTSUP,
            "this daemon keeps no cut counters: its data moves through it",
        ));
    }
    let root = st.chunks.root();
    let path = std::fs::canonicalize(root).map_err(|e| io_err("chunk directory", e))?;
    let meta = std::fs::metadata(&path).map_err(|e| io_err("chunk directory", e))?;
    let path = path
        .into_os_string()
        .into_string()
        .map_err(|_| RemoteError::new(Errno::ENOTSUP, "the chunk directory's path is not UTF-8"))?;
    let cuts = format!("{path}/{}", crate::store::chunks::CUTS_FILE);
    Ok(ChunkDirReply {
        path,
        dev: meta.dev(),
        ino: meta.ino(),
        reserve: st.chunks.space().reserve(),
        cuts,
    })
}

pub fn allocate_chunks(st: &State, req: AllocateChunksReq) -> Result<Empty, RemoteError> {
    let me = st
        .membership()
        .ok_or_else(|| RemoteError::new(Errno::EAGAIN, "this daemon has no membership yet"))?
        .index;
    if req.daemons == 0 || me >= req.daemons {
        return Err(RemoteError::new(
            Errno::EINVAL,
            "daemon count does not include this daemon",
        ));
    }
    // This daemon's share of a large range is about len / daemons: if even that does
    // not fit above the reserve, say so at once instead of filling the disk first.
    if !st
        .chunks
        .space()
        .could_hold(req.len / u64::from(req.daemons))
    {
        return Err(RemoteError::new(
            Errno::ENOSPC,
            "allocation larger than this daemon's free space",
        ));
    }
    for piece in st.chunk_size.split(req.offset, req.len) {
        if gkfs_proto::place::place_chunk(req.file_id, piece.chunk, req.daemons) != me {
            continue;
        }
        st.chunks
            .allocate(req.file_id, piece.chunk, piece.chunk_offset, piece.len)
            .map_err(|e| io_err("allocate chunk", e))?;
    }
    Ok(Empty {})
}

pub fn truncate_chunks(st: &State, req: TruncateChunksReq) -> Result<Empty, RemoteError> {
    st.chunks
        .truncate(req.file_id, req.size)
        .map_err(|e| io_err("truncate chunks", e))?;
    Ok(Empty {})
}

pub fn remove_chunks(st: &State, req: RemoveChunksReq) -> Result<Empty, RemoteError> {
    st.chunks
        .remove(req.file_id)
        .map_err(|e| io_err("remove chunks", e))?;
    Ok(Empty {})
}
