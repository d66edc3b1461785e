#!/usr/bin/env bash
# The main job on one machine: build, start 2 daemons, copy a tree in and out through
# the client API, show the status, stop, then a quick benchmark. No Slurm needed.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(libfabric-dev libfabric-bin libclang-dev clang pkg-config)
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

cargo build --release --workspace --bins
T="${CARGO_TARGET_DIR:-target}/release"
root=$(mktemp -d /dev/shm/gkfs-demo.XXXXXX 2>/dev/null || mktemp -d)
echo "== starting 2 daemons (root dirs under $root)"
eval "$("$T/gkfs-run" start --local 2 --rootdir "$root")"
trap '"$T/gkfs-run" stop >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
echo "== copying proto/ into gkfs and back out"
out=$(mktemp -d)
"$T/gkfs-copy-demo" proto "$out/proto"
diff -r proto "$out/proto" && echo "== round trip identical (diff -r proto $out/proto)"
rm -rf "$out"
echo "== status"
"$T/gkfs-run" status
echo "== stopping"
"$T/gkfs-run" stop
trap - EXIT
rm -rf "$root"
echo "== quick benchmark through the client API (its own daemons, under /dev/shm)"
TMPDIR=/dev/shm "$T/gkfs-bench" --quick
