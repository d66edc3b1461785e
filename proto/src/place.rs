//! Placement: which daemon owns a path's metadata and which owns a chunk.
//!
//! Both functions are a stable, documented computation that any tool can repeat:
//!
//! 1. hash the key with **XXH64** (xxHash, 64-bit) and the fixed seed
//!    [`PLACEMENT_SEED`] = `0x676b_6673` (ASCII "gkfs");
//! 2. map the 64-bit hash onto `n` daemons with **jump consistent hashing**
//!    (Lamping and Veach, 2014), see [`jump`].
//!
//! The keys are:
//! - `place(path, n)`: the UTF-8 bytes of the absolute path inside the file system
//!   (`"/a/b"`, no trailing slash; the root is `"/"`);
//! - `place_chunk(file_id, chunk, n)`: 16 bytes, `file_id` then `chunk`, each as a
//!   little-endian `u64`.
//!
//! Daemons are numbered by their order in the hosts file, from 0.
//!
//! Test vectors (n = 4 daemons unless stated):
//!
//! | call | hash | daemon |
//! |---|---|---|
//! | `xxh64("", seed 0)` | `0xef46db3751d8e999` | |
//! | `place("/", 4)` | `0xd6ed975004a4a62d` | 2 |
//! | `place("/a", 4)` | `0x2dd3f9b69193e7ea` | 2 |
//! | `place("/dir/file.txt", 4)` | `0xae848dbd4a62e5fb` | 3 |
//! | `place_chunk(1, 0, 4)` | `0xe01f40af7f4d1504` | 0 |
//! | `place_chunk(0x0001_0000_0000_002a, 7, 4)` | `0x71e9d05bc639a8a9` | 2 |
//!
//! (The table is checked by this module's tests.)

use xxhash_rust::xxh64::xxh64;

/// The fixed seed of the placement hash: ASCII "gkfs".
pub const PLACEMENT_SEED: u64 = 0x676b_6673;

/// Jump consistent hash: maps `key` to a bucket in `0..buckets` so that growing the
/// number of buckets moves only `1/buckets` of the keys. `buckets == 0` yields 0.
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The placement hash of a path.
pub fn path_hash(path: &str) -> u64 {
    xxh64(path.as_bytes(), PLACEMENT_SEED)
}

/// The placement hash of chunk `chunk` of file `file_id`.
pub fn chunk_hash(file_id: u64, chunk: u64) -> u64 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&file_id.to_le_bytes());
    key[8..].copy_from_slice(&chunk.to_le_bytes());
    xxh64(&key, PLACEMENT_SEED)
}

/// The daemon (index into the hosts file) that owns the metadata of `path`.
pub fn place(path: &str, daemons: u32) -> u32 {
    jump(path_hash(path), daemons)
}

/// The daemon that stores chunk `chunk` of file `file_id`.
pub fn place_chunk(file_id: u64, chunk: u64, daemons: u32) -> u32 {
    jump(chunk_hash(file_id, chunk), daemons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_is_the_named_hash() {
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
    }

    #[test]
    fn vectors() {
        let v = [
            (path_hash("/"), place("/", 4)),
            (path_hash("/a"), place("/a", 4)),
            (path_hash("/dir/file.txt"), place("/dir/file.txt", 4)),
            (chunk_hash(1, 0), place_chunk(1, 0, 4)),
            (
                chunk_hash(0x0001_0000_0000_002a, 7),
                place_chunk(0x0001_0000_0000_002a, 7, 4),
            ),
        ];
        for (h, d) in v {
            println!("{h:#018x} {d}");
        }
        assert_eq!(v[0], (0xd6ed_9750_04a4_a62d, 2));
        assert_eq!(v[1], (0x2dd3_f9b6_9193_e7ea, 2));
        assert_eq!(v[2], (0xae84_8dbd_4a62_e5fb, 3));
        assert_eq!(v[3], (0xe01f_40af_7f4d_1504, 0));
        assert_eq!(v[4], (0x71e9_d05b_c639_a8a9, 2));
    }

    #[test]
    fn jump_properties() {
        assert_eq!(jump(12345, 0), 0);
        assert_eq!(jump(12345, 1), 0);
        // Balanced and monotone: growing from 4 to 5 buckets moves keys only to bucket 4.
        let mut counts = [0u32; 4];
        for k in 0..40_000u64 {
            let h = xxh64(&k.to_le_bytes(), 1);
            let a = jump(h, 4);
            let b = jump(h, 5);
            assert!(a == b || b == 4);
            counts[a as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
