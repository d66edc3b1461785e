//! Directories: opendir/readdir streams and getdents64 over gkfs listings, and the
//! working directory (chdir into gkfs sets a virtual one, since the kernel cannot
//! enter a directory it does not know), getcwd, realpath.

use std::ffi::{c_char, c_int, c_long, c_void};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use gkfs_proto::record::mode;
use gkfs_proto::Errno;

use crate::fds::{self, OpenFile};
use crate::file;
use crate::hook::{cstr, Act};
use crate::meta::ino;
use crate::paths::{checked, classify, lookup, route, Followed, Target};
use crate::state;

/// One directory entry.
#[derive(Clone)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// DT_* type.
    pub d_type: u8,
    /// Inode number (as stat reports it).
    pub ino: u64,
}

fn dtype(m: u32) -> u8 {
    match m & mode::S_IFMT {
        mode::S_IFDIR => libc::DT_DIR,
        mode::S_IFLNK => libc::DT_LNK,
        mode::S_IFREG => libc::DT_REG,
        _ => libc::DT_UNKNOWN,
    }
}

/// The entries of a directory, "." and ".." first, as readdir returns them.
fn list(of: &OpenFile) -> Result<Vec<Entry>, Errno> {
    let c = state::client()?;
    let path = of.path();
    let parent = gkfs_proto::path::parent(&path);
    let mut v = vec![
        Entry {
            name: ".".into(),
            d_type: libc::DT_DIR,
            ino: ino(&path),
        },
        Entry {
            name: "..".into(),
            d_type: libc::DT_DIR,
            ino: ino(parent),
        },
    ];
    for e in c.readdir(&path)? {
        let full = gkfs_proto::path::join(&path, &e.name);
        v.push(Entry {
            ino: ino(&full),
            d_type: dtype(e.mode),
            name: e.name,
        });
    }
    Ok(v)
}

/// Entry `i` of the description's listing (fetched on first use; None past the end).
fn entry(of: &OpenFile, i: usize) -> Result<Option<Entry>, Errno> {
    let mut l = of.listing.lock();
    if l.is_none() {
        *l = Some(list(of)?);
    }
    Ok(l.as_ref().and_then(|v| v.get(i).cloned()))
}

const STREAM_MAGIC: u64 = 0x6b66_735f_6469_7221;

/// Our `DIR`. The first field is the fd, as in glibc's own `DIR`, so even glibc's
/// dirfd() works on it; `magic` tells our streams from glibc's.
#[repr(C)]
struct DirStream {
    fd: c_int,
    _pad: c_int,
    magic: u64,
    of: Arc<OpenFile>,
    ent: libc::dirent64,
}

fn ours(dirp: *mut c_void) -> Option<&'static mut DirStream> {
    if dirp.is_null() {
        return None;
    }
    // SAFETY: a DIR* from opendir is at least 16 bytes (glibc's starts with fd, lock
    // and allocation size); reading them does not disturb it.
    let (fd, magic) = unsafe { (*(dirp as *const c_int), *(dirp as *const u64).add(1)) };
    if magic != STREAM_MAGIC || !fds::is_ours(fd) {
        return None;
    }
    // SAFETY: it is one of ours (made by `stream` and not yet closed).
    Some(unsafe { &mut *(dirp as *mut DirStream) })
}

fn stream(fd: c_int, of: Arc<OpenFile>) -> *mut c_void {
    Box::into_raw(Box::new(DirStream {
        fd,
        _pad: 0,
        magic: STREAM_MAGIC,
        of,
        // SAFETY: all-zero is a valid dirent64.
        ent: unsafe { std::mem::zeroed() },
    }))
    .cast()
}

