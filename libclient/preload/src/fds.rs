//! The file descriptor table. Every gkfs open reserves a real kernel fd, so numbers
//! never collide with the kernel's: an `O_PATH` descriptor of a small memfd (made
//! ahead, see `pages`). The memfd page holds the open file description (status flags, offset, path, record), so
//! everything that shares the kernel description shares ours: dup'ed fds, a forked
//! child, a program exec'ed with the fd open. Kernel I/O on the reserved fd (a libc
//! internal call the library cannot see) fails with EBADF instead of landing anywhere.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use gkfs_proto::{Errno, Record};
use parking_lot::{Mutex, RwLock};

const MAGIC: u64 = u64::from_le_bytes(*b"GKFSDSC3");
const PAGE: usize = crate::pages::LEN;
const MAX_PATH: usize = 4096;
/// Highest fd number the table tracks (higher ones are never ours).
pub const MAX_FD: usize = 1 << 20;

#[repr(C)]
struct Page {
    magic: u64,
    flags: AtomicU32,
    path_len: AtomicU32,
    offset: AtomicU64,
    /// Seqlock of `path`: odd while a process rewrites it (a rename or unlink of the
    /// open file), bumped twice per change.
    path_gen: AtomicU32,
    /// 1 when the file was unlinked while open (it lives on under
    /// [`gkfs_proto::path::UNLINKED_DIR`] until its last close).
    orphan: AtomicU32,
    /// The owner number of the description's OFD and flock locks (0: none yet).
    lock_owner: AtomicU64,
    /// The process that made the description, and how often it had forked then.
    creator: AtomicU32,
    creator_forks: AtomicU64,
    record: [u8; 128],
    path: [u8; MAX_PATH],
}
const _: () = assert!(std::mem::size_of::<Page>() <= PAGE);

/// An open file description.
pub struct OpenFile {
    page: NonNull<Page>,
    /// Path inside the file system, as last read from the page (generation, path).
    path: RwLock<(u32, Arc<str>)>,
    /// The record at open time (type, file id).
    pub record: Record,
    /// Directory listing state (getdents64 / readdir on this description).
    pub listing: Mutex<Option<Vec<crate::dir::Entry>>>,
    /// Has this process taken an OFD or flock lock on the description? (Its last
    /// close here drops them.)
    locked_here: AtomicBool,
    /// The page's memfd on a library descriptor, while this process keeps it (-1: not
    /// kept): then the page can serve the next description once this one ends.
    memfd: std::sync::atomic::AtomicI32,
}

// SAFETY: the page is shared memory touched only through atomics (offset, flags), under
// its seqlock (path), or written once before the OpenFile is published (record).
unsafe impl Send for OpenFile {}
// SAFETY: see Send.
unsafe impl Sync for OpenFile {}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let memfd = self.memfd.load(Ordering::Relaxed);
        // No other process can hold a description made here since the last fork:
        // its page can serve again.
        let private = memfd >= 0 && self.made_here_since_fork(crate::state::owner_pid());
        crate::pages::ended(self.page.cast(), memfd, private);
        // The last description of the file here: the chunk files the client keeps open
        // to read it go, so that removing the file frees their space.
        if !self.record.is_dir() && self.record.file_id != 0 {
            if let Some(c) = crate::state::made_client() {
                c.release_kept(self.record.file_id);
            }
        }
    }
}

impl OpenFile {
    fn page(&self) -> &Page {
        // SAFETY: the mapping lives as long as self.
        unsafe { self.page.as_ref() }
    }

    /// The shared file offset.
    pub fn offset(&self) -> &AtomicU64 {
        &self.page().offset
    }

    /// The path inside the file system. It follows the file when a process sharing
    /// the description renames it, or unlinks it while open.
    pub fn path(&self) -> Arc<str> {
        let gen = self.page().path_gen.load(Ordering::Acquire);
        {
            let cached = self.path.read();
            if cached.0 == gen {
                return cached.1.clone();
            }
        }
        match read_path(self.page()) {
            Some((gen, p)) => {
                let p: Arc<str> = Arc::from(p);
                *self.path.write() = (gen, p.clone());
                p
            }
            None => self.path.read().1.clone(),
        }
    }

