//! Structured byte mutations ("havoc"): bit flips, interesting integers, length fields
//! pushed past what follows, truncations, insertions, deletions, splices with other
//! inputs, dictionary tokens and line shuffles, stacked 1 to 16 deep.

use crate::rng::Rng;

/// Longest input the loop builds.
pub const MAX_INPUT: usize = 64 << 10;

/// Integers at the protocol's edges: limits of `wire` (`MAX_PATH` 4096, `MAX_ITEMS`
/// 65536, `MAX_BYTES`), the opcodes and version bytes, sign and width boundaries.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    17,
    18,
    32,
    64,
    100,
    127,
    128,
    255,
    256,
    1023,
    1024,
    1025,
    4095,
    4096,
    4097,
    32767,
    32768,
    65535,
    65536,
    65537,
    (1 << 30) + (2 << 20),
    (1 << 30) + (2 << 20) + 1,
    (16 << 20) + (2 << 20),
    (16 << 20) + (2 << 20) + 1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    1 << 32,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

fn interesting(r: &mut Rng) -> u64 {
    if r.one_in(8) {
        r.next_u64()
    } else {
        *r.pick(INTERESTING)
    }
}

fn put_le(buf: &mut [u8], at: usize, width: usize, v: u64) {
    let bytes = v.to_le_bytes();
    let n = width.min(buf.len() - at);
    buf[at..at + n].copy_from_slice(&bytes[..n]);
}

/// Positions of little-endian `u32`s that could be length prefixes: no larger than the
/// bytes after them.
fn length_fields(buf: &[u8]) -> Vec<usize> {
    (0..buf.len().saturating_sub(3))
        .filter(|&i| {
            let v = u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]) as usize;
            v <= buf.len() - i - 4
        })
        .collect()
}

/// Start offsets of the lines of a text.
fn lines(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < buf.len() {
        out.push((start, buf.len()));
    }
    out
}

/// Applies 1 to 16 random mutations to `buf`; `others` are inputs to splice from,
/// `dict` tokens to insert.
pub fn havoc(r: &mut Rng, buf: &mut Vec<u8>, others: &[Vec<u8>], dict: &[&[u8]]) {
    let rounds = 1 << r.below(5);
    for _ in 0..rounds {
        mutate_once(r, buf, others, dict);
        if buf.len() > MAX_INPUT {
            buf.truncate(MAX_INPUT);
        }
    }
}

