//! The FUSE mount (gkfs-fuse, through `gkfs-run start --fuse`, `mount`, `umount`,
//! `stop`): programs that are not preloaded, the statically linked busybox among them,
//! run the same scenarios once on a local directory and once under the mount, with the
//! same status and output; preloaded and static programs exchange files through one
//! mount dir; a killed gkfs-fuse leaves ENOTCONN, and `stop` still leaves no mount.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gkfs_tests::{bin, bin_dir, skip};

const BUSYBOX: &str = "/usr/bin/busybox";

fn gkfs_run(args: &[&str]) -> Output {
    Command::new(bin("gkfs-run"))
        .args(args)
        .env_remove("LIBGKFS_HOSTS_FILE")
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    gkfs_tests::output_text(o)
}

/// Can this machine mount FUSE file systems? (None after [`skip`].)
fn fuse_usable(test: &str) -> Option<()> {
    if !Path::new("/dev/fuse").exists() {
        skip(test, "no /dev/fuse");
        return None;
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        skip(test, "no fusermount3 (Debian package fuse3)");
        return None;
    }
    Some(())
}

/// Is `dir` a mount point now?
fn mounted(dir: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string().replace(' ', "\\040");
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(d.as_str()))
}

/// Two daemons started by `gkfs-run start --local 2 --fuse`, mounted at their mount
/// dir; stopped (and unmounted) when dropped.
struct Mounted {
    base: tempfile::TempDir,
    hosts: String,
    mountdir: PathBuf,
}

impl Mounted {
    fn start(test: &str) -> Option<Mounted> {
        fuse_usable(test)?;
        let base = tempfile::Builder::new()
            .prefix("gkfs-fuse-test-")
            .tempdir()
            .unwrap();
        let mountdir = base.path().join("mnt");
        let o = gkfs_run(&[
            "start",
            "--local",
            "2",
            "--fuse",
            "--instance-dir",
            base.path().join("inst").to_str().unwrap(),
            "--rootdir",
            base.path().join("roots").to_str().unwrap(),
            "--mountdir",
            mountdir.to_str().unwrap(),
            "--chunk-size",
            "65536",
        ]);
        assert!(o.status.success(), "start --fuse: {}", text(&o));
        let hosts = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export LIBGKFS_HOSTS_FILE="))
            .expect("no hosts file line")
            .to_string();
        assert!(mounted(&mountdir), "start --fuse returned before the mount");
        Some(Mounted {
            base,
            hosts,
            mountdir,
        })
    }

    fn inst(&self) -> PathBuf {
        self.base.path().join("inst")
    }

    fn stop(&self) -> Output {
        gkfs_run(&["stop", "--no-summary", "--hosts-file", &self.hosts])
    }

    /// Runs `script` in a bash with the preload library, on this file system.
    fn preloaded_bash(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("LD_PRELOAD", bin_dir().join("libgkfs_client.so"))
            .env("LIBGKFS_HOSTS_FILE", &self.hosts)
            .output()
            .unwrap()
    }

    fn fuse_pid(&self) -> i32 {
        fs::read_to_string(self.inst().join("fuse.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.inst().exists() {
            let _ = self.stop();
        }
    }
}

/// A directory of busybox applets (`busybox --install -s`), to put first in PATH.
fn busybox_path(base: &Path) -> PathBuf {
    let dir = base.join("busybox-bin");
    if !dir.exists() {
        fs::create_dir_all(&dir).unwrap();
        let st = Command::new(BUSYBOX)
            .arg("--install")
            .arg("-s")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "busybox --install");
    }
    dir
}

