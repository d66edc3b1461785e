//! The metadata store: one RocksDB database keyed by absolute path.
//!
//! Size updates are RocksDB merges whose operand is "size is at least X, mtime is at
//! least T"; the merge operator keeps the maxima, so concurrent writers never lose an
//! update. Directory listings seek past each child's descendants, so a listing costs
//! O(children on this daemon), not O(subtree).

use std::path::Path;

use gkfs_proto::msg::{DirEntry, PathRecord};
use gkfs_proto::{Errno, Record};
use rocksdb::{Direction, IteratorMode, MergeOperands, Options, DB};

use super::recent::Recent;
use super::space::{usage, Space};

/// Key of the persistent file-id counter (outside the `/` namespace).
const NEXT_ID_KEY: &[u8] = b"#next_id";

/// A metadata store error.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// RocksDB failed.
    #[error("metadata store: {0}")]
    Db(#[from] rocksdb::Error),
    /// The database's file system could not be measured.
    #[error("metadata store: cannot measure the file system of {dir}: {source}")]
    Measure {
        /// The database directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl MetaError {
    /// Did RocksDB fail for want of space (ENOSPC on a write, or the background error
    /// a failed flush leaves until space is freed)?
    pub fn is_no_space(&self) -> bool {
        match self {
            MetaError::Db(e) => {
                let m = e.as_ref();
                m.contains("No space left") || m.contains("NoSpace") || m.contains("no space")
            }
            MetaError::Measure { .. } => false,
        }
    }
}

impl From<MetaError> for Errno {
    fn from(e: MetaError) -> Errno {
        if e.is_no_space() {
            log::warn!("{e}");
            return Errno::ENOSPC;
        }
        log::error!("{e}");
        Errno::EIO
    }
}

/// The RocksDB-backed metadata store.
pub struct MetaStore {
    db: DB,
    wal: bool,
    /// Free space of the database's file system.
    space: Space,
    /// The records read or stored last (see [`Recent`] for how they stay true).
    recent: Recent,
}

/// The largest memtable (RocksDB's write buffer) of a metadata store.
const MAX_WRITE_BUFFER: u64 = 64 << 20;
/// The smallest one.
const MIN_WRITE_BUFFER: u64 = 1 << 20;

/// Sizes RocksDB's memory and disk reserves for a file system of `capacity` bytes:
/// the write buffer (1/16 of the disk, 1 to 64 MiB) and the headroom the daemon keeps
/// free for metadata (twice the write buffer, plus 1 MiB for RocksDB's logs and
/// manifest). RocksDB clears a hard error only once more than one write buffer is free,
/// so a buffer larger than the disk could never recover.
pub fn reserves(capacity: u64) -> (u64, u64) {
    let wb = (capacity / 16).clamp(MIN_WRITE_BUFFER, MAX_WRITE_BUFFER);
    (wb, 2 * wb + (1 << 20))
}

fn size_operand(size: u64, mtime: i64) -> [u8; 16] {
    let mut op = [0u8; 16];
    op[..8].copy_from_slice(&size.to_le_bytes());
    op[8..].copy_from_slice(&mtime.to_le_bytes());
    op
}

/// Merge operator: apply "size at least / mtime at least" operands to a record.
/// A missing or undecodable base yields an empty value, which reads as "absent".
fn merge_size(_key: &[u8], existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    let Some(mut rec) = existing.and_then(|b| Record::from_bytes(b).ok()) else {
        return Some(Vec::new());
    };
    for op in ops {
        if op.len() != 16 {
            continue;
        }
        let size = u64::from_le_bytes(op[..8].try_into().unwrap_or_default());
        let mtime = i64::from_le_bytes(op[8..].try_into().unwrap_or_default());
        raise_size(&mut rec, size, mtime);
    }
    Some(rec.to_bytes())
}

/// What a size operand does to a record: size and times raised to at least the given
/// values (the merge operator, and the record cache, apply the same).
fn raise_size(rec: &mut Record, size: u64, mtime: i64) {
    rec.size = rec.size.max(size);
    rec.mtime = rec.mtime.max(mtime);
    rec.ctime = rec.ctime.max(mtime);
}

/// Partial merge of two operands: keep the maxima.
fn merge_operands(_key: &[u8], _existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
    let (mut size, mut mtime) = (0u64, i64::MIN);
    for op in ops {
        if op.len() != 16 {
            return None;
        }
        size = size.max(u64::from_le_bytes(op[..8].try_into().unwrap_or_default()));
        mtime = mtime.max(i64::from_le_bytes(op[8..].try_into().unwrap_or_default()));
    }
    Some(size_operand(size, mtime).to_vec())
}

/// The key prefix of a directory's children: "/a" -> "/a/", "/" -> "/".
pub fn child_prefix(dir: &str) -> String {
    if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    }
}

