//! Metadata calls on gkfs paths: the stat family, access, mkdir/rmdir/unlink/rename,
//! truncate, times and permissions, statfs, and symlinks (a record of type S_IFLNK
//! whose data is the target).

use std::ffi::{c_char, c_int, c_void};

use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::fds;
use crate::hook::{cstr, Act};
use crate::log::{unsupported, Unsupported};
use crate::paths::{
    checked, classify, classify_at, classify_with, ends_in_dot, lookup, names_dir, read_link,
    route, with_links, Followed, Slash, Target,
};
use crate::state;

/// Device number every gkfs file reports.
pub const DEV: u64 = 0x676b;
/// `f_type` of statfs.
pub const FS_MAGIC: i64 = 0x676b_6673;

pub use gkfs_proto::record::path_ino as ino;

fn ts(ns: i64) -> (i64, i64) {
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Fills a `struct stat` (same layout as stat64 on 64-bit Linux).
pub fn fill_stat(path: &str, r: &Record, blksize: u64, st: *mut libc::stat) {
    // SAFETY: all-zero is a valid struct stat.
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    s.st_dev = DEV;
    s.st_ino = r.ino(path);
    s.st_mode = r.mode;
    s.st_nlink = r.nlink.max(1) as _;
    s.st_uid = r.uid;
    s.st_gid = r.gid;
    s.st_size = r.size as i64;
    s.st_blksize = blksize as _;
    s.st_blocks = r.size.div_ceil(512) as i64;
    (s.st_atime, s.st_atime_nsec) = ts(r.atime);
    (s.st_mtime, s.st_mtime_nsec) = ts(r.mtime);
    (s.st_ctime, s.st_ctime_nsec) = ts(r.ctime);
    // SAFETY: the caller's stat buffer.
    unsafe { st.write(s) };
}

/// Fills a `struct statx`.
pub fn fill_statx(path: &str, r: &Record, blksize: u64, stx: *mut libc::statx) {
    // SAFETY: all-zero is a valid struct statx.
    let mut s: libc::statx = unsafe { std::mem::zeroed() };
    s.stx_mask = libc::STATX_BASIC_STATS;
    s.stx_blksize = blksize as u32;
    s.stx_nlink = r.nlink.max(1);
    s.stx_uid = r.uid;
    s.stx_gid = r.gid;
    s.stx_mode = r.mode as u16;
    s.stx_ino = r.ino(path);
    s.stx_size = r.size;
    s.stx_blocks = r.size.div_ceil(512);
    let t = |ns: i64| {
        let (sec, nsec) = ts(ns);
        // SAFETY: all-zero is a valid statx_timestamp.
        let mut x: libc::statx_timestamp = unsafe { std::mem::zeroed() };
        x.tv_sec = sec;
        x.tv_nsec = nsec as u32;
        x
    };
    s.stx_atime = t(r.atime);
    s.stx_mtime = t(r.mtime);
    s.stx_ctime = t(r.ctime);
    s.stx_btime = t(r.ctime);
    s.stx_dev_major = (DEV >> 8) as u32;
    s.stx_dev_minor = (DEV & 0xff) as u32;
    // SAFETY: the caller's statx buffer.
    unsafe { stx.write(s) };
}

fn stat_into(path: String, follow_links: bool, st: *mut libc::stat) -> Result<c_int, Errno> {
    let bs = state::client()?.chunk_size();
    match lookup(path, follow_links)? {
        Followed::Gkfs(p, r) => {
            fill_stat(&p, &r, bs, st);
            Ok(0)
        }
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path and the caller's buffer.
            checked(unsafe { libc::stat(cp.as_ptr(), st) })
        }
    }
}

/// fstat of one of our fds.
/// The current record of an open description: what the metadata owner has now, or,
/// when the name is gone or names another file, what we knew with no link left.
fn fd_record(of: &crate::fds::OpenFile) -> Result<Record, Errno> {
    match state::client()?.stat(&of.path()) {
        Ok(r) if r.file_id == of.record.file_id => Ok(r),
        Ok(_) | Err(Errno::ENOENT) => Ok(Record {
            nlink: 0,
            ..of.record
        }),
        Err(e) => Err(e),
    }
}

/// fstat of one of our fds.
pub fn fstat_of(fd: c_int, st: *mut libc::stat) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some((|| {
        let rec = fd_record(&of)?;
        fill_stat(&of.path(), &rec, state::client()?.chunk_size(), st);
        if of.is_orphan() {
            // Unlinked while open: no name left.
            // SAFETY: the caller's stat buffer, filled just now.
            unsafe { (*st).st_nlink = 0 };
        }
        Ok(0)
    })())
}

