//! The gkfs client: a safe Rust API over the daemons of one file system.
//!
//! [`Client`] is built from the hosts file ([`Client::from_env`] reads
//! `LIBGKFS_HOSTS_FILE`); it is cheap to clone and safe to share between threads.
//! Every operation returns `Result<_, Errno>` with the errno POSIX names, so the
//! preload layer and the stage tools can hand it straight to their callers.
//!
//! A `pwrite` enters at [`File::pwrite`], is split into chunk pieces and grouped per
//! daemon, and leaves as one `WriteChunks` RPC per daemon (all in flight at once,
//! together with the size update) through `gkfs-fabric`.
//!
//! This crate never links the daemon; it depends only on `gkfs-proto` and
//! `gkfs-fabric`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bulk;
mod client;
mod data;
mod direct;
mod error;
mod links;
mod locks;
pub mod mountpath;
mod rpc;

pub use client::{file_time_now, Client, ClientConfig};
pub use data::{File, OpenOptions};
pub use direct::set_own_kept;
pub use error::ClientError;
pub use gkfs_proto::limits::{INLINE_READ_MAX, INLINE_WRITE_MAX};
pub use gkfs_proto::msg::lock;
pub use gkfs_proto::msg::{DirEntry, MetricsReply, OpMetrics, PingReply, StatfsReply, StatsReply};
pub use gkfs_proto::{Errno, Record};
pub use locks::{new_lock_owner, LockSpec};
pub use rpc::{set_while_waiting, FabricUse, LocalData, Transport, RELAY_LIMIT};

/// A random number, never 0: unique in a job for all practical purposes (lock owners,
/// names of hidden files).
pub fn unique_id() -> u64 {
    // From the OS, not rand's thread-local generator: a forked child at exit (its
    // thread-locals already destroyed) may open its first connection, which takes one.
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_next_u64()
        .unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 40)
        })
        .max(1)
}
