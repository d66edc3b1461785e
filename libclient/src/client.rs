//! The client: set-up from the hosts file, and the metadata operations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gkfs_proto::chunk::ChunkSize;
use gkfs_proto::config;
use gkfs_proto::hosts::Hosts;
use gkfs_proto::limits::{PAGE_REPLY, SCAN_PAGE, SCAN_REPLY};
use gkfs_proto::msg::*;
use gkfs_proto::path;
use gkfs_proto::place::{place, place_chunk};
use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::error::ClientError;
use crate::rpc::{wait_all, FabricUse, LocalData, Rpcs, Transport, SMALL_REPLY};

/// How to reach a file system.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The hosts file.
    pub hosts_file: PathBuf,
    /// The token file (default: `token` beside the hosts file).
    pub token_file: Option<PathBuf>,
    /// Deadline of each RPC.
    pub timeout: Duration,
    /// How to reach daemons on this host (`LIBGKFS_TRANSPORT`: `auto` or `fabric`).
    pub transport: Transport,
    /// When to load libfabric for other nodes' daemons (`LIBGKFS_FABRIC`: `auto` or
    /// `direct`).
    pub fabric: FabricUse,
    /// Who moves the bytes of node-local daemons' chunks (`LIBGKFS_LOCAL_DATA`:
    /// `direct` or `daemon`).
    pub local_data: LocalData,
}

impl ClientConfig {
    /// Reads `LIBGKFS_HOSTS_FILE`, `LIBGKFS_TOKEN_FILE` and `LIBGKFS_TIMEOUT_MS`.
    pub fn from_env() -> Result<ClientConfig, ClientError> {
        let hosts_file =
            std::env::var_os(config::ENV_HOSTS_FILE).ok_or(ClientError::NoHostsFile)?;
        let timeout = std::env::var(config::ENV_TIMEOUT_MS)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(config::DEFAULT_TIMEOUT_MS);
        let transport = match std::env::var("LIBGKFS_TRANSPORT").as_deref() {
            Ok("fabric") => Transport::Fabric,
            _ => Transport::Auto,
        };
        let fabric = match std::env::var("LIBGKFS_FABRIC").as_deref() {
            Ok("direct") => FabricUse::Direct,
            _ => FabricUse::Auto,
        };
        let local_data = match std::env::var("LIBGKFS_LOCAL_DATA").as_deref() {
            Ok("daemon") => LocalData::Daemon,
            _ => LocalData::Direct,
        };
        Ok(ClientConfig {
            hosts_file: hosts_file.into(),
            token_file: std::env::var_os(config::ENV_TOKEN_FILE).map(Into::into),
            timeout: Duration::from_millis(timeout),
            local_data,
            transport,
            fabric,
        })
    }

    /// A config for `hosts_file` with the default token file and timeout.
    pub fn new(hosts_file: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            hosts_file: hosts_file.into(),
            token_file: None,
            timeout: Duration::from_millis(config::DEFAULT_TIMEOUT_MS),
            transport: Transport::Auto,
            fabric: FabricUse::Auto,
            local_data: LocalData::Direct,
        }
    }
}

pub(crate) struct Inner {
    pub rpc: Arc<Rpcs>,
    pub hosts: Hosts,
    pub chunk_size: ChunkSize,
    pub uid: u32,
    pub gid: u32,
    /// The owner number of this process's POSIX locks.
    pub lock_owner: u64,
    /// The locks held, renewed by the keeper thread.
    pub locks: crate::locks::Keeper,
}

/// A connection to one gkfs file system. Cheap to clone; safe to share between
/// threads. Paths are absolute paths inside the file system ("/dir/file"); use
/// [`Client::fs_path`] to turn a path under the mount dir into one.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// Now, as a file time stamp: ns since the epoch from the kernel's coarse clock (it
/// advances once per tick, 1-4 ms). A local file system stamps mtime and ctime from
/// the same clock (or, since Linux 6.13, a finer one if the times were read since the
/// last change), so a file here is never newer than a local file written after it; and
/// writes within one tick carry the same mtime, so the metadata owner has nothing to
/// record for a write that does not grow the file.
pub fn file_time_now() -> i64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => t.tv_sec() * 1_000_000_000 + t.tv_nsec(),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
    }
}

