//! `gkfs-run stage-in` / `stage-out`: argument handling around `gkfs_stage::run`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gkfs_client::{Client, ClientConfig};
use gkfs_stage::{Direction, Options};

/// Options shared by stage-in and stage-out.
#[derive(clap::Args, Debug)]
pub struct StageArgs {
    /// Hosts file of the instance (default: $LIBGKFS_HOSTS_FILE).
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// Files copied in parallel (default: 4 per core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Re-read every copied file and compare its checksum.
    #[arg(long)]
    pub verify: bool,
    /// Copy even if the destination exists.
    #[arg(long)]
    pub force: bool,
    /// This copy's rank (default: $SLURM_PROCID, else 0).
    #[arg(long, value_name = "I")]
    pub rank: Option<u32>,
    /// Number of cooperating copies (default: $SLURM_NTASKS, else 1).
    #[arg(long, value_name = "N")]
    pub nranks: Option<u32>,
    /// Manifest file (default: gkfs-stage-<in|out>-<id>.manifest.json in the current
    /// directory, the id derived from source and destination; with several ranks each
    /// writes FILE.rank<I>, and ranks > 0 start once rank 0's exists).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Print a JSON summary (files, bytes, seconds, failures) on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Bytes per read/write call.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub transfer: usize,
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.parse().ok()
}

/// Runs a stage command; returns the process exit code.
pub fn stage(direction: Direction, src: &str, dst: &str, a: StageArgs) -> Result<i32> {
    let hosts_file = crate::hosts_file_arg(a.hosts_file)?;
    let client = Client::new(&ClientConfig::new(&hosts_file))
        .with_context(|| format!("cannot use the file system of {}", hosts_file.display()))?;
    let mount = client.mountdir().to_string();
    let in_gkfs = |p: &str, what: &str| -> Result<String> {
        let abs = std::path::absolute(p)?.display().to_string();
        let inside = client.fs_path(&abs).with_context(|| {
            format!("{what} {p} is not under the mount dir {mount} of this file system")
        })?;
        Ok(if inside == "/" {
            mount.clone()
        } else {
            format!("{mount}{inside}")
        })
    };
    let real = |p: &str| -> Result<String> { Ok(std::path::absolute(p)?.display().to_string()) };
    let (s, d) = match direction {
        Direction::In => (real(src)?, in_gkfs(dst, "the destination")?),
        Direction::Out => (in_gkfs(src, "the source")?, real(dst)?),
    };
    let rank = a.rank.or_else(|| env_u32("SLURM_PROCID")).unwrap_or(0);
    let nranks = a.nranks.or_else(|| env_u32("SLURM_NTASKS")).unwrap_or(1);
    if nranks == 0 || rank >= nranks {
        bail!("--rank {rank} is not below --nranks {nranks}");
    }
    let name = match direction {
        Direction::In => "in",
        Direction::Out => "out",
    };
    // One default manifest per (direction, source, destination), so different runs
    // started from the same directory never share one.
    let id = xxhash_rust::xxh64::xxh64(format!("{name}\0{s}\0{d}").as_bytes(), 0) as u32;
    // With several ranks each has its own manifest: FILE.rank<I>.
    let base = a
        .manifest
        .unwrap_or_else(|| PathBuf::from(format!("gkfs-stage-{name}-{id:08x}.manifest.json")));
    let for_rank = |r: u32| {
        let mut p = base.clone().into_os_string();
        p.push(format!(".rank{r}"));
        PathBuf::from(p)
    };
    let manifest = if nranks > 1 {
        for_rank(rank)
    } else {
        base.clone()
    };
    let rank0_manifest = (nranks > 1 && rank > 0).then(|| for_rank(0));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let opts = Options {
        direction,
        src: s,
        dst: d,
        client,
        jobs: a.jobs.unwrap_or(4 * cores).max(1),
        verify: a.verify,
        force: a.force,
        rank,
        nranks,
        manifest: manifest.clone(),
        rank0_manifest,
        quiet: a.quiet,
        transfer: a.transfer.clamp(4096, 1 << 30),
    };
    let sum = gkfs_stage::run(&opts)?;
    crate::summary::record_stage(
        &hosts_file,
        &crate::summary::StageFigures {
            direction: name.into(),
            src: opts.src.clone(),
            dst: opts.dst.clone(),
            files: sum.files,
            bytes: sum.bytes,
            seconds: sum.seconds,
            failures: sum.failures.len() as u64,
        },
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&sum)?);
    } else if !a.quiet {
        eprintln!(
            "stage-{name}: {} files, {:.1} MiB in {:.2} s ({:.1} MiB/s), {} already done, {} dirs; manifest {}",
            sum.files,
            sum.bytes as f64 / 1048576.0,
            sum.seconds,
            sum.bytes as f64 / 1048576.0 / sum.seconds.max(1e-6),
            sum.skipped,
            sum.dirs,
            Path::new(&sum.manifest).display()
        );
    }
    if sum.failures.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "stage-{name}: FAILED: {} entries were not copied completely:",
        sum.failures.len()
    );
    for f in sum.failures.iter().take(50) {
        eprintln!(
            "  {}: {}",
            if f.path.is_empty() { "." } else { &f.path },
            f.error
        );
    }
    if sum.failures.len() > 50 {
        eprintln!(
            "  ... and {} more (all are in the manifest)",
            sum.failures.len() - 50
        );
    }
    Ok(1)
}
