//! The records read or stored last, kept in memory in front of RocksDB.
//!
//! A 4 KiB write inside a file checks the file's record (is the write past its size,
//! is its mtime newer?) and a `stat` reads it, often right after the create that stored
//! it; each is a RocksDB lookup of ~0.7 µs, a tenth of what the whole request costs on
//! the node-local channel. [`Recent`] keeps the records found by the last lookups and
//! stored by the last creates, so that a hot file's record is a hash-map lookup away.
//!
//! The database stays the truth. The cache only holds a record as the database held it
//! at some moment after the last change to that path, by this rule:
//! - every change to a path is made in the database first, then [`Recent::forget`]
//!   drops the path's entry and counts a change in its shard; or, for a whole new
//!   record, [`Recent::store`] makes the change with the shard locked and keeps the
//!   record (so two stores of a path are kept in the order the database took them,
//!   and a forget that follows a change always comes after any store it overlapped);
//!   or, for a merge (a write that raises size and mtime), [`Recent::change`] makes it
//!   with the shard locked and applies the same change to the kept record;
//! - a lookup that misses notes its shard's change count before it reads the database,
//!   and keeps what it read only if no change to that shard came in between.
//!
//! So a reader never sees a record older than a change that finished (returned to its
//! caller) before the read began. Entries never expire otherwise: only this daemon
//! writes its database, through [`super::meta::MetaStore`], which forgets or stores on
//! every change. A shard that fills up is emptied (a bounded size, no eviction order to keep).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use gkfs_proto::place::path_hash;
use gkfs_proto::Record;

/// Shards, each with its own lock, so that the daemon's threads rarely wait on each other.
const SHARDS: usize = 16;
/// Records per shard before it is emptied: 8 192 in all (each a path and an 80-byte
/// map entry: about 1.5 MiB with paths of 100 bytes).
const SHARD_RECORDS: usize = 512;

#[derive(Default)]
struct Shard {
    records: HashMap<Box<str>, Record>,
    changes: u64,
}

impl Shard {
    /// Keeps `rec` for `path`, emptying the shard first if it is full.
    fn keep(&mut self, path: &str, rec: Record) {
        if self.records.len() >= SHARD_RECORDS {
            self.records.clear();
        }
        self.records.insert(path.into(), rec);
    }
}

/// The records of recently read or stored paths (see the module docs for when one may
/// be kept).
pub struct Recent {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Recent {
    /// The shard of `path` (by the placement hash, as the daemon's path lock stripes).
    fn shard_of(&self, path: &str) -> &Mutex<Shard> {
        &self.shards[(path_hash(path) % SHARDS as u64) as usize]
    }

    fn shard(&self, path: &str) -> MutexGuard<'_, Shard> {
        lock(self.shard_of(path))
    }

    /// The record of `path`: the kept one, or what `read` finds in the database (kept
    /// unless the path's shard changed while it read). A missing record is not kept.
    pub fn get<E>(
        &self,
        path: &str,
        read: impl FnOnce() -> Result<Option<Record>, E>,
    ) -> Result<Option<Record>, E> {
        let cell = self.shard_of(path);
        let before = {
            let shard = lock(cell);
            if let Some(rec) = shard.records.get(path) {
                return Ok(Some(*rec));
            }
            shard.changes
        };
        let found = read()?;
        if let Some(rec) = found {
            let mut shard = lock(cell);
            if shard.changes == before {
                shard.keep(path, rec);
            }
        }
        Ok(found)
    }

    /// Drops what is kept for `path`; call after every change to its record in the
    /// database, before the change is reported done.
    pub fn forget(&self, path: &str) {
        let mut shard = self.shard(path);
        shard.records.remove(path);
        shard.changes += 1;
    }

    /// Stores `rec` as the record of `path` with `write` (the database write), and
    /// keeps it if that succeeded. The shard stays locked across the write, so that
    /// two stores of one path are kept in the order the database took them.
    pub fn store<E>(
        &self,
        path: &str,
        rec: Record,
        write: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut shard = self.shard(path);
        let done = write();
        shard.changes += 1;
        if done.is_ok() {
            shard.keep(path, rec);
        } else {
            shard.records.remove(path);
        }
        done
    }
}

impl Recent {
    /// Changes the record of `path` with `write` (the database write of a change that
    /// `update` also describes: a merge), and applies `update` to the kept record if
    /// that succeeded. The shard stays locked across the write, as in [`Recent::store`],
    /// so the kept record stays what the database holds (a write inside a file
    /// checks it next, and need not read the database again).
    pub fn change<E>(
        &self,
        path: &str,
        update: impl FnOnce(&mut Record),
        write: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut shard = self.shard(path);
        let done = write();
        shard.changes += 1;
        match (&done, shard.records.get_mut(path)) {
            (Ok(()), Some(rec)) => update(rec),
            (Ok(()), None) => {}
            (Err(_), _) => {
                shard.records.remove(path);
            }
        }
        done
    }
}

