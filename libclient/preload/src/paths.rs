//! Path resolution, all of it: classifying path arguments (ours, a path inside gkfs; the
//! kernel's; or the kernel's but rewritten, a relative path under a gkfs working
//! directory that leads out of it), following symlinks in the last component
//! (`follow`, `lookup`) and in the directories of a path (`through_links`), and the
//! errno of a missing path (`missing`).

use std::ffi::{c_char, c_int, CStr, CString};

use api::mountpath::Resolved;
use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::hook::{Act, Fail};
use crate::{fds, state};

/// Where a path argument goes.
pub enum Target {
    /// Inside gkfs: the path inside the file system.
    Gkfs(String),
    /// The kernel, with the caller's own argument.
    Real,
    /// The kernel, with the caller's own path, which names the disk: should the call
    /// fail with ENOENT or ENOTDIR, a symlink on the disk that leads into gkfs
    /// (`ln -s /tmp/gkfs/run ~/run`) is looked for ([`into_gkfs`]) and followed.
    RealOrLink(*const c_char),
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
            Target::Real | Target::RealOrLink(_) => Target::Real,
            Target::Fail(e) => Target::Fail(e),
            Target::Gkfs(_) | Target::RealPath(_) => Target::Fail(Errno::EILSEQ),
        };
    };
    if let Some(walked) = physical_dotdot(dirfd, p) {
        let Ok(c) = CString::new(walked) else {
            return Target::Fail(Errno::EINVAL);
        };
        return match classify_with(libc::AT_FDCWD, c.as_ptr(), slash) {
            // (`c` is ours: the kernel gets a copy.)
            Target::Real | Target::RealOrLink(_) => Target::RealPath(c),
            t => t,
        };
    }
    let t = if let Some(of) = fd_alias(p) {
        Target::Gkfs(of.path().to_string())
    } else if dirfd == libc::AT_FDCWD || p.starts_with('/') {
        match state::resolve(p) {
            Some((_, Resolved::Real)) if !p.is_empty() => Target::RealOrLink(path),
            Some((_, r)) => from_resolved(r),
            None => Target::Real,
        }
    } else {
        match fds::get(dirfd) {
            None => from_real_dir(dirfd, p),
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
            (true, false) => match lookup(q, false) {
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

/// `..` after a symlinked gkfs directory, as the kernel walks it: `link/..` is the
/// parent of the link's target, not the directory holding the link. Returns the path
/// walked that way (absolute, as programs see it) when a `..` followed a symlink; None
/// otherwise (the spelling's own reading is right). Only a path with a `..` after a
/// gkfs component pays: a lookup of the component before each `..` not seen as a
/// directory in the last second.
fn physical_dotdot(dirfd: c_int, p: &str) -> Option<String> {
    if !(p == ".." || p.starts_with("../") || p.contains("/..")) {
        return None;
    }
    let fs = state::fs()?;
    let base = if p.starts_with('/') {
        String::new()
    } else if dirfd == libc::AT_FDCWD {
        state::cwd()?
    } else {
        fs.mount.outside(&fds::get(dirfd)?.path())
    };
    let c = state::client().ok()?;
    let mut dirs: Vec<String> = base
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut todo: std::collections::VecDeque<String> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let (mut links, mut changed) = (0, false);
    while let Some(comp) = todo.pop_front() {
        match comp.as_str() {
            "." => {}
            ".." => {
                let cur = format!("/{}", dirs.join("/"));
                if let Resolved::Gkfs(q) = fs.mount.resolve(None, &cur) {
                    if q != "/" && !state::known_dir(&q) {
                        match c.stat(&q) {
                            Ok(r) if r.mode & mode::S_IFMT == mode::S_IFLNK => {
                                links += 1;
                                if links > MAX_SYMLINKS {
                                    return None;
                                }
                                let target = read_link(&c, &q, r).ok()?;
                                dirs.pop();
                                if target.starts_with('/') {
                                    dirs.clear();
                                }
                                todo.push_front(comp);
                                for t in target.split('/').filter(|s| !s.is_empty()).rev() {
                                    todo.push_front(t.to_string());
                                }
                                changed = true;
                                continue;
                            }
                            Ok(r) if r.is_dir() => state::note_dir(&q),
                            _ => {}
                        }
                    }
                }
                dirs.pop();
            }
            _ => dirs.push(comp),
        }
    }
    changed.then(|| format!("/{}", dirs.join("/")))
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

/// A relative path from a real directory fd: the kernel's, unless it walks into the
/// mount dir (`openat(fd_of_tmp, "gkfs/x")`, which rsync and other careful programs do
/// one component at a time). Only a path naming the mount dir's last component is
/// looked at further (a readlink of the dirfd).
fn from_real_dir(dirfd: c_int, p: &str) -> Target {
    let Some(fs) = state::fs() else {
        return Target::Real;
    };
    let mount = fs.mount.as_str();
    let last = &mount[mount.rfind('/').map_or(0, |i| i + 1)..];
    if p.starts_with('/') || !p.split('/').any(|c| c == last) {
        return Target::Real;
    }
    let Ok(base) = std::fs::read_link(format!("/proc/self/fd/{dirfd}")) else {
        return Target::Real;
    };
    let Some(base) = base.to_str() else {
        return Target::Real;
    };
    match fs.mount.resolve(Some(base), p) {
        Resolved::Gkfs(q) => Target::Gkfs(q),
        _ => Target::Real,
    }
}

/// Does `path`'s last component say "this directory" or "its parent" ("d/.", "..")?
/// Such a name cannot be renamed (EBUSY) or removed (EINVAL).
pub fn ends_in_dot(path: &str) -> bool {
    path.ends_with("/.") || path.ends_with("/..") || path == "." || path == ".."
}

/// The target of a gkfs path that was spelled as a directory: the directory (the one a
/// final symlink leads to when `follow`), or the error the kernel gives.
fn must_be_dir(path: String, follow: bool) -> Target {
    match lookup(path.clone(), follow) {
        Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => match through_links(&path) {
            Some(Target::Gkfs(q)) => must_be_dir(q, follow),
            Some(t) => t,
            None => Target::Fail(e),
        },
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
    mut ours: impl FnMut(String) -> Result<R, Errno>,
) -> Act<R> {
    match t {
        Target::Real => None,
        Target::RealOrLink(p) => {
            let r = real(p);
            if r != R::FAIL {
                return Some(Ok(r));
            }
            let e = crate::hook::errno();
            match (e, crate::hook::cstr(p).and_then(into_gkfs)) {
                (libc::ENOENT | libc::ENOTDIR, Some(q)) => Some(with_links(q, ours)),
                _ => Some(Err(Errno(e))),
            }
        }
        Target::RealPath(p) => Some(checked(real(p.as_ptr()))),
        Target::Fail(e) => Some(Err(e)),
        Target::Gkfs(p) => Some(match ours(p.clone()) {
            Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => match through_links(&p) {
                Some(Target::Gkfs(q)) => ours(q),
                Some(Target::RealPath(c)) => checked(real(c.as_ptr())),
                Some(Target::Fail(e)) => Err(e),
                _ => Err(e),
            },
            r => r,
        }),
    }
}

/// The gkfs path a disk path reaches through a symlink on the disk that points into
/// the mount dir (which does not exist on disk, so the kernel's walk ends with
/// ENOENT). None when no such link is on the way: the error stands. Looks at the path
/// and up its parents to the first that exists: two lstat calls for the usual missing
/// name in an existing directory.
pub fn into_gkfs(p: &str) -> Option<String> {
    let fs = state::fs()?;
    let mut path = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", state::real_cwd()?)
    };
    for _ in 0..MAX_SYMLINKS {
        let mut cur = path.trim_end_matches('/').to_string();
        let mut rest = String::new();
        loop {
            if cur.is_empty() {
                return None;
            }
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(&cur).ok()?;
                    let target = target.to_str()?;
                    let parent = &cur[..cur.rfind('/')?];
                    let joined = if target.starts_with('/') {
                        format!("{target}{rest}")
                    } else {
                        format!("{parent}/{target}{rest}")
                    };
                    match fs.mount.resolve(None, &joined) {
                        Resolved::Gkfs(q) => return Some(q),
                        // A link to another disk path: follow that one.
                        _ => {
                            path = joined;
                            break;
                        }
                    }
                }
                // An existing file or directory: nothing of gkfs on the way.
                Ok(_) => return None,
                Err(_) => {
                    let cut = cur.rfind('/')?;
                    rest = format!("{}{rest}", &cur[cut..]);
                    cur.truncate(cut);
                }
            }
        }
    }
    None
}

/// Runs `f` on a gkfs path, and again on the path with its directory symlinks
/// resolved if it failed for want of them (see [`through_links`]). A path that leads
/// out of gkfs that way keeps the first error.
pub fn with_links<R>(p: String, mut f: impl FnMut(String) -> Result<R, Errno>) -> Result<R, Errno> {
    match f(p.clone()) {
        Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => match through_links(&p) {
            Some(Target::Gkfs(q)) => f(q),
            Some(Target::Fail(e)) => Err(e),
            _ => Err(e),
        },
        r => r,
    }
}

/// The path the kernel would reach for `p` (a gkfs path whose call failed with ENOENT
/// or ENOTDIR): symlinks among its directories resolved, relative and absolute
/// targets, chains up to [`MAX_SYMLINKS`] (then ELOOP), into gkfs or out
/// of it (`RealPath`). None when no directory of the path is a symlink: the error
/// stands. Costs a lookup per directory not seen as one in the last second, on error
/// paths only; the usual path (no symlinked directory) pays nothing.
pub fn through_links(p: &str) -> Option<Target> {
    let c = state::client().ok()?;
    let fs = state::fs()?;
    let mut path = p.to_string();
    let mut links = 0;
    let mut changed = false;
    'walk: loop {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut prefix = String::new();
        for (i, comp) in comps.iter().enumerate().take(comps.len().saturating_sub(1)) {
            prefix.push('/');
            prefix.push_str(comp);
            if state::known_dir(&prefix) {
                continue;
            }
            // A missing or non-directory ancestor: the call's own error stands (on the
            // path as resolved so far).
            let Ok(rec) = c.stat(&prefix) else { break };
            if rec.is_dir() {
                state::note_dir(&prefix);
                continue;
            }
            if rec.mode & gkfs_proto::record::mode::S_IFMT != gkfs_proto::record::mode::S_IFLNK {
                break;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Some(Target::Fail(Errno::ELOOP));
            }
            let Ok(target) = read_link(&c, &prefix, rec) else {
                break;
            };
            let rest = comps[i + 1..].join("/");
            let joined = if target.starts_with('/') {
                format!("{target}/{rest}")
            } else {
                let base = fs.mount.outside(gkfs_proto::path::parent(&prefix));
                format!("{base}/{target}/{rest}")
            };
            match fs.mount.resolve(None, &joined) {
                Resolved::Gkfs(q) => {
                    path = q;
                    changed = true;
                    continue 'walk;
                }
                _ => {
                    return CString::new(joined).ok().map(Target::RealPath);
                }
            }
        }
        return changed.then_some(Target::Gkfs(path));
    }
}

/// Largest number of symlinks followed while resolving one path (Linux's limit).
pub const MAX_SYMLINKS: u32 = 40;

/// Where a gkfs path leads after following symlinks in its last component.
pub enum Followed {
    /// A gkfs path and its record.
    Gkfs(String, Record),
    /// A path outside gkfs (absolute).
    Real(String),
}

/// Follows `rec` (the record of `path`) while it is a symlink.
pub fn follow(mut path: String, mut rec: Record) -> Result<Followed, Errno> {
    let c = state::client()?;
    let fs = state::fs().ok_or(Errno::ENOENT)?;
    for _ in 0..MAX_SYMLINKS {
        if rec.mode & mode::S_IFMT != mode::S_IFLNK {
            return Ok(Followed::Gkfs(path, rec));
        }
        let target = read_link(&c, &path, rec)?;
        let base = fs.mount.outside(gkfs_proto::path::parent(&path));
        match fs.mount.resolve(Some(&base), &target) {
            api::mountpath::Resolved::Gkfs(p) => {
                rec = c.stat(&p)?;
                path = p;
            }
            api::mountpath::Resolved::Real => return Ok(Followed::Real(target)),
            api::mountpath::Resolved::RealAbsolute(p) => return Ok(Followed::Real(p)),
        }
    }
    Err(Errno::ELOOP)
}

/// The errno for a path the file system does not have: ENOTDIR when a parent is a
/// file ("file/x"), else ENOENT. Costs a round trip on the error path only.
pub fn missing(c: &api::Client, path: &str) -> Errno {
    let parent = gkfs_proto::path::parent(path);
    if parent == "/" || state::known_dir(parent) {
        return Errno::ENOENT;
    }
    match c.stat(parent) {
        Ok(r) if !r.is_dir() => Errno::ENOTDIR,
        Ok(_) => {
            state::note_dir(parent);
            Errno::ENOENT
        }
        Err(_) => Errno::ENOENT,
    }
}

/// The record of a gkfs path, following a final symlink if `follow_links`. A link that
/// leads out of gkfs gives the real path instead.
pub fn lookup(path: String, follow_links: bool) -> Result<Followed, Errno> {
    let c = state::client()?;
    let rec = match c.stat(&path) {
        Err(Errno::ENOENT) => return Err(missing(&c, &path)),
        r => r?,
    };
    if rec.is_dir() {
        state::note_dir(&path);
    }
    if follow_links {
        follow(path, rec)
    } else {
        Ok(Followed::Gkfs(path, rec))
    }
}

/// The target stored in a symlink record.
pub fn read_link(c: &api::Client, path: &str, rec: Record) -> Result<String, Errno> {
    let mut buf = vec![0u8; rec.size.min(4096) as usize];
    let n = c.file_handle(path, rec, false).pread(&mut buf, 0)?;
    buf.truncate(n);
    String::from_utf8(buf).map_err(|_| Errno::EIO)
}
