//! gkfs on a real 3-node Slurm cluster (tests/slurm/cluster.sh: Debian's slurmctld,
//! slurmd and munge; one network, UTS and mount namespace per node). Needs root; skips
//! otherwise or when Slurm is not installed (see `gkfs_tests::skip`: a failure under CI=true).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gkfs_tests::bin;

/// The cluster uses fixed namespace and bridge names: one test at a time.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct SlurmCluster {
    dir: PathBuf,
    script: PathBuf,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl SlurmCluster {
    fn up() -> Option<SlurmCluster> {
        SlurmCluster::up_with(false)
    }

    /// `job_scripts`: gkfs-run runs from share/slurm's Prolog/Epilog scripts instead of
    /// the plugin's job prolog/epilog.
    fn up_with(job_scripts: bool) -> Option<SlurmCluster> {
        SlurmCluster::up_full(job_scripts, "", false)
    }

    /// `settings`: more plugstack.conf arguments (`key=value ...`); `burst_buffer`:
    /// share/slurm/burst_buffer.lua as the controller's burst_buffer/lua script.
    fn up_full(job_scripts: bool, settings: &str, burst_buffer: bool) -> Option<SlurmCluster> {
        if !nix::unistd::geteuid().is_root() {
            gkfs_tests::skip(
                "slurm",
                "the Slurm tests need root (network namespaces, slurmd)",
            );
            return None;
        }
        if Command::new("slurmd").arg("-V").output().is_err() {
            gkfs_tests::skip(
                "slurm",
                "Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)",
            );
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm/cluster.sh");
        let dir = PathBuf::from(format!("/var/tmp/gkfs-slurm-test-{}", std::process::id()));
        let one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        // Our SPANK plugin, configured as a site would (plugstack.conf arguments).
        let t = bin("gkfs-run").parent().unwrap().to_path_buf();
        let mut plugstack = format!(
            "required {t}/libgkfs_spank.so gkfs_run={t}/gkfs-run client_lib={t}/libgkfs_client.so keyfile={}/munge/munge.key timeout=20",
            dir.display(),
            t = t.display()
        );
        if !settings.is_empty() {
            plugstack = format!("{plugstack} {settings}");
        }
        let mut up = Command::new(&script);
        up.arg("up").arg(&dir);
        if job_scripts {
            // The scripts as shipped, pointed at a settings file of this cluster.
            plugstack.push_str(" job_scripts=no");
            let etc = dir.join("etc");
            std::fs::create_dir_all(&etc).unwrap();
            let conf = etc.join("gkfs-slurm.conf");
            std::fs::write(
                &conf,
                format!(
                    "GKFS_RUN={t}/gkfs-run\nGKFS_ARGS=(--keyfile={d}/munge/munge.key --timeout=20)\nGKFS_LOG={d}/log/gkfs-slurm.log\nGKFS_BURST_BUFFER={bb}\n",
                    t = t.display(),
                    d = dir.display(),
                    bb = if burst_buffer { "yes" } else { "no" }
                ),
            )
            .unwrap();
            let share = Path::new(env!("CARGO_MANIFEST_DIR")).join("../share/slurm");
            let name = "gkfs-prolog-epilog.sh";
            let text = std::fs::read_to_string(share.join(name)).unwrap();
            assert!(text.contains("GKFS_SLURM_CONF=/etc/gkfs/slurm.conf\n"));
            let text = text.replace(
                "GKFS_SLURM_CONF=/etc/gkfs/slurm.conf\n",
                &format!("GKFS_SLURM_CONF={}\n", conf.display()),
            );
            let path = etc.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            up.env("PROLOG", &path).env("EPILOG", &path);
        }
        if burst_buffer {
            plugstack.push_str(" burst_buffer=yes");
            let share = Path::new(env!("CARGO_MANIFEST_DIR")).join("../share/slurm");
            let text = std::fs::read_to_string(share.join("burst_buffer.lua")).unwrap();
            let setting = "local GKFS_RUN = \"/usr/bin/gkfs-run\"\n";
            assert!(text.contains(setting));
            let text = text.replace(
                setting,
                &format!("local GKFS_RUN = \"{}/gkfs-run\"\n", t.display()),
            );
            let src = dir.join("burst_buffer.lua");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&src, text).unwrap();
            up.env("BURST_BUFFER", &src);
        }
        let out = up.env("PLUGSTACK", plugstack).output().unwrap();
        let c = SlurmCluster {
            dir,
            script,
            _one: one,
        };
        assert!(
            out.status.success(),
            "cluster.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(c)
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("etc/slurm.conf")
    }

    /// Runs `script` in bash under `salloc -N3` from a work dir on the shared disk.
    fn salloc(&self, work: &Path, script: &str) -> Output {
        Command::new("timeout")
            .args(["120", "salloc", "-N3", "bash", "-c", script])
            .env("SLURM_CONF", self.conf())
            .env("T", bin("gkfs-run").parent().unwrap())
            .current_dir(work)
            .output()
            .unwrap()
    }
}

impl SlurmCluster {
    /// Like `salloc`, started in the background.
    fn salloc_bg(&self, work: &Path, script: &str) -> std::process::Child {
        Command::new("timeout")
            .args(["120", "salloc", "-N3", "bash", "-c", script])
            .env("SLURM_CONF", self.conf())
            .env("T", bin("gkfs-run").parent().unwrap())
            .current_dir(work)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl SlurmCluster {
    /// Runs a shell script on the submit host (root namespace) with SLURM_CONF and $T.
    fn sh(&self, work: &Path, script: &str) -> Output {
        Command::new("timeout")
            .args(["180", "bash", "-c", script])
            .env("SLURM_CONF", self.conf())
            .env("T", bin("gkfs-run").parent().unwrap())
            .current_dir(work)
            .output()
            .unwrap()
    }

    /// A work dir on the shared disk owned by the user nobody.
    fn work_for_nobody(&self, name: &str) -> PathBuf {
        let work = self.dir.join(name);
        std::fs::create_dir_all(&work).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        std::os::unix::fs::chown(&work, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw()))
            .unwrap();
        work
    }
}

/// Shell helpers for the scripts: `as_nobody CMD...`, `wait_job ID` (until it has ended
/// and every node is idle again, epilogs done), `gkfsd_here` (exported to srun's tasks),
/// `leftovers` (per node: entries in /tmp, gkfsd processes in the node's network
/// namespace (all nodes share one PID namespace; zombies do not count: PID 1 here reaps
/// late), listening ports other than slurmd's, gkfs FUSE mounts).
const HELPERS: &str = r#"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
idle() { for i in $(seq 600); do [ -z "$(sinfo -h -o %T | grep -v '^idle$')" ] && return 0; sleep 0.1; done; sinfo -N; return 1; }
wait_job() { for i in $(seq 1200); do s=$(squeue -h -j $1 -o %T 2>/dev/null); [ -z "$s" ] && break; sleep 0.1; done; idle; }
gkfsd_here() { n=0; for p in $(pgrep -x gkfsd); do [ "$(readlink /proc/$p/ns/net)" = "$(readlink /proc/self/ns/net)" ] && [ "$(cut -d" " -f3 /proc/$p/stat)" != Z ] && n=$((n+1)); done; echo $n; }
export -f gkfsd_here
leftovers() { srun -N3 bash -c 'echo "$(hostname) tmp=$(ls -A /tmp | wc -l) gkfsd=$(gkfsd_here) ports=$(ss -Hltn | grep -vc ":6818 ") mounts=$(grep -cE " - fuse(\.gkfs)? gkfs " /proc/self/mountinfo)"' | sort; }
"#;

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every node is idle in `out` (the output of `sinfo -h -N -o '%N %T'`).
fn assert_nodes_idle(out: &str, t: &str) {
    for n in ["node1", "node2", "node3"] {
        assert!(
            out.contains(&format!("{n} idle\n")),
            "{n} is not idle:\n{t}"
        );
    }
}

/// No node has anything left in `out` (the output of the `leftovers` helper).
fn assert_no_leftovers(out: &str, t: &str) {
    for n in ["node1", "node2", "node3"] {
        assert!(
            out.contains(&format!("{n} tmp=0 gkfsd=0 ports=0 mounts=0\n")),
            "leftovers on {n}:\n{t}"
        );
    }
}

/// The rest of the first line of `out` that starts with `label` (the test fails,
/// showing `t`, if there is none).
fn value_after<'a>(out: &'a str, label: &str, t: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line:\n{t}"))
}

fn text(o: &Output) -> String {
    gkfs_tests::output_text(o)
}

#[test]
fn salloc_start_exec_across_nodes_and_stop_without_leftovers() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let o = c.salloc(
        &work,
        &format!(
            r#"{HELPERS}
set -e
# a daemon that cannot start: start fails and names the nodes
GKFS_DAEMON=/nonexistent/gkfsd $T/gkfs-run start --timeout 10 && echo "STARTED ANYWAY" || echo "start failed as it should"
eval "$($T/gkfs-run start)"
test -n "$LIBGKFS_HOSTS_FILE"
# rank 0 on node1 writes, the others read it back on node2 and node3
srun --overlap -N3 -l $T/gkfs-run exec -- bash -c 'if [ $SLURM_PROCID = 0 ]; then seq 200000 > /tmp/gkfs/data; fi'
srun --overlap -N3 $T/gkfs-run exec -- bash -c 'echo "$(hostname) $(md5sum < /tmp/gkfs/data)"' | sort
$T/gkfs-run status --json | grep -c '"up": true'
$T/gkfs-run stop
test ! -e "$LIBGKFS_HOSTS_FILE" && echo "instance removed"
srun --overlap -N3 bash -c 'ls -A /tmp | wc -l; [ $(gkfsd_here) = 0 ] && echo no-daemon' | sort | uniq -c
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    let want = "node1 0e10426a1d5bddffcef02f1345787128  -\nnode2 0e10426a1d5bddffcef02f1345787128  -\nnode3 0e10426a1d5bddffcef02f1345787128  -\n";
    assert!(
        out.contains(want),
        "every node reads what node1 wrote:\n{t}"
    );
    assert!(out.contains("\n3\n"), "3 daemons up:\n{t}");
    assert!(out.contains("instance removed"), "{t}");
    assert!(out.contains("start failed as it should"), "{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(r#"the daemons on ["node1", "node2", "node3"] did not come up"#),
        "start names the nodes that did not come up:\n{t}"
    );
    assert!(
        out.contains("      3 0\n") && out.contains("      3 no-daemon"),
        "leftovers on a node:\n{t}"
    );
}

#[test]
fn two_jobs_at_once_keep_apart_and_other_users_are_refused() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.dir.join("work2");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Each job writes its own marker, waits until the other has written too, then lists
    // its file system: it must see only its own. Meanwhile the user nobody tries to read
    // job A's files through job A's hosts file.
    let job = |name: &str, other: &str| {
        format!(
            r#"set -e
eval "$($T/gkfs-run start)"
echo "$LIBGKFS_HOSTS_FILE" > hosts-{name}
srun --overlap -N1 $T/gkfs-run exec -- sh -c 'echo {name} > /tmp/gkfs/{name}'
touch ready-{name}
for i in $(seq 200); do [ -e ready-{other} ] && break; sleep 0.05; done
srun --overlap -N3 $T/gkfs-run exec -- ls /tmp/gkfs | sort | uniq -c
if [ {name} = a ]; then
  setpriv --reuid=nobody --regid=nogroup --clear-groups env LIBGKFS_HOSTS_FILE=$(cat hosts-a)     $T/gkfs-run exec -- cat /tmp/gkfs/a && echo "NOBODY READ IT" || echo "nobody refused"
fi
touch done-{name}
for i in $(seq 200); do [ -e done-{other} ] && break; sleep 0.05; done
$T/gkfs-run stop
"#
        )
    };
    let a = c.salloc_bg(&work, &job("a", "b"));
    let b = c.salloc_bg(&work, &job("b", "a"));
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ta, tb) = (text(&oa), text(&ob));
    assert!(oa.status.success() && ob.status.success(), "{ta}\n{tb}");
    let (sa, sb) = (
        String::from_utf8_lossy(&oa.stdout),
        String::from_utf8_lossy(&ob.stdout),
    );
    assert!(
        sa.contains("      3 a\n") && !sa.contains(" b\n"),
        "job a sees only its own files:\n{ta}"
    );
    assert!(
        sb.contains("      3 b\n") && !sb.contains(" a\n"),
        "job b sees only its own files:\n{tb}"
    );
    assert!(
        sa.contains("nobody refused") && !sa.contains("NOBODY READ IT"),
        "{ta}"
    );
}

