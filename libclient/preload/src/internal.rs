//! glibc functions that reach the file system through glibc-internal calls, which no
//! preload library can see (`mkstemp` opens with `__open`, `remove` unlinks with
//! `__unlink`, `glob` and `nftw` list with `__opendir`): for gkfs paths they are done
//! here over the library's own public entry points, called as the program would call
//! them (`hook::outside`), so every path, descriptor and errno rule applies unchanged.
//! Paths elsewhere go to glibc untouched. README.md has the whole audit.

use std::ffi::{c_char, c_int, c_void, CStr};

use gkfs_proto::Errno;

use crate::hook::{self, cstr, outside, Act, Real};
use crate::paths::{classify, Target};

/// Would glibc's internal calls on `path` miss gkfs? (A gkfs path, or one rewritten
/// relative to a gkfs working directory.)
fn ours(path: *const c_char) -> bool {
    !matches!(classify(path), Target::Real | Target::RealOrLink(_))
}

/// The errno of the call just made.
fn last() -> Errno {
    Errno(hook::errno())
}

/// Fills the six `X`s before the `suffix` last bytes of `template` with random
/// letters and digits until `make` (an exclusive create) does not fail with EEXIST.
fn fill_template(
    template: *mut c_char,
    suffix: c_int,
    mut make: impl FnMut(*mut c_char) -> Result<c_int, Errno>,
) -> Result<c_int, Errno> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // SAFETY: the caller's NUL-terminated template (checked non-null by `ours`).
    let len = unsafe { CStr::from_ptr(template) }.to_bytes().len();
    let suffix = usize::try_from(suffix).map_err(|_| Errno::EINVAL)?;
    if len < 6 + suffix {
        return Err(Errno::EINVAL);
    }
    let start = len - 6 - suffix;
    // SAFETY: `start..start + 6` lies inside the template's `len` bytes.
    let xs = unsafe { std::slice::from_raw_parts_mut(template.add(start).cast::<u8>(), 6) };
    if xs != b"XXXXXX" {
        return Err(Errno::EINVAL);
    }
    // glibc tries TMP_MAX (238328) names; random names collide so rarely that far fewer
    // attempts mean the directory is full of them.
    for _ in 0..10_000 {
        let mut random = [0u8; 6];
        // SAFETY: getrandom fills the local buffer.
        if unsafe { libc::getrandom(random.as_mut_ptr().cast(), 6, 0) } != 6 {
            return Err(last());
        }
        for (x, r) in xs.iter_mut().zip(random) {
            *x = LETTERS[r as usize % LETTERS.len()];
        }
        match make(template) {
            Err(Errno::EEXIST) => continue,
            done => return done,
        }
    }
    xs.copy_from_slice(b"XXXXXX");
    Err(Errno::EEXIST)
}

/// `mkostemps` and its family for a gkfs template: an exclusive create, mode 0600.
fn temp_file(template: *mut c_char, suffix: c_int, flags: c_int) -> Act<c_int> {
    if !ours(template) {
        return None;
    }
    // As glibc: the caller's flags go to the open unchecked (less the access mode).
    let flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
    Some(fill_template(template, suffix, |t| {
        // SAFETY: the program's own call, on the template being filled in.
        let fd = outside(|| unsafe { libc::open(t, flags, 0o600) });
        if fd < 0 {
            Err(last())
        } else {
            Ok(fd)
        }
    }))
}

pub(crate) fn h_mkstemp(t: *mut c_char) -> Act<c_int> {
    temp_file(t, 0, 0)
}

pub(crate) fn h_mkostemp(t: *mut c_char, flags: c_int) -> Act<c_int> {
    temp_file(t, 0, flags)
}

pub(crate) fn h_mkstemps(t: *mut c_char, suffix: c_int) -> Act<c_int> {
    temp_file(t, suffix, 0)
}

pub(crate) fn h_mkostemps(t: *mut c_char, suffix: c_int, flags: c_int) -> Act<c_int> {
    temp_file(t, suffix, flags)
}

