//! The planner: which entries this rank copies and which a resumed run can skip. Pure.

use std::collections::BTreeMap;

use crate::manifest::{FileRecord, Status};
use crate::tree::{Entry, Kind};

/// The rank that copies `rel` out of `nranks` (jump consistent hash of its path, as
/// gkfs places files; stable and evenly spread).
pub fn owner(rel: &str, nranks: u32) -> u32 {
    gkfs_proto::place::jump(gkfs_proto::place::path_hash(rel), nranks.max(1))
}

/// This rank's work.
#[derive(Debug, Default)]
pub struct Plan {
    /// Directories to create (all of them, by every rank: creating is idempotent and a
    /// rank's files need their parents), parents first.
    pub mkdirs: Vec<Entry>,
    /// Directories whose mode and mtime this rank sets at the end.
    pub dir_meta: Vec<Entry>,
    /// Files and symlinks to copy.
    pub copy: Vec<Entry>,
    /// Files and symlinks a previous run completed (path, its record).
    pub skip: Vec<(Entry, FileRecord)>,
}

/// Splits `entries` (a walk of the source) for `rank` of `nranks`. `done` holds what a
/// previous run of the same command recorded; `dst_size(rel)` is the destination's
/// current size of an entry (None: missing). An entry is skipped when its record says
/// done, the source still has the recorded size and mtime, and the destination has that
/// size.
pub fn plan(
    entries: &[Entry],
    rank: u32,
    nranks: u32,
    done: &BTreeMap<String, FileRecord>,
    dst_size: impl Fn(&str) -> Option<u64>,
) -> Plan {
    let mut p = Plan::default();
    for e in entries {
        let mine = owner(&e.rel, nranks) == rank;
        match e.kind {
            Kind::Dir => {
                p.mkdirs.push(e.clone());
                if mine {
                    p.dir_meta.push(e.clone());
                }
            }
            Kind::File | Kind::Symlink if mine => {
                let prev = done.get(&e.rel).filter(|r| {
                    r.status == Status::Done
                        && r.kind == e.kind
                        && r.size == e.size
                        && r.mtime_ns == e.mtime_ns
                        && (e.kind == Kind::Symlink || dst_size(&e.rel) == Some(e.size))
                });
                match prev {
                    Some(r) => p.skip.push((e.clone(), r.clone())),
                    None => p.copy.push(e.clone()),
                }
            }
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, size: u64) -> Entry {
        Entry {
            rel: rel.into(),
            kind: Kind::File,
            size,
            mode: 0o644,
            mtime_ns: 7,
            target: None,
        }
    }

    fn dir(rel: &str) -> Entry {
        Entry {
            kind: Kind::Dir,
            size: 0,
            ..file(rel, 0)
        }
    }

    #[test]
    fn ranks_split_every_file_exactly_once() {
        let mut entries = vec![dir(""), dir("d")];
        entries.extend((0..1000).map(|i| file(&format!("d/f{i}"), i)));
        let none = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut per_rank = Vec::new();
        for r in 0..3 {
            let p = plan(&entries, r, 3, &none, |_| None);
            assert_eq!(p.mkdirs.len(), 2, "every rank creates every directory");
            per_rank.push(p.copy.len());
            for e in p.copy {
                assert!(seen.insert(e.rel), "copied twice");
            }
        }
        assert_eq!(seen.len(), 1000);
        assert!(
            per_rank.iter().all(|&n| n > 250),
            "uneven split: {per_rank:?}"
        );
        assert_eq!(plan(&entries, 0, 1, &none, |_| None).copy.len(), 1000);
    }

    #[test]
    fn resume_skips_only_complete_unchanged_files() {
        let entries = vec![
            dir(""),
            file("a", 10),
            file("b", 10),
            file("c", 10),
            file("d", 10),
        ];
        let rec = |size, status| FileRecord {
            kind: Kind::File,
            size,
            mtime_ns: 7,
            mode: 0o644,
            checksum: Some("00".into()),
            status,
            error: None,
        };
        let mut done = BTreeMap::new();
        done.insert("a".to_string(), rec(10, Status::Done));
        done.insert("b".to_string(), rec(10, Status::Failed));
        done.insert("c".to_string(), rec(9, Status::Done)); // source changed since
        done.insert("d".to_string(), rec(10, Status::Done));
        // d's destination is short (killed mid-write after an earlier complete run).
        let p = plan(&entries, 0, 1, &done, |rel| {
            Some(if rel == "d" { 3 } else { 10 })
        });
        let skipped: Vec<&str> = p.skip.iter().map(|(e, _)| e.rel.as_str()).collect();
        let copied: Vec<&str> = p.copy.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(skipped, ["a"]);
        assert_eq!(copied, ["b", "c", "d"]);
    }
}
