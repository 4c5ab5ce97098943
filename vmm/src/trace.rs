//! `FUGU_TRACE`: debugging switches from the environment, parsed once.
//!
//! A comma-separated list: `exits` logs every vCPU exit, `startup` prints the time of the
//! first KVM_RUN (for `cargo xtask bench`), `firmware` shows the SeaBIOS log (port 0x402).
//! A leaf module: std only.

use std::sync::OnceLock;

/// The switches in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trace {
    pub exits: bool,
    pub startup: bool,
    pub firmware: bool,
}

impl Trace {
    /// Parse a `FUGU_TRACE` value; unknown words are ignored.
    pub fn parse(v: &str) -> Self {
        let on = |w: &str| v.split(',').any(|t| t == w);
        Trace {
            exits: on("exits"),
            startup: on("startup"),
            firmware: on("firmware"),
        }
    }
}

/// The process's switches (read from the environment the first time).
pub fn get() -> Trace {
    static TRACE: OnceLock<Trace> = OnceLock::new();
    *TRACE.get_or_init(|| {
        std::env::var("FUGU_TRACE")
            .map(|v| Trace::parse(&v))
            .unwrap_or_default()
    })
}

/// With `startup`, vCPU 0 prints the wall-clock time just before its first KVM_RUN: `fugu:
/// trace: first KVM_RUN at <seconds>.<microseconds>` (seconds since the Unix epoch, like
/// QEMU's `-msg timestamp=on` trace lines), so that `cargo xtask bench` can time VMM start to
/// first KVM_RUN.
pub fn first_run(vcpu_id: u32) {
    if vcpu_id != 0 || !get().startup {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "fugu: trace: first KVM_RUN at {}.{:06}",
        now.as_secs(),
        now.subsec_micros()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_parse() {
        assert_eq!(Trace::parse(""), Trace::default());
        let t = Trace::parse("firmware,exits");
        assert!(t.exits && t.firmware && !t.startup);
        assert!(!Trace::parse("exitsx").exits);
    }
}
