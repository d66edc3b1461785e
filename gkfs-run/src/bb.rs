//! gkfs as a Slurm burst buffer (`BurstBufferType=burst_buffer/lua`,
//! share/slurm/burst_buffer.lua): the `#BB_LUA gkfs ...` directives of a job, parsed
//! once here for every side:
//!
//! - at submit, on the controller, the lua script's `slurm_bb_job_process` runs
//!   `gkfs-run burst-buffer check SCRIPT`: a bad directive refuses the job with a
//!   message naming it;
//! - on the nodes, `gkfs-run prolog|epilog --burst-buffer` reads the job's directives
//!   from slurmctld (`scontrol show job`: the Prolog gets nothing else) and runs the job
//!   as a `--gkfs` job with those settings; the first node's epilog leaves the
//!   stage-out's outcome in the job's work dir (`gkfs-<jobid>.stage-out`);
//! - the lua script's `slurm_bb_data_out` runs `gkfs-run burst-buffer wait-stage-out
//!   JOBID`, which waits for that outcome: a failed stage-out fails the job's
//!   burst-buffer stage-out, which Slurm shows as the job's reason.
//!
//! Directives (only the leading comment lines of a script count, as Slurm reads them):
//!
//! ```text
//! #BB_LUA gkfs mountdir=/tmp/gkfs pool=gkfs capacity=100G
//! #BB_LUA gkfs stage_in=/pfs/in:/tmp/gkfs/in
//! #BB_LUA gkfs stage_out=/tmp/gkfs/out:/pfs/out
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gkfs_proto::stage_list::{check_stage_list, Way};

/// The directive prefix (Slurm's `Directive=` default for burst_buffer/lua).
pub const DIRECTIVE: &str = "#BB_LUA";
/// The word after it that makes a directive ours.
const OURS: &str = "gkfs";
/// Keys a gkfs directive may carry.
const KEYS: &str = "mountdir, stage_in, stage_out, pool, capacity";

/// A job's gkfs directives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    /// Mount dir (default: the site's).
    pub mountdir: Option<String>,
    /// `SRC:DST,...` into gkfs (PFS side as written; relative to the job's work dir).
    pub stage_in: Vec<String>,
    /// `SRC:DST,...` out of gkfs.
    pub stage_out: Vec<String>,
    /// Pool named (Slurm accounts `capacity` in it).
    pub pool: Option<String>,
    /// Capacity asked for, bytes.
    pub capacity: Option<u64>,
}

impl Directives {
    /// The mount dir these directives give, or `default`.
    pub fn mountdir_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.mountdir.as_deref().unwrap_or(default)
    }

    /// The stage-in list as `--stage-in` takes it (None: no stage-in).
    pub fn stage_in_list(&self) -> Option<String> {
        (!self.stage_in.is_empty()).then(|| self.stage_in.join(","))
    }

    /// The stage-out list as `--stage-out` takes it.
    pub fn stage_out_list(&self) -> Option<String> {
        (!self.stage_out.is_empty()).then(|| self.stage_out.join(","))
    }
}

/// A size as Slurm writes it: plain bytes, K/M/G/T/P (also KiB...) powers of 1024,
/// KB/MB/GB/TB/PB powers of 1000.
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let unit = unit.to_ascii_uppercase();
    let (base, power) = match unit.as_str() {
        "" => (1, 0),
        u => {
            let p = "KMGTP".find(u.chars().next()?)? as u32 + 1;
            match &u[1..] {
                "" | "IB" => (1024u64, p),
                "B" => (1000u64, p),
                _ => return None,
            }
        }
    };
    n.checked_mul(base.checked_pow(power)?)
}