#[test]
fn srun_gkfs_shares_data_across_nodes_keeps_other_users_out_and_leaves_nothing() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.dir.join("work3");
    std::fs::create_dir_all(&work).unwrap();
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
for c in srun sbatch salloc; do echo "$c --help: $($c --help | grep -o -- '--gkfs[a-z-]*' | sort -u | xargs)"; done
# (a) rank 0 on node1 writes; ranks 1 and 2 on node2 and node3 wait for it and read it
srun -N3 --gkfs -l bash -c '
  if [ $SLURM_PROCID = 0 ]; then
    seq 300000 > /tmp/gkfs/data.tmp && mv /tmp/gkfs/data.tmp /tmp/gkfs/data
  else
    for i in $(seq 300); do [ -e /tmp/gkfs/data ] && break; sleep 0.05; done
    echo "read on $(hostname): $(md5sum < /tmp/gkfs/data)"
  fi
  # (e) another user on the same node, with the same environment, gets nothing
  if [ $SLURM_PROCID = 1 ]; then
    setpriv --reuid=65534 --regid=65534 --clear-groups cat /tmp/gkfs/data >/dev/null 2>&1 \
      && echo "NOBODY READ IT" || echo "nobody refused"
  fi'
idle
# (c) nothing left on any node
leftovers
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    let expect = String::from_utf8_lossy(
        &Command::new("bash")
            .args(["-c", "seq 300000 | md5sum"])
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .next()
    .unwrap()
    .to_string();
    for n in ["node2", "node3"] {
        assert!(
            out.contains(&format!("read on {n}: {expect}")),
            "{n} reads what node1 wrote:\n{t}"
        );
    }
    assert!(
        out.contains("nobody refused") && !out.contains("NOBODY"),
        "{t}"
    );
    for c in ["srun", "sbatch", "salloc"] {
        assert!(
            out.contains(&format!(
                "{c} --help: --gkfs --gkfs-mode --gkfs-stage-in --gkfs-stage-out\n"
            )),
            "{c} --help lists the options:\n{t}"
        );
    }
    assert_no_leftovers(&out, &t);
}

