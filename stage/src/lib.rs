//! Parallel stage-in / stage-out between a parallel file system and gkfs, over the
//! client API (no preload).
//!
//! A run walks the source ([`tree`]), lets the pure [`plan`]ner pick this rank's
//! entries and skip those a previous run completed, copies files with `jobs` workers in
//! large transfers (each spreads over every daemon holding the file's chunks), computes
//! an XXH3-64 checksum of every file while reading it, keeps modes, mtimes, empty
//! directories and symlinks, and records everything in a JSON [`manifest`] that is
//! rewritten atomically as it goes. A run succeeds only if every owned entry was copied
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
    /// Bytes copied.
    pub bytes: u64,
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

/// Reads `r` from the start in blocks of `transfer` bytes, handing each block and its
/// offset to `f`; returns the bytes read.
fn each_block(
    r: &dyn tree::Reader,
    transfer: usize,
    mut f: impl FnMut(&[u8], u64) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let mut buf = vec![0u8; transfer.max(1)];
    let mut off = 0u64;
    loop {
        let n = r.read_at(&mut buf, off)?;
        if n == 0 {
            return Ok(off);
        }
        f(&buf[..n], off)?;
        off += n as u64;
    }
}

/// Copies one file; returns its checksum.
fn copy_file(
    src: &dyn Tree,
    dst: &dyn Tree,
    e: &Entry,
    s: &str,
    d: &str,
    transfer: usize,
    progress: &Progress,
) -> Result<String, Errno> {
    let r = src.open_read(s)?;
    let w = dst.create(d)?;
    let mut h = Xxh3::new();
    let off = each_block(&*r, transfer.min(e.size.max(1) as usize), |b, at| {
        h.update(b);
        w.write_at(b, at)?;
        progress.add(0, b.len() as u64);
        Ok(())
    })?;
    if off != e.size {
        // The source changed while it was copied (or a read came up short): the copy
        // does not match what was listed, so it is not done.
        log::warn!("{s}: read {off} bytes, the source listed {}", e.size);
        return Err(Errno::EIO);
    }
    dst.set_meta(d, e.mode, e.mtime_ns)?;
    Ok(format!("{:016x}", h.digest()))
}

/// The checksum of a file as it is now.
fn checksum(t: &dyn Tree, path: &str, transfer: usize) -> Result<(String, u64), Errno> {
    let r = t.open_read(path)?;
    let mut h = Xxh3::new();
    let size = each_block(&*r, transfer, |b, _| {
        h.update(b);
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
                            checksum: r.as_ref().ok().cloned().flatten(),
                            status: if r.is_ok() {
                                Status::Done
                            } else {
                                Status::Failed
                            },
                            error: r.as_ref().err().map(|e| e.to_string()),
                        };
                        match r {
                            Ok(_) => {
                                n += 1;
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
        skipped: p.skip.len() as u64,
        dirs,
        seconds: started.elapsed().as_secs_f64(),
        failures,
        manifest: o.manifest.display().to_string(),
    })
}
