//! Parallel stage-in / stage-out between a parallel file system and gkfs.
//!
//! **Not implemented yet** (tracked by the stage issue): this crate is an empty
//! placeholder so the workspace has the layout of DESIGN.md. Nothing here pretends to
//! copy data; `gkfs-run` has no stage commands until it is built.
#![forbid(unsafe_code)]