#[test]
fn sbatch_stages_in_and_out_and_reports_a_failed_stage_out_without_draining() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.work_for_nobody("work4");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
as_nobody bash -c 'mkdir -p in/sub in/empty && seq 100000 > in/a && head -c 5000000 /dev/urandom > in/sub/b && : > in/c
  chmod 640 in/a && touch -d 2020-01-01 in/sub/b && mkdir ro && chmod 555 ro'
cat > job.sh <<'JOB'
#!/bin/bash
#SBATCH -N3
#SBATCH -o job-%j.out
set -e
echo "first task on $(hostname) sees: $(cd /tmp/gkfs/in && find . | sort | tr '\n' ' ')"
echo "daemons run as: $(ps -C gkfsd -o user=,stat= | grep -v Z | cut -d' ' -f1 | sort | uniq -c | xargs)"
srun -N3 -l bash -c 'md5sum < /tmp/gkfs/in/sub/b'
srun -N1 -w node3 bash -c 'mkdir -p /tmp/gkfs/out && cp -a /tmp/gkfs/in /tmp/gkfs/out/copy && echo computed > /tmp/gkfs/out/result'
JOB
chmod 755 job.sh
ok=$(as_nobody sbatch --parsable --gkfs --gkfs-stage-in=in:/tmp/gkfs/in --gkfs-stage-out=/tmp/gkfs/out:results job.sh)
wait_job $ok
bad=$(as_nobody sbatch --parsable --gkfs --gkfs-stage-in=in:/tmp/gkfs/in --gkfs-stage-out=/tmp/gkfs/out:ro/results job.sh)
wait_job $bad
echo "ok=$ok bad=$bad"
echo "--- job $ok"; cat job-$ok.out
echo "--- job $bad"; cat job-$bad.out
echo "--- states"; scontrol -o show job $bad | grep -o 'JobState=[A-Z]*'
sinfo -h -N -o '%N %T'
leftovers
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("first task on node1 sees: . ./a ./c ./empty ./sub ./sub/b"),
        "stage-in finished before the first task:\n{t}"
    );
    assert!(
        out.contains("daemons run as: 3 nobody"),
        "the job's daemons run as its user:\n{t}"
    );
    // (b) the results come back whole
    let same = |a: &Path, b: &Path| std::fs::read(a).unwrap() == std::fs::read(b).unwrap();
    for f in ["a", "c", "sub/b"] {
        assert!(
            same(&work.join("in").join(f), &work.join("results/copy").join(f)),
            "{f} differs after the round trip:\n{t}"
        );
    }
    assert!(work.join("results/copy/empty").is_dir(), "{t}");
    assert_eq!(
        std::fs::read_to_string(work.join("results/result")).unwrap(),
        "computed\n"
    );
    let meta = |p: &Path| std::fs::metadata(p).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        meta(&work.join("in/a")).mode(),
        meta(&work.join("results/copy/a")).mode()
    );
    assert_eq!(
        meta(&work.join("in/sub/b")).mtime(),
        meta(&work.join("results/copy/sub/b")).mtime()
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        meta(&work.join("results/result")).uid(),
        nobody.uid.as_raw()
    );
    // (g) the failed stage-out is in the job's output, and no node is drained
    assert!(
        out.contains("stage-out of job")
            && out.contains("FAILED")
            && out.contains("Permission denied"),
        "the failure reaches the job's output:\n{t}"
    );
    assert!(!work.join("ro/results").exists());
    assert_nodes_idle(&out, &t);
    assert_no_leftovers(&out, &t);
}

