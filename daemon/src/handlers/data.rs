//! Data handlers: chunk pieces moved inline or by RMA, with disk I/O overlapping the
//! next transfer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gkfs_fabric::{FabricError, Peer, RemoteBuf};

use crate::server::Origin;
use gkfs_fabric::shm::WindowLease;
use gkfs_proto::msg::*;
use gkfs_proto::wire::Bytes;
use gkfs_proto::Errno;

use crate::state::State;

/// Longest time one bulk transfer of a request may take.
const RMA_TIMEOUT: Duration = Duration::from_secs(30);
/// Transfers in flight per request while the disk works on earlier pieces.
const PIPELINE_DEPTH: usize = 2;

/// Where a request's bulk data is: RMA with a fabric peer, or a local shared window.
enum BulkAt<'a> {
    Rma(Peer),
    /// The window, lent to this request; the range was checked.
    Window(WindowLease<'a>),
}

fn bulk_at<'a>(from: &'a Origin, b: &Bulk) -> Result<BulkAt<'a>, RemoteError> {
    match from {
        Origin::Fabric(p) => Ok(BulkAt::Rma(*p)),
        Origin::Local {
            window: Some(w), ..
        } => {
            let lease = w.lease().ok_or_else(|| {
                RemoteError::new(
                    Errno::EBUSY,
                    "the shared window is in use by another request",
                )
            })?;
            if lease.get(b.addr, b.len).is_none() {
                return Err(RemoteError::new(
                    Errno::EINVAL,
                    "bulk range outside the shared window",
                ));
            }
            Ok(BulkAt::Window(lease))
        }
        Origin::Local { window: None, .. } => Err(RemoteError::new(
            Errno::EINVAL,
            "bulk transfer over the node-local socket without a shared window",
        )),
    }
}

/// A piece outside the shared window (its bulk range was checked, the pieces against it).
fn window_range() -> RemoteError {
    RemoteError::new(Errno::EINVAL, "piece outside the shared window")
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

fn fabric_err(what: &str, e: FabricError) -> RemoteError {
    log::warn!("{what}: {e}");
    RemoteError::new(Errno::EIO, format!("{what}: {e}"))
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

fn remote(b: &Bulk) -> RemoteBuf {
    RemoteBuf {
        addr: b.addr,
        key: b.key,
        len: b.len,
    }
}

pub fn write_chunks(
    st: &State,
    from: &Origin,
    mut req: WriteChunksReq,
) -> Result<WriteChunksReply, RemoteError> {
    let size_update = req.size_update.take();
    let reply = write_data(st, from, req)?;
    if let Some(u) = size_update {
        super::meta::update_size(
            st,
            UpdateSizeReq {
                path: u.path,
                end: u.end,
                append_len: 0,
                mtime: u.mtime,
            },
        )?;
    }
    Ok(reply)
}

fn write_data(
    st: &State,
    from: &Origin,
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
            let from = match bulk_at(from, bulk)? {
                BulkAt::Rma(p) => p,
                BulkAt::Window(win) => {
                    for p in &req.pieces {
                        // Straight from the client's memory into the chunk file.
                        let data = win
                            .get(bulk.addr + p.buf_offset, p.len)
                            .ok_or_else(window_range)?;
                        st.chunks
                            .write(id, p.chunk, p.offset, data)
                            .map_err(|e| io_err("write chunk", e))?;
                        written += p.len;
                    }
                    st.counters
                        .bytes_written
                        .fetch_add(written, Ordering::Relaxed);
                    return Ok(WriteChunksReply { written });
                }
            };
            let deadline = Instant::now() + RMA_TIMEOUT;
            let rb = remote(bulk);
            let mut next = 0;
            let mut inflight = VecDeque::new();
            let mut spare: Vec<Vec<u8>> = Vec::new();
            loop {
                while next < req.pieces.len() && inflight.len() < PIPELINE_DEPTH {
                    let p = &req.pieces[next];
                    let buf = spare.pop().unwrap_or_default();
                    let op = st
                        .ep
                        .start_read(from, rb, p.buf_offset, buf, p.len as usize, deadline)
                        .map_err(|e| fabric_err("pull data from client", e))?;
                    inflight.push_back((p, op));
                    next += 1;
                }
                let Some((p, op)) = inflight.pop_front() else {
                    break;
                };
                let data = op
                    .wait(deadline)
                    .map_err(|e| fabric_err("pull data from client", e))?;
                // The next transfer is already in flight while this piece hits the disk.
                st.chunks
                    .write(id, p.chunk, p.offset, &data)
                    .map_err(|e| io_err("write chunk", e))?;
                written += p.len;
                spare.push(data);
            }
        }
    }
    st.counters
        .bytes_written
        .fetch_add(written, Ordering::Relaxed);
    Ok(WriteChunksReply { written })
}

pub fn read_chunks(
    st: &State,
    from: &Origin,
    req: ReadChunksReq,
) -> Result<ReadChunksReply, RemoteError> {
    let id = req.file_id;
    let mut lens = Vec::with_capacity(req.pieces.len());
    let total: u64 = req.pieces.iter().map(|p| p.len).sum();
    match &req.bulk {
        None => {
            let limit = match from {
                Origin::Fabric(_) => gkfs_proto::limits::INLINE_READ_MAX,
                Origin::Local { .. } => gkfs_proto::local::max_data(st.chunk_size.get()),
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
            let from = match bulk_at(from, bulk)? {
                BulkAt::Rma(p) => p,
                BulkAt::Window(mut win) => {
                    for p in &req.pieces {
                        // Straight from the chunk file into the client's memory.
                        let buf = win
                            .get_mut(bulk.addr + p.buf_offset, p.len)
                            .ok_or_else(window_range)?;
                        let n = st
                            .chunks
                            .read(id, p.chunk, p.offset, buf)
                            .map_err(|e| io_err("read chunk", e))?;
                        lens.push(n as u64);
                    }
                    count_read(st, &lens);
                    return Ok(ReadChunksReply {
                        lens,
                        inline: Bytes::default(),
                    });
                }
            };
            let deadline = Instant::now() + RMA_TIMEOUT;
            let rb = remote(bulk);
            let mut inflight = VecDeque::new();
            let mut spare: Vec<Vec<u8>> = Vec::new();
            for p in &req.pieces {
                let mut buf = spare.pop().unwrap_or_default();
                buf.resize(p.len as usize, 0);
                // Reading this piece from disk overlaps the transfers still in flight.
                let n = st
                    .chunks
                    .read(id, p.chunk, p.offset, &mut buf)
                    .map_err(|e| io_err("read chunk", e))?;
                lens.push(n as u64);
                if n == 0 {
                    // A hole: the client zero-fills, nothing to send.
                    spare.push(buf);
                    continue;
                }
                buf.truncate(n);
                let op = st
                    .ep
                    .start_write(from, rb, p.buf_offset, buf, deadline)
                    .map_err(|e| fabric_err("push data to client", e))?;
                inflight.push_back(op);
                if inflight.len() >= PIPELINE_DEPTH {
                    if let Some(op) = inflight.pop_front() {
                        spare.push(
                            op.wait(deadline)
                                .map_err(|e| fabric_err("push data to client", e))?,
                        );
                    }
                }
            }
            for op in inflight {
                op.wait(deadline)
                    .map_err(|e| fabric_err("push data to client", e))?;
            }
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
