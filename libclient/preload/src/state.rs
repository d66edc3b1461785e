//! Process-wide state, all lazy: the mount dir (from the environment or the hosts
//! file, read the first time a path could be ours), the client connection (opened on
//! the first gkfs operation, again in a forked child), the virtual working directory,
//! and the umask.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use api::mountpath::{MountDir, Resolved};
use api::{Client, ClientConfig};
use gkfs_proto::config;
use gkfs_proto::hosts::Hosts;
use gkfs_proto::Errno;
use parking_lot::{Mutex, RwLock};

use crate::{fds, log};

/// The file system this process sees.
pub struct Fs {
    /// Where it appears.
    pub mount: MountDir,
    /// How to connect.
    pub config: ClientConfig,
    /// The daemons, or why the mount dir cannot be served (the hosts file is missing or
    /// invalid): then every call under it fails with EIO, after one line on stderr, and
    /// nothing falls through to the disk below.
    hosts: Result<Hosts, String>,
}

static FS: OnceLock<Option<Fs>> = OnceLock::new();
/// A std lock, not parking_lot's: it is held across fork (see `afterfork`).
static CLIENT: std::sync::Mutex<Option<Client>> = std::sync::Mutex::new(None);

fn client_slot() -> std::sync::MutexGuard<'static, Option<Client>> {
    CLIENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
/// The working directory when it is inside the mount dir (as programs see it, e.g.
/// "/tmp/gkfs/run"); None when the kernel's working directory is the real one.
static CWD: RwLock<Option<String>> = RwLock::new(None);
/// The process that owns the state (set at load time and in forked children); a
/// vfork child runs with its parent's memory and a different pid.
static OWNER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// The umask (u32::MAX: not read yet).
static UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// The file system, or None when the process has no gkfs environment (the library is
/// then inert: every call goes to libc).
pub fn fs() -> Option<&'static Fs> {
    FS.get_or_init(load).as_ref()
}

/// Reads the environment and the hosts file. A process whose environment names a
/// hosts file or a mount dir is a gkfs process: if the mount dir is known but the
/// hosts file cannot be used, the mount dir is still claimed (and fails loudly) so
/// that a job's results never land quietly on the node's own disk.
fn load() -> Option<Fs> {
    let env_mount = std::env::var_os(config::ENV_MOUNTDIR);
    let (config, hosts, text) = match ClientConfig::from_env() {
        Ok(config) => {
            let (hosts, text) = read_hosts(&config.hosts_file);
            (config, hosts, text)
        }
        Err(_) if env_mount.is_none() => return None,
        // The mount dir is named but not where its daemons are: claim it, fail loudly.
        Err(_) => (
            ClientConfig::new(""),
            Err(format!(
                "{} is set but {} is not",
                config::ENV_MOUNTDIR,
                config::ENV_HOSTS_FILE
            )),
            String::new(),
        ),
    };
    let mount = match (&env_mount, &hosts) {
        (Some(m), _) => m.to_str().map(str::to_string),
        (None, Ok(h)) => Some(h.mountdir().to_string()),
        // A damaged file may still say where it was meant to be mounted.
        (None, Err(_)) => Hosts::scan_mountdir(&text).map(str::to_string),
    };
    let Some(mount) = mount.as_deref().and_then(MountDir::new) else {
        let why = match &hosts {
            Err(e) => format!(
                "{e}, and no mount dir is known (set {})",
                config::ENV_MOUNTDIR
            ),
            Ok(_) => format!(
                "{} must be an absolute UTF-8 path other than /",
                config::ENV_MOUNTDIR
            ),
        };
        log::cannot_serve(format_args!("{why}: nothing is intercepted"));
        return None;
    };
    register_atfork();
    api::set_while_waiting(crate::pages::while_waiting);
    api::set_own_kept(crate::own::own_kept);
    log::debug(format_args!("gkfs mounted at {}", mount.as_str()));
    Some(Fs {
        mount,
        config,
        hosts,
    })
}