impl MetaStore {
    /// Opens (or creates) the database in `dir`. Without `wal`, writes skip RocksDB's
    /// write-ahead log (as GekkoFS does by default): a clean shutdown flushes everything,
    /// a crashed daemon loses its recent metadata, as it loses the job's data anyway.
    pub fn open(dir: &Path, wal: bool) -> Result<MetaStore, MetaError> {
        let measure = |source| MetaError::Measure {
            dir: dir.to_path_buf(),
            source,
        };
        let (capacity, _) = usage(dir).map_err(measure)?;
        let (write_buffer, reserve) = reserves(capacity);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_merge_operator("gkfs_size_max", merge_size, merge_operands);
        // A file written in small pieces gets one size operand per write; without a
        // bound, every read of its record walks all of them in the memtable (quadratic:
        // 5000 4 KiB writes cost ~300 us CPU each). After this many successive merges
        // RocksDB folds them into one value.
        opts.set_max_successive_merges(8);
        opts.increase_parallelism(2);
        opts.set_write_buffer_size(write_buffer as usize);
        // Small root dirs: no manifest preallocated, RocksDB's own logs bounded.
        if write_buffer < MAX_WRITE_BUFFER {
            opts.set_manifest_preallocation_size(0);
        }
        opts.set_max_log_file_size(1 << 20);
        opts.set_keep_log_file_num(2);
        opts.set_max_manifest_file_size(4 << 20);
        let db = DB::open(&opts, dir)?;
        let space = Space::new(dir, reserve).map_err(measure)?;
        Ok(MetaStore {
            db,
            wal,
            space,
            recent: Recent::default(),
        })
    }

    /// The headroom this store needs on its file system (see [`reserves`]).
    pub fn reserve(&self) -> u64 {
        self.space.reserve()
    }

    /// ENOSPC when a new record would take the last half of the reserve: creates stop
    /// before the database runs out of room for the removals that free space.
    pub fn admit_record(&self) -> Result<(), Errno> {
        self.space.admit_record().map_err(|_| Errno::ENOSPC)
    }

    /// Reads the record of `path`.
    pub fn get(&self, path: &str) -> Result<Option<Record>, MetaError> {
        self.recent.get(path, || {
            Ok(self
                .db
                .get_pinned(path.as_bytes())?
                .and_then(|v| Record::from_bytes(&v).ok()))
        })
    }

    fn wo(&self) -> rocksdb::WriteOptions {
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(!self.wal);
        wo
    }

    /// Stores the record of `path`.
    pub fn put(&self, path: &str, rec: &Record) -> Result<(), MetaError> {
        let bytes = rec.to_bytes();
        Ok(self.recent.store(path, *rec, || {
            self.db.put_opt(path.as_bytes(), bytes, &self.wo())
        })?)
    }

    /// Removes the record of `path`.
    pub fn delete(&self, path: &str) -> Result<(), MetaError> {
        let done = self.db.delete_opt(path.as_bytes(), &self.wo());
        self.recent.forget(path);
        Ok(done?)
    }

