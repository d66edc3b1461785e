//! Daemons + client, with 1, 2 and 4 daemons: data, metadata, errno.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

use gkfs_client::{Client, Errno, OpenOptions};
use gkfs_tests::{Carrier, Cluster};
use rand::{Rng, RngCore, SeedableRng};

/// Small chunks so that modest transfers cross many chunk and daemon boundaries.
const CHUNK: u64 = 64 * 1024;

macro_rules! per_daemon_count {
    ($name:ident) => {
        mod $name {
            use gkfs_tests::Carrier;
            #[test]
            fn one_daemon() {
                super::$name(1, Carrier::Local)
            }
            #[test]
            fn two_daemons() {
                super::$name(2, Carrier::Local)
            }
            #[test]
            fn four_daemons() {
                super::$name(4, Carrier::Local)
            }
            // The daemons moving the bytes through the shared window, as for a process
            // that cannot use their chunk files itself.
            #[test]
            fn two_daemons_through_the_daemons() {
                super::$name(2, Carrier::LocalThroughDaemon)
            }
            // The same through libfabric (RMA for large transfers) instead of the
            // node-local socket.
            #[test]
            fn two_daemons_fabric() {
                super::$name(2, Carrier::Fabric)
            }
            #[test]
            fn four_daemons_fabric() {
                super::$name(4, Carrier::Fabric)
            }
        }
    };
}

fn wopts() -> OpenOptions {
    OpenOptions {
        create: true,
        write: true,
        mode: 0o644,
        ..Default::default()
    }
}

fn random_io_matches_local_file(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client = c.client_with(t);
    let f = client.open("/data.bin", &wopts()).unwrap();
    let local = tempfile::tempfile().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let max = 6 * 1024 * 1024;
    for i in 0..60 {
        let off = rng.random_range(0..max as u64);
        let len = if i % 5 == 0 {
            rng.random_range(0..4096)
        } else {
            rng.random_range(0..3 * 1024 * 1024)
        };
        // Read back a random range, and the same range locally.
        let roff = rng.random_range(0..max as u64 + 1024 * 1024);
        let rlen = rng.random_range(0..4 * 1024 * 1024);
        write_and_read_back(&f, &local, &mut rng, (off, len), (roff, rlen));
    }
    let size = local.metadata().unwrap().len();
    assert_eq!(f.size().unwrap(), size);
    assert_eq!(client.stat("/data.bin").unwrap().size, size);
    // The whole file, in one read.
    let mut got = vec![0u8; size as usize + 100];
    let mut want = vec![0u8; size as usize + 100];
    assert_eq!(f.pread(&mut got, 0).unwrap(), size as usize);
    read_full(&local, &mut want, 0);
    assert!(got == want);
}
per_daemon_count!(random_io_matches_local_file);

/// Writes `len` random bytes at `off` to the gkfs file and the local one, then reads
/// `rlen` bytes at `roff` from both: the same bytes must come back.
fn write_and_read_back(
    f: &gkfs_client::File,
    local: &fs::File,
    rng: &mut impl RngCore,
    (off, len): (u64, usize),
    (roff, rlen): (u64, usize),
) {
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    assert_eq!(f.pwrite(&data, off).unwrap(), len);
    local.write_all_at(&data, off).unwrap();
    let mut got = vec![0xAAu8; rlen];
    let mut want = vec![0u8; rlen];
    let gn = f.pread(&mut got, roff).unwrap();
    let wn = read_full(local, &mut want, roff);
    assert_eq!(gn, wn, "read length at {roff}+{rlen}");
    assert!(got[..gn] == want[..wn], "data differs at {roff}+{rlen}");
}

fn read_full(f: &fs::File, buf: &mut [u8], off: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64).unwrap() {
            0 => break,
            k => done += k,
        }
    }
    done
}

/// Reading the first `len` bytes of `r` gives what they are in the local file.
fn reads_as_local(r: &gkfs_client::File, local: &fs::File, len: u64, what: &str) {
    let size = local.metadata().unwrap().len();
    let mut got = vec![0xeeu8; len as usize];
    let mut want = vec![0xeeu8; got.len()];
    let n_got = r.pread(&mut got, 0).unwrap();
    let n_want = read_full(local, &mut want, 0);
    assert_eq!(n_got, n_want, "{what}: bytes read, size {size}");
    assert!(got[..n_got] == want[..n_want], "{what}: bytes differ");
}

