//! The fuzz targets: one per decoder a peer can reach, each with the checks it makes on
//! what the decoder accepted, a generator of valid encodings (seeds, and the strict
//! `decode(encode(x)) == x` check) and a dictionary for the mutator.
//!
//! A target panics when something is wrong: the decoder itself panicked, or what it
//! accepted does not survive re-encoding, or the reply the daemon would send for it
//! does not decode. Rejecting an input is fine.

use std::cell::{Cell, RefCell};
use std::fmt::Debug;

use gkfs_fabric::shm;
use gkfs_proto::hosts::{HostEntry, Hosts};
use gkfs_proto::local;
use gkfs_proto::msg::*;
use gkfs_proto::wire::{decode, encode, Bytes, Wire};
use gkfs_proto::{Errno, Record};
use gkfs_stage::manifest::{FileRecord, Manifest, Status};
use gkfs_stage::tree::Kind;

use crate::arb::{string_from, Arb};
use crate::rng::Rng;

/// What a target counts while it runs: inputs the decoder accepted, and per kind (the
/// message type, for the request and reply targets) inputs that reached it and were
/// accepted.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Inputs the decoder accepted.
    pub accepted: u64,
    /// Per kind: `[reached, accepted]`.
    pub kinds: Vec<[u64; 2]>,
}

impl Counters {
    /// Counters for `kinds` kinds.
    pub fn new(kinds: usize) -> Counters {
        Counters {
            accepted: 0,
            kinds: vec![[0; 2]; kinds],
        }
    }

    fn reach(&mut self, k: usize) {
        if let Some(c) = self.kinds.get_mut(k) {
            c[0] += 1;
        }
    }

    fn accept(&mut self, k: usize) {
        self.accepted += 1;
        if let Some(c) = self.kinds.get_mut(k) {
            c[1] += 1;
        }
    }
}

/// One fuzz target.
pub struct Target {
    /// Name on the command line.
    pub name: &'static str,
    /// The decoder(s) it drives, in words.
    pub about: &'static str,
    /// Runs the decoder and the checks on one input; panics on a bug.
    pub run: fn(&[u8], &mut Counters),
    /// A random valid encoding, checked strictly (`decode(encode(x)) == x`, and the
    /// bytes re-encode identically) before it is returned; panics on a bug.
    pub valid: fn(&mut Rng, &mut Counters) -> Vec<u8>,
    /// Tokens the mutator inserts.
    pub dict: &'static [&'static [u8]],
    /// Names of the kinds counted (empty: no per-kind counts).
    pub kinds: fn() -> Vec<String>,
}

/// Every target.
pub fn all() -> &'static [Target] {
    TARGETS
}

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

static TARGETS: &[Target] = &[
    Target {
        name: "request",
        about: "a request as a daemon receives it: RequestHeader::split, then dispatch() \
                decodes the body for every opcode of the rpcs! table; the reply it encodes \
                must decode",
        run: request,
        valid: valid_request,
        dict: BINARY_DICT,
        kinds: opcode_kinds_and_unknown,
    },
    Target {
        name: "reply",
        about: "a reply as a client receives it: first byte picks the opcode, then \
                decode_reply::<R> for that request type; re-encoding must round-trip",
        run: reply,
        valid: valid_reply,
        dict: BINARY_DICT,
        kinds: opcode_kinds,
    },
    Target {
        name: "frame",
        about: "a node-local byte stream: read_frame until the end (limit max_frame, or \
                256 bytes for odd-length inputs), every frame's payload through the \
                request target",
        run: frame,
        valid: valid_frames,
        dict: BINARY_DICT,
        kinds: opcode_kinds_and_unknown,
    },
    Target {
        name: "handshake",
        about: "the node-local channel handshake: 8 bytes (the daemon rejects other \
                lengths), parse_handshake",
        run: handshake,
        valid: valid_handshake,
        dict: BINARY_DICT,
        kinds: Vec::new,
    },
    Target {
        name: "hosts",
        about: "the hosts file (bytes read lossily as UTF-8): Hosts::parse and \
                Hosts::scan_mountdir; a parsed file must satisfy the format's rules and \
                print back to the same entries and membership",
        run: hosts,
        valid: valid_hosts,
        dict: HOSTS_DICT,
        kinds: Vec::new,
    },
    Target {
        name: "record",
        about: "the metadata record: Record::from_bytes",
        run: record,
        valid: valid_record,
        dict: BINARY_DICT,
        kinds: Vec::new,
    },
    Target {
        name: "manifest",
        about: "the stage manifest as Manifest::load reads it: UTF-8, then serde_json \
                into Manifest; compact and pretty re-serialisation must round-trip",
        run: manifest,
        valid: valid_manifest,
        dict: JSON_DICT,
        kinds: Vec::new,
    },
];

