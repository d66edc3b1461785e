//! Transport errors.

use std::ffi::CStr;
use thiserror::Error;

use crate::sys;

/// What can go wrong in the transport.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FabricError {
    /// The operation did not complete before its deadline.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The peer cannot be reached or went away.
    #[error("peer unreachable: {0}")]
    PeerGone(String),
    /// A message was larger than the buffer posted for it.
    #[error("message truncated (larger than {0} bytes)")]
    Truncated(usize),
    /// The operation was canceled (endpoint shutting down).
    #[error("operation canceled")]
    Canceled,
    /// A peer address was malformed.
    #[error("bad peer address: {0}")]
    BadAddress(String),
    /// A libfabric call failed.
    #[error("{call} failed: {msg} ({code})")]
    Call {
        /// The libfabric function.
        call: &'static str,
        /// The (positive) libfabric error code.
        code: i32,
        /// libfabric's description.
        msg: String,
    },
}

impl FabricError {
    /// The errno a file system call that failed this way reports (the one table of
    /// it: the client API and the daemon both use it).
    pub fn errno(&self) -> i32 {
        match self {
            FabricError::Timeout => libc::ETIMEDOUT,
            FabricError::Truncated(_) => libc::EPROTO,
            FabricError::PeerGone(_)
            | FabricError::Canceled
            | FabricError::BadAddress(_)
            | FabricError::Call { .. } => libc::EIO,
        }
    }

    /// Is this the peer being dead or unreachable (as opposed to a local problem)?
    pub fn is_peer_failure(&self) -> bool {
        matches!(self, FabricError::Timeout | FabricError::PeerGone(_))
    }
}

/// Describes a libfabric error code.
pub(crate) fn strerror(code: i32) -> String {
    // SAFETY: fi_strerror returns a pointer to a static, NUL-terminated string.
    unsafe { CStr::from_ptr(sys::gkfs_fi_strerror(code)) }
        .to_string_lossy()
        .into_owned()
}

/// Turns a negative libfabric return value into an error (like nix's `Errno::result`).
pub(crate) fn check(call: &'static str, ret: i64) -> Result<u64, FabricError> {
    if ret >= 0 {
        return Ok(ret as u64);
    }
    let code = (-ret) as i32;
    Err(classify(call, code, strerror(code)))
}

/// Maps an error code to the variant that tells callers what happened.
pub(crate) fn classify(call: &'static str, code: i32, msg: String) -> FabricError {
    match code as u32 {
        sys::FI_ECANCELED => FabricError::Canceled,
        sys::FI_ETRUNC | sys::FI_EMSGSIZE => FabricError::Truncated(0),
        sys::FI_ECONNREFUSED
        | sys::FI_ECONNRESET
        | sys::FI_ECONNABORTED
        | sys::FI_EHOSTUNREACH
        | sys::FI_ENOTCONN
        | sys::FI_ESHUTDOWN
        | sys::FI_ENETUNREACH
        | sys::FI_ETIMEDOUT
        | sys::FI_EIO => FabricError::PeerGone(format!("{call}: {msg}")),
        _ => FabricError::Call { call, code, msg },
    }
}
