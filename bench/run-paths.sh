#!/usr/bin/env bash
# The preload-vs-FUSE table in one command: installs fio and fuse3 (Debian, as root),
# builds gkfs in release mode, runs bench/paths.py (options pass through, e.g. --quick).
# Results: bench/results/paths.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v fio >/dev/null || need+=(fio)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}"
  else
    echo "bench: missing ${need[*]}; install them (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
cargo build --release --workspace
exec /usr/bin/python3 bench/paths.py --bin "${CARGO_TARGET_DIR:-target}/release" "$@"
