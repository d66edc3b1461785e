//! The chunk store: chunk `k` of file `id` is the file `<root>/<id as 16 hex>/<k>`
//! ([`gkfs_proto::chunk::chunk_file`]). A missing chunk file, or bytes past its end,
//! read as a hole (zeros). Processes on this node read chunk files directly too (see
//! `gkfs_client`'s `direct.rs`): so a chunk's bytes only ever change in place (a write,
//! or a cut of the boundary chunk) or by removing the file, never by replacing it;
//! and each removal moves the [`Cut::Chunks`] counter those processes watch
//! ([`gkfs_fabric::cuts`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gkfs_fabric::bulk::PieceData;
use gkfs_fabric::chunk_file::{FileMap, HeldMap, MAP_MIN};

use gkfs_fabric::cuts::{Cut, Cuts, Cutting};

use super::space::Space;
use super::uncut::{Sending, Uncut};

/// Chunk files kept open at most (the cache is emptied when it fills).
const OPEN_CHUNKS: usize = 256;

/// Chunk files of every file that has data on this daemon.
pub struct ChunkStore {
    root: PathBuf,
    chunk_size: u64,
    /// Free space of the chunk dir's file system, with the metadata's reserve.
    space: Space,
    /// Open chunk files (read-write), so small I/O does not pay open and close each time.
    open: PerChunk<File>,
    /// Chunk files mapped to send large pieces from ([`FileSends::held`]), kept so a
    /// chunk read again does not pay the mapping and its page faults again.
    maps: PerChunk<FileMap>,
    /// The cut counters node-local clients map ([`CUTS_FILE`] in the chunk dir). None
    /// where they cannot be made (a file system without shared mappings, say): then
    /// clients move this daemon's data through it.
    cuts: Option<Cuts>,
    /// Held by a file's sends from its mappings ([`ChunkStore::sends`]) and by its
    /// cuts, which wait for each other (a mapped byte past a file's end raises SIGBUS).
    uncut: Uncut,
}

/// What the store keeps per chunk (open files, mappings): at most [`OPEN_CHUNKS`]
/// (emptied when it fills), each forgotten before its file's chunks are cut or removed.
struct PerChunk<T>(Mutex<HashMap<(u64, u64), Arc<T>>>);

impl<T> Default for PerChunk<T> {
    fn default() -> Self {
        PerChunk(Mutex::new(HashMap::new()))
    }
}

impl<T> PerChunk<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Arc<T>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: u64, chunk: u64) -> Option<Arc<T>> {
        self.lock().get(&(id, chunk)).cloned()
    }

    fn keep(&self, id: u64, chunk: u64, v: T) -> Arc<T> {
        let v = Arc::new(v);
        let mut kept = self.lock();
        if kept.len() >= OPEN_CHUNKS {
            kept.clear();
        }
        kept.insert((id, chunk), v.clone());
        v
    }

    fn forget(&self, id: u64) {
        self.lock().retain(|(i, _), _| *i != id);
    }
}

/// Sends of one file's chunks ([`ChunkStore::sends`]): the file is not cut while this
/// lives, so a mapping of its chunk files stays inside them.
pub struct FileSends<'a> {
    store: &'a ChunkStore,
    id: u64,
    _uncut: Sending<'a>,
}

