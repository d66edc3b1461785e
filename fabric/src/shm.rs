//! The node-local channel: a unix socket and a memory region both ends map.
//!
//! A client process talks to its node's daemon over one [`Channel`] per call in flight.
//! The region (a memfd the client creates and hands over at connect, with
//! `SCM_RIGHTS`) holds a request slot, a reply slot and a data window:
//!
//! ```text
//! 0                 CTRL_SIZE          + SLOT_SIZE        + SLOT_SIZE        + window
//! | magic, 2 mailboxes | request slot    | reply slot       | data window ...  |
//! ```
//!
//! The control block also holds counters of the bytes the client read from and wrote
//! to the daemon's chunk files itself (without a request): the daemon adds what they
//! grew by to its own counters whenever it reports them and when the connection ends
//! ([`ElsewhereCounts`]).
//!
//! Each direction has a mailbox: a state word and a length. The sender of a message
//! that fits the slot copies it in and moves the state from `EMPTY` to `POSTED`; the
//! receiver polls the state briefly (while polling pays, [`crate::spin::Score`]; at most
//! half the cores poll, [`crate::spin::SpinSlot`]), takes the message and sets `EMPTY`
//! again. So when both sides are awake a request and its reply cost no system call. A
//! receiver that stops polling moves the state from `EMPTY` to `ASLEEP` and blocks in
//! a read of the socket; a sender that finds `ASLEEP` sends the message as a frame on
//! the socket instead, which wakes it. A message larger than the slot is announced with
//! `ON_SOCKET` and sent as a frame too. Only the receiver ever leaves `ASLEEP`, and a
//! connection carries one call at a time (request, then reply), so the two sides
//! never race for a slot.
//!
//! The socket also tells each side when the other dies: a receiver asleep in a read
//! gets the end of the stream; one that polls stops within the poll time and then
//! sleeps. A client's reads have its call deadline (`SO_RCVTIMEO`).
//!
//! Frames: a `u32` little-endian payload length, then the payload. Handshake: 8 bytes
//! sent with the memfd, [`MAGIC`] and the region size (both `u32` little-endian); size
//! 0 and no fd mean "no region": every message then travels as a frame.
//!
//! The daemon never trusts the region: it copies requests out before parsing them,
//! checks every length and state it reads there, and closes the connection on any
//! value the protocol does not allow.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::spin::{Score, SpinSlot};

/// First word of the handshake and of the region ("GKS1").
pub const MAGIC: u32 = u32::from_le_bytes(*b"GKS1");
/// Bytes before the slots: the magic and the two mailboxes.
pub const CTRL_SIZE: usize = 4096;
/// Largest message that travels through a slot; larger ones go as socket frames.
pub const SLOT_SIZE: usize = 64 << 10;
/// Offset of the data window in the region.
const WINDOW_AT: usize = CTRL_SIZE + 2 * SLOT_SIZE;

/// Byte offset of the counters of bytes read and written without a request (a cache
/// line of their own).
const ELSEWHERE_AT: usize = 192;

/// Mailbox states.
const EMPTY: u32 = 0;
const POSTED: u32 = 1;
const ASLEEP: u32 = 2;
const ON_SOCKET: u32 = 3;

/// The 8 handshake bytes for a region of `size` bytes (0: none).
pub fn handshake(size: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..].copy_from_slice(&size.to_le_bytes());
    b
}

