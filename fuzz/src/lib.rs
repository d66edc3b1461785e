//! Fuzzers for every decoder of gkfs that a peer can reach: request and reply messages
//! (every message type of the `rpcs!` table), node-local frames, the channel handshake,
//! the hosts file, the metadata record and the stage manifest.
//!
//! Two engines drive the same targets ([`targets`]): the structured mutation loop of
//! [`engine`] (seeded with valid encodings, not coverage-guided; `gkfs-fuzz run`), and
//! AFL++ through cargo-afl (coverage-guided; the harness in `fuzz/afl/`).
//! `scripts/fuzz.sh` runs both; see `fuzz/README.md`.

pub mod arb;
pub mod engine;
pub mod mutate;
pub mod rng;
pub mod targets;
