//! The memory behind open file descriptions (see `fds`): one small memfd page each,
//! made ahead and released late.
//!
//! Making a page costs five system calls and two page faults (memfd_create, the move
//! to a library number, ftruncate, mmap, first touch), releasing it two more (the
//! memfd's close, munmap). Done inline, that was two thirds of a gkfs create. An open
//! should cost one system call and a close only the kernel's:
//! - A page serves again once its description ends, if no other process can hold it
//!   (made in this process since it last started a child: fork, vfork, posix_spawn,
//!   system, popen): the description keeps the page's
//!   memfd open (on a library descriptor, up to [`KEEP_MAX`] at a time), and at its end
//!   page and memfd go back to the ready pages. A create-and-close loop then costs the
//!   `O_PATH` open and the close, nothing else.
//! - Other pages are made, closed and unmapped while the process waits for a daemon's
//!   reply anyway ([`while_waiting`], run by the client API's wait): a few pages stay
//!   ready, and what is to be closed or unmapped waits in short lists. An open that
//!   finds no page ready makes one on the spot.
//!
//! Fork: the ready pages are shared with the parent (MAP_SHARED of its memfds), so a
//! child drops them ([`forget_after_fork`]); their memfds are library descriptors,
//! which the child closes with the parent's connections. A vfork child, which shares
//! the parent's memory and runs with copies of its descriptors, does no background
//! work (its closes would be of the wrong table, its new memfds unknown to the
//! parent).

use std::collections::VecDeque;
use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use gkfs_proto::Errno;

use crate::paths::checked;

/// Bytes of a description page.
pub const LEN: usize = 8192;
/// Pages made ahead while requests wait.
const READY: usize = 4;
/// Pages kept ready at most (ended descriptions' pages included).
const READY_MAX: usize = 8;
/// Descriptions that keep their memfd at most (library descriptors: 128 of them fit
/// above the library's floor with the usual limit of 1024).
pub const KEEP_MAX: usize = 32;
/// Deferred unmaps kept before they are done on the spot.
const DEFERRED_MAX: usize = 64;
/// Deferred closes kept before they are done on the spot (library descriptors too).
const DEFERRED_CLOSES_MAX: usize = 16;

/// Descriptions keeping their page's memfd now.
static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A page ready for a new description: mapped, touched, its memfd on a library
/// descriptor number (close-on-exec, out of the program's way).
pub struct Fresh {
    /// The memfd (a library descriptor).
    pub fd: c_int,
    /// The mapping, [`LEN`] bytes, zeroed.
    pub page: NonNull<u8>,
    /// May the memfd's close wait? Not when a vfork child made it: the number is in
    /// the child's descriptor table only, and the deferred list is the parent's.
    deferrable: bool,
}

impl Fresh {
    /// A new descriptor of the page's memfd, `O_PATH`, on the lowest free number: the
    /// program's descriptor of a new description. One system call (an `openat` in
    /// this process's `/proc/<pid>/fd`, a lookup of one name; through `/proc/self/fd/N`
    /// the walk costs twice as much).
    pub fn open_descriptor(&self, cloexec: bool) -> Result<c_int, Errno> {
        let mut flags = libc::O_PATH;
        if cloexec {
            flags |= libc::O_CLOEXEC;
        }
        let dir = proc_fd_dir();
        let name = if dir >= 0 {
            format!("{}\0", self.fd)
        } else {
            format!("/proc/self/fd/{}\0", self.fd)
        };
        // SAFETY: a NUL-terminated name, relative to our own directory descriptor (or
        // absolute when there is none); the result is checked.
        checked(unsafe { libc::openat(dir.max(libc::AT_FDCWD), name.as_ptr().cast(), flags) })
    }
}

/// This process's `/proc/<pid>/fd`, opened `O_PATH` on a library descriptor (-1: not
/// yet; -2: cannot be opened). A forked child opens its own ([`forget_after_fork`]).
static PROC_FD: AtomicI32 = AtomicI32::new(-1);

fn proc_fd_dir() -> c_int {
    let d = PROC_FD.load(Ordering::Acquire);
    if d != -1 {
        return d;
    }
    if crate::state::in_vfork_child() {
        // It would be the child's descriptor, and the parent's from then on.
        return -2;
    }
    // SAFETY: a static NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let fd = if fd < 0 { -2 } else { crate::fds::own(fd) };
    match PROC_FD.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fd,
        Err(other) => {
            if fd >= 0 {
                close(fd);
            }
            other
        }
    }
}

struct Pool {
    /// Oldest first (an open takes a page made before its own request went out).
    ready: VecDeque<Fresh>,
    to_close: Vec<c_int>,
    to_unmap: Vec<NonNull<u8>>,
}

// SAFETY: the pointers are mappings owned by the pool (ready pages nobody else uses,
// pages nobody uses any more); they are only munmapped or handed out whole.
unsafe impl Send for Pool {}

/// A std lock, held across fork like the fd table's (see `afterfork`).
static POOL: Mutex<Pool> = Mutex::new(Pool {
    ready: VecDeque::new(),
    to_close: Vec::new(),
    to_unmap: Vec::new(),
});

fn lock() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn try_lock() -> Option<MutexGuard<'static, Pool>> {
    match POOL.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Maps [`LEN`] bytes of memfd `fd`, shared, read-write.
pub fn map(fd: c_int) -> Result<NonNull<u8>, Errno> {
    // SAFETY: maps LEN bytes of a file we hold open; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno(crate::hook::errno()));
    }
    NonNull::new(p.cast()).ok_or(Errno::ENOMEM)
}

