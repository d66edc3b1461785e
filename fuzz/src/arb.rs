//! Random valid values of every message type, for seeds and for the round-trip check.
//!
//! Values stay inside the protocol's limits (strings of at most `MAX_PATH` bytes), and
//! lean towards the edges: 0, 1, the largest values, empty and long strings, multibyte
//! and control characters. Every struct lists all its fields, so a field added to a
//! message breaks this build until the generator knows it.

use gkfs_proto::msg::*;
use gkfs_proto::wire::{Bytes, MAX_PATH};
use gkfs_proto::Record;

use crate::rng::Rng;

/// A type with random valid values.
pub trait Arb: Sized {
    /// One random value.
    fn arb(r: &mut Rng) -> Self;
}

macro_rules! arb_uint {
    ($($t:ty),*) => {$(
        impl Arb for $t {
            fn arb(r: &mut Rng) -> Self {
                match r.below(8) {
                    0 => 0,
                    1 => 1,
                    2 => <$t>::MAX,
                    3 => <$t>::MAX - 1,
                    4 => r.below(300) as $t,
                    5 => (1 as $t) << (r.below(<$t>::BITS as usize)),
                    _ => r.next_u64() as $t,
                }
            }
        }
    )*};
}
arb_uint!(u8, u16, u32, u64);

impl Arb for u128 {
    fn arb(r: &mut Rng) -> Self {
        (u128::from(r.next_u64()) << 64) | u128::from(r.next_u64())
    }
}

macro_rules! arb_int {
    ($($t:ty),*) => {$(
        impl Arb for $t {
            fn arb(r: &mut Rng) -> Self {
                match r.below(8) {
                    0 => 0,
                    1 => -1,
                    2 => <$t>::MAX,
                    3 => <$t>::MIN,
                    4 => r.below(1000) as $t - 500,
                    _ => r.next_u64() as $t,
                }
            }
        }
    )*};
}
arb_int!(i32, i64);

impl Arb for bool {
    fn arb(r: &mut Rng) -> Self {
        r.one_in(2)
    }
}

/// Characters strings are made of: path characters, the one-to-four-byte UTF-8
/// lengths, controls, and characters Rust counts as whitespace.
const CHARS: &[char] = &[
    'a', 'b', 'z', 'A', '0', '9', '/', '/', '/', '.', '-', '_', ' ', '\0', '\n', '\t', '`', '"',
    '\\', '\u{7f}', '\u{85}', '\u{a0}', 'é', 'ß', '€', '\u{2028}', '\u{feff}', '文', '𝄞', '😀',
];

/// A string of at most `max` bytes from `chars`.
pub fn string_from(r: &mut Rng, chars: &[char], max: usize) -> String {
    let target = match r.below(10) {
        0 => 0,
        1..=6 => r.below(40),
        7 | 8 => r.below(600),
        _ => r.range(max.saturating_sub(8), max),
    }
    .min(max);
    let mut s = String::with_capacity(target);
    loop {
        let c = *r.pick(chars);
        if s.len() + c.len_utf8() > target {
            break;
        }
        s.push(c);
    }
    s
}

impl Arb for String {
    fn arb(r: &mut Rng) -> Self {
        if r.one_in(3) {
            // Mostly ASCII, like real paths.
            string_from(r, &CHARS[..12], MAX_PATH)
        } else {
            string_from(r, CHARS, MAX_PATH)
        }
    }
}

impl Arb for Bytes {
    fn arb(r: &mut Rng) -> Self {
        let n = match r.below(10) {
            0 => 0,
            1..=7 => r.below(64),
            8 => r.below(4096),
            _ => r.range(60_000, 70_000),
        };
        Bytes((0..n).map(|_| r.next_u64() as u8).collect())
    }
}

impl<T: Arb> Arb for Vec<T> {
    fn arb(r: &mut Rng) -> Self {
        let n = match r.below(10) {
            0 => 0,
            1..=8 => r.range(1, 5),
            _ => r.range(6, 40),
        };
        (0..n).map(|_| T::arb(r)).collect()
    }
}