/// Runs `script` (with `D` the directory under test, not yet created, and `S` a source
/// tree) by `shell`, once on a local directory and once under the mount, and asserts
/// the same status and output. Returns the output.
fn same(
    m: &Mounted,
    name: &str,
    shell: &[&str],
    path_first: Option<&Path>,
    script: &str,
) -> String {
    let src = m.base.path().join("S");
    if !src.exists() {
        // 300 KiB: chunks on both daemons (64 KiB chunks).
        gkfs_tests::source_tree(&src, 300 * 1024 + 77);
    }
    let run = |d: &Path| {
        let mut c = Command::new(shell[0]);
        c.args(&shell[1..])
            .arg(gkfs_tests::in_fresh_dir(script))
            .env("D", d)
            .env("S", &src)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env_remove("LD_PRELOAD")
            .current_dir(m.base.path());
        if let Some(p) = path_first {
            c.env(
                "PATH",
                format!(
                    "{}:{}",
                    p.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        }
        let o = c.output().unwrap();
        let f = |b: &[u8]| String::from_utf8_lossy(b).replace(&d.display().to_string(), "$D");
        (o.status.code(), f(&o.stdout), f(&o.stderr))
    };
    let local_dir = m.base.path().join("local");
    fs::create_dir_all(&local_dir).unwrap();
    let local = run(&local_dir.join(name));
    let fuse = run(&m.mountdir.join(name));
    gkfs_tests::assert_same_outcome(name, "FUSE mount", &local, &fuse, "")
}

/// What every tool set runs: copies, archives, listings, links, redirections,
/// renames, removal.
const EVERYDAY: &str = r#"cp -r "$S" tree
diff -r "$S" tree && echo "copied in"
ls -R tree
find tree | sort
find tree -type f -exec md5sum {} + | sort -k2
tar cf a.tar -C "$S" .
mkdir x && tar xf a.tar -C x && diff -r "$S" x && echo "tar round trip"
tar tf a.tar | sort
echo one > f
echo two >> f
cat < f
{ echo a; echo b; } > g; cat g
exec 3> fd3; echo via3 >&3; exec 3>&-; cat fd3
sh -c 'echo child >> f'; cat f
while read -r l; do echo "got $l"; done < f
ln -s f link && readlink link && cat link
ln f hard && echo more >> hard && cat f && stat -c '%h %s' f hard
mkdir -p a/b/c && mv a/b a/z && ls -R a
mv f a/z/moved && cat a/z/moved
dd if="$S/big.bin" of=part bs=1000 count=7 skip=3 2>/dev/null && md5sum part
dd if="$S/big.bin" of=part bs=4096 count=2 seek=10 conv=notrunc 2>/dev/null && md5sum part && stat -c %s part
touch -d '2021-03-04 05:06:07' g && stat -c '%Y' g
chmod 640 g && stat -c '%a' g
stat -c '%F' . tree tree/top.txt link
cat nope 2>/dev/null || echo "cat missing: $?"
rm -r tree x a
rmdir empty_not 2>/dev/null || echo "rmdir missing: $?"
ls"#;

#[test]
fn static_busybox_through_the_mount() {
    let Some(m) = Mounted::start("static_busybox_through_the_mount") else {
        return;
    };
    // It is statically linked: no preload library could ever see it.
    let ldd = Command::new("ldd").arg(BUSYBOX).output().unwrap();
    assert!(
        !ldd.status.success() || String::from_utf8_lossy(&ldd.stdout).contains("not a dynamic"),
        "{BUSYBOX} is not static: {}",
        text(&ldd)
    );
    let bb = busybox_path(m.base.path());
    let out = same(&m, "busybox", &[BUSYBOX, "sh", "-c"], Some(&bb), EVERYDAY);
    assert!(
        out.contains("tar round trip") && out.contains("got child"),
        "{out}"
    );
}

#[test]
fn gnu_tools_through_the_mount() {
    let Some(m) = Mounted::start("gnu_tools_through_the_mount") else {
        return;
    };
    let out = same(&m, "gnu", &["bash", "-c"], None, EVERYDAY);
    assert!(out.contains("copied in"), "{out}");
    same(
        &m,
        "gnu-meta",
        &["bash", "-c"],
        None,
        r#"cp -a "$S" s && diff -r "$S" s && echo "cp -a"
find s -empty | sort
find s -size +1k -type f | sort
find s -type f -print0 | xargs -0 du -b | sort -k2
truncate -s 1M t && stat -c %s t
truncate -s 10 s/big.bin && md5sum s/big.bin
truncate -s +5 s/big.bin && od -c s/big.bin | tail -2
python3 -c '
import os
fd = os.open("tmp", os.O_CREAT | os.O_RDWR, 0o600)
os.unlink("tmp")
os.write(fd, b"still here")
os.lseek(fd, 0, 0)
print(os.read(fd, 100), os.path.exists("tmp"))
os.close(fd)
with open("r1", "w") as a:
    a.write("old")
b = open("r1")
with open("r2", "w") as c:
    c.write("new")
os.rename("r2", "r1")
print(b.read(), open("r1").read())
'
python3 -c '
import fcntl, os, subprocess, sys
fd = os.open("lk", os.O_CREAT | os.O_RDWR, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
probe = "import fcntl, os; fcntl.lockf(os.open(\"lk\", os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)"
print("while held:", subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0)
os.close(fd)
print("after close:", subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode)
'
cp /bin/echo ./stored-echo && ./stored-echo "a program stored here runs"
mv s/dir1 s/dir9 && ls s && cat s/dir9/dir2/deep.txt
ln -s dir9 s/dl && ls s/dl/ && cat s/dl/x.txt | wc -l
rm -rf s t
ls -A"#,
    );
}

#[test]
fn preloaded_and_static_programs_share_files() {
    let Some(m) = Mounted::start("preloaded_and_static_programs_share_files") else {
        return;
    };
    let d = m.mountdir.display().to_string();
    // A preloaded process writes; it reaches the daemons directly, not the mount.
    let o = m.preloaded_bash(&format!(
        "set -e; mkdir {d}/x; seq 1 20000 > {d}/x/from-preload; md5sum < {d}/x/from-preload"
    ));
    assert!(o.status.success(), "{}", text(&o));
    let want = String::from_utf8_lossy(&o.stdout).to_string();
    // Static busybox reads it through the kernel, and writes its own.
    let o = Command::new(BUSYBOX)
        .args(["sh", "-c"])
        .arg(format!(
            "set -e; busybox md5sum < {d}/x/from-preload; busybox seq 1 7777 > {d}/x/from-static; busybox cp {d}/x/from-preload {d}/x/copy"
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    // The preloaded side sees what the static one wrote.
    let o = m.preloaded_bash(&format!(
        "set -e; md5sum < {d}/x/from-static; md5sum < {d}/x/copy; ls {d}/x"
    ));
    assert!(o.status.success(), "{}", text(&o));
    let seq = Command::new("bash")
        .arg("-c")
        .arg("seq 1 7777 | md5sum")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "{}{want}copy\nfrom-preload\nfrom-static\n",
            String::from_utf8_lossy(&seq.stdout)
        )
    );
    // A preloaded shell starting static programs: descriptors it opens for them
    // (redirections) are handed over through the mount; one it shares with them
    // itself stays the library's (EBADF in the static program, never a lost write).
    let o = m.preloaded_bash(&format!(
        r#"cd {d}/x
busybox sort -n -r < from-static > sorted; echo "sort: $?"
busybox head -2 sorted
echo one >> log; busybox echo two >> log; echo three >> log; busybox cat log
{{ echo a; busybox echo b; echo c; }} > shared 2>/dev/null; echo "shared: $?"; cat shared
busybox sh -c 'echo out; echo err >&2' > both 2>&1; cat both"#
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "sort: 0\n7777\n7776\none\ntwo\nthree\nshared: 0\na\nc\nout\nerr\n",
        "{}",
        text(&o)
    );
    // And through the client API: the daemons hold it, not a disk below the mount.
    let client = gkfs_client::Client::new(&gkfs_client::ClientConfig::new(&m.hosts)).unwrap();
    let seq_len: usize = (1..=7777).map(|i: u32| i.to_string().len() + 1).sum();
    assert_eq!(client.stat("/x/from-static").unwrap().size, seq_len as u64);
}

#[test]
fn a_killed_fuse_process_fails_calls_and_stop_leaves_no_mount() {
    let Some(m) = Mounted::start("a_killed_fuse_process_fails_calls_and_stop_leaves_no_mount")
    else {
        return;
    };
    fs::write(m.mountdir.join("f"), "x").unwrap();
    let pid = m.fuse_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Calls in flight while it dies (its threads close /dev/fuse one by one) get
    // ECONNABORTED; once the connection is gone, every call gets ENOTCONN.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match fs::metadata(m.mountdir.join("f")) {
            Err(e) if e.raw_os_error() == Some(libc_enotconn()) => break,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ECONNABORTED as i32) => {}
            Ok(_) => {}
            Err(e) => panic!("after SIGKILL of gkfs-fuse: {e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mount does not say ENOTCONN 10 s after its process was killed (pid {pid})"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let err = fs::metadata(m.mountdir.join("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_enotconn()), "{err}");
    let err = fs::File::open(m.mountdir.join("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_enotconn()), "{err}");
    let err = fs::read_dir(&m.mountdir).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_enotconn()), "{err}");
    assert!(mounted(&m.mountdir));
    let o = m.stop();
    assert!(o.status.success(), "stop: {}", text(&o));
    assert!(!mounted(&m.mountdir), "stop left the dead mount behind");
    assert!(!m.inst().exists());
}

fn libc_enotconn() -> i32 {
    nix::errno::Errno::ENOTCONN as i32
}

#[test]
fn mount_and_umount_commands() {
    let Some(m) = Mounted::start("mount_and_umount_commands") else {
        return;
    };
    let h = m.hosts.as_str();
    let o = gkfs_run(&["mount", "--hosts-file", h]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already mounted"), "{}", text(&o));
    let o = gkfs_run(&["umount", "--hosts-file", h]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!mounted(&m.mountdir));
    let o = gkfs_run(&["umount", "--hosts-file", h]);
    assert!(!o.status.success());
    assert!(text(&o).contains("has no FUSE mount"), "{}", text(&o));
    // A second mount point of the same file system.
    let other = m.base.path().join("second");
    let o = gkfs_run(&[
        "mount",
        "--hosts-file",
        h,
        "--mountdir",
        other.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(mounted(&other));
    fs::write(other.join("via-second"), "2").unwrap();
    let client = gkfs_client::Client::new(&gkfs_client::ClientConfig::new(h)).unwrap();
    assert_eq!(client.stat("/via-second").unwrap().size, 1);
    // A busy mount (a process inside it) is still gone after stop.
    let mut busy = Command::new("sleep")
        .arg("30")
        .current_dir(&other)
        .spawn()
        .unwrap();
    let o = m.stop();
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(o.status.success(), "stop: {}", text(&o));
    assert!(!mounted(&other), "stop left a busy mount behind");
    assert!(!mounted(&m.mountdir));
}
