//! The PVH boot protocol (Xen's direct boot, also used by KVM VMMs): the kernel's 32-bit
//! entry from its ELF note, entered in protected mode without paging with EBX pointing at an
//! `hvm_start_info` that carries the memory map, command line and modules.

use super::{addr, place, BootPlan, EntryMode, LoadError};
use crate::bits;
use crate::memory::layout::{e820_map, PCI_HOLE_START};
use crate::memory::GuestMemory;

const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Place the initrd (as module 0) and the start info; enter at `entry`.
pub fn boot(
    mem: &dyn GuestMemory,
    entry: u64,
    cmdline_addr: u64,
    initrd: Option<&[u8]>,
    kernel_end: u64,
    mem_size: u64,
) -> Result<BootPlan, LoadError> {
    if entry > u32::MAX as u64 {
        return Err(LoadError::Malformed(format!(
            "PVH entry {entry:#x} is above 4 GiB"
        )));
    }
    let mut nr_modules = 0u32;
    if let Some(data) = initrd {
        // Highest page-aligned spot below the PCI hole / end of RAM, above the kernel.
        let ceiling = mem_size.min(PCI_HOLE_START);
        let len = data.len() as u64;
        let start = ceiling
            .checked_sub(len)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= (kernel_end + 0xfff) & !0xfff)
            .ok_or(LoadError::DoesNotFit {
                what: "initrd",
                addr: kernel_end,
                len,
                ram: mem_size >> 20,
            })?;
        place(mem, "initrd", start, data)?;
        let mut m = Vec::new();
        for v in [start, len, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        place(mem, "PVH module list", addr::PVH_MODLIST, &m)?;
        nr_modules = 1;
    }
    let map = e820_map(mem_size);
    let mut mm = Vec::new();
    for e in &map {
        mm.extend_from_slice(&e.addr.to_le_bytes());
        mm.extend_from_slice(&e.size.to_le_bytes());
        mm.extend_from_slice(&(e.kind as u32).to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
    }
    place(mem, "PVH memory map", addr::PVH_MEMMAP, &mm)?;
    let mut si = Vec::new();
    si.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
    si.extend_from_slice(&1u32.to_le_bytes()); // version 1: has the memory map
    si.extend_from_slice(&0u32.to_le_bytes()); // flags
    si.extend_from_slice(&nr_modules.to_le_bytes());
    let modlist = if nr_modules > 0 { addr::PVH_MODLIST } else { 0 };
    for v in [
        modlist,
        cmdline_addr,
        0, /* no RSDP */
        addr::PVH_MEMMAP,
    ] {
        si.extend_from_slice(&v.to_le_bytes());
    }
    // The E820 map has a handful of entries.
    si.extend_from_slice(&bits::lo32(map.len() as u64).to_le_bytes());
    si.extend_from_slice(&0u32.to_le_bytes());
    place(mem, "PVH start info", addr::PVH_START_INFO, &si)?;
    Ok(BootPlan {
        entry,
        mode: EntryMode::Protected32 {
            eax: 0,
            ebx: const { bits::const_u32(addr::PVH_START_INFO) },
            esi: 0,
        },
        kind: "ELF (PVH entry)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::elf;
    use crate::memory::portable::MmapMemory;

    /// An ELF64 with one PT_LOAD segment and a PT_NOTE holding Xen's PHYS32_ENTRY.
    fn elf64_with_pvh(entry32: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 2 * 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16] = 2;
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&2u16.to_le_bytes());
        let code_off = b.len() as u64;
        let code = [0xf4u8; 16];
        let note_off = code_off + code.len() as u64;
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&18u32.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry32.to_le_bytes());
        let ph = |b: &mut Vec<u8>, i: usize, t: u32, off: u64, paddr: u64, sz: u64| {
            let p = 64 + i * 56;
            b[p..p + 4].copy_from_slice(&t.to_le_bytes());
            b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            b[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
            b[p + 32..p + 40].copy_from_slice(&sz.to_le_bytes());
            b[p + 40..p + 48].copy_from_slice(&sz.to_le_bytes());
        };
        ph(&mut b, 0, 1, code_off, 0x20_0000, code.len() as u64);
        ph(&mut b, 1, 4, note_off, 0, note.len() as u64);
        b.extend_from_slice(&code);
        b.extend_from_slice(&note);
        b
    }

    #[test]
    fn pvh_note_selects_the_32bit_entry_with_start_info() {
        let img = elf64_with_pvh(0x20_0008);
        let e = elf::parse(&img).unwrap();
        assert_eq!(e.pvh_entry, Some(0x20_0008));
        let mem = MmapMemory::new(&[(0, 64 << 20)]).unwrap();
        let plan =
            elf::load_direct(&mem, &img, "root=/dev/vda", Some(&[9u8; 100]), 64 << 20).unwrap();
        assert_eq!(plan.entry, 0x20_0008);
        assert_eq!(
            plan.mode,
            EntryMode::Protected32 {
                eax: 0,
                ebx: const { crate::bits::const_u32(addr::PVH_START_INFO) },
                esi: 0
            }
        );
        let si = addr::PVH_START_INFO;
        assert_eq!(mem.read_u32(si).unwrap(), START_INFO_MAGIC);
        assert_eq!(mem.read_u32(si + 12).unwrap(), 1, "one module");
        let m = mem.read_u64(si + 16).unwrap();
        let rd = mem.read_u64(m).unwrap();
        assert_eq!(mem.read_u8(rd).unwrap(), 9);
        assert_eq!(mem.read_u64(si + 24).unwrap(), addr::CMDLINE);
        assert!(mem.read_u32(si + 48).unwrap() >= 4, "memory map entries");
    }

    #[test]
    fn broken_notes_are_errors() {
        let mut img = elf64_with_pvh(0x20_0008);
        let n = img.len();
        img[n - 20..n - 16].copy_from_slice(&0xffffu32.to_le_bytes()); // namesz
        assert!(elf::parse(&img).is_err());
    }
}
