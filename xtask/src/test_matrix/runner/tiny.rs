//! The tiny runners: fugu loads a tiny guest (images/guests/) directly; tiny-boot checks its
//! marker and exit status, tiny-conform the same for the conformance guest (traps32: INT3,
//! UD2, INT n, x87, and CPUID honesty: every instruction it is shown runs), tiny-virtio-disk also a sector read and one written back through
//! virtio-blk, tiny-virtio-net a frame answered by the responder on the tap.

use super::{cell_net, tiny_guest, Artifacts, Base, BootSpec, Runner};
use crate::matrix_def::Cell;
use std::ffi::OsString;

/// The tiny guest each runner boots, per guest architecture.
const TINY_GUESTS: &[(Runner, &str, &str)] = &[
    (Runner::TinyBoot, "i386", "hello32"),
    (Runner::TinyBoot, "amd64", "hello64"),
    (Runner::TinyConform, "i386", "traps32"),
    (Runner::TinyVirtioDisk, "i386", "virtio32"),
    (Runner::TinyVirtioDisk, "amd64", "virtio64"),
    (Runner::TinyVirtioNet, "i386", "virtnet32"),
    (Runner::TinyVirtioNet, "amd64", "virtnet64"),
];

/// The tiny virtio guests' disk: 64 sectors, sector n filled with n, sector 1 starting with
/// the marker the guest reads; the guest writes "fugu-guest-wrote" at the start of sector 2.
fn tiny_disk() -> Vec<u8> {
    let mut d: Vec<u8> = (0..64u8).flat_map(|s| [s; 512]).collect();
    d[512..528].copy_from_slice(b"fugu-test-sector");
    d
}

pub(super) fn spec(
    runner: Runner,
    cell: &Cell,
    base: Base,
    arts: &Artifacts,
) -> Result<BootSpec, String> {
    let stem = cell.file_stem();
    let tiny = TINY_GUESTS
        .iter()
        .find(|(r, arch, _)| *r == runner && *arch == cell.get("guest"));
    let Some((_, _, name)) = tiny else {
        return Err(format!(
            "runner '{}' is not implemented for a {} guest",
            runner.name(),
            cell.get("guest")
        ));
    };
    let (g, elf) = tiny_guest(name, arts)?;
    // The 32-bit boot guest on the 64-bit fugu gets 5 GiB: 3 below the PCI hole, 2 above
    // 4 GiB in its Multiboot memory map, which it sums (a 32-bit fugu cannot map that much).
    let above_4g =
        runner == Runner::TinyBoot && cell.get("guest") == "i386" && cell.get("build") != "i686";
    let mut args: Vec<OsString> = vec!["run".into(), "--kernel".into(), elf.into()];
    args.extend(
        [
            "--memory",
            if above_4g { "5G" } else { "64M" },
            "--cmdline",
            &format!("fugu-matrix cell={}", cell.id()),
            "--serial",
        ]
        .map(OsString::from),
    );
    args.push(base.serial_log.clone().into());
    let mut spec = BootSpec {
        args,
        expect_status: g.success_status,
        expect_markers: vec![g.marker.to_string()],
        ..base.into_spec()
    };
    if above_4g {
        spec.expect_markers
            .push("fugu-guest: RAM above 4 GiB (MiB, hex): 00000800".into());
    }
    match runner {
        Runner::TinyVirtioDisk => {
            let disk = arts.log_dir.join(format!("{stem}.disk.img"));
            spec.args.push("--disk".into());
            spec.args.push(disk.clone().into());
            spec.expect_markers
                .insert(0, "fugu-guest: read sector 1 ok".into());
            spec.files.push((disk.clone(), tiny_disk()));
            spec.file_checks
                .push((disk, 1024, b"fugu-guest-wrote".to_vec()));
        }
        Runner::TinyVirtioNet => {
            let net = cell_net(&stem, 0x01, false, None, true);
            spec.args.push("--net".into());
            spec.args
                .push(format!("tap={},mac={}", net.tap, net.mac_text()).into());
            spec.expect_markers
                .insert(0, format!("fugu-guest: virtio-net mac {}", net.mac_text()));
            spec.net = Some(net);
        }
        _ => {}
    }
    Ok(spec)
}