pub(crate) fn h_mkdtemp(t: *mut c_char) -> Act<*mut c_char> {
    if !ours(t) {
        return None;
    }
    Some(
        fill_template(t, 0, |t| {
            // SAFETY: the program's own call, on the template being filled in.
            if outside(|| unsafe { libc::mkdir(t, 0o700) }) == 0 {
                Ok(0)
            } else {
                Err(last())
            }
        })
        .map(|_| t),
    )
}

/// mktemp(3): a name that does not exist yet (what glibc checks with an internal
/// lstat). As unsafe as glibc's: prefer mkstemp.
pub(crate) fn h_mktemp(t: *mut c_char) -> Act<*mut c_char> {
    if !ours(t) {
        return None;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let r = fill_template(t, 0, |t| {
        // SAFETY: the program's own call, with a local stat buffer.
        match outside(|| unsafe { libc::lstat(t, st.as_mut_ptr()) }) {
            0 => Err(Errno::EEXIST),
            _ if hook::errno() == libc::ENOENT => Ok(0),
            _ => Err(last()),
        }
    });
    if r.is_err() {
        // mktemp reports failure with an empty string, not NULL.
        // SAFETY: the template has at least one byte (its NUL).
        unsafe { *t = 0 };
    }
    Some(Ok(t))
}

/// remove(3): unlink, or rmdir for a directory (glibc uses its internal unlink/rmdir).
pub(crate) fn h_remove(path: *const c_char) -> Act<c_int> {
    if !ours(path) {
        return None;
    }
    // SAFETY: the program's own calls with its path.
    if outside(|| unsafe { libc::unlink(path) }) == 0 {
        return Some(Ok(0));
    }
    let e = hook::errno();
    if e != libc::EISDIR && e != libc::EPERM {
        return Some(Err(Errno(e)));
    }
    // SAFETY: as above.
    Some(match outside(|| unsafe { libc::rmdir(path) }) {
        0 => Ok(0),
        _ => Err(last()),
    })
}

/// glibc's `glob_t`, with the GLOB_ALTDIRFUNC members.
#[repr(C)]
pub struct Glob {
    pathc: usize,
    pathv: *mut *mut c_char,
    offs: usize,
    flags: c_int,
    closedir: unsafe extern "C" fn(*mut c_void) -> c_int,
    readdir: unsafe extern "C" fn(*mut c_void) -> *mut libc::dirent64,
    opendir: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    lstat: unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int,
    stat: unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int,
}

pub(crate) type GlobErr = Option<unsafe extern "C" fn(*const c_char, c_int) -> c_int>;
const GLOB_ALTDIRFUNC: c_int = 1 << 9;

/// glob(3) with the directory functions set to the library's own entry points (the
/// documented GLOB_ALTDIRFUNC), when the process has gkfs and the program did not
/// bring its own. Patterns whose directories are not in gkfs get the same answer: the
/// entry points pass them on to libc.
fn glob_through(
    real: &'static Real,
    pattern: *const c_char,
    flags: c_int,
    errfunc: GlobErr,
    pglob: *mut Glob,
) -> Act<c_int> {
    if flags & GLOB_ALTDIRFUNC != 0 || pglob.is_null() || crate::state::fs().is_none() {
        return None;
    }
    cstr(pattern)?;
    // SAFETY: the caller's glob_t; glob itself fills the other members.
    unsafe {
        (*pglob).closedir = crate::table::closedir;
        (*pglob).readdir = crate::table::readdir64;
        (*pglob).opendir = crate::table::opendir;
        (*pglob).lstat = crate::table::lstat64;
        (*pglob).stat = crate::table::stat64;
    }
    // SAFETY: the type is the C prototype of the symbol `real` names.
    let Some(f) = (unsafe {
        real.func::<unsafe extern "C" fn(*const c_char, c_int, GlobErr, *mut Glob) -> c_int>()
    }) else {
        return Some(Err(Errno::ENOSYS));
    };
    // SAFETY: the caller's arguments, GLOB_ALTDIRFUNC added; glob calls the program's
    // entry points (outside the library) as the program would.
    Some(Ok(outside(|| unsafe {
        f(pattern, flags | GLOB_ALTDIRFUNC, errfunc, pglob)
    })))
}

pub(crate) fn h_glob(
    pattern: *const c_char,
    flags: c_int,
    errfunc: GlobErr,
    pglob: *mut Glob,
) -> Act<c_int> {
    static REAL: Real = Real::new(c"glob");
    glob_through(&REAL, pattern, flags, errfunc, pglob)
}

pub(crate) fn h_glob64(
    pattern: *const c_char,
    flags: c_int,
    errfunc: GlobErr,
    pglob: *mut Glob,
) -> Act<c_int> {
    static REAL: Real = Real::new(c"glob64");
    glob_through(&REAL, pattern, flags, errfunc, pglob)
}

/// glibc's `struct FTW`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ftw {
    base: c_int,
    level: c_int,
}