pub(crate) fn h_stat(path: *const c_char, st: *mut libc::stat) -> Act<c_int> {
    // SAFETY: rewritten path and the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::stat(p, st) },
        |p| stat_into(p, true, st),
    )
}

pub(crate) fn h_lstat(path: *const c_char, st: *mut libc::stat) -> Act<c_int> {
    // SAFETY: rewritten path and the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::lstat(p, st) },
        |p| stat_into(p, false, st),
    )
}

pub(crate) fn h_fstat(fd: c_int, st: *mut libc::stat) -> Act<c_int> {
    fstat_of(fd, st)
}

pub(crate) fn h_fstatat(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> Act<c_int> {
    if flags & libc::AT_EMPTY_PATH != 0 && cstr(path) == Some("") {
        return if dirfd == libc::AT_FDCWD {
            None
        } else {
            fstat_of(dirfd, st)
        };
    }
    let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path and the caller's buffer.
        |p| unsafe { libc::fstatat(libc::AT_FDCWD, p, st, flags) },
        |p| stat_into(p, !nofollow, st),
    )
}

pub(crate) fn h_xstat(_ver: c_int, path: *const c_char, st: *mut libc::stat) -> Act<c_int> {
    h_stat(path, st)
}
pub(crate) fn h_lxstat(_ver: c_int, path: *const c_char, st: *mut libc::stat) -> Act<c_int> {
    h_lstat(path, st)
}
pub(crate) fn h_fxstat(_ver: c_int, fd: c_int, st: *mut libc::stat) -> Act<c_int> {
    fstat_of(fd, st)
}
pub(crate) fn h_fxstatat(
    _ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> Act<c_int> {
    h_fstatat(dirfd, path, st, flags)
}

pub(crate) fn h_statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    _mask: u32,
    stx: *mut libc::statx,
) -> Act<c_int> {
    let fill = |p: &str, r: &Record| -> Result<c_int, Errno> {
        fill_statx(p, r, state::client()?.chunk_size(), stx);
        Ok(0)
    };
    if flags & libc::AT_EMPTY_PATH != 0 && cstr(path) == Some("") {
        if dirfd == libc::AT_FDCWD {
            return None;
        }
        let of = fds::get(dirfd)?;
        return Some(fd_record(&of).and_then(|r| fill(&of.path(), &r)));
    }
    let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path, the caller's flags, mask and buffer.
        |p| unsafe { libc::statx(libc::AT_FDCWD, p, flags, _mask, stx) },
        |p| match lookup(p, !nofollow)? {
            Followed::Gkfs(p, r) => fill(&p, &r),
            Followed::Real(p) => {
                let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
                // SAFETY: NUL-terminated path, the caller's buffer.
                checked(unsafe { libc::statx(libc::AT_FDCWD, cp.as_ptr(), flags, _mask, stx) })
            }
        },
    )
}

/// access(2) semantics on a record: existence, and the permission bits of the owner
/// class that applies (all gkfs files of a job belong to its user; root passes R/W).
fn access_rec(r: &Record, amode: c_int) -> Result<c_int, Errno> {
    if amode == libc::F_OK {
        return Ok(0);
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let bits = if uid == 0 {
        let x = if r.mode & 0o111 != 0 || r.is_dir() {
            1
        } else {
            0
        };
        6 | x
    } else if uid == r.uid {
        (r.mode >> 6) & 7
    } else {
        r.mode & 7
    };
    let want = (amode & 7) as u32;
    if bits & want == want {
        Ok(0)
    } else {
        Err(Errno::EACCES)
    }
}

fn access_path(p: String, amode: c_int, follow_links: bool) -> Result<c_int, Errno> {
    match lookup(p, follow_links)? {
        Followed::Gkfs(_, r) => access_rec(&r, amode),
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path.
            checked(unsafe { libc::access(cp.as_ptr(), amode) })
        }
    }
}

pub(crate) fn h_access(path: *const c_char, amode: c_int) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify(path),
        |p| unsafe { libc::access(p, amode) },
        |p| access_path(p, amode, true),
    )
}

pub(crate) fn h_faccessat(
    dirfd: c_int,
    path: *const c_char,
    amode: c_int,
    flags: c_int,
) -> Act<c_int> {
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path.
        |p| unsafe { libc::faccessat(libc::AT_FDCWD, p, amode, flags) },
        |p| access_path(p, amode, flags & libc::AT_SYMLINK_NOFOLLOW == 0),
    )
}

fn mkdir_gkfs(p: String, perm: libc::mode_t) -> Result<c_int, Errno> {
    state::client()?.mkdir(&p, perm & 0o7777 & !state::umask())?;
    state::note_dir(&p);
    Ok(0)
}

pub(crate) fn h_mkdir(path: *const c_char, perm: libc::mode_t) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Ignore),
        |p| unsafe { libc::mkdir(p, perm) },
        |p| mkdir_gkfs(p, perm),
    )
}