impl<T: Arb> Arb for Option<T> {
    fn arb(r: &mut Rng) -> Self {
        r.one_in(2).then(|| T::arb(r))
    }
}

impl Arb for Record {
    fn arb(r: &mut Rng) -> Self {
        Record {
            mode: Arb::arb(r),
            size: Arb::arb(r),
            file_id: Arb::arb(r),
            ctime: Arb::arb(r),
            mtime: Arb::arb(r),
            atime: Arb::arb(r),
            nlink: Arb::arb(r),
            uid: Arb::arb(r),
            gid: Arb::arb(r),
            flags: Arb::arb(r),
        }
    }
}

macro_rules! arb_struct {
    ($($t:ident { $($f:ident),* };)*) => {$(
        impl Arb for $t {
            #[allow(unused_variables)]
            fn arb(r: &mut Rng) -> Self {
                $t { $($f: Arb::arb(r)),* }
            }
        }
    )*};
}

arb_struct! {
    Empty {};
    PingReq {};
    PingReply { pid, index };
    StatsReq {};
    StatsReply { records, chunks, chunk_bytes, requests, bytes_written, bytes_read };
    CreateReq { path, mode, uid, gid, exclusive, time, check_parent };
    CreateReply { record, created };
    StatReq { path };
    StatReply { record };
    RemoveReq { path, kind };
    RemoveReply { record };
    UpdateSizeReq { path, end, append_len, mtime };
    UpdateSizeReply { offset, size };
    GetSizeReq { path };
    GetSizeReply { size };
    TruncateReq { path, size, mtime };
    TruncateReply { old };
    ReadDirReq { dir, start_after, max };
    DirEntry { name, mode, size };
    ReadDirReply { entries, more };
    PutRecordReq { path, record, replace };
    PutRecordReply { replaced };
    ScanPrefixReq { prefix, start_after, max };
    PathRecord { path, record };
    ScanPrefixReply { records, more };
    Bulk { addr, key, len };
    ChunkIo { chunk, offset, len, buf_offset };
    SizeUpdate { path, end, mtime };
    WriteChunksReq { file_id, pieces, bulk, inline, size_update };
    WriteChunksReply { written };
    ReadChunksReq { file_id, pieces, bulk };
    ReadChunksReply { lens, inline };
    TruncateChunksReq { file_id, size };
    RemoveChunksReq { file_id };
    StatfsReq {};
    StatfsReply { total, free, avail, chunk_size };
    SetAttrReq { path, mode, atime, mtime, ctime };
    LockReq { path, owner, space, kind, start, end, test, pid };
    LockReply { granted, conflict_kind, conflict_start, conflict_end, conflict_pid };
    LockLeaseReq { owners, release, path };
    LockLeaseReply { held };
    AdjustLinksReq { path, delta, ctime };
    AdjustLinksReply { record };
    MetricsReq {};
    OpMetrics { opcode, count, errors, total_ns, buckets };
    ErrnoCount { errno, count };
    MetricsReply { uptime_ns, ops, errors, bytes_read, bytes_written, records, chunks, chunk_bytes, meta_bytes, local_connections, fabric_peers, unsupported, metrics_address };
    CallCount { call, count };
    ReportUnsupportedReq { calls };
    RelayReq { target, request, max_reply, timeout_ms };
    RelayReply { reply };
    ChunkDirReq {};
    ChunkDirReply { path, dev, ino, reserve, cuts };
    AllocateChunksReq { file_id, offset, len, daemons };
}

impl Arb for RequestHeader {
    fn arb(r: &mut Rng) -> Self {
        RequestHeader {
            opcode: 0, // encode_request sets it
            request_id: Arb::arb(r),
            token: Arb::arb(r),
            membership: Arb::arb(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_stay_within_the_limit_and_reach_it() {
        let mut r = Rng::new(3);
        let mut longest = 0;
        let mut multibyte = false;
        for _ in 0..2000 {
            let s = String::arb(&mut r);
            assert!(s.len() <= MAX_PATH);
            longest = longest.max(s.len());
            multibyte |= s.len() != s.chars().count();
        }
        assert!(longest > MAX_PATH - 8, "{longest}");
        assert!(multibyte);
    }
}
