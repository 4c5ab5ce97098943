//! x86 CPU setup: descriptor tables, the register state for each boot mode, CPUID.

pub mod complete;
pub mod cpuid;
pub mod features;
pub mod gdt;
pub mod mptable;
pub mod paging;
pub mod regs;
pub mod translate;
