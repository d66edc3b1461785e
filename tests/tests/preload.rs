//! The preload library under real programs: every scenario runs once on a local
//! temporary directory and once on gkfs through `LD_PRELOAD` (2 daemons), and the exit
//! status, stdout and stderr must match (with the directory names normalised).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gkfs_tests::{bin_dir, Cluster};

fn lib() -> PathBuf {
    let l = bin_dir().join("libgkfs_client.so");
    assert!(
        l.is_file(),
        "{} missing: run `cargo build --release --workspace` first",
        l.display()
    );
    l
}

/// A source tree like real inputs, with a 3 MiB random file that spans chunks and
/// daemons.
fn fixture(dir: &Path) {
    gkfs_tests::source_tree(dir, 3 * 1024 * 1024 + 123);
}

struct Setup {
    cluster: Cluster,
    lib: PathBuf,
    work: tempfile::TempDir,
    /// Extra environment of the gkfs runs.
    env: Vec<(&'static str, &'static str)>,
}

impl Setup {
    fn new() -> Setup {
        Setup::on(Cluster::start(2))
    }

    fn on(cluster: Cluster) -> Setup {
        let lib = lib();
        let work = tempfile::tempdir().unwrap();
        fixture(&work.path().join("S"));
        Setup {
            cluster,
            lib,
            work,
            env: Vec::new(),
        }
    }

    /// Runs `script` in bash with D (the directory under test, not yet created), S (the
    /// fixture) and T (a real scratch directory).
    fn run(&self, name: &str, script: &str, on_gkfs: bool) -> (Output, String, String) {
        let (d, t) = if on_gkfs {
            (
                format!("{}/{name}", self.cluster.mountdir),
                self.work.path().join("T-gkfs"),
            )
        } else {
            let local = self.work.path().join("local");
            fs::create_dir_all(&local).unwrap();
            (
                local.join(name).display().to_string(),
                self.work.path().join("T-local"),
            )
        };
        let _ = fs::remove_dir_all(&t);
        fs::create_dir_all(&t).unwrap();
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(script)
            .env("D", &d)
            .env("S", self.work.path().join("S"))
            .env("T", &t)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .current_dir(self.work.path());
        if on_gkfs {
            c.env("LD_PRELOAD", &self.lib)
                .env("LIBGKFS_HOSTS_FILE", &self.cluster.hosts_file)
                .env("LIBGKFS_TIMEOUT_MS", "20000")
                .envs(self.env.iter().copied());
        }
        (c.output().unwrap(), d, t.display().to_string())
    }

    /// Runs `script` locally and on gkfs and asserts the same status and output.
    fn same(&self, name: &str, script: &str) -> String {
        let norm = |(o, d, t): (Output, String, String)| {
            let f = |b: &[u8]| {
                String::from_utf8_lossy(b)
                    .replace(&d, "$D")
                    .replace(&t, "$T")
            };
            (o.status.code(), f(&o.stdout), f(&o.stderr))
        };
        let local = norm(self.run(name, script, false));
        let gkfs = norm(self.run(name, script, true));
        let logs = format!("\nlogs:\n{}", self.cluster.logs());
        gkfs_tests::assert_same_outcome(name, "gkfs", &local, &gkfs, &logs)
    }
}

fn prelude(s: &str) -> String {
    gkfs_tests::in_fresh_dir(s)
}

#[test]
fn mkdir_p_and_ls() {
    let s = Setup::new();
    let out = s.same(
        "mkdir",
        &prelude(
            r#"mkdir -p a/b/c a/b/d "$D/x/y"
mkdir -p a/b/c
mkdir a 2>&1 || echo "mkdir existing: $?"
ls -R
ls -a a/b
cp -r "$S" tree
ls -l tree | grep -v '^total' | awk '$1 ~ /^-/ {print $1, $5, $NF} $1 ~ /^d/ {print $1, $NF}'
ls -R tree
ls -ld tree/empty_dir | cut -c1-10
ls nope 2>&1 || echo "ls missing: $?""#,
        ),
    );
    assert!(
        out.contains("deep.txt") && out.contains("mkdir existing: 1"),
        "{out}"
    );
}

#[test]
fn cp_r_diff_mv_rm() {
    let s = Setup::new();
    s.same(
        "cp",
        &prelude(
            r#"cp -r "$S" src
diff -r "$S" src && echo "copied in"
cp -r src "$T/out"
diff -r "$S" "$T/out" && echo "copied out"
cp -a "$S" arch && diff -r "$S" arch && echo "cp -a"
mv src/top.txt src/moved.txt
mv src/dir1 src/dir9
mv src/dir9 .
mv src/moved.txt "$T/"
mv "$T/moved.txt" src/back.txt
ls -R
mv nope x 2>&1 || echo "mv missing: $?"
rm -r src
rm -rf dir9 arch
ls -A
rm nope 2>&1 || echo "rm missing: $?"
rmdir . 2>&1 || true"#,
        ),
    );
}

#[test]
fn find_du_stat_touch_truncate() {
    let s = Setup::new();
    s.same(
        "meta",
        &prelude(
            r#"cp -r "$S" s
find s | sort
find s -type f -name '*.txt' | sort
find s -empty | sort
find s -size +1k -type f | sort
find s -type f -print0 | xargs -0 du -b | sort -k2
find s -type f -print0 | xargs -0 stat -c '%n %s %F %a' | sort
stat -c '%n %F %a' s s/dir1 s/empty_dir
touch -d '2021-03-04 05:06:07' s/top.txt
stat -c '%y %Y' s/top.txt
touch new && test -e new && echo "touched"
touch -r s/top.txt new && stat -c %Y new
truncate -s 1M t && stat -c %s t
truncate -s 10 s/big.bin && md5sum s/big.bin && stat -c %s s/big.bin
truncate -s +5 s/big.bin && stat -c %s s/big.bin && od -c s/big.bin | tail -2
chmod 600 t && stat -c %a t
test -d s && test -f s/top.txt && test ! -e s/nope && echo "test ok""#,
        ),
    );
}

#[test]
fn dd_and_text_tools() {
    let s = Setup::new();
    s.same(
        "dd",
        &prelude(
            r#"for bs in 512 4k 64k 1M 3M; do
  dd if="$S/big.bin" of="x.$bs" bs=$bs status=none
  md5sum "x.$bs"
done
dd if="$S/big.bin" of=part bs=1000 count=7 skip=3 status=none && md5sum part
dd if="$S/big.bin" of=part bs=4k count=2 seek=10 conv=notrunc status=none && md5sum part && stat -c %s part
dd if=x.1M bs=64k status=none | md5sum
cat "$S/words" > w && cat w w > ww
head -5 ww; tail -3 ww; head -c 100 x.4k | od -An -tx1 | head -2
sort w | uniq -c | sort -rn | head -5
wc ww w "$S/top.txt"
md5sum w ww x.512
sort -o sorted w && md5sum sorted"#,
        ),
    );
}

#[test]
fn symlinks_tar_gzip() {
    let s = Setup::new();
    s.same(
        "tar",
        &prelude(
            r#"echo target > t.txt
ln -s t.txt l
readlink l && cat l
ln -s ../outside d1 && readlink d1
mkdir sub && ln -s ../t.txt sub/up && cat sub/up
ls -l l | awk '{print $1, $(NF-2), $(NF-1), $NF}'
test -L l && echo "is link"
ln -s t.txt l 2>&1 || echo "ln exists: $?"
tar cf a.tar -C "$S" .
tar tf a.tar | sort
mkdir x && tar xf a.tar -C x && diff -r "$S" x && echo "tar x into gkfs"
tar czf "$T/b.tgz" -C x . && mkdir "$T/y" && tar xzf "$T/b.tgz" -C "$T/y" && diff -r "$S" "$T/y" && echo "tar c from gkfs"
cp "$S/big.bin" big && gzip big && ls && gunzip big.gz && cmp big "$S/big.bin" && echo "gzip round trip"
gzip -c "$S/words" > w.gz && zcat w.gz | md5sum"#,
        ),
    );
}

#[test]
fn shell_redirections_and_pipes() {
    let s = Setup::new();
    s.same(
        "shell",
        &prelude(
            r#"echo x > f
echo y >> f
cat < f
{ echo a; /bin/echo b; printf 'c\n'; } > g
cat g
sort < "$S/words" | uniq -c | sort -rn | head -3 > h
cat h
seq 1000 | grep 7 | wc -l > n
cat n
ls | tee "$T/list" | wc -l
cat "$T/list"
exec 3> fd3
echo via3 >&3
/bin/echo external3 >&3
exec 3>&-
cat fd3
bash -c 'echo child >> f'
cat f
cd "$D" && cd .. && cd "$D" && pwd
(cd "$D" && ls f g)
while read -r line; do echo "got $line"; done < f
cat nope 2>&1 || echo "cat missing: $?""#,
        ),
    );
}

