//! Descriptors the library creates for itself (libfabric's sockets, epoll and event
//! fds) are made close-on-exec, so programs exec'ed from a preloaded process do not
//! inherit the parent's connections. Only calls made from inside the library are
//! changed; the program's own calls pass through untouched.

use std::ffi::{c_int, c_uint};

use crate::hook::{inside, Real};

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

/// socket(2); close-on-exec when called by the library.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    let ty = if inside() {
        ty | libc::SOCK_CLOEXEC
    } else {
        ty
    };
    match real_fn!(c"socket", fn(c_int, c_int, c_int) -> c_int) {
        // SAFETY: the caller's arguments (plus SOCK_CLOEXEC for our own sockets).
        Some(f) => unsafe { f(domain, ty, proto) },
        None => enosys(),
    }
}

/// socketpair(2); close-on-exec when called by the library.
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
    let ty = if inside() {
        ty | libc::SOCK_CLOEXEC
    } else {
        ty
    };
    match real_fn!(c"socketpair", fn(c_int, c_int, c_int, *mut c_int) -> c_int) {
        // SAFETY: the caller's arguments (plus SOCK_CLOEXEC for our own sockets).
        Some(f) => unsafe { f(domain, ty, proto, sv) },
        None => enosys(),
    }
}

/// accept(2); close-on-exec when called by the library.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn accept(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    let flags = if inside() { libc::SOCK_CLOEXEC } else { 0 };
    match real_fn!(
        c"accept4",
        fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t, c_int) -> c_int
    ) {
        // SAFETY: the caller's arguments; accept4 with no flags is accept.
        Some(f) => unsafe { f(fd, addr, len, flags) },
        None => enosys(),
    }
}

/// epoll_create(2); close-on-exec when called by the library.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    if size <= 0 {
        crate::hook::set_errno(libc::EINVAL);
        return -1;
    }
    let flags = if inside() { libc::EPOLL_CLOEXEC } else { 0 };
    match real_fn!(c"epoll_create1", fn(c_int) -> c_int) {
        // SAFETY: epoll_create1 with no flags is epoll_create.
        Some(f) => unsafe { f(flags) },
        None => enosys(),
    }
}

/// eventfd(2); close-on-exec when called by the library.
///
/// # Safety
/// Called by C code with the arguments of the libc function.
#[no_mangle]
pub unsafe extern "C" fn eventfd(count: c_uint, flags: c_int) -> c_int {
    let flags = if inside() {
        flags | libc::EFD_CLOEXEC
    } else {
        flags
    };
    match real_fn!(c"eventfd", fn(c_uint, c_int) -> c_int) {
        // SAFETY: the caller's arguments.
        Some(f) => unsafe { f(count, flags) },
        None => enosys(),
    }
}
