//! The FUSE mount of an instance (`gkfs-run mount|umount`, `start/run --fuse`, and
//! every `stop`): gkfs-fuse runs in the background, its pid, log and mount dir in the
//! instance dir; an unmount never leaves a mount behind, even when gkfs-fuse was
//! killed (a dead FUSE process leaves a mount whose every call fails with ENOTCONN:
//! it is detached with `fusermount3 -u -z`, and the kernel's mount table is checked).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::local::{log_tail, sibling_program};
use crate::supervise::{self, Deadline, Grace, Proc, Stoppable};

/// gkfs-fuse's pid, in the instance dir.
pub const PID_FILE: &str = "fuse.pid";
/// gkfs-fuse's log, in the instance dir.
pub const LOG_FILE: &str = "fuse.log";
/// Where gkfs-fuse mounted, in the instance dir.
pub const MOUNTDIR_FILE: &str = "fuse.mountdir";

/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long gkfs-fuse gets to unmount and exit after SIGTERM.
const UNMOUNT_GRACE: Duration = Duration::from_secs(5);

/// What `mount` is asked for.
#[derive(clap::Args, Debug, Clone)]
pub struct MountArgs {
    /// Where to mount (default: the instance's mount dir, the one the preload library
    /// serves: both ways in see the same files).
    #[arg(long, value_name = "DIR")]
    pub mountdir: Option<PathBuf>,
    /// Threads gkfs-fuse answers the kernel with.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_THREADS)]
    pub fuse_threads: u16,
    /// Let other users through the mount (needs `user_allow_other` in /etc/fuse.conf
    /// unless root).
    #[arg(long)]
    pub allow_other: bool,
}

/// Dirs `mount` made for the mount point (outermost first), removed again by `unmount`.
pub const CREATED_FILE: &str = "fuse.created";

/// The instance a hosts file belongs to (any: `gkfs-run start`'s, or a Slurm job's
/// node-local dir): its dir, the hosts file (absolute) and its mount dir.
pub fn instance_of(hosts_file: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let hosts_file = hosts_file
        .canonicalize()
        .with_context(|| format!("hosts file {}", hosts_file.display()))?;
    let text = fs::read_to_string(&hosts_file)
        .with_context(|| format!("cannot read {}", hosts_file.display()))?;
    let mountdir = gkfs_proto::hosts::Hosts::scan_mountdir(&text)
        .with_context(|| {
            format!(
                "{} names no mount dir: no daemon has registered",
                hosts_file.display()
            )
        })?
        .to_string();
    let dir = hosts_file.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((dir, hosts_file, mountdir))
}

/// gkfs-fuse's threads unless told.
const DEFAULT_THREADS: u16 = 4;

impl Default for MountArgs {
    fn default() -> Self {
        MountArgs {
            mountdir: None,
            fuse_threads: DEFAULT_THREADS,
            allow_other: false,
        }
    }
}

/// The FUSE program: $GKFS_FUSE, else gkfs-fuse next to gkfs-run, else from PATH.
fn fuse_program() -> PathBuf {
    std::env::var_os("GKFS_FUSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| sibling_program("gkfs-fuse"))
}

/// Undoes the escapes of a /proc/self/mountinfo field (`\040` for a space...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mount, as /proc/self/mountinfo shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Mount {
    /// File system type (`fuse.gkfs` when fusermount3 mounted it, `fuse` when root did).
    pub fstype: String,
    /// Its source (`gkfs` for gkfs-fuse).
    pub source: String,
}

impl Mount {
    /// Is it a gkfs-fuse mount?
    pub fn is_gkfs(&self) -> bool {
        self.source == "gkfs" && (self.fstype == "fuse" || self.fstype == "fuse.gkfs")
    }
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.fstype, self.source)
    }
}

/// The topmost mount at `dir`, if any.
pub fn mounted_at(dir: &Path) -> Option<Mount> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounted_in(&table, dir)
}