impl FileSends<'_> {
    /// What `len` bytes from `offset` of chunk `chunk` hold, to send them
    /// ([`gkfs_fabric::bulk::Sender::push`]): a hole when the chunk file is missing;
    /// for a large piece, the chunk file mapped when it can be ([`FileMap::new`]);
    /// else the file itself.
    pub fn held(&self, chunk: u64, offset: u64, len: u64) -> io::Result<PieceData> {
        let (cs, id) = (self.store, self.id);
        cs.check(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        let Some(f) = cs.chunk_file(id, chunk, false)? else {
            return Ok(PieceData::Hole);
        };
        if len < MAP_MIN as u64 {
            return Ok(PieceData::File(f, offset));
        }
        // (Both fit in usize: check() bounded them by the chunk size.)
        let (start, len) = (offset as usize, len as usize);
        // A mapping kept from before that covers the piece needs no look at the file:
        // the file is at least that long (a cut drops its mappings, and none runs now)
        // and has storage there (it had when mapped; nothing makes holes inside a file).
        if let Some(m) = cs.maps.get(id, chunk).filter(|m| m.len() >= start + len) {
            return Ok(
                HeldMap::new(m, start, len).map_or(PieceData::File(f, offset), PieceData::Mapped)
            );
        }
        let meta = f.metadata()?;
        let held = (meta.len().saturating_sub(offset) as usize).min(len);
        if held < MAP_MIN {
            return Ok(PieceData::File(f, offset));
        }
        let map = match cs.maps.get(id, chunk).filter(|m| m.len() >= start + held) {
            Some(m) => m,
            // Mapped anew (to the file's end) when it grew past the last mapping.
            None => match FileMap::new(&f, &meta) {
                Some(m) => cs.maps.keep(id, chunk, m),
                None => return Ok(PieceData::File(f, offset)),
            },
        };
        Ok(HeldMap::new(map, start, held).map_or(PieceData::File(f, offset), PieceData::Mapped))
    }
}

/// The cut counters' file in the chunk dir (chunk files live in 16-hex-digit
/// directories beside it).
pub const CUTS_FILE: &str = "cuts";

/// Counts of what the store holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChunkStats {
    /// Chunk files.
    pub chunks: u64,
    /// Bytes in chunk files.
    pub bytes: u64,
}

impl ChunkStore {
    /// Uses `root` (created if missing) for chunks of `chunk_size` bytes, keeping
    /// `reserve` bytes of its file system free (writes that would take them get
    /// ENOSPC; see [`Space`]).
    pub fn open(root: &Path, chunk_size: u64, reserve: u64) -> io::Result<ChunkStore> {
        fs::create_dir_all(root)?;
        let cuts_file = root.join(CUTS_FILE);
        let cuts = Cuts::create(&cuts_file)
            .map_err(|e| {
                log::warn!(
                    "cannot make the cut counters {}: {e}; processes on this node will move their data through this daemon",
                    cuts_file.display()
                )
            })
            .ok();
        Ok(ChunkStore {
            cuts,
            space: Space::new(root, reserve)?,
            root: root.to_path_buf(),
            chunk_size,
            open: PerChunk::default(),
            maps: PerChunk::default(),
            uncut: Uncut::default(),
        })
    }

    /// Forgets the open and mapped chunk files of `id` (before they are removed or
    /// cut).
    fn forget(&self, id: u64) {
        self.open.forget(id);
        self.maps.forget(id);
    }

    /// The chunk file, opened read-write; created (with its directory) if `create`.
    fn chunk_file(&self, id: u64, chunk: u64, create: bool) -> io::Result<Option<Arc<File>>> {
        if let Some(f) = self.open.get(id, chunk) {
            return Ok(Some(f));
        }
        let Some(f) = gkfs_fabric::chunk_file::open(&self.root, id, chunk, create)? else {
            return Ok(None);
        };
        Ok(Some(self.open.keep(id, chunk, f)))
    }