static BINARY_DICT: &[&[u8]] = &[
    &[3],             // PROTO_VERSION
    &[1],             // RECORD_VERSION, Some, true
    &[0, 0, 0, 0],    // empty string/list
    &[0, 0x10, 0, 0], // MAX_PATH
    &[1, 0x10, 0, 0], // MAX_PATH + 1
    &[0, 0, 1, 0],    // MAX_ITEMS
    &[1, 0, 1, 0],    // MAX_ITEMS + 1
    &[0xff, 0xff, 0xff, 0xff],
    b"GKWN",
    &[0xc3, 0xa9],             // é
    &[0xe2, 0x82, 0xac],       // €
    &[0xf0, 0x9f, 0x98, 0x80], // 😀
    &[0xed, 0xa0, 0x80],       // a surrogate: not UTF-8
    &[0xc0, 0x80],             // overlong NUL
    &[0xff],
];

static HOSTS_DICT: &[&[u8]] = &[
    b"chunk_size=",
    b"chunk_size=4096",
    b"chunk_size=524288",
    b"chunk_size=1073741824",
    b"chunk_size=2147483648",
    b"chunk_size=18446744073709551616",
    b"chunk_size=+4096",
    b"chunk_size=-4096",
    b"mountdir=",
    b"mountdir=/",
    b"mountdir=//",
    b"mountdir=/tmp/gkfs",
    b"mountdir=rel",
    b"socket=",
    b"socket=/s",
    b"socket=rel",
    b"pid=",
    b"pid=4242",
    b"pid=-1",
    b"pid=99999999999",
    b"tcp;ofi_rxm",
    b"shm",
    b"=",
    b"==",
    b"#",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b"\x0b",
    b"\x0c",
    b"0",
    b"00",
    b"ff",
    b"+f",
    b"-f",
    b"zz",
    b"0x",
    "\u{85}".as_bytes(),
    "\u{a0}".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{feff}".as_bytes(),
    "é".as_bytes(),
    b"\xff",
    b"\0",
];

static JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\u00e9",
    b"\\x",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"-1",
    b"1.5",
    b"1e400",
    b"-1e400",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"\"version\":",
    b"\"direction\":",
    b"\"src\":",
    b"\"dst\":",
    b"\"rank\":",
    b"\"nranks\":",
    b"\"complete\":",
    b"\"files\":",
    b"\"kind\":",
    b"\"size\":",
    b"\"mtime_ns\":",
    b"\"mode\":",
    b"\"checksum\":",
    b"\"status\":",
    b"\"error\":",
    b"\"file\"",
    b"\"dir\"",
    b"\"symlink\"",
    b"\"done\"",
    b"\"failed\"",
    b"\"\":",
    b"{}",
    b"[]",
    b"\xff",
    b"\xc3\xa9",
];

fn opcode_kinds() -> Vec<String> {
    Opcode::ALL.iter().map(|o| format!("{o:?}")).collect()
}

fn opcode_kinds_and_unknown() -> Vec<String> {
    let mut k = opcode_kinds();
    k.push("(unknown opcode)".into());
    k
}

/// Index of an opcode in [`Opcode::ALL`]; `ALL.len()` for an unknown one.
fn kind_of(opcode: u16) -> usize {
    Opcode::ALL
        .iter()
        .position(|o| *o as u16 == opcode)
        .unwrap_or(Opcode::ALL.len())
}

