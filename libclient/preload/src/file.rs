//! Opening, reading, writing and closing gkfs files, and the descriptor calls (dup,
//! fcntl, lseek, locks).

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use api::{File, OpenOptions};
use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::fds::{self, OpenFile};
use crate::hook::{cstr, Act};
use crate::log::{unsupported, Unsupported};
use crate::paths::{
    checked, classify, classify_at, ends_in_dot, follow, missing, names_dir, route, Followed,
    Target,
};
use crate::{state, stdio};

/// A handle for I/O on an open description.
pub fn handle(of: &OpenFile) -> Result<File, Errno> {
    Ok(state::client()?.file_handle(&of.path(), of.record, of.append()))
}

/// Opens a gkfs path with open(2) flags; returns the reserved fd.
pub fn open_gkfs(path: String, flags: c_int, perm: c_uint) -> Result<c_int, Errno> {
    let c = state::client()?;
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        // A nameless file in `path` (a directory): hidden, removed at its last close.
        let acc = flags & libc::O_ACCMODE;
        if acc != libc::O_WRONLY && acc != libc::O_RDWR {
            return Err(Errno::EINVAL);
        }
        let hidden = crate::orphans::tmpfile_path(&c, &path)?;
        let plain = (flags & !libc::O_TMPFILE) | libc::O_CREAT | libc::O_EXCL;
        let fd = open_gkfs(hidden, plain, perm)?;
        if let Some(of) = fds::get(fd) {
            of.set_orphan();
        }
        return Ok(fd);
    }
    let acc = flags & libc::O_ACCMODE;
    let write = acc == libc::O_WRONLY || acc == libc::O_RDWR;
    let create = flags & libc::O_CREAT != 0;
    let opts = OpenOptions {
        create,
        exclusive: create && flags & libc::O_EXCL != 0,
        truncate: false,
        append: flags & libc::O_APPEND != 0,
        write,
        mode: perm & 0o7777 & !state::umask(),
    };
    let f = match c.open(&path, &opts) {
        Err(Errno::ENOENT) => return Err(missing(&c, &path)),
        r => r?,
    };
    let mut rec = *f.record();
    if f.path() != path {
        // A hard-linked name: I/O goes to the inode record from the start.
        rec.flags |= Record::LINKED;
    }
    let (path, rec) = if rec.mode & mode::S_IFMT == mode::S_IFLNK {
        if flags & libc::O_NOFOLLOW != 0 && flags & libc::O_PATH == 0 {
            return Err(Errno::ELOOP);
        }
        match follow(path, rec)? {
            Followed::Gkfs(p, r) => (p, r),
            Followed::Real(p) => {
                let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
                // SAFETY: NUL-terminated path; flags and mode as the caller gave them.
                return checked(unsafe { libc::open(cp.as_ptr(), flags, perm) });
            }
        }
    } else {
        (path, rec)
    };
    if flags & libc::O_DIRECTORY != 0 && !rec.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    if rec.is_dir() && write {
        return Err(Errno::EISDIR);
    }
    if flags & libc::O_TRUNC != 0 && write && rec.is_file() && rec.size > 0 {
        c.truncate(&path, 0)?;
    }
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_NONBLOCK
        | libc::O_DIRECT
        | libc::O_NOATIME
        | libc::O_SYNC
        | libc::O_DSYNC;
    let (fd, of) = OpenFile::create(&path, rec, flags & keep, flags & libc::O_CLOEXEC != 0)?;
    bind(fd, of);
    Ok(fd)
}

/// Binds a new fd to a description (and updates stdio if it is 0, 1 or 2).
pub fn bind(fd: c_int, of: Arc<OpenFile>) {
    fds::insert(fd, of);
    stdio::std_fd_changed(fd);
}

