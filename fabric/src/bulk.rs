//! A request's bulk data as the daemon's handlers see it, whatever carried the
//! request: the client's registered memory on another node (moved by RMA, the next
//! transfer in flight while the handler works on the previous piece) or the shared
//! window of a node-local connection (read and written in place, no copy). Handlers
//! name pieces of the client's buffer and take their bytes, or say which chunk file
//! holds the bytes to send; how the bytes travel stays here (a large piece for another
//! node goes straight from the chunk file's page cache, with no copy on this side).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use gkfs_proto::msg::Bulk;

use crate::chunk_file::{self, HeldMap};
use crate::shm::{SharedWindow, WindowLease};
use crate::{Endpoint, FabricError, Peer, RemoteBuf};

/// RMA transfers in flight per request while the handler works on earlier pieces.
const PIPELINE_DEPTH: usize = 2;

/// Largest buffer a thread keeps for its next transfers.
const SPARE_MAX: usize = 4 << 20;

thread_local! {
    /// The RMA buffers of this thread's last transfers, for its next ones: a fresh
    /// buffer costs its page faults and zeroing on every request.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn spare_buf() -> Vec<u8> {
    SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
}

fn keep_buf(b: Vec<u8>) {
    // (A write sent from a mapping gives back an empty buffer.)
    if b.capacity() > 0 && b.capacity() <= SPARE_MAX {
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() <= PIPELINE_DEPTH {
                s.push(b);
            }
        });
    }
}

/// Who sent a request, as far as its handlers need to know: how its bulk data moves,
/// and which process of this node sent it.
#[derive(Debug, Clone)]
pub struct Sender(Via);

#[derive(Debug, Clone)]
enum Via {
    /// A libfabric peer: bulk data by RMA through the endpoint the request came on.
    Fabric(Endpoint, Peer),
    /// A process on this node, through the node-local channel.
    Local {
        /// The data window it shares, if any.
        window: Option<SharedWindow>,
        /// Its pid (SO_PEERCRED at connect).
        pid: Option<i32>,
    },
}

/// Why a bulk transfer failed.
#[derive(Debug)]
pub enum BulkError<E> {
    /// The shared window is lent to another request of the same connection.
    WindowBusy,
    /// A piece lies outside the shared window.
    OutsideWindow,
    /// The request names bulk data, but the connection shares no window.
    NoWindow,
    /// An RMA transfer failed.
    Transfer(FabricError),
    /// Reading the data to send failed.
    Read(std::io::Error),
    /// The handler's own step failed.
    Handler(E),
}

impl<E> From<FabricError> for BulkError<E> {
    fn from(e: FabricError) -> Self {
        BulkError::Transfer(e)
    }
}

