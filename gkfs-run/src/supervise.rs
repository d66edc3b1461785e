//! The one supervisor of everything gkfs-run starts. Every launcher uses it: `start
//! --local` ([`crate::local`]), `start` in a Slurm allocation and its daemons' tasks
//! ([`crate::slurm`]), and the Slurm prolog/epilog ([`crate::node`]).
//!
//! - [`Deadline`]: a start-up's time limit, counted from the moment the start-up began
//!   (spawning included).
//! - [`wait_for`]: polls a readiness check until it holds; when the deadline passes, the
//!   check's last "not yet, because..." is the error; a caught signal interrupts it.
//! - [`not_answering`]: which daemons of a hosts file do not answer a ping (no ping waits
//!   past the deadline).
//! - [`Proc`], [`Stoppable`] and [`terminate`]: SIGTERM, a grace period, SIGKILL, and
//!   the processes reaped; [`running`] is the one answer to "is this pid alive"
//!   (a zombie is not).
//! - [`Undo`]: what a start-up has made so far (processes, directories, files); a start-up
//!   that fails for any reason hands its error to [`Undo::fail`], which stops the
//!   processes and removes what they and the start-up created.
//! - Signals ([`catch_signals`], [`interrupted`], [`pass_signals_to`],
//!   [`terminate_on_signal`]): SIGINT/SIGTERM/SIGHUP during a start-up make it fail
//!   (and clean up) instead of killing gkfs-run and orphaning its daemons.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gkfs_client::{Client, ClientConfig};
use gkfs_proto::hosts::Hosts;
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

/// A start-up's time limit, counted from when the start-up began.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    started: Instant,
    limit: Duration,
}

impl Deadline {
    /// A limit of `limit` from now.
    pub fn new(limit: Duration) -> Deadline {
        Deadline {
            started: Instant::now(),
            limit,
        }
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Has the limit passed?
    pub fn expired(&self) -> bool {
        self.started.elapsed() >= self.limit
    }

    /// Time left (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.started.elapsed())
    }

    /// Fails with a clear message once the limit has passed; `doing` says what the
    /// start-up was at.
    pub fn check(&self, doing: &str) -> Result<()> {
        if self.expired() {
            anyhow::bail!(
                "timed out after {} s (--timeout, counted from the start) while {doing}",
                self.limit.as_secs_f64()
            );
        }
        Ok(())
    }
}

/// One look at a start-up's progress, for [`wait_for`].
pub enum Poll<T> {
    /// Done.
    Ready(T),
    /// Not yet; the error to report if the deadline passes now.
    Pending(anyhow::Error),
}

/// Calls `check` every `every` until it is [`Poll::Ready`]. Fails with `check`'s error,
/// with its last [`Poll::Pending`] reason once `deadline` has passed, or when a signal
/// was caught ([`interrupted`]).
pub fn wait_for<T>(
    deadline: &Deadline,
    every: Duration,
    mut check: impl FnMut() -> Result<Poll<T>>,
) -> Result<T> {
    loop {
        check_interrupted()?;
        match check()? {
            Poll::Ready(t) => return Ok(t),
            Poll::Pending(why) if deadline.expired() => return Err(why),
            Poll::Pending(_) => {}
        }
        std::thread::sleep(
            every
                .min(deadline.remaining())
                .max(Duration::from_millis(1)),
        );
    }
}

/// Longest a readiness ping waits for its answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The daemons among `which` (indices into `hosts`, read from `hosts_file`) that do not
/// answer a ping now. No ping waits past `deadline` (each waits at most 2 s and at most
/// the time left); daemons left unpinged when it passes count as not answering.
pub fn not_answering(
    hosts_file: &Path,
    hosts: &Hosts,
    which: &[u32],
    deadline: &Deadline,
) -> Result<Vec<u32>> {
    let mut client: Option<(Client, Duration)> = None;
    let mut down = Vec::new();
    for &d in which {
        if deadline.expired() {
            down.push(d);
            continue;
        }
        let timeout = PING_TIMEOUT
            .min(deadline.remaining())
            .max(Duration::from_millis(10));
        // A client's timeout is fixed: a new one once less time is left than it waits.
        let c = match client.take() {
            Some((c, t)) if t <= timeout => (c, t),
            _ => (
                Client::with_hosts(
                    &ClientConfig {
                        timeout,
                        ..ClientConfig::new(hosts_file)
                    },
                    hosts.clone(),
                )
                .with_context(|| format!("cannot use {}", hosts_file.display()))?,
                timeout,
            ),
        };
        if c.0.ping(d).is_err() {
            down.push(d);
        }
        client = Some(c);
    }
    Ok(down)
}

