//! Typed RPC calls to daemons: encode with proto, send, decode the reply, map failures
//! to errno (and log the details).
//!
//! Each daemon is reached one of three ways. A daemon on this host that advertises a
//! node-local socket (`socket=` in the hosts file) gets the request over a
//! `gkfs_fabric::shm::Channel` to it: no libfabric, requests and replies in shared
//! slots, data in a shared window. Every other daemon is reached
//! through libfabric, whose endpoint opens on first use, so a process that only talks
//! to local daemons never loads it. Until a process has loaded libfabric, its requests
//! for other nodes' daemons go through this node's daemon instead ([`RelayReq`]): loading
//! libfabric costs a fresh process about 0.3 s and 90 MiB, which a `cat` or `ls` in a
//! multi-node job should not pay. It is loaded when it pays: at the first transfer too
//! large to go inline (those move by RMA), or after [`RELAY_LIMIT`] relayed requests.
//! On the 3-node test cluster a relayed create costs about 0.1 ms more than a direct
//! one (2 100-2 300 creates/s against 2 400-2 600, one process on node1), so about
//! 2 000 relayed requests cost what loading libfabric does. `LIBGKFS_FABRIC=direct`
//! loads it at the first remote request, as before. A process that does not use
//! libfabric ([`Rpcs::fabric_refused`]: it failed to open, or the process was forked
//! from one that had loaded it) relays every request for other nodes.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use gkfs_fabric::shm::Channel;
use gkfs_fabric::{Config as FabricConfig, Endpoint, Peer, PendingCall};
use gkfs_proto::hosts::Hosts;
use gkfs_proto::msg::{decode_reply, encode_request, ChunkDirReq, RelayReq, RequestHeader, Rpc};
use gkfs_proto::Errno;

use crate::direct::ChunkDir;
use crate::error::fabric_errno;

pub use gkfs_proto::limits::SMALL_REPLY;

/// Idle connections kept per local daemon.
const IDLE_CONNS: usize = 16;
/// Requests relayed through this node's daemon before the process loads libfabric.
pub const RELAY_LIMIT: u64 = 2_000;

/// A connection to a local daemon: its channel (slots and a shared data window).
pub(crate) struct LocalConn {
    channel: Channel,
    /// The route's count of open connections, lowered when this one closes.
    open: Arc<AtomicUsize>,
}

impl Drop for LocalConn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A daemon's node-local socket and the idle connections to it.
pub(crate) struct LocalRoute {
    path: PathBuf,
    idle: Mutex<Vec<LocalConn>>,
    /// Connections open now, idle or in use.
    open: Arc<AtomicUsize>,
    max_frame: usize,
    timeout: std::time::Duration,
    /// Its chunk dir, opened here at the first data call ([`LocalData::Direct`]); None
    /// when the daemon moves its chunks' bytes.
    chunk_dir: OnceLock<Option<ChunkDir>>,
    /// Bytes read from and written to its chunk files here, not yet told to a
    /// connection.
    unreported: [AtomicU64; 2],
}

impl LocalRoute {
    fn new(path: PathBuf, max_frame: usize, timeout: Duration) -> LocalRoute {
        LocalRoute {
            path,
            idle: Mutex::new(Vec::new()),
            open: Arc::new(AtomicUsize::new(0)),
            max_frame,
            timeout,
            chunk_dir: OnceLock::new(),
            unreported: Default::default(),
        }
    }

    fn conn(&self) -> std::io::Result<LocalConn> {
        let c = self.conn_any()?;
        self.report_unreported(&c);
        Ok(c)
    }

    /// Tells `c` the bytes counted while no connection was idle.
    fn report_unreported(&self, c: &LocalConn) {
        // (Loaded first: on every call, and almost always 0.)
        let take = |n: &AtomicU64| match n.load(Ordering::Relaxed) {
            0 => 0,
            _ => n.swap(0, Ordering::Relaxed),
        };
        let [r, w] = &self.unreported;
        c.channel.count_elsewhere(take(r), take(w));
    }