fn holes_eof_truncate_append(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client = c.client_with(t);
    let f = client.open("/sparse", &wopts()).unwrap();
    // A write far out leaves a hole of several chunks.
    f.pwrite(b"tail", 10 * CHUNK + 5).unwrap();
    assert_eq!(f.size().unwrap(), 10 * CHUNK + 9);
    let mut buf = vec![0xFFu8; (CHUNK * 3) as usize];
    assert_eq!(f.pread(&mut buf, CHUNK).unwrap(), buf.len());
    assert!(buf.iter().all(|&b| b == 0), "hole is not zeros");
    // Reads stop at EOF.
    let mut buf = vec![0u8; 100];
    assert_eq!(f.pread(&mut buf, 10 * CHUNK).unwrap(), 9);
    assert_eq!(&buf[5..9], b"tail");
    assert_eq!(f.pread(&mut buf, 20 * CHUNK).unwrap(), 0);
    // Shrink: data past the new size is gone, also after growing again.
    f.pwrite(&vec![7u8; (2 * CHUNK) as usize], 0).unwrap();
    f.truncate(CHUNK + 10).unwrap();
    assert_eq!(client.stat("/sparse").unwrap().size, CHUNK + 10);
    f.truncate(3 * CHUNK).unwrap();
    let mut buf = vec![0xFFu8; (3 * CHUNK) as usize];
    assert_eq!(f.pread(&mut buf, 0).unwrap(), (3 * CHUNK) as usize);
    assert!(buf[..(CHUNK + 10) as usize].iter().all(|&b| b == 7));
    assert!(
        buf[(CHUNK + 10) as usize..].iter().all(|&b| b == 0),
        "truncated data came back"
    );
    // Append.
    let a = client
        .open(
            "/log",
            &OpenOptions {
                append: true,
                ..wopts()
            },
        )
        .unwrap();
    assert_eq!(a.append(b"one\n").unwrap(), 0);
    assert_eq!(a.pwrite(b"two\n", 0).unwrap(), 4);
    let big = vec![b'x'; (CHUNK + 3) as usize];
    assert_eq!(a.append(&big).unwrap(), 8);
    let mut buf = vec![0u8; 8];
    a.pread(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"one\ntwo\n");
    assert_eq!(a.size().unwrap(), 8 + CHUNK + 3);
    // O_TRUNC on open.
    let t = client
        .open(
            "/log",
            &OpenOptions {
                truncate: true,
                ..wopts()
            },
        )
        .unwrap();
    assert_eq!(t.size().unwrap(), 0);
}
per_daemon_count!(holes_eof_truncate_append);

/// Every change shows in the next stat, though the daemon keeps records it read (a
/// stat between the changes makes it keep one): a write inside the file a tick later
/// moves only mtime, a write past the end the size, a truncate both, a remove the
/// record. Times come from the kernel's coarse clock, as a local file's: a gkfs file
/// written just before a local one is never the newer of the two.
fn times_and_sizes_follow_every_change(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client = c.client_with(t);
    let local = tempfile::NamedTempFile::new().unwrap();
    let f = client.open("/t", &wopts()).unwrap();
    let before = gkfs_client::file_time_now();
    f.pwrite(&[1u8; 4096], 0).unwrap();
    let mut last = client.stat("/t").unwrap();
    assert_eq!(last.size, 4096);
    assert!(
        last.mtime >= before,
        "mtime {} before the write ({before})",
        last.mtime
    );
    for round in 0..5u64 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        f.pwrite(&[2u8; 4096], 0).unwrap();
        local.as_file().write_at(b"x", 0).unwrap();
        let r = client.stat("/t").unwrap();
        assert_eq!(r.size, 4096 + round);
        assert!(
            r.mtime > last.mtime,
            "a write a tick later kept mtime {}",
            r.mtime
        );
        let local_mtime = {
            use std::os::unix::fs::MetadataExt;
            let m = local.as_file().metadata().unwrap();
            m.mtime() * 1_000_000_000 + m.mtime_nsec()
        };
        assert!(
            r.mtime <= local_mtime,
            "written before the local file, stamped after it ({} > {local_mtime})",
            r.mtime
        );
        f.pwrite(b"y", 4096 + round).unwrap();
        assert_eq!(client.stat("/t").unwrap().size, 4097 + round);
        f.truncate(4096 + round + 1).unwrap();
        f.pwrite(b"z", 10).unwrap();
        last = client.stat("/t").unwrap();
        assert_eq!(last.size, 4097 + round);
    }
    f.truncate(100).unwrap();
    assert_eq!(client.stat("/t").unwrap().size, 100);
    client.unlink("/t").unwrap();
    assert_eq!(client.stat("/t").unwrap_err(), Errno::ENOENT);
    let again = client.open("/t", &wopts()).unwrap();
    assert_eq!(again.size().unwrap(), 0);
}
per_daemon_count!(times_and_sizes_follow_every_change);