fn close(fd: c_int) {
    crate::fds::disown(fd);
    // SAFETY: a memfd of the pool, no longer needed (the system call: the close hook
    // refuses library descriptors).
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

fn unmap(page: NonNull<u8>) {
    // SAFETY: a mapping of LEN bytes made by `map` that nothing uses any more.
    unsafe { libc::munmap(page.as_ptr().cast(), LEN) };
}

/// Makes a page now.
fn make() -> Result<Fresh, Errno> {
    // SAFETY: memfd_create with a static name; the result is checked.
    let fd = crate::fds::own(checked(unsafe {
        libc::memfd_create(c"gkfs".as_ptr(), libc::MFD_CLOEXEC)
    })?);
    // SAFETY: sizing our own new memfd.
    checked(unsafe { libc::ftruncate(fd, LEN as i64) }).inspect_err(|_| close(fd))?;
    let page = map(fd).inspect_err(|_| close(fd))?;
    // Take the page faults here, not in the open that uses the page.
    for off in (0..LEN).step_by(4096) {
        // SAFETY: inside the fresh mapping of LEN bytes, ours alone.
        unsafe { page.as_ptr().add(off).write_volatile(0) };
    }
    Ok(Fresh {
        fd,
        page,
        deferrable: true,
    })
}

/// A page for a new description: a ready one, or one made now.
pub fn take() -> Result<Fresh, Errno> {
    if let Some(f) = lock().ready.pop_front() {
        return Ok(f);
    }
    let mut f = make()?;
    f.deferrable = !crate::state::in_vfork_child();
    Ok(f)
}

/// A page whose descriptor the program now holds ([`Fresh::open_descriptor`]); the
/// page stays mapped (the description's). Returns the memfd when the description
/// keeps it (see the module doc), else it is closed later.
pub fn opened(f: Fresh) -> Option<c_int> {
    if !f.deferrable {
        close(f.fd);
        return None;
    }
    let keep_max = if crate::fds::floor() >= 256 {
        KEEP_MAX
    } else {
        0
    };
    let kept = KEPT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
        (k < keep_max).then_some(k + 1)
    });
    if kept.is_ok() {
        return Some(f.fd);
    }
    close_later(f.fd);
    None
}

/// Queues `item` in the pool's list `list` (at most `max` long) for [`while_waiting`];
/// a full list is done now, with `item`, and so is `item` when the pool is busy. Never
/// waits for the lock.
fn later<T>(item: T, list: fn(&mut Pool) -> &mut Vec<T>, max: usize, now: fn(T)) {
    let Some(mut p) = try_lock() else {
        return now(item);
    };
    let l = list(&mut p);
    if l.len() < max {
        return l.push(item);
    }
    let due = std::mem::take(l);
    drop(p);
    due.into_iter().chain([item]).for_each(now);
}

/// Closes library memfd `fd` later.
fn close_later(fd: c_int) {
    later(fd, |p| &mut p.to_close, DEFERRED_CLOSES_MAX, close);
}

/// A description ended (its last reference here dropped): its page, and `memfd` if it
/// kept it (-1: not). A `private` page (no other process can hold it) with its memfd
/// serves the next description; anything else is closed and unmapped later. Never
/// waits for the lock (it runs wherever a description is dropped, other locks held).
pub fn ended(page: NonNull<u8>, memfd: c_int, private: bool) {
    if memfd >= 0 {
        KEPT.fetch_sub(1, Ordering::AcqRel);
        if private {
            if let Some(mut p) = try_lock() {
                if p.ready.len() < READY_MAX {
                    p.ready.push_back(Fresh {
                        fd: memfd,
                        page,
                        deferrable: true,
                    });
                    return;
                }
            }
        }
        close_later(memfd);
    }
    unmap_later(page);
}

/// A page no description uses any more: unmapped later.
fn unmap_later(page: NonNull<u8>) {
    later(page, |p| &mut p.to_unmap, DEFERRED_MAX, unmap);
}

/// A page whose open failed: released.
pub fn discard(f: Fresh) {
    unmap(f.page);
    if f.deferrable {
        close_later(f.fd);
    } else {
        close(f.fd);
    }
}

/// Background work, run while this thread waits for a daemon's reply: one page made,
/// the deferred closes and unmaps done. Cheap when there is nothing to do (no system
/// call); never waits for the lock.
pub fn while_waiting() {
    let (due_close, due_unmap, want) = {
        let Some(mut p) = try_lock() else { return };
        let want = p.ready.len() < READY;
        if !want && p.to_close.is_empty() && p.to_unmap.is_empty() {
            return;
        }
        if crate::state::in_vfork_child() {
            return;
        }
        (
            std::mem::take(&mut p.to_close),
            std::mem::take(&mut p.to_unmap),
            want,
        )
    };
    due_close.into_iter().for_each(close);
    due_unmap.into_iter().for_each(unmap);
    if want {
        if let Ok(f) = make() {
            lock().ready.push_back(f);
        }
    }
}

/// Holds the pool's lock across fork (atfork prepare; `afterfork::release` frees it).
pub fn lock_for_fork() {
    crate::afterfork::hold(lock());
}

/// In a forked child: the ready pages are the parent's (shared mappings of its
/// memfds); the memfds to close, and the parent's `/proc/<pid>/fd`, were closed with
/// the parent's connections.
pub fn forget_after_fork() {
    PROC_FD.store(-1, Ordering::Release);
    // The descriptions' kept memfds are the parent's too (`OpenFile::forget_parent_state`).
    KEPT.store(0, Ordering::Release);
    let mut p = lock();
    p.to_close.clear();
    let ready = std::mem::take(&mut p.ready);
    drop(p);
    for f in ready {
        unmap(f.page);
    }
}
