//! Parallel stage-in / stage-out between a parallel file system and gkfs, over the
//! client API (no preload).
//!
//! A run walks the source ([`tree`]), lets the pure [`plan`]ner pick this rank's
//! entries and skip those a previous run completed, copies files with `jobs` workers in
//! large transfers (each spreads over every daemon holding the file's chunks), computes
//! an XXH3-64 checksum of every file while reading it, keeps holes (holes of the source
//! are not read, blocks of zeros are not written, see [`data_runs`]), modes, mtimes,
//! empty directories and symlinks, and records everything in a JSON [`manifest`] that
//! is rewritten atomically as it goes. A run succeeds only if every owned entry was copied
//! completely (and verified with `verify`); otherwise it returns the failures, so a
//! partial copy is never reported as done.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod manifest;
pub mod plan;
pub mod tree;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gkfs_client::{Client, Errno};
use serde::Serialize;
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

use manifest::{FileRecord, Manifest, Status};
use tree::{join, Entry, Gkfs, Kind, Local, Tree};

/// Which way data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Parallel file system -> gkfs.
    In,
    /// gkfs -> parallel file system.
    Out,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A stage run.
pub struct Options {
    /// Direction.
    pub direction: Direction,
    /// Source: a real path (in) or a path inside gkfs (out).
    pub src: String,
    /// Destination: a path inside gkfs (in) or a real path (out).
    pub dst: String,
    /// The file system.
    pub client: Client,
    /// Parallel copies.
    pub jobs: usize,
    /// Re-read every destination file and compare checksums.
    pub verify: bool,
    /// Copy even if the destination exists (no manifest of this run there).
    pub force: bool,
    /// This rank and the rank count (distributed mode).
    pub rank: u32,
    /// Ranks.
    pub nranks: u32,
    /// Where the manifest goes.
    pub manifest: PathBuf,
    /// Rank 0's manifest (distributed mode): ranks > 0 start once it exists, i.e. once
    /// rank 0 has checked the destination and taken it, so no rank writes into a
    /// destination rank 0 refused and no rank's directories make rank 0 refuse.
    pub rank0_manifest: Option<PathBuf>,
    /// No progress output (else a bar on a terminal, a line every 5 s otherwise).
    pub quiet: bool,
    /// Bytes per read/write call.
    pub transfer: usize,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Files (and symlinks) copied by this run.
    pub files: u64,
    /// Bytes copied (the files' full sizes, holes included).
    pub bytes: u64,
    /// Of those, bytes left as holes in the destination: holes of the source (never
    /// read from a local file system) and blocks of zeros (never written).
    pub holes: u64,
    /// Entries a previous run had completed.
    pub skipped: u64,
    /// Directories created.
    pub dirs: u64,
    /// Wall time.
    pub seconds: f64,
    /// Entries that failed, with the reason.
    pub failures: Vec<Failure>,
    /// The manifest written.
    pub manifest: String,
}

/// One failed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Path relative to the source.
    pub path: String,
    /// Why.
    pub error: String,
}

/// Why a run could not start.
#[derive(Debug, Error)]
pub enum StageError {
    /// The source cannot be read.
    #[error("cannot read the source {path}: {errno}")]
    Source {
        /// Source.
        path: String,
        /// Why.
        errno: Errno,
    },
    /// The destination exists and this is not a resumed run.
    #[error("the destination {0} exists; pass --force to copy over it (a rerun of the same command resumes without --force)")]
    DestinationExists(String),
    /// The destination cannot be checked or created.
    #[error("cannot use the destination {path}: {errno}")]
    Destination {
        /// Destination.
        path: String,
        /// Why.
        errno: Errno,
    },
    /// Rank 0 did not take the destination (it refused it, or never ran).
    #[error(
        "rank 0 has not started (no manifest {0} after 120 s; did it refuse the destination?)"
    )]
    Rank0(String),
    /// The manifest cannot be written.
    #[error("cannot write the manifest {path}: {err}")]
    Manifest {
        /// Manifest path.
        path: String,
        /// Why.
        err: std::io::Error,
    },
}

