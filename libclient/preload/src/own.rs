//! The library's own descriptors, kept out of the program's way (see `fds` for the
//! rules). Descriptors the library creates through libc (its sockets to the daemons,
//! libfabric's sockets, epoll, event fds and pipes; the chunk files the client keeps
//! open, [`own_kept`]) are moved high and marked the
//! moment they are made; threads the library starts (libfabric progress, the daemon
//! probes) run marked as inside the library, so their calls count as the library's.
//! The program's `close_range` and `closefrom` skip the library's descriptors and
//! unbind the gkfs files they close. Calls the program makes itself pass through
//! unchanged.

use std::ffi::{c_int, c_uint, c_void};

use crate::fds;
use crate::hook::{inside, Act, Inside, Real};

/// A descriptor just returned by the real call: the library's own when made inside it.
fn made(fd: c_int) -> c_int {
    if fd >= 0 && inside() {
        fds::own(fd)
    } else {
        fd
    }
}

/// A chunk file the client keeps open (the chunk files it reads and writes of this
/// node's daemon), just opened inside the library: a library descriptor from now on.
pub fn own_kept(f: std::fs::File) -> std::fs::File {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = fds::own(f.into_raw_fd());
    // SAFETY: `fd` is the descriptor just opened (or its high copy, the low one
    // closed), owned by nothing else.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// Two descriptors just written to `pair` by the real call (pipe, socketpair).
fn made_pair(r: c_int, pair: *mut c_int) -> c_int {
    if r == 0 && inside() {
        for i in 0..2 {
            // SAFETY: the real call filled both slots of the caller's array.
            unsafe { *pair.add(i) = fds::own(*pair.add(i)) };
        }
    }
    r
}

/// socket(2).
pub fn socket(d: c_int, t: c_int, p: c_int, real: &dyn Fn(c_int, c_int, c_int) -> c_int) -> c_int {
    made(real(d, t, p))
}

/// socketpair(2).
pub fn socketpair(
    d: c_int,
    t: c_int,
    p: c_int,
    sv: *mut c_int,
    real: &dyn Fn(c_int, c_int, c_int, *mut c_int) -> c_int,
) -> c_int {
    made_pair(real(d, t, p, sv), sv)
}

/// pipe(2).
pub fn pipe(fds: *mut c_int, real: &dyn Fn(*mut c_int) -> c_int) -> c_int {
    made_pair(real(fds), fds)
}

/// pipe2(2).
pub fn pipe2(fds: *mut c_int, flags: c_int, real: &dyn Fn(*mut c_int, c_int) -> c_int) -> c_int {
    made_pair(real(fds, flags), fds)
}

type AddrLen = *mut libc::socklen_t;

/// accept(2).
pub fn accept(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: AddrLen,
    real: &dyn Fn(c_int, *mut libc::sockaddr, AddrLen) -> c_int,
) -> c_int {
    made(real(fd, addr, len))
}

/// accept4(2).
pub fn accept4(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: AddrLen,
    flags: c_int,
    real: &dyn Fn(c_int, *mut libc::sockaddr, AddrLen, c_int) -> c_int,
) -> c_int {
    made(real(fd, addr, len, flags))
}

/// epoll_create(2), epoll_create1(2), eventfd(2): one int argument.
pub fn made_by_int(v: c_int, real: &dyn Fn(c_int) -> c_int) -> c_int {
    made(real(v))
}

/// eventfd(2).
pub fn eventfd(count: c_uint, flags: c_int, real: &dyn Fn(c_uint, c_int) -> c_int) -> c_int {
    made(real(count, flags))
}

/// The start routine of a thread.
pub type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;

/// The start of a thread the library made: it runs inside the library for its life.
extern "C" fn library_thread(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the box pthread_create below leaked for this thread alone.
    let (start, arg) = *unsafe { Box::from_raw(p.cast::<(StartRoutine, usize)>()) };
    let inside = Inside::enter();
    let r = start(arg as *mut c_void);
    drop(inside);
    r
}

type PthreadCreate =
    dyn Fn(*mut libc::pthread_t, *const libc::pthread_attr_t, StartRoutine, *mut c_void) -> c_int;

/// pthread_create(3): a thread the library starts runs marked as inside the library.
pub fn pthread_create(
    th: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
    real: &PthreadCreate,
) -> c_int {
    if !inside() {
        return real(th, attr, start, arg);
    }
    let boxed = Box::into_raw(Box::new((start, arg as usize)));
    let r = real(th, attr, library_thread, boxed.cast());
    if r != 0 {
        // SAFETY: the thread was not made: the box is still ours.
        drop(unsafe { Box::from_raw(boxed) });
    }
    r
}

/// close_range(2) for the program: the library's descriptors in the range stay open,
/// gkfs files in it are unbound (unless only close-on-exec is asked for).
fn close_range_skipping(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    static REAL: Real = Real::new(c"close_range");
    // SAFETY: the type is the C prototype of the symbol `REAL` names.
    let Some(real) =
        (unsafe { REAL.func::<unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int>() })
    else {
        crate::hook::set_errno(libc::ENOSYS);
        return -1;
    };
    if first > last {
        // SAFETY: the kernel reports the invalid range.
        return unsafe { real(first, last, flags) };
    }
    let hi = last.min(fds::MAX_FD as u32 - 1);
    // Dropped after the kernel's close (see `file::unbind`).
    let mut ended = Vec::new();
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 && !crate::state::in_vfork_child() {
        for fd in fds::all() {
            if (first..=hi).contains(&(fd as c_uint)) {
                ended.extend(crate::file::unbind(fd));
            }
        }
    }
    let mut from = first;
    for lib in fds::library_fds(first, hi) {
        let lib = lib as c_uint;
        if lib > from {
            // SAFETY: a sub-range of the caller's range without library descriptors.
            let r = unsafe { real(from, lib - 1, flags) };
            if r != 0 {
                return r;
            }
        }
        from = lib + 1;
    }
    if from > last {
        return 0;
    }
    // SAFETY: the rest of the caller's range.
    unsafe { real(from, last, flags) }
}

/// close_range(2) of the program; see [`close_range_skipping`].
pub fn h_close_range(first: c_uint, last: c_uint, flags: c_int) -> Act<c_int> {
    Some(match close_range_skipping(first, last, flags) {
        -1 => Err(gkfs_proto::Errno(crate::hook::errno())),
        r => Ok(r),
    })
}

/// closefrom(3): every descriptor from `low` up, except the library's.
pub fn h_closefrom(low: c_int) -> Act<()> {
    let low = low.max(0) as c_uint;
    if close_range_skipping(low, c_uint::MAX, 0) != 0 {
        // No close_range (an old kernel): one by one, as glibc falls back to.
        for fd in low..fds::floor().max(1024) as c_uint {
            if !fds::is_library(fd as c_int) {
                let ended = crate::file::unbind(fd as c_int);
                // SAFETY: closes the caller's descriptor.
                unsafe { libc::syscall(libc::SYS_close, fd) };
                drop(ended);
            }
        }
    }
    Some(Ok(()))
}
