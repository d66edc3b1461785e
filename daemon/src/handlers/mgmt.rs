//! Management handlers: ping, stats, metrics, statfs.

use std::sync::atomic::Ordering;

use gkfs_proto::msg::*;
use gkfs_proto::Errno;

use crate::state::State;

pub fn ping(st: &State) -> Result<PingReply, RemoteError> {
    Ok(PingReply {
        pid: std::process::id(),
        index: st.membership().map_or(u32::MAX, |m| m.index),
    })
}

pub fn stats(st: &State) -> Result<StatsReply, RemoteError> {
    st.counters.add_elsewhere();
    let c = st.chunks.stats();
    Ok(StatsReply {
        records: st.meta.count(),
        chunks: c.chunks,
        chunk_bytes: c.bytes,
        requests: st.metrics.requests(),
        bytes_written: st.counters.bytes_written.load(Ordering::Relaxed),
        bytes_read: st.counters.bytes_read.load(Ordering::Relaxed),
    })
}

pub fn metrics(st: &State) -> Result<MetricsReply, RemoteError> {
    st.counters.add_elsewhere();
    let c = st.chunks.stats();
    Ok(MetricsReply {
        bytes_read: st.counters.bytes_read.load(Ordering::Relaxed),
        bytes_written: st.counters.bytes_written.load(Ordering::Relaxed),
        records: st.meta.count(),
        chunks: c.chunks,
        chunk_bytes: c.bytes,
        meta_bytes: st.meta.size_bytes(),
        local_connections: st.counters.local_connections.load(Ordering::Relaxed),
        fabric_peers: st.fabric_peers() as u64,
        metrics_address: st.metrics_address.get().cloned().unwrap_or_default(),
        ..st.metrics.snapshot()
    })
}

/// Longest a relayed call may wait.
const RELAY_MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub fn relay(st: &State, r: RelayReq) -> Result<RelayReply, RemoteError> {
    let timeout = std::time::Duration::from_millis(u64::from(r.timeout_ms)).min(RELAY_MAX_TIMEOUT);
    let max_reply = (r.max_reply as usize).min(gkfs_proto::limits::RELAY_MAX_REPLY);
    let reply = st.forward(r.target, &r.request.0, max_reply, timeout)?;
    Ok(RelayReply {
        reply: gkfs_proto::wire::Bytes(reply),
    })
}

pub fn report_unsupported(st: &State, r: ReportUnsupportedReq) -> Result<Empty, RemoteError> {
    st.metrics.add_unsupported(&r.calls);
    Ok(Empty {})
}

pub fn statfs(st: &State) -> Result<StatfsReply, RemoteError> {
    let vfs = nix::sys::statvfs::statvfs(&st.rootdir)
        .map_err(|e| RemoteError::new(Errno(e as i32), "statvfs of the rootdir"))?;
    let frag = vfs.fragment_size() as u64;
    Ok(StatfsReply {
        total: vfs.blocks() as u64 * frag,
        free: vfs.blocks_free() as u64 * frag,
        // What data writes may still take: the metadata's headroom is not for them.
        avail: (vfs.blocks_available() as u64 * frag).saturating_sub(st.chunks.space().reserve()),
        chunk_size: st.chunk_size.get(),
    })
}
