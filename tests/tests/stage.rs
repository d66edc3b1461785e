//! gkfs-run stage-in / stage-out, run as a user would: real trees, real daemons.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gkfs_tests::{bin, Cluster};
use rand::{RngCore, SeedableRng};

fn stage(c: &Cluster, args: &[&str], cwd: &Path) -> Output {
    Command::new(bin("gkfs-run"))
        .args(args)
        .env("LIBGKFS_HOSTS_FILE", &c.hosts_file)
        .env("LIBGKFS_TIMEOUT_MS", "3000")
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    gkfs_tests::output_text(o)
}

/// Writes `size` random bytes to `p`.
fn random_file(p: &Path, size: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = fs::File::create(p).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).unwrap();
        left -= n;
    }
}

/// Sets a file's mtime (ns).
fn set_mtime(p: &Path, ns: i64) {
    let ts = nix::sys::time::TimeSpec::new(ns / 1_000_000_000, ns % 1_000_000_000);
    nix::sys::stat::utimensat(
        None,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// What a tree holds, for comparison: type, size, mode, mtime, content hash, link target.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            let desc = if md.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {}", md.mode() & 0o7777, md.mtime())
            } else {
                let data = fs::read(&p).unwrap();
                format!(
                    "file {} {:o} {}.{:09} {:016x}",
                    md.len(),
                    md.mode() & 0o7777,
                    md.mtime(),
                    md.mtime_nsec(),
                    xxhash_rust::xxh3::xxh3_64(&data)
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// A tree like a job's input: `small` small files in nested directories, empty files
/// and directories, a symlink, and `big` large random files of `big_size` bytes.
fn make_tree(root: &Path, small: usize, big: usize, big_size: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for i in 0..small {
        let d = root.join(format!("d{:02}/e{:02}", i % 50, (i / 50) % 4));
        fs::create_dir_all(&d).unwrap();
        let p = d.join(format!("f{i}.dat"));
        let mut data = vec![0u8; (rng.next_u32() % 3000) as usize];
        rng.fill_bytes(&mut data);
        fs::write(&p, data).unwrap();
        if i % 7 == 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
        set_mtime(&p, 1_600_000_000_000_000_000 + i as i64 * 1_000_123);
    }
    fs::create_dir_all(root.join("empty/deeper/still-empty")).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::create_dir_all(root.join("big")).unwrap();
    for i in 0..big {
        random_file(&root.join(format!("big/b{i}.bin")), big_size, i as u64);
    }
    std::os::unix::fs::symlink("empty-file", root.join("link")).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&root.join("empty/deeper"), 1_500_000_000_000_000_000);
}

fn mnt(c: &Cluster, p: &str) -> String {
    format!("{}/{p}", c.mountdir)
}

/// Stages `<mount>/in` out to `<work>/out` and checks it equals `src` (names, types,
/// modes, sizes, mtimes and contents).
fn assert_stages_out_equal(c: &Cluster, work: &Path, src: &Path) {
    let out = work.join("out");
    let o = stage(
        c,
        &["stage-out", &mnt(c, "in"), out.to_str().unwrap(), "-q"],
        work,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(snapshot(src), snapshot(&out));
}

#[test]
fn round_trip_keeps_every_byte_mode_and_mtime() {
    let c = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    make_tree(&src, 10_000, 2, 100 * 1024 * 1024 + 12345);
    let out = w.path().join("out");
    let o = stage(
        &c,
        &[
            "stage-in",
            src.to_str().unwrap(),
            &mnt(&c, "in"),
            "--verify",
            "--json",
            "-q",
        ],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let sum: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sum["files"], 10_000 + 2 + 2, "{sum}");
    assert_eq!(sum["failures"].as_array().unwrap().len(), 0);
    let o = stage(
        &c,
        &[
            "stage-out",
            &mnt(&c, "in"),
            out.to_str().unwrap(),
            "--verify",
            "-q",
        ],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (snapshot(&src), snapshot(&out));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k} differs after the round trip");
    }
}

#[test]
fn a_killed_stage_in_resumes_where_it_stopped() {
    let c = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        random_file(&src.join(format!("f{i:02}")), 4 << 20, i);
    }
    let man = w.path().join("m.json");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "stage-in".to_string(),
            src.display().to_string(),
            mnt(&c, "in"),
            "--manifest".into(),
            man.display().to_string(),
            "--jobs".into(),
            "1".into(),
            "--transfer".into(),
            "65536".into(),
            "-q".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut child = Command::new(bin("gkfs-run"))
        .args(args(&[]))
        .env("LIBGKFS_HOSTS_FILE", &c.hosts_file)
        .current_dir(w.path())
        .spawn()
        .unwrap();
    // Kill it once the manifest records a few complete files.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = fs::read_to_string(&man)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map_or(0, |m| {
                m["files"]
                    .as_object()
                    .map_or(0, |f| f.values().filter(|r| r["status"] == "done").count())
            });
        if done >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = Command::new(bin("gkfs-run"))
        .args(args(&["--json", "--verify"]))
        .env("LIBGKFS_HOSTS_FILE", &c.hosts_file)
        .current_dir(w.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let sum: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = sum["skipped"].as_u64().unwrap();
    assert!(skipped >= 3, "{sum}");
    assert_eq!(skipped + sum["files"].as_u64().unwrap(), 40, "{sum}");
    // And the data is right: out again and compare.
    assert_stages_out_equal(&c, w.path(), &src);
}

