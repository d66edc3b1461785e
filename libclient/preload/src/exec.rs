//! exec: the gkfs fds that stay open (not close-on-exec) and a gkfs working directory
//! are handed to the new program in `LIBGKFS_FDS` and `LIBGKFS_CWD`, which the library
//! reads at load time (lib.rs). A program stored in gkfs is copied into a memfd and
//! executed from there.

use std::ffi::{c_char, c_int, CStr, CString};

use gkfs_proto::Errno;

use crate::file;
use crate::hook::{cstr, Act};
use crate::paths::{checked, classify, lookup, Followed, Target};
use crate::{fds, state};

/// Environment variable listing inherited gkfs fds.
pub const ENV_FDS: &str = "LIBGKFS_FDS";
/// Environment variable holding a gkfs working directory.
pub const ENV_CWD: &str = "LIBGKFS_CWD";
/// [`ENV_FDS`] when the new program must look at every fd it has: the fds were
/// arranged where the library cannot see (a vfork child's dup2, which must leave the
/// parent's table alone; posix_spawn's file actions, done by glibc internally).
const SCAN_ALL: &str = "*";

extern "C" {
    static mut environ: *const *const c_char;
}

/// The name LD_PRELOAD gives this library by.
const LIB_NAME: &[u8] = b"libgkfs_client";

