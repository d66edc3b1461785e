#!/bin/bash
# gkfs Slurm Epilog, the counterpart of prolog.sh (same settings file): on the job's
# first node, stages out while every daemon still runs; on every node, stops the job's
# daemon and removes its data. Never fails (a failing Epilog drains the node); a failed
# stage-out is written to the job's output file.
GKFS_SLURM_CONF=/etc/gkfs/slurm.conf
GKFS_RUN=/usr/bin/gkfs-run
GKFS_ARGS=()
GKFS_LOG=/var/log/gkfs-slurm.log
# shellcheck source=/dev/null
[ -r "$GKFS_SLURM_CONF" ] && . "$GKFS_SLURM_CONF"
[ -n "${SPANK_GKFS:-}" ] || exit 0
{
  echo "$(date '+%F %T') epilog job ${SLURM_JOB_ID} on ${SLURMD_NODENAME:-$(hostname)}"
  "$GKFS_RUN" epilog "${GKFS_ARGS[@]}" || echo "gkfs-run epilog failed (exit $?)"
} >> "$GKFS_LOG" 2>&1 < /dev/null
exit 0
