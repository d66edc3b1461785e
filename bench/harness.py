#!/usr/bin/env python3
"""gkfs benchmark harness: every workload on a raw local directory (/dev/shm) and on gkfs
through the preload library, in the same run, repeated; prints a table with medians,
min/max and the gkfs/raw ratio, and saves JSON and a PNG of the transfer-size sweep.

Run it through bench/run.sh (which installs fio and matplotlib and builds), e.g.
    bench/run.sh                 # 1, 2 and 4 daemons, 5 repeats (about 30 minutes)
    bench/run.sh --quick         # 2 daemons, 3 repeats, smaller files (a few minutes)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = [1024, 4096, 16384, 65536, 262144, 1048576]


def human(bs):
    return f"{bs // 1024} KiB" if bs < 1048576 else f"{bs // 1048576} MiB"


class Target:
    """Where a workload runs: a raw directory, or gkfs through the preload library."""

    def __init__(self, name, root, env):
        self.name, self.root, self.env = name, root, env

    def run(self, cmd, check=True):
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            sys.exit(f"harness: {' '.join(cmd)} failed on {self.name}:\n{p.stdout}\n{p.stderr}")
        return p

    def clean(self, sub):
        self.run(["rm", "-rf", os.path.join(self.root, sub)])
        self.run(["mkdir", "-p", os.path.join(self.root, sub)])
        return os.path.join(self.root, sub)


def fio(t, sub, extra):
    d = t.clean(sub)
    p = t.run(["fio", "--name=job", f"--directory={d}", "--group_reporting",
               "--output-format=json"] + extra)
    j = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    return j


def w_startup(t, raw_root):
    probe = os.path.join(t.root, "probe")
    t.run(["sh", "-c", f"echo x > {probe}"])
    t0 = time.perf_counter()
    t.run(["stat", "-c", "%s", probe])
    return (time.perf_counter() - t0) * 1e3


def w_dd(t, mib, write):
    d = t.clean("dd")
    f = os.path.join(d, "f")
    if not write:
        t.run(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}", "status=none"])
    args = (["if=/dev/zero", f"of={f}", f"count={mib}"] if write else [f"if={f}", "of=/dev/null"])
    t0 = time.perf_counter()
    t.run(["dd", "bs=1M", "status=none"] + args)
    return mib * 1.048576 / (time.perf_counter() - t0)


def w_seq(t, bs, jobs, write, size):
    rw = "write" if write else "read"
    j = fio(t, "seq", [f"--rw={rw}", f"--bs={bs}", f"--size={size}", f"--numjobs={jobs}",
                       "--ioengine=psync"])
    return j[rw]["bw_bytes"] / 1e6


def w_rand(t, write, size):
    rw = "randwrite" if write else "randread"
    j = fio(t, "rand", [f"--rw={rw}", "--bs=4k", f"--size={size}", "--numjobs=1",
                        "--ioengine=psync"])
    return j["write" if write else "read"]["iops"]


def w_meta(t, tool, op, jobs, files):
    """`jobs` processes of gkfs-meta-load at once, each on its own directory; ops/s of all."""
    d = os.path.join(t.root, "meta")
    if op == "create":
        t.clean("meta")
        t.run(["mkdir"] + [os.path.join(d, str(j)) for j in range(jobs)])
    t0 = time.perf_counter()
    procs = [subprocess.Popen([tool, op, os.path.join(d, str(j)), str(files)], env=t.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for j in range(jobs)]
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"harness: gkfs-meta-load {op} failed on {t.name}: {p.stderr.read()}")
    return jobs * files / (time.perf_counter() - t0)


def stats(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory with gkfs-run and libgkfs_client.so")
    ap.add_argument("--daemons", default="1,2,4", help="daemon counts (comma separated)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 daemons, 3 repeats, smaller sizes")
    ap.add_argument("--out", default="bench/results", help="directory for results.json/.md/.png")
    ap.add_argument("--only", default="", help="comma-separated workload names to run")
    ap.add_argument("--gkfs-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of the runs on gkfs (repeatable), e.g. "
                         "LIBGKFS_LOCAL_DATA=daemon")
    a = ap.parse_args()
    if a.quick:
        a.daemons, a.repeats = "2", 3
    seq_size = "16M" if a.quick else "64M"
    dd_mib = 64 if a.quick else 256
    meta_files = 2000 if a.quick else 5000
    lib = os.path.abspath(os.path.join(a.bin, "libgkfs_client.so"))
    run = os.path.abspath(os.path.join(a.bin, "gkfs-run"))
    meta_tool = os.path.abspath(os.path.join(a.bin, "gkfs-meta-load"))
    for need in (lib, run):
        if not os.path.exists(need):
            sys.exit(f"harness: {need} missing; build with cargo build --release --workspace")
    if not shutil.which("fio"):
        sys.exit("harness: fio is missing (Debian: apt-get install fio)")
    os.makedirs(a.out, exist_ok=True)
    raw_root = tempfile.mkdtemp(prefix="gkfs-bench-raw-", dir="/dev/shm")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBGKFS") and k != "LD_PRELOAD"}
    raw = Target("raw", raw_root, base_env)
    results = []
    only = set(filter(None, a.only.split(",")))

    def want(name):
        return not only or name in only

    def measure(name, params, daemons, fn, unit):
        vr, vg = [], []
        for _ in range(a.repeats):  # alternate so drift hits both sides alike
            vr.append(fn(raw))
            vg.append(fn(gk))
        r = {"workload": name, "params": params, "daemons": daemons, "unit": unit,
             "raw": stats(vr), "gkfs": stats(vg)}
        r["ratio"] = r["gkfs"]["median"] / r["raw"]["median"] if r["raw"]["median"] else None
        results.append(r)
        print(f"  {name:<26} {params:<18} {r['gkfs']['median']:>12.1f} {r['raw']['median']:>12.1f}"
              f" {r['ratio']:>7.2f}  {unit}", flush=True)

    for n in [int(x) for x in a.daemons.split(",")]:
        inst = tempfile.mkdtemp(prefix="gkfs-bench-inst-")
        os.rmdir(inst)
        root = tempfile.mkdtemp(prefix="gkfs-bench-root-", dir="/dev/shm")
        mnt = f"/tmp/gkfs-bench-{os.getpid()}"
        p = subprocess.run([run, "start", "--local", str(n), "--rootdir", root, "--mountdir", mnt,
                            "--instance-dir", inst], env=base_env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"harness: gkfs-run start failed:\n{p.stderr}")
        hosts = os.path.join(inst, "hosts")
        extra = dict(kv.split("=", 1) for kv in a.gkfs_env)
        gk = Target(f"gkfs({n})", mnt,
                    dict(base_env, LD_PRELOAD=lib, LIBGKFS_HOSTS_FILE=hosts, **extra))
        print(f"== {n} daemon(s)            {'':<18} {'gkfs':>12} {'raw':>12} {'ratio':>7}", flush=True)
        try:
            if want("startup"):
                measure("first stat (wall ms)", "", n, lambda t: w_startup(t, raw_root), "ms")
            if want("dd"):
                measure("dd write", f"{dd_mib} MiB bs=1M", n, lambda t: w_dd(t, dd_mib, True), "MB/s")
                measure("dd read", f"{dd_mib} MiB bs=1M", n, lambda t: w_dd(t, dd_mib, False), "MB/s")
            if want("seq"):
                for jobs in (1, 4):
                    for bs in SIZES:
                        size = seq_size if bs >= 16384 else ("4M" if a.quick else "16M")
                        for write in (True, False):
                            measure("fio seq " + ("write" if write else "read"),
                                    f"{human(bs)} x{jobs}", n,
                                    lambda t, bs=bs, jobs=jobs, write=write, size=size:
                                    w_seq(t, bs, jobs, write, size), "MB/s")
            if want("rand"):
                for write in (True, False):
                    measure("fio rand 4 KiB " + ("write" if write else "read"), "x1", n,
                            lambda t, write=write: w_rand(t, write, "16M" if a.quick else "64M"), "IOPS")
            if want("meta"):
                for jobs in (1, 4):
                    per = meta_files // jobs
                    for op in ("create", "stat", "remove"):
                        # stat and remove need the files of a create run first.
                        def fn(t, op=op, jobs=jobs, per=per):
                            if op != "create":
                                w_meta(t, meta_tool, "create", jobs, per)
                            return w_meta(t, meta_tool, op, jobs, per)
                        measure(f"metadata {op}", f"x{jobs} procs", n, fn, "ops/s")
        finally:
            subprocess.run([run, "stop", "--hosts-file", hosts], env=base_env, capture_output=True)
            shutil.rmtree(inst, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(raw_root, ignore_errors=True)
    if want("remote"):
        print("== remote path: 1 daemon through libfabric, next to libfabric's own floor", flush=True)
        results.extend(remote_rows(a.bin, a.repeats, a.quick))

    machine = f"{os.uname().nodename}, {os.cpu_count()} cores, {os.uname().release}"
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "repeats": a.repeats}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    lines = [f"Measured {meta['date']} on {machine}; medians of {a.repeats} runs (min-max).", "",
             "| daemons | workload | parameters | gkfs | raw /dev/shm (remote rows: the floor named) | gkfs/raw | unit |",
             "|---:|---|---|---:|---:|---:|---|"]
    for r in results:
        g, w = r["gkfs"], r["raw"]
        floor = f"{w['median']:.1f} ({w['min']:.0f}-{w['max']:.0f})" if w else ""
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
        lines.append(f"| {r['daemons']} | {r['workload']} | {r['params']} | {g['median']:.1f} "
                     f"({g['min']:.0f}-{g['max']:.0f}) | {floor} | {ratio} | {r['unit']} |")
    table = "\n".join(lines)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    plot(results, os.path.join(a.out, "sweep.png"), meta)
    plot_remote(results, os.path.join(a.out, "remote.png"), meta)


def remote_rows(bindir, repeats, quick):
    """The remote rows of `gkfs-bench --remote` (1 daemon reached through libfabric,
    each run next to fi_pingpong and gkfs_fabric's RMA on the same provider), as results:
    "raw" is the row's floor, and the parameters name it."""
    fd, out = tempfile.mkstemp(prefix="gkfs-bench-remote-", suffix=".json")
    os.close(fd)
    cmd = [os.path.join(bindir, "gkfs-bench"), "--remote", "--repeats", str(repeats), "--json", out]
    if quick:
        cmd.append("--quick")
    p = subprocess.run(cmd, env=dict(os.environ, TMPDIR="/dev/shm"), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"harness: {' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    print(p.stdout, flush=True)
    with open(out) as f:
        doc = json.load(f)
    os.unlink(out)
    rows = []
    for row in doc["rows"]:
        floor = row["floor"]
        raw = floor["stats"] if floor else None
        rows.append({"workload": f"remote {row['what']}", "daemons": 1, "unit": row["unit"],
                     "params": f"vs {floor['name']}" if floor else doc["provider"],
                     "gkfs": row["gkfs"], "raw": raw,
                     "ratio": row["gkfs"]["median"] / raw["median"] if raw else None})
    return rows


def plot_remote(results, path, meta):
    """Bars of the remote rows' gkfs/floor ratios."""
    rows = [r for r in results if r["workload"].startswith("remote") and r["ratio"] is not None]
    if not rows:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("harness: matplotlib missing (Debian: apt-get install python3-matplotlib); no plot")
        return
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    labels = [f"{r['workload'][7:]} {r['params']}" for r in rows]
    ax.barh(range(len(rows)), [r["ratio"] for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", linewidth=0.8)
    ax.set_xlabel("gkfs / floor (medians; round trips: lower is better, rates: higher)")
    ax.set_title(f"gkfs remote path vs libfabric's floor — {meta['date']}, {meta['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def plot(results, path, meta):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("harness: matplotlib missing (Debian: apt-get install python3-matplotlib); no plot")
        return
    seq = [r for r in results if r["workload"].startswith("fio seq")]
    if not seq:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, jobs in zip(axes, ("x1", "x4")):
        for r0 in sorted({(r["workload"], r["daemons"]) for r in seq}):
            pts = sorted((int(r["params"].split()[0]) * (1024 if "MiB" in r["params"] else 1), r)
                         for r in seq if (r["workload"], r["daemons"]) == r0 and r["params"].endswith(jobs))
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1]["gkfs"]["median"] for p in pts], marker="o",
                    label=f"gkfs {r0[0][8:]} ({r0[1]} daemons)")
            if r0[1] == min(r["daemons"] for r in seq):
                ax.plot(xs, [p[1]["raw"]["median"] for p in pts], linestyle="--", marker="x",
                        label=f"/dev/shm {r0[0][8:]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 4, 16, 64, 256, 1024], ["1K", "4K", "16K", "64K", "256K", "1M"])
        ax.set_yscale("log")
        ax.set_xlabel("transfer size (KiB)")
        ax.set_title(f"fio psync sequential, {jobs[1:]} job(s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MB/s")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"gkfs through LD_PRELOAD vs /dev/shm — {meta['date']}, {meta['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