    /// Moves the description to a new path (the file was renamed, or hidden after an
    /// unlink), for every process that shares it.
    pub fn set_path(&self, path: &str) -> Result<(), Errno> {
        if path.len() > MAX_PATH {
            return Err(Errno::ENAMETOOLONG);
        }
        let pg = self.page();
        pg.path_gen.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the path bytes of our shared page, written under the seqlock (readers
        // retry while the generation is odd or changed); `path` fits (checked above).
        unsafe {
            let dst = std::ptr::addr_of_mut!((*self.page.as_ptr()).path).cast::<u8>();
            std::ptr::copy_nonoverlapping(path.as_ptr(), dst, path.len());
        }
        pg.path_len.store(path.len() as u32, Ordering::Release);
        let gen = pg.path_gen.fetch_add(1, Ordering::AcqRel) + 1;
        *self.path.write() = (gen, Arc::from(path));
        Ok(())
    }

    /// Was the file unlinked while open (and so removed at its last close)?
    pub fn is_orphan(&self) -> bool {
        self.page().orphan.load(Ordering::Acquire) != 0
    }

    /// Marks the file as unlinked while open.
    pub fn set_orphan(&self) {
        self.page().orphan.store(1, Ordering::Release);
    }

    /// The owner number of the description's OFD and flock locks (0: none yet).
    pub fn lock_owner(&self) -> &AtomicU64 {
        &self.page().lock_owner
    }

    /// Has this process taken an OFD or flock lock on the description?
    pub fn locked_here(&self) -> bool {
        self.locked_here.load(Ordering::Relaxed)
    }

    /// Notes that this process took an OFD or flock lock on the description.
    pub fn set_locked_here(&self) {
        self.locked_here.store(true, Ordering::Relaxed);
    }

    /// In a forked child: the parent took the locks, not the child; and the memfd
    /// the parent kept is closed with its connections.
    pub fn forget_parent_state(&self) {
        self.locked_here.store(false, Ordering::Relaxed);
        self.memfd.store(-1, Ordering::Relaxed);
    }

    /// The status flags (access mode, O_APPEND, O_NONBLOCK...).
    pub fn flags(&self) -> c_int {
        self.page().flags.load(Ordering::Relaxed) as c_int
    }

    /// Replaces the changeable status flags (F_SETFL).
    pub fn set_flags(&self, f: c_int) {
        const CHANGEABLE: c_int =
            libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;
        let old = self.flags();
        let new = (old & !CHANGEABLE) | (f & CHANGEABLE);
        self.page().flags.store(new as u32, Ordering::Relaxed);
    }

    /// Is it a directory?
    pub fn is_dir(&self) -> bool {
        self.record.is_dir()
    }

    /// Opened for reading?
    pub fn readable(&self) -> bool {
        let a = self.flags() & libc::O_ACCMODE;
        a == libc::O_RDONLY || a == libc::O_RDWR
    }

    /// Opened for writing?
    pub fn writable(&self) -> bool {
        let a = self.flags() & libc::O_ACCMODE;
        a == libc::O_WRONLY || a == libc::O_RDWR
    }

    /// Did process `pid` (this one) make the description, and has it not forked since?
    /// Then no other process can hold it.
    pub fn made_here_since_fork(&self, pid: u32) -> bool {
        let p = self.page();
        p.creator.load(Ordering::Relaxed) == pid
            && p.creator_forks.load(Ordering::Relaxed) == FORKS.load(Ordering::Relaxed)
    }

    /// Writes go to the end?
    pub fn append(&self) -> bool {
        self.flags() & libc::O_APPEND != 0
    }

    /// Creates a description and reserves a kernel fd for it (close-on-exec if
    /// `cloexec`): one system call, the `O_PATH` open of a ready page's memfd (a
    /// fresh page, or the page of a description that ended).
    pub fn create(
        path: &str,
        record: Record,
        flags: c_int,
        cloexec: bool,
    ) -> Result<(c_int, Arc<OpenFile>), Errno> {
        if path.len() > MAX_PATH {
            return Err(Errno::ENAMETOOLONG);
        }
        let fresh = crate::pages::take()?;
        let page = fresh.page.cast::<Page>();
        // SAFETY: a mapping of PAGE bytes that no description uses, ours alone until
        // published.
        let pg = unsafe { &mut *page.as_ptr() };
        pg.magic = MAGIC;
        pg.flags = AtomicU32::new(flags as u32);
        pg.offset = AtomicU64::new(0);
        pg.lock_owner = AtomicU64::new(0);
        pg.path_gen = AtomicU32::new(0);
        pg.orphan = AtomicU32::new(0);
        // Every open passes here: the pid without a system call.
        pg.creator = AtomicU32::new(crate::state::owner_pid());
        pg.creator_forks = AtomicU64::new(FORKS.load(Ordering::Relaxed));
        let rec = record.to_bytes();
        pg.record[..rec.len()].copy_from_slice(&rec);
        pg.path[..path.len()].copy_from_slice(path.as_bytes());
        pg.path_len = AtomicU32::new(path.len() as u32);
        // The program gets the number the kernel would have given it: the lowest free
        // one, on a description of its own (what dup, fork and exec share).
        let fd = match fresh.open_descriptor(cloexec) {
            Ok(fd) => fd,
            Err(e) => {
                crate::pages::discard(fresh);
                return Err(e);
            }
        };
        let memfd = crate::pages::opened(fresh);
        Ok((
            fd,
            Arc::new(OpenFile {
                page,
                path: RwLock::new((0, Arc::from(path))),
                record,
                listing: Mutex::new(None),
                locked_here: AtomicBool::new(false),
                memfd: std::sync::atomic::AtomicI32::new(memfd.unwrap_or(-1)),
            }),
        ))
    }

    /// Recognises a description inherited across exec on fd `fd`.
    pub fn adopt(fd: c_int) -> Option<Arc<OpenFile>> {
        let mut link = [0u8; 64];
        let proc_path = format!("/proc/self/fd/{fd}\0");
        // SAFETY: reads a symlink into a local buffer of the given size.
        let n = unsafe {
            libc::readlink(
                proc_path.as_ptr().cast(),
                link.as_mut_ptr().cast(),
                link.len(),
            )
        };
        if n <= 0 || !link[..n as usize].starts_with(b"/memfd:gkfs") {
            return None;
        }
        // SAFETY: reopens the memfd behind our O_PATH fd; checked.
        let mfd = unsafe { libc::open(proc_path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
        if mfd < 0 {
            return None;
        }
        let page = crate::pages::map(mfd);
        // SAFETY: our temporary descriptor.
        unsafe { libc::close(mfd) };
        let page = page.ok()?.cast::<Page>();
        // SAFETY: a mapping of PAGE bytes made just now.
        let pg = unsafe { page.as_ref() };
        let parsed = (pg.magic == MAGIC)
            .then(|| {
                let (gen, path) = read_path(pg)?;
                let record = Record::from_bytes(&pg.record[..Record::ENCODED_LEN]).ok()?;
                Some((gen, path, record))
            })
            .flatten();
        let Some((gen, path, record)) = parsed else {
            crate::pages::ended(page.cast(), -1, false);
            return None;
        };
        // Held by more than one program from now on: never handed to the kernel.
        pg.creator.store(0, Ordering::Relaxed);
        Some(Arc::new(OpenFile {
            page,
            path: RwLock::new((gen, Arc::from(path))),
            record,
            listing: Mutex::new(None),
            locked_here: AtomicBool::new(false),
            memfd: std::sync::atomic::AtomicI32::new(-1),
        }))
    }
}

/// The page's path and its generation, read under the seqlock (None: unreadable).
fn read_path(pg: &Page) -> Option<(u32, String)> {
    for _ in 0..10_000 {
        let before = pg.path_gen.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let len = pg.path_len.load(Ordering::Acquire) as usize;
        if len > MAX_PATH {
            return None;
        }
        let mut bytes = vec![0u8; len];
        // SAFETY: `len` bytes of the page's path array; a concurrent writer makes the
        // generation check below fail and the copy is discarded.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(pg.path).cast::<u8>(),
                bytes.as_mut_ptr(),
                len,
            )
        };
        std::sync::atomic::fence(Ordering::Acquire);
        if pg.path_gen.load(Ordering::Acquire) == before {
            return String::from_utf8(bytes).ok().map(|p| (before, p));
        }
    }
    None
}

/// The descriptions of this process open on `path` (regular files and directories
/// alike), each once.
pub fn open_at(path: &str) -> Vec<Arc<OpenFile>> {
    descriptions()
        .into_iter()
        .filter(|of| &*of.path() == path)
        .collect()
}

/// Every open description of this process, once each (however many fds share it).
pub fn descriptions() -> Vec<Arc<OpenFile>> {
    let mut found: Vec<Arc<OpenFile>> = Vec::new();
    for of in read_table().iter().flatten() {
        if !found.iter().any(|f| Arc::ptr_eq(f, of)) {
            found.push(of.clone());
        }
    }
    found
}

/// After `from` was renamed to `to`: every description of this process at `from` or
/// below it follows.
pub fn renamed(from: &str, to: &str) {
    for of in descriptions() {
        if let Some(new) = gkfs_proto::path::moved(&of.path(), from, to) {
            let _ = of.set_path(&new);
        }
    }
}

/// Is `fd` the last descriptor of this process on `of`'s description?
pub fn last_here(fd: c_int, of: &Arc<OpenFile>) -> bool {
    !read_table()
        .iter()
        .enumerate()
        .any(|(i, e)| i as c_int != fd && e.as_ref().is_some_and(|o| Arc::ptr_eq(o, of)))
}

static BITS: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];
/// The description behind each fd number of ours.
type Table = Vec<Option<Arc<OpenFile>>>;

