//! gkfs-stage-bench: stage-in and stage-out throughput against `cp -r` between two
//! local directories, in the same run (medians of repeated runs, min and max):
//! large files (MB/s) and 10 000 small files (files/s).
//!
//! Starts its own 2 daemons; every tree lives under $TMPDIR (the README runs it with
//! TMPDIR=/dev/shm, so "local" is a RAM disk and the comparison is CPU-bound).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use gkfs_tests::{bin, Cluster};
use rand::{RngCore, SeedableRng};

/// Measures stage-in / stage-out against cp -r.
#[derive(Parser)]
struct Opts {
    /// Runs per measurement.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Large files and their size in MiB.
    #[arg(long, default_value_t = 4)]
    big_files: usize,
    /// Size of each large file, MiB.
    #[arg(long, default_value_t = 256)]
    big_mib: usize,
    /// Small files.
    #[arg(long, default_value_t = 10_000)]
    small_files: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn med(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn timed(mut c: Command) -> f64 {
    let t = Instant::now();
    let o = c.output().expect("run");
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn main() {
    let o = Opts::parse();
    let cluster = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let big = w.path().join("big");
    let small = w.path().join("small");
    std::fs::create_dir_all(&big).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..o.big_files {
        let mut f = std::fs::File::create(big.join(format!("b{i}"))).unwrap();
        for _ in 0..o.big_mib {
            rng.fill_bytes(&mut buf);
            std::io::Write::write_all(&mut f, &buf).unwrap();
        }
    }
    for i in 0..o.small_files {
        let d = small.join(format!("d{}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        let mut data = vec![0u8; 512 + (rng.next_u32() % 2048) as usize];
        rng.fill_bytes(&mut data);
        std::fs::write(d.join(format!("f{i}")), data).unwrap();
    }
    let big_mb = (o.big_files * o.big_mib) as f64 * 1.048_576;
    let gk = |sub: &str| format!("{}/{sub}", cluster.mountdir);
    let run = |args: Vec<String>| {
        let mut c = Command::new(bin("gkfs-run"));
        c.args(args)
            .env("LIBGKFS_HOSTS_FILE", &cluster.hosts_file)
            .current_dir(w.path());
        timed(c)
    };
    let cp = |from: &Path, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        let mut c = Command::new("cp");
        c.arg("-r").arg(from).arg(to);
        timed(c)
    };
    let s = |p: &Path| p.display().to_string();
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for (name, tree, unit, amount) in [
        ("large files", &big, "MB/s", big_mb),
        ("small files", &small, "files/s", o.small_files as f64),
    ] {
        let (mut raw, mut sin, mut sout) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..o.repeats {
            let dst = w.path().join("cp-copy");
            raw.push(amount / cp(tree, &dst));
            let _ = std::fs::remove_dir_all(&dst);
            let sub = format!("{name}-{r}").replace(' ', "-");
            sin.push(amount / run(vec!["stage-in".into(), s(tree), gk(&sub), "-q".into()]));
            let out = w.path().join(format!("out-{sub}"));
            sout.push(amount / run(vec!["stage-out".into(), gk(&sub), s(&out), "-q".into()]));
            let _ = std::fs::remove_dir_all(&out);
            for m in std::fs::read_dir(w.path()).unwrap().flatten() {
                if m.file_name().to_string_lossy().ends_with(".manifest.json") {
                    let _ = std::fs::remove_file(m.path());
                }
            }
        }
        let raw = med(raw);
        for (what, v) in [("stage-in", med(sin)), ("stage-out", med(sout))] {
            rows.push(format!(
                "| {name} | {what} | {:.0} | {:.0} | {:.0}% | {unit} (gkfs min {:.0} max {:.0}) |",
                v.0,
                raw.0,
                100.0 * v.0 / raw.0,
                v.1,
                v.2
            ));
            json.push(serde_json::json!({"tree": name, "op": what, "unit": unit,
                "gkfs": {"median": v.0, "min": v.1, "max": v.2},
                "cp_r": {"median": raw.0, "min": raw.1, "max": raw.2}}));
        }
    }
    println!(
        "{} large files of {} MiB, {} small files; medians of {} runs; 2 daemons on this host",
        o.big_files, o.big_mib, o.small_files, o.repeats
    );
    println!("| tree | operation | gkfs | cp -r local->local | ratio | unit |");
    println!("|---|---|---:|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
    if let Some(p) = o.json {
        std::fs::write(p, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}