#[test]
fn python_programs() {
    let s = Setup::new();
    let py = r#"
import os, shutil, sqlite3, subprocess, sys
d = os.environ["D"]
os.makedirs(d)
os.chdir(d)
with open("a.txt", "w") as f:
    f.write("hello\n" * 100)
with open("a.txt", "r+") as f:
    f.seek(6)
    f.write("HELLO\n")
    f.seek(0)
    print(f.read(20).encode())
    print(f.tell())
with open("b.bin", "wb") as f:
    f.write(bytes(range(256)) * 1000)
with open("b.bin", "rb") as f:
    f.seek(-10, 2)
    print(list(f.read()))
shutil.copytree(os.environ["S"], "tree")
for root, dirs, files in sorted(os.walk("tree")):
    print(root, sorted(dirs), sorted(files))
print(sorted((e.name, e.is_dir(), e.is_file()) for e in os.scandir("tree")))
os.rename("tree/dir1", "tree/dir1-renamed")
os.rename("a.txt", "tree/a.txt")
print(sorted(os.listdir("tree")))
print(os.path.getsize("tree/big.bin"), os.path.exists("a.txt"))
try:
    os.rmdir("tree")
except OSError as e:
    print("rmdir:", e.strerror)
db = sqlite3.connect("t.db")
db.execute("pragma journal_mode=delete")
db.execute("create table t(k integer primary key, v text)")
db.executemany("insert into t values (?, ?)", [(i, "v%d" % i) for i in range(2000)])
db.commit()
db.execute("update t set v = 'x' where k < 100")
db.rollback()
print(db.execute("select count(*), sum(k), min(v) from t").fetchone())
db.close()
print(sorted(os.listdir(".")))
print(subprocess.run(["cat", "tree/a.txt"], capture_output=True).stdout[:12])
print(subprocess.run("wc -l < tree/a.txt", shell=True, capture_output=True, text=True).stdout.strip())
sys.stdout.flush()
print("system:", os.system("test -f tree/a.txt && wc -l < tree/a.txt"), flush=True)
shutil.rmtree("tree")
print(sorted(os.listdir(".")))
"#;
    s.same("python", &format!("python3 - <<'EOF'\n{py}\nEOF"));
}

#[test]
fn c_probe_of_every_call() {
    let s = Setup::new();
    let probe = c_probe(&s, "posix_probe");
    let out = s.same(
        "probe",
        &format!("mkdir \"$D\" && {} \"$D\"", probe.display()),
    );
    assert!(out.lines().count() > 150, "{out}");
}

#[test]
fn two_processes_write_ranges_of_one_file() {
    let s = Setup::new();
    s.same(
        "ranges",
        &prelude(
            r#"truncate -s 2M shared
dd if="$S/big.bin" of=shared bs=64k count=16 conv=notrunc status=none &
dd if="$S/big.bin" of=shared bs=64k count=16 skip=16 seek=16 conv=notrunc status=none &
wait
md5sum shared
head -c 2M "$S/big.bin" | md5sum"#,
        ),
    );
}

#[test]
fn programs_stored_in_gkfs_run() {
    let s = Setup::new();
    s.same(
        "exec",
        &prelude(
            r#"cp /bin/echo e && chmod +x e
"$D/e" absolute
./e relative
PATH="$D:$PATH" e via-path
printf '#!/bin/sh\necho script "$1"\n' > s.sh && chmod +x s.sh
./s.sh arg
cp /bin/echo noexec && chmod -x noexec
./noexec 2>&1 || echo "noexec: $?"
python3 -c 'import os; os.execv("./e", ["e", "from-python"])'"#,
        ),
    );
}

