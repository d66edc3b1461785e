//! Classifying path arguments: ours (a path inside gkfs), the kernel's, or the kernel's
//! but rewritten (a relative path under a gkfs working directory that leads out of it).

use std::ffi::{c_char, c_int, CString};

use api::mountpath::Resolved;
use gkfs_proto::Errno;

use crate::hook::{cstr, Act, Fail};
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

/// Classifies a path relative to the working directory.
pub fn classify(path: *const c_char) -> Target {
    let Some(p) = cstr(path) else {
        return Target::Real;
    };
    match state::resolve(p) {
        Some((_, r)) => from_resolved(r),
        None => Target::Real,
    }
}

/// Classifies a path of an `*at` call.
pub fn classify_at(dirfd: c_int, path: *const c_char) -> Target {
    if dirfd == libc::AT_FDCWD {
        return classify(path);
    }
    let Some(p) = cstr(path) else {
        return Target::Real;
    };
    if p.starts_with('/') {
        return classify(path);
    }
    let Some(dir) = fds::get(dirfd) else {
        return Target::Real;
    };
    if !dir.is_dir() {
        return if p.is_empty() {
            Target::Real
        } else {
            Target::Fail(Errno::ENOTDIR)
        };
    }
    let Some(fs) = state::fs() else {
        return Target::Real;
    };
    let base = fs.mount.outside(&dir.path);
    from_resolved(fs.mount.resolve(Some(&base), p))
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
