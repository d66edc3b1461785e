#!/usr/bin/env bash
# The test command: builds the workspace in release mode (tests do real I/O) and runs
# every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds the binaries and the preload library (integration tests run them).
cargo build --release --workspace
cargo test --release --workspace "$@"
