#!/usr/bin/env python3
"""One file system, two ways in: the same fio and metadata workloads on gkfs through the
preload library and through the FUSE mount (gkfs-fuse), next to raw /dev/shm, in one
run, alternating, repeated. Prints a table (medians, min-max, preload/FUSE) and saves
bench/results/paths.{json,md}.

    bench/run.sh paths            # 1 daemon, 3 repeats, fio 1 KiB..1 MiB x1 and x4 jobs
    bench/run.sh paths --quick    # smaller files, 2 repeats
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from harness import SIZES, Target, human, stats, w_meta, w_seq


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory with gkfs-run, gkfs-fuse, libgkfs_client.so")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    if a.quick:
        a.repeats = 2
    big, small = ("16M", "2M") if a.quick else ("64M", "8M")
    meta_files = 1000 if a.quick else 4000
    lib = os.path.abspath(os.path.join(a.bin, "libgkfs_client.so"))
    run = os.path.abspath(os.path.join(a.bin, "gkfs-run"))
    meta_tool = os.path.abspath(os.path.join(a.bin, "gkfs-meta-load"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBGKFS") and k != "LD_PRELOAD"}
    raw_root = tempfile.mkdtemp(prefix="gkfs-bench-raw-", dir="/dev/shm")
    inst = tempfile.mkdtemp(prefix="gkfs-bench-inst-")
    os.rmdir(inst)
    root = tempfile.mkdtemp(prefix="gkfs-bench-root-", dir="/dev/shm")
    mnt = f"/tmp/gkfs-bench-paths-{os.getpid()}"
    p = subprocess.run([run, "start", "--local", "1", "--fuse", "--rootdir", root, "--mountdir", mnt,
                        "--instance-dir", inst], env=base_env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"paths: gkfs-run start --fuse failed:\n{p.stderr}")
    hosts = os.path.join(inst, "hosts")
    raw = Target("raw", raw_root, base_env)
    pre = Target("preload", os.path.join(mnt, "p"), dict(base_env, LD_PRELOAD=lib, LIBGKFS_HOSTS_FILE=hosts))
    fuse = Target("fuse", os.path.join(mnt, "f"), base_env)
    results = []
    print(f"{'workload':<16} {'parameters':<12} {'preload':>10} {'FUSE':>10} {'raw':>10} {'pre/FUSE':>9}", flush=True)

    def measure(name, params, fn, unit):
        v = {"preload": [], "fuse": [], "raw": []}
        for _ in range(a.repeats):  # alternate so drift hits every side alike
            for t in (pre, fuse, raw):
                v[t.name].append(fn(t))
        r = {"workload": name, "params": params, "unit": unit, **{k: stats(x) for k, x in v.items()}}
        r["preload_over_fuse"] = r["preload"]["median"] / r["fuse"]["median"]
        results.append(r)
        print(f"{name:<16} {params:<12} {r['preload']['median']:>10.1f} {r['fuse']['median']:>10.1f}"
              f" {r['raw']['median']:>10.1f} {r['preload_over_fuse']:>9.2f}  {unit}", flush=True)

    try:
        for jobs in (1, 4):
            for bs in SIZES:
                size = big if bs >= 16384 else small
                for write in (True, False):
                    measure("seq " + ("write" if write else "read"), f"{human(bs)} x{jobs}",
                            lambda t, bs=bs, jobs=jobs, write=write, size=size: w_seq(t, bs, jobs, write, size),
                            "MB/s")
        for jobs in (1, 4):
            per = meta_files // jobs
            measure("create", f"x{jobs} procs", lambda t, jobs=jobs, per=per: w_meta(t, meta_tool, "create", jobs, per), "ops/s")

            def stat(t, jobs=jobs, per=per):
                w_meta(t, meta_tool, "create", jobs, per)
                return w_meta(t, meta_tool, "stat", jobs, per)
            measure("stat", f"x{jobs} procs", stat, "ops/s")
    finally:
        subprocess.run([run, "stop", "--no-summary", "--hosts-file", hosts], env=base_env, capture_output=True)
        shutil.rmtree(inst, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(raw_root, ignore_errors=True)

    machine = f"{os.uname().nodename}, {os.cpu_count()} cores, {os.uname().release}"
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "repeats": a.repeats, "daemons": 1}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "paths.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    rng = lambda s: f"{s['median']:.1f} ({s['min']:.0f}-{s['max']:.0f})"
    lines = [f"Measured {meta['date']} on {machine}; 1 daemon, medians of {a.repeats} runs (min-max).", "",
             "| workload | parameters | preload | FUSE | raw /dev/shm | preload/FUSE | unit |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['workload']} | {r['params']} | {rng(r['preload'])} | {rng(r['fuse'])} | {rng(r['raw'])} "
                     f"| {r['preload_over_fuse']:.2f} | {r['unit']} |")
    table = "\n".join(lines)
    with open(os.path.join(a.out, "paths.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
