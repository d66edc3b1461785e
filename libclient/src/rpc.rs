//! Typed RPC calls to daemons: encode with proto, send, decode the reply, map failures
//! to errno (and log the details).
//!
//! Each daemon is reached one of two ways. A daemon on this host that advertises a
//! node-local socket (`socket=` in the hosts file) gets the request over that socket:
//! no libfabric, data inline (`gkfs_proto::local`). Every other daemon is reached
//! through libfabric, whose endpoint opens on first use, so a process that only talks
//! to local daemons never loads it.

use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use gkfs_fabric::{Config as FabricConfig, Endpoint, Peer, PendingCall};
use gkfs_proto::hosts::Hosts;
use gkfs_proto::msg::{decode_reply, encode_request, RequestHeader, Rpc};
use gkfs_proto::Errno;

use crate::error::fabric_errno;

/// Reply buffer for metadata calls.
pub const SMALL_REPLY: usize = 8 * 1024;

/// Idle connections kept per local daemon.
const IDLE_CONNS: usize = 16;

/// A memory window shared with a local daemon (a mapped memfd).
pub(crate) struct Window {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the Window; one call at a time uses it.
unsafe impl Send for Window {}

impl Window {
    /// Creates the memfd, maps it, and returns it with the fd to hand to the daemon.
    fn create(len: usize) -> std::io::Result<(Window, std::os::fd::OwnedFd)> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let fd = nix::sys::memfd::memfd_create(
            c"gkfs-window",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        let size = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of our own memfd, owned by the Window from here.
        let p = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok((Window { ptr: p.cast(), len }, fd))
    }

    /// The window's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: our mapping of `len` bytes; the daemon does not touch it between
        // calls (it only works on it while serving this connection's one request).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` is the only user.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `create`, which nothing else refers to.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// A connection to a local daemon and its shared window.
pub(crate) struct LocalConn {
    stream: UnixStream,
    window: Window,
    /// Polls for the reply before blocking, while that pays.
    spinner: gkfs_proto::local::Spinner,
}

/// A daemon's node-local socket and the idle connections to it.
pub(crate) struct LocalRoute {
    path: PathBuf,
    idle: Mutex<Vec<LocalConn>>,
    max_frame: usize,
    timeout: std::time::Duration,
}

impl LocalRoute {
    fn conn(&self) -> std::io::Result<LocalConn> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let stream = UnixStream::connect(&self.path)?;
        // Our own descriptor: not inherited by programs the process executes.
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        // One deadline per call, set once: a stuck daemon turns into ETIMEDOUT.
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let (window, fd) = Window::create(gkfs_proto::local::WINDOW_SIZE)?;
        let hs = gkfs_proto::local::handshake(window.len as u32);
        let fds = [std::os::fd::AsRawFd::as_raw_fd(&fd)];
        nix::sys::socket::sendmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            &[std::io::IoSlice::new(&hs)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )?;
        Ok(LocalConn {
            stream,
            window,
            spinner: gkfs_proto::local::Spinner::new(),
        })
    }

    fn give_back(&self, c: LocalConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNS {
            idle.push(c);
        }
    }
}

/// How one daemon is reached.
pub(crate) enum Route {
    Local(Arc<LocalRoute>),
    Fabric,
}

/// The libfabric side, opened on first use.
pub(crate) struct Fabric {
    pub ep: Endpoint,
    peers: Vec<Peer>,
}

/// What every call needs: the routes, the header fields.
pub(crate) struct Rpcs {
    routes: Vec<Route>,
    hosts: Hosts,
    fabric: OnceLock<Result<Fabric, String>>,
    pub token: u128,
    pub membership: u64,
    pub timeout: std::time::Duration,
    pub next_id: std::sync::atomic::AtomicU64,
}

/// Which transport to prefer for daemons on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The node-local socket where a daemon on this host has one, libfabric otherwise.
    #[default]
    Auto,
    /// libfabric for every daemon.
    Fabric,
}

fn this_host() -> Option<String> {
    nix::unistd::gethostname().ok()?.into_string().ok()
}

