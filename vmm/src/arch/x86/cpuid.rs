//! The CPUID table a guest sees: KVM's supported set, normalized for this VM's topology.

use crate::hypervisor::CpuidEntry;

/// The hypervisor leaf signature ("fugufugufugu" would be cute, but guests key off "KVMKVMKVM").
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// The CPU vendor the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Whatever KVM reports (the host's).
    Host,
    /// GenuineIntel, whatever the host is.
    Intel,
}

const GENUINE_INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e]; // ebx, edx, ecx

/// CPUID.1:ECX bit 24, the LAPIC TSC-deadline timer mode.
pub const TSC_DEADLINE_TIMER: u32 = 1 << 24;

/// CPUID.1:ECX bit 5: Intel VMX.
pub const VMX: u32 = 1 << 5;
/// CPUID.8000_0001h:ECX bit 2: AMD SVM.
pub const SVM: u32 = 1 << 2;

/// Whether the host's KVM offers guests hardware virtualization of their own (VMX or SVM in
/// its supported CPUID: kvm_intel / kvm_amd loaded with nested=1).
pub fn offers_nesting(supported: &[CpuidEntry]) -> bool {
    supported.iter().any(|e| {
        (e.function == 1 && e.ecx & VMX != 0) || (e.function == 0x8000_0001 && e.ecx & SVM != 0)
    })
}

/// Hide VMX and SVM: a guest gets its own hardware virtualization only when asked
/// (`fugu run --nested`), as with QEMU's CPU models, so that it does not load a hypervisor
/// of its own on a host whose nesting nobody meant to offer.
pub fn hide_virtualization(entries: &mut [CpuidEntry]) {
    for e in entries {
        match e.function {
            1 => e.ecx &= !VMX,
            0x8000_0001 => e.ecx &= !SVM,
            _ => {}
        }
    }
}

/// CPUID.1:ECX: FMA (12), XSAVE (26), OSXSAVE (27), AVX (28), F16C (29).
const XSAVE_FAMILY_1_ECX: u32 = (1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29);
/// CPUID.7.0:EBX: AVX2 (5), INVPCID (10), the AVX-512 bits (16, 17, 21, 26-28, 30, 31),
/// CLWB (24).
const UNEMULATED_7_EBX: u32 = (1 << 5)
    | (1 << 10)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 24)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
/// CPUID.8000_0008h:EBX bit 4: RDPRU.
const RDPRU: u32 = 1 << 4;

/// Hide what a host whose KVM emulates guest kernel code (no VMX/SVM: host adaptation) cannot
/// run for the guest and fugu does not complete: XGETBV/XSETBV and so XSAVE with everything
/// that needs the OS to enable it (AVX, FMA, F16C, AVX2, AVX-512, the XSAVE leaf 0xD),
/// INVPCID, CLWB and RDPRU. The host's KVM reports them because the host CPU has them; a
/// guest that believed it would end on an instruction the host's emulator refuses. Never
/// advertise what the host cannot deliver.
pub fn hide_unemulated(entries: &mut [CpuidEntry]) {
    for e in entries {
        match (e.function, e.index) {
            (1, _) => e.ecx &= !XSAVE_FAMILY_1_ECX,
            (7, 0) => {
                e.ebx &= !UNEMULATED_7_EBX;
                // AVX-512 and AVX-VNNI-style bits in ECX/EDX need XSAVE too.
                e.ecx &= !((1 << 1) | (1 << 6) | (1 << 11) | (1 << 12) | (1 << 14));
            }
            (0xd, _) => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            (0x8000_0008, _) => e.ebx &= !RDPRU,
            _ => {}
        }
    }
}

