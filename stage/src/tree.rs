//! The two sides of a copy: a local (parallel) file system and gkfs, behind one
//! interface. Paths are absolute paths as programs see them: for [`Gkfs`], under the
//! mount dir ("/tmp/gkfs/input/a").

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use gkfs_client::{Client, Errno, OpenOptions};
use gkfs_proto::record::mode;

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One entry found by a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the walked root ("" for the root itself), '/'-separated.
    pub rel: String,
    /// Type.
    pub kind: Kind,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Link target (symlinks).
    pub target: Option<String>,
}

/// What a walk found.
pub type Walk = (Vec<Entry>, Vec<(String, Errno)>);

/// An open file to read from.
pub trait Reader: Send {
    /// Reads at `off`; returns the bytes read (0 at the end).
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize, Errno>;
    /// The next stretch of data at or after `off` as `(start, end)`, everything between
    /// `off` and `start` being a hole (zeros); `end` may be `u64::MAX` for "up to the
    /// end of the file". None: only a hole (or nothing) is left from `off` to the end.
    /// The default knows of no holes: all of the file is data.
    fn data_from(&self, off: u64) -> Result<Option<(u64, u64)>, Errno> {
        Ok(Some((off, u64::MAX)))
    }
    /// The file's current size.
    fn size(&self) -> Result<u64, Errno>;
}

/// An open file to write to.
pub trait Writer: Send {
    /// Writes all of `buf` at `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> Result<(), Errno>;
    /// Sets the file's size; growing it adds a hole (nothing is written).
    fn set_len(&self, size: u64) -> Result<(), Errno>;
}

/// A file system a copy reads from or writes to.
pub trait Tree: Sync {
    /// Every entry below `root` (and `root` itself, with rel ""), parents before
    /// children, and the entries (relative paths) that could not be listed or stat'ed.
    /// Fails only if `root` itself cannot be read.
    fn walk(&self, root: &str) -> Result<Walk, Errno>;
    /// Size and mtime of `path`, None if it does not exist.
    fn stat(&self, path: &str) -> Result<Option<(u64, i64)>, Errno>;
    /// Creates a directory (an existing one is fine).
    fn mkdir(&self, path: &str) -> Result<(), Errno>;
    /// Opens a file for reading.
    fn open_read(&self, path: &str) -> Result<Box<dyn Reader>, Errno>;
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &str) -> Result<Box<dyn Writer>, Errno>;
    /// Sets permission bits and mtime.
    fn set_meta(&self, path: &str, perm: u32, mtime_ns: i64) -> Result<(), Errno>;
    /// Creates a symbolic link at `path` (replacing an existing link).
    fn symlink(&self, target: &str, path: &str) -> Result<(), Errno>;
}

/// Joins a root and a relative path.
pub fn join(root: &str, rel: &str) -> String {
    match (rel.is_empty(), root.ends_with('/')) {
        (true, _) => root.to_string(),
        (false, true) => format!("{root}{rel}"),
        (false, false) => format!("{root}/{rel}"),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc_eio()))
}

fn libc_eio() -> i32 {
    Errno::EIO.raw()
}

/// A local (or parallel) file system, through std.
pub struct Local;

struct LocalFile(std::fs::File);

impl Reader for LocalFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        loop {
            match self.0.read_at(buf, off) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| io_errno(&e)),
            }
        }
    }

    /// Asks the file system with `lseek(SEEK_DATA)` / `lseek(SEEK_HOLE)`; a file system
    /// that cannot tell (EINVAL, EOPNOTSUPP) has no holes.
    fn data_from(&self, off: u64) -> Result<Option<(u64, u64)>, Errno> {
        use nix::errno::Errno as E;
        use nix::unistd::{lseek, Whence};
        let fd = self.0.as_raw_fd();
        let Ok(at) = i64::try_from(off) else {
            return Ok(None);
        };
        let start = match lseek(fd, at, Whence::SeekData) {
            Ok(s) => s,
            // No data at or after `off` (or `off` is past the end).
            Err(E::ENXIO) => return Ok(None),
            Err(E::EINVAL | E::EOPNOTSUPP) => return Ok(Some((off, u64::MAX))),
            Err(e) => return Err(Errno(e as i32)),
        };
        let end = match lseek(fd, start, Whence::SeekHole) {
            Ok(h) => h as u64,
            // The file shrank in between: reading finds its end.
            Err(E::ENXIO) => u64::MAX,
            Err(e) => return Err(Errno(e as i32)),
        };
        Ok(Some((start as u64, end)))
    }

    fn size(&self) -> Result<u64, Errno> {
        self.0.metadata().map(|m| m.len()).map_err(|e| io_errno(&e))
    }
}

