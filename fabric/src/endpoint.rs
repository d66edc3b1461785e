//! The endpoint: one libfabric RDM endpoint with its fabric, domain, completion queue
//! and address vector, plus the progress engine that turns completions into results.
//!
//! Progress is leader/follower, with no background thread: a thread that must wait for
//! something (a reply, an RMA, an incoming request) becomes the *leader* if nobody is,
//! and polls the CQ briefly, then blocks in `fi_cq_sread` (see `spin_time`); every
//! completion it reads is handed to its owner, and the other waiters sleep, each on its
//! own condition variable, woken when their operation ended. When the leader's own wait
//! is over, it steps down and wakes one waiter whose operation has not ended, to take
//! over.
//! A serving thread that takes a short request keeps the lead, and the requests read
//! with it, for when it is back; another thread is woken to serve them only while the
//! cores allow one more busy thread ([`crate::spin::busy_max`]) or when the request
//! takes long ([`Endpoint::hand_over`]). A serving thread that waits for the RMAs of
//! its request leads meanwhile, and keeps the lead for its return when they are over.
//! A leader polls before it blocks only while no other thread waits for a reply: with
//! several calls in flight, the core it would spin on is the one their wake-ups need.
//! How long it polls grows with the bytes an RMA (or a call that lent a buffer) moves.
//! With `FI_PROGRESS_MANUAL` providers (tcp;ofi_rxm) this also keeps RMA targets
//! progressing while their owner waits for the reply.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::chunk_file::HeldMap;
use crate::error::{check, classify, strerror, FabricError};
use crate::sys;

/// Tag of request messages; replies use the caller's tag, always below this.
const REQUEST_TAG: u64 = 1 << 62;
/// Longest time a leader blocks in the CQ before re-checking deadlines and shutdown.
const MAX_SLICE: Duration = Duration::from_millis(200);
/// How long a waiting leader polls the CQ before blocking in `fi_cq_sread`
/// (`GKFS_SPIN_US`, default 100 µs), while polling pays ([`crate::spin::Score`]), a
/// poll slot is free ([`crate::spin::SpinSlot`]: at most half the cores of the process
/// poll) and no request taken from this endpoint is still being handled (its handler
/// needs the core). A blocked wait costs a wake-up on each side of a round trip: on 2
/// cores with tcp;ofi_rxm ~120 µs a round trip blocking at once, where polling sides
/// need ~35 µs (fi_pingpong); a poller that takes the core a handler needs makes the
/// round trip as long as the poll (measured: 5 ms polls, 4 ms round trips).
fn spin_time() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        Duration::from_micros(
            std::env::var("GKFS_SPIN_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100),
        )
    })
}

/// How long a thread asking for requests leaves the lead to a leader that went to serve
/// one (see `State::lead_away`).
const TAKEOVER: Duration = Duration::from_micros(200);

/// Completions read per `fi_cq_sread`.
const CQ_BATCH: usize = 16;

/// How to open an endpoint.
#[derive(Debug, Clone)]
pub struct Config {
    /// libfabric provider, e.g. `tcp;ofi_rxm`, `verbs;ofi_rxm`, `shm`, `sockets`.
    pub provider: String,
    /// Local address or host name to listen on; None lets the provider choose.
    pub node: Option<String>,
    /// Local port (service); None lets the provider choose.
    pub service: Option<String>,
}

impl Config {
    /// The default provider when none is given.
    pub const DEFAULT_PROVIDER: &'static str = "tcp;ofi_rxm";
}

/// A peer in this endpoint's address vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(u64);

/// A remote buffer the peer registered for RMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBuf {
    /// Base address to use in RMA calls (0 or a virtual address, per provider).
    pub addr: u64,
    /// Remote key.
    pub key: u64,
    /// Length in bytes.
    pub len: u64,
}

impl RemoteBuf {
    /// Its 24 bytes (address, key, length, little-endian) for a message of a program's
    /// own, as tests and benchmarks send them (gkfs requests carry a `Bulk`).
    pub fn to_le_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        for (i, v) in [self.addr, self.key, self.len].into_iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Reads [`RemoteBuf::to_le_bytes`] from the start of `b`.
    pub fn from_le_bytes(b: &[u8]) -> Option<RemoteBuf> {
        let v = |i: usize| {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(RemoteBuf {
            addr: v(0)?,
            key: v(1)?,
            len: v(2)?,
        })
    }
}

/// The buffer as a request names it on the wire.
impl From<RemoteBuf> for gkfs_proto::msg::Bulk {
    fn from(r: RemoteBuf) -> Self {
        gkfs_proto::msg::Bulk {
            addr: r.addr,
            key: r.key,
            len: r.len,
        }
    }
}

/// The buffer a request names, as RMA calls take it.
impl From<&gkfs_proto::msg::Bulk> for RemoteBuf {
    fn from(b: &gkfs_proto::msg::Bulk) -> Self {
        RemoteBuf {
            addr: b.addr,
            key: b.key,
            len: b.len,
        }
    }
}

/// A request received by a serving endpoint.
#[derive(Debug)]
pub struct Request {
    /// Who sent it.
    pub from: Peer,
    /// The message did not fit the receive buffer: the payload is cut short and the
    /// request should be answered with an error.
    pub truncated: bool,
    reply_tag: u64,
    /// The receive buffer it came in (all of it), given back to `pool` when the
    /// request is dropped.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pool: Arc<RecvPool>,
}

impl Drop for Request {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Receive buffers given back by handled requests, to be posted again as they are.
#[derive(Default)]
struct RecvPool(Mutex<Vec<Vec<u8>>>);

/// Most buffers a pool keeps (more than the posted ones plus the requests served at
/// once is never needed).
const RECV_POOL_MAX: usize = 64;

impl RecvPool {
    fn give(&self, buf: Vec<u8>) {
        let mut p = lock(&self.0);
        if p.len() < RECV_POOL_MAX && !buf.is_empty() {
            p.push(buf);
        }
    }
    fn take(&self) -> Option<Vec<u8>> {
        lock(&self.0).pop()
    }
}

impl std::fmt::Debug for RecvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvPool({} buffers)", lock(&self.0).len())
    }
}