/// open(2) with O_CREAT of a gkfs path spelled as a directory ("new/") is EISDIR, as
/// in the kernel, whether or not the name exists: nothing is created.
fn creates_dir_spelled(t: &Target, path: *const c_char, flags: c_int) -> bool {
    let Some(p) = cstr(path) else { return false };
    flags & libc::O_CREAT != 0
        && names_dir(p)
        && match t {
            Target::Real | Target::RealOrLink(_) | Target::RealPath(_) => false,
            // "f/." walks into `f` first: ENOTDIR from the walk comes first.
            Target::Fail(_) => !ends_in_dot(p),
            Target::Gkfs(_) => true,
        }
}

pub(crate) fn h_open(path: *const c_char, flags: c_int, perm: c_uint) -> Act<c_int> {
    let t = classify(path);
    if creates_dir_spelled(&t, path, flags) {
        return Some(Err(Errno::EISDIR));
    }
    route(
        t,
        // SAFETY: rewritten NUL-terminated path; the caller's flags and mode.
        |p| unsafe { libc::open(p, flags, perm) },
        |p| open_gkfs(p, flags, perm),
    )
}

pub(crate) fn h_openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    perm: c_uint,
) -> Act<c_int> {
    let t = classify_at(dirfd, path);
    if creates_dir_spelled(&t, path, flags) {
        return Some(Err(Errno::EISDIR));
    }
    route(
        t,
        // SAFETY: as in h_open.
        |p| unsafe { libc::open(p, flags, perm) },
        |p| open_gkfs(p, flags, perm),
    )
}

pub(crate) fn h_creat(path: *const c_char, perm: libc::mode_t) -> Act<c_int> {
    h_open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, perm)
}

pub(crate) fn h_open_2(path: *const c_char, flags: c_int) -> Act<c_int> {
    h_open(path, flags, 0)
}

pub(crate) fn h_openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> Act<c_int> {
    h_openat(dirfd, path, flags, 0)
}

/// A mutable byte slice from a C buffer (empty for a zero length).
pub fn buf_mut<'a>(buf: *mut c_void, n: usize) -> &'a mut [u8] {
    if n == 0 || buf.is_null() {
        return &mut [];
    }
    // SAFETY: the caller of read(2)-like calls promises `n` writable bytes at `buf`.
    unsafe { std::slice::from_raw_parts_mut(buf.cast(), n) }
}

/// A byte slice from a C buffer (empty for a zero length).
pub fn buf<'a>(buf: *const c_void, n: usize) -> &'a [u8] {
    if n == 0 || buf.is_null() {
        return &[];
    }
    // SAFETY: the caller of write(2)-like calls promises `n` readable bytes at `buf`.
    unsafe { std::slice::from_raw_parts(buf.cast(), n) }
}

/// Reads at `off` (None: at the shared offset, advancing it).
pub fn read_of(of: &OpenFile, dst: &mut [u8], off: Option<u64>) -> Result<usize, Errno> {
    if of.is_dir() {
        return Err(Errno::EISDIR);
    }
    if !of.readable() {
        return Err(Errno::EBADF);
    }
    let f = handle(of)?;
    match off {
        Some(o) => f.pread(dst, o),
        None => {
            let o = of.offset().load(Ordering::Acquire);
            let n = f.pread(dst, o)?;
            of.offset().store(o + n as u64, Ordering::Release);
            Ok(n)
        }
    }
}

/// Writes at `off` (None: at the shared offset, advancing it; or at the end).
pub fn write_of(of: &OpenFile, src: &[u8], off: Option<u64>) -> Result<usize, Errno> {
    if !of.writable() {
        return Err(Errno::EBADF);
    }
    if of.is_dir() {
        return Err(Errno::EISDIR);
    }
    let f = handle(of)?;
    if of.append() {
        let at = f.append(src)?;
        if off.is_none() {
            of.offset().store(at + src.len() as u64, Ordering::Release);
        }
        return Ok(src.len());
    }
    match off {
        Some(o) => f.pwrite(src, o),
        None => {
            let o = of.offset().load(Ordering::Acquire);
            let n = f.pwrite(src, o)?;
            of.offset().store(o + n as u64, Ordering::Release);
            Ok(n)
        }
    }
}

