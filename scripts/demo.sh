#!/usr/bin/env bash
# The main job on one machine: build, then `gkfs-run run` starts 2 daemons, runs an
# unmodified job script on them through the preload library (files go in with cp,
# come out with cp, and are compared), stops them; then a quick benchmark. No Slurm.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(libfabric-dev libfabric-bin libclang-dev clang pkg-config python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"
  else
    echo "demo: missing Debian packages: ${missing[*]}" >&2
    echo "demo: install them (sudo apt-get install ${missing[*]}) or run this script as root" >&2
    exit 1
  fi
fi

cargo build --release --workspace
T="${CARGO_TARGET_DIR:-target}/release"
out=$(mktemp -d)
root=$(mktemp -d /dev/shm/gkfs-demo.XXXXXX 2>/dev/null || mktemp -d)
echo "== gkfs-run run --local 2 -- scripts/demo-job.sh proto $out"
"$T/gkfs-run" run --local 2 --rootdir "$root" --mountdir /tmp/gkfs -- scripts/demo-job.sh proto "$out"
ls "$out"
rm -rf "$out" "$root"
echo "== quick benchmark through the client API (its own daemons, under /dev/shm)"
TMPDIR=/dev/shm "$T/gkfs-bench" --quick