/// Parses the directives in `text` (the lines of a job's burst buffer request, or a
/// whole batch script: only its leading `#` lines count). `Ok(None)`: no gkfs
/// directive. A `#BB_LUA` line that is not gkfs's, or a bad gkfs one, is an error
/// naming the line. Stage lists are checked against the mount dir (`default_mountdir`
/// unless a directive names one).
pub fn parse(text: &str, default_mountdir: &str) -> Result<Option<Directives>, String> {
    let mut d = Directives::default();
    let mut any = false;
    let mut stage = Vec::new();
    let mut first = true;
    for line in text.lines() {
        let line = line.trim_end();
        if first && line.starts_with("#!") {
            first = false;
            continue;
        }
        first = false;
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            break; // Slurm reads directives up to the first command.
        }
        let Some(rest) = line.strip_prefix(DIRECTIVE) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        if words.next() != Some(OURS) {
            return Err(format!(
                "{line:?}: not a gkfs directive (write `{DIRECTIVE} {OURS} key=value ...`; keys: {KEYS})"
            ));
        }
        any = true;
        for w in words {
            let (k, v) = w
                .split_once('=')
                .filter(|(_, v)| !v.is_empty())
                .ok_or_else(|| format!("{line:?}: {w:?} is not key=value (keys: {KEYS})"))?;
            match k {
                "mountdir" => {
                    let m = v.trim_end_matches('/');
                    if !m.starts_with('/') || m.is_empty() {
                        return Err(format!(
                            "{line:?}: mountdir={v} must be an absolute path other than /"
                        ));
                    }
                    if d.mountdir.as_deref().is_some_and(|o| o != m) {
                        return Err(format!("{line:?}: a second, different mountdir"));
                    }
                    d.mountdir = Some(m.to_string());
                }
                "stage_in" => stage.push((Way::In, v.to_string(), line.to_string())),
                "stage_out" => stage.push((Way::Out, v.to_string(), line.to_string())),
                "pool" => d.pool = Some(v.to_string()),
                "capacity" => {
                    d.capacity = Some(parse_size(v).filter(|&n| n > 0).ok_or_else(|| {
                        format!("{line:?}: capacity={v} is not a size (e.g. 500G, 2T, 10GB)")
                    })?)
                }
                _ => return Err(format!("{line:?}: unknown key {k:?} (keys: {KEYS})")),
            }
        }
    }
    if !any {
        return Ok(None);
    }
    if d.capacity.is_some() && d.pool.is_none() {
        return Err(format!(
            "{DIRECTIVE} {OURS} capacity= needs pool= too (Slurm accounts capacity in a pool; ask your site for its name)"
        ));
    }
    let mountdir = d.mountdir_or(default_mountdir).to_string();
    for (way, list, line) in stage {
        // The PFS side stays as written (relative: to the job's work dir, resolved on
        // the nodes); "/" stands in for the work dir only to check the list here.
        let opt = format!("{line:?}");
        check_stage_list(&list, way, &mountdir, Path::new("/"), &opt)?;
        match way {
            Way::In => d.stage_in.push(list),
            Way::Out => d.stage_out.push(list),
        }
    }
    Ok(Some(d))
}

/// The `BurstBuffer=` field of `scontrol -o show job` (the directive lines, which keep
/// their newlines even with -o).
pub fn from_scontrol(text: &str) -> Option<&str> {
    let start = text.find(" BurstBuffer=")? + " BurstBuffer=".len();
    let rest = &text[start..];
    let end = rest.find(" BurstBufferState=").unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The gkfs directives of job `id`, from slurmctld (None: it has none).
pub fn of_job(id: u64, default_mountdir: &str) -> Result<Option<Directives>> {
    let text = crate::slurm::scontrol(&["-o", "show", "job", &id.to_string()])?;
    let Some(bb) = from_scontrol(&text) else {
        return Ok(None);
    };
    parse(bb, default_mountdir).map_err(|e| anyhow::anyhow!("job {id}: {e}"))
}

/// The file, in the job's work dir, where the first node's epilog leaves the outcome
/// of a burst-buffer job's stage-out for `wait-stage-out` (Slurm takes no updates of a
/// job that has ended, so the job record cannot carry it).
pub fn outcome_file(work_dir: &str, id: u64) -> std::path::PathBuf {
    Path::new(work_dir).join(format!("gkfs-{id}.stage-out"))
}

/// The text of an outcome file.
pub fn outcome_text(outcome: &Result<()>) -> String {
    match outcome {
        Ok(()) => "ok\n".into(),
        Err(e) => format!("FAILED: {}\n", format!("{e:#}").replace('\n', " / ")),
    }
}

/// The outcome an outcome file's text says (None: not written yet, or cut short).
fn outcome_in(text: &str) -> Option<Result<(), String>> {
    let line = text.strip_suffix('\n')?;
    if line == "ok" {
        return Some(Ok(()));
    }
    Some(Err(line
        .strip_prefix("FAILED: ")
        .unwrap_or(line)
        .to_string()))
}

/// A field of `scontrol -o show job` output (up to the next space).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!(" {key}="))? + key.len() + 2;
    text[start..].split_whitespace().next()
}

