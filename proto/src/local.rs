//! The node-local channel: a daemon also listens on a unix socket (its hosts line says
//! `socket=PATH`), and clients on the same host send it the same requests there, framed
//! by a length, without libfabric. Bulk (RMA) descriptors are not used on it: data
//! travels inline, up to [`max_data`] bytes per message.
//!
//! Frame: `u32` little-endian payload length, then the payload (a request: header and
//! body as on the fabric; or a reply).
//!
//! Shared window: a connection starts with a handshake of 8 bytes, [`WINDOW_MAGIC`] and
//! the window size (both `u32` little-endian), sent with `sendmsg` carrying one memfd in
//! `SCM_RIGHTS` (or no fd and size 0: no window). Both sides map the memfd. A data
//! request then names the window with a `Bulk` descriptor (`addr` = offset in the
//! window, `key` = 0): the daemon writes chunks straight from it and reads chunks
//! straight into it, as it does with RMA over the fabric. One call at a time uses a
//! connection, so the window is the call's alone.

use std::io::{self, Read, Write};

/// First word of the window handshake ("GKWN").
pub const WINDOW_MAGIC: u32 = u32::from_le_bytes(*b"GKWN");
/// Size of the shared window a client creates per connection.
pub const WINDOW_SIZE: usize = 8 << 20;

/// The 8 handshake bytes for a window of `size` bytes.
pub fn handshake(size: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&WINDOW_MAGIC.to_le_bytes());
    b[4..].copy_from_slice(&size.to_le_bytes());
    b
}

/// The window size in handshake bytes, None if they are not a handshake.
pub fn parse_handshake(b: &[u8; 8]) -> Option<u32> {
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (magic == WINDOW_MAGIC).then(|| u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

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

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    match read_frame_len(r, max)? {
        Some(len) => read_frame_body(r, len).map(Some),
        None => Ok(None),
    }
}

/// Reads a frame's length (at most `max`); `Ok(None)` at a clean end of stream.
pub fn read_frame_len(r: &mut impl Read, max: usize) -> io::Result<Option<usize>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    Ok(Some(len))
}

/// How long a frame's sender may stall half way before the receiver gives up on the
/// connection (and frees what it received).
pub const FRAME_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the `len` bytes of a frame's body. The buffer grows with the bytes that
/// arrive: a peer that announces a large frame and stops half way holds no more
/// memory than it actually sent.
pub fn read_frame_body(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(FRAME_START));
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut short: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

/// Capacity a frame's buffer starts with (it grows as the bytes arrive).
const FRAME_START: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut v = Vec::new();
        write_frame(&mut v, b"hello").unwrap();
        write_frame(&mut v, b"").unwrap();
        let mut r = &v[..];
        assert_eq!(read_frame(&mut r, 10).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 10).unwrap().unwrap(), b"");
        assert!(read_frame(&mut r, 10).unwrap().is_none());
        let mut r = &v[..];
        assert!(read_frame(&mut r, 4).is_err());
        let mut short = &v[..6];
        assert!(read_frame(&mut short, 10).is_err());
        assert_eq!(max_data(4096), MIN_MAX_DATA);
        assert_eq!(max_data(64 << 20), 64 << 20);
    }
}