/// Runs `$body` with `$R` the request type of opcode `$op`, or `$unknown`. The match
/// is exhaustive: an opcode added to the rpcs! table breaks this build until the
/// fuzzers know it.
macro_rules! with_rpc {
    ($op:expr, |$R:ident| $body:expr, $unknown:expr) => {
        match Opcode::from_u16($op) {
            Some(Opcode::Ping) => {
                type $R = PingReq;
                $body
            }
            Some(Opcode::Stats) => {
                type $R = StatsReq;
                $body
            }
            Some(Opcode::Create) => {
                type $R = CreateReq;
                $body
            }
            Some(Opcode::Stat) => {
                type $R = StatReq;
                $body
            }
            Some(Opcode::Remove) => {
                type $R = RemoveReq;
                $body
            }
            Some(Opcode::UpdateSize) => {
                type $R = UpdateSizeReq;
                $body
            }
            Some(Opcode::GetSize) => {
                type $R = GetSizeReq;
                $body
            }
            Some(Opcode::Truncate) => {
                type $R = TruncateReq;
                $body
            }
            Some(Opcode::ReadDir) => {
                type $R = ReadDirReq;
                $body
            }
            Some(Opcode::PutRecord) => {
                type $R = PutRecordReq;
                $body
            }
            Some(Opcode::ScanPrefix) => {
                type $R = ScanPrefixReq;
                $body
            }
            Some(Opcode::WriteChunks) => {
                type $R = WriteChunksReq;
                $body
            }
            Some(Opcode::ReadChunks) => {
                type $R = ReadChunksReq;
                $body
            }
            Some(Opcode::TruncateChunks) => {
                type $R = TruncateChunksReq;
                $body
            }
            Some(Opcode::RemoveChunks) => {
                type $R = RemoveChunksReq;
                $body
            }
            Some(Opcode::Statfs) => {
                type $R = StatfsReq;
                $body
            }
            Some(Opcode::SetAttr) => {
                type $R = SetAttrReq;
                $body
            }
            Some(Opcode::Lock) => {
                type $R = LockReq;
                $body
            }
            Some(Opcode::LockLease) => {
                type $R = LockLeaseReq;
                $body
            }
            Some(Opcode::AdjustLinks) => {
                type $R = AdjustLinksReq;
                $body
            }
            Some(Opcode::Metrics) => {
                type $R = MetricsReq;
                $body
            }
            Some(Opcode::ReportUnsupported) => {
                type $R = ReportUnsupportedReq;
                $body
            }
            Some(Opcode::Relay) => {
                type $R = RelayReq;
                $body
            }
            Some(Opcode::ChunkDir) => {
                type $R = ChunkDirReq;
                $body
            }
            Some(Opcode::AllocateChunks) => {
                type $R = AllocateChunksReq;
                $body
            }
            None => $unknown,
        }
    };
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary
/// (what a reply's error detail is cut to).
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Longest error detail a reply carries.
const MAX_DETAIL: usize = 1024;

/// A daemon stand-in: every handler checks that the request it was given re-encodes to
/// the body's length and decodes back to itself, then answers a default reply, or
/// (`fail`) an EINVAL error whose detail quotes the request's bytes.
struct Checker<'a> {
    body: &'a [u8],
    fail: bool,
    decoded: Cell<bool>,
    detail: RefCell<String>,
}

impl Checker<'_> {
    fn check<T: Wire + PartialEq + Debug>(&self, req: &T) -> Result<(), RemoteError> {
        let again = encode(req);
        assert_eq!(
            again.len(),
            self.body.len(),
            "a decoded request re-encodes to another length: {req:?}"
        );
        let back: T = decode(&again).expect("a re-encoded request does not decode");
        assert!(back == *req, "a re-encoded request decodes differently");
        self.decoded.set(true);
        if self.fail {
            // What the peer sent, as the daemon's path errors quote the path.
            let quoted = String::from_utf8_lossy(&self.body[..self.body.len().min(2048)]);
            let detail = format!("invalid request `{}`", quoted.escape_debug());
            *self.detail.borrow_mut() = detail.clone();
            Err(RemoteError::new(Errno::EINVAL, detail))
        } else {
            Ok(())
        }
    }
}

macro_rules! checker_handler {
    ($($m:ident($req:ident) -> $rep:ident;)*) => {
        impl Handler for Checker<'_> {
            type Ctx = ();
            $(
                fn $m(&self, _: &(), req: $req) -> Result<$rep, RemoteError> {
                    self.check(&req)?;
                    Ok($rep::default())
                }
            )*
        }
    };
}

