//! Chunk arithmetic: how a byte range of a file maps onto fixed-size chunks.
//!
//! Chunk `k` of a file covers bytes `[k * size, (k + 1) * size)`. All functions are
//! pure and total: they never panic for any input (sizes of zero are rejected by
//! [`ChunkSize::new`]).

/// The default chunk size: 512 KiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 512 * 1024;

/// Where chunk `chunk` of file `id` lives, relative to a daemon's chunk directory:
/// `<id as 16 hex digits>/<chunk in decimal>`. The daemon stores chunks there, and a
/// process on its node reads them there directly ([`crate::msg::ChunkDirReq`]); a
/// missing file, or bytes past its end, are a hole.
pub fn chunk_file(id: u64, chunk: u64) -> String {
    format!("{}/{chunk}", file_dir(id))
}

/// The directory of file `id`'s chunks, relative to the chunk directory.
pub fn file_dir(id: u64) -> String {
    format!("{id:016x}")
}

/// A validated chunk size (a power of two between 4 KiB and 1 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSize(u64);

impl ChunkSize {
    /// Validates `bytes`: a power of two from 4 KiB to 1 GiB.
    pub fn new(bytes: u64) -> Option<Self> {
        ((4096..=(1 << 30)).contains(&bytes) && bytes.is_power_of_two()).then_some(ChunkSize(bytes))
    }

    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The chunk holding byte `offset`.
    pub fn chunk_of(self, offset: u64) -> u64 {
        offset / self.0
    }

    /// Offset of `offset` inside its chunk.
    pub fn offset_in_chunk(self, offset: u64) -> u64 {
        offset % self.0
    }

    /// Number of chunks needed to hold a file of `size` bytes.
    pub fn chunks_for_size(self, size: u64) -> u64 {
        size.div_ceil(self.0)
    }

    /// Splits the byte range `[offset, offset + len)` into per-chunk pieces.
    pub fn split(self, offset: u64, len: u64) -> ChunkPieces {
        ChunkPieces {
            size: self.0,
            pos: offset,
            end: offset.saturating_add(len),
            start: offset,
        }
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        ChunkSize(DEFAULT_CHUNK_SIZE)
    }
}

/// One chunk's share of a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Chunk index.
    pub chunk: u64,
    /// Offset inside the chunk.
    pub chunk_offset: u64,
    /// Bytes in this piece.
    pub len: u64,
    /// Offset of this piece from the start of the whole range (into the user buffer).
    pub buf_offset: u64,
}

/// Iterator over the [`Piece`]s of a range; see [`ChunkSize::split`].
#[derive(Debug, Clone)]
pub struct ChunkPieces {
    size: u64,
    pos: u64,
    end: u64,
    start: u64,
}

impl Iterator for ChunkPieces {
    type Item = Piece;
    fn next(&mut self) -> Option<Piece> {
        if self.pos >= self.end {
            return None;
        }
        let chunk = self.pos / self.size;
        let chunk_offset = self.pos % self.size;
        let len = (self.size - chunk_offset).min(self.end - self.pos);
        let piece = Piece {
            chunk,
            chunk_offset,
            len,
            buf_offset: self.pos - self.start,
        };
        self.pos += len;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(ChunkSize::new(0).is_none());
        assert!(ChunkSize::new(4095).is_none());
        assert!(ChunkSize::new(3 * 4096).is_none());
        assert_eq!(ChunkSize::new(4096).unwrap().get(), 4096);
        assert!(ChunkSize::new(2 << 30).is_none());
    }

    #[test]
    fn split_covers_range_exactly() {
        let cs = ChunkSize::new(4096).unwrap();
        for &(off, len) in &[
            (0u64, 0u64),
            (0, 1),
            (4095, 2),
            (4096, 4096),
            (100, 20000),
            (8191, 1),
        ] {
            let pieces: Vec<_> = cs.split(off, len).collect();
            let total: u64 = pieces.iter().map(|p| p.len).sum();
            assert_eq!(total, len);
            let mut expect = 0;
            for p in &pieces {
                assert_eq!(p.buf_offset, expect);
                assert!(p.chunk_offset + p.len <= 4096);
                assert_eq!(p.chunk * 4096 + p.chunk_offset, off + p.buf_offset);
                expect += p.len;
            }
        }
        assert_eq!(cs.split(4095, 2).count(), 2);
        assert_eq!(cs.chunks_for_size(0), 0);
        assert_eq!(cs.chunks_for_size(4097), 2);
        // Never overflows near u64::MAX.
        assert!(cs.split(u64::MAX - 10, 100).all(|p| p.len <= 4096));
    }
}
