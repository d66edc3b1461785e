//! How a data call's bytes travel: the one place that picks, per daemon, the shared
//! window, the request or reply itself (inline), or RMA, and does what the pick
//! needs: registering the caller's buffer once per call, packing pieces back to back,
//! landing what came back and zeroing holes. The data calls (`data.rs`) hand over the
//! caller's bytes ([`Rpcs::start_writes`]) or buffer ([`Rpcs::read_shares`]) and each
//! daemon's pieces of it; nothing there knows how bytes travel.

use std::collections::BTreeMap;

use gkfs_fabric::MemoryRegion;
use gkfs_proto::limits::{INLINE_READ_MAX, INLINE_WRITE_MAX, SMALL_REPLY};
use gkfs_proto::local::WINDOW_SIZE;
use gkfs_proto::msg::{
    Bulk, ChunkIo, ReadChunksReply, ReadChunksReq, Rpc, SizeUpdate, UpdateSizeReq, WriteChunksReq,
};
use gkfs_proto::wire::Bytes;
use gkfs_proto::Errno;

use crate::direct::ChunkDir;
use crate::error::fabric_errno;
use crate::rpc::{settled, wait_all, LocalRoute, Pending, Rpcs};

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
pub(crate) enum Dir {
    /// Bytes to the daemons.
    Write,
    /// Bytes from the daemons.
    Read,
}

