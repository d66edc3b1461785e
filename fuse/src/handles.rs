//! Open files and directories: the `fh` numbers the kernel hands back on every read,
//! write and release.
//!
//! A file keeps working after its name goes, as on a local file system: unlinked (or
//! replaced by a rename) while open, it moves under [`UNLINKED_DIR`] instead and is
//! removed when its last handle is released (the preload library does the same for its
//! own descriptors).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use gkfs_client::{Client, DirEntry, File};
use gkfs_proto::path::{moved, UNLINKED_DIR};
use gkfs_proto::Errno;

/// One open file.
pub struct OpenFile {
    /// The node it was opened through.
    pub ino: u64,
    append: bool,
    file: RwLock<File>,
}

impl OpenFile {
    /// The client handle (its path follows renames and unlinks).
    pub fn file(&self) -> File {
        self.file.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn move_to(&self, client: &Client, path: &str) {
        let mut f = self.file.write().unwrap_or_else(|e| e.into_inner());
        *f = client.file_handle(path, *f.record(), self.append);
    }
}

/// The open files and directory listings of one mount.
#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// Node → its name under UNLINKED_DIR, for files that lost their name while open.
    hidden: Mutex<HashMap<u64, String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handles {
    fn fresh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A new handle for `file`, opened through node `ino`.
    pub fn open_file(&self, ino: u64, file: File, append: bool) -> u64 {
        let fh = self.fresh();
        let of = OpenFile {
            ino,
            append,
            file: RwLock::new(file),
        };
        locked(&self.files).insert(fh, Arc::new(of));
        fh
    }

    /// The open file `fh`.
    pub fn file(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        locked(&self.files).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// Drops handle `fh`. If it was the last of a file that lost its name, returns the
    /// hidden name to remove.
    pub fn close_file(&self, fh: u64) -> Option<String> {
        let mut files = locked(&self.files);
        let of = files.remove(&fh)?;
        if files.values().any(|o| o.ino == of.ino) {
            return None;
        }
        drop(files);
        // Its chunk files kept open: removing the file must free their space.
        of.file
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .release_kept();
        locked(&self.hidden).remove(&of.ino)
    }

    /// A snapshot of a listing, for readdir to page through.
    pub fn open_dir(&self, entries: Vec<DirEntry>) -> u64 {
        let fh = self.fresh();
        locked(&self.dirs).insert(fh, Arc::new(entries));
        fh
    }

    /// The listing of directory handle `fh`.
    pub fn dir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        locked(&self.dirs).get(&fh).cloned().ok_or(Errno::EBADF)
    }

    /// Drops directory handle `fh`.
    pub fn close_dir(&self, fh: u64) {
        locked(&self.dirs).remove(&fh);
    }

    /// Is node `ino` open?
    pub fn is_open(&self, ino: u64) -> bool {
        locked(&self.files).values().any(|o| o.ino == ino)
    }

    /// `from` became `to`: the open files at or below it follow.
    pub fn renamed(&self, client: &Client, from: &str, to: &str) {
        for of in locked(&self.files).values() {
            if let Some(new) = moved(of.file().path(), from, to) {
                of.move_to(client, &new);
            }
        }
    }

    /// `path` (node `ino`, open here) is about to lose its name: moves it under
    /// UNLINKED_DIR, where its handles keep it until the last is released.
    pub fn hide(&self, client: &Client, ino: u64, path: &str) -> Result<(), Errno> {
        match client.mkdir(UNLINKED_DIR, 0o777) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let hidden = format!(
            "{UNLINKED_DIR}/{ino:x}.fuse{}.{:x}",
            std::process::id(),
            gkfs_client::unique_id()
        );
        client.rename(path, &hidden)?;
        for of in locked(&self.files).values().filter(|o| o.ino == ino) {
            of.move_to(client, &hidden);
        }
        locked(&self.hidden).insert(ino, hidden);
        Ok(())
    }

    /// The hidden names still held (removed when the mount ends).
    pub fn hidden_names(&self) -> Vec<String> {
        locked(&self.hidden).drain().map(|(_, p)| p).collect()
    }
}
