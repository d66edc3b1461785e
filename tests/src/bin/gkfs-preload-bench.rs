//! gkfs-preload-bench: what the preload library costs a process, measured against the
//! same work without it, in the same run (medians of repeated runs, min and max):
//! - start-up: wall time of `stat` on a gkfs path through the preload versus `stat` on
//!   a local file without it, and of `/bin/true` with and without the preload;
//! - dd of 256 MiB with bs=1M, write and read, on gkfs versus on a local directory
//!   (the README runs this with TMPDIR=/dev/shm, a RAM disk);
//! - resident memory the library adds to a shell that has read a gkfs file.
//!
//! Starts its own 2 daemons (root dirs under $TMPDIR).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use gkfs_tests::{bin_dir, Cluster};

/// Measures the cost of the preload library.
#[derive(Parser)]
struct Opts {
    /// Runs per measurement.
    #[arg(long, default_value_t = 21)]
    repeats: usize,
    /// MiB for the dd runs.
    #[arg(long, default_value_t = 256)]
    dd_mib: u64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

struct Env<'a> {
    lib: PathBuf,
    cluster: &'a Cluster,
}

impl Env<'_> {
    fn cmd(&self, prog: &str, preload: bool) -> Command {
        let mut c = Command::new(prog);
        c.env_remove("LD_PRELOAD");
        if preload {
            c.env("LD_PRELOAD", &self.lib)
                .env("LIBGKFS_HOSTS_FILE", &self.cluster.hosts_file);
        }
        c
    }
}

/// Wall time in ms of running `c` to completion (must succeed).
fn time(c: &mut Command) -> f64 {
    let t = Instant::now();
    let out = c.output().expect("run");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

fn timed(n: usize, mut f: impl FnMut() -> f64) -> Stats {
    f();
    stats((0..n).map(|_| f()).collect())
}

fn row(name: &str, gk: &Stats, raw: &Stats, unit: &str, json: &mut Vec<serde_json::Value>) {
    println!(
        "{name:<34} {:>10.2} {:>10.2} {:>8.2}x   {unit} (gkfs min {:.2} max {:.2}; raw min {:.2} max {:.2})",
        gk.median,
        raw.median,
        gk.median / raw.median,
        gk.min,
        gk.max,
        raw.min,
        raw.max
    );
    json.push(serde_json::json!({
        "name": name, "unit": unit,
        "gkfs": {"median": gk.median, "min": gk.min, "max": gk.max},
        "raw": {"median": raw.median, "min": raw.min, "max": raw.max},
    }));
}

fn dd_mbps(e: &Env, args: &[String], preload: bool, mib: u64) -> f64 {
    let ms = time(e.cmd("dd", preload).args(args).arg("status=none"));
    mib as f64 / (ms / 1e3) * 1.048_576
}

fn rss_kib(e: &Env, file: &Path, preload: bool) -> f64 {
    let script = format!(
        "read -r x < '{}'; while IFS= read -r l; do case $l in VmRSS*) echo ${{l//[^0-9]/}};; esac; done < /proc/$$/status",
        file.display()
    );
    let out = e
        .cmd("bash", preload)
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

fn main() {
    let o = Opts::parse();
    let lib = bin_dir().join("libgkfs_client.so");
    assert!(
        lib.is_file(),
        "build the preload library first: cargo build --release --workspace"
    );
    let cluster = Cluster::start(2);
    let e = Env {
        lib,
        cluster: &cluster,
    };
    let local = tempfile::tempdir().unwrap();
    let lfile = local.path().join("f");
    std::fs::write(&lfile, b"x\n").unwrap();
    let gdir = format!("{}/bench", cluster.mountdir);
    let gfile = format!("{gdir}/f");
    let st = e
        .cmd("bash", true)
        .arg("-c")
        .arg(format!("mkdir {gdir} && echo x > {gfile}"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut json = Vec::new();
    println!(
        "{:<34} {:>10} {:>10} {:>9}   (medians of {} runs; 2 daemons on this host)",
        "", "gkfs", "raw", "ratio", o.repeats
    );
    let gk = timed(o.repeats, || {
        time(e.cmd("stat", true).args(["-c", "%s", &gfile]))
    });
    let raw = timed(o.repeats, || {
        time(e.cmd("stat", false).args(["-c", "%s"]).arg(&lfile))
    });
    row("stat as first operation (ms)", &gk, &raw, "ms", &mut json);
    let gk = timed(o.repeats, || time(&mut e.cmd("/bin/true", true)));
    let raw = timed(o.repeats, || time(&mut e.cmd("/bin/true", false)));
    row("process not touching gkfs (ms)", &gk, &raw, "ms", &mut json);
    let n = o.repeats.min(7);
    let mib = o.dd_mib;
    let gout = format!("{gdir}/dd");
    let lout = local.path().join("dd").display().to_string();
    let w = |of: &str| {
        vec![
            "if=/dev/zero".into(),
            format!("of={of}"),
            "bs=1M".into(),
            format!("count={mib}"),
        ]
    };
    let r = |inf: &str| vec![format!("if={inf}"), "of=/dev/null".into(), "bs=1M".into()];
    let gk = timed(n, || dd_mbps(&e, &w(&gout), true, mib));
    let raw = timed(n, || dd_mbps(&e, &w(&lout), false, mib));
    row(
        &format!("dd write {mib} MiB bs=1M (MB/s)"),
        &gk,
        &raw,
        "MB/s",
        &mut json,
    );
    let gk = timed(n, || dd_mbps(&e, &r(&gout), true, mib));
    let raw = timed(n, || dd_mbps(&e, &r(&lout), false, mib));
    row(
        &format!("dd read {mib} MiB bs=1M (MB/s)"),
        &gk,
        &raw,
        "MB/s",
        &mut json,
    );
    let gk = timed(5, || rss_kib(&e, Path::new(&gfile), true) / 1024.0);
    let raw = timed(5, || rss_kib(&e, &lfile, false) / 1024.0);
    row(
        "RSS of bash after reading a file (MiB)",
        &gk,
        &raw,
        "MiB",
        &mut json,
    );
    println!(
        "extra RSS from the library: {:.1} MiB",
        gk.median - raw.median
    );
    if let Some(p) = o.json {
        std::fs::write(p, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}
