//! Fault injection: a daemon killed (SIGKILL) or hung (SIGSTOP) while a client reads,
//! writes, creates or lists; a daemon killed during a stage-in; a hosts file changed
//! under a running job. Each case asserts the errno the application sees, how long it
//! took to fail, and that data already reported written is intact (on the daemons that
//! survive, and on all of them once a hung one resumes). ENOSPC on data and metadata
//! is `faults.rs::a_full_node_keeps_its_metadata_working_and_recovers`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gkfs_client::{Client, ClientConfig, Errno, LocalData, Transport};
use gkfs_proto::place::{place, place_chunk};
use gkfs_tests::Cluster;
use nix::sys::signal::Signal;

/// The RPC deadline of these clients.
const TIMEOUT: Duration = Duration::from_secs(2);
/// What a failing call may take beyond its deadline (two cores, tests in parallel).
const SLACK: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    Write,
    Create,
    Readdir,
}

/// The client under test. Its reads ask the daemons: a process that reads a node-local
/// daemon's chunk files itself (the default) keeps reading them while that daemon is
/// stopped or gone, since the bytes are on this node's disk; these tests are about how
/// calls to a daemon fail.
fn client(c: &Cluster, transport: Transport) -> Client {
    Client::new(&ClientConfig {
        timeout: TIMEOUT,
        transport,
        local_data: LocalData::Daemon,
        ..ClientConfig::new(&c.hosts_file)
    })
    .unwrap()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i * 131 + seed * 7919) % 253) as u8)
        .collect()
}

/// Files and the bytes reported written to them.
type Written = Vec<(String, Vec<u8>)>;

/// Files whose record and data live on daemon 0 only (they survive daemon 1), and
/// files spread over both; all written and reported written before the fault.
fn written_files(client: &Client, chunk: u64) -> (Written, Written) {
    let (mut on0, mut spread) = (Vec::new(), Vec::new());
    for i in 0.. {
        if on0.len() >= 4 && spread.len() >= 4 {
            break;
        }
        let p = format!("/kept{i}");
        let rec = client.create(&p, 0o644).unwrap();
        let only0 = place(&p, 2) == 0 && place_chunk(rec.file_id, 0, 2) == 0;
        let data = if only0 {
            pattern(i, (chunk / 2) as usize)
        } else {
            pattern(i, (chunk * 3) as usize)
        };
        assert_eq!(client.write_at(&p, &data, 0).unwrap(), data.len());
        if only0 && on0.len() < 4 {
            on0.push((p, data));
        } else {
            spread.push((p, data));
        }
    }
    (on0, spread)
}

fn intact(client: &Client, files: &[(String, Vec<u8>)]) {
    for (p, data) in files {
        let mut buf = vec![0u8; data.len()];
        assert_eq!(client.read_at(p, &mut buf, 0).unwrap(), data.len(), "{p}");
        assert!(&buf == data, "{p}: data reported written has changed");
    }
}

/// A path whose record daemon 1 owns.
fn on1(tag: &str, i: u64) -> String {
    (i * 1000..)
        .map(|k| format!("/{tag}{k}"))
        .find(|p| place(p, 2) == 1)
        .unwrap()
}

/// One call of `op` that needs daemon 1.
fn run_op(client: &Client, op: Op, i: u64, big: &str, block: &[u8]) -> Result<(), Errno> {
    match op {
        Op::Read => {
            let mut buf = vec![0u8; block.len()];
            client.read_at(big, &mut buf, 0).map(|_| ())
        }
        Op::Write => client.write_at(big, block, 0).map(|_| ()),
        Op::Create => client.create(&on1("new", i), 0o644).map(|_| ()),
        Op::Readdir => client.readdir("/").map(|_| ()),
    }
}

