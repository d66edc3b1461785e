#!/usr/bin/env bash
# What a fresh process pays for its first operation on gkfs in a multi-node job, on the
# 3-node test cluster (root; Debian's slurmctld, slurmd, munge, libslurm-dev).
# Usage: sudo bench/first-op.sh [FILES] (default 30)
# In one `srun -N3 --gkfs` job, on node1: FILES files are created (placed on all three
# daemons by path hash), then each is stat'ed by a fresh /usr/bin/stat process, once
# with libfabric loaded at the first remote request (LIBGKFS_FABRIC=direct, the old
# behaviour) and once relayed through node1's daemon (the default), next to a raw
# `stat` of a file in node1's /tmp. Files whose direct stat took over 100 ms are the
# ones owned by node2 or node3 (that process loaded libfabric); the table gives the
# medians (min-max) per kind, in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-30}
D=/var/tmp/gkfs-first-op-bench
. bench/test-cluster.sh
mkdir -p $D/work && cd $D/work
cat > job.sh <<'JOB'
#!/bin/bash
set -e
ms() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
if [ "$SLURM_NODEID" != 0 ]; then exit 0; fi
for i in $(seq "$FILES"); do echo x > /tmp/gkfs/f$i; done
echo x > /tmp/raw-file
for i in $(seq "$FILES"); do
  raw=$(env -u LD_PRELOAD bash -c "$(declare -f ms); ms /usr/bin/stat /tmp/raw-file")
  direct=$(LIBGKFS_FABRIC=direct bash -c "$(declare -f ms); ms /usr/bin/stat /tmp/gkfs/f$i")
  relay=$(bash -c "$(declare -f ms); ms /usr/bin/stat /tmp/gkfs/f$i")
  echo "$raw $direct $relay"
done
JOB
chmod 755 job.sh
FILES=$FILES srun -N3 --gkfs ./job.sh > times.txt
stats() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) {print "-"} else printf "%.1f (%.1f-%.1f)", a[int((NR+1)/2)]/1000, a[1]/1000, a[NR]/1000}'; }
remote=$(awk '$2 > 100000' times.txt | wc -l)
echo "Measured $(date -u +%F) on $(hostname), $(nproc) cores; 3 nodes, $FILES files ($remote owned by node2/node3); fresh process each, wall ms, median (min-max)"
echo
echo "| first operation | owned by node1 | owned by node2/node3 |"
echo "|---|---:|---:|"
echo "| raw stat, node-local /tmp | $(cut -d' ' -f1 times.txt | stats) | |"
echo "| gkfs stat, libfabric at the first remote request (LIBGKFS_FABRIC=direct) | $(awk '$2 <= 100000 {print $2}' times.txt | stats) | $(awk '$2 > 100000 {print $2}' times.txt | stats) |"
echo "| gkfs stat, relayed by node1's daemon (default) | $(awk '$2 <= 100000 {print $3}' times.txt | stats) | $(awk '$2 > 100000 {print $3}' times.txt | stats) |"