/// The state letter and process group of the process whose `/proc` entry is `dir`.
fn proc_stat(dir: &std::path::Path) -> Option<(char, Option<u32>)> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    // After the command's ") ": state, ppid, pgrp, ...
    let mut f = stat.rsplit_once(") ")?.1.split(' ');
    let state = f.next()?.chars().next()?;
    Some((state, f.nth(1).and_then(|g| g.parse().ok())))
}

/// Is a process in this state alive (not a zombie, not dead)?
fn alive(state: char) -> bool {
    state != 'Z' && state != 'X'
}

/// Is `pid` a live process? A zombie (exited, not yet reaped) is not, nor is a pid
/// that does not exist.
pub fn running(pid: u32) -> bool {
    proc_stat(std::path::Path::new(&format!("/proc/{pid}"))).is_some_and(|(s, _)| alive(s))
}

/// Does process group `pgid` have a member that is not a zombie?
fn group_has_live_member(pgid: u32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| proc_stat(&e.path()).is_some_and(|(s, g)| g == Some(pgid) && alive(s)))
}

/// Does the command line of `pid` hold the argument `arg`? None when it has no
/// command line (gone, or exiting).
pub fn cmdline_has(pid: u32, arg: &std::ffi::OsStr) -> Option<bool> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.is_empty() {
        return None;
    }
    Some(
        cmdline
            .split(|b| *b == 0)
            .any(|a| a == arg.as_encoded_bytes()),
    )
}