/// A std lock, not parking_lot's: it is held across fork (see `afterfork`).
static TABLE: std::sync::RwLock<Table> = std::sync::RwLock::new(Vec::new());

fn read_table() -> std::sync::RwLockReadGuard<'static, Table> {
    TABLE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_table() -> std::sync::RwLockWriteGuard<'static, Table> {
    TABLE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bit(fd: c_int) -> Option<(usize, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&f| f < MAX_FD)?;
    Some((fd / 64, 1u64 << (fd % 64)))
}

/// Is `fd` one of ours? (Lock-free; the common "no" costs one load.)
pub fn is_ours(fd: c_int) -> bool {
    bit(fd).is_some_and(|(w, b)| BITS[w].load(Ordering::Acquire) & b != 0)
}

/// The description behind `fd`, if ours.
pub fn get(fd: c_int) -> Option<Arc<OpenFile>> {
    if !is_ours(fd) {
        return None;
    }
    read_table().get(fd as usize).cloned().flatten()
}

/// Binds `fd` to `of` (replacing what was there).
pub fn insert(fd: c_int, of: Arc<OpenFile>) {
    let Some((w, b)) = bit(fd) else { return };
    let mut t = write_table();
    if t.len() <= fd as usize {
        t.resize(fd as usize + 1, None);
    }
    t[fd as usize] = Some(of);
    BITS[w].fetch_or(b, Ordering::Release);
}

