//! Typed RPC calls to daemons: encode with proto, send with fabric, decode the reply,
//! map failures to errno (and log the details).

use std::marker::PhantomData;
use std::time::Instant;

use gkfs_fabric::{Endpoint, Peer, PendingCall};
use gkfs_proto::msg::{decode_reply, encode_request, RequestHeader, Rpc};
use gkfs_proto::Errno;

use crate::error::fabric_errno;

/// Reply buffer for metadata calls.
pub const SMALL_REPLY: usize = 8 * 1024;

/// What every call needs: the endpoint, the daemons, the header fields.
pub(crate) struct Rpcs {
    pub ep: Endpoint,
    pub daemons: Vec<Peer>,
    pub token: u128,
    pub membership: u64,
    pub timeout: std::time::Duration,
    pub next_id: std::sync::atomic::AtomicU64,
}

/// A call in flight.
pub(crate) struct Pending<R: Rpc> {
    call: PendingCall,
    daemon: u32,
    deadline: Instant,
    _r: PhantomData<R>,
}

impl Rpcs {
    /// Sends `req` to daemon `d`; the reply may be up to `max_reply` bytes.
    pub fn start<R: Rpc>(&self, d: u32, req: &R, max_reply: usize) -> Result<Pending<R>, Errno> {
        let peer = *self.daemons.get(d as usize).ok_or(Errno::EINVAL)?;
        let request_id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let msg = encode_request(
            RequestHeader {
                opcode: 0,
                request_id,
                token: self.token,
                membership: self.membership,
            },
            req,
        );
        let deadline = Instant::now() + self.timeout;
        let call = self
            .ep
            .start_call(peer, &msg, max_reply, deadline)
            .map_err(|e| {
                log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                fabric_errno(&e)
            })?;
        Ok(Pending {
            call,
            daemon: d,
            deadline,
            _r: PhantomData,
        })
    }

    /// Sends `req` to daemon `d` and waits for the reply.
    pub fn call<R: Rpc>(&self, d: u32, req: &R) -> Result<R::Reply, Errno> {
        self.start(d, req, SMALL_REPLY)?.wait()
    }
}

impl<R: Rpc> Pending<R> {
    /// Waits for the reply.
    pub fn wait(self) -> Result<R::Reply, Errno> {
        let d = self.daemon;
        let bytes = self.call.wait(self.deadline).map_err(|e| {
            log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
            fabric_errno(&e)
        })?;
        match decode_reply::<R>(&bytes) {
            Ok((_, Ok(reply))) => Ok(reply),
            Ok((_, Err(remote))) => {
                if !remote.detail.is_empty() {
                    log::info!(
                        "{:?} on daemon {d}: {} ({})",
                        R::OPCODE,
                        remote.errno,
                        remote.detail
                    );
                }
                Err(remote.errno)
            }
            Err(e) => {
                log::warn!("undecodable {:?} reply from daemon {d}: {e}", R::OPCODE);
                Err(Errno::EPROTO)
            }
        }
    }
}

/// Waits for every call, returning the first error after all have finished.
pub(crate) fn wait_all<R: Rpc>(pending: Vec<Pending<R>>) -> Result<Vec<R::Reply>, Errno> {
    let mut out = Vec::with_capacity(pending.len());
    let mut first_err = None;
    for p in pending {
        match p.wait() {
            Ok(r) => out.push(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