impl Rpcs {
    pub fn new(
        hosts: Hosts,
        transport: Transport,
        token: u128,
        timeout: std::time::Duration,
    ) -> Rpcs {
        let me = this_host();
        let max_frame = gkfs_proto::local::max_frame(hosts.chunk_size());
        let routes = hosts
            .entries
            .iter()
            .map(|e| match (&e.socket, transport) {
                (Some(s), Transport::Auto) if Some(&e.hostname) == me.as_ref() => {
                    Route::Local(Arc::new(LocalRoute {
                        path: PathBuf::from(s),
                        idle: Mutex::new(Vec::new()),
                        max_frame,
                        timeout,
                    }))
                }
                _ => Route::Fabric,
            })
            .collect();
        Rpcs {
            routes,
            membership: hosts.membership(),
            hosts,
            fabric: OnceLock::new(),
            token,
            timeout,
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The libfabric endpoint, opened on first use.
    pub fn fabric(&self) -> Result<&Fabric, Errno> {
        let f = self.fabric.get_or_init(|| {
            let ep = Endpoint::open(&FabricConfig {
                provider: self.hosts.provider().to_string(),
                node: None,
                service: None,
            })
            .map_err(|e| e.to_string())?;
            let peers = self
                .hosts
                .entries
                .iter()
                .map(|e| ep.peer(&e.address))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok(Fabric { ep, peers })
        });
        f.as_ref().map_err(|e| {
            log::error!("cannot open the libfabric endpoint: {e}");
            Errno::EIO
        })
    }

    /// Is daemon `d` reached through its node-local socket (data always inline)?
    pub fn is_local(&self, d: u32) -> bool {
        matches!(self.routes.get(d as usize), Some(Route::Local(_)))
    }

    /// Does any daemon go through the node-local socket?
    pub fn any_local(&self) -> bool {
        self.routes.iter().any(|r| matches!(r, Route::Local(_)))
    }

    /// Sends `req` to daemon `d`; the reply may be up to `max_reply` bytes.
    pub fn start<R: Rpc>(&self, d: u32, req: &R, max_reply: usize) -> Result<Pending<R>, Errno> {
        self.start_with(d, req, max_reply, &[])
    }

    /// Like [`Rpcs::start`] for a local daemon whose request names the connection's
    /// shared window: `put` is copied into the window first (back to back).
    pub fn start_with<R: Rpc>(
        &self,
        d: u32,
        req: &R,
        max_reply: usize,
        put: &[&[u8]],
    ) -> Result<Pending<R>, Errno> {
        let route = self.routes.get(d as usize).ok_or(Errno::EINVAL)?;
        let request_id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let msg = encode_request(
            RequestHeader {
                opcode: 0,
                request_id,
                token: self.token,
                membership: self.membership,
            },
            req,
        );
        let deadline = Instant::now() + self.timeout;
        let call = match route {
            Route::Local(l) => {
                let sent = l.conn().and_then(|mut c| {
                    let mut at = 0;
                    let win = c.window.bytes_mut();
                    for p in put {
                        win.get_mut(at..at + p.len())
                            .ok_or(std::io::ErrorKind::InvalidInput)?
                            .copy_from_slice(p);
                        at += p.len();
                    }
                    gkfs_proto::local::write_frame(&mut c.stream, &msg)?;
                    c.stream.flush()?;
                    Ok(c)
                });
                match sent {
                    Ok(c) => Call::Local(l.clone(), c),
                    Err(e) => {
                        log::warn!("{:?} to daemon {d} ({}): {e}", R::OPCODE, l.path.display());
                        return Err(io_errno(&e));
                    }
                }
            }
            Route::Fabric => {
                let f = self.fabric()?;
                let call =
                    f.ep.start_call(f.peers[d as usize], &msg, max_reply, deadline)
                        .map_err(|e| {
                            log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                            fabric_errno(&e)
                        })?;
                Call::Fabric(call)
            }
        };
        Ok(Pending {
            call,
            daemon: d,
            deadline,
            _r: PhantomData,
        })
    }

    /// Sends `req` to daemon `d` and waits for the reply.
    pub fn call<R: Rpc>(&self, d: u32, req: &R) -> Result<R::Reply, Errno> {
        self.start(d, req, SMALL_REPLY)?.wait()
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Errno::ETIMEDOUT,
        _ => Errno::EIO,
    }
}

enum Call {
    Fabric(PendingCall),
    Local(Arc<LocalRoute>, LocalConn),
}

/// A local connection's window, handed to the caller with a reply; the connection goes
/// back to the pool when this is dropped.
pub(crate) struct WindowGuard {
    conn: Option<(Arc<LocalRoute>, LocalConn)>,
}

impl WindowGuard {
    /// The window's bytes (what the daemon put there for this call).
    pub fn bytes(&self) -> &[u8] {
        self.conn.as_ref().map_or(&[], |(_, c)| c.window.bytes())
    }
}

impl Drop for WindowGuard {
    fn drop(&mut self) {
        if let Some((route, c)) = self.conn.take() {
            route.give_back(c);
        }
    }
}

/// A call in flight.
pub(crate) struct Pending<R: Rpc> {
    call: Call,
    daemon: u32,
    deadline: Instant,
    _r: PhantomData<R>,
}

impl<R: Rpc> Pending<R> {
    /// Waits for the reply.
    pub fn wait(self) -> Result<R::Reply, Errno> {
        self.wait_window().map(|(r, _)| r)
    }

    /// Waits for the reply; for a local call, also hands over the connection's window.
    pub fn wait_window(self) -> Result<(R::Reply, WindowGuard), Errno> {
        let d = self.daemon;
        let mut guard = WindowGuard { conn: None };
        let bytes = match self.call {
            Call::Fabric(call) => call.wait(self.deadline).map_err(|e| {
                log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                fabric_errno(&e)
            })?,
            Call::Local(route, mut c) => {
                c.spinner.wait(&c.stream);
                let got = gkfs_proto::local::read_frame(&mut c.stream, route.max_frame);
                match got {
                    Ok(Some(b)) => {
                        guard.conn = Some((route, c));
                        b
                    }
                    Ok(None) => {
                        log::warn!(
                            "{:?} to daemon {d}: the daemon closed the connection",
                            R::OPCODE
                        );
                        return Err(Errno::EIO);
                    }
                    Err(e) => {
                        log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                        return Err(io_errno(&e));
                    }
                }
            }
        };
        match decode_reply::<R>(&bytes) {
            Ok((_, Ok(reply))) => Ok((reply, guard)),
            Ok((_, Err(remote))) => {
                if !remote.detail.is_empty() {
                    log::info!(
                        "{:?} on daemon {d}: {} ({})",
                        R::OPCODE,
                        remote.errno,
                        remote.detail
                    );
                }
                Err(remote.errno)
            }
            Err(e) => {
                log::warn!("undecodable {:?} reply from daemon {d}: {e}", R::OPCODE);
                Err(Errno::EPROTO)
            }
        }
    }
}

/// Waits for every call, returning the first error after all have finished.
pub(crate) fn wait_all<R: Rpc>(pending: Vec<Pending<R>>) -> Result<Vec<R::Reply>, Errno> {
    let mut out = Vec::with_capacity(pending.len());
    let mut first_err = None;
    for p in pending {
        match p.wait() {
            Ok(r) => out.push(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
