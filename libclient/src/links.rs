//! Hard links. Data is placed by file id, so a hard link is a second name for the
//! same id; what must be shared is the file's attributes. The first link moves them
//! out of the name into an inode record ([`inode_path`]`(file_id)`, under the hidden
//! [`INODES_DIR`]); every name becomes a record flagged [`Record::LINKED`] that only
//! names the file. Calls on a name are sent on to the inode record (a daemon asked to
//! change a linked name answers ENOLINK, and the client asks again at the inode), so
//! every name sees the same size, mode, times and `st_nlink`; the link count changes
//! atomically at the inode's daemon, and the data goes with the last name.
//!
//! Consistency: as for any gkfs file, each call is atomic at one daemon; a link made
//! while another process writes through another name can lose a size update made in
//! the instant the attributes move (the data itself is never lost).

use gkfs_proto::msg::{AdjustLinksReq, PutRecordReq};
use gkfs_proto::path::{inode_path, INODES_DIR};
use gkfs_proto::{Errno, Record};

use crate::client::{check_path, file_time_now, Client};

/// The name record of a linked file: type and permission bits, the file id.
fn name_record(rec: &Record) -> Record {
    Record {
        mode: rec.mode,
        file_id: rec.file_id,
        uid: rec.uid,
        gid: rec.gid,
        flags: Record::LINKED,
        ..Default::default()
    }
}

impl Client {
    /// Where the attributes of `p` live: `p`, or the inode record of a linked name.
    pub(crate) fn attr_path(&self, p: &str) -> Result<String, Errno> {
        let rec = self.stat_norm(p)?;
        Ok(if rec.is_linked() {
            inode_path(rec.file_id)
        } else {
            p.to_string()
        })
    }

    /// Runs `op` on `p`, or on its inode record if `p` is a linked name.
    pub(crate) fn on_attrs<R>(
        &self,
        p: &str,
        mut op: impl FnMut(&str) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        match op(p) {
            Err(Errno::ENOLINK) => op(&self.attr_path(p)?),
            r => r,
        }
    }

    /// The record a name stands for: its own, or its inode record's.
    pub(crate) fn resolve_linked(&self, rec: Record) -> Result<Record, Errno> {
        if !rec.is_linked() {
            return Ok(rec);
        }
        self.stat_norm(&inode_path(rec.file_id))
    }

    /// Makes `to` another name of the file `from` (not a directory: EPERM; `to` must
    /// not exist: EEXIST).
    pub fn link(&self, from: &str, to: &str) -> Result<(), Errno> {
        let (from, to) = (check_path(from)?, check_path(to)?);
        let rec = self.stat_norm(&from)?;
        if rec.is_dir() {
            return Err(Errno::EPERM);
        }
        self.check_parent(&to)?;
        let inode = inode_path(rec.file_id);
        if !rec.is_linked() {
            match self.mkdir(INODES_DIR, 0o700) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            // The attributes move to the inode record (one name so far), then the
            // name becomes a link to it.
            let mut attrs = rec;
            attrs.nlink = 1;
            attrs.flags = 0;
            self.rpc().call(
                self.owner_of(&inode),
                &PutRecordReq {
                    path: inode.clone(),
                    record: attrs,
                    replace: false,
                },
            )?;
            self.rpc().call(
                self.owner_of(&from),
                &PutRecordReq {
                    path: from.clone(),
                    record: name_record(&rec),
                    replace: true,
                },
            )?;
        }
        self.rpc().call(
            self.owner_of(&to),
            &PutRecordReq {
                path: to,
                record: name_record(&rec),
                replace: false,
            },
        )?;
        self.adjust_links(&inode, 1).map(|_| ())
    }

    /// Adds `delta` to the link count of inode record `inode`; the record after.
    fn adjust_links(&self, inode: &str, delta: i32) -> Result<Record, Errno> {
        Ok(self
            .rpc()
            .call(
                self.owner_of(inode),
                &AdjustLinksReq {
                    path: inode.to_string(),
                    delta,
                    ctime: file_time_now(),
                },
            )?
            .record)
    }

    /// A name `rec` was removed (unlink, or replaced by a rename): the file's data goes
    /// when it was the last name.
    pub(crate) fn name_removed(&self, rec: &Record) -> Result<(), Errno> {
        if !rec.is_linked() {
            return self.remove_data(rec);
        }
        let inode = self.adjust_links(&inode_path(rec.file_id), -1)?;
        if inode.nlink == 0 {
            self.remove_data(&inode)?;
        }
        Ok(())
    }
}
