//! Storage below the handlers: RocksDB metadata and the chunk files.

pub mod chunks;
pub mod meta;
pub mod recent;
pub mod space;
pub mod uncut;
