//! RPC messages: the header, and every request with its reply, defined once.
//!
//! A request on the wire is a [`RequestHeader`] followed by the request body; a reply
//! is a [`ReplyHeader`] followed by the reply body (or, when `status != 0`, by a
//! human-readable error detail string). The [`rpcs!`] table below is the only place
//! that pairs an opcode with its types: it generates the [`Opcode`] enum, the
//! [`Rpc`] trait impls the client uses, and [`Handler`] + [`dispatch`] the daemon uses.
//! Opcodes are never reused.

use crate::errno::Errno;
use crate::record::Record;
use crate::wire::{decode, Bytes, DecodeError, Reader, Wire};
use crate::wire_struct;

/// Protocol version carried in every header.
pub const PROTO_VERSION: u8 = 3;

impl Wire for u128 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(u128::from_le_bytes(r.array("u128")?))
    }
}

/// The fixed header in front of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestHeader {
    /// Operation.
    pub opcode: u16,
    /// Caller-chosen id, echoed in the reply.
    pub request_id: u64,
    /// The job token; requests with a wrong token are refused.
    pub token: u128,
    /// Membership hash of the caller's hosts file; 0 means "do not check" and is
    /// accepted only for [`Opcode::Ping`].
    pub membership: u64,
}

impl RequestHeader {
    /// Encoded length.
    pub const LEN: usize = 1 + 2 + 8 + 16 + 8;

    /// Encodes the header (with [`PROTO_VERSION`]) into `out`.
    pub fn put(&self, out: &mut Vec<u8>) {
        PROTO_VERSION.put(out);
        self.opcode.put(out);
        self.request_id.put(out);
        self.token.put(out);
        self.membership.put(out);
    }

    /// Decodes a header, returning it and the body that follows.
    pub fn split(buf: &[u8]) -> Result<(RequestHeader, &[u8]), DecodeError> {
        let mut r = Reader::new(buf);
        let v = u8::get(&mut r)?;
        if v != PROTO_VERSION {
            return Err(DecodeError::Version(v));
        }
        let h = RequestHeader {
            opcode: Wire::get(&mut r)?,
            request_id: Wire::get(&mut r)?,
            token: Wire::get(&mut r)?,
            membership: Wire::get(&mut r)?,
        };
        Ok((h, &buf[Self::LEN..]))
    }
}

/// The fixed header in front of every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    /// The request's id.
    pub request_id: u64,
    /// 0 on success, else an errno value; the body is then an error detail string.
    pub status: i32,
}

impl ReplyHeader {
    /// Encoded length.
    pub const LEN: usize = 1 + 8 + 4;

    /// Encodes the header into `out`.
    pub fn put(&self, out: &mut Vec<u8>) {
        PROTO_VERSION.put(out);
        self.request_id.put(out);
        self.status.put(out);
    }

    /// Decodes a header, returning it and the body that follows.
    pub fn split(buf: &[u8]) -> Result<(ReplyHeader, &[u8]), DecodeError> {
        let mut r = Reader::new(buf);
        let v = u8::get(&mut r)?;
        if v != PROTO_VERSION {
            return Err(DecodeError::Version(v));
        }
        let h = ReplyHeader {
            request_id: Wire::get(&mut r)?,
            status: Wire::get(&mut r)?,
        };
        Ok((h, &buf[Self::LEN..]))
    }
}

/// An error returned by a daemon: an errno plus a detail message for logs and users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// The errno value.
    pub errno: Errno,
    /// What went wrong, in words.
    pub detail: String,
}

impl From<Errno> for RemoteError {
    fn from(errno: Errno) -> Self {
        RemoteError {
            errno,
            detail: String::new(),
        }
    }
}

impl RemoteError {
    /// An error with a detail message.
    pub fn new(errno: Errno, detail: impl Into<String>) -> Self {
        RemoteError {
            errno,
            detail: detail.into(),
        }
    }
}

/// Encodes a complete request message.
pub fn encode_request<R: Rpc>(header: RequestHeader, req: &R) -> Vec<u8> {
    let mut out = Vec::with_capacity(RequestHeader::LEN + 64);
    RequestHeader {
        opcode: R::OPCODE as u16,
        ..header
    }
    .put(&mut out);
    req.put(&mut out);
    out
}

/// Encodes a complete reply message.
pub fn encode_reply<T: Wire>(request_id: u64, result: &Result<T, RemoteError>) -> Vec<u8> {
    let mut out = Vec::with_capacity(ReplyHeader::LEN + 64);
    match result {
        Ok(body) => {
            ReplyHeader {
                request_id,
                status: 0,
            }
            .put(&mut out);
            body.put(&mut out);
        }
        Err(e) => {
            ReplyHeader {
                request_id,
                status: e.errno.0,
            }
            .put(&mut out);
            // At most 1024 bytes, cut at a character boundary (a detail may quote a
            // client's path).
            let mut end = e.detail.len().min(1024);
            while !e.detail.is_char_boundary(end) {
                end -= 1;
            }
            e.detail[..end].to_string().put(&mut out);
        }
    }
    out
}

/// Decodes a complete reply message for request type `R`.
pub fn decode_reply<R: Rpc>(
    buf: &[u8],
) -> Result<(u64, Result<R::Reply, RemoteError>), DecodeError> {
    let (h, body) = ReplyHeader::split(buf)?;
    if h.status == 0 {
        Ok((h.request_id, Ok(decode::<R::Reply>(body)?)))
    } else {
        let detail = decode::<String>(body).unwrap_or_default();
        Ok((h.request_id, Err(RemoteError::new(Errno(h.status), detail))))
    }
}

/// A request type: its opcode and reply type.
pub trait Rpc: Wire {
    /// The opcode on the wire.
    const OPCODE: Opcode;
    /// What the daemon answers.
    type Reply: Wire;
}

