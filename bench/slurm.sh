#!/usr/bin/env bash
# Slurm start-up and teardown cost of --gkfs on the 3-node test cluster (root; Debian's
# slurmctld, slurmd, munge, libslurm-dev). Usage: sudo bench/slurm.sh [RUNS] (default 10)
#   start:    submit -> first task running, srun -N3 [--gkfs] (medians, min-max)
#   teardown: srun returns -> every node idle again (epilogs done)
#   stage-in: the same with --gkfs-stage-in of 256 MiB in 64 files
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
D=/var/tmp/gkfs-slurm-bench
. bench/test-cluster.sh
mkdir -p $D/work/in && cd $D/work
for i in $(seq 64); do head -c 4M /dev/urandom > in/f$i; done

now() { date +%s.%N; }
idle() { while [ -n "$(sinfo -h -o %T | grep -v '^idle$')" ]; do sleep 0.01; done; }
# one run: prints "start teardown" in seconds
run() {
  local t0 first t1 t2
  rm -rf out
  t0=$(now)
  first=$(srun -N3 "$@" date +%s.%N | sort -n | head -1)
  t1=$(now)
  idle
  t2=$(now)
  echo "$(echo "$first - $t0" | bc) $(echo "$t2 - $t1" | bc)"
}
stats() { sort -n | awk '{a[NR]=$1} END {printf "%.3f (%.3f-%.3f)", a[int((NR+1)/2)], a[1], a[NR]}'; }
measure() {
  local name=$1; shift
  local f=$D/$RANDOM
  run "$@" >/dev/null   # warm-up
  for _ in $(seq "$RUNS"); do run "$@"; done > "$f"
  printf "| %s | %s | %s |\n" "$name" "$(cut -d' ' -f1 "$f" | stats)" "$(cut -d' ' -f2 "$f" | stats)"
}
echo "Measured $(date -u +%F) on $(hostname), $(nproc) cores, Slurm $(slurmd -V | cut -d' ' -f2); 3 nodes; medians of $RUNS (min-max), seconds"
echo
echo "| job | submit to first task | teardown (srun exit to nodes idle) |"
echo "|---|---:|---:|"
measure "srun -N3" 
measure "srun -N3 --gkfs" --gkfs
measure "srun -N3 --gkfs, stage-in 256 MiB (64 files)" --gkfs-stage-in=in:/tmp/gkfs/in
measure "srun -N3 --gkfs, stage-in + stage-out 256 MiB" --gkfs-stage-in=in:/tmp/gkfs/in --gkfs-stage-out=/tmp/gkfs/in:out