fn offset_arg(off: i64) -> Result<u64, Errno> {
    u64::try_from(off).map_err(|_| Errno::EINVAL)
}

pub(crate) fn h_read(fd: c_int, b: *mut c_void, n: usize) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(read_of(&of, buf_mut(b, n), None).map(|n| n as isize))
}

pub(crate) fn h_read_chk(fd: c_int, b: *mut c_void, n: usize, _buflen: usize) -> Act<isize> {
    h_read(fd, b, n)
}

pub(crate) fn h_write(fd: c_int, b: *const c_void, n: usize) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(write_of(&of, buf(b, n), None).map(|n| n as isize))
}

pub(crate) fn h_pread(fd: c_int, b: *mut c_void, n: usize, off: i64) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(offset_arg(off).and_then(|o| read_of(&of, buf_mut(b, n), Some(o)).map(|n| n as isize)))
}

pub(crate) fn h_pread_chk(
    fd: c_int,
    b: *mut c_void,
    n: usize,
    off: i64,
    _buflen: usize,
) -> Act<isize> {
    h_pread(fd, b, n, off)
}

pub(crate) fn h_pwrite(fd: c_int, b: *const c_void, n: usize, off: i64) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(offset_arg(off).and_then(|o| write_of(&of, buf(b, n), Some(o)).map(|n| n as isize)))
}

fn iovecs<'a>(iov: *const libc::iovec, cnt: c_int) -> Result<&'a [libc::iovec], Errno> {
    if !(0..=libc::UIO_MAXIOV).contains(&cnt) {
        return Err(Errno::EINVAL);
    }
    if cnt == 0 || iov.is_null() {
        return Ok(&[]);
    }
    // SAFETY: the caller of readv/writev promises `cnt` iovecs at `iov`.
    Ok(unsafe { std::slice::from_raw_parts(iov, cnt as usize) })
}

/// readv/preadv: one read into a bounce buffer, scattered (one round trip, not one
/// per vector).
fn readv_of(
    of: &OpenFile,
    iov: *const libc::iovec,
    cnt: c_int,
    off: Option<u64>,
) -> Result<isize, Errno> {
    let v = iovecs(iov, cnt)?;
    let total: usize = v.iter().map(|i| i.iov_len).sum();
    let mut tmp = vec![0u8; total];
    let n = read_of(of, &mut tmp, off)?;
    let mut done = 0;
    for i in v {
        if done >= n {
            break;
        }
        let k = i.iov_len.min(n - done);
        buf_mut(i.iov_base, k).copy_from_slice(&tmp[done..done + k]);
        done += k;
    }
    Ok(n as isize)
}

/// writev/pwritev: gathered into one write, so the vectors land atomically together.
fn writev_of(
    of: &OpenFile,
    iov: *const libc::iovec,
    cnt: c_int,
    off: Option<u64>,
) -> Result<isize, Errno> {
    let v = iovecs(iov, cnt)?;
    let mut tmp = Vec::with_capacity(v.iter().map(|i| i.iov_len).sum());
    for i in v {
        tmp.extend_from_slice(buf(i.iov_base, i.iov_len));
    }
    write_of(of, &tmp, off).map(|n| n as isize)
}

pub(crate) fn h_readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(readv_of(&of, iov, cnt, None))
}

pub(crate) fn h_writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(writev_of(&of, iov, cnt, None))
}

fn pos_off(off: i64) -> Result<Option<u64>, Errno> {
    // preadv2/pwritev2 take -1 as "the current offset".
    if off == -1 {
        Ok(None)
    } else {
        offset_arg(off).map(Some)
    }
}