#[test]
fn gkfs_jobs_side_by_side_and_failed_stage_in_fails_the_job_not_the_node() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.work_for_nobody("work5");
    // (d) job a (salloc --gkfs) and job b (srun --gkfs) on the same three nodes at once:
    // each writes a marker, waits for the other's, lists its file system.
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
step='if [ $SLURM_PROCID = 0 ]; then echo $ME > /tmp/gkfs/$ME; fi; touch ready-$ME-$SLURM_PROCID
  for i in $(seq 300); do [ $(ls ready-* 2>/dev/null | wc -l) = 6 ] && break; sleep 0.05; done
  echo "$(hostname) sees $(ls /tmp/gkfs | tr "\n" " ")"'
export step
ME=a salloc -N3 --gkfs bash -c 'srun -N3 bash -c "$step"' > a.out 2>&1 &
ME=b srun -N3 --gkfs bash -c "$step" > b.out 2>&1
wait
idle
echo "--- a"; cat a.out; echo "--- b"; cat b.out
# a failed stage-in: the job fails with the reason, the node stays in service
as_nobody srun -N3 --gkfs-stage-in=missing:/tmp/gkfs/in true && echo "SHOULD HAVE FAILED" || echo "job failed as it should"
idle
sinfo -h -N -o '%N %T'
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    let errs = String::from_utf8_lossy(&o.stderr);
    let (a, b) = out.split_once("--- b").unwrap_or_else(|| panic!("{t}"));
    for n in ["node1", "node2", "node3"] {
        assert!(a.contains(&format!("{n} sees a \n")), "job a on {n}:\n{t}");
        assert!(b.contains(&format!("{n} sees b \n")), "job b on {n}:\n{t}");
        assert!(
            out.contains(&format!("{n} idle\n")),
            "{n} is not idle:\n{t}"
        );
    }
    assert!(out.contains("job failed as it should"), "{t}");
    assert!(
        errs.contains("stage-in") && errs.contains("missing"),
        "the stage-in error reaches the user:\n{t}"
    );
}

