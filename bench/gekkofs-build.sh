#!/usr/bin/env bash
# Builds GekkoFS 0.9.2 and the dependencies Debian 12 does not package (Argobots,
# Mercury, Margo, syscall_intercept, date) into PREFIX, for `bench/run.sh vs-gekkofs` (bench/vs_gekkofs.py).
#
#   bench/gekkofs-build.sh [PREFIX]        # default /opt/gekkofs; ~4 min on 2 cores
#
# Sources are cloned from GitHub at the revisions GekkoFS 0.9.2 pins (its
# scripts/profiles/0.9.2/default.specs and submodules). GKFS_GIT_MIRROR=DIR takes
# them from local clones instead, DIR/<owner>+<name>/repo (a machine without internet).
# Mercury uses Debian's libfabric (1.17; GekkoFS 0.9.2 pins 1.13.2) and GekkoFS
# Debian's RocksDB (7.8.3; it pins 6.26.1). bench/gekkofs-ofi-tcp.patch lets it run over
# libfabric tcp (0.9.2 takes only ofi+sockets, verbs and psm2), the transport gkfs uses.
# Rerunning skips what is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${1:-/opt/gekkofs}"
src="$prefix/src"
jobs="$(nproc)"
mkdir -p "$src"

apt-get install -y -q cmake autoconf automake libtool pkg-config g++ git patch \
  libfabric-dev libcapstone-dev libjson-c-dev liblz4-dev librocksdb-dev \
  libsnappy-dev libzstd-dev libbz2-dev zlib1g-dev >/dev/null

# Clones owner/name at revision rev into $src/dir (once).
checkout() {
  local repo="$1" rev="$2" dir="$3" url
  if [ -n "${GKFS_GIT_MIRROR:-}" ]; then
    url="$GKFS_GIT_MIRROR/${repo/\//+}/repo"
  else
    url="https://github.com/$repo"
  fi
  if [ ! -d "$src/$dir/.git" ]; then
    rm -rf "${src:?}/$dir"
    git clone -q "$url" "$src/$dir"
  fi
  git -C "$src/$dir" -c advice.detachedHead=false checkout -q -f "$rev"
}

# Runs "$@" once for step $1 (a stamp file in $prefix records it), its output in
# $prefix/build.log (the end of it shown if it fails).
log="$prefix/build.log"
step() {
  local name="$1"
  shift
  if [ -e "$prefix/.built-$name" ]; then
    return
  fi
  echo "gekkofs-build: $name"
  if ! ("$@") >>"$log" 2>&1; then
    tail -30 "$log" >&2
    echo "gekkofs-build: $name failed (all of it in $log)" >&2
    exit 1
  fi
  touch "$prefix/.built-$name"
}

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export CMAKE_PREFIX_PATH="$prefix"

argobots() {
  checkout pmodels/argobots v1.1 argobots
  cd "$src/argobots" && ./autogen.sh
  mkdir -p build && cd build
  ../configure -q --prefix="$prefix" --enable-perf-opt --disable-checks
  make -j"$jobs" install
}

mercury() {
  checkout mercury-hpc/mercury v2.1.0 mercury
  # Its submodules: the Boost preprocessor headers and mchecksum.
  local m="$src/mercury" c
  c=$(git -C "$m" ls-tree HEAD src/boost | awk '{print $3}')
  checkout mercury-hpc/preprocessor "$c" mercury/src/boost
  c=$(git -C "$m" ls-tree HEAD src/mchecksum | awk '{print $3}')
  checkout mercury-hpc/mchecksum "$c" mercury/src/mchecksum
  cmake -S "$m" -B "$m/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DBUILD_SHARED_LIBS=ON -DBUILD_TESTING=OFF -DMERCURY_USE_CHECKSUMS=OFF \
    -DMERCURY_USE_BOOST_PP=ON -DNA_USE_OFI=ON -DNA_USE_SM=ON -DNA_USE_BMI=OFF
  cmake --build "$m/build" -j"$jobs"
  cmake --install "$m/build"
}

margo() {
  checkout mochi-hpc/mochi-margo v0.9.6 margo
  cd "$src/margo" && ./prepare.sh
  mkdir -p build && cd build
  ../configure -q --prefix="$prefix" CFLAGS="-O3"
  make -j"$jobs" install
}

syscall_intercept() {
  checkout GekkoFS/syscall_intercept 2c8765fa292bc9c28a22624c528580d54658813d syscall_intercept
  local s="$src/syscall_intercept" p
  for p in syscall_intercept.patch syscall_intercept_clone3.patch; do
    patch -d "$s" -p1 -s <"$src/gekkofs/scripts/patches/$p"
  done
  cmake -S "$s" -B "$s/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DBUILD_EXAMPLES=OFF -DBUILD_TESTS=OFF
  cmake --build "$s/build" -j"$jobs"
  cmake --install "$s/build"
}

date_lib() {
  checkout HowardHinnant/date e7e1482087f58913b80a20b04d5c58d9d6d90155 date
  cmake -S "$src/date" -B "$src/date/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_CXX_STANDARD=14 -DUSE_SYSTEM_TZ_DB=ON \
    -DBUILD_SHARED_LIBS=ON
  cmake --build "$src/date/build" -j"$jobs"
  cmake --install "$src/date/build"
}

gekkofs() {
  local g="$src/gekkofs" sub c
  # Its own submodules, at the commits it pins.
  for sub in bsc-ssrg/hermes:hermes gabime/spdlog:spdlog fmtlib/fmt:fmt CLIUtils/CLI11:CLI11; do
    c=$(git -C "$g" ls-tree HEAD "external/${sub#*:}" | awk '{print $3}')
    checkout "${sub%%:*}" "$c" "gekkofs/external/${sub#*:}"
  done
  patch -d "$g" -p1 -s <"$here/gekkofs-ofi-tcp.patch"
  cmake -S "$g" -B "$g/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DGKFS_BUILD_TESTS=OFF -DGKFS_ENABLE_CLIENT_LOG=ON
  cmake --build "$g/build" -j"$jobs"
  cmake --install "$g/build"
}

# GekkoFS first: syscall_intercept's patches come from it.
checkout admire-eurohpc/GekkoFS 0916c555 gekkofs
step argobots argobots
step mercury mercury
step margo margo
step syscall_intercept syscall_intercept
step date date_lib
step gekkofs gekkofs
echo "gekkofs-build: done: $prefix/bin/gkfs_daemon, $prefix/lib/libgkfs_intercept.so"
