//! Protocol limits: the sizes both sides must agree on, in one place beside the
//! [`crate::msg`] table (which also says which requests skip the membership check:
//! [`crate::msg::Opcode::checks_membership`]).

use crate::path::MAX_PATH;

/// Largest request a daemon receives over libfabric (its posted receive buffers); a
/// larger one is answered EMSGSIZE.
pub const MAX_REQUEST: usize = 256 * 1024;
/// Largest per-daemon write a client sends inline in the request over libfabric;
/// larger ones move by RMA from the caller's buffer. Far below [`MAX_REQUEST`]: the
/// header, the pieces and a size update ride along.
pub const INLINE_WRITE_MAX: u64 = 32 * 1024;
/// Largest per-daemon read a daemon answers inline over libfabric; larger ones move by
/// RMA into the caller's buffer.
pub const INLINE_READ_MAX: u64 = 64 * 1024;
/// Reply buffer for metadata calls.
pub const SMALL_REPLY: usize = 8 * 1024;
/// Reply buffer for a directory page.
pub const PAGE_REPLY: usize = 64 * 1024;
/// Cap on the encoded size of a directory page a daemon answers (below [`PAGE_REPLY`],
/// with room for the reply's header).
pub const PAGE_BYTES: usize = 48 * 1024;
/// Records per prefix-scan page.
pub const SCAN_PAGE: u32 = 64;
/// Reply buffer for a prefix-scan page of [`SCAN_PAGE`] records.
pub const SCAN_REPLY: usize = SCAN_PAGE as usize * (MAX_PATH + 128) + 1024;
/// Largest reply a relayed call may ask for ([`crate::msg::RelayReq`]).
pub const RELAY_MAX_REPLY: usize = 4 << 20;

const _: () = assert!(PAGE_BYTES + 1024 <= PAGE_REPLY);
const _: () = assert!((INLINE_WRITE_MAX as usize) * 2 <= MAX_REQUEST);
