#!/usr/bin/env python3
"""gkfs next to GekkoFS, same machine, same run, same transport: one daemon each with its
root dir on /dev/shm, reached over libfabric tcp (gkfs: LIBGKFS_TRANSPORT=fabric,
provider tcp;ofi_rxm; GekkoFS: ofi+tcp), one process through each one's preload library
doing creates, stats and removes (gkfs-meta-load: plain system calls, timed after a
first call that connects). Alternates the two, repeated; prints medians, min-max and
gkfs/GekkoFS, and saves bench/results/vs-gekkofs.{json,md}. gkfs over its node-local
channel (what a process on the daemon's own node uses) is a third column.

    bench/gekkofs-build.sh                 # GekkoFS 0.9.2 into /opt/gekkofs, once
    bench/run.sh vs-gekkofs [--quick]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from harness import stats


class Fs:
    """A running file system: its mount dir and the environment of its clients."""

    def __init__(self, name, mount, env):
        self.name, self.mount, self.env = name, mount, env

    def run(self, cmd):
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"vs-gekkofs: {' '.join(cmd)} failed on {self.name}:\n{p.stdout}\n{p.stderr}")
        return p.stdout


def start_gekkofs(prefix, base_env, root, mount, hosts):
    daemon = os.path.join(prefix, "bin", "gkfs_daemon")
    lib = os.path.join(prefix, "lib", "libgkfs_intercept.so")
    for f in (daemon, lib):
        if not os.path.exists(f):
            sys.exit(f"vs-gekkofs: no {f}: build GekkoFS first (bench/gekkofs-build.sh {prefix})")
    env = dict(base_env, LD_LIBRARY_PATH=os.path.join(prefix, "lib"))
    log = open(os.path.join(os.path.dirname(hosts), "gekkofs-daemon.log"), "w")
    proc = subprocess.Popen([daemon, "--rootdir", root, "--mountdir", mount, "--hosts-file", hosts,
                             "--rpc-protocol", "ofi+tcp", "--listen", "127.0.0.1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while not (os.path.exists(hosts) and open(hosts).read().strip()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"vs-gekkofs: gkfs_daemon did not start (log: {log.name})")
        time.sleep(0.1)
    client = dict(env, LD_PRELOAD=lib, LIBGKFS_HOSTS_FILE=hosts, LIBGKFS_LOG="none")
    return proc, Fs("GekkoFS", mount, client)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory with gkfs-run, gkfs-meta-load, libgkfs_client.so")
    ap.add_argument("--gekkofs", default="/opt/gekkofs", help="GekkoFS install prefix")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--files", type=int, default=10000, help="files per run")
    ap.add_argument("--quick", action="store_true", help="3 repeats of 2000 files")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.files = 3, 2000
    run = os.path.abspath(os.path.join(a.bin, "gkfs-run"))
    tool = os.path.abspath(os.path.join(a.bin, "gkfs-meta-load"))
    lib = os.path.abspath(os.path.join(a.bin, "libgkfs_client.so"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBGKFS") and k != "LD_PRELOAD"}
    work = tempfile.mkdtemp(prefix="gkfs-vs-gekkofs-")
    shm = tempfile.mkdtemp(prefix="gkfs-vs-gekkofs-", dir="/dev/shm")
    mounts = [f"/tmp/gkfs-vs-{os.getpid()}", f"/tmp/gekkofs-vs-{os.getpid()}"]
    inst = os.path.join(work, "gkfs")
    p = subprocess.run([run, "start", "--local", "1", "--rootdir", os.path.join(shm, "gkfs"),
                        "--mountdir", mounts[0], "--instance-dir", inst], env=base_env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"vs-gekkofs: gkfs-run start failed:\n{p.stderr}")
    hosts = os.path.join(inst, "hosts")
    gkfs_env = dict(base_env, LD_PRELOAD=lib, LIBGKFS_HOSTS_FILE=hosts)
    gekko = None
    try:
        gekko, gekkofs = start_gekkofs(a.gekkofs, base_env, os.path.join(shm, "gekkofs"), mounts[1],
                                       os.path.join(work, "gekkofs-hosts"))
        targets = [Fs("gkfs, fabric", mounts[0], dict(gkfs_env, LIBGKFS_TRANSPORT="fabric")),
                   gekkofs,
                   Fs("gkfs, node-local", mounts[0], gkfs_env)]
        ops = ["create", "stat", "remove"]
        v = {t.name: {op: [] for op in ops} for t in targets}
        for r in range(a.repeats):  # alternate so drift hits every side alike
            for t in targets:
                d = os.path.join(t.mount, f"r{r}-{t.name.split(',')[-1].strip()}")
                t.run(["mkdir", d])
                for op in ops:
                    v[t.name][op].append(float(t.run([tool, op, d, str(a.files)]).strip()))
                t.run(["rmdir", d])
            print(f"vs-gekkofs: run {r + 1} of {a.repeats} done", file=sys.stderr, flush=True)
    finally:
        subprocess.run([run, "stop", "--no-summary", "--hosts-file", hosts], env=base_env,
                       capture_output=True)
        if gekko is not None:
            gekko.terminate()
            try:
                gekko.wait(10)
            except subprocess.TimeoutExpired:
                gekko.kill()
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        for m in mounts:
            shutil.rmtree(m, ignore_errors=True)
    rows = []
    for op in ops:
        s = {name: stats(v[name][op]) for name in v}
        rows.append({"op": op, "unit": "ops/s", **s,
                     "gkfs_fabric_over_gekkofs": s["gkfs, fabric"]["median"] / s["GekkoFS"]["median"]})
    lines = [f"gkfs vs GekkoFS 0.9.2, 1 daemon each on /dev/shm, 1 process, {a.files} files, "
             f"medians (min-max) of {a.repeats}, ops/s",
             "",
             "| op | gkfs, libfabric tcp | GekkoFS, ofi+tcp | gkfs/GekkoFS | gkfs, node-local channel |",
             "|---|---:|---:|---:|---:|"]

    def fmt(s):
        return f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})"
    for r in rows:
        lines.append(f"| {r['op']} | {fmt(r['gkfs, fabric'])} | {fmt(r['GekkoFS'])} | "
                     f"{r['gkfs_fabric_over_gekkofs']:.1f}x | {fmt(r['gkfs, node-local'])} |")
    print("\n".join(lines))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "vs-gekkofs.json"), "w") as f:
        json.dump({"files": a.files, "repeats": a.repeats, "rows": rows}, f, indent=1)
    with open(os.path.join(a.out, "vs-gekkofs.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