#[test]
fn share_slurm_prolog_and_epilog_scripts_do_the_same() {
    let Some(c) = SlurmCluster::up_with(true) else {
        return;
    };
    let work = c.work_for_nobody("work6");
    let log = c.dir.join("log/gkfs-slurm.log");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
as_nobody bash -c 'mkdir in && seq 50000 > in/x'
echo "src $(md5sum < in/x)"
as_nobody srun -N3 --gkfs-stage-in=in:/tmp/gkfs/in --gkfs-stage-out=/tmp/gkfs/in:back -l bash -c 'echo "$(hostname) $(md5sum < /tmp/gkfs/in/x)"' | sort
idle
cmp in/x back/x && echo "staged back"
# --gkfs-mode reaches the scripts too: the mount on every node, gone after the job
as_nobody srun -N3 --gkfs-mode=both bash -c 'echo "$(hostname) fuse-mount=$(grep -c " /tmp/gkfs " /proc/self/mountinfo)"' | sort
idle
leftovers
echo "prologs=$(grep -c 'prolog job' {log}) epilogs=$(grep -c 'epilog job' {log}) failures=$(grep -c failed {log} || true)"
"#,
            log = log.display()
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    let src = value_after(&out, "src ", &t);
    for (i, n) in ["node1", "node2", "node3"].iter().enumerate() {
        assert!(
            out.contains(&format!("{i}: {n} {src}\n")),
            "{n} reads the staged-in file:\n{t}"
        );
    }
    assert!(out.contains("staged back"), "{t}");
    for n in ["node1", "node2", "node3"] {
        assert!(out.contains(&format!("{n} fuse-mount=1\n")), "{n}: {t}");
    }
    assert!(out.contains("prologs=6 epilogs=6 failures=0"), "{t}");
    assert_no_leftovers(&out, &t);
}

/// Locks were once node-local lock files: a process on node2 got the exclusive lock a
/// process on node1 held, and locked increments from two nodes lost updates. Now the
/// daemon owning the file arbitrates: on two nodes at once, a held lock is refused to
/// the other node, and 2 x 200 locked read-modify-write increments (fcntl, then flock)
/// end at exactly 400.
#[test]
fn locks_hold_across_nodes() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.dir.join("work-locks");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("locks.py"),
        r#"
import fcntl, os, sys, time
rank = int(os.environ["SLURM_PROCID"])
host = os.uname().nodename
def wait_for(name):
    for _ in range(600):
        if os.path.exists("/tmp/gkfs/" + name):
            return
        time.sleep(0.05)
    sys.exit("timed out waiting for " + name)
fd = os.open("/tmp/gkfs/lockfile", os.O_RDWR | os.O_CREAT, 0o644)
if rank == 0:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    open("/tmp/gkfs/held", "w").close()
    wait_for("tried")
    fcntl.lockf(fd, fcntl.LOCK_UN)
    fcntl.flock(fd, fcntl.LOCK_UN)
else:
    wait_for("held")
    for name, take in [("fcntl", fcntl.lockf), ("flock", fcntl.flock)]:
        try:
            take(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print(f"{name} lock held on the other node: TAKEN on {host}", flush=True)
        except BlockingIOError:
            print(f"{name} lock held on the other node: refused on {host}", flush=True)
    open("/tmp/gkfs/tried", "w").close()
# Both ranks: locked read-modify-write increments of one counter.
for kind, take in [("fcntl", fcntl.lockf), ("flock", fcntl.flock)]:
    c = os.open("/tmp/gkfs/counter-" + kind, os.O_RDWR | os.O_CREAT, 0o644)
    for i in range(200):
        take(c, fcntl.LOCK_EX)
        n = int(os.pread(c, 16, 0) or b"0")
        os.pwrite(c, b"%010d\n" % (n + 1), 0)
        take(c, fcntl.LOCK_UN)
    os.close(c)
    open("/tmp/gkfs/done-%s-%d" % (kind, rank), "w").close()
    wait_for("done-%s-%d" % (kind, 1 - rank))
    if rank == 0:
        print(kind, "counter:", int(os.pread(os.open("/tmp/gkfs/counter-" + kind, os.O_RDONLY), 16, 0)), flush=True)
"#,
    )
    .unwrap();
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
srun -N2 -n2 --gkfs python3 locks.py
idle
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    for kind in ["fcntl", "flock"] {
        assert!(
            out.contains(&format!(
                "{kind} lock held on the other node: refused on node2"
            )),
            "{t}"
        );
        assert!(out.contains(&format!("{kind} counter: 400\n")), "{t}");
    }
}