pub(crate) fn h_mkdirat(dirfd: c_int, path: *const c_char, perm: libc::mode_t) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify_with(dirfd, path, Slash::Ignore),
        |p| unsafe { libc::mkdir(p, perm) },
        |p| mkdir_gkfs(p, perm),
    )
}

fn rmdir_gkfs(p: String) -> Result<c_int, Errno> {
    if state::cwd().is_some_and(|cwd| {
        state::fs().and_then(|fs| fs.mount.inside(&cwd)).as_deref() == Some(p.as_str())
    }) {
        return Err(Errno::EBUSY);
    }
    let c = state::client()?;
    match c.rmdir(&p) {
        // "file/x": the walk stops at a file (ENOTDIR), as in the kernel.
        Err(Errno::ENOENT) => Err(crate::paths::missing(&c, &p)),
        r => r.map(|_| 0),
    }
}

fn unlink_gkfs(p: String) -> Result<c_int, Errno> {
    let c = state::client()?;
    if crate::orphans::unlink_open(&c, &p)? {
        return Ok(0);
    }
    match c.unlink(&p) {
        Err(Errno::EISDIR) | Err(Errno::EPERM) if c.stat(&p).is_ok_and(|r| r.is_dir()) => {
            Err(Errno::EISDIR)
        }
        Err(Errno::ENOENT) => Err(crate::paths::missing(&c, &p)),
        r => r.map(|_| 0),
    }
}

pub(crate) fn h_rmdir(path: *const c_char) -> Act<c_int> {
    if cstr(path).is_some_and(|p| p == "." || p.ends_with("/."))
        && matches!(classify(path), Target::Gkfs(_))
    {
        return Some(Err(Errno::EINVAL));
    }
    // SAFETY: rewritten path.
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Entry),
        |p| unsafe { libc::rmdir(p) },
        rmdir_gkfs,
    )
}

pub(crate) fn h_unlink(path: *const c_char) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Entry),
        |p| unsafe { libc::unlink(p) },
        unlink_gkfs,
    )
}

pub(crate) fn h_unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> Act<c_int> {
    let dir = flags & libc::AT_REMOVEDIR != 0;
    route(
        classify_with(dirfd, path, Slash::Entry),
        // SAFETY: rewritten path.
        |p| unsafe { libc::unlinkat(libc::AT_FDCWD, p, flags) },
        |p| if dir { rmdir_gkfs(p) } else { unlink_gkfs(p) },
    )
}

/// rename between two classified paths: both in gkfs, or EXDEV across the boundary
/// (mv then copies, as between any two file systems). `to_dir`: the destination was
/// spelled as a directory ("new/"), so the source must be one.
fn rename_targets(from: Target, to: Target, flags: u32, to_dir: bool) -> Act<c_int> {
    match (from, to) {
        (Target::Fail(e), _) | (_, Target::Fail(e)) => Some(Err(e)),
        (Target::Gkfs(a), Target::Gkfs(b)) => Some(with_links(a, |a| {
            with_links(b.clone(), |b| rename_gkfs(&a, &b, flags, to_dir))
        })),
        (Target::Gkfs(_), _) | (_, Target::Gkfs(_)) => Some(Err(Errno::EXDEV)),
        _ => None,
    }
}

/// rename of two gkfs paths.
fn rename_gkfs(a: &str, b: &str, flags: u32, to_dir: bool) -> Result<c_int, Errno> {
    let c = state::client()?;
    if to_dir && !c.stat(a)?.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if flags & libc::RENAME_EXCHANGE != 0 {
        return Err(Errno::ENOTSUP);
    }
    if flags & libc::RENAME_NOREPLACE != 0 && c.stat(b).is_ok() {
        return Err(Errno::EEXIST);
    }
    if a != b {
        crate::orphans::before_rename_onto(&c, b)?;
    }
    c.rename(a, b)?;
    crate::orphans::after_rename(a, b);
    Ok(0)
}

pub(crate) fn h_rename(from: *const c_char, to: *const c_char) -> Act<c_int> {
    h_renameat2(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0)
}

