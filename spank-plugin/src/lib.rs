//! gkfs's SPANK plugin: `--gkfs[=MOUNTDIR]`, `--gkfs-stage-in=SRC:DST[,...]`,
//! `--gkfs-stage-out=SRC:DST[,...]` and `--gkfs-mode=preload|fuse|both` for srun,
//! sbatch and salloc.
//!
//! * srun/sbatch/salloc (local and allocator context): the options are registered with
//!   `spank_option_register` (a static table is not seen by sbatch/salloc), checked, and
//!   handed to the job's prolog and epilog through the job control environment
//!   (`SPANK_GKFS`, `SPANK_GKFS_STAGE_IN`, `SPANK_GKFS_STAGE_OUT`, `SPANK_GKFS_MODE`).
//! * job prolog/epilog (slurmd, as root, on every node; needs `PrologFlags=Alloc`): run
//!   `gkfs-run prolog|epilog`, which start this node's daemon as the job's user, stage
//!   in on the first node, stage out, stop the daemon and remove its data. Their failures
//!   are logged and never returned: a failing prolog/epilog would drain the node.
//! * every step on a node whose prolog set gkfs up (slurmstepd, `user_init`): the tasks
//!   get `LD_PRELOAD`, `LIBGKFS_HOSTS_FILE`, `GKFS_CLIENT_LIB` and `GKFS_MOUNTDIR`; if the
//!   prolog failed, every task exits 1 with its message (`task_init`).
//!
//! Site settings are the plugstack.conf arguments (see [`settings::Settings`]).
#![allow(non_upper_case_globals)]

mod ffi;
pub mod settings;
/// The stage-list checks gkfs-run uses too (one source, no dependency).
#[path = "../../proto/src/stage_list.rs"]
pub mod stage_list;

use std::ffi::{c_char, c_int, CStr, CString};
use std::process::Command;
use std::sync::Mutex;

use ffi::*;
use settings::Settings;
use stage_list::{check_stage_list, Way};

/// `SPANK_PLUGIN(gkfs, 1)`: what the loader looks up (the names are char arrays).
#[no_mangle]
pub static plugin_name: [u8; 5] = *b"gkfs\0";
/// See [`plugin_name`].
#[no_mangle]
pub static plugin_type: [u8; 6] = *b"spank\0";
/// The Slurm release the plugin was built against (from slurm_version.h).
#[no_mangle]
pub static plugin_version: u32 = parse_u32(env!("GKFS_SLURM_VERSION_NUMBER"));
/// SPANK interface version.
#[no_mangle]
pub static spank_plugin_version: u32 = 1;

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// What the user asked for in this process.
#[derive(Debug, Default)]
struct Asked {
    /// `--gkfs`, with its value if given.
    gkfs: Option<Option<String>>,
    stage_in: Option<String>,
    stage_out: Option<String>,
    /// `--gkfs-mode`.
    mode: Option<String>,
}

static ASKED: Mutex<Asked> = Mutex::new(Asked {
    gkfs: None,
    stage_in: None,
    stage_out: None,
    mode: None,
});

/// The values of `--gkfs-mode` (and of plugstack.conf's `mode=`).
pub const MODES: [&str; 3] = ["preload", "fuse", "both"];

const OPT_GKFS: c_int = 1;
const OPT_STAGE_IN: c_int = 2;
const OPT_STAGE_OUT: c_int = 3;
const OPT_MODE: c_int = 4;

unsafe extern "C" fn option_cb(val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    let arg = if optarg.is_null() {
        None
    } else {
        // SAFETY: Slurm passes a NUL-terminated option argument or NULL.
        let a = unsafe { CStr::from_ptr(optarg) };
        Some(a.to_string_lossy().into_owned()).filter(|a| !a.is_empty())
    };
    guarded("option", || {
        let mut asked = ASKED.lock().unwrap_or_else(|p| p.into_inner());
        match val {
            OPT_GKFS => asked.gkfs = Some(arg),
            OPT_STAGE_IN => asked.stage_in = arg,
            OPT_STAGE_OUT => asked.stage_out = arg,
            OPT_MODE => asked.mode = arg,
            _ => return Err(format!("unknown option value {val}")),
        }
        Ok(())
    })
}

