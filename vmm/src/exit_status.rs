//! fugu's process exit statuses and what each means: one enum for `fugu run`, `fugu image`
//! and the hidden commands (the EXIT STATUS section of `fugu run --help` lists the same).
//!
//! A leaf module (std only), so it can move to a crate shared with the xtask and the tests.

/// How the `fugu` process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the guest powered off or asked for a reset; any other command succeeded.
    Success,
    /// 1: a command other than `run` failed (`fugu image`, the documentation commands).
    Failure,
    /// 2: the command line was invalid (clap's own status).
    Usage,
    /// 4: fugu could not start the VM (no KVM, bad kernel, not enough memory, ...).
    Setup,
    /// 6: the guest crashed: triple fault, halted for good, or an exit fugu cannot handle.
    GuestCrash,
    /// 8: `--bios` found nothing to boot (the firmware asked for a reboot), or the guest was
    /// still running after `--boot-timeout`.
    NoBoot,
    /// 130: fugu was interrupted (SIGINT / Ctrl-C, SIGTERM).
    Interrupted,
    /// Odd, 1-255: the guest wrote `v` to the debug-exit port: `(v << 1) | 1`, clamped.
    DebugExit(u32),
}

impl ExitStatus {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Setup => 4,
            ExitStatus::GuestCrash => 6,
            ExitStatus::NoBoot => 8,
            ExitStatus::Interrupted => 130,
            // (v << 1) | 1 is odd and at least 1; anything above 255 reads as 255.
            ExitStatus::DebugExit(v) => u8::try_from((u64::from(v) << 1) | 1).unwrap_or(u8::MAX),
        }
    }

    /// The status a code stands for (a debug exit for odd codes other than 1).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ExitStatus::Success,
            1 => ExitStatus::Failure,
            2 => ExitStatus::Usage,
            4 => ExitStatus::Setup,
            6 => ExitStatus::GuestCrash,
            8 => ExitStatus::NoBoot,
            130 => ExitStatus::Interrupted,
            c if c % 2 == 1 => ExitStatus::DebugExit(u32::from(c >> 1)),
            _ => return None,
        })
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_meanings() {
        assert_eq!(ExitStatus::DebugExit(0).code(), 1);
        assert_eq!(ExitStatus::DebugExit(0x10).code(), 0x21);
        assert_eq!(ExitStatus::DebugExit(u32::MAX).code(), 255);
        for c in 0..=255u8 {
            if let Some(s) = ExitStatus::from_code(c) {
                assert_eq!(s.code(), c, "{s:?}");
            }
        }
        assert_eq!(ExitStatus::from_code(3), Some(ExitStatus::DebugExit(1)));
        assert_eq!(ExitStatus::from_code(10), None);
        // `fugu image` still names its failure status itself.
        assert_eq!(
            crate::image::run::EXIT_IMAGE_ERROR,
            ExitStatus::Failure.code()
        );
        assert_eq!(
            ExitStatus::from_code(0x21),
            Some(ExitStatus::DebugExit(0x10))
        );
    }

    #[test]
    fn the_help_text_lists_every_status() {
        let help = crate::cli::EXIT_CODES;
        for s in [
            ExitStatus::Success,
            ExitStatus::Usage,
            ExitStatus::Setup,
            ExitStatus::GuestCrash,
            ExitStatus::NoBoot,
            ExitStatus::Interrupted,
        ] {
            let line = format!("\n  {:<5} ", s.code());
            assert!(help.contains(&line), "{s:?} is not in EXIT STATUS");
        }
    }
}
