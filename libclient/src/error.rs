//! Errors of the client.

use gkfs_fabric::FabricError;
use gkfs_proto::hosts::HostsError;
use gkfs_proto::Errno;
use thiserror::Error;

/// Why a client could not be set up.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No hosts file was given.
    #[error("no hosts file: set LIBGKFS_HOSTS_FILE (printed by `gkfs-run start`)")]
    NoHostsFile,
    /// The hosts file could not be read.
    #[error("cannot read the hosts file {path}: {source}")]
    ReadHosts {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The hosts file is malformed.
    #[error("bad hosts file: {0}")]
    Hosts(#[from] HostsError),
    /// The token file could not be read or parsed.
    #[error("cannot use the job token file {path}: {msg}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        msg: String,
    },
    /// The transport could not be opened.
    #[error("cannot open the transport: {0}")]
    Fabric(#[from] FabricError),
}

/// Maps a transport failure to the errno an application sees.
pub(crate) fn fabric_errno(e: &FabricError) -> Errno {
    Errno(e.errno())
}
