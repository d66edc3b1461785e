//! `gkfs-fuzz`: runs the structured mutation loop over the decoders, one worker
//! process per target (so an abort or a hang is caught and its input saved), and
//! prints execs, rate and crashes per target; also writes AFL seeds and replays inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::{Parser, Subcommand};
use gkfs_fuzz::engine::{self, Config, Failure, Report, Slot, HANG_EXIT};
use gkfs_fuzz::targets::{self, Counters, Target};

#[derive(Parser)]
#[command(
    name = "gkfs-fuzz",
    about = "Fuzzes the gkfs decoders (structured mutation loop)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lists the targets.
    List,
    /// Runs targets, one worker process each, and prints a table.
    Run {
        /// Target to run (repeatable); all when none.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Mutated inputs per target.
        #[arg(long, default_value_t = 10_000_000)]
        execs: u64,
        /// Seed of the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for crash inputs, slot files and report.json.
        #[arg(long, default_value = "/tmp/gkfs-fuzz-out")]
        out: PathBuf,
    },
    /// Runs one target in this process (what `run` starts per target).
    Worker {
        #[arg(long)]
        target: String,
        #[arg(long)]
        execs: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        slot: PathBuf,
        #[arg(long)]
        crash_dir: PathBuf,
    },
    /// Writes valid encodings of a target as seed files (for AFL).
    Seeds {
        #[arg(long)]
        target: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 64)]
        count: usize,
        /// Largest seed written, bytes.
        #[arg(long, default_value_t = 4096)]
        max_len: usize,
    },
    /// Runs a target on saved inputs and says what each does.
    Repro {
        #[arg(long)]
        target: String,
        files: Vec<PathBuf>,
    },
}

fn target(name: &str) -> Result<&'static Target, String> {
    targets::find(name).ok_or_else(|| {
        let names: Vec<_> = targets::all().iter().map(|t| t.name).collect();
        format!("unknown target `{name}` (targets: {})", names.join(", "))
    })
}

/// Address space of a worker: a runaway allocation aborts it instead of the machine.
const WORKER_AS_LIMIT: u64 = 4 << 30;

