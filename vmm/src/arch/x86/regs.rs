//! Initial vCPU register state for each entry mode.

use super::gdt;
use crate::boot::{addr, EntryMode};
use crate::hypervisor::{Regs, Sregs, Vcpu};
use crate::memory::GuestMemory;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Kvm(#[from] crate::hypervisor::Error),
    #[error("writing boot structures: {0}")]
    Memory(#[from] crate::memory::OutOfRange),
}

/// Write the GDT into guest memory and put the boot vCPU into the mode `mode` asks for.
pub fn setup_boot_cpu(
    vcpu: &dyn Vcpu,
    mem: &dyn GuestMemory,
    entry: u64,
    mode: &EntryMode,
) -> Result<(), SetupError> {
    let table = gdt::table();
    let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write(addr::GDT, &bytes)?;

    let mut sregs: Sregs = vcpu.get_sregs()?;
    sregs.gdt.base = addr::GDT;
    sregs.gdt.limit = u16::try_from(bytes.len() - 1).unwrap_or(u16::MAX);
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    let data = gdt::segment(table[2], gdt::DATA);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(table[4], gdt::TSS);

    let mut regs = Regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match *mode {
        EntryMode::Protected32 { eax, ebx, esi } => {
            sregs.cs = gdt::segment(table[1], gdt::CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rax = eax as u64;
            regs.rbx = ebx as u64;
            regs.rsi = esi as u64;
        }
        EntryMode::Long64 { rsi } => {
            sregs.cs = gdt::segment(table[3], gdt::CODE64);
            sregs.cr3 = super::paging::identity_map_4g(mem)?;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rsi = rsi;
            regs.rsp = addr::BOOT_STACK;
            regs.rbp = addr::BOOT_STACK;
        }
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    // A clean x87/SSE state: FCW 0x37f, MXCSR 0x1f80, as after FNINIT/reset.
    let fpu = crate::hypervisor::Fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)?;
    Ok(())
}