macro_rules! rpcs {
    ($($code:literal $name:ident $method:ident ($req:ident) -> $reply:ident;)*) => {
        /// Every operation, with its stable number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Opcode {
            $(
                #[doc = concat!("[`", stringify!($req), "`] -> [`", stringify!($reply), "`]")]
                $name = $code,
            )*
        }

        impl Opcode {
            /// Looks up an opcode number.
            pub fn from_u16(v: u16) -> Option<Opcode> {
                match v {
                    $($code => Some(Opcode::$name),)*
                    _ => None,
                }
            }

            /// Every opcode.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];
        }

        $(
            impl Rpc for $req {
                const OPCODE: Opcode = Opcode::$name;
                type Reply = $reply;
            }
        )*

        /// The daemon side: one method per operation. `Ctx` is whatever the server
        /// passes along with each request (e.g. who sent it).
        pub trait Handler {
            /// Per-request context.
            type Ctx;
            $(
                #[doc = concat!("Handles [`", stringify!($req), "`].")]
                fn $method(&self, ctx: &Self::Ctx, req: $req) -> Result<$reply, RemoteError>;
            )*
        }

        /// Decodes a request body for `opcode`, calls the handler, and encodes the reply
        /// body. A body that does not decode becomes an `EBADMSG` error reply.
        pub fn dispatch<H: Handler + ?Sized>(h: &H, ctx: &H::Ctx, opcode: u16, request_id: u64, body: &[u8]) -> Vec<u8> {
            match Opcode::from_u16(opcode) {
                $(Some(Opcode::$name) => {
                    let result = decode::<$req>(body)
                        .map_err(|e| RemoteError::new(Errno::EBADMSG, format!("bad {} request: {e}", stringify!($name))))
                        .and_then(|req| h.$method(ctx, req));
                    encode_reply(request_id, &result)
                })*
                None => encode_reply::<()>(
                    request_id,
                    &Err(RemoteError::new(Errno::ENOSYS, format!("unknown opcode {opcode}"))),
                ),
            }
        }
    };
}