/// A reader that keeps reading a file while another client cuts, rewrites and removes
/// it sees every change that finished before its read, as on a local file: a process
/// reading node-local chunks straight from the chunk files (`Carrier::Local`) keeps
/// them open, and must never read a chunk file that a truncate removed.
fn reads_see_every_finished_truncate_and_rewrite(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let (reader, writer) = (c.client_with(t), c.client_with(t));
    let w = writer.open("/f", &wopts()).unwrap();
    let r = reader.open("/f", &OpenOptions::default()).unwrap();
    let local = tempfile::tempfile().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7 + n as u64);
    let span = 6 * CHUNK;
    for round in 0..40u8 {
        // Rewrite from a cut somewhere (often 0: all chunks removed), or write over.
        let cut = match round % 4 {
            0 => Some(0),
            1 => Some(rng.random_range(0..span)),
            2 => None,
            _ => Some(rng.random_range(0..CHUNK)),
        };
        if let Some(cut) = cut {
            w.truncate(cut).unwrap();
            local.set_len(cut).unwrap();
        }
        let off = rng.random_range(0..span);
        let data = vec![round.wrapping_mul(37) | 1; rng.random_range(1..2 * CHUNK) as usize];
        w.pwrite(&data, off).unwrap();
        local.write_all_at(&data, off).unwrap();
        reads_as_local(&r, &local, span + 2 * CHUNK, &format!("round {round}"));
    }
    // Removed, then made again at the same path: the new file's bytes only.
    writer.unlink("/f").unwrap();
    let w2 = writer.open("/f", &wopts()).unwrap();
    w2.pwrite(b"fresh", 3).unwrap();
    let r2 = reader.open("/f", &OpenOptions::default()).unwrap();
    let mut got = [9u8; 16];
    assert_eq!(r2.pread(&mut got, 0).unwrap(), 8);
    assert_eq!(&got[..8], b"\0\0\0fresh");
}
per_daemon_count!(reads_see_every_finished_truncate_and_rewrite);

