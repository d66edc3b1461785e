//! How a data call's bytes travel: the one place that picks, per daemon, the shared
//! window, the request or reply itself (inline), or RMA, and does what the pick
//! needs: registering the caller's buffer once per call, packing pieces back to back,
//! landing what came back and zeroing holes. The data calls (`data.rs`) hand over the
//! caller's bytes ([`Rpcs::start_writes`]) or buffer ([`Rpcs::read_shares`]) and each
//! daemon's pieces of it; nothing there knows how bytes travel.

use std::collections::BTreeMap;

use gkfs_fabric::MemoryRegion;
use gkfs_proto::limits::{INLINE_READ_MAX, INLINE_WRITE_MAX, SMALL_REPLY};
use gkfs_proto::msg::{Bulk, ChunkIo, ReadChunksReq, SizeUpdate, WriteChunksReq};
use gkfs_proto::wire::Bytes;
use gkfs_proto::Errno;

use crate::error::fabric_errno;
use crate::rpc::{settled, wait_all, Pending, Rpcs};

/// One daemon's share of a data call: its pieces, at their offsets in the caller's
/// buffer.
#[derive(Debug, Default)]
pub(crate) struct Share {
    /// The pieces (`buf_offset`: where in the caller's buffer).
    pub pieces: Vec<ChunkIo>,
    /// Their bytes in all.
    pub bytes: u64,
}

/// Each daemon's share, by daemon.
pub(crate) type Shares = BTreeMap<u32, Share>;

/// How one daemon's share travels ([`Rpcs::way`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Through the node-local connection's shared window, pieces back to back.
    Window,
    /// In the request (a write) or the reply (a read), pieces back to back.
    Inline,
    /// By RMA, straight from or into the caller's buffer (registered once per call).
    Rma,
}

/// The direction of a data call.
#[derive(Debug, Clone, Copy)]
enum Dir {
    /// Bytes to the daemons.
    Write,
    /// Bytes from the daemons.
    Read,
}

/// The pieces with buffer offsets renumbered back to back (as they sit in an inline
/// payload or a shared window).
fn packed(pieces: &[ChunkIo]) -> Vec<ChunkIo> {
    let mut at = 0;
    pieces
        .iter()
        .map(|p| {
            let q = ChunkIo {
                buf_offset: at,
                ..*p
            };
            at += p.len;
            q
        })
        .collect()
}

/// A piece's place in a buffer.
fn range(p: &ChunkIo) -> std::ops::Range<usize> {
    p.buf_offset as usize..(p.buf_offset + p.len) as usize
}

/// Writes in flight. The caller's buffer stays registered until they are all over;
/// dropping this waits for them (a daemon may still be reading the buffer).
pub(crate) struct Writes<'a> {
    pending: Vec<Pending<WriteChunksReq>>,
    mr: Option<MemoryRegion<'a>>,
}

impl Writes<'_> {
    /// Waits for every write; the first error after all are over.
    pub fn finish(mut self) -> Result<(), Errno> {
        let done = wait_all(std::mem::take(&mut self.pending)).map(|_| ());
        self.mr.take();
        done
    }
}

impl Drop for Writes<'_> {
    fn drop(&mut self) {
        let _ = wait_all(std::mem::take(&mut self.pending));
    }
}

impl Rpcs {
    /// How daemon `d`'s share of `bytes` travels: the one place that decides it (the
    /// limits are `gkfs_proto::limits`).
    fn way(&self, d: u32, bytes: u64, dir: Dir) -> Way {
        let inline_max = match dir {
            Dir::Write => INLINE_WRITE_MAX,
            Dir::Read => INLINE_READ_MAX,
        };
        if self.is_local(d) {
            Way::Window
        } else if bytes > inline_max {
            Way::Rma
        } else {
            Way::Inline
        }
    }

    /// Is any share moved by RMA?
    fn any_rma(&self, shares: &Shares, dir: Dir) -> bool {
        shares
            .iter()
            .any(|(d, s)| self.way(*d, s.bytes, dir) == Way::Rma)
    }