/// The nftw callback.
pub type NftwFn = unsafe extern "C" fn(*const c_char, *const libc::stat, c_int, *mut Ftw) -> c_int;
/// The ftw callback.
pub type FtwFn = unsafe extern "C" fn(*const c_char, *const libc::stat, c_int) -> c_int;

/// One walk of nftw(3)/ftw(3) over the program's entry points (glibc's walks with
/// internal opendir/readdir/lstat and sees nothing of gkfs).
struct Walk<'a> {
    flags: c_int,
    visit: &'a mut dyn FnMut(&CStr, *const libc::stat, c_int, Ftw) -> c_int,
    /// (dev, ino) of the directories being walked, against cycles when links are
    /// followed.
    open_dirs: Vec<(u64, u64)>,
    top_dev: u64,
}

/// `<ftw.h>` (not in the libc crate).
mod ftw_h {
    use std::ffi::c_int;
    pub const FTW_F: c_int = 0;
    pub const FTW_D: c_int = 1;
    pub const FTW_DNR: c_int = 2;
    pub const FTW_NS: c_int = 3;
    pub const FTW_SL: c_int = 4;
    pub const FTW_DP: c_int = 5;
    pub const FTW_SLN: c_int = 6;
    pub const FTW_PHYS: c_int = 1;
    pub const FTW_MOUNT: c_int = 2;
    pub const FTW_CHDIR: c_int = 4;
    pub const FTW_DEPTH: c_int = 8;
    pub const FTW_ACTIONRETVAL: c_int = 16;
}

/// What the callback said, with FTW_ACTIONRETVAL.
const FTW_SKIP_SUBTREE: c_int = 2;
const FTW_SKIP_SIBLINGS: c_int = 3;

