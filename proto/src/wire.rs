//! The binary encoding every message uses: little-endian integers, length-prefixed
//! strings and byte vectors, with hard upper bounds checked while decoding.
//!
//! Decoding never panics: every read checks the bytes that remain and returns a
//! [`DecodeError`] when the input is truncated, oversized or malformed.

use thiserror::Error;

/// Longest path accepted anywhere in the protocol (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Longest byte vector accepted in one message (inline data, readdir pages): the
/// largest chunk (1 GiB) plus headroom, as a node-local message may carry a whole chunk.
/// Decoding never allocates more than the received buffer holds.
pub const MAX_BYTES: usize = (1 << 30) + (2 << 20);
/// Most elements accepted in one encoded list.
pub const MAX_ITEMS: usize = 1 << 16;

/// Why a buffer could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ended before the value did.
    #[error("message truncated: needed {needed} more bytes for {what}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A length field is larger than the protocol allows.
    #[error("{what} too long: {len} > {max}")]
    TooLong {
        /// What was being decoded.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message carries a protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// The opcode is not known to this build.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes were left over after the message ended.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// A cursor over bytes being decoded.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf` from its first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                what,
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

/// A value with a binary encoding.
pub trait Wire: Sized {
    /// Appends the encoding of `self` to `out`.
    fn put(&self, out: &mut Vec<u8>);
    /// Decodes one value from `r`.
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(r.array(stringify!($t))?))
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64, i32, i64);

impl Wire for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::get(r)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("bool")),
        }
    }
}

fn get_len(r: &mut Reader<'_>, what: &'static str, max: usize) -> Result<usize, DecodeError> {
    let len = u32::get(r)? as usize;
    if len > max {
        return Err(DecodeError::TooLong { what, len, max });
    }
    Ok(len)
}

impl Wire for String {
    fn put(&self, out: &mut Vec<u8>) {
        (self.len() as u32).put(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = get_len(r, "string", MAX_PATH)?;
        let bytes = r.take(len, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid("utf-8 string"))
    }
}

/// An opaque byte payload (inline data, addresses).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Wire for Bytes {
    fn put(&self, out: &mut Vec<u8>) {
        (self.0.len() as u32).put(out);
        out.extend_from_slice(&self.0);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = get_len(r, "bytes", MAX_BYTES)?;
        Ok(Bytes(r.take(len, "bytes")?.to_vec()))
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        (self.len() as u32).put(out);
        for item in self {
            item.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = get_len(r, "list", MAX_ITEMS)?;
        // Every element takes at least one byte: a length beyond the buffer is a lie.
        if len > r.remaining() {
            return Err(DecodeError::Truncated {
                what: "list",
                needed: len - r.remaining(),
            });
        }
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            v.push(T::get(r)?);
        }
        Ok(v)
    }
}

impl<T: Wire> Wire for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match u8::get(r)? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r)?)),
            _ => Err(DecodeError::Invalid("option tag")),
        }
    }
}

/// Declares a struct whose fields are encoded in order.
#[macro_export]
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::wire::Wire for $name {
            #[allow(unused_variables)]
            fn put(&self, out: &mut Vec<u8>) {
                $($crate::wire::Wire::put(&self.$f, out);)*
            }
            #[allow(unused_variables)]
            fn get(r: &mut $crate::wire::Reader<'_>) -> Result<Self, $crate::wire::DecodeError> {
                Ok($name { $($f: <$t as $crate::wire::Wire>::get(r)?),* })
            }
        }
    };
}

/// Encodes a value into a fresh buffer.
pub fn encode<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.put(&mut out);
    out
}

/// Decodes a value that must fill `buf` exactly.
pub fn decode<T: Wire>(buf: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(buf);
    let v = T::get(&mut r)?;
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let v: Vec<String> = vec!["a".into(), "/b/c".into(), String::new()];
        assert_eq!(decode::<Vec<String>>(&encode(&v)).unwrap(), v);
        let o: Option<u64> = Some(7);
        assert_eq!(decode::<Option<u64>>(&encode(&o)).unwrap(), o);
        assert_eq!(decode::<bool>(&[2]), Err(DecodeError::Invalid("bool")));
    }

    #[test]
    fn lies_about_length_are_errors() {
        // A list claiming 2^16 elements in a 4-byte buffer.
        let buf = (MAX_ITEMS as u32).to_le_bytes();
        assert!(decode::<Vec<u64>>(&buf).is_err());
        let buf = (u32::MAX).to_le_bytes();
        assert!(matches!(
            decode::<String>(&buf),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            decode::<u64>(&[1, 2]),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(decode::<u8>(&[1, 2]), Err(DecodeError::Trailing(1)));
    }
}