/// Unbinds `fd`; returns what it was bound to.
pub fn remove(fd: c_int) -> Option<Arc<OpenFile>> {
    let (w, b) = bit(fd)?;
    if BITS[w].load(Ordering::Acquire) & b == 0 {
        return None;
    }
    let mut t = write_table();
    BITS[w].fetch_and(!b, Ordering::Release);
    t.get_mut(fd as usize).and_then(Option::take)
}

/// Every fd that is ours.
pub fn all() -> Vec<c_int> {
    read_table()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|_| i as c_int))
        .collect()
}

/// Holds the table lock across fork (atfork prepare; `afterfork::release` frees it).
pub fn lock_for_fork() {
    crate::afterfork::hold(write_table());
}

/// How often this process has forked (its children hold its descriptions since):
/// fork, posix_spawn, system, popen, and vfork (raised in the wrapper, `vfork.rs`).
pub(crate) static FORKS: AtomicU64 = AtomicU64::new(0);

/// Counts a fork (atfork parent; posix_spawn, system and popen, which run no atfork
/// handler).
pub fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

// The library's own descriptors: connections to the daemons (its sockets, libfabric's
// sockets, epoll and event fds), the log. Programs pick low numbers
// themselves (`exec 3>`, `dup2(fd, 3)`, `close_range(3, ~0)` before exec), so these
// live high (at or above `floor()`), are close-on-exec, and are invisible to the
// program: closing one gives EBADF, `dup2` onto one gives EBADF, `close_range` and
// `closefrom` skip them. No call of the program reaches them.

