//! File locks, arbitrated by the daemon that owns a path's metadata, so processes on
//! every node of the job see the same locks: fcntl byte-range locks (POSIX locks, held
//! by a process, and OFD locks, held by an open file description; they conflict with
//! each other as in Linux) and flock locks (whole file, a separate space).
//!
//! Locks live in memory only: they end with the daemon, as a local file system's end
//! with a reboot. Each lock is a lease: its owner's client renews it every
//! [`lock::RENEW_EVERY`]; one not renewed for [`lock::LEASE`] (its process was killed,
//! or its node lost) is dropped, so a dead process never blocks the others for longer.
//! A lock taken through the node-local socket also records the process behind the
//! connection: when such a holder is in another owner's way and its process is gone
//! (killed), its locks are dropped at once instead of at the end of the lease.
//! Waiting (F_SETLKW, blocking flock) is the client's: it asks again until granted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use gkfs_proto::msg::{lock, LockReply, LockReq};
use gkfs_proto::Errno;

/// One lock held.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    owner: u64,
    kind: u8,
    start: u64,
    end: u64,
    pid: i32,
    expires: Instant,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// Every lock this daemon arbitrates.
#[derive(Default)]
pub struct Locks {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Locks by (path, space).
    files: HashMap<(String, u8), Vec<Held>>,
    /// The processes on this node that took locks for an owner (through the local
    /// socket).
    pids: HashMap<u64, Vec<i32>>,
}

impl Table {
    /// Drops every lock of `owner`.
    fn drop_owner(&mut self, owner: u64) {
        self.files.retain(|_, held| {
            held.retain(|h| h.owner != owner);
            !held.is_empty()
        });
        self.pids.remove(&owner);
    }

    /// Is `owner` known to be gone: every process that took its locks here ended?
    fn gone(&self, owner: u64, alive: &dyn Fn(i32) -> bool) -> bool {
        self.pids
            .get(&owner)
            .is_some_and(|pids| !pids.iter().any(|&p| alive(p)))
    }
}

/// Is process `pid` of this node alive?
pub fn process_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The first lock of another owner that `r` conflicts with.
fn in_the_way<'a>(held: &'a [Held], r: &LockReq) -> Option<&'a Held> {
    held.iter().find(|h| {
        h.owner != r.owner
            && h.overlaps(r.start, r.end)
            && (h.kind == lock::WRITE || r.kind == lock::WRITE)
    })
}

/// Does `owner` hold anything in `held`?
fn held_any(held: &[Held], owner: u64) -> bool {
    held.iter().any(|h| h.owner == owner)
}

/// Removes `owner`'s locks in `start..end` from `held`, keeping the parts outside.
fn carve(held: &mut Vec<Held>, owner: u64, start: u64, end: u64) {
    let mut kept = Vec::with_capacity(held.len() + 1);
    for h in held.drain(..) {
        if h.owner != owner || !h.overlaps(start, end) {
            kept.push(h);
            continue;
        }
        if h.start < start {
            kept.push(Held {
                end: start,
                ..h.clone()
            });
        }
        if h.end > end {
            kept.push(Held { start: end, ..h });
        }
    }
    *held = kept;
}

impl Locks {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table is consistent after every statement: a panic elsewhere cannot
        // leave it half-changed.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes, changes, drops or tests one lock for a client whose process on this node
    /// is `peer` (None: another node).
    pub fn apply(&self, r: &LockReq, now: Instant, peer: Option<i32>) -> Result<LockReply, Errno> {
        self.apply_with(r, now, peer, &process_alive)
    }

