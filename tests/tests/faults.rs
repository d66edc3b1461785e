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