fn options() -> [spank_option; 4] {
    [
        spank_option {
            name: c"gkfs".as_ptr(),
            arginfo: c"MOUNTDIR".as_ptr(),
            usage: c"Give the job a gkfs burst-buffer file system on its nodes, mounted at MOUNTDIR (default: the site's, usually /tmp/gkfs; use --gkfs=DIR)".as_ptr(),
            has_arg: 2,
            val: OPT_GKFS,
            cb: Some(option_cb),
        },
        spank_option {
            name: c"gkfs-stage-in".as_ptr(),
            arginfo: c"SRC:DST[,SRC:DST...]".as_ptr(),
            usage: c"Copy SRC into gkfs at DST (under the mount dir) before the job starts; implies --gkfs".as_ptr(),
            has_arg: 1,
            val: OPT_STAGE_IN,
            cb: Some(option_cb),
        },
        spank_option {
            name: c"gkfs-stage-out".as_ptr(),
            arginfo: c"SRC:DST[,SRC:DST...]".as_ptr(),
            usage: c"Copy SRC (under the mount dir) out of gkfs to DST after the job ends; implies --gkfs".as_ptr(),
            has_arg: 1,
            val: OPT_STAGE_OUT,
            cb: Some(option_cb),
        },
        spank_option {
            name: c"gkfs-mode".as_ptr(),
            arginfo: c"preload|fuse|both".as_ptr(),
            usage: c"How the job's programs reach gkfs: the preload library (default), a FUSE mount on every node (static and Go binaries too), or both; implies --gkfs".as_ptr(),
            has_arg: 1,
            val: OPT_MODE,
            cb: Some(option_cb),
        },
    ]
}

fn info(msg: &str) {
    ffi::log(false, msg);
}

fn error(msg: &str) {
    ffi::log(true, msg);
}

/// Runs a callback body; a panic becomes an error instead of unwinding into Slurm.
fn guarded(name: &str, f: impl FnOnce() -> Result<(), String>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            error(&msg);
            -1
        }
        Err(_) => {
            error(&format!("internal error in {name}"));
            -1
        }
    }
}

