//! gkfs-meta-load: a metadata load through plain system calls, for the benchmark harness
//! (run under the preload library for gkfs, or on a local directory).
//!
//!     gkfs-meta-load create|stat|remove DIR N
//!
//! creates (`open(O_CREAT|O_WRONLY|O_TRUNC)` + `close`), stats or removes `DIR/f0 ..
//! DIR/f<N-1>` and prints the operations per second (timed after a first stat of DIR).
//! fio's filecreate/filestat/filedelete engines spend most of their CPU in fio itself
//! (its clock and I/O-unit bookkeeping: ~60% of the samples of a 4-process create run
//! here), which caps them far below what the file system does; this loop measures the
//! file system.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Create,
    Stat,
    Remove,
}

/// Creates, stats or removes N files in DIR and prints ops/s.
#[derive(Parser)]
struct Opts {
    /// What to do to every file.
    op: Op,
    /// Directory of the files (must exist).
    dir: PathBuf,
    /// Number of files.
    n: usize,
}

fn main() {
    let o = Opts::parse();
    // Not timed: the process's first call on the file system, which connects (a
    // GekkoFS client connects before main; gkfs at its first call).
    if let Err(e) = std::fs::metadata(&o.dir) {
        eprintln!("gkfs-meta-load: {}: {e}", o.dir.display());
        std::process::exit(1);
    }
    let t = Instant::now();
    for i in 0..o.n {
        let p = o.dir.join(format!("f{i}"));
        let r = match o.op {
            Op::Create => std::fs::File::create(&p).map(drop),
            Op::Stat => std::fs::metadata(&p).map(drop),
            Op::Remove => std::fs::remove_file(&p),
        };
        if let Err(e) = r {
            eprintln!("gkfs-meta-load: {}: {e}", p.display());
            std::process::exit(1);
        }
    }
    println!("{:.0}", o.n as f64 / t.elapsed().as_secs_f64());
}
