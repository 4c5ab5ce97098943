//! The guest-physical address map of a fugu PC: where RAM, the PCI hole and the firmware go.

/// Start of the 32-bit PCI MMIO hole; RAM below 4 GiB ends here at the latest.
pub const PCI_HOLE_START: u64 = 0xC000_0000;
/// RAM above the hole starts at 4 GiB.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// Conventional memory ends here (EBDA and the VGA/BIOS area follow).
pub const EBDA_START: u64 = 0x9_FC00;
/// The legacy BIOS area (0xE0000: the ACPI tables of a direct boot; 0xF0000: the MP table)
/// that is not RAM for the OS.
pub const BIOS_AREA_START: u64 = 0xE_0000;
/// Extended memory starts at 1 MiB.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// The e820 entry types fugu reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// RAM ranges (gpa, size) for `mem_size` bytes of guest RAM, split around the PCI hole.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= PCI_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, PCI_HOLE_START),
            (HIGH_RAM_START, mem_size - PCI_HOLE_START),
        ]
    }
}

/// The e820 map a guest sees for `mem_size` bytes of RAM.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: 0xA_0000 - EBDA_START,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: BIOS_AREA_START,
            size: HIGH_MEMORY_START - BIOS_AREA_START,
            kind: E820Kind::Reserved,
        },
    ];
    let low_end = mem_size.min(PCI_HOLE_START);
    if low_end > HIGH_MEMORY_START {
        map.push(E820Entry {
            addr: HIGH_MEMORY_START,
            size: low_end - HIGH_MEMORY_START,
            kind: E820Kind::Ram,
        });
    }
    if mem_size > PCI_HOLE_START {
        map.push(E820Entry {
            addr: HIGH_RAM_START,
            size: mem_size - PCI_HOLE_START,
            kind: E820Kind::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_range_and_no_high_ram() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        let m = e820_map(256 << 20);
        assert_eq!(m.last().unwrap().addr + m.last().unwrap().size, 256 << 20);
        assert!(m.iter().all(|e| e.addr + e.size <= 256 << 20));
    }

    #[test]
    fn large_guest_is_split_around_the_pci_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![
                (0, PCI_HOLE_START),
                (HIGH_RAM_START, (4 << 30) - PCI_HOLE_START)
            ]
        );
        let total: u64 = e820_map(4 << 30)
            .iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum();
        // All RAM but the EBDA-to-1MiB window is reported usable.
        assert_eq!(total, (4 << 30) - (HIGH_MEMORY_START - EBDA_START));
    }
}
