//! The debian-linux runner: Debian's stock kernel (debian-<guest>: vmlinuz) with the image's
//! initramfs, which loads the virtio modules and runs the image's check as /init: the marker
//! on the virtio disk, a DHCP lease from dnsmasq on a tap and a ping of the server, then
//! "fugu-check: PASS" and status 33 through port 0xf4; the disk cells end instead through the
//! guest's power button and the kernel's ACPI power-off (status 0), having reported that the
//! kernel took its CPUs from fugu's MADT. The nested cells give the guest SVM/VMX (`fugu run
//! --nested`) and a second initramfs ([`super::nested`]): the guest loads KVM and runs fugu
//! again on a tiny guest (the L3), whose marker and status it reports. Always the userspace
//! level.

use super::{
    cell_net, disk_only, image_file, nested, stock_kernel_on_tcg, tiny_guest, Artifacts, Base,
    BootSpec,
};
use crate::matrix_def::Cell;
use crate::netcheck;
use std::ffi::OsString;

/// What check/init prints once acpid listens for the power button (`fugu.end=button`), and
/// what acpid's handler prints when the press arrived.
const WAITING_FOR_BUTTON: &str = "fugu-check: waiting for the power button";
const BUTTON_PRESSED: &str = "fugu-check: power button pressed, powering off";
/// The vCPUs of the disk cells, by guest: all of them must come up from the MADT. Four for
/// the amd64 kernel. One for the i386 kernel: with 4, the svm-tcg/tdp i686 i386 cell lost its
/// L1 (QEMU TCG) or ended with status 6 in about half of its runs on 3 December (4 vCPUs came
/// up from the MADT in every run that got that far); docs/matrix.md.
fn acpi_cpus(guest: &str) -> u32 {
    if guest == "amd64" {
        4
    } else {
        1
    }
}

pub(super) fn spec(cell: &Cell, base: Base, arts: &Artifacts) -> Result<BootSpec, String> {
    let name = format!("debian-{}", cell.get("guest"));
    if let Some(e) = arts.image_errors.get(&name) {
        return Err(format!("missing image: {name} could not be built: {e}"));
    }
    let dir = arts.images.join(&name);
    let [kernel, initrd] = ["vmlinuz", "initramfs.cpio.gz"].map(|f| dir.join(f));
    // The Debian images publish their disk as qcow2 (images/debian-*.image); a raw one
    // (an older build) boots the same.
    let disk_src = Some(dir.join("disk.qcow2"))
        .filter(|q| q.is_file())
        .unwrap_or_else(|| dir.join("disk.ext4"));
    let disk_ext = if disk_src.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "ext4"
    };
    let disk = std::fs::read(&disk_src).map_err(|e| {
        format!(
            "missing image: run cargo xtask images ({}: {e})",
            disk_src.display()
        )
    })?;
    for p in [&kernel, &initrd] {
        image_file(p)?;
    }
    let stem = cell.file_stem();
    let img = arts.log_dir.join(format!("{stem}.disk.{disk_ext}"));
    let net = cell_net(&stem, 0x06, true, None, false);
    let is_nested = cell.get("check") == "nested";
    let check = match cell.get("check") {
        "virtio-disk" | "nested" => "fugu-check: disk: marker ok".to_string(),
        "virtio-net" => format!("fugu-check: network: lease {}/", netcheck::DHCP_GUEST),
        other => return Err(format!("runner 'debian-linux' has no '{other}' check")),
    };
    let mut files = Vec::new();
    let mut args: Vec<OsString> = vec!["run".into(), "--kernel".into(), kernel.into()];
    let mut initrd = initrd;
    let mut nested_markers = Vec::new();
    if is_nested {
        let (g, elf) = tiny_guest(nested::L3_GUEST, arts)?;
        let status = u8::try_from(g.success_status)
            .map_err(|_| format!("{}: status {} is not a byte", g.name, g.success_status))?;
        // fugu takes one initrd for a Linux kernel (as the boot protocol has one): the
        // image's and the nested one, concatenated (Linux unpacks one archive after another,
        // skipping the zeros between them).
        let mut both = std::fs::read(&initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
        both.resize(both.len().next_multiple_of(512), 0);
        both.extend(nested::initramfs(&base.fugu, &elf, status)?);
        let path = arts.log_dir.join(format!("{stem}.initrd"));
        initrd = path.clone();
        args.extend(["--nested".into()]);
        files.push((path, both));
        nested_markers = vec![
            "fugu-check: nested: /dev/kvm from".to_string(),
            g.marker.to_string(),
            format!(
                "fugu-check: nested: the guest's guest ended with status {status}, as expected"
            ),
        ];
    }
    let mut cmdline = format!("console=ttyS0 panic=-1{}", stock_kernel_on_tcg(cell));
    // The disk cells report that the kernel took all its CPUs from fugu's MADT,
    // then wait for the power button: the matrix presses it (SIGPWR to fugu), the kernel's
    // ACPI button driver reports it, busybox acpid powers off, and the VM ends through ACPI
    // S5 (status 0). The network cells end through port 0xf4.
    args.extend(["--initrd".into(), initrd.into()]);
    let acpi_end = cell.get("check") == "virtio-disk";
    let mut markers = vec!["fugu-check: started as /init".to_string(), check];
    markers.extend(nested_markers);
    markers.push("fugu-check: PASS".to_string());
    // The nested cells check the disk and the guest's own hypervisor, not the network.
    let net = (!disk_only(cell) && !is_nested).then_some(net);
    if net.is_none() {
        cmdline.push_str(" fugu.check=disk");
    }
    if is_nested {
        cmdline.push_str(" fugu.check=nested");
    }
    if acpi_end {
        cmdline.push_str(" fugu.end=button");
        markers.push(format!(
            "fugu-check: acpi: the kernel took its CPUs from the MADT ({} online)",
            acpi_cpus(cell.get("guest"))
        ));
        markers.push(BUTTON_PRESSED.into());
    }
    args.extend(["--cmdline".into(), cmdline.into()]);
    args.extend(["--disk".into(), img.clone().into()]);
    // The nested cells unpack fugu (~20 MiB) and run a guest of their own.
    let memory = if is_nested { "512M" } else { "256M" };
    args.extend(["--memory".into(), memory.into()]);
    if acpi_end {
        args.extend([
            "--cpus".into(),
            acpi_cpus(cell.get("guest")).to_string().into(),
        ]);
    }
    if let Some(net) = &net {
        args.extend([
            "--net".into(),
            format!("tap={},mac={}", net.tap, net.mac_text()).into(),
        ]);
    }
    args.extend(["--serial".into(), base.serial_log.clone().into()]);
    files.push((img, disk));
    Ok(BootSpec {
        args,
        expect_status: if acpi_end { 0 } else { 33 },
        expect_markers: markers,
        files,
        net,
        press_power_button: acpi_end.then(|| WAITING_FOR_BUTTON.to_string()),
        ..base.into_spec()
    })
}