fn mutate_once(r: &mut Rng, buf: &mut Vec<u8>, others: &[Vec<u8>], dict: &[&[u8]]) {
    let len = buf.len();
    match r.below(20) {
        // Bit flip.
        0 | 1 if len > 0 => {
            let i = r.below(len);
            buf[i] ^= 1 << r.below(8);
        }
        // Random byte.
        2 if len > 0 => {
            let i = r.below(len);
            buf[i] = r.next_u64() as u8;
        }
        // Small add/subtract.
        3 if len > 0 => {
            let i = r.below(len);
            let d = r.range(1, 35) as u8;
            buf[i] = if r.one_in(2) {
                buf[i].wrapping_add(d)
            } else {
                buf[i].wrapping_sub(d)
            };
        }
        // Interesting integer of width 1, 2, 4, 8 at any position.
        4 | 5 if len > 0 => {
            let at = r.below(len);
            let width = 1 << r.below(4);
            let v = interesting(r);
            put_le(buf, at, width, v);
        }
        // A plausible length field made to lie: one more or less, zero, past the end,
        // at a limit.
        6 | 7 => {
            let fields = length_fields(buf);
            if fields.is_empty() {
                return;
            }
            let at = *r.pick(&fields);
            let v = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let rest = (len - at - 4) as u32;
            let nv = match r.below(6) {
                0 => v.wrapping_add(1),
                1 => v.wrapping_sub(1),
                2 => 0,
                3 => rest + 1,
                4 => rest.wrapping_add(r.below(64) as u32),
                _ => interesting(r) as u32,
            };
            put_le(buf, at, 4, u64::from(nv));
        }
        // Truncation.
        8 | 9 if len > 0 => buf.truncate(r.below(len)),
        // Append random bytes or zeros.
        10 => {
            let n = r.range(1, 32);
            let zeros = r.one_in(2);
            buf.extend((0..n).map(|_| if zeros { 0 } else { r.next_u64() as u8 }));
        }
        // Delete a range.
        11 if len > 0 => {
            let a = r.below(len);
            let b = (a + r.range(1, 16.min(len - a))).min(len);
            buf.drain(a..b);
        }
        // Duplicate a range of itself somewhere.
        12 if len > 0 => {
            let a = r.below(len);
            let b = (a + r.range(1, 64)).min(len);
            let piece = buf[a..b].to_vec();
            let at = r.below(len + 1);
            buf.splice(at..at, piece);
        }
        // Splice: a prefix of this input and a suffix of another, or a piece of another
        // inserted.
        13 | 14 if !others.is_empty() => {
            let o = r.pick(others);
            if r.one_in(2) {
                let cut = r.below(len + 1);
                let from = r.below(o.len() + 1);
                buf.truncate(cut);
                buf.extend_from_slice(&o[from..]);
            } else if !o.is_empty() {
                let a = r.below(o.len());
                let b = (a + r.range(1, 256)).min(o.len());
                let at = r.below(len + 1);
                buf.splice(at..at, o[a..b].iter().copied());
            }
        }
        // Dictionary token inserted or written over.
        15 | 16 if !dict.is_empty() => {
            let tok = *r.pick(dict);
            let at = r.below(len + 1);
            if r.one_in(2) {
                buf.splice(at..at, tok.iter().copied());
            } else {
                let end = (at + tok.len()).min(len);
                buf.splice(at..end, tok.iter().copied());
            }
        }
        // Line shuffles (text inputs; on binary ones they cut at 0x0a bytes).
        17 => {
            let ls = lines(buf);
            if ls.is_empty() {
                return;
            }
            let (a, b) = *r.pick(&ls);
            match r.below(3) {
                0 => {
                    buf.drain(a..b);
                }
                1 => {
                    let line = buf[a..b].to_vec();
                    let (at, _) = *r.pick(&ls);
                    buf.splice(at..at, line);
                }
                _ => {
                    let (c, d) = *r.pick(&ls);
                    if c >= b {
                        let (x, y) = (buf[a..b].to_vec(), buf[c..d].to_vec());
                        buf.splice(c..d, x);
                        buf.splice(a..b, y);
                    }
                }
            }
        }
        // Nesting: wrap in brackets many levels deep (JSON); on others, a long run of
        // one byte.
        18 => {
            let depth = r.range(1, 300);
            let (open, close) = *r.pick(&[(b'[', b']'), (b'{', b'}'), (b'"', b'"')]);
            let at = r.below(len + 1);
            let mut piece = vec![open; depth];
            if r.one_in(2) {
                piece.extend(vec![close; depth]);
            }
            buf.splice(at..at, piece);
        }
        // Replace the whole input by another one (then the next rounds mutate that).
        19 if !others.is_empty() => {
            let o: &Vec<u8> = r.pick(others);
            buf.clear();
            buf.extend_from_slice(o);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn havoc_changes_inputs_and_respects_the_cap() {
        let mut r = Rng::new(1);
        let seeds = vec![vec![1u8, 2, 3, 4, 0, 0, 0, 0], b"a b\nc d\n".to_vec()];
        let mut changed = 0;
        for i in 0..10_000 {
            let mut b = seeds[i % 2].clone();
            havoc(&mut r, &mut b, &seeds, &[b"tok"]);
            assert!(b.len() <= MAX_INPUT);
            changed += usize::from(b != seeds[i % 2]);
        }
        assert!(changed > 9_000, "{changed}");
        assert_eq!(length_fields(&[2, 0, 0, 0, 9, 9]), vec![0]);
    }
}
