//! Logging and the unsupported-call report. Silent unless asked: `LIBGKFS_LOG` sets the
//! level (error, warn, info, debug), `LIBGKFS_LOG_OUTPUT` names a file (default: a
//! private duplicate of stderr, taken at set-up, since programs close fd 2 at exit).
//! At exit, a process that made unsupported calls sends their counts to a daemon (they
//! appear in `gkfs-run stats` and the job's summary); with `LIBGKFS_REPORT=1` the
//! library also lists them on stderr. Messages go through the `log` facade (the client API logs there too).

use std::fmt::Arguments;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use parking_lot::Mutex;

struct Logger {
    out: Mutex<std::fs::File>,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!(
                "gkfs[{}] {}: {}\n",
                std::process::id(),
                r.level().as_str().to_lowercase(),
                r.args()
            );
            let _ = self.out.lock().write_all(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

static INIT: Once = Once::new();

/// Sets up logging from the environment (once; cheap when logging is off).
pub fn init() {
    INIT.call_once(|| {
        let level = match std::env::var("LIBGKFS_LOG").as_deref() {
            Ok("error") => log::LevelFilter::Error,
            Ok("warn") | Ok("warning") => log::LevelFilter::Warn,
            Ok("info") => log::LevelFilter::Info,
            Ok("debug") | Ok("trace") | Ok("all") => log::LevelFilter::Debug,
            _ => return,
        };
        let out = match std::env::var_os("LIBGKFS_LOG_OUTPUT") {
            Some(p) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(std::os::fd::IntoRawFd::into_raw_fd),
            // SAFETY: F_DUPFD_CLOEXEC on fd 2 returns a new fd we own, or -1.
            None => Some(unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0) }).filter(|&fd| fd >= 0),
        };
        // The log descriptor is the library's, high and out of the program's way.
        let out = out.map(|fd| {
            let fd: RawFd = crate::fds::own_log(fd);
            // SAFETY: `fd` is a fresh descriptor owned by nobody else.
            unsafe { std::fs::File::from_raw_fd(fd) }
        });
        if let Some(out) = out {
            let logger = Box::leak(Box::new(Logger {
                out: Mutex::new(out),
            }));
            if log::set_logger(logger).is_ok() {
                log::set_max_level(level);
            }
        }
    });
}

/// Logs an error.
pub fn error(a: Arguments) {
    init();
    log::error!("{a}");
}

/// Says, once per process and always (whatever the log level), that the mount dir the
/// environment names cannot be served and why: calls under it then fail with EIO
/// instead of reaching the disk below. One line on stderr (and in the log).
pub fn cannot_serve(why: Arguments) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        init();
        log::error!("{why}");
        let line = format!("gkfs[{}]: {why}\n", std::process::id());
        // SAFETY: writes a byte buffer to fd 2; failure is ignored (nothing to report to).
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    });
}

/// Logs a debug message.
pub fn debug(a: Arguments) {
    init();
    log::debug!("{a}");
}

/// Calls the library cannot serve (each returned the errno POSIX names).
#[derive(Clone, Copy)]
pub enum Unsupported {
    /// chown family with a different owner.
    Chown,
    /// mknod/mkfifo.
    Mknod,
    /// fallocate modes other than plain allocation.
    Fallocate,
    /// Extended attributes.
    Xattr,
    /// Other fcntl commands.
    Fcntl,
    /// ioctl on a gkfs fd.
    Ioctl,
    /// posix_spawn of a program stored in gkfs.
    Spawn,
    /// glibc's fts on gkfs paths.
    Fts,
}

const NAMES: [&str; 8] = [
    "chown",
    "mknod",
    "fallocate",
    "xattr",
    "fcntl",
    "ioctl",
    "spawn",
    "fts",
];
static COUNTS: [AtomicU32; NAMES.len()] = [const { AtomicU32::new(0) }; NAMES.len()];
static REPORT: Once = Once::new();

/// Records an unsupported call (for the exit report) and logs it.
pub fn unsupported(what: Unsupported, detail: Arguments) {
    COUNTS[what as usize].fetch_add(1, Ordering::Relaxed);
    init();
    log::warn!("unsupported: {detail}");
    // SAFETY: registers a plain extern "C" fn without arguments.
    REPORT.call_once(|| unsafe {
        libc::atexit(report_at_exit);
    });
}

/// A forked child starts its own count: its parent reports what it did before the fork
/// (the exit handler stays registered; with nothing counted it sends nothing).
pub fn forget_unsupported_after_fork() {
    for n in &COUNTS {
        n.store(0, Ordering::Relaxed);
    }
}

/// At exit, for a process that made unsupported calls: their counts go to a daemon
/// (for the job's summary), and with `LIBGKFS_REPORT=1` to stderr or the log file.
extern "C" fn report_at_exit() {
    let counts: Vec<(&str, u64)> = NAMES
        .iter()
        .zip(COUNTS.iter())
        .map(|(name, n)| (*name, u64::from(n.load(Ordering::Relaxed))))
        .filter(|(_, n)| *n > 0)
        .collect();
    if counts.is_empty() {
        return;
    }
    crate::hook::callback(|| {
        match crate::state::client() {
            Ok(c) => {
                if let Err(e) = c.report_unsupported(&counts) {
                    log::debug!("cannot report the unsupported calls: {e}");
                }
            }
            Err(e) => log::debug!("cannot report the unsupported calls: {e}"),
        }
        Ok(0)
    });
    if std::env::var("LIBGKFS_REPORT").as_deref() == Ok("1") {
        let mut text = String::new();
        for (name, n) in &counts {
            text.push_str(&format!(
                "gkfs[{}]: unsupported call {name}: {n} time(s)\n",
                std::process::id()
            ));
        }
        write_report(&text);
    }
}

fn write_report(text: &str) {
    if let Some(p) = std::env::var_os("LIBGKFS_LOG_OUTPUT") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = f.write_all(text.as_bytes());
            return;
        }
    }
    // SAFETY: writes a byte buffer to fd 2; failure is ignored (nothing to report to).
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}