pub(crate) fn h_renameat2(
    d1: c_int,
    from: *const c_char,
    d2: c_int,
    to: *const c_char,
    flags: c_uint_,
) -> Act<c_int> {
    if from.is_null() || to.is_null() {
        // The kernel's EFAULT.
        return None;
    }
    let (a, b) = (
        classify_with(d1, from, Slash::Entry),
        classify_with(d2, to, Slash::Ignore),
    );
    let ours = |t: &Target| matches!(t, Target::Gkfs(_));
    if (ours(&a) && cstr(from).is_some_and(ends_in_dot))
        || (ours(&b) && cstr(to).is_some_and(ends_in_dot))
    {
        return Some(Err(Errno::EBUSY));
    }
    let real_a = matches!(
        a,
        Target::Real | Target::RealOrLink(_) | Target::RealPath(_)
    );
    let real_b = matches!(
        b,
        Target::Real | Target::RealOrLink(_) | Target::RealPath(_)
    );
    if real_a && real_b {
        if !matches!(a, Target::RealPath(_)) && !matches!(b, Target::RealPath(_)) {
            return None;
        }
        let (da, pa) = match &a {
            Target::RealPath(p) => (libc::AT_FDCWD, p.as_ptr()),
            _ => (d1, from),
        };
        let (db, pb) = match &b {
            Target::RealPath(p) => (libc::AT_FDCWD, p.as_ptr()),
            _ => (d2, to),
        };
        // SAFETY: NUL-terminated paths and the caller's dirfds.
        return Some(checked(unsafe { libc::renameat2(da, pa, db, pb, flags) }));
    }
    rename_targets(a, b, flags, cstr(to).is_some_and(names_dir))
}

#[allow(non_camel_case_types)]
type c_uint_ = std::ffi::c_uint;

pub(crate) fn h_renameat(
    d1: c_int,
    from: *const c_char,
    d2: c_int,
    to: *const c_char,
) -> Act<c_int> {
    h_renameat2(d1, from, d2, to, 0)
}

fn truncate_gkfs(p: String, len: i64) -> Result<c_int, Errno> {
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    match lookup(p, true)? {
        Followed::Gkfs(p, r) => {
            if r.is_dir() {
                return Err(Errno::EISDIR);
            }
            state::client()?.truncate(&p, len as u64)?;
            Ok(0)
        }
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path.
            checked(unsafe { libc::truncate(cp.as_ptr(), len) })
        }
    }
}

pub(crate) fn h_truncate(path: *const c_char, len: i64) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify(path),
        |p| unsafe { libc::truncate(p, len) },
        |p| truncate_gkfs(p, len),
    )
}

/// Converts a utimensat time (UTIME_NOW / UTIME_OMIT aware) to ns or None (keep).
fn time_arg(t: &libc::timespec) -> Result<Option<i64>, Errno> {
    match t.tv_nsec {
        libc::UTIME_OMIT => Ok(None),
        libc::UTIME_NOW => Ok(Some(api::file_time_now())),
        n if (0..1_000_000_000).contains(&n) => Ok(Some(t.tv_sec * 1_000_000_000 + n)),
        _ => Err(Errno::EINVAL),
    }
}

fn set_times(p: &str, times: *const libc::timespec) -> Result<c_int, Errno> {
    let (a, m) = if times.is_null() {
        let n = api::file_time_now();
        (Some(n), Some(n))
    } else {
        // SAFETY: utimensat's times argument points at two timespecs.
        let t = unsafe { std::slice::from_raw_parts(times, 2) };
        (time_arg(&t[0])?, time_arg(&t[1])?)
    };
    state::client()?.set_attr(p, None, a, m)?;
    Ok(0)
}

fn utimens_gkfs(
    p: String,
    times: *const libc::timespec,
    follow_links: bool,
) -> Result<c_int, Errno> {
    match lookup(p, follow_links)? {
        Followed::Gkfs(p, _) => set_times(&p, times),
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path, the caller's times.
            checked(unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), times, 0) })
        }
    }
}

pub(crate) fn h_utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> Act<c_int> {
    if path.is_null() {
        // utimensat(fd, NULL, ...) is futimens.
        return h_futimens(dirfd, times);
    }
    let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path, the caller's times.
        |p| unsafe { libc::utimensat(libc::AT_FDCWD, p, times, flags) },
        |p| utimens_gkfs(p, times, !nofollow),
    )
}

pub(crate) fn h_futimens(fd: c_int, times: *const libc::timespec) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some(set_times(&of.path(), times))
}

fn timevals(tv: *const libc::timeval) -> Option<[libc::timespec; 2]> {
    if tv.is_null() {
        return None;
    }
    // SAFETY: utimes' argument points at two timevals.
    let t = unsafe { std::slice::from_raw_parts(tv, 2) };
    Some([0, 1].map(|i| libc::timespec {
        tv_sec: t[i].tv_sec,
        tv_nsec: t[i].tv_usec * 1000,
    }))
}

pub(crate) fn h_utimes(path: *const c_char, tv: *const libc::timeval) -> Act<c_int> {
    let ts = timevals(tv);
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: rewritten path, the caller's times.
    route(
        classify(path),
        |p| unsafe { libc::utimes(p, tv) },
        |p| utimens_gkfs(p, tp, true),
    )
}

