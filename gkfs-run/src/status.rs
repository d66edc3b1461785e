//! `gkfs-run status`: per daemon, its address, whether it answers, and what it holds.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use gkfs_client::{Client, ClientConfig};
use serde::Serialize;

/// One daemon's line of the status.
#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    /// Index in the hosts file.
    pub index: u32,
    /// Node name.
    pub hostname: String,
    /// Address, human readable.
    pub address: String,
    /// Process id as registered.
    pub pid: Option<u32>,
    /// Does it answer?
    pub up: bool,
    /// Why not (the error its stats call got, e.g. a timeout of a hung daemon or a
    /// refused connection of a dead one).
    pub error: Option<String>,
    /// Metadata records stored.
    pub files: Option<u64>,
    /// Chunk files stored.
    pub chunks: Option<u64>,
    /// Bytes in chunk files.
    pub bytes: Option<u64>,
    /// Requests served.
    pub requests: Option<u64>,
    /// Of them, answered with an error.
    pub errors: Option<u64>,
    /// Bytes read by clients.
    pub bytes_read: Option<u64>,
    /// Bytes written by clients.
    pub bytes_written: Option<u64>,
    /// Bytes of the metadata database (RocksDB).
    pub metadata_bytes: Option<u64>,
    /// Its Prometheus endpoint (`gkfsd --metrics`), if on.
    pub metrics_address: Option<String>,
}

/// Formats a raw libfabric address: IPv4/IPv6 socket addresses as ip:port, else hex.
pub fn format_address(raw: &[u8]) -> String {
    if raw.len() >= 8 && u16::from_ne_bytes([raw[0], raw[1]]) == 2 {
        let port = u16::from_be_bytes([raw[2], raw[3]]);
        return format!("{}.{}.{}.{}:{port}", raw[4], raw[5], raw[6], raw[7]);
    }
    if raw.len() >= 24 && u16::from_ne_bytes([raw[0], raw[1]]) == 10 {
        let port = u16::from_be_bytes([raw[2], raw[3]]);
        let mut a = [0u8; 16];
        a.copy_from_slice(&raw[8..24]);
        return format!("[{}]:{port}", std::net::Ipv6Addr::from(a));
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client for asking the daemons of `hosts_file` about themselves: a hung daemon
/// costs 2 s, not the usual deadline.
pub fn client(hosts_file: &Path) -> Result<Client> {
    Client::new(&ClientConfig {
        timeout: Duration::from_secs(2),
        ..ClientConfig::new(hosts_file)
    })
    .with_context(|| format!("cannot use {}", hosts_file.display()))
}

/// Asks every daemon listed in `hosts_file`.
pub fn collect(hosts_file: &Path) -> Result<Vec<DaemonStatus>> {
    let client = client(hosts_file)?;
    let mut out = Vec::new();
    for (i, e) in client.hosts().entries.iter().enumerate() {
        let answer = client.daemon_metrics(i as u32);
        let error = answer.as_ref().err().map(|e| match *e {
            gkfs_client::Errno::ETIMEDOUT => format!("no answer within 2 s ({e})"),
            gkfs_client::Errno::EIO => format!("not reachable: dead or gone ({e})"),
            _ => e.to_string(),
        });
        let stats = answer.ok();
        out.push(DaemonStatus {
            index: i as u32,
            hostname: e.hostname.clone(),
            address: format_address(&e.address),
            pid: e.pid,
            up: stats.is_some(),
            error,
            files: stats.as_ref().map(|s| s.records),
            chunks: stats.as_ref().map(|s| s.chunks),
            bytes: stats.as_ref().map(|s| s.chunk_bytes),
            requests: stats.as_ref().map(|s| s.ops.iter().map(|o| o.count).sum()),
            errors: stats.as_ref().map(|s| s.ops.iter().map(|o| o.errors).sum()),
            bytes_read: stats.as_ref().map(|s| s.bytes_read),
            bytes_written: stats.as_ref().map(|s| s.bytes_written),
            metadata_bytes: stats.as_ref().map(|s| s.meta_bytes),
            metrics_address: stats
                .as_ref()
                .map(|s| s.metrics_address.clone())
                .filter(|a| !a.is_empty()),
        });
    }
    Ok(out)
}

/// Prints the status as a table.
pub fn print_table(rows: &[DaemonStatus]) {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:>3}  {:<16} {:<22} {:>8}  {:<4} {:>10} {:>10} {:>14}",
        "#", "HOST", "ADDRESS", "PID", "UP", "FILES", "CHUNKS", "BYTES"
    );
    for r in rows {
        println!(
            "{:>3}  {:<16} {:<22} {:>8}  {:<4} {:>10} {:>10} {:>14}",
            r.index,
            r.hostname,
            r.address,
            r.pid.map_or("-".into(), |p| p.to_string()),
            if r.up { "up" } else { "DOWN" },
            opt(r.files),
            opt(r.chunks),
            opt(r.bytes)
        );
        if let Some(e) = &r.error {
            println!("     daemon {} is DOWN: {e}", r.index);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses() {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&2u16.to_ne_bytes());
        a[2..4].copy_from_slice(&8080u16.to_be_bytes());
        a[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(super::format_address(&a), "127.0.0.1:8080");
        assert_eq!(super::format_address(&[1, 2]), "0102");
    }
}
