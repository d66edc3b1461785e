//! A client's shared window with its node's daemon: a memfd the client maps and hands
//! to the daemon over the node-local socket (`gkfs_proto::local` describes the
//! handshake); data requests name ranges of it instead of carrying the bytes.

/// A memory window shared with a local daemon (a mapped memfd).
pub struct Window {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the Window; one call at a time uses it.
unsafe impl Send for Window {}

impl Window {
    /// Creates the memfd, maps it, and returns it with the fd to hand to the daemon.
    pub fn create(len: usize) -> std::io::Result<(Window, std::os::fd::OwnedFd)> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let fd = nix::sys::memfd::memfd_create(
            c"gkfs-window",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        let size = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of our own memfd, owned by the Window from here.
        let p = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok((Window { ptr: p.cast(), len }, fd))
    }

    /// The window's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: our mapping of `len` bytes; the daemon does not touch it between
        // calls (it only works on it while serving this connection's one request).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The window's bytes, to fill before a call.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` is the only user.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `create`, which nothing else refers to.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}
