//! Names of the environment variables and files shared by the client, the daemon and
//! the launcher (GekkoFS's names where GekkoFS has one, so users can switch).

/// Path of the hosts file.
pub const ENV_HOSTS_FILE: &str = "LIBGKFS_HOSTS_FILE";
/// Mount directory (else taken from the hosts file).
pub const ENV_MOUNTDIR: &str = "LIBGKFS_MOUNTDIR";
/// Path of the token file (else `token` beside the hosts file).
pub const ENV_TOKEN_FILE: &str = "LIBGKFS_TOKEN_FILE";
/// Client log level (off by default).
pub const ENV_LOG: &str = "LIBGKFS_LOG";
/// Client log file.
pub const ENV_LOG_OUTPUT: &str = "LIBGKFS_LOG_OUTPUT";
/// Per-RPC deadline of the client, in milliseconds.
pub const ENV_TIMEOUT_MS: &str = "LIBGKFS_TIMEOUT_MS";
/// Path of the preload library, as exported by `gkfs-run start`.
pub const ENV_CLIENT_LIB: &str = "GKFS_CLIENT_LIB";
/// Name of the token file inside an instance directory.
pub const TOKEN_FILE_NAME: &str = "token";
/// Name of the hosts file inside an instance directory.
pub const HOSTS_FILE_NAME: &str = "hosts";
/// Default client RPC deadline in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Parses a token file's text: 32 hex digits (128 bits), surrounding space ignored.
pub fn parse_token(text: &str) -> Option<u128> {
    let t = text.trim();
    if t.len() != 32 {
        return None;
    }
    u128::from_str_radix(t, 16).ok()
}

/// Formats a token for its file.
pub fn format_token(token: u128) -> String {
    format!("{token:032x}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_round_trip() {
        let t = 0x0123_4567_89ab_cdef_0011_2233_4455_6677u128;
        assert_eq!(super::parse_token(&super::format_token(t)), Some(t));
        assert_eq!(super::parse_token("xyz"), None);
        assert_eq!(super::parse_token(""), None);
    }
}
