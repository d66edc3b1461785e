//! Classifying path arguments: ours (a path inside gkfs), the kernel's, or the kernel's
//! but rewritten (a relative path under a gkfs working directory that leads out of it).

use std::ffi::{c_char, c_int, CStr, CString};

use api::mountpath::Resolved;
use gkfs_proto::Errno;

use crate::file::Followed;
use crate::hook::{Act, Fail};
use crate::{fds, state};

/// Where a path argument goes.
pub enum Target {
    /// Inside gkfs: the path inside the file system.
    Gkfs(String),
    /// The kernel, with the caller's own argument.
    Real,
    /// The kernel, with this path instead.
    RealPath(CString),
    /// Neither: the call fails.
    Fail(Errno),
}

fn from_resolved(r: Resolved) -> Target {
    match r {
        Resolved::Gkfs(p) => Target::Gkfs(p),
        Resolved::Real => Target::Real,
        Resolved::RealAbsolute(p) => match CString::new(p) {
            Ok(c) => Target::RealPath(c),
            Err(_) => Target::Fail(Errno::EINVAL),
        },
    }
}

/// What a call does with a path that names a directory by its spelling ("d/", "d/.",
/// see [`names_dir`]): the kernel then insists on a directory, and so do we (`rm f/`
/// must not delete the file `f`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Slash {
    /// The call acts on what the path names: a symlink to a directory is followed, a
    /// non-directory is ENOTDIR, a missing name ENOENT.
    Follow,
    /// The call acts on the directory entry itself (rmdir, unlink, rename, link): a
    /// symlink is ENOTDIR too.
    Entry,
    /// The call makes a non-directory there (symlink, mknod, mkfifo, a link's new
    /// name): a name spelled as a directory cannot be made, so an existing one is
    /// EEXIST and a missing one ENOENT ("x/." walks into `x`: ENOTDIR unless a
    /// directory).
    Create,
    /// The call makes a directory there (mkdir, a rename's destination): nothing to
    /// check before the call.
    Ignore,
}

/// Does `path`, as the caller spelled it, name a directory: a trailing slash, or a last
/// component "." or ".."?
pub fn names_dir(path: &str) -> bool {
    path.ends_with('/')
        || path.ends_with("/.")
        || path.ends_with("/..")
        || path == "."
        || path == ".."
}

/// Classifies a path relative to the working directory (a call that follows a final
/// symlink of a path spelled as a directory, see [`Slash::Follow`]).
pub fn classify(path: *const c_char) -> Target {
    classify_with(libc::AT_FDCWD, path, Slash::Follow)
}

/// Classifies a path of an `*at` call (as [`classify`]).
pub fn classify_at(dirfd: c_int, path: *const c_char) -> Target {
    classify_with(dirfd, path, Slash::Follow)
}

/// Classifies a path of an `*at` call, saying what the call does with a path spelled
/// as a directory.
pub fn classify_with(dirfd: c_int, path: *const c_char, slash: Slash) -> Target {
    if path.is_null() {
        return Target::Real;
    }
    // SAFETY: a non-null path argument of a libc call is a NUL-terminated string that
    // outlives the call.
    let raw = unsafe { CStr::from_ptr(path) };
    let Ok(p) = raw.to_str() else {
        // Names in gkfs are UTF-8. Invalid bytes become U+FFFD, which keeps the path's
        // shape ('/', "." and ".."), so the lossy form tells where the path lands: one
        // that lands in gkfs (or must be rewritten relative to a gkfs directory) fails
        // with EILSEQ instead of reaching the disk below.
        let lossy = String::from_utf8_lossy(raw.to_bytes());
        let Ok(c) = CString::new(lossy.as_bytes()) else {
            return Target::Real;
        };
        return match classify_with(dirfd, c.as_ptr(), Slash::Ignore) {
            Target::Real => Target::Real,
            Target::Fail(e) => Target::Fail(e),
            Target::Gkfs(_) | Target::RealPath(_) => Target::Fail(Errno::EILSEQ),
        };
    };
    let t = if let Some(of) = fd_alias(p) {
        Target::Gkfs(of.path().to_string())
    } else if dirfd == libc::AT_FDCWD || p.starts_with('/') {
        match state::resolve(p) {
            Some((_, r)) => from_resolved(r),
            None => Target::Real,
        }
    } else {
        match fds::get(dirfd) {
            None => Target::Real,
            Some(dir) if !dir.is_dir() => {
                if p.is_empty() {
                    Target::Real
                } else {
                    Target::Fail(Errno::ENOTDIR)
                }
            }
            Some(dir) => match state::fs() {
                None => Target::Real,
                Some(fs) => {
                    let base = fs.mount.outside(&dir.path());
                    from_resolved(fs.mount.resolve(Some(&base), p))
                }
            },
        }
    };
    // "x/." and "x/.." walk into `x` whatever the call: it must be a directory. The
    // working directory and its parent are directories (a removed one fails in the
    // call itself): no round trip for the "." that `ls`, `find` and `stat .` pass.
    if !names_dir(p)
        || (slash == Slash::Ignore && !ends_in_dot(p))
        || (slash == Slash::Follow && (p == "." || p == ".."))
    {
        return t;
    }
    match t {
        Target::Gkfs(q) if slash == Slash::Create => match (p.ends_with('/'), q == "/") {
            (true, false) => match crate::meta::lookup(q, false) {
                Ok(_) => Target::Fail(Errno::EEXIST),
                Err(e) => Target::Fail(e),
            },
            _ => match must_be_dir(q, true) {
                Target::Fail(e) => Target::Fail(e),
                _ => Target::Fail(Errno::EEXIST),
            },
        },
        Target::Gkfs(q) if q != "/" => must_be_dir(q, slash == Slash::Follow),
        t => t,
    }
}

