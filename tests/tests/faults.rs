//! Faults and bad input: dead daemons, wrong tokens, garbage on the wire, garbage
//! hosts files.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gkfs_client::{Client, ClientConfig, ClientError, Errno};
use gkfs_proto::hosts::Hosts;
use gkfs_proto::place::place;
use gkfs_tests::Cluster;
use nix::sys::signal::Signal;
use rand::{Rng, RngCore, SeedableRng};

#[test]
fn killed_daemon_fails_within_deadline() {
    let mut c = Cluster::start(2);
    let timeout = Duration::from_secs(3);
    let client = c.client_with_timeout(timeout);
    // A path owned by daemon 1.
    let p = (0..)
        .map(|i| format!("/f{i}"))
        .find(|p| place(p, 2) == 1)
        .unwrap();
    client.create(&p, 0o644).unwrap();
    c.signal(1, Signal::SIGKILL);
    let t = Instant::now();
    let err = client.stat(&p).unwrap_err();
    let took = t.elapsed();
    assert!(err == Errno::EIO || err == Errno::ETIMEDOUT, "got {err:?}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    // Again: a dead peer keeps failing promptly, it does not hang.
    let t = Instant::now();
    assert!(client.stat(&p).is_err());
    assert!(t.elapsed() < timeout + Duration::from_secs(2));
    // The surviving daemon still serves.
    let q = (0..)
        .map(|i| format!("/g{i}"))
        .find(|p| place(p, 2) == 0)
        .unwrap();
    client.create(&q, 0o644).unwrap();
}

#[test]
fn wrong_token_is_refused() {
    let c = Cluster::start(1);
    let bad = c.dir().join("bad-token");
    std::fs::write(&bad, gkfs_proto::config::format_token(12345)).unwrap();
    let client = Client::new(&ClientConfig {
        token_file: Some(bad),
        timeout: Duration::from_secs(5),
        ..ClientConfig::new(&c.hosts_file)
    })
    .unwrap();
    assert_eq!(client.stat("/").unwrap_err(), Errno::EACCES);
    assert_eq!(client.create("/x", 0o644).unwrap_err(), Errno::EACCES);
    assert_eq!(client.ping(0).unwrap_err(), Errno::EACCES);
    // The right token still works, and nothing was created.
    assert_eq!(c.client().stat("/x").unwrap_err(), Errno::ENOENT);
    assert!(c.logs().contains("wrong job token"));
}

fn daemon_socket_addr(c: &Cluster, i: usize) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(&c.hosts_file).unwrap();
    let a = &Hosts::parse("h", &text).unwrap().entries[i].address;
    assert_eq!(
        u16::from_ne_bytes([a[0], a[1]]),
        2,
        "expected an IPv4 tcp address"
    );
    let port = u16::from_be_bytes([a[2], a[3]]);
    std::net::SocketAddr::from(([a[4], a[5], a[6], a[7]], port))
}

#[test]
fn random_bytes_on_the_port_leave_the_daemon_serving() {
    let c = Cluster::start(1);
    let addr = daemon_socket_addr(&c, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..50 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut junk = vec![0u8; rng.random_range(1..70_000)];
        rng.fill_bytes(&mut junk);
        if i % 3 == 0 {
            // Something that looks like the start of a header.
            junk[..4].copy_from_slice(&[0, 0, 0, 1]);
        }
        let _ = s.write_all(&junk);
    }
    let client = c.client_with_timeout(Duration::from_secs(5));
    client.create("/still-alive", 0o644).unwrap();
    assert!(client.stat("/still-alive").unwrap().is_file());
}

#[test]
fn garbage_requests_through_the_fabric_get_errors() {
    let c = Cluster::start(1);
    let text = std::fs::read_to_string(&c.hosts_file).unwrap();
    let hosts = Hosts::parse("h", &text).unwrap();
    let ep = gkfs_fabric::Endpoint::open(&gkfs_fabric::Config {
        provider: hosts.provider().into(),
        node: None,
        service: None,
    })
    .unwrap();
    let peer = ep.peer(&hosts.entries[0].address).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for _ in 0..300 {
        let mut junk = vec![0u8; rng.random_range(0..300)];
        rng.fill_bytes(&mut junk);
        if !junk.is_empty() {
            junk[0] = gkfs_proto::msg::PROTO_VERSION;
        }
        let reply = ep.call(peer, &junk, 4096, Duration::from_secs(5)).unwrap();
        let (h, _) = gkfs_proto::msg::ReplyHeader::split(&reply).unwrap();
        assert_ne!(h.status, 0, "garbage was accepted");
    }
    c.client().create("/ok", 0o644).unwrap();
}

