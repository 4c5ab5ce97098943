//! The linux runner: fugu loads the linux-<guest> bzImage (no initrd) with its root on a private
//! copy of disk.ext4 on virtio-blk. At the kernel level (kvm_pvm hosts, whose KVM cannot run
//! 64-bit guest user-mode system calls) a cell passes on the kernel's own log lines: the root
//! was mounted from vda (virtio-disk), or `ip=dhcp` got dnsmasq's lease over virtio-net on a
//! tap in a private namespace (virtio-net). init then dies and the kernel reboots.

use super::{cell_net, disk_only, image_file, Artifacts, Base, BootSpec};
use crate::matrix_def::{Cell, Plan};
use crate::netcheck;
use std::ffi::OsString;

/// The Linux kernel command line of the linux-direct cells (fugu adds its host-adaptation
/// switches itself); `panic=-1` reboots at once, which ends fugu with status 0.
const LINUX_CMDLINE: &str =
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 root=/dev/vda rw rootfstype=ext4 panic=-1";

pub(super) fn spec(
    cell: &Cell,
    plan: &Plan,
    base: Base,
    arts: &Artifacts,
) -> Result<BootSpec, String> {
    let guest = cell.get("guest");
    let userspace = match plan.level.as_deref() {
        Some("kernel") => false,
        Some("userspace") => true,
        Some(level) => {
            return Err(format!(
                "ci/matrix.def gives an unknown Linux check level '{level}' (kernel, userspace)"
            ))
        }
        None => return Err("ci/matrix.def [levels] gives this Linux cell no level".into()),
    };
    let name = format!("linux-{guest}");
    if let Some(e) = arts.image_errors.get(&name) {
        return Err(format!("missing image: {name} could not be built: {e}"));
    }
    let dir = arts.images.join(&name);
    let kernel = dir.join("bzImage");
    let disk_src = dir.join("disk.ext4");
    for p in [&kernel, &disk_src] {
        image_file(p)?;
    }
    let disk = std::fs::read(&disk_src).map_err(|e| {
        format!(
            "missing image: run cargo xtask images ({}: {e})",
            disk_src.display()
        )
    })?;
    let stem = cell.file_stem();
    let img = arts.log_dir.join(format!("{stem}.disk.ext4"));
    let mut cmdline = LINUX_CMDLINE.to_string();
    let mut net = None;
    let dhcp_net = |mac_last: u8| cell_net(&stem, mac_last, true, None, false);
    let expect_markers = if userspace {
        // The disk's /sbin/init is the image's check (images/check/init): it verifies the
        // marker file and the network (lease + ping of the DHCP server) whatever the cell's
        // check, prints its verdict and exits through 0xf4 with 0x10 (status 33) on a pass.
        if disk_only(cell) {
            cmdline.push_str(" fugu.check=disk");
        } else {
            cmdline.push_str(" ip=dhcp");
            net = Some(dhcp_net(0x04));
        }
        let mut m = vec!["Run /sbin/init".to_string()];
        m.push(match cell.get("check") {
            "virtio-disk" => "fugu-check: disk: marker ok".to_string(),
            "virtio-net" => format!("fugu-check: network: lease {}/", netcheck::DHCP_GUEST),
            other => return Err(format!("runner 'linux' has no '{other}' check")),
        });
        m.push("fugu-check: PASS".to_string());
        m
    } else {
        match cell.get("check") {
            "virtio-disk" => vec![
                "EXT4-fs (vda): mounted filesystem".to_string(),
                "VFS: Mounted root (ext4 filesystem)".to_string(),
            ],
            "virtio-net" => {
                cmdline.push_str(" ip=dhcp");
                net = Some(dhcp_net(0x02));
                vec![
                    "IP-Config: Complete".to_string(),
                    format!("ipaddr={},", netcheck::DHCP_GUEST),
                ]
            }
            other => return Err(format!("runner 'linux' has no '{other}' check")),
        }
    };
    let mut args: Vec<OsString> = vec!["run".into(), "--kernel".into(), kernel.into()];
    args.push("--cmdline".into());
    args.push(cmdline.into());
    args.push("--disk".into());
    args.push(img.clone().into());
    args.push("--memory".into());
    args.push("256M".into());
    if let Some(n) = &net {
        args.push("--net".into());
        args.push(format!("tap={},mac={}", n.tap, n.mac_text()).into());
    }
    args.push("--serial".into());
    args.push(base.serial_log.clone().into());
    Ok(BootSpec {
        args,
        // The check's debug-exit pass (0x10) at the userspace level; at the kernel level init
        // dies, the kernel panics and reboots (panic=-1), which ends fugu with 0.
        expect_status: if userspace { 33 } else { 0 },
        expect_markers,
        files: vec![(img, disk)],
        net,
        // On kvm_pvm the i686 fugu gets SIGBUS from KVM_RUN as the guest enters user mode
        // (fugu reports it and exits 6); the kernel level was reached before that.
        accept_after_init: (!userspace).then_some((6, "signalled SIGBUS during KVM_RUN")),
        ..base.into_spec()
    })
}
