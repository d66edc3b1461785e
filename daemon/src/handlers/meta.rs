//! Metadata handlers: records in RocksDB.

use gkfs_fabric::cuts::Cut;
use gkfs_proto::msg::*;
use gkfs_proto::path::validate;
use gkfs_proto::record::mode;
use gkfs_proto::{Errno, Record};

use crate::state::{now_ns, State};

fn valid(p: &str) -> Result<(), RemoteError> {
    validate(p).map_err(|e| RemoteError::new(e, format!("invalid path `{}`", p.escape_debug())))
}

fn root_record(st: &State) -> Record {
    Record {
        mode: mode::S_IFDIR | 0o777,
        nlink: 2,
        ctime: st.start_time,
        mtime: st.start_time,
        atime: st.start_time,
        ..Default::default()
    }
}

/// The stored record of `p`, or ENOENT.
fn existing(st: &State, p: &str) -> Result<Record, RemoteError> {
    Ok(st.meta.get(p).map_err(Errno::from)?.ok_or(Errno::ENOENT)?)
}

/// The stored record of a regular file (or link) at `p`: ENOENT, or EISDIR for a
/// directory.
fn existing_file(st: &State, p: &str) -> Result<Record, RemoteError> {
    let rec = existing(st, p)?;
    if rec.is_dir() {
        return Err(Errno::EISDIR.into());
    }
    not_linked(p, rec)
}

/// A hard-linked name keeps no attributes of its own: the caller is sent to the inode
/// record (ENOLINK, which clients handle and never show).
fn not_linked(p: &str, rec: Record) -> Result<Record, RemoteError> {
    if rec.is_linked() {
        return Err(RemoteError::new(
            Errno::ENOLINK,
            format!(
                "`{}` is a hard link: its attributes are in its inode record",
                p.escape_debug()
            ),
        ));
    }
    Ok(rec)
}

pub fn adjust_links(st: &State, req: AdjustLinksReq) -> Result<AdjustLinksReply, RemoteError> {
    valid(&req.path)?;
    let _g = st.write_lock(&req.path);
    let _cut = st.chunks.cutting(Cut::Sizes);
    let mut rec = existing_file(st, &req.path)?;
    rec.nlink = rec.nlink.saturating_add_signed(req.delta);
    rec.ctime = rec.ctime.max(req.ctime);
    if rec.nlink == 0 {
        st.meta.delete(&req.path).map_err(Errno::from)?;
    } else {
        st.meta.put(&req.path, &rec).map_err(Errno::from)?;
    }
    Ok(AdjustLinksReply { record: rec })
}

/// Reads a record; the root directory exists implicitly.
pub fn lookup(st: &State, p: &str) -> Result<Record, RemoteError> {
    match st.meta.get(p).map_err(Errno::from)? {
        Some(r) => Ok(r),
        None if p == "/" => Ok(root_record(st)),
        None => Err(Errno::ENOENT.into()),
    }
}

pub fn create(st: &State, req: CreateReq) -> Result<CreateReply, RemoteError> {
    valid(&req.path)?;
    if req.path == "/" {
        return Err(Errno::EEXIST.into());
    }
    let kind = req.mode & mode::S_IFMT;
    if ![mode::S_IFREG, mode::S_IFDIR, mode::S_IFLNK].contains(&kind) {
        return Err(RemoteError::new(Errno::EINVAL, "unsupported file type"));
    }
    if req.check_parent {
        let parent = gkfs_proto::path::parent(&req.path);
        if !lookup(st, parent)?.is_dir() {
            return Err(Errno::ENOTDIR.into());
        }
    }
    let _g = st.write_lock(&req.path);
    if let Some(existing) = st.meta.get(&req.path).map_err(Errno::from)? {
        if req.exclusive {
            return Err(Errno::EEXIST.into());
        }
        return Ok(CreateReply {
            record: existing,
            created: false,
        });
    }
    st.meta.admit_record()?;
    let file_id = if kind == mode::S_IFDIR {
        0
    } else {
        st.new_file_id()?
    };
    let record = Record {
        mode: req.mode,
        size: 0,
        file_id,
        ctime: req.time,
        mtime: req.time,
        atime: req.time,
        nlink: if kind == mode::S_IFDIR { 2 } else { 1 },
        uid: req.uid,
        gid: req.gid,
        flags: 0,
    };
    st.meta.put(&req.path, &record).map_err(Errno::from)?;
    Ok(CreateReply {
        record,
        created: true,
    })
}

pub fn stat(st: &State, req: StatReq) -> Result<StatReply, RemoteError> {
    valid(&req.path)?;
    Ok(StatReply {
        record: lookup(st, &req.path)?,
    })
}

pub fn remove(st: &State, req: RemoveReq) -> Result<RemoveReply, RemoteError> {
    valid(&req.path)?;
    if req.path == "/" {
        return Err(Errno::EBUSY.into());
    }
    let _g = st.write_lock(&req.path);
    let _cut = st.chunks.cutting(Cut::Sizes);
    let record = existing(st, &req.path)?;
    match (req.kind, record.is_dir()) {
        (1, true) => return Err(Errno::EISDIR.into()),
        (2, false) => return Err(Errno::ENOTDIR.into()),
        _ => {}
    }
    if record.is_dir() && st.meta.has_children(&req.path).map_err(Errno::from)? {
        return Err(Errno::ENOTEMPTY.into());
    }
    st.meta.delete(&req.path).map_err(Errno::from)?;
    Ok(RemoveReply { record })
}