/// Reads from another node while the file is cut and written again under them: the
/// daemon sends large pieces straight from its chunk files' mappings, and must neither
/// send from a mapping past a file's new end (SIGBUS in the daemon, or a failed
/// transfer) nor keep a mapping of a chunk file a cut removed. Every read succeeds and
/// holds only bytes some round wrote, or zeros; the daemons live on.
#[test]
fn remote_reads_racing_cuts_and_rewrites_get_written_bytes_or_zeros() {
    const BIG: u64 = 512 * 1024;
    const ROUNDS: u8 = 250;
    let c = Cluster::start_with(2, BIG);
    let (reader, writer) = (
        c.client_with(Carrier::Fabric),
        c.client_with(Carrier::Fabric),
    );
    let w = writer.open("/race", &wopts()).unwrap();
    let span = 8 * BIG;
    w.pwrite(&vec![1u8; span as usize], 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|s| {
        let read = s.spawn(|| {
            let r = reader.open("/race", &OpenOptions::default()).unwrap();
            let mut buf = vec![0u8; span as usize];
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = r.pread(&mut buf, 0).expect("a read racing a cut");
                let odd = buf[..n]
                    .iter()
                    .position(|&b| b != 0 && !(1..=ROUNDS).contains(&b));
                assert!(
                    odd.is_none(),
                    "read {reads}: byte {odd:?} was never written"
                );
                reads += 1;
            }
            reads
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 2..=ROUNDS {
            w.truncate(rng.random_range(0..span)).unwrap();
            w.pwrite(&vec![round; span as usize], 0).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        read.join().unwrap()
    });
    assert!(reads > 0);
    let mut got = vec![0u8; span as usize];
    let r = reader.open("/race", &OpenOptions::default()).unwrap();
    assert_eq!(r.pread(&mut got, 0).unwrap(), span as usize);
    assert!(got.iter().all(|&b| b == ROUNDS), "the last round's bytes");
    for d in 0..2 {
        reader.ping(d).expect("the daemon lives on");
    }
}

/// A writer that keeps writing small pieces while another client cuts the file leaves
/// the size and bytes a local file would have: the writer keeps node-local chunk files
/// open and skips the size update of a write inside what the metadata owner said the
/// file holds (`Carrier::Local`), and must notice every truncate that finished before
/// its write (a chunk file removed under a kept descriptor, a size cut below what it
/// knew).
fn writes_see_every_finished_truncate_by_another_client(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let (writer, cutter, reader) = (c.client_with(t), c.client_with(t), c.client_with(t));
    let w = writer.open("/f", &wopts()).unwrap();
    let cut_by = cutter.open("/f", &OpenOptions::default()).unwrap();
    let r = reader.open("/f", &OpenOptions::default()).unwrap();
    let local = tempfile::tempfile().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11 + n as u64);
    let span = 6 * CHUNK;
    for round in 0..60u32 {
        // A few small writes (the size learnt from the first), then a cut by the other
        // client, then writes inside what the writer knew before the cut.
        for k in 0..4u32 {
            let off = rng.random_range(0..span);
            let len = rng.random_range(1..CHUNK / 2) as usize;
            let data = vec![(round * 7 + k) as u8 | 1; len];
            w.pwrite(&data, off).unwrap();
            local.write_all_at(&data, off).unwrap();
        }
        let cut = match round % 3 {
            0 => 0,
            1 => rng.random_range(0..CHUNK),
            _ => rng.random_range(0..span),
        };
        cut_by.truncate(cut).unwrap();
        local.set_len(cut).unwrap();
        let off = rng.random_range(0..span / 2);
        let data = vec![0x80 | round as u8; rng.random_range(1..CHUNK) as usize];
        w.pwrite(&data, off).unwrap();
        local.write_all_at(&data, off).unwrap();
        let size = local.metadata().unwrap().len();
        assert_eq!(r.size().unwrap(), size, "round {round}: size");
        reads_as_local(&r, &local, span + 2 * CHUNK, &format!("round {round}"));
    }
}
per_daemon_count!(writes_see_every_finished_truncate_by_another_client);

/// fallocate gives storage on the daemons that hold the range (their chunk files get
/// blocks) without changing what the file holds; it grows a shorter file to the
/// range's end (unless KEEP_SIZE) and never shrinks a longer one.
fn fallocate_gives_storage_and_only_ever_grows(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client = c.client_with(t);
    let f = client.open("/f", &wopts()).unwrap();
    f.pwrite(b"tail", 3 * CHUNK).unwrap();
    let blocks = || -> u64 {
        c.chunk_paths()
            .iter()
            .map(|p| fs::metadata(p).unwrap().blocks() * 512)
            .sum()
    };
    let before = blocks();
    // Inside the file: the size stays.
    f.allocate(0, 2 * CHUNK, false).unwrap();
    assert_eq!(f.size().unwrap(), 3 * CHUNK + 4);
    assert!(
        blocks() >= before + 2 * CHUNK,
        "storage for two chunks: {} then {}",
        before,
        blocks()
    );
    // Past its end: it grows, zeros up to the new end.
    f.allocate(4 * CHUNK, CHUNK, false).unwrap();
    assert_eq!(f.size().unwrap(), 5 * CHUNK);
    // KEEP_SIZE: storage only.
    f.allocate(5 * CHUNK, CHUNK, true).unwrap();
    assert_eq!(f.size().unwrap(), 5 * CHUNK);
    assert!(blocks() >= 4 * CHUNK);
    let mut got = vec![9u8; 5 * CHUNK as usize];
    assert_eq!(f.pread(&mut got, 0).unwrap(), 5 * CHUNK as usize);
    let mut want = vec![0u8; got.len()];
    want[3 * CHUNK as usize..][..4].copy_from_slice(b"tail");
    assert!(got == want, "holes read as zeros, the data stays");
    // More than the daemons have: ENOSPC, and the file is as it was.
    assert_eq!(f.allocate(0, 1 << 60, false), Err(Errno::ENOSPC));
    assert_eq!(f.size().unwrap(), 5 * CHUNK);
    assert_eq!(f.allocate(0, 0, false), Err(Errno::EINVAL));
}
per_daemon_count!(fallocate_gives_storage_and_only_ever_grows);

/// A process reads and (in large pieces) writes chunks of the daemon on its node
/// straight in its chunk files: the daemon serves no data request for them, and still
/// counts the bytes (for the job's summary and metrics). With `LIBGKFS_LOCAL_DATA=daemon`
/// the daemon moves them, as before.
#[test]
fn node_local_chunks_are_moved_without_a_request_and_still_counted() {
    let c = Cluster::start_with(1, CHUNK);
    let data: Vec<u8> = (0..12 * CHUNK as usize + 123)
        .map(|i| (i % 251) as u8)
        .collect();
    let admin = c.client_with(Carrier::Local);
    // (requests of ReadChunks, of WriteChunks, bytes read, bytes written)
    let counters = || {
        let m = admin.daemon_metrics(0).unwrap();
        let reqs = |op: gkfs_proto::msg::Opcode| {
            m.ops
                .iter()
                .find(|o| o.opcode == op as u16)
                .map_or(0, |o| o.count)
        };
        use gkfs_proto::msg::Opcode::{ReadChunks, WriteChunks};
        (
            reqs(ReadChunks),
            reqs(WriteChunks),
            m.bytes_read,
            m.bytes_written,
        )
    };
    for (i, (carrier, direct)) in [(Carrier::Local, true), (Carrier::LocalThroughDaemon, false)]
        .into_iter()
        .enumerate()
    {
        let before = counters();
        {
            let cl = c.client_with(carrier);
            let f = cl.open(&format!("/f{i}"), &wopts()).unwrap();
            assert_eq!(f.pwrite(&data, 0).unwrap(), data.len());
            let mut got = vec![0u8; data.len() + 10];
            for _ in 0..3 {
                assert_eq!(f.pread(&mut got, 0).unwrap(), data.len());
                assert!(got[..data.len()] == data[..]);
            }
            // The client ends: its connections close.
        }
        // (The daemon counts what came without a request when a connection ends.)
        let len = data.len() as u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let after = loop {
            let now = counters();
            let counted = now.2 >= before.2 + 3 * len && now.3 >= before.3 + len;
            if counted || std::time::Instant::now() > deadline {
                break now;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(
            after.2 - before.2,
            3 * len,
            "{carrier:?}: bytes read counted"
        );
        assert_eq!(
            after.3 - before.3,
            len,
            "{carrier:?}: bytes written counted"
        );
        if direct {
            assert_eq!(
                (after.0, after.1),
                (before.0, before.1),
                "{carrier:?}: data requests"
            );
        } else {
            assert!(
                after.0 >= before.0 + 3,
                "{carrier:?}: read requests {after:?}"
            );
            assert!(after.1 > before.1, "{carrier:?}: write requests {after:?}");
        }
    }
}

fn threads_distinct_and_shared(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client = c.client_with(t);
    let shared = client.open("/shared", &wopts()).unwrap();
    let block = 100_000usize;
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let client = client.clone();
            let shared = shared.clone();
            s.spawn(move || {
                let own = client.open(&format!("/own{t}"), &wopts()).unwrap();
                let data: Vec<u8> = (0..block * 3)
                    .map(|i| (i as u8).wrapping_mul(t + 1))
                    .collect();
                for k in 0..3 {
                    own.pwrite(&data[k * block..(k + 1) * block], (k * block) as u64)
                        .unwrap();
                    shared
                        .pwrite(&vec![t; block], ((t as usize * 3 + k) * block) as u64)
                        .unwrap();
                }
                let mut back = vec![0u8; data.len()];
                assert_eq!(own.pread(&mut back, 0).unwrap(), data.len());
                assert!(back == data);
            });
        }
    });
    assert_eq!(shared.size().unwrap(), (24 * block) as u64);
    let mut all = vec![0u8; 24 * block];
    shared.pread(&mut all, 0).unwrap();
    for (i, b) in all.chunks(block).enumerate() {
        assert!(
            b.iter().all(|&x| x as usize == i / 3),
            "block {i} of the shared file"
        );
    }
}
per_daemon_count!(threads_distinct_and_shared);

