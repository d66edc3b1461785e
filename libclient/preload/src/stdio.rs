//! stdio streams on gkfs files. glibc's stdio reads and writes with internal calls no
//! preload library can see, so: `fopen`/`fdopen` of gkfs files return `fopencookie`
//! streams over the library's own read/write/seek; and when fd 0, 1 or 2 is a gkfs
//! file (`cmd > /tmp/gkfs/out`, `sort < /tmp/gkfs/in`) the `stdin`/`stdout`/`stderr`
//! variables (assignable, as the glibc manual documents) point at such a stream until
//! the fd changes again. Every cookie stream is flushed by an atexit handler, before
//! shared-library destructors run.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Once};

use gkfs_proto::Errno;

use crate::fds::{self, OpenFile};
use crate::file::{self, read_of, seek_of, write_of};
use crate::hook::{callback, cstr, Act};
use crate::paths::{classify, route, Target};

pub(crate) type File = libc::FILE;

/// glibc's `cookie_io_functions_t` (not in the libc crate).
#[repr(C)]
struct CookieFns {
    read: unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> isize,
    write: unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize,
    seek: unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int,
    close: unsafe extern "C" fn(*mut c_void) -> c_int,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, fns: CookieFns) -> *mut File;
    static mut stdin: *mut File;
    static mut stdout: *mut File;
    static mut stderr: *mut File;
    fn gkfs_set_fileno(f: *mut File, fd: c_int);
}

struct Cookie {
    fd: c_int,
    of: Arc<OpenFile>,
    /// Closing the stream closes the fd (fopen/fdopen), or not (a std stream).
    owns_fd: bool,
}

unsafe extern "C" fn c_read(c: *mut c_void, buf: *mut c_char, n: usize) -> isize {
    // SAFETY: the cookie we registered.
    let c = unsafe { &*(c as *const Cookie) };
    callback(|| read_of(&c.of, file::buf_mut(buf.cast(), n), None).map(|n| n as isize))
}

unsafe extern "C" fn c_write(c: *mut c_void, buf: *const c_char, n: usize) -> isize {
    // SAFETY: the cookie we registered.
    let c = unsafe { &*(c as *const Cookie) };
    callback(|| write_of(&c.of, file::buf(buf.cast(), n), None).map(|n| n as isize))
}

unsafe extern "C" fn c_seek(c: *mut c_void, off: *mut i64, whence: c_int) -> c_int {
    // SAFETY: the cookie we registered.
    let c = unsafe { &*(c as *const Cookie) };
    callback(|| {
        // SAFETY: glibc passes a valid offset pointer.
        let o = unsafe { &mut *off };
        *o = seek_of(&c.of, *o, whence)?;
        Ok(0)
    })
}

unsafe extern "C" fn c_close(c: *mut c_void) -> c_int {
    // SAFETY: the cookie we registered, given back once.
    let c = unsafe { Box::from_raw(c as *mut Cookie) };
    callback(|| {
        if c.owns_fd && fds::get(c.fd).is_some_and(|of| Arc::ptr_eq(&of, &c.of)) {
            file::close_ours(c.fd)
        } else {
            Ok(0)
        }
    })
}

fn flush_at_exit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        extern "C" fn flush() {
            // SAFETY: fflush(NULL) flushes every stream.
            unsafe { libc::fflush(std::ptr::null_mut()) };
        }
        // SAFETY: registers a plain extern "C" fn.
        unsafe { libc::atexit(flush) };
    });
}

/// The mode fopencookie understands for a stdio mode: glibc reads a `+` only right
/// after the first letter (or a `b`), so "wx+" or "we+" would make a stream that cannot
/// read. (`x` and `e` are already done by the open.)
fn cookie_mode(mode: *const c_char) -> &'static std::ffi::CStr {
    let m = cstr(mode).unwrap_or("r");
    let m = m.split(',').next().unwrap_or(m);
    match (m.chars().next(), m.contains('+')) {
        (Some('w'), false) => c"w",
        (Some('w'), true) => c"w+",
        (Some('a'), false) => c"a",
        (Some('a'), true) => c"a+",
        (_, true) => c"r+",
        _ => c"r",
    }
}

