//! A disk the BIOS boots into Linux (`[disk] bootloader = syslinux`): one FAT file system on
//! the whole disk with SYSLINUX in its boot sector (Debian's `syslinux`, installed through
//! mtools: nothing is mounted), the kernel, the initramfs, syslinux.cfg and the check's
//! marker file. SeaBIOS loads the boot sector, SYSLINUX the kernel and initramfs through the
//! BIOS disk services, and the kernel finds the firmware's ACPI tables as on any PC.

use super::*;

/// Room at the end of syslinux.cfg's APPEND line, in spaces: a test harness may write
/// kernel parameters into a copy of the disk there without changing any file's size
/// ([`append_line`] finds it).
pub const APPEND_ROOM: usize = 96;

/// The tools, by Debian package.
pub(super) const DEBS: &[&str] = &["syslinux", "syslinux-common", "mtools", "dosfstools"];

/// syslinux.cfg for `cmdline`: boot the kernel at once, console on the first serial port.
pub fn config(cmdline: &str) -> String {
    format!(
        "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n  \
         INITRD initrd.gz\n  {}\n",
        append_line(cmdline)
    )
}

/// The APPEND line for `cmdline`, with [`APPEND_ROOM`] spaces after it.
pub fn append_line(cmdline: &str) -> String {
    format!("APPEND {cmdline}{}", " ".repeat(APPEND_ROOM))
}

/// Build the disk (`size_mib`) in `stage/disk.img` from `stage/vmlinuz`,
/// `stage/initramfs.cpio.gz` and the marker text; those two files leave the stage (the image
/// is the disk alone).
pub(super) fn bios_disk(
    ctx: &Ctx,
    name: &str,
    cmdline: &str,
    marker: &str,
    size_mib: u64,
    stage: &Path,
) -> std::result::Result<String, Problem> {
    util::ensure_debs(DEBS, "a BIOS-bootable Linux disk (SYSLINUX on FAT)")
        .map_err(|e| Problem::Unavailable(e.msg))?;
    let disk = stage.join("disk.img");
    let _ = std::fs::remove_file(&disk);
    let files = stage.join("fat");
    std::fs::create_dir_all(&files)?;
    std::fs::rename(stage.join("vmlinuz"), files.join("vmlinuz"))?;
    std::fs::rename(stage.join("initramfs.cpio.gz"), files.join("initrd.gz"))?;
    std::fs::write(files.join("syslinux.cfg"), config(cmdline))?;
    std::fs::write(files.join("fugu-marker"), marker)?;
    let volume_id = &sha256_bytes(name.as_bytes())[..8];
    let epoch = ctx.epoch.to_string();
    let tool = |c: &mut Command| -> std::result::Result<(), Problem> {
        c.env("SOURCE_DATE_EPOCH", &epoch);
        let (ok, log) = capture(c).map_err(|e| Problem::Fail(e.msg))?;
        if ok {
            Ok(())
        } else {
            Err(Problem::Fail(format!("{c:?} failed:\n{log}")))
        }
    };
    tool(
        Command::new("mkfs.fat")
            .args(["--invariant", "-i", volume_id, "-n", "FUGU", "-C"])
            .arg(&disk)
            .arg((size_mib * 1024).to_string()),
    )?;
    tool(Command::new("syslinux").arg("--install").arg(&disk))?;
    for f in ["vmlinuz", "initrd.gz", "syslinux.cfg", "fugu-marker"] {
        let src = files.join(f);
        // The same time on every file (mcopy -m keeps it), so the disk is reproducible.
        tool(
            Command::new("touch")
                .arg("-d")
                .arg(format!("@{epoch}"))
                .arg(&src),
        )?;
        tool(
            Command::new("mcopy")
                .args(["-m", "-i"])
                .arg(&disk)
                .arg(&src)
                .arg(format!("::{f}")),
        )?;
    }
    std::fs::remove_dir_all(&files)?;
    Ok("disk.img".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_boots_at_once_with_room_after_the_command_line() {
        let c = super::config("console=ttyS0 panic=-1");
        assert!(c.contains("DEFAULT linux\nPROMPT 0\nTIMEOUT 0\n"));
        assert!(c.contains("KERNEL vmlinuz\n  INITRD initrd.gz\n"));
        let line = c
            .lines()
            .find(|l| l.trim_start().starts_with("APPEND"))
            .unwrap();
        assert_eq!(
            line.trim_start(),
            super::append_line("console=ttyS0 panic=-1")
        );
        assert!(line.ends_with(&" ".repeat(super::APPEND_ROOM)));
    }
}
