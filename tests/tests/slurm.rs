//! gkfs on a real 3-node Slurm cluster (tests/slurm/cluster.sh: Debian's slurmctld,
//! slurmd and munge; one network, UTS and mount namespace per node). Needs root; skips
//! with a message otherwise or when Slurm is not installed.

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
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: the Slurm tests need root (network namespaces, slurmd)");
            return None;
        }
        if Command::new("slurmd").arg("-V").output().is_err() {
            eprintln!("SKIPPED: Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm/cluster.sh");
        let dir = PathBuf::from(format!("/var/tmp/gkfs-slurm-test-{}", std::process::id()));
        let one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(&script).arg("up").arg(&dir).output().unwrap();
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

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        r#"set -e
eval "$($T/gkfs-run start)"
test -n "$LIBGKFS_HOSTS_FILE"
# rank 0 on node1 writes, the others read it back on node2 and node3
srun --overlap -N3 -l $T/gkfs-run exec -- bash -c 'if [ $SLURM_PROCID = 0 ]; then seq 200000 > /tmp/gkfs/data; fi'
srun --overlap -N3 $T/gkfs-run exec -- bash -c 'echo "$(hostname) $(md5sum < /tmp/gkfs/data)"' | sort
$T/gkfs-run status --json | grep -c '"up": true'
$T/gkfs-run stop
test ! -e "$LIBGKFS_HOSTS_FILE" && echo "instance removed"
srun --overlap -N3 sh -c 'ls -A /tmp | wc -l; pgrep -x gkfsd || echo no-daemon' | sort | uniq -c
"#,
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
