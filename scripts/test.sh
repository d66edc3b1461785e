#!/usr/bin/env bash
# The test command: builds the workspace in release mode (tests do real I/O) and runs
# every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins
cargo test --release --workspace "$@"