/// A stdio stream over our fd `fd`.
fn make_stream(
    fd: c_int,
    of: Arc<OpenFile>,
    mode: *const c_char,
    owns_fd: bool,
) -> Result<*mut File, Errno> {
    flush_at_exit();
    let cookie = Box::into_raw(Box::new(Cookie { fd, of, owns_fd }));
    let funcs = CookieFns {
        read: c_read,
        write: c_write,
        seek: c_seek,
        close: c_close,
    };
    // SAFETY: fopencookie with our cookie and callbacks; checked.
    let f = unsafe { fopencookie(cookie.cast(), cookie_mode(mode).as_ptr(), funcs) };
    if f.is_null() {
        // SAFETY: not handed to glibc.
        drop(unsafe { Box::from_raw(cookie) });
        return Err(Errno::ENOMEM);
    }
    // SAFETY: a live FILE from fopencookie.
    unsafe { gkfs_set_fileno(f, fd) };
    Ok(f)
}

/// open(2) flags of an fopen mode string.
fn mode_flags(mode: &str) -> Result<c_int, Errno> {
    let mut chars = mode.chars();
    let mut f = match chars.next() {
        Some('r') => libc::O_RDONLY,
        Some('w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some('a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return Err(Errno::EINVAL),
    };
    for c in chars {
        match c {
            '+' => f = (f & !libc::O_ACCMODE) | libc::O_RDWR,
            'x' => f |= libc::O_EXCL,
            'e' => f |= libc::O_CLOEXEC,
            ',' => break,
            _ => {}
        }
    }
    Ok(f)
}

fn fopen_gkfs(p: String, mode: *const c_char) -> Result<*mut File, Errno> {
    let flags = mode_flags(cstr(mode).ok_or(Errno::EINVAL)?)?;
    let fd = file::open_gkfs(p, flags, 0o666)?;
    match fds::get(fd) {
        Some(of) => make_stream(fd, of, mode, true).inspect_err(|_| {
            let _ = file::close_ours(fd);
        }),
        // A symlink that led out of gkfs: a real fd.
        // SAFETY: a real fd we own.
        None => Ok(unsafe { libc::fdopen(fd, mode) }),
    }
}

pub(crate) fn h_fopen(path: *const c_char, mode: *const c_char) -> Act<*mut File> {
    // SAFETY: rewritten path, the caller's mode.
    route(
        classify(path),
        |p| unsafe { libc::fopen(p, mode) },
        |p| fopen_gkfs(p, mode),
    )
}

pub(crate) fn h_fdopen(fd: c_int, mode: *const c_char) -> Act<*mut File> {
    let of = fds::get(fd)?;
    Some(make_stream(fd, of, mode, true))
}

fn std_index(stream: *mut File) -> Option<c_int> {
    // SAFETY: reading the std stream variables.
    let cur = unsafe { [stdin, stdout, stderr] };
    (0..3).find(|&i| cur[i] == stream).map(|i| i as c_int)
}

/// Points std fd `i` at `fd` (a gkfs or a real fd), swapping the std stream.
fn redirect_std(i: c_int, fd: c_int) -> Result<*mut File, Errno> {
    before_std_fd_change(i);
    // SAFETY: dup2 of a descriptor we opened onto the std fd.
    let r = crate::paths::checked(unsafe { libc::dup2(fd, i) });
    match fds::get(fd) {
        Some(of) if r.is_ok() => fds::insert(i, of),
        _ if r.is_ok() => {
            fds::remove(i);
        }
        _ => {}
    }
    std_fd_changed(i);
    r?;
    // SAFETY: reading the std stream variable as it is now.
    Ok(unsafe { *std_var(i) })
}

pub(crate) fn h_freopen(
    path: *const c_char,
    mode: *const c_char,
    stream: *mut File,
) -> Act<*mut File> {
    let t = if path.is_null() {
        // freopen(NULL, mode, stream) reopens the stream's own file with a new mode:
        // glibc would reopen the reserved fd (and crash on a cookie stream).
        if stream.is_null() {
            return None;
        }
        // SAFETY: the caller's stream.
        let fd = unsafe { libc::fileno(stream) };
        Target::Gkfs(fds::get(fd)?.path().to_string())
    } else {
        classify(path)
    };
    let std_fd = std_index(stream);
    let ours_now = std_fd.is_some_and(|i| !SWAPPED[i as usize].load(Ordering::Acquire).is_null());
    if !matches!(t, Target::Gkfs(_)) && !ours_now {
        return match t {
            // SAFETY: rewritten path, the caller's mode and stream.
            Target::RealPath(p) => Some(crate::paths::checked(unsafe {
                libc::freopen(p.as_ptr(), mode, stream)
            })),
            Target::Fail(e) => Some(Err(e)),
            _ => None,
        };
    }
    Some((|| {
        let flags = mode_flags(cstr(mode).ok_or(Errno::EINVAL)?)?;
        // SAFETY: flushing the caller's stream.
        unsafe { libc::fflush(stream) };
        let Some(i) = std_fd else {
            // Not a std stream: close it and open a new one (freopen may move it).
            // SAFETY: closing the caller's stream as freopen does.
            unsafe { libc::fclose(stream) };
            return match t {
                Target::Gkfs(p) => crate::paths::with_links(p, |p| fopen_gkfs(p, mode)),
                _ => Err(Errno::EINVAL),
            };
        };
        let fd = match t {
            Target::Gkfs(p) => crate::paths::with_links(p, |p| file::open_gkfs(p, flags, 0o666))?,
            Target::RealPath(p) => {
                // SAFETY: NUL-terminated path.
                crate::paths::checked(unsafe { libc::open(p.as_ptr(), flags, 0o666) })?
            }
            Target::Fail(e) => return Err(e),
            Target::Real | Target::RealOrLink(_) => {
                // SAFETY: the caller's NUL-terminated path.
                crate::paths::checked(unsafe { libc::open(path, flags, 0o666) })?
            }
        };
        let r = redirect_std(i, fd);
        if fds::is_ours(fd) {
            file::close_ours(fd)?;
        } else {
            // SAFETY: our temporary real fd.
            unsafe { libc::close(fd) };
        }
        r
    })())
}

static ORIG: [AtomicPtr<File>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];
static SWAPPED: [AtomicPtr<File>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];

fn std_var(i: c_int) -> *mut *mut File {
    // Addresses of the std stream variables (no reference is formed).
    match i {
        0 => &raw mut stdin,
        1 => &raw mut stdout,
        _ => &raw mut stderr,
    }
}

/// Flushes the std stream of fd 0-2 if it is ours, before the fd changes.
pub fn before_std_fd_change(fd: c_int) {
    if (0..3).contains(&fd) {
        let s = SWAPPED[fd as usize].load(Ordering::Acquire);
        if !s.is_null() {
            // SAFETY: our live cookie stream.
            unsafe { libc::fflush(s) };
        }
    }
}

/// Points stdin/stdout/stderr at a cookie stream when fd 0/1/2 became ours, or back at
/// glibc's stream when it stopped being ours.
pub fn std_fd_changed(fd: c_int) {
    if !(0..3).contains(&fd) {
        return;
    }
    let i = fd as usize;
    let var = std_var(fd);
    match fds::get(fd) {
        Some(of) => {
            let mode: &std::ffi::CStr = if fd == 0 { c"r" } else { c"a" };
            let Ok(s) = make_stream(fd, of, mode.as_ptr(), false) else {
                return;
            };
            if fd == 2 {
                // SAFETY: a fresh stream; stderr is unbuffered.
                unsafe { libc::setvbuf(s, std::ptr::null_mut(), libc::_IONBF, 0) };
            }
            let old = SWAPPED[i].swap(s, Ordering::AcqRel);
            if old.is_null() {
                // SAFETY: reading the std stream variable.
                ORIG[i].store(unsafe { *var }, Ordering::Release);
            }
            // SAFETY: assigning the std stream variable, as glibc allows.
            unsafe { *var = s };
        }
        None => {
            let old = SWAPPED[i].swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !old.is_null() {
                // SAFETY: restoring glibc's stream.
                unsafe { *var = ORIG[i].load(Ordering::Acquire) };
            }
        }
    }
}