    /// Raises size and mtime of `path` to at least the given values.
    pub fn merge_size(&self, path: &str, size: u64, mtime: i64) -> Result<(), MetaError> {
        let op = size_operand(size, mtime);
        Ok(self.recent.change(
            path,
            |rec| raise_size(rec, size, mtime),
            || self.db.merge_opt(path.as_bytes(), op, &self.wo()),
        )?)
    }

    /// Direct children of `dir` stored here, after `start_after`, at most `max`
    /// entries or about `max_bytes` of names; returns the entries and whether more follow.
    pub fn children(
        &self,
        dir: &str,
        start_after: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<DirEntry>, bool), MetaError> {
        let prefix = child_prefix(dir);
        let mut seek = format!("{prefix}{start_after}");
        if !start_after.is_empty() {
            // The smallest key after the last name returned (its descendants are
            // skipped below, like any other child's).
            seek.push('\0');
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut iter = self.db.raw_iterator();
        iter.seek(seek.as_bytes());
        while iter.valid() {
            let (Some(key), Some(val)) = (iter.key(), iter.value()) else {
                break;
            };
            let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
                break;
            };
            if rest.is_empty() {
                iter.next();
                continue;
            }
            if let Some(slash) = rest.iter().position(|&b| b == b'/') {
                // A deeper descendant: jump past everything under this child.
                let mut next = key[..prefix.len() + slash].to_vec();
                next.push(b'0');
                iter.seek(&next);
                continue;
            }
            if out.len() >= max || bytes >= max_bytes {
                return Ok((out, true));
            }
            if let (Ok(name), Ok(rec)) = (std::str::from_utf8(rest), Record::from_bytes(val)) {
                bytes += name.len() + 16;
                out.push(DirEntry {
                    name: name.to_string(),
                    mode: rec.mode,
                    size: rec.size,
                });
            }
            iter.next();
        }
        iter.status()?;
        Ok((out, false))
    }

    /// Every record strictly below `dir` (any depth) stored here, after the full path
    /// `start_after`.
    pub fn scan(
        &self,
        dir: &str,
        start_after: &str,
        max: usize,
    ) -> Result<(Vec<PathRecord>, bool), MetaError> {
        let prefix = child_prefix(dir);
        let mut iter = self.db.raw_iterator();
        if start_after.is_empty() {
            iter.seek(prefix.as_bytes());
        } else {
            iter.seek(start_after.as_bytes());
            if iter.valid() && iter.key() == Some(start_after.as_bytes()) {
                iter.next();
            }
        }
        let mut out = Vec::new();
        while iter.valid() {
            let (Some(key), Some(val)) = (iter.key(), iter.value()) else {
                break;
            };
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if out.len() >= max {
                return Ok((out, true));
            }
            if let (Ok(path), Ok(rec)) = (std::str::from_utf8(key), Record::from_bytes(val)) {
                if path != prefix {
                    out.push(PathRecord {
                        path: path.to_string(),
                        record: rec,
                    });
                }
            }
            iter.next();
        }
        iter.status()?;
        Ok((out, false))
    }

    /// Does `dir` have any child stored here?
    pub fn has_children(&self, dir: &str) -> Result<bool, MetaError> {
        Ok(!self.scan(dir, "", 1)?.0.is_empty())
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.db
            .iterator(IteratorMode::From(b"/", Direction::Forward))
            .take_while(|r| r.as_ref().is_ok_and(|(k, _)| k.starts_with(b"/")))
            .count() as u64
    }

    /// Bytes the database takes: its table files and memtables (RocksDB's own figures;
    /// 0 where it cannot tell).
    pub fn size_bytes(&self) -> u64 {
        [
            "rocksdb.total-sst-files-size",
            "rocksdb.cur-size-all-mem-tables",
        ]
        .iter()
        .filter_map(|&p| self.db.property_int_value(p).ok().flatten())
        .sum()
    }

    /// Reads the persisted next file-id counter (a new store starts at 2: id 0 means
    /// "no data" (directories), and daemon 0's first id would otherwise be 1, which is
    /// the root directory's inode number under FUSE).
    pub fn next_id(&self) -> Result<u64, MetaError> {
        Ok(self
            .db
            .get(NEXT_ID_KEY)?
            .and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(2))
    }

