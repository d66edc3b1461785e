#!/bin/bash
# gkfs Slurm Prolog: for sites that run gkfs from their own Prolog/Epilog scripts rather
# than from the SPANK plugin's job prolog (plugstack.conf: `job_scripts=no`; the plugin
# still provides --gkfs and the tasks' environment). slurm.conf: Prolog=<this file>,
# PrologFlags=Alloc. Runs as root on every node of every job, and acts only for jobs
# that asked for gkfs (the plugin passes SPANK_GKFS).
#
# It never fails: a failing Prolog drains the node. `gkfs-run prolog` leaves a failure
# in the job's dir and the plugin fails the job's tasks with it.
GKFS_SLURM_CONF=/etc/gkfs/slurm.conf
GKFS_RUN=/usr/bin/gkfs-run
GKFS_ARGS=()                          # e.g. (--rootdir=/local --port-base=47000)
GKFS_LOG=/var/log/gkfs-slurm.log
# shellcheck source=/dev/null
[ -r "$GKFS_SLURM_CONF" ] && . "$GKFS_SLURM_CONF"
[ -n "${SPANK_GKFS:-}" ] || exit 0
{
  echo "$(date '+%F %T') prolog job ${SLURM_JOB_ID} on ${SLURMD_NODENAME:-$(hostname)}"
  "$GKFS_RUN" prolog "${GKFS_ARGS[@]}" || echo "gkfs-run prolog failed (exit $?)"
} >> "$GKFS_LOG" 2>&1 < /dev/null
exit 0