impl Request {
    /// The request bytes (after the transport envelope).
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// Result slot of one posted operation.
struct Slot {
    st: Mutex<SlotState>,
    /// Wakes the thread waiting for this operation; used with the endpoint's state
    /// mutex.
    cv: Condvar,
    /// How long its waiter polls before it blocks, in µs (see [`bulk_spin`]).
    spin_us: AtomicU64,
}

/// How long to poll for an operation that moves `bytes` by RMA before blocking: the
/// usual [`spin_time`], or longer for a large transfer, which keeps making progress
/// meanwhile (with `FI_PROGRESS_MANUAL` only while some thread polls; a blocked waiter
/// is woken for every part of it). At 1 GB/s, at most [`BULK_SPIN_MAX`].
fn bulk_spin(bytes: u64) -> Duration {
    spin_time().max(Duration::from_micros(bytes / 1000).min(BULK_SPIN_MAX))
}

/// Longest poll of [`bulk_spin`].
const BULK_SPIN_MAX: Duration = Duration::from_millis(2);

#[derive(Default)]
struct SlotState {
    /// The data operation's own completion was reaped (its context is freed).
    reaped: bool,
    /// The outcome, until the waiter takes it.
    result: Option<Result<(Vec<u8>, usize), FabricError>>,
    /// The waiter took the outcome.
    taken: bool,
}

impl Slot {
    fn new(spin: Duration) -> Arc<Slot> {
        Arc::new(Slot {
            st: Mutex::new(SlotState::default()),
            cv: Condvar::new(),
            spin_us: AtomicU64::new(spin.as_micros() as u64),
        })
    }
    fn spin(&self) -> Duration {
        Duration::from_micros(self.spin_us.load(Ordering::Relaxed))
    }
    /// Has the operation an outcome (waiting to be taken, or taken)?
    fn ended(&self) -> bool {
        let st = lock(&self.st);
        st.result.is_some() || st.taken
    }
    /// The data operation completed (called just before its context is freed).
    fn finish(&self, r: Result<(Vec<u8>, usize), FabricError>) {
        let mut st = lock(&self.st);
        st.reaped = true;
        if st.result.is_none() && !st.taken {
            st.result = Some(r);
        }
    }
    /// A linked operation (the request send) failed: fail the call early.
    fn fail(&self, e: FabricError) {
        let mut st = lock(&self.st);
        if st.result.is_none() && !st.taken {
            st.result = Some(Err(e));
        }
    }
    fn take(&self) -> Option<Result<(Vec<u8>, usize), FabricError>> {
        let mut st = lock(&self.st);
        let r = st.result.take();
        if r.is_some() {
            st.taken = true;
        }
        r
    }
}

/// The local memory of a receive or an RMA, owned by the operation until it ends.
enum LocalBuf {
    /// A heap buffer (what a receive or an RMA read fills, or an RMA write sends).
    Heap(Vec<u8>),
    /// A chunk file's mapped bytes: read-only, only ever what an RMA write sends.
    Held(HeldMap),
}

impl LocalBuf {
    /// Where the memory is, for the provider (written only if it is a heap buffer).
    fn ptr_len(&mut self) -> (*mut u8, usize) {
        match self {
            LocalBuf::Heap(buf) => (buf.as_mut_ptr(), buf.len()),
            LocalBuf::Held(map) => (map.as_ptr().cast_mut(), map.len()),
        }
    }

    /// What the provider may do with it: a mapping is registered as a source only
    /// (verbs asks for local write access with FI_RECV or FI_READ, which read-only
    /// memory cannot give).
    fn access(&self) -> u64 {
        match self {
            LocalBuf::Heap(_) => ANY_ACCESS,
            LocalBuf::Held(_) => (sys::FI_SEND | sys::FI_WRITE) as u64,
        }
    }

    /// The heap buffer back (an empty one for a mapping, which is unmapped here).
    fn into_heap(self) -> Vec<u8> {
        match self {
            LocalBuf::Heap(buf) => buf,
            LocalBuf::Held(_) => Vec::new(),
        }
    }
}

/// Every use of a local registration.
const ANY_ACCESS: u64 = (sys::FI_SEND | sys::FI_RECV | sys::FI_READ | sys::FI_WRITE) as u64;

/// Direction of an RMA.
#[derive(Clone, Copy)]
enum Rma {
    /// Pull the peer's bytes into ours.
    Read,
    /// Push our bytes into the peer's.
    Write,
}

/// What a posted operation's context owns until its completion is reaped.
enum OpKind {
    /// A send; on failure the linked call (if any) fails early.
    Send {
        _buf: Vec<u8>,
        call: Option<Arc<Slot>>,
    },
    /// A receive of a reply, or an RMA: the buffer goes to the slot.
    Data { buf: LocalBuf, slot: Arc<Slot> },
    /// A posted request buffer of a serving endpoint.
    Incoming { buf: Vec<u8> },
}

/// The context libfabric carries for us; `fi` must stay the first field.
#[repr(C)]
struct OpCtx {
    fi: sys::fi_context2,
    kind: OpKind,
    _mr: Option<LocalMr>,
}

/// A registration of a local buffer, for providers with `FI_MR_LOCAL`.
struct LocalMr(*mut sys::fid_mr);

// SAFETY: a fid_mr is a handle usable from any thread of a FI_THREAD_SAFE domain.
unsafe impl Send for LocalMr {}

impl Drop for LocalMr {
    fn drop(&mut self) {
        // SAFETY: the mr was opened by fi_mr_reg and is closed exactly once, here.
        unsafe { sys::gkfs_fi_close(sys::gkfs_fid_of_mr(self.0)) };
    }
}

#[derive(Default)]
struct State {
    leader: bool,
    /// The leader took a request and went to serve it, leaving nobody polling: its
    /// thread takes the lead again when it asks for the next request, which for a
    /// short request is before a waiting thread could have been woken to take over.
    /// Another thread asking for requests waits [`TAKEOVER`] for that (a wait for a
    /// reply or an RMA never does); a request that will take long gives the lead
    /// away at once ([`Endpoint::hand_over`]).
    lead_away: Option<(Instant, std::thread::ThreadId)>,
    waiters: usize,
    /// The slots of the waiters waiting for a reply or an RMA (not for a request), each
    /// woken on its own condition variable: when its operation ends, or to take the
    /// lead (a leader off to serve a request wakes one, since it may be a while before
    /// it polls again).
    calls: Vec<Arc<Slot>>,
    incoming: VecDeque<Request>,
    shutdown: bool,
    recv_size: usize,
}

struct Inner {
    info: *mut sys::fi_info,
    fabric: *mut sys::fid_fabric,
    domain: *mut sys::fid_domain,
    cq: *mut sys::fid_cq,
    av: *mut sys::fid_av,
    ep: *mut sys::fid_ep,
    mr_mode: u64,
    name: Vec<u8>,
    provider: String,
    state: Mutex<State>,
    cv: Condvar,
    next_tag: AtomicU64,
    next_key: AtomicU64,
    peers: Mutex<HashMap<Vec<u8>, u64>>,
    /// Requests handed out by `next_request` and not yet replied to.
    handling: AtomicU64,
    /// Whether polling the CQ before blocking pays.
    score: crate::spin::Score,
    /// Receive buffers of handled requests.
    recv_pool: Arc<RecvPool>,
}

// SAFETY: all libfabric objects are opened with FI_THREAD_SAFE, so they may be used
// from any thread concurrently; the Rust-side state is behind mutexes and atomics.
unsafe impl Send for Inner {}
// SAFETY: see Send above.
unsafe impl Sync for Inner {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A libfabric RDM endpoint; cheap to clone (shared handle), safe to use from many
/// threads at once.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.inner.provider)
            .field("mr_mode", &self.inner.mr_mode)
            .finish()
    }
}