/// Where a request's bulk data is.
enum Target<'a> {
    /// With a fabric peer, by RMA.
    Rma(&'a Endpoint, Peer),
    /// In the connection's window, lent to this request.
    Window(WindowLease<'a>),
}

impl Sender {
    fn target<E>(&self) -> Result<Target<'_>, BulkError<E>> {
        match &self.0 {
            Via::Fabric(ep, peer) => Ok(Target::Rma(ep, *peer)),
            Via::Local { window, .. } => {
                let window = window.as_ref().ok_or(BulkError::NoWindow)?;
                Ok(Target::Window(window.lease().ok_or(BulkError::WindowBusy)?))
            }
        }
    }

    /// A libfabric peer, whose request came on `ep`.
    pub fn fabric(ep: Endpoint, peer: Peer) -> Sender {
        Sender(Via::Fabric(ep, peer))
    }

    /// A process on this node (its window, if it shares one; its pid, if known).
    pub fn local(window: Option<SharedWindow>, pid: Option<i32>) -> Sender {
        Sender(Via::Local { window, pid })
    }

    /// Did the request come through the node-local channel?
    pub fn is_local(&self) -> bool {
        matches!(self.0, Via::Local { .. })
    }

    /// The sending process, for a node-local request whose pid is known.
    pub fn local_pid(&self) -> Option<i32> {
        match self.0 {
            Via::Local { pid, .. } => pid,
            Via::Fabric(..) => None,
        }
    }

    /// Takes the bulk data piece by piece: `range(p)` is piece `p`'s offset and length
    /// in the client's buffer `buf` (as the request names it), and `sink` gets each
    /// piece's bytes, in order. Transfers end by `deadline`.
    pub fn pull<T, E>(
        &self,
        buf: &Bulk,
        pieces: &[T],
        range: impl Fn(&T) -> (u64, u64),
        deadline: Instant,
        mut sink: impl FnMut(&T, &[u8]) -> Result<(), E>,
    ) -> Result<(), BulkError<E>> {
        let (ep, peer) = match self.target()? {
            Target::Rma(ep, peer) => (ep, peer),
            Target::Window(lease) => {
                for p in pieces {
                    let (off, len) = range(p);
                    let data = lease.get(buf.addr.saturating_add(off), len);
                    sink(p, data.ok_or(BulkError::OutsideWindow)?).map_err(BulkError::Handler)?;
                }
                return Ok(());
            }
        };
        let mut next = 0;
        let mut inflight = VecDeque::new();
        loop {
            while next < pieces.len() && inflight.len() < PIPELINE_DEPTH {
                let p = &pieces[next];
                let (off, len) = range(p);
                let b = spare_buf();
                inflight.push_back((
                    p,
                    ep.start_read(peer, RemoteBuf::from(buf), off, b, len as usize, deadline)?,
                ));
                next += 1;
            }
            let Some((p, op)) = inflight.pop_front() else {
                return Ok(());
            };
            let data = op.wait(deadline)?;
            // The next transfer is already in flight while the handler works.
            sink(p, &data).map_err(BulkError::Handler)?;
            keep_buf(data);
        }
    }

    /// Fills the client's buffer `buf` (as the request names it) piece by piece:
    /// `range(p)` is piece `p`'s offset and length there, and `source(p)` says what the
    /// piece holds. Returns how many bytes each piece held (the rest of it is a hole,
    /// left for the client to zero). Large pieces go to another node straight from a
    /// chunk file's page cache when `source` gives them mapped. Transfers end by
    /// `deadline`.
    pub fn push<T, E>(
        &self,
        buf: &Bulk,
        pieces: &[T],
        range: impl Fn(&T) -> (u64, u64),
        deadline: Instant,
        mut source: impl FnMut(&T) -> Result<PieceData, E>,
    ) -> Result<Vec<u64>, BulkError<E>> {
        let mut held = Vec::with_capacity(pieces.len());
        let (ep, peer) = match self.target()? {
            Target::Rma(ep, peer) => (ep, peer),
            Target::Window(mut lease) => {
                for p in pieces {
                    let (off, len) = range(p);
                    let dst = lease.get_mut(buf.addr.saturating_add(off), len);
                    let data = source(p).map_err(BulkError::Handler)?;
                    held.push(data.read_into(dst.ok_or(BulkError::OutsideWindow)?)?);
                }
                return Ok(held);
            }
        };
        let remote = RemoteBuf::from(buf);
        let mut inflight = VecDeque::new();
        for p in pieces {
            let (off, len) = range(p);
            let data = source(p).map_err(BulkError::Handler)?;
            // Reading this piece overlaps the transfers still in flight.
            let op = match data {
                PieceData::Mapped(map) => {
                    held.push(map.len() as u64);
                    ep.start_write_held(peer, remote, off, map, deadline)?
                }
                // (Nothing is sent: the client zero-fills.)
                PieceData::Hole => {
                    held.push(0);
                    continue;
                }
                PieceData::File(..) => {
                    let mut b = spare_buf();
                    b.resize(len as usize, 0);
                    let n = data.read_into(&mut b)?;
                    held.push(n);
                    if n == 0 {
                        keep_buf(b);
                        continue;
                    }
                    b.truncate(n as usize);
                    ep.start_write(peer, remote, off, b, deadline)?
                }
            };
            inflight.push_back(op);
            if inflight.len() >= PIPELINE_DEPTH {
                if let Some(op) = inflight.pop_front() {
                    keep_buf(op.wait(deadline)?);
                }
            }
        }
        for op in inflight {
            keep_buf(op.wait(deadline)?);
        }
        Ok(held)
    }
}

/// What a piece sent by [`Sender::push`] holds.
pub enum PieceData {
    /// The bytes chunk file `.0` holds from offset `.1` (past its end: a hole).
    File(Arc<File>, u64),
    /// The bytes of a mapped chunk file (past them: a hole).
    Mapped(HeldMap),
    /// Nothing: all of it is a hole.
    Hole,
}

impl PieceData {
    /// Reads the piece into `dst` (zeroing what is a hole); returns the bytes held.
    fn read_into<E>(&self, dst: &mut [u8]) -> Result<u64, BulkError<E>> {
        match self {
            PieceData::File(f, at) => chunk_file::read_held(f, *at, dst)
                .map(|n| n as u64)
                .map_err(BulkError::Read),
            PieceData::Mapped(map) => {
                let n = map.copy_to(dst);
                dst[n..].fill(0);
                Ok(n as u64)
            }
            PieceData::Hole => {
                dst.fill(0);
                Ok(0)
            }
        }
    }
}