/// A command for `program` whose process starts with the signals [`catch_signals`]
/// blocks unblocked again: a child inherits its parent's signal mask (std does not
/// reset it), and a daemon or job that cannot get SIGINT/SIGTERM would not stop.
#[allow(unsafe_code)]
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(program);
    let mut mask = SigSet::empty();
    for s in START_SIGNALS {
        mask.add(*s);
    }
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one pthread_sigmask call on a
    // SigSet copied in beforehand, and builds its error without allocating.
    unsafe {
        c.pre_exec(move || {
            mask.thread_unblock()
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    c
}

/// Something [`terminate`] can stop: a process ([`Proc`]) or a Slurm job step.
pub trait Stoppable {
    /// Sends `sig` (SIGTERM to ask, SIGKILL to force).
    fn signal(&mut self, sig: Signal) -> Result<()>;
    /// Has it ended (and, for a child of ours, been reaped)?
    fn ended(&mut self) -> bool;
}

/// A process under supervision: a child of gkfs-run (reaped once it exits) or a
/// process known by its pid only.
#[derive(Debug)]
pub struct Proc {
    pid: u32,
    child: Option<Child>,
    /// How it exited (`Some(None)`: it is gone, but not our child, so unknown).
    status: Option<Option<ExitStatus>>,
    /// It leads its own process group: signals go to the whole group, so that a
    /// wrapper script's children (GKFS_DAEMON may be one) stop with it.
    group: bool,
    /// An argument its command line must hold for it to be the process meant (a pid
    /// read from a file may have been reused by another process since).
    marker: Option<OsString>,
    /// Its command line held `marker` at the last look.
    confirmed: bool,
}

impl Proc {
    /// A child of ours; `group`: it was spawned as the leader of its own process group.
    pub fn child(child: Child, group: bool) -> Proc {
        Proc {
            pid: child.id(),
            child: Some(child),
            status: None,
            group,
            marker: None,
            confirmed: false,
        }
    }

    /// A process known by its pid only.
    pub fn pid(pid: u32) -> Proc {
        Proc {
            pid,
            child: None,
            status: None,
            group: false,
            marker: None,
            confirmed: false,
        }
    }

    /// Signals go to its process group while it runs and leads one.
    pub fn leading_group(mut self) -> Proc {
        self.group = true;
        self
    }

    /// Counts as this process only while its command line holds `arg`.
    pub fn holding_arg(mut self, arg: impl Into<OsString>) -> Proc {
        self.marker = Some(arg.into());
        self
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Our child's stdin pipe, if it has one (taken once).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    /// Is the process at `pid` still the one meant? A process that is exiting has no
    /// command line any more: it is the one meant if it was at the last look.
    fn is_it(&mut self) -> bool {
        let Some(m) = &self.marker else {
            return true;
        };
        if let Some(holds) = cmdline_has(self.pid, m) {
            self.confirmed = holds;
        }
        self.confirmed
    }

    /// Has it exited? Our own child is reaped on the way.
    pub fn exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        let gone = match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(Some(st)) => Some(Some(st)),
                Ok(None) => None,
                // Not waitable (reaped elsewhere): judge by /proc.
                Err(_) => (!running(self.pid)).then_some(None),
            },
            None => (!running(self.pid) || !self.is_it()).then_some(None),
        };
        self.status = gone;
        gone.is_some()
    }

    /// How it exited, once [`Proc::exited`] said so (`None` for a process that is not
    /// our child).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status.flatten()
    }

    /// Is anything of its process group left after the leader, our child, exited and
    /// was reaped? (A group can outlive its leader; while it has members, its id is not
    /// reused. For a pid-only process there is no telling: its number may be reused.)
    /// Zombies do not count: a PID 1 that reaps late keeps them around.
    fn group_left(&self) -> bool {
        self.group
            && self.child.is_some()
            && self.status.is_some()
            && kill(Pid::from_raw(-(self.pid as i32)), None).is_ok()
            && group_has_live_member(self.pid)
    }

    /// Does it run and lead its process group?
    fn leads_group(&self) -> bool {
        nix::unistd::getpgid(Some(Pid::from_raw(self.pid as i32)))
            .is_ok_and(|g| g.as_raw() == self.pid as i32)
    }
}

impl Stoppable for Proc {
    fn signal(&mut self, sig: Signal) -> Result<()> {
        let pid = self.pid as i32;
        if !self.exited() {
            if self.group && self.leads_group() {
                let _ = kill(Pid::from_raw(-pid), sig);
            } else {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        } else if self.group_left() {
            let _ = kill(Pid::from_raw(-pid), sig);
        }
        Ok(())
    }

    fn ended(&mut self) -> bool {
        self.exited() && !self.group_left()
    }
}

/// How long [`terminate`] waits.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// From SIGTERM to SIGKILL.
    pub term: Duration,
    /// For the killed ones to go after SIGKILL.
    pub kill: Duration,
    /// Between looks.
    pub poll: Duration,
}

impl Grace {
    /// `term` from SIGTERM to SIGKILL, then up to 5 s for the killed ones to go,
    /// looking every 10 ms.
    pub fn new(term: Duration) -> Grace {
        Grace {
            term,
            kill: Duration::from_secs(5),
            poll: Duration::from_millis(10),
        }
    }
}

/// Stops `items`: SIGTERM to every one still running, a wait of up to `grace.term`
/// (cut short by another SIGINT/SIGTERM/SIGHUP to gkfs-run: the user is in a hurry),
/// SIGKILL to the ones still there, and a wait of up to `grace.kill` for those. Our own
/// children are reaped. Returns the indices of the items that had to be killed.
pub fn terminate<T: Stoppable>(items: &mut [T], grace: Grace) -> Result<Vec<usize>> {
    let signals_before = signal_count();
    for it in items.iter_mut() {
        if !it.ended() {
            it.signal(Signal::SIGTERM)?;
        }
    }
    let until = Instant::now() + grace.term;
    while !items.iter_mut().all(|it| it.ended())
        && Instant::now() < until
        && signal_count() == signals_before
    {
        std::thread::sleep(grace.poll);
    }
    let mut killed = Vec::new();
    for (i, it) in items.iter_mut().enumerate() {
        if !it.ended() {
            it.signal(Signal::SIGKILL)?;
            killed.push(i);
        }
    }
    let until = Instant::now() + grace.kill;
    while !items.iter_mut().all(|it| it.ended()) && Instant::now() < until {
        std::thread::sleep(grace.poll);
    }
    Ok(killed)
}

