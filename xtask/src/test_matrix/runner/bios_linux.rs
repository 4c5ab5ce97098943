//! The bios-linux runner: SeaBIOS boots the image debian-<guest>-bios from a virtio disk (one
//! FAT file system with SYSLINUX in its boot sector: xtask/src/images/syslinux.rs); SYSLINUX
//! loads Debian's stock kernel and its initramfs through the BIOS disk services, and the
//! image's check runs as /init: the marker on the disk (mounted as FAT), and the ACPI tables
//! the kernel found, which the firmware installed from fugu's (etc/table-loader) and which
//! must carry fugu's OEM ID. Status 33 through port 0xf4. Always the userspace level.

use super::{firmware_args, image_file, stock_kernel_on_tcg, Artifacts, Base, BootSpec};
use crate::images::syslinux::APPEND_ROOM;
use crate::matrix_def::Cell;
use std::ffi::OsString;
use std::time::Duration;

/// The tables every guest must find, as the check prints them: SIGNATURE(OEM ID).
const TABLES: &[&str] = &["RSDP(FUGU)", "FACP(FUGU)", "DSDT(FUGU)", "APIC(FUGU)"];

pub(super) fn spec(cell: &Cell, base: Base, arts: &Artifacts) -> Result<BootSpec, String> {
    let name = format!("debian-{}-bios", cell.get("guest"));
    if let Some(e) = arts.image_errors.get(&name) {
        return Err(format!("missing image: {name} could not be built: {e}"));
    }
    let src = arts.images.join(&name).join("disk.img");
    image_file(&src)?;
    let mut disk = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    // The cell's kernel parameters, written into the room the image leaves on syslinux.cfg's
    // APPEND line (the BIOS path has no other way to pass them): the disk alone is checked
    // (no network here), and on the svm-tcg classes what the Debian cells booted directly
    // get there too.
    let extra = format!(" fugu.check=disk{}", stock_kernel_on_tcg(cell));
    append_to_cmdline(&mut disk, &extra)?;
    let img = arts.log_dir.join(format!("{}.disk.img", cell.file_stem()));
    let mut args = firmware_args(
        "disk",
        ("--disk", img.clone().into()),
        base.timeout,
        &base.serial_log,
    );
    // A stock kernel with its initramfs: 64M (the boot programs') is too little.
    if let Some(m) = args.iter().position(|a| a == "--memory") {
        args[m + 1] = OsString::from("256M");
    }
    let mut markers = vec![
        "SYSLINUX ".to_string(),
        "fugu-check: started as /init".to_string(),
        "fugu-check: disk: marker ok (/mnt/fugu-marker)".to_string(),
        "fugu-check: acpi: tables ".to_string(),
    ];
    markers.extend(TABLES.iter().map(|t| t.to_string()));
    markers.push("fugu-check: PASS".to_string());
    Ok(BootSpec {
        // SeaBIOS's own give-up time is the cell's timeout; fugu gets 10 s more to report it.
        timeout: base.timeout + Duration::from_secs(10),
        args,
        expect_status: 33,
        expect_markers: markers,
        files: vec![(img, disk)],
        ..base.into_spec()
    })
}

/// Write `extra` into the spaces after the kernel command line on syslinux.cfg's APPEND
/// line, in the disk's bytes (the file keeps its size, so the FAT stays as it was).
fn append_to_cmdline(disk: &mut [u8], extra: &str) -> Result<(), String> {
    if extra.len() > APPEND_ROOM {
        return Err(format!(
            "'{extra}' does not fit the {APPEND_ROOM} spaces on the APPEND line"
        ));
    }
    let line = find(disk, b"\n  APPEND ")
        .ok_or("the disk has no syslinux.cfg APPEND line (not a debian-*-bios image?)")?;
    let room = " ".repeat(APPEND_ROOM);
    let at = find(&disk[line..], room.as_bytes())
        .map(|i| line + i)
        .filter(|&i| !disk[line + 1..i].contains(&b'\n'))
        .ok_or("syslinux.cfg's APPEND line has no room left for kernel parameters")?;
    disk[at..at + extra.len()].copy_from_slice(extra.as_bytes());
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::syslinux;

    #[test]
    fn parameters_go_into_the_room_on_the_append_line() {
        let cfg = syslinux::config("console=ttyS0 panic=-1");
        let mut disk = vec![0u8; 4096];
        disk.extend_from_slice(cfg.as_bytes());
        disk.extend_from_slice(&[0u8; 512]);
        let len = disk.len();
        append_to_cmdline(&mut disk, " fugu.check=disk noxsave quiet").unwrap();
        assert_eq!(disk.len(), len);
        let text = String::from_utf8_lossy(&disk[4096..4096 + cfg.len()]).into_owned();
        let line = text.lines().find(|l| l.contains("APPEND")).unwrap();
        assert!(
            line.trim_end()
                .ends_with("APPEND console=ttyS0 panic=-1 fugu.check=disk noxsave quiet"),
            "{line:?}"
        );
        assert_eq!(text.len(), cfg.len(), "syslinux.cfg keeps its size");
        // Too much, or no such line: an error, the disk unchanged.
        let before = disk.clone();
        assert!(append_to_cmdline(&mut disk, &"x".repeat(APPEND_ROOM + 1)).is_err());
        assert!(append_to_cmdline(&mut [0u8; 64], " x").is_err());
        assert_eq!(disk, before);
    }
}
