//! Identity page tables for entering long mode directly: the first 4 GiB with 2 MiB pages.

use crate::boot::addr;
use crate::memory::GuestMemory;

/// Write PML4, PDPT and four page directories at their fixed low-memory addresses; returns CR3.
pub fn identity_map_4g(mem: &dyn GuestMemory) -> crate::memory::Result<u64> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    mem.write(addr::PML4, &vec![0u8; 0x1000])?;
    mem.write_u64(addr::PML4, addr::PDPT | PRESENT_RW)?;
    let mut pdpt = vec![0u8; 0x1000];
    for (i, pdpte) in (0..4u64).zip(pdpt.chunks_exact_mut(8)) {
        let pd = addr::PD + i * 0x1000;
        pdpte.copy_from_slice(&(pd | PRESENT_RW).to_le_bytes());
        let mut table = vec![0u8; 0x1000];
        for (j, pde) in (0..512u64).zip(table.chunks_exact_mut(8)) {
            let e = ((i << 30) + (j << 21)) | PRESENT_RW | HUGE;
            pde.copy_from_slice(&e.to_le_bytes());
        }
        mem.write(pd, &table)?;
    }
    mem.write(addr::PDPT, &pdpt)?;
    Ok(addr::PML4)
}