fn kill_or_stop_during(op: Op, sig: Signal, transport: Transport) {
    // GKFS_TEST_LOG=debug shows the client's log of a failing case.
    if let Ok(level) = std::env::var("GKFS_TEST_LOG") {
        let _ = env_logger::builder()
            .is_test(true)
            .parse_filters(&level)
            .format_timestamp_millis()
            .try_init();
    }
    let mut c = Cluster::start(2);
    // The client under test has a short deadline; set-up and checks use one with a
    // long deadline (a loaded machine must not fail them).
    let client = client(&c, transport);
    let patient = Client::new(&ClientConfig {
        timeout: Duration::from_secs(30),
        transport,
        ..ClientConfig::new(&c.hosts_file)
    })
    .unwrap();
    let (on0, spread) = written_files(&patient, c.chunk_size);
    // A file with chunks on both daemons for the data ops.
    let big = "/big";
    patient.create(big, 0o644).unwrap();
    let block = pattern(99, (c.chunk_size * 4) as usize);
    patient.write_at(big, &block, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (client, stop, block) = (client.clone(), stop.clone(), block.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                let t = Instant::now();
                if let Err(e) = run_op(&client, op, i, big, &block) {
                    return Some((e, t.elapsed()));
                }
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            None
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let injected = Instant::now();
    c.signal(1, sig);
    let watchdog = Instant::now() + TIMEOUT + SLACK + Duration::from_secs(5);
    while !worker.is_finished() && Instant::now() < watchdog {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let failed = worker.join().unwrap();
    let ctx = format!("{op:?} under {sig:?} over {transport:?}");
    let (e, took) = failed.unwrap_or_else(|| panic!("{ctx}: the calls kept succeeding"));
    assert!(
        e == Errno::EIO || e == Errno::ETIMEDOUT,
        "{ctx}: the application saw {e:?}"
    );
    assert!(
        took < TIMEOUT + SLACK && injected.elapsed() < TIMEOUT + SLACK + Duration::from_secs(1),
        "{ctx}: failing took {took:?}"
    );
    // The next call to it fails at once: the client knows the daemon is down.
    let t = Instant::now();
    assert!(client.stat(&on1("probe", 7)).is_err(), "{ctx}");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{ctx}: {:?}",
        t.elapsed()
    );
    // What the surviving daemon holds is intact.
    intact(&patient, &on0);
    if sig == Signal::SIGSTOP {
        c.signal(1, Signal::SIGCONT);
        let t = Instant::now();
        while run_op(&client, op, 2 << 20, big, &block).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{ctx}: never served again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        intact(&patient, &on0);
        intact(&patient, &spread);
    }
}

macro_rules! fault_cases {
    ($($name:ident: $op:expr, $sig:expr, $t:expr;)*) => {$(
        #[test]
        fn $name() {
            kill_or_stop_during($op, $sig, $t);
        }
    )*};
}

fault_cases! {
    sigkill_during_reads_local: Op::Read, Signal::SIGKILL, Transport::Auto;
    sigkill_during_writes_local: Op::Write, Signal::SIGKILL, Transport::Auto;
    sigkill_during_creates_local: Op::Create, Signal::SIGKILL, Transport::Auto;
    sigkill_during_readdir_local: Op::Readdir, Signal::SIGKILL, Transport::Auto;
    sigstop_during_reads_local: Op::Read, Signal::SIGSTOP, Transport::Auto;
    sigstop_during_writes_local: Op::Write, Signal::SIGSTOP, Transport::Auto;
    sigstop_during_creates_local: Op::Create, Signal::SIGSTOP, Transport::Auto;
    sigstop_during_readdir_local: Op::Readdir, Signal::SIGSTOP, Transport::Auto;
    sigkill_during_reads_fabric: Op::Read, Signal::SIGKILL, Transport::Fabric;
    sigkill_during_writes_fabric: Op::Write, Signal::SIGKILL, Transport::Fabric;
    sigkill_during_creates_fabric: Op::Create, Signal::SIGKILL, Transport::Fabric;
    sigkill_during_readdir_fabric: Op::Readdir, Signal::SIGKILL, Transport::Fabric;
    sigstop_during_reads_fabric: Op::Read, Signal::SIGSTOP, Transport::Fabric;
    sigstop_during_writes_fabric: Op::Write, Signal::SIGSTOP, Transport::Fabric;
    sigstop_during_creates_fabric: Op::Create, Signal::SIGSTOP, Transport::Fabric;
    sigstop_during_readdir_fabric: Op::Readdir, Signal::SIGSTOP, Transport::Fabric;
}

/// A daemon killed during a stage-in: the run fails (status 1, naming what was not
/// copied), in bounded time, and the manifest says it is incomplete.
#[test]
fn sigkill_during_stage_in() {
    let mut c = Cluster::start(2);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..2000 {
        std::fs::write(src.join(format!("f{i:04}")), pattern(i, 64 * 1024)).unwrap();
    }
    let man = w.path().join("m.json");
    let mut stage = std::process::Command::new(gkfs_tests::bin("gkfs-run"))
        .arg("stage-in")
        .arg(&src)
        .arg(format!("{}/in", c.mountdir))
        .arg("--manifest")
        .arg(&man)
        .env("LIBGKFS_HOSTS_FILE", &c.hosts_file)
        .env("LIBGKFS_TIMEOUT_MS", "2000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill as soon as the copy is under way (its first file is in gkfs).
    let watcher = c.client();
    let first = format!("/in/f{:04}", 0);
    let started = Instant::now();
    while watcher.stat(&first).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stage-in never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    c.signal(1, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = stage.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "stage-in hangs after a daemon died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = stage.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !status.success(),
        "stage-in of 2000 files finished although a daemon was killed after the first: {text}"
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("Input/output error") || text.contains("timed out"),
        "{text}"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&man).unwrap()).unwrap();
    assert_eq!(m["complete"], false);
}

/// The hosts file changed under a running job (a daemon line removed, so placement
/// would change): a new client refuses to place data by it (the daemons answer with
/// a membership mismatch), the running client keeps its view, and nothing is lost.
#[test]
fn hosts_file_changed_under_a_running_job() {
    let c = Cluster::start(2);
    let running = c.client();
    let (on0, spread) = written_files(&running, c.chunk_size);
    let text = std::fs::read_to_string(&c.hosts_file).unwrap();
    let first: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .take(1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&c.hosts_file, &first).unwrap();
    let newcomer = client(&c, Transport::Auto);
    let t = Instant::now();
    let e = newcomer.stat(&on0[0].0).unwrap_err();
    assert!(t.elapsed() < TIMEOUT, "{:?}", t.elapsed());
    assert!(
        e == Errno::ESTALE || e == Errno::EIO || e == Errno::EACCES,
        "a client of the changed file got {e:?}"
    );
    assert!(newcomer.create("/misplaced", 0o644).is_err());
    // Put back: everything is where it was.
    std::fs::write(&c.hosts_file, &text).unwrap();
    intact(&running, &on0);
    intact(&running, &spread);
    assert_eq!(running.stat("/misplaced").unwrap_err(), Errno::ENOENT);
}