fn readdir_rename_unlink(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client = c.client_with(t);
    client.mkdir("/dir", 0o755).unwrap();
    client.mkdir("/dir/sub", 0o755).unwrap();
    let count = 10_000;
    let names: BTreeSet<String> = (0..count).map(|i| format!("f{i:05}")).collect();
    let list: Vec<&String> = names.iter().collect();
    std::thread::scope(|s| {
        for part in list.chunks(count / 4) {
            let client = client.clone();
            s.spawn(move || {
                for name in part {
                    client.create(&format!("/dir/sub/{name}"), 0o644).unwrap();
                }
            });
        }
    });
    // A deeper file must not show up in the listing of /dir.
    client.create("/dir/top", 0o600).unwrap();
    let listed = client.readdir("/dir/sub").unwrap();
    assert_eq!(listed.len(), count);
    let got: BTreeSet<String> = listed.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, names);
    let top: Vec<String> = client
        .readdir("/dir")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(top, vec!["sub".to_string(), "top".to_string()]);

    // Rename keeps the data and moves no chunk.
    let f = client.open("/dir/top", &wopts()).unwrap();
    let data: Vec<u8> = (0..(5 * CHUNK as usize)).map(|i| (i % 251) as u8).collect();
    f.pwrite(&data, 0).unwrap();
    let before = chunk_listing(&c);
    client.rename("/dir/top", "/moved").unwrap();
    assert_eq!(chunk_listing(&c), before, "chunks moved on rename");
    assert_eq!(client.stat("/dir/top").unwrap_err(), Errno::ENOENT);
    let mut back = vec![0u8; data.len()];
    assert_eq!(client.read_at("/moved", &mut back, 0).unwrap(), data.len());
    assert!(back == data);
    // Directory rename moves everything below it.
    client.rename("/dir", "/dir2").unwrap();
    assert_eq!(client.readdir("/dir2/sub").unwrap().len(), count);
    assert_eq!(client.stat("/dir/sub/f00001").unwrap_err(), Errno::ENOENT);
    assert!(client.stat("/dir2/sub/f00001").unwrap().is_file());
    // Replacing a file by rename drops the old data.
    client.create("/victim", 0o644).unwrap();
    client.write_at("/victim", &[1u8; 200_000], 0).unwrap();
    client.rename("/moved", "/victim").unwrap();
    assert_eq!(client.read_at("/victim", &mut back, 0).unwrap(), data.len());
    assert!(back == data);
    assert_eq!(chunk_listing(&c), before, "replaced file's chunks remain");

    // Unlink removes every chunk on every daemon.
    client.unlink("/victim").unwrap();
    for name in &names {
        client.unlink(&format!("/dir2/sub/{name}")).unwrap();
    }
    client.rmdir("/dir2/sub").unwrap();
    client.rmdir("/dir2").unwrap();
    assert_eq!(c.chunk_files(), 0, "chunks left behind");
    assert!(client.readdir("/").unwrap().is_empty());
    let fs = client.statfs().unwrap();
    assert!(fs.total > 0 && fs.avail <= fs.total && fs.free <= fs.total);
    assert_eq!(fs.chunk_size, CHUNK);
}
per_daemon_count!(readdir_rename_unlink);