impl Writer for LocalFile {
    fn write_at(&self, buf: &[u8], off: u64) -> Result<(), Errno> {
        self.0.write_all_at(buf, off).map_err(|e| io_errno(&e))
    }

    fn set_len(&self, size: u64) -> Result<(), Errno> {
        self.0.set_len(size).map_err(|e| io_errno(&e))
    }
}

fn local_entry(
    rel: String,
    md: &std::fs::Metadata,
    path: &std::path::Path,
) -> Result<Entry, Errno> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else {
        // Devices, sockets, FIFOs: nothing a burst buffer holds.
        return Err(Errno::ENOTSUP);
    };
    let target = if kind == Kind::Symlink {
        Some(
            std::fs::read_link(path)
                .map_err(|e| io_errno(&e))?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    Ok(Entry {
        rel,
        kind,
        size: if kind == Kind::File { md.len() } else { 0 },
        mode: md.mode() & 0o7777,
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        target,
    })
}

impl Tree for Local {
    fn walk(&self, root: &str) -> Result<Walk, Errno> {
        let md = std::fs::symlink_metadata(root).map_err(|e| io_errno(&e))?;
        let mut out = vec![local_entry(String::new(), &md, root.as_ref())?];
        let mut errors = Vec::new();
        let mut i = 0;
        while i < out.len() {
            if out[i].kind == Kind::Dir {
                let dir = join(root, &out[i].rel);
                let names: Result<Vec<_>, _> = std::fs::read_dir(&dir)
                    .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect());
                let mut names = match names {
                    Ok(n) => n,
                    Err(e) if i == 0 => return Err(io_errno(&e)),
                    Err(e) => {
                        errors.push((out[i].rel.clone(), io_errno(&e)));
                        Vec::new()
                    }
                };
                names.sort();
                for n in names {
                    let Ok(n) = n.into_string() else {
                        errors.push((format!("{}/<non-UTF-8 name>", out[i].rel), Errno::EINVAL));
                        continue;
                    };
                    let rel = if out[i].rel.is_empty() {
                        n
                    } else {
                        format!("{}/{n}", out[i].rel)
                    };
                    let p = join(root, &rel);
                    let e = std::fs::symlink_metadata(&p)
                        .map_err(|e| io_errno(&e))
                        .and_then(|md| local_entry(rel.clone(), &md, p.as_ref()));
                    match e {
                        Ok(e) => out.push(e),
                        Err(Errno::ENOTSUP) => {
                            log::warn!("skipping {p}: not a file, directory or symlink")
                        }
                        Err(e) => errors.push((rel, e)),
                    }
                }
            }
            i += 1;
        }
        Ok((out, errors))
    }

    fn stat(&self, path: &str) -> Result<Option<(u64, i64)>, Errno> {
        match std::fs::symlink_metadata(path) {
            Ok(md) => Ok(Some((
                md.len(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_errno(&e)),
        }
    }

    fn mkdir(&self, path: &str) -> Result<(), Errno> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r.map_err(|e| io_errno(&e)),
        }
    }

    fn open_read(&self, path: &str) -> Result<Box<dyn Reader>, Errno> {
        let f = std::fs::File::open(path).map_err(|e| io_errno(&e))?;
        Ok(Box::new(LocalFile(f)))
    }

    fn create(&self, path: &str) -> Result<Box<dyn Writer>, Errno> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io_errno(&e))?;
        Ok(Box::new(LocalFile(f)))
    }

    fn set_meta(&self, path: &str, perm: u32, mtime_ns: i64) -> Result<(), Errno> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm))
            .map_err(|e| io_errno(&e))?;
        let ts = nix::sys::time::TimeSpec::new(
            mtime_ns.div_euclid(1_000_000_000),
            mtime_ns.rem_euclid(1_000_000_000),
        );
        nix::sys::stat::utimensat(
            None,
            path,
            &nix::sys::time::TimeSpec::UTIME_OMIT,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| Errno(e as i32))
    }

    fn symlink(&self, target: &str, path: &str) -> Result<(), Errno> {
        let _ = std::fs::remove_file(path);
        std::os::unix::fs::symlink(target, path).map_err(|e| io_errno(&e))
    }
}

/// A gkfs file system, through the client API; paths under its mount dir.
pub struct Gkfs(pub Client);

impl Gkfs {
    /// The path inside the file system of a path under the mount dir.
    fn fs(&self, p: &str) -> Result<String, Errno> {
        self.0.fs_path(p).ok_or(Errno::EXDEV)
    }
}

