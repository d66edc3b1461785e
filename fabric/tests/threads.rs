//! Many threads on one endpoint, on both sides: every caller gets its own reply, byte
//! for byte, short and long requests mixed (receive buffers go back to a pool when a
//! request is dropped and are posted again as they are, the last one's bytes still in
//! them), and no call waits for a wake-up that never comes (a waiter that is not woken
//! sleeps a whole 200 ms slice).

use std::time::{Duration, Instant};

use gkfs_fabric::{Config, Endpoint, RemoteBuf};

fn provider() -> String {
    std::env::var("GKFS_TEST_PROVIDER").unwrap_or_else(|_| Config::DEFAULT_PROVIDER.into())
}

fn open(node: Option<&str>) -> Endpoint {
    Endpoint::open(&Config {
        provider: provider(),
        node: node.map(str::to_string),
        service: None,
    })
    .expect("a libfabric endpoint")
}

/// The request of caller `thread`'s call `i`: long every seventh call, filled with
/// bytes that name the call.
fn request(thread: usize, i: usize) -> Vec<u8> {
    let len = if i % 7 == 3 {
        100 * 1024 + i
    } else {
        16 + (i * 37) % 900
    };
    (0..len)
        .map(|k| (k as u8) ^ (thread as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

#[test]
fn concurrent_callers_each_get_their_own_reply_without_lost_wakeups() {
    const SERVERS: usize = 3;
    const CALLERS: usize = 8;
    const CALLS: usize = 300;
    let server = open(Some("127.0.0.1"));
    server.serve(4, 128 * 1024).expect("serve");
    let servers: Vec<_> = (0..SERVERS)
        .map(|_| {
            let ep = server.clone();
            std::thread::spawn(move || loop {
                let req = match ep.next_request(Instant::now() + Duration::from_secs(60)) {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(e) => panic!("next_request: {e}"),
                };
                assert!(!req.truncated);
                let echo = req.payload().to_vec();
                ep.reply(&req, echo).expect("reply");
            })
        })
        .collect();
    let client = open(None);
    let peer = client.peer(server.address()).expect("peer");
    let slow: usize = std::thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|t| {
                let (client, peer) = (&client, peer);
                s.spawn(move || {
                    let mut slow = 0;
                    for i in 0..CALLS {
                        let msg = request(t, i);
                        let start = Instant::now();
                        let reply = client
                            .call(peer, &msg, msg.len(), Duration::from_secs(30))
                            .expect("call");
                        if start.elapsed() > Duration::from_millis(150) {
                            slow += 1;
                        }
                        assert!(reply == msg, "caller {t}, call {i}: another reply");
                    }
                    slow
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    server.shutdown();
    for s in servers {
        s.join().unwrap();
    }
    // A lost wake-up costs a whole slice (200 ms); a loaded machine may delay a few
    // calls that long, a missing wake-up delays hundreds.
    assert!(
        slow <= 4,
        "{slow} of {} calls took over 150 ms",
        CALLERS * CALLS
    );
}

#[test]
fn requests_served_while_other_requests_move_bulk_data_are_not_held_up() {
    bulk_and_pings(3, 1);
}

#[test]
fn requests_still_pass_while_every_serving_thread_moves_bulk_data() {
    bulk_and_pings(2, 2);
}

/// `movers` client threads have 1 MiB pulled by RMA, 40 times each, while 3 others send
/// short requests, to `servers` serving threads.
fn bulk_and_pings(servers: usize, movers: usize) {
    const PINGERS: usize = 3;
    const PINGS: usize = 400;
    const BULK: usize = 1 << 20;
    const MOVES: usize = 40;
    let server = open(Some("127.0.0.1"));
    server.serve(4, 128 * 1024).expect("serve");
    // 'b' + the client's buffer (addr, key, len): the handler pulls it by RMA (its
    // thread leads the endpoint while it waits), then answers with a checksum.
    let servers: Vec<_> = (0..servers)
        .map(|_| {
            let ep = server.clone();
            std::thread::spawn(move || loop {
                let req = match ep.next_request(Instant::now() + Duration::from_secs(60)) {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(e) => panic!("next_request: {e}"),
                };
                let p = req.payload().to_vec();
                let reply = if p.first() == Some(&b'b') {
                    let v: Vec<u64> = p[8..32]
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    let rb = RemoteBuf {
                        addr: v[0],
                        key: v[1],
                        len: v[2],
                    };
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut sum = 0u64;
                    for half in 0..2 {
                        let got = ep
                            .start_read(
                                req.from,
                                rb,
                                (half * BULK / 2) as u64,
                                Vec::new(),
                                BULK / 2,
                                deadline,
                            )
                            .and_then(|op| op.wait(deadline))
                            .expect("RMA read");
                        sum += got.iter().map(|&b| u64::from(b)).sum::<u64>();
                    }
                    sum.to_le_bytes().to_vec()
                } else {
                    p
                };
                ep.reply(&req, reply).expect("reply");
            })
        })
        .collect();
    let client = open(None);
    let peer = client.peer(server.address()).expect("peer");
    let data: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    let slow: usize = std::thread::scope(|s| {
        let movers: Vec<_> = (0..movers)
            .map(|_| {
                s.spawn(|| {
                    let mr = client.register(&data).expect("register");
                    let r = mr.remote();
                    let mut msg = vec![b'b', 0, 0, 0, 0, 0, 0, 0];
                    for v in [r.addr, r.key, r.len] {
                        msg.extend_from_slice(&v.to_le_bytes());
                    }
                    for _ in 0..MOVES {
                        let reply = client
                            .call(peer, &msg, 64, Duration::from_secs(30))
                            .expect("bulk call");
                        assert_eq!(reply, want.to_le_bytes(), "the bytes moved differ");
                    }
                })
            })
            .collect();
        let pingers: Vec<_> = (0..PINGERS)
            .map(|t| {
                let client = &client;
                s.spawn(move || {
                    let mut slow = 0;
                    for i in 0..PINGS {
                        // (Never 'b': that is the bulk request.)
                        let mut msg = vec![b'p'];
                        msg.extend(request(t, i));
                        let start = Instant::now();
                        let reply = client
                            .call(peer, &msg, msg.len(), Duration::from_secs(30))
                            .expect("call");
                        if start.elapsed() > Duration::from_millis(150) {
                            slow += 1;
                        }
                        assert!(reply == msg, "pinger {t}, call {i}: another reply");
                    }
                    slow
                })
            })
            .collect();
        for m in movers {
            m.join().unwrap();
        }
        pingers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    server.shutdown();
    for s in servers {
        s.join().unwrap();
    }
    assert!(
        slow <= 4,
        "{slow} of {} calls took over 150 ms",
        PINGERS * PINGS
    );
}