pub(crate) fn h_opendir(path: *const c_char) -> Act<*mut c_void> {
    route(
        classify(path),
        // SAFETY: rewritten path.
        |p| unsafe { libc::opendir(p) }.cast(),
        |p| {
            let fd = file::open_gkfs(p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
            match fds::get(fd) {
                Some(of) => Ok(stream(fd, of)),
                // A symlink that led out of gkfs: a real fd.
                // SAFETY: fd is a real directory fd we just opened.
                None => Ok(unsafe { libc::fdopendir(fd) }.cast()),
            }
        },
    )
}

pub(crate) fn h_fdopendir(fd: c_int) -> Act<*mut c_void> {
    let of = fds::get(fd)?;
    if !of.is_dir() {
        return Some(Err(Errno::ENOTDIR));
    }
    Some(Ok(stream(fd, of)))
}

pub(crate) fn h_closedir(dirp: *mut c_void) -> Act<c_int> {
    let d = ours(dirp)?;
    let fd = d.fd;
    // SAFETY: made by Box::into_raw in `stream`; the caller gives it up.
    drop(unsafe { Box::from_raw(d as *mut DirStream) });
    Some(file::close_ours(fd))
}

fn next(d: &mut DirStream) -> Result<*mut libc::dirent64, Errno> {
    let i = d.of.offset().load(Ordering::Acquire) as usize;
    let Some(e) = entry(&d.of, i)? else {
        return Ok(std::ptr::null_mut());
    };
    d.of.offset().store(i as u64 + 1, Ordering::Release);
    let ent = &mut d.ent;
    ent.d_ino = e.ino;
    ent.d_off = i as i64 + 1;
    ent.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
    ent.d_type = e.d_type;
    let n = e.name.len().min(255);
    for (dst, src) in ent
        .d_name
        .iter_mut()
        .zip(e.name.as_bytes()[..n].iter().chain(std::iter::once(&0)))
    {
        *dst = *src as c_char;
    }
    Ok(ent)
}

pub(crate) fn h_readdir(dirp: *mut c_void) -> Act<*mut libc::dirent64> {
    let d = ours(dirp)?;
    Some(next(d))
}

pub(crate) fn h_readdir_r(
    dirp: *mut c_void,
    entry: *mut libc::dirent64,
    result: *mut *mut libc::dirent64,
) -> Act<c_int> {
    let d = ours(dirp)?;
    Some(Ok(match next(d) {
        Ok(p) => {
            if !p.is_null() {
                // SAFETY: the caller's entry buffer holds a full dirent64.
                unsafe { entry.write(*p) };
            }
            // SAFETY: the caller's result pointer.
            unsafe { result.write(if p.is_null() { p } else { entry }) };
            0
        }
        Err(e) => e.raw(),
    }))
}

pub(crate) fn h_rewinddir(dirp: *mut c_void) -> Act<u32> {
    let d = ours(dirp)?;
    d.of.offset().store(0, Ordering::Release);
    *d.of.listing.lock() = None;
    Some(Ok(0))
}

pub(crate) fn h_telldir(dirp: *mut c_void) -> Act<c_long> {
    let d = ours(dirp)?;
    Some(Ok(d.of.offset().load(Ordering::Acquire) as c_long))
}

pub(crate) fn h_seekdir(dirp: *mut c_void, loc: c_long) -> Act<u32> {
    let d = ours(dirp)?;
    d.of.offset().store(loc.max(0) as u64, Ordering::Release);
    Some(Ok(0))
}

pub(crate) fn h_dirfd(dirp: *mut c_void) -> Act<c_int> {
    Some(Ok(ours(dirp)?.fd))
}

pub(crate) type Filter = Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>;
pub(crate) type Compar = Option<unsafe extern "C" fn(*const c_void, *const c_void) -> c_int>;

fn scan(
    p: String,
    namelist: *mut *mut *mut libc::dirent64,
    filter: Filter,
    compar: Compar,
) -> Result<c_int, Errno> {
    let fd = file::open_gkfs(p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
    let Some(of) = fds::get(fd) else {
        // SAFETY: a real fd from following a symlink out of gkfs.
        unsafe { libc::close(fd) };
        return Err(Errno::ENOTSUP);
    };
    let entries = list(&of);
    fds::remove(fd);
    // SAFETY: our reserved fd.
    unsafe { libc::close(fd) };
    let mut out: Vec<*mut libc::dirent64> = Vec::new();
    for (i, e) in entries?.into_iter().enumerate() {
        // SAFETY: malloc'd like glibc's scandir entries (the caller frees them).
        let d = unsafe { libc::calloc(1, std::mem::size_of::<libc::dirent64>()) }
            as *mut libc::dirent64;
        if d.is_null() {
            return Err(Errno::ENOMEM);
        }
        // SAFETY: fresh zeroed allocation of a dirent64.
        let dr = unsafe { &mut *d };
        dr.d_ino = e.ino;
        dr.d_off = i as i64 + 1;
        dr.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
        dr.d_type = e.d_type;
        for (dst, src) in dr.d_name.iter_mut().zip(e.name.as_bytes().iter().take(255)) {
            *dst = *src as c_char;
        }
        // SAFETY: the caller's filter function, given a valid entry.
        let keep = filter.is_none_or(|f| unsafe { f(d) } != 0);
        if keep {
            out.push(d);
        } else {
            // SAFETY: our allocation.
            unsafe { libc::free(d.cast()) };
        }
    }
    if let Some(cmp) = compar {
        // SAFETY: sorts our array of entry pointers with the caller's comparator,
        // which takes pointers to elements (const struct dirent **).
        unsafe {
            libc::qsort(
                out.as_mut_ptr().cast(),
                out.len(),
                std::mem::size_of::<*mut libc::dirent64>(),
                Some(cmp),
            )
        };
    }
    let n = out.len();
    // SAFETY: malloc'd array the caller frees.
    let arr = unsafe { libc::malloc(n.max(1) * std::mem::size_of::<*mut libc::dirent64>()) }
        as *mut *mut libc::dirent64;
    if arr.is_null() {
        return Err(Errno::ENOMEM);
    }
    // SAFETY: `arr` has room for n pointers; the caller's namelist pointer.
    unsafe {
        std::ptr::copy_nonoverlapping(out.as_ptr(), arr, n);
        namelist.write(arr);
    }
    Ok(n as c_int)
}

pub(crate) fn h_scandir(
    path: *const c_char,
    namelist: *mut *mut *mut libc::dirent64,
    filter: Filter,
    compar: Compar,
) -> Act<c_int> {
    route(
        classify(path),
        // SAFETY: rewritten path and the caller's arguments.
        |p| unsafe { scandir_real(p, namelist, filter, compar) },
        |p| scan(p, namelist, filter, compar),
    )
}

unsafe fn scandir_real(
    p: *const c_char,
    namelist: *mut *mut *mut libc::dirent64,
    filter: Filter,
    compar: Compar,
) -> c_int {
    extern "C" {
        fn scandir64(
            p: *const c_char,
            n: *mut *mut *mut libc::dirent64,
            f: Filter,
            c: Compar,
        ) -> c_int;
    }
    // SAFETY: the library's own scandir64 (our hook; with the guard set it goes to libc).
    unsafe { scandir64(p, namelist, filter, compar) }
}

pub(crate) fn h_getdents64(fd: c_int, out: *mut c_void, count: usize) -> Act<isize> {
    let of = fds::get(fd)?;
    Some((|| {
        if !of.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let buf = file::buf_mut(out, count);
        let mut used = 0usize;
        loop {
            let i = of.offset().load(Ordering::Acquire) as usize;
            let Some(e) = entry(&of, i)? else { break };
            let name = &e.name.as_bytes()[..e.name.len().min(255)];
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            if used + reclen > buf.len() {
                if used == 0 {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            let r = &mut buf[used..used + reclen];
            r.fill(0);
            r[0..8].copy_from_slice(&e.ino.to_ne_bytes());
            r[8..16].copy_from_slice(&(i as i64 + 1).to_ne_bytes());
            r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
            r[18] = e.d_type;
            r[19..19 + name.len()].copy_from_slice(name);
            used += reclen;
            of.offset().store(i as u64 + 1, Ordering::Release);
        }
        Ok(used as isize)
    })())
}

/// chdir into a gkfs directory (as programs see it, e.g. "/tmp/gkfs/d").
fn enter(p: String) -> Result<c_int, Errno> {
    match lookup(p, true)? {
        Followed::Gkfs(p, r) => {
            if !r.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            let fs = state::fs().ok_or(Errno::ENOENT)?;
            state::set_cwd(Some(fs.mount.outside(&p)));
            Ok(0)
        }
        Followed::Real(p) => {
            let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated path.
            let r = checked(unsafe { libc::chdir(cp.as_ptr()) });
            if r.is_ok() {
                state::set_cwd(None);
            }
            r
        }
    }
}

/// chdir in a vfork child (Python's subprocess with `cwd=`), which shares its parent's
/// memory and connections: nothing is asked of the daemons and nothing of the parent
/// changes; the directory is noted for the exec that follows (`LIBGKFS_CWD`), where the
/// new program's first call finds out whether it exists.
fn vfork_chdir(path: *const c_char) -> Act<c_int> {
    let fs = state::fs()?;
    match classify(path) {
        Target::Gkfs(p) => {
            state::set_vfork_cwd(Some(fs.mount.outside(&p)));
            Some(Ok(0))
        }
        Target::Fail(e) => Some(Err(e)),
        Target::RealPath(p) => {
            // SAFETY: a NUL-terminated path.
            let r = checked(unsafe { libc::chdir(p.as_ptr()) });
            if r.is_ok() {
                state::set_vfork_cwd(None);
            }
            Some(r)
        }
        Target::Real | Target::RealOrLink(_) => {
            // SAFETY: the caller's path.
            let r = checked(unsafe { libc::chdir(path) });
            if r.is_ok() {
                state::set_vfork_cwd(None);
            }
            Some(r)
        }
    }
}

pub(crate) fn h_chdir(path: *const c_char) -> Act<c_int> {
    if state::in_vfork_child() {
        return vfork_chdir(path);
    }
    let real = |p: *const c_char| {
        // SAFETY: a NUL-terminated path.
        let r = checked(unsafe { libc::chdir(p) });
        if r.is_ok() {
            state::set_cwd(None);
        }
        r
    };
    match classify(path) {
        Target::Gkfs(p) => Some(crate::paths::with_links(p, enter)),
        Target::Fail(e) => Some(Err(e)),
        Target::RealPath(p) => Some(real(p.as_ptr())),
        Target::Real => {
            state::fs()?;
            Some(real(path))
        }
        // A disk symlink into gkfs on the way (`cd ~/run`, run -> /tmp/gkfs/run).
        Target::RealOrLink(p) => Some(match real(p) {
            Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => {
                match cstr(p).and_then(crate::paths::into_gkfs) {
                    Some(q) => crate::paths::with_links(q, enter),
                    None => Err(e),
                }
            }
            r => r,
        }),
    }
}

pub(crate) fn h_fchdir(fd: c_int) -> Act<c_int> {
    if state::in_vfork_child() {
        return None;
    }
    match fds::get(fd) {
        Some(of) => Some(if of.is_dir() {
            state::fs().ok_or(Errno::ENOENT).map(|fs| {
                state::set_cwd(Some(fs.mount.outside(&of.path())));
                0
            })
        } else {
            Err(Errno::ENOTDIR)
        }),
        None => {
            state::fs()?;
            // SAFETY: the caller's fd.
            let r = checked(unsafe { libc::fchdir(fd) });
            if r.is_ok() {
                state::set_cwd(None);
            }
            Some(r)
        }
    }
}

/// Copies `s` into a caller buffer of `size` bytes, or a malloc'd one if `buf` is NULL.
fn out_str(s: &str, buf: *mut c_char, size: usize) -> Result<*mut c_char, Errno> {
    let need = s.len() + 1;
    let dst = if buf.is_null() {
        // SAFETY: malloc'd as glibc's getcwd/realpath do; the caller frees it.
        let p = unsafe { libc::malloc(need.max(size)) } as *mut c_char;
        if p.is_null() {
            return Err(Errno::ENOMEM);
        }
        p
    } else {
        if size < need {
            return Err(Errno::ERANGE);
        }
        buf
    };
    // SAFETY: `dst` has room for `need` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), dst.cast(), s.len());
        *dst.add(s.len()) = 0;
    }
    Ok(dst)
}

pub(crate) fn h_getcwd(buf: *mut c_char, size: usize) -> Act<*mut c_char> {
    state::fs()?;
    let cwd = state::cwd()?;
    if !buf.is_null() && size == 0 {
        return Some(Err(Errno::EINVAL));
    }
    Some(out_str(&cwd, buf, size))
}

pub(crate) fn h_get_current_dir_name() -> Act<*mut c_char> {
    state::fs()?;
    let cwd = state::cwd()?;
    Some(out_str(&cwd, std::ptr::null_mut(), 0))
}

pub(crate) fn h_realpath(path: *const c_char, resolved: *mut c_char) -> Act<*mut c_char> {
    let size = if resolved.is_null() {
        0
    } else {
        libc::PATH_MAX as usize
    };
    route(
        classify(path),
        // SAFETY: rewritten path and the caller's buffer.
        |p| unsafe { libc::realpath(p, resolved) },
        |p| match lookup(p, true)? {
            Followed::Gkfs(p, _) => {
                let fs = state::fs().ok_or(Errno::ENOENT)?;
                out_str(&fs.mount.outside(&p), resolved, size)
            }
            Followed::Real(p) => {
                let cp = std::ffi::CString::new(p).map_err(|_| Errno::EINVAL)?;
                // SAFETY: NUL-terminated path and the caller's buffer.
                checked(unsafe { libc::realpath(cp.as_ptr(), resolved) })
            }
        },
    )
}

pub(crate) fn h_realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    _len: usize,
) -> Act<*mut c_char> {
    h_realpath(path, resolved)
}

pub(crate) fn h_canonicalize_file_name(path: *const c_char) -> Act<*mut c_char> {
    cstr(path)?;
    h_realpath(path, std::ptr::null_mut())
}