/// The gkfs file behind a path that names one of the process's descriptors:
/// `/dev/fd/N`, `/dev/stdin` (`stdout`, `stderr`), `/proc/self/fd/N`,
/// `/proc/thread-self/fd/N`, `/proc/<our pid>/fd/N`. The kernel would open the
/// library's description page there; a local file system opens the file.
pub fn fd_alias(p: &str) -> Option<std::sync::Arc<fds::OpenFile>> {
    if !p.starts_with("/dev/") && !p.starts_with("/proc/") {
        return None;
    }
    let n: c_int = match p {
        "/dev/stdin" => 0,
        "/dev/stdout" => 1,
        "/dev/stderr" => 2,
        _ => {
            let rest = p
                .strip_prefix("/dev/fd/")
                .or_else(|| p.strip_prefix("/proc/self/fd/"))
                .or_else(|| p.strip_prefix("/proc/thread-self/fd/"))
                .or_else(|| {
                    let (pid, rest) = p.strip_prefix("/proc/")?.split_once("/fd/")?;
                    // SAFETY: getpid has no preconditions.
                    (pid.parse::<i32>().ok()? == unsafe { libc::getpid() }).then_some(rest)
                })?;
            rest.trim_end_matches('/').parse().ok()?
        }
    };
    fds::get(n)
}

/// Does `path`'s last component say "this directory" or "its parent" ("d/.", "..")?
/// Such a name cannot be renamed (EBUSY) or removed (EINVAL).
pub fn ends_in_dot(path: &str) -> bool {
    path.ends_with("/.") || path.ends_with("/..") || path == "." || path == ".."
}

/// The target of a gkfs path that was spelled as a directory: the directory (the one a
/// final symlink leads to when `follow`), or the error the kernel gives.
fn must_be_dir(path: String, follow: bool) -> Target {
    match crate::meta::lookup(path, follow) {
        Ok(Followed::Gkfs(q, r)) if r.is_dir() => Target::Gkfs(q),
        Ok(Followed::Gkfs(..)) => Target::Fail(Errno::ENOTDIR),
        Ok(Followed::Real(real)) => match CString::new(real + "/") {
            Ok(c) => Target::RealPath(c),
            Err(_) => Target::Fail(Errno::EINVAL),
        },
        Err(e) => Target::Fail(e),
    }
}

/// Turns a libc-style return value into a Result (errno on failure).
pub fn checked<R: Fail + PartialEq>(r: R) -> Result<R, Errno> {
    if r == R::FAIL {
        Err(Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ))
    } else {
        Ok(r)
    }
}

/// Dispatches on a target: `ours` for gkfs paths, `real` with a rewritten path, or
/// the caller's real function (None).
pub fn route<R: Fail + PartialEq>(
    t: Target,
    real: impl FnOnce(*const c_char) -> R,
    ours: impl FnOnce(String) -> Result<R, Errno>,
) -> Act<R> {
    match t {
        Target::Real => None,
        Target::RealPath(p) => Some(checked(real(p.as_ptr()))),
        Target::Fail(e) => Some(Err(e)),
        Target::Gkfs(p) => Some(ours(p)),
    }
}
