//! The daemon's shared state, handed to every handler (never a global).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gkfs_fabric::shm::ElsewhereCounts;
use gkfs_fabric::Endpoint;
use gkfs_proto::chunk::ChunkSize;
use gkfs_proto::hosts::Hosts;
use gkfs_proto::msg::RemoteError;
use gkfs_proto::Errno;

use crate::store::chunks::ChunkStore;
use crate::store::meta::MetaStore;

/// Number of lock stripes that order metadata changes per path.
const STRIPES: usize = 64;
/// File ids are reserved from the persistent counter in blocks of this many.
const ID_BLOCK: u64 = 4096;

/// The daemon's place in the file system, once the hosts file lists it.
#[derive(Debug, Clone, Copy)]
pub struct Membership {
    /// Hash of the hosts file.
    pub hash: u64,
    /// This daemon's index in it.
    pub index: u32,
}

/// Counters reported by the stats RPC.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes written by clients.
    pub bytes_written: AtomicU64,
    /// Bytes read by clients.
    pub bytes_read: AtomicU64,
    /// Clients connected through the node-local socket now.
    pub local_connections: AtomicU64,
    /// What each connected node-local client moved in our chunk files itself, not yet
    /// added to `bytes_read`/`bytes_written` ([`Counters::add_elsewhere`]).
    elsewhere: Mutex<Vec<Arc<ElsewhereCounts>>>,
}

/// A connection's client counted by [`Counters::add_elsewhere`] until this is dropped
/// (when the connection ends), which adds what it moved last.
pub struct WatchedElsewhere<'a> {
    counters: &'a Counters,
    counts: Arc<ElsewhereCounts>,
}

impl Drop for WatchedElsewhere<'_> {
    fn drop(&mut self) {
        let mut live = self.counters.live();
        self.counters.add_from(&self.counts);
        live.retain(|l| !Arc::ptr_eq(l, &self.counts));
    }
}

impl Counters {
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ElsewhereCounts>>> {
        self.elsewhere.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what `c` grew by to `bytes_read` and `bytes_written`.
    fn add_from(&self, c: &ElsewhereCounts) {
        let (read, written) = c.take();
        self.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
    }

    /// Adds what every connected node-local client moved in our chunk files itself
    /// since the last time: call before reporting the byte counters.
    pub fn add_elsewhere(&self) {
        for c in self.live().iter() {
            self.add_from(c);
        }
    }

    /// Counts what a connection's client moves in our chunk files itself, for as long
    /// as the returned guard lives.
    pub fn watch_elsewhere(&self, counts: Arc<ElsewhereCounts>) -> WatchedElsewhere<'_> {
        self.live().push(counts.clone());
        WatchedElsewhere {
            counters: self,
            counts,
        }
    }
}

struct IdAlloc {
    next: u64,
    reserved_until: u64,
}

/// Everything a handler may touch.
pub struct State {
    /// Metadata records.
    pub meta: MetaStore,
    /// Chunk files.
    pub chunks: ChunkStore,
    /// The transport endpoint (for RMA).
    pub ep: Endpoint,
    /// The job token every request must carry.
    pub token: u128,
    /// Chunk size of this file system.
    pub chunk_size: ChunkSize,
    /// The hosts file this daemon registered in.
    pub hosts_file: PathBuf,
    /// The root directory (for statfs).
    pub rootdir: PathBuf,
    /// Membership, known once the hosts file lists this daemon.
    pub membership: RwLock<Option<Membership>>,
    /// The daemon addresses of that membership, in order: a later hosts file must
    /// extend this list (daemons registering), never drop or reorder it.
    members: Mutex<Vec<Vec<u8>>>,
    /// The hash of the last hosts file refused (logged once).
    refused: AtomicU64,
    last_reload: Mutex<Option<Instant>>,
    ids: Mutex<IdAlloc>,
    stripes: Vec<RwLock<()>>,
    /// Counters.
    pub counters: Counters,
    /// File locks on the paths whose metadata lives here.
    pub locks: crate::locks::Locks,
    /// Request counters.
    pub metrics: crate::metrics::Metrics,
    /// Where the Prometheus endpoint listens, if it was asked for.
    pub metrics_address: std::sync::OnceLock<String>,
    /// Process start time, ns (times of the root directory).
    pub start_time: i64,
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl State {
    /// Builds the state.
    pub fn new(
        meta: MetaStore,
        chunks: ChunkStore,
        ep: Endpoint,
        token: u128,
        chunk_size: ChunkSize,
        hosts_file: PathBuf,
        rootdir: PathBuf,
    ) -> Result<State, Errno> {
        let next = meta.next_id()?;
        Ok(State {
            meta,
            chunks,
            ep,
            token,
            chunk_size,
            hosts_file,
            rootdir,
            membership: RwLock::new(None),
            members: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            last_reload: Mutex::new(None),
            ids: Mutex::new(IdAlloc {
                next,
                reserved_until: next,
            }),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            counters: Counters::default(),
            locks: Default::default(),
            metrics: Default::default(),
            metrics_address: Default::default(),
            start_time: now_ns(),
        })
    }

    fn stripe(&self, path: &str) -> &RwLock<()> {
        let h = gkfs_proto::place::path_hash(path);
        &self.stripes[(h % STRIPES as u64) as usize]
    }

    /// Shared lock on `path`'s stripe (merges that may run concurrently).
    pub fn read_lock(&self, path: &str) -> RwLockReadGuard<'_, ()> {
        self.stripe(path).read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive lock on `path`'s stripe (read-modify-write of a record).
    pub fn write_lock(&self, path: &str) -> RwLockWriteGuard<'_, ()> {
        self.stripe(path).write().unwrap_or_else(|p| p.into_inner())
    }