pub(crate) fn h_preadv(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(offset_arg(off).and_then(|o| readv_of(&of, iov, cnt, Some(o))))
}

pub(crate) fn h_pwritev(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(offset_arg(off).and_then(|o| writev_of(&of, iov, cnt, Some(o))))
}

pub(crate) fn h_preadv2(
    fd: c_int,
    iov: *const libc::iovec,
    cnt: c_int,
    off: i64,
    _flags: c_int,
) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(pos_off(off).and_then(|o| readv_of(&of, iov, cnt, o)))
}

pub(crate) fn h_pwritev2(
    fd: c_int,
    iov: *const libc::iovec,
    cnt: c_int,
    off: i64,
    _flags: c_int,
) -> Act<isize> {
    let of = fds::get(fd)?;
    Some(pos_off(off).and_then(|o| writev_of(&of, iov, cnt, o)))
}

/// The size of the file behind a description.
pub fn size_of(of: &OpenFile) -> Result<u64, Errno> {
    handle(of)?.size()
}

/// lseek on a description.
pub fn seek_of(of: &OpenFile, off: i64, whence: c_int) -> Result<i64, Errno> {
    let cur = of.offset().load(Ordering::Acquire) as i64;
    let size = || -> Result<i64, Errno> {
        if of.is_dir() {
            Ok(0)
        } else {
            Ok(handle(of)?.size()? as i64)
        }
    };
    let new = match whence {
        libc::SEEK_SET => Some(off),
        libc::SEEK_CUR => cur.checked_add(off),
        libc::SEEK_END => size()?.checked_add(off),
        libc::SEEK_DATA | libc::SEEK_HOLE => {
            let s = size()?;
            if off < 0 {
                return Err(Errno::EINVAL);
            }
            if off >= s {
                return Err(Errno(libc::ENXIO));
            }
            Some(if whence == libc::SEEK_DATA { off } else { s })
        }
        _ => return Err(Errno::EINVAL),
    };
    let new = new.ok_or(Errno::EOVERFLOW)?;
    if new < 0 {
        return Err(Errno::EINVAL);
    }
    of.offset().store(new as u64, Ordering::Release);
    if of.is_dir() && new == 0 {
        *of.listing.lock() = None;
    }
    Ok(new)
}

pub(crate) fn h_lseek(fd: c_int, off: i64, whence: c_int) -> Act<i64> {
    let of = fds::get(fd)?;
    Some(seek_of(&of, off, whence))
}

/// What goes with a descriptor of `of` (at `fd`, about to be closed or replaced):
/// locks (POSIX ones at any close, a description's at its last one here) and a file
/// unlinked while open (at its last descriptor here).
fn before_release(fd: c_int, of: &Arc<OpenFile>) {
    // (The table is walked only for a description that has locks or lost its name.)
    let last = std::cell::OnceCell::new();
    let last_here = || *last.get_or_init(|| fds::last_here(fd, of));
    crate::locks::before_close(of, last_here);
    crate::orphans::before_close(of, last_here);
}

/// Forgets our side of `fd` (before the kernel fd is closed). Returns the description
/// it was bound to: the caller drops it after the kernel's close, so that a fork in
/// between finds it still in use (and its page never serves another description).
#[must_use = "drop the description after the kernel's close"]
pub fn unbind(fd: c_int) -> Option<Arc<OpenFile>> {
    if !fds::is_ours(fd) {
        return None;
    }
    if let Some(of) = fds::get(fd) {
        before_release(fd, &of);
    }
    stdio::before_std_fd_change(fd);
    let of = fds::remove(fd);
    stdio::std_fd_changed(fd);
    of
}

/// Closes one of our fds from library code (where libc::close goes straight to the
/// kernel).
pub fn close_ours(fd: c_int) -> Result<c_int, Errno> {
    let _ended = unbind(fd);
    // SAFETY: closes the reserved kernel fd.
    checked(unsafe { libc::close(fd) })
}

