//! The machinery every intercepted entry point goes through: the real function
//! (resolved lazily with `dlsym(RTLD_NEXT)`), the re-entrancy guard, `catch_unwind`, and
//! the conversion of `Result<_, Errno>` to the C convention (-1 or NULL plus errno).
//!
//! A hook body is a plain Rust function returning [`Act`]: `None` hands the call to the
//! real libc (not our path, not our fd), `Some(Ok(v))` returns `v`, `Some(Err(e))` fails
//! with errno `e`.

use std::cell::Cell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use gkfs_proto::Errno;

/// What a hook body decided.
pub type Act<T> = Option<Result<T, Errno>>;

thread_local! {
    /// Set while this thread runs library code: calls the library itself makes (the
    /// client reading its hosts file, libfabric opening sockets, logging) go straight
    /// to libc. Const-initialised, no destructor: safe in any thread at any time.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as inside the library until dropped.
pub struct Inside(bool);

impl Inside {
    /// Enters; `None` if the thread already is inside (a nested call).
    pub fn enter() -> Option<Inside> {
        let was = INSIDE.try_with(|c| c.replace(true)).unwrap_or(true);
        // `then`, not `then_some`: an eagerly built Inside would be dropped (and clear
        // the flag) when the thread already is inside.
        (!was).then(|| Inside(true))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        if self.0 {
            let _ = INSIDE.try_with(|c| c.set(false));
        }
    }
}

/// Runs `f` (a real exec call) with the thread marked as outside the library. A vfork
/// child shares its parent's memory, thread-local flag included: the flag must read
/// "outside" when the exec succeeds and the parent resumes.
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    let was = INSIDE.try_with(|c| c.replace(false)).unwrap_or(false);
    let r = f();
    let _ = INSIDE.try_with(|c| c.set(was));
    r
}

/// Is this thread running library code?
pub fn inside() -> bool {
    INSIDE.try_with(|c| c.get()).unwrap_or(false)
}