checker_handler! {
    ping(PingReq) -> PingReply;
    stats(StatsReq) -> StatsReply;
    create(CreateReq) -> CreateReply;
    stat(StatReq) -> StatReply;
    remove(RemoveReq) -> RemoveReply;
    update_size(UpdateSizeReq) -> UpdateSizeReply;
    get_size(GetSizeReq) -> GetSizeReply;
    truncate(TruncateReq) -> TruncateReply;
    read_dir(ReadDirReq) -> ReadDirReply;
    put_record(PutRecordReq) -> PutRecordReply;
    scan_prefix(ScanPrefixReq) -> ScanPrefixReply;
    write_chunks(WriteChunksReq) -> WriteChunksReply;
    read_chunks(ReadChunksReq) -> ReadChunksReply;
    truncate_chunks(TruncateChunksReq) -> Empty;
    remove_chunks(RemoveChunksReq) -> Empty;
    statfs(StatfsReq) -> StatfsReply;
    set_attr(SetAttrReq) -> StatReply;
    lock(LockReq) -> LockReply;
    lock_lease(LockLeaseReq) -> LockLeaseReply;
    adjust_links(AdjustLinksReq) -> AdjustLinksReply;
    metrics(MetricsReq) -> MetricsReply;
    report_unsupported(ReportUnsupportedReq) -> Empty;
    relay(RelayReq) -> RelayReply;
    chunk_dir(ChunkDirReq) -> ChunkDirReply;
    allocate_chunks(AllocateChunksReq) -> Empty;
}

/// Checks that an error detail that went through a reply is the original cut at a
/// character boundary to at most [`MAX_DETAIL`] bytes.
fn check_detail(sent: &str, got: &str) {
    assert_eq!(
        got,
        cut(sent, MAX_DETAIL),
        "error detail mangled by a reply"
    );
}

/// The request target: one message as the daemon's server receives it.
pub fn request(data: &[u8], c: &mut Counters) {
    let Ok((h, body)) = RequestHeader::split(data) else {
        return;
    };
    let mut head = Vec::new();
    h.put(&mut head);
    assert_eq!(
        head[..],
        data[..RequestHeader::LEN],
        "header re-encodes differently"
    );
    let k = kind_of(h.opcode);
    c.reach(k);
    let chk = Checker {
        body,
        fail: data.len() % 2 == 1,
        decoded: Cell::new(false),
        detail: RefCell::new(String::new()),
    };
    let reply = dispatch(&chk, &(), h.opcode, h.request_id, body);
    with_rpc!(
        h.opcode,
        |R| {
            let (id, res) =
                decode_reply::<R>(&reply).expect("the reply dispatch() encoded does not decode");
            assert_eq!(id, h.request_id, "reply carries another request id");
            match (chk.decoded.get(), chk.fail, res) {
                (true, false, Ok(rep)) => {
                    assert!(rep == Default::default(), "the handler's reply changed")
                }
                (true, true, Err(e)) => {
                    assert_eq!(e.errno, Errno::EINVAL);
                    check_detail(&chk.detail.borrow(), &e.detail);
                }
                (false, _, Err(e)) => assert_eq!(e.errno, Errno::EBADMSG),
                (d, f, r) => panic!("decoded {d}, fail {f}: unexpected reply {r:?}"),
            }
        },
        {
            let (id, res) = decode_reply::<PingReq>(&reply).expect("ENOSYS reply decodes");
            assert_eq!(id, h.request_id);
            assert_eq!(
                res.expect_err("unknown opcode answered").errno,
                Errno::ENOSYS
            );
        }
    );
    if chk.decoded.get() {
        c.accept(k);
    }
}

fn valid_request(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let op = *r.pick(Opcode::ALL);
    let header = RequestHeader::arb(r);
    let msg = with_rpc!(
        op as u16,
        |R| {
            let req = R::arb(r);
            let msg = encode_request(header, &req);
            let (h, body) = RequestHeader::split(&msg).expect("a valid header does not split");
            assert_eq!(
                (h.opcode, h.request_id, h.token, h.membership),
                (
                    op as u16,
                    header.request_id,
                    header.token,
                    header.membership
                )
            );
            assert_eq!(
                decode::<R>(body).expect("a valid request does not decode"),
                req
            );
            assert_eq!(encode(&req), body, "a valid request re-encodes differently");
            msg
        },
        unreachable!()
    );
    request(&msg, c);
    msg
}

