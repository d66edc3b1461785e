#!/usr/bin/env bash
# The benchmark harness in one command: installs fio, matplotlib and fuse3 (Debian, as
# root), builds gkfs in release mode, and runs bench/harness.py (options pass through,
# e.g. --quick). Results: bench/results/{results.json,results.md,sweep.png}.
#   bench/run.sh paths [--quick]   # the preload-vs-FUSE table instead (bench/paths.py):
#                                  # bench/results/paths.{json,md}
#   bench/run.sh vs-gekkofs [--quick]  # gkfs next to GekkoFS (bench/vs_gekkofs.py; build
#                                  # GekkoFS first: bench/gekkofs-build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v fio >/dev/null || need+=(fio)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
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
script=bench/harness.py
case "${1:-}" in
  paths) script=bench/paths.py; shift ;;
  vs-gekkofs) script=bench/vs_gekkofs.py; shift ;;
esac
exec /usr/bin/python3 "$script" --bin "${CARGO_TARGET_DIR:-target}/release" "$@"
