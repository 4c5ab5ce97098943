//! A cell's fate on this host, from the definition and the probe alone (no side effects).

use super::Runner;
use crate::matrix_def::Plan;
use crate::probe::{self, Probe};

/// What a cell will do on this host.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Run(Runner),
    Skip(String),
    Fail(String),
}

/// Decide a cell's fate: a missing virtualization need SKIPs first (the host limit comes before
/// a missing feature), then a runner this xtask lacks SKIPs with its [pending] reason, then a
/// missing tool or file SKIPs.
pub fn decide(plan: &Plan, probe: &Probe) -> Decision {
    let is_virt = |n: &&String| probe::VIRT_CAPABILITIES.contains(&n.as_str());
    for n in plan.needs.iter().filter(is_virt) {
        if let Some(why) = probe.missing(n) {
            return Decision::Skip(why);
        }
    }
    let Some(name) = &plan.runner else {
        return Decision::Fail("ci/matrix.def gives this cell no runner".into());
    };
    let Some(runner) = Runner::parse(name) else {
        return match &plan.pending {
            Some(why) => Decision::Skip(why.clone()),
            None => Decision::Fail(format!(
                "runner '{name}' is not implemented and ci/matrix.def [pending] gives no reason"
            )),
        };
    };
    for n in plan.needs.iter().filter(|n| !is_virt(n)) {
        if let Some(why) = probe.missing(n) {
            return Decision::Skip(why);
        }
    }
    Decision::Run(runner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix_def;
    use crate::test_matrix::testutil::pvm_probe;

    #[test]
    fn decisions_on_a_pvm_host() {
        let def = matrix_def::load().unwrap();
        let probe = pvm_probe();
        let get = |id: &str| {
            let c = def.cells().into_iter().find(|c| c.id() == id).unwrap();
            decide(&def.plan(&c), &probe)
        };
        assert_eq!(
            get("pvm/shadow/i686/i386/tiny-direct/boot"),
            Decision::Run(Runner::TinyBoot)
        );
        assert_eq!(
            get("pvm/shadow/x86_64/amd64/tiny-direct/virtio-disk"),
            Decision::Run(Runner::TinyVirtioDisk)
        );
        assert_eq!(
            get("vmx/tdp/x86_64/amd64/tiny-direct/boot"),
            Decision::Skip(
                "needs VMX; host has no hardware virtualization (KVM module kvm_pvm)".into()
            )
        );
        // The BIOS disk boot runs where SeaBIOS is installed; iPXE network boot is pending.
        let bios_cell = def
            .cells()
            .into_iter()
            .find(|c| c.id() == "pvm/shadow/x86_64/amd64/bios-disk/virtio-disk")
            .unwrap();
        let mut with_seabios = pvm_probe();
        with_seabios.seabios = Some("/usr/share/seabios/bios-256k.bin".into());
        assert_eq!(
            decide(&def.plan(&bios_cell), &with_seabios),
            Decision::Run(Runner::BiosDisk)
        );
        assert!(matches!(
            decide(&def.plan(&bios_cell), &probe),
            Decision::Skip(_)
        ));
        // The iPXE network boot runs where SeaBIOS, iPXE's ROMs and dnsmasq are installed.
        let ipxe_cell = def
            .cells()
            .into_iter()
            .find(|c| c.id() == "pvm/shadow/x86_64/amd64/ipxe-net/virtio-net")
            .unwrap();
        let mut with_firmware = with_seabios.clone();
        with_firmware.ipxe = Some("/usr/lib/ipxe/qemu/pxe-virtio.rom".into());
        with_firmware.dnsmasq = Some("/usr/sbin/dnsmasq".into());
        assert_eq!(
            decide(&def.plan(&ipxe_cell), &with_firmware),
            Decision::Run(Runner::IpxeNet)
        );
        let Decision::Skip(why) = decide(&def.plan(&ipxe_cell), &with_seabios) else {
            panic!()
        };
        assert!(why.contains("ipxe") || why.contains("dnsmasq"), "{why}");
        // The host limit comes before the missing feature.
        let Decision::Skip(why) = get("pvm/shadow/x86_64/i386/linux-direct/virtio-disk") else {
            panic!()
        };
        assert!(why.contains("32-bit guest paging"), "{why}");
        // No /dev/kvm: nothing runs, and says why.
        let mut p = pvm_probe();
        p.dev_kvm = Err("/dev/kvm: Permission denied".into());
        let c = def.cells()[0].clone();
        assert!(
            matches!(decide(&def.plan(&c), &p), Decision::Skip(w) if w.contains("Permission denied"))
        );
    }

    #[test]
    fn every_runner_is_implemented_or_pending_not_both() {
        let def = matrix_def::load().unwrap();
        for r in def.runner_names() {
            let pending = def.pending.iter().any(|(n, _)| *n == r);
            let implemented = Runner::parse(&r).is_some();
            assert!(
                pending != implemented,
                "runner {r}: implemented={implemented} pending={pending}"
            );
        }
        for (n, _) in &def.pending {
            assert!(def.runner_names().contains(n), "[pending] {n} is no runner");
        }
    }
}