pub(crate) fn h_close(fd: c_int) -> Act<c_int> {
    if fds::is_library(fd) {
        // Not the program's: as far as it knows, nothing is open there.
        return Some(Err(Errno::EBADF));
    }
    // (is_ours first: while a vfork is under way the check costs a getpid.)
    if fds::is_ours(fd) && !state::in_vfork_child() {
        let ended = unbind(fd);
        static REAL: crate::hook::Real = crate::hook::Real::new(c"close");
        // SAFETY: the type is the C prototype of the symbol `REAL` names.
        let real = unsafe { REAL.func::<unsafe extern "C" fn(c_int) -> c_int>() }?;
        // SAFETY: closes the program's descriptor, as it asked.
        let r = checked(unsafe { real(fd) });
        drop(ended);
        return Some(r);
    }
    None
}

/// The library closes a descriptor of its own (libfabric, the client's sockets).
pub(crate) fn library_close(fd: c_int) {
    fds::disown(fd);
}

/// A descriptor of the library named by the program, as `old` or `new` of a dup.
fn library_dup(old: c_int, new: c_int) -> Act<c_int> {
    (fds::is_library(old) || fds::is_library(new)).then_some(Err(Errno::EBADF))
}

pub(crate) fn h_dup(fd: c_int) -> Act<c_int> {
    if fds::is_library(fd) {
        return Some(Err(Errno::EBADF));
    }
    let of = fds::get(fd)?;
    // SAFETY: duplicates the reserved kernel fd.
    Some(checked(unsafe { libc::dup(fd) }).inspect(|&n| {
        bind(n, of);
    }))
}

fn dup_to(old: c_int, new: c_int, real: impl FnOnce() -> c_int) -> Act<c_int> {
    if let Some(refused) = library_dup(old, new) {
        return Some(refused);
    }
    let of = fds::get(old);
    if of.is_none() && !fds::is_ours(new) {
        return None;
    }
    if state::in_vfork_child() {
        // The table is the parent's: the kernel fd changes, the table does not (the
        // child execs next and finds its fds through LIBGKFS_FDS... which it cannot
        // get for this one; the parent's view stays right).
        return Some(checked(real()));
    }
    if old == new {
        return Some(Ok(new));
    }
    if let Some(replaced) = fds::get(new) {
        before_release(new, &replaced);
    }
    stdio::before_std_fd_change(new);
    let r = checked(real());
    if r.is_ok() {
        match of {
            Some(of) => fds::insert(new, of),
            None => {
                fds::remove(new);
            }
        }
    }
    stdio::std_fd_changed(new);
    Some(r)
}

pub(crate) fn h_dup2(old: c_int, new: c_int) -> Act<c_int> {
    // SAFETY: dup2 of the caller's fds.
    dup_to(old, new, || unsafe { libc::dup2(old, new) })
}

pub(crate) fn h_dup3(old: c_int, new: c_int, flags: c_int) -> Act<c_int> {
    if old == new && (fds::is_ours(old) || fds::is_ours(new)) {
        return Some(Err(Errno::EINVAL));
    }
    // SAFETY: dup3 of the caller's fds.
    dup_to(old, new, || unsafe { libc::dup3(old, new, flags) })
}

pub(crate) fn h_fcntl(fd: c_int, cmd: c_int, arg: usize) -> Act<c_int> {
    if fds::is_library(fd) {
        return Some(Err(Errno::EBADF));
    }
    let of = fds::get(fd)?;
    Some(match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: duplicates the reserved kernel fd.
            checked(unsafe { libc::fcntl(fd, cmd, arg as c_int) }).inspect(|&n| {
                bind(n, of);
            })
        }
        // Close-on-exec lives on the kernel fd.
        // SAFETY: fcntl on the reserved fd with the caller's int argument.
        libc::F_GETFD | libc::F_SETFD => checked(unsafe { libc::fcntl(fd, cmd, arg as c_int) }),
        libc::F_GETFL => Ok(of.flags() | libc::O_LARGEFILE),
        libc::F_SETFL => {
            of.set_flags(arg as c_int);
            Ok(0)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => crate::locks::fcntl_lock(&of, cmd, arg),
        _ => {
            unsupported(
                Unsupported::Fcntl,
                format_args!("fcntl({fd}, {cmd}) on a gkfs file"),
            );
            Err(Errno::EINVAL)
        }
    })
}

