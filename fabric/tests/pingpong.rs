//! Two processes over the real provider: tagged ping-pong, and an RMA read + write of
//! 1 MiB verified byte for byte. The server is this test binary re-run as a child.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gkfs_fabric::{Config, Endpoint, RemoteBuf};

const MIB: usize = 1 << 20;

fn provider() -> String {
    std::env::var("GKFS_TEST_PROVIDER").unwrap_or_else(|_| Config::DEFAULT_PROVIDER.into())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The server side; only does something when started by `ping_pong_and_rma`.
#[test]
#[ignore = "helper process of ping_pong_and_rma"]
fn server_process() {
    if std::env::var_os("GKFS_FABRIC_SERVER").is_none() {
        return;
    }
    let ep = Endpoint::open(&Config {
        provider: provider(),
        node: Some("127.0.0.1".into()),
        service: None,
    })
    .unwrap();
    ep.serve(4, 4096).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ADDR {}", hex(ep.address())).unwrap();
    out.flush().unwrap();
    drop(out);
    loop {
        let req = ep
            .next_request(Instant::now() + Duration::from_secs(30))
            .unwrap()
            .unwrap();
        let p = req.payload().to_vec();
        match p.first() {
            Some(b'p') => ep.reply(&req, b"pong".to_vec()).unwrap(),
            Some(b'r') => {
                // [b'r', pad x7, src addr, key, len, dst addr, key, len]
                let v = u64s(&p[8..56]);
                let src = RemoteBuf {
                    addr: v[0],
                    key: v[1],
                    len: v[2],
                };
                let dst = RemoteBuf {
                    addr: v[3],
                    key: v[4],
                    len: v[5],
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                let data = ep
                    .start_read(req.from, src, 0, Vec::new(), MIB, deadline)
                    .unwrap()
                    .wait(deadline)
                    .unwrap();
                let out: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
                ep.start_write(req.from, dst, 0, out, deadline)
                    .unwrap()
                    .wait(deadline)
                    .unwrap();
                ep.reply(&req, b"done".to_vec()).unwrap();
            }
            _ => {
                ep.reply(&req, b"bye".to_vec()).unwrap();
                // Give the reply time to leave before the endpoint closes.
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
        }
    }
}

#[test]
fn ping_pong_and_rma() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "server_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GKFS_FABRIC_SERVER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        // libtest may print "test server_process ... " in front of it.
        if let Some(at) = line.find("ADDR ") {
            break unhex(line[at + 5..].trim());
        }
    };
    let ep = Endpoint::open(&Config {
        provider: provider(),
        node: None,
        service: None,
    })
    .unwrap();
    let peer = ep.peer(&addr).unwrap();
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(
            ep.call(peer, b"ping", 64, Duration::from_secs(5)).unwrap(),
            b"pong"
        );
    }
    eprintln!("1000 round trips in {:?}", t.elapsed());

    let src: Vec<u8> = (0..MIB).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut dst = vec![0u8; MIB];
    {
        let smr = ep.register(&src).unwrap();
        let dmr = ep.register_mut(&mut dst).unwrap();
        let (s, d) = (smr.remote(), dmr.remote());
        let mut msg = vec![b'r', 0, 0, 0, 0, 0, 0, 0];
        for v in [s.addr, s.key, s.len, d.addr, d.key, d.len] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            ep.call(peer, &msg, 64, Duration::from_secs(20)).unwrap(),
            b"done"
        );
    }
    assert!(
        src.iter().zip(&dst).all(|(a, b)| a ^ 0x5a == *b),
        "RMA data differs"
    );
    assert_eq!(
        ep.call(peer, b"quit", 64, Duration::from_secs(5)).unwrap(),
        b"bye"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn unknown_provider_is_a_clear_error() {
    let err = Endpoint::open(&Config {
        provider: "no-such-provider".into(),
        node: None,
        service: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("no-such-provider"), "{err}");
}

#[test]
fn call_to_a_dead_peer_fails_before_its_deadline() {
    // Bind a listener-less address: a free port on loopback that nobody serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = Endpoint::open(&Config {
        provider: provider(),
        node: None,
        service: None,
    })
    .unwrap();
    let mut raw = vec![0u8; 16];
    raw[..2].copy_from_slice(&2u16.to_ne_bytes());
    raw[2..4].copy_from_slice(&port.to_be_bytes());
    raw[4..8].copy_from_slice(&[127, 0, 0, 1]);
    let peer = ep.peer(&raw).unwrap();
    let t = Instant::now();
    let err = ep
        .call(peer, b"ping", 64, Duration::from_secs(3))
        .unwrap_err();
    assert!(err.is_peer_failure(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}
