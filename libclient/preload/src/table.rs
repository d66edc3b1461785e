//! Every libc entry point the library intercepts, in one table: a reader finds here
//! what is intercepted, which module serves it, and what is not supported. Each line
//! names the body that serves the call (`hook::hooks!` explains the forms); a body
//! returns `None` to hand the call to libc (not our path, not our fd). Calls not listed
//! here always reach libc unchanged.

use std::ffi::{c_char, c_int, c_long, c_uint, c_void};

use crate::dir::{Compar, Filter};
use crate::hook::{hooks, variadic_trampoline};
use crate::internal::{FtwFn, Glob, GlobErr, NftwFn};
use crate::mmap::MapPtr;
use crate::stdio::File;
use crate::{dir, exec, file, internal, locks, meta, mmap, own, stdio};

hooks! {
    // Opening, reading, writing, closing; descriptor calls (`file.rs`). Supported, except:
    // fcntl commands other than the flags, dup and lock ones (EINVAL), ioctl on a gkfs fd
    // (ENOTTY), fallocate modes other than plain allocation (EOPNOTSUPP), each
    // reported with LIBGKFS_REPORT=1.
    vfn open(path: *const c_char, flags: c_int; perm: c_uint) -> c_int = file::h_open;
    vfn open64(path: *const c_char, flags: c_int; perm: c_uint) -> c_int = file::h_open;
    vfn openat(dirfd: c_int, path: *const c_char, flags: c_int; perm: c_uint) -> c_int = file::h_openat;
    vfn openat64(dirfd: c_int, path: *const c_char, flags: c_int; perm: c_uint) -> c_int = file::h_openat;
    fn __open_2(path: *const c_char, flags: c_int) -> c_int = file::h_open_2;
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int = file::h_open_2;
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = file::h_openat_2;
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = file::h_openat_2;
    fn creat(path: *const c_char, perm: libc::mode_t) -> c_int = file::h_creat;
    fn creat64(path: *const c_char, perm: libc::mode_t) -> c_int = file::h_creat;
    fn read(fd: c_int, b: *mut c_void, n: usize) -> isize = file::h_read;
    fn __read_chk(fd: c_int, b: *mut c_void, n: usize, buflen: usize) -> isize = file::h_read_chk;
    fn write(fd: c_int, b: *const c_void, n: usize) -> isize = file::h_write;
    fn pread(fd: c_int, b: *mut c_void, n: usize, off: i64) -> isize = file::h_pread;
    fn pread64(fd: c_int, b: *mut c_void, n: usize, off: i64) -> isize = file::h_pread;
    fn __pread_chk(fd: c_int, b: *mut c_void, n: usize, off: i64, buflen: usize) -> isize = file::h_pread_chk;
    fn __pread64_chk(fd: c_int, b: *mut c_void, n: usize, off: i64, buflen: usize) -> isize = file::h_pread_chk;
    fn pwrite(fd: c_int, b: *const c_void, n: usize, off: i64) -> isize = file::h_pwrite;
    fn pwrite64(fd: c_int, b: *const c_void, n: usize, off: i64) -> isize = file::h_pwrite;
    fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> isize = file::h_readv;
    fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> isize = file::h_writev;
    fn preadv(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64) -> isize = file::h_preadv;
    fn preadv64(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64) -> isize = file::h_preadv;
    fn pwritev(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64) -> isize = file::h_pwritev;
    fn pwritev64(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64) -> isize = file::h_pwritev;
    fn preadv2(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64, flags: c_int) -> isize = file::h_preadv2;
    fn preadv64v2(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64, flags: c_int) -> isize = file::h_preadv2;
    fn pwritev2(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64, flags: c_int) -> isize = file::h_pwritev2;
    fn pwritev64v2(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: i64, flags: c_int) -> isize = file::h_pwritev2;
    fn lseek(fd: c_int, off: i64, whence: c_int) -> i64 = file::h_lseek;
    fn lseek64(fd: c_int, off: i64, whence: c_int) -> i64 = file::h_lseek;
    fn close(fd: c_int) -> c_int = file::h_close, inside file::library_close;
    fn dup(fd: c_int) -> c_int = file::h_dup;
    fn dup2(old: c_int, new: c_int) -> c_int = file::h_dup2;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int = file::h_dup3;
    vfn fcntl(fd: c_int, cmd: c_int; arg: usize) -> c_int = file::h_fcntl;
    vfn fcntl64(fd: c_int, cmd: c_int; arg: usize) -> c_int = file::h_fcntl;
    vfn ioctl(fd: c_int, req: std::ffi::c_ulong; arg: usize) -> c_int = file::h_ioctl;
    fn fsync(fd: c_int) -> c_int = file::h_fsync;
    fn fdatasync(fd: c_int) -> c_int = file::h_fsync;
    fn ftruncate(fd: c_int, len: i64) -> c_int = file::h_ftruncate;
    fn ftruncate64(fd: c_int, len: i64) -> c_int = file::h_ftruncate;
    fn posix_fadvise(fd: c_int, off: i64, len: i64, advice: c_int) -> c_int = file::h_posix_fadvise;
    fn posix_fadvise64(fd: c_int, off: i64, len: i64, advice: c_int) -> c_int = file::h_posix_fadvise;
    fn fallocate(fd: c_int, mode_: c_int, off: i64, len: i64) -> c_int = file::h_fallocate;
    fn fallocate64(fd: c_int, mode_: c_int, off: i64, len: i64) -> c_int = file::h_fallocate;
    fn posix_fallocate(fd: c_int, off: i64, len: i64) -> c_int = file::h_posix_fallocate;
    fn posix_fallocate64(fd: c_int, off: i64, len: i64) -> c_int = file::h_posix_fallocate;
    fn copy_file_range(fd_in: c_int, off_in: *mut i64, fd_out: c_int, off_out: *mut i64, len: usize, flags: c_uint) -> isize = file::h_copy_file_range;
    fn sendfile(out: c_int, fd_in: c_int, off: *mut i64, count: usize) -> isize = file::h_sendfile;
    fn sendfile64(out: c_int, fd_in: c_int, off: *mut i64, count: usize) -> isize = file::h_sendfile;
}

