//! Mounting as a user: `fusermount3` (setuid root) opens /dev/fuse, mounts, and hands
//! the descriptor back over a socket named by `_FUSE_COMMFD` (libfuse's protocol).
//! Needed wherever /dev/fuse is not open to everyone (mode 0600), and the way libfuse
//! itself mounts for users.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// Mounts `dir` with `opts` (a `-o` list) through fusermount3; returns /dev/fuse.
pub fn mount(dir: &Path, opts: &str) -> Result<OwnedFd> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    // fusermount3 must inherit its end: a copy without close-on-exec. Ours of its end
    // goes at once, so that a fusermount3 that exits without sending makes our receive
    // see the end of the stream instead of waiting for ever.
    let inherited = nix::unistd::dup(theirs.as_raw_fd()).context("dup")?;
    drop(theirs);
    let theirs = inherited;
    let out = Command::new("fusermount3")
        .arg("-o")
        .arg(opts)
        .arg("--")
        .arg(dir)
        .env("_FUSE_COMMFD", theirs.to_string())
        .output();
    let _ = nix::unistd::close(theirs);
    let out = out.context("cannot run fusermount3 (Debian package fuse3)")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if why.contains("/dev/fuse") {
            " (users may not open /dev/fuse here: an administrator can make it mode 0666, as Debian's udev rule does)"
        } else {
            ""
        };
        bail!("fusermount3 cannot mount {}: {why}{hint}", dir.display());
    }
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut cmsg = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("no descriptor from fusermount3")?;
    for c in msg.cmsgs().context("no descriptor from fusermount3")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                for &extra in &fds[1..] {
                    let _ = nix::unistd::close(extra);
                }
                // SAFETY: the kernel just installed `fd` in this process for us (SCM_RIGHTS);
                // nothing else owns it.
                #[allow(unsafe_code)]
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    bail!(
        "fusermount3 mounted {} but sent no descriptor",
        dir.display()
    )
}

/// Unmounts `dir` (`lazy`: detach it even while in use).
pub fn unmount(dir: &Path, lazy: bool) -> Result<()> {
    let mut c = Command::new("fusermount3");
    c.arg("-u");
    if lazy {
        c.arg("-z");
    }
    let out = c
        .arg("--")
        .arg(dir)
        .output()
        .context("cannot run fusermount3")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