    /// Starts writing each daemon's share of `data` to file `file_id`, all at once;
    /// `size_update(d)` is the size update that rides along to daemon `d`, if any. If
    /// one cannot be started, those already started are waited for first.
    pub(crate) fn start_writes<'a>(
        &self,
        file_id: u64,
        data: &'a [u8],
        shares: Shares,
        size_update: impl Fn(u32) -> Option<SizeUpdate>,
    ) -> Result<Writes<'a>, Errno> {
        let mr = if self.any_rma(&shares, Dir::Write) {
            Some(
                self.fabric()?
                    .ep
                    .register(data)
                    .map_err(|e| fabric_errno(&e))?,
            )
        } else {
            None
        };
        let mut writes = Writes {
            pending: Vec::with_capacity(shares.len()),
            mr,
        };
        for (d, s) in shares {
            let mut req = WriteChunksReq {
                file_id,
                pieces: Vec::new(),
                bulk: None,
                inline: Bytes::default(),
                size_update: size_update(d),
            };
            let started = match self.way(d, s.bytes, Dir::Write) {
                Way::Window => {
                    // The daemon writes the pieces to disk straight from the window.
                    let parts: Vec<&[u8]> = s.pieces.iter().map(|p| &data[range(p)]).collect();
                    req.pieces = packed(&s.pieces);
                    req.bulk = Some(Bulk::window(s.bytes));
                    self.start_with(d, &req, SMALL_REPLY, &parts)
                }
                Way::Rma => {
                    let r = writes.mr.as_ref().ok_or(Errno::EIO)?.remote();
                    req.pieces = s.pieces;
                    req.bulk = Some(Bulk {
                        addr: r.addr,
                        key: r.key,
                        len: r.len,
                    });
                    self.start(d, &req, SMALL_REPLY)
                }
                Way::Inline => {
                    let mut inline = Vec::with_capacity(s.bytes as usize);
                    for p in &s.pieces {
                        inline.extend_from_slice(&data[range(p)]);
                    }
                    req.pieces = packed(&s.pieces);
                    req.inline = Bytes(inline);
                    self.start(d, &req, SMALL_REPLY)
                }
            };
            let started = settled(started, &mut writes.pending)?;
            writes.pending.push(started);
        }
        Ok(writes)
    }

    /// Reads each daemon's share of file `file_id` into `buf`, all at once. Bytes a
    /// daemon does not hold (a hole, or past the end of the file) read as zeros.
    /// Returns whether every piece was held whole (then the file reaches past the
    /// range: no daemon keeps bytes past the end of a file).
    pub(crate) fn read_shares(
        &self,
        file_id: u64,
        buf: &mut [u8],
        shares: Shares,
    ) -> Result<bool, Errno> {
        let mut sent = Vec::with_capacity(shares.len());
        let mut replies = Vec::with_capacity(shares.len());
        let mut windows = Vec::new();
        {
            let mr = if self.any_rma(&shares, Dir::Read) {
                Some(
                    self.fabric()?
                        .ep
                        .register_mut(buf)
                        .map_err(|e| fabric_errno(&e))?,
                )
            } else {
                None
            };
            let mut pending = Vec::with_capacity(shares.len());
            for (d, s) in shares {
                let way = self.way(d, s.bytes, Dir::Read);
                let lens = 8 * s.pieces.len();
                let (pieces, bulk, reply_max) = match way {
                    Way::Window => (
                        packed(&s.pieces),
                        Some(Bulk::window(s.bytes)),
                        SMALL_REPLY + lens,
                    ),
                    Way::Rma => {
                        let r = mr.as_ref().ok_or(Errno::EIO)?.remote();
                        let bulk = Bulk {
                            addr: r.addr,
                            key: r.key,
                            len: r.len,
                        };
                        (s.pieces.clone(), Some(bulk), SMALL_REPLY + lens)
                    }
                    Way::Inline => (packed(&s.pieces), None, s.bytes as usize + lens + 1024),
                };
                let req = ReadChunksReq {
                    file_id,
                    pieces,
                    bulk,
                };
                let started = settled(self.start(d, &req, reply_max), &mut pending)?;
                pending.push(started);
                sent.push((way, s));
            }
            // Every call finishes (local windows are kept for the copy below) before the
            // daemons' access to `buf` is revoked and the buffer is touched again.
            let mut first_err = None;
            for p in pending {
                match p.wait_window() {
                    Ok((r, w)) => {
                        replies.push(r);
                        windows.push(w);
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            drop(mr);
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        let mut whole = true;
        for (((way, s), reply), win) in sent.iter().zip(replies).zip(&windows) {
            if reply.lens.len() != s.pieces.len() {
                return Err(Errno::EPROTO);
            }
            // Where the bytes came, pieces back to back (None: already in place, by RMA).
            let came: Option<&[u8]> = match way {
                Way::Inline => Some(&reply.inline.0),
                Way::Window => Some(win.bytes()),
                Way::Rma => None,
            };
            let mut at = 0usize;
            for (p, &held) in s.pieces.iter().zip(&reply.lens) {
                whole &= held >= p.len;
                let held = held.min(p.len) as usize;
                let dst = &mut buf[range(p)];
                if let Some(came) = came {
                    let src = came.get(at..at + held).ok_or(Errno::EPROTO)?;
                    dst[..held].copy_from_slice(src);
                }
                // Past what the chunk holds is a hole: zeros.
                dst[held..].fill(0);
                at += p.len as usize;
            }
        }
        drop(windows);
        Ok(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_pieces_sit_back_to_back_in_order() {
        let p = |buf_offset, len| ChunkIo {
            chunk: 0,
            offset: 0,
            len,
            buf_offset,
        };
        let got: Vec<(u64, u64)> = packed(&[p(100, 5), p(40, 7), p(0, 1)])
            .iter()
            .map(|q| (q.buf_offset, q.len))
            .collect();
        assert_eq!(got, [(0, 5), (5, 7), (12, 1)]);
    }
}
