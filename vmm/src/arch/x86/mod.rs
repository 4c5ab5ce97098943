//! x86 CPU setup: descriptor tables, the register state for each boot mode, CPUID.

pub mod cpuid;
pub mod gdt;
pub mod paging;
pub mod regs;
