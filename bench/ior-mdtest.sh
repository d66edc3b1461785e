#!/usr/bin/env bash
# IOR easy, IOR hard and mdtest easy (IOR 4.0.0, Open MPI) across the 3-node test
# cluster, one process per node (`srun -N3 --mpi=pmix --gkfs`), next to the same on
# /dev/shm (the machine's one tmpfs, which every node sees); markdown table of medians
# (min-max).
#   IOR easy:    a file per process, 1 MiB transfers, 128 MiB each, write then read;
#   IOR hard:    one shared file, 47 008-byte transfers interleaved between the
#                processes, 2 000 each;
#   mdtest easy: 5 000 empty files per process in a directory of its own: create, stat,
#                remove.
# Usage: sudo bench/ior-mdtest.sh [RUNS] (default 3). Root: brings up
# tests/slurm/cluster.sh. Installs Open MPI and PMIx (Debian) and, once, builds IOR
# 4.0.0 into /opt/ior from github.com/hpc/ior (GKFS_GIT_MIRROR=DIR: from
# DIR/hpc+ior/repo instead), as Debian 12 packages neither IOR nor mdtest.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
IOR=/opt/ior
D=/var/tmp/gkfs-ior-bench
DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenmpi-dev openmpi-bin libpmix-dev \
  autoconf automake make >/dev/null
if [ ! -x $IOR/bin/ior ] || [ ! -x $IOR/bin/mdtest ]; then
  src=$(mktemp -d)
  url=https://github.com/hpc/ior
  [ -n "${GKFS_GIT_MIRROR:-}" ] && url=$GKFS_GIT_MIRROR/hpc+ior/repo
  git clone -q "$url" "$src"
  (cd "$src" && git -c advice.detachedHead=false checkout -q 4.0.0 && ./bootstrap &&
    ./configure -q --prefix=$IOR MPICC=mpicc && make -j"$(nproc)" && make install) \
    >"$src.log" 2>&1 || { tail -20 "$src.log"; echo "ior-mdtest.sh: building IOR failed" >&2; exit 1; }
  rm -rf "$src" "$src.log"
fi
. bench/test-cluster.sh
mkdir -p "$D/work" && cd "$D/work"
: > results.txt
# phase RUN WHERE NAME CMD: runs CMD (an IOR or mdtest command line) on the 3 nodes and
# appends "RUN WHERE NAME op rate" lines (MB/s for IOR, ops/s for mdtest): the best of
# the command's 3 iterations (IOR's and mdtest's "max"; a process's first iteration on
# gkfs also loads libfabric, ~0.3 s, measured on its own by bench/first-op.sh).
phase() {
  local run=$1 where=$2 name=$3 cmd=$4 gkfs=()
  [ "$where" = gkfs ] && gkfs=(--gkfs)
  local out
  out=$(srun -N3 --mpi=pmix "${gkfs[@]}" sh -c "$cmd" 2>&1) || {
    echo "$out" | tail -20 >&2
    echo "ior-mdtest.sh: $name on $where failed: $cmd" >&2
    exit 1
  }
  case $name in
    ior-*)
      # IOR's summary lines: "write|read  max(MiB/s) min mean ...".
      echo "$out" | awk -v p="$run $where $name" \
        '$1 ~ /^(write|read)$/ && NF > 20 { printf "%s %s %.1f\n", p, $1, $2 * 1.048576 }' ;;
    mdtest)
      echo "$out" | awk -v p="$run $where $name" \
        '/File (creation|stat|removal)/ { printf "%s %s %s\n", p, $2, $3 }' ;;
  esac >> results.txt
}
raw=/dev/shm/gkfs-ior-raw
trap 'rm -rf $raw; "$CLUSTER" down $D >/dev/null 2>&1; rm -rf $D' EXIT
for run in $(seq "$RUNS"); do
  for where in gkfs raw; do
    if [ "$where" = gkfs ]; then
      # (Each srun --gkfs job has a fresh file system: node 0 makes the directories.)
      d=/tmp/gkfs/ior
      pre="if [ \$SLURM_NODEID = 0 ]; then mkdir -p $d/md; else sleep 0.5; fi;"
    else
      d=$raw
      rm -rf $raw && mkdir -p $raw/md
      pre=""
    fi
    phase "$run" $where ior-easy "$pre $IOR/bin/ior -a POSIX -i 3 -F -t 1m -b 128m -w -r -e -o $d/easy"
    phase "$run" $where ior-hard "$pre $IOR/bin/ior -a POSIX -i 3 -t 47008 -b 47008 -s 2000 -w -r -e -o $d/hard"
    phase "$run" $where mdtest "$pre $IOR/bin/mdtest -i 3 -F -n 5000 -u -d $d/md"
  done
  echo "ior-mdtest.sh: run $run of $RUNS done" >&2
done
python3 - "$RUNS" <<'PY'
import collections, statistics, sys
runs = int(sys.argv[1])
rate = collections.defaultdict(list)
for line in open("results.txt"):
    run, where, name, op, v = line.split()
    rate[(f"{name} {op}", where)].append(float(v))
rows = ["ior-easy write", "ior-easy read", "ior-hard write", "ior-hard read",
        "mdtest creation", "mdtest stat", "mdtest removal"]
def fmt(v, unit):
    return f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f}) {unit}".replace(",", " ")
print(f"IOR 4.0.0 / mdtest, 3 nodes, one process each; medians of {runs} runs (min-max); "
      "raw = /dev/shm, shared by the nodes")
print()
print("| pattern | gkfs (3 daemons) | raw /dev/shm | gkfs/raw |")
print("|---|---:|---:|---:|")
for n in rows:
    g, r = rate.get((n, "gkfs"), []), rate.get((n, "raw"), [])
    unit = "ops/s" if n.startswith("mdtest") else "MB/s"
    if g and r:
        print(f"| {n} | {fmt(g, unit)} | {fmt(r, unit)} | {statistics.median(g) / statistics.median(r):.2f} |")
    else:
        print(f"| {n} | missing | missing | |")
PY