/// The region size in handshake bytes, None if they are not a handshake.
pub fn parse_handshake(b: &[u8; 8]) -> Option<u32> {
    let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (magic == MAGIC).then(|| u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
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

/// The shared region, mapped.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// Set while the daemon side lends the window to a handler ([`WindowLease`]).
    lent: AtomicBool,
}

// SAFETY: the mailboxes are atomics; the slots and the window are only touched by the
// side the protocol gives them to (one call at a time per channel), through raw
// pointer copies or a lease that excludes other users in this process.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl Region {
    /// Maps `len` bytes of `fd` shared.
    fn map(fd: &OwnedFd, len: usize) -> io::Result<Region> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let size = std::num::NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of a memfd at least `len` bytes long (checked
        // by the callers), owned by the Region from here.
        let p = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        };
        Ok(Region {
            ptr: p.cast(),
            len,
            lent: AtomicBool::new(false),
        })
    }

    /// A new region with a window of `window` bytes, and the fd to hand over.
    fn create(window: usize) -> io::Result<(Region, OwnedFd)> {
        let fd = nix::sys::memfd::memfd_create(
            c"gkfs-channel",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        let len = WINDOW_AT + window;
        nix::unistd::ftruncate(&fd, len as i64)?;
        let r = Region::map(&fd, len)?;
        r.word(0).store(MAGIC, Ordering::Relaxed);
        Ok((r, fd))
    }

    /// The region a client handed over, checked.
    fn adopt(fd: OwnedFd, len: usize) -> io::Result<Region> {
        if len < WINDOW_AT {
            return Err(invalid("region smaller than its slots"));
        }
        let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
        if (st.st_size as u64) < len as u64 {
            return Err(invalid("region smaller than announced"));
        }
        let r = Region::map(&fd, len)?;
        if r.word(0).load(Ordering::Relaxed) != MAGIC {
            return Err(invalid("region without the channel's magic"));
        }
        Ok(r)
    }

    /// The `i`-th 32-bit word of the control block.
    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i * 4 + 4 <= CTRL_SIZE);
        // SAFETY: inside the mapping (asserted), 4-byte aligned (the mapping is page
        // aligned), and any bit pattern is a valid AtomicU32; it lives as long as &self.
        unsafe { &*self.ptr.as_ptr().add(i * 4).cast::<AtomicU32>() }
    }

    /// The client's elsewhere counter `i` (0: bytes read, 1: bytes written).
    fn elsewhere(&self, i: usize) -> &AtomicU64 {
        const _: () = assert!(ELSEWHERE_AT.is_multiple_of(8) && ELSEWHERE_AT + 16 <= CTRL_SIZE);
        assert!(i < 2);
        // SAFETY: inside the control block (checked above), 8-byte aligned (the mapping
        // is page aligned), any bit pattern is a valid AtomicU64; lives as long as &self.
        unsafe {
            &*self
                .ptr
                .as_ptr()
                .add(ELSEWHERE_AT + 8 * i)
                .cast::<AtomicU64>()
        }
    }

    /// Mailbox `dir`'s state and length words (each mailbox has its own cache line).
    fn mailbox(&self, dir: Dir) -> (&AtomicU32, &AtomicU32) {
        let at = 16 * (1 + dir as usize);
        (self.word(at), self.word(at + 1))
    }

    fn slot_at(dir: Dir) -> usize {
        CTRL_SIZE + dir as usize * SLOT_SIZE
    }

    /// Copies `msg` (at most [`SLOT_SIZE`]) into `dir`'s slot.
    fn put(&self, dir: Dir, msg: &[u8]) {
        assert!(msg.len() <= SLOT_SIZE);
        // SAFETY: the slot lies inside the mapping; the protocol gives it to the
        // sender until it posts, and raw copies make no reference to shared memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                msg.as_ptr(),
                self.ptr.as_ptr().add(Region::slot_at(dir)),
                msg.len(),
            )
        }
    }

    /// Copies `len` bytes (checked against [`SLOT_SIZE`]) out of `dir`'s slot.
    fn take(&self, dir: Dir, len: usize) -> io::Result<Vec<u8>> {
        if len > SLOT_SIZE {
            return Err(invalid("slot message longer than the slot"));
        }
        let mut v = Vec::with_capacity(len);
        // SAFETY: the slot lies inside the mapping and `len` fits it; the protocol
        // gives it to the receiver until it sets EMPTY. A peer that writes it anyway
        // only changes the bytes we copy, which are checked like any request.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(Region::slot_at(dir)),
                v.as_mut_ptr(),
                len,
            );
            v.set_len(len);
        }
        Ok(v)
    }

    fn window_len(&self) -> usize {
        self.len - WINDOW_AT
    }

    /// The window's first byte.
    fn window_start(&self) -> *mut u8 {
        // SAFETY: `adopt` and `create` make every region at least WINDOW_AT long.
        unsafe { self.ptr.as_ptr().add(WINDOW_AT) }
    }

    /// The window's `len` bytes at `offset`, as a raw pointer (checked bounds).
    fn window_ptr(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // SAFETY: `offset..end` lies inside the window, which lies inside the mapping.
        (end <= self.window_len()).then(|| unsafe { self.window_start().add(offset) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`, which nothing refers to any more
        // (every borrow of it borrows the Region).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// A mailbox's direction.
#[derive(Debug, Clone, Copy)]
enum Dir {
    Request = 0,
    Reply = 1,
}

/// Which end of the channel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Daemon,
}

/// One end of a node-local channel (see the module docs).
pub struct Channel {
    stream: UnixStream,
    region: Option<Arc<Region>>,
    side: Side,
    /// Largest frame accepted.
    max_frame: usize,
    /// How long a frame may stall half way (daemon side; the client has its deadline).
    stall: Option<Duration>,
    score: Score,
}

/// Daemon side: a client's counters of bytes it read from and wrote to the daemon's
/// chunk files itself, shared by the connection's thread and whoever reports the
/// daemon's counters.
pub struct ElsewhereCounts {
    region: Arc<Region>,
    /// The counters as last taken.
    seen: std::sync::Mutex<[u64; 2]>,
}

impl std::fmt::Debug for ElsewhereCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElsewhereCounts")
            .field("seen", &self.seen)
            .finish()
    }
}

impl ElsewhereCounts {
    /// What the client's counters (bytes read, bytes written) grew by since the last
    /// call (0 for one that went backwards: the region is not trusted).
    pub fn take(&self) -> (u64, u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut grew = [0; 2];
        for (i, g) in grew.iter_mut().enumerate() {
            let now = self.region.elsewhere(i).load(Ordering::Relaxed);
            *g = now.saturating_sub(seen[i]);
            seen[i] = seen[i].max(now);
        }
        (grew[0], grew[1])
    }
}

impl Channel {
    /// Connects to a daemon's socket at `path` and hands it a region with a data
    /// window of `window` bytes. Reads and writes wait at most `timeout`.
    pub fn connect(
        path: &std::path::Path,
        window: usize,
        max_frame: usize,
        timeout: Duration,
    ) -> io::Result<Channel> {
        crate::spin::init();
        let stream = UnixStream::connect(path)?;
        // Our own descriptor: not inherited by programs the process executes.
        nix::fcntl::fcntl(
            stream.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let (region, fd) = Region::create(window)?;
        let hs = handshake(
            u32::try_from(region.len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        );
        let fds = [fd.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(
            stream.as_raw_fd(),
            &[io::IoSlice::new(&hs)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )?;
        Ok(Channel {
            stream,
            region: Some(Arc::new(region)),
            side: Side::Client,
            max_frame,
            stall: None,
            score: Score::default(),
        })
    }

    /// The daemon's end of a connection accepted on its socket: reads the handshake
    /// and maps the client's region. A frame that stops half way for `stall` ends the
    /// connection.
    pub fn accept(stream: UnixStream, max_frame: usize, stall: Duration) -> io::Result<Channel> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        // Also bounds the handshake: a client that connects and says nothing is dropped.
        stream.set_read_timeout(Some(stall))?;
        let mut hs = [0u8; 8];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut fd: Option<OwnedFd> = None;
        let n = {
            let mut iov = [io::IoSliceMut::new(&mut hs)];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        let f = adopt_fd(f);
                        fd.get_or_insert(f);
                    }
                }
            }
            msg.bytes
        };
        if n != hs.len() {
            return Err(invalid("short channel handshake"));
        }
        let size = parse_handshake(&hs).ok_or_else(|| invalid("not a gkfs client"))? as usize;
        let region = match (fd, size) {
            (Some(fd), s) if s > 0 => Some(Arc::new(Region::adopt(fd, s)?)),
            _ => None,
        };
        Ok(Channel {
            stream,
            region,
            side: Side::Daemon,
            max_frame,
            stall: Some(stall),
            score: Score::default(),
        })
    }

    /// The socket (for peer credentials and shutdown).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    fn dirs(&self) -> (Dir, Dir) {
        match self.side {
            Side::Client => (Dir::Request, Dir::Reply),
            Side::Daemon => (Dir::Reply, Dir::Request),
        }
    }

    /// Sends one message (a request from the client, a reply from the daemon).
    pub fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let (out, _) = self.dirs();
        let Some(r) = &self.region else {
            return self.write_frame(msg);
        };
        let (state, len) = r.mailbox(out);
        match state.load(Ordering::Acquire) {
            EMPTY => {}
            ASLEEP => return self.write_frame(msg),
            s => return Err(invalid(&format!("channel state {s} where EMPTY was due"))),
        }
        let fits = msg.len() <= SLOT_SIZE;
        if fits {
            r.put(out, msg);
            len.store(msg.len() as u32, Ordering::Relaxed);
        }
        let next = if fits { POSTED } else { ON_SOCKET };
        match state.compare_exchange(EMPTY, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) if fits => Ok(()),
            Ok(_) | Err(ASLEEP) => self.write_frame(msg),
            Err(s) => Err(invalid(&format!("channel state {s} where EMPTY was due"))),
        }
    }

    /// Waits for one message (a reply on the client, a request on the daemon);
    /// `Ok(None)` when the peer closed the connection between messages.
    pub fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        let (_, inc) = self.dirs();
        let Some(r) = self.region.clone() else {
            return self.read_frame();
        };
        let (state, len) = r.mailbox(inc);
        let s = match self.poll(state) {
            Some(s) => s,
            None => {
                match state.compare_exchange(EMPTY, ASLEEP, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => ASLEEP,
                    Err(s) => s,
                }
            }
        };
        let got = match s {
            POSTED => Some(r.take(inc, len.load(Ordering::Relaxed) as usize)?),
            ASLEEP | ON_SOCKET => self.read_frame()?,
            s => {
                return Err(invalid(&format!(
                    "channel state {s} where a message was due"
                )))
            }
        };
        // Only the receiver leaves these states, and the next message comes only after
        // our answer to this one.
        state.store(EMPTY, Ordering::Release);
        Ok(got)
    }

    /// Polls mailbox `state` while that pays; the state if a message came.
    fn poll(&self, state: &AtomicU32) -> Option<u32> {
        let ready = |s: u32| s == POSTED || s == ON_SOCKET;
        let s = state.load(Ordering::Acquire);
        if ready(s) {
            return Some(s);
        }
        let spin = crate::spin::spin_time();
        if spin.is_zero() || !self.score.worth_polling() {
            return None;
        }
        let _slot = SpinSlot::take()?;
        let end = Instant::now() + spin;
        let mut n = 0u32;
        loop {
            let s = state.load(Ordering::Acquire);
            if ready(s) {
                self.score.record(true);
                return Some(s);
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(32) && Instant::now() >= end {
                self.score.record(false);
                return None;
            }
            std::hint::spin_loop();
        }
    }

    fn write_frame(&self, msg: &[u8]) -> io::Result<()> {
        let mut s = &self.stream;
        write_frame(&mut s, msg)?;
        s.flush()
    }

    /// Reads a frame. The socket's read timeout is the client's call deadline, or on
    /// the daemon side the stall limit (set once at accept): there the wait for the
    /// next frame is unbounded (a timeout before its first byte just waits on), but a
    /// frame that started must keep coming.
    fn read_frame(&self) -> io::Result<Option<Vec<u8>>> {
        let mut s = &self.stream;
        let mut head = [0u8; 4];
        let mut got = 0;
        while got < head.len() {
            match s.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if got == 0 && self.stall.is_some() && timed_out(&e) => {}
                Err(e) => return Err(self.stalled(e, head.len())),
            }
        }
        let len = read_frame_len(&mut &head[..], self.max_frame)?.unwrap_or_default();
        read_frame_body(&mut s, len)
            .map(Some)
            .map_err(|e| self.stalled(e, len))
    }

    /// A read that timed out on the daemon side: the frame stalled.
    fn stalled(&self, e: io::Error, len: usize) -> io::Error {
        match self.stall {
            Some(stall) if timed_out(&e) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a {len}-byte frame stalled for {stall:?}"),
            ),
            _ => e,
        }
    }

    /// The client's data window (empty without a region). The daemon reads and writes
    /// it only while it serves this channel's call.
    pub fn window(&self) -> &[u8] {
        match &self.region {
            Some(r) if self.side == Side::Client => {
                // SAFETY: our window (inside the mapping by construction); the daemon
                // touches it only during a call, and the client reads it only after
                // the reply.
                unsafe { std::slice::from_raw_parts(r.window_start(), r.window_len()) }
            }
            _ => &[],
        }
    }

    /// The client's data window, to fill before a call.
    pub fn window_mut(&mut self) -> &mut [u8] {
        match &self.region {
            Some(r) if self.side == Side::Client => {
                // SAFETY: as in `window`, and `&mut self` is the only user here.
                unsafe { std::slice::from_raw_parts_mut(r.window_start(), r.window_len()) }
            }
            _ => &mut [],
        }
    }

    /// Client side: counts bytes this process read from (`read`) and wrote to
    /// (`written`) the daemon's chunk files itself, for the daemon's counters.
    pub fn count_elsewhere(&self, read: u64, written: u64) {
        if let (Some(r), Side::Client) = (&self.region, self.side) {
            for (i, n) in [read, written].into_iter().enumerate() {
                if n > 0 {
                    r.elsewhere(i).fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }

    /// Daemon side: the client's counters of bytes it moved in the daemon's chunk
    /// files itself (None without a region).
    pub fn elsewhere_counts(&self) -> Option<Arc<ElsewhereCounts>> {
        match (&self.region, self.side) {
            (Some(r), Side::Daemon) => Some(Arc::new(ElsewhereCounts {
                region: r.clone(),
                seen: Default::default(),
            })),
            _ => None,
        }
    }

    /// The daemon's handle on the client's window, for the handlers (None: no region).
    pub fn shared_window(&self) -> Option<SharedWindow> {
        self.region.clone().map(SharedWindow)
    }
}

/// The daemon's view of a client's data window. The bytes are lent to one user at a
/// time ([`SharedWindow::lease`]).
#[derive(Clone)]
pub struct SharedWindow(Arc<Region>);

impl std::fmt::Debug for SharedWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedWindow({} bytes)", self.0.window_len())
    }
}

impl SharedWindow {
    /// The window's size.
    pub fn len(&self) -> u64 {
        self.0.window_len() as u64
    }

    /// Is the window empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The window's bytes for one user; None while another holds them.
    pub fn lease(&self) -> Option<WindowLease<'_>> {
        (!self.0.lent.swap(true, Ordering::Acquire)).then_some(WindowLease(&self.0))
    }
}

/// The window lent to one user (see [`SharedWindow::lease`]).
pub struct WindowLease<'a>(&'a Region);

impl WindowLease<'_> {
    /// `len` bytes at `offset`, None outside the window.
    pub fn get(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let (o, l) = (usize::try_from(offset).ok()?, usize::try_from(len).ok()?);
        let p = self.0.window_ptr(o, l)?;
        // SAFETY: inside the window; the lease excludes other users in this process.
        // The client may still write there (it should not during a call); that only
        // changes the bytes of its own file, which the kernel copies as they are.
        Some(unsafe { std::slice::from_raw_parts(p, l) })
    }

    /// `len` bytes at `offset` to fill, None outside the window.
    pub fn get_mut(&mut self, offset: u64, len: u64) -> Option<&mut [u8]> {
        let (o, l) = (usize::try_from(offset).ok()?, usize::try_from(len).ok()?);
        let p = self.0.window_ptr(o, l)?;
        // SAFETY: as in `get`, and `&mut self` makes this the only borrow.
        Some(unsafe { std::slice::from_raw_parts_mut(p, l) })
    }
}

impl Drop for WindowLease<'_> {
    fn drop(&mut self) {
        self.0.lent.store(false, Ordering::Release);
    }
}

/// Did a read end at the socket's read timeout?
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Takes ownership of a descriptor received in SCM_RIGHTS.
fn adopt_fd(fd: std::os::fd::RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel just installed this descriptor for us (recvmsg SCM_RIGHTS);
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

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
        assert_eq!(parse_handshake(&handshake(77)), Some(77));
        assert_eq!(parse_handshake(&[0; 8]), None);
    }

    const MAX: usize = 4 << 20;

    /// A listening socket in a fresh directory (removed with the value).
    struct Listener {
        dir: std::path::PathBuf,
        listener: UnixListener,
    }

    impl Listener {
        fn new() -> Listener {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "gkfs-shm-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let listener = UnixListener::bind(dir.join("s")).unwrap();
            Listener { dir, listener }
        }

        fn client(&self, timeout: Duration) -> Channel {
            Channel::connect(&self.dir.join("s"), 1 << 20, MAX, timeout).unwrap()
        }

        fn daemon(&self) -> Channel {
            let (s, _) = self.listener.accept().unwrap();
            Channel::accept(s, MAX, Duration::from_secs(5)).unwrap()
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn state(ch: &Channel, dir: Dir) -> u32 {
        ch.region
            .as_ref()
            .unwrap()
            .mailbox(dir)
            .0
            .load(Ordering::Acquire)
    }

    /// Waits until `dir`'s mailbox on `ch` shows `want` (the peer went to sleep).
    fn wait_state(ch: &Channel, dir: Dir, want: u32) {
        let end = Instant::now() + Duration::from_secs(5);
        while state(ch, dir) != want {
            assert!(Instant::now() < end, "mailbox never reached state {want}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every size, through the slots and as frames, with either side asleep or awake:
    /// each message arrives whole and unchanged, and the window carries data both ways.
    #[test]
    fn messages_cross_through_slots_and_frames_with_either_side_asleep() {
        let l = Listener::new();
        let mut c = l.client(Duration::from_secs(10));
        let mut d = l.daemon();
        let sizes = [0, 1, 100, SLOT_SIZE - 1, SLOT_SIZE, SLOT_SIZE + 1, 1 << 20];
        let daemon = std::thread::spawn(move || {
            let w = d.shared_window().unwrap();
            let mut n = 0u8;
            while let Some(m) = d.recv().unwrap() {
                // Every other reply comes late: the client has gone to sleep by then.
                if n % 2 == 1 {
                    wait_state(&d, Dir::Reply, ASLEEP);
                }
                let mut lease = w.lease().unwrap();
                assert!(w.lease().is_none(), "the window was lent twice");
                let win = lease.get_mut(0, 8).unwrap();
                win.copy_from_slice(&[n; 8]);
                assert!(lease.get(w.len() - 4, 8).is_none());
                drop(lease);
                let mut r = m.clone();
                r.reverse();
                d.send(&r).unwrap();
                n = n.wrapping_add(1);
            }
        });
        let mut n = 0u8;
        for round in 0..3 {
            for &len in &sizes {
                let m = pattern(len, n);
                // Every third request waits until the daemon sleeps.
                if round == 1 {
                    wait_state(&c, Dir::Request, ASLEEP);
                }
                c.send(&m).unwrap();
                let r = c.recv().unwrap().unwrap();
                let mut want = m.clone();
                want.reverse();
                assert_eq!(r, want, "message of {len} bytes, round {round}");
                assert_eq!(&c.window()[..8], &[n; 8]);
                n = n.wrapping_add(1);
            }
        }
        drop(c);
        daemon.join().unwrap();
    }

    /// A daemon that dies (its end closes) with a request in flight fails the call at
    /// once; one that hangs fails it at the client's deadline.
    #[test]
    fn a_daemon_that_dies_or_hangs_mid_request_fails_the_call_in_time() {
        let l = Listener::new();
        let mut c = l.client(Duration::from_secs(30));
        let mut d = l.daemon();
        let t = std::thread::spawn(move || {
            d.recv().unwrap().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            drop(d);
        });
        c.send(b"ping").unwrap();
        let started = Instant::now();
        let got = c.recv();
        assert!(matches!(got, Ok(None) | Err(_)), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();

        let mut c = l.client(Duration::from_millis(300));
        let mut d = l.daemon();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            d.recv().unwrap().unwrap();
            let _ = rx.recv();
        });
        c.send(b"ping").unwrap();
        let started = Instant::now();
        let e = c.recv().unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        tx.send(()).unwrap();
        t.join().unwrap();
    }

    /// A client that goes away with its request unanswered costs the daemon nothing:
    /// the reply goes nowhere and the next wait ends.
    #[test]
    fn a_client_that_dies_mid_request_ends_the_daemon_side() {
        let l = Listener::new();
        let mut c = l.client(Duration::from_secs(10));
        let mut d = l.daemon();
        c.send(&pattern(100, 3)).unwrap();
        c.send(b"x")
            .expect_err("a second request before the reply is refused");
        drop(c);
        let req = d.recv().unwrap().unwrap();
        assert_eq!(req, pattern(100, 3));
        let _ = d.send(b"nobody listens");
        let started = Instant::now();
        assert!(matches!(d.recv(), Ok(None) | Err(_)));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// Whatever a client writes into the mailbox, the daemon answers with an error,
    /// never a panic or a read outside the slot.
    #[test]
    fn garbage_in_the_mailbox_is_an_error() {
        let l = Listener::new();
        for (st, len) in [
            (7u32, 0u32),
            (POSTED, SLOT_SIZE as u32 + 1),
            (POSTED, u32::MAX),
        ] {
            let c = l.client(Duration::from_secs(10));
            let mut d = l.daemon();
            let (state, length) = c.region.as_ref().unwrap().mailbox(Dir::Request);
            length.store(len, Ordering::Relaxed);
            state.store(st, Ordering::Release);
            let e = d.recv().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        }
        // A region without the magic, smaller than announced or than its slots is
        // refused at accept.
        for size in [WINDOW_AT as u32, WINDOW_AT as u32 * 2, 16] {
            let s = UnixStream::connect(l.dir.join("s")).unwrap();
            let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MemFdCreateFlag::empty())
                .unwrap();
            nix::unistd::ftruncate(&fd, WINDOW_AT as i64).unwrap();
            nix::sys::socket::sendmsg::<()>(
                s.as_raw_fd(),
                &[io::IoSlice::new(&handshake(size))],
                &[nix::sys::socket::ControlMessage::ScmRights(&[
                    fd.as_raw_fd()
                ])],
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .unwrap();
            let (a, _) = l.listener.accept().unwrap();
            let e = Channel::accept(a, MAX, Duration::from_secs(1))
                .err()
                .expect("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{size}: {e}");
        }
    }
}
