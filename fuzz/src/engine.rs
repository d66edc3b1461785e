//! The structured mutation loop: seeded with valid encodings from the target's
//! generator, it mutates (see [`crate::mutate`]) a corpus member per input, runs the
//! target under `catch_unwind`, keeps some of the mutated inputs the decoder accepted
//! as new corpus members, and every few inputs checks the round trip of a fresh valid
//! value. It is not coverage-guided: the only feedback is "the decoder accepted it".
//!
//! A watchdog thread ends the process with [`HANG_EXIT`] when one input runs for more
//! than a second. A worker process (see `gkfs-fuzz worker`) also mirrors every input
//! into a shared file mapping (a [`Slot`]), so that the parent can save the input that
//! killed it (an abort, a signal) or hung.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mutate::{havoc, MAX_INPUT};
use crate::rng::Rng;
use crate::targets::{Counters, Target};

/// Exit status of a process whose watchdog saw a hang.
pub const HANG_EXIT: i32 = 86;
/// How long one input may run.
pub const HANG_AFTER: Duration = Duration::from_secs(1);
/// Most corpus members kept (seeds included).
const CORPUS_MAX: usize = 4096;

/// How to run the loop.
#[derive(Debug)]
pub struct Config {
    /// Mutated inputs to run.
    pub execs: u64,
    /// Seed of the run (the run repeats exactly from it).
    pub seed: u64,
    /// Valid encodings generated as the initial corpus.
    pub seeds: usize,
    /// One fresh round-trip check every this many inputs (0: none after the seeds).
    pub valid_every: u64,
    /// Where inputs that crashed are saved (one per crash site).
    pub crash_dir: Option<PathBuf>,
    /// Mirror of the current input, for a parent process.
    pub slot: Option<Slot>,
    /// Print progress to stderr every few seconds.
    pub progress: bool,
}

impl Config {
    /// `execs` inputs from `seed`, with the defaults for the rest.
    pub fn new(execs: u64, seed: u64) -> Config {
        Config {
            execs,
            seed,
            seeds: 512,
            valid_every: 16,
            crash_dir: None,
            slot: None,
            progress: false,
        }
    }
}

/// Inputs of one kind (message type) that reached the decoder and that it accepted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KindReport {
    /// Kind name.
    pub name: String,
    /// Inputs that got as far as this kind's decoder.
    pub reached: u64,
    /// Inputs it accepted.
    pub accepted: u64,
}

/// One crash site.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// "panic", "round-trip", "hang" or "abort".
    pub kind: String,
    /// Where it panicked and the message (first occurrence).
    pub message: String,
    /// How many inputs hit this site.
    pub count: u64,
    /// The saved input, if any.
    pub file: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Target name.
    pub target: String,
    /// Which engine ran it.
    pub engine: String,
    /// Mutated inputs run.
    pub execs: u64,
    /// Wall time, seconds.
    pub secs: f64,
    /// Inputs the decoder accepted.
    pub accepted: u64,
    /// Fresh valid values whose round trip was checked (seeds included).
    pub roundtrips: u64,
    /// Mutated inputs that panicked.
    pub crashes: u64,
    /// Round-trip checks of valid values that panicked.
    pub roundtrip_failures: u64,
    /// Inputs that ran for more than [`HANG_AFTER`].
    pub hangs: u64,
    /// Inputs that killed the process (abort, signal).
    pub aborts: u64,
    /// Corpus size at the end.
    pub corpus: usize,
    /// Per kind counts (request and reply targets: per message type).
    pub kinds: Vec<KindReport>,
    /// Crash sites.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Every kind of failure added up.
    pub fn failed(&self) -> u64 {
        self.crashes + self.roundtrip_failures + self.hangs + self.aborts
    }

    /// Adds another run of the same target.
    pub fn merge(&mut self, o: &Report) {
        self.execs += o.execs;
        self.secs += o.secs;
        self.accepted += o.accepted;
        self.roundtrips += o.roundtrips;
        self.crashes += o.crashes;
        self.roundtrip_failures += o.roundtrip_failures;
        self.hangs += o.hangs;
        self.aborts += o.aborts;
        self.corpus = self.corpus.max(o.corpus);
        if self.kinds.is_empty() {
            self.kinds = o.kinds.clone();
        } else {
            for (a, b) in self.kinds.iter_mut().zip(&o.kinds) {
                a.reached += b.reached;
                a.accepted += b.accepted;
            }
        }
        for f in &o.failures {
            match self
                .failures
                .iter_mut()
                .find(|x| x.kind == f.kind && x.message == f.message)
            {
                Some(x) => x.count += f.count,
                None => self.failures.push(f.clone()),
            }
        }
    }
}

