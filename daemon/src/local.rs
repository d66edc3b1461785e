//! The node-local socket: clients on this host send requests here instead of through
//! libfabric, over a `gkfs_fabric::shm::Channel` each (shared slots and a data window,
//! the socket for wake-ups and large messages). One thread per connection; a connection
//! serves one request at a time, so a client keeps one connection per call in flight.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use gkfs_fabric::shm::Channel;

use crate::server::handle_payload;
use crate::state::State;
use gkfs_fabric::bulk::Sender;

/// The socket server; stopped (and its file removed) by [`LocalServer::stop`].
pub struct LocalServer {
    path: PathBuf,
    /// The listening socket (a second handle), shut down to end the acceptor even
    /// when the socket file was removed under it.
    listener: UnixListener,
    /// `<socket>.lock`, locked (flock) for the server's life: one daemon per socket.
    lock: nix::fcntl::Flock<std::fs::File>,
    acceptor: Option<JoinHandle<()>>,
    conns: Conns,
    stop: Arc<AtomicBool>,
}

/// Open connections: a handle to shut each down, and its thread.
type Conns = Arc<Mutex<Vec<(UnixStream, JoinHandle<()>)>>>;

/// Unix socket paths are limited to 107 bytes.
pub const MAX_SOCKET_PATH: usize = 107;

impl LocalServer {
    /// Listens on `path` (mode 0600). A stale socket file there is replaced; a live
    /// one (its lock file `<path>.lock` held by a running daemon, or a socket that
    /// answers) is refused, so a second daemon can never take over a first one's
    /// clients.
    pub fn start(path: &Path, state: Arc<State>) -> Result<LocalServer> {
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            anyhow::bail!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
                path.display()
            );
        }
        let lock = lock_socket(path)?;
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "socket {} is in use: another process serves it; give this daemon its own --socket",
                path.display()
            );
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        let handle = listener
            .try_clone()
            .context("cannot duplicate the listening socket")?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let acceptor = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::Builder::new()
                .name("gkfsd-local".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let Ok(handle) = stream.try_clone() else {
                            continue;
                        };
                        let state = state.clone();
                        let h = std::thread::Builder::new()
                            .name("gkfsd-local-conn".into())
                            .spawn(move || serve(stream, &state));
                        match h {
                            Ok(h) => {
                                let mut c = conns.lock().unwrap_or_else(|e| e.into_inner());
                                c.retain(|(_, h)| !h.is_finished());
                                c.push((handle, h));
                            }
                            Err(e) => log::warn!("cannot start a connection thread: {e}"),
                        }
                    }
                })
                .context("cannot start the local socket thread")?
        };
        Ok(LocalServer {
            path: path.to_path_buf(),
            listener: handle,
            lock,
            acceptor: Some(acceptor),
            conns,
            stop,
        })
    }

    /// Stops accepting, waits for the connections to finish their current request, and
    /// removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor: shutting the listening socket down makes accept return
        // (Linux), whether or not the socket file is still there.
        use std::os::fd::AsRawFd;
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        // Unblocks each connection's read; a request being served finishes first.
        for (s, _) in &conns {
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
        for (_, h) in conns {
            let _ = h.join();
        }
        // The socket only if it is still ours (never another daemon's), then the lock
        // (still held: a daemon starting now makes a new lock file).
        if self.path.exists() && UnixStream::connect(&self.path).is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(lock_path(&self.path));
        drop(self.lock);
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes `<socket>.lock` (flock, never waiting) and writes our pid into it.
fn lock_socket(socket: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(socket);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the socket's lock file {}", path.display()))?;
    let locked = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, e)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "socket {} is in use by a running gkfsd (pid {}, holding {}: {e}); give this daemon its own --socket",
                socket.display(),
                holder.trim(),
                path.display(),
            );
        }
    };
    locked.set_len(0).context("truncate the lock file")?;
    (&*locked)
        .write_all(format!("{}\n", std::process::id()).as_bytes())
        .context("write the lock file")?;
    Ok(locked)
}

/// Shuts a connection down when its thread ends: the acceptor keeps a handle of
/// every connection (to stop it), so dropping ours would not close it.
struct CloseOnDrop(Option<UnixStream>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Counts a connection among the open ones while it lives.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(n: &'a AtomicU64) -> Counted<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve(stream: UnixStream, state: &State) {
    let _close = CloseOnDrop(stream.try_clone().ok());
    let _counted = Counted::new(&state.counters.local_connections);
    let max = gkfs_proto::local::max_frame(state.chunk_size.get());
    let mut ch = match Channel::accept(stream, max, gkfs_proto::local::FRAME_STALL) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("local client: {e}; closing its connection");
            return;
        }
    };
    let window = ch.shared_window();
    // What the client moves in our chunk files itself counts when we report counters.
    let _watched = ch
        .elsewhere_counts()
        .map(|c| state.counters.watch_elsewhere(c));
    let pid = nix::sys::socket::getsockopt(ch.stream(), nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid());
    loop {
        let payload = match ch.recv() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                log::warn!("local client: {e}; closing its connection");
                return;
            }
        };
        let reply = handle_payload(state, &payload, false, Sender::local(window.clone(), pid));
        if let Err(e) = ch.send(&reply) {
            log::debug!("local client: cannot send a reply ({e}); closing its connection");
            return;
        }
    }
}
