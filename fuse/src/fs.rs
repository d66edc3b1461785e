//! The FUSE requests, answered through the client API.
//!
//! Nothing is cached in this process, and the kernel is told not to cache either:
//! entry and attribute timeouts are 0 and files are opened with `FOPEN_DIRECT_IO`, so
//! every read, write and lookup reaches the daemons and sees what preloaded processes on
//! any node did before it (gkfs's consistency rule: no client cache). `mmap` still
//! works (`FUSE_DIRECT_IO_ALLOW_MMAP`), through the page cache of this node.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use gkfs_client::{lock, Client, LockSpec, OpenOptions};
use gkfs_proto::path::{inode_path, join, HIDDEN_DIRS, MAX_NAME};
use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::handles::Handles;
use crate::nodes::{Nodes, ROOT};

/// Nothing the kernel learns stays valid: every lookup and stat asks again.
const TTL: Duration = Duration::ZERO;

/// Largest read or write the kernel sends in one request.
pub const MAX_IO: u32 = 1 << 20;

/// The file system a mount serves.
pub struct GkfsFs {
    client: Client,
    nodes: Mutex<Nodes>,
    handles: Handles,
    /// Mixed into the kernel's lock owners: they are unique on this node only.
    lock_salt: u64,
    /// Nodes that were ever locked through this mount (their closes drop locks).
    locked: Mutex<HashSet<u64>>,
}

