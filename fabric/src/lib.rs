//! The gkfs transport: libfabric RDM endpoints, RPCs over tagged messages, and bulk
//! data by RMA. All libfabric FFI, and all of gkfs's unsafe transport code, lives in
//! this crate; the rest of the workspace sees only safe types.
//!
//! - [`Endpoint::open`] picks the provider (`tcp;ofi_rxm` by default; `verbs;ofi_rxm`,
//!   `shm`, `sockets` by name) and publishes an [`Endpoint::address`].
//! - A client calls [`Endpoint::call`] (or [`Endpoint::start_call`] to overlap many).
//! - A server calls [`Endpoint::serve`], then loops on [`Endpoint::next_request`] and
//!   answers with [`Endpoint::reply`].
//! - Bulk data: the owner of a buffer [`Endpoint::register`]s it and sends its
//!   [`RemoteBuf`]; the peer moves the bytes with [`Endpoint::start_read`] /
//!   [`Endpoint::start_write`].
//!
//! Waiting never spins: one waiting thread blocks in `fi_cq_sread`, the others on a
//! condition variable. Every wait has a deadline.
//!
//! A daemon's handlers move a request's bulk data through [`bulk::Sender`], the same
//! calls whichever carrier brought the request.
//!
//! It also holds the node-local channel ([`shm::Channel`]: a unix socket and a shared
//! memory region with a request slot, a reply slot and a data window, polled while
//! that pays) and the polling rules both carriers share ([`spin`]).
//!
//! Node-local clients that read and write chunk files themselves learn from the
//! daemon's [`cuts`] counters when what they hold may have gone stale.
//!
//! This crate knows nothing of file systems (it depends on no other gkfs crate).
#![deny(missing_docs)]

pub mod bulk;
pub mod chunk_file;
pub mod cuts;
mod endpoint;
mod error;
pub mod shm;
pub mod spin;
mod sys;

pub use endpoint::{
    loaded_before_fork, Config, Endpoint, MemoryRegion, Peer, PendingCall, PendingRma, RemoteBuf,
    Request,
};
pub use error::FabricError;