/// A panic while holding a shard leaves only a map of copies: keep using it.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn rec(size: u64) -> Record {
        Record {
            size,
            ..Record::default()
        }
    }

    #[test]
    fn a_kept_record_is_served_without_reading_until_forgotten() {
        let r = Recent::default();
        let got = r.get("/f", || Ok::<_, Infallible>(Some(rec(1)))).unwrap();
        assert_eq!(got.map(|r| r.size), Some(1));
        let got = r.get("/f", || -> Result<_, Infallible> { panic!("read again") });
        assert_eq!(got.unwrap().map(|r| r.size), Some(1));
        r.forget("/f");
        let got = r.get("/f", || Ok::<_, Infallible>(Some(rec(2)))).unwrap();
        assert_eq!(got.map(|r| r.size), Some(2));
    }

    #[test]
    fn a_read_overtaken_by_a_change_is_not_kept() {
        let r = Recent::default();
        // The database read returns the old record, but the path changes (and is
        // forgotten) before the read is done: what it read must not be kept.
        let got = r
            .get("/f", || {
                r.forget("/f");
                Ok::<_, Infallible>(Some(rec(1)))
            })
            .unwrap();
        assert_eq!(got.map(|r| r.size), Some(1));
        let got = r.get("/f", || Ok::<_, Infallible>(Some(rec(7)))).unwrap();
        assert_eq!(got.map(|r| r.size), Some(7), "the overtaken read was kept");
    }

    #[test]
    fn a_stored_record_is_kept_and_a_failed_store_forgets() {
        let r = Recent::default();
        r.get("/f", || Ok::<_, Infallible>(Some(rec(1)))).unwrap();
        r.store("/f", rec(2), || Ok::<_, Infallible>(())).unwrap();
        let got = r.get("/f", || -> Result<_, Infallible> { panic!("read again") });
        assert_eq!(got.unwrap().map(|r| r.size), Some(2));
        assert!(r.store("/f", rec(3), || Err("db")).is_err());
        let got = r.get("/f", || Ok::<_, Infallible>(Some(rec(4)))).unwrap();
        assert_eq!(
            got.map(|r| r.size),
            Some(4),
            "a failed store left a record kept"
        );
    }

    #[test]
    fn a_change_updates_the_kept_record_and_a_failed_one_forgets() {
        let r = Recent::default();
        r.get("/f", || Ok::<_, Infallible>(Some(rec(1)))).unwrap();
        r.change("/f", |k| k.size = 5, || Ok::<_, Infallible>(()))
            .unwrap();
        let got = r.get("/f", || -> Result<_, Infallible> { panic!("read again") });
        assert_eq!(got.unwrap().map(|r| r.size), Some(5));
        assert!(r.change("/f", |k| k.size = 6, || Err("db")).is_err());
        let got = r.get("/f", || Ok::<_, Infallible>(Some(rec(9)))).unwrap();
        assert_eq!(
            got.map(|r| r.size),
            Some(9),
            "a failed change left a record kept"
        );
        // A change of a path not kept keeps nothing.
        r.change("/g", |k| k.size = 1, || Ok::<_, Infallible>(()))
            .unwrap();
        let got = r.get("/g", || Ok::<_, Infallible>(None)).unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn missing_records_and_errors_are_not_kept() {
        let r = Recent::default();
        assert_eq!(r.get("/f", || Ok::<_, Infallible>(None)).unwrap(), None);
        assert!(r.get("/f", || Err::<Option<Record>, _>("db")).is_err());
        let got = r.get("/f", || Ok::<_, Infallible>(Some(rec(3)))).unwrap();
        assert_eq!(got.map(|r| r.size), Some(3));
    }

    #[test]
    fn a_full_shard_stays_bounded() {
        let r = Recent::default();
        for i in 0..SHARDS * SHARD_RECORDS * 3 {
            r.get(&format!("/f{i}"), || {
                Ok::<_, Infallible>(Some(rec(i as u64)))
            })
            .unwrap();
        }
        let kept: usize = r
            .shards
            .iter()
            .map(|s| s.lock().unwrap().records.len())
            .sum();
        assert!(kept <= SHARDS * SHARD_RECORDS, "{kept} records kept");
        // Whatever is kept is right.
        for i in (0..SHARDS * SHARD_RECORDS * 3).step_by(97) {
            let got = r
                .get(&format!("/f{i}"), || {
                    Ok::<_, Infallible>(Some(rec(i as u64)))
                })
                .unwrap();
            assert_eq!(got.map(|r| r.size), Some(i as u64));
        }
    }
}
