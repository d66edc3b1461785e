//! File locks through the daemons: each lock is arbitrated by the daemon that owns
//! the path's metadata (gkfsd's `locks` module), so processes on every node see the
//! same locks. A lock is a lease: while this process holds any, a keeper thread renews
//! them every [`lock::RENEW_EVERY`]; a process that dies stops renewing and its locks
//! go after [`lock::LEASE`].
//!
//! Owners are numbers unique in the job: [`Client::lock_owner`] for the POSIX locks of
//! this process, [`new_lock_owner`] for an open file description (OFD and flock locks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use gkfs_proto::msg::{lock, LockLeaseReq, LockReply, LockReq};
use gkfs_proto::Errno;

use crate::client::{check_path, Client, Inner};

/// A fresh lock owner number (for an open file description).
pub fn new_lock_owner() -> u64 {
    crate::unique_id()
}

/// What to ask of a lock: see [`LockReq`] (the path and owner come separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSpec {
    /// [`lock::SPACE_FCNTL`] or [`lock::SPACE_FLOCK`].
    pub space: u8,
    /// [`lock::READ`], [`lock::WRITE`] or [`lock::UNLOCK`].
    pub kind: u8,
    /// First byte.
    pub start: u64,
    /// One past the last byte, or [`lock::TO_EOF`].
    pub end: u64,
    /// The holder's pid (F_GETLK reports it), -1 for a description.
    pub pid: i32,
}

/// The owners holding locks on each daemon, renewed by the keeper thread.
#[derive(Default)]
pub(crate) struct Keeper {
    held: Mutex<HashMap<u32, Held>>,
    started: std::sync::OnceLock<()>,
}

#[derive(Default)]
struct Held {
    owners: HashSet<u64>,
    /// Bumped on every lock taken: the keeper forgets a daemon only if nothing was
    /// taken there since it asked.
    epoch: u64,
}

impl Keeper {
    fn note(&self, inner: &Arc<Inner>, daemon: u32, owner: u64) {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let h = held.entry(daemon).or_default();
            h.owners.insert(owner);
            h.epoch += 1;
        }
        let weak = Arc::downgrade(inner);
        self.started.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("gkfs-lock-keeper".into())
                .spawn(move || renew_forever(weak));
            if let Err(e) = spawned {
                log::error!(
                    "cannot start the lock keeper (locks expire after {:?}): {e}",
                    lock::LEASE
                );
            }
        });
    }
}

/// Renews every held lock's lease until the client is gone.
fn renew_forever(client: Weak<Inner>) {
    loop {
        std::thread::sleep(lock::RENEW_EVERY);
        let Some(inner) = client.upgrade() else {
            return;
        };
        let snapshot: Vec<(u32, Vec<u64>, u64)> = inner
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(d, h)| (*d, h.owners.iter().copied().collect(), h.epoch))
            .collect();
        for (d, owners, epoch) in snapshot {
            let req = LockLeaseReq {
                owners,
                release: false,
                path: String::new(),
            };
            match inner.rpc.call(d, &req) {
                Ok(r) if r.held == 0 => {
                    let mut held = inner
                        .locks
                        .held
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if held.get(&d).is_some_and(|h| h.epoch == epoch) {
                        held.remove(&d);
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("renewing the locks held on daemon {d}: {e}"),
            }
        }
    }
}

impl Client {
    /// The owner number of this process's POSIX locks (unique in the job; a forked
    /// child's own client has another, as POSIX locks are not inherited).
    pub fn lock_owner(&self) -> u64 {
        self.inner.lock_owner
    }

    /// Takes, changes, drops or (with `test`) tests a lock on `path`: one attempt.
    /// Not granted: the reply names the lock in the way.
    pub fn lock(
        &self,
        path: &str,
        owner: u64,
        spec: LockSpec,
        test: bool,
    ) -> Result<LockReply, Errno> {
        let p = check_path(path)?;
        let d = self.owner_of(&p);
        let reply = self.rpc().call(
            d,
            &LockReq {
                path: p,
                owner,
                space: spec.space,
                kind: spec.kind,
                start: spec.start,
                end: spec.end,
                test,
                pid: spec.pid,
            },
        )?;
        if reply.granted && !test && spec.kind != lock::UNLOCK {
            self.inner.locks.note(&self.inner, d, owner);
        }
        Ok(reply)
    }

    /// Drops every lock this process holds or took for a description, on every daemon
    /// (at exit: the kernel closes the fds without the library seeing it).
    pub fn release_all_locks(&self) {
        let held: Vec<(u32, Vec<u64>)> = std::mem::take(
            &mut *self
                .inner
                .locks
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_iter()
        .map(|(d, h)| (d, h.owners.into_iter().collect()))
        .collect();
        for (d, owners) in held {
            let req = LockLeaseReq {
                owners,
                release: true,
                path: String::new(),
            };
            if let Err(e) = self.rpc().call(d, &req) {
                log::warn!("releasing the locks held on daemon {d} (their lease ends them): {e}");
            }
        }
    }

    /// Drops every lock `owners` hold on `path` (a close: POSIX locks of the process,
    /// or the last close of a description).
    pub fn unlock_all(&self, path: &str, owners: &[u64]) -> Result<(), Errno> {
        let p = check_path(path)?;
        self.rpc().call(
            self.owner_of(&p),
            &LockLeaseReq {
                owners: owners.to_vec(),
                release: true,
                path: p,
            },
        )?;
        Ok(())
    }
}
