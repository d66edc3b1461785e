#!/bin/bash
# gkfs Slurm Prolog and Epilog (one script for both): for sites that run gkfs from their
# own Prolog/Epilog rather than from the SPANK plugin's job prolog (plugstack.conf:
# `job_scripts=no`; the plugin still provides --gkfs and the tasks' environment).
#   slurm.conf: Prolog=<this file>  Epilog=<this file>  PrologFlags=Alloc
# Slurm runs it as root on every node of every job; it acts only for jobs that asked for
# gkfs (the plugin passes SPANK_GKFS; with GKFS_BURST_BUFFER=yes also #BB_LUA gkfs
# jobs, whose directives gkfs-run asks slurmctld for) and tells prolog from epilog by
# SLURM_SCRIPT_CONTEXT. Prolog: start this node's daemon as the job's user, stage in on
# the first node. Epilog: stage out on the first node while every daemon still runs,
# stop this node's daemon, remove its data.
#
# It never fails: a failing Prolog/Epilog drains the node. `gkfs-run prolog` leaves a
# failure in the job's dir and the plugin fails the job's tasks with it; a failed
# stage-out is written to the job's output file.
GKFS_SLURM_CONF=/etc/gkfs/slurm.conf
GKFS_RUN=/usr/bin/gkfs-run
GKFS_ARGS=()                          # e.g. (--rootdir=/local --port-base=47000 --default-mode=both)
GKFS_LOG=/var/log/gkfs-slurm.log
GKFS_BURST_BUFFER=no                  # yes: also jobs asking with #BB_LUA gkfs (burst_buffer.lua)
# shellcheck source=/dev/null
[ -r "$GKFS_SLURM_CONF" ] && . "$GKFS_SLURM_CONF"
if [ -z "${SPANK_GKFS:-}" ]; then
  [ "$GKFS_BURST_BUFFER" = yes ] || exit 0
  GKFS_ARGS+=(--burst-buffer)         # gkfs-run asks slurmctld for the job's directives
fi
case ${SLURM_SCRIPT_CONTEXT:-} in
  prolog_slurmd) what=prolog ;;
  epilog_slurmd) what=epilog ;;
  *) echo "$(date '+%F %T') gkfs: unknown SLURM_SCRIPT_CONTEXT '${SLURM_SCRIPT_CONTEXT:-}': use it as Prolog= and Epilog=" >> "$GKFS_LOG"; exit 0 ;;
esac
{
  echo "$(date '+%F %T') $what job ${SLURM_JOB_ID} on ${SLURMD_NODENAME:-$(hostname)}"
  "$GKFS_RUN" "$what" "${GKFS_ARGS[@]}" || echo "gkfs-run $what failed (exit $?)"
} >> "$GKFS_LOG" 2>&1 < /dev/null
exit 0