/// `gkfs-run burst-buffer wait-stage-out JOBID`: waits until the first node's epilog
/// has left the job's stage-out outcome in its work dir (at once if the job stages
/// nothing out). Where the controller cannot see the work dir, it says so and succeeds:
/// the failure is then reported in the job's output file only.
pub fn wait_stage_out(id: u64, timeout: Duration, default_mountdir: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let text = crate::slurm::scontrol(&["-o", "show", "job", &id.to_string()])?;
    let directives = match from_scontrol(&text) {
        Some(bb) => parse(bb, default_mountdir).map_err(|e| anyhow::anyhow!("job {id}: {e}"))?,
        None => None,
    };
    if directives.is_none_or(|d| d.stage_out.is_empty()) {
        return Ok(());
    }
    let work = field(&text, "WorkDir").context("scontrol shows no WorkDir")?;
    if !Path::new(work).is_dir() {
        eprintln!(
            "gkfs: job {id}: its work dir {work} is not visible here: the stage-out outcome is in the job's output file only"
        );
        return Ok(());
    }
    let file = outcome_file(work, id);
    loop {
        if let Some(outcome) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| outcome_in(&t))
        {
            let _ = std::fs::remove_file(&file);
            return outcome
                .map_err(|msg| anyhow::anyhow!("gkfs stage-out of job {id} failed: {msg}"));
        }
        if Instant::now() >= deadline {
            bail!(
                "no stage-out outcome ({}) from job {id}'s first node within {} s (see slurmd's log there)",
                file.display(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `gkfs-run burst-buffer check SCRIPT`: exit 0 and, for a gkfs job, `mountdir=DIR` on
/// stdout; exit 1 with the reason for a bad directive.
pub fn check(script: &Path, default_mountdir: &str) -> Result<()> {
    let text = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read the job script {}", script.display()))?;
    match parse(&text, default_mountdir) {
        Ok(Some(d)) => {
            println!("mountdir={}", d.mountdir_or(default_mountdir));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => bail!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_slurm_writes_them() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("3gb"), Some(3_000_000_000));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("10X"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999P"), None);
    }

    #[test]
    fn directives_of_a_script() {
        let script = "#!/bin/bash\n#SBATCH -N2\n#BB_LUA gkfs mountdir=/scratch/ pool=gkfs capacity=10G\n\
                      #BB_LUA gkfs stage_in=in:/scratch/in,/d/x:/scratch\n#BB_LUA gkfs stage_out=/scratch/out:/pfs/out\n\
                      srun ./app\n#BB_LUA gkfs bogus=1\n";
        let d = parse(script, "/tmp/gkfs").unwrap().unwrap();
        assert_eq!(d.mountdir.as_deref(), Some("/scratch"));
        assert_eq!(d.capacity, Some(10 << 30));
        assert_eq!(d.pool.as_deref(), Some("gkfs"));
        assert_eq!(
            d.stage_in_list().as_deref(),
            Some("in:/scratch/in,/d/x:/scratch")
        );
        assert_eq!(d.stage_out_list().as_deref(), Some("/scratch/out:/pfs/out"));
        assert_eq!(
            parse("#!/bin/sh\n#SBATCH -N1\necho\n", "/tmp/gkfs"),
            Ok(None)
        );
        assert_eq!(
            parse("#BB_LUA gkfs\n", "/tmp/gkfs"),
            Ok(Some(Directives::default()))
        );
    }

    #[test]
    fn bad_directives_are_named() {
        let err = |s: &str| parse(s, "/tmp/gkfs").unwrap_err();
        assert!(err("#BB_LUA gkfs stagein=a:b").contains("unknown key \"stagein\""));
        assert!(err("#BB_LUA gkfs stagein=a:b").contains("#BB_LUA gkfs stagein=a:b"));
        assert!(err("#BB_LUA other x=1").contains("not a gkfs directive"));
        assert!(err("#BB_LUA gkfs mountdir=rel").contains("absolute"));
        assert!(err("#BB_LUA gkfs stage_in=/pfs/in:/elsewhere").contains("not under"));
        assert!(err("#BB_LUA gkfs stage_out=/pfs/in").contains("not SRC:DST"));
        assert!(err("#BB_LUA gkfs capacity=10G").contains("pool="));
        assert!(err("#BB_LUA gkfs pool=gkfs capacity=lots").contains("not a size"));
        assert!(err("#BB_LUA gkfs nokey").contains("not key=value"));
        // The mount dir a directive names is what stage lists are checked against.
        assert!(parse(
            "#BB_LUA gkfs stage_in=/a:/s/in\n#BB_LUA gkfs mountdir=/s",
            "/tmp/gkfs"
        )
        .is_ok());
    }

    #[test]
    fn scontrol_fields_and_outcomes() {
        let text = "JobId=7 JobName=j UserId=nobody(65534) WorkDir=/home/u/run BurstBuffer=#BB_LUA gkfs stage_out=/tmp/gkfs/o:/pfs/ro\n#BB_LUA gkfs mountdir=/tmp/gkfs BurstBufferState=staged-in\n";
        assert_eq!(
            from_scontrol(text),
            Some("#BB_LUA gkfs stage_out=/tmp/gkfs/o:/pfs/ro\n#BB_LUA gkfs mountdir=/tmp/gkfs")
        );
        assert_eq!(field(text, "WorkDir"), Some("/home/u/run"));
        assert_eq!(from_scontrol("JobId=7 JobName=j"), None);
        let failed = outcome_text(&Err(anyhow::anyhow!(
            "stage-out failed:\nPermission denied"
        )));
        assert_eq!(
            outcome_in(&failed),
            Some(Err("stage-out failed: / Permission denied".into()))
        );
        assert_eq!(outcome_in(&outcome_text(&Ok(()))), Some(Ok(())));
        assert_eq!(outcome_in("FAILED: half writ"), None);
    }
}
