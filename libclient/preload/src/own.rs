//! The library's own descriptors, kept out of the program's way (see `fds` for the
//! rules). Descriptors the library creates through libc (its sockets to the daemons,
//! libfabric's sockets, epoll, event fds and pipes) are moved high and marked the
//! moment they are made; threads the library starts (libfabric progress, the daemon
//! probes) run marked as inside the library, so their calls count as the library's.
//! The program's `close_range` and `closefrom` skip the library's descriptors and
//! unbind the gkfs files they close. Calls the program makes itself pass through
//! unchanged.

use std::ffi::{c_int, c_uint, c_void};

use crate::fds::{self, Own};
use crate::hook::{inside, Inside, Real};

macro_rules! real_fn {
    ($name:literal, fn($($t:ty),*) -> $r:ty) => {{
        static REAL: Real = Real::new($name);
        let a = REAL.get();
        if a == 0 {
            None
        } else {
            // SAFETY: libc's definition of this symbol, with its C prototype.
            Some(unsafe { std::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(a) })
        }
    }};
}

fn enosys() -> c_int {
    crate::hook::set_errno(libc::ENOSYS);
    -1
}

/// A descriptor just returned by the real call: the library's own when made inside it.
fn made(fd: c_int) -> c_int {
    if fd >= 0 && inside() {
        fds::own(fd, Own::Process)
    } else {
        fd
    }
}

/// Two descriptors just written to `pair` by the real call (pipe, socketpair).
fn made_pair(r: c_int, pair: *mut c_int) -> c_int {
    if r == 0 && inside() {
        for i in 0..2 {
            // SAFETY: the real call filled both slots of the caller's array.
            unsafe { *pair.add(i) = fds::own(*pair.add(i), Own::Process) };
        }
    }
    r
}

/// socket(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    match real_fn!(c"socket", fn(c_int, c_int, c_int) -> c_int) {
        // SAFETY: the caller's arguments.
        Some(f) => made(unsafe { f(domain, ty, proto) }),
        None => enosys(),
    }
}

/// socketpair(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    proto: c_int,
    sv: *mut c_int,
) -> c_int {
    match real_fn!(c"socketpair", fn(c_int, c_int, c_int, *mut c_int) -> c_int) {
        // SAFETY: the caller's arguments.
        Some(f) => made_pair(unsafe { f(domain, ty, proto, sv) }, sv),
        None => enosys(),
    }
}

/// pipe(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    match real_fn!(c"pipe2", fn(*mut c_int, c_int) -> c_int) {
        // SAFETY: the caller's array; pipe2 without flags is pipe.
        Some(f) => made_pair(unsafe { f(fds, 0) }, fds),
        None => enosys(),
    }
}

/// pipe2(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    match real_fn!(c"pipe2", fn(*mut c_int, c_int) -> c_int) {
        // SAFETY: the caller's arguments.
        Some(f) => made_pair(unsafe { f(fds, flags) }, fds),
        None => enosys(),
    }
}

/// accept(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn accept(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    // SAFETY: the caller's arguments; accept4 without flags is accept.
    unsafe { accept4(fd, addr, len, 0) }
}

/// accept4(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    flags: c_int,
) -> c_int {
    match real_fn!(
        c"accept4",
        fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t, c_int) -> c_int
    ) {
        // SAFETY: the caller's arguments.
        Some(f) => made(unsafe { f(fd, addr, len, flags) }),
        None => enosys(),
    }
}

/// epoll_create(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    if size <= 0 {
        crate::hook::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: epoll_create1 with no flags is epoll_create.
    unsafe { epoll_create1(0) }
}

/// epoll_create1(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    match real_fn!(c"epoll_create1", fn(c_int) -> c_int) {
        // SAFETY: the caller's argument.
        Some(f) => made(unsafe { f(flags) }),
        None => enosys(),
    }
}

/// eventfd(2); the library's own when the library calls it.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn eventfd(count: c_uint, flags: c_int) -> c_int {
    match real_fn!(c"eventfd", fn(c_uint, c_int) -> c_int) {
        // SAFETY: the caller's arguments.
        Some(f) => made(unsafe { f(count, flags) }),
        None => enosys(),
    }
}

type StartRoutine = extern "C" fn(*mut c_void) -> *mut c_void;

/// The start of a thread the library made: it runs inside the library for its life.
extern "C" fn library_thread(p: *mut c_void) -> *mut c_void {
    // SAFETY: `p` is the box pthread_create below leaked for this thread alone.
    let (start, arg) = *unsafe { Box::from_raw(p.cast::<(StartRoutine, usize)>()) };
    let inside = Inside::enter();
    let r = start(arg as *mut c_void);
    drop(inside);
    r
}

/// pthread_create(3); a thread the library starts runs marked as inside the library.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    th: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let Some(real) = real_fn!(
        c"pthread_create",
        fn(*mut libc::pthread_t, *const libc::pthread_attr_t, StartRoutine, *mut c_void) -> c_int
    ) else {
        return libc::ENOSYS;
    };
    if !inside() {
        // SAFETY: the caller's arguments.
        return unsafe { real(th, attr, start, arg) };
    }
    let boxed = Box::into_raw(Box::new((start, arg as usize)));
    // SAFETY: the caller's thread and attributes; our start routine takes the box.
    let r = unsafe { real(th, attr, library_thread, boxed.cast()) };
    if r != 0 {
        // SAFETY: the thread was not made: the box is still ours.
        drop(unsafe { Box::from_raw(boxed) });
    }
    r
}

/// close_range(2) for the program: the library's descriptors in the range stay open,
/// gkfs files in it are unbound (unless only close-on-exec is asked for).
fn close_range_skipping(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let Some(real) = real_fn!(c"close_range", fn(c_uint, c_uint, c_int) -> c_int) else {
        return enosys();
    };
    if first > last {
        // SAFETY: the kernel reports the invalid range.
        return unsafe { real(first, last, flags) };
    }
    let hi = last.min(fds::MAX_FD as u32 - 1);
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 && !crate::state::in_vfork_child() {
        for fd in fds::all() {
            if (first..=hi).contains(&(fd as c_uint)) {
                crate::file::unbind(fd);
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

/// close_range(2); see [`close_range_skipping`].
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if inside() {
        return match real_fn!(c"close_range", fn(c_uint, c_uint, c_int) -> c_int) {
            // SAFETY: the library's own call, passed on.
            Some(f) => unsafe { f(first, last, flags) },
            None => enosys(),
        };
    }
    let _inside = Inside::enter();
    close_range_skipping(first, last, flags)
}

/// closefrom(3): every descriptor from `low` up, except the library's.
///
/// # Safety
/// Called by C code with the argument of the libc function.
#[no_mangle]
pub unsafe extern "C" fn closefrom(low: c_int) {
    let low = low.max(0) as c_uint;
    let _inside = Inside::enter();
    if close_range_skipping(low, c_uint::MAX, 0) != 0 {
        // No close_range (an old kernel): one by one, as glibc falls back to.
        for fd in low..fds::floor().max(1024) as c_uint {
            if !fds::is_library(fd as c_int) {
                if fds::is_ours(fd as c_int) {
                    crate::file::unbind(fd as c_int);
                }
                // SAFETY: closes the caller's descriptor.
                unsafe { libc::syscall(libc::SYS_close, fd) };
            }
        }
    }
}
