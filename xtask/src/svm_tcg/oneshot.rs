//! One xtask command in a fresh L1 of the svm-tcg host class, for work that is not a matrix
//! cell: `cargo xtask bench` runs its svm-tcg rows this way (the inner bench measures fugu
//! and QEMU side by side on the L1's real kvm_amd). The L1 is the matrix's own (same kernel,
//! initramfs, shares and silence limits); its files live in `target/test-matrix/<class>/<name>/`.

use super::{boot, dir, l1, l1_xtask, Silence, DEBS};
use crate::util;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Boot an L1 of `arch` that runs this xtask with `args` (kvm_amd loaded with npt=1), and wait
/// for it to power off; what the command leaves is in [`share`]. `quiet_for` is how long the command may go without a `==> ` step
/// line. An Err says why, with the L1 console's last lines; a command that exits non-zero is
/// an Err too.
pub fn run(arch: l1::Arch, name: &str, args: &[String], quiet_for: Duration) -> Result<(), String> {
    util::ensure_debs(DEBS, "the svm-tcg L1 (QEMU TCG)").map_err(|e| e.msg)?;
    let xtask = l1_xtask(arch)?;
    let base = dir(arch);
    let share = share(arch, name);
    let work = base.join(name);
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(&share).map_err(|e| format!("{}: {e}", share.display()))?;
    let kernel = l1::kernel(&base.join("kernel"), arch).map_err(|e| format!("L1 kernel: {e}"))?;
    let busybox =
        l1::busybox(arch, &base.join("busybox")).map_err(|e| format!("L1 busybox: {e}"))?;
    let script = share.join("inner.sh");
    std::fs::write(&script, l1::inner_script(&kernel, &xtask, args))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let initrd = work.join("initrd.cpio");
    let bytes = l1::initramfs(&kernel, &share, &script, &busybox)
        .map_err(|e| format!("L1 initramfs: {e}"))?;
    std::fs::write(&initrd, bytes).map_err(|e| format!("{}: {e}", initrd.display()))?;
    let console = work.join("l1.console.log");
    let limits = Silence {
        progress: quiet_for,
        any: Duration::from_secs(l1::BEAT_SECS * 3),
    };
    // An L1 under TCG sometimes freezes or panics on its own (docs/matrix.md): one that dies
    // before its command ends is booted once more, as the matrix does; a command that fails
    // is not retried.
    for attempt in 1..=L1_ATTEMPTS {
        util::step(format!(
            "{}: booting an L1 for `xtask {}` (Debian {} {}, QEMU TCG; console {})",
            arch.host(),
            args.first().map_or("", String::as_str),
            kernel.package,
            kernel.version,
            console.display()
        ));
        let ended = boot(
            &kernel,
            &initrd,
            &share,
            &console,
            limits,
            &AtomicBool::new(false),
        );
        let text = std::fs::read(&console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let tail = || {
            format!(
                "L1 console ({}):\n{}",
                console.display(),
                util::tail(&text, 12)
            )
        };
        let died = match (ended, exit_status(&text)) {
            (Err(e), _) => format!("the L1 died: {}", e.reason),
            (Ok(_), Some(0)) => return Ok(()),
            (Ok(_), Some(n)) => {
                return Err(format!(
                    "`xtask {}` exited {n} in the L1\n{}",
                    args.join(" "),
                    tail()
                ))
            }
            (Ok(_), None) => "the L1 ended before its command did (reset or panicked)".into(),
        };
        if attempt == L1_ATTEMPTS {
            return Err(format!(
                "{died} (attempt {attempt} of {L1_ATTEMPTS})\n{}",
                tail()
            ));
        }
        let kept = work.join(format!("l1.console.attempt{attempt}.log"));
        let _ = std::fs::rename(&console, &kept);
        util::step(format!(
            "{}: {died}; its console is kept as {}; booting the L1 again",
            arch.host(),
            kept.display()
        ));
    }
    Err("no L1 attempt ran".into())
}

/// How many times an L1 that dies before its command ends is booted.
const L1_ATTEMPTS: u32 = 2;

/// The writable folder of run `name` (the L1 sees it at the same path): where the command
/// puts what it leaves.
pub fn share(arch: l1::Arch, name: &str) -> PathBuf {
    dir(arch).join(name).join("share")
}

/// The inner command's exit status, from the inner script's last line.
fn exit_status(console: &str) -> Option<i32> {
    console.lines().rev().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(l1::MARK)?
            .trim()
            .strip_prefix(l1::RUN_END)?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_comes_from_the_inner_scripts_last_line() {
        let end = |n: &str| format!("{} {} {n}\n", l1::MARK, l1::RUN_END);
        assert_eq!(exit_status(&format!("boot\n{}", end("0"))), Some(0));
        assert_eq!(
            exit_status(&format!("x\n{}\r\n", end("3").trim_end())),
            Some(3)
        );
        assert_eq!(exit_status("fugu-l1: up after 3 s\n"), None);
        assert_eq!(exit_status(&end("garbage")), None);
    }
}
