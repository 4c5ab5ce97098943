//! The bios-disk runner: SeaBIOS boots the cell's MBR (images/guests/mbr.S) from a virtio
//! disk; the MBR reads its stage with INT 13h, enters protected or long mode and runs the
//! virtio-blk check of virtio32.S on its boot disk from there.

use super::{boot_program, firmware_args, Artifacts, Base, BootSpec};
use crate::matrix_def::Cell;
use std::time::Duration;

pub(super) fn spec(cell: &Cell, base: Base, arts: &Artifacts) -> Result<BootSpec, String> {
    let (p, mut disk) = boot_program("mbr", cell, arts)?;
    disk.resize(disk.len().max(1 << 20), 0);
    let img = arts.log_dir.join(format!("{}.disk.img", cell.file_stem()));
    let args = firmware_args(
        "disk",
        ("--disk", img.clone().into()),
        base.timeout,
        &base.serial_log,
    );
    // SeaBIOS's own give-up time is the cell's timeout; fugu gets 10 s more to report it.
    let timeout = base.timeout + Duration::from_secs(10);
    Ok(BootSpec {
        timeout,
        args,
        expect_status: p.success_status,
        expect_markers: vec![
            "fugu-mbr: stage read with INT 13h".into(),
            p.marker.to_string(),
            "fugu-guest: read sector 1 ok".into(),
            "fugu-guest: wrote a sector beyond the stage, flushed, read it back".into(),
            "fugu-guest: virtio-blk ok".into(),
        ],
        // mbr.S's virtio check writes sector 32 (beyond its stage) through virtio-blk.
        file_checks: vec![(img.clone(), 32 * 512, b"fugu-guest-wrote".to_vec())],
        files: vec![(img, disk)],
        ..base.into_spec()
    })
}
