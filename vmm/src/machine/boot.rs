//! What the machine boots: the kernel (checked against the RAM it can address, its command
//! line adapted to the host), or the firmware's reset vector with `--bios`.

use super::{VmConfig, VmError};
use crate::boot::{self, BootPlan, KernelKind};
use crate::memory::GuestMemory;

/// The loaded guest, and what the messages about it need.
pub struct Guest {
    pub plan: BootPlan,
    /// The command line given to a Linux kernel (adapted under host adaptation).
    pub cmdline: String,
    /// A Linux kernel (bzImage or 64-bit ELF): host adaptation changes its command line.
    pub linux: bool,
    /// A 64-bit Linux kernel: its userspace cannot make system calls on hosts that need
    /// host adaptation.
    pub linux64: bool,
}

/// Load the kernel (or plan the firmware boot) into `mem`; `compat` is host adaptation.
pub fn load(cfg: &VmConfig, mem: &dyn GuestMemory, compat: bool) -> Result<Guest, VmError> {
    let kind = boot::detect(&cfg.kernel);
    let linux = matches!(
        kind,
        KernelKind::LinuxBzImage | KernelKind::Elf { is64: true }
    );
    let cmdline = if compat && linux {
        crate::host_compat::adapt_linux_cmdline(&cfg.cmdline)
    } else {
        cfg.cmdline.clone()
    };
    let plan = if cfg.firmware.is_some() {
        // The firmware finds its own way; it writes its own MP/ACPI tables.
        BootPlan {
            entry: 0xffff_fff0,
            mode: boot::EntryMode::Protected32 {
                eax: 0,
                ebx: 0,
                esi: 0,
            },
            kind: "BIOS",
        }
    } else {
        let plan = boot::load_kernel(
            mem,
            &cfg.kernel,
            &cfg.kernel_name,
            &cmdline,
            &cfg.modules,
            cfg.mem_size,
        )?;
        let cpus = u8::try_from(cfg.cpus).map_err(|_| VmError::Cpus(cfg.cpus))?;
        crate::arch::x86::mptable::write(mem, cpus).map_err(VmError::MpTable)?;
        if cfg.acpi {
            crate::acpi::setup_direct(mem, &plan, cpus).map_err(VmError::Acpi)?;
        }
        plan
    };
    let linux64 = match kind {
        KernelKind::LinuxBzImage => {
            boot::linux::parse(&cfg.kernel).is_ok_and(|b| b.xloadflags & 1 != 0)
        }
        KernelKind::Elf { is64 } => is64,
        _ => false,
    };
    Ok(Guest {
        plan,
        cmdline,
        linux,
        linux64,
    })
}
