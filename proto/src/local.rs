//! The node-local channel's limits. A daemon also listens on a unix socket (its hosts
//! line says `socket=PATH`), and clients on the same host send it the same requests
//! there, without libfabric: small messages through slots in memory both sides map,
//! others as frames on the socket, bulk data in a shared window the request names with a
//! `Bulk` descriptor (`addr` = offset in the window, `key` = 0). `gkfs_fabric::shm` is
//! the channel itself; these are the numbers both ends agree on.

/// Size of the shared data window a client hands its node's daemon per connection.
pub const WINDOW_SIZE: usize = 8 << 20;

/// Data bytes one local message may carry at least (more if the chunk is larger).
pub const MIN_MAX_DATA: u64 = 16 << 20;

/// Data bytes one local message may carry with chunk size `chunk_size`.
pub fn max_data(chunk_size: u64) -> u64 {
    MIN_MAX_DATA.max(chunk_size)
}

/// Largest frame accepted with chunk size `chunk_size` (data plus headers and the
/// piece list).
pub fn max_frame(chunk_size: u64) -> usize {
    (max_data(chunk_size) + (2 << 20)) as usize
}

/// How long a frame's sender may stall half way (or a new connection wait with its
/// handshake) before the daemon gives up on the connection and frees what it received.
pub const FRAME_STALL: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_grow_with_the_chunk_size() {
        assert_eq!(max_data(4096), MIN_MAX_DATA);
        assert_eq!(max_data(64 << 20), 64 << 20);
        assert!(max_frame(4096) > MIN_MAX_DATA as usize);
    }
}