    /// Persists the next file-id counter.
    pub fn set_next_id(&self, next: u64) -> Result<(), MetaError> {
        Ok(self
            .db
            .put_opt(NEXT_ID_KEY, next.to_le_bytes(), &self.wo())?)
    }

    /// Flushes memtables (for a clean shutdown).
    pub fn flush(&self) -> Result<(), MetaError> {
        Ok(self.db.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gkfs_proto::record::mode;

    fn rec(m: u32) -> Record {
        Record {
            mode: m,
            nlink: 1,
            ..Default::default()
        }
    }

    #[test]
    fn children_skip_descendants_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaStore::open(dir.path(), false).unwrap();
        for p in [
            "/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/b-x", "/a/c", "/b", "/a0",
        ] {
            db.put(p, &rec(mode::S_IFDIR)).unwrap();
        }
        let names = |d: &str, after: &str, max| {
            let (v, more) = db.children(d, after, max, 1 << 20).unwrap();
            (v.into_iter().map(|e| e.name).collect::<Vec<_>>(), more)
        };
        assert_eq!(
            names("/a", "", 10),
            (vec!["b".into(), "b-x".into(), "c".into()], false)
        );
        assert_eq!(names("/a", "", 1), (vec!["b".into()], true));
        assert_eq!(
            names("/a", "b", 10),
            (vec!["b-x".into(), "c".into()], false)
        );
        assert_eq!(
            names("/", "", 10),
            (vec!["a".into(), "a0".into(), "b".into()], false)
        );
        // A child whose own record lives on another daemon is not listed here.
        db.delete("/a/b").unwrap();
        assert_eq!(names("/a", "", 10).0, vec!["b-x".to_string(), "c".into()]);
        let (all, _) = db.scan("/a", "", 100).unwrap();
        assert_eq!(all.len(), 4);
        assert!(db.has_children("/a/b").unwrap());
        assert!(!db.has_children("/b").unwrap());
    }

    #[test]
    fn merge_keeps_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaStore::open(dir.path(), false).unwrap();
        db.put("/f", &rec(mode::S_IFREG)).unwrap();
        db.merge_size("/f", 100, 5).unwrap();
        db.merge_size("/f", 50, 9).unwrap();
        let r = db.get("/f").unwrap().unwrap();
        assert_eq!((r.size, r.mtime), (100, 9));
        // A merge on a missing key reads as absent, never as garbage.
        db.merge_size("/gone", 1, 1).unwrap();
        assert_eq!(db.get("/gone").unwrap(), None);
    }

    #[test]
    fn kept_records_match_the_database_after_concurrent_changes() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let db = MetaStore::open(dir.path(), false).unwrap();
        let paths: Vec<String> = (0..4).map(|i| format!("/f{i}")).collect();
        // In each round four threads put, merge, delete and read the same few paths at
        // once (no per-path lock, unlike the handlers); once they are done, what a read
        // returns is what the database holds, whatever order the changes landed in.
        for round in 0..200u64 {
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (db, paths) = (&db, &paths);
                    s.spawn(move || {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(round * 4 + t);
                        for i in 0..100i64 {
                            let p = &paths[rng.random_range(0..paths.len())];
                            match rng.random_range(0..8) {
                                0 => db.delete(p).unwrap(),
                                1 => {
                                    let r = Record {
                                        size: rng.random_range(0..1000),
                                        ..rec(mode::S_IFREG)
                                    };
                                    db.put(p, &r).unwrap()
                                }
                                2 => db.merge_size(p, rng.random_range(0..2000), i).unwrap(),
                                _ => {
                                    db.get(p).unwrap();
                                }
                            }
                        }
                    });
                }
            });
            for p in &paths {
                let truth = db
                    .db
                    .get_pinned(p.as_bytes())
                    .unwrap()
                    .and_then(|v| Record::from_bytes(&v).ok());
                assert_eq!(db.get(p).unwrap(), truth, "{p} after round {round}");
            }
        }
    }
}
