//! The hosts file: the list of a file system's daemons, in placement order.
//!
//! Format (UTF-8 text, one daemon per line, written by the daemons themselves with
//! one atomic `O_APPEND` write each):
//!
//! ```text
//! # comment lines and blank lines are ignored
//! <hostname> <provider> <address-hex> [key=value ...]
//! node1 tcp;ofi_rxm 02009a4a7f0000010000000000000000 chunk_size=524288 mountdir=/tmp/gkfs pid=4242
//! ```
//!
//! - `hostname`: the node's name (informational; used by `gkfs-run status`).
//! - `provider`: the libfabric provider the daemon listens on, e.g. `tcp;ofi_rxm`.
//! - `address-hex`: the endpoint's raw libfabric name (`fi_getname`), hex encoded.
//! - keys: `chunk_size` (bytes, required), `mountdir` (required), `pid`, `socket` (the
//!   daemon's node-local unix socket: clients on the same host talk to it there instead
//!   of through libfabric); unknown keys are ignored, so newer daemons can add keys.
//!
//! The daemon of line `i` (counting daemon lines from 0) is daemon `i` for
//! [`crate::place`]. Every line must agree on `chunk_size`, `mountdir` and
//! `provider`. The membership hash ([`Hosts::membership`]) identifies the list.

use thiserror::Error;
use xxhash_rust::xxh64::xxh64;

/// Seed of the membership hash (ASCII "hosts").
const MEMBERSHIP_SEED: u64 = 0x0068_6f73_7473;

/// A hosts file that could not be used, with the place that was wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file}:{line}: {msg}")]
pub struct HostsError {
    /// The file name as given.
    pub file: String,
    /// 1-based line number (0 when the problem is the whole file).
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// One daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Node name.
    pub hostname: String,
    /// libfabric provider.
    pub provider: String,
    /// Raw endpoint address.
    pub address: Vec<u8>,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Mount directory advertised to clients.
    pub mountdir: String,
    /// Daemon process id, when known.
    pub pid: Option<u32>,
    /// Path of the daemon's node-local unix socket, when it has one.
    pub socket: Option<String>,
}

impl HostEntry {
    /// Formats the entry as one hosts-file line (with the trailing newline).
    pub fn to_line(&self) -> String {
        let mut s = format!(
            "{} {} {} chunk_size={} mountdir={}",
            self.hostname,
            self.provider,
            hex(&self.address),
            self.chunk_size,
            self.mountdir
        );
        if let Some(pid) = self.pid {
            s.push_str(&format!(" pid={pid}"));
        }
        if let Some(sock) = &self.socket {
            s.push_str(&format!(" socket={sock}"));
        }
        s.push('\n');
        s
    }
}

/// A parsed hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// Daemons in placement order.
    pub entries: Vec<HostEntry>,
}