    fn file_dir(&self, id: u64) -> PathBuf {
        self.root.join(gkfs_proto::chunk::file_dir(id))
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        if offset.saturating_add(len as u64) > self.chunk_size {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "piece crosses the chunk end",
            ));
        }
        Ok(())
    }

    /// Writes `data` at `offset` inside chunk `chunk` of file `id`. ENOSPC when it
    /// would take the reserve, unless it only overwrites bytes the chunk already has,
    /// or was given storage for ([`ChunkStore::allocate`]: the chunk file has at least
    /// as many bytes of storage as the write's end).
    pub fn write(&self, id: u64, chunk: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        let room = self.space.admit_data(data.len() as u64);
        if room.is_err() {
            let end = offset + data.len() as u64;
            let inside = self.chunk_file(id, chunk, false)?.is_some_and(|f| {
                f.metadata()
                    .is_ok_and(|m| m.len() >= end || m.blocks().saturating_mul(512) >= end)
            });
            if !inside {
                return room;
            }
        }
        let f = self
            .chunk_file(id, chunk, true)?
            .ok_or_else(|| io::Error::from(ErrorKind::NotFound))?;
        f.write_all_at(data, offset)
    }

    /// Gives storage to bytes `offset..offset + len` of chunk `chunk` of file `id`
    /// (the chunk file made if missing) without changing what it holds: its length
    /// stays (`FALLOC_FL_KEEP_SIZE`), so what lies past it still reads as a hole.
    /// ENOSPC when it would take the reserve.
    pub fn allocate(&self, id: u64, chunk: u64, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len as usize)?;
        self.space.admit_data(len)?;
        let f = self
            .chunk_file(id, chunk, true)?
            .ok_or_else(|| io::Error::from(ErrorKind::NotFound))?;
        gkfs_fabric::chunk_file::allocate(&f, offset, len)
    }

    /// The directory the chunk files live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The chunk dir's free space, for statfs and for admitting new records when the
    /// metadata shares its file system.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Moves cut counter `cut` now and when the guard is dropped: a handler that
    /// removes chunk files or cuts or replaces a record holds it while it does.
    pub fn cutting(&self, cut: Cut) -> Option<Cutting<'_>> {
        self.cuts.as_ref().map(|c| c.cutting(cut))
    }

    /// Does this store keep cut counters (so clients may use its chunk files)?
    pub fn has_cuts(&self) -> bool {
        self.cuts.is_some()
    }

    /// Reads into `buf` from `offset` of a chunk; returns the bytes present (the rest
    /// of `buf` is zeroed: a hole).
    pub fn read(&self, id: u64, chunk: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.check(offset, buf.len())?;
        let Some(f) = self.chunk_file(id, chunk, false)? else {
            buf.fill(0);
            return Ok(0);
        };
        gkfs_fabric::chunk_file::read_held(&f, offset, buf)
    }

    /// Keeps the chunk files of `id` from being cut short while the returned sends
    /// live, so their pieces may be sent from mappings of their page cache
    /// ([`FileSends::held`]).
    pub fn sends(&self, id: u64) -> FileSends<'_> {
        FileSends {
            store: self,
            id,
            _uncut: self.uncut.sending(id),
        }
    }

    /// Cuts file `id` to `size` bytes: removes whole chunks past it and shortens the
    /// boundary chunk.
    pub fn truncate(&self, id: u64, size: u64) -> io::Result<()> {
        let _cut = self.cutting(Cut::Chunks);
        // Nothing sends the file's bytes from mappings while it is cut, nor maps them
        // again before the cut is over: a mapping made before reaches past the new end.
        let _uncut = self.uncut.cutting(id);
        self.forget(id);
        let dir = self.file_dir(id);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let keep_whole = size / self.chunk_size;
        let cut = size % self.chunk_size;
        for entry in entries {
            let entry = entry?;
            let Some(k) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if k > keep_whole || (k == keep_whole && cut == 0) {
                fs::remove_file(entry.path())?;
            } else if k == keep_whole {
                let f = OpenOptions::new().write(true).open(entry.path())?;
                if f.metadata()?.len() > cut {
                    f.set_len(cut)?;
                }
            }
        }
        if fs::read_dir(&dir)?.next().is_none() {
            let _ = fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Removes every chunk of file `id`.
    pub fn remove(&self, id: u64) -> io::Result<()> {
        let _cut = self.cutting(Cut::Chunks);
        self.forget(id);
        match fs::remove_dir_all(self.file_dir(id)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Counts chunk files and their bytes.
    pub fn stats(&self) -> ChunkStats {
        let mut s = ChunkStats::default();
        let Ok(dirs) = fs::read_dir(&self.root) else {
            return s;
        };
        for d in dirs.flatten() {
            let Ok(files) = fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                s.chunks += 1;
                s.bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_dir_that_cannot_hold_the_cut_counters_still_serves() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(CUTS_FILE)).unwrap();
        let cs = ChunkStore::open(dir.path(), 4096, 0).unwrap();
        assert!(!cs.has_cuts());
        assert!(cs.cutting(Cut::Chunks).is_none());
        cs.write(1, 0, 0, b"x").unwrap();
        cs.truncate(1, 0).unwrap();
        cs.remove(1).unwrap();
    }

    #[test]
    fn an_allocated_chunk_has_storage_and_still_reads_as_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ChunkStore::open(dir.path(), 65536, 0).unwrap();
        cs.allocate(9, 1, 4096, 8192).unwrap();
        let p = dir.path().join(gkfs_proto::chunk::chunk_file(9, 1));
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 0, "the chunk holds nothing yet");
        assert!(
            m.blocks() * 512 >= 8192,
            "but has storage: {} blocks",
            m.blocks()
        );
        let mut buf = [7u8; 16];
        assert_eq!(cs.read(9, 1, 4096, &mut buf).unwrap(), 0);
        assert_eq!(buf, [0; 16]);
        // Past the chunk end is refused, as for a write.
        assert!(cs.allocate(9, 1, 65536 - 10, 20).is_err());
    }

    #[test]
    fn large_pieces_are_sent_from_a_mapping_that_a_cut_drops() {
        const CHUNK: u64 = 512 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let cs = ChunkStore::open(dir.path(), CHUNK, 0).unwrap();
        cs.write(3, 0, 0, &[5u8; CHUNK as usize]).unwrap();
        let mapped = |p: PieceData| match p {
            PieceData::Mapped(m) => Some(m.len()),
            _ => None,
        };
        let piece = || cs.sends(3).held(0, 4096, CHUNK - 4096).unwrap();
        assert_eq!(mapped(piece()), Some(CHUNK as usize - 4096));
        assert!(
            matches!(cs.sends(3).held(0, 0, 4096).unwrap(), PieceData::File(..)),
            "short"
        );
        assert!(matches!(
            cs.sends(3).held(1, 0, CHUNK).unwrap(),
            PieceData::Hole
        ));
        // Cut: the next piece is what the cut file holds, from a new mapping.
        cs.truncate(3, 200 * 1024).unwrap();
        assert_eq!(mapped(piece()), Some(200 * 1024 - 4096));
        assert_eq!(cs.maps.get(3, 0).unwrap().len(), 200 * 1024);
        // A chunk with a hole is read, not mapped (a mapped hole would take storage).
        cs.write(3, 0, CHUNK - 10, b"tail").unwrap();
        assert!(matches!(piece(), PieceData::File(..)));
        cs.remove(3).unwrap();
        assert!(cs.maps.lock().is_empty(), "a removed file's mappings go");
    }

    #[test]
    fn write_read_truncate_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ChunkStore::open(dir.path(), 4096, 0).unwrap();
        cs.write(7, 0, 10, b"hello").unwrap();
        cs.write(7, 2, 0, &[1u8; 4096]).unwrap();
        let mut buf = [9u8; 20];
        assert_eq!(cs.read(7, 0, 5, &mut buf).unwrap(), 10);
        assert_eq!(&buf[5..10], b"hello");
        assert!(buf[..5].iter().chain(&buf[10..]).all(|&b| b == 0));
        assert_eq!(cs.read(7, 1, 0, &mut buf).unwrap(), 0);
        assert!(cs.write(7, 0, 4090, &[0u8; 10]).is_err());
        assert_eq!(cs.stats().chunks, 2);
        cs.truncate(7, 4096 * 2 + 100).unwrap();
        assert_eq!(cs.stats().bytes, 15 + 100);
        cs.truncate(7, 12).unwrap();
        assert_eq!(cs.stats().bytes, 12);
        cs.remove(7).unwrap();
        assert_eq!(cs.stats().chunks, 0);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [CUTS_FILE], "nothing but the cut counters is left");
    }
}