/// The reply target: one reply as a client receives it; the first byte picks which
/// request it answers.
pub fn reply(data: &[u8], c: &mut Counters) {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let k = sel as usize % Opcode::ALL.len();
    c.reach(k);
    with_rpc!(
        Opcode::ALL[k] as u16,
        |R| {
            let Ok((id, res)) = decode_reply::<R>(msg) else {
                return;
            };
            c.accept(k);
            if let Err(e) = &res {
                assert_ne!(e.errno.0, 0, "an error reply with status 0");
            }
            let again = encode_reply(id, &res);
            if res.is_ok() {
                assert_eq!(
                    again.len(),
                    msg.len(),
                    "a reply re-encodes to another length"
                );
            }
            let (id2, res2) =
                decode_reply::<R>(&again).expect("a re-encoded reply does not decode");
            assert_eq!(id2, id);
            match (res, res2) {
                (Ok(a), Ok(b)) => assert!(a == b, "a re-encoded reply decodes differently"),
                (Err(a), Err(b)) => {
                    assert_eq!(a.errno, b.errno);
                    check_detail(&a.detail, &b.detail);
                }
                (a, b) => panic!("reply changed from {a:?} to {b:?}"),
            }
        },
        unreachable!()
    );
}

fn valid_reply(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let k = r.below(Opcode::ALL.len());
    let id = u64::arb(r);
    let msg = with_rpc!(
        Opcode::ALL[k] as u16,
        |R| {
            let res: Result<<R as Rpc>::Reply, RemoteError> = if r.one_in(3) {
                let errno = match i32::arb(r) {
                    0 => 5,
                    e => e,
                };
                Err(RemoteError::new(Errno(errno), String::arb(r)))
            } else {
                Ok(Arb::arb(r))
            };
            let msg = encode_reply(id, &res);
            let (id2, res2) = decode_reply::<R>(&msg).expect("a valid reply does not decode");
            assert_eq!(id2, id);
            match (&res, res2) {
                (Ok(a), Ok(b)) => {
                    assert!(*a == b, "a valid reply decodes differently");
                    let mut again = Vec::new();
                    ReplyHeader {
                        request_id: id,
                        status: 0,
                    }
                    .put(&mut again);
                    b.put(&mut again);
                    assert_eq!(again, msg, "a valid reply re-encodes differently");
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a.errno, b.errno);
                    check_detail(&a.detail, &b.detail);
                }
                (a, b) => panic!("reply changed from {a:?} to {b:?}"),
            }
            msg
        },
        unreachable!()
    );
    let mut out = vec![k as u8];
    out.extend_from_slice(&msg);
    reply(&out, c);
    out
}

/// The limit the frame target reads with.
fn frame_limit(data: &[u8]) -> usize {
    if data.len().is_multiple_of(2) {
        local::max_frame(4096)
    } else {
        256
    }
}

/// The frame target: a node-local stream, frame by frame, each payload a request.
pub fn frame(data: &[u8], c: &mut Counters) {
    let max = frame_limit(data);
    let mut rest = data;
    loop {
        let before = rest;
        match shm::read_frame(&mut rest, max) {
            Ok(Some(p)) => {
                assert!(p.len() <= max, "a frame over the limit was read");
                let used = before.len() - rest.len();
                let mut again = Vec::new();
                shm::write_frame(&mut again, &p).expect("a frame does not re-encode");
                assert_eq!(again[..], before[..used], "a frame re-encodes differently");
                request(&p, c);
            }
            Ok(None) => {
                assert!(before.len() < 4, "end of stream with a whole length left");
                return;
            }
            Err(e) => {
                let declared = before
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        assert!(declared.is_some_and(|d| d > max), "{e}")
                    }
                    std::io::ErrorKind::UnexpectedEof => {
                        assert!(declared.is_some_and(|d| d <= max && 4 + d > before.len()))
                    }
                    _ => panic!("unexpected frame error {e}"),
                }
                return;
            }
        }
    }
}