/// What a start-up made, for [`Undo::fail`].
#[derive(Debug)]
enum Made {
    /// A file or a directory tree that is entirely the start-up's.
    Tree(PathBuf),
    /// A directory made only as a parent (`mkdir -p`): removed if empty.
    Parent(PathBuf),
    /// A directory that existed before: the entries not in `before` are removed.
    NewEntries {
        dir: PathBuf,
        before: HashSet<OsString>,
    },
}

/// Everything a start-up has made so far: its processes and what it created on disk.
/// When the start-up fails, [`Undo::fail`] stops the processes (SIGTERM, grace, SIGKILL,
/// reaped) and removes what was made, newest first; when it succeeds, [`Undo::keep`]
/// hands the processes over and removes nothing.
#[derive(Debug, Default)]
pub struct Undo {
    procs: Vec<Proc>,
    made: Vec<Made>,
}

/// How long a failed start-up's processes get between SIGTERM and SIGKILL.
const UNDO_GRACE: Duration = Duration::from_secs(10);

impl Undo {
    /// A process the start-up started.
    pub fn process(&mut self, p: Proc) {
        self.procs.push(p);
    }

    /// The processes, in the order they were added.
    pub fn processes(&mut self) -> &mut [Proc] {
        &mut self.procs
    }

    /// A file or directory tree that is entirely the start-up's.
    pub fn tree(&mut self, path: &Path) {
        self.made.push(Made::Tree(path.to_path_buf()));
    }

    /// A directory that existed before: what appears in it from now on is the
    /// start-up's (its own files and its daemons').
    pub fn new_entries_of(&mut self, dir: &Path) {
        let before = fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        self.made.push(Made::NewEntries {
            dir: dir.to_path_buf(),
            before,
        });
    }

    /// Creates `dir` (mode 0700) and the parents it lacks, and records each one made:
    /// `dir` itself as the start-up's when `own` (else removed only if empty), the
    /// parents as removed only if empty. Returns the directories it made, outermost
    /// first.
    pub fn create_dirs(&mut self, dir: &Path, own: bool) -> Result<Vec<PathBuf>> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
            .collect();
        missing.reverse();
        let mut made = Vec::new();
        for d in missing {
            match fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {
                    made.push(d.to_path_buf());
                    self.made.push(if own && d == dir {
                        Made::Tree(d.to_path_buf())
                    } else {
                        Made::Parent(d.to_path_buf())
                    });
                }
                // Made meanwhile by someone else: not ours.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", d.display())),
            }
        }
        if !dir.is_dir() {
            anyhow::bail!("cannot create {}: not a directory", dir.display());
        }
        Ok(made)
    }

    /// The start-up succeeded: nothing is undone; its processes are handed back.
    pub fn keep(self) -> Vec<Proc> {
        self.procs
    }

    /// The start-up failed with `err`: stops its processes and removes what it made,
    /// then returns `err` (anything that could not be undone is reported on stderr).
    pub fn fail(mut self, err: anyhow::Error) -> anyhow::Error {
        self.undo();
        err
    }

    fn undo(&mut self) {
        match terminate(&mut self.procs, Grace::new(UNDO_GRACE)) {
            Ok(killed) if !killed.is_empty() => eprintln!(
                "gkfs-run: {} of the start-up's processes did not stop within {} s of SIGTERM and were killed",
                killed.len(),
                UNDO_GRACE.as_secs()
            ),
            Ok(_) => {}
            Err(e) => eprintln!("gkfs-run: cannot stop the start-up's processes: {e:#}"),
        }
        for p in &mut self.procs {
            if !p.ended() {
                eprintln!(
                    "gkfs-run: process {} is still running after SIGKILL",
                    p.id()
                );
            }
        }
        while let Some(m) = self.made.pop() {
            let r = match &m {
                Made::Tree(p) => remove_tree(p),
                Made::Parent(p) => match fs::remove_dir(p) {
                    // Someone else's things are in it now: it stays.
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
                    r => r,
                },
                Made::NewEntries { dir, before } => fs::read_dir(dir).and_then(|rd| {
                    rd.flatten()
                        .filter(|e| !before.contains(&e.file_name()))
                        .try_for_each(|e| remove_tree(&e.path()))
                }),
            };
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    let p = match &m {
                        Made::Tree(p) | Made::Parent(p) | Made::NewEntries { dir: p, .. } => p,
                    };
                    eprintln!("gkfs-run: cannot remove {}: {e}", p.display());
                }
                _ => {}
            }
        }
    }
}

