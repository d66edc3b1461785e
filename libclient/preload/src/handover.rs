//! A program the library will not be loaded into (statically linked, or started
//! without LD_PRELOAD) cannot use the library's descriptors: kernel I/O on
//! them fails with EBADF. When the file system is also mounted through FUSE at the
//! mount dir (`--gkfs-mode=both`, `gkfs-run mount`), exec hands such a program the same
//! files through the kernel instead: each inherited gkfs descriptor is reopened under
//! the mount (same access mode, status flags and offset) on its own number, and a
//! working directory in gkfs becomes the kernel's, through the mount.
//!
//! Only descriptions no other process can share are handed over: made by this process,
//! which has not forked since (`static_tool < in > out` in a shell: the child opens
//! both, then execs). A description shared with another process keeps its EBADF: the
//! kernel's copy could not share its offset, and writes would overlap.

use std::ffi::{c_int, CStr};

use crate::{fds, state};

/// `f_type` of a FUSE mount (linux/magic.h).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// The descriptors handed over for one exec, to put back if it fails.
#[derive(Default)]
pub struct Handover {
    /// (number, the library's descriptor saved elsewhere).
    saved: Vec<(c_int, c_int)>,
    /// The kernel's working directory before it moved into the mount.
    cwd: Option<c_int>,
}

impl Handover {
    /// The exec failed: the library's descriptors go back on their numbers.
    pub fn undo(self) {
        if let Some(dir) = self.cwd {
            // SAFETY: our O_PATH descriptor of the old working directory.
            unsafe {
                libc::fchdir(dir);
                libc::close(dir);
            }
        }
        for (fd, saved) in self.saved {
            // SAFETY: `saved` is our duplicate of what was at `fd`; both are ours.
            unsafe {
                libc::dup3(saved, fd, 0);
                libc::close(saved);
            }
        }
    }
}

/// Reads up to `n` bytes of the file at `path`.
fn head(path: &CStr, n: usize) -> Option<Vec<u8>> {
    // SAFETY: NUL-terminated path; checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = vec![0u8; n];
    // SAFETY: reads into our buffer of `n` bytes.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n) };
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    buf.truncate(usize::try_from(got).ok()?);
    Some(buf)
}

/// Does the ELF image `img` (its first bytes) ask for a dynamic loader (PT_INTERP)?
/// Anything that is not a 64-bit little-endian ELF counts as dynamic (nothing done).
pub fn has_interpreter(img: &[u8]) -> bool {
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        img.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |o: usize| {
        img.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if !img.starts_with(b"\x7fELF\x02\x01") {
        return true;
    }
    let (Some(phoff), Some(entsize), Some(num)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return true;
    };
    (0..usize::from(num)).any(|i| {
        let at = phoff as usize + i * usize::from(entsize);
        // Program headers past what was read: assume dynamic.
        u32_at(at).is_none_or(|t| t == 3)
    })
}

/// Will the program at `path` run without the library, given its environment?
fn without_library(path: &CStr, env_preloads: bool) -> bool {
    if !env_preloads {
        return true;
    }
    let Some(img) = head(path, 4096) else {
        return false;
    };
    if let Some(line) = img.strip_prefix(b"#!") {
        // A script: its interpreter decides (one level, as the kernel's common case).
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let interp = line
            .split(|b| *b == b' ' || *b == b'\t')
            .find(|w| !w.is_empty())
            .unwrap_or_default();
        let Ok(interp) = std::ffi::CString::new(interp) else {
            return false;
        };
        return head(&interp, 4096).is_some_and(|i| !has_interpreter(&i));
    }
    !has_interpreter(&img)
}

/// Is the mount dir `dir` a FUSE mount now?
fn fuse_mounted(dir: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(dir) else {
        return false;
    };
    // SAFETY: all-zero is a valid struct statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and our buffer (the real statfs: library code).
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == FUSE_SUPER_MAGIC }
}