/// Lower-case hex of an address, as the hosts file writes it.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The address a daemon listening on `ip:port` reports with the IP providers (tcp,
/// sockets, verbs through rdma_cm): a `struct sockaddr_in` (family in host order, port
/// and address in network order, 8 bytes of zeros). Launchers that cannot collect the
/// daemons' lines (one Slurm prolog per node) compute every node's line with it.
pub fn sockaddr_in_address(ip: std::net::Ipv4Addr, port: u16) -> Vec<u8> {
    let mut a = Vec::with_capacity(16);
    a.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a.extend_from_slice(&port.to_be_bytes());
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&[0; 8]);
    a
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Hosts {
    /// The mount dir a hosts file names on any daemon line, even a file that does not
    /// parse (a damaged file still says where the file system was meant to be).
    pub fn scan_mountdir(text: &str) -> Option<&str> {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
            .find_map(|w| w.strip_prefix("mountdir="))
            .filter(|m| m.starts_with('/'))
    }

    /// Parses the text of a hosts file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Hosts, HostsError> {
        let err = |line: usize, msg: String| HostsError {
            file: file.to_string(),
            line,
            msg,
        };
        let mut entries: Vec<HostEntry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(hostname), Some(provider), Some(addr)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(err(
                    lineno,
                    format!("expected `<hostname> <provider> <address-hex> key=value...`, found `{line}`"),
                ));
            };
            let address =
                unhex(addr).ok_or_else(|| err(lineno, format!("address `{addr}` is not hex")))?;
            let mut chunk_size = None;
            let mut mountdir = None;
            let mut pid = None;
            let mut socket = None;
            for kv in fields {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(err(lineno, format!("expected key=value, found `{kv}`")));
                };
                match k {
                    "chunk_size" => {
                        chunk_size = Some(
                            v.parse::<u64>()
                                .ok()
                                .filter(|c| crate::chunk::ChunkSize::new(*c).is_some())
                                .ok_or_else(|| {
                                    err(
                                        lineno,
                                        format!(
                                        "chunk_size `{v}` is not a power of two from 4096 to 1 GiB"
                                    ),
                                    )
                                })?,
                        )
                    }
                    "mountdir" => {
                        if !v.starts_with('/') {
                            return Err(err(lineno, format!("mountdir `{v}` is not absolute")));
                        }
                        let m = v.trim_end_matches('/');
                        if m.is_empty() {
                            return Err(err(lineno, format!("mountdir `{v}` is the root")));
                        }
                        mountdir = Some(m.to_string())
                    }
                    "pid" => pid = v.parse().ok(),
                    "socket" if v.starts_with('/') => socket = Some(v.to_string()),
                    _ => {}
                }
            }
            let entry = HostEntry {
                hostname: hostname.to_string(),
                provider: provider.to_string(),
                address,
                chunk_size: chunk_size.ok_or_else(|| err(lineno, "missing chunk_size=".into()))?,
                mountdir: mountdir.ok_or_else(|| err(lineno, "missing mountdir=".into()))?,
                pid,
                socket,
            };
            if let Some(first) = entries.first() {
                let what = if first.chunk_size != entry.chunk_size {
                    Some("chunk_size")
                } else if first.mountdir != entry.mountdir {
                    Some("mountdir")
                } else if first.provider != entry.provider {
                    Some("provider")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(err(
                        lineno,
                        format!("{what} differs from the first daemon's"),
                    ));
                }
                if entries.iter().any(|e| e.address == entry.address) {
                    return Err(err(lineno, "the same address appears twice".into()));
                }
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(err(
                0,
                "no daemon listed (is the file system started?)".into(),
            ));
        }
        if entries.len() > u32::MAX as usize / 2 {
            return Err(err(0, "too many daemons".into()));
        }
        Ok(Hosts { entries })
    }

    /// The membership hash: XXH64 (seed "hosts") over `hostname provider address-hex\n`
    /// of every daemon in order. Never 0.
    pub fn membership(&self) -> u64 {
        let mut text = String::new();
        for e in &self.entries {
            text.push_str(&format!(
                "{} {} {}\n",
                e.hostname,
                e.provider,
                hex(&e.address)
            ));
        }
        xxh64(text.as_bytes(), MEMBERSHIP_SEED).max(1)
    }

    /// Number of daemons.
    pub fn len(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Always false: a parsed hosts file lists at least one daemon.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The common chunk size.
    pub fn chunk_size(&self) -> u64 {
        self.entries[0].chunk_size
    }

    /// The common mount directory.
    pub fn mountdir(&self) -> &str {
        &self.entries[0].mountdir
    }

    /// The common provider.
    pub fn provider(&self) -> &str {
        &self.entries[0].provider
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> HostEntry {
        HostEntry {
            hostname: format!("node{n}"),
            provider: "tcp;ofi_rxm".into(),
            address: vec![2, 0, n, 1],
            chunk_size: 524288,
            mountdir: "/tmp/gkfs".into(),
            pid: Some(7),
            socket: None,
        }
    }

    #[test]
    fn sockaddr_in_matches_what_the_tcp_provider_reports() {
        // From a daemon's line: `vm tcp;ofi_rxm 020088117f0000010000000000000000 ...`
        let a = sockaddr_in_address(std::net::Ipv4Addr::LOCALHOST, 0x8811);
        assert_eq!(hex(&a), "020088117f0000010000000000000000");
    }

    #[test]
    fn round_trip() {
        let text = format!("# header\n\n{}{}", entry(1).to_line(), entry(2).to_line());
        let h = Hosts::parse("hosts", &text).unwrap();
        assert_eq!(h.entries, vec![entry(1), entry(2)]);
        assert_eq!(h.len(), 2);
        assert_ne!(
            h.membership(),
            Hosts {
                entries: vec![entry(2), entry(1)]
            }
            .membership()
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = format!("{}garbage here\n", entry(1).to_line());
        let e = Hosts::parse("/x/hosts", &text).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("/x/hosts:2: "), "{e}");
        let e = Hosts::parse("h", "a b zz chunk_size=4096 mountdir=/m\n").unwrap_err();
        assert!(e.msg.contains("not hex"));
        let e = Hosts::parse("h", "a b 00 chunk_size=4097 mountdir=/m\n").unwrap_err();
        assert!(e.msg.contains("chunk_size"));
        let e = Hosts::parse("h", "a b 00 chunk_size=4096\n").unwrap_err();
        assert!(e.msg.contains("mountdir"));
        let mut other = entry(2);
        other.chunk_size = 4096;
        let e =
            Hosts::parse("h", &format!("{}{}", entry(1).to_line(), other.to_line())).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(
            Hosts::parse("h", "\n# only comments\n").unwrap_err().line,
            0
        );
        assert!(Hosts::parse("h", "\u{0}\u{1}\u{2}").is_err());
    }

    #[test]
    fn the_root_is_no_mount_dir() {
        // Found by the fuzzers (gkfs-fuzz hosts): `mountdir=/` parsed to the mount dir
        // "", which is not absolute and printed back as a line that does not parse.
        for m in ["/", "//"] {
            let e =
                Hosts::parse("h", &format!("a b 00 chunk_size=4096 mountdir={m}\n")).unwrap_err();
            assert!(e.msg.contains("is the root"), "{e}");
        }
        let h = Hosts::parse("h", "a b 00 chunk_size=4096 mountdir=/m//\n").unwrap();
        assert_eq!(h.mountdir(), "/m");
        let printed: String = h.entries.iter().map(HostEntry::to_line).collect();
        assert_eq!(Hosts::parse("h", &printed).unwrap(), h);
    }
}