    /// The address of daemon `index` of the membership (for relayed calls).
    pub fn member_address(&self, index: u32) -> Option<Vec<u8>> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(index as usize).cloned()
    }

    /// Sends `request` to daemon `target` of the hosts file and waits for its reply (a
    /// relayed request of a process on this node). A target that cannot be reached is
    /// EHOSTUNREACH; other failures carry the transport's errno.
    pub fn forward(
        &self,
        target: u32,
        request: &[u8],
        max_reply: usize,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, RemoteError> {
        let addr = self.member_address(target).ok_or_else(|| {
            RemoteError::new(
                Errno::EINVAL,
                format!("no daemon {target} in the hosts file"),
            )
        })?;
        let peer = self
            .ep
            .peer(&addr)
            .map_err(|e| RemoteError::new(Errno::EHOSTUNREACH, format!("daemon {target}: {e}")))?;
        self.ep
            .call(peer, request, max_reply, timeout)
            .map_err(|e| {
                // A target that is gone is EHOSTUNREACH (the client marks it down); a
                // timeout and the rest as every fabric call reports them.
                let errno = match e.errno() {
                    libc::EIO if e.is_peer_failure() => Errno::EHOSTUNREACH,
                    errno => Errno(errno),
                };
                RemoteError::new(errno, format!("relay to daemon {target}: {e}"))
            })
    }

    /// Peers this daemon's endpoint has resolved so far.
    pub fn fabric_peers(&self) -> usize {
        self.ep.peer_count()
    }

    /// The current membership, if known.
    pub fn membership(&self) -> Option<Membership> {
        *self.membership.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a request's membership hash, re-reading the hosts file (at most every
    /// 50 ms) when it does not match what we know.
    pub fn check_membership(&self, hash: u64) -> Result<Membership, String> {
        if let Some(m) = self.membership() {
            if m.hash == hash {
                return Ok(m);
            }
        }
        {
            // One reload at a time; others wait for it and then see its result.
            let mut last = self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
            let current = self.membership().is_some_and(|m| m.hash == hash);
            if !current && last.is_none_or(|t| t.elapsed().as_millis() >= 50) {
                if let Some((m, addrs)) = self.reload_membership() {
                    let mut known = self.members.lock().unwrap_or_else(|p| p.into_inner());
                    if addrs.starts_with(&known) {
                        *known = addrs;
                        *self.membership.write().unwrap_or_else(|p| p.into_inner()) = Some(m);
                    } else if self.refused.swap(m.hash, Ordering::Relaxed) != m.hash {
                        log::error!(
                            "the hosts file {} changed under the running file system (daemon lines removed or reordered); \
                             keeping the {} daemons it listed before: clients of the new file get ESTALE",
                            self.hosts_file.display(),
                            known.len()
                        );
                    }
                }
                *last = Some(Instant::now());
            }
        }
        match self.membership() {
            Some(m) if m.hash == hash => Ok(m),
            Some(m) => Err(format!(
                "membership mismatch: the client's hosts file has hash {hash:016x}, this daemon's {} has {:016x}; \
                 the file system was restarted or the hosts file changed: restart the application with the current hosts file",
                self.hosts_file.display(),
                m.hash
            )),
            None => Err(format!(
                "this daemon is not (yet) listed in its hosts file {}",
                self.hosts_file.display()
            )),
        }
    }

    fn reload_membership(&self) -> Option<(Membership, Vec<Vec<u8>>)> {
        let text = std::fs::read_to_string(&self.hosts_file).ok()?;
        let hosts = Hosts::parse(&self.hosts_file.display().to_string(), &text).ok()?;
        let index = hosts
            .entries
            .iter()
            .position(|e| e.address == self.ep.address())?;
        let m = Membership {
            hash: hosts.membership(),
            index: index as u32,
        };
        Some((m, hosts.entries.into_iter().map(|e| e.address).collect()))
    }

    /// A fresh file id: this daemon's index in the high 16 bits, a persistent
    /// counter in the low 48.
    pub fn new_file_id(&self) -> Result<u64, Errno> {
        let m = self.membership().ok_or(Errno::EAGAIN)?;
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.next >= ids.reserved_until {
            let until = ids.next + ID_BLOCK;
            self.meta.set_next_id(until)?;
            ids.reserved_until = until;
        }
        let n = ids.next;
        ids.next += 1;
        Ok((u64::from(m.index) << 48) | (n & ((1 << 48) - 1)))
    }
}