fn mounted_in(table: &str, dir: &Path) -> Option<Mount> {
    let dir = dir.to_string_lossy();
    table.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = unescape(left.split(' ').nth(4)?);
        let mut r = right.split(' ');
        let fstype = r.next()?.to_string();
        let source = unescape(r.next()?);
        (point == *dir).then_some(Mount { fstype, source })
    })
}

/// Is a gkfs-fuse mount at `dir`?
fn gkfs_mounted(dir: &Path) -> bool {
    mounted_at(dir).is_some_and(|m| m.is_gkfs())
}

/// Mounts the instance in `inst_dir` (hosts file `hosts_file`) through FUSE and
/// returns once the kernel shows the mount. With `foreground`, runs gkfs-fuse in
/// this process's place until it is unmounted.
pub fn mount(
    inst_dir: &Path,
    hosts_file: &Path,
    default_dir: &str,
    args: &MountArgs,
    foreground: bool,
) -> Result<()> {
    if let Some(dir) = recorded_mountdir(inst_dir) {
        if gkfs_mounted(&dir) && gkfs_fuse(inst_dir, hosts_file).is_some() {
            bail!(
                "already mounted at {} (gkfs-run umount first)",
                dir.display()
            );
        }
        // Left over from a gkfs-fuse that died.
        unmount(inst_dir, hosts_file)?;
    }
    let dir = args
        .mountdir
        .clone()
        .unwrap_or_else(|| PathBuf::from(default_dir));
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    if !dir.exists() {
        let mut made = Vec::new();
        let mut d = dir.as_path();
        while !d.exists() {
            made.push(d.display().to_string());
            d = d.parent().unwrap_or(Path::new("/"));
        }
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the mount dir {}", dir.display()))?;
        made.reverse();
        crate::instance::write_private(&inst_dir.join(CREATED_FILE), made.join("\n").as_bytes())?;
    }
    // The kernel's mount table names it canonically (no `..`, trailing `/` or links).
    let dir = dir
        .canonicalize()
        .with_context(|| format!("mount dir {}", dir.display()))?;
    if let Some(t) = mounted_at(&dir) {
        bail!(
            "{} already has a file system mounted ({t}); unmount it or choose another --mountdir",
            dir.display()
        );
    }
    let program = fuse_program();
    let mut c = supervise::command(&program);
    c.arg("--hosts-file")
        .arg(hosts_file)
        .arg("--mountdir")
        .arg(&dir)
        .arg("--threads")
        .arg(args.fuse_threads.to_string())
        // Its own process must reach the daemons, not itself through the mount.
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null());
    if args.allow_other {
        c.arg("--allow-other");
    }
    crate::instance::write_private(
        &inst_dir.join(MOUNTDIR_FILE),
        dir.as_os_str().as_encoded_bytes(),
    )?;
    if foreground {
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot run {}", program.display()))?;
        crate::instance::write_private(
            &inst_dir.join(PID_FILE),
            child.id().to_string().as_bytes(),
        )?;
        supervise::terminate_on_signal(child.id());
        let st = child.wait()?;
        let _ = unmount(inst_dir, hosts_file);
        if !st.success() {
            bail!("gkfs-fuse ended with {st}");
        }
        return Ok(());
    }
    let log_path = inst_dir.join(LOG_FILE);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    use std::os::unix::process::CommandExt;
    c.stdout(log.try_clone()?).stderr(log).process_group(0);
    let child = c.spawn().with_context(|| {
        format!(
            "cannot run {} (set GKFS_FUSE to its path)",
            program.display()
        )
    })?;
    let pid = child.id();
    crate::instance::write_private(&inst_dir.join(PID_FILE), pid.to_string().as_bytes())?;
    let mut proc = Proc::child(child, true);
    let deadline = Deadline::new(MOUNT_TIMEOUT);
    loop {
        if gkfs_mounted(&dir) {
            // Dropping our handle neither waits for nor stops it: it lives on.
            return Ok(());
        }
        if proc.exited() || deadline.expired() {
            let why = log_tail(&log_path, 3, "; ");
            let _ = unmount(inst_dir, hosts_file);
            let _ = supervise::terminate(&mut [proc], Grace::new(UNMOUNT_GRACE));
            bail!(
                "gkfs-fuse did not mount {}{}",
                dir.display(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn recorded_mountdir(inst_dir: &Path) -> Option<PathBuf> {
    fs::read(inst_dir.join(MOUNTDIR_FILE))
        .ok()
        .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
}

/// The instance's gkfs-fuse process, while it runs.
fn gkfs_fuse(inst_dir: &Path, hosts_file: &Path) -> Option<Proc> {
    let pid: u32 = fs::read_to_string(inst_dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mut p = Proc::pid(pid).holding_arg(hosts_file.as_os_str());
    (!p.exited()).then_some(p)
}

/// Ends the instance's FUSE mount, if it has one: SIGTERM to gkfs-fuse (which
/// unmounts), then `fusermount3 -u -z` for a mount still there (its process killed, or
/// the mount busy), SIGKILL for a process still there. Fails only if a mount stays.
/// Returns whether there was a mount to end.
pub fn unmount(inst_dir: &Path, hosts_file: &Path) -> Result<bool> {
    let Some(dir) = recorded_mountdir(inst_dir) else {
        return Ok(false);
    };
    // gkfs-fuse was given the canonical path (its command line is how it is known).
    let hosts_file = &hosts_file
        .canonicalize()
        .unwrap_or_else(|_| hosts_file.to_path_buf());
    let mut procs: Vec<Proc> = gkfs_fuse(inst_dir, hosts_file).into_iter().collect();
    for p in &mut procs {
        p.signal(Signal::SIGTERM)?;
    }
    let deadline = Deadline::new(UNMOUNT_GRACE);
    while !procs.iter_mut().all(|p| p.ended()) && !deadline.expired() {
        std::thread::sleep(Duration::from_millis(10));
    }
    if gkfs_mounted(&dir) {
        let out = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&dir)
            .output();
        if gkfs_mounted(&dir) && nix::unistd::geteuid().is_root() {
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        }
        if gkfs_mounted(&dir) {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => format!("cannot run fusermount3: {e}"),
            };
            bail!("the FUSE mount at {} stays: {why}", dir.display());
        }
    }
    supervise::terminate(&mut procs, Grace::new(Duration::ZERO))?;
    // The mount points `mount` made, if empty (innermost first).
    if let Ok(made) = fs::read_to_string(inst_dir.join(CREATED_FILE)) {
        for d in made.lines().rev() {
            let _ = fs::remove_dir(d);
        }
    }
    for f in [PID_FILE, MOUNTDIR_FILE, CREATED_FILE] {
        let _ = fs::remove_file(inst_dir.join(f));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let table = "\
22 1 0:21 / /tmp rw,nosuid - tmpfs tmpfs rw\n\
40 22 0:45 / /tmp/my\\040dir rw,nosuid,nodev - fuse.gkfs gkfs rw,user_id=0\n\
41 22 0:46 / /tmp/gkfs rw - tmpfs tmpfs rw\n\
42 41 0:47 / /tmp/gkfs rw - fuse gkfs rw\n";
        let at = |d: &str| mounted_in(table, Path::new(d));
        assert!(at("/tmp/my dir").unwrap().is_gkfs());
        assert_eq!(at("/tmp").unwrap().fstype, "tmpfs");
        assert!(!at("/tmp").unwrap().is_gkfs());
        // The topmost of two mounts on one dir.
        assert_eq!(
            at("/tmp/gkfs"),
            Some(Mount {
                fstype: "fuse".into(),
                source: "gkfs".into()
            })
        );
        assert_eq!(at("/tmp/x"), None);
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
    }
}