#[test]
fn garbage_hosts_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        dir.path().join("token"),
        gkfs_proto::config::format_token(1),
    )
    .unwrap();
    std::fs::write(
        &hosts,
        "# ok\nnode1 tcp;ofi_rxm 0200 chunk_size=524288 mountdir=/tmp/gkfs\nthis is garbage\n",
    )
    .unwrap();
    let err = Client::new(&ClientConfig::new(&hosts))
        .err()
        .expect("garbage accepted");
    let msg = err.to_string();
    assert!(
        matches!(err, ClientError::Hosts(ref e) if e.line == 3),
        "{msg}"
    );
    assert!(msg.contains(&format!("{}:3:", hosts.display())), "{msg}");
    std::fs::write(&hosts, "").unwrap();
    let msg = Client::new(&ClientConfig::new(&hosts))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("no daemon listed"), "{msg}");
    let msg = Client::new(&ClientConfig::new(dir.path().join("missing")))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("cannot read the hosts file"), "{msg}");
}

#[test]
fn daemon_stops_cleanly_on_sigterm() {
    let mut c = Cluster::start(1);
    c.client().create("/kept", 0o644).unwrap();
    assert_eq!(c.stop_daemon(0), Some(0), "{}", c.logs());
    assert!(c.logs().contains("stopped"));
}