/// The process that loaded libfabric into this process image (0: none has).
static LOADED_BY: AtomicU32 = AtomicU32::new(0);

/// Was libfabric loaded into this process image by another process: the one this
/// process was forked from (without exec, which starts a new image)? libfabric is not
/// fork-safe. A child inherits its locks in whatever state the parent's threads held
/// them, and the parent's endpoints without the threads that drive them, so a child
/// that opens an endpoint can hang for good in its first call. Such a child should
/// reach other nodes another way where it has one.
pub fn loaded_before_fork() -> bool {
    let by = LOADED_BY.load(Ordering::Relaxed);
    by != 0 && by != std::process::id()
}

/// Loads the system libfabric (once per process; see csrc/wrap.c for why it is not
/// linked).
fn load_libfabric() -> Result<(), FabricError> {
    LOADED_BY.store(std::process::id(), Ordering::Relaxed);
    // SAFETY: gkfs_fi_load takes no arguments and returns NULL or a pointer to a
    // NUL-terminated message in a static buffer that is never written again.
    let err = unsafe { sys::gkfs_fi_load() };
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: non-null: a static NUL-terminated string (see above).
    let msg = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy();
    Err(FabricError::Call {
        call: "dlopen",
        code: libc::ENOENT,
        msg: format!(
            "cannot load libfabric.so.1 ({msg}); install the libfabric runtime \
             (Debian/Ubuntu: apt-get install libfabric1)"
        ),
    })
}

