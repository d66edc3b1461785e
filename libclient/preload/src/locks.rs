//! File locks on gkfs files: fcntl (POSIX F_SETLK/F_SETLKW/F_GETLK and OFD
//! F_OFD_SETLK/F_OFD_SETLKW/F_OFD_GETLK), flock and lockf, arbitrated by the daemon
//! that owns the file's metadata (`gkfs_client::Client::lock`), so they hold between
//! processes on every node of the job.
//!
//! Owners, as in Linux: a POSIX lock belongs to the process (the client's
//! `lock_owner`; a forked child has its own), an OFD or flock lock to the open file
//! description (a number kept in the description page, shared by dup'ed fds, forked
//! children and exec'ed programs). Released: on unlock; POSIX locks when the process
//! closes any descriptor of the file; OFD and flock locks when the process that took
//! them closes its last descriptor of the description; and by the daemon's lease when
//! the process dies without closing. A blocking wait asks again (1 ms, doubling to
//! 50 ms) until granted, and ends with EINTR when a signal arrives.

use std::collections::HashSet;
use std::ffi::c_int;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api::{lock, LockSpec};
use gkfs_proto::Errno;
use parking_lot::Mutex;

use crate::fds::{self, OpenFile};
use crate::file::size_of;
use crate::hook::{outside, Act};
use crate::state;

/// Paths on which this process holds POSIX locks (released when it closes any fd of
/// one).
static POSIX_LOCKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// In a forked child: POSIX locks are not inherited.
pub fn forget_after_fork() {
    if POSIX_LOCKED.is_locked() {
        // SAFETY: only the forking thread runs in the child; a guard another thread of
        // the parent held at fork time is never dropped here, so it is taken over.
        unsafe { POSIX_LOCKED.force_unlock() };
    }
    *POSIX_LOCKED.lock() = None;
}

/// The byte range of a `struct flock` on `of`: (start, end) with end exclusive.
fn range(of: &OpenFile, fl: &libc::flock) -> Result<(u64, u64), Errno> {
    let base: i64 = match fl.l_whence as c_int {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => of.offset().load(Ordering::Acquire) as i64,
        libc::SEEK_END => size_of(of)? as i64,
        _ => return Err(Errno::EINVAL),
    };
    let start = base.checked_add(fl.l_start).ok_or(Errno::EOVERFLOW)?;
    let (start, end) = match fl.l_len {
        0 => (start, None),
        len if len > 0 => (start, Some(start.checked_add(len).ok_or(Errno::EOVERFLOW)?)),
        len => (start + len, Some(start)),
    };
    if start < 0 {
        return Err(Errno::EINVAL);
    }
    Ok((start as u64, end.map_or(lock::TO_EOF, |e| e as u64)))
}

fn kind_of(l_type: c_int) -> Result<u8, Errno> {
    match l_type {
        libc::F_RDLCK => Ok(lock::READ),
        libc::F_WRLCK => Ok(lock::WRITE),
        libc::F_UNLCK => Ok(lock::UNLOCK),
        _ => Err(Errno::EINVAL),
    }
}

/// The owner number of `of`'s description (made on first use, kept in the page).
fn description_owner(of: &OpenFile) -> u64 {
    let slot = of.lock_owner();
    let cur = slot.load(Ordering::Acquire);
    if cur != 0 {
        return cur;
    }
    let new = api::new_lock_owner();
    match slot.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => new,
        Err(other) => other,
    }
}

/// Asks until granted (`wait`) or once; Ok(None) when granted, Ok(Some(reply)) when
/// not (non-blocking), Err(EINTR) when a signal ends the wait.
fn take(
    of: &OpenFile,
    owner: u64,
    spec: LockSpec,
    wait: bool,
) -> Result<Option<gkfs_proto::msg::LockReply>, Errno> {
    let c = state::client()?;
    let mut pause = Duration::from_millis(1);
    loop {
        let r = c.lock(&of.path(), owner, spec, false)?;
        if r.granted && spec.kind != lock::UNLOCK {
            release_locks_at_exit();
        }
        if r.granted || !wait {
            return Ok((!r.granted).then_some(r));
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: pause.as_nanos() as i64,
        };
        // SAFETY: nanosleep with a local timespec; interrupted by a signal it fails.
        if unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) } != 0 {
            return Err(Errno::EINTR);
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// At exit the kernel closes the program's descriptors without the library seeing
/// it: the locks are dropped here (a killed process's go with their lease).
extern "C" fn release_at_exit() {
    crate::hook::callback(|| {
        if let Ok(c) = state::client() {
            c.release_all_locks();
        }
        Ok(0)
    });
}

/// Registers [`release_at_exit`] once, when the process first takes a lock.
fn release_locks_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a function without arguments, as atexit expects.
        unsafe { libc::atexit(release_at_exit) };
    });
}