pub fn update_size(st: &State, req: UpdateSizeReq) -> Result<UpdateSizeReply, RemoteError> {
    valid(&req.path)?;
    if req.append_len > 0 {
        let _g = st.write_lock(&req.path);
        let mut rec = existing_file(st, &req.path)?;
        let offset = rec.size;
        rec.size = offset.checked_add(req.append_len).ok_or(Errno::EFBIG)?;
        rec.mtime = rec.mtime.max(req.mtime);
        rec.ctime = rec.ctime.max(req.mtime);
        st.meta.put(&req.path, &rec).map_err(Errno::from)?;
        return Ok(UpdateSizeReply {
            offset,
            size: rec.size,
        });
    }
    let _g = st.read_lock(&req.path);
    let rec = existing_file(st, &req.path)?;
    if req.end > rec.size || req.mtime > rec.mtime {
        st.meta
            .merge_size(&req.path, req.end, req.mtime)
            .map_err(Errno::from)?;
    }
    Ok(UpdateSizeReply {
        offset: req.end,
        size: rec.size.max(req.end),
    })
}

pub fn get_size(st: &State, req: GetSizeReq) -> Result<GetSizeReply, RemoteError> {
    valid(&req.path)?;
    Ok(GetSizeReply {
        size: not_linked(&req.path, lookup(st, &req.path)?)?.size,
    })
}

pub fn truncate(st: &State, req: TruncateReq) -> Result<TruncateReply, RemoteError> {
    valid(&req.path)?;
    let _g = st.write_lock(&req.path);
    let _cut = st.chunks.cutting(Cut::Sizes);
    let old = existing_file(st, &req.path)?;
    let mut rec = old;
    rec.size = req.size;
    rec.mtime = req.mtime;
    rec.ctime = req.mtime;
    st.meta.put(&req.path, &rec).map_err(Errno::from)?;
    Ok(TruncateReply { old })
}

pub fn read_dir(st: &State, req: ReadDirReq) -> Result<ReadDirReply, RemoteError> {
    valid(&req.dir)?;
    let max = (req.max as usize).clamp(1, 4096);
    let (entries, more) = st
        .meta
        .children(
            &req.dir,
            &req.start_after,
            max,
            gkfs_proto::limits::PAGE_BYTES,
        )
        .map_err(Errno::from)?;
    Ok(ReadDirReply { entries, more })
}

pub fn put_record(st: &State, req: PutRecordReq) -> Result<PutRecordReply, RemoteError> {
    valid(&req.path)?;
    if req.path == "/" {
        return Err(Errno::EBUSY.into());
    }
    let _g = st.write_lock(&req.path);
    let _cut = st.chunks.cutting(Cut::Sizes);
    let replaced = st.meta.get(&req.path).map_err(Errno::from)?;
    if let Some(old) = &replaced {
        if !req.replace {
            return Err(Errno::EEXIST.into());
        }
        if old.is_dir() && !req.record.is_dir() {
            return Err(Errno::EISDIR.into());
        }
        if !old.is_dir() && req.record.is_dir() {
            return Err(Errno::ENOTDIR.into());
        }
        if old.is_dir() && st.meta.has_children(&req.path).map_err(Errno::from)? {
            return Err(Errno::ENOTEMPTY.into());
        }
    } else {
        st.meta.admit_record()?;
    }
    st.meta.put(&req.path, &req.record).map_err(Errno::from)?;
    Ok(PutRecordReply { replaced })
}

pub fn scan_prefix(st: &State, req: ScanPrefixReq) -> Result<ScanPrefixReply, RemoteError> {
    valid(&req.prefix)?;
    let max = (req.max as usize).clamp(1, 512);
    let (records, more) = st
        .meta
        .scan(&req.prefix, &req.start_after, max)
        .map_err(Errno::from)?;
    Ok(ScanPrefixReply { records, more })
}

pub fn set_attr(st: &State, req: SetAttrReq) -> Result<StatReply, RemoteError> {
    valid(&req.path)?;
    let _g = st.write_lock(&req.path);
    let _cut = st.chunks.cutting(Cut::Sizes);
    let rec = match st.meta.get(&req.path).map_err(Errno::from)? {
        Some(r) => r,
        None if req.path == "/" => root_record(st),
        None => return Err(Errno::ENOENT.into()),
    };
    let mut rec = not_linked(&req.path, rec)?;
    if req.mode != u32::MAX {
        rec.mode = (rec.mode & mode::S_IFMT) | (req.mode & 0o7777);
    }
    if req.atime >= 0 {
        rec.atime = req.atime;
    }
    if req.mtime >= 0 {
        rec.mtime = req.mtime;
    }
    rec.ctime = if req.ctime > 0 { req.ctime } else { now_ns() };
    st.meta.put(&req.path, &rec).map_err(Errno::from)?;
    Ok(StatReply { record: rec })
}