impl Walk<'_> {
    fn stat(&self, path: &CStr) -> (c_int, libc::stat) {
        // SAFETY: a zeroed stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the program's entry points, with a local buffer.
        let r = unsafe {
            if self.flags & ftw_h::FTW_PHYS != 0 {
                libc::lstat(path.as_ptr(), &mut st)
            } else if libc::stat(path.as_ptr(), &mut st) == 0 {
                0
            } else if hook::errno() == libc::ENOENT
                && libc::lstat(path.as_ptr(), &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFLNK
            {
                return (ftw_h::FTW_SLN, st);
            } else {
                -1
            }
        };
        if r != 0 {
            return (ftw_h::FTW_NS, st);
        }
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => ftw_h::FTW_D,
            libc::S_IFLNK => ftw_h::FTW_SL,
            _ => ftw_h::FTW_F,
        };
        (kind, st)
    }

    /// Visits `path` (and below it); Err(value) ends the walk with that value.
    fn visit_path(&mut self, path: &CStr, base: usize, level: c_int) -> Result<c_int, c_int> {
        let (kind, st) = self.stat(path);
        let info = Ftw {
            base: base as c_int,
            level,
        };
        if kind == ftw_h::FTW_D
            && self.flags & ftw_h::FTW_MOUNT != 0
            && level > 0
            && st.st_dev != self.top_dev
        {
            return Ok(0);
        }
        if kind != ftw_h::FTW_D {
            return self.call(path, &st, kind, info);
        }
        if self.open_dirs.contains(&(st.st_dev, st.st_ino)) {
            return Ok(0);
        }
        // SAFETY: the program's entry point with a NUL-terminated path.
        let dir = unsafe { libc::opendir(path.as_ptr()) };
        if dir.is_null() {
            if hook::errno() != libc::EACCES {
                return Err(-1);
            }
            return self.call(path, &st, ftw_h::FTW_DNR, info);
        }
        let depth_first = self.flags & ftw_h::FTW_DEPTH != 0;
        if !depth_first {
            match self.call(path, &st, ftw_h::FTW_D, info) {
                Ok(FTW_SKIP_SUBTREE) => {
                    // SAFETY: the stream opened above.
                    unsafe { libc::closedir(dir) };
                    return Ok(0);
                }
                Ok(FTW_SKIP_SIBLINGS) => {
                    // SAFETY: as above.
                    unsafe { libc::closedir(dir) };
                    return Ok(FTW_SKIP_SIBLINGS);
                }
                Err(v) => {
                    // SAFETY: as above.
                    unsafe { libc::closedir(dir) };
                    return Err(v);
                }
                Ok(_) => {}
            }
        }
        let mut names = Vec::new();
        loop {
            // SAFETY: the stream opened above; the entry is copied before the next call.
            let e = unsafe { libc::readdir64(dir) };
            if e.is_null() {
                break;
            }
            // SAFETY: readdir returns an entry with a NUL-terminated name.
            let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_bytes().to_vec());
            }
        }
        // SAFETY: as above.
        unsafe { libc::closedir(dir) };
        self.open_dirs.push((st.st_dev, st.st_ino));
        let mut dir_path = path.to_bytes().to_vec();
        if dir_path.last() != Some(&b'/') {
            dir_path.push(b'/');
        }
        let mut outcome = Ok(0);
        for name in names {
            let mut child = dir_path.clone();
            child.extend_from_slice(&name);
            let Ok(child) = std::ffi::CString::new(child) else {
                continue;
            };
            match self.visit_path(&child, dir_path.len(), level + 1) {
                Ok(FTW_SKIP_SIBLINGS) => break,
                Ok(_) => {}
                Err(v) => {
                    outcome = Err(v);
                    break;
                }
            }
        }
        self.open_dirs.pop();
        outcome?;
        if depth_first {
            return self.call(path, &st, ftw_h::FTW_DP, info);
        }
        Ok(0)
    }

    /// Calls the program's callback.
    fn call(
        &mut self,
        path: &CStr,
        st: &libc::stat,
        kind: c_int,
        info: Ftw,
    ) -> Result<c_int, c_int> {
        let v = (self.visit)(path, st, kind, info);
        self.result(v)
    }

    /// A callback's value: go on (Ok) or stop the walk with it (Err).
    fn result(&self, v: c_int) -> Result<c_int, c_int> {
        if self.flags & ftw_h::FTW_ACTIONRETVAL != 0 {
            match v {
                0 => Ok(0),
                FTW_SKIP_SUBTREE | FTW_SKIP_SIBLINGS => Ok(v),
                _ => Err(v),
            }
        } else if v == 0 {
            Ok(0)
        } else {
            Err(v)
        }
    }
}

/// Runs a walk of `dir` with the program's callback, outside the library.
fn walk(
    dir: *const c_char,
    flags: c_int,
    visit: &mut dyn FnMut(&CStr, *const libc::stat, c_int, Ftw) -> c_int,
) -> Act<c_int> {
    if !ours(dir) {
        return None;
    }
    if flags & ftw_h::FTW_CHDIR != 0 {
        // Changing directory along the walk is not done here: honest, not silent.
        return Some(Err(Errno::ENOTSUP));
    }
    // SAFETY: `ours` checked the path is a non-null string.
    let top = unsafe { CStr::from_ptr(dir) };
    let bytes = top.to_bytes();
    let base = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) if i + 1 < bytes.len() => i + 1,
        _ => 0,
    };
    let mut w = Walk {
        flags,
        visit,
        open_dirs: Vec::new(),
        top_dev: 0,
    };
    let r = outside(|| {
        let (kind, st) = w.stat(top);
        if kind == ftw_h::FTW_NS {
            // As glibc: a top that cannot be stat'ed fails the walk.
            return Err(-1);
        }
        w.top_dev = st.st_dev;
        w.visit_path(top, base, 0)
    });
    Some(match r {
        Ok(v) if flags & ftw_h::FTW_ACTIONRETVAL != 0 && v == FTW_SKIP_SIBLINGS => Ok(0),
        Ok(v) => Ok(v),
        Err(-1) => Err(last()),
        Err(v) => Ok(v),
    })
}

