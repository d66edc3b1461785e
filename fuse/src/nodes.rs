//! The kernel's inode numbers and the paths they stand for.
//!
//! gkfs is keyed by path; FUSE by inode number. A node's number is what `st_ino` shows
//! (`Record::ino`: the file id of a file, shared by its hard links and kept by
//! renames; a path hash for a directory), the root is 1. The table remembers, for every
//! number the kernel holds (between a lookup and its forget), the path to ask the
//! daemons about; renames move the paths of everything at and below the old name.

use std::collections::HashMap;

use gkfs_proto::path::moved;

/// The root's number (FUSE_ROOT_ID).
pub const ROOT: u64 = 1;

struct Node {
    path: String,
    lookups: u64,
}

/// Inode number → path, with the kernel's lookup counts.
pub struct Nodes {
    by_ino: HashMap<u64, Node>,
}

impl Default for Nodes {
    fn default() -> Self {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Node {
                path: "/".to_string(),
                lookups: 1,
            },
        );
        Nodes { by_ino }
    }
}

impl Nodes {
    /// The path of node `ino`, if the kernel holds it.
    pub fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).map(|n| n.path.clone())
    }

    /// The kernel was given `ino` for `path` once more (lookup, create, mkdir...).
    pub fn remember(&mut self, ino: u64, path: &str) {
        let n = self.by_ino.entry(ino).or_insert_with(|| Node {
            path: String::new(),
            lookups: 0,
        });
        if n.path != path {
            n.path = path.to_string();
        }
        n.lookups += 1;
    }

    /// The kernel dropped `count` references to `ino`; the node goes with the last.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(count);
            if n.lookups == 0 {
                self.by_ino.remove(&ino);
            }
        }
    }

    /// `from` became `to`: every node at or below `from` moves with it.
    pub fn renamed(&mut self, from: &str, to: &str) {
        for n in self.by_ino.values_mut() {
            if let Some(new) = moved(&n.path, from, to) {
                n.path = new;
            }
        }
    }

    /// How many nodes the kernel holds (the root included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_counted_and_forgotten() {
        let mut n = Nodes::default();
        n.remember(7, "/a");
        n.remember(7, "/a");
        n.forget(7, 1);
        assert_eq!(n.path(7).as_deref(), Some("/a"));
        n.forget(7, 1);
        assert_eq!(n.path(7), None);
        n.forget(ROOT, 100);
        assert_eq!(n.path(ROOT).as_deref(), Some("/"));
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn a_rename_moves_the_subtree_only() {
        let mut n = Nodes::default();
        n.remember(2, "/d");
        n.remember(3, "/d/f");
        n.remember(4, "/d/e/g");
        n.remember(5, "/dx");
        n.renamed("/d", "/n/m");
        assert_eq!(n.path(2).as_deref(), Some("/n/m"));
        assert_eq!(n.path(3).as_deref(), Some("/n/m/f"));
        assert_eq!(n.path(4).as_deref(), Some("/n/m/e/g"));
        assert_eq!(n.path(5).as_deref(), Some("/dx"));
        assert_eq!(n.path(ROOT).as_deref(), Some("/"));
    }

    #[test]
    fn a_hard_link_keeps_the_latest_name() {
        let mut n = Nodes::default();
        n.remember(9, "/a");
        n.remember(9, "/b");
        assert_eq!(n.path(9).as_deref(), Some("/b"));
        n.forget(9, 1);
        assert_eq!(n.path(9).as_deref(), Some("/b"));
    }
}
