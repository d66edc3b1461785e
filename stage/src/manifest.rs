//! The manifest: every entry of a stage run with size, mtime, mode and checksum
//! (XXH3-64 of the data, hex), and whether it was copied. Written beside the run as JSON,
//! replaced atomically while the copy runs, so a killed run leaves a manifest that says
//! exactly which files were complete.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tree::Kind;

/// Format version.
pub const VERSION: u32 = 1;

/// State of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Copied (and verified, if asked) completely.
    Done,
    /// Failed; `error` says why.
    Failed,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Type.
    pub kind: Kind,
    /// Size of the source.
    pub size: u64,
    /// Source mtime, ns.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// XXH3-64 of the data (files), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Outcome.
    pub status: Status,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A run's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`VERSION`].
    pub version: u32,
    /// "in" or "out".
    pub direction: String,
    /// Source as given.
    pub src: String,
    /// Destination as given.
    pub dst: String,
    /// This run's rank and rank count.
    pub rank: u32,
    /// Ranks of the run.
    pub nranks: u32,
    /// Every owned entry copied, no failure.
    pub complete: bool,
    /// Entries by path relative to the source ("" is the source itself).
    pub files: BTreeMap<String, FileRecord>,
}

impl Manifest {
    /// An empty manifest for a run.
    pub fn new(direction: &str, src: &str, dst: &str, rank: u32, nranks: u32) -> Manifest {
        Manifest {
            version: VERSION,
            direction: direction.into(),
            src: src.into(),
            dst: dst.into(),
            rank,
            nranks,
            complete: false,
            files: BTreeMap::new(),
        }
    }

    /// Is `other` a manifest of the same run (so it may be resumed)?
    pub fn same_run(&self, other: &Manifest) -> bool {
        self.version == other.version
            && self.direction == other.direction
            && self.src == other.src
            && self.dst == other.dst
            && self.nranks == other.nranks
            && self.rank == other.rank
    }

    /// Reads a manifest; None if there is none or it cannot be used.
    pub fn load(path: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(path).ok()?;
        match serde_json::from_str(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                log::warn!("ignoring manifest {}: {e}", path.display());
                None
            }
        }
    }

    /// Writes the manifest atomically: a temporary file of this writer's own (named
    /// after the full manifest name, the process and a counter, so ranks writing
    /// `M.rank1`, `M.rank2`... beside each other never share one) renamed over it.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.{seq}.tmp", std::process::id()));
        let tmp = path.with_file_name(name);
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_and_loads_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.json");
        let mut m = Manifest::new("in", "/src", "/dst", 0, 1);
        m.files.insert(
            "a".into(),
            FileRecord {
                kind: Kind::File,
                size: 3,
                mtime_ns: 5,
                mode: 0o644,
                checksum: Some("ab".into()),
                status: Status::Done,
                error: None,
            },
        );
        m.save(&p).unwrap();
        let back = Manifest::load(&p).unwrap();
        assert_eq!(back, m);
        assert!(back.same_run(&Manifest::new("in", "/src", "/dst", 0, 1)));
        assert!(!back.same_run(&Manifest::new("out", "/src", "/dst", 0, 1)));
        std::fs::write(&p, "{not json").unwrap();
        assert!(Manifest::load(&p).is_none());
    }

    #[test]
    fn ranks_saving_side_by_side_never_share_a_temporary_file() {
        // M.rank1 and M.rank2 once both went through M.json.tmp: a rank read back
        // the other's manifest, or its rename found the file gone.
        let d = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for rank in 1..=3u32 {
                let dir = d.path();
                s.spawn(move || {
                    let p = dir.join(format!("M.rank{rank}"));
                    let m = Manifest::new("out", "/src", "/dst", rank, 4);
                    for _ in 0..300 {
                        m.save(&p).unwrap();
                        assert_eq!(Manifest::load(&p).unwrap().rank, rank);
                    }
                });
            }
        });
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "temporary files left behind: {left:?}");
    }
}
