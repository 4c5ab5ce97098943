//! The workloads: one table, in report order. Adding a workload is one entry here and its
//! function (in the file of its kind).

mod boot;
mod build;
mod exits;
mod io;
mod l1;
mod linux;
mod many;
mod memory;
mod net;
mod pull;
mod startup;

use super::report::Goal;
use super::{Bench, Ctx, NoNumbers};
use crate::util;
use std::path::PathBuf;

/// The folder of image `name` (`target/images/out/NAME`), built first when it is missing, as
/// on a fresh clone: a row that boots an image measures it rather than reporting it absent.
fn built_image(name: &str) -> Result<PathBuf, NoNumbers> {
    let dir = util::root().join("target/images/out").join(name);
    if !dir.is_dir() {
        crate::images::build_only(&[name.to_string()])
            .map_err(|e| NoNumbers::Failed(format!("building the {name} image: {}", e.msg)))?;
    }
    Ok(dir)
}

/// The peer name of the workloads that QEMU is measured against (installed when one of them
/// is selected).
const QEMU: &str = "QEMU";

/// One benchmark: what it measures, against which peer, in which unit, and the goal for the
/// fugu/peer ratio when there is one.
pub struct Workload {
    pub name: &'static str,
    pub what: &'static str,
    pub goal: Option<Goal>,
    pub peer: &'static str,
    pub unit: &'static str,
    pub run: fn(&Ctx) -> Bench,
}

impl Workload {
    pub fn needs_qemu(&self) -> bool {
        self.peer == QEMU
    }
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "boot-hello32",
        what: "tiny Multiboot guest (hello32) from process start to its debug exit",
        goal: Some(Goal::AtMost(0.5)),
        peer: QEMU,
        unit: "s",
        run: boot::hello32,
    },
    Workload {
        name: "boot-seabios-mbr",
        what: "SeaBIOS → virtio-blk MBR → marker",
        goal: Some(Goal::AtMost(0.5)),
        peer: QEMU,
        unit: "s",
        run: boot::seabios_mbr,
    },
    Workload {
        name: "boot-ipxe",
        what: "iPXE → DHCP/TFTP NBP → marker",
        goal: Some(Goal::AtMost(0.5)),
        peer: QEMU,
        unit: "s",
        run: boot::ipxe,
    },
    Workload {
        name: "boot-linux",
        what: "the minimal Linux image to its last marker reachable here",
        goal: Some(Goal::AtMost(0.5)),
        peer: QEMU,
        unit: "s",
        run: linux::boot_linux,
    },
    Workload {
        name: "svm-tcg-boot-linux",
        what: "inside the svm-tcg L1: the minimal Linux image to its init",
        goal: Some(Goal::AtMost(0.7)),
        peer: QEMU,
        unit: "s",
        run: l1::minimal,
    },
    Workload {
        name: "svm-tcg-boot-debian",
        what: "inside the svm-tcg L1: Debian's stock kernel to its init",
        goal: Some(Goal::AtMost(0.7)),
        peer: QEMU,
        unit: "s",
        run: l1::debian,
    },
    Workload {
        name: "svm-tcg-boot-seabios-mbr",
        what: "inside the svm-tcg L1: SeaBIOS → virtio-blk MBR → marker",
        goal: Some(Goal::AtMost(0.5)),
        peer: QEMU,
        unit: "s",
        run: l1::seabios_mbr,
    },
    Workload {
        name: "svm-tcg-boot-ipxe",
        what: "inside the svm-tcg L1: iPXE → DHCP/TFTP NBP → marker",
        goal: Some(Goal::AtMost(0.5)),
        peer: QEMU,
        unit: "s",
        run: l1::ipxe,
    },
    Workload {
        name: "startup",
        what: "VMM process start to the first KVM_RUN (the VMM's own clock)",
        goal: None,
        peer: QEMU,
        unit: "ms",
        run: startup::startup,
    },
    Workload {
        name: "memory-overhead",
        what: "RSS minus guest RAM touched, 1 vCPU / 128 MiB, spinning guest",
        goal: Some(Goal::AtMost(0.2)),
        peer: QEMU,
        unit: "MiB",
        run: memory::memory,
    },
    Workload {
        name: "many-vms-time",
        what: "50 tiny VMs started together: 99th percentile of the time to their markers",
        goal: None,
        peer: QEMU,
        unit: "s",
        run: many::many_vms_time,
    },
    Workload {
        name: "many-vms-memory",
        what: "50 tiny VMs running together: their summed Pss",
        goal: None,
        peer: QEMU,
        unit: "MiB",
        run: many::many_vms_memory,
    },
    Workload {
        name: "virtio-blk-4k",
        what: "4 KiB reads through the virtio-blk device model vs pread",
        goal: Some(Goal::AtLeast(0.9)),
        peer: "pread",
        unit: "req/s",
        run: io::blk,
    },
    Workload {
        name: "virtio-net-rr",
        what: "virtio-net round trips of full-size frames, guest → tap → host echo → guest",
        goal: None,
        peer: QEMU,
        unit: "rounds/s",
        run: net::rr,
    },
    Workload {
        name: "qcow2-4k-read",
        what: "random 4 KiB reads: fugu's qcow2 vs raw (image layer)",
        goal: None,
        peer: "raw",
        unit: "req/s",
        run: io::qcow2_read,
    },
    Workload {
        name: "qcow2-4k-write",
        what: "random 4 KiB writes: fugu's qcow2 (fresh image) vs raw (image layer)",
        goal: None,
        peer: "raw",
        unit: "req/s",
        run: io::qcow2_write,
    },
    Workload {
        name: "pio-exit",
        what: "port-I/O exit round trip: fugu's vCPU loop vs a bare KVM loop",
        goal: Some(Goal::AtMost(1.1)),
        peer: "bare KVM loop",
        unit: "µs/exit",
        run: exits::exits,
    },
    Workload {
        name: "image-pull",
        what: "`fugu image pull` of a 64 MiB file from loopback HTTP vs curl + sha256sum",
        goal: Some(Goal::AtMost(1.1)),
        peer: "curl + sha256sum",
        unit: "s",
        run: pull::pull,
    },
    Workload {
        name: "xtask-build-noop",
        what: "no-op `cargo xtask build` vs the plain cargo command it runs",
        goal: None,
        peer: "plain cargo",
        unit: "s",
        run: build::xtask_build,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_qemu_is_installed_for_the_qemu_workloads() {
        let mut names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), WORKLOADS.len());
        let q: Vec<&str> = WORKLOADS
            .iter()
            .filter(|w| w.needs_qemu())
            .map(|w| w.name)
            .collect();
        assert_eq!(
            q,
            [
                "boot-hello32",
                "boot-seabios-mbr",
                "boot-ipxe",
                "boot-linux",
                "svm-tcg-boot-linux",
                "svm-tcg-boot-debian",
                "svm-tcg-boot-seabios-mbr",
                "svm-tcg-boot-ipxe",
                "startup",
                "memory-overhead",
                "many-vms-time",
                "many-vms-memory",
                "virtio-net-rr"
            ]
        );
    }
}