/// fcntl's lock commands on a gkfs description.
pub fn fcntl_lock(of: &OpenFile, cmd: c_int, arg: usize) -> Result<c_int, Errno> {
    let flp = arg as *mut libc::flock;
    if flp.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller's struct flock, as fcntl's lock commands take.
    let fl = unsafe { &mut *flp };
    let ofd = matches!(
        cmd,
        libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW
    );
    if ofd && fl.l_pid != 0 {
        return Err(Errno::EINVAL);
    }
    let kind = kind_of(fl.l_type as c_int)?;
    let (start, end) = range(of, fl)?;
    let c = state::client()?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let (owner, holder_pid) = if ofd {
        (description_owner(of), -1)
    } else {
        (c.lock_owner(), pid)
    };
    let spec = LockSpec {
        space: lock::SPACE_FCNTL,
        kind,
        start,
        end,
        pid: holder_pid,
    };
    if matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK) {
        if kind == lock::UNLOCK {
            return Err(Errno::EINVAL);
        }
        let r = c.lock(&of.path(), owner, spec, true)?;
        if r.granted {
            fl.l_type = libc::F_UNLCK as i16;
        } else {
            fl.l_type = if r.conflict_kind == lock::WRITE {
                libc::F_WRLCK
            } else {
                libc::F_RDLCK
            } as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            fl.l_start = r.conflict_start as i64;
            fl.l_len = if r.conflict_end == lock::TO_EOF {
                0
            } else {
                (r.conflict_end - r.conflict_start) as i64
            };
            fl.l_pid = r.conflict_pid;
        }
        return Ok(0);
    }
    if (kind == lock::READ && !of.readable()) || (kind == lock::WRITE && !of.writable()) {
        return Err(Errno::EBADF);
    }
    let wait = matches!(cmd, libc::F_SETLKW | libc::F_OFD_SETLKW);
    match take(of, owner, spec, wait)? {
        Some(_) => Err(Errno::EAGAIN),
        None => {
            if kind != lock::UNLOCK {
                if ofd {
                    of.set_locked_here();
                } else {
                    POSIX_LOCKED
                        .lock()
                        .get_or_insert_with(HashSet::new)
                        .insert(of.path().to_string());
                }
            }
            Ok(0)
        }
    }
}

pub(crate) fn h_flock(fd: c_int, op: c_int) -> Act<c_int> {
    let of = fds::get(fd)?;
    let kind = match op & !libc::LOCK_NB {
        libc::LOCK_SH => lock::READ,
        libc::LOCK_EX => lock::WRITE,
        libc::LOCK_UN => lock::UNLOCK,
        _ => return Some(Err(Errno::EINVAL)),
    };
    let spec = LockSpec {
        space: lock::SPACE_FLOCK,
        kind,
        start: 0,
        end: lock::TO_EOF,
        pid: -1,
    };
    let owner = description_owner(&of);
    Some(match take(&of, owner, spec, op & libc::LOCK_NB == 0) {
        Ok(Some(_)) => Err(Errno::EAGAIN),
        Ok(None) => {
            if kind != lock::UNLOCK {
                of.set_locked_here();
            }
            Ok(0)
        }
        Err(e) => Err(e),
    })
}

/// lockf(3) (glibc calls its internal fcntl): F_LOCK, F_TLOCK, F_ULOCK and F_TEST on
/// `len` bytes from the current offset, as POSIX locks.
pub(crate) fn h_lockf(fd: c_int, cmd: c_int, len: i64) -> Act<c_int> {
    fds::get(fd)?;
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_CUR as i16,
        l_start: 0,
        l_len: len,
        l_pid: 0,
    };
    let fcntl_cmd = match cmd {
        libc::F_ULOCK => {
            fl.l_type = libc::F_UNLCK as i16;
            libc::F_SETLK
        }
        libc::F_LOCK => libc::F_SETLKW,
        libc::F_TLOCK => libc::F_SETLK,
        libc::F_TEST => libc::F_GETLK,
        _ => return Some(Err(Errno::EINVAL)),
    };
    let p = &mut fl as *mut libc::flock;
    // SAFETY: the program's own fcntl with a local struct flock.
    let r = outside(|| unsafe { libc::fcntl(fd, fcntl_cmd, p) });
    if r != 0 {
        let e = crate::hook::errno();
        // lockf reports a lock in the way as EACCES or EAGAIN; glibc passes fcntl's on.
        return Some(Err(Errno(e)));
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if cmd == libc::F_TEST && fl.l_type != libc::F_UNLCK as i16 && fl.l_pid != me {
        return Some(Err(Errno::EACCES));
    }
    Some(Ok(0))
}

/// Before the program closes a descriptor of `of` (`last_here`: is it its process's
/// last one?): drops this process's POSIX locks on the file, and the description's locks if
/// this process took them and this is its last descriptor.
pub fn before_close(of: &OpenFile, last_here: impl Fn() -> bool) {
    let posix = POSIX_LOCKED
        .lock()
        .as_mut()
        .is_some_and(|s| !s.is_empty() && s.remove(&*of.path()));
    let description = of.locked_here() && last_here();
    if !posix && !description {
        return;
    }
    let Ok(c) = state::client() else { return };
    let mut owners = Vec::new();
    if posix {
        owners.push(c.lock_owner());
    }
    if description {
        owners.push(description_owner(of));
    }
    // A failure leaves the lock to its lease.
    let _ = c.unlock_all(&of.path(), &owners);
}