#[test]
fn a_jobs_summary_adds_up_and_its_daemons_report_live_and_to_prometheus() {
    let Some(c) = SlurmCluster::up_full(false, "metrics_port=47900", false) else {
        return;
    };
    let work = c.work_for_nobody("work-summary");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
cat > job.sh <<'JOB'
#!/bin/bash
#SBATCH -N3
#SBATCH -o job-%j.out
set -e
# every node writes three files; a fourth process creates files while stats watch
srun -N3 bash -c 'for i in 1 2 3; do head -c $(( (SLURM_NODEID + 1) * 100000 + i )) /dev/zero > /tmp/gkfs/n$SLURM_NODEID-$i; done'
srun -N1 -w node2 bash -c 'for i in $(seq 1500); do echo x > /tmp/gkfs/live-$i; done' &
$T/gkfs-run stats --json --watch 0.2 --count 8 > stats.jsonl
wait
exec 3<>/dev/tcp/node2/47900
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
cat <&3 > prom-node2.txt
echo "JOB BYTES $(cat /tmp/gkfs/* | wc -c)"
JOB
chmod 755 job.sh
id=$(as_nobody sbatch --parsable --gkfs job.sh)
wait_job $id
echo "id=$id"
cat job-$id.out
echo "--- json owner: $(stat -c %U gkfs-$id.summary.json)"
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    let id = value_after(&out, "id=", &t);
    let job_bytes: u64 = value_after(&out, "JOB BYTES ", &t).parse().unwrap();
    // The job's own files: 1 800 018 bytes, and the live creates' 2 bytes each.
    assert_eq!(job_bytes, 1_800_018 + 1500 * 2, "{t}");
    assert!(
        out.contains(&format!(
            "=== gkfs, job {id}: I/O summary of /tmp/gkfs over 3 daemon(s)"
        )),
        "the summary is in the job's output file:\n{t}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("written ") && l.contains(&format!("({job_bytes} B), read"))),
        "the summary's total is what the job wrote:\n{t}"
    );
    assert!(out.contains("--- json owner: nobody"), "{t}");
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.join(format!("gkfs-{id}.summary.json"))).unwrap(),
    )
    .unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&s["bytes_written"]), job_bytes, "{s:#}");
    let nodes = s["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes
        .iter()
        .map(|d| d["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node1", "node2", "node3"], "{s:#}");
    assert!(nodes.iter().all(|d| d["up"] == true), "{s:#}");
    assert_eq!(
        nodes.iter().map(|d| n(&d["bytes_written"])).sum::<u64>(),
        job_bytes
    );
    // 9 + 1500 files, spread by path hash: every node holds some.
    assert_eq!(nodes.iter().map(|d| n(&d["files"])).sum::<u64>(), 1509);
    assert!(nodes.iter().all(|d| n(&d["files"]) > 300), "{s:#}");
    assert_eq!(s["job"], id);
    // Live: some interval saw creates at a non-zero rate.
    let stats = std::fs::read_to_string(work.join("stats.jsonl")).unwrap();
    let create_rate = stats
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .flat_map(|v| v.as_array().unwrap().clone())
        .flat_map(|d| d["ops"].as_array().unwrap().clone())
        .filter(|o| o["op"] == "Create")
        .map(|o| o["per_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(create_rate > 0.0, "no interval saw creates:\n{stats}");
    // node2's daemon answered Prometheus text on its node's address.
    let prom = std::fs::read_to_string(work.join("prom-node2.txt")).unwrap();
    let (head, body) = prom.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.contains(" 200 "), "{prom}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "gkfs_requests_total" && s.labels.get("op") == Some("Create")),
        "{body}"
    );
}

#[test]
fn bb_lua_jobs_stage_in_run_stage_out_and_bad_directives_are_refused_at_submit() {
    let Some(c) = SlurmCluster::up_full(false, "", true) else {
        return;
    };
    let work = c.work_for_nobody("work-bb");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
as_nobody bash -c 'mkdir -p in/sub ro && seq 50000 > in/a && head -c 300000 /dev/urandom > in/sub/b && chmod 555 ro'
cat > job.sh <<'JOB'
#!/bin/bash
#SBATCH -N3
#SBATCH -o job-%j.out
#BB_LUA gkfs pool=gkfs capacity=2G
#BB_LUA gkfs stage_in=in:/tmp/gkfs/in
#BB_LUA gkfs stage_out=/tmp/gkfs/out:OUTDIR
set -e
echo "GKFS_MOUNTDIR=$GKFS_MOUNTDIR"
echo "first task sees: $(cd /tmp/gkfs/in && find . | sort | tr '\n' ' ')"
srun -N3 -l bash -c 'md5sum < /tmp/gkfs/in/sub/b' | sort
srun -N1 -w node3 bash -c 'mkdir /tmp/gkfs/out && cp -a /tmp/gkfs/in /tmp/gkfs/out/copy && echo computed > /tmp/gkfs/out/result'
scontrol show burstbuffer | grep -o 'Name=lua\|gkfs' | sort -u | tr '\n' ' '; echo
JOB
sed 's|OUTDIR|results|' job.sh > good.sh
sed 's|OUTDIR|ro/results|' job.sh > badout.sh
sed 's|stage_in=in:/tmp/gkfs/in|stagein=in:/tmp/gkfs/in|' job.sh > baddir.sh
chmod 755 good.sh badout.sh baddir.sh
echo "--- bad directive:"; as_nobody sbatch --parsable baddir.sh 2>&1 && echo "SUBMITTED ANYWAY" || true
good=$(as_nobody sbatch --parsable good.sh)
wait_job $good
bad=$(as_nobody sbatch --parsable badout.sh)
wait_job $bad
for i in $(seq 100); do scontrol -o show job $bad | grep -q 'stage-out' && break; sleep 0.1; done
echo "good=$good bad=$bad"
echo "--- src $(md5sum < in/sub/b)"
echo "--- job $good"; cat job-$good.out
echo "--- job $bad"; cat job-$bad.out
echo "--- bad job: $(scontrol -o show job $bad | grep -o 'Reason=[^ ]*')"
echo "--- good job: $(scontrol -o show job $good | grep -o 'BurstBufferState=[a-z-]*')"
echo "--- bbstat: $(scontrol show bbstat)"
sinfo -h -N -o '%N %T'
leftovers
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("SUBMITTED ANYWAY"), "{t}");
    assert!(
        out.contains("unknown key \"stagein\"") && out.contains("#BB_LUA gkfs stagein="),
        "the refusal names the bad directive:\n{t}"
    );
    assert!(
        out.contains("GKFS_MOUNTDIR=/tmp/gkfs"),
        "slurm_bb_paths:\n{t}"
    );
    assert!(
        out.contains("first task sees: . ./a ./sub ./sub/b"),
        "stage-in before the first task:\n{t}"
    );
    let src = value_after(&out, "--- src ", &t);
    for rank in 0..3 {
        assert!(
            out.contains(&format!("{rank}: {src}\n")),
            "node {rank} read the staged file:\n{t}"
        );
    }
    for f in ["a", "sub/b"] {
        assert_eq!(
            std::fs::read(work.join("in").join(f)).unwrap(),
            std::fs::read(work.join("results/copy").join(f)).unwrap(),
            "{f} after the round trip:\n{t}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(work.join("results/result")).unwrap(),
        "computed\n"
    );
    assert!(out.contains("Name=lua gkfs"), "the pool is listed:\n{t}");
    assert!(
        out.contains("--- good job: BurstBufferState=complete"),
        "torn down:\n{t}"
    );
    assert!(
        out.contains("--- bad job: Reason=") && out.contains("gkfs_stage-out_of_job"),
        "a failed stage-out is the job's reason:\n{t}"
    );
    assert!(
        out.contains("stage-out of job") && out.contains("FAILED"),
        "and is in its output:\n{t}"
    );
    assert!(
        out.contains("--- bbstat: gkfs burst buffer (burst_buffer/lua): pool gkfs"),
        "{t}"
    );
    assert_nodes_idle(&out, &t);
    assert_no_leftovers(&out, &t);
}

#[test]
fn fresh_processes_reach_other_nodes_files_without_loading_libfabric() {
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.work_for_nobody("work-relay");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
cat > job.sh <<'JOB'
#!/bin/bash
#SBATCH -N3
set -e
# node2 writes 30 files (spread over the three daemons by path hash)
srun -N1 -w node2 bash -c 'for i in $(seq 30); do echo "file $i" > /tmp/gkfs/f$i; done'
# on node1, fresh processes read them all: relayed, no libfabric in them
srun -N1 -w node1 python3 -c '
import os
ok = all(open(f"/tmp/gkfs/f{{i}}").read() == f"file {{i}}\n" for i in range(1, 31))
print("read all:", ok, "libfabric loaded:", any("libfabric" in l for l in open("/proc/self/maps")))
'
srun -N1 -w node1 bash -c 'cat /tmp/gkfs/f7; ls /tmp/gkfs | wc -l'
LIBGKFS_FABRIC=direct srun -N1 -w node1 python3 -c '
import os
os.stat("/tmp/gkfs/f1"); [os.stat(f"/tmp/gkfs/f{{i}}") for i in range(1, 31)]
print("direct: libfabric loaded:", any("libfabric" in l for l in open("/proc/self/maps")))
'
JOB
chmod 755 job.sh
id=$(as_nobody sbatch --parsable -N3 --gkfs -o relay-%j.out job.sh)
wait_job $id
cat relay-$id.out
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("read all: True libfabric loaded: False"),
        "fresh processes on node1 read every file without libfabric:\n{t}"
    );
    assert!(out.contains("file 7\n30\n"), "{t}");
    assert!(
        out.contains("direct: libfabric loaded: True"),
        "LIBGKFS_FABRIC=direct loads it:\n{t}"
    );
}