/// Removes a file, or a directory with everything in it (symlinks are not followed).
fn remove_tree(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    }
}

/// A start-up ended by a signal to gkfs-run.
#[derive(Debug, Clone, Copy)]
pub struct Interrupted(pub Signal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0.as_str())
    }
}

impl std::error::Error for Interrupted {}

/// What the signal thread does with a caught signal.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Only record it ([`interrupted`]).
    Record,
    /// Record it and send it on to this process, unless the terminal sent it (then
    /// the process, in gkfs-run's foreground process group, got it already).
    PassOn(u32),
    /// Record it and send SIGTERM to this process, once.
    TerminateOnce(u32),
}

struct SignalState {
    mode: Mode,
    last: Option<Signal>,
    count: u64,
}

static SIGNALS: Mutex<SignalState> = Mutex::new(SignalState {
    mode: Mode::Record,
    last: None,
    count: 0,
});

fn signal_state() -> std::sync::MutexGuard<'static, SignalState> {
    SIGNALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The signals a start-up catches.
pub const START_SIGNALS: &[Signal] = &[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Catches `signals` from now on: they no longer end gkfs-run; a thread records them
/// ([`interrupted`]) and acts on them as told ([`pass_signals_to`],
/// [`terminate_on_signal`]). Call it before any other thread starts (they are blocked,
/// and threads inherit that; so do child processes, unless started by [`command`]).
pub fn catch_signals(signals: &[Signal]) -> Result<()> {
    use nix::sys::signalfd::SignalFd;
    let mut mask = SigSet::empty();
    for s in signals {
        mask.add(*s);
    }
    mask.thread_block()
        .context("cannot block SIGINT/SIGTERM/SIGHUP")?;
    let fd = SignalFd::new(&mask).context("cannot open a signalfd")?;
    std::thread::Builder::new()
        .name("gkfs-run-signals".into())
        .spawn(move || {
            while let Ok(Some(info)) = fd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                let from_terminal = info.ssi_code == nix::libc::SI_KERNEL;
                let mut st = signal_state();
                st.last = Some(sig);
                st.count += 1;
                match st.mode {
                    Mode::Record => {}
                    Mode::PassOn(pid) => {
                        if !from_terminal {
                            let _ = kill(Pid::from_raw(pid as i32), sig);
                        }
                    }
                    Mode::TerminateOnce(pid) => {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                        st.mode = Mode::Record;
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The last signal caught, if any was ([`catch_signals`]).
pub fn interrupted() -> Option<Signal> {
    signal_state().last
}

/// Fails with [`Interrupted`] once a signal was caught.
pub fn check_interrupted() -> Result<()> {
    match interrupted() {
        Some(sig) => Err(Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// How many signals were caught so far.
pub fn signal_count() -> u64 {
    signal_state().count
}

/// From now on, caught signals are sent on to `pid`, unless the terminal sent them to
/// the whole foreground process group, `pid` included. The last signal caught after
/// `since` ([`signal_count`] before `pid` was started) goes on at once, whoever sent
/// it: it came while `pid` was being started.
pub fn pass_signals_to(pid: u32, since: u64) {
    let mut st = signal_state();
    st.mode = Mode::PassOn(pid);
    if st.count > since {
        if let Some(sig) = st.last {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }
}

/// Caught signals are only recorded again (the process they went on to has exited).
pub fn stop_passing_signals() {
    signal_state().mode = Mode::Record;
}

/// The first caught signal (also one caught before this call) sends SIGTERM to `pid`.
pub fn terminate_on_signal(pid: u32) {
    let mut st = signal_state();
    if st.count > 0 {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    } else {
        st.mode = Mode::TerminateOnce(pid);
    }
}

/// Waits until the child `pid` has exited, without reaping it (so that its pid cannot
/// be reused while signals may still be sent to it).
pub fn wait_exited(pid: u32) -> Result<()> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid as i32)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot wait for process {pid}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn deadline_counts_from_creation() {
        let d = Deadline::new(Duration::from_millis(50));
        assert!(!d.expired());
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.expired());
        assert_eq!(d.remaining(), Duration::ZERO);
        let e = d.check("spawning daemon 3 of 8").unwrap_err().to_string();
        assert!(
            e.contains("timed out after 0.05 s") && e.contains("spawning"),
            "{e}"
        );
    }

    #[test]
    fn wait_for_reports_the_last_reason_at_the_deadline() {
        let d = Deadline::new(Duration::from_millis(100));
        let mut n = 0;
        let e = wait_for::<()>(&d, Duration::from_millis(10), || {
            n += 1;
            Ok(Poll::Pending(anyhow::anyhow!("not yet {n}")))
        })
        .unwrap_err()
        .to_string();
        assert!(n > 2 && e == format!("not yet {n}"), "{e}");
        assert_eq!(
            wait_for(&d, Duration::from_millis(10), || Ok(Poll::Ready(7))).unwrap(),
            7
        );
    }

    #[test]
    fn terminate_stops_and_reaps_children_and_kills_the_stubborn() {
        let polite = Command::new("sleep").arg("30").spawn().unwrap();
        let stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        // Let sh set its trap.
        std::thread::sleep(Duration::from_millis(200));
        let mut procs = [Proc::child(polite, false), Proc::child(stubborn, false)];
        let pids: Vec<u32> = procs.iter().map(Proc::id).collect();
        let mut g = Grace::new(Duration::from_millis(500));
        g.kill = Duration::from_secs(5);
        let killed = terminate(&mut procs, g).unwrap();
        assert_eq!(killed, vec![1]);
        for (p, pid) in procs.iter_mut().zip(pids) {
            assert!(p.ended());
            // Reaped by the supervisor (it has the exit status), not left a zombie.
            assert!(p.exit_status().is_some(), "{pid} not reaped");
        }
    }

    #[test]
    fn running_is_false_for_zombies_and_missing_pids() {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!running(pid), "a zombie is not running");
        c.wait().unwrap();
        assert!(!running(pid));
        assert!(running(std::process::id()));
    }

    #[test]
    fn a_pid_only_process_with_another_command_line_is_not_touched() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let mut p = Proc::pid(c.id()).holding_arg("--hosts-file-of-someone-else");
        assert!(p.ended(), "not the process meant");
        let killed = terminate(&mut [p], Grace::new(Duration::from_millis(100))).unwrap();
        assert!(killed.is_empty());
        assert!(c.try_wait().unwrap().is_none(), "it must still run");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn undo_removes_what_was_made_and_keeps_what_was_there() {
        let base = std::env::temp_dir().join(format!("gkfs-undo-test-{}", std::process::id()));
        fs::create_dir_all(base.join("old")).unwrap();
        fs::write(base.join("old/keep"), b"x").unwrap();
        let mut u = Undo::default();
        u.new_entries_of(&base.join("old"));
        fs::write(base.join("old/new"), b"y").unwrap();
        let made = u.create_dirs(&base.join("a/b/c"), true).unwrap();
        assert_eq!(made.len(), 3);
        fs::write(base.join("a/b/c/f"), b"z").unwrap();
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        u.process(Proc::child(child, false));
        let e = u.fail(anyhow::anyhow!("boom"));
        assert_eq!(e.to_string(), "boom");
        assert!(!base.join("a").exists());
        assert!(base.join("old/keep").exists() && !base.join("old/new").exists());
        assert!(!running(pid), "the process must be stopped");
        fs::remove_dir_all(&base).unwrap();
    }
}