/// Descriptors of the library.
static LIBRARY: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];
/// The one library descriptor a forked child keeps: the log (-1: none). The others are
/// the parent's connections, closed in the child.
static KEPT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static FLOOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The lowest number the library's descriptors take: 128 below the soft
/// `RLIMIT_NOFILE` capped at 1024 (896 with the usual limits), far above what programs
/// choose by hand (shells use 3-9, then 10 and up, bash 255).
pub fn floor() -> c_int {
    let f = FLOOR.load(Ordering::Relaxed);
    if f > 0 {
        return f;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let cap = lim.rlim_cur.min(1024) as c_int;
    let f = if cap >= 256 {
        cap - 128
    } else {
        (cap / 2).max(3)
    };
    FLOOR.store(f, Ordering::Relaxed);
    f
}

/// Takes `fd`, just created by the library for itself, out of the program's way: moved
/// to [`floor`] or above, close-on-exec, and marked as the library's. Returns the new
/// number (`fd` itself when it is negative, already high, or no high number is free;
/// it is marked either way).
pub fn own(fd: c_int) -> c_int {
    let Some((w, b)) = bit(fd) else { return fd };
    let mut fd = fd;
    let floor = floor();
    if fd < floor {
        // SAFETY: duplicates a descriptor the library just made; checked.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
        if high >= 0 {
            // SAFETY: closes the low copy of our own new descriptor (the system call:
            // the close hook would treat it as the program's).
            unsafe { libc::syscall(libc::SYS_close, fd) };
            fd = high;
        }
    }
    if fd < floor || bit(fd).is_none() {
        // SAFETY: sets close-on-exec on our own descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let (w, b) = bit(fd).unwrap_or((w, b));
    LIBRARY[w].fetch_or(b, Ordering::Release);
    fd
}

/// [`own`], for the log: a forked child keeps it (and logs to it).
pub fn own_log(fd: c_int) -> c_int {
    let fd = own(fd);
    KEPT.store(fd, Ordering::Relaxed);
    fd
}

/// Is `fd` one of the library's own descriptors?
pub fn is_library(fd: c_int) -> bool {
    bit(fd).is_some_and(|(w, b)| LIBRARY[w].load(Ordering::Acquire) & b != 0)
}

/// Forgets a library descriptor the library is closing.
pub fn disown(fd: c_int) {
    if let Some((w, b)) = bit(fd) {
        LIBRARY[w].fetch_and(!b, Ordering::Release);
    }
    let _ = KEPT.compare_exchange(fd, -1, Ordering::Relaxed, Ordering::Relaxed);
}

/// The library's descriptors in `lo..=hi`, ascending.
pub fn library_fds(lo: u32, hi: u32) -> Vec<c_int> {
    let mut v = Vec::new();
    for (w, word) in LIBRARY.iter().enumerate() {
        let mut bits = word.load(Ordering::Acquire);
        while bits != 0 {
            let fd = (w * 64) as u32 + bits.trailing_zeros();
            bits &= bits - 1;
            if (lo..=hi).contains(&fd) {
                v.push(fd as c_int);
            }
        }
    }
    v
}

/// In a forked child: closes the parent's connections (the child opens its own), so
/// that a daemon sees a connection end when the process that made it ends.
pub fn close_parent_connections() {
    let kept = KEPT.load(Ordering::Relaxed);
    for fd in library_fds(0, u32::MAX)
        .into_iter()
        .filter(|&fd| fd != kept)
    {
        // SAFETY: a descriptor of the parent's connection state, which the child never
        // uses (that state is forgotten, not dropped); the system call, as the close
        // hook refuses library descriptors.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        disown(fd);
    }
}
