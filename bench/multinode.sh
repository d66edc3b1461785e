#!/usr/bin/env bash
# IOR- and mdtest-style access patterns across the 3-node test cluster, one process per
# node, in one `srun -N3 --gkfs` job, next to the same on each node's own tmpfs /tmp
# (its node-local storage). Root; Debian's slurmctld, slurmd, munge, libslurm-dev, fio.
# IOR and mdtest are not packaged in Debian 12, so the patterns are made with dd, fio
# and gkfs-meta-load:
#   easy write/read: a file per process, 1 MiB sequential transfers (IOR easy);
#   hard write/read: one shared file, 47 008-byte transfers, process r writing
#                    transfers r, r+P, r+2P... (IOR hard; on the raw side each node
#                    does its share of the pattern in a file of its own);
#   md create/stat/remove: empty files, a directory per process (mdtest easy).
# Every phase starts together on all nodes (a barrier in a shared directory); a
# phase's rate is its total over the time from the first start to the last end (the
# nodes share this machine's clock). Usage: sudo bench/multinode.sh [RUNS] (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
D=/var/tmp/gkfs-multinode-bench
. bench/test-cluster.sh
command -v fio >/dev/null || { echo "multinode.sh: fio is needed (apt-get install fio)"; exit 1; }
mkdir -p "$D/work" && cd "$D/work"
cat > job.sh <<'JOB'
#!/bin/bash
# One task per node; T, BAR, RUN set by the caller.
set -e
r=$SLURM_NODEID P=$SLURM_NNODES
EASY_MIB=128 HARD_N=2000 MD_N=5000 XFER=47008
now() { date +%s%N; }
barrier() {  # barrier NAME: returns once every task reached it
  mkdir -p "$BAR/$1"; touch "$BAR/$1/$r"
  while [ "$(ls "$BAR/$1" | wc -l)" -lt "$P" ]; do sleep 0.01; done
}
phase() {  # phase NAME WHERE BYTES_OR_OPS CMD...: prints "NAME WHERE start end amount"
  local name=$1 where=$2 amount=$3; shift 3
  barrier "$RUN-$name-$where"
  local t0; t0=$(now)
  "$@" > /dev/null 2>&1 || { echo "task $r: $name on $where failed: $*" >&2; exit 1; }
  echo "$name $where $t0 $(now) $amount"
}
hard() {  # hard RW FILE
  fio --name=hard --filename="$2" --ioengine=psync --rw="$1:$((XFER * (P - 1)))" \
    --bs=$XFER --offset=$((r * XFER)) --io_size=$((HARD_N * XFER)) \
    --size=$(( (HARD_N * P - r) * XFER )) --allow_file_create=1 --fallocate=none
}
run_on() {  # run_on WHERE DIR
  local w=$1 d=$2
  mkdir -p "$d/md$r"
  phase easy-write "$w" $((EASY_MIB << 20)) dd if=/dev/zero of="$d/easy$r" bs=1M count=$EASY_MIB conv=fsync
  phase easy-read "$w" $((EASY_MIB << 20)) dd if="$d/easy$r" of=/dev/null bs=1M
  local hf="$d/hard"; [ "$w" = raw ] && hf="$d/hard$r"
  phase hard-write "$w" $((HARD_N * XFER)) hard write "$hf"
  phase hard-read "$w" $((HARD_N * XFER)) hard read "$hf"
  phase md-create "$w" $MD_N "$T/gkfs-meta-load" create "$d/md$r" $MD_N
  phase md-stat "$w" $MD_N "$T/gkfs-meta-load" stat "$d/md$r" $MD_N
  phase md-remove "$w" $MD_N "$T/gkfs-meta-load" remove "$d/md$r" $MD_N
  rm -rf "$d/easy$r" "$d/hard$r" "$d/md$r"
  barrier "$RUN-clean-$w"
  [ "$r" = 0 ] && rm -f "$d/hard"
  return 0
}
run_on gkfs /tmp/gkfs/bench
(unset LD_PRELOAD; run_on raw /tmp/raw-bench)
JOB
chmod 755 job.sh
: > times.txt
for run in $(seq "$RUNS"); do
  rm -rf bar && mkdir bar
  T=$T BAR=$D/work/bar RUN=$run srun -N3 --gkfs ./job.sh | sed "s/^/$run /" >> times.txt
done
# Per run and phase: amount summed over the nodes / (last end - first start).
python3 - "$RUNS" <<'PY'
import collections, statistics, sys
runs = int(sys.argv[1])
agg = collections.defaultdict(lambda: [None, None, 0])
for line in open("times.txt"):
    run, name, where, t0, t1, amount = line.split()
    a = agg[(run, name, where)]
    a[0] = int(t0) if a[0] is None else min(a[0], int(t0))
    a[1] = int(t1) if a[1] is None else max(a[1], int(t1))
    a[2] += int(amount)
rate = collections.defaultdict(list)
for (run, name, where), (t0, t1, amount) in agg.items():
    rate[(name, where)].append(amount / ((t1 - t0) / 1e9))
names = ["easy-write", "easy-read", "hard-write", "hard-read", "md-create", "md-stat", "md-remove"]
def fmt(v, name):
    scale, unit = (1e6, "MB/s") if not name.startswith("md") else (1, "ops/s")
    v = [x / scale for x in v]
    return f"{statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f}) {unit}".replace(",", " ")
print(f"3 nodes, one process each; medians of {runs} runs (min-max); raw = each node's own tmpfs /tmp")
print()
print("| pattern | gkfs (3 daemons) | raw, node-local | gkfs/raw |")
print("|---|---:|---:|---:|")
for n in names:
    g, r = rate.get((n, "gkfs"), []), rate.get((n, "raw"), [])
    if g and r:
        print(f"| {n} | {fmt(g, n)} | {fmt(r, n)} | {statistics.median(g) / statistics.median(r):.2f} |")
PY