/// Errors after which continuing would only repeat the failure (the destination is
/// full, a daemon is gone): the run stops taking new files.
fn fatal(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOSPC | Errno::EIO | Errno::ETIMEDOUT | Errno::ESTALE
    )
}

struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    total_files: u64,
    total_bytes: u64,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes);
            b.set_message(format!(
                "{}/{} files",
                self.files.load(Ordering::Relaxed),
                self.total_files
            ));
        }
    }

    fn line(&self, what: &str, started: Instant) -> String {
        let (f, b) = (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "stage-{what}: {f}/{} files, {:.1}/{:.1} MiB, {:.1} MiB/s",
            self.total_files,
            b as f64 / 1048576.0,
            self.total_bytes as f64 / 1048576.0,
            b as f64 / 1048576.0 / secs
        )
    }
}

/// What [`each_piece`] hands on: data read at an offset, or a hole of some length.
enum Piece<'a> {
    /// Bytes read at this offset.
    Data(&'a [u8], u64),
    /// This many bytes of zeros the source holds no data for.
    Hole(u64),
}

/// Reads `r` from the start in blocks of up to `transfer` bytes, skipping the holes the
/// reader reports (they are never read), and hands every block and every hole to `f`
/// in file order; returns the file's size (the offset reading ended at, or the size
/// of the file if it ends in a hole).
fn each_piece(
    r: &dyn tree::Reader,
    transfer: usize,
    mut f: impl FnMut(Piece<'_>) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let mut buf = vec![0u8; transfer.max(1)];
    let mut pos = 0u64;
    while let Some((start, end)) = r.data_from(pos)? {
        let start = start.max(pos);
        // Always move on, even if the file changes under the reader.
        let end = end.max(start + 1);
        if start > pos {
            f(Piece::Hole(start - pos))?;
            pos = start;
        }
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = r.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                // The end of the file.
                return Ok(pos);
            }
            f(Piece::Data(&buf[..n], pos))?;
            pos += n as u64;
        }
    }
    // Only a hole is left: the file's size says how long it is.
    let size = r.size()?;
    if size > pos {
        f(Piece::Hole(size - pos))?;
        pos = size;
    }
    Ok(pos)
}