/// The environment for a new program: `envp` without stale gkfs state, plus ours.
struct Env {
    strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl Env {
    /// Does it load this library into the new program (LD_PRELOAD names it)?
    fn preloads(&self) -> bool {
        self.strings.iter().any(|s| {
            s.to_bytes()
                .strip_prefix(b"LD_PRELOAD=")
                .is_some_and(|v| v.windows(LIB_NAME.len()).any(|w| w == LIB_NAME))
        })
    }
}

fn build_env(envp: *const *const c_char, scan_all: bool, cwd: Option<String>) -> Env {
    let mut strings = Vec::new();
    let mut i = 0;
    while !envp.is_null() {
        // SAFETY: envp is a NULL-terminated array of C strings.
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: an element of envp.
        let s = unsafe { CStr::from_ptr(p) };
        let b = s.to_bytes();
        if !b.starts_with(ENV_FDS.as_bytes()) && !b.starts_with(ENV_CWD.as_bytes()) {
            strings.push(s.to_owned());
        }
        i += 1;
    }
    let open: Vec<String> = fds::all()
        .into_iter()
        // SAFETY: F_GETFD on our reserved fd.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC == 0)
        .map(|fd| fd.to_string())
        .collect();
    if scan_all || state::in_vfork_child() {
        strings.extend(CString::new(format!("{ENV_FDS}={SCAN_ALL}")).ok());
    } else if !open.is_empty() {
        strings.extend(CString::new(format!("{ENV_FDS}={}", open.join(","))).ok());
    }
    if let Some(cwd) = cwd.or_else(state::cwd_for_exec) {
        strings.extend(CString::new(format!("{ENV_CWD}={cwd}")).ok());
    }
    let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    Env { strings, ptrs }
}

type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;

static REAL_EXECVE: crate::hook::Real = crate::hook::Real::new(c"execve");
static REAL_EXECVPE: crate::hook::Real = crate::hook::Real::new(c"execvpe");
static REAL_FEXECVE: crate::hook::Real = crate::hook::Real::new(c"fexecve");

/// Calls a real exec function (found with dlsym) marked as outside the library.
fn real_exec(
    sym: &crate::hook::Real,
    a: *const c_char,
    argv: *const *const c_char,
    env: &Env,
) -> Result<c_int, Errno> {
    // SAFETY: libc's execve/execvpe, whose prototype ExecveFn repeats.
    let f = unsafe { sym.func::<ExecveFn>() }.ok_or(Errno::ENOSYS)?;
    // A path (execvpe's bare names are searched by glibc: left as they are).
    // SAFETY: `a` is a NUL-terminated string from the caller.
    let path = unsafe { CStr::from_ptr(a) };
    let handover = (path.to_bytes().contains(&b'/'))
        .then(|| crate::handover::before_exec(path, env.preloads()));
    // SAFETY: NUL-terminated path, the caller's argv, our NULL-terminated env.
    let r = checked(crate::hook::outside(|| unsafe {
        f(a, argv, env.ptrs.as_ptr())
    }));
    if let Some(h) = handover {
        h.undo();
    }
    r
}

/// Executes a gkfs file: its content goes into a memfd the kernel executes.
fn exec_gkfs(p: String, argv: *const *const c_char, env: &Env) -> Result<c_int, Errno> {
    let (p, rec) = match lookup(p, true)? {
        Followed::Gkfs(p, r) => (p, r),
        Followed::Real(p) => {
            let cp = CString::new(p).map_err(|_| Errno::EINVAL)?;
            return real_exec(&REAL_EXECVE, cp.as_ptr(), argv, env);
        }
    };
    if rec.is_dir() {
        return Err(Errno::EACCES);
    }
    if rec.mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    let f = state::client()?.file_handle(&p, rec, false);
    let mut data = vec![0u8; rec.size as usize];
    let n = f.pread(&mut data, 0)?;
    data.truncate(n);
    // A script's interpreter opens it through /dev/fd/N, so it must stay open across
    // exec; a binary is read by the kernel before the exec completes.
    let script = data.starts_with(b"#!");
    let flags = if script { 0 } else { libc::MFD_CLOEXEC };
    // SAFETY: memfd_create with a static name; checked.
    let mfd = checked(unsafe { libc::memfd_create(c"gkfs-exec".as_ptr(), flags) })?;
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writes our buffer to our memfd.
        let w = unsafe { libc::write(mfd, data[off..].as_ptr().cast(), data.len() - off) };
        if w <= 0 {
            // SAFETY: our memfd.
            unsafe { libc::close(mfd) };
            return Err(Errno::EIO);
        }
        off += w as usize;
    }
    // SAFETY: execveat of our memfd with the caller's argv and our env.
    let r = crate::hook::outside(|| unsafe {
        libc::syscall(
            libc::SYS_execveat,
            mfd,
            c"".as_ptr(),
            argv,
            env.ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    });
    let err = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    // SAFETY: our memfd (exec failed).
    unsafe { libc::close(mfd) };
    let _ = r;
    Err(Errno(err))
}

fn execve_with(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Act<c_int> {
    state::fs()?;
    let env = build_env(envp, false, None);
    Some(match classify(path) {
        Target::Gkfs(p) => crate::paths::with_links(p, |p| exec_gkfs(p, argv, &env)),
        Target::Fail(e) => Err(e),
        Target::RealPath(p) => real_exec(&REAL_EXECVE, p.as_ptr(), argv, &env),
        Target::Real | Target::RealOrLink(_) => real_exec(&REAL_EXECVE, path, argv, &env),
    })
}

pub(crate) fn h_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Act<c_int> {
    execve_with(path, argv, envp)
}

pub(crate) fn h_execv(path: *const c_char, argv: *const *const c_char) -> Act<c_int> {
    // SAFETY: reading the environ variable.
    execve_with(path, argv, unsafe { environ })
}

pub(crate) fn h_execvpe(
    name: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Act<c_int> {
    let fs = state::fs()?;
    let n = cstr(name)?;
    if n.contains('/') || n.is_empty() {
        return execve_with(name, argv, envp);
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/bin:/usr/bin".into());
    let cwd = state::cwd();
    let in_gkfs = |dir: &str| {
        !matches!(
            fs.mount
                .resolve(cwd.as_deref(), if dir.is_empty() { "." } else { dir }),
            api::mountpath::Resolved::Real
        )
    };
    if !path.split(':').any(in_gkfs) {
        // No search directory is ours: glibc's search (with its ENOEXEC fallback).
        let env = build_env(envp, false, None);
        return Some(real_exec(&REAL_EXECVPE, name, argv, &env));
    }
    let mut last = Errno::ENOENT;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let Ok(cand) = CString::new(format!("{dir}/{n}")) else {
            continue;
        };
        let exists = match classify(cand.as_ptr()) {
            Target::Gkfs(p) => state::client()
                .and_then(|c| c.stat(&p))
                .is_ok_and(|r| r.is_file()),
            Target::Fail(_) => false,
            // SAFETY: NUL-terminated path.
            Target::RealPath(p) => (unsafe { libc::access(p.as_ptr(), libc::X_OK) }) == 0,
            Target::Real | Target::RealOrLink(_) => {
                // SAFETY: NUL-terminated path.
                (unsafe { libc::access(cand.as_ptr(), libc::X_OK) }) == 0
            }
        };
        if exists {
            match execve_with(cand.as_ptr(), argv, envp) {
                Some(Err(e)) => last = e,
                other => return other,
            }
        }
    }
    Some(Err(last))
}

pub(crate) fn h_execvp(name: *const c_char, argv: *const *const c_char) -> Act<c_int> {
    // SAFETY: reading the environ variable.
    h_execvpe(name, argv, unsafe { environ })
}

pub(crate) fn h_fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Act<c_int> {
    let of = fds::get(fd);
    state::fs()?;
    let env = build_env(envp, false, None);
    Some(match of {
        Some(of) => exec_gkfs(of.path().to_string(), argv, &env),
        None => {
            type Fexecve =
                unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
            // SAFETY: libc's fexecve, whose prototype this is.
            let Some(f) = (unsafe { REAL_FEXECVE.func::<Fexecve>() }) else {
                return Some(Err(Errno::ENOSYS));
            };
            // SAFETY: the caller's fd and argv, our env.
            checked(crate::hook::outside(|| unsafe {
                f(fd, argv, env.ptrs.as_ptr())
            }))
        }
    })
}

type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;

fn spawn(
    real: SpawnFn,
    pid: *mut libc::pid_t,
    path: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> Act<c_int> {
    state::fs()?;
    if let Target::Gkfs(p) = classify(path) {
        crate::log::unsupported(
            crate::log::Unsupported::Spawn,
            format_args!("posix_spawn of {p} stored in gkfs"),
        );
        return Some(Ok(libc::ENOTSUP));
    }
    let cwd = SPAWN_CWD
        .lock()
        .iter()
        .find(|(f, _)| *f == fa as usize)
        .map(|(_, d)| d.clone());
    let env = build_env(envp.cast(), !fa.is_null(), cwd);
    // The child holds this process's descriptions from now on (no atfork handler runs).
    fds::forked();
    // posix_spawn returns an error number rather than setting errno.
    // SAFETY: the caller's arguments with our environment.
    Some(Ok(unsafe {
        real(pid, path, fa, attr, argv, env.ptrs.as_ptr().cast())
    }))
}

pub(crate) fn h_posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> Act<c_int> {
    spawn(libc::posix_spawn, pid, path, fa, attr, argv, envp)
}

pub(crate) fn h_posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> Act<c_int> {
    spawn(libc::posix_spawnp, pid, file, fa, attr, argv, envp)
}

/// Descriptors opened for `posix_spawn_file_actions_addopen` of gkfs paths, with the
/// file actions object they belong to; closed when it is destroyed.
static SPAWN_OPENED: parking_lot::Mutex<Vec<(usize, c_int)>> = parking_lot::Mutex::new(Vec::new());

/// posix_spawn_file_actions_addopen(3) of a gkfs path: glibc would open it in the child
/// with an internal call. It is opened here, now (close-on-exec), and the child gets it
/// by a dup2 action instead. A relative path under a gkfs working directory that leads
/// out of gkfs is passed on absolute.
pub(crate) fn h_addopen(
    fa: *mut libc::posix_spawn_file_actions_t,
    fd: c_int,
    path: *const c_char,
    oflag: c_int,
    mode: libc::mode_t,
) -> Act<c_int> {
    state::fs()?;
    match classify(path) {
        Target::Real | Target::RealOrLink(_) => None,
        Target::Fail(e) => Some(Ok(e.raw())),
        Target::RealPath(p) => {
            // SAFETY: the caller's file actions with the absolute path (copied by glibc).
            Some(Ok(unsafe { real_addopen(fa, fd, p.as_ptr(), oflag, mode) }))
        }
        Target::Gkfs(_) => {
            // SAFETY: the program's own open of its path, close-on-exec in this process.
            let ours = crate::hook::outside(|| unsafe {
                libc::open(path, oflag | libc::O_CLOEXEC, mode as c_int)
            });
            if ours < 0 {
                return Some(Ok(crate::hook::errno()));
            }
            SPAWN_OPENED.lock().push((fa as usize, ours));
            // SAFETY: the caller's file actions object; dup2 our new fd onto `fd`.
            Some(Ok(unsafe {
                libc::posix_spawn_file_actions_adddup2(fa, ours, fd)
            }))
        }
    }
}

/// glibc's addopen (not in the libc crate's safe surface under this name).
unsafe fn real_addopen(
    fa: *mut libc::posix_spawn_file_actions_t,
    fd: c_int,
    path: *const c_char,
    oflag: c_int,
    mode: libc::mode_t,
) -> c_int {
    static REAL: crate::hook::Real = crate::hook::Real::new(c"posix_spawn_file_actions_addopen");
    type AddOpen = unsafe extern "C" fn(
        *mut libc::posix_spawn_file_actions_t,
        c_int,
        *const c_char,
        c_int,
        libc::mode_t,
    ) -> c_int;
    // SAFETY: libc's posix_spawn_file_actions_addopen, whose prototype this is.
    let Some(f) = (unsafe { REAL.func::<AddOpen>() }) else {
        return libc::ENOSYS;
    };
    // SAFETY: the caller's arguments.
    unsafe { f(fa, fd, path, oflag, mode) }
}

/// The gkfs working directory `posix_spawn_file_actions_addchdir_np` chose, per file
/// actions object: the child gets it in `LIBGKFS_CWD` (the kernel cannot enter it).
static SPAWN_CWD: parking_lot::Mutex<Vec<(usize, String)>> = parking_lot::Mutex::new(Vec::new());

/// posix_spawn_file_actions_addchdir_np(3): a gkfs directory is noted for the spawn;
/// a real one is a real action (and undoes an earlier gkfs one).
pub(crate) fn h_addchdir(
    fa: *mut libc::posix_spawn_file_actions_t,
    path: *const c_char,
) -> Act<c_int> {
    let fs = state::fs()?;
    let forget = || SPAWN_CWD.lock().retain(|(f, _)| *f != fa as usize);
    match classify(path) {
        Target::Gkfs(p) => {
            forget();
            SPAWN_CWD.lock().push((fa as usize, fs.mount.outside(&p)));
            Some(Ok(0))
        }
        Target::Fail(e) => Some(Ok(e.raw())),
        Target::RealPath(p) => {
            forget();
            // SAFETY: the caller's file actions with the absolute path (copied by glibc).
            Some(Ok(unsafe { real_addchdir(fa, p.as_ptr()) }))
        }
        Target::Real | Target::RealOrLink(_) => {
            forget();
            None
        }
    }
}

/// glibc's addchdir_np.
unsafe fn real_addchdir(fa: *mut libc::posix_spawn_file_actions_t, path: *const c_char) -> c_int {
    static REAL: crate::hook::Real =
        crate::hook::Real::new(c"posix_spawn_file_actions_addchdir_np");
    type AddChdir =
        unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const c_char) -> c_int;
    // SAFETY: libc's posix_spawn_file_actions_addchdir_np, whose prototype this is.
    let Some(f) = (unsafe { REAL.func::<AddChdir>() }) else {
        return libc::ENOSYS;
    };
    // SAFETY: the caller's arguments.
    unsafe { f(fa, path) }
}

/// posix_spawn_file_actions_destroy(3): closes what addopen opened for it.
pub(crate) fn h_fa_destroy(fa: *mut libc::posix_spawn_file_actions_t) -> Act<c_int> {
    SPAWN_CWD.lock().retain(|(f, _)| *f != fa as usize);
    let mine: Vec<c_int> = {
        let mut opened = SPAWN_OPENED.lock();
        let (mine, rest) = opened.drain(..).partition(|(f, _)| *f == fa as usize);
        *opened = rest;
        mine.into_iter().map(|(_, fd)| fd).collect()
    };
    for fd in mine {
        // SAFETY: the program's own close of the fd opened for it.
        crate::hook::outside(|| unsafe { libc::close(fd) });
    }
    None
}

/// Runs `f` (glibc's system or popen, which start `/bin/sh` with `environ` through
/// calls no preload can see) with the gkfs state in `environ`, removed again after.
fn with_state_in_environ<R>(f: impl FnOnce() -> R) -> R {
    let env = build_env(std::ptr::null(), false, None);
    let ours: Vec<&CString> = env
        .strings
        .iter()
        .filter(|s| {
            let b = s.to_bytes();
            b.starts_with(ENV_FDS.as_bytes()) || b.starts_with(ENV_CWD.as_bytes())
        })
        .collect();
    if ours.is_empty() {
        return f();
    }
    for s in &ours {
        let text = s.to_string_lossy();
        if let Some((k, v)) = text.split_once('=') {
            let (k, v) = (
                CString::new(k).unwrap_or_default(),
                CString::new(v).unwrap_or_default(),
            );
            // SAFETY: NUL-terminated strings; setenv copies them.
            unsafe { libc::setenv(k.as_ptr(), v.as_ptr(), 1) };
        }
    }
    let r = f();
    // SAFETY: removing the variables set above.
    unsafe {
        libc::unsetenv(c"LIBGKFS_FDS".as_ptr());
        libc::unsetenv(c"LIBGKFS_CWD".as_ptr());
    }
    r
}

static REAL_SYSTEM: crate::hook::Real = crate::hook::Real::new(c"system");
static REAL_POPEN: crate::hook::Real = crate::hook::Real::new(c"popen");

pub(crate) fn h_system(cmd: *const c_char) -> Act<c_int> {
    state::fs()?;
    if cmd.is_null() || (state::cwd().is_none() && fds::all().is_empty()) {
        return None;
    }
    // SAFETY: libc's system(3), whose prototype this is.
    let f = unsafe { REAL_SYSTEM.func::<unsafe extern "C" fn(*const c_char) -> c_int>() }?;
    // The shell (and what it leaves running) holds this process's descriptions.
    fds::forked();
    Some(Ok(with_state_in_environ(|| {
        // SAFETY: the caller's command string, passed on.
        crate::hook::outside(|| unsafe { f(cmd) })
    })))
}

pub(crate) fn h_popen(cmd: *const c_char, mode: *const c_char) -> Act<*mut libc::FILE> {
    state::fs()?;
    if state::cwd().is_none() && fds::all().is_empty() {
        return None;
    }
    type Popen = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE;
    // SAFETY: libc's popen(3), whose prototype this is.
    let f = unsafe { REAL_POPEN.func::<Popen>() }?;
    // The command holds this process's descriptions.
    fds::forked();
    Some(checked(with_state_in_environ(|| {
        // SAFETY: the caller's command and mode strings, passed on.
        crate::hook::outside(|| unsafe { f(cmd, mode) })
    })))
}

/// Restores the state a parent handed over (called once at load time).
pub fn inherit() {
    let fds_var = std::env::var(ENV_FDS).ok();
    let cwd_var = std::env::var(ENV_CWD).ok();
    if fds_var.is_none() && cwd_var.is_none() {
        return;
    }
    if state::fs().is_some() {
        let listed: Vec<c_int> = match fds_var.as_deref() {
            Some(SCAN_ALL) => std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            v => v
                .iter()
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.parse::<c_int>().ok())
                .collect(),
        };
        for fd in listed {
            if let Some(of) = fds::OpenFile::adopt(fd) {
                file::bind(fd, of);
            }
        }
        if let Some(cwd) = cwd_var {
            state::set_cwd(Some(cwd));
        }
    }
    // SAFETY: load time, before the program's own threads exist.
    unsafe {
        libc::unsetenv(c"LIBGKFS_FDS".as_ptr());
        libc::unsetenv(c"LIBGKFS_CWD".as_ptr());
    }
}