pub(crate) fn h_ioctl(fd: c_int, req: std::ffi::c_ulong, arg: usize) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some(match req {
        // isatty() and terminal queries: a file is not a terminal.
        libc::TCGETS | libc::TIOCGWINSZ | libc::TIOCGPGRP => Err(Errno(libc::ENOTTY)),
        libc::FIONREAD if !of.is_dir() => (|| {
            let left = handle(&of)?
                .size()?
                .saturating_sub(of.offset().load(Ordering::Acquire));
            // SAFETY: FIONREAD's argument points at an int.
            unsafe { (arg as *mut c_int).write(left.min(c_int::MAX as u64) as c_int) };
            Ok(0)
        })(),
        _ => {
            unsupported(
                Unsupported::Ioctl,
                format_args!("ioctl({fd}, {req:#x}) on {}", of.path()),
            );
            Err(Errno(libc::ENOTTY))
        }
    })
}

pub(crate) fn h_fsync(fd: c_int) -> Act<c_int> {
    // Writes reach the daemons before write() returns; there is no client cache to
    // flush (the daemons write chunk files through their page cache, like GekkoFS).
    fds::get(fd)?;
    Some(Ok(0))
}

pub(crate) fn h_ftruncate(fd: c_int, len: i64) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some((|| {
        if len < 0 || of.is_dir() || !of.writable() {
            return Err(Errno::EINVAL);
        }
        handle(&of)?.truncate(len as u64)?;
        Ok(0)
    })())
}

pub(crate) fn h_posix_fadvise(fd: c_int, _off: i64, _len: i64, _advice: c_int) -> Act<c_int> {
    // Advice is only advice; posix_fadvise returns 0 or an error number.
    fds::get(fd)?;
    Some(Ok(0))
}

fn fallocate_of(of: &OpenFile, mode_: c_int, off: i64, len: i64) -> Result<c_int, Errno> {
    if off < 0 || len <= 0 {
        return Err(Errno::EINVAL);
    }
    if !of.writable() {
        return Err(Errno::EBADF);
    }
    if mode_ & !libc::FALLOC_FL_KEEP_SIZE != 0 {
        unsupported(
            Unsupported::Fallocate,
            format_args!("fallocate mode {mode_:#x} on {}", of.path()),
        );
        return Err(Errno::ENOTSUP);
    }
    let keep_size = mode_ & libc::FALLOC_FL_KEEP_SIZE != 0;
    handle(of)?.allocate(off as u64, len as u64, keep_size)?;
    Ok(0)
}

pub(crate) fn h_fallocate(fd: c_int, mode_: c_int, off: i64, len: i64) -> Act<c_int> {
    let of = fds::get(fd)?;
    Some(fallocate_of(&of, mode_, off, len))
}

pub(crate) fn h_posix_fallocate(fd: c_int, off: i64, len: i64) -> Act<c_int> {
    let of = fds::get(fd)?;
    // posix_fallocate returns the error number instead of setting errno.
    Some(Ok(fallocate_of(&of, 0, off, len)
        .err()
        .map_or(0, |e| e.raw())))
}