#[test]
fn bb_lua_jobs_through_the_share_slurm_prolog_and_epilog_scripts() {
    let Some(c) = SlurmCluster::up_full(true, "", true) else {
        return;
    };
    let work = c.work_for_nobody("work-bb-scripts");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
set -e
as_nobody bash -c 'mkdir -p in && seq 30000 > in/a'
cat > job.sh <<'JOB'
#!/bin/bash
#SBATCH -N3
#SBATCH -o job-%j.out
#BB_LUA gkfs stage_in=in:/tmp/gkfs/in
#BB_LUA gkfs stage_out=/tmp/gkfs/out:results
set -e
srun -N3 -l bash -c 'md5sum < /tmp/gkfs/in/a' | sort
mkdir /tmp/gkfs/out && wc -l < /tmp/gkfs/in/a > /tmp/gkfs/out/lines
JOB
chmod 755 job.sh
id=$(as_nobody sbatch --parsable job.sh)
wait_job $id
echo "--- src $(md5sum < in/a)"
cat job-$id.out
echo "--- state: $(scontrol -o show job $id | grep -o 'BurstBufferState=[a-z-]*')"
sinfo -h -N -o '%N %T'
leftovers
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    let src = value_after(&out, "--- src ", &t);
    for rank in 0..3 {
        assert!(out.contains(&format!("{rank}: {src}\n")), "{t}");
    }
    assert_eq!(
        std::fs::read_to_string(work.join("results/lines")).unwrap(),
        "30000\n",
        "staged out:\n{t}"
    );
    assert!(out.contains("I/O summary"), "{t}");
    assert!(out.contains("--- state: BurstBufferState=complete"), "{t}");
    assert_nodes_idle(&out, &t);
    assert_no_leftovers(&out, &t);
}

