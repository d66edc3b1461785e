//! The request loop: worker threads take requests from the endpoint, check header,
//! token and membership, dispatch, and reply. Nothing a client sends can stop it:
//! undecodable input gets an error reply, a panic in a handler becomes EIO.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gkfs_fabric::bulk::Sender;
use gkfs_fabric::{FabricError, Request};
use gkfs_proto::msg::{dispatch, encode_reply, Opcode, RemoteError, RequestHeader};
use gkfs_proto::Errno;

use crate::state::State;

/// Starts `threads` workers serving requests until `stop` is set and the endpoint
/// is shut down.
pub fn start(state: Arc<State>, threads: usize, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    (0..threads.max(1))
        .map(|i| {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("gkfsd-worker-{i}"))
                .spawn(move || worker(&state, &stop))
                .unwrap_or_else(|e| {
                    log::error!("cannot start worker thread: {e}");
                    std::process::exit(1)
                })
        })
        .collect()
}

fn worker(state: &State, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match state
            .ep
            .next_request(Instant::now() + Duration::from_millis(500))
        {
            Ok(Some(req)) => {
                let long = RequestHeader::split(req.payload())
                    .ok()
                    .and_then(|(h, _)| Opcode::from_u16(h.opcode))
                    .is_some_and(Opcode::takes_long);
                if long {
                    state.ep.hand_over();
                }
                let reply = handle(state, &req);
                if let Err(e) = state.ep.reply(&req, reply) {
                    log::warn!("cannot send a reply: {e}");
                }
            }
            Ok(None) => break,
            Err(FabricError::Timeout) => {}
            Err(e) => {
                log::error!("transport: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Turns one fabric request into its reply bytes.
pub fn handle(state: &State, req: &Request) -> Vec<u8> {
    handle_payload(
        state,
        req.payload(),
        req.truncated,
        Sender::fabric(state.ep.clone(), req.from),
    )
}

/// Turns one request (header and body) into its reply bytes.
pub fn handle_payload(state: &State, payload: &[u8], truncated: bool, from: Sender) -> Vec<u8> {
    let (h, body) = match RequestHeader::split(payload) {
        Ok(x) => x,
        Err(e) => {
            log::warn!("undecodable request header: {e}");
            return encode_reply::<()>(
                0,
                &Err(RemoteError::new(
                    Errno::EBADMSG,
                    format!("bad request header: {e}"),
                )),
            );
        }
    };
    if truncated {
        return encode_reply::<()>(
            h.request_id,
            &Err(RemoteError::new(
                Errno::EMSGSIZE,
                "request larger than the daemon's receive buffers",
            )),
        );
    }
    if h.token != state.token {
        log::warn!(
            "refused a request with a wrong job token (opcode {})",
            h.opcode
        );
        return encode_reply::<()>(
            h.request_id,
            &Err(RemoteError::new(
                Errno::EACCES,
                "wrong job token: this file system belongs to another job or user",
            )),
        );
    }
    if Opcode::from_u16(h.opcode).is_none_or(Opcode::checks_membership) {
        if let Err(detail) = state.check_membership(h.membership) {
            return encode_reply::<()>(h.request_id, &Err(RemoteError::new(Errno::ESTALE, detail)));
        }
    }
    let started = std::time::Instant::now();
    let reply = catch_unwind(AssertUnwindSafe(|| {
        dispatch(state, &from, h.opcode, h.request_id, body)
    }));
    let status = match &reply {
        Ok(r) => gkfs_proto::msg::ReplyHeader::split(r).map_or(0, |(rh, _)| rh.status),
        Err(_) => libc::EIO,
    };
    state.metrics.record(h.opcode, status, started.elapsed());
    match reply {
        Ok(reply) => reply,
        Err(_) => {
            log::error!("a handler panicked on opcode {}; answered EIO", h.opcode);
            encode_reply::<()>(
                h.request_id,
                &Err(RemoteError::new(Errno::EIO, "internal error in the daemon")),
            )
        }
    }
}