impl Wire for () {
    fn put(&self, _out: &mut Vec<u8>) {}
    fn get(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

rpcs! {
    1 Ping ping(PingReq) -> PingReply;
    2 Stats stats(StatsReq) -> StatsReply;
    3 Create create(CreateReq) -> CreateReply;
    4 Stat stat(StatReq) -> StatReply;
    5 Remove remove(RemoveReq) -> RemoveReply;
    6 UpdateSize update_size(UpdateSizeReq) -> UpdateSizeReply;
    7 GetSize get_size(GetSizeReq) -> GetSizeReply;
    8 Truncate truncate(TruncateReq) -> TruncateReply;
    9 ReadDir read_dir(ReadDirReq) -> ReadDirReply;
    10 PutRecord put_record(PutRecordReq) -> PutRecordReply;
    11 ScanPrefix scan_prefix(ScanPrefixReq) -> ScanPrefixReply;
    12 WriteChunks write_chunks(WriteChunksReq) -> WriteChunksReply;
    13 ReadChunks read_chunks(ReadChunksReq) -> ReadChunksReply;
    14 TruncateChunks truncate_chunks(TruncateChunksReq) -> Empty;
    15 RemoveChunks remove_chunks(RemoveChunksReq) -> Empty;
    16 Statfs statfs(StatfsReq) -> StatfsReply;
    17 SetAttr set_attr(SetAttrReq) -> StatReply;
    18 Lock lock(LockReq) -> LockReply;
    19 LockLease lock_lease(LockLeaseReq) -> LockLeaseReply;
    20 AdjustLinks adjust_links(AdjustLinksReq) -> AdjustLinksReply;
    21 Metrics metrics(MetricsReq) -> MetricsReply;
    22 ReportUnsupported report_unsupported(ReportUnsupportedReq) -> Empty;
    23 Relay relay(RelayReq) -> RelayReply;
    24 ChunkDir chunk_dir(ChunkDirReq) -> ChunkDirReply;
    25 AllocateChunks allocate_chunks(AllocateChunksReq) -> Empty;
}

impl Opcode {
    /// The name of request type `opcode` as reports show it (`"Create"`; `"opcode 99"`
    /// for one this build does not know).
    pub fn name_of(opcode: u16) -> String {
        Opcode::from_u16(opcode).map_or(format!("opcode {opcode}"), |o| format!("{o:?}"))
    }

    /// Does a daemon check this request's membership hash (refusing a caller whose
    /// hosts file differs)? Not for the management requests, which launchers and
    /// monitoring send before, or without, knowing the membership.
    pub fn checks_membership(self) -> bool {
        !matches!(
            self,
            Opcode::Ping | Opcode::Stats | Opcode::Statfs | Opcode::Metrics
        )
    }

    /// May serving it take long (many chunk files, scans of many records)? A daemon
    /// thread serving such a request leaves the endpoint to another thread at once; one
    /// serving a short request keeps it. Reads and writes of chunks are not among them:
    /// their RMA waits lead the endpoint (reaping their own completions, handing
    /// requests that come meanwhile to other threads), so only one piece's disk step
    /// runs with nobody polling, and a hand-over cost two wake-ups per request (a third
    /// of 1 MiB remote reads on 2 cores).
    pub fn takes_long(self) -> bool {
        matches!(
            self,
            Opcode::ReadDir
                | Opcode::ScanPrefix
                | Opcode::TruncateChunks
                | Opcode::RemoveChunks
                | Opcode::AllocateChunks
                | Opcode::Stats
                | Opcode::Metrics
        )
    }
}

/// Latency buckets of [`OpMetrics::buckets`]: bucket 0 counts requests served in
/// under 1 µs, bucket i (1..) those that took [2^(i-1), 2^i) µs; the last one all
/// slower ones (about 4 s and more).
pub const LATENCY_BUCKETS: usize = 24;

/// Lock kinds of [`LockReq::kind`].
pub mod lock {
    /// A shared (read) lock.
    pub const READ: u8 = 0;
    /// An exclusive (write) lock.
    pub const WRITE: u8 = 1;
    /// Drop the owner's locks in the range.
    pub const UNLOCK: u8 = 2;
    /// [`LockReq::space`] of fcntl locks (POSIX and OFD locks, which conflict with
    /// each other, as in Linux).
    pub const SPACE_FCNTL: u8 = 0;
    /// [`LockReq::space`] of flock locks (whole file, independent of fcntl locks).
    pub const SPACE_FLOCK: u8 = 1;
    /// [`LockReq::end`] of a range that runs to the end of the file, however far it
    /// grows.
    pub const TO_EOF: u64 = u64::MAX;
    /// A lock its owner has not renewed for this long is dropped by the daemon: a
    /// process killed while holding one leaves nothing behind for longer.
    pub const LEASE: std::time::Duration = std::time::Duration::from_secs(10);
    /// How often a client renews the leases of the locks it holds.
    pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
}

wire_struct! {
    /// Nothing.
    pub struct Empty {}
}
wire_struct! {
    /// Liveness check; accepted with membership 0.
    pub struct PingReq {}
}
wire_struct! {
    /// Answer to [`PingReq`].
    pub struct PingReply {
        /// The daemon's process id.
        pub pid: u32,
        /// The daemon's index in the hosts file, or `u32::MAX` before it knows.
        pub index: u32,
    }
}
wire_struct! {
    /// Ask for the daemon's counters.
    pub struct StatsReq {}
}
wire_struct! {
    /// The daemon's counters.
    pub struct StatsReply {
        /// Metadata records (files, directories, links) stored here.
        pub records: u64,
        /// Chunk files stored here.
        pub chunks: u64,
        /// Bytes in chunk files stored here.
        pub chunk_bytes: u64,
        /// Requests served since start.
        pub requests: u64,
        /// Bytes written by clients since start.
        pub bytes_written: u64,
        /// Bytes read by clients since start.
        pub bytes_read: u64,
    }
}
wire_struct! {
    /// Create a file or directory record (the type comes from `mode`).
    pub struct CreateReq {
        /// Absolute path inside the file system.
        pub path: String,
        /// Type and permission bits.
        pub mode: u32,
        /// Owner.
        pub uid: u32,
        /// Group.
        pub gid: u32,
        /// Fail with EEXIST if the path exists (else return the existing record).
        pub exclusive: bool,
        /// Creation time, ns since the epoch.
        pub time: i64,
        /// Check first that the parent directory exists and is a directory (ENOENT,
        /// ENOTDIR); the client sets it when this daemon also holds the parent's
        /// record, saving the separate lookup.
        pub check_parent: bool,
    }
}
wire_struct! {
    /// Answer to [`CreateReq`].
    pub struct CreateReply {
        /// The record now stored.
        pub record: Record,
        /// False when the path existed already.
        pub created: bool,
    }
}
wire_struct! {
    /// Read one record.
    pub struct StatReq {
        /// Path.
        pub path: String,
    }
}
wire_struct! {
    /// A record.
    pub struct StatReply {
        /// The record.
        pub record: Record,
    }
}
wire_struct! {
    /// Remove one record. `kind`: 0 any, 1 must not be a directory (unlink), 2 must be
    /// a directory (rmdir; the caller has checked it is empty).
    pub struct RemoveReq {
        /// Path.
        pub path: String,
        /// What the caller expects to remove.
        pub kind: u8,
    }
}
wire_struct! {
    /// Answer to [`RemoveReq`].
    pub struct RemoveReply {
        /// The record that was removed.
        pub record: Record,
    }
}
wire_struct! {
    /// Grow the size to at least `end`, or (if `append_len > 0`) reserve
    /// `append_len` bytes at the current end.
    pub struct UpdateSizeReq {
        /// Path.
        pub path: String,
        /// New minimum size.
        pub end: u64,
        /// Bytes to reserve at the end (O_APPEND), or 0.
        pub append_len: u64,
        /// Modification time, ns.
        pub mtime: i64,
    }
}
wire_struct! {
    /// Answer to [`UpdateSizeReq`].
    pub struct UpdateSizeReply {
        /// For an append: where the reserved range starts. Else the requested end.
        pub offset: u64,
        /// The file's size once this update is in (at least: a concurrent update may
        /// have raised it since).
        pub size: u64,
    }
}
wire_struct! {
    /// Read the size.
    pub struct GetSizeReq {
        /// Path.
        pub path: String,
    }
}
wire_struct! {
    /// Answer to [`GetSizeReq`].
    pub struct GetSizeReply {
        /// Size in bytes.
        pub size: u64,
    }
}
wire_struct! {
    /// Set the size exactly.
    pub struct TruncateReq {
        /// Path.
        pub path: String,
        /// New size.
        pub size: u64,
        /// Modification time, ns.
        pub mtime: i64,
    }
}
wire_struct! {
    /// Answer to [`TruncateReq`].
    pub struct TruncateReply {
        /// The record before the change.
        pub old: Record,
    }
}
wire_struct! {
    /// List the direct children of `dir` stored on this daemon, in key order, after
    /// `start_after` (a name; empty for the first page).
    pub struct ReadDirReq {
        /// Directory path.
        pub dir: String,
        /// Resume after this name.
        pub start_after: String,
        /// Most entries to return.
        pub max: u32,
    }
}
wire_struct! {
    /// One directory entry.
    pub struct DirEntry {
        /// Name inside the directory.
        pub name: String,
        /// Type and permission bits.
        pub mode: u32,
        /// Size.
        pub size: u64,
    }
}
wire_struct! {
    /// A page of entries.
    pub struct ReadDirReply {
        /// Entries in name order.
        pub entries: Vec<DirEntry>,
        /// True if more entries follow.
        pub more: bool,
    }
}
wire_struct! {
    /// Store a record under `path` (the target side of a rename, a hard link).
    pub struct PutRecordReq {
        /// Path.
        pub path: String,
        /// Record to store.
        pub record: Record,
        /// May an existing record be replaced (rename semantics)?
        pub replace: bool,
    }
}
wire_struct! {
    /// Answer to [`PutRecordReq`].
    pub struct PutRecordReply {
        /// The record that was replaced, if any.
        pub replaced: Option<Record>,
    }
}
wire_struct! {
    /// List every record strictly below `prefix` (a directory path), any depth.
    pub struct ScanPrefixReq {
        /// Directory path.
        pub prefix: String,
        /// Resume after this full path (empty for the first page).
        pub start_after: String,
        /// Most records to return.
        pub max: u32,
    }
}
wire_struct! {
    /// A path and its record.
    pub struct PathRecord {
        /// Path.
        pub path: String,
        /// Record.
        pub record: Record,
    }
}
wire_struct! {
    /// A page of records.
    pub struct ScanPrefixReply {
        /// Records in key order.
        pub records: Vec<PathRecord>,
        /// True if more follow.
        pub more: bool,
    }
}
wire_struct! {
    /// A registered client buffer the daemon reads or writes by RMA.
    pub struct Bulk {
        /// Remote address (offset or virtual address, as the provider wants).
        pub addr: u64,
        /// Remote key.
        pub key: u64,
        /// Length in bytes.
        pub len: u64,
    }
}

impl Bulk {
    /// `len` bytes at the start of the node-local connection's shared window (no RMA).
    pub fn window(len: u64) -> Bulk {
        Bulk {
            addr: 0,
            key: 0,
            len,
        }
    }
}
wire_struct! {
    /// One chunk's share of a transfer.
    pub struct ChunkIo {
        /// Chunk index.
        pub chunk: u64,
        /// Offset inside the chunk.
        pub offset: u64,
        /// Bytes.
        pub len: u64,
        /// Offset of these bytes in the bulk buffer (or inline payload).
        pub buf_offset: u64,
    }
}
wire_struct! {
    /// A size update riding along with a data request to the daemon that also owns the
    /// file's metadata (saves the separate [`UpdateSizeReq`] round trip).
    pub struct SizeUpdate {
        /// The file.
        pub path: String,
        /// New end of the file, if larger than its size.
        pub end: u64,
        /// Modification time (ns).
        pub mtime: i64,
    }
}

impl From<SizeUpdate> for UpdateSizeReq {
    /// The size update as a request of its own (when the data did not carry it).
    fn from(u: SizeUpdate) -> UpdateSizeReq {
        UpdateSizeReq {
            path: u.path,
            end: u.end,
            append_len: 0,
            mtime: u.mtime,
        }
    }
}
wire_struct! {
    /// Write pieces of chunks of one file; data comes inline or by RMA from `bulk`.
    pub struct WriteChunksReq {
        /// File id.
        pub file_id: u64,
        /// Pieces to write.
        pub pieces: Vec<ChunkIo>,
        /// Client buffer to pull from, when the data is not inline.
        pub bulk: Option<Bulk>,
        /// Inline data (small writes).
        pub inline: Bytes,
        /// Size update of the file, applied after the data is written.
        pub size_update: Option<SizeUpdate>,
    }
}
wire_struct! {
    /// Answer to [`WriteChunksReq`].
    pub struct WriteChunksReply {
        /// Bytes written.
        pub written: u64,
    }
}
wire_struct! {
    /// Read pieces of chunks of one file; data goes back inline or by RMA into `bulk`.
    pub struct ReadChunksReq {
        /// File id.
        pub file_id: u64,
        /// Pieces to read.
        pub pieces: Vec<ChunkIo>,
        /// Client buffer to push into; None means answer inline.
        pub bulk: Option<Bulk>,
    }
}
wire_struct! {
    /// Answer to [`ReadChunksReq`].
    pub struct ReadChunksReply {
        /// Bytes present in each piece's chunk file (the rest of the piece is a hole).
        pub lens: Vec<u64>,
        /// Inline data, pieces back to back at their `buf_offset`s, when no bulk.
        pub inline: Bytes,
    }
}
wire_struct! {
    /// Cut a file's chunks stored here to `size` bytes.
    pub struct TruncateChunksReq {
        /// File id.
        pub file_id: u64,
        /// New size.
        pub size: u64,
    }
}
wire_struct! {
    /// Give storage to this daemon's chunks of bytes `offset..offset + len` of a file
    /// (fallocate): afterwards writes there do not fail for want of space. The chunks'
    /// contents and the file's size are unchanged (holes stay holes).
    pub struct AllocateChunksReq {
        /// File id.
        pub file_id: u64,
        /// First byte.
        pub offset: u64,
        /// Bytes.
        pub len: u64,
        /// Daemons in the caller's hosts file (which chunks are this daemon's).
        pub daemons: u32,
    }
}
wire_struct! {
    /// Remove every chunk of a file stored here.
    pub struct RemoveChunksReq {
        /// File id.
        pub file_id: u64,
    }
}
wire_struct! {
    /// Ask for the space of the daemon's storage.
    pub struct StatfsReq {}
}
wire_struct! {
    /// Space of the daemon's storage.
    pub struct StatfsReply {
        /// Bytes in total.
        pub total: u64,
        /// Bytes free.
        pub free: u64,
        /// Bytes available to the daemon's user.
        pub avail: u64,
        /// Chunk size.
        pub chunk_size: u64,
    }
}
wire_struct! {
    /// Change attributes: mode bits and/or times (-1 keeps a field as it is).
    pub struct SetAttrReq {
        /// Path.
        pub path: String,
        /// New permission bits, or u32::MAX to keep them.
        pub mode: u32,
        /// New atime (ns) or -1.
        pub atime: i64,
        /// New mtime (ns) or -1.
        pub mtime: i64,
        /// ctime to record (ns).
        pub ctime: i64,
    }
}

wire_struct! {
    /// Take, change, drop or test a lock on `path`, arbitrated by the daemon that owns
    /// the path's metadata (so processes on every node see the same locks).
    pub struct LockReq {
        /// Path.
        pub path: String,
        /// Who holds the lock: a process (POSIX locks) or an open file description
        /// (OFD and flock locks), as a number unique in the job.
        pub owner: u64,
        /// [`lock::SPACE_FCNTL`] or [`lock::SPACE_FLOCK`].
        pub space: u8,
        /// [`lock::READ`], [`lock::WRITE`] or [`lock::UNLOCK`].
        pub kind: u8,
        /// First byte.
        pub start: u64,
        /// One past the last byte, or [`lock::TO_EOF`].
        pub end: u64,
        /// Only say whether the lock could be taken (F_GETLK): nothing changes.
        pub test: bool,
        /// The holder's process id, which F_GETLK reports (-1 for descriptions).
        pub pid: i32,
    }
}
wire_struct! {
    /// Answer to [`LockReq`].
    pub struct LockReply {
        /// Taken (or, for a test, nothing in the way).
        pub granted: bool,
        /// The lock in the way, when not granted: kind, range and pid.
        pub conflict_kind: u8,
        /// First byte of the lock in the way.
        pub conflict_start: u64,
        /// End of the lock in the way ([`lock::TO_EOF`] for the rest of the file).
        pub conflict_end: u64,
        /// Process id of its holder (-1 for a description).
        pub conflict_pid: i32,
    }
}
wire_struct! {
    /// Renew the leases of every lock these owners hold here, or drop them
    /// (`release`, on `path` only unless it is empty).
    pub struct LockLeaseReq {
        /// The owners.
        pub owners: Vec<u64>,
        /// Drop instead of renew.
        pub release: bool,
        /// Only locks on this path ("" for all).
        pub path: String,
    }
}
wire_struct! {
    /// Add `delta` to the link count of an inode record (a hard link made or
    /// removed), atomically; at 0 the record is removed.
    pub struct AdjustLinksReq {
        /// The inode record's path ([`crate::path::inode_path`]).
        pub path: String,
        /// +1 or -1.
        pub delta: i32,
        /// ctime to record (ns).
        pub ctime: i64,
    }
}
wire_struct! {
    /// Answer to [`AdjustLinksReq`].
    pub struct AdjustLinksReply {
        /// The inode record after the change (its `nlink` 0 if it was removed: the
        /// caller then removes the data).
        pub record: Record,
    }
}
wire_struct! {
    /// Ask for the daemon's request counters (accepted with membership 0, as Stats).
    pub struct MetricsReq {}
}
wire_struct! {
    /// What one request type cost since the daemon started.
    pub struct OpMetrics {
        /// The opcode ([`Opcode`]).
        pub opcode: u16,
        /// Requests served.
        pub count: u64,
        /// Of them, answered with an error.
        pub errors: u64,
        /// Time spent serving them, ns.
        pub total_ns: u64,
        /// Latency histogram ([`LATENCY_BUCKETS`] counts).
        pub buckets: Vec<u64>,
    }
}
wire_struct! {
    /// How often an errno was answered.
    pub struct ErrnoCount {
        /// The errno.
        pub errno: i32,
        /// Replies with it.
        pub count: u64,
    }
}
wire_struct! {
    /// Answer to [`MetricsReq`]: cumulative since the daemon started.
    pub struct MetricsReply {
        /// Time since the daemon started, ns.
        pub uptime_ns: u64,
        /// Per request type (only those served at least once).
        pub ops: Vec<OpMetrics>,
        /// Per errno answered (only those seen).
        pub errors: Vec<ErrnoCount>,
        /// Bytes read by clients.
        pub bytes_read: u64,
        /// Bytes written by clients.
        pub bytes_written: u64,
        /// Metadata records stored.
        pub records: u64,
        /// Chunk files stored.
        pub chunks: u64,
        /// Bytes in chunk files.
        pub chunk_bytes: u64,
        /// Bytes the metadata store (RocksDB) takes: its files and memtables.
        pub meta_bytes: u64,
        /// Clients connected through the node-local socket now.
        pub local_connections: u64,
        /// libfabric peers this daemon has exchanged requests with (each one
        /// connection with `ofi_rxm`).
        pub fabric_peers: u64,
        /// Unsupported calls the preload library saw in the processes that reported
        /// here (at their exit), by name.
        pub unsupported: Vec<CallCount>,
        /// Where its Prometheus endpoint listens ("" unless `gkfsd --metrics`).
        pub metrics_address: String,
    }
}
wire_struct! {
    /// How often a call of some kind was made.
    pub struct CallCount {
        /// The call's name (e.g. "mknod").
        pub call: String,
        /// How often.
        pub count: u64,
    }
}
wire_struct! {
    /// A process's unsupported calls, sent by the preload library at its exit to its
    /// node's daemon (or the first), which adds them to its [`MetricsReply`].
    pub struct ReportUnsupportedReq {
        /// By name.
        pub calls: Vec<CallCount>,
    }
}
wire_struct! {
    /// A request for another daemon, sent to this node's daemon over the node-local
    /// socket by a process that has not loaded libfabric: the daemon forwards
    /// `request` (a whole encoded request, header and token included) to daemon
    /// `target` over its own endpoint and answers with that daemon's reply. Refused
    /// from libfabric peers.
    pub struct RelayReq {
        /// Index of the daemon in the hosts file.
        pub target: u32,
        /// The encoded request.
        pub request: Bytes,
        /// Largest reply accepted, bytes.
        pub max_reply: u32,
        /// Deadline for the forwarded call, ms.
        pub timeout_ms: u32,
    }
}
wire_struct! {
    /// Ask a daemon, over its node-local socket, where it keeps its chunk files, so that
    /// a process on its node can read and write chunks straight there (the layout is
    /// [`crate::chunk::chunk_file`]). Refused from libfabric peers.
    pub struct ChunkDirReq {}
}
wire_struct! {
    /// Answer to [`ChunkDirReq`].
    pub struct ChunkDirReply {
        /// The chunk directory, absolute.
        pub path: String,
        /// Its device and inode number as the daemon sees them: a process that opens
        /// `path` and finds another directory there (another mount namespace) must not
        /// read from it.
        pub dev: u64,
        /// See `dev`.
        pub ino: u64,
        /// Free bytes the daemon keeps on the chunk dir's file system for its metadata:
        /// a process writing chunk files itself stops before it would take them.
        pub reserve: u64,
        /// The daemon's cut counters (`gkfs_fabric::cuts`), absolute.
        pub cuts: String,
    }
}
wire_struct! {
    /// Answer to [`RelayReq`]: the target daemon's encoded reply.
    pub struct RelayReply {
        /// The reply, as the target sent it.
        pub reply: Bytes,
    }
}
wire_struct! {
    /// Answer to [`LockLeaseReq`].
    pub struct LockLeaseReply {
        /// Locks these owners still hold here.
        pub held: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;
    use rand::{Rng, RngCore, SeedableRng};

    fn sample_record(rng: &mut impl Rng) -> Record {
        Record {
            mode: rng.random(),
            size: rng.random(),
            file_id: rng.random(),
            ctime: rng.random(),
            mtime: rng.random(),
            atime: rng.random(),
            nlink: rng.random(),
            uid: rng.random(),
            gid: rng.random(),
            flags: rng.random(),
        }
    }

    fn s(rng: &mut impl Rng) -> String {
        let n = rng.random_range(0..40);
        (0..n).map(|_| rng.random_range('a'..='z')).collect()
    }

    fn pieces(rng: &mut impl Rng) -> Vec<ChunkIo> {
        (0..rng.random_range(0..5))
            .map(|_| ChunkIo {
                chunk: rng.random(),
                offset: rng.random(),
                len: rng.random(),
                buf_offset: rng.random(),
            })
            .collect()
    }

    /// Does this buffer decode as the sample's type?
    type Decodes = fn(&[u8]) -> bool;

    /// One filled sample of every request and reply, encoded, with a decoder check.
    fn samples(rng: &mut impl Rng) -> Vec<(Vec<u8>, Decodes)> {
        macro_rules! sample {
            ($v:expr, $t:ty) => {{
                let v: $t = $v;
                let bytes = encode(&v);
                assert_eq!(
                    crate::wire::decode::<$t>(&bytes).unwrap(),
                    v,
                    "{}",
                    stringify!($t)
                );
                (
                    bytes,
                    (|b: &[u8]| crate::wire::decode::<$t>(b).is_ok()) as fn(&[u8]) -> bool,
                )
            }};
        }
        let rec = sample_record(rng);
        vec![
            sample!(PingReq {}, PingReq),
            sample!(
                PingReply {
                    pid: rng.random(),
                    index: rng.random()
                },
                PingReply
            ),
            sample!(StatsReq {}, StatsReq),
            sample!(
                StatsReply {
                    records: rng.random(),
                    chunks: 1,
                    chunk_bytes: 2,
                    requests: 3,
                    bytes_written: 4,
                    bytes_read: 5
                },
                StatsReply
            ),
            sample!(
                CreateReq {
                    path: s(rng),
                    mode: 1,
                    uid: 2,
                    gid: 3,
                    exclusive: rng.random(),
                    time: rng.random(),
                    check_parent: rng.random()
                },
                CreateReq
            ),
            sample!(
                CreateReply {
                    record: rec,
                    created: true
                },
                CreateReply
            ),
            sample!(StatReq { path: s(rng) }, StatReq),
            sample!(StatReply { record: rec }, StatReply),
            sample!(
                RemoveReq {
                    path: s(rng),
                    kind: 2
                },
                RemoveReq
            ),
            sample!(RemoveReply { record: rec }, RemoveReply),
            sample!(
                UpdateSizeReq {
                    path: s(rng),
                    end: rng.random(),
                    append_len: 3,
                    mtime: -1
                },
                UpdateSizeReq
            ),
            sample!(
                UpdateSizeReply {
                    offset: rng.random(),
                    size: rng.random()
                },
                UpdateSizeReply
            ),
            sample!(GetSizeReq { path: s(rng) }, GetSizeReq),
            sample!(GetSizeReply { size: rng.random() }, GetSizeReply),
            sample!(
                TruncateReq {
                    path: s(rng),
                    size: rng.random(),
                    mtime: 7
                },
                TruncateReq
            ),
            sample!(TruncateReply { old: rec }, TruncateReply),
            sample!(
                ReadDirReq {
                    dir: s(rng),
                    start_after: s(rng),
                    max: 9
                },
                ReadDirReq
            ),
            sample!(
                ReadDirReply {
                    entries: vec![
                        DirEntry {
                            name: s(rng),
                            mode: 3,
                            size: 4
                        },
                        DirEntry::default()
                    ],
                    more: true
                },
                ReadDirReply
            ),
            sample!(
                PutRecordReq {
                    path: s(rng),
                    record: rec,
                    replace: true
                },
                PutRecordReq
            ),
            sample!(
                PutRecordReply {
                    replaced: Some(rec)
                },
                PutRecordReply
            ),
            sample!(
                ScanPrefixReq {
                    prefix: s(rng),
                    start_after: s(rng),
                    max: 3
                },
                ScanPrefixReq
            ),
            sample!(
                ScanPrefixReply {
                    records: vec![PathRecord {
                        path: s(rng),
                        record: rec
                    }],
                    more: false
                },
                ScanPrefixReply
            ),
            sample!(
                WriteChunksReq {
                    file_id: rng.random(),
                    pieces: pieces(rng),
                    bulk: Some(Bulk {
                        addr: 1,
                        key: 2,
                        len: 3
                    }),
                    inline: Bytes(vec![1, 2, 3]),
                    size_update: Some(SizeUpdate {
                        path: s(rng),
                        end: 7,
                        mtime: -1
                    })
                },
                WriteChunksReq
            ),
            sample!(WriteChunksReply { written: 5 }, WriteChunksReply),
            sample!(
                ReadChunksReq {
                    file_id: 1,
                    pieces: pieces(rng),
                    bulk: None
                },
                ReadChunksReq
            ),
            sample!(
                ReadChunksReply {
                    lens: vec![1, 2],
                    inline: Bytes(vec![0; 17])
                },
                ReadChunksReply
            ),
            sample!(
                TruncateChunksReq {
                    file_id: 1,
                    size: 2
                },
                TruncateChunksReq
            ),
            sample!(RemoveChunksReq { file_id: 3 }, RemoveChunksReq),
            sample!(
                AllocateChunksReq {
                    file_id: 3,
                    offset: 5,
                    len: 7,
                    daemons: 2
                },
                AllocateChunksReq
            ),
            sample!(Empty {}, Empty),
            sample!(StatfsReq {}, StatfsReq),
            sample!(
                StatfsReply {
                    total: 1,
                    free: 2,
                    avail: 3,
                    chunk_size: 4
                },
                StatfsReply
            ),
            sample!(
                SetAttrReq {
                    path: s(rng),
                    mode: 1,
                    atime: -1,
                    mtime: 2,
                    ctime: 3
                },
                SetAttrReq
            ),
            sample!(
                LockReq {
                    path: s(rng),
                    owner: 7,
                    space: lock::SPACE_FLOCK,
                    kind: lock::WRITE,
                    start: 1,
                    end: lock::TO_EOF,
                    test: true,
                    pid: -1
                },
                LockReq
            ),
            sample!(
                LockReply {
                    granted: false,
                    conflict_kind: lock::READ,
                    conflict_start: 3,
                    conflict_end: 9,
                    conflict_pid: 42
                },
                LockReply
            ),
            sample!(
                LockLeaseReq {
                    owners: vec![1, 2, 3],
                    release: true,
                    path: s(rng)
                },
                LockLeaseReq
            ),
            sample!(LockLeaseReply { held: 4 }, LockLeaseReply),
            sample!(
                AdjustLinksReq {
                    path: s(rng),
                    delta: -1,
                    ctime: 5
                },
                AdjustLinksReq
            ),
            sample!(AdjustLinksReply { record: rec }, AdjustLinksReply),
            sample!(MetricsReq {}, MetricsReq),
            sample!(
                MetricsReply {
                    uptime_ns: 1,
                    ops: vec![OpMetrics {
                        opcode: 3,
                        count: 4,
                        errors: 1,
                        total_ns: 9,
                        buckets: vec![1, 2, 1]
                    }],
                    errors: vec![ErrnoCount { errno: 2, count: 1 }],
                    bytes_read: 5,
                    bytes_written: 6,
                    records: 7,
                    chunks: 8,
                    chunk_bytes: 9,
                    meta_bytes: 10,
                    local_connections: 2,
                    fabric_peers: 3,
                    unsupported: vec![CallCount {
                        call: s(rng),
                        count: 4
                    }],
                    metrics_address: s(rng)
                },
                MetricsReply
            ),
            sample!(
                ReportUnsupportedReq {
                    calls: vec![CallCount {
                        call: s(rng),
                        count: 1
                    }]
                },
                ReportUnsupportedReq
            ),
            sample!(
                RelayReq {
                    target: 2,
                    request: Bytes(vec![1, 2, 3]),
                    max_reply: 8192,
                    timeout_ms: 500
                },
                RelayReq
            ),
            sample!(
                RelayReply {
                    reply: Bytes(vec![4; 9])
                },
                RelayReply
            ),
            sample!(ChunkDirReq {}, ChunkDirReq),
            sample!(
                ChunkDirReply {
                    path: s(rng),
                    dev: 3,
                    ino: 9,
                    reserve: 1 << 20,
                    cuts: s(rng)
                },
                ChunkDirReply
            ),
        ]
    }

    #[test]
    fn every_message_round_trips_and_truncation_fails() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            for (bytes, ok) in samples(&mut rng) {
                assert!(ok(&bytes));
                for cut in 0..bytes.len() {
                    assert!(
                        !ok(&bytes[..cut]),
                        "a {cut}-byte prefix of {bytes:?} decoded"
                    );
                }
                let mut longer = bytes.clone();
                longer.push(0);
                assert!(!ok(&longer), "trailing byte accepted");
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let checks: Vec<Decodes> = samples(&mut rng).into_iter().map(|(_, f)| f).collect();
        let mut buf = vec![0u8; 512];
        for i in 0..20_000 {
            let n = rng.random_range(0..buf.len());
            rng.fill_bytes(&mut buf[..n]);
            let b = &buf[..n];
            let _ = RequestHeader::split(b);
            let _ = ReplyHeader::split(b);
            let _ = decode_reply::<WriteChunksReq>(b);
            for f in &checks {
                let _ = f(b);
            }
            // Mutations of valid messages too.
            let mut all = samples(&mut rng);
            let (mut valid, f) = all.swap_remove(i % all.len());
            if !valid.is_empty() {
                let at = rng.random_range(0..valid.len());
                valid[at] = rng.random();
                let _ = f(&valid);
            }
        }
    }

    #[test]
    fn long_error_details_are_cut_at_a_character_boundary() {
        // Found by the fuzzers (gkfs-fuzz request/reply): a detail quoting a path of
        // multibyte characters made encode_reply panic where byte 1024 fell inside a
        // character, so the daemon answered EIO instead of the real error.
        let detail = format!("invalid path `{}`", "\u{20ac}".repeat(400));
        let reply = encode_reply::<()>(7, &Err(RemoteError::new(Errno::EINVAL, detail.clone())));
        let (id, r) = decode_reply::<PingReq>(&reply).unwrap();
        let got = r.unwrap_err();
        assert_eq!((id, got.errno), (7, Errno::EINVAL));
        assert!(
            got.detail.len() <= 1024 && got.detail.len() > 1020,
            "{}",
            got.detail.len()
        );
        assert!(detail.starts_with(&got.detail));
        // Short details pass whole.
        let reply = encode_reply::<()>(1, &Err(RemoteError::new(Errno::EIO, "\u{20ac}")));
        assert_eq!(
            decode_reply::<PingReq>(&reply)
                .unwrap()
                .1
                .unwrap_err()
                .detail,
            "\u{20ac}"
        );
    }

    #[test]
    fn headers_and_dispatch() {
        struct H;
        impl Handler for H {
            type Ctx = ();
            fn ping(&self, _: &(), _: PingReq) -> Result<PingReply, RemoteError> {
                Ok(PingReply { pid: 7, index: 1 })
            }
            fn stats(&self, _: &(), _: StatsReq) -> Result<StatsReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn create(&self, _: &(), _: CreateReq) -> Result<CreateReply, RemoteError> {
                Err(RemoteError::new(Errno::EEXIST, "exists"))
            }
            fn stat(&self, _: &(), _: StatReq) -> Result<StatReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn remove(&self, _: &(), _: RemoveReq) -> Result<RemoveReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn update_size(
                &self,
                _: &(),
                _: UpdateSizeReq,
            ) -> Result<UpdateSizeReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn get_size(&self, _: &(), _: GetSizeReq) -> Result<GetSizeReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn truncate(&self, _: &(), _: TruncateReq) -> Result<TruncateReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn read_dir(&self, _: &(), _: ReadDirReq) -> Result<ReadDirReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn put_record(&self, _: &(), _: PutRecordReq) -> Result<PutRecordReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn scan_prefix(
                &self,
                _: &(),
                _: ScanPrefixReq,
            ) -> Result<ScanPrefixReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn write_chunks(
                &self,
                _: &(),
                _: WriteChunksReq,
            ) -> Result<WriteChunksReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn read_chunks(
                &self,
                _: &(),
                _: ReadChunksReq,
            ) -> Result<ReadChunksReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn truncate_chunks(&self, _: &(), _: TruncateChunksReq) -> Result<Empty, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn remove_chunks(&self, _: &(), _: RemoveChunksReq) -> Result<Empty, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn statfs(&self, _: &(), _: StatfsReq) -> Result<StatfsReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn set_attr(&self, _: &(), _: SetAttrReq) -> Result<StatReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn lock(&self, _: &(), _: LockReq) -> Result<LockReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn lock_lease(&self, _: &(), _: LockLeaseReq) -> Result<LockLeaseReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn adjust_links(
                &self,
                _: &(),
                _: AdjustLinksReq,
            ) -> Result<AdjustLinksReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn metrics(&self, _: &(), _: MetricsReq) -> Result<MetricsReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn report_unsupported(
                &self,
                _: &(),
                _: ReportUnsupportedReq,
            ) -> Result<Empty, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn relay(&self, _: &(), _: RelayReq) -> Result<RelayReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn chunk_dir(&self, _: &(), _: ChunkDirReq) -> Result<ChunkDirReply, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
            fn allocate_chunks(&self, _: &(), _: AllocateChunksReq) -> Result<Empty, RemoteError> {
                Err(Errno::ENOSYS.into())
            }
        }
        let hdr = RequestHeader {
            opcode: 0,
            request_id: 42,
            token: 5,
            membership: 6,
        };
        let msg = encode_request(hdr, &PingReq {});
        let (h, body) = RequestHeader::split(&msg).unwrap();
        assert_eq!(
            (h.opcode, h.request_id, h.token, h.membership),
            (Opcode::Ping as u16, 42, 5, 6)
        );
        let reply = dispatch(&H, &(), h.opcode, h.request_id, body);
        assert_eq!(
            decode_reply::<PingReq>(&reply).unwrap(),
            (42, Ok(PingReply { pid: 7, index: 1 }))
        );
        let reply = dispatch(
            &H,
            &(),
            Opcode::Create as u16,
            1,
            &encode(&CreateReq::default()),
        );
        let (_, r) = decode_reply::<CreateReq>(&reply).unwrap();
        assert_eq!(r.unwrap_err(), RemoteError::new(Errno::EEXIST, "exists"));
        // Garbage body and unknown opcode: error replies, no panic.
        let reply = dispatch(&H, &(), Opcode::Create as u16, 1, &[1, 2, 3]);
        assert_eq!(
            decode_reply::<CreateReq>(&reply)
                .unwrap()
                .1
                .unwrap_err()
                .errno,
            Errno::EBADMSG
        );
        let reply = dispatch(&H, &(), 999, 1, &[]);
        assert_eq!(
            decode_reply::<CreateReq>(&reply)
                .unwrap()
                .1
                .unwrap_err()
                .errno,
            Errno::ENOSYS
        );
        assert!(Opcode::ALL
            .iter()
            .all(|o| Opcode::from_u16(*o as u16) == Some(*o)));
    }
}