/// Zeros to hash holes with.
static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// Feeds `len` zero bytes (a hole) to the checksum.
fn hash_zeros(h: &mut Xxh3, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// Granularity of hole detection in data read back: blocks of this size (aligned to
/// file offsets, as file system blocks are) that hold only zeros are not written.
pub const ZERO_BLOCK: u64 = 4096;
/// Zero blocks between two stretches of data are written anyway when they are fewer
/// than this many bytes: a hole that small saves little space and costs a write call.
pub const MIN_HOLE: u64 = 64 * 1024;

/// The stretches of `buf` (read at file offset `at`) worth writing, as ranges of `buf`:
/// everything except blocks of zeros ([`ZERO_BLOCK`]-aligned to the file, or the
/// buffer's partial first and last blocks), with gaps shorter than [`MIN_HOLE`]
/// between stretches kept.
pub fn data_runs(buf: &[u8], at: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0usize;
    while i < buf.len() {
        let next_edge = (at + i as u64) / ZERO_BLOCK * ZERO_BLOCK + ZERO_BLOCK;
        let j = ((next_edge - at) as usize).min(buf.len());
        let block = &buf[i..j];
        if block != &ZEROS[..block.len()] {
            match runs.last_mut() {
                Some(r) if (i - r.end) < MIN_HOLE as usize => r.end = j,
                _ => runs.push(i..j),
            }
        }
        i = j;
    }
    runs
}

/// What copying one file found.
struct Copied {
    /// XXH3-64 of the whole logical content (holes as zeros), hex.
    checksum: String,
    /// Bytes not written to the destination (holes of the source, blocks of zeros).
    holes: u64,
}

/// Copies one file, keeping holes: the source's holes are never read, blocks of zeros
/// are never written, and the size is set at the end so that a trailing hole stays
/// one; returns the checksum of the full content.
fn copy_file(
    src: &dyn Tree,
    dst: &dyn Tree,
    e: &Entry,
    s: &str,
    d: &str,
    transfer: usize,
    progress: &Progress,
) -> Result<Copied, Errno> {
    let r = src.open_read(s)?;
    let w = dst.create(d)?;
    let mut h = Xxh3::new();
    let mut written = 0u64;
    let mut written_end = 0u64;
    let size = each_piece(&*r, transfer.min(e.size.max(1) as usize), |p| {
        match p {
            Piece::Data(b, at) => {
                h.update(b);
                for run in data_runs(b, at) {
                    w.write_at(&b[run.clone()], at + run.start as u64)?;
                    written += run.len() as u64;
                    written_end = at + run.end as u64;
                }
                progress.add(0, b.len() as u64);
            }
            Piece::Hole(n) => {
                hash_zeros(&mut h, n);
                progress.add(0, n);
            }
        }
        Ok(())
    })?;
    if size != e.size {
        // The source changed while it was copied (or a read came up short): the copy
        // does not match what was listed, so it is not done.
        log::warn!("{s}: read {size} bytes, the source listed {}", e.size);
        return Err(Errno::EIO);
    }
    if written_end < size {
        // The file ends in a hole (or is all hole): only the size makes it that long.
        w.set_len(size)?;
    }
    dst.set_meta(d, e.mode, e.mtime_ns)?;
    Ok(Copied {
        checksum: format!("{:016x}", h.digest()),
        holes: size - written,
    })
}

/// The checksum of a file as it is now (holes the reader reports are hashed as zeros
/// without reading them).
fn checksum(t: &dyn Tree, path: &str, transfer: usize) -> Result<(String, u64), Errno> {
    let r = t.open_read(path)?;
    let mut h = Xxh3::new();
    let size = each_piece(&*r, transfer, |p| {
        match p {
            Piece::Data(b, _) => h.update(b),
            Piece::Hole(n) => hash_zeros(&mut h, n),
        }
        Ok(())
    })?;
    Ok((format!("{:016x}", h.digest()), size))
}

/// Runs a stage-in or stage-out. `Err` only when the run cannot start; a run that
/// started returns its [`Summary`], whose `failures` say whether it completed.
pub fn run(o: &Options) -> Result<Summary, StageError> {
    let started = Instant::now();
    let gk = Gkfs(o.client.clone());
    let (src, dst): (&dyn Tree, &dyn Tree) = match o.direction {
        Direction::In => (&Local, &gk),
        Direction::Out => (&gk, &Local),
    };
    let (entries, walk_errors) = src.walk(&o.src).map_err(|errno| StageError::Source {
        path: o.src.clone(),
        errno,
    })?;
    let mut man = Manifest::new(o.direction.name(), &o.src, &o.dst, o.rank, o.nranks);
    let previous = Manifest::load(&o.manifest).filter(|m| m.same_run(&man));
    let dst_exists = dst
        .stat(&o.dst)
        .map_err(|errno| StageError::Destination {
            path: o.dst.clone(),
            errno,
        })?
        .is_some();
    if o.rank == 0 {
        if dst_exists && previous.is_none() && !o.force {
            return Err(StageError::DestinationExists(o.dst.clone()));
        }
    } else if let Some(r0) = &o.rank0_manifest {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !r0.exists() {
            if Instant::now() >= deadline {
                return Err(StageError::Rank0(r0.display().to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let done = previous.map(|m| m.files).unwrap_or_default();
    let p = plan::plan(&entries, o.rank, o.nranks, &done, |rel| {
        dst.stat(&join(&o.dst, rel)).ok().flatten().map(|(s, _)| s)
    });
    for (e, r) in &p.skip {
        man.files.insert(e.rel.clone(), r.clone());
    }
    let save = |m: &Manifest| {
        m.save(&o.manifest).map_err(|err| StageError::Manifest {
            path: o.manifest.display().to_string(),
            err,
        })
    };
    save(&man)?;

    // Entries the walk could not read are failures of this run (each rank reports those
    // it owns).
    let mut failures: Vec<Failure> = walk_errors
        .into_iter()
        .filter(|(rel, _)| plan::owner(rel, o.nranks) == o.rank)
        .map(|(rel, errno)| Failure {
            error: format!("cannot read {}: {errno}", join(&o.src, &rel)),
            path: rel,
        })
        .collect();
    let mut dirs = 0;
    for e in &p.mkdirs {
        let d = join(&o.dst, &e.rel);
        match dst.mkdir(&d) {
            Ok(()) => dirs += 1,
            Err(errno) => {
                // Without the directory nothing below it can be copied.
                failures.push(Failure {
                    path: e.rel.clone(),
                    error: format!("mkdir {d}: {errno}"),
                });
                if fatal(errno) || e.rel.is_empty() {
                    break;
                }
            }
        }
    }

    let total_bytes: u64 = p.copy.iter().map(|e| e.size).sum();
    let bar = (!o.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = Progress {
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        total_files: p.copy.len() as u64,
        total_bytes,
        bar,
    };
    let man = Mutex::new(man);
    let dirty = AtomicBool::new(false);
    let abort = AtomicBool::new(
        failures
            .iter()
            .any(|f| f.error.starts_with("mkdir") && f.path.is_empty()),
    );
    let next = AtomicUsize::new(0);
    let holes = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let fails = Mutex::new(failures);
    let mut copied = 0u64;
    std::thread::scope(|sc| {
        // Saves the manifest every second while files complete; prints progress lines
        // when there is no terminal.
        sc.spawn(|| {
            let mut last_line = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if dirty.swap(false, Ordering::AcqRel) {
                    let m = man.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Err(e) = m.save(&o.manifest) {
                        log::error!("cannot save the manifest {}: {e}", o.manifest.display());
                    }
                }
                if !o.quiet
                    && progress.bar.is_none()
                    && last_line.elapsed() >= Duration::from_secs(5)
                {
                    eprintln!("{}", progress.line(o.direction.name(), started));
                    last_line = Instant::now();
                }
            }
        });
        let workers: Vec<_> = (0..o.jobs.max(1))
            .map(|_| {
                sc.spawn(|| {
                    let mut n = 0u64;
                    loop {
                        if abort.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(e) = p.copy.get(i) else { break };
                        let (s, d) = (join(&o.src, &e.rel), join(&o.dst, &e.rel));
                        let r = match e.kind {
                            Kind::Symlink => {
                                let t = e.target.clone().unwrap_or_default();
                                dst.symlink(&t, &d).map(|_| None)
                            }
                            _ => copy_file(src, dst, e, &s, &d, o.transfer, &progress).map(Some),
                        };
                        let rec = FileRecord {
                            kind: e.kind,
                            size: e.size,
                            mtime_ns: e.mtime_ns,
                            mode: e.mode,
                            checksum: r
                                .as_ref()
                                .ok()
                                .and_then(|c| c.as_ref().map(|c| c.checksum.clone())),
                            status: if r.is_ok() {
                                Status::Done
                            } else {
                                Status::Failed
                            },
                            error: r.as_ref().err().map(|e| e.to_string()),
                        };
                        match r {
                            Ok(c) => {
                                n += 1;
                                holes.fetch_add(c.map_or(0, |c| c.holes), Ordering::Relaxed);
                                progress.add(1, 0);
                            }
                            Err(errno) => {
                                if fatal(errno) {
                                    abort.store(true, Ordering::Relaxed);
                                }
                                fails
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(Failure {
                                        path: e.rel.clone(),
                                        error: format!("{s} -> {d}: {errno}"),
                                    });
                            }
                        }
                        man.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .files
                            .insert(e.rel.clone(), rec);
                        dirty.store(true, Ordering::Release);
                    }
                    n
                })
            })
            .collect();
        for w in workers {
            copied += w.join().unwrap_or(0);
        }
        finished.store(true, Ordering::Relaxed);
    });
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    let mut failures = fails.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut man = man.into_inner().unwrap_or_else(|e| e.into_inner());
    if abort.load(Ordering::Relaxed) {
        // Files never started are not done either: list them, so nobody takes the run
        // for complete.
        for e in p.copy.iter().filter(|e| !man.files.contains_key(&e.rel)) {
            failures.push(Failure {
                path: e.rel.clone(),
                error: "not copied: the run stopped after an earlier error".into(),
            });
        }
    }
    // Directory times last (creating entries inside changed them), deepest first.
    if !abort.load(Ordering::Relaxed) {
        for e in p.dir_meta.iter().rev() {
            if let Err(errno) = dst.set_meta(&join(&o.dst, &e.rel), e.mode, e.mtime_ns) {
                failures.push(Failure {
                    path: e.rel.clone(),
                    error: format!("set mode/mtime: {errno}"),
                });
            }
        }
    }
    if o.verify && !abort.load(Ordering::Relaxed) {
        let recs: BTreeMap<String, FileRecord> = man.files.clone();
        for (rel, r) in recs
            .iter()
            .filter(|(_, r)| r.kind == Kind::File && r.status == Status::Done)
        {
            let d = join(&o.dst, rel);
            let bad = match checksum(dst, &d, o.transfer) {
                Ok((sum, size)) if Some(&sum) == r.checksum.as_ref() && size == r.size => None,
                Ok((sum, size)) => Some(format!(
                    "verify: destination has {size} bytes with checksum {sum}, expected {} bytes with {}",
                    r.size,
                    r.checksum.as_deref().unwrap_or("?")
                )),
                Err(errno) => Some(format!("verify: cannot read {d}: {errno}")),
            };
            if let Some(error) = bad {
                if let Some(m) = man.files.get_mut(rel) {
                    m.status = Status::Failed;
                    m.error = Some(error.clone());
                }
                failures.push(Failure {
                    path: rel.clone(),
                    error,
                });
            }
        }
    }
    man.complete = failures.is_empty();
    save(&man)?;
    Ok(Summary {
        files: copied,
        bytes: progress.bytes.load(Ordering::Relaxed),
        holes: holes.load(Ordering::Relaxed),
        skipped: p.skip.len() as u64,
        dirs,
        seconds: started.elapsed().as_secs_f64(),
        failures,
        manifest: o.manifest.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, MetadataExt};

    use super::*;

    const MIB: u64 = 1 << 20;

    fn quiet_progress() -> Progress {
        Progress {
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_files: 0,
            total_bytes: 0,
            bar: None,
        }
    }

    /// Copies local file `s` to `t` as a stage run does.
    fn copy_local(s: &str, t: &str) -> Result<Copied, Errno> {
        let (entries, _) = Local.walk(s).unwrap();
        copy_file(
            &Local,
            &Local,
            &entries[0],
            s,
            t,
            MIB as usize,
            &quiet_progress(),
        )
    }

    /// Bytes that are never zero, `len` of them.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// Data at an offset.
    type Part = (u64, Vec<u8>);

    /// A file of `size` bytes holding `data` at the given offsets, holes elsewhere.
    fn sparse_file(p: &std::path::Path, size: u64, data: &[Part]) {
        let f = std::fs::File::create(p).unwrap();
        for (at, d) in data {
            f.write_all_at(d, *at).unwrap();
        }
        f.set_len(size).unwrap();
    }

    fn allocated(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).unwrap().blocks() * 512
    }

    /// A reader over memory that reports no holes (as a gkfs file).
    struct Mem(Vec<u8>);

    impl tree::Reader for Mem {
        fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
            let off = (off as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - off);
            buf[..n].copy_from_slice(&self.0[off..off + n]);
            Ok(n)
        }
        fn size(&self) -> Result<u64, Errno> {
            Ok(self.0.len() as u64)
        }
    }

    #[test]
    fn data_runs_skip_zero_blocks_and_keep_small_gaps() {
        let z = ZERO_BLOCK as usize;
        assert!(data_runs(&[0u8; 3 * 4096], 0).is_empty());
        assert!(data_runs(&[], 0).is_empty());
        // Data in the second block only.
        let mut b = vec![0u8; 4 * z];
        b[z + 7] = 1;
        assert_eq!(data_runs(&b, 0), vec![z..2 * z]);
        // Blocks follow the file's offsets, not the buffer's: read at 100, the first
        // block of the buffer is 4096 - 100 bytes long.
        assert_eq!(data_runs(&b, 100), vec![z - 100..2 * z - 100]);
        // A gap below MIN_HOLE between two stretches is written; a larger one is not.
        let mut b = vec![0u8; 64 * z];
        b[0] = 1;
        b[4 * z] = 1;
        b[4 * z + MIN_HOLE as usize + z] = 1;
        assert_eq!(
            data_runs(&b, 0),
            vec![
                0..5 * z,
                4 * z + MIN_HOLE as usize + z..4 * z + MIN_HOLE as usize + 2 * z
            ]
        );
        // A partial last block is data if any of it is.
        let mut b = vec![0u8; z + 10];
        b[z + 9] = 2;
        assert_eq!(data_runs(&b, 0), vec![z..z + 10]);
    }

    #[test]
    fn pieces_of_a_reader_without_holes_cover_the_file_in_order() {
        let data = pattern(3 * 4096 + 5, 1);
        let mut seen = Vec::new();
        let size = each_piece(&Mem(data.clone()), 4096, |p| {
            match p {
                Piece::Data(b, at) => {
                    assert_eq!(at, seen.len() as u64);
                    seen.extend_from_slice(b);
                }
                Piece::Hole(_) => panic!("a reader without holes reported one"),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(seen, data);
    }

    #[test]
    fn local_sparse_file_copies_sparse_with_the_full_checksum() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        let size = 64 * MIB;
        let parts = vec![
            (3 * MIB + 123, pattern(MIB as usize + 4097, 3)),
            (30 * MIB, pattern(2 * MIB as usize, 5)),
            (50 * MIB - 10, pattern(10, 7)),
        ];
        let data_len: u64 = parts.iter().map(|(_, d)| d.len() as u64).sum();
        sparse_file(&src, size, &parts);
        if allocated(&src) > size / 2 {
            gkfs_tests::skip(
                "local_sparse_file_copies_sparse_with_the_full_checksum",
                &format!("{} keeps no holes", d.path().display()),
            );
            return;
        }
        let (s, t) = (src.to_str().unwrap(), dst.to_str().unwrap());
        let c = copy_local(s, t).unwrap();
        let content = std::fs::read(&src).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), content);
        assert_eq!(
            c.checksum,
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&content))
        );
        assert_eq!(checksum(&Local, t, MIB as usize).unwrap().0, c.checksum);
        // Only the data blocks were written (each part adds at most two partial blocks).
        assert!(
            c.holes >= size - data_len - 6 * ZERO_BLOCK,
            "{} holes",
            c.holes
        );
        assert!(
            allocated(&dst) <= data_len + MIB,
            "{} bytes allocated for {data_len} of data",
            allocated(&dst)
        );
    }

    #[test]
    fn all_hole_empty_and_written_zero_files_copy_exactly() {
        let d = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, u64, Vec<Part>)> = vec![
            ("empty", 0, vec![]),
            ("hole", 10 * MIB, vec![]),
            // Zeros written as data: the copy leaves them out too.
            ("zeros", 2 * MIB, vec![(0, vec![0u8; 2 * MIB as usize])]),
            ("tail", 5 * MIB, vec![(5 * MIB - 3, pattern(3, 9))]),
        ];
        for (name, size, parts) in cases {
            let src = d.path().join(name);
            let dst = d.path().join(format!("{name}.out"));
            sparse_file(&src, size, &parts);
            let (s, t) = (src.to_str().unwrap(), dst.to_str().unwrap());
            let c = copy_local(s, t).unwrap();
            let content = std::fs::read(&src).unwrap();
            assert_eq!(std::fs::read(&dst).unwrap(), content, "{name}");
            assert_eq!(
                c.checksum,
                format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&content)),
                "{name}"
            );
            assert!(allocated(&dst) <= 64 * 1024, "{name}: {}", allocated(&dst));
        }
    }

    #[test]
    fn a_source_that_changed_size_is_not_done() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        sparse_file(&src, 4 * MIB, &[(MIB, pattern(100, 1))]);
        let (s, t) = (src.to_str().unwrap(), dst.to_str().unwrap());
        let (mut entries, _) = Local.walk(s).unwrap();
        entries[0].size += 1;
        let r = copy_file(
            &Local,
            &Local,
            &entries[0],
            s,
            t,
            MIB as usize,
            &quiet_progress(),
        );
        assert_eq!(r.err(), Some(Errno::EIO));
    }
}