/// A real libc function, looked up on first use and cached.
pub struct Real {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl Real {
    /// The function named `name`, not yet resolved.
    pub const fn new(name: &'static CStr) -> Real {
        Real {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The real function as a function pointer of type `F`; None if there is none.
    ///
    /// # Safety
    /// `F` must be the `unsafe extern "C" fn` type of this symbol's C prototype.
    pub unsafe fn func<F: Copy>(&self) -> Option<F> {
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
        let a = self.get();
        // SAFETY: `a` is the symbol's address and `F` its function pointer type (the
        // caller's promise), of the same size (checked above).
        (a != 0).then(|| unsafe { std::mem::transmute_copy::<usize, F>(&a) })
    }

    /// The address of the next definition after this library (0 if there is none).
    pub fn get(&self) -> usize {
        let a = self.addr.load(Ordering::Relaxed);
        if a != 0 {
            return a;
        }
        // dlsym may allocate and so re-enter us: mark the thread as inside meanwhile.
        let _inside = Inside::enter();
        // SAFETY: RTLD_NEXT with a NUL-terminated name is dlsym's documented use.
        let a = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(a, Ordering::Relaxed);
        a
    }
}

/// Values a hook returns on failure (with errno set).
pub trait Fail: Copy {
    /// -1, or NULL for pointers.
    const FAIL: Self;
}
impl Fail for i32 {
    const FAIL: i32 = -1;
}
impl Fail for i64 {
    const FAIL: i64 = -1;
}
impl Fail for isize {
    const FAIL: isize = -1;
}
impl Fail for u32 {
    const FAIL: u32 = 0;
}
impl Fail for () {
    const FAIL: () = ();
}
impl<T> Fail for *mut T {
    const FAIL: *mut T = std::ptr::null_mut();
}
impl<T> Fail for *const T {
    const FAIL: *const T = std::ptr::null();
}

/// Sets the calling thread's errno.
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Runs a hook: `body` unless the thread is already inside the library, `real` when the
/// body hands the call on. Panics become EIO. A call that succeeds leaves errno as the
/// caller had it: the library's own system calls (a poll that found nothing, a file
/// that is not there) must not show through, since callers such as fts set errno to 0
/// and read it after `readdir` returns NULL.
pub fn run<R: Fail>(body: impl FnOnce() -> Act<R>, real: impl FnOnce() -> R) -> R {
    run_or(body, || {}, real)
}

/// [`run`], and `when_inside` before the real call when the library itself makes it.
pub fn run_or<R: Fail>(
    body: impl FnOnce() -> Act<R>,
    when_inside: impl FnOnce(),
    real: impl FnOnce() -> R,
) -> R {
    let Some(inside) = Inside::enter() else {
        when_inside();
        return real();
    };
    let saved = errno();
    let act = catch_unwind(AssertUnwindSafe(body));
    drop(inside);
    match act {
        Ok(None) => {
            set_errno(saved);
            real()
        }
        Ok(Some(Ok(v))) => {
            set_errno(saved);
            v
        }
        Ok(Some(Err(e))) => {
            set_errno(e.raw());
            R::FAIL
        }
        Err(_) => {
            set_errno(libc::EIO);
            R::FAIL
        }
    }
}

/// Declares intercepted entry points. Each item
/// `fn name(args) -> Ret = body;` exports `name`, whose real counterpart has the same
/// signature (`= body, inside f;` also runs `f(args)` before the real call when the
/// library itself makes it; `= wrap w;` hands every call, the library's own too, to
/// `w(args, &real)`, which calls the real function itself, for calls whose results the
/// library changes when it makes them); `vfn name(fixed; variadic) -> Ret = body;` is for C-variadic functions
/// (`open`, `fcntl`): the extra argument is taken as a fixed one (ABI-correct on x86-64
/// and aarch64 Linux) and the real function is called through a variadic pointer.
macro_rules! hooks {
    () => {};
    (@fn $(#[$m:meta])* $name:ident($($a:ident : $t:ty),*) -> $r:ty = $body:path; $when:expr; $($rest:tt)*) => {
        $(#[$m])*
        /// Intercepted libc entry point (see the module docs).
        ///
        /// # Safety
        /// Called by C code with the arguments the libc function of this name takes.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            static REAL: $crate::hook::Real =
                $crate::hook::Real::new(match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) { Ok(c) => c, Err(_) => panic!() });
            $crate::hook::run_or(
                || $body($($a),*),
                $when,
                || {
                    // SAFETY: the type is the C prototype of the symbol `REAL` names.
                    let Some(f) = (unsafe { REAL.func::<unsafe extern "C" fn($($t),*) -> $r>() }) else {
                        $crate::hook::set_errno(libc::ENOSYS);
                        return <$r as $crate::hook::Fail>::FAIL;
                    };
                    // SAFETY: the caller's arguments, passed on unchanged.
                    unsafe { f($($a),*) }
                },
            )
        }
        hooks!($($rest)*);
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident : $t:ty),* $(,)?) -> $r:ty = wrap $w:path; $($rest:tt)*) => {
        $(#[$m])*
        /// Intercepted libc entry point (see the module docs).
        ///
        /// # Safety
        /// Called by C code with the arguments the libc function of this name takes.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            static REAL: $crate::hook::Real =
                $crate::hook::Real::new(match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) { Ok(c) => c, Err(_) => panic!() });
            let real = |$($a: $t),*| -> $r {
                // SAFETY: the type is the C prototype of the symbol `REAL` names.
                let Some(f) = (unsafe { REAL.func::<unsafe extern "C" fn($($t),*) -> $r>() }) else {
                    $crate::hook::set_errno(libc::ENOSYS);
                    return <$r as $crate::hook::Fail>::FAIL;
                };
                // SAFETY: the arguments the wrapper passes on (the caller's, or the
                // library's replacements of the same types).
                unsafe { f($($a),*) }
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $w($($a,)* &real))) {
                Ok(v) => v,
                Err(_) => {
                    $crate::hook::set_errno(libc::EIO);
                    <$r as $crate::hook::Fail>::FAIL
                }
            }
        }
        hooks!($($rest)*);
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident : $t:ty),* $(,)?) -> $r:ty = $body:path, inside $ib:path; $($rest:tt)*) => {
        hooks!(@fn $(#[$m])* $name($($a: $t),*) -> $r = $body; || $ib($($a),*); $($rest)*);
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident : $t:ty),* $(,)?) -> $r:ty = $body:path; $($rest:tt)*) => {
        hooks!(@fn $(#[$m])* $name($($a: $t),*) -> $r = $body; || {}; $($rest)*);
    };
    ($(#[$m:meta])* vfn $name:ident($($a:ident : $t:ty),* ; $v:ident : $vt:ty) -> $r:ty = $body:path; $($rest:tt)*) => {
        $(#[$m])*
        /// Intercepted libc entry point (see the module docs).
        ///
        /// # Safety
        /// Called by C code with the arguments the libc function of this name takes.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t,)* $v: $vt) -> $r {
            static REAL: $crate::hook::Real =
                $crate::hook::Real::new(match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) { Ok(c) => c, Err(_) => panic!() });
            $crate::hook::run(
                || $body($($a,)* $v),
                || {
                    // SAFETY: the type is the C prototype of the symbol `REAL` names.
                    let Some(f) = (unsafe { REAL.func::<unsafe extern "C" fn($($t,)* ...) -> $r>() }) else {
                        $crate::hook::set_errno(libc::ENOSYS);
                        return <$r as $crate::hook::Fail>::FAIL;
                    };
                    // SAFETY: the caller's arguments, passed on unchanged.
                    unsafe { f($($a,)* $v) }
                },
            )
        }
        hooks!($($rest)*);
    };
}
pub(crate) use hooks;

/// A C string argument as `&str`; None for NULL or non-UTF-8 (never ours).
pub fn cstr<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null path argument of a libc call is a NUL-terminated string that
    // outlives the call.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Runs library code called back from libc (stdio cookie functions, atexit), which may
/// or may not already be inside the library: enters the guard if needed and turns a
/// panic into EIO.
pub fn callback<R: Fail>(body: impl FnOnce() -> Result<R, Errno>) -> R {
    let _inside = Inside::enter();
    let saved = errno();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => {
            set_errno(saved);
            v
        }
        Ok(Err(e)) => {
            set_errno(e.raw());
            R::FAIL
        }
        Err(_) => {
            set_errno(libc::EIO);
            R::FAIL
        }
    }
}

// C-variadic entry points (execl, dprintf...) cannot be defined in stable Rust; their
// bodies are C (csrc/shim.c: gkfs_execl...). The exported symbols are naked Rust
// functions that jump there with every register and the stack untouched, so the C
// function receives the caller's variable arguments as they were passed.
macro_rules! variadic_trampoline {
    ($($name:ident => $target:ident;)*) => {
        extern "C" {
            $(fn $target();)*
        }
        $(
        /// C-variadic entry point (see `hook::variadic_trampoline`).
        ///
        /// # Safety
        /// Called by C code with the arguments of the libc function of this name.
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {0}@PLT", sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {0}", sym $target);
        }
        )*
    };
}
pub(crate) use variadic_trampoline;