pub(crate) fn h_nftw(dir: *const c_char, f: NftwFn, _nopenfd: c_int, flags: c_int) -> Act<c_int> {
    walk(dir, flags, &mut |p, st, kind, mut info| {
        // SAFETY: the program's callback with a path, its stat and a struct FTW.
        unsafe { f(p.as_ptr(), st, kind, &mut info) }
    })
}

pub(crate) fn h_ftw(dir: *const c_char, f: FtwFn, _nopenfd: c_int) -> Act<c_int> {
    walk(dir, 0, &mut |p, st, kind, _| {
        // ftw knows fewer kinds than nftw (glibc's ftw_arr): a link (never seen, as ftw
        // follows them) is a file, a dangling one unstattable.
        let kind = match kind {
            ftw_h::FTW_SL => ftw_h::FTW_F,
            ftw_h::FTW_SLN => ftw_h::FTW_NS,
            ftw_h::FTW_DP => ftw_h::FTW_D,
            k => k,
        };
        // SAFETY: the program's callback with a path and its stat.
        unsafe { f(p.as_ptr(), st, kind) }
    })
}

/// Is the working directory in gkfs (so glibc's internal getcwd would answer with the
/// kernel's)?
fn cwd_is_ours() -> bool {
    crate::state::cwd().is_some()
}

/// getwd(3): getcwd into a PATH_MAX buffer (glibc's is internal).
pub(crate) fn h_getwd(buf: *mut c_char) -> Act<*mut c_char> {
    if !cwd_is_ours() || buf.is_null() {
        return None;
    }
    // SAFETY: the program's own getcwd into its PATH_MAX buffer.
    let r = outside(|| unsafe { libc::getcwd(buf, libc::PATH_MAX as usize) });
    if r.is_null() {
        // SAFETY: getwd reports the error text in the buffer.
        unsafe {
            let msg = libc::strerror(hook::errno());
            libc::strncpy(buf, msg, libc::PATH_MAX as usize - 1);
        }
    }
    Some(Ok(r))
}

/// __getwd_chk (getwd of a _FORTIFY_SOURCE build).
pub(crate) fn h_getwd_chk(buf: *mut c_char, buflen: usize) -> Act<*mut c_char> {
    if buflen < libc::PATH_MAX as usize {
        return None;
    }
    h_getwd(buf)
}

/// __getcwd_chk (getcwd of a _FORTIFY_SOURCE build): glibc's calls its internal getcwd.
pub(crate) fn h_getcwd_chk(buf: *mut c_char, size: usize, buflen: usize) -> Act<*mut c_char> {
    if size > buflen || !cwd_is_ours() {
        return None;
    }
    // SAFETY: the program's own getcwd with its buffer.
    Some(Ok(outside(|| unsafe { libc::getcwd(buf, size) })))
}

/// __readlink_chk (readlink of a _FORTIFY_SOURCE build).
pub(crate) fn h_readlink_chk(
    path: *const c_char,
    buf: *mut c_char,
    len: usize,
    buflen: usize,
) -> Act<isize> {
    h_readlinkat_chk(libc::AT_FDCWD, path, buf, len, buflen)
}

/// __readlinkat_chk.
pub(crate) fn h_readlinkat_chk(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    len: usize,
    buflen: usize,
) -> Act<isize> {
    if len > buflen {
        return None;
    }
    // SAFETY: the program's own readlinkat with its buffer.
    Some(Ok(outside(|| unsafe {
        libc::readlinkat(dirfd, path, buf, len)
    })))
}

