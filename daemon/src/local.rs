//! The node-local socket: clients on this host send requests here instead of through
//! libfabric (see `gkfs_proto::local`). One thread per connection; a connection serves
//! one request at a time, so a client keeps one connection per call in flight.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::server::{handle_payload, Origin};
use crate::state::State;

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

/// A client's shared window (its memfd), for the life of its connection. The daemon
/// reads and writes it with pread/pwrite; it does not map it.
#[derive(Debug)]
pub struct Window {
    file: std::fs::File,
    len: u64,
}

impl Window {
    /// Checks that `len` bytes at `offset` are inside the window.
    pub fn check(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|e| e <= self.len)
    }

    /// Copies `buf.len()` bytes at `offset` of the window into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    /// Copies `data` into the window at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, data, offset)
    }
}

/// Reads the window handshake (8 bytes, maybe with a memfd in SCM_RIGHTS).
fn receive_window(stream: &UnixStream) -> std::io::Result<Option<Window>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut hs = [0u8; 8];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut file: Option<std::fs::File> = None;
    let n = {
        let mut iov = [std::io::IoSliceMut::new(&mut hs)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    let f = adopt_fd(f);
                    file.get_or_insert(f);
                }
            }
        }
        msg.bytes
    };
    if n != hs.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "short window handshake",
        ));
    }
    let size = gkfs_proto::local::parse_handshake(&hs)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a gkfs client"))?
        as u64;
    let (Some(file), true) = (file, size > 0) else {
        return Ok(None);
    };
    if file.metadata()?.len() < size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "window smaller than announced",
        ));
    }
    Ok(Some(Window { file, len: size }))
}

/// Takes ownership of a descriptor received in SCM_RIGHTS.
#[allow(unsafe_code)]
fn adopt_fd(fd: std::os::fd::RawFd) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel just installed this descriptor for us (recvmsg SCM_RIGHTS);
    // nothing else owns it.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// Reads one request frame. Idle time between requests is unbounded (clients keep
/// connections), but a frame whose body is not all here yet must keep coming: after
/// [`gkfs_proto::local::FRAME_STALL`] without a byte the connection is dropped, and
/// with it the partial frame.
fn read_request(
    reader: &mut BufReader<UnixStream>,
    stream: Option<&UnixStream>,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    use gkfs_proto::local::{read_frame_body, read_frame_len, FRAME_STALL};
    let Some(len) = read_frame_len(reader, max)? else {
        return Ok(None);
    };
    let stream = stream.filter(|_| reader.buffer().len() < len);
    if let Some(s) = stream {
        s.set_read_timeout(Some(FRAME_STALL))?;
    }
    let body = read_frame_body(reader, len).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("a {len}-byte frame stalled for {FRAME_STALL:?}"),
            )
        } else {
            e
        }
    })?;
    if let Some(s) = stream {
        s.set_read_timeout(None)?;
    }
    Ok(Some(body))
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
    let window = match receive_window(&stream) {
        Ok(w) => w,
        Err(e) => {
            log::warn!("local client: {e}; closing its connection");
            return;
        }
    };
    let window = window.map(std::sync::Arc::new);
    let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid());
    let Ok(w) = stream.try_clone() else { return };
    let mut spinner = gkfs_fabric::spin::Spinner::new();
    let peek = stream.try_clone().ok();
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(w);
    loop {
        // A client in a loop sends its next request right after our reply.
        if let (Some(p), true) = (&peek, reader.buffer().is_empty()) {
            spinner.wait(p);
        }
        let payload = match read_request(&mut reader, peek.as_ref(), max) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                log::warn!("local client: {e}; closing its connection");
                return;
            }
        };
        let reply = handle_payload(
            state,
            &payload,
            false,
            Origin::Local {
                window: window.clone(),
                pid,
            },
        );
        if gkfs_proto::local::write_frame(&mut writer, &reply)
            .and_then(|_| writer.flush())
            .is_err()
        {
            return;
        }
    }
}
