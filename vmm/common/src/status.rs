//! fugu's process exit statuses, with their meanings: what `fugu` exits with (documented in
//! `fugu run --help`) and what the xtask's matrix reads back from it.

/// A status fugu exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest powered off or reset (or a command other than `run` succeeded).
    Off,
    /// `fugu image`: something went wrong (the index, a download, a checksum).
    ImageError,
    /// fugu rejected its command line.
    Usage,
    /// fugu could not start the VM.
    Setup,
    /// The guest crashed (triple fault, halted for good) or fugu met an exit it cannot handle.
    Crash,
    /// `--bios`: the firmware found nothing to boot, or `--boot-timeout` passed.
    NoBoot,
    /// fugu received SIGINT or SIGTERM.
    Interrupted,
    /// The guest wrote `v` to the debug-exit port (0xf4): status `(v << 1) | 1`, clamped to
    /// 1..=255, so always odd.
    DebugExit(u32),
}

impl ExitStatus {
    /// The process exit status.
    pub const fn code(self) -> u8 {
        match self {
            ExitStatus::Off => 0,
            ExitStatus::ImageError => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Setup => 4,
            ExitStatus::Crash => 6,
            ExitStatus::NoBoot => 8,
            ExitStatus::Interrupted => 130,
            ExitStatus::DebugExit(v) => {
                if v >= 127 {
                    255
                } else {
                    // v < 127: (v << 1) | 1 <= 253; the cast cannot truncate (a const fn:
                    // no try_from here).
                    #[allow(clippy::cast_possible_truncation)]
                    let code = ((v << 1) | 1) as u8;
                    code
                }
            }
        }
    }

    /// What a status fugu exited with means, for `fugu run` (None: not one of fugu's).
    /// Odd statuses are the guest's own report through port 0xf4, except 1, which `fugu
    /// image` also uses: a `run` never exits 1 but from the guest writing 0.
    pub fn of_run(code: i32) -> Option<ExitStatus> {
        Some(match code {
            0 => ExitStatus::Off,
            2 => ExitStatus::Usage,
            4 => ExitStatus::Setup,
            6 => ExitStatus::Crash,
            8 => ExitStatus::NoBoot,
            130 => ExitStatus::Interrupted,
            c if (1..=255).contains(&c) && c & 1 == 1 => {
                ExitStatus::DebugExit(u32::try_from(c >> 1).ok()?)
            }
            _ => return None,
        })
    }

    /// Its meaning in a few words, as a report of a `fugu run` shows it.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitStatus::Off => "guest powered off without reporting",
            ExitStatus::ImageError => "fugu image failed",
            ExitStatus::Usage => "fugu rejected its command line",
            ExitStatus::Setup => "fugu could not start the VM",
            ExitStatus::Crash => "the guest crashed or fugu met an exit it cannot handle",
            ExitStatus::NoBoot => "the firmware found nothing to boot, or --boot-timeout passed",
            ExitStatus::Interrupted => "fugu was interrupted",
            ExitStatus::DebugExit(_) => "the guest reported a failure through port 0xf4",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_debug_exit_is_odd_and_clamped() {
        for s in [
            ExitStatus::Off,
            ExitStatus::Usage,
            ExitStatus::Setup,
            ExitStatus::Crash,
            ExitStatus::NoBoot,
            ExitStatus::Interrupted,
            ExitStatus::DebugExit(0x10),
        ] {
            assert_eq!(ExitStatus::of_run(i32::from(s.code())), Some(s));
        }
        assert_eq!(ExitStatus::DebugExit(0x10).code(), 33);
        assert_eq!(ExitStatus::DebugExit(0x20).code(), 65);
        assert_eq!(ExitStatus::DebugExit(0).code(), 1);
        assert_eq!(ExitStatus::DebugExit(126).code(), 253);
        assert_eq!(ExitStatus::DebugExit(127).code(), 255);
        assert_eq!(ExitStatus::DebugExit(u32::MAX).code(), 255);
        assert_eq!(ExitStatus::of_run(-1), None);
        assert_eq!(ExitStatus::of_run(10), None);
    }
}