fn chunk_listing(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in c.rootdirs.iter().enumerate() {
        for d in fs::read_dir(r.join("chunks")).unwrap().flatten() {
            // (Chunk files are in a directory per file; the daemon's cut counters too.)
            if !d.file_type().unwrap().is_dir() {
                continue;
            }
            for f in fs::read_dir(d.path()).unwrap().flatten() {
                out.push(format!(
                    "{i}/{}/{}",
                    d.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        }
    }
    out.sort();
    out
}

fn errnos(n: usize, t: Carrier) {
    let c = Cluster::start_with(n, CHUNK);
    let client: Client = c.client_with(t);
    assert_eq!(client.stat("/nope").unwrap_err(), Errno::ENOENT);
    assert_eq!(
        client.open("/nope", &OpenOptions::default()).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(client.create("/a/b", 0o644).unwrap_err(), Errno::ENOENT);
    client.create("/file", 0o644).unwrap();
    assert_eq!(client.create("/file", 0o644).unwrap_err(), Errno::EEXIST);
    assert_eq!(client.mkdir("/file", 0o755).unwrap_err(), Errno::EEXIST);
    assert_eq!(client.create("/file/x", 0o644).unwrap_err(), Errno::ENOTDIR);
    // A failed create leaves no record behind (parent check and create run together).
    assert_eq!(client.stat("/file/x").unwrap_err(), Errno::ENOENT);
    assert_eq!(client.stat("/a/b").unwrap_err(), Errno::ENOENT);
    assert_eq!(client.readdir("/file").unwrap_err(), Errno::ENOTDIR);
    assert_eq!(client.rmdir("/file").unwrap_err(), Errno::ENOTDIR);
    client.mkdir("/d", 0o755).unwrap();
    assert_eq!(client.unlink("/d").unwrap_err(), Errno::EISDIR);
    assert_eq!(client.open("/d", &wopts()).unwrap_err(), Errno::EISDIR);
    client.create("/d/x", 0o644).unwrap();
    assert_eq!(client.rmdir("/d").unwrap_err(), Errno::ENOTEMPTY);
    client.mkdir("/e", 0o755).unwrap();
    client.create("/e/y", 0o644).unwrap();
    assert_eq!(client.rename("/d", "/e").unwrap_err(), Errno::ENOTEMPTY);
    assert_eq!(client.rename("/d", "/d/x/z").unwrap_err(), Errno::EINVAL);
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(
        client.create(&long, 0o644).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(
        client.stat(&"/abcdefgh".repeat(600)).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(client.rmdir("/").unwrap_err(), Errno::EBUSY);
    assert!(client.stat("/").unwrap().is_dir());
    client.unlink("/d/x").unwrap();
    client.rmdir("/d").unwrap();
    assert_eq!(client.stat("/d").unwrap_err(), Errno::ENOENT);
}
per_daemon_count!(errnos);

/// One daemon here, two "on other nodes" (no node-local socket): transfers far larger
/// than the local window, whose local share fits it (one span, the remote shares by RMA
/// all at once) or does not (cut into spans), at random offsets, match a local file.
#[test]
fn large_transfers_over_both_carriers_match_a_local_file() {
    let provider = std::env::var("GKFS_TEST_PROVIDER").unwrap_or_else(|_| "tcp;ofi_rxm".into());
    let c = Cluster::start_custom(3, CHUNK, &provider, None, &|i| {
        if i > 0 {
            vec!["--socket".into(), "none".into()]
        } else {
            Vec::new()
        }
    });
    let client = c.client();
    let f = client.open("/big.bin", &wopts()).unwrap();
    let local = tempfile::tempfile().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let max = 40 * 1024 * 1024;
    for len in [20 << 20, 30 << 20, 5 << 20, 1, 0, 27 << 20] {
        let off = rng.random_range(0..max as u64);
        let roff = rng.random_range(0..max as u64);
        let rlen = rng.random_range(0..32 << 20);
        write_and_read_back(&f, &local, &mut rng, (off, len), (roff, rlen));
    }
    let size = local.metadata().unwrap().len();
    let mut got = vec![0u8; size as usize];
    let mut want = vec![0u8; size as usize];
    assert_eq!(f.pread(&mut got, 0).unwrap(), size as usize);
    read_full(&local, &mut want, 0);
    assert!(got == want, "the whole file differs");
}