/// tempnam(3): glibc checks the directories (TMPDIR, `dir`, P_tmpdir, /tmp) and the
/// names with internal stat calls, so a gkfs directory was passed over for /tmp.
pub(crate) fn h_tempnam(dir: *const c_char, pfx: *const c_char) -> Act<*mut c_char> {
    crate::state::fs()?;
    let is_dir = |p: &str| {
        let Ok(c) = std::ffi::CString::new(p) else {
            return false;
        };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the program's own stat with a local buffer.
        outside(|| unsafe { libc::stat(c.as_ptr(), st.as_mut_ptr()) }) == 0
            // SAFETY: stat filled it.
            && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR
    };
    let tmpdir = std::env::var("TMPDIR").ok();
    let chosen = [tmpdir.as_deref(), cstr(dir), Some("/tmp")]
        .into_iter()
        .flatten()
        .find(|d| is_dir(d))?
        .to_string();
    let ours_dir = std::ffi::CString::new(chosen.clone()).ok()?;
    if !ours(ours_dir.as_ptr()) {
        return None;
    }
    let prefix: String = cstr(pfx).unwrap_or("file").chars().take(5).collect();
    let mut template = format!("{}/{prefix}XXXXXX", chosen.trim_end_matches('/')).into_bytes();
    template.push(0);
    let t = template.as_mut_ptr().cast::<c_char>();
    h_mktemp(t)?.ok()?;
    // SAFETY: the template is NUL-terminated; mktemp emptied it on failure.
    if unsafe { *t } == 0 {
        return Some(Err(Errno::EEXIST));
    }
    // SAFETY: strdup of our NUL-terminated name (the caller frees it).
    Some(Ok(unsafe { libc::strdup(t) }))
}

/// fts_open(3): glibc walks with internal calls and would see an empty directory
/// where gkfs is. Not done for gkfs paths: an honest error (find, rm -r, du and the
/// other coreutils use gnulib's fts, which works).
pub(crate) fn h_fts_open(
    argv: *const *mut c_char,
    _options: c_int,
    _cmp: *const c_void,
) -> Act<*mut c_void> {
    crate::state::fs()?;
    let mut i = 0;
    loop {
        // SAFETY: a NULL-terminated array of paths.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            return None;
        }
        if ours(p) {
            crate::log::unsupported(
                crate::log::Unsupported::Fts,
                format_args!("fts_open of {}", cstr(p).unwrap_or("?")),
            );
            return Some(Err(Errno::ENOTSUP));
        }
        i += 1;
    }
}

/// futimesat(2): utimensat with microseconds.
pub(crate) fn h_futimesat(
    dirfd: c_int,
    path: *const c_char,
    tv: *const libc::timeval,
) -> Act<c_int> {
    if !ours(path) && !crate::fds::is_ours(dirfd) {
        return None;
    }
    let mut ts = [libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    }; 2];
    if !tv.is_null() {
        for (i, t) in ts.iter_mut().enumerate() {
            // SAFETY: the caller's array of two timevals.
            let v = unsafe { *tv.add(i) };
            *t = libc::timespec {
                tv_sec: v.tv_sec,
                tv_nsec: v.tv_usec * 1000,
            };
        }
    }
    // SAFETY: the program's own utimensat with a local array.
    Some(Ok(outside(|| unsafe {
        libc::utimensat(dirfd, path, ts.as_ptr(), 0)
    })))
}