fn worker(
    t: &'static Target,
    execs: u64,
    seed: u64,
    slot: &Path,
    crash_dir: &Path,
) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_AS, WORKER_AS_LIMIT, WORKER_AS_LIMIT)
        .map_err(|e| format!("setrlimit: {e}"))?;
    let mut cfg = Config::new(execs, seed);
    cfg.slot = Some(Slot::create(slot).map_err(|e| format!("{}: {e}", slot.display()))?);
    cfg.crash_dir = Some(crash_dir.to_path_buf());
    cfg.progress = true;
    let report = engine::fuzz(t, cfg);
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Runs one target in worker processes until `execs` inputs have run; a worker that
/// dies (abort, signal, hang) is counted, its input saved, and a new one continues.
fn run_target(t: &'static Target, execs: u64, seed: u64, out: &Path) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let crash_dir = out.join("crashes");
    let slot = out.join(format!("{}.slot", t.name));
    let mut total = Report {
        target: t.name.into(),
        engine: "mutation loop".into(),
        ..Report::default()
    };
    let mut left = execs;
    let mut round = 0u64;
    while left > 0 {
        if round == 20 {
            return Err(format!("{}: 20 workers died; giving up", t.name));
        }
        let started = std::time::Instant::now();
        let child = Command::new(&exe)
            .arg("worker")
            .args(["--target", t.name])
            .args(["--execs", &left.to_string()])
            .args(["--seed", &(seed.wrapping_add(round * 7919)).to_string()])
            .arg("--slot")
            .arg(&slot)
            .arg("--crash-dir")
            .arg(&crash_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if output.status.success() {
            let text = String::from_utf8_lossy(&output.stdout);
            let report: Report = serde_json::from_str(text.trim())
                .map_err(|e| format!("{}: bad worker report: {e}", t.name))?;
            total.merge(&report);
            left = 0;
        } else {
            use std::os::unix::process::ExitStatusExt;
            let (done, input) =
                Slot::read(&slot).map_err(|e| format!("{}: {e}", slot.display()))?;
            let hang = output.status.code() == Some(HANG_EXIT);
            let kind = if hang { "hang" } else { "abort" };
            let how = match (output.status.code(), output.status.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "unknown".into(),
            };
            eprintln!(
                "gkfs-fuzz: {}: worker died ({kind}, {how}) after {done} inputs",
                t.name
            );
            let file = engine::save_input(&crash_dir, t.name, kind, &input);
            let mut r = Report {
                target: t.name.into(),
                execs: done + 1,
                secs: started.elapsed().as_secs_f64(),
                failures: vec![Failure {
                    kind: kind.into(),
                    message: format!("worker died: {how}"),
                    count: 1,
                    file,
                }],
                ..Report::default()
            };
            if hang {
                r.hangs = 1;
            } else {
                r.aborts = 1;
            }
            total.merge(&r);
            left = left.saturating_sub(done + 1);
        }
        round += 1;
    }
    let _ = std::fs::remove_file(&slot);
    Ok(total)
}

fn print_reports(reports: &[Report]) {
    println!(
        "\n{:<10} {:>12} {:>9} {:>11} {:>9} {:>11} {:>8} {:>10} {:>6} {:>7}",
        "target",
        "execs",
        "seconds",
        "execs/s",
        "accepted",
        "round-trips",
        "crashes",
        "rt-fails",
        "hangs",
        "aborts"
    );
    for r in reports {
        println!(
            "{:<10} {:>12} {:>9.1} {:>11.0} {:>8.1}% {:>11} {:>8} {:>10} {:>6} {:>7}",
            r.target,
            r.execs,
            r.secs,
            r.execs as f64 / r.secs.max(1e-9),
            100.0 * r.accepted as f64 / (r.execs + r.roundtrips).max(1) as f64,
            r.roundtrips,
            r.crashes,
            r.roundtrip_failures,
            r.hangs,
            r.aborts
        );
    }
    for r in reports.iter().filter(|r| !r.kinds.is_empty()) {
        println!(
            "\n{}: per message type (reached the decoder / accepted)",
            r.target
        );
        for k in &r.kinds {
            println!("  {:<18} {:>11} {:>11}", k.name, k.reached, k.accepted);
        }
    }
    for r in reports {
        for f in &r.failures {
            println!(
                "\n{} {} x{}: {}{}",
                r.target,
                f.kind,
                f.count,
                f.message,
                f.file
                    .as_ref()
                    .map(|p| format!("\n  input: {p}"))
                    .unwrap_or_default()
            );
        }
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gkfs-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    match Cli::parse().cmd {
        Cmd::List => {
            for t in targets::all() {
                println!(
                    "{:<10} {}",
                    t.name,
                    t.about.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            targets: names,
            execs,
            seed,
            out,
        } => {
            let chosen: Vec<&'static Target> = if names.is_empty() {
                targets::all().iter().collect()
            } else {
                names.iter().map(|n| target(n)).collect::<Result<_, _>>()?
            };
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let mut reports = Vec::new();
            for t in chosen {
                eprintln!("gkfs-fuzz: {}: {execs} inputs (mutation loop)", t.name);
                reports.push(run_target(t, execs, seed, &out)?);
            }
            print_reports(&reports);
            let json = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
            let path = out.join("report.json");
            std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("\nreport: {}", path.display());
            let failed: u64 = reports.iter().map(Report::failed).sum();
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Worker {
            target: name,
            execs,
            seed,
            slot,
            crash_dir,
        } => {
            worker(target(&name)?, execs, seed, &slot, &crash_dir)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Seeds {
            target: name,
            out,
            count,
            max_len,
        } => {
            let t = target(&name)?;
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let mut rng = gkfs_fuzz::rng::Rng::new(1);
            let mut c = Counters::new((t.kinds)().len());
            let mut written = 0;
            let mut tries = 0;
            while written < count && tries < count * 100 {
                tries += 1;
                let seed =
                    engine::guarded(|| (t.valid)(&mut rng, &mut c)).map_err(|(site, msg)| {
                        format!("{name}: a valid value failed its round trip at {site}: {msg}")
                    })?;
                if seed.len() <= max_len {
                    let p = out.join(format!("seed-{written:04}"));
                    std::fs::write(&p, seed).map_err(|e| format!("{}: {e}", p.display()))?;
                    written += 1;
                }
            }
            println!("{written} seeds in {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Repro {
            target: name,
            files,
        } => {
            let t = target(&name)?;
            let mut bad = 0;
            for f in files {
                let data = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                let mut c = Counters::new((t.kinds)().len());
                match engine::guarded(|| (t.run)(&data, &mut c)) {
                    Ok(()) => println!(
                        "{}: ok ({})",
                        f.display(),
                        if c.accepted > 0 {
                            "accepted"
                        } else {
                            "rejected"
                        }
                    ),
                    Err((site, msg)) => {
                        bad += 1;
                        println!("{}: PANIC at {site}: {msg}", f.display());
                    }
                }
            }
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