pub(crate) fn h_lutimes(path: *const c_char, tv: *const libc::timeval) -> Act<c_int> {
    let ts = timevals(tv);
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: rewritten path, the caller's times.
    route(
        classify(path),
        |p| unsafe { libc::lutimes(p, tv) },
        |p| utimens_gkfs(p, tp, false),
    )
}

pub(crate) fn h_futimes(fd: c_int, tv: *const libc::timeval) -> Act<c_int> {
    let of = fds::get(fd)?;
    let ts = timevals(tv);
    Some(set_times(
        &of.path(),
        ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
    ))
}

pub(crate) fn h_utime(path: *const c_char, ut: *const libc::utimbuf) -> Act<c_int> {
    let ts = (!ut.is_null()).then(|| {
        // SAFETY: utime's argument, when not NULL, points at a utimbuf.
        let u = unsafe { &*ut };
        [
            libc::timespec {
                tv_sec: u.actime,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: u.modtime,
                tv_nsec: 0,
            },
        ]
    });
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: rewritten path, the caller's times.
    route(
        classify(path),
        |p| unsafe { libc::utime(p, ut) },
        |p| utimens_gkfs(p, tp, true),
    )
}

fn chmod_gkfs(p: String, perm: libc::mode_t, follow: bool) -> Result<c_int, Errno> {
    match lookup(p, follow)? {
        // As Linux: the mode of a symlink itself cannot be changed.
        Followed::Gkfs(_, r) if !follow && r.mode & mode::S_IFMT == mode::S_IFLNK => {
            Err(Errno::ENOTSUP)
        }
        Followed::Gkfs(p, _) => {
            state::client()?.set_attr(&p, Some(perm & 0o7777), None, None)?;
            Ok(0)
        }
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path.
            checked(unsafe { libc::chmod(cp.as_ptr(), perm) })
        }
    }
}

pub(crate) fn h_chmod(path: *const c_char, perm: libc::mode_t) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify(path),
        |p| unsafe { libc::chmod(p, perm) },
        |p| chmod_gkfs(p, perm, true),
    )
}

pub(crate) fn h_lchmod(path: *const c_char, perm: libc::mode_t) -> Act<c_int> {
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Entry),
        // SAFETY: rewritten path.
        |p| unsafe { libc::fchmodat(libc::AT_FDCWD, p, perm, libc::AT_SYMLINK_NOFOLLOW) },
        |p| chmod_gkfs(p, perm, false),
    )
}

pub(crate) fn h_fchmodat(
    dirfd: c_int,
    path: *const c_char,
    perm: libc::mode_t,
    flags: c_int,
) -> Act<c_int> {
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path.
        |p| unsafe { libc::fchmodat(libc::AT_FDCWD, p, perm, flags) },
        |p| chmod_gkfs(p, perm, flags & libc::AT_SYMLINK_NOFOLLOW == 0),
    )
}

pub(crate) fn h_fchmod(fd: c_int, perm: libc::mode_t) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some((|| {
        state::client()?.set_attr(&of.path(), Some(perm & 0o7777), None, None)?;
        Ok(0)
    })())
}

/// chown: gkfs files keep the owner they were created with. Setting the same owner
/// (what `tar` and `cp -p` do for a job's own files) succeeds; a change fails with
/// EPERM, the errno of a file system that does not support it for this caller.
fn chown_rec(path: &str, r: &Record, uid: libc::uid_t, gid: libc::gid_t) -> Result<c_int, Errno> {
    let same = (uid == u32::MAX || uid == r.uid) && (gid == u32::MAX || gid == r.gid);
    if same {
        return Ok(0);
    }
    unsupported(
        Unsupported::Chown,
        format_args!("chown of {path} to {uid}:{gid}"),
    );
    Err(Errno::EPERM)
}

fn chown_gkfs(
    p: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    follow_links: bool,
) -> Result<c_int, Errno> {
    match lookup(p, follow_links)? {
        Followed::Gkfs(p, r) => chown_rec(&p, &r, uid, gid),
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path.
            checked(unsafe { libc::chown(cp.as_ptr(), uid, gid) })
        }
    }
}

pub(crate) fn h_chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify(path),
        |p| unsafe { libc::chown(p, uid, gid) },
        |p| chown_gkfs(p, uid, gid, true),
    )
}

pub(crate) fn h_lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> Act<c_int> {
    // SAFETY: rewritten path.
    route(
        classify(path),
        |p| unsafe { libc::lchown(p, uid, gid) },
        |p| chown_gkfs(p, uid, gid, false),
    )
}