type Res<T> = Result<T, Errno>;

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn kind(m: u32) -> FileType {
    match m & mode::S_IFMT {
        mode::S_IFDIR => FileType::Directory,
        mode::S_IFLNK => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

/// A name from the kernel (gkfs paths are UTF-8).
fn name_str(name: &OsStr) -> Res<&str> {
    let n = name.to_str().ok_or(Errno::EINVAL)?;
    if n.len() > MAX_NAME {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(n)
}

/// The client's open options for the kernel's open flags (`create`: O_CREAT with these
/// permission bits).
fn open_options(flags: i32, create: Option<u32>) -> OpenOptions {
    OpenOptions {
        create: create.is_some(),
        exclusive: create.is_some() && flags & libc::O_EXCL != 0,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
        write: flags & libc::O_ACCMODE != libc::O_RDONLY,
        mode: create.unwrap_or(0),
    }
}

/// Answers a request that makes or finds a name.
fn reply_entry(reply: ReplyEntry, r: Res<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, fuser::Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

/// Answers a request that returns nothing.
fn reply_empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl GkfsFs {
    /// Serves the file system `client` reaches.
    pub fn new(client: Client) -> GkfsFs {
        GkfsFs {
            client,
            nodes: Mutex::new(Nodes::default()),
            handles: Handles::default(),
            lock_salt: gkfs_client::unique_id(),
            locked: Mutex::new(HashSet::new()),
        }
    }

    fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, ino: INodeNo) -> Res<String> {
        self.nodes().path(ino.0).ok_or(Errno::ESTALE)
    }

    /// The path of `name` in directory `parent`. The hidden directories of the root
    /// are not there for programs.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Res<String> {
        let name = name_str(name)?;
        if parent.0 == ROOT && HIDDEN_DIRS.iter().any(|h| &h[1..] == name) {
            return Err(Errno::ENOENT);
        }
        Ok(join(&self.path(parent)?, name))
    }

    fn ino(path: &str, rec: &Record) -> u64 {
        if path == "/" {
            ROOT
        } else {
            rec.ino(path)
        }
    }

    fn attr(&self, ino: u64, rec: &Record) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: rec.size,
            blocks: rec.size.div_ceil(512),
            atime: time(rec.atime),
            mtime: time(rec.mtime),
            ctime: time(rec.ctime),
            crtime: time(rec.ctime),
            kind: kind(rec.mode),
            perm: (rec.mode & 0o7777) as u16,
            nlink: rec.nlink.max(1),
            uid: rec.uid,
            gid: rec.gid,
            rdev: 0,
            blksize: self.client.chunk_size().min(u64::from(u32::MAX)) as u32,
            flags: 0,
        }
    }

    /// Looks `path` up for the kernel: its attributes, and the node remembered.
    fn entry(&self, path: &str) -> Res<FileAttr> {
        let rec = self.client.stat(path)?;
        let ino = Self::ino(path, &rec);
        self.nodes().remember(ino, path);
        Ok(self.attr(ino, &rec))
    }

    /// The attributes of node `ino` (through open file `fh` if given: it keeps its
    /// file after the name goes).
    fn getattr_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Res<FileAttr> {
        if let Some(fh) = fh {
            if let Ok(of) = self.handles.file(fh.0) {
                let f = of.file();
                let rec = match self.client.stat(f.path()) {
                    Ok(r) => r,
                    // Open, nameless, its last link gone elsewhere: what we knew.
                    Err(Errno::ENOENT) => Record {
                        nlink: 0,
                        ..*f.record()
                    },
                    Err(e) => return Err(e),
                };
                return Ok(self.attr(ino.0, &rec));
            }
        }
        let path = self.path(ino)?;
        match self.client.stat(&path) {
            Ok(rec) => Ok(self.attr(ino.0, &rec)),
            // The name the node was known by is gone; a hard-linked file lives on
            // in its inode record.
            Err(Errno::ENOENT) if ino.0 != ROOT => {
                let rec = self.client.stat(&inode_path(ino.0))?;
                Ok(self.attr(ino.0, &rec))
            }
            Err(e) => Err(e),
        }
    }

    fn setattr_of(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        perm: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        times: (Option<TimeOrNow>, Option<TimeOrNow>),
    ) -> Res<FileAttr> {
        let path = match fh.and_then(|fh| self.handles.file(fh.0).ok()) {
            Some(of) => of.file().path().to_string(),
            None => self.path(ino)?,
        };
        if let (Some(_), _) | (_, Some(_)) = owner {
            let rec = self.client.stat(&path)?;
            let same = owner.0.is_none_or(|u| u == rec.uid) && owner.1.is_none_or(|g| g == rec.gid);
            if !same {
                return Err(Errno::EPERM);
            }
        }
        if let Some(size) = size {
            self.client.truncate(&path, size)?;
        }
        let t = |t: Option<TimeOrNow>| {
            t.map(|t| match t {
                TimeOrNow::Now => gkfs_client::file_time_now(),
                TimeOrNow::SpecificTime(t) => ns_of(t),
            })
        };
        let (atime, mtime) = (t(times.0), t(times.1));
        if perm.is_some() || atime.is_some() || mtime.is_some() {
            self.client
                .set_attr(&path, perm.map(|p| p & 0o7777), atime, mtime)?;
        }
        let rec = self.client.stat(&path)?;
        Ok(self.attr(ino.0, &rec))
    }

    fn open_of(&self, path: &str, ino: u64, flags: i32) -> Res<u64> {
        let opts = open_options(flags, None);
        let file = self.client.open(path, &opts)?;
        Ok(self.handles.open_file(ino, file, opts.append))
    }

    fn create_of(
        &self,
        parent: INodeNo,
        name: &OsStr,
        perm: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let path = self.child(parent, name)?;
        let opts = open_options(flags, Some(perm));
        let file = self.client.open(&path, &opts)?;
        let rec = *file.record();
        let ino = Self::ino(&path, &rec);
        self.nodes().remember(ino, &path);
        let fh = self.handles.open_file(ino, file, opts.append);
        Ok((self.attr(ino, &rec), fh))
    }

    /// `path` (record `rec`) is about to lose its name (unlink, or replaced by a
    /// rename): a file open here with no other name moves aside for its handles.
    /// Returns whether it did.
    fn hide_if_open(&self, path: &str, rec: &Record) -> Res<bool> {
        let ino = Self::ino(path, rec);
        if rec.is_dir() || rec.nlink > 1 || !self.handles.is_open(ino) {
            return Ok(false);
        }
        self.handles.hide(&self.client, ino, path)?;
        Ok(true)
    }

    fn unlink_of(&self, parent: INodeNo, name: &OsStr) -> Res<()> {
        let path = self.child(parent, name)?;
        let rec = self.client.stat(&path)?;
        if rec.is_dir() {
            return Err(Errno::EISDIR);
        }
        if self.hide_if_open(&path, &rec)? {
            return Ok(());
        }
        self.client.unlink(&path)
    }

    fn rename_of(
        &self,
        from: (INodeNo, &OsStr),
        to: (INodeNo, &OsStr),
        flags: RenameFlags,
    ) -> Res<()> {
        let a = self.child(from.0, from.1)?;
        let b = self.child(to.0, to.1)?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::ENOTSUP);
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let target = match self.client.stat(&b) {
            Ok(r) => Some(r),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if let (Some(t), false) = (target, a == b) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            // The target moves aside only once the rename cannot fail for the kinds
            // involved (a hidden target would otherwise be lost with the error).
            let src = self.client.stat(&a)?;
            match (src.is_dir(), t.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
            self.hide_if_open(&b, &t)?;
        }
        self.client.rename(&a, &b)?;
        self.nodes().renamed(&a, &b);
        self.handles.renamed(&self.client, &a, &b);
        Ok(())
    }

    fn read_of(&self, fh: FileHandle, offset: u64, size: u32) -> Res<Vec<u8>> {
        let f = self.handles.file(fh.0)?.file();
        let mut buf = vec![0u8; size as usize];
        let n = f.pread(&mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn write_of(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Res<u32> {
        let f = self.handles.file(fh.0)?.file();
        f.pwrite(data, offset).map(|n| n as u32)
    }

    fn release_of(&self, fh: FileHandle) -> Res<()> {
        if let Some(hidden) = self.handles.close_file(fh.0) {
            match self.client.unlink(&hidden) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn locked(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At a close by `owner`: its locks on the file go (one RPC, only for files that
    /// were ever locked through this mount).
    fn unlock_at_close(&self, ino: INodeNo, fh: FileHandle, owner: LockOwner) -> Res<()> {
        if !self.locked().contains(&ino.0) {
            return Ok(());
        }
        let path = self.lock_path(ino, fh)?;
        self.client.unlock_all(&path, &[owner.0 ^ self.lock_salt])
    }

    fn fallocate_of(&self, fh: FileHandle, offset: u64, length: u64, m: i32) -> Res<()> {
        if length == 0 {
            return Err(Errno::EINVAL);
        }
        if m & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno::ENOTSUP);
        }
        let keep_size = m & libc::FALLOC_FL_KEEP_SIZE != 0;
        self.handles
            .file(fh.0)?
            .file()
            .allocate(offset, length, keep_size)
    }

    /// A POSIX lock request in the daemons' terms (the kernel's range is inclusive).
    fn lock_spec(start: u64, end: u64, typ: i32, pid: u32) -> Res<LockSpec> {
        let kind = match typ {
            libc::F_RDLCK => lock::READ,
            libc::F_WRLCK => lock::WRITE,
            libc::F_UNLCK => lock::UNLOCK,
            _ => return Err(Errno::EINVAL),
        };
        Ok(LockSpec {
            space: lock::SPACE_FCNTL,
            kind,
            start,
            end: if end >= i64::MAX as u64 {
                lock::TO_EOF
            } else {
                end + 1
            },
            pid: pid as i32,
        })
    }

    fn lock_path(&self, ino: INodeNo, fh: FileHandle) -> Res<String> {
        match self.handles.file(fh.0) {
            Ok(of) => Ok(of.file().path().to_string()),
            Err(_) => self.path(ino),
        }
    }

    fn setlk_of(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        owner: LockOwner,
        spec: LockSpec,
        sleep: bool,
    ) -> Res<()> {
        let path = self.lock_path(ino, fh)?;
        let owner = owner.0 ^ self.lock_salt;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.client.lock(&path, owner, spec, false)?.granted {
                if spec.kind != lock::UNLOCK {
                    self.locked().insert(ino.0);
                }
                return Ok(());
            }
            if !sleep {
                return Err(Errno::EAGAIN);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl Filesystem for GkfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        for cap in [
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_POSIX_LOCKS,
        ] {
            if config.add_capabilities(cap).is_err() {
                log::info!("the kernel does not offer {cap:?}");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.client.release_all_locks();
        for hidden in self.handles.hidden_names() {
            let _ = self.client.unlink(&hidden);
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.child(parent, name).and_then(|p| self.entry(&p)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_of(ino, fh, mode, (uid, gid), size, (atime, mtime)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.path(ino).and_then(|p| self.client.readlink(&p)) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        m: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: gkfs keeps no device nodes, FIFOs or sockets.
        let r = if m & mode::S_IFMT != mode::S_IFREG {
            Err(Errno::EPERM)
        } else {
            self.child(parent, name).and_then(|p| {
                self.client.create(&p, m & !umask & 0o7777)?;
                self.entry(&p)
            })
        };
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        m: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.child(parent, name).and_then(|p| {
            self.client.mkdir(&p, m & !umask & 0o7777)?;
            self.entry(&p)
        });
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.unlink_of(parent, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.child(parent, name).and_then(|p| self.client.rmdir(&p)),
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.child(parent, link_name).and_then(|p| {
            let target = target.to_str().ok_or(Errno::EINVAL)?;
            self.client.symlink(target, &p)?;
            self.entry(&p)
        });
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.rename_of((parent, name), (newparent, newname), flags),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.path(ino).and_then(|from| {
            let to = self.child(newparent, newname)?;
            self.client.link(&from, &to)?;
            self.entry(&to)
        });
        reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self
            .path(ino)
            .and_then(|p| self.open_of(&p, ino.0, flags.0));
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_of(fh, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_of(fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here: every write already reached its daemons. A close
        // drops the POSIX locks its process holds on the file (the kernel leaves that
        // to the file system when it passes locks on).
        reply_empty(reply, self.unlock_at_close(ino, fh, lock_owner));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.release_of(fh));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // As the preload library: the daemons hold the data; nothing is kept here.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path(ino).and_then(|p| self.client.readdir(&p)) {
            Ok(entries) => reply.opened(
                FileHandle(self.handles.open_dir(entries)),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (entries, dir) = match self
            .handles
            .dir(fh.0)
            .and_then(|e| Ok((e, self.path(ino)?)))
        {
            Ok(x) => x,
            Err(e) => return reply.error(errno(e)),
        };
        // Offsets: 1 after ".", 2 after "..", 3 + i after entry i.
        let mut at = offset;
        if at == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            at = 1;
        }
        if at == 1 {
            let parent = gkfs_proto::path::parent(&dir);
            let pino = if parent == "/" {
                ROOT
            } else {
                gkfs_proto::record::path_ino(parent)
            };
            if reply.add(INodeNo(pino), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            at = 2;
        }
        for (i, e) in entries.iter().enumerate().skip((at - 2) as usize) {
            let ino = gkfs_proto::record::path_ino(&join(&dir, &e.name));
            if reply.add(INodeNo(ino), 3 + i as u64, kind(e.mode), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.close_dir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.client.statfs() {
            Ok(s) => {
                let bs = 4096u64;
                reply.statfs(
                    s.total / bs,
                    s.free / bs,
                    s.avail / bs,
                    u64::MAX >> 1,
                    u64::MAX >> 2,
                    bs as u32,
                    MAX_NAME as u32,
                    bs as u32,
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    // Extended attributes: as in the preload library, gkfs keeps none.
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(Errno::ENOTSUP));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(errno(Errno::ENOTSUP));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(Errno::ENOTSUP));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        m: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if m & mode::S_IFMT != mode::S_IFREG && m & mode::S_IFMT != 0 {
            return reply.error(errno(Errno::EPERM));
        }
        match self.create_of(parent, name, m & !umask & 0o7777, flags) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                fuser::Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let r = Self::lock_spec(start, end, typ, pid).and_then(|spec| {
            let path = self.lock_path(ino, fh)?;
            self.client
                .lock(&path, lock_owner.0 ^ self.lock_salt, spec, true)
        });
        match r {
            Ok(l) if l.granted => reply.locked(0, 0, libc::F_UNLCK, 0),
            Ok(l) => {
                let end = if l.conflict_end == lock::TO_EOF {
                    i64::MAX as u64
                } else {
                    l.conflict_end.saturating_sub(1)
                };
                let typ = if l.conflict_kind == lock::WRITE {
                    libc::F_WRLCK
                } else {
                    libc::F_RDLCK
                };
                reply.locked(l.conflict_start, end, typ, l.conflict_pid.max(0) as u32)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let r = Self::lock_spec(start, end, typ, pid)
            .and_then(|spec| self.setlk_of(ino, fh, lock_owner, spec, sleep));
        reply_empty(reply, r);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        m: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fallocate_of(fh, offset, length, m));
    }
}
