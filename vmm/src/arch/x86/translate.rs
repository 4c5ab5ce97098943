//! Guest linear → physical translation by walking the guest's page tables in guest memory,
//! for every x86 paging mode: none, 32-bit (with PSE), PAE, and 4-level long mode.

use crate::hypervisor::Sregs;
use crate::memory::GuestMemory;

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1;
const PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Translate `linear` for a vCPU in the state `sregs`; None when it is not mapped.
pub fn translate(mem: &dyn GuestMemory, sregs: &Sregs, linear: u64) -> Option<u64> {
    if sregs.cr0 & CR0_PG == 0 {
        return Some(if sregs.efer & EFER_LMA != 0 {
            linear
        } else {
            linear & 0xffff_ffff
        });
    }
    if sregs.efer & EFER_LMA != 0 {
        let mut table = sregs.cr3 & ADDR_MASK;
        for (level, shift) in [(4, 39u32), (3, 30), (2, 21), (1, 12)] {
            let e = mem.read_u64(table + ((linear >> shift) & 0x1ff) * 8).ok()?;
            if e & PRESENT == 0 {
                return None;
            }
            if level == 1 || (level <= 3 && e & PS != 0) {
                let mask = (1u64 << shift) - 1;
                return Some((e & ADDR_MASK & !mask) | (linear & mask));
            }
            table = e & ADDR_MASK;
        }
        None
    } else if sregs.cr4 & CR4_PAE != 0 {
        let linear = linear & 0xffff_ffff;
        let pdpte = mem
            .read_u64((sregs.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8)
            .ok()?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = mem
            .read_u64((pdpte & ADDR_MASK) + ((linear >> 21) & 0x1ff) * 8)
            .ok()?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & PS != 0 {
            return Some((pde & ADDR_MASK & !0x1f_ffff) | (linear & 0x1f_ffff));
        }
        let pte = mem
            .read_u64((pde & ADDR_MASK) + ((linear >> 12) & 0x1ff) * 8)
            .ok()?;
        (pte & PRESENT != 0).then_some((pte & ADDR_MASK) | (linear & 0xfff))
    } else {
        let linear = linear & 0xffff_ffff;
        let pde = mem
            .read_u32((sregs.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4)
            .ok()? as u64;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & PS != 0 && sregs.cr4 & CR4_PSE != 0 {
            // 4 MiB page; bits 13-20 of the PDE extend the address beyond 4 GiB (PSE-36).
            let high = ((pde >> 13) & 0xff) << 32;
            return Some(high | (pde & 0xffc0_0000) | (linear & 0x3f_ffff));
        }
        let pte = mem
            .read_u32((pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4)
            .ok()? as u64;
        (pte & PRESENT != 0).then_some((pte & 0xffff_f000) | (linear & 0xfff))
    }
}

/// Read up to `buf.len()` bytes at a linear address, page by page; returns how many were read.
pub fn read_linear(mem: &dyn GuestMemory, sregs: &Sregs, linear: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let at = linear.wrapping_add(done as u64);
        let Some(pa) = translate(mem, sregs, at) else {
            break;
        };
        // At most a page: fits every usize.
        let n = usize::try_from(0x1000 - (at & 0xfff))
            .unwrap_or(0x1000)
            .min(buf.len() - done);
        if mem.read(pa, &mut buf[done..done + n]).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// Write `data` at a linear address: every page is translated first, so a write that would
/// fault changes nothing. Returns whether it was written.
pub fn write_linear(mem: &dyn GuestMemory, sregs: &Sregs, linear: u64, data: &[u8]) -> bool {
    let mut pieces = Vec::new();
    let mut done = 0;
    while done < data.len() {
        let at = linear.wrapping_add(done as u64);
        let Some(pa) = translate(mem, sregs, at) else {
            return false;
        };
        // At most a page: fits every usize.
        let n = usize::try_from(0x1000 - (at & 0xfff))
            .unwrap_or(0x1000)
            .min(data.len() - done);
        pieces.push((pa, done, n));
        done += n;
    }
    pieces
        .into_iter()
        .all(|(pa, from, n)| mem.write(pa, &data[from..from + n]).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::portable::MmapMemory;

    #[test]
    fn walks_long_mode_and_pae_and_legacy_tables() {
        let mem = MmapMemory::new(&[(0, 16 << 20)]).unwrap();
        // Long mode: the boot identity map (2 MiB pages).
        let cr3 = crate::arch::x86::paging::identity_map_4g(&mem).unwrap();
        let lm = Sregs {
            cr0: CR0_PG | 1,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8),
            ..Default::default()
        };
        assert_eq!(translate(&mem, &lm, 0x12_3456), Some(0x12_3456));
        assert_eq!(
            translate(&mem, &lm, 0x1_0000_0000),
            None,
            "beyond the 4 GiB identity map"
        );
        // 32-bit paging, 4 KiB page mapping linear 0x4000_0000 to physical 0x5000.
        mem.write_u32(0x20_0000 + (0x100 * 4), 0x20_1000 | 1)
            .unwrap();
        mem.write_u32(0x20_1000, 0x5000 | 1).unwrap();
        let legacy = Sregs {
            cr0: CR0_PG | 1,
            cr3: 0x20_0000,
            ..Default::default()
        };
        assert_eq!(translate(&mem, &legacy, 0x4000_0123), Some(0x5123));
        assert_eq!(translate(&mem, &legacy, 0x4000_1000), None);
        // PAE with a 2 MiB page.
        mem.write_u64(0x30_0000, 0x30_1000 | 1).unwrap();
        mem.write_u64(0x30_1000 + 8, 0x60_0000 | 1 | PS).unwrap();
        let pae = Sregs {
            cr0: CR0_PG | 1,
            cr3: 0x30_0000,
            cr4: CR4_PAE,
            ..Default::default()
        };
        assert_eq!(translate(&mem, &pae, 0x20_0042), Some(0x60_0042));
        // Page tables pointing outside RAM are "not mapped", not a crash.
        mem.write_u32(0x20_0000 + (0x101 * 4), 0xfff0_0000 | 1)
            .unwrap();
        assert_eq!(translate(&mem, &legacy, 0x4040_0000), None);
    }
}