/// mknodat(2) and mkfifoat(3): as mknod and mkfifo (gkfs stores no device or fifo).
pub(crate) fn h_mknodat(
    dirfd: c_int,
    path: *const c_char,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> Act<c_int> {
    let t = crate::paths::classify_at(dirfd, path);
    let Target::Gkfs(p) = t else {
        return match t {
            Target::Fail(e) => Some(Err(e)),
            Target::RealPath(c) => Some(crate::paths::checked(
                // SAFETY: the rewritten absolute path.
                unsafe { libc::mknod(c.as_ptr(), mode, dev) },
            )),
            _ => None,
        };
    };
    let full = crate::state::fs()?.mount.outside(&p);
    let c = std::ffi::CString::new(full).ok()?;
    // SAFETY: the program's own mknod of the same file.
    Some(Ok(outside(|| unsafe {
        libc::mknod(c.as_ptr(), mode, dev)
    })))
}

pub(crate) fn h_mkfifoat(dirfd: c_int, path: *const c_char, mode: libc::mode_t) -> Act<c_int> {
    h_mknodat(dirfd, path, mode | libc::S_IFIFO, 0)
}

/// The removexattr family: as setxattr, not supported on gkfs files (EOPNOTSUPP).
pub(crate) fn h_removexattr(path: *const c_char, _name: *const c_char) -> Act<c_int> {
    ours(path).then_some(Err(Errno::ENOTSUP))
}

pub(crate) fn h_fremovexattr(fd: c_int, _name: *const c_char) -> Act<c_int> {
    crate::fds::is_ours(fd).then_some(Err(Errno::ENOTSUP))
}

/// name_to_handle_at(2): file handles are not offered (EOPNOTSUPP, as the kernel says
/// for such file systems).
pub(crate) fn h_name_to_handle_at(
    dirfd: c_int,
    path: *const c_char,
    _h: *mut c_void,
    _mnt: *mut c_int,
    _flags: c_int,
) -> Act<c_int> {
    (crate::fds::is_ours(dirfd) || ours(path)).then_some(Err(Errno::ENOTSUP))
}

/// syncfs(2) on a gkfs fd: every write is already on its daemons.
pub(crate) fn h_syncfs(fd: c_int) -> Act<c_int> {
    crate::fds::is_ours(fd).then_some(Ok(0))
}

/// readahead(2) on a gkfs fd: nothing to do (there is no client cache).
pub(crate) fn h_readahead(fd: c_int, _off: i64, _count: usize) -> Act<isize> {
    crate::fds::is_ours(fd).then_some(Ok(0))
}

/// sync_file_range(2) on a gkfs fd: as fdatasync.
pub(crate) fn h_sync_file_range(fd: c_int, _off: i64, _n: i64, _flags: u32) -> Act<c_int> {
    crate::fds::is_ours(fd).then_some(Ok(0))
}

/// ftok(3): glibc stats the path internally.
pub(crate) fn h_ftok(path: *const c_char, proj: c_int) -> Act<libc::key_t> {
    if !ours(path) {
        return None;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the program's own stat with a local buffer.
    if outside(|| unsafe { libc::stat(path, st.as_mut_ptr()) }) != 0 {
        return Some(Ok(-1));
    }
    // SAFETY: stat filled it.
    let st = unsafe { st.assume_init() };
    Some(Ok((((proj & 0xff) as u32) << 24
        | ((st.st_dev & 0xff) as u32) << 16
        | (st.st_ino & 0xffff) as u32) as libc::key_t))
}

/// pathconf(3) and fpathconf(3) for gkfs files: glibc asks statfs of the disk below.
fn gkfs_pathconf(name: c_int) -> Result<libc::c_long, Errno> {
    Ok(match name {
        libc::_PC_NAME_MAX => gkfs_proto::path::MAX_NAME as libc::c_long,
        libc::_PC_PATH_MAX => libc::PATH_MAX as libc::c_long,
        libc::_PC_LINK_MAX => u32::MAX as libc::c_long,
        libc::_PC_PIPE_BUF => libc::PIPE_BUF as libc::c_long,
        libc::_PC_FILESIZEBITS => 64,
        libc::_PC_SYMLINK_MAX => libc::PATH_MAX as libc::c_long - 1,
        libc::_PC_NO_TRUNC | libc::_PC_CHOWN_RESTRICTED => 1,
        libc::_PC_REC_XFER_ALIGN | libc::_PC_ALLOC_SIZE_MIN | libc::_PC_REC_MIN_XFER_SIZE => 4096,
        _ => -1,
    })
}

pub(crate) fn h_pathconf(path: *const c_char, name: c_int) -> Act<libc::c_long> {
    if !ours(path) {
        return None;
    }
    // SAFETY: the program's own access check of its path.
    if outside(|| unsafe { libc::access(path, libc::F_OK) }) != 0 {
        return Some(Err(last()));
    }
    Some(gkfs_pathconf(name))
}

pub(crate) fn h_fpathconf(fd: c_int, name: c_int) -> Act<libc::c_long> {
    crate::fds::is_ours(fd).then(|| gkfs_pathconf(name))
}