thread_local! {
    static CAPTURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC: std::cell::RefCell<Option<(String, String)>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once) a panic hook that, on a thread running a target, records the panic
/// site and message instead of printing them; other threads keep the previous hook.
fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(|c| c.get()) {
                let site = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC.with(|p| *p.borrow_mut() = Some((site, info.to_string())));
            } else {
                prev(info)
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err((site, message))`.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, (String, String)> {
    install_hook();
    CAPTURING.with(|c| c.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(false));
    r.map_err(|_| {
        PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| ("?".into(), "panic without a message".into()))
    })
}

/// A file mapped shared: `[execs done u64][input length u32][input]`, written before
/// every input so that what a dead worker was running can be read back.
#[derive(Debug)]
pub struct Slot {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

/// Bytes of a slot file.
const SLOT_LEN: usize = 12 + MAX_INPUT;

impl Slot {
    /// Creates (or empties) the slot file at `path` and maps it.
    pub fn create(path: &Path) -> std::io::Result<Slot> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(SLOT_LEN as u64)?;
        let len = std::num::NonZeroUsize::new(SLOT_LEN).expect("slot length");
        // SAFETY: a fresh shared mapping of a file we just sized to SLOT_LEN bytes; only
        // this process writes it while it is mapped (the parent reads it after this
        // process has exited), and it stays mapped until the Slot is dropped.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Slot {
            ptr: ptr.cast(),
            len: SLOT_LEN,
        })
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe the mapping made in create(), alive until drop, and
        // &mut self makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Records that `done` inputs have finished and `input` runs next.
    pub fn record(&mut self, done: u64, input: &[u8]) {
        let b = self.bytes();
        let n = input.len().min(MAX_INPUT);
        b[..8].copy_from_slice(&done.to_le_bytes());
        b[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        b[12..12 + n].copy_from_slice(&input[..n]);
    }

    /// Reads a slot file a dead worker left: inputs finished, and the one it ran.
    pub fn read(path: &Path) -> std::io::Result<(u64, Vec<u8>)> {
        let b = std::fs::read(path)?;
        if b.len() < 12 {
            return Err(std::io::Error::other("slot file too short"));
        }
        let done = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let n =
            (u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize).min(b.len() - 12);
        Ok((done, b[12..12 + n].to_vec()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in create(); no reference into it outlives
        // the Slot (bytes() borrows self).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// Saves a crashing input under `dir` as `<target>-<kind>-<hash>.bin`.
pub fn save_input(dir: &Path, target: &str, kind: &str, input: &[u8]) -> Option<String> {
    std::fs::create_dir_all(dir).ok()?;
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let p = dir.join(format!("{target}-{kind}-{hash:016x}.bin"));
    std::fs::write(&p, input).ok()?;
    Some(p.display().to_string())
}

/// Stops the process when the heartbeat stands still for longer than [`HANG_AFTER`].
struct Watchdog {
    beat: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(target: &'static str) -> Watchdog {
        let beat = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (beat.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut last = b.load(Ordering::Relaxed);
            let mut since = Instant::now();
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let now = b.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > HANG_AFTER {
                    eprintln!(
                        "gkfs-fuzz: {target}: one input has run for more than {HANG_AFTER:?} (hang); stopping"
                    );
                    std::process::exit(HANG_EXIT);
                }
            }
        });
        Watchdog {
            beat,
            done,
            thread: Some(thread),
        }
    }

    fn tick(&self) {
        self.beat.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn note_failure(
    report: &mut Report,
    kind: &str,
    (site, message): (String, String),
    input: Option<&[u8]>,
    crash_dir: Option<&Path>,
) {
    if let Some(f) = report
        .failures
        .iter_mut()
        .find(|f| f.kind == kind && f.message.starts_with(&site))
    {
        f.count += 1;
        return;
    }
    let file = match (input, crash_dir) {
        (Some(i), Some(d)) => save_input(d, &report.target, kind, i),
        _ => None,
    };
    let mut message = format!("{site}: {message}");
    if message.len() > 2000 {
        message = format!("{}...", crate::targets::cut(&message, 2000));
    }
    report.failures.push(Failure {
        kind: kind.into(),
        message,
        count: 1,
        file,
    });
}

/// Runs the loop on `t`.
pub fn fuzz(t: &'static Target, mut cfg: Config) -> Report {
    let start = Instant::now();
    let names = (t.kinds)();
    let mut c = Counters::new(names.len());
    let mut report = Report {
        target: t.name.into(),
        engine: "mutation loop".into(),
        ..Report::default()
    };
    let mut rng = Rng::new(cfg.seed);
    let dog = Watchdog::start(t.name);
    let crash_dir = cfg.crash_dir.clone();

    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for _ in 0..cfg.seeds {
        dog.tick();
        report.roundtrips += 1;
        match guarded(|| (t.valid)(&mut rng, &mut c)) {
            Ok(b) if b.len() <= MAX_INPUT => corpus.push(b),
            Ok(_) => {}
            Err(e) => {
                report.roundtrip_failures += 1;
                note_failure(&mut report, "round-trip", e, None, None);
            }
        }
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let nseeds = corpus.len();

    let mut input = Vec::with_capacity(MAX_INPUT);
    let mut next_note = Instant::now() + Duration::from_secs(5);
    for i in 0..cfg.execs {
        if cfg.valid_every > 0 && i % cfg.valid_every == 0 {
            dog.tick();
            report.roundtrips += 1;
            if let Err(e) = guarded(|| (t.valid)(&mut rng, &mut c)) {
                report.roundtrip_failures += 1;
                note_failure(&mut report, "round-trip", e, None, None);
            }
        }
        input.clear();
        input.extend_from_slice(&corpus[rng.below(corpus.len())]);
        havoc(&mut rng, &mut input, &corpus, t.dict);
        if let Some(s) = cfg.slot.as_mut() {
            s.record(i, &input);
        }
        dog.tick();
        let before = c.accepted;
        match guarded(|| (t.run)(&input, &mut c)) {
            Ok(()) => {
                if c.accepted > before && rng.one_in(16) {
                    if corpus.len() < CORPUS_MAX {
                        corpus.push(input.clone());
                    } else if corpus.len() > nseeds {
                        let at = nseeds + rng.below(corpus.len() - nseeds);
                        corpus[at].clone_from(&input);
                    }
                }
            }
            Err(e) => {
                report.crashes += 1;
                note_failure(&mut report, "panic", e, Some(&input), crash_dir.as_deref());
            }
        }
        if cfg.progress && i % 65536 == 0 && Instant::now() >= next_note {
            next_note = Instant::now() + Duration::from_secs(5);
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "gkfs-fuzz: {}: {i}/{} inputs, {:.0}/s, {} crashes",
                t.name,
                cfg.execs,
                i as f64 / secs,
                report.crashes + report.roundtrip_failures
            );
        }
    }
    drop(dog);
    report.execs = cfg.execs;
    report.secs = start.elapsed().as_secs_f64();
    report.accepted = c.accepted;
    report.corpus = corpus.len();
    report.kinds = names
        .into_iter()
        .zip(&c.kinds)
        .map(|(name, k)| KindReport {
            name,
            reached: k[0],
            accepted: k[1],
        })
        .collect();
    report
}