/// The most bytes a daemon's share may have to go in the request or the reply itself.
fn inline_max(dir: Dir) -> u64 {
    match dir {
        Dir::Write => INLINE_WRITE_MAX,
        Dir::Read => INLINE_READ_MAX,
    }
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

/// A node-local share of at least this many bytes is cut into parts.
const PART_MIN: u64 = 256 * 1024;
/// Most parts a node-local share is cut into. Each part in flight holds a connection
/// (a daemon thread and a window), and two already keep both sides busy: dd of 1 MiB
/// blocks through the preload, 1 daemon, 2 cores: 1.3-1.7 GB/s write and 2.0-2.7 GB/s
/// read as one request, 1.7-2.6 and 2.4-3.3 cut in two or four.
const PARTS_MAX: u64 = 2;

/// A node-local share cut into parts of about equal size (at least [`PART_MIN`] bytes,
/// at most [`PARTS_MAX`] of them), each its own request on its own connection and
/// window. Then the client copies one part into its window while the daemon writes the
/// one before to disk (a read: the daemon fills one while the client copies the one
/// before out); as one request, the whole share is copied in and then written, one
/// after the other.
fn parts(s: Share) -> Vec<Share> {
    let n = (s.bytes / PART_MIN).min(PARTS_MAX);
    if n < 2 {
        return vec![s];
    }
    let per = s.bytes.div_ceil(n);
    let mut out = Vec::with_capacity(n as usize);
    let mut cur = Share::default();
    for p in s.pieces {
        let mut k = 0;
        while k < p.len {
            let take = (per - cur.bytes).min(p.len - k);
            cur.pieces.push(ChunkIo {
                chunk: p.chunk,
                offset: p.offset + k,
                len: take,
                buf_offset: p.buf_offset + k,
            });
            cur.bytes += take;
            k += take;
            if cur.bytes == per {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if cur.bytes > 0 {
        out.push(cur);
    }
    out
}

/// Lands one call's reply in `buf`: copies what came (from the reply or the window,
/// pieces back to back; by RMA it is already in place) and zeroes what the chunks do
/// not hold. Returns whether every piece was held whole.
fn land(
    buf: &mut [u8],
    way: Way,
    s: &Share,
    reply: &ReadChunksReply,
    window: &[u8],
) -> Result<bool, Errno> {
    if reply.lens.len() != s.pieces.len() {
        return Err(Errno::EPROTO);
    }
    let came: Option<&[u8]> = match way {
        Way::Inline => Some(&reply.inline.0),
        Way::Window => Some(window),
        Way::Rma => None,
    };
    let mut whole = true;
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
    Ok(whole)
}

/// A node-local daemon's share read here: the daemon, its route and chunk dir, the share.
type Here<'r> = (u32, &'r LocalRoute, &'r ChunkDir, Share);

/// Reads the shares of node-local daemons whose chunk files this process reads itself
/// ([`Rpcs::chunk_dir`]) into `buf`. Returns whether every piece was held whole, and
/// the shares that could not be read here (for their daemons to read).
fn read_here(file_id: u64, buf: &mut [u8], here: Vec<Here<'_>>) -> (bool, Shares) {
    let mut whole = true;
    let mut rest = Shares::new();
    for (d, route, dir, s) in here {
        let mut held_all = 0;
        let mut failed = None;
        for p in &s.pieces {
            match dir.read(file_id, p.chunk, p.offset, &mut buf[range(p)]) {
                Ok(held) => {
                    whole &= held as u64 >= p.len;
                    held_all += held as u64;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        route.count_elsewhere(held_all, 0);
        if let Some(e) = failed {
            // (No descriptor left, say: the daemon reads the whole share again.)
            log::debug!("reading daemon {d}'s chunks here: {e}; the daemon reads them");
            rest.insert(d, s);
        }
    }
    (whole, rest)
}

/// A read call in flight: how it travels, and the part of a share it reads.
type Call = (Way, Share);

/// Writes in flight. The caller's buffer stays registered until they are all over;
/// dropping this waits for them (a daemon may still be reading the buffer).
pub(crate) struct Writes<'a> {
    pending: Vec<Pending<WriteChunksReq>>,
    /// Size updates of shares written here to node-local chunk files.
    updates: Vec<Pending<UpdateSizeReq>>,
    mr: Option<MemoryRegion<'a>>,
}

impl Writes<'_> {
    /// Waits for every write; the first error after all are over. Else the file's size
    /// as the metadata owner answered the size update, if it went on its own (the
    /// share of that daemon was written here).
    pub fn finish(mut self) -> Result<Option<u64>, Errno> {
        let done = wait_all(std::mem::take(&mut self.pending)).map(|_| ());
        let updated = wait_all(std::mem::take(&mut self.updates));
        self.mr.take();
        done?;
        Ok(updated?.iter().map(|r| r.size).max())
    }
}

impl Drop for Writes<'_> {
    fn drop(&mut self) {
        let _ = wait_all(std::mem::take(&mut self.pending));
        let _ = wait_all(std::mem::take(&mut self.updates));
    }
}

impl Rpcs {
    /// How daemon `d`'s share of `bytes` travels: the one place that decides it (the
    /// limits are `gkfs_proto::limits`).
    fn way(&self, d: u32, bytes: u64, dir: Dir) -> Way {
        if self.is_local(d) {
            Way::Window
        } else if bytes > inline_max(dir) {
            Way::Rma
        } else {
            Way::Inline
        }
    }

    /// The most one call moves to or from daemon `d`: a local daemon's window; for
    /// another node's daemon, any amount (by RMA), unless this process cannot use
    /// libfabric ([`Rpcs::fabric_refused`]): then what goes inline, relayed by this
    /// node's daemon. The data calls cut larger transfers into spans ([`Rpcs::span_max`]).
    pub(crate) fn share_max(&self, d: u32, dir: Dir) -> u64 {
        if self.is_local(d) {
            WINDOW_SIZE as u64
        } else {
            self.remote_share_max(dir)
        }
    }

    /// [`Rpcs::share_max`] of every daemon on another node.
    fn remote_share_max(&self, dir: Dir) -> u64 {
        if self.fabric_refused() {
            inline_max(dir)
        } else {
            u64::MAX
        }
    }

    /// The smallest [`Rpcs::share_max`] of any daemon: a transfer of at most this many
    /// bytes is never cut, and a transfer that must be cut is cut into spans this long.
    pub(crate) fn span_max(&self, dir: Dir) -> u64 {
        let local = self.any_local().then_some(WINDOW_SIZE as u64);
        let remote = (!self.all_local()).then(|| self.remote_share_max(dir));
        local.into_iter().chain(remote).min().unwrap_or(u64::MAX)
    }

    /// Local daemon `d`'s share cut into [`parts`], while the connections the parts take
    /// fit the idle pool: a process whose threads all move large shares at once would
    /// otherwise reconnect on every call.
    fn local_parts(&self, d: u32, s: Share) -> Vec<Share> {
        if self.local_room(d, PARTS_MAX as usize) {
            parts(s)
        } else {
            vec![s]
        }
    }

    /// Starts a data call to daemon `d` that moves `bytes` the `way` given: one that
    /// lends the caller's buffer for RMA waits for the transfer polling
    /// ([`Pending::moving`]).
    fn start_data<R: Rpc>(
        &self,
        d: u32,
        req: &R,
        reply_max: usize,
        way: Way,
        bytes: u64,
    ) -> Result<Pending<R>, Errno> {
        let p = self.start(d, req, reply_max)?;
        Ok(if way == Way::Rma { p.moving(bytes) } else { p })
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
            updates: Vec::new(),
            mr,
        };
        for (d, s) in shares {
            let mut update = size_update(d);
            if self.write_here(d, file_id, data, &s) {
                // The bytes are in place: only the size update (if it was to ride along)
                // goes to the daemon. (If it cannot start, dropping `writes` waits for
                // the calls in flight.)
                if let Some(u) = update.take() {
                    let req: UpdateSizeReq = u.into();
                    writes.updates.push(self.start(d, &req, SMALL_REPLY)?);
                }
                continue;
            }
            let req = |pieces, bulk, inline, size_update| WriteChunksReq {
                file_id,
                pieces,
                bulk,
                inline,
                size_update,
            };
            let started = match self.way(d, s.bytes, Dir::Write) {
                Way::Window => {
                    // The daemon writes the pieces to disk straight from the window; the
                    // size update rides with the first part.
                    for part in self.local_parts(d, s) {
                        let put: Vec<&[u8]> = part.pieces.iter().map(|p| &data[range(p)]).collect();
                        let r = req(
                            packed(&part.pieces),
                            Some(Bulk::window(part.bytes)),
                            Bytes::default(),
                            update.take(),
                        );
                        let started = self.start_with(d, &r, SMALL_REPLY, &put);
                        let started = settled(started, &mut writes.pending)?;
                        writes.pending.push(started);
                    }
                    continue;
                }
                Way::Rma => {
                    let bulk = writes.mr.as_ref().ok_or(Errno::EIO)?.remote().into();
                    let bytes = s.bytes;
                    let r = req(s.pieces, Some(bulk), Bytes::default(), update);
                    self.start_data(d, &r, SMALL_REPLY, Way::Rma, bytes)
                }
                Way::Inline => {
                    let mut inline = Vec::with_capacity(s.bytes as usize);
                    for p in &s.pieces {
                        inline.extend_from_slice(&data[range(p)]);
                    }
                    let r = req(packed(&s.pieces), None, Bytes(inline), update);
                    self.start(d, &r, SMALL_REPLY)
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
        let mut whole = true;
        let mut first_err = None;
        // The shares of node-local daemons whose chunk files this process reads itself,
        // and the others.
        let mut here = Vec::new();
        let mut others = Shares::new();
        for (d, s) in shares {
            match self.chunk_dir(d) {
                Some((route, dir)) => here.push((d, route, dir, s)),
                None => {
                    others.insert(d, s);
                }
            }
        }
        let mut shares = others;
        if !self.any_rma(&shares, Dir::Read) {
            // Nothing lent to a daemon by RMA: each reply lands as it comes, while the
            // daemons still fill the windows of the later ones.
            let (mut pending, mut sent) = self.start_reads(file_id, None, shares)?;
            // Meanwhile the node-local chunks are read here.
            let (w, rest) = read_here(file_id, buf, here);
            whole &= w;
            if !rest.is_empty() {
                let (p, s) = self.start_reads(file_id, None, rest)?;
                pending.extend(p);
                sent.extend(s);
            }
            for (p, (way, s)) in pending.into_iter().zip(&sent) {
                let landed = p
                    .wait_window()
                    .and_then(|(r, w)| land(buf, *way, s, &r, w.bytes()));
                match landed {
                    Ok(w) => whole &= w,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            return first_err.map_or(Ok(whole), Err);
        }
        let (w, rest) = read_here(file_id, buf, here);
        whole &= w;
        shares.extend(rest);
        let mr = self
            .fabric()?
            .ep
            .register_mut(buf)
            .map_err(|e| fabric_errno(&e))?;
        let (pending, sent) = self.start_reads(file_id, Some(mr.remote()), shares)?;
        // Every call finishes (local windows are kept for the copy below) before the
        // daemons' access to `buf` is revoked and the buffer is touched again.
        let mut replies = Vec::with_capacity(pending.len());
        for p in pending {
            match p.wait_window() {
                Ok(r) => replies.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        drop(mr);
        if let Some(e) = first_err {
            return Err(e);
        }
        for ((way, s), (reply, win)) in sent.iter().zip(&replies) {
            whole &= land(buf, *way, s, reply, win.bytes())?;
        }
        Ok(whole)
    }

    /// Writes daemon `d`'s share `s` of `data` straight to its chunk files, if `d` is on
    /// this node, this process can use its chunk files ([`Rpcs::chunk_dir`]) and there
    /// is room above the daemon's reserve. Returns whether it did; if not (or a write
    /// failed: no descriptor left, say), the daemon writes the share, all of it.
    fn write_here(&self, d: u32, file_id: u64, data: &[u8], s: &Share) -> bool {
        let Some((route, dir)) = self.chunk_dir(d) else {
            return false;
        };
        if !dir.room(s.bytes) {
            return false;
        }
        for p in &s.pieces {
            if let Err(e) = dir.write(file_id, p.chunk, p.offset, &data[range(p)]) {
                log::debug!("writing daemon {d}'s chunks here: {e}; the daemon writes them");
                return false;
            }
        }
        route.count_elsewhere(0, s.bytes);
        true
    }

    /// Starts the read calls of every share (`remote`: the caller's buffer, registered,
    /// if any share moves by RMA); each call with the way it travels and the part of
    /// the share it reads. If one cannot be started, those already started are waited
    /// for first.
    fn start_reads(
        &self,
        file_id: u64,
        remote: Option<gkfs_fabric::RemoteBuf>,
        shares: Shares,
    ) -> Result<(Vec<Pending<ReadChunksReq>>, Vec<Call>), Errno> {
        let mut pending = Vec::with_capacity(shares.len());
        let mut sent = Vec::with_capacity(shares.len());
        for (d, s) in shares {
            let way = self.way(d, s.bytes, Dir::Read);
            let calls = match way {
                Way::Window => self.local_parts(d, s),
                _ => vec![s],
            };
            for s in calls {
                let lens = 8 * s.pieces.len();
                let (pieces, bulk, reply_max) = match way {
                    Way::Window => (
                        packed(&s.pieces),
                        Some(Bulk::window(s.bytes)),
                        SMALL_REPLY + lens,
                    ),
                    Way::Rma => {
                        let bulk = remote.ok_or(Errno::EIO)?.into();
                        (s.pieces.clone(), Some(bulk), SMALL_REPLY + lens)
                    }
                    Way::Inline => (packed(&s.pieces), None, s.bytes as usize + lens + 1024),
                };
                let req = ReadChunksReq {
                    file_id,
                    pieces,
                    bulk,
                };
                let started = self.start_data(d, &req, reply_max, way, s.bytes);
                let started = settled(started, &mut pending)?;
                pending.push(started);
                sent.push((way, s));
            }
        }
        Ok((pending, sent))
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

    #[test]
    fn a_large_share_is_cut_into_parts_that_cover_it_once_in_order() {
        let k = 1024u64;
        let piece = |chunk, offset, len, buf_offset| ChunkIo {
            chunk,
            offset,
            len,
            buf_offset,
        };
        // 1 MiB in two 512 KiB chunk pieces, plus a 100-byte tail.
        let pieces = vec![
            piece(3, 0, 512 * k, 0),
            piece(4, 0, 512 * k, 512 * k),
            piece(5, 0, 100, 1024 * k),
        ];
        let bytes = pieces.iter().map(|p| p.len).sum();
        let got = parts(Share { pieces, bytes });
        assert_eq!(got.len(), PARTS_MAX as usize);
        let mut at = 0;
        for part in &got {
            assert_eq!(part.bytes, part.pieces.iter().map(|p| p.len).sum::<u64>());
            for p in &part.pieces {
                // Back to back in the buffer, and each byte's chunk offset matches.
                assert_eq!(p.buf_offset, at);
                assert_eq!(p.chunk * 512 * k + p.offset, 3 * 512 * k + at);
                at += p.len;
            }
        }
        assert_eq!(at, bytes);
        // Small shares stay whole.
        let small = parts(Share {
            pieces: vec![piece(0, 0, 300 * k, 0)],
            bytes: 300 * k,
        });
        assert_eq!(small.len(), 1);
    }
}