    /// Counts bytes read from and written to the daemon's chunk files here, on an idle
    /// connection (the daemon adds them up after its next request or when the
    /// connection ends), or on the next one taken if none is idle.
    pub(crate) fn count_elsewhere(&self, read: u64, written: u64) {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        match idle.last() {
            Some(c) => c.channel.count_elsewhere(read, written),
            None => {
                self.unreported[0].fetch_add(read, Ordering::Relaxed);
                self.unreported[1].fetch_add(written, Ordering::Relaxed);
            }
        }
    }

    fn conn_any(&self) -> std::io::Result<LocalConn> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        // One deadline per call, set once: a stuck daemon turns into ETIMEDOUT.
        let channel = Channel::connect(
            &self.path,
            gkfs_proto::local::WINDOW_SIZE,
            self.max_frame,
            self.timeout,
        )?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(LocalConn {
            channel,
            open: self.open.clone(),
        })
    }

    fn give_back(&self, c: LocalConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock [`Self::count_elsewhere`] counts in: bytes counted while every
        // connection was in use are told now, not only at a next request that may never
        // come (the process may end first).
        self.report_unreported(&c);
        if idle.len() < IDLE_CONNS {
            idle.push(c);
        }
    }
}

/// Who moves the bytes of chunks a daemon on this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalData {
    /// This process, in the daemon's chunk files (see `direct.rs`), where it sees them
    /// and there is room above the daemon's reserve (the metadata owner still makes the
    /// size update, when one is needed); the daemon otherwise.
    #[default]
    Direct,
    /// The daemon, through the connection's shared window.
    Daemon,
}

/// When a process loads libfabric for other nodes' daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FabricUse {
    /// When it pays (see the module docs); until then through this node's daemon.
    #[default]
    Auto,
    /// At the first request for another node's daemon.
    Direct,
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

/// A daemon found not answering (a call timed out; over libfabric also a peer gone):
/// later calls to it fail at once with the same errno instead of each waiting the full
/// deadline, while one background thread pings it until it answers again.
#[derive(Default)]
struct Health {
    /// The errno it was found down with; 0 while it is up.
    down: AtomicI32,
    /// Is a probe thread running for it?
    probing: AtomicBool,
}

/// First pause between probes of a down daemon; doubled up to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between probes.
const PROBE_MAX: Duration = Duration::from_secs(2);