pub(crate) fn h_fchownat(
    dirfd: c_int,
    path: *const c_char,
    uid: libc::uid_t,
    gid: libc::gid_t,
    flags: c_int,
) -> Act<c_int> {
    if flags & libc::AT_EMPTY_PATH != 0 && cstr(path) == Some("") {
        return h_fchown(dirfd, uid, gid);
    }
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path.
        |p| unsafe { libc::fchownat(libc::AT_FDCWD, p, uid, gid, flags) },
        |p| chown_gkfs(p, uid, gid, flags & libc::AT_SYMLINK_NOFOLLOW == 0),
    )
}

pub(crate) fn h_fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some((|| {
        let r = state::client()?.stat(&of.path()).unwrap_or(of.record);
        chown_rec(&of.path(), &r, uid, gid)
    })())
}

fn statfs_gkfs(buf: *mut libc::statfs) -> Result<c_int, Errno> {
    let c = state::client()?;
    let s = c.statfs()?;
    let bs = 4096u64;
    // SAFETY: all-zero is a valid struct statfs.
    let mut f: libc::statfs = unsafe { std::mem::zeroed() };
    f.f_type = FS_MAGIC;
    f.f_bsize = bs as i64;
    f.f_frsize = bs as i64;
    f.f_blocks = s.total / bs;
    f.f_bfree = s.free / bs;
    f.f_bavail = s.avail / bs;
    f.f_files = u64::MAX >> 1;
    f.f_ffree = u64::MAX >> 2;
    f.f_namelen = 255;
    // SAFETY: the caller's buffer.
    unsafe { buf.write(f) };
    Ok(0)
}

fn statvfs_gkfs(buf: *mut libc::statvfs) -> Result<c_int, Errno> {
    // SAFETY: all-zero is a valid struct statfs.
    let mut f: libc::statfs = unsafe { std::mem::zeroed() };
    statfs_gkfs(&mut f)?;
    // SAFETY: all-zero is a valid struct statvfs.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    v.f_bsize = f.f_bsize as u64;
    v.f_frsize = f.f_frsize as u64;
    v.f_blocks = f.f_blocks;
    v.f_bfree = f.f_bfree;
    v.f_bavail = f.f_bavail;
    v.f_files = f.f_files;
    v.f_ffree = f.f_ffree;
    v.f_favail = f.f_ffree;
    v.f_fsid = FS_MAGIC as u64;
    v.f_namemax = 255;
    // SAFETY: the caller's buffer.
    unsafe { buf.write(v) };
    Ok(0)
}

pub(crate) fn h_statfs(path: *const c_char, buf: *mut libc::statfs) -> Act<c_int> {
    // SAFETY: rewritten path and the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::statfs(p, buf) },
        |p| {
            state::client()?.stat(&p)?;
            statfs_gkfs(buf)
        },
    )
}

pub(crate) fn h_fstatfs(fd: c_int, buf: *mut libc::statfs) -> Act<c_int> {
    fds::get(fd)?;
    Some(statfs_gkfs(buf))
}

pub(crate) fn h_statvfs(path: *const c_char, buf: *mut libc::statvfs) -> Act<c_int> {
    // SAFETY: rewritten path and the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::statvfs(p, buf) },
        |p| {
            state::client()?.stat(&p)?;
            statvfs_gkfs(buf)
        },
    )
}

pub(crate) fn h_fstatvfs(fd: c_int, buf: *mut libc::statvfs) -> Act<c_int> {
    fds::get(fd)?;
    Some(statvfs_gkfs(buf))
}

fn symlink_gkfs(target: *const c_char, p: String) -> Result<c_int, Errno> {
    let t = cstr(target).ok_or(Errno::EINVAL)?;
    if t.is_empty() {
        return Err(Errno::ENOENT);
    }
    state::client()?.symlink(t, &p)?;
    Ok(0)
}

pub(crate) fn h_symlink(target: *const c_char, path: *const c_char) -> Act<c_int> {
    if target.is_null() || path.is_null() {
        return None;
    }
    // SAFETY: rewritten path.
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Create),
        |p| unsafe { libc::symlink(target, p) },
        |p| symlink_gkfs(target, p),
    )
}

pub(crate) fn h_symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> Act<c_int> {
    if target.is_null() || path.is_null() {
        return None;
    }
    // SAFETY: rewritten path.
    route(
        classify_with(dirfd, path, Slash::Create),
        |p| unsafe { libc::symlink(target, p) },
        |p| symlink_gkfs(target, p),
    )
}

fn readlink_gkfs(p: String, out: *mut c_char, size: usize) -> Result<isize, Errno> {
    let c = state::client()?;
    let rec = c.stat(&p)?;
    if rec.mode & mode::S_IFMT != mode::S_IFLNK {
        return Err(Errno::EINVAL);
    }
    let t = read_link(&c, &p, rec)?;
    let n = t.len().min(size);
    // SAFETY: the caller's buffer of `size` bytes (readlink does not NUL-terminate).
    unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), out.cast(), n) };
    Ok(n as isize)
}

