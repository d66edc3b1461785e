# Sourced by the benchmarks that run on the 3-node test cluster (bench/slurm.sh,
# bench/first-op.sh), from the repository root with D set to a scratch dir: builds gkfs
# (release), brings tests/slurm/cluster.sh up in $D with the SPANK plugin, takes it down
# and removes $D at exit. Sets T (the binaries) and SLURM_CONF.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/gkfs/target}"
cargo build --release --workspace -q
T=$CARGO_TARGET_DIR/release
CLUSTER=$PWD/tests/slurm/cluster.sh
# shellcheck disable=SC2064
trap "\"$CLUSTER\" down $D >/dev/null 2>&1; rm -rf $D" EXIT
PLUGSTACK="required $T/libgkfs_spank.so gkfs_run=$T/gkfs-run client_lib=$T/libgkfs_client.so keyfile=$D/munge/munge.key" \
  "$CLUSTER" up "$D" >/dev/null
export SLURM_CONF=$D/etc/slurm.conf