fn valid_frames(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let n = r.range(1, 4);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            if r.one_in(4) {
                Bytes::arb(r).0
            } else {
                valid_request(r, c)
            }
        })
        .collect();
    let mut stream = Vec::new();
    for p in &payloads {
        shm::write_frame(&mut stream, p).expect("write_frame");
    }
    let mut rest = &stream[..];
    let max = local::max_frame(4096);
    for p in &payloads {
        let got = shm::read_frame(&mut rest, max).expect("a valid frame does not read");
        assert_eq!(
            got.as_ref(),
            Some(p),
            "a valid frame reads back differently"
        );
    }
    assert!(shm::read_frame(&mut rest, max).expect("end").is_none());
    frame(&stream, c);
    stream
}

/// The handshake target.
pub fn handshake(data: &[u8], c: &mut Counters) {
    let Ok(hs) = <[u8; 8]>::try_from(data) else {
        return;
    };
    match shm::parse_handshake(&hs) {
        Some(size) => {
            assert_eq!(
                shm::handshake(size),
                hs,
                "a handshake re-encodes differently"
            );
            c.accept(0);
        }
        None => assert_ne!(
            hs[..4],
            shm::MAGIC.to_le_bytes(),
            "a handshake with the magic refused"
        ),
    }
}

fn valid_handshake(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let size = u32::arb(r);
    let hs = shm::handshake(size);
    assert_eq!(shm::parse_handshake(&hs), Some(size));
    handshake(&hs, c);
    hs.to_vec()
}

/// The hosts target.
pub fn hosts(data: &[u8], c: &mut Counters) {
    let text = String::from_utf8_lossy(data);
    if let Some(m) = Hosts::scan_mountdir(&text) {
        assert!(
            m.starts_with('/'),
            "scan_mountdir found a relative mount dir"
        );
    }
    let h = match Hosts::parse("fuzz", &text) {
        Ok(h) => h,
        Err(e) => {
            assert!(
                e.line <= text.lines().count(),
                "error names a line past the end"
            );
            let _ = e.to_string();
            return;
        }
    };
    c.accept(0);
    let first = &h.entries[0];
    for (i, e) in h.entries.iter().enumerate() {
        assert!(
            gkfs_proto::chunk::ChunkSize::new(e.chunk_size).is_some(),
            "invalid chunk size accepted"
        );
        assert!(
            e.mountdir.starts_with('/'),
            "a mount dir that is not absolute accepted: {:?}",
            e.mountdir
        );
        assert!(!e.mountdir.ends_with('/') || e.mountdir == "/");
        assert!(e.socket.as_ref().is_none_or(|s| s.starts_with('/')));
        assert!(
            (e.chunk_size, &e.mountdir, &e.provider)
                == (first.chunk_size, &first.mountdir, &first.provider),
            "daemons disagree"
        );
        assert!(
            h.entries[..i].iter().all(|o| o.address != e.address),
            "an address listed twice"
        );
    }
    let printed: String = h.entries.iter().map(HostEntry::to_line).collect();
    let again = Hosts::parse("printed", &printed)
        .unwrap_or_else(|e| panic!("a parsed hosts file does not print back: {e}"));
    assert_eq!(again, h, "a printed hosts file parses differently");
    assert_eq!(again.membership(), h.membership());
    assert_ne!(h.membership(), 0);
}

/// Hosts-file words: no whitespace, not starting with `#`.
const WORD: &[char] = &[
    'a', 'n', 'o', 'd', 'e', '1', '-', '.', ';', '_', '=', '#', 'é', '文', '😀',
];

fn word(r: &mut Rng) -> String {
    let mut w = string_from(r, WORD, 40);
    while w.starts_with('#') {
        w.remove(0);
    }
    if w.is_empty() {
        w.push('n');
    }
    w
}

fn abs_path(r: &mut Rng) -> String {
    let mut p = String::new();
    for _ in 0..r.range(1, 4) {
        p.push('/');
        p.push_str(&word(r));
    }
    p
}

