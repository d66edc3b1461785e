//! The metadata record: what the daemon stores under each path.
//!
//! Encoding (version 1, 65 bytes): a leading version byte, then little-endian
//! `mode u32, size u64, file_id u64, ctime i64, mtime i64, atime i64 (ns since the
//! epoch), nlink u32, uid u32, gid u32, flags u32, reserved u32`. Decoders reject
//! other versions and lengths.

use crate::wire::{DecodeError, Reader, Wire};

/// Version byte of the current record encoding.
pub const RECORD_VERSION: u8 = 1;

/// `S_IFMT` and the file types the file system knows.
pub mod mode {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120000;
}

/// One file's or directory's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// File id: data placement key (see [`crate::place::place_chunk`]); 0 for directories.
    pub file_id: u64,
    /// Change time, ns since the epoch.
    pub ctime: i64,
    /// Modification time, ns since the epoch.
    pub mtime: i64,
    /// Access time, ns since the epoch.
    pub atime: i64,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// [`Record::LINKED`], or 0.
    pub flags: u32,
}

impl Record {
    /// [`Record::flags`] bit of a name that is one of several hard links: the file's
    /// attributes (size, mode, times, link count) live in its inode record at
    /// [`crate::path::inode_path`]`(file_id)`, shared by every name; this record only
    /// names it (type and file id).
    pub const LINKED: u32 = 1;

    /// Is this a hard-linked name (see [`Record::LINKED`])?
    pub fn is_linked(&self) -> bool {
        self.flags & Self::LINKED != 0
    }

    /// Encoded length of a version-1 record.
    pub const ENCODED_LEN: usize = 1 + 4 + 8 * 5 + 4 * 5;

    /// Is this a directory?
    pub fn is_dir(&self) -> bool {
        self.mode & mode::S_IFMT == mode::S_IFDIR
    }

    /// Is this a regular file?
    pub fn is_file(&self) -> bool {
        self.mode & mode::S_IFMT == mode::S_IFREG
    }

    /// The inode number programs see (`st_ino`): the file id, which hard links share
    /// and renames keep; for a directory (file id 0) [`path_ino`] of its path.
    pub fn ino(&self, path: &str) -> u64 {
        if self.file_id != 0 {
            self.file_id
        } else {
            path_ino(path)
        }
    }

    /// Encodes the record with its version byte.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        self.put(&mut out);
        out
    }

    /// Decodes a stored record.
    pub fn from_bytes(buf: &[u8]) -> Result<Record, DecodeError> {
        crate::wire::decode(buf)
    }
}

/// The inode number of a name known only by its path (directory entries,
/// directories): its placement hash, odd so that it is never 0. Stable while the path
/// is; a rename changes it.
pub fn path_ino(path: &str) -> u64 {
    crate::place::path_hash(path) | 1
}

impl Wire for Record {
    fn put(&self, out: &mut Vec<u8>) {
        RECORD_VERSION.put(out);
        self.mode.put(out);
        self.size.put(out);
        self.file_id.put(out);
        self.ctime.put(out);
        self.mtime.put(out);
        self.atime.put(out);
        self.nlink.put(out);
        self.uid.put(out);
        self.gid.put(out);
        self.flags.put(out);
        0u32.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = u8::get(r)?;
        if v != RECORD_VERSION {
            return Err(DecodeError::Version(v));
        }
        let rec = Record {
            mode: Wire::get(r)?,
            size: Wire::get(r)?,
            file_id: Wire::get(r)?,
            ctime: Wire::get(r)?,
            mtime: Wire::get(r)?,
            atime: Wire::get(r)?,
            nlink: Wire::get(r)?,
            uid: Wire::get(r)?,
            gid: Wire::get(r)?,
            flags: Wire::get(r)?,
        };
        let _reserved = u32::get(r)?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_length() {
        let r = Record {
            mode: mode::S_IFREG | 0o644,
            size: 1 << 40,
            file_id: 0xdead_beef,
            ctime: -5,
            mtime: 1_700_000_000_000_000_000,
            atime: 3,
            nlink: 1,
            uid: 1000,
            gid: 100,
            flags: 0,
        };
        let b = r.to_bytes();
        assert_eq!(b.len(), Record::ENCODED_LEN);
        assert_eq!(Record::from_bytes(&b).unwrap(), r);
        assert!(r.is_file() && !r.is_dir());
        let mut bad = b.clone();
        bad[0] = 9;
        assert_eq!(Record::from_bytes(&bad), Err(DecodeError::Version(9)));
        assert!(Record::from_bytes(&b[..10]).is_err());
    }
}
