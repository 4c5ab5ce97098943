//! The control plane: `fugud`, the daemon that owns running VMs (one `fugu run` process each),
//! its HTTP/1.1 + JSON control socket (docs/api.md), the TOML VM configuration, and the
//! client side of `fugu start / stop / status / console / pause / unpause / reload`.
//!
//! VMs never outlive fugud: a VM process gets SIGTERM when the daemon thread that started it
//! goes away (PR_SET_PDEATHSIG), fugud stops every VM before it exits, and a fugud that starts
//! stops what a killed predecessor left (pid files in its state directory).

pub mod access;
pub mod api;
pub mod client;
pub mod config;
pub mod console_log;
pub mod daemon;
pub mod http;
pub mod notify;
pub mod vmproc;

/// Whether `name` may name a VM: 1 to 64 of letters, digits, '.', '_' and '-', not starting
/// with '.' or '-' (it becomes part of URLs and file names).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The error for a name [`valid_name`] refuses.
pub fn name_error(name: &str) -> String {
    format!(
        "'{name}' is not a VM name: use 1 to 64 letters, digits, '.', '_' or '-', not starting \
         with '.' or '-'"
    )
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for ok in ["web", "a", "vm-1.test_2", &"x".repeat(64)] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a b", "é", &"x".repeat(65), "a%2F"] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