/// The plugstack.conf arguments.
fn plugin_args(ac: c_int, av: *mut *mut c_char) -> Vec<String> {
    (0..ac.max(0) as usize)
        .filter_map(|i| {
            // SAFETY: Slurm passes `ac` valid NUL-terminated strings in `av`.
            let p = unsafe { *av.add(i) };
            // SAFETY: see above; NULL entries are skipped.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

fn settings(ac: c_int, av: *mut *mut c_char) -> Result<Settings, String> {
    Settings::parse(plugin_args(ac, av))
}

fn context() -> c_int {
    // SAFETY: no arguments; valid in every context.
    unsafe { spank_context() }
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// Registers the options where users can give them.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack.conf arguments.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_init(sp: spank_t, _ac: c_int, _av: *mut *mut c_char) -> c_int {
    guarded("init", || {
        if ![S_CTX_LOCAL, S_CTX_REMOTE, S_CTX_ALLOCATOR].contains(&context()) {
            return Ok(());
        }
        for o in options() {
            // SAFETY: `o` points to 'static strings; Slurm copies the struct.
            if unsafe { spank_option_register(sp, &o) } != ESPANK_SUCCESS {
                // SAFETY: `o.name` is a 'static C string.
                let name = unsafe { CStr::from_ptr(o.name) }.to_string_lossy();
                return Err(format!(
                    "cannot register --{name} (another plugin in plugstack.conf has it?)"
                ));
            }
        }
        Ok(())
    })
}

/// srun/sbatch/salloc: checks the options and passes them to the prolog and epilog.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack.conf arguments.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_init_post_opt(
    sp: spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    guarded("init_post_opt", || {
        if ![S_CTX_LOCAL, S_CTX_ALLOCATOR].contains(&context()) {
            return Ok(());
        }
        let asked = ASKED.lock().unwrap_or_else(|p| p.into_inner());
        if asked.gkfs.is_none()
            && asked.stage_in.is_none()
            && asked.stage_out.is_none()
            && asked.mode.is_none()
        {
            return Ok(());
        }
        if context() == S_CTX_LOCAL && std::env::var_os("SLURM_JOB_ID").is_some() {
            // A step of an existing job: its nodes were set up (or not) with the job.
            return Ok(());
        }
        let s = settings(ac, av)?;
        let mountdir = match asked.gkfs.clone().flatten() {
            Some(m) if !m.starts_with('/') => {
                return Err(format!(
                    "--gkfs={m}: the mount dir must be an absolute path"
                ))
            }
            Some(m) => m.trim_end_matches('/').to_string(),
            None => s.mountdir.clone(),
        };
        let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
        let mut vars = vec![("GKFS", mountdir.clone())];
        if let Some(l) = &asked.stage_in {
            vars.push((
                "GKFS_STAGE_IN",
                check_stage_list(l, Way::In, &mountdir, &cwd, "--gkfs-stage-in")?,
            ));
        }
        if let Some(l) = &asked.stage_out {
            vars.push((
                "GKFS_STAGE_OUT",
                check_stage_list(l, Way::Out, &mountdir, &cwd, "--gkfs-stage-out")?,
            ));
        }
        if let Some(m) = &asked.mode {
            if !MODES.contains(&m.as_str()) {
                return Err(format!(
                    "--gkfs-mode={m}: expected one of {}",
                    MODES.join(", ")
                ));
            }
            vars.push(("GKFS_MODE", m.clone()));
        }
        for (k, v) in vars {
            let (k, v) = (cstring(k)?, cstring(&v)?);
            // SAFETY: valid handle and NUL-terminated strings.
            if unsafe { spank_job_control_setenv(sp, k.as_ptr(), v.as_ptr(), 1) } != ESPANK_SUCCESS
            {
                return Err(format!("cannot pass {k:?} to the job's prolog"));
            }
        }
        Ok(())
    })
}

fn job_id(sp: spank_t) -> Result<u32, String> {
    ffi::job_id(sp).ok_or_else(|| "cannot get the job id".to_string())
}

/// Runs `gkfs-run prolog|epilog` for a job that asked for gkfs. Never fails: a failing
/// job prolog/epilog drains the node, so errors only go to slurmd's log (and, by
/// gkfs-run, to the job dir and the job's output).
fn job_script(sp: spank_t, ac: c_int, av: *mut *mut c_char, what: &str) -> c_int {
    if context() != S_CTX_JOB_SCRIPT {
        return 0;
    }
    let asked = std::env::var_os("SPANK_GKFS").is_some();
    let _ = guarded(what, || {
        let s = settings(ac, av)?;
        if !s.job_scripts || !(asked || s.burst_buffer) {
            return Ok(());
        }
        let id = job_id(sp).unwrap_or(0);
        let mut cmd = Command::new(&s.gkfs_run);
        cmd.arg(what).args(&s.passthrough);
        if !asked {
            // Maybe a `#BB_LUA gkfs` job: gkfs-run asks slurmctld.
            cmd.arg("--burst-buffer")
                .arg(format!("--mountdir={}", s.mountdir));
        }
        let out = cmd
            .output()
            .map_err(|e| format!("job {id}: cannot run {}: {e}", s.gkfs_run.display()))?;
        if !out.status.success() {
            return Err(format!(
                "job {id}: gkfs-run {what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        info(&format!("job {id}: gkfs-run {what} done"));
        Ok(())
    });
    0
}

/// Job prolog (slurmd, root, every node).
///
/// # Safety
/// Called by Slurm with its handle and the plugstack.conf arguments.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_job_prolog(
    sp: spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    job_script(sp, ac, av, "prolog")
}

/// Job epilog (slurmd, root, every node).
///
/// # Safety
/// Called by Slurm with its handle and the plugstack.conf arguments.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_job_epilog(
    sp: spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    job_script(sp, ac, av, "epilog")
}

/// The `mountdir=` of a hosts file's first line.
fn hosts_mountdir(hosts: &str) -> Option<String> {
    hosts
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("mountdir="))
        .map(String::from)
}

fn setenv(sp: spank_t, k: &str, v: &str) -> Result<(), String> {
    let (k, v) = (cstring(k)?, cstring(v)?);
    // SAFETY: valid handle and NUL-terminated strings.
    if unsafe { spank_setenv(sp, k.as_ptr(), v.as_ptr(), 1) } != ESPANK_SUCCESS {
        return Err(format!("cannot set {k:?} for the tasks"));
    }
    Ok(())
}

fn getenv(sp: spank_t, k: &str) -> Option<String> {
    let k = cstring(k).ok()?;
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is writable for its length; Slurm NUL-terminates what it writes.
    let rc = unsafe { spank_getenv(sp, k.as_ptr(), buf.as_mut_ptr().cast(), buf.len() as c_int) };
    if rc != ESPANK_SUCCESS {
        return None;
    }
    let s = CStr::from_bytes_until_nul(&buf).ok()?;
    Some(s.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

/// Why the tasks of this step cannot use gkfs, if they asked for it or the job has it.
fn unusable(s: &Settings, id: u32) -> Option<String> {
    let dir = s.job_dir(id);
    if let Ok(msg) = std::fs::read_to_string(dir.join("failed")) {
        return Some(msg.trim().to_string());
    }
    let hosts_file = dir.join("hosts");
    if !hosts_file.exists() {
        let asked = ASKED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gkfs
            .is_some();
        return asked.then(|| {
            format!(
                "job {id} has no gkfs on this node ({} is missing): ask for it when the job \
                 is allocated (sbatch/salloc/srun --gkfs), or use `gkfs-run start` inside the \
                 allocation; if you did, see slurmd's log on this node",
                hosts_file.display()
            )
        });
    }
    None
}

/// Every task of a gkfs job, before exec: fails it (exit 1, a job failure Slurm reports
/// like any other) when the prolog could not set gkfs up. Failing earlier, in
/// `user_init`, would make a batch job's launch fail and Slurm drain the node.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack.conf arguments.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init(
    sp: spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    guarded("task_init", || {
        if context() != S_CTX_REMOTE {
            return Ok(());
        }
        let s = settings(ac, av)?;
        match unusable(&s, job_id(sp)?) {
            Some(msg) => Err(msg),
            None => Ok(()),
        }
    })
}

/// Every step (slurmstepd, with the user's privileges): the client environment for the
/// tasks of a gkfs job.
///
/// # Safety
/// Called by Slurm with its handle and the plugstack.conf arguments.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_user_init(
    sp: spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    guarded("user_init", || {
        if context() != S_CTX_REMOTE {
            return Ok(());
        }
        let s = settings(ac, av)?;
        let id = job_id(sp)?;
        let dir = s.job_dir(id);
        let hosts_file = dir.join("hosts");
        // No gkfs here, or a failed prolog: nothing to set (task_init reports why).
        if dir.join("failed").exists() {
            return Ok(());
        }
        let Ok(hosts) = std::fs::read_to_string(&hosts_file) else {
            return Ok(());
        };
        let lib = s.client_lib.display().to_string();
        // `--gkfs-mode=fuse`: the tasks go through the mount, without the library.
        let fuse_only = std::fs::read_to_string(dir.join("mode")).is_ok_and(|m| m.trim() == "fuse");
        if !fuse_only {
            let preload = match getenv(sp, "LD_PRELOAD") {
                Some(old) if !old.split([':', ' ']).any(|p| p == lib) => format!("{lib}:{old}"),
                Some(old) => old,
                None => lib.clone(),
            };
            setenv(sp, "LD_PRELOAD", &preload)?;
        }
        setenv(sp, "LIBGKFS_HOSTS_FILE", &hosts_file.display().to_string())?;
        setenv(sp, "GKFS_CLIENT_LIB", &lib)?;
        if let Some(m) = hosts_mountdir(&hosts) {
            setenv(sp, "GKFS_MOUNTDIR", &m)?;
            // The library's own name for it: known even if the hosts file is damaged.
            setenv(sp, "LIBGKFS_MOUNTDIR", &m)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountdir_from_hosts_file() {
        let h =
            "# comment\n\nnode1 tcp;ofi_rxm 0200 chunk_size=524288 mountdir=/tmp/gkfs socket=/x\n";
        assert_eq!(hosts_mountdir(h).as_deref(), Some("/tmp/gkfs"));
        assert_eq!(hosts_mountdir("# nothing\n"), None);
    }

    #[test]
    fn version_is_parsed_at_compile_time() {
        assert_eq!(parse_u32("1443080"), 0x160508);
    }
}