fn read_token(path: &Path) -> Result<u128, ClientError> {
    let err = |msg: String| ClientError::Token {
        path: path.display().to_string(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    config::parse_token(&text).ok_or_else(|| err("expected 32 hex digits".into()))
}

/// Checks and normalises a path given to the API.
pub(crate) fn check_path(p: &str) -> Result<String, Errno> {
    if p.len() > path::MAX_PATH {
        return Err(Errno::ENAMETOOLONG);
    }
    if !p.starts_with('/') {
        return Err(Errno::EINVAL);
    }
    path::normalize(p)
}

impl Client {
    /// Connects using the environment (see [`ClientConfig::from_env`]).
    pub fn from_env() -> Result<Client, ClientError> {
        Client::new(&ClientConfig::from_env()?)
    }

    /// Connects to the file system described by `cfg`. No message is sent yet, and
    /// libfabric is only loaded when a daemon not reachable through a node-local socket
    /// is first used.
    pub fn new(cfg: &ClientConfig) -> Result<Client, ClientError> {
        let name = cfg.hosts_file.display().to_string();
        let text =
            std::fs::read_to_string(&cfg.hosts_file).map_err(|source| ClientError::ReadHosts {
                path: name.clone(),
                source,
            })?;
        Client::with_hosts(cfg, Hosts::parse(&name, &text)?)
    }

    /// Connects to the daemons of `hosts` (already read from `cfg.hosts_file`).
    pub fn with_hosts(cfg: &ClientConfig, hosts: Hosts) -> Result<Client, ClientError> {
        let token_file = cfg.token_file.clone().unwrap_or_else(|| {
            cfg.hosts_file
                .parent()
                .unwrap_or(Path::new("."))
                .join(config::TOKEN_FILE_NAME)
        });
        let token = read_token(&token_file)?;
        let chunk_size = ChunkSize::new(hosts.chunk_size()).unwrap_or_default();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        Ok(Client {
            inner: Arc::new(Inner {
                rpc: Rpcs::new(
                    hosts.clone(),
                    cfg.transport,
                    cfg.fabric,
                    cfg.local_data,
                    token,
                    cfg.timeout,
                ),
                hosts,
                chunk_size,
                uid,
                gid,
                lock_owner: crate::locks::new_lock_owner(),
                locks: Default::default(),
            }),
        })
    }

    /// The mount directory the daemons advertise.
    pub fn mountdir(&self) -> &str {
        self.inner.hosts.mountdir()
    }

    /// Number of daemons.
    pub fn daemons(&self) -> u32 {
        self.inner.hosts.len()
    }

    /// The hosts file contents.
    pub fn hosts(&self) -> &Hosts {
        &self.inner.hosts
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk_size.get()
    }

    /// Turns an absolute path under the mount dir into a path inside the file system
    /// (`/tmp/gkfs/a/b` -> `/a/b`); None if it is not under the mount dir.
    pub fn fs_path(&self, p: &str) -> Option<String> {
        let m = self.mountdir();
        let rest = p.strip_prefix(m)?;
        if rest.is_empty() {
            Some("/".into())
        } else if rest.starts_with('/') {
            path::normalize(rest).ok()
        } else {
            None
        }
    }

    pub(crate) fn rpc(&self) -> &Rpcs {
        &self.inner.rpc
    }

    fn owner(&self, p: &str) -> u32 {
        place(p, self.daemons())
    }

    /// The daemon that owns `p`'s metadata.
    pub(crate) fn owner_of(&self, p: &str) -> u32 {
        self.owner(p)
    }

    /// Daemons holding chunks `from..to` of file `id` (all daemons when the range is
    /// at least as large as the daemon count).
    pub(crate) fn chunk_owners(&self, id: u64, from: u64, to: u64) -> Vec<u32> {
        let n = self.daemons();
        if to.saturating_sub(from) >= u64::from(n) * 4 {
            return (0..n).collect();
        }
        let mut v: Vec<u32> = (from..to).map(|k| place_chunk(id, k, n)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Checks round trips to every daemon; returns each daemon's pid.
    pub fn ping_all(&self) -> Result<Vec<PingReply>, Errno> {
        let pending = (0..self.daemons())
            .map(|d| self.rpc().start(d, &PingReq {}, SMALL_REPLY))
            .collect::<Result<Vec<_>, _>>()?;
        wait_all(pending)
    }

    /// One round trip to daemon `d`.
    pub fn ping(&self, d: u32) -> Result<PingReply, Errno> {
        self.rpc().call(d, &PingReq {})
    }

    /// Counters of daemon `d`.
    pub fn daemon_stats(&self, d: u32) -> Result<StatsReply, Errno> {
        self.rpc().call(d, &StatsReq {})
    }

    /// Request counters of daemon `d` (per request type, per errno, bytes).
    pub fn daemon_metrics(&self, d: u32) -> Result<gkfs_proto::msg::MetricsReply, Errno> {
        self.rpc().call(d, &gkfs_proto::msg::MetricsReq {})
    }

    /// Tells a daemon which unsupported calls this process made, by name; it adds them
    /// to its counters (`gkfs-run stats`, the job summary). This node's daemon, else the
    /// first if this process has loaded libfabric already (ENOTCONN otherwise: a report is
    /// not worth loading it). Waits at most 1 s: it runs as a process exits.
    pub fn report_unsupported(&self, calls: &[(&str, u64)]) -> Result<(), Errno> {
        let rpc = self.rpc();
        let d = (0..self.daemons())
            .find(|&d| rpc.is_local(d))
            .or(rpc.fabric_loaded().then_some(0))
            .ok_or(Errno::ENOTCONN)?;
        let calls = calls
            .iter()
            .map(|&(call, count)| gkfs_proto::msg::CallCount {
                call: call.to_string(),
                count,
            })
            .collect();
        rpc.call_within(
            d,
            &gkfs_proto::msg::ReportUnsupportedReq { calls },
            Duration::from_secs(1),
        )?;
        Ok(())
    }

    /// The metadata record of `p`.
    pub fn stat(&self, p: &str) -> Result<Record, Errno> {
        let p = check_path(p)?;
        let rec = self.stat_norm(&p)?;
        self.resolve_linked(rec)
    }

    pub(crate) fn stat_norm(&self, p: &str) -> Result<Record, Errno> {
        Ok(self
            .rpc()
            .call(
                self.owner(p),
                &StatReq {
                    path: p.to_string(),
                },
            )?
            .record)
    }

    /// Checks that the parent of `p` is a directory (ENOENT, ENOTDIR).
    pub(crate) fn check_parent(&self, p: &str) -> Result<(), Errno> {
        self.check_parent_dir(p)
    }

    fn check_parent_dir(&self, p: &str) -> Result<(), Errno> {
        let parent = path::parent(p);
        if parent == "/" {
            return Ok(());
        }
        let rec = self.stat_norm(parent)?;
        if !rec.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(())
    }

    /// Creates a record of type and permissions `mode_bits` at `p` after checking
    /// that the parent is a directory.
    pub(crate) fn create_record(
        &self,
        p: &str,
        mode_bits: u32,
        exclusive: bool,
    ) -> Result<CreateReply, Errno> {
        if p == "/" {
            return Err(Errno::EEXIST);
        }
        let parent = path::parent(p);
        // One daemon holding both records checks the parent itself (one round trip).
        let owner = self.owner(p);
        let one_daemon = parent == "/" || self.owner(parent) == owner;
        let req = CreateReq {
            path: p.to_string(),
            mode: mode_bits,
            uid: self.inner.uid,
            gid: self.inner.gid,
            exclusive,
            time: file_time_now(),
            check_parent: one_daemon && parent != "/",
        };
        if one_daemon {
            return self.rpc().call(owner, &req);
        }
        // Otherwise the parent lookup and the create travel together (one round trip,
        // not two); if the parent turns out to be missing or not a directory, a record
        // this call created is removed again before the error is returned.
        let parent_stat = self.rpc().start(
            self.owner(parent),
            &StatReq {
                path: parent.to_string(),
            },
            SMALL_REPLY,
        )?;
        let create = self.rpc().start(owner, &req, SMALL_REPLY)?;
        let parent_ok = match parent_stat.wait() {
            Ok(r) if r.record.is_dir() => Ok(()),
            Ok(_) => Err(Errno::ENOTDIR),
            Err(e) => Err(e),
        };
        let created = create.wait();
        if let Err(e) = parent_ok {
            if let Ok(CreateReply { created: true, .. }) = created {
                let _ = self.rpc().call(
                    owner,
                    &RemoveReq {
                        path: p.to_string(),
                        kind: 0,
                    },
                );
            }
            return Err(e);
        }
        created
    }

    /// Creates an empty regular file (fails with EEXIST if `p` exists).
    pub fn create(&self, p: &str, perm: u32) -> Result<Record, Errno> {
        let p = check_path(p)?;
        Ok(self
            .create_record(&p, mode::S_IFREG | (perm & 0o7777), true)?
            .record)
    }

    /// Creates a directory.
    pub fn mkdir(&self, p: &str, perm: u32) -> Result<(), Errno> {
        let p = check_path(p)?;
        self.create_record(&p, mode::S_IFDIR | (perm & 0o7777), true)
            .map(|_| ())
    }

    /// Is the directory `p` empty on every daemon?
    fn dir_is_empty(&self, p: &str) -> Result<bool, Errno> {
        let pending = (0..self.daemons())
            .map(|d| {
                self.rpc().start(
                    d,
                    &ReadDirReq {
                        dir: p.to_string(),
                        start_after: String::new(),
                        max: 1,
                    },
                    PAGE_REPLY,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(wait_all(pending)?.iter().all(|r| r.entries.is_empty()))
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, p: &str) -> Result<(), Errno> {
        let p = check_path(p)?;
        if p == "/" {
            return Err(Errno::EBUSY);
        }
        let rec = self.stat_norm(&p)?;
        if !rec.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if !self.dir_is_empty(&p)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.rpc()
            .call(self.owner(&p), &RemoveReq { path: p, kind: 2 })
            .map(|_| ())
    }

    /// Removes a file (not a directory) and all of its chunks.
    pub fn unlink(&self, p: &str) -> Result<(), Errno> {
        let p = check_path(p)?;
        let rec = self
            .rpc()
            .call(self.owner(&p), &RemoveReq { path: p, kind: 1 })?
            .record;
        self.name_removed(&rec)
    }

    /// Closes the chunk files this process keeps open to read file `id` from daemons on
    /// its node (see `direct.rs`). Call it when the program closes its last handle of
    /// the file: a chunk file kept open keeps its space after the file is removed.
    pub fn release_kept(&self, id: u64) {
        self.rpc().release_kept(id);
    }

    /// Removes the chunks of a record that no longer has a name.
    pub(crate) fn remove_data(&self, rec: &Record) -> Result<(), Errno> {
        if rec.is_dir() || rec.file_id == 0 || rec.size == 0 {
            return Ok(());
        }
        self.release_kept(rec.file_id);
        let chunks = self.inner.chunk_size.chunks_for_size(rec.size);
        let pending = self
            .chunk_owners(rec.file_id, 0, chunks)
            .into_iter()
            .map(|d| {
                self.rpc().start(
                    d,
                    &RemoveChunksReq {
                        file_id: rec.file_id,
                    },
                    SMALL_REPLY,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        wait_all(pending).map(|_| ())
    }

    /// Lists a directory: every entry, sorted by name.
    pub fn readdir(&self, p: &str) -> Result<Vec<DirEntry>, Errno> {
        let p = check_path(p)?;
        let rec = self.stat_norm(&p)?;
        if !rec.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let mut all: BTreeMap<String, DirEntry> = BTreeMap::new();
        let mut active: Vec<(u32, String)> =
            (0..self.daemons()).map(|d| (d, String::new())).collect();
        while !active.is_empty() {
            let pending = active
                .iter()
                .map(|(d, after)| {
                    self.rpc().start(
                        *d,
                        &ReadDirReq {
                            dir: p.clone(),
                            start_after: after.clone(),
                            max: 4096,
                        },
                        PAGE_REPLY,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let replies = wait_all(pending)?;
            let mut next = Vec::new();
            for ((d, _), reply) in active.iter().zip(replies) {
                if reply.more {
                    if let Some(last) = reply.entries.last() {
                        next.push((*d, last.name.clone()));
                    }
                }
                for e in reply.entries {
                    all.insert(e.name.clone(), e);
                }
            }
            active = next;
        }
        if p == "/" {
            // Files unlinked while open and the inode records of hard links live
            // there, nameless to programs.
            for hidden in gkfs_proto::path::HIDDEN_DIRS {
                all.remove(&hidden[1..]);
            }
        }
        Ok(all.into_values().collect())
    }

    /// Renames `from` to `to` (files and directories; data never moves). Replacing an
    /// existing target follows rename(2): a file may replace a file, an empty
    /// directory may be replaced by a directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Errno> {
        let (from, to) = (check_path(from)?, check_path(to)?);
        if from == "/" || to == "/" {
            return Err(Errno::EBUSY);
        }
        let rec = self.stat_norm(&from)?;
        if from == to {
            return Ok(());
        }
        if rec.is_linked() {
            // Two names of one file: rename(2) does nothing.
            if let Ok(t) = self.stat_norm(&to) {
                if t.is_linked() && t.file_id == rec.file_id {
                    return Ok(());
                }
            }
        }
        if rec.is_dir() && path::is_within(&to, &from) {
            return Err(Errno::EINVAL);
        }
        self.check_parent_dir(&to)?;
        if rec.is_dir() {
            match self.stat_norm(&to) {
                Ok(t) if !t.is_dir() => return Err(Errno::ENOTDIR),
                Ok(_) if !self.dir_is_empty(&to)? => return Err(Errno::ENOTEMPTY),
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        let mut moved = rec;
        moved.ctime = file_time_now();
        let replaced = self
            .rpc()
            .call(
                self.owner(&to),
                &PutRecordReq {
                    path: to.clone(),
                    record: moved,
                    replace: true,
                },
            )?
            .replaced;
        if rec.is_dir() {
            self.move_subtree(&from, &to)?;
        }
        self.rpc().call(
            self.owner(&from),
            &RemoveReq {
                path: from,
                kind: 0,
            },
        )?;
        if let Some(old) = replaced {
            if old.file_id != rec.file_id {
                self.name_removed(&old)?;
            }
        }
        Ok(())
    }

    /// Moves the record of everything below `from` to the same place below `to`:
    /// first every record is stored under its new path, then the old ones are removed
    /// in reverse key order (children before their parents).
    fn move_subtree(&self, from: &str, to: &str) -> Result<(), Errno> {
        for d in 0..self.daemons() {
            let mut old_paths = Vec::new();
            let mut after = String::new();
            loop {
                let page = self
                    .rpc()
                    .start(
                        d,
                        &ScanPrefixReq {
                            prefix: from.to_string(),
                            start_after: after.clone(),
                            max: SCAN_PAGE,
                        },
                        SCAN_REPLY,
                    )?
                    .wait()?;
                let pending = page
                    .records
                    .iter()
                    .map(|pr| {
                        let new_path = format!("{to}{}", &pr.path[from.len()..]);
                        self.rpc().start(
                            self.owner(&new_path),
                            &PutRecordReq {
                                path: new_path,
                                record: pr.record,
                                replace: true,
                            },
                            SMALL_REPLY,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                wait_all(pending)?;
                old_paths.extend(page.records.into_iter().map(|pr| pr.path));
                match (page.more, old_paths.last()) {
                    (true, Some(last)) => after = last.clone(),
                    _ => break,
                }
            }
            for old in old_paths.into_iter().rev() {
                match self.rpc().call(d, &RemoveReq { path: old, kind: 0 }) {
                    Ok(_) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Changes permission bits (`perm`) and/or times (ns; None keeps them).
    pub fn set_attr(
        &self,
        p: &str,
        perm: Option<u32>,
        atime: Option<i64>,
        mtime: Option<i64>,
    ) -> Result<Record, Errno> {
        let p = check_path(p)?;
        self.on_attrs(&p, |p| {
            Ok(self
                .rpc()
                .call(
                    self.owner(p),
                    &SetAttrReq {
                        path: p.to_string(),
                        mode: perm.unwrap_or(u32::MAX),
                        atime: atime.unwrap_or(-1),
                        mtime: mtime.unwrap_or(-1),
                        ctime: file_time_now(),
                    },
                )?
                .record)
        })
    }

    /// Sets the size of a file: shrinking drops the data past it, growing adds a hole.
    pub fn truncate(&self, p: &str, size: u64) -> Result<(), Errno> {
        let p = check_path(p)?;
        if size > i64::MAX as u64 {
            return Err(Errno::EFBIG);
        }
        let old = self.on_attrs(&p, |p| {
            Ok(self
                .rpc()
                .call(
                    self.owner(p),
                    &TruncateReq {
                        path: p.to_string(),
                        size,
                        mtime: file_time_now(),
                    },
                )?
                .old)
        })?;
        if size >= old.size {
            return Ok(());
        }
        self.release_kept(old.file_id);
        let cs = self.inner.chunk_size;
        let pending = self
            .chunk_owners(old.file_id, cs.chunk_of(size), cs.chunks_for_size(old.size))
            .into_iter()
            .map(|d| {
                self.rpc().start(
                    d,
                    &TruncateChunksReq {
                        file_id: old.file_id,
                        size,
                    },
                    SMALL_REPLY,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        wait_all(pending).map(|_| ())
    }

    /// Space of the whole file system (summed over the daemons).
    pub fn statfs(&self) -> Result<StatfsReply, Errno> {
        let pending = (0..self.daemons())
            .map(|d| self.rpc().start(d, &StatfsReq {}, SMALL_REPLY))
            .collect::<Result<Vec<_>, _>>()?;
        let mut total = StatfsReply {
            chunk_size: self.chunk_size(),
            ..Default::default()
        };
        for r in wait_all(pending)? {
            total.total += r.total;
            total.free += r.free;
            total.avail += r.avail;
        }
        Ok(total)
    }
}