/// A full node: writes get ENOSPC (never EIO), a create storm while full gets ENOSPC,
/// removals, truncation, stats, listings and reads keep working, nothing written is
/// lost, and the daemons recover by themselves once space is freed. Before the
/// daemons kept a reserve, RocksDB's failed flush wedged a daemon: EIO for every
/// create, mkdir and rm until the disk was enlarged.
#[test]
fn a_full_node_keeps_its_metadata_working_and_recovers() {
    let Some(disk) = gkfs_tests::SmallDisk::mount("a_full_node_keeps_its_metadata_working", 32)
    else {
        return;
    };
    let c = Cluster::start_in(2, 512 * 1024, "tcp;ofi_rxm", Some(disk.path()));
    let client = c.client();
    let block: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    client.mkdir("/data", 0o755).unwrap();
    // Fill the disk with 1 MiB files until a write fails.
    let mut full = None;
    let mut written = Vec::new();
    for i in 0..64 {
        let p = format!("/data/f{i}");
        client.create(&p, 0o644).unwrap();
        match client.write_at(&p, &block, 0) {
            Ok(n) if n == block.len() => written.push(p),
            Ok(n) => panic!("short write {n}"),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    assert_eq!(full, Some(Errno::ENOSPC), "after {} MiB", written.len());
    assert!(
        written.len() >= 10,
        "only {} MiB fit on 32 MiB",
        written.len()
    );
    // A create storm while full: every create succeeds or says ENOSPC.
    let mut refused = 0;
    // Long names: the metadata itself fills the disk's reserve, until creates are
    // refused too (ENOSPC on metadata).
    let pad = "n".repeat(200);
    for i in 0..400_000 {
        match client.create(&format!("/data/storm-{pad}-{i:06}"), 0o644) {
            Ok(_) => {}
            Err(Errno::ENOSPC) => refused += 1,
            Err(e) => panic!("create {i} while full: {e:?}\n{}", c.logs()),
        }
        if refused > 500 {
            break;
        }
    }
    assert!(refused > 0, "the storm never filled the metadata's reserve");
    match client.mkdir("/more", 0o755) {
        Ok(()) | Err(Errno::ENOSPC) => {}
        Err(e) => panic!("mkdir while full: {e:?}"),
    }
    // Everything that does not need space still works, and the data is intact.
    let mut buf = vec![0u8; block.len()];
    for p in &written {
        assert_eq!(client.read_at(p, &mut buf, 0).unwrap(), block.len());
        assert!(buf == block, "{p} changed");
        assert_eq!(client.stat(p).unwrap().size, block.len() as u64);
    }
    let listed = client.readdir("/data").unwrap().len();
    assert!(listed > written.len());
    client.truncate(&written[0], 4096).unwrap();
    // Free the space: removal works on a full disk.
    for p in &written[1..] {
        client
            .unlink(p)
            .unwrap_or_else(|e| panic!("unlink {p} while full: {e:?}"));
    }
    // Recovery without help: creates and writes work again within seconds.
    let t = Instant::now();
    loop {
        let r = client
            .create("/after", 0o644)
            .and_then(|_| client.write_at("/after", &block, 0));
        match r {
            Ok(_) => break,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                assert!(e == Errno::ENOSPC, "after freeing: {e:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("no recovery 30 s after freeing space: {e:?}\n{}", c.logs()),
        }
    }
    eprintln!(
        "32 MiB disk, 2 daemons: {} MiB of data fit, then ENOSPC; {refused} creates refused \
         with ENOSPC in the storm; writes and creates worked again {:?} after freeing",
        written.len(),
        t.elapsed()
    );
    client.mkdir("/more2", 0o755).unwrap();
    for i in 0..2000 {
        client.create(&format!("/more2/x{i}"), 0o644).unwrap();
    }
    client.read_at("/after", &mut buf, 0).unwrap();
    assert!(buf == block);
    drop(client);
    drop(c);
}

/// Runs a gkfsd of its own in `dir` (root, hosts file, token there) that is expected
/// to refuse to start; None if it was still running after 10 s.
fn gkfsd_refusing(
    dir: &std::path::Path,
    mountdir: &str,
    extra: &[&str],
) -> Option<std::process::Output> {
    gkfs_tests::run_expecting_exit(
        std::process::Command::new(gkfs_tests::bin("gkfsd"))
            .arg("--rootdir")
            .arg(dir.join("root"))
            .arg("--hosts-file")
            .arg(dir.join("hosts"))
            .args(["--listen", "127.0.0.1", "--mountdir", mountdir])
            .args(extra),
        Duration::from_secs(10),
    )
}

/// A second gkfsd pointed at a live daemon's socket once replaced it silently (the
/// first daemon's clients then got EACCES, later EIO). It is refused now, and the
/// first daemon keeps serving.
#[test]
fn a_second_daemon_cannot_take_over_a_live_socket() {
    let mut c = Cluster::start(1);
    let text = std::fs::read_to_string(&c.hosts_file).unwrap();
    let socket = Hosts::parse("h", &text).unwrap().entries[0]
        .socket
        .clone()
        .expect("the daemon has a node-local socket");
    let client = c.client();
    client.create("/before", 0o644).unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("token"),
        gkfs_proto::config::format_token(5),
    )
    .unwrap();
    let out = gkfsd_refusing(other.path(), "/tmp/gkfs-other", &["--socket", &socket])
        .expect("the second daemon started and kept running");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second daemon started: {err}");
    assert!(err.contains("in use"), "{err}");
    assert!(
        err.contains(&c.pids()[0].to_string()),
        "the message names the daemon holding the socket: {err}"
    );
    // The first daemon's clients did not notice.
    client.create("/after", 0o644).unwrap();
    assert!(client.stat("/before").unwrap().is_file());
    // A daemon whose socket file was removed still shuts down at once on SIGTERM.
    std::fs::remove_file(&socket).unwrap();
    let t = Instant::now();
    assert_eq!(c.stop_daemon(0), Some(0), "{}", c.logs());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(!std::path::Path::new(&format!("{socket}.lock")).exists());
}

/// Over libfabric a dead or hung daemon once cost every call the full deadline. The
/// client remembers it is down: after the first failure, calls to it fail at once,
/// calls to the others go on, and it is used again as soon as it answers.
#[test]
fn a_down_daemon_fails_fast_after_the_first_timeout_and_comes_back() {
    let mut c = Cluster::start(2);
    let timeout = Duration::from_secs(2);
    let client = Client::new(&ClientConfig {
        timeout,
        transport: gkfs_client::Transport::Fabric,
        ..ClientConfig::new(&c.hosts_file)
    })
    .unwrap();
    let on = |d: u32, tag: &str| {
        (0..)
            .map(|i| format!("/{tag}{i}"))
            .find(|p| place(p, 2) == d)
            .unwrap()
    };
    let (p1, p0) = (on(1, "a"), on(0, "b"));
    client.create(&p1, 0o644).unwrap();
    client.create(&p0, 0o644).unwrap();
    // Hung (SIGSTOP): the first call waits its deadline, the next ones do not.
    c.signal(1, Signal::SIGSTOP);
    let t = Instant::now();
    let first = client.stat(&p1).unwrap_err();
    let first_took = t.elapsed();
    assert!(
        first == Errno::ETIMEDOUT || first == Errno::EIO,
        "{first:?}"
    );
    assert!(
        first_took >= timeout / 2,
        "the first call gave up too early"
    );
    let t = Instant::now();
    for _ in 0..50 {
        assert!(client.stat(&p1).is_err());
    }
    let later = t.elapsed() / 50;
    assert!(
        later < Duration::from_millis(10),
        "calls to a known-down daemon took {later:?} each"
    );
    assert!(
        client.stat(&p0).unwrap().is_file(),
        "the other daemon serves"
    );
    // It answers again: the background probe notices within a few seconds.
    c.signal(1, Signal::SIGCONT);
    let t = Instant::now();
    while client.stat(&p1).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the daemon is back but the client still says it is down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "hung daemon over libfabric (deadline {timeout:?}): the first call failed ({first:?}) \
         after {first_took:?}, later ones after {later:?} each; served again {:?} after SIGCONT",
        t.elapsed()
    );
    // Dead (SIGKILL): the same, and `gkfs-run status` says why.
    c.signal(1, Signal::SIGKILL);
    let _ = client.stat(&p1);
    let t = Instant::now();
    for _ in 0..50 {
        assert!(client.stat(&p1).is_err());
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let o = std::process::Command::new(gkfs_tests::bin("gkfs-run"))
        .args(["status", "--hosts-file"])
        .arg(&c.hosts_file)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("daemon 1 is DOWN"), "{out}");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 20 frames announced at the limit (18 MiB) and sent half way once cost the daemon
/// 370 MiB, 260 MiB of it kept for good. A connection now holds about what it sent,
/// a frame that stalls half way is dropped after `FRAME_STALL`, and the memory goes
/// back to the system.
#[test]
fn half_sent_frames_cost_what_was_sent_and_are_given_back() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let c = Cluster::start(1);
    let text = std::fs::read_to_string(&c.hosts_file).unwrap();
    let socket = Hosts::parse("h", &text).unwrap().entries[0]
        .socket
        .clone()
        .unwrap();
    let pid = c.pids()[0];
    let max = gkfs_proto::local::max_frame(c.chunk_size);
    let before = rss_kib(pid);
    let sent = vec![0x5au8; max / 2];
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.write_all(&gkfs_fabric::shm::handshake(0)).unwrap();
        s.write_all(&(max as u32).to_le_bytes()).unwrap();
        s.write_all(&sent).unwrap();
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_kib(pid).saturating_sub(before);
    let sent_kib = 20 * sent.len() as u64 / 1024;
    assert!(
        held < sent_kib * 3 / 2,
        "20 half-sent frames hold {} MiB for {} MiB sent",
        held / 1024,
        sent_kib / 1024
    );
    // The daemon gives up on the stalled frames and closes those connections.
    std::thread::sleep(gkfs_proto::local::FRAME_STALL + Duration::from_secs(2));
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 0, "a stalled frame was kept open");
    }
    let kept = rss_kib(pid).saturating_sub(before);
    assert!(
        kept < 24 * 1024,
        "{} MiB kept after the stalled frames were dropped",
        kept / 1024
    );
    drop(conns);
    let client = c.client();
    client.create("/still-serving", 0o644).unwrap();
}

/// `gkfsd --mountdir /` once registered a line every client refuses ("" is not a
/// mount dir); it is refused at start now, with the reason.
#[test]
fn the_root_is_refused_as_mount_dir() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("token"), gkfs_proto::config::format_token(3)).unwrap();
    for m in ["/", "//", "relative"] {
        let out = gkfsd_refusing(d.path(), m, &[])
            .unwrap_or_else(|| panic!("gkfsd --mountdir {m} started and kept running"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{m}: started");
        assert!(err.contains("must be an absolute path"), "{m}: {err}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("hosts")).unwrap_or_default(),
            "",
            "{m}: registered"
        );
    }
}
