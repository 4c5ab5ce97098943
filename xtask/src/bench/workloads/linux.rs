//! The Linux boot, to the last kernel line reachable on this host, fugu against QEMU.

use super::super::*;

/// The last line of the Linux image's kernel level reachable on every host: root mounted from
/// the virtio disk (userspace does not run on hosts whose KVM emulates guest kernel code).
const LINUX_MARKER: &str = "VFS: Mounted root (ext4 filesystem)";
const LINUX_LIMIT: Duration = Duration::from_secs(600);
/// The guest's own command line (what the linux-amd64 image needs); fugu adds its
/// host-adaptation switches itself where the host emulates guest kernel code.
const LINUX_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1";

/// QEMU's command line: QEMU does not adapt a guest to the host, so on an emulating host the
/// bench adds fugu's switches, and both VMMs boot the same command line.
fn qemu_linux_cmdline(emulating: bool) -> String {
    let mut c = LINUX_CMDLINE.to_string();
    if emulating {
        for s in crate::probe::FUGU_LINUX_SWITCHES {
            c.push(' ');
            c.push_str(s);
        }
    }
    c
}

pub(super) fn boot_linux(ctx: &Ctx) -> Bench {
    let dir = super::built_image("linux-amd64")?;
    let (kernel, disk_src) = (dir.join("bzImage"), dir.join("disk.ext4"));
    if !kernel.is_file() || !disk_src.is_file() {
        return Err(Failed(format!(
            "the linux-amd64 image in {} lacks its bzImage or disk.ext4: rebuild it with cargo xtask images --only linux-amd64",
            dir.display()
        )));
    }
    let disk = ctx.work.join("linux-disk.ext4");
    let serial = ctx.work.join("linux-serial.log");
    let (mut f, mut p) = (Vec::new(), Vec::new());
    let mut peer_note = String::new();
    for _ in 0..ctx.runs {
        std::fs::copy(&disk_src, &disk)?;
        let mut c = Command::new(&ctx.fugu);
        c.args(["run", "--memory", "256M", "--cmdline", LINUX_CMDLINE])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--disk")
            .arg(&disk)
            .arg("--serial")
            .arg(&serial);
        match time_to_marker(&mut c, &serial, LINUX_MARKER, LINUX_LIMIT, "fugu (Linux)")? {
            Some(t) => f.push(t),
            None => {
                return Err(Failed(format!(
                    "fugu did not reach '{LINUX_MARKER}' within {} s",
                    LINUX_LIMIT.as_secs()
                )))
            }
        }
        if !peer_note.is_empty() {
            continue;
        }
        std::fs::copy(&disk_src, &disk)?;
        let mut q = qemu(ctx)?;
        q.args(["-m", "256M", "-append", &qemu_linux_cmdline(ctx.emulating)])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        match time_to_marker(&mut q, &serial, LINUX_MARKER, LINUX_LIMIT, "QEMU (Linux)")? {
            Some(t) => p.push(t),
            None => {
                let last = last_line(&serial);
                peer_note = format!(
                    "; QEMU never reached the marker here (it stops where the host's KVM cannot \
                     emulate an instruction of the unpatched kernel that fugu completes; its last \
                     line: '{}'), so there is no ratio",
                    last
                );
            }
        }
    }
    Ok(Measured {
        fugu: f,
        peer: if peer_note.is_empty() { Some(p) } else { None },
        note: format!(
            "wall time from process start to the kernel's '{LINUX_MARKER}' (root from virtio-blk), same bzImage, disk and command line, 256 MiB{peer_note}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_gets_fugus_switches_only_on_an_emulating_host() {
        assert_eq!(qemu_linux_cmdline(false), LINUX_CMDLINE);
        let c = qemu_linux_cmdline(true);
        assert!(c.starts_with(LINUX_CMDLINE));
        for s in crate::probe::FUGU_LINUX_SWITCHES {
            assert!(c.split_whitespace().any(|w| w == *s), "{s}");
            assert!(!LINUX_CMDLINE.contains(s), "fugu adds {s} itself");
        }
    }
}
