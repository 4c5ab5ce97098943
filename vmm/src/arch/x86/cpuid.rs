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

/// Normalize the supported CPUID for vCPU `cpu_id` of `cpu_count`.
pub fn for_vcpu(
    supported: &[CpuidEntry],
    cpu_id: u32,
    cpu_count: u32,
    vendor: Vendor,
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
    fn topology_vendor_and_hypervisor_leaf() {
        let sup = vec![
            leaf(0, 0),
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0x4000_0000, 0),
        ];
        let c = for_vcpu(&sup, 3, 4, Vendor::Intel);
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
        let b1 = c
            .iter()
            .find(|e| e.function == 0xb && e.index == 1)
            .unwrap();
        assert_eq!((b1.eax, b1.ebx, b1.edx), (2, 4, 3));
        let host = for_vcpu(&sup, 0, 1, Vendor::Host);
        assert_eq!(host.iter().find(|e| e.function == 0).unwrap().ebx, 0);
    }
}
