//! Many threads on one endpoint, on both sides: every caller gets its own reply, byte
//! for byte, short and long requests mixed (receive buffers go back to a pool when a
//! request is dropped and are posted again as they are, the last one's bytes still in
//! them), and no call waits for a wake-up that never comes (a waiter that is not woken
//! sleeps a whole 200 ms slice).

use std::time::{Duration, Instant};

use std::thread::JoinHandle;

use gkfs_fabric::{Config, Endpoint, Peer, RemoteBuf, Request};

/// The tests of this file run one at a time: each counts calls slowed down, and their
/// threads (a dozen each) would slow down each other's on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Starts `n` threads serving `ep`'s requests, each answered with `answer`, until the
/// endpoint is shut down.
fn serve(
    ep: &Endpoint,
    n: usize,
    answer: fn(&Endpoint, &Request) -> Vec<u8>,
) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let ep = ep.clone();
            std::thread::spawn(move || loop {
                let req = match ep.next_request(Instant::now() + Duration::from_secs(60)) {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(e) => panic!("next_request: {e}"),
                };
                assert!(!req.truncated);
                let reply = answer(&ep, &req);
                ep.reply(&req, reply).expect("reply");
            })
        })
        .collect()
}

/// Caller `t`'s `calls` requests (each `prefix` and then [`request`]), each answered by
/// its own bytes; returns how many took over 150 ms.
fn echo_calls(client: &Endpoint, peer: Peer, t: usize, calls: usize, prefix: &[u8]) -> usize {
    let mut slow = 0;
    for i in 0..calls {
        let mut msg = prefix.to_vec();
        msg.extend(request(t, i));
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
}

/// Shuts the server down, and checks that at most a few of `total` calls were `slow`:
/// a lost wake-up costs a whole slice (200 ms); a loaded machine may delay a few calls
/// that long, a missing wake-up delays hundreds.
fn finish(server: &Endpoint, threads: Vec<JoinHandle<()>>, slow: usize, total: usize) {
    server.shutdown();
    for t in threads {
        t.join().unwrap();
    }
    assert!(slow <= 4, "{slow} of {total} calls took over 150 ms");
}

#[test]
fn concurrent_callers_each_get_their_own_reply_without_lost_wakeups() {
    let _one = one_at_a_time();
    const CALLERS: usize = 8;
    const CALLS: usize = 300;
    let server = open(Some("127.0.0.1"));
    server.serve(4, 128 * 1024).expect("serve");
    let threads = serve(&server, 3, |_, req| req.payload().to_vec());
    let client = open(None);
    let peer = client.peer(server.address()).expect("peer");
    let slow: usize = std::thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|t| {
                let client = &client;
                s.spawn(move || echo_calls(client, peer, t, CALLS, &[]))
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    finish(&server, threads, slow, CALLERS * CALLS);
}

#[test]
fn requests_served_while_other_requests_move_bulk_data_are_not_held_up() {
    bulk_and_pings(3, 1);
}

#[test]
fn requests_still_pass_while_every_serving_thread_moves_bulk_data() {
    bulk_and_pings(2, 2);
}

const BULK: usize = 1 << 20;

/// `b'b'` and the client's buffer ([`RemoteBuf::to_le_bytes`]): the handler pulls it by RMA
/// in two halves (its thread leads the endpoint while it waits) and answers with the
/// sum of its bytes. Anything else is echoed.
fn pull_or_echo(ep: &Endpoint, req: &Request) -> Vec<u8> {
    let p = req.payload();
    if p.first() != Some(&b'b') {
        return p.to_vec();
    }
    let rb = RemoteBuf::from_le_bytes(&p[1..]).expect("a buffer");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sum = 0u64;
    for half in 0..2 {
        let at = (half * BULK / 2) as u64;
        let got = ep
            .start_read(req.from, rb, at, Vec::new(), BULK / 2, deadline)
            .and_then(|op| op.wait(deadline))
            .expect("RMA read");
        sum += got.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    sum.to_le_bytes().to_vec()
}

/// `movers` client threads have 1 MiB pulled by RMA, 40 times each, while 3 others send
/// short requests, to `servers` serving threads.
fn bulk_and_pings(servers: usize, movers: usize) {
    let _one = one_at_a_time();
    const PINGERS: usize = 3;
    const PINGS: usize = 400;
    const MOVES: usize = 40;
    let server = open(Some("127.0.0.1"));
    server.serve(4, 128 * 1024).expect("serve");
    let threads = serve(&server, servers, pull_or_echo);
    let client = open(None);
    let peer = client.peer(server.address()).expect("peer");
    let data: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
    let slow: usize = std::thread::scope(|s| {
        let movers: Vec<_> = (0..movers)
            .map(|_| {
                s.spawn(|| {
                    let mr = client.register(&data).expect("register");
                    let mut msg = vec![b'b'];
                    msg.extend(mr.remote().to_le_bytes());
                    for _ in 0..MOVES {
                        let reply = client
                            .call(peer, &msg, 64, Duration::from_secs(30))
                            .expect("bulk call");
                        assert_eq!(reply, want.to_le_bytes(), "the bytes moved differ");
                    }
                })
            })
            .collect();
        // (Never 'b': that is the bulk request.)
        let pingers: Vec<_> = (0..PINGERS)
            .map(|t| {
                let client = &client;
                s.spawn(move || echo_calls(client, peer, t, PINGS, b"p"))
            })
            .collect();
        for m in movers {
            m.join().unwrap();
        }
        pingers.into_iter().map(|c| c.join().unwrap()).sum()
    });
    finish(&server, threads, slow, PINGERS * PINGS);
}