/// Copies `len` bytes between two fds of which at least one is ours, through a bounce
/// buffer (copy_file_range and sendfile on gkfs files).
fn copy_fds(
    fd_in: c_int,
    off_in: Option<&mut i64>,
    fd_out: c_int,
    off_out: Option<&mut i64>,
    len: usize,
) -> Result<isize, Errno> {
    const STEP: usize = 1 << 20;
    let mut tmp = vec![0u8; len.min(STEP)];
    let (mut oi, mut oo) = (off_in, off_out);
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(STEP);
        let n = match oi.as_deref_mut() {
            // SAFETY: reads into our buffer via the (hooked) pread.
            Some(o) => checked(unsafe { pread_any(fd_in, &mut tmp[..want], *o) })?,
            // SAFETY: reads into our buffer.
            None => checked(unsafe { read_any(fd_in, &mut tmp[..want]) })?,
        } as usize;
        if n == 0 {
            break;
        }
        let mut w = 0;
        while w < n {
            let m = match oo.as_deref_mut() {
                // SAFETY: writes from our buffer.
                Some(o) => checked(unsafe { pwrite_any(fd_out, &tmp[w..n], *o + w as i64) })?,
                // SAFETY: writes from our buffer.
                None => checked(unsafe { write_any(fd_out, &tmp[w..n]) })?,
            } as usize;
            if m == 0 {
                return Err(Errno::EIO);
            }
            w += m;
        }
        if let Some(o) = oi.as_deref_mut() {
            *o += n as i64;
        }
        if let Some(o) = oo.as_deref_mut() {
            *o += n as i64;
        }
        done += n;
    }
    Ok(done as isize)
}

unsafe fn read_any(fd: c_int, b: &mut [u8]) -> isize {
    match fds::get(fd) {
        Some(of) => read_of(&of, b, None)
            .map(|n| n as isize)
            .unwrap_or_else(fail),
        // SAFETY: our buffer.
        None => unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) },
    }
}
unsafe fn pread_any(fd: c_int, b: &mut [u8], off: i64) -> isize {
    match fds::get(fd) {
        Some(of) => read_of(&of, b, Some(off as u64))
            .map(|n| n as isize)
            .unwrap_or_else(fail),
        // SAFETY: our buffer.
        None => unsafe { libc::pread(fd, b.as_mut_ptr().cast(), b.len(), off) },
    }
}
unsafe fn write_any(fd: c_int, b: &[u8]) -> isize {
    match fds::get(fd) {
        Some(of) => write_of(&of, b, None)
            .map(|n| n as isize)
            .unwrap_or_else(fail),
        // SAFETY: our buffer.
        None => unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) },
    }
}
unsafe fn pwrite_any(fd: c_int, b: &[u8], off: i64) -> isize {
    match fds::get(fd) {
        Some(of) => write_of(&of, b, Some(off as u64))
            .map(|n| n as isize)
            .unwrap_or_else(fail),
        // SAFETY: our buffer.
        None => unsafe { libc::pwrite(fd, b.as_ptr().cast(), b.len(), off) },
    }
}
fn fail(e: Errno) -> isize {
    crate::hook::set_errno(e.raw());
    -1
}

fn opt_off<'a>(p: *mut i64) -> Option<&'a mut i64> {
    // SAFETY: a non-null offset pointer of copy_file_range/sendfile is the caller's.
    (!p.is_null()).then(|| unsafe { &mut *p })
}

pub(crate) fn h_copy_file_range(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: usize,
    flags: c_uint,
) -> Act<isize> {
    if !fds::is_ours(fd_in) && !fds::is_ours(fd_out) {
        return None;
    }
    if flags != 0 {
        return Some(Err(Errno::EINVAL));
    }
    Some(copy_fds(
        fd_in,
        opt_off(off_in),
        fd_out,
        opt_off(off_out),
        len,
    ))
}

pub(crate) fn h_sendfile(out: c_int, fd_in: c_int, off: *mut i64, count: usize) -> Act<isize> {
    if !fds::is_ours(fd_in) && !fds::is_ours(out) {
        return None;
    }
    Some(copy_fds(fd_in, opt_off(off), out, None, count))
}