#[test]
fn a_daemon_dying_during_stage_out_fails_the_run_and_names_the_files() {
    let mut c = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..60 {
        random_file(&src.join(format!("f{i:02}")), 2 << 20, i);
    }
    let o = stage(
        &c,
        &["stage-in", src.to_str().unwrap(), &mnt(&c, "in"), "-q"],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = w.path().join("out");
    let man = w.path().join("out.json");
    let child = Command::new(bin("gkfs-run"))
        .args([
            "stage-out",
            &mnt(&c, "in"),
            out.to_str().unwrap(),
            "--jobs",
            "1",
            "--transfer",
            "65536",
        ])
        .arg("--manifest")
        .arg(&man)
        .env("LIBGKFS_HOSTS_FILE", &c.hosts_file)
        .env("LIBGKFS_TIMEOUT_MS", "3000")
        .current_dir(w.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_dir(&out).map_or(0, |d| d.count()) < 2 {
        assert!(Instant::now() < deadline, "stage-out made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.signal(1, nix::sys::signal::Signal::SIGKILL);
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAILED") && t.contains("f"), "{t}");
    let m: serde_json::Value = serde_json::from_str(&fs::read_to_string(&man).unwrap()).unwrap();
    assert_eq!(m["complete"], false);
}

#[test]
fn three_ranks_copy_every_file_exactly_once() {
    let c = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    make_tree(&src, 600, 0, 0);
    let ranks: Vec<_> = (0..3)
        .map(|r| {
            Command::new(bin("gkfs-run"))
                .args([
                    "stage-in",
                    src.to_str().unwrap(),
                    &mnt(&c, "in"),
                    "-q",
                    "--json",
                ])
                .args(["--rank", &r.to_string(), "--nranks", "3"])
                .env("LIBGKFS_HOSTS_FILE", &c.hosts_file)
                .current_dir(w.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    let mut seen = std::collections::BTreeSet::new();
    for r in ranks {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let sum: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let m: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(w.path().join(sum["manifest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        for (path, rec) in m["files"].as_object().unwrap() {
            assert_eq!(rec["status"], "done");
            assert!(seen.insert(path.clone()), "{path} copied by two ranks");
        }
        total += sum["files"].as_u64().unwrap();
    }
    assert_eq!(
        total,
        600 + 2,
        "600 small files, the empty file and the link"
    );
    assert_eq!(seen.len(), 602);
    assert_stages_out_equal(&c, w.path(), &src);
}

#[test]
fn an_existing_destination_is_refused_and_left_alone() {
    let c = Cluster::start(1);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep"), b"new content").unwrap();
    // In gkfs: the destination exists with a file of the same name.
    let client = c.client();
    client.mkdir("/in", 0o755).unwrap();
    client.create("/in/keep", 0o644).unwrap();
    client.write_at("/in/keep", b"original", 0).unwrap();
    let o = stage(
        &c,
        &["stage-in", src.to_str().unwrap(), &mnt(&c, "in")],
        w.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("exists; pass --force"), "{}", text(&o));
    let mut buf = [0u8; 32];
    let n = client.read_at("/in/keep", &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"original");
    // Out: a local destination that exists.
    let out = w.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep"), b"local").unwrap();
    let o = stage(
        &c,
        &["stage-out", &mnt(&c, "in"), out.to_str().unwrap()],
        w.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(fs::read(out.join("keep")).unwrap(), b"local");
    // A missing source is a clear error too.
    let o = stage(
        &c,
        &["stage-in", "/nonexistent/src", &mnt(&c, "x")],
        w.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("cannot read the source /nonexistent/src"),
        "{}",
        text(&o)
    );
    // With --force it copies.
    let o = stage(
        &c,
        &[
            "stage-in",
            src.to_str().unwrap(),
            &mnt(&c, "in"),
            "--force",
            "-q",
        ],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let n = client.read_at("/in/keep", &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"new content");
}

#[test]
fn a_full_daemon_stops_the_run_and_keeps_the_manifest() {
    if !nix::unistd::geteuid().is_root() {
        gkfs_tests::skip(
            "a_full_daemon_stops_the_run_and_keeps_the_manifest",
            "needs root to mount a small tmpfs as the daemon's storage",
        );
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let small = w.path().join("small-disk");
    fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let inst = w.path().join("inst");
    let mnt = format!("/tmp/gkfs-enospc-{}", std::process::id());
    let o = Command::new(bin("gkfs-run"))
        .args(["start", "--local", "1", "--mountdir", &mnt])
        .arg("--instance-dir")
        .arg(&inst)
        .arg("--rootdir")
        .arg(&small)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let hosts = inst.join("hosts");
    let src = w.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        random_file(&src.join(format!("f{i:02}")), 4 << 20, i);
    }
    let man = w.path().join("m.json");
    let o = Command::new(bin("gkfs-run"))
        .args([
            "stage-in",
            src.to_str().unwrap(),
            &format!("{mnt}/in"),
            "--jobs",
            "2",
        ])
        .arg("--manifest")
        .arg(&man)
        .env("LIBGKFS_HOSTS_FILE", &hosts)
        .output()
        .unwrap();
    let t = text(&o);
    let _ = Command::new(bin("gkfs-run"))
        .args(["stop", "--hosts-file"])
        .arg(&hosts)
        .status();
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("No space left on device"), "{t}");
    assert!(
        t.contains("not copied"),
        "the files never started are listed too: {t}"
    );
    let m: serde_json::Value = serde_json::from_str(&fs::read_to_string(&man).unwrap()).unwrap();
    assert_eq!(m["complete"], false);
    let done = m["files"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["status"] == "done")
        .count();
    assert!(done < 20, "{done} files recorded done on a 24 MiB disk");
}

const MIB: u64 = 1 << 20;

/// Bytes a file takes on disk (st_blocks).
fn allocated(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks() * 512
}

/// Bytes every chunk file under the daemons' root dirs takes on disk.
fn chunks_allocated(c: &Cluster) -> u64 {
    c.chunk_paths().iter().map(|p| allocated(p)).sum()
}

/// A file of `size` bytes holding random data of the given lengths at the given
/// offsets and holes everywhere else (ending in one if the last piece ends before
/// `size`); returns the bytes of data.
fn sparse_file(p: &Path, size: u64, pieces: &[(u64, usize)], seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let f = fs::File::create(p).unwrap();
    for &(at, len) in pieces {
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        std::os::unix::fs::FileExt::write_all_at(&f, &data, at).unwrap();
    }
    f.set_len(size).unwrap();
    pieces.iter().map(|&(_, len)| len as u64).sum()
}

/// XXH3-64 of a file's content, read in blocks (as the manifest records it).
fn file_checksum(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            return format!("{:016x}", h.digest());
        }
        h.update(&buf[..n]);
    }
}

/// The records of a manifest, by path.
fn manifest_files(p: &Path) -> serde_json::Map<String, serde_json::Value> {
    let m: serde_json::Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(m["complete"], true, "{m}");
    m["files"].as_object().unwrap().clone()
}

#[test]
fn sparse_files_stay_sparse_in_gkfs_and_after_stage_out() {
    let c = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // 256 MiB with a few MiB of data at three offsets (one not block-aligned, one
    // across a chunk boundary) and a trailing hole; a file that is all hole; a dense
    // one.
    let big = 256 * MIB;
    let mut data = sparse_file(
        &src.join("sparse.bin"),
        big,
        &[
            (7 * MIB + 123, MIB as usize + 4097),
            (100 * MIB - 1000, 2 * MIB as usize),
            (200 * MIB, MIB as usize),
        ],
        1,
    );
    sparse_file(&src.join("hole.bin"), 64 * MIB, &[], 2);
    data += sparse_file(&src.join("dense.bin"), 3 * MIB, &[(0, 3 * MIB as usize)], 3);
    let logical = big + 64 * MIB + 3 * MIB;
    let src_allocated: u64 = ["sparse.bin", "hole.bin", "dense.bin"]
        .iter()
        .map(|n| allocated(&src.join(n)))
        .sum();
    if src_allocated > logical / 2 {
        gkfs_tests::skip(
            "sparse_files_stay_sparse_in_gkfs_and_after_stage_out",
            &format!("{} does not keep holes", w.path().display()),
        );
        return;
    }
    // Data blocks plus the partial blocks at the ends of each piece, and the
    // file systems' own rounding.
    let slack = MIB;

    let man_in = w.path().join("in.json");
    let o = stage(
        &c,
        &[
            "stage-in",
            src.to_str().unwrap(),
            &mnt(&c, "in"),
            "--verify",
            "--json",
            "-q",
            "--manifest",
            man_in.to_str().unwrap(),
        ],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let in_gkfs = chunks_allocated(&c);
    assert!(
        in_gkfs >= data && in_gkfs <= data + slack,
        "the daemons hold {in_gkfs} bytes for {data} bytes of data in {logical} bytes of files"
    );
    let sum: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sum["bytes"], logical, "{sum}");
    let holes = sum["holes"].as_u64();
    assert!(
        holes.is_some_and(|h| h + data + slack >= logical),
        "the summary's holes: {sum}"
    );
    let client = c.client();
    assert_eq!(client.stat("/in/sparse.bin").unwrap().size, big);
    assert_eq!(client.stat("/in/hole.bin").unwrap().size, 64 * MIB);

    let out = w.path().join("out");
    let man_out = w.path().join("out.json");
    let o = stage(
        &c,
        &[
            "stage-out",
            &mnt(&c, "in"),
            out.to_str().unwrap(),
            "--verify",
            "--json",
            "-q",
            "--manifest",
            man_out.to_str().unwrap(),
        ],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let (recs_in, recs_out) = (manifest_files(&man_in), manifest_files(&man_out));
    let mut out_allocated = 0;
    for n in ["sparse.bin", "hole.bin", "dense.bin"] {
        let (a, b) = (src.join(n), out.join(n));
        let cmp = Command::new("cmp").arg(&a).arg(&b).output().unwrap();
        assert!(cmp.status.success(), "{n}: {}", text(&cmp));
        assert_eq!(
            fs::metadata(&a).unwrap().len(),
            fs::metadata(&b).unwrap().len()
        );
        // Both manifests hold the checksum of the full content, holes included.
        let sum = file_checksum(&a);
        assert_eq!(recs_in[n]["checksum"], sum.as_str(), "{n}");
        assert_eq!(recs_out[n]["checksum"], sum.as_str(), "{n}");
        out_allocated += allocated(&b);
    }
    assert!(
        out_allocated >= data && out_allocated <= data + slack,
        "the stage-out destination takes {out_allocated} bytes for {data} bytes of data"
    );
    assert_eq!(snapshot(&src), snapshot(&out));
}

#[test]
fn holes_written_through_the_client_api_stage_out_as_holes() {
    // A file written by a job, not staged in: chunks it never wrote are holes.
    let c = Cluster::start_with(2, 64 * 1024);
    let w = tempfile::tempdir().unwrap();
    let probe = w.path().join("probe");
    sparse_file(&probe, 8 * MIB, &[], 0);
    if allocated(&probe) > 0 {
        gkfs_tests::skip(
            "holes_written_through_the_client_api_stage_out_as_holes",
            &format!("{} does not keep holes", w.path().display()),
        );
        return;
    }
    let client = c.client();
    client.mkdir("/job", 0o755).unwrap();
    client.create("/job/out.dat", 0o644).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut piece = vec![0u8; 300_000];
    rng.fill_bytes(&mut piece);
    client
        .write_at("/job/out.dat", &piece, 5 * MIB + 17)
        .unwrap();
    client.write_at("/job/out.dat", &piece, 40 * MIB).unwrap();
    client.truncate("/job/out.dat", 96 * MIB).unwrap();
    let out = w.path().join("out");
    let o = stage(
        &c,
        &[
            "stage-out",
            &mnt(&c, "job"),
            out.to_str().unwrap(),
            "--verify",
            "-q",
        ],
        w.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let f = out.join("out.dat");
    let mut expect = vec![0u8; 96 * MIB as usize];
    expect[5 * MIB as usize + 17..][..piece.len()].copy_from_slice(&piece);
    expect[40 * MIB as usize..][..piece.len()].copy_from_slice(&piece);
    assert!(fs::read(&f).unwrap() == expect, "the content differs");
    assert!(
        allocated(&f) <= 2 * piece.len() as u64 + MIB,
        "{} bytes allocated for {} bytes of data",
        allocated(&f),
        2 * piece.len()
    );
}