/// The hosts file parsed (or why it cannot be used), and its text.
fn read_hosts(path: &std::path::Path) -> (Result<Hosts, String>, String) {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(t) => (
            Hosts::parse(&name, &t).map_err(|e| format!("invalid hosts file: {e}")),
            t,
        ),
        Err(e) => (
            Err(format!("cannot read the hosts file {name}: {e}")),
            String::new(),
        ),
    }
}

/// The connection, if this process made it already.
pub fn made_client() -> Option<Client> {
    client_slot().clone()
}

/// The connection, opened on first use.
pub fn client() -> Result<Client, Errno> {
    let fs = fs().ok_or(Errno::ENOENT)?;
    let hosts = match &fs.hosts {
        Ok(h) => h,
        Err(why) => {
            log::cannot_serve(format_args!(
                "cannot serve {}: {why}; calls under it fail with EIO",
                fs.mount.as_str()
            ));
            return Err(Errno::EIO);
        }
    };
    let mut slot = client_slot();
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    match Client::with_hosts(&fs.config, hosts.clone()) {
        Ok(c) => {
            *slot = Some(c.clone());
            Ok(c)
        }
        Err(e) => {
            log::cannot_serve(format_args!(
                "cannot serve {}: {e}; calls under it fail with EIO",
                fs.mount.as_str()
            ));
            Err(Errno::EIO)
        }
    }
}

/// The kernel's working directory, cached (None: not known yet).
static REAL_CWD: RwLock<Option<String>> = RwLock::new(None);

/// Resolves a path argument relative to the working directory.
pub fn resolve(path: &str) -> Option<(&'static Fs, Resolved)> {
    let fs = fs()?;
    if let Some(cwd) = CWD.read().as_deref() {
        return Some((fs, fs.mount.resolve(Some(cwd), path)));
    }
    if path.is_empty() || path.starts_with('/') {
        return Some((fs, fs.mount.resolve(None, path)));
    }
    // A relative path from a real directory above the mount dir ("gkfs/x" from /tmp)
    // can lead into it: `mkdir -p` and `find` walk that way.
    let rc = real_cwd()?;
    let m = fs.mount.as_str();
    let above =
        rc == "/" || (m.starts_with(rc.as_str()) && m.as_bytes().get(rc.len()) == Some(&b'/'));
    let r = match above.then(|| fs.mount.resolve(Some(&rc), path)) {
        Some(Resolved::Gkfs(p)) => Resolved::Gkfs(p),
        _ => Resolved::Real,
    };
    Some((fs, r))
}

/// The kernel's working directory (cached until the next real chdir).
pub fn real_cwd() -> Option<String> {
    if let Some(c) = REAL_CWD.read().clone() {
        return Some(c);
    }
    let c = std::env::current_dir()
        .ok()?
        .into_os_string()
        .into_string()
        .ok()?;
    *REAL_CWD.write() = Some(c.clone());
    Some(c)
}

/// The virtual working directory, if inside gkfs.
pub fn cwd() -> Option<String> {
    CWD.read().clone()
}

/// Sets (Some, a path as programs see it) or clears the virtual working directory
/// (None: the kernel's working directory applies again, and may have changed).
pub fn set_cwd(dir: Option<String>) {
    log::debug(format_args!("cwd -> {dir:?} (pid {})", std::process::id()));
    match dir {
        None => *REAL_CWD.write() = None,
        Some(_) => enter_void(),
    }
    *CWD.write() = dir;
}

/// While the working directory is in gkfs, the kernel's is an empty directory that no
/// longer exists: a relative path that reaches the kernel without the library (glibc's
/// internal calls, direct system calls) finds nothing and creates nothing (ENOENT),
/// instead of landing in whatever real directory the process was in before.
fn enter_void() {
    const VOID: &str = "/.gkfs-void-";
    if std::fs::read_link("/proc/self/cwd").is_ok_and(|c| {
        let c = c.to_string_lossy();
        c.contains(VOID) && c.ends_with(" (deleted)")
    }) {
        return;
    }
    for base in ["/tmp", "/dev/shm"] {
        let mut template = format!("{base}{VOID}XXXXXX\0").into_bytes();
        // SAFETY: a NUL-terminated template in a buffer we own; the library's own calls.
        unsafe {
            if libc::mkdtemp(template.as_mut_ptr().cast()).is_null() {
                continue;
            }
            if libc::chdir(template.as_ptr().cast()) == 0 {
                libc::rmdir(template.as_ptr().cast());
                return;
            }
            libc::rmdir(template.as_ptr().cast());
        }
    }
    log::debug(format_args!(
        "no empty directory for the kernel's working directory"
    ));
}

