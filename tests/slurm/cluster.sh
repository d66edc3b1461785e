#!/usr/bin/env bash
# A real 3-node Slurm cluster on this one machine, for the Slurm tests:
#   tests/slurm/cluster.sh up DIR     # DIR gets etc/slurm.conf, munge/, logs, state
#   tests/slurm/cluster.sh down DIR   # stops everything it started, removes namespaces
#   PLUGSTACK='required /path/plugin.so k=v' cluster.sh up DIR   # with a SPANK plugin
#   PROLOG=/path/gkfs-prolog-epilog.sh EPILOG=/path/gkfs-prolog-epilog.sh cluster.sh up DIR   # with job scripts
#   BURST_BUFFER=/path/burst_buffer.lua cluster.sh up DIR   # with burst_buffer/lua
# Each node is a network namespace (own IP on bridge gkfsbr0, 10.79.0.0/24) plus a UTS
# namespace (hostname nodeI), a private /tmp and a /dev/fuse users may open; slurmctld
# and munged run in the root
# namespace. Needs root and Debian's slurmctld, slurmd, slurm-client and munge.
# Facts this relies on (../shared/ref/slurm-lab.md): slurmd must be started with
# nsenter --net (ip netns exec hides the cgroup mounts), the munge socket dir needs o+x,
# clients need SLURM_CONF, PrologFlags=Alloc runs the Prolog on every allocated node.
set -euo pipefail
cmd=${1:?usage: cluster.sh up|down DIR}
D=$(realpath -m "${2:?usage: cluster.sh up|down DIR}")
N=3
BR=gkfsbr0
NET=10.79.0
MARK="# gkfs-slurm-test"

alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_pidfile() {
  local pf=$1 p
  [ -f "$pf" ] || return 0
  p=$(cat "$pf")
  kill "$p" 2>/dev/null || true
  for _ in $(seq 100); do alive "$p" || break; sleep 0.1; done
  alive "$p" && kill -9 "$p" 2>/dev/null || true
  rm -f "$pf"
}

down() {
  for i in $(seq $N); do stop_pidfile "$D/run/slurmd-node$i.pid"; done
  stop_pidfile "$D/run/slurmctld.pid"
  stop_pidfile "$D/munge/munged.pid"
  for i in $(seq $N); do
    ip link del "gkfsv$i" 2>/dev/null || true
    ip netns del "gkfs-node$i" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  sed -i "/$MARK\$/d" /etc/hosts
}

up() {
  case "$D/" in
    /tmp/*) echo "cluster.sh: DIR must not be under /tmp (each node gets a private /tmp)" >&2; exit 2 ;;
  esac
  for c in slurmctld slurmd srun munged mungekey nsenter unshare ip; do
    command -v "$c" >/dev/null || { echo "cluster.sh: $c is missing (apt-get install slurmctld slurmd slurm-client munge iproute2)" >&2; exit 2; }
  done
  down
  mkdir -p "$D"/{etc,state,run,log}
  for i in $(seq $N); do mkdir -p "$D/spool/node$i"; done
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
  for i in $(seq $N); do
    ip netns add "gkfs-node$i"
    ip link add "gkfsv$i" type veth peer name eth0 netns "gkfs-node$i"
    ip link set "gkfsv$i" master "$BR" up
    ip -n "gkfs-node$i" link set lo up
    ip -n "gkfs-node$i" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "gkfs-node$i" link set eth0 up
  done
  { echo "$NET.1 slurmctl $MARK"; for i in $(seq $N); do echo "$NET.$((10 + i)) node$i $MARK"; done; } >> /etc/hosts
  install -d -m 0711 "$D/munge"
  [ -f "$D/munge/munge.key" ] || mungekey --create --keyfile="$D/munge/munge.key"
  munged --key-file="$D/munge/munge.key" --socket="$D/munge/munge.sock" \
    --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed"
  cores=$(nproc)
  cat > "$D/etc/slurm.conf" <<CONF
ClusterName=gkfstest
SlurmctldHost=$(hostname)($NET.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.sock
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
PrologFlags=Alloc
PlugStackConfig=$D/etc/plugstack.conf
SchedulerParameters=bf_interval=1,sched_interval=2
CONF
  for i in $(seq $N); do
    echo "NodeName=node$i NodeAddr=$NET.$((10 + i)) CPUs=$cores Boards=1 SocketsPerBoard=1 CoresPerSocket=$cores ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN" >> "$D/etc/slurm.conf"
  done
  # PROLOG, EPILOG: Prolog/Epilog scripts (run as root on every node of a job)
  [ -n "${PROLOG:-}" ] && echo "Prolog=$PROLOG" >> "$D/etc/slurm.conf"
  [ -n "${EPILOG:-}" ] && echo "Epilog=$EPILOG" >> "$D/etc/slurm.conf"
  # BURST_BUFFER: a burst_buffer.lua (BurstBufferType=burst_buffer/lua, on slurmctld)
  if [ -n "${BURST_BUFFER:-}" ]; then
    cp "$BURST_BUFFER" "$D/etc/burst_buffer.lua"
    printf 'Flags=TeardownFailure\nStageOutTimeout=600\n' > "$D/etc/burst_buffer.conf"
    echo "BurstBufferType=burst_buffer/lua" >> "$D/etc/slurm.conf"
  fi
  echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES" >> "$D/etc/slurm.conf"
  # PLUGSTACK: plugstack.conf lines (SPANK plugins), read by slurmd at start-up
  printf '%s\n' "${PLUGSTACK:-}" > "$D/etc/plugstack.conf"
  export SLURM_CONF=$D/etc/slurm.conf
  slurmctld -f "$SLURM_CONF"
  # Jobs mount FUSE as their user (--gkfs-mode): fusermount3 opens /dev/fuse with the
  # user's rights, and Debian's udev makes it 0666. Where it is 0600 (a machine without
  # udev), the nodes get a 0666 copy of the device over theirs, in their namespace only.
  fuse_dev=
  if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
    fuse_dev=$D/dev-fuse
    rm -f "$fuse_dev"
    mknod -m 0666 "$fuse_dev" c "$((16#$(stat -c %t /dev/fuse)))" "$((16#$(stat -c %T /dev/fuse)))"
  fi
  for i in $(seq $N); do
    nsenter --net="/run/netns/gkfs-node$i" unshare --uts --mount --propagation private \
      sh -c "hostname node$i && mount -t tmpfs -o size=1g tmpfs /tmp && { [ -z '$fuse_dev' ] || mount --bind '$fuse_dev' /dev/fuse; } && exec slurmd -f $SLURM_CONF"
  done
  for _ in $(seq 300); do
    [ "$(sinfo -h -N -t idle -o %N 2>/dev/null | wc -l)" = $N ] && { echo "cluster up: SLURM_CONF=$SLURM_CONF"; return 0; }
    sleep 0.1
  done
  echo "cluster.sh: the nodes did not come up; see $D/log" >&2
  sinfo -N >&2 || true
  exit 1
}

case $cmd in
  up) up ;;
  down) down ;;
  *) echo "usage: cluster.sh up|down DIR" >&2; exit 2 ;;
esac