/// readlink of `/proc/self/fd/N` (and the other spellings) for a gkfs file: its path,
/// as the kernel gives a file's path there.
fn readlink_fd_alias(path: *const c_char, out: *mut c_char, size: usize) -> Act<isize> {
    let of = crate::paths::fd_alias(crate::hook::cstr(path)?)?;
    let full = state::fs()?.mount.outside(&of.path());
    let n = full.len().min(size);
    // SAFETY: at most `size` bytes into the caller's buffer (readlink adds no NUL).
    unsafe { std::ptr::copy_nonoverlapping(full.as_ptr(), out.cast(), n) };
    Some(Ok(n as isize))
}

pub(crate) fn h_readlink(path: *const c_char, out: *mut c_char, size: usize) -> Act<isize> {
    if let Some(done) = readlink_fd_alias(path, out, size) {
        return Some(done);
    }
    // SAFETY: rewritten path and the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::readlink(p, out, size) },
        |p| readlink_gkfs(p, out, size),
    )
}

pub(crate) fn h_readlinkat(
    dirfd: c_int,
    path: *const c_char,
    out: *mut c_char,
    size: usize,
) -> Act<isize> {
    if let Some(done) = readlink_fd_alias(path, out, size) {
        return Some(done);
    }
    route(
        classify_at(dirfd, path),
        // SAFETY: rewritten path and the caller's buffer.
        |p| unsafe { libc::readlink(p, out, size) },
        |p| readlink_gkfs(p, out, size),
    )
}

/// Picks the (dirfd, path) a real *at call gets for a classified path.
fn real_at(t: &Target, dirfd: c_int, orig: *const c_char) -> (c_int, *const c_char) {
    match t {
        Target::RealPath(p) => (libc::AT_FDCWD, p.as_ptr()),
        _ => (dirfd, orig),
    }
}

pub(crate) fn h_linkat(
    d1: c_int,
    from: *const c_char,
    d2: c_int,
    to: *const c_char,
    flags: c_int,
) -> Act<c_int> {
    if from.is_null() || to.is_null() {
        // The kernel's EFAULT.
        return None;
    }
    // linkat(fd, "", dir, name, AT_EMPTY_PATH): a name for an open file (O_TMPFILE).
    let empty = cstr(from).is_some_and(str::is_empty) && flags & libc::AT_EMPTY_PATH != 0;
    let a = match (empty, fds::get(d1)) {
        (true, Some(of)) => Target::Gkfs(of.path().to_string()),
        _ => classify_with(d1, from, Slash::Entry),
    };
    let b = classify_with(d2, to, Slash::Create);
    match (&a, &b) {
        (Target::Gkfs(x), Target::Gkfs(y)) => Some(with_links(x.clone(), |x| {
            with_links(y.clone(), |y| {
                link_gkfs(&x, &y, flags & libc::AT_SYMLINK_FOLLOW != 0)
            })
        })),
        (Target::Fail(e), _) | (_, Target::Fail(e)) => Some(Err(*e)),
        (Target::Gkfs(_), _) | (_, Target::Gkfs(_)) => Some(Err(Errno::EXDEV)),
        (Target::Real | Target::RealOrLink(_), Target::Real | Target::RealOrLink(_)) => None,
        _ => {
            let ((da, pa), (db, pb)) = (real_at(&a, d1, from), real_at(&b, d2, to));
            // SAFETY: NUL-terminated paths and the caller's dirfds.
            Some(checked(unsafe { libc::linkat(da, pa, db, pb, flags) }))
        }
    }
}

/// A hard link between two gkfs paths (following a final symlink of `from` only if
/// asked, as linkat's AT_SYMLINK_FOLLOW).
fn link_gkfs(from: &str, to: &str, follow: bool) -> Result<c_int, Errno> {
    // (Without AT_SYMLINK_FOLLOW the client's link looks `from` up itself.)
    let from = match follow {
        false => from.to_string(),
        true => match lookup(from.to_string(), true)? {
            Followed::Gkfs(p, _) => p,
            Followed::Real(_) => return Err(Errno::EXDEV),
        },
    };
    let c = state::client()?;
    match c.link(&from, to) {
        Err(Errno::ENOENT) => Err(crate::paths::missing(&c, to)),
        r => r.map(|_| 0),
    }
}

pub(crate) fn h_link(from: *const c_char, to: *const c_char) -> Act<c_int> {
    h_linkat(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0)
}