/// `--gkfs-mode=both`: every node gets the FUSE mount (as the job's user) besides the
/// preload library; a static busybox on node1 and node3 (which no preload library can
/// see) and a preloaded bash on node2 hand files to each other across the nodes. With
/// `--gkfs-mode=fuse` the tasks get no LD_PRELOAD and still see the files; a wrong mode
/// is refused at submission. After the jobs: no mount, no daemon, nothing in /tmp.
#[test]
fn gkfs_mode_both_static_and_preloaded_tools_share_files_across_nodes() {
    if !Path::new("/usr/bin/busybox").exists() || !Path::new("/dev/fuse").exists() {
        gkfs_tests::skip(
            "gkfs_mode_both",
            "needs /dev/fuse and a static busybox (Debian: fuse3, busybox-static)",
        );
        return;
    }
    let Some(c) = SlurmCluster::up() else { return };
    let work = c.work_for_nobody("work-mode");
    let o = c.sh(
        &work,
        &format!(
            r#"{HELPERS}
as_nobody srun -N1 --gkfs-mode=bogus true 2>&1 && echo "SUBMITTED ANYWAY" || echo "bad mode refused"
set -e
echo "want-static $(seq 30000 | md5sum)"
echo "want-preload $(seq 40000 | md5sum)"
as_nobody salloc -N3 --gkfs-mode=both bash -c '
set -e
srun -N1 -w node1 /usr/bin/busybox sh -c "busybox seq 30000 > /tmp/gkfs/from-static"
srun -N1 -w node2 bash -c "echo \"node2 preloaded=\${{LD_PRELOAD:+yes}} \$(md5sum < /tmp/gkfs/from-static)\"; seq 40000 > /tmp/gkfs/from-preload"
srun -N1 -w node3 /usr/bin/busybox sh -c "echo \"node3 static \$(busybox md5sum < /tmp/gkfs/from-preload)\"; echo \"node3 static \$(busybox md5sum < /tmp/gkfs/from-static)\""
srun -N3 bash -c "echo \"\$(hostname) mounts=\$(grep -c \" /tmp/gkfs \" /proc/self/mountinfo)\"" | sort
'
idle
as_nobody srun -N3 --gkfs-mode=fuse bash -c 'if [ $SLURM_PROCID = 0 ]; then seq 5 > /tmp/gkfs/f; fi; sleep 1; echo "$(hostname) preload=${{LD_PRELOAD:-none}} $(cat /tmp/gkfs/f | wc -l)"' | sort
idle
leftovers
"#
        ),
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bad mode refused"), "{t}");
    let (stat, pre) = (
        value_after(&out, "want-static ", &t),
        value_after(&out, "want-preload ", &t),
    );
    assert!(
        out.contains(&format!("node2 preloaded=yes {stat}\n")),
        "{t}"
    );
    assert!(out.contains(&format!("node3 static {pre}\n")), "{t}");
    assert!(out.contains(&format!("node3 static {stat}\n")), "{t}");
    for n in ["node1", "node2", "node3"] {
        assert!(
            out.contains(&format!("{n} mounts=1\n")),
            "{n} has the mount:\n{t}"
        );
        assert!(
            out.contains(&format!("{n} preload=none 5\n")),
            "{n}, fuse mode:\n{t}"
        );
    }
    assert_no_leftovers(&out, &t);
}