    fn apply_with(
        &self,
        r: &LockReq,
        now: Instant,
        peer: Option<i32>,
        alive: &dyn Fn(i32) -> bool,
    ) -> Result<LockReply, Errno> {
        if r.kind > lock::UNLOCK
            || r.space > lock::SPACE_FLOCK
            || r.start >= r.end
            || r.path.is_empty()
        {
            return Err(Errno::EINVAL);
        }
        let mut table = self.table();
        let key = (r.path.clone(), r.space);
        // Holders in the way whose processes are gone are dropped first.
        while let Some(held) = table.files.get_mut(&key) {
            held.retain(|h| h.expires > now);
            match in_the_way(held, r).map(|h| h.owner) {
                Some(o) if table.gone(o, alive) => table.drop_owner(o),
                _ => break,
            }
        }
        if let (Some(pid), false, true) = (peer, r.test, r.kind != lock::UNLOCK) {
            let pids = table.pids.entry(r.owner).or_default();
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        let Table { files, pids } = &mut *table;
        let held = files.entry(key.clone()).or_default();
        let mut reply = LockReply {
            granted: true,
            conflict_kind: lock::UNLOCK,
            conflict_start: 0,
            conflict_end: 0,
            conflict_pid: 0,
        };
        if r.kind == lock::UNLOCK {
            if !r.test {
                carve(held, r.owner, r.start, r.end);
            }
        } else if let Some(c) = in_the_way(held, r) {
            reply = LockReply {
                granted: false,
                conflict_kind: c.kind,
                conflict_start: c.start,
                conflict_end: c.end,
                conflict_pid: c.pid,
            };
        } else if !r.test {
            carve(held, r.owner, r.start, r.end);
            let expires = now + lock::LEASE;
            for h in held.iter_mut().filter(|h| h.owner == r.owner) {
                h.expires = expires;
            }
            held.push(Held {
                owner: r.owner,
                kind: r.kind,
                start: r.start,
                end: r.end,
                pid: r.pid,
                expires,
            });
        }
        if held.is_empty() {
            files.remove(&key);
        }
        // An owner that holds nothing (refused, tested, unlocked) leaves no process to
        // watch behind.
        if !files.values().any(|v| held_any(v, r.owner)) {
            pids.remove(&r.owner);
        }
        Ok(reply)
    }

    /// Renews (or, with `release`, drops) every lock of `owners`, on `path` only
    /// unless it is empty; returns how many locks they still hold.
    pub fn lease(&self, owners: &[u64], release: bool, path: &str, now: Instant) -> u32 {
        let mut table = self.table();
        let Table { files, pids } = &mut *table;
        let mut count = 0;
        files.retain(|(p, _), held| {
            held.retain(|h| h.expires > now);
            if path.is_empty() || p == path {
                if release {
                    held.retain(|h| !owners.contains(&h.owner));
                } else {
                    for h in held.iter_mut().filter(|h| owners.contains(&h.owner)) {
                        h.expires = now + lock::LEASE;
                    }
                }
            }
            count += held.iter().filter(|h| owners.contains(&h.owner)).count() as u32;
            !held.is_empty()
        });
        if release {
            for o in owners {
                if !files.values().any(|v| held_any(v, *o)) {
                    pids.remove(o);
                }
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock::{READ, SPACE_FCNTL, SPACE_FLOCK, TO_EOF, UNLOCK, WRITE};

    fn req(owner: u64, kind: u8, start: u64, end: u64) -> LockReq {
        LockReq {
            path: "/f".into(),
            owner,
            space: SPACE_FCNTL,
            kind,
            start,
            end,
            test: false,
            pid: owner as i32,
        }
    }

    fn granted(l: &Locks, r: LockReq, now: Instant) -> bool {
        l.apply_with(&r, now, None, &|_| true).unwrap().granted
    }

    #[test]
    fn readers_share_writers_exclude() {
        let (l, t) = (Locks::default(), Instant::now());
        assert!(granted(&l, req(1, READ, 0, 10), t));
        assert!(granted(&l, req(2, READ, 5, 15), t));
        assert!(!granted(&l, req(3, WRITE, 9, 10), t));
        assert!(granted(&l, req(3, WRITE, 15, TO_EOF), t));
        // An owner's own locks never conflict: 1 upgrades where 2 does not read.
        assert!(granted(&l, req(1, WRITE, 0, 5), t));
        assert!(!granted(&l, req(1, WRITE, 0, 10), t));
        let c = l
            .apply_with(&req(4, READ, 100, 101), t, None, &|_| true)
            .unwrap();
        assert_eq!(
            (
                c.granted,
                c.conflict_kind,
                c.conflict_start,
                c.conflict_end,
                c.conflict_pid
            ),
            (false, WRITE, 15, TO_EOF, 3)
        );
    }

    #[test]
    fn unlock_splits_and_test_changes_nothing() {
        let (l, t) = (Locks::default(), Instant::now());
        assert!(granted(&l, req(1, WRITE, 0, 100), t));
        assert!(granted(&l, req(1, UNLOCK, 40, 60), t));
        assert!(granted(&l, req(2, WRITE, 40, 60), t));
        assert!(!granted(&l, req(2, WRITE, 39, 40), t));
        assert!(!granted(&l, req(2, WRITE, 60, 61), t));
        let mut probe = req(3, WRITE, 0, TO_EOF);
        probe.test = true;
        assert!(!granted(&l, probe.clone(), t));
        assert!(granted(&l, req(1, UNLOCK, 0, TO_EOF), t));
        assert!(granted(&l, req(2, UNLOCK, 0, TO_EOF), t));
        probe.test = true;
        assert!(granted(&l, probe, t));
        assert!(l.table().files.is_empty(), "a tested lock was taken");
    }

    #[test]
    fn flock_and_fcntl_are_separate_spaces() {
        let (l, t) = (Locks::default(), Instant::now());
        assert!(granted(&l, req(1, WRITE, 0, TO_EOF), t));
        let mut f = req(2, WRITE, 0, TO_EOF);
        f.space = SPACE_FLOCK;
        assert!(granted(&l, f.clone(), t));
        f.owner = 3;
        assert!(!granted(&l, f, t));
    }

    #[test]
    fn leases_expire_renew_and_release() {
        let (l, t) = (Locks::default(), Instant::now());
        assert!(granted(&l, req(1, WRITE, 0, 10), t));
        assert!(granted(&l, req(1, WRITE, 20, 30), t));
        let later = t + lock::LEASE / 2;
        assert_eq!(l.lease(&[1], false, "", later), 2);
        // Renewed at `later`: still held just before later + LEASE.
        assert!(!granted(&l, req(2, WRITE, 0, 5), t + lock::LEASE));
        assert!(granted(&l, req(2, WRITE, 0, 5), later + lock::LEASE));
        assert_eq!(l.lease(&[1], true, "/f", later), 0);
        assert!(granted(&l, req(3, WRITE, 20, 30), later));
        assert_eq!(l.lease(&[3], true, "/other", later), 1);
    }

    #[test]
    fn a_holder_whose_process_is_gone_is_dropped_when_in_the_way() {
        let (l, t) = (Locks::default(), Instant::now());
        let dead = std::cell::Cell::new(false);
        let alive = |pid: i32| pid != 100 || !dead.get();
        assert!(
            l.apply_with(&req(1, WRITE, 0, 10), t, Some(100), &alive)
                .unwrap()
                .granted
        );
        assert!(
            l.apply_with(&req(2, WRITE, 20, 30), t, None, &alive)
                .unwrap()
                .granted
        );
        assert!(
            !l.apply_with(&req(3, WRITE, 0, 5), t, Some(300), &alive)
                .unwrap()
                .granted
        );
        dead.set(true);
        assert!(
            l.apply_with(&req(3, WRITE, 0, 5), t, Some(300), &alive)
                .unwrap()
                .granted
        );
        // A remote holder (no process known) keeps its lock until its lease ends.
        assert!(
            !l.apply_with(&req(3, WRITE, 25, 26), t, Some(300), &alive)
                .unwrap()
                .granted
        );
        assert!(!l.table().pids.contains_key(&1));
    }

    #[test]
    fn bad_requests_are_refused() {
        let l = Locks::default();
        for r in [req(1, 3, 0, 1), req(1, READ, 5, 5), req(1, READ, 6, 5)] {
            assert_eq!(l.apply(&r, Instant::now(), None), Err(Errno::EINVAL));
        }
    }
}
