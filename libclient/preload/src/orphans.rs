//! Files that lose their name while open, as on a local file system: unlinked (the
//! temp-file pattern: create, unlink, keep using), replaced by a rename, or made
//! nameless with O_TMPFILE. The name goes at once; the file moves under
//! [`UNLINKED_DIR`] (hidden from listings), every description of it follows (their
//! paths live in the shared description page), and it is removed when the process that
//! unlinked it closes its last descriptor of it, or exits. A process killed first
//! leaves it there until the file system ends with the job. Renames made while a file
//! is open move its descriptions too.
//!
//! Only descriptions this process knows of are kept (other processes that share them
//! through fork or exec follow through the page). A file another process has open
//! elsewhere, without sharing a description, loses its data at the unlink, as with NFS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gkfs_proto::path::UNLINKED_DIR;
use gkfs_proto::Errno;

use crate::fds::{self, OpenFile};
use crate::state;

/// Has this process made sure [`UNLINKED_DIR`] exists?
static MADE: AtomicBool = AtomicBool::new(false);

/// A fresh name under [`UNLINKED_DIR`] for file `id`.
fn hidden_name(c: &api::Client, id: u64) -> Result<String, Errno> {
    if !MADE.load(Ordering::Relaxed) {
        match c.mkdir(UNLINKED_DIR, 0o777) {
            Ok(()) | Err(Errno::EEXIST) => MADE.store(true, Ordering::Relaxed),
            Err(e) => return Err(e),
        }
        register_exit_cleanup();
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    Ok(format!(
        "{UNLINKED_DIR}/{id:x}.{pid}.{:x}",
        api::unique_id()
    ))
}

/// unlink of `path`, which this process has open: the name goes, the file stays for
/// its descriptors. Ok(false): not open here (a plain unlink is due).
pub fn unlink_open(c: &api::Client, path: &str) -> Result<bool, Errno> {
    let open: Vec<Arc<OpenFile>> = fds::open_at(path)
        .into_iter()
        .filter(|of| !of.is_dir())
        .collect();
    if open.is_empty() {
        return Ok(false);
    }
    let rec = c.stat(path)?;
    if rec.is_dir() {
        return Err(Errno::EISDIR);
    }
    let hidden = hidden_name(c, rec.file_id)?;
    c.rename(path, &hidden)?;
    for of in open {
        of.set_path(&hidden)?;
        of.set_orphan();
    }
    Ok(true)
}

/// Before a rename onto `to`: an open file there keeps its data (it is hidden as if
/// unlinked).
pub fn before_rename_onto(c: &api::Client, to: &str) -> Result<(), Errno> {
    unlink_open(c, to).map(|_| ())
}

/// After a rename of `from` to `to`: open descriptions follow.
pub fn after_rename(from: &str, to: &str) {
    fds::renamed(from, to);
}

/// O_TMPFILE in directory `dir`: a nameless file (its path is under [`UNLINKED_DIR`]).
pub fn tmpfile_path(c: &api::Client, dir: &str) -> Result<String, Errno> {
    match c.stat(dir) {
        Ok(r) if r.is_dir() => {}
        Ok(_) => return Err(Errno::ENOTDIR),
        Err(e) => return Err(e),
    }
    hidden_name(c, api::unique_id())
}

/// Before the program closes a descriptor of `of`: a file unlinked while open goes with
/// the last descriptor of it in this process.
pub fn before_close(of: &OpenFile, last_here: impl Fn() -> bool) {
    if of.is_orphan() && last_here() {
        if let Ok(c) = state::client() {
            // A failure leaves it to the end of the job.
            let _ = c.unlink(&of.path());
        }
    }
}

/// At exit the kernel closes the descriptors without the library seeing it: the files
/// unlinked while open go here.
extern "C" fn remove_at_exit() {
    crate::hook::callback(|| {
        let Ok(c) = state::client() else { return Ok(0) };
        for of in fds::descriptions().into_iter().filter(|of| of.is_orphan()) {
            let _ = c.unlink(&of.path());
        }
        Ok(0)
    });
}

fn register_exit_cleanup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a function without arguments, as atexit expects.
        unsafe { libc::atexit(remove_at_exit) };
    });
}