hooks! {
    // File locks, arbitrated by the daemon owning the file (`locks.rs`). Supported (no
    // deadlock detection).
    fn flock(fd: c_int, op: c_int) -> c_int = locks::h_flock;
    fn lockf(fd: c_int, cmd: c_int, len: i64) -> c_int = locks::h_lockf;
    fn lockf64(fd: c_int, cmd: c_int, len: i64) -> c_int = locks::h_lockf;
}

hooks! {
    // Metadata by path or fd: stat family, access, chmod, chown, times, truncate, unlink,
    // rmdir, mkdir, rename, links, symlinks, statfs, xattrs (`meta.rs`). Supported,
    // except: changing owners (EPERM), mknod/mkfifo (EPERM), extended attributes
    // (EOPNOTSUPP): each reported with LIBGKFS_REPORT=1.
    fn stat(path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_stat;
    fn stat64(path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_stat;
    fn lstat(path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_lstat;
    fn lstat64(path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_lstat;
    fn fstat(fd: c_int, st: *mut libc::stat) -> c_int = meta::h_fstat;
    fn fstat64(fd: c_int, st: *mut libc::stat) -> c_int = meta::h_fstat;
    fn fstatat(dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int = meta::h_fstatat;
    fn fstatat64(dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int = meta::h_fstatat;
    fn __xstat(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_xstat;
    fn __xstat64(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_xstat;
    fn __lxstat(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_lxstat;
    fn __lxstat64(ver: c_int, path: *const c_char, st: *mut libc::stat) -> c_int = meta::h_lxstat;
    fn __fxstat(ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int = meta::h_fxstat;
    fn __fxstat64(ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int = meta::h_fxstat;
    fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int = meta::h_fxstatat;
    fn __fxstatat64(ver: c_int, dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int = meta::h_fxstatat;
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: u32, stx: *mut libc::statx) -> c_int = meta::h_statx;
    fn access(path: *const c_char, amode: c_int) -> c_int = meta::h_access;
    fn euidaccess(path: *const c_char, amode: c_int) -> c_int = meta::h_access;
    fn eaccess(path: *const c_char, amode: c_int) -> c_int = meta::h_access;
    fn faccessat(dirfd: c_int, path: *const c_char, amode: c_int, flags: c_int) -> c_int = meta::h_faccessat;
    fn mkdir(path: *const c_char, perm: libc::mode_t) -> c_int = meta::h_mkdir;
    fn mkdirat(dirfd: c_int, path: *const c_char, perm: libc::mode_t) -> c_int = meta::h_mkdirat;
    fn rmdir(path: *const c_char) -> c_int = meta::h_rmdir;
    fn unlink(path: *const c_char) -> c_int = meta::h_unlink;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = meta::h_unlinkat;
    fn rename(from: *const c_char, to: *const c_char) -> c_int = meta::h_rename;
    fn renameat(d1: c_int, from: *const c_char, d2: c_int, to: *const c_char) -> c_int = meta::h_renameat;
    fn renameat2(d1: c_int, from: *const c_char, d2: c_int, to: *const c_char, flags: c_uint) -> c_int = meta::h_renameat2;
    fn truncate(path: *const c_char, len: i64) -> c_int = meta::h_truncate;
    fn truncate64(path: *const c_char, len: i64) -> c_int = meta::h_truncate;
    fn utimensat(dirfd: c_int, path: *const c_char, times: *const libc::timespec, flags: c_int) -> c_int = meta::h_utimensat;
    fn futimens(fd: c_int, times: *const libc::timespec) -> c_int = meta::h_futimens;
    fn utimes(path: *const c_char, tv: *const libc::timeval) -> c_int = meta::h_utimes;
    fn lutimes(path: *const c_char, tv: *const libc::timeval) -> c_int = meta::h_lutimes;
    fn futimes(fd: c_int, tv: *const libc::timeval) -> c_int = meta::h_futimes;
    fn utime(path: *const c_char, ut: *const libc::utimbuf) -> c_int = meta::h_utime;
    fn chmod(path: *const c_char, perm: libc::mode_t) -> c_int = meta::h_chmod;
    fn lchmod(path: *const c_char, perm: libc::mode_t) -> c_int = meta::h_lchmod;
    fn fchmod(fd: c_int, perm: libc::mode_t) -> c_int = meta::h_fchmod;
    fn fchmodat(dirfd: c_int, path: *const c_char, perm: libc::mode_t, flags: c_int) -> c_int = meta::h_fchmodat;
    fn chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int = meta::h_chown;
    fn lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int = meta::h_lchown;
    fn fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int = meta::h_fchown;
    fn fchownat(dirfd: c_int, path: *const c_char, uid: libc::uid_t, gid: libc::gid_t, flags: c_int) -> c_int = meta::h_fchownat;
    fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int = meta::h_statfs;
    fn statfs64(path: *const c_char, buf: *mut libc::statfs) -> c_int = meta::h_statfs;
    fn fstatfs(fd: c_int, buf: *mut libc::statfs) -> c_int = meta::h_fstatfs;
    fn fstatfs64(fd: c_int, buf: *mut libc::statfs) -> c_int = meta::h_fstatfs;
    fn statvfs(path: *const c_char, buf: *mut libc::statvfs) -> c_int = meta::h_statvfs;
    fn statvfs64(path: *const c_char, buf: *mut libc::statvfs) -> c_int = meta::h_statvfs;
    fn fstatvfs(fd: c_int, buf: *mut libc::statvfs) -> c_int = meta::h_fstatvfs;
    fn fstatvfs64(fd: c_int, buf: *mut libc::statvfs) -> c_int = meta::h_fstatvfs;
    fn symlink(target: *const c_char, path: *const c_char) -> c_int = meta::h_symlink;
    fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int = meta::h_symlinkat;
    fn readlink(path: *const c_char, out: *mut c_char, size: usize) -> isize = meta::h_readlink;
    fn readlinkat(dirfd: c_int, path: *const c_char, out: *mut c_char, size: usize) -> isize = meta::h_readlinkat;
    fn link(from: *const c_char, to: *const c_char) -> c_int = meta::h_link;
    fn linkat(d1: c_int, from: *const c_char, d2: c_int, to: *const c_char, flags: c_int) -> c_int = meta::h_linkat;
    fn mknod(path: *const c_char, m: libc::mode_t, dev: libc::dev_t) -> c_int = meta::h_mknod;
    fn mkfifo(path: *const c_char, m: libc::mode_t) -> c_int = meta::h_mkfifo;
    fn umask(m: libc::mode_t) -> libc::mode_t = meta::h_umask;
    fn getxattr(path: *const c_char, n: *const c_char, v: *mut c_void, s: usize) -> isize = meta::h_getxattr;
    fn lgetxattr(path: *const c_char, n: *const c_char, v: *mut c_void, s: usize) -> isize = meta::h_lgetxattr;
    fn fgetxattr(fd: c_int, n: *const c_char, v: *mut c_void, s: usize) -> isize = meta::h_fgetxattr;
    fn listxattr(path: *const c_char, l: *mut c_char, s: usize) -> isize = meta::h_listxattr;
    fn llistxattr(path: *const c_char, l: *mut c_char, s: usize) -> isize = meta::h_llistxattr;
    fn flistxattr(fd: c_int, l: *mut c_char, s: usize) -> isize = meta::h_flistxattr;
    fn setxattr(path: *const c_char, n: *const c_char, v: *const c_void, s: usize, f: c_int) -> c_int = meta::h_setxattr;
    fn lsetxattr(path: *const c_char, n: *const c_char, v: *const c_void, s: usize, f: c_int) -> c_int = meta::h_lsetxattr;
    fn fsetxattr(fd: c_int, n: *const c_char, v: *const c_void, s: usize, f: c_int) -> c_int = meta::h_fsetxattr;
}

hooks! {
    // Directories and the working directory (`dir.rs`). Supported.
    fn opendir(path: *const c_char) -> *mut c_void = dir::h_opendir;
    fn fdopendir(fd: c_int) -> *mut c_void = dir::h_fdopendir;
    fn closedir(dirp: *mut c_void) -> c_int = dir::h_closedir;
    fn readdir(dirp: *mut c_void) -> *mut libc::dirent64 = dir::h_readdir;
    fn readdir64(dirp: *mut c_void) -> *mut libc::dirent64 = dir::h_readdir;
    fn readdir_r(dirp: *mut c_void, entry: *mut libc::dirent64, result: *mut *mut libc::dirent64) -> c_int = dir::h_readdir_r;
    fn readdir64_r(dirp: *mut c_void, entry: *mut libc::dirent64, result: *mut *mut libc::dirent64) -> c_int = dir::h_readdir_r;
    fn rewinddir(dirp: *mut c_void) -> u32 = dir::h_rewinddir;
    fn telldir(dirp: *mut c_void) -> c_long = dir::h_telldir;
    fn seekdir(dirp: *mut c_void, loc: c_long) -> u32 = dir::h_seekdir;
    fn dirfd(dirp: *mut c_void) -> c_int = dir::h_dirfd;
    fn scandir(path: *const c_char, namelist: *mut *mut *mut libc::dirent64, filter: Filter, compar: Compar) -> c_int = dir::h_scandir;
    fn scandir64(path: *const c_char, namelist: *mut *mut *mut libc::dirent64, filter: Filter, compar: Compar) -> c_int = dir::h_scandir;
    fn getdents64(fd: c_int, out: *mut c_void, count: usize) -> isize = dir::h_getdents64;
    fn chdir(path: *const c_char) -> c_int = dir::h_chdir;
    fn fchdir(fd: c_int) -> c_int = dir::h_fchdir;
    fn getcwd(buf: *mut c_char, size: usize) -> *mut c_char = dir::h_getcwd;
    fn get_current_dir_name() -> *mut c_char = dir::h_get_current_dir_name;
    fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char = dir::h_realpath;
    fn __realpath_chk(path: *const c_char, resolved: *mut c_char, len: usize) -> *mut c_char = dir::h_realpath_chk;
    fn canonicalize_file_name(path: *const c_char) -> *mut c_char = dir::h_canonicalize_file_name;
}

hooks! {
    // stdio streams on gkfs files (`stdio.rs`). Supported (`,ccs=` modes are not
    // converted).
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut File = stdio::h_fopen;
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut File = stdio::h_fopen;
    fn fdopen(fd: c_int, mode: *const c_char) -> *mut File = stdio::h_fdopen;
    fn freopen(path: *const c_char, mode: *const c_char, stream: *mut File) -> *mut File = stdio::h_freopen;
    fn freopen64(path: *const c_char, mode: *const c_char, stream: *mut File) -> *mut File = stdio::h_freopen;
}

hooks! {
    // Memory maps of gkfs files (`mmap.rs`). Supported; MAP_SHARED writes reach the file
    // on msync/munmap.
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> MapPtr = mmap::h_mmap;
    fn mmap64(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> MapPtr = mmap::h_mmap;
    fn munmap(addr: *mut c_void, len: usize) -> c_int = mmap::h_munmap;
    fn msync(addr: *mut c_void, len: usize, flags: c_int) -> c_int = mmap::h_msync;
}

hooks! {
    // exec, posix_spawn, system, popen (`exec.rs`). Supported, except posix_spawn of a
    // program stored in gkfs (ENOTSUP, reported).
    fn posix_spawn_file_actions_addopen(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, path: *const c_char, oflag: c_int, mode: libc::mode_t) -> c_int = exec::h_addopen;
    fn posix_spawn_file_actions_addchdir_np(fa: *mut libc::posix_spawn_file_actions_t, path: *const c_char) -> c_int = exec::h_addchdir;
    fn posix_spawn_file_actions_destroy(fa: *mut libc::posix_spawn_file_actions_t) -> c_int = exec::h_fa_destroy;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int = exec::h_execve;
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int = exec::h_execv;
    fn execvp(name: *const c_char, argv: *const *const c_char) -> c_int = exec::h_execvp;
    fn execvpe(name: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int = exec::h_execvpe;
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int = exec::h_fexecve;
    fn posix_spawn(pid: *mut libc::pid_t, path: *const c_char, fa: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int = exec::h_posix_spawn;
    fn system(cmd: *const c_char) -> c_int = exec::h_system;
    fn popen(cmd: *const c_char, mode: *const c_char) -> *mut libc::FILE = exec::h_popen;
    fn posix_spawnp(pid: *mut libc::pid_t, file: *const c_char, fa: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int = exec::h_posix_spawnp;
}

hooks! {
    // glibc functions that reach files through glibc-internal calls (`internal.rs`; the
    // README has the audit of every such function). Supported, except fts_open of a gkfs
    // path and nftw with FTW_CHDIR (EOPNOTSUPP).
    fn getwd(buf: *mut c_char) -> *mut c_char = internal::h_getwd;
    fn __getwd_chk(buf: *mut c_char, buflen: usize) -> *mut c_char = internal::h_getwd_chk;
    fn __getcwd_chk(buf: *mut c_char, size: usize, buflen: usize) -> *mut c_char = internal::h_getcwd_chk;
    fn __readlink_chk(path: *const c_char, buf: *mut c_char, len: usize, buflen: usize) -> isize = internal::h_readlink_chk;
    fn __readlinkat_chk(dirfd: c_int, path: *const c_char, buf: *mut c_char, len: usize, buflen: usize) -> isize = internal::h_readlinkat_chk;
    fn tempnam(dir: *const c_char, pfx: *const c_char) -> *mut c_char = internal::h_tempnam;
    fn fts_open(argv: *const *mut c_char, options: c_int, cmp: *const c_void) -> *mut c_void = internal::h_fts_open;
    fn futimesat(dirfd: c_int, path: *const c_char, tv: *const libc::timeval) -> c_int = internal::h_futimesat;
    fn mknodat(dirfd: c_int, path: *const c_char, mode: libc::mode_t, dev: libc::dev_t) -> c_int = internal::h_mknodat;
    fn mkfifoat(dirfd: c_int, path: *const c_char, mode: libc::mode_t) -> c_int = internal::h_mkfifoat;
    fn removexattr(path: *const c_char, name: *const c_char) -> c_int = internal::h_removexattr;
    fn lremovexattr(path: *const c_char, name: *const c_char) -> c_int = internal::h_removexattr;
    fn fremovexattr(fd: c_int, name: *const c_char) -> c_int = internal::h_fremovexattr;
    fn name_to_handle_at(dirfd: c_int, path: *const c_char, h: *mut c_void, mnt: *mut c_int, flags: c_int) -> c_int = internal::h_name_to_handle_at;
    fn syncfs(fd: c_int) -> c_int = internal::h_syncfs;
    fn readahead(fd: c_int, off: i64, count: usize) -> isize = internal::h_readahead;
    fn sync_file_range(fd: c_int, off: i64, n: i64, flags: u32) -> c_int = internal::h_sync_file_range;
    fn ftok(path: *const c_char, proj: c_int) -> libc::key_t = internal::h_ftok;
    fn pathconf(path: *const c_char, name: c_int) -> libc::c_long = internal::h_pathconf;
    fn fpathconf(fd: c_int, name: c_int) -> libc::c_long = internal::h_fpathconf;
    fn nftw(dir: *const c_char, f: NftwFn, nopenfd: c_int, flags: c_int) -> c_int = internal::h_nftw;
    fn nftw64(dir: *const c_char, f: NftwFn, nopenfd: c_int, flags: c_int) -> c_int = internal::h_nftw;
    fn ftw(dir: *const c_char, f: FtwFn, nopenfd: c_int) -> c_int = internal::h_ftw;
    fn ftw64(dir: *const c_char, f: FtwFn, nopenfd: c_int) -> c_int = internal::h_ftw;
    fn mkstemp(t: *mut c_char) -> c_int = internal::h_mkstemp;
    fn mkstemp64(t: *mut c_char) -> c_int = internal::h_mkstemp;
    fn mkostemp(t: *mut c_char, flags: c_int) -> c_int = internal::h_mkostemp;
    fn mkostemp64(t: *mut c_char, flags: c_int) -> c_int = internal::h_mkostemp;
    fn mkstemps(t: *mut c_char, suffix: c_int) -> c_int = internal::h_mkstemps;
    fn mkstemps64(t: *mut c_char, suffix: c_int) -> c_int = internal::h_mkstemps;
    fn mkostemps(t: *mut c_char, suffix: c_int, flags: c_int) -> c_int = internal::h_mkostemps;
    fn mkostemps64(t: *mut c_char, suffix: c_int, flags: c_int) -> c_int = internal::h_mkostemps;
    fn mkdtemp(t: *mut c_char) -> *mut c_char = internal::h_mkdtemp;
    fn mktemp(t: *mut c_char) -> *mut c_char = internal::h_mktemp;
    fn remove(path: *const c_char) -> c_int = internal::h_remove;
    fn glob(pattern: *const c_char, flags: c_int, errfunc: GlobErr, pglob: *mut Glob) -> c_int = internal::h_glob;
    fn glob64(pattern: *const c_char, flags: c_int, errfunc: GlobErr, pglob: *mut Glob) -> c_int = internal::h_glob64;
}

hooks! {
    // The library's own descriptors and threads (`own.rs`): descriptors the library makes
    // are moved out of the program's way; the program's close_range and closefrom skip
    // them. Supported.
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int = wrap own::socket;
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int = wrap own::socketpair;
    fn pipe(fds: *mut c_int) -> c_int = wrap own::pipe;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int = wrap own::pipe2;
    fn accept(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> c_int = wrap own::accept;
    fn accept4(fd: c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t, flags: c_int) -> c_int = wrap own::accept4;
    fn epoll_create(size: c_int) -> c_int = wrap own::made_by_int;
    fn epoll_create1(flags: c_int) -> c_int = wrap own::made_by_int;
    fn eventfd(count: c_uint, flags: c_int) -> c_int = wrap own::eventfd;
    fn pthread_create(th: *mut libc::pthread_t, attr: *const libc::pthread_attr_t, start: own::StartRoutine, arg: *mut c_void) -> c_int = wrap own::pthread_create;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int = own::h_close_range;
    fn closefrom(low: c_int) -> () = own::h_closefrom;
}

variadic_trampoline! {
    // C-variadic functions and those taking a va_list, whose bodies are C
    // (`csrc/shim.c`): the exec family with argument lists (collected, then our
    // execv/execvp/execve), and dprintf/vdprintf (formatted, then our write, for gkfs
    // fds). Supported.
    execl => gkfs_execl;
    execlp => gkfs_execlp;
    execle => gkfs_execle;
    dprintf => gkfs_dprintf;
    vdprintf => gkfs_vdprintf;
    __dprintf_chk => gkfs_dprintf_chk;
    __vdprintf_chk => gkfs_vdprintf_chk;
}

/// For the C shims: is `fd` a gkfs file of this process?
#[no_mangle]
pub extern "C" fn gkfs_fd_is_ours(fd: c_int) -> c_int {
    crate::fds::is_ours(fd) as c_int
}