fn valid_hosts(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let chunk_size = 1u64 << r.range(12, 30);
    let mountdir = abs_path(r);
    let provider = word(r);
    let n = r.range(1, 6);
    let mut entries: Vec<HostEntry> = Vec::new();
    while entries.len() < n {
        let e = HostEntry {
            hostname: word(r),
            provider: provider.clone(),
            address: (0..r.range(1, 24)).map(|_| r.next_u64() as u8).collect(),
            chunk_size,
            mountdir: mountdir.clone(),
            pid: r.one_in(2).then(|| u32::arb(r)),
            socket: r.one_in(2).then(|| abs_path(r)),
        };
        if entries.iter().all(|o| o.address != e.address) {
            entries.push(e);
        }
    }
    let mut text = String::new();
    for e in &entries {
        match r.below(6) {
            0 => text.push_str("# a comment\n"),
            1 => text.push('\n'),
            2 => text.push_str("  \t"),
            _ => {}
        }
        let line = e.to_line();
        if r.one_in(4) {
            text.push_str(line.trim_end());
            text.push_str(" future_key=1\r\n");
        } else {
            text.push_str(&line);
        }
    }
    let h = Hosts::parse("valid", &text).expect("a valid hosts file does not parse");
    assert_eq!(h.entries, entries, "a valid hosts file parses differently");
    hosts(text.as_bytes(), c);
    text.into_bytes()
}

/// The record target.
pub fn record(data: &[u8], c: &mut Counters) {
    let Ok(rec) = Record::from_bytes(data) else {
        return;
    };
    c.accept(0);
    assert_eq!(data.len(), Record::ENCODED_LEN);
    let again = rec.to_bytes();
    // All but the reserved word, which decoding ignores.
    assert_eq!(again[..61], data[..61], "a record re-encodes differently");
    assert_eq!(Record::from_bytes(&again), Ok(rec));
}

fn valid_record(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let rec = Record::arb(r);
    let b = rec.to_bytes();
    assert_eq!(b.len(), Record::ENCODED_LEN);
    assert_eq!(Record::from_bytes(&b), Ok(rec));
    record(&b, c);
    b
}

/// The manifest target.
pub fn manifest(data: &[u8], c: &mut Counters) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = serde_json::from_str::<Manifest>(text) else {
        return;
    };
    c.accept(0);
    let compact = serde_json::to_string(&m).expect("a manifest does not serialise");
    let back: Manifest = serde_json::from_str(&compact).expect("re-serialised manifest");
    assert_eq!(back, m, "a manifest round-trips differently");
    let pretty = serde_json::to_string_pretty(&m).expect("a manifest does not serialise");
    let back: Manifest = serde_json::from_str(&pretty).expect("pretty manifest");
    assert_eq!(back, m, "a pretty manifest round-trips differently");
    assert!(m.same_run(&m));
}

fn valid_manifest(r: &mut Rng, c: &mut Counters) -> Vec<u8> {
    let mut m = Manifest::new(
        if r.one_in(2) { "in" } else { "out" },
        &String::arb(r),
        &String::arb(r),
        u32::arb(r),
        u32::arb(r),
    );
    m.version = if r.one_in(4) { u32::arb(r) } else { 1 };
    m.complete = r.one_in(2);
    for _ in 0..r.below(12) {
        let name = string_from(r, &['a', '/', '.', '"', '\\', '\0', 'é', '😀'], 60);
        let rec = FileRecord {
            kind: *r.pick(&[Kind::File, Kind::Dir, Kind::Symlink]),
            size: u64::arb(r),
            mtime_ns: i64::arb(r),
            mode: u32::arb(r),
            checksum: r.one_in(2).then(|| format!("{:016x}", r.next_u64())),
            status: *r.pick(&[Status::Done, Status::Failed]),
            error: r.one_in(3).then(|| String::arb(r)),
        };
        m.files.insert(name, rec);
    }
    let text = if r.one_in(2) {
        serde_json::to_string_pretty(&m)
    } else {
        serde_json::to_string(&m)
    }
    .expect("a manifest does not serialise");
    let back: Manifest = serde_json::from_str(&text).expect("a valid manifest does not parse");
    assert_eq!(back, m, "a valid manifest parses differently");
    manifest(text.as_bytes(), c);
    text.into_bytes()
}
