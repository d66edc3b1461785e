//! mmap of gkfs files: the mapping is anonymous memory filled from the file. Private
//! mappings need nothing more; shared writable ones are written back on msync and
//! munmap (so other processes see the changes from then on, not before).

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use gkfs_proto::Errno;
use parking_lot::Mutex;

use crate::fds::{self, OpenFile};
use crate::file::{handle, read_of};
use crate::hook::{Act, Fail};

/// mmap's return value (MAP_FAILED on error, not NULL).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MapPtr(*mut c_void);
impl Fail for MapPtr {
    const FAIL: MapPtr = MapPtr(libc::MAP_FAILED);
}

struct Mapping {
    addr: usize,
    len: usize,
    of: Arc<OpenFile>,
    off: u64,
}

static SHARED: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());

fn map_of(
    of: Arc<OpenFile>,
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    off: i64,
) -> Result<MapPtr, Errno> {
    if of.is_dir() {
        return Err(Errno(libc::ENODEV));
    }
    if len == 0 || off < 0 {
        return Err(Errno::EINVAL);
    }
    let shared = flags & (libc::MAP_SHARED | libc::MAP_SHARED_VALIDATE) != 0;
    if !of.readable() || (shared && prot & libc::PROT_WRITE != 0 && !of.writable()) {
        return Err(Errno::EACCES);
    }
    let kind = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let keep =
        libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE | libc::MAP_POPULATE | libc::MAP_NORESERVE;
    // SAFETY: an anonymous mapping; checked.
    let p = unsafe {
        libc::mmap(
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS | (flags & keep),
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOMEM),
        ));
    }
    // SAFETY: the fresh mapping of `len` bytes.
    let mem = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
    let mut done = 0;
    while done < len {
        match read_of(&of, &mut mem[done..], Some(off as u64 + done as u64)) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => {
                // SAFETY: our mapping.
                unsafe { libc::munmap(p, len) };
                return Err(e);
            }
        }
    }
    if prot != libc::PROT_READ | libc::PROT_WRITE {
        // SAFETY: our mapping, to the protection asked for.
        unsafe { libc::mprotect(p, len, prot) };
    }
    if shared && prot & libc::PROT_WRITE != 0 {
        SHARED.lock().push(Mapping {
            addr: p as usize,
            len,
            of,
            off: off as u64,
        });
    }
    Ok(MapPtr(p))
}

pub(crate) fn h_mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> Act<MapPtr> {
    if flags & libc::MAP_ANONYMOUS != 0 {
        return None;
    }
    let of = fds::get(fd)?;
    Some(map_of(of, addr, len, prot, flags, off))
}

/// Writes `[addr, addr+len)` of shared mappings back to their files (never past the
/// current end of file: a mapping does not grow a file).
fn write_back(addr: usize, len: usize, remove: bool) -> Result<(), Errno> {
    let mut maps = SHARED.lock();
    let mut result = Ok(());
    maps.retain(|m| {
        let (start, end) = (addr.max(m.addr), (addr + len).min(m.addr + m.len));
        if start >= end {
            return true;
        }
        let r = (|| {
            let f = handle(&m.of)?;
            let size = f.size()?;
            let file_off = m.off + (start - m.addr) as u64;
            if file_off < size {
                let n = ((end - start) as u64).min(size - file_off) as usize;
                // SAFETY: inside a live mapping of ours.
                let data = unsafe { std::slice::from_raw_parts(start as *const u8, n) };
                f.pwrite(data, file_off)?;
            }
            Ok(())
        })();
        if r.is_err() {
            result = r;
        }
        !(remove && start == m.addr && end == m.addr + m.len)
    });
    result
}

pub(crate) fn h_munmap(addr: *mut c_void, len: usize) -> Act<c_int> {
    if SHARED.lock().is_empty() {
        return None;
    }
    if let Err(e) = write_back(addr as usize, len, true) {
        return Some(Err(e));
    }
    None
}

pub(crate) fn h_msync(addr: *mut c_void, len: usize, _flags: c_int) -> Act<c_int> {
    if SHARED.lock().is_empty() {
        return None;
    }
    write_back(addr as usize, len, false).err().map(Err)
}