/// mknod/mkfifo of a kind gkfs cannot store: EEXIST if the name is taken (as the
/// kernel checks that first), else EPERM.
fn unsupported_node(p: &str) -> Result<c_int, Errno> {
    let c = state::client()?;
    if c.stat(p).is_ok() {
        return Err(Errno::EEXIST);
    }
    // The walk's own errors come first (a missing or non-directory parent).
    match crate::paths::missing(&c, p) {
        Errno::ENOENT if c.stat(gkfs_proto::path::parent(p)).is_err() => return Err(Errno::ENOENT),
        Errno::ENOTDIR => return Err(Errno::ENOTDIR),
        _ => {}
    }
    unsupported(Unsupported::Mknod, format_args!("mknod/mkfifo {p}"));
    Err(Errno::EPERM)
}

pub(crate) fn h_mknod(path: *const c_char, m: libc::mode_t, dev: libc::dev_t) -> Act<c_int> {
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Create),
        // SAFETY: rewritten path.
        |p| unsafe { libc::mknod(p, m, dev) },
        |p| {
            if m & libc::S_IFMT == libc::S_IFREG || m & libc::S_IFMT == 0 {
                state::client()?.create(&p, m & 0o7777 & !state::umask())?;
                return Ok(0);
            }
            unsupported_node(&p)
        },
    )
}

pub(crate) fn h_mkfifo(path: *const c_char, m: libc::mode_t) -> Act<c_int> {
    route(
        classify_with(libc::AT_FDCWD, path, Slash::Create),
        // SAFETY: rewritten path.
        |p| unsafe { libc::mkfifo(p, m) },
        |p| unsupported_node(&p),
    )
}

pub(crate) fn h_umask(m: libc::mode_t) -> Act<libc::mode_t> {
    state::note_umask(m);
    None
}

pub(crate) fn h_getxattr(
    path: *const c_char,
    n: *const c_char,
    v: *mut c_void,
    s: usize,
) -> Act<isize> {
    // SAFETY: rewritten path, the caller's buffers.
    route(
        classify(path),
        |p| unsafe { libc::getxattr(p, n, v, s) },
        |_| Err(Errno::ENOTSUP),
    )
}
pub(crate) fn h_lgetxattr(
    path: *const c_char,
    n: *const c_char,
    v: *mut c_void,
    s: usize,
) -> Act<isize> {
    // SAFETY: rewritten path, the caller's buffers.
    route(
        classify(path),
        |p| unsafe { libc::lgetxattr(p, n, v, s) },
        |_| Err(Errno::ENOTSUP),
    )
}
pub(crate) fn h_listxattr(path: *const c_char, l: *mut c_char, s: usize) -> Act<isize> {
    // SAFETY: rewritten path, the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::listxattr(p, l, s) },
        |_| Err(Errno::ENOTSUP),
    )
}
pub(crate) fn h_llistxattr(path: *const c_char, l: *mut c_char, s: usize) -> Act<isize> {
    // SAFETY: rewritten path, the caller's buffer.
    route(
        classify(path),
        |p| unsafe { libc::llistxattr(p, l, s) },
        |_| Err(Errno::ENOTSUP),
    )
}
pub(crate) fn h_fgetxattr(fd: c_int, _n: *const c_char, _v: *mut c_void, _s: usize) -> Act<isize> {
    fds::get(fd)?;
    Some(Err(Errno::ENOTSUP))
}
pub(crate) fn h_flistxattr(fd: c_int, _l: *mut c_char, _s: usize) -> Act<isize> {
    fds::get(fd)?;
    Some(Err(Errno::ENOTSUP))
}
fn xattr_set(p: String, n: *const c_char) -> Result<c_int, Errno> {
    unsupported(
        Unsupported::Xattr,
        format_args!("setxattr {p} {:?}", cstr(n)),
    );
    Err(Errno::ENOTSUP)
}
pub(crate) fn h_setxattr(
    path: *const c_char,
    n: *const c_char,
    v: *const c_void,
    s: usize,
    f: c_int,
) -> Act<c_int> {
    // SAFETY: rewritten path, the caller's arguments.
    route(
        classify(path),
        |p| unsafe { libc::setxattr(p, n, v, s, f) },
        |p| xattr_set(p, n),
    )
}
pub(crate) fn h_lsetxattr(
    path: *const c_char,
    n: *const c_char,
    v: *const c_void,
    s: usize,
    f: c_int,
) -> Act<c_int> {
    // SAFETY: rewritten path, the caller's arguments.
    route(
        classify(path),
        |p| unsafe { libc::lsetxattr(p, n, v, s, f) },
        |p| xattr_set(p, n),
    )
}
pub(crate) fn h_fsetxattr(
    fd: c_int,
    _n: *const c_char,
    _v: *const c_void,
    _s: usize,
    _f: c_int,
) -> Act<c_int> {
    fds::get(fd)?;
    unsupported(Unsupported::Xattr, format_args!("fsetxattr on fd {fd}"));
    Some(Err(Errno::ENOTSUP))
}