/// The client API cannot tell which chunks were never written, so a gkfs file has no
/// holes to a reader: holes come back as zeros, and the copy finds them by their zeros.
impl Reader for gkfs_client::File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
        self.pread(buf, off)
    }

    fn size(&self) -> Result<u64, Errno> {
        gkfs_client::File::size(self)
    }
}

/// Bytes never written stay holes: their chunks are never created (and read as zeros).
impl Writer for gkfs_client::File {
    fn write_at(&self, buf: &[u8], off: u64) -> Result<(), Errno> {
        self.pwrite(buf, off).map(|_| ())
    }

    fn set_len(&self, size: u64) -> Result<(), Errno> {
        self.truncate(size)
    }
}

fn gkfs_kind(m: u32) -> Kind {
    match m & mode::S_IFMT {
        mode::S_IFDIR => Kind::Dir,
        mode::S_IFLNK => Kind::Symlink,
        _ => Kind::File,
    }
}

impl Tree for Gkfs {
    fn walk(&self, root: &str) -> Result<Walk, Errno> {
        let c = &self.0;
        let entry = |rel: String| -> Result<Entry, Errno> {
            let p = self.fs(&join(root, &rel))?;
            let r = c.stat(&p)?;
            let kind = gkfs_kind(r.mode);
            Ok(Entry {
                rel,
                kind,
                size: if kind == Kind::File { r.size } else { 0 },
                mode: r.mode & 0o7777,
                mtime_ns: r.mtime,
                target: if kind == Kind::Symlink {
                    Some(c.readlink(&p)?)
                } else {
                    None
                },
            })
        };
        let mut out = vec![entry(String::new())?];
        let mut errors = Vec::new();
        let mut i = 0;
        while i < out.len() {
            if out[i].kind == Kind::Dir {
                let listed = self
                    .fs(&join(root, &out[i].rel))
                    .and_then(|d| c.readdir(&d));
                match listed {
                    Ok(list) => {
                        for e in list {
                            let rel = if out[i].rel.is_empty() {
                                e.name
                            } else {
                                format!("{}/{}", out[i].rel, e.name)
                            };
                            match entry(rel.clone()) {
                                Ok(e) => out.push(e),
                                Err(e) => errors.push((rel, e)),
                            }
                        }
                    }
                    Err(e) if i == 0 => return Err(e),
                    Err(e) => errors.push((out[i].rel.clone(), e)),
                }
            }
            i += 1;
        }
        Ok((out, errors))
    }

    fn stat(&self, path: &str) -> Result<Option<(u64, i64)>, Errno> {
        match self.0.stat(&self.fs(path)?) {
            Ok(r) => Ok(Some((r.size, r.mtime))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&self, path: &str) -> Result<(), Errno> {
        let path = &self.fs(path)?;
        match self.0.mkdir(path, 0o755) {
            Err(Errno::EEXIST) if self.0.stat(path).is_ok_and(|r| r.is_dir()) => Ok(()),
            r => r,
        }
    }

    fn open_read(&self, path: &str) -> Result<Box<dyn Reader>, Errno> {
        Ok(Box::new(
            self.0.open(&self.fs(path)?, &OpenOptions::default())?,
        ))
    }

    fn create(&self, path: &str) -> Result<Box<dyn Writer>, Errno> {
        Ok(Box::new(self.0.open(
            &self.fs(path)?,
            &OpenOptions {
                create: true,
                truncate: true,
                write: true,
                mode: 0o600,
                ..Default::default()
            },
        )?))
    }

    fn set_meta(&self, path: &str, perm: u32, mtime_ns: i64) -> Result<(), Errno> {
        self.0
            .set_attr(&self.fs(path)?, Some(perm), None, Some(mtime_ns))
            .map(|_| ())
    }

    fn symlink(&self, target: &str, path: &str) -> Result<(), Errno> {
        let path = &self.fs(path)?;
        match self.0.symlink(target, path) {
            Err(Errno::EEXIST) => {
                self.0.unlink(path)?;
                self.0.symlink(target, path)
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_walk_lists_parents_first_with_metadata() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/f"), b"12345").unwrap();
        std::os::unix::fs::symlink("f", root.join("a/l")).unwrap();
        let (v, errors) = Local.walk(root.to_str().unwrap()).unwrap();
        assert!(errors.is_empty());
        let rels: Vec<&str> = v.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["", "a", "a/b", "a/f", "a/l"]);
        assert_eq!(v[3].size, 5);
        assert_eq!(v[4].kind, Kind::Symlink);
        assert_eq!(v[4].target.as_deref(), Some("f"));
        assert_eq!(join("/x/", "y"), "/x/y");
        assert_eq!(join("/x", ""), "/x");
    }
}