/// Normalize the supported CPUID for vCPU `cpu_id` of `cpu_count`.
///
/// `tsc_deadline`: KVM's in-kernel LAPIC emulates TSC-deadline mode
/// (KVM_CAP_TSC_DEADLINE_TIMER). KVM_GET_SUPPORTED_CPUID does not always report it (it depends
/// on the in-kernel irqchip), so, like QEMU, the VMM sets the bit from the capability. Without
/// it Linux calibrates the LAPIC timer against the PIT and verifies it; where the PIT's ticks
/// come late or in bursts (nested under QEMU TCG's SVM: issue 14) the check fails, Linux logs
/// "APIC timer disabled due to verification failure" and its timers all but stop.
pub fn for_vcpu(
    supported: &[CpuidEntry],
    cpu_id: u32,
    cpu_count: u32,
    vendor: Vendor,
    tsc_deadline: bool,
) -> Vec<CpuidEntry> {
    let mut out = supported.to_vec();
    for e in &mut out {
        match e.function {
            0 if vendor == Vendor::Intel => {
                e.ebx = GENUINE_INTEL[0];
                e.edx = GENUINE_INTEL[1];
                e.ecx = GENUINE_INTEL[2];
            }
            1 => {
                // Initial APIC ID, logical processor count, HTT when more than one CPU.
                e.ebx = (e.ebx & 0x0000_ffff) | (cpu_id << 24) | ((cpu_count.min(255)) << 16);
                if cpu_count > 1 {
                    e.edx |= 1 << 28;
                }
                e.ecx |= 1 << 31; // running under a hypervisor
                if tsc_deadline {
                    e.ecx |= TSC_DEADLINE_TIMER;
                }
            }
            0xb | 0x1f => {
                // x2APIC topology: one thread per core, all cores in one package.
                e.edx = cpu_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 0x100;
                    }
                    1 => {
                        e.eax = 32 - cpu_count.saturating_sub(1).leading_zeros();
                        e.ebx = cpu_count;
                        e.ecx = 0x201;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x4000_0000 => {
                e.ebx = KVM_SIGNATURE[0];
                e.ecx = KVM_SIGNATURE[1];
                e.edx = KVM_SIGNATURE[2];
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn virtualization_is_offered_only_when_the_host_has_it_and_hidden_unless_asked() {
        let mut l1 = leaf(1, 0);
        l1.ecx = VMX | 1;
        let mut ext = leaf(0x8000_0001, 0);
        ext.ecx = SVM | 1;
        assert!(offers_nesting(&[leaf(1, 0), ext]));
        assert!(offers_nesting(&[l1, leaf(0x8000_0001, 0)]));
        assert!(!offers_nesting(&[leaf(1, 0), leaf(0x8000_0001, 0)]));
        let mut c = vec![l1, ext, leaf(0xb, 0)];
        hide_virtualization(&mut c);
        assert_eq!(c[0].ecx, 1, "VMX cleared, other bits kept");
        assert_eq!(c[1].ecx, 1, "SVM cleared, other bits kept");
        assert!(!offers_nesting(&c));
    }

    #[test]
    fn an_emulating_host_advertises_no_xsave_invpcid_clwb_or_rdpru() {
        let mut c = vec![
            leaf(1, 0),
            leaf(7, 0),
            leaf(7, 1),
            leaf(0xd, 0),
            leaf(0xd, 1),
            leaf(0x8000_0008, 0),
        ];
        for e in &mut c {
            (e.eax, e.ebx, e.ecx, e.edx) = (!0, !0, !0, !0);
        }
        hide_unemulated(&mut c);
        assert_eq!(c[0].ecx & (1 << 26), 0, "XSAVE");
        assert_eq!(c[0].ecx & (1 << 28), 0, "AVX");
        assert_ne!(c[0].ecx & 1, 0, "SSE3 stays");
        assert_eq!(c[0].edx, !0, "leaf 1 EDX untouched");
        assert_eq!(c[1].ebx & (1 << 24), 0, "CLWB");
        assert_eq!(c[1].ebx & (1 << 10), 0, "INVPCID");
        assert_eq!(c[1].ebx & (1 << 5), 0, "AVX2");
        assert_ne!(c[1].ebx & (1 << 0), 0, "FSGSBASE stays");
        assert_eq!(c[2].ebx, !0, "leaf 7 subleaf 1 untouched");
        assert!(c[3..5]
            .iter()
            .all(|e| (e.eax, e.ebx, e.ecx, e.edx) == (0, 0, 0, 0)));
        assert_eq!(c[5].ebx & RDPRU, 0, "RDPRU");
    }

    #[test]
    fn topology_vendor_and_hypervisor_leaf() {
        let sup = vec![
            leaf(0, 0),
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0x4000_0000, 0),
        ];
        let c = for_vcpu(&sup, 3, 4, Vendor::Intel, false);
        let l0 = c.iter().find(|e| e.function == 0).unwrap();
        let mut v = Vec::new();
        for r in [l0.ebx, l0.edx, l0.ecx] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        let l1 = c.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ebx >> 24, 3, "initial APIC ID");
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert!(l1.edx & (1 << 28) != 0 && l1.ecx & (1 << 31) != 0);
        assert_eq!(l1.ecx & TSC_DEADLINE_TIMER, 0, "only when KVM emulates it");
        let b1 = c
            .iter()
            .find(|e| e.function == 0xb && e.index == 1)
            .unwrap();
        assert_eq!((b1.eax, b1.ebx, b1.edx), (2, 4, 3));
        let host = for_vcpu(&sup, 0, 1, Vendor::Host, true);
        assert_eq!(host.iter().find(|e| e.function == 0).unwrap().ebx, 0);
        let h1 = host.iter().find(|e| e.function == 1).unwrap();
        assert_ne!(
            h1.ecx & TSC_DEADLINE_TIMER,
            0,
            "TSC-deadline timer advertised"
        );
    }
}
