//! What every side of gkfs speaks: RPC messages and their binary encoding, the
//! metadata record, chunk arithmetic, the placement functions, the hosts file and the
//! shared configuration names.
//!
//! This crate is pure: no system calls (the node-local framing in [`local`] works on any
//! `Read`/`Write`), no environment, no transport, no dependency on any other gkfs
//! crate. Protocol sizes live in [`limits`].
//! Every decoder takes `&[u8]` and returns a `Result`; none panics on any input.
//!
//! A `pwrite` enters here twice: the client splits it with [`chunk::ChunkSize::split`],
//! places each piece with [`place::place_chunk`], and encodes a
//! [`msg::WriteChunksReq`] per daemon with [`msg::encode_request`]; the daemon decodes
//! it in [`msg::dispatch`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod chunk;
pub mod config;
pub mod errno;
pub mod hosts;
pub mod limits;
pub mod local;
pub mod msg;
pub mod path;
pub mod place;
pub mod record;
pub mod stage_list;
pub mod wire;

pub use errno::Errno;
pub use record::Record;