/// The working directory a vfork child moved to (its pid; the directory as programs see
/// it, None for a real one), for the exec that follows: the child shares its parent's
/// memory, so the parent's own working directory must not change.
static VFORK_CWD: Mutex<Option<(i32, Option<String>)>> = Mutex::new(None);

/// In a vfork child: notes the working directory it moved to.
pub fn set_vfork_cwd(dir: Option<String>) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    *VFORK_CWD.lock() = Some((pid, dir));
}

/// The working directory a new program should start in: the one a vfork child moved
/// to, else the process's.
pub fn cwd_for_exec() -> Option<String> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    match VFORK_CWD.lock().as_ref() {
        Some((p, dir)) if *p == pid => dir.clone(),
        _ => cwd(),
    }
}

/// Records the current process as the owner of the state.
pub fn set_owner() {
    // SAFETY: getpid cannot fail.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
}

/// The process that owns the state (this one, unless in a vfork child), without a
/// system call.
pub fn owner_pid() -> u32 {
    OWNER.load(Ordering::Relaxed) as u32
}

/// Is this a vfork child (sharing its parent's memory)? Such a child must not change
/// the fd table or the working directory: they are the parent's.
pub fn in_vfork_child() -> bool {
    if !crate::vfork::maybe_child() {
        return false;
    }
    let o = OWNER.load(Ordering::Relaxed);
    // SAFETY: getpid cannot fail.
    o != 0 && o != unsafe { libc::getpid() }
}

/// Directories seen recently, to answer "is the parent a directory?" on the error path
/// without a round trip (only used to choose between ENOENT and ENOTDIR).
static KNOWN_DIRS: Mutex<Option<std::collections::HashMap<String, std::time::Instant>>> =
    Mutex::new(None);
const KNOWN_DIRS_MAX: usize = 1024;
const KNOWN_DIRS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Notes that `path` (inside the file system) is a directory.
pub fn note_dir(path: &str) {
    let mut g = KNOWN_DIRS.lock();
    let m = g.get_or_insert_with(Default::default);
    if m.len() >= KNOWN_DIRS_MAX {
        m.clear();
    }
    m.insert(path.to_string(), std::time::Instant::now());
}

/// Was `path` seen as a directory in the last second?
pub fn known_dir(path: &str) -> bool {
    KNOWN_DIRS
        .lock()
        .as_ref()
        .and_then(|m| m.get(path))
        .is_some_and(|t| t.elapsed() < KNOWN_DIRS_TTL)
}

/// The process umask.
pub fn umask() -> u32 {
    let m = UMASK.load(Ordering::Relaxed);
    if m != u32::MAX {
        return m;
    }
    let m = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    UMASK.store(m, Ordering::Relaxed);
    m
}

/// Records a umask the program set.
pub fn note_umask(m: u32) {
    UMASK.store(m & 0o777, Ordering::Relaxed);
}

fn register_atfork() {
    extern "C" fn prepare() {
        fds::lock_for_fork();
        crate::afterfork::hold(client_slot());
        crate::pages::lock_for_fork();
    }
    extern "C" fn parent() {
        crate::afterfork::release();
        fds::forked();
    }
    extern "C" fn child() {
        // The child is single-threaded here; the locks are free again.
        crate::afterfork::release();
        set_owner();
        fds::close_parent_connections();
        crate::pages::forget_after_fork();
        crate::locks::forget_after_fork();
        crate::log::forget_unsupported_after_fork();
        for of in fds::descriptions() {
            of.forget_parent_state();
        }
        // The parent's connection belongs to the parent (its sockets and libfabric
        // state); the child opens its own on first use and never touches this one.
        if let Some(old) = client_slot().take() {
            std::mem::forget(old);
        }
    }
    // SAFETY: three extern "C" fns without arguments, as pthread_atfork expects.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}