#[test]
fn fio_fork_model_verifies() {
    let s = Setup::new();
    let (out, _, _) = s.run(
        "fio",
        r#"mkdir "$D" && fio --name=job --directory="$D" --filename_format='job.$jobnum' --ioengine=psync --rw=randwrite --bs=4k --size=4m --numjobs=2 --verify=crc32c --do_verify=1 --group_reporting"#,
        true,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("err= 0"),
        "fio failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inert_and_quiet() {
    let s = Setup::new();
    // Without a gkfs environment the library changes nothing.
    let fixture = s.work.path().join("S");
    let plain = Command::new("ls")
        .arg("-laR")
        .arg(&fixture)
        .output()
        .unwrap();
    let pre = Command::new("ls")
        .arg("-laR")
        .arg(&fixture)
        .env("LD_PRELOAD", &s.lib)
        .env_remove("LIBGKFS_HOSTS_FILE")
        .output()
        .unwrap();
    assert_eq!(plain.stdout, pre.stdout);
    assert!(pre.stderr.is_empty());
    // With one, programs that never touch gkfs print exactly what they print without.
    let (out, _, _) = s.run(
        "quiet",
        "ls -la / >/dev/null; cat /etc/hostname >/dev/null; echo done",
        true,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unsupported_calls_fail_honestly_and_are_reported() {
    let s = Setup::new();
    let (out, _, _) = s.run(
        "unsup",
        r#"mkdir "$D" && echo x > "$D/a"
LIBGKFS_REPORT=1 mkfifo "$D/b"; echo "mkfifo: $?"
test -e "$D/b" || echo "no fifo made""#,
        true,
    );
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        o.contains("mkfifo: 1") && o.contains("no fifo made"),
        "{o}\n{e}"
    );
    assert!(e.contains("Operation not permitted"), "{e}");
    assert!(e.contains("unsupported call mknod: 1"), "{e}");
}

#[test]
fn dead_daemons_give_errors_not_hangs_or_crashes() {
    let mut s = Setup::new();
    let (out, _, _) = s.run(
        "dead",
        r#"mkdir "$D" && echo data > "$D/f" && cat "$D/f""#,
        true,
    );
    assert!(out.status.success());
    s.cluster.stop_daemon(0);
    s.cluster.stop_daemon(1);
    let mut f = fs::File::create(s.work.path().join("script")).unwrap();
    writeln!(
        f,
        r#"cat "$D/f"; echo "cat: $?"; ls "$D" >/dev/null; echo "ls: $?""#
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(s.work.path().join("script"))
        .env("D", format!("{}/dead", s.cluster.mountdir))
        .env("LD_PRELOAD", &s.lib)
        .env("LIBGKFS_HOSTS_FILE", &s.cluster.hosts_file)
        .env("LIBGKFS_TIMEOUT_MS", "2000")
        .output()
        .unwrap();
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(
        o.contains("cat: 1") && o.contains("ls: 2"),
        "{o}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// Seconds each stress run lasts (`GKFS_STRESS_SECONDS`, default 60).
fn stress_seconds() -> u64 {
    std::env::var("GKFS_STRESS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// Runs 2 processes x 8 threads of tests/c/stress.c (mixed I/O, every byte checked,
/// `forks` forks per process while requests are in flight) on `s` for `secs` seconds.
fn stress(s: &Setup, name: &str, secs: u64, forks: u32) {
    let probe = c_probe(s, "stress");
    let script = format!(
        r#"mkdir "$D" || exit 9
P={p}
$P "$D" 8 {secs} {forks} & a=$!
$P "$D" 8 {secs} {forks} & b=$!
wait $a; ea=$?; wait $b; eb=$?
echo "exit $ea $eb"; echo "left $(ls "$D" | wc -l)""#,
        p = probe.display()
    );
    let (out, _, _) = s.run(name, &script, true);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("exit 0 0")
            && text.contains("left 0")
            && text.matches("ok ops=").count() == 2,
        "{text}\n{err}\nlogs:\n{}",
        s.cluster.logs()
    );
}

/// The node-local channel under load: 8 threads x 2 processes doing mixed I/O against
/// 2 daemons for 60 s (`GKFS_STRESS_SECONDS`), every byte checked, each process forking
/// 4 children (which do I/O of their own) while its threads have requests in flight.
#[test]
fn stress_threads_processes_and_forks_every_byte_checked() {
    let s = Setup::new();
    stress(&s, "stress", stress_seconds(), 4);
}

/// The same load over libfabric (a sixth of the time), without forks: a child forked
/// while its parent's threads are inside libfabric can hang in libfabric's own locks
/// (README, "Known limitations").
#[test]
fn stress_over_libfabric_too() {
    let mut s = Setup::new();
    s.env.push(("LIBGKFS_TRANSPORT", "fabric"));
    stress(&s, "stress-fabric", stress_seconds().div_ceil(6), 0);
}

#[test]
fn libfabric_transport_too() {
    // Every daemon here also has a node-local socket; force libfabric (tcp, RMA for
    // large transfers, a connection per forked child) for a copy, a pipeline and fio.
    let mut s = Setup::new();
    s.env.push(("LIBGKFS_TRANSPORT", "fabric"));
    s.same(
        "fabric",
        &prelude(
            r#"cp -r "$S" src && diff -r "$S" src && echo "copied in"
md5sum src/big.bin
sort < src/words | uniq -c | sort -rn | head -2 > top && cat top
cp -r src "$T/out" && diff -r "$S" "$T/out" && echo "copied out""#,
        ),
    );
    let (out, _, _) = s.run(
        "fabric-fio",
        r#"mkdir "$D" && fio --name=job --directory="$D" --filename_format='job.$jobnum' --ioengine=psync --rw=randwrite --bs=64k --size=4m --numjobs=2 --verify=crc32c --group_reporting"#,
        true,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("err= 0"), "{text}");
}

#[test]
fn exports_the_entry_points_programs_use() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib())
        .output()
        .expect("nm (binutils) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let required = "open open64 openat openat64 creat creat64 __open_2 __open64_2 __openat_2 \
        __openat64_2 read __read_chk write pread pread64 __pread_chk __pread64_chk pwrite pwrite64 readv \
        writev preadv preadv64 preadv2 pwritev pwritev64 pwritev2 lseek lseek64 close dup dup2 dup3 \
        fcntl fcntl64 flock stat stat64 lstat lstat64 fstat fstat64 fstatat fstatat64 statx __xstat \
        __xstat64 __lxstat __lxstat64 __fxstat __fxstat64 __fxstatat __fxstatat64 access faccessat \
        euidaccess mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 truncate truncate64 \
        ftruncate ftruncate64 fsync fdatasync opendir fdopendir readdir readdir64 readdir_r \
        readdir64_r closedir rewinddir seekdir telldir dirfd scandir scandir64 getdents64 chdir \
        fchdir getcwd get_current_dir_name realpath __realpath_chk canonicalize_file_name statfs \
        statfs64 fstatfs fstatfs64 statvfs statvfs64 fstatvfs fstatvfs64 utime utimes lutimes \
        futimes utimensat futimens posix_fadvise posix_fadvise64 fallocate fallocate64 \
        posix_fallocate posix_fallocate64 copy_file_range sendfile sendfile64 symlink symlinkat \
        readlink readlinkat link linkat chmod fchmod fchmodat chown lchown fchown fchownat fopen \
        fopen64 fdopen freopen freopen64 mmap mmap64 munmap msync execve execv execvp execvpe \
        execl execlp execle fexecve posix_spawn posix_spawnp system popen ioctl umask vfork";
    let missing: Vec<&str> = required
        .split_whitespace()
        .filter(|s| !exported.contains(s))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
}

/// A path spelled as a directory ("f/", "f/.") must name one: `rm f/` once deleted the
/// file `f`, `cat f/` printed it and `echo x > n/` made a file `n`.
#[test]
fn trailing_slash_names_a_directory() {
    let s = Setup::new();
    let shell = r#"echo data > f; mkdir d; ln -s d ld; ln -s f lf
cat f/ || echo "cat: $?"
rm f/ || echo "rm: $?"
rm -f f/ || echo "rm -f: $?"
echo x > n/ || echo "redirect: $?"
touch t/ || echo "touch: $?"
mv f/ g || echo "mv: $?"
mv f g/ || echo "mv to dir: $?"
mkdir d2 && mv d2 d3/ && echo "mv dir to dir/: ok"
ls -F
cat f
set -e
cd d/ && cd .. && ls d/ ld/ d/. && echo listed"#;
    s.same("slash-shell", &prelude(shell));
    let py = r#"
import os
os.makedirs(os.environ["D"]); os.chdir(os.environ["D"])
open("f", "w").write("data"); os.mkdir("d"); os.symlink("d", "ld"); os.symlink("f", "lf")
def t(name, fn):
    try:
        r = fn()
        print(name, "ok", oct(r.st_mode) if hasattr(r, "st_mode") else "")
    except OSError as e:
        print(name, os.strerror(e.errno))
for p in ["f/", "f/.", "n/", "d/", "d/.", "ld/", "lf/"]:
    t("stat " + p, lambda: os.stat(p))
    t("lstat " + p, lambda: os.lstat(p))
    t("access " + p, lambda: os.access(p, 0) or os.stat(p))
    t("open " + p, lambda: os.close(os.open(p, os.O_RDONLY)))
    t("creat " + p, lambda: os.close(os.open(p, os.O_CREAT | os.O_WRONLY)))
    t("chmod " + p, lambda: os.chmod(p, 0o755))
    t("truncate " + p, lambda: os.truncate(p, 0))
    t("utime " + p, lambda: os.utime(p))
    t("readlink " + p, lambda: os.readlink(p))
    t("unlink " + p, lambda: os.unlink(p))
    t("rmdir " + p, lambda: os.rmdir(p))
    t("symlink " + p, lambda: os.symlink("x", p))
    t("mkfifo " + p, lambda: os.mkfifo(p))
    t("rename from " + p, lambda: os.rename(p, "other"))
    t("mkdir " + p, lambda: os.mkdir(p))
t("rename f to new/", lambda: os.rename("f", "new/"))
t("rename d to e/", lambda: os.rename("d", "e/"))
t("rename e/ to d/", lambda: os.rename("e/", "d/"))
print(sorted(os.listdir(".")), open("f").read())
"#;
    s.same("slash-calls", &format!("python3 - <<'EOF'\n{py}\nEOF"));
}

/// A program that read a file and closed it holds nothing of it open: the chunk files
/// the library kept open to read the file's node-local chunks itself close with the
/// file's last descriptor (a chunk file kept open would keep its space after `rm`).
#[test]
fn a_closed_file_keeps_no_chunk_file_open() {
    let s = Setup::new();
    let py = r#"
import os
def fds():
    return len(os.listdir("/proc/self/fd"))
os.mkdir(os.environ["D"])
os.chdir(os.environ["D"])
for name in ("warm", "big"):
    with open(name, "wb") as f:
        f.write(os.urandom(3 << 20))
with open("warm", "rb") as f:
    f.read()
before = fds()
f = open("big", "rb")
assert len(f.read()) == 3 << 20
reading = fds()
f.close()
print(reading - before > 1, fds() - before)
"#;
    let (out, _, _) = s.run("kept", &format!("python3 - <<'EOF'\n{py}\nEOF"), true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "True 0",
        "descriptors while reading, and left after the close"
    );
}

/// The library's own descriptors once sat at low numbers: `exec 3> f; echo a >&3` in
/// bash wrote into the daemon connection (EIO, or status 0 and an empty file), and a
/// program's dup2/close_range/closefrom over low numbers cut the connection.
#[test]
fn programs_choose_any_descriptor_number() {
    let mut s = Setup::new();
    descriptor_numbers(&s, "local");
    // libfabric's own sockets, epoll and event fds too.
    s.env.push(("LIBGKFS_TRANSPORT", "fabric"));
    descriptor_numbers(&s, "fabric");
}

fn descriptor_numbers(s: &Setup, carrier: &str) {
    let mut shell = String::new();
    for n in 3..=9 {
        shell += &format!(
            "exec {n}> f{n}\necho via{n} >&{n}\n/bin/echo external{n} >&{n}\nexec {n}>&-\n\
             exec {n}< f{n}\nread -r -u {n} first\necho \"f{n}: $first, then $(cat <&{n})\"\nexec {n}<&-\n\
             exec {n}>> f{n}\necho appended{n} >&{n}\nexec {n}>&-\n"
        );
    }
    shell += "cat f3 f9\nexec 3>&- 4<&- 9>&- || echo closing closed fds: $?\nls\n";
    s.same(&format!("fd-numbers-shell-{carrier}"), &prelude(&shell));

    let probe = c_probe(s, "fd_probe");
    let out = s.same(
        &format!("fd-numbers-probe-{carrier}"),
        &format!("mkdir \"$D\" && {} \"$D\"", probe.display()),
    );
    assert!(
        out.contains("bytes that reached the program's pipe: 0"),
        "{out}"
    );

    let py = r#"
import os, subprocess
d = os.environ["D"]
os.makedirs(d); os.chdir(d)
with open("x", "w") as f:
    f.write("x" * 100)
fd = os.open("x", os.O_RDONLY)
os.dup2(fd, 5)
r = subprocess.run(["cat", "/dev/fd/5"], pass_fds=(5,), capture_output=True)
print("pass_fds:", r.returncode, len(r.stdout))
print("readlink:", os.readlink("/proc/self/fd/5") == os.path.join(d, "x"))
print("stat:", os.stat("/dev/fd/5").st_size, os.stat("/proc/%d/fd/5" % os.getpid()).st_size)
os.closerange(3, 4096)
with open("y", "w") as f:
    f.write("after closerange")
print(open("y").read(), len(open("x").read()))
r = subprocess.run("exec 3>z; echo shell >&3; cat z", shell=True, capture_output=True, text=True)
print(repr(r.stdout), r.returncode)
"#;
    s.same(
        &format!("fd-numbers-python-{carrier}"),
        &format!("python3 - <<'EOF'\n{py}\nEOF"),
    );
}

/// An open of a gkfs file costs one system call of its own (the `O_PATH` open of a
/// description page made earlier) and a close only the kernel's close. In a trace of
/// every system call of the program (strace), each open must be: the request and reply
/// on a daemon's channel (if they took a system call at all), then that `O_PATH` open
/// as the last call. One file is open at a time, so the page of the last one serves
/// again: nothing is made, closed or unmapped.
#[test]
fn an_open_costs_one_system_call_and_a_close_only_the_kernels() {
    let s = Setup::new();
    let probe = c_probe(&s, "open_cost");
    let trace = s.work.path().join("trace");
    let dir = format!("{}/cost", s.cluster.mountdir);
    const FILES: usize = 40;
    let out = Command::new("strace")
        .args(["-qq", "-o"])
        .arg(&trace)
        .arg("-E")
        .arg(format!("LD_PRELOAD={}", s.lib.display()))
        .arg("-E")
        .arg(format!(
            "LIBGKFS_HOSTS_FILE={}",
            s.cluster.hosts_file.display()
        ))
        .arg(&probe)
        .arg(&dir)
        .arg(FILES.to_string())
        .output()
        .expect("strace is needed for this test");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("---") && !l.starts_with("+++") && !l.starts_with("futex("))
        .collect();
    // "name(fd, ..." -> fd; "... = N" -> N.
    fn fd_arg(l: &str) -> Option<i64> {
        let (_, r) = l.split_once('(')?;
        r.split([',', ')']).next()?.parse().ok()
    }
    fn ret(l: &str) -> Option<i64> {
        l.rsplit_once("= ")?.1.split(' ').next()?.parse().ok()
    }
    // The connections to the daemons (one each).
    let channels: Vec<i64> = calls
        .iter()
        .filter(|l| l.starts_with("connect(") && l.contains("AF_UNIX"))
        .filter_map(|l| fd_arg(l))
        .collect();
    assert!(
        !channels.is_empty(),
        "no connection to a daemon in the trace:\n{text}"
    );
    // The library's descriptors are the first connection's and higher.
    let library_fd = |l: &str| fd_arg(l).is_some_and(|fd| fd >= channels[0]);
    let on_channel = |l: &str| fd_arg(l).is_some_and(|fd| channels.contains(&fd));
    let markers: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].starts_with("getppid("))
        .collect();
    assert_eq!(
        markers.len(),
        2 * FILES * 3,
        "markers in the trace:\n{text}"
    );
    // Where each memfd number was last made (index into `calls`).
    let mut made = std::collections::HashMap::new();
    let mut scanned = 0;
    // The first opens set up the connection and find no page made ahead yet.
    const WARM: usize = 5;
    for pass in 0..2 {
        for i in 0..FILES {
            let seg = (pass * FILES + i) * 3;
            let (start, end) = (markers[seg] + 1, markers[seg + 1]);
            for j in scanned..end {
                if calls[j].starts_with("fcntl(")
                    && calls[j].contains("F_DUPFD_CLOEXEC")
                    && j > 0
                    && calls[j - 1].starts_with("memfd_create(\"gkfs\"")
                {
                    made.insert(ret(calls[j]).unwrap_or(-1).to_string(), j);
                }
            }
            scanned = end;
            if i < WARM {
                continue;
            }
            let open = &calls[start..end];
            let what = format!("open {i} of pass {pass}: {open:#?}");
            let last = open.last().unwrap_or(&"");
            let page = last
                .strip_prefix("openat(")
                .filter(|_| last.contains("O_PATH"))
                .and_then(|r| r.split('"').nth(1))
                .unwrap_or_else(|| panic!("{what}: the last call is not the O_PATH open"));
            assert!(
                made.get(page).is_some_and(|&j| j < start),
                "{what}: {page} is not a description page the library made before the open"
            );
            let work: Vec<_> = open[..open.len() - 1]
                .iter()
                .filter(|l| !on_channel(l))
                .collect();
            assert!(
                work.is_empty(),
                "{what}: calls of the open's own: {work:#?}"
            );
            let close = &calls[markers[seg + 1] + 1..markers[seg + 2]];
            assert!(
                close.len() == 1 && close[0].starts_with("close(") && !library_fd(close[0]),
                "close {i} of pass {pass}: {close:#?}"
            );
        }
    }
}

/// The page of a description ends up serving another file only when no other process
/// can hold it: here a forked child still reads its copy of the parent's descriptor
/// after the parent closed it and opened other files.
#[test]
fn a_description_a_child_still_holds_serves_no_other_file() {
    let s = Setup::new();
    s.same(
        "reuse-after-fork",
        &prelude(
            r#"echo first file > a
exec 3< a
(sleep 0.5; echo "child reads: $(cat <&3)") &
exec 3<&-
for i in 1 2 3 4 5 6 7 8 9 10; do echo "file $i" > "f$i"; exec 4< "f$i"; exec 4<&-; done
wait
cat f10"#,
        ),
    );
    // The same with a child that Python's subprocess starts with vfork and exec, and
    // one that libc's popen starts.
    let py = r#"
import ctypes, os, subprocess, sys
d = os.environ["D"]
os.makedirs(d); os.chdir(d)
open("a", "w").write("first file\n")
fd = os.open("a", os.O_RDONLY)
child = subprocess.Popen(["sh", "-c", "sleep 0.3; echo child reads: $(cat <&%d)" % fd], pass_fds=(fd,))
os.close(fd)
fd = os.open("a", os.O_RDONLY)
os.set_inheritable(fd, True)
libc = ctypes.CDLL(None)
libc.popen.restype = ctypes.c_void_p
libc.pclose.argtypes = [ctypes.c_void_p]
sys.stdout.flush()
piped = libc.popen(b"sleep 0.8; echo popen child reads: $(cat <&%d)" % fd, b"w")
os.close(fd)
for i in range(10):
    open("f%d" % i, "w").write("file %d\n" % i)
    os.close(os.open("f%d" % i, os.O_RDONLY))
child.wait()
libc.pclose(piped)
"#;
    s.same(
        "reuse-after-vfork",
        &format!("python3 - <<'EOF'\n{py}\nEOF"),
    );
}

/// Compiles one of the C probes in `tests/c` into the scenario's work dir.
fn c_probe(s: &Setup, name: &str) -> PathBuf {
    let out = s.work.path().join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("c/{name}.c"));
    let st = Command::new("cc")
        .args([
            "-O1",
            "-D_FORTIFY_SOURCE=2",
            "-Wall",
            "-Wno-deprecated-declarations",
            "-Wno-unused-result",
            "-Wno-nonnull",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed for this test");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

/// glibc's mkstemp family, mkdtemp, mktemp, remove, glob, nftw and ftw reach files
/// with glibc-internal calls: on gkfs they failed (ENOENT) or saw nothing, and git
/// could not create a temporary file.
#[test]
fn glibc_functions_with_internal_calls() {
    let s = Setup::new();
    let probe = c_probe(&s, "glibc_probe");
    let out = s.same(
        "glibc-probe",
        &format!("mkdir \"$D\" && {} \"$D\" | sort", probe.display()),
    );
    assert!(out.contains("nftw /g/sub/d.c flag 0 level 2"), "{out}");
    s.same(
        "git",
        &prelude(
            r#"git init -q -b main repo; cd repo
git config user.email t@example.com; git config user.name T
printf 'hello\n' > a.txt; mkdir sub; printf 'x\n' > sub/b.txt
git add .; git commit -q -m first
git status --short
echo more >> a.txt; git commit -qam second
git log --format=%s
git branch feature; git checkout -q feature; echo f > f.txt; git add f.txt; git commit -qm feat
git checkout -q main; git merge -q --no-edit feature; ls
git tag v1; git stash list; git diff HEAD~1 --stat | tail -1
git gc -q; git fsck 2>&1; git log --oneline | wc -l; git status --short"#,
        ),
    );
    s.same(
        "temp-tools",
        &prelude(
            r#"perl -MFile::Temp=tempfile -e '($fh, $n) = tempfile(DIR => "."); print $fh "perl\n"; close $fh; open(F, $n); print "perl: ", <F>; unlink $n'
seq 100000 | sort -R --random-source=/dev/zero > in
sort -n -S 64K -T . in | md5sum
printf 'a\nb\n' > s; sed -i 's/a/A/' s; cat s; ls"#,
        ),
    );
}

/// fcntl, OFD and flock locks between processes, as on a local file system: who holds
/// what (F_GETLK), shared and exclusive, ranges, POSIX locks dropped by any close of
/// the file, OFD locks per description, and a killed holder's locks released at once.
/// (Across nodes: slurm.rs `locks_hold_across_nodes`.)
#[test]
fn locks_between_processes() {
    let s = Setup::new();
    let py = r#"
import fcntl, os, signal, struct, subprocess, sys, time
d = os.environ["D"]
os.makedirs(d); os.chdir(d)
open("f", "w").write("x" * 100)
FL = "hh4xqqi4x"
def getlk(fd, start, length, cmd=fcntl.F_GETLK, kind=fcntl.F_WRLCK):
    t, w, s, l, p = struct.unpack(FL, fcntl.fcntl(fd, cmd, struct.pack(FL, kind, 0, start, length, 0)))
    return t, s, l, p
holder = subprocess.Popen([sys.executable, "-c", """
import fcntl, os, sys, time
fd = os.open("f", os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
fcntl.lockf(fd, fcntl.LOCK_SH, 10, 50)
fcntl.flock(fd, fcntl.LOCK_SH)
print("ready", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline() == "ready\n"
fd = os.open("f", os.O_RDWR)
t, st, ln, pid = getlk(fd, 5, 1)
print("F_GETLK [5,6):", t == fcntl.F_WRLCK, st, ln, pid == holder.pid)
t, st, ln, pid = getlk(fd, 55, 1, kind=fcntl.F_RDLCK)
print("F_GETLK read [55,56):", t == fcntl.F_UNLCK)
t, st, ln, pid = getlk(fd, 55, 1)
print("F_GETLK write [55,56):", t == fcntl.F_RDLCK, st, ln)
def try_(name, f):
    try:
        f(); print(name, "granted")
    except OSError as e:
        print(name, os.strerror(e.errno))
try_("lockf [0,10) EX NB", lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0))
try_("lockf [10,20) EX NB", lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10))
try_("lockf [50,60) SH NB", lambda: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 10, 50))
try_("flock SH NB", lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB))
try_("flock EX NB", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
fd2 = os.open("f", os.O_RDWR)
try_("OFD [30,40) on fd", lambda: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(FL, fcntl.F_WRLCK, 0, 30, 10, 0)))
try_("OFD [30,40) on a second description", lambda: fcntl.fcntl(fd2, fcntl.F_OFD_SETLK, struct.pack(FL, fcntl.F_WRLCK, 0, 30, 10, 0)))
try_("POSIX [30,40) of this process", lambda: fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 30))
os.kill(holder.pid, signal.SIGKILL); holder.wait()
t0 = time.time()
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
print("blocking lockf after the holder was killed, within 2 s:", time.time() - t0 < 2)
try_("flock EX NB after the kill", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
# POSIX locks go with any close of the file by their process.
other = subprocess.run([sys.executable, "-c", """
import fcntl, os
a = os.open("f", os.O_RDWR); b = os.open("f", os.O_RDONLY)
fcntl.lockf(a, fcntl.LOCK_EX, 5, 90)
os.close(b)
c = os.open("f", os.O_RDWR)
pid = os.fork()
if pid == 0:
    try:
        fcntl.lockf(c, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 90); print("child: granted")
    except OSError as e:
        print("child:", os.strerror(e.errno))
    os._exit(0)
os.waitpid(pid, 0)
"""], capture_output=True, text=True)
print("after closing another fd of the file:", other.stdout.strip(), other.stderr.strip())
"#;
    s.same("locks", &format!("python3 - <<'EOF'\n{py}\nEOF"));
}

/// A file unlinked while open stays usable through its descriptors until the last
/// close (the temp-file pattern), a rename moves open descriptors with it, and a file
/// replaced by a rename keeps its data for whoever has it open. Once the read after an
/// unlink failed with ENOENT, and Python's TemporaryFile with it.
#[test]
fn files_unlinked_or_renamed_while_open() {
    let s = Setup::new();
    let py = r#"
import os, sqlite3, subprocess, tempfile
d = os.environ["D"]
os.makedirs(d); os.chdir(d)
fd = os.open("t", os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"before")
os.unlink("t")
print("after unlink: exists", os.path.exists("t"), "listed", os.listdir("."))
os.write(fd, b" after")
print("read back:", os.pread(fd, 100, 0), "fstat size", os.fstat(fd).st_size, "links", os.fstat(fd).st_nlink)
dup = os.dup(fd)
os.close(fd)
print("through a dup after the first close:", os.pread(dup, 6, 0))
os.close(dup)
open("t", "w").write("a new file of that name")
print("new file:", open("t").read())
a = open("a", "w+"); a.write("A data"); a.flush()
os.rename("a", "b")
a.write(" more"); a.flush(); a.seek(0)
print("renamed while open:", a.read(), sorted(os.listdir(".")), open("b").read())
os.mkdir("dir"); f = open("dir/in", "w+"); os.rename("dir", "dir2")
f.write("moved with its dir"); f.flush(); f.seek(0)
print("dir renamed:", f.read(), open("dir2/in").read())
old = open("b"); open("c", "w").write("C")
os.rename("c", "b")
print("replaced by a rename:", old.read(), open("b").read())
old.close(); a.close(); f.close()
with tempfile.TemporaryFile(dir=".") as t:
    t.write(b"x" * 100000); t.seek(0); print("TemporaryFile:", len(t.read()))
tfd, tname = tempfile.mkstemp(dir=".", suffix=".s"); os.write(tfd, b"mk"); os.close(tfd)
print("mkstemp:", open(tname).read(), oct(os.stat(tname).st_mode & 0o777), tname.endswith(".s")); os.unlink(tname)
tdir = tempfile.mkdtemp(dir="."); print("mkdtemp:", oct(os.stat(tdir).st_mode & 0o777)); os.rmdir(tdir)
with tempfile.NamedTemporaryFile(dir=".") as nt:
    nt.write(b"named"); nt.flush(); print("NamedTemporaryFile:", open(nt.name).read())
with tempfile.TemporaryDirectory(dir=".") as td:
    open(os.path.join(td, "x"), "w").write("1"); print("TemporaryDirectory:", os.listdir(td))
tfd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(tfd, b"nameless"); print("O_TMPFILE:", os.pread(tfd, 8, 0), sorted(os.listdir(".")))
os.close(tfd)
db = sqlite3.connect("s.db"); db.execute("pragma temp_store=FILE")
db.execute("create temp table big(x)"); db.executemany("insert into big values (?)", [(i,) for i in range(20000)])
print("sqlite temp table:", db.execute("select count(*), sum(x) from big").fetchone()); db.close()
out = open("out", "w")
print("subprocess stdout to a file:", subprocess.run(["echo", "from a child"], stdout=out).returncode)
out.close(); print(open("out").read().strip())
p = subprocess.run("cat", input=b"through pipes", capture_output=True); print(p.stdout)
inp = open("out"); print(subprocess.run(["cat"], stdin=inp, capture_output=True, text=True).stdout.strip())
print(sorted(os.listdir(".")))
"#;
    s.same("unlinked-open", &format!("python3 - <<'EOF'\n{py}\nEOF"));
    s.same(
        "unlinked-tools",
        &prelude(
            r#"seq 300000 | sort -R --random-source=/dev/zero > in
sort -n -S 100K -T . in | md5sum
ls"#,
        ),
    );
}

/// Child processes get gkfs files by every route programs use: Python's subprocess
/// (vfork, dup2 in the child) with stdout/stdin files, posix_spawn file actions that
/// open gkfs paths (absolute, or relative to a gkfs working directory) or dup2 gkfs
/// fds, and subprocess's `cwd=` a gkfs directory (a chdir in the vfork child). These
/// once failed with EBADF or ENOENT, or opened a relative path on the real disk.
#[test]
fn children_get_gkfs_files_by_every_route() {
    let s = Setup::new();
    let py = r#"
import os, subprocess
d = os.environ["D"]
os.makedirs(d); os.chdir(d)
with open("out", "w") as out:
    print("run:", subprocess.run(["echo", "from a child"], stdout=out).returncode)
print(open("out").read().strip())
with open("out") as inp:
    print("stdin:", subprocess.run(["tr", "a-z", "A-Z"], stdin=inp, capture_output=True, text=True).stdout.strip())
with open("both", "w") as both:
    subprocess.run("echo o; echo e >&2", shell=True, stdout=both, stderr=subprocess.STDOUT)
print("both:", open("both").read().split())
pid = os.posix_spawn("/bin/sh", ["sh", "-c", "echo spawned; cat"], os.environ, file_actions=[
    (os.POSIX_SPAWN_OPEN, 1, os.path.join(d, "abs"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    (os.POSIX_SPAWN_OPEN, 0, "out", os.O_RDONLY, 0)])
os.waitpid(pid, 0)
print("spawn open:", open("abs").read().split())
fd = os.open("dup", os.O_WRONLY | os.O_CREAT, 0o644)
pid = os.posix_spawn("/bin/echo", ["echo", "via dup2"], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1)])
os.waitpid(pid, 0); os.close(fd)
print("spawn dup2:", open("dup").read().strip())
os.makedirs("sub"); open("sub/f", "w").write("in sub\n")
print("cwd=:", subprocess.run(["cat", "f"], cwd=os.path.join(d, "sub"), capture_output=True, text=True).stdout.strip())
print("cwd= relative:", subprocess.run("cat f; pwd", shell=True, cwd="sub", capture_output=True, text=True).stdout.split())
print("cwd= real:", subprocess.run(["pwd"], cwd="/", capture_output=True, text=True).stdout.strip())
print(sorted(os.listdir(".")))
"#;
    s.same("children", &format!("python3 - <<'EOF'\n{py}\nEOF"));
    // A relative path that reaches the kernel without the library (a direct system
    // call) while the working directory is in gkfs finds an empty, removed directory:
    // nothing lands on the disk below.
    let real = s.work.path().join("real-cwd");
    fs::create_dir_all(&real).unwrap();
    let script = format!(
        r#"cd {real} && mkdir $D && cd $D && python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(257, -100, b"leak", os.O_CREAT | os.O_WRONLY, 0o644)
print("direct openat:", fd, os.strerror(ctypes.get_errno()) if fd < 0 else "created")
print("cwd:", os.getcwd() == os.environ["D"])'"#,
        real = real.display()
    );
    let (o, _, _) = s.run("void", &script, true);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("direct openat: -1 No such file or directory"),
        "{out}"
    );
    assert!(out.contains("cwd: True"), "{out}");
    assert_eq!(
        fs::read_dir(&real).unwrap().count(),
        0,
        "a file reached the real disk"
    );
}

/// Symlinks in any component of a path, as the kernel resolves them: relative and
/// absolute targets, chains, `..` inside a target, targets out of gkfs, loops (ELOOP),
/// dangling links, and the calls that must not follow a last-component link. Once
/// `cat link/inner` failed with ENOTDIR, and `tar x` of a dangling link failed to chmod.
#[test]
fn symlinks_in_any_component() {
    let s = Setup::new();
    let shell = r#"mkdir -p d/deep x/y; echo in > d/inner; echo deeper > d/deep/f
ln -s d link; ln -s "$D/d" abs; ln -s link chain; ln -s ../d x/up; ln -s ../../d x/y/up2
ln -s loop1 loop2; ln -s loop2 loop1; ln -s nowhere dang; ln -s "$T" outside
cat link/inner abs/inner chain/inner x/up/inner x/y/up2/deep/f link/deep/f
ls link/ chain/deep; ls -l link/inner | cut -c1-10
echo new > link/new; cat d/new; mkdir link/sub; touch chain/sub/t; ls d d/sub
mv link/new link/renamed; ls d; rm link/renamed; ls d
cat loop1/x 2>&1 | sed 's/^cat: //'
cat dang/x 2>&1 | sed 's/^cat: //'
echo out > outside/file; cat "$T/file"; ls outside
(cd link && pwd && cat inner && cd deep && cat f)
mkdir tarsrc; ln -s does-not-exist tarsrc/dangling; ln -s ../d tarsrc/rel; echo t > tarsrc/f
tar cf t.tar tarsrc && mkdir tarout && tar xf t.tar -C tarout && ls -l tarout/tarsrc | grep -v '^total' | cut -c1-10,40- | sort
find -L link -type f | sort; find chain/ | sort
ln -s "$D/d" "$T/into"; cat "$T/into/inner" "$T/into/deep/f"; ls "$T/into"; echo w > "$T/into/w"; cat d/w
ln -s "$T/into" "$T/into2"; cat "$T/into2/w"; ln -s "$D/d/inner" "$T/file-link"; cat "$T/file-link"
(cd "$T/into" && cat inner && ls deep)
cat "$T/into/missing" 2>&1 | sed "s|$T|\$T|"
echo f > plain; for c in "rm plain/x" "rmdir plain/x" "mv plain/x y" "mkfifo plain/x" "mkfifo nodir/x"; do $c 2>&1 || true; done
mkdir -p p/q; echo pq > p/file; ln -s p/q lq; cat lq/../file; ls lq/.. | sort; cat x/up/../d/inner
python3 -c 'import os; print(os.path.exists("lq/../file"), sorted(os.listdir("x/up/..")))' | tr -d "[]',""#;
    s.same("symlink-components", &prelude(shell));
    let py = r#"
import os, shutil, stat
d = os.environ["D"]
os.makedirs(d + "/d/sub"); os.chdir(d)
open("d/f", "w").write("f"); open("d/sub/g", "w").write("g")
os.symlink("d", "ld"); os.symlink("f", "d/lf"); os.symlink("missing", "dang")
print(os.stat("ld/sub/g").st_size, stat.S_ISLNK(os.lstat("ld/lf").st_mode), os.listdir("ld/sub"))
def t(name, fn):
    try:
        r = fn(); print(name, "ok")
    except (OSError, NotImplementedError) as e:
        print(name, type(e).__name__, getattr(e, "errno", None))
t("open O_NOFOLLOW of a link", lambda: os.open("ld/lf", os.O_RDONLY | os.O_NOFOLLOW))
t("open O_NOFOLLOW through a dir link", lambda: os.close(os.open("ld/f", os.O_RDONLY | os.O_NOFOLLOW)))
t("chmod nofollow of a link", lambda: os.chmod("dang", 0o700, follow_symlinks=False))
t("chmod of a dangling link", lambda: os.chmod("dang", 0o700))
t("utime nofollow of a link", lambda: os.utime("dang", (1, 1), follow_symlinks=False))
t("lstat time", lambda: print(os.lstat("dang").st_mtime == 1.0))
t("access nofollow", lambda: print(os.access("dang", os.F_OK, follow_symlinks=False), os.access("dang", os.F_OK)))
t("stat nofollow of a dangling link", lambda: print(stat.S_ISLNK(os.stat("dang", follow_symlinks=False).st_mode)))
for root, dirs, files in sorted(os.walk(".", followlinks=True)):
    print(root, sorted(dirs), sorted(files))
shutil.copytree("d", "copy", symlinks=True)
print(sorted(os.listdir("copy")), os.readlink("copy/lf"), open("copy/lf").read())
print(os.path.realpath("ld/sub/g") == os.path.join(d, "d/sub/g"), os.path.realpath("ld/lf") == os.path.join(d, "d/f"))
"#;
    s.same("symlink-calls", &format!("python3 - <<'EOF'\n{py}\nEOF"));
}

/// Hard links: `ln` once answered EPERM. Same inode number, link counts, data and
/// attributes shared by every name, data gone with the last name, rename onto and
/// over links, links across directories; tar, rsync -H, cpio and cp -al keep them.
#[test]
fn hard_links() {
    let s = Setup::new();
    s.same("hard-links", &prelude(r#"echo data > a; ln a b; ls -li a b | awk '{print $3, $6, $NF}'
[ "$(stat -c %i a)" = "$(stat -c %i b)" ] && echo "same inode"
echo more >> b; cat a; stat -c '%h %s' a b
mkdir sub; ln b sub/c; stat -c %h a; rm a; stat -c '%h' b; cat sub/c
mv sub/c c2; cat c2; stat -c %h b c2
echo x > other; mv other b; cat b; stat -c %h c2 b
ln c2 c3; python3 -c 'import os; os.rename("c2", "c3")'; ls; stat -c %h c2 c3
chmod 600 c3; stat -c %a c2
ln sub nolink 2>&1 | sed 's/^ln: //' || true
ln missing m2 2>&1 | sed 's/^ln: //' || true
ln c2 c3 2>&1 | sed 's/^ln: //' || true
rm c2 c3; ls
mkdir t; echo one > t/f; ln t/f t/g; mkdir t/d; ln t/f t/d/h
tar cf t.tar t; mkdir x; tar xf t.tar -C x; stat -c '%h %n' x/t/f x/t/g x/t/d/h
rsync -aH t/ r/; stat -c '%h %n' r/f r/g r/d/h
(cd t && find . | cpio -pdm --quiet ../cp) ; stat -c '%h %n' cp/f cp/g
cp -al t cl; stat -c '%h' t/f
python3 -c '
import os
os.link("t/f", "pl"); print(os.stat("pl").st_nlink, os.stat("pl").st_ino == os.stat("t/f").st_ino, os.path.samefile("pl", "t/f"))
'
"#));
}

/// rsync -a both ways with a tree of symlinks, hard links, modes and times (once it
/// failed with `change_dir#2 ... failed`), make on a small C project, cpio, sed -i.
#[test]
fn rsync_make_cpio_sed() {
    let s = Setup::new();
    s.same(
        "everyday",
        &prelude(
            r#"mkdir -p src/d/e; echo a > src/a; chmod 640 src/a; echo b > src/d/b; ln src/a src/hard
ln -s a src/la; ln -s d src/ld; ln -s ../a src/d/up; touch -d '2020-01-02 03:04:05' src/a src/d/b
cp "$S/big.bin" src/
rsync -aH src/ copy/
stat -c '%A %h %Y %N' copy/a copy/hard copy/d/b | sort; stat -c '%A %h %N' copy/la copy/ld copy/d/up | sort
for l in la ld d/up; do [ "$(stat -c %Y src/$l)" = "$(stat -c %Y copy/$l)" ] && echo "time of $l kept"; done
cmp src/big.bin copy/big.bin && echo "big identical"
echo changed > src/d/b; rsync -a --itemize-changes src/ copy/ | sort
rsync -aH copy/ "$T/back/"; diff -r src "$T/back" && echo "back out identical"
rsync -a --delete "$T/back/" copy2/ && ls copy2
mkdir proj; cd proj
printf '#include "h.h"\nint main(void){return f()-42;}\n' > main.c
printf 'int f(void);\n' > h.h; printf 'int f(void){return 42;}\n' > f.c
printf 'app: main.o f.o\n\tcc -o app main.o f.o\n%%.o: %%.c h.h\n\tcc -c $<\n' > Makefile
make -s && ./app && echo "built and ran"; make -s && echo "nothing to do"
touch f.c; make | sort; cd ..
find src | sort | cpio -o --quiet > a.cpio; mkdir cp; (cd cp && cpio -id --quiet < ../a.cpio); diff -r src cp/src && echo "cpio identical"
printf 'one\ntwo\n' > s.txt; sed -i 's/one/ONE/' s.txt; sed -i.bak 's/two/TWO/' s.txt; cat s.txt s.txt.bak"#,
        ),
    );
}

/// Runs `script` in bash under the preload with exactly this gkfs environment.
fn run_with_env(lib: &Path, env: &[(&str, &str)], script: &str) -> Output {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .env_remove("LIBGKFS_HOSTS_FILE")
        .env_remove("LIBGKFS_MOUNTDIR")
        .env("LD_PRELOAD", lib)
        .env("LIBGKFS_TIMEOUT_MS", "5000");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// A damaged or missing hosts file once disabled the library without a word, and a
/// job's results went to the node's own /tmp. Now every call under the mount dir fails
/// (EIO), one line on stderr names the problem, and programs elsewhere still work.
#[test]
fn broken_config_fails_loudly_and_never_reaches_the_disk() {
    let s = Setup {
        cluster: Cluster::start(2),
        lib: lib(),
        work: tempfile::tempdir().unwrap(),
        env: Vec::new(),
    };
    let m = s.cluster.mountdir.clone();
    let good = fs::read_to_string(&s.cluster.hosts_file).unwrap();
    let lines: Vec<&str> = good.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2);
    let changed_chunk = format!(
        "{}\n{}\n",
        lines[0],
        lines[1].replace(
            &format!("chunk_size={}", s.cluster.chunk_size),
            "chunk_size=65536"
        )
    );
    let truncated = format!("{}\n{}\n", lines[0], &lines[1][..lines[1].len() / 3]);
    let dir = s.cluster.dir();
    let script = format!(
        "echo elsewhere-ok; cat /etc/hostname >/dev/null && echo real-files-ok
mkdir -p {m}/out && echo r > {m}/out/res; echo \"status $?\"
ls {m} 2>&1 | sed 's/.*: //'; cat {m}/out/res 2>&1 | sed 's/.*: //'"
    );
    // (what, hosts file text, LIBGKFS_MOUNTDIR set?)
    let cases = [
        ("changed chunk_size", changed_chunk, false),
        ("truncated line", truncated, false),
        ("missing file", String::new(), true),
        ("empty file", "\n".to_string(), true),
    ];
    for (what, text, with_mountdir) in cases {
        let extra: Vec<(&str, String)> = if with_mountdir {
            vec![("LIBGKFS_MOUNTDIR", m.clone())]
        } else {
            vec![]
        };
        let hosts = dir.join(format!("hosts-{}", what.replace(' ', "-")));
        if what != "missing file" {
            fs::write(&hosts, &text).unwrap();
        }
        let token = dir.join("token").display().to_string();
        let hosts_s = hosts.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("LIBGKFS_HOSTS_FILE", &hosts_s),
            ("LIBGKFS_TOKEN_FILE", &token),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let o = run_with_env(&s.lib, &env, &script);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            out.starts_with("elsewhere-ok\nreal-files-ok\n"),
            "{what}: {out}\n{err}"
        );
        assert!(
            !out.contains("status 0"),
            "{what}: the write succeeded: {out}"
        );
        assert!(
            out.contains("Input/output error"),
            "{what}: not EIO: {out}\n{err}"
        );
        assert!(
            !Path::new(&m).exists(),
            "{what}: the job's files went to the local disk under {m}"
        );
        // One line per process that touched the mount dir, naming the file.
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("gkfs[")).collect();
        assert!(!lines.is_empty(), "{what}: no message on stderr: {err}");
        for l in &lines {
            assert!(
                l.contains(&hosts_s) && l.contains(&m),
                "{what}: the line does not name the hosts file and mount dir: {l}"
            );
        }
        if what == "truncated line" || what == "changed chunk_size" {
            assert!(
                lines[0].contains(&format!("{hosts_s}:2:")),
                "{what}: {}",
                lines[0]
            );
        }
    }
}

/// Names in gkfs are UTF-8; a path under the mount dir that is not once went to the
/// disk below when the directory existed there. It fails with EILSEQ now.
#[test]
fn non_utf8_paths_under_the_mount_dir_never_reach_the_disk() {
    let s = Setup::new();
    let m = s.cluster.mountdir.clone();
    // A real directory of the same name, so that a fall-through would succeed.
    fs::create_dir_all(&m).unwrap();
    let _cleanup = RemoveOnDrop(PathBuf::from(&m));
    let py = format!(
        r#"
import os
m = b"{m}"
for p in [m + b"/bad\xff", m + b"/d\xfe/x", m + b"/./\xff/../y"]:
    try:
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY))
        print("created", p)
    except OSError as e:
        print(os.strerror(e.errno))
os.chdir(m)
try:
    os.mkdir(b"rel\xff")
    print("mkdir ok")
except OSError as e:
    print(os.strerror(e.errno))
print(sorted(os.listdir(m)))
"#
    );
    let (o, _, _) = s.run("utf8", &format!("python3 - <<'EOF'\n{py}\nEOF"), true);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out,
        "Invalid or incomplete multibyte or wide character\n".repeat(4) + "[]\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        fs::read_dir(&m).unwrap().count(),
        0,
        "files landed on the disk"
    );
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs python `code` through the preload library on `s`'s cluster with `env`; returns
/// its stdout (it must succeed).
fn python_on(s: &Setup, code: &str, env: &[(&str, &str)]) -> String {
    let o = Command::new("python3")
        .arg("-c")
        .arg(code)
        .env("LD_PRELOAD", &s.lib)
        .env("LIBGKFS_HOSTS_FILE", &s.cluster.hosts_file)
        .env("M", &s.cluster.mountdir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.cluster.logs()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two daemons, one without a node-local socket: to clients it is a daemon on another
/// node, reached through libfabric or relayed by the other one, this node's.
fn two_nodes() -> Cluster {
    let provider = std::env::var("GKFS_TEST_PROVIDER").unwrap_or_else(|_| "tcp;ofi_rxm".into());
    Cluster::start_custom(2, 512 * 1024, &provider, None, &|i| {
        if i == 1 {
            vec!["--socket".into(), "none".into()]
        } else {
            Vec::new()
        }
    })
}

/// The index in the hosts file of [`two_nodes`]' daemon with a socket (this node's).
fn this_nodes_daemon(s: &Setup) -> u32 {
    let hosts = gkfs_proto::hosts::Hosts::parse(
        "hosts",
        &fs::read_to_string(&s.cluster.hosts_file).unwrap(),
    )
    .unwrap();
    hosts
        .entries
        .iter()
        .position(|e| e.socket.is_some())
        .unwrap() as u32
}

#[test]
fn other_nodes_daemons_are_reached_through_this_nodes_until_libfabric_pays() {
    let mut s = Setup::on(two_nodes());
    // Everyday work, the same as on a local directory (the 3 MiB file moves by RMA,
    // which loads libfabric in that process: both ways are in this run).
    s.same(
        "relay",
        &prelude(
            r#"for i in $(seq 30); do echo "file $i" > f$i; done
mkdir sub && mv f1 f2 sub/ && ln -s f3 link && cat link
ls . sub; stat -c '%n %s %A' f3 f30 sub/f1 link
cat f* | md5sum; rm f4 f5; ls | wc -l
cp "$S/big.bin" . && md5sum big.bin < /dev/null
cp -r "$S/dir1" . && find dir1 | sort"#,
        ),
    );
    let maps = "sum('libfabric' in l for l in open('/proc/self/maps')) > 0";
    let touch_all = "import os\nM = os.environ['M']\nos.mkdir(M + '/p')\nfor i in range(40):\n    with open(f'{M}/p/f{i}', 'w') as f: f.write('x' * 100)\nfor i in range(40):\n    assert os.stat(f'{M}/p/f{i}').st_size == 100\n    assert open(f'{M}/p/f{i}').read() == 'x' * 100\nprint(sorted(os.listdir(M + '/p')) == sorted(f'f{i}' for i in range(40)))\n";
    // 40 files over 2 daemons, metadata and small data: no libfabric in the process.
    let out = python_on(&s, &format!("{touch_all}print({maps})"), &[]);
    assert_eq!(out, "True\nFalse\n", "small remote work loaded libfabric");
    // The relayed requests were served by this node's daemon, for the process.
    let c = s.cluster.client();
    let relayed = relayed_by(&c, this_nodes_daemon(&s));
    assert!(relayed >= 40, "{relayed} relayed requests");
    // A large transfer to the remote daemon is worth libfabric: loaded, and right.
    let big = "import os, hashlib\nM = os.environ['M']\nd = os.urandom(3 << 20)\nopen(M + '/big', 'wb').write(d)\nprint(open(M + '/big', 'rb').read() == d)\n";
    let out = python_on(&s, &format!("{big}print({maps})"), &[]);
    assert_eq!(out, "True\nTrue\n");
    // Enough remote traffic pays for it too: after RELAY_LIMIT relayed requests.
    let many = format!(
        "import os\nM = os.environ['M']\nfor n in range({}):\n    os.stat(f'{{M}}/p/f{{n % 40}}')\n",
        3 * gkfs_client::RELAY_LIMIT
    );
    let out = python_on(&s, &format!("{many}print({maps})"), &[]);
    assert_eq!(
        out, "True\n",
        "libfabric is loaded once relaying stops paying"
    );
    // LIBGKFS_FABRIC=direct: the first remote request loads it.
    let one = "import os\nM = os.environ['M']\n[os.stat(f'{M}/p/f{i}') for i in range(40)]\n";
    let out = python_on(
        &s,
        &format!("{one}print({maps})"),
        &[("LIBGKFS_FABRIC", "direct")],
    );
    assert_eq!(out, "True\n");
    // This node's daemon dies: the other node's files are still reached (through
    // libfabric now), those it held fail.
    let here = this_nodes_daemon(&s);
    // Readable: the record and the one chunk both on the other daemon.
    let reachable = (0..40)
        .filter(|i| {
            let p = format!("/p/f{i}");
            let id = c.stat(&p).unwrap().file_id;
            gkfs_proto::place::place(&p, 2) != here
                && gkfs_proto::place::place_chunk(id, 0, 2) != here
        })
        .count();
    s.cluster
        .signal(here as usize, nix::sys::signal::Signal::SIGKILL);
    assert!(reachable > 0 && reachable < 40);
    let count = "import os\nM = os.environ['M']\nn = 0\nfor i in range(40):\n    try:\n        n += open(f'{M}/p/f{i}').read() == 'x' * 100\n    except OSError:\n        pass\nprint(n)\n";
    let out = python_on(&s, count, &[("LIBGKFS_TIMEOUT_MS", "3000")]);
    assert_eq!(out, format!("{reachable}\n"));
}

/// Requests daemon `d` relayed for clients so far.
fn relayed_by(c: &gkfs_client::Client, d: u32) -> u64 {
    c.daemon_metrics(d)
        .unwrap()
        .ops
        .iter()
        .filter(|o| o.opcode == gkfs_proto::msg::Opcode::Relay as u16)
        .map(|o| o.count)
        .sum()
}

#[test]
fn a_child_forked_from_a_libfabric_process_reaches_other_nodes_without_it() {
    let s = Setup::on(two_nodes());
    let c = s.cluster.client();
    let here = this_nodes_daemon(&s);
    let before = relayed_by(&c, here);
    // The parent loads libfabric at once (LIBGKFS_FABRIC=direct) and keeps two threads
    // in it while it forks. Each child then makes more remote requests than a fresh
    // process relays before it loads libfabric, and moves a 3 MiB file, which a fresh
    // process would move by RMA. libfabric is not fork-safe: a child that used it could
    // hang in a lock a parent thread held, so every one of those requests must be
    // relayed by this node's daemon, and every byte must come back.
    let kids = 3;
    let stats = 3 * gkfs_client::RELAY_LIMIT;
    let code = format!(
        r#"import os, sys, threading, time
M = os.environ['M']
os.mkdir(M + '/fk')
for i in range(40):
    with open(f'{{M}}/fk/f{{i}}', 'w') as f: f.write('x' * 100)
assert sum('libfabric' in l for l in open('/proc/self/maps')) > 0
stop = []
def busy():
    while not stop:
        for i in range(40): os.stat(f'{{M}}/fk/f{{i}}')
threads = [threading.Thread(target=busy) for _ in range(2)]
for t in threads: t.start()
kids = []
for k in range({kids}):
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            for n in range({stats}):
                assert os.stat(f'{{M}}/fk/f{{n % 40}}').st_size == 100
            d = os.urandom(3 << 20)
            with open(f'{{M}}/fk/big{{k}}', 'wb') as f: f.write(d)
            with open(f'{{M}}/fk/big{{k}}', 'rb') as f: ok = f.read() == d
        except Exception as e:
            print('child', k, e, file=sys.stderr)
        os._exit(0 if ok else 1)
    kids.append(pid)
    time.sleep(0.05)
codes, deadline = {{}}, time.time() + 120
while len(codes) < len(kids) and time.time() < deadline:
    for p in kids:
        if p not in codes:
            q, st = os.waitpid(p, os.WNOHANG)
            if q: codes[p] = os.waitstatus_to_exitcode(st)
    time.sleep(0.01)
stop.append(1)
for t in threads: t.join()
hung = [p for p in kids if p not in codes]
for p in hung: os.kill(p, 9)
print('hung', len(hung), 'failed', sum(c != 0 for c in codes.values()))
print([os.stat(f'{{M}}/fk/big{{k}}').st_size for k in range({kids})])
"#
    );
    let out = python_on(&s, &code, &[("LIBGKFS_FABRIC", "direct")]);
    assert_eq!(
        out,
        format!("hung 0 failed 0\n{:?}\n", vec![3 << 20; kids]),
        "{}",
        s.cluster.logs()
    );
    // Each child's stats of files whose records the other daemon holds (more than a
    // fresh process relays) went through this node's, as did its transfers' pieces for
    // the other; the parent's own requests go straight to the other.
    let remote = (0..stats)
        .filter(|n| gkfs_proto::place::place(&format!("/fk/f{}", n % 40), 2) != here)
        .count() as u64;
    assert!(remote > gkfs_client::RELAY_LIMIT, "{remote} remote stats");
    let relayed = relayed_by(&c, here) - before;
    assert!(
        relayed >= kids as u64 * remote,
        "only {relayed} requests relayed for {kids} children of {remote} remote stats each"
    );
}
