//! The ipxe-net runner: SeaBIOS runs iPXE (Debian's ipxe-qemu) as the virtio-net option ROM;
//! iPXE gets a fixed DHCP lease from dnsmasq on a tap in a private namespace, fetches the
//! cell's network boot program over TFTP from the same dnsmasq, and runs it; the program
//! enters protected or long mode and runs virtnet32.S's check there: its frame must reach
//! the responder on the tap (from the cell's MAC) and the answer come back.

use super::{boot_program, cell_net, firmware_args, Artifacts, Base, BootSpec};
use crate::matrix_def::Cell;
use crate::netcheck;
use std::time::Duration;

pub(super) fn spec(cell: &Cell, base: Base, arts: &Artifacts) -> Result<BootSpec, String> {
    let (p, nbp) = boot_program("nbp", cell, arts)?;
    let stem = cell.file_stem();
    let served = arts
        .log_dir
        .join(format!("{stem}.tftp"))
        .join(format!("{}.bin", p.name));
    let net = cell_net(&stem, 0x03, true, Some(served.clone()), true);
    let nic = format!("tap={},mac={}", net.tap, net.mac_text());
    let args = firmware_args("net", ("--net", nic.into()), base.timeout, &base.serial_log);
    // SeaBIOS's own give-up time is the cell's timeout; fugu gets 10 s more to report it.
    let timeout = base.timeout + Duration::from_secs(10);
    Ok(BootSpec {
        timeout,
        args,
        expect_status: p.success_status,
        expect_markers: vec![
            format!("net0: {}/", netcheck::DHCP_GUEST),
            // iPXE's image line after the TFTP transfer, with the size served (its progress
            // dots before "ok" vary with the host's speed; the closing "]" can be lost when the
            // program takes over the UART on kvm_pvm).
            format!("{}.bin : {} bytes [PXE-NBP", p.name, nbp.len()),
            "fugu-nbp: started by PXE".into(),
            p.marker.to_string(),
            "fugu-guest: frame from the host received, virtio-net ok".into(),
        ],
        files: vec![(served, nbp)],
        net: Some(net),
        ..base.into_spec()
    })
}