/// What every call needs: the routes, the header fields.
pub(crate) struct Rpcs {
    /// Ourselves, for the probe threads (which must not keep the client alive).
    me: Weak<Rpcs>,
    health: Vec<Health>,
    routes: Vec<Route>,
    /// How many of `routes` are node-local (counted once: data calls ask on every call).
    locals: usize,
    hosts: Hosts,
    fabric: OnceLock<Result<Fabric, String>>,
    /// This node's daemon, for relayed requests (None: none here).
    relay: Option<Arc<LocalRoute>>,
    /// When libfabric is loaded (if it can be used at all).
    fabric_use: FabricUse,
    local_data: LocalData,
    /// Requests relayed so far.
    relayed: std::sync::atomic::AtomicU64,
    /// Set once this node's daemon failed to take a relayed request.
    relay_down: AtomicBool,
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
        fabric_use: FabricUse,
        local_data: LocalData,
        token: u128,
        timeout: std::time::Duration,
    ) -> Arc<Rpcs> {
        let me = this_host();
        let max_frame = gkfs_proto::local::max_frame(hosts.chunk_size());
        let routes = hosts
            .entries
            .iter()
            .map(|e| match (&e.socket, transport) {
                (Some(s), Transport::Auto) if Some(&e.hostname) == me.as_ref() => {
                    Route::Local(Arc::new(LocalRoute::new(s.into(), max_frame, timeout)))
                }
                _ => Route::Fabric,
            })
            .collect::<Vec<Route>>();
        let relay = routes.iter().find_map(|r| match r {
            Route::Local(l) => Some(l.clone()),
            Route::Fabric => None,
        });
        let locals = routes
            .iter()
            .filter(|r| matches!(r, Route::Local(_)))
            .count();
        Arc::new_cyclic(|weak| Rpcs {
            me: weak.clone(),
            health: hosts.entries.iter().map(|_| Health::default()).collect(),
            routes,
            locals,
            membership: hosts.membership(),
            hosts,
            fabric: OnceLock::new(),
            relay,
            fabric_use,
            local_data,
            relayed: std::sync::atomic::AtomicU64::new(0),
            relay_down: AtomicBool::new(false),
            token,
            timeout,
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Why daemon `d` is known to be down (None: it is not known to be).
    pub fn down(&self, d: u32) -> Option<Errno> {
        let e = self.health.get(d as usize)?.down.load(Ordering::Relaxed);
        (e != 0).then_some(Errno(e))
    }

    /// Pre-check of a call to several daemons: fails (with the errno a
    /// down daemon was found with) before anything starts, so that no call is left
    /// half started with buffers lent to the daemons already working on it.
    pub fn all_up(&self, daemons: impl IntoIterator<Item = u32>) -> Result<(), Errno> {
        for d in daemons {
            if let Some(e) = self.down(d) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Notes that daemon `d` did not answer (`e`: ETIMEDOUT or EIO) and starts
    /// probing it in the background.
    fn mark_down(&self, d: u32, e: Errno) {
        let Some(h) = self.health.get(d as usize) else {
            return;
        };
        if h.down.swap(e.0, Ordering::Relaxed) == 0 {
            log::warn!("daemon {d} is down ({e}); calls to it fail at once until it answers again");
        }
        if h.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("gkfs-probe".into())
            .spawn(move || probe(me, d));
        if spawned.is_err() {
            // No thread: the daemon stays marked down only until the next call.
            h.probing.store(false, Ordering::Release);
            h.down.store(0, Ordering::Relaxed);
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

    /// The node-local route a request for daemon `d` goes through, if it is relayed
    /// (another node's daemon, libfabric not loaded and not yet worth loading).
    fn relay_for(&self, d: u32) -> Option<&Arc<LocalRoute>> {
        if !matches!(self.routes.get(d as usize), Some(Route::Fabric)) {
            return None;
        }
        let relay = self.relay.as_ref()?;
        if self.relay_down.load(Ordering::Relaxed) {
            return None;
        }
        if self.fabric_refused() {
            // libfabric cannot be used here: this node's daemon still can reach them.
            return Some(relay);
        }
        match (self.fabric.get(), self.fabric_use) {
            (Some(_), _) | (None, FabricUse::Direct) => None,
            (None, FabricUse::Auto) => {
                (self.relayed.fetch_add(1, Ordering::Relaxed) < RELAY_LIMIT).then_some(relay)
            }
        }
    }

    /// Does this process not use libfabric: it failed to open, or this process was
    /// forked from one that had loaded it ([`gkfs_fabric::loaded_before_fork`]) and
    /// this node's daemon can relay instead? Then other nodes' daemons are reached only
    /// through this node's daemon, and a transfer moves in pieces small enough to go
    /// inline. (Without a daemon to relay, a forked child opens its own endpoint: the
    /// only way left, which can hang if a parent thread was inside libfabric.)
    pub(crate) fn fabric_refused(&self) -> bool {
        match self.fabric.get() {
            Some(opened) => opened.is_err(),
            None => {
                gkfs_fabric::loaded_before_fork()
                    && self.relay.is_some()
                    && !self.relay_down.load(Ordering::Relaxed)
            }
        }
    }

    /// This node's daemon cannot relay (it is gone, or its socket is): requests for other
    /// nodes' daemons go through libfabric from now on.
    fn relay_broken(&self, e: &dyn std::fmt::Display) {
        if !self.relay_down.swap(true, Ordering::Relaxed) {
            log::warn!("this node's daemon cannot relay requests ({e}); other nodes' daemons are reached through libfabric");
        }
    }

    /// Is daemon `d` reached through its node-local socket (data always inline)?
    pub fn is_local(&self, d: u32) -> bool {
        matches!(self.routes.get(d as usize), Some(Route::Local(_)))
    }

    /// May a call to local daemon `d` take `n` more connections without outgrowing the
    /// idle pool (whatever is open beyond it is closed after use, and opened again by
    /// the next call that needs it)?
    pub(crate) fn local_room(&self, d: u32, n: usize) -> bool {
        match self.routes.get(d as usize) {
            Some(Route::Local(l)) => l.open.load(Ordering::Relaxed) + n <= IDLE_CONNS,
            _ => false,
        }
    }

    /// Local daemon `d`'s route and its chunk dir, when this process moves the bytes of
    /// `d`'s chunks itself ([`LocalData::Direct`]; asked of `d` at the first data call).
    pub(crate) fn chunk_dir(&self, d: u32) -> Option<(&LocalRoute, &ChunkDir)> {
        let Some(Route::Local(l)) = self.routes.get(d as usize) else {
            return None;
        };
        if self.local_data != LocalData::Direct {
            return None;
        }
        let dir = l.chunk_dir.get_or_init(|| {
            let reply = self.call(d, &ChunkDirReq {}).ok()?;
            ChunkDir::open(&reply)
                .map_err(|e| log::debug!("daemon {d}'s chunks are read by the daemon: {e}"))
                .ok()
        });
        dir.as_ref().map(|c| (&**l, c))
    }

    /// Closes the chunk files of file `id` kept open here, and forgets its known size.
    pub(crate) fn release_kept(&self, id: u64) {
        for r in &self.routes {
            if let Route::Local(l) = r {
                if let Some(Some(dir)) = l.chunk_dir.get() {
                    dir.release(id);
                }
            }
        }
    }

    /// Does any daemon go through the node-local socket?
    pub fn any_local(&self) -> bool {
        self.locals > 0
    }

    /// Does every daemon go through the node-local socket?
    pub(crate) fn all_local(&self) -> bool {
        self.locals == self.routes.len()
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
        if let Some(e) = self.down(d) {
            return Err(e);
        }
        self.send(d, req, max_reply, put, self.timeout)
    }

    /// Sends, whatever is known about the daemon, with this deadline.
    fn send<R: Rpc>(
        &self,
        d: u32,
        req: &R,
        max_reply: usize,
        put: &[&[u8]],
        timeout: Duration,
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
        let deadline = Instant::now() + timeout;
        if let Some(l) = self.relay_for(d).filter(|_| put.is_empty()) {
            let outer = encode_request(
                RequestHeader {
                    opcode: 0,
                    request_id,
                    token: self.token,
                    membership: self.membership,
                },
                &RelayReq {
                    target: d,
                    request: gkfs_proto::wire::Bytes(msg.clone()),
                    max_reply: max_reply as u32,
                    timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
                },
            );
            let sent = l.conn().and_then(|mut c| {
                c.channel.send(&outer)?;
                Ok(c)
            });
            match sent {
                Ok(c) => {
                    return Ok(Pending {
                        call: Call::Relay(l.clone(), c),
                        daemon: d,
                        deadline,
                        rpcs: self.me.clone(),
                        _r: PhantomData,
                    })
                }
                // Nothing reached a daemon: the request goes through libfabric instead.
                Err(e) => self.relay_broken(&e),
            }
        }
        let call = match route {
            Route::Local(l) => {
                let sent = l.conn().and_then(|mut c| {
                    let mut at = 0;
                    let win = c.channel.window_mut();
                    for p in put {
                        win.get_mut(at..at + p.len())
                            .ok_or(std::io::ErrorKind::InvalidInput)?
                            .copy_from_slice(p);
                        at += p.len();
                    }
                    c.channel.send(&msg)?;
                    Ok(c)
                });
                match sent {
                    Ok(c) => Call::Local(l.clone(), c),
                    Err(e) => {
                        log::warn!("{:?} to daemon {d} ({}): {e}", R::OPCODE, l.path.display());
                        let e = io_errno(&e);
                        // Only a timeout says the daemon is hung: a refused connect is
                        // fast anyway, and a broken pooled connection says nothing
                        // about the daemon.
                        if e == Errno::ETIMEDOUT {
                            self.mark_down(d, e);
                        }
                        return Err(e);
                    }
                }
            }
            Route::Fabric => {
                let f = self.fabric()?;
                let call =
                    f.ep.start_call(f.peers[d as usize], &msg, max_reply, deadline)
                        .map_err(|e| {
                            log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                            let errno = fabric_errno(&e);
                            if e.is_peer_failure() {
                                self.mark_down(d, errno);
                            }
                            errno
                        })?;
                Call::Fabric(call)
            }
        };
        Ok(Pending {
            call,
            daemon: d,
            deadline,
            rpcs: self.me.clone(),
            _r: PhantomData,
        })
    }

    /// Sends `req` to daemon `d` and waits for the reply.
    pub fn call<R: Rpc>(&self, d: u32, req: &R) -> Result<R::Reply, Errno> {
        self.start(d, req, SMALL_REPLY)?.wait()
    }

    /// [`Rpcs::call`] with a shorter deadline (at most the client's).
    pub fn call_within<R: Rpc>(
        &self,
        d: u32,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Reply, Errno> {
        if let Some(e) = self.down(d) {
            return Err(e);
        }
        self.send(d, req, SMALL_REPLY, &[], timeout.min(self.timeout))?
            .wait()
    }

    /// Has this process loaded libfabric (reached a daemon through it)?
    pub fn fabric_loaded(&self) -> bool {
        self.fabric.get().is_some_and(|f| f.is_ok())
    }
}

/// Probes daemon `d` until it answers a ping (then it is up again) or the client is
/// gone.
/// Work the embedding program does while a call waits for its reply (the preload
/// library makes its description pages there).
static WHILE_WAITING: OnceLock<fn()> = OnceLock::new();

/// Sets the work to do while a call waits for its reply (once per process; later calls
/// are ignored). `f` runs in the waiting thread after the request went out: it must be
/// short, must not make calls of this API, and must not wait for locks a caller of
/// this API may hold.
pub fn set_while_waiting(f: fn()) {
    let _ = WHILE_WAITING.set(f);
}

fn probe(rpcs: Weak<Rpcs>, d: u32) {
    let mut pause = PROBE_FIRST;
    loop {
        std::thread::sleep(pause);
        let Some(r) = rpcs.upgrade() else { return };
        let timeout = r.timeout.min(Duration::from_secs(1));
        let answered = r
            .send(d, &gkfs_proto::msg::PingReq {}, SMALL_REPLY, &[], timeout)
            .and_then(|p| p.wait_quiet())
            .is_ok();
        if answered {
            let h = &r.health[d as usize];
            h.down.store(0, Ordering::Relaxed);
            h.probing.store(false, Ordering::Release);
            log::info!("daemon {d} answers again");
            return;
        }
        pause = (pause * 2).min(PROBE_MAX);
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
    /// Through this node's daemon: the reply is a [`RelayReq`] reply around the
    /// target's.
    Relay(Arc<LocalRoute>, LocalConn),
}

/// A local connection's window, handed to the caller with a reply; the connection goes
/// back to the pool when this is dropped.
pub(crate) struct WindowGuard {
    conn: Option<(Arc<LocalRoute>, LocalConn)>,
}

impl WindowGuard {
    /// The window's bytes (what the daemon put there for this call).
    pub fn bytes(&self) -> &[u8] {
        self.conn.as_ref().map_or(&[], |(_, c)| c.channel.window())
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
    /// Told when the daemon turns out not to answer.
    rpcs: Weak<Rpcs>,
    _r: PhantomData<R>,
}

impl<R: Rpc> Pending<R> {
    /// The call lent the daemon `bytes` to move by RMA: waiting for it polls longer
    /// before it blocks (`gkfs_fabric::PendingCall::moving`).
    pub fn moving(mut self, bytes: u64) -> Self {
        if let Call::Fabric(call) = self.call {
            self.call = Call::Fabric(call.moving(bytes));
        }
        self
    }

    /// Waits for the reply.
    pub fn wait(self) -> Result<R::Reply, Errno> {
        self.wait_window().map(|(r, _)| r)
    }

    /// Waits for the reply without telling anyone that the daemon did not answer
    /// (the probe's own wait).
    fn wait_quiet(mut self) -> Result<R::Reply, Errno> {
        self.rpcs = Weak::new();
        self.wait()
    }

    /// Waits for the reply; for a local call, also hands over the connection's window.
    pub fn wait_window(self) -> Result<(R::Reply, WindowGuard), Errno> {
        let d = self.daemon;
        let unreachable = |e: Errno| {
            if let Some(r) = self.rpcs.upgrade() {
                r.mark_down(d, e);
            }
            e
        };
        let mut guard = WindowGuard { conn: None };
        let relayed = matches!(self.call, Call::Relay(..));
        if let Some(f) = WHILE_WAITING.get() {
            f();
        }
        let bytes = match self.call {
            Call::Fabric(call) => call.wait(self.deadline).map_err(|e| {
                log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                let errno = fabric_errno(&e);
                if e.is_peer_failure() {
                    unreachable(errno);
                }
                errno
            })?,
            Call::Local(route, mut c) | Call::Relay(route, mut c) => {
                match c.channel.recv() {
                    Ok(Some(b)) => {
                        guard.conn = Some((route, c));
                        b
                    }
                    Ok(None) => {
                        log::warn!(
                            "{:?} to daemon {d}: the daemon closed the connection",
                            R::OPCODE
                        );
                        if relayed {
                            if let Some(r) = self.rpcs.upgrade() {
                                r.relay_broken(&"it closed the connection");
                            }
                        }
                        return Err(Errno::EIO);
                    }
                    Err(e) => {
                        log::warn!("{:?} to daemon {d}: {e}", R::OPCODE);
                        if relayed {
                            // This node's daemon failed, not necessarily daemon `d`.
                            if let Some(r) = self.rpcs.upgrade() {
                                r.relay_broken(&e);
                            }
                            return Err(io_errno(&e));
                        }
                        let e = io_errno(&e);
                        return Err(if e == Errno::ETIMEDOUT {
                            unreachable(e)
                        } else {
                            e
                        });
                    }
                }
            }
        };
        let bytes = if relayed {
            match decode_reply::<RelayReq>(&bytes) {
                Ok((_, Ok(r))) => r.reply.0,
                Ok((_, Err(remote))) => {
                    log::warn!(
                        "{:?} to daemon {d} through this node's daemon: {}",
                        R::OPCODE,
                        remote.detail
                    );
                    if matches!(remote.errno, Errno::ETIMEDOUT | Errno::EHOSTUNREACH) {
                        unreachable(remote.errno);
                    }
                    return Err(remote.errno);
                }
                Err(e) => {
                    log::warn!(
                        "{:?} to daemon {d}: undecodable relay reply: {e}",
                        R::OPCODE
                    );
                    return Err(Errno::EPROTO);
                }
            }
        } else {
            bytes
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

/// A call that could not be started among others: the ones already in flight are
/// waited for first (their daemons may be reading or writing buffers the caller is
/// about to free), then the error is returned.
pub(crate) fn settled<R: Rpc, S: Rpc>(
    started: Result<Pending<R>, Errno>,
    in_flight: &mut Vec<Pending<S>>,
) -> Result<Pending<R>, Errno> {
    started.inspect_err(|_| {
        let _ = wait_all(std::mem::take(in_flight));
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Bytes moved in the daemon's chunk files while every connection is in use reach
    /// the daemon when that connection is given back, not only at a next request (which
    /// a process that ends next never makes).
    #[test]
    fn bytes_counted_while_no_connection_is_idle_are_told_when_one_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = UnixListener::bind(&path).unwrap();
        let max = gkfs_proto::local::max_frame(1 << 16);
        // The daemon's side: the connection's channel, for its counters.
        let daemon = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            Channel::accept(stream, max, Duration::from_secs(10)).unwrap()
        });
        let route = LocalRoute::new(path, max, Duration::from_secs(10));
        let c = route.conn().unwrap();
        let daemon = daemon.join().unwrap();
        let counts = daemon.elsewhere_counts().unwrap();
        // In use: nowhere to tell it yet.
        route.count_elsewhere(0, 1000);
        assert_eq!(counts.take(), (0, 0));
        route.give_back(c);
        assert_eq!(counts.take(), (0, 1000));
        // Idle: told at once.
        route.count_elsewhere(7, 0);
        assert_eq!(counts.take(), (7, 0));
    }
}
