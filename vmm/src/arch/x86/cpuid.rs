//! The CPUID table a guest sees: KVM's supported set, normalized for this VM's topology.

use crate::hypervisor::CpuidEntry;

/// The hypervisor leaf signature ("fugufugufugu" would be cute, but guests key off "KVMKVMKVM").
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// Normalize the supported CPUID for vCPU `cpu_id` of `cpu_count`.
pub fn for_vcpu(supported: &[CpuidEntry], cpu_id: u32, cpu_count: u32) -> Vec<CpuidEntry> {
    let mut out = supported.to_vec();
    for e in &mut out {
        match e.function {
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