impl Endpoint {
    /// Opens an endpoint with the given provider and (optional) local address.
    pub fn open(cfg: &Config) -> Result<Endpoint, FabricError> {
        load_libfabric()?;
        let node = cfg
            .node
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| FabricError::BadAddress("NUL in node".into()))?;
        let service = cfg
            .service
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| FabricError::BadAddress("NUL in service".into()))?;
        let prov = CString::new(cfg.provider.as_str())
            .map_err(|_| FabricError::BadAddress("NUL in provider".into()))?;
        let mut inner = Inner {
            info: std::ptr::null_mut(),
            fabric: std::ptr::null_mut(),
            domain: std::ptr::null_mut(),
            cq: std::ptr::null_mut(),
            av: std::ptr::null_mut(),
            ep: std::ptr::null_mut(),
            mr_mode: 0,
            name: Vec::new(),
            provider: cfg.provider.clone(),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            next_tag: AtomicU64::new(1),
            handling: AtomicU64::new(0),
            score: crate::spin::Score::default(),
            recv_pool: Arc::default(),
            next_key: AtomicU64::new(1),
            peers: Mutex::new(HashMap::new()),
        };
        // SAFETY: straight-line libfabric setup. Every pointer passed is either null
        // (where allowed), a CString that outlives the call, or an out-parameter of
        // `inner`; each object created is stored in `inner` at once, so Inner's Drop
        // closes whatever was opened if a later step fails.
        unsafe {
            let hints = sys::gkfs_fi_allocinfo();
            if hints.is_null() {
                return Err(FabricError::Call {
                    call: "fi_allocinfo",
                    code: libc::ENOMEM,
                    msg: "out of memory".into(),
                });
            }
            (*(*hints).ep_attr).type_ = sys::fi_ep_type_FI_EP_RDM;
            (*hints).caps = (sys::FI_TAGGED
                | sys::FI_MSG
                | sys::FI_RMA
                | sys::FI_READ
                | sys::FI_WRITE
                | sys::FI_REMOTE_READ
                | sys::FI_REMOTE_WRITE) as u64;
            (*hints).mode = sys::FI_CONTEXT | sys::FI_CONTEXT2;
            (*(*hints).domain_attr).mr_mode = (sys::FI_MR_LOCAL
                | sys::FI_MR_VIRT_ADDR
                | sys::FI_MR_PROV_KEY
                | sys::FI_MR_ALLOCATED) as i32;
            (*(*hints).domain_attr).threading = sys::fi_threading_FI_THREAD_SAFE;
            // fi_freeinfo frees prov_name: it must come from malloc.
            (*(*hints).fabric_attr).prov_name = libc::strdup(prov.as_ptr());
            let flags = if node.is_some() || service.is_some() {
                sys::FI_SOURCE
            } else {
                0
            };
            let ret = sys::gkfs_fi_getinfo(
                sys::API_VERSION,
                node.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                service.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                flags,
                hints,
                &mut inner.info,
            );
            sys::gkfs_fi_freeinfo(hints);
            if ret != 0 || inner.info.is_null() {
                let code = -ret;
                return Err(FabricError::Call {
                    call: "fi_getinfo",
                    code,
                    msg: format!(
                        "no usable libfabric provider `{}` ({}); check `fi_info -p '{}'`",
                        cfg.provider,
                        strerror(code),
                        cfg.provider
                    ),
                });
            }
            let info = inner.info;
            inner.mr_mode = (*(*info).domain_attr).mr_mode as u64;
            check(
                "fi_fabric",
                sys::gkfs_fi_fabric((*info).fabric_attr, &mut inner.fabric, std::ptr::null_mut())
                    as i64,
            )?;
            check(
                "fi_domain",
                sys::gkfs_fi_domain(inner.fabric, info, &mut inner.domain, std::ptr::null_mut())
                    as i64,
            )?;
            let mut cq_attr = sys::fi_cq_attr {
                size: 0,
                format: sys::fi_cq_format_FI_CQ_FORMAT_TAGGED,
                wait_obj: sys::fi_wait_obj_FI_WAIT_UNSPEC,
                ..Default::default()
            };
            check(
                "fi_cq_open",
                sys::gkfs_fi_cq_open(
                    inner.domain,
                    &mut cq_attr,
                    &mut inner.cq,
                    std::ptr::null_mut(),
                ) as i64,
            )?;
            let mut av_attr = sys::fi_av_attr {
                type_: sys::fi_av_type_FI_AV_TABLE,
                ..Default::default()
            };
            check(
                "fi_av_open",
                sys::gkfs_fi_av_open(
                    inner.domain,
                    &mut av_attr,
                    &mut inner.av,
                    std::ptr::null_mut(),
                ) as i64,
            )?;
            check(
                "fi_endpoint",
                sys::gkfs_fi_endpoint(inner.domain, info, &mut inner.ep, std::ptr::null_mut())
                    as i64,
            )?;
            check(
                "fi_ep_bind(cq)",
                sys::gkfs_fi_ep_bind(
                    inner.ep,
                    sys::gkfs_fid_of_cq(inner.cq),
                    (sys::FI_TRANSMIT | sys::FI_RECV) as u64,
                ) as i64,
            )?;
            check(
                "fi_ep_bind(av)",
                sys::gkfs_fi_ep_bind(inner.ep, sys::gkfs_fid_of_av(inner.av), 0) as i64,
            )?;
            check("fi_enable", sys::gkfs_fi_enable(inner.ep) as i64)?;
            let mut name = vec![0u8; 256];
            let mut len = name.len();
            check(
                "fi_getname",
                sys::gkfs_fi_getname(
                    sys::gkfs_fid_of_ep(inner.ep),
                    name.as_mut_ptr().cast(),
                    &mut len,
                ) as i64,
            )?;
            name.truncate(len);
            inner.name = name;
        }
        log::debug!(
            "opened {} endpoint, mr_mode {:#x}, address {:02x?}",
            cfg.provider,
            inner.mr_mode,
            inner.name
        );
        Ok(Endpoint {
            inner: Arc::new(inner),
        })
    }

    /// This endpoint's address, to publish (e.g. in the hosts file).
    pub fn address(&self) -> &[u8] {
        &self.inner.name
    }

    /// The provider name the endpoint was opened with.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// Peers resolved so far (with `ofi_rxm`, one connection each).
    pub fn peer_count(&self) -> usize {
        lock(&self.inner.peers).len()
    }

    /// Resolves a peer's address (as published by its [`Endpoint::address`]).
    pub fn peer(&self, addr: &[u8]) -> Result<Peer, FabricError> {
        if addr.is_empty() || addr.len() > 1024 {
            return Err(FabricError::BadAddress(format!("{} bytes", addr.len())));
        }
        let mut peers = lock(&self.inner.peers);
        if let Some(&a) = peers.get(addr) {
            return Ok(Peer(a));
        }
        let mut out: u64 = sys::ADDR_UNSPEC;
        // SAFETY: av is open; addr points to one address of the provider's format
        // (a wrong one is rejected by the provider with an error or count 0); out is
        // a valid place for one fi_addr_t.
        let n =
            unsafe { sys::gkfs_fi_av_insert(self.inner.av, addr.as_ptr().cast(), 1, &mut out, 0) };
        if n != 1 || out == sys::ADDR_UNSPEC {
            return Err(FabricError::BadAddress(format!(
                "fi_av_insert returned {n}"
            )));
        }
        peers.insert(addr.to_vec(), out);
        Ok(Peer(out))
    }

    fn needs_local_mr(&self) -> bool {
        self.inner.mr_mode & sys::FI_MR_LOCAL as u64 != 0
    }

    /// Registers a local buffer (`ptr`, `len`) for `access`, where the provider needs it.
    fn local_mr(
        &self,
        (ptr, len): (*const u8, usize),
        access: u64,
    ) -> Result<(Option<LocalMr>, *mut libc::c_void), FabricError> {
        if !self.needs_local_mr() || len == 0 {
            return Ok((None, std::ptr::null_mut()));
        }
        let mut mr: *mut sys::fid_mr = std::ptr::null_mut();
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        // SAFETY: ptr/len are a live heap buffer or mapping owned by the operation
        // context that will also own the registration (and drops it first), so it
        // outlives the mr.
        check("fi_mr_reg", unsafe {
            sys::gkfs_fi_mr_reg(self.inner.domain, ptr.cast(), len, access, key, &mut mr)
        } as i64)?;
        let local = LocalMr(mr);
        // SAFETY: mr was just opened successfully.
        let desc = unsafe { sys::gkfs_fi_mr_desc(mr) };
        Ok((Some(local), desc))
    }

    /// Posts an operation, retrying while the provider says FI_EAGAIN (progressing
    /// the CQ in between) until `deadline`.
    fn post(
        &self,
        what: &'static str,
        mut kind: OpKind,
        deadline: Instant,
        op: impl Fn(*mut libc::c_void, *mut libc::c_void) -> isize,
    ) -> Result<*mut OpCtx, FabricError> {
        let (local, access) = match &mut kind {
            OpKind::Send { _buf, .. } => ((_buf.as_ptr(), _buf.len()), ANY_ACCESS),
            OpKind::Incoming { buf } => ((buf.as_ptr(), buf.len()), ANY_ACCESS),
            OpKind::Data { buf, .. } => {
                let (ptr, len) = buf.ptr_len();
                ((ptr.cast_const(), len), buf.access())
            }
        };
        let (mr, desc) = self.local_mr(local, access)?;
        let ctx = Box::into_raw(Box::new(OpCtx {
            fi: sys::fi_context2::default(),
            kind,
            _mr: mr,
        }));
        loop {
            let ret = op(desc, ctx.cast());
            if ret == 0 {
                return Ok(ctx);
            }
            if ret != -(sys::FI_EAGAIN as isize) || Instant::now() >= deadline {
                // SAFETY: the provider refused the operation, so it never saw ctx and
                // we still own it.
                drop(unsafe { Box::from_raw(ctx) });
                if ret == -(sys::FI_EAGAIN as isize) {
                    return Err(FabricError::Timeout);
                }
                return Err(check(what, ret as i64).unwrap_err());
            }
            // Full: reap completions (which may end other threads' operations).
            let mut ended = Vec::new();
            self.poll(0, None, 0, &mut ended);
            if !ended.is_empty() {
                self.wake_owners(&lock(&self.inner.state), &mut ended, None);
            }
        }
    }

    /// Wakes the waiting owners of the `ended` operations (but not `own`'s, the
    /// caller's); returns how many were woken.
    fn wake_owners(
        &self,
        st: &State,
        ended: &mut Vec<Arc<Slot>>,
        own: Option<&Arc<Slot>>,
    ) -> usize {
        let mut woken = 0;
        for s in ended.drain(..) {
            if own.is_some_and(|o| Arc::ptr_eq(o, &s)) {
                continue;
            }
            if st.calls.iter().any(|c| Arc::ptr_eq(c, &s)) {
                s.cv.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// Reads completions for up to `timeout_ms` and hands each to its owner; the slots
    /// of the operations they ended go to `ended` (incoming requests are queued).
    /// `spin`: poll this long before blocking, if polling pays, a slot is free and no
    /// request taken from this endpoint is being served but the caller's own
    /// `own_requests` (for waits on something that is probably about to arrive).
    fn poll(
        &self,
        timeout_ms: i32,
        spin: Option<Duration>,
        own_requests: u64,
        ended: &mut Vec<Arc<Slot>>,
    ) {
        let mut entries = [sys::fi_cq_tagged_entry::default(); CQ_BATCH];
        let spin = spin.unwrap_or(Duration::ZERO);
        let slot = (timeout_ms > 0
            && !spin.is_zero()
            && self.inner.handling.load(Ordering::Relaxed) <= own_requests
            && self.inner.score.worth_polling())
        .then(crate::spin::SpinSlot::take)
        .flatten();
        let spin_until = Instant::now() + if slot.is_some() { spin } else { Duration::ZERO };
        // SAFETY: cq is open and entries has room for CQ_BATCH tagged entries.
        let n = unsafe {
            let mut n = -(sys::FI_EAGAIN as isize);
            while timeout_ms > 0 && Instant::now() < spin_until {
                n = sys::gkfs_fi_cq_read(self.inner.cq, entries.as_mut_ptr().cast(), CQ_BATCH);
                if n != -(sys::FI_EAGAIN as isize) {
                    break;
                }
                std::hint::spin_loop();
            }
            if n != -(sys::FI_EAGAIN as isize) {
                n
            } else if timeout_ms == 0 {
                sys::gkfs_fi_cq_read(self.inner.cq, entries.as_mut_ptr().cast(), CQ_BATCH)
            } else {
                sys::gkfs_fi_cq_sread(
                    self.inner.cq,
                    entries.as_mut_ptr().cast(),
                    CQ_BATCH,
                    timeout_ms,
                )
            }
        };
        if slot.is_some() {
            self.inner
                .score
                .record(n != -(sys::FI_EAGAIN as isize) && Instant::now() <= spin_until);
        }
        drop(slot);
        if n > 0 {
            for e in &entries[..n as usize] {
                ended.extend(self.complete(e.op_context, Ok(e.len)));
            }
        } else if n == -(sys::FI_EAVAIL as isize) {
            let mut err = sys::fi_cq_err_entry::default();
            // SAFETY: cq is open; err is a valid error entry to fill.
            let r = unsafe { sys::gkfs_fi_cq_readerr(self.inner.cq, &mut err) };
            if r > 0 {
                let mut msg = [0 as libc::c_char; 128];
                // SAFETY: cq is open; msg is a writable buffer of the given length; the
                // returned pointer is a NUL-terminated string (ours or the provider's).
                let text = unsafe {
                    let p = sys::gkfs_fi_cq_strerror(
                        self.inner.cq,
                        err.prov_errno,
                        err.err_data,
                        msg.as_mut_ptr(),
                        msg.len(),
                    );
                    if p.is_null() {
                        String::new()
                    } else {
                        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                    }
                };
                let mut e = classify(
                    "completion",
                    err.err,
                    format!("{} ({text})", strerror(err.err)),
                );
                if let FabricError::Truncated(_) = e {
                    e = FabricError::Truncated(err.len);
                }
                ended.extend(self.complete(err.op_context, Err(e)));
            }
        } else if n < 0 && n != -(sys::FI_EAGAIN as isize) && n != -(sys::FI_ETIMEDOUT as isize) {
            log::warn!("fi_cq_sread: {}", strerror((-n) as i32));
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Hands a completion to its owner; the slot of the waiter's operation it ended, if
    /// it ended one (not a plain successful send, not an incoming request: those are
    /// queued).
    fn complete(
        &self,
        ctx: *mut libc::c_void,
        result: Result<usize, FabricError>,
    ) -> Option<Arc<Slot>> {
        if ctx.is_null() {
            return None;
        }
        // SAFETY: every context we post is a Box<OpCtx> leaked by `post`, and the
        // provider reports each exactly once; we take ownership back here.
        let ctx = unsafe { Box::from_raw(ctx.cast::<OpCtx>()) };
        let OpCtx { kind, _mr, .. } = *ctx;
        match kind {
            OpKind::Send { call, .. } => match (result, call) {
                (Err(e), Some(slot)) => {
                    slot.fail(e);
                    Some(slot)
                }
                _ => None,
            },
            OpKind::Data { buf, slot } => {
                // (The registration goes before the memory it names is unmapped.)
                drop(_mr);
                slot.finish(result.map(|len| (buf.into_heap(), len)));
                Some(slot)
            }
            OpKind::Incoming { buf } => {
                drop(_mr);
                self.on_incoming(buf, result);
                None
            }
        }
    }

    fn on_incoming(&self, buf: Vec<u8>, result: Result<usize, FabricError>) {
        let (size, shutdown) = {
            let st = lock(&self.inner.state);
            (st.recv_size, st.shutdown)
        };
        if shutdown {
            return;
        }
        // The buffer goes with the request (which gives it back to the pool when it is
        // dropped), or is posted again at once.
        let mut spare = None;
        let (len, truncated) = match result {
            Ok(len) => (len.min(buf.len()), false),
            Err(FabricError::Truncated(_)) => (buf.len(), true),
            Err(FabricError::Canceled) => return,
            Err(e) => {
                log::warn!("receive failed: {e}");
                (0, false)
            }
        };
        if len > 0 {
            match self.parse_envelope(&buf[..len]) {
                Ok((from, reply_tag, start)) => {
                    let req = Request {
                        from,
                        truncated,
                        reply_tag,
                        buf,
                        start,
                        end: len,
                        pool: self.inner.recv_pool.clone(),
                    };
                    lock(&self.inner.state).incoming.push_back(req);
                }
                Err(e) => {
                    log::warn!("dropped a malformed message: {e}");
                    spare = Some(buf);
                }
            }
        } else {
            spare = Some(buf);
        }
        // A fresh receive buffer is zeroed (MAX_REQUEST bytes): that was 28% of a
        // daemon's time serving creates from 4 remote client threads.
        let buf = spare
            .or_else(|| self.inner.recv_pool.take())
            .filter(|b| b.len() == size)
            .unwrap_or_else(|| vec![0u8; size]);
        if let Err(e) = self.post_receive(buf) {
            log::error!("cannot repost a receive buffer: {e}");
        }
    }

    /// The sender, reply tag and payload start of a received message.
    fn parse_envelope(&self, buf: &[u8]) -> Result<(Peer, u64, usize), FabricError> {
        if buf.len() < 10 {
            return Err(FabricError::BadAddress(
                "message shorter than its envelope".into(),
            ));
        }
        let reply_tag = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        let alen = u16::from_le_bytes([buf[8], buf[9]]) as usize;
        if buf.len() < 10 + alen || reply_tag >= REQUEST_TAG {
            return Err(FabricError::BadAddress("bad envelope".into()));
        }
        let from = self.peer(&buf[10..10 + alen])?;
        Ok((from, reply_tag, 10 + alen))
    }

    /// Posts `buf` (all of it) to receive the next incoming request.
    fn post_receive(&self, mut buf: Vec<u8>) -> Result<(), FabricError> {
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        let ep = self.inner.ep;
        self.post(
            "fi_trecv",
            OpKind::Incoming { buf },
            Instant::now() + Duration::from_secs(5),
            // SAFETY: ptr/len describe the heap buffer owned by the context, which
            // lives until the completion is reaped.
            |desc, ctx| unsafe {
                sys::gkfs_fi_trecv(
                    ep,
                    ptr.cast(),
                    len,
                    desc,
                    sys::ADDR_UNSPEC,
                    REQUEST_TAG,
                    0,
                    ctx,
                )
            },
        )?;
        Ok(())
    }

    /// Blocks until `check` yields a value, progressing the endpoint as leader when
    /// nobody else does, or until `deadline`. `own`: the slot of the call or RMA this
    /// thread waits for; `None` for a serving thread waiting for a request.
    fn drive<T>(
        &self,
        deadline: Instant,
        own: Option<&Arc<Slot>>,
        mut check: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, FabricError> {
        let inner = &self.inner;
        let serving = own.is_none();
        let mut ended = Vec::new();
        let mut st = lock(&inner.state);
        loop {
            if let Some(v) = check(&mut st) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FabricError::Timeout);
            }
            if st.shutdown && st.incoming.is_empty() {
                return Err(FabricError::Canceled);
            }
            let me = std::thread::current().id();
            let reserved = serving
                && st.lead_away.is_some_and(|(t, by)| {
                    by != me && inner.handling.load(Ordering::Relaxed) > 0 && now < t + TAKEOVER
                });
            if !st.leader && !reserved {
                st.leader = true;
                // A serving thread waiting for an RMA of the request it serves holds
                // the lead it kept for its return; it keeps it again when its wait ends.
                let kept = st.lead_away.take().is_some_and(|(_, by)| by == me);
                loop {
                    let slice = (deadline - Instant::now()).min(MAX_SLICE);
                    // Poll first only while no other thread waits for a reply: the
                    // next completion is then probably this thread's own, and the
                    // others' wake-ups need the core a poller would take.
                    let spin = st
                        .calls
                        .is_empty()
                        .then(|| own.map_or_else(spin_time, |o| o.spin()));
                    drop(st);
                    // A serving thread waiting for its own request's RMAs is the
                    // handler a poller would take the core from.
                    let own_requests = u64::from(kept && !serving);
                    self.poll(
                        (slice.as_millis() as i32).max(1),
                        spin,
                        own_requests,
                        &mut ended,
                    );
                    st = lock(&inner.state);
                    let done = check(&mut st);
                    // Only the owner of an ended operation is woken, and only if it
                    // waits (a wake-up of every waiter per completion, most of them to
                    // sleep again, made 4 client threads' remote creates slower than
                    // one thread's).
                    let woken = self.wake_owners(&st, &mut ended, own);
                    // Requests left queued wake another thread to serve them only while
                    // the cores allow one more busy thread; otherwise the leader takes
                    // them when it is back (or a waiter after TAKEOVER): on 2 cores, 4
                    // threads serving short requests at once made remote creates from 4
                    // client threads 2.3x slower than one serving thread did.
                    // (A serving leader that took nothing left nothing queued: `check`
                    // pops the queue.)
                    let helper = !st.incoming.is_empty()
                        && (!serving
                            || inner.handling.load(Ordering::Relaxed) + 1
                                < crate::spin::busy_max() as u64);
                    // (Any thread woken here leads if nobody does.)
                    let helped = helper && st.waiters > st.calls.len();
                    if helped {
                        inner.cv.notify_all();
                    }
                    if done.is_some() || Instant::now() >= deadline || st.shutdown {
                        st.leader = false;
                        if serving && done.is_some() && woken == 0 && !helper {
                            // Off to serve a request: back for the next one soon; a
                            // thread waiting for a reply leads meanwhile.
                            st.lead_away = Some((Instant::now(), me));
                            self.pass_lead(&st, false);
                        } else if !serving && kept && inner.handling.load(Ordering::Relaxed) > 0 {
                            // Back to the request it serves: the lead stays kept for
                            // this thread (waking another serving thread to lead cost a
                            // wake-up per bulk request: a third of 1 MiB remote reads).
                            st.lead_away = Some((Instant::now(), me));
                            self.pass_lead(&st, false);
                        } else if !helped {
                            self.pass_lead(&st, true);
                        }
                        match done {
                            Some(v) => return Ok(v),
                            None => break,
                        }
                    }
                }
            } else {
                st.waiters += 1;
                let mut wait = (deadline - now).min(MAX_SLICE);
                if let (true, Some((t, _))) = (reserved, st.lead_away) {
                    wait = wait.min((t + TAKEOVER).saturating_duration_since(now));
                }
                let wait = wait.max(Duration::from_micros(1));
                st = match own {
                    Some(slot) => {
                        st.calls.push(slot.clone());
                        let mut st = slot
                            .cv
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        if let Some(i) = st.calls.iter().position(|c| Arc::ptr_eq(c, slot)) {
                            st.calls.swap_remove(i);
                        }
                        st
                    }
                    None => {
                        inner
                            .cv
                            .wait_timeout(st, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
                st.waiters -= 1;
            }
        }
    }

    /// Wakes one waiting thread to take the lead: one whose call has not ended (a
    /// thread whose call ended was woken already and returns), else, if `or_serving`, a
    /// serving thread.
    fn pass_lead(&self, st: &State, or_serving: bool) {
        if let Some(s) = st.calls.iter().find(|s| !s.ended()) {
            s.cv.notify_one();
        } else if or_serving && st.waiters > st.calls.len() {
            self.inner.cv.notify_one();
        }
    }

    /// The request just taken will take long (disk, bulk data, scans): another thread
    /// takes the lead now instead of after [`TAKEOVER`].
    pub fn hand_over(&self) {
        let mut st = lock(&self.inner.state);
        if st.lead_away.take().is_some() && !st.leader {
            self.pass_lead(&st, true);
        }
    }

    fn wait_slot(
        &self,
        slot: &Arc<Slot>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, usize), FabricError> {
        let r = self.drive(deadline, Some(slot), |_| slot.take());
        match r {
            Ok(r) => r,
            Err(e) => Err(e),
        }
    }

    /// Sends a request to `peer` and returns a handle to wait for its reply (at most
    /// `max_reply` bytes). Many calls may be in flight at once.
    pub fn start_call(
        &self,
        peer: Peer,
        payload: &[u8],
        max_reply: usize,
        deadline: Instant,
    ) -> Result<PendingCall, FabricError> {
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed) % REQUEST_TAG;
        let slot = Slot::new(spin_time());
        let mut rbuf = vec![0u8; max_reply];
        let (rptr, rlen) = (rbuf.as_mut_ptr(), rbuf.len());
        let ep = self.inner.ep;
        let rctx = self.post(
            "fi_trecv",
            OpKind::Data {
                buf: LocalBuf::Heap(std::mem::take(&mut rbuf)),
                slot: slot.clone(),
            },
            deadline,
            // SAFETY: rptr/rlen describe the heap buffer now owned by the context.
            |desc, ctx| unsafe {
                sys::gkfs_fi_trecv(ep, rptr.cast(), rlen, desc, peer.0, tag, 0, ctx)
            },
        )?;
        let name = &self.inner.name;
        let mut msg = Vec::with_capacity(10 + name.len() + payload.len());
        msg.extend_from_slice(&tag.to_le_bytes());
        msg.extend_from_slice(&(name.len() as u16).to_le_bytes());
        msg.extend_from_slice(name);
        msg.extend_from_slice(payload);
        let (sptr, slen) = (msg.as_ptr(), msg.len());
        let sent = self.post(
            "fi_tsend",
            OpKind::Send {
                _buf: msg,
                call: Some(slot.clone()),
            },
            deadline,
            // SAFETY: sptr/slen describe the heap buffer now owned by the context.
            |desc, ctx| unsafe {
                sys::gkfs_fi_tsend(ep, sptr.cast(), slen, desc, peer.0, REQUEST_TAG, ctx)
            },
        );
        let pending = PendingCall {
            ep: self.clone(),
            slot,
            ctx: rctx,
        };
        sent?;
        Ok(pending)
    }

    /// Sends a request and waits for its reply.
    pub fn call(
        &self,
        peer: Peer,
        payload: &[u8],
        max_reply: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, FabricError> {
        let deadline = Instant::now() + timeout;
        self.start_call(peer, payload, max_reply, deadline)?
            .wait(deadline)
    }

    /// Makes this endpoint a server: keeps `count` receive buffers of `size` bytes
    /// posted for incoming requests.
    pub fn serve(&self, count: usize, size: usize) -> Result<(), FabricError> {
        lock(&self.inner.state).recv_size = size + 10 + self.inner.name.len().max(256);
        let size = lock(&self.inner.state).recv_size;
        for _ in 0..count {
            self.post_receive(vec![0u8; size])?;
        }
        Ok(())
    }

    /// Waits for the next request; `Ok(None)` when the endpoint is shut down.
    pub fn next_request(&self, deadline: Instant) -> Result<Option<Request>, FabricError> {
        match self.drive(deadline, None, |st| st.incoming.pop_front()) {
            Ok(r) => {
                self.inner.handling.fetch_add(1, Ordering::Relaxed);
                Ok(Some(r))
            }
            Err(FabricError::Canceled) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends the reply to a request (fire and forget: the buffer is kept until the
    /// send completes).
    pub fn reply(&self, req: &Request, payload: Vec<u8>) -> Result<(), FabricError> {
        let _ = self
            .inner
            .handling
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| h.checked_sub(1));
        let (ptr, len) = (payload.as_ptr(), payload.len());
        let ep = self.inner.ep;
        let (to, tag) = (req.from.0, req.reply_tag);
        self.post(
            "fi_tsend",
            OpKind::Send {
                _buf: payload,
                call: None,
            },
            Instant::now() + Duration::from_secs(5),
            // SAFETY: ptr/len describe the heap buffer now owned by the context.
            |desc, ctx| unsafe { sys::gkfs_fi_tsend(ep, ptr.cast(), len, desc, to, tag, ctx) },
        )?;
        Ok(())
    }

    /// Starts an RMA read of `len` bytes at `offset` of the peer's `remote` buffer
    /// into `buf` (which is resized to `len`); the buffer comes back from `wait`.
    pub fn start_read(
        &self,
        peer: Peer,
        remote: RemoteBuf,
        offset: u64,
        mut buf: Vec<u8>,
        len: usize,
        deadline: Instant,
    ) -> Result<PendingRma, FabricError> {
        buf.resize(len, 0);
        self.start_rma(
            Rma::Read,
            peer,
            remote,
            offset,
            LocalBuf::Heap(buf),
            deadline,
        )
    }

    /// Starts an RMA write of `buf` to `offset` of the peer's `remote` buffer.
    pub fn start_write(
        &self,
        peer: Peer,
        remote: RemoteBuf,
        offset: u64,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> Result<PendingRma, FabricError> {
        self.start_rma(
            Rma::Write,
            peer,
            remote,
            offset,
            LocalBuf::Heap(buf),
            deadline,
        )
    }

    /// Starts an RMA write of a chunk file's mapped bytes (all of them) to `offset` of
    /// the peer's `remote` buffer, with no copy on this side; `wait` gives back an
    /// empty buffer.
    pub fn start_write_held(
        &self,
        peer: Peer,
        remote: RemoteBuf,
        offset: u64,
        map: HeldMap,
        deadline: Instant,
    ) -> Result<PendingRma, FabricError> {
        self.start_rma(
            Rma::Write,
            peer,
            remote,
            offset,
            LocalBuf::Held(map),
            deadline,
        )
    }

    /// Posts one RMA between `local` (all of it) and `remote` at `offset`.
    fn start_rma(
        &self,
        dir: Rma,
        peer: Peer,
        remote: RemoteBuf,
        offset: u64,
        mut local: LocalBuf,
        deadline: Instant,
    ) -> Result<PendingRma, FabricError> {
        let (ptr, len) = local.ptr_len();
        self.check_remote(remote, offset, len)?;
        let slot = Slot::new(bulk_spin(len as u64));
        let ep = self.inner.ep;
        let (raddr, key) = (remote.addr + offset, remote.key);
        let what = match dir {
            Rma::Read => "fi_read",
            Rma::Write => "fi_write",
        };
        self.post(
            what,
            OpKind::Data {
                buf: local,
                slot: slot.clone(),
            },
            deadline,
            // SAFETY: ptr/len describe the heap buffer or mapping now owned by the
            // context (a mapping is read-only and only ever the source of a write).
            |desc, ctx| unsafe {
                match dir {
                    Rma::Read => {
                        sys::gkfs_fi_read(ep, ptr.cast(), len, desc, peer.0, raddr, key, ctx)
                    }
                    Rma::Write => {
                        sys::gkfs_fi_write(ep, ptr.cast(), len, desc, peer.0, raddr, key, ctx)
                    }
                }
            },
        )?;
        Ok(PendingRma {
            ep: self.clone(),
            slot,
        })
    }

    fn check_remote(&self, remote: RemoteBuf, offset: u64, len: usize) -> Result<(), FabricError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > remote.len)
        {
            return Err(FabricError::BadAddress(format!(
                "RMA of {len} bytes at {offset} outside a remote buffer of {} bytes",
                remote.len
            )));
        }
        Ok(())
    }

    /// Registers `buf` so peers can read it by RMA ([`Endpoint::start_read`]).
    pub fn register<'a>(&self, buf: &'a [u8]) -> Result<MemoryRegion<'a>, FabricError> {
        self.register_raw(buf.as_ptr(), buf.len(), sys::FI_REMOTE_READ as u64)
    }

    /// Registers `buf` so peers can write it by RMA ([`Endpoint::start_write`]).
    pub fn register_mut<'a>(&self, buf: &'a mut [u8]) -> Result<MemoryRegion<'a>, FabricError> {
        self.register_raw(
            buf.as_ptr(),
            buf.len(),
            (sys::FI_REMOTE_WRITE | sys::FI_REMOTE_READ) as u64,
        )
    }

    fn register_raw<'a>(
        &self,
        ptr: *const u8,
        len: usize,
        access: u64,
    ) -> Result<MemoryRegion<'a>, FabricError> {
        let mut mr: *mut sys::fid_mr = std::ptr::null_mut();
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        // SAFETY: ptr/len describe a buffer borrowed for 'a by the returned region,
        // whose Drop closes the registration before the borrow ends.
        check("fi_mr_reg", unsafe {
            sys::gkfs_fi_mr_reg(self.inner.domain, ptr.cast(), len, access, key, &mut mr)
        } as i64)?;
        let virt = self.inner.mr_mode & sys::FI_MR_VIRT_ADDR as u64 != 0;
        let prov_key = self.inner.mr_mode & sys::FI_MR_PROV_KEY as u64 != 0;
        let key = if prov_key {
            // SAFETY: mr was just opened successfully.
            unsafe { sys::gkfs_fi_mr_key(mr) }
        } else {
            key
        };
        let remote = RemoteBuf {
            addr: if virt { ptr as u64 } else { 0 },
            key,
            len: len as u64,
        };
        Ok(MemoryRegion {
            mr,
            remote,
            _buf: std::marker::PhantomData,
        })
    }

    /// Stops serving: wakes every waiter; `next_request` then returns `Ok(None)`.
    pub fn shutdown(&self) {
        let mut st = lock(&self.inner.state);
        st.shutdown = true;
        // SAFETY: cq is open; signalling wakes a thread blocked in fi_cq_sread.
        unsafe { sys::gkfs_fi_cq_signal(self.inner.cq) };
        self.inner.cv.notify_all();
        for s in &st.calls {
            s.cv.notify_one();
        }
    }
}

/// A request in flight; see [`Endpoint::start_call`].
pub struct PendingCall {
    ep: Endpoint,
    slot: Arc<Slot>,
    ctx: *mut OpCtx,
}

// SAFETY: ctx is only used as an opaque value for fi_cancel, under the slot lock.
unsafe impl Send for PendingCall {}

impl PendingCall {
    /// The call lent the peer `bytes` to move by RMA: its wait polls longer before it
    /// blocks ([`bulk_spin`]).
    pub fn moving(self, bytes: u64) -> Self {
        self.slot
            .spin_us
            .store(bulk_spin(bytes).as_micros() as u64, Ordering::Relaxed);
        self
    }

    /// Waits for the reply until `deadline`.
    pub fn wait(self, deadline: Instant) -> Result<Vec<u8>, FabricError> {
        match self.ep.wait_slot(&self.slot, deadline) {
            Ok((mut buf, len)) => {
                buf.truncate(len);
                Ok(buf)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        // A call given up (timeout, error, or never waited for): cancel its posted
        // receive so the buffer is released. The slot lock orders us against the
        // completion path, which marks the slot before freeing the context.
        let st = lock(&self.slot.st);
        if !st.reaped {
            // SAFETY: the receive was not reaped, so its context is still owned by the
            // provider and alive; fi_cancel only looks it up.
            unsafe { sys::gkfs_fi_cancel(self.ep.inner.ep, self.ctx.cast()) };
        }
    }
}

/// An RMA in flight; see [`Endpoint::start_read`].
pub struct PendingRma {
    ep: Endpoint,
    slot: Arc<Slot>,
}

impl PendingRma {
    /// Waits for the transfer; returns the local buffer (holding the data for a read).
    pub fn wait(self, deadline: Instant) -> Result<Vec<u8>, FabricError> {
        self.ep.wait_slot(&self.slot, deadline).map(|(buf, _)| buf)
    }
}

/// A local buffer registered for remote access; closing it (drop) revokes access.
pub struct MemoryRegion<'a> {
    mr: *mut sys::fid_mr,
    remote: RemoteBuf,
    _buf: std::marker::PhantomData<&'a mut [u8]>,
}

impl MemoryRegion<'_> {
    /// What a peer needs to reach the buffer.
    pub fn remote(&self) -> RemoteBuf {
        self.remote
    }
}

impl Drop for MemoryRegion<'_> {
    fn drop(&mut self) {
        // SAFETY: mr was opened by fi_mr_reg and is closed exactly once, here.
        unsafe { sys::gkfs_fi_close(sys::gkfs_fid_of_mr(self.mr)) };
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: each object is closed once, children before parents; null ones
        // were never opened.
        unsafe {
            if !self.ep.is_null() {
                sys::gkfs_fi_close(sys::gkfs_fid_of_ep(self.ep));
            }
            if !self.av.is_null() {
                sys::gkfs_fi_close(sys::gkfs_fid_of_av(self.av));
            }
            if !self.cq.is_null() {
                sys::gkfs_fi_close(sys::gkfs_fid_of_cq(self.cq));
            }
            if !self.domain.is_null() {
                sys::gkfs_fi_close(sys::gkfs_fid_of_domain(self.domain));
            }
            if !self.fabric.is_null() {
                sys::gkfs_fi_close(sys::gkfs_fid_of_fabric(self.fabric));
            }
            if !self.info.is_null() {
                sys::gkfs_fi_freeinfo(self.info);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_buffer_reads_back_from_its_bytes_and_short_bytes_are_none() {
        let r = RemoteBuf {
            addr: 0x1122_3344_5566_7788,
            key: 42,
            len: 1 << 20,
        };
        let b = r.to_le_bytes();
        assert_eq!(RemoteBuf::from_le_bytes(&b), Some(r));
        assert_eq!(RemoteBuf::from_le_bytes(&b[..23]), None);
    }
}
