//! The vCPUs of a machine: created with their CPUID, the boot vCPU set up to enter the
//! kernel or the firmware's reset vector.

use super::{VmConfig, VmError};
use crate::arch::x86::{cpuid, features, regs};
use crate::boot::{self, BootPlan};
use crate::hypervisor::{self, Hypervisor, Vcpu, Vm};
use crate::memory::GuestMemory;

/// The vCPUs, and with `--bios` the firmware's mapping (which must outlive the VM).
pub struct Vcpus {
    pub vcpus: Vec<Box<dyn Vcpu>>,
    pub rom: Option<boot::firmware::RomMapping>,
    /// `--cpu-features` edits the host's KVM could not honour.
    pub notes: Vec<String>,
}

/// Create `cfg.cpus` vCPUs with the guest CPUID of `vendor`; vCPU 0 starts at `plan`.
pub fn create(
    kvm: &dyn Hypervisor,
    vm: &dyn Vm,
    mem: &dyn GuestMemory,
    cfg: &VmConfig,
    vendor: cpuid::Vendor,
    plan: &BootPlan,
    compat: bool,
) -> Result<Vcpus, VmError> {
    let kvm_offers = kvm.supported_cpuid()?;
    let mut supported = kvm_offers.clone();
    if cfg.nested && !cpuid::offers_nesting(&supported) {
        return Err(VmError::NoNesting);
    }
    if !cfg.nested {
        cpuid::hide_virtualization(&mut supported);
    }
    if compat {
        cpuid::hide_unemulated(&mut supported);
    }
    let tsc_deadline = kvm.check_extension(hypervisor::kvm_abi::KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    let mut vcpus = Vec::new();
    let mut rom = None;
    let emulating = crate::host_compat::HostVirt::probe().emulates_guest_kernel();
    let mut notes = features::ignored_removals(&cfg.cpu_features, emulating);
    for id in 0..cfg.cpus {
        let v = vm.create_vcpu(id)?;
        let mut entries = cpuid::for_vcpu(&supported, id, cfg.cpus, vendor, tsc_deadline);
        let dropped = features::apply(&mut entries, &cfg.cpu_features, &kvm_offers);
        if id == 0 {
            notes.extend(dropped);
        }
        v.set_cpuid2(&entries)?;
        if let (0, Some(f)) = (id, &cfg.firmware) {
            let ro = boot::firmware::readonly_supported(|c| kvm.check_extension(c));
            let slot =
                u32::try_from(mem.regions().len()).map_err(|_| VmError::TooManyRamRegions)?;
            rom = Some(boot::firmware::install(&f.bios, vm, ro, slot, mem, &*v)?);
        } else if id == 0 {
            regs::setup_boot_cpu(&*v, mem, plan.entry, &plan.mode)?;
        }
        vcpus.push(v);
    }
    Ok(Vcpus { vcpus, rom, notes })
}