/// The file of description `of` opened through the mount, with its access mode, status
/// flags and offset (close-on-exec: [`put_at`] places it).
fn reopen(fs: &state::Fs, of: &fds::OpenFile) -> Option<c_int> {
    let full = std::ffi::CString::new(fs.mount.outside(&of.path())).ok()?;
    let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC;
    // SAFETY: NUL-terminated path under the mount; checked.
    let k = unsafe { libc::open(full.as_ptr(), (of.flags() & keep) | libc::O_CLOEXEC) };
    if k < 0 {
        return None;
    }
    let off = of.offset().load(std::sync::atomic::Ordering::Acquire);
    // SAFETY: our new fd.
    if !of.append() && unsafe { libc::lseek(k, off as i64, libc::SEEK_SET) } < 0 {
        // SAFETY: our fd.
        unsafe { libc::close(k) };
        return None;
    }
    Some(k)
}

/// Puts kernel fd `k` on number `fd` (inherited across exec), keeping what was there
/// (the library's descriptor) in a close-on-exec copy among the library's numbers.
fn put_at(k: c_int, fd: c_int) -> Option<c_int> {
    // SAFETY: F_DUPFD_CLOEXEC of our reserved fd; checked.
    let saved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, fds::floor()) };
    if saved < 0 {
        return None;
    }
    // SAFETY: both fds are ours; `fd` was saved just above.
    if unsafe { libc::dup3(k, fd, 0) } < 0 {
        // SAFETY: our copy.
        unsafe { libc::close(saved) };
        return None;
    }
    Some(saved)
}

/// Before exec of `path` with an environment that does (`env_preloads`) or does not
/// load the library: hands the inherited gkfs descriptors over to the kernel mount
/// when the program will run without the library and the mount is there.
pub fn before_exec(path: &CStr, env_preloads: bool) -> Handover {
    let mut h = Handover::default();
    let inherited: Vec<c_int> = fds::all()
        .into_iter()
        // SAFETY: F_GETFD on our reserved fd.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC == 0)
        .collect();
    let cwd = state::cwd_for_exec();
    if inherited.is_empty() && cwd.is_none() {
        return h;
    }
    // Cheapest first: the mount (one statfs), then the program (reading its head).
    let Some(fs) = state::fs() else {
        return h;
    };
    if !fuse_mounted(fs.mount.as_str()) || !without_library(path, env_preloads) {
        return h;
    }
    // A working directory in gkfs: the program starts in it, through the mount.
    if let Some(dir) = cwd.and_then(|d| std::ffi::CString::new(d).ok()) {
        // SAFETY: opens "." (O_PATH) to come back to; checked.
        let old = unsafe {
            libc::open(
                c".".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: NUL-terminated path under the mount.
        if old >= 0 && unsafe { libc::chdir(dir.as_ptr()) } == 0 {
            h.cwd = Some(old);
        } else if old >= 0 {
            // SAFETY: our descriptor.
            unsafe { libc::close(old) };
        }
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    // One kernel open per description: numbers that share one (`>out 2>&1`) share
    // the kernel's too, offset included.
    let mut opened: Vec<(*const fds::OpenFile, c_int)> = Vec::new();
    for fd in inherited {
        let Some(of) = fds::get(fd) else { continue };
        if of.is_dir() || of.is_orphan() || !of.made_here_since_fork(me) {
            continue;
        }
        let key = std::sync::Arc::as_ptr(&of);
        let k = match opened.iter().find(|(d, _)| *d == key) {
            Some(&(_, k)) => k,
            None => match reopen(fs, &of) {
                Some(k) => {
                    opened.push((key, k));
                    k
                }
                None => continue,
            },
        };
        if let Some(saved) = put_at(k, fd) {
            h.saved.push((fd, saved));
        }
    }
    for (_, k) in opened {
        // SAFETY: our fds (also at the numbers handed over).
        unsafe { libc::close(k) };
    }
    h
}
