//! Multiboot v1: the header search, ELF32 and a.out-kludge loading, and the information
//! structure (memory map, command line, modules) the kernel finds through EBX.

use super::{addr, place, BootPlan, EntryMode, LoadError};
use crate::bits;
use crate::memory::layout::{e820_map, E820Kind};
use crate::memory::GuestMemory;

const MAGIC: u32 = 0x1BAD_B002;
const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
const SEARCH: usize = 8192;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Flags bits 0-15 this loader understands (page-align modules, memory info).
const SUPPORTED_REQUIRED: u32 = 0b11;
const VIDEO_MODE: u32 = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub offset: usize,
    pub flags: u32,
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

fn bad(msg: impl Into<String>) -> LoadError {
    LoadError::Malformed(format!("Multiboot kernel: {}", msg.into()))
}

fn word(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Find a valid Multiboot header (magic, flags, checksum summing to zero) in the first 8 KiB.
pub fn find_header(image: &[u8]) -> Result<Option<Header>, LoadError> {
    let limit = image.len().min(SEARCH);
    let mut off = 0;
    while off + 12 <= limit {
        if word(image, off) == Some(MAGIC) {
            let flags = word(image, off + 4).unwrap_or(0);
            let sum = word(image, off + 8).unwrap_or(0);
            if MAGIC.wrapping_add(flags).wrapping_add(sum) == 0 {
                let mut h = Header {
                    offset: off,
                    flags,
                    header_addr: 0,
                    load_addr: 0,
                    load_end_addr: 0,
                    bss_end_addr: 0,
                    entry_addr: 0,
                };
                if flags & FLAG_AOUT_KLUDGE != 0 {
                    let f = |i: usize| {
                        word(image, off + 12 + 4 * i)
                            .ok_or_else(|| bad("truncated a.out kludge header"))
                    };
                    h.header_addr = f(0)?;
                    h.load_addr = f(1)?;
                    h.load_end_addr = f(2)?;
                    h.bss_end_addr = f(3)?;
                    h.entry_addr = f(4)?;
                }
                return Ok(Some(h));
            }
        }
        off += 4;
    }
    Ok(None)
}

/// Load the kernel image per its header and build the Multiboot information structure.
pub fn load(
    mem: &dyn GuestMemory,
    image: &[u8],
    h: &Header,
    cmdline: &str,
    modules: &[(Vec<u8>, String)],
    mem_size: u64,
) -> Result<BootPlan, LoadError> {
    let unknown = h.flags & 0xffff & !SUPPORTED_REQUIRED & !VIDEO_MODE;
    if unknown != 0 {
        return Err(bad(format!(
            "requires features fugu does not provide (flags {unknown:#x})"
        )));
    }
    let (entry, kernel_end) = if h.flags & FLAG_AOUT_KLUDGE != 0 {
        load_aout(mem, image, h)?
    } else {
        let elf = super::elf::parse(image)?;
        if elf.is64 {
            return Err(bad(
                "Multiboot v1 kernels are 32-bit ELF; this one is ELF64",
            ));
        }
        let end = super::elf::load_segments(mem, image, &elf)?;
        (elf.entry, end)
    };

    let cmd = super::write_cmdline(mem, cmdline)?;
    let loader = b"fugu\0";
    place(
        mem,
        "Multiboot loader name",
        addr::MULTIBOOT_LOADER_NAME,
        loader,
    )?;

    // Memory map, in the Multiboot "size-prefixed" entry format.
    let mut mmap = Vec::new();
    for e in e820_map(mem_size) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.size.to_le_bytes());
        mmap.extend_from_slice(&(if e.kind == E820Kind::Ram { 1u32 } else { 2 }).to_le_bytes());
    }
    place(mem, "Multiboot memory map", addr::MULTIBOOT_MMAP, &mmap)?;

    // Modules follow the kernel, page-aligned; their command lines live after the kernel's.
    let mut next = (kernel_end + 0xfff) & !0xfff;
    let mut strings = addr::CMDLINE + cmdline.len() as u64 + 1;
    let mut mods = Vec::new();
    if modules.len() > 64 {
        return Err(bad("at most 64 modules"));
    }
    for (data, name) in modules {
        if next + data.len() as u64 > mem_size.min(crate::memory::layout::PCI_HOLE_START) {
            return Err(LoadError::DoesNotFit {
                what: "Multiboot module",
                addr: next,
                len: data.len() as u64,
                ram: mem_size >> 20,
            });
        }
        place(mem, "Multiboot module", next, data)?;
        let mut s = name.as_bytes().to_vec();
        s.push(0);
        if strings + s.len() as u64 >= addr::CMDLINE + addr::CMDLINE_MAX {
            return Err(LoadError::CmdlineTooLong(
                // Just above addr::CMDLINE: fits a usize.
                usize::try_from(strings).unwrap_or(usize::MAX),
                const { bits::const_usize(addr::CMDLINE_MAX) },
            ));
        }
        place(mem, "module name", strings, &s)?;
        // The module ends below the PCI hole (checked above) and its name below
        // addr::CMDLINE + addr::CMDLINE_MAX: 32-bit addresses.
        for v in [
            bits::lo32(next),
            bits::lo32(next + data.len() as u64),
            bits::lo32(strings),
            0,
        ] {
            mods.extend_from_slice(&v.to_le_bytes());
        }
        strings += s.len() as u64;
        next = (next + data.len() as u64 + 0xfff) & !0xfff;
    }
    place(mem, "Multiboot module list", addr::MULTIBOOT_MODS, &mods)?;

    let mem_lower_kb = const { bits::const_u32(crate::memory::layout::EBDA_START / 1024) };
    // At most the PCI hole's start in KiB: fits.
    let mem_upper_kb = bits::lo32(
        mem_size
            .min(crate::memory::layout::PCI_HOLE_START)
            .saturating_sub(1 << 20)
            / 1024,
    );
    let mut info = [0u32; 22];
    info[0] = 1 | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9); // mem, cmdline, mods, mmap, loader name
    info[1] = mem_lower_kb;
    info[2] = mem_upper_kb;
    // The command line is at addr::CMDLINE, below 1 MiB; at most 64 modules (checked above);
    // the memory map is a few 24-byte entries.
    info[4] = bits::lo32(cmd);
    info[5] = bits::lo32(modules.len() as u64);
    info[6] = const { bits::const_u32(addr::MULTIBOOT_MODS) };
    info[11] = bits::lo32(mmap.len() as u64);
    info[12] = const { bits::const_u32(addr::MULTIBOOT_MMAP) };
    info[16] = const { bits::const_u32(addr::MULTIBOOT_LOADER_NAME) };
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_le_bytes()).collect();
    place(mem, "Multiboot information", addr::MULTIBOOT_INFO, &bytes)?;

    Ok(BootPlan {
        entry,
        mode: EntryMode::Protected32 {
            eax: BOOTLOADER_MAGIC,
            ebx: const { bits::const_u32(addr::MULTIBOOT_INFO) },
            esi: 0,
        },
        kind: if h.flags & FLAG_AOUT_KLUDGE != 0 {
            "Multiboot (a.out kludge)"
        } else {
            "Multiboot (ELF32)"
        },
    })
}

/// The a.out kludge: the header says which file bytes go where.
fn load_aout(mem: &dyn GuestMemory, image: &[u8], h: &Header) -> Result<(u64, u64), LoadError> {
    if h.load_addr > h.header_addr {
        return Err(bad("load_addr is above header_addr"));
    }
    // The file offset of load_addr follows from where the header sits in the file.
    let start = (h.offset as u64)
        .checked_sub((h.header_addr - h.load_addr) as u64)
        // At most h.offset, a usize: the conversion cannot fail.
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| bad("load_addr precedes the start of the file"))?;
    let end = if h.load_end_addr == 0 {
        image.len()
    } else {
        if h.load_end_addr < h.load_addr {
            return Err(bad("load_end_addr is below load_addr"));
        }
        start
            .checked_add((h.load_end_addr - h.load_addr) as usize)
            .ok_or_else(|| bad("load_end_addr is beyond what this host can address"))?
    };
    let data = image.get(start..end).ok_or_else(|| {
        bad(format!(
            "image ends at {:#x} but the header loads up to {end:#x}",
            image.len()
        ))
    })?;
    place(mem, "kernel image", h.load_addr as u64, data)?;
    let mut high = h.load_addr as u64 + data.len() as u64;
    if h.bss_end_addr != 0 {
        if (h.bss_end_addr as u64) < high {
            return Err(bad("bss_end_addr is below the end of the loaded image"));
        }
        // The BSS size is the file's word: check that it fits guest RAM before allocating
        // its zeroes (up to 4 GiB of host memory otherwise).
        let len = h.bss_end_addr as u64 - high;
        if !mem.contains(high, len) {
            return Err(LoadError::DoesNotFit {
                what: "kernel BSS",
                addr: high,
                len,
                ram: mem.end() >> 20,
            });
        }
        // Fits guest RAM (checked above), so a usize on every host (checked all the same).
        let zeros = vec![
            0u8;
            usize::try_from(len).map_err(|_| LoadError::DoesNotFit {
                what: "kernel BSS",
                addr: high,
                len,
                ram: mem.end() >> 20,
            })?
        ];
        place(mem, "kernel BSS", high, &zeros)?;
        high = h.bss_end_addr as u64;
    }
    Ok((h.entry_addr as u64, high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::portable::MmapMemory;

    fn aout(code: &[u8]) -> Vec<u8> {
        // Header at file offset 0 loaded at 1 MiB; entry right after the 32-byte header.
        let base = 0x10_0000u32;
        let flags = FLAG_AOUT_KLUDGE | 0b10;
        let mut b = Vec::new();
        for w in [
            MAGIC,
            flags,
            0u32.wrapping_sub(MAGIC).wrapping_sub(flags),
            base,
            base,
            0,
            base + 0x1000,
            base + 32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(code);
        b
    }

    #[test]
    fn loads_aout_kludge_and_writes_info() {
        let mem = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        let img = aout(&[0xf4]);
        let h = find_header(&img).unwrap().unwrap();
        let plan = load(
            &mem,
            &img,
            &h,
            "hello world",
            &[(b"MOD".to_vec(), "mod1 arg".into())],
            4 << 20,
        )
        .unwrap();
        assert_eq!(plan.entry, 0x10_0020);
        assert_eq!(
            plan.mode,
            EntryMode::Protected32 {
                eax: BOOTLOADER_MAGIC,
                ebx: 0x1000,
                esi: 0
            }
        );
        assert_eq!(mem.read_u8(0x10_0020).unwrap(), 0xf4);
        let info = addr::MULTIBOOT_INFO;
        assert_eq!(
            mem.read_u32(info + 8).unwrap(),
            3 * 1024,
            "mem_upper in KiB above 1 MiB"
        );
        let cmd = mem.read_u32(info + 16).unwrap() as u64;
        let mut s = [0u8; 12];
        mem.read(cmd, &mut s).unwrap();
        assert_eq!(&s, b"hello world\0");
        assert_eq!(mem.read_u32(info + 20).unwrap(), 1);
        let m = mem.read_u32(info + 24).unwrap() as u64;
        let start = mem.read_u32(m).unwrap() as u64;
        assert_eq!(start % 4096, 0);
        assert!(start >= 0x10_1000, "module placed after BSS");
        assert_eq!(mem.read_u32(m + 4).unwrap() as u64, start + 3);
    }

    #[test]
    fn ram_above_the_pci_hole_is_in_the_memory_map() {
        let mem = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        let img = aout(&[0xf4]);
        let h = find_header(&img).unwrap().unwrap();
        let size = 5u64 << 30;
        load(&mem, &img, &h, "", &[], size).unwrap();
        let info = addr::MULTIBOOT_INFO;
        assert_eq!(
            u64::from(mem.read_u32(info + 8).unwrap()),
            (0xC000_0000 - (1 << 20)) / 1024,
            "mem_upper: the RAM from 1 MiB to the PCI hole"
        );
        let len = u64::from(mem.read_u32(info + 44).unwrap());
        let at = u64::from(mem.read_u32(info + 48).unwrap());
        let mut ram = Vec::new();
        let mut off = 0;
        while off < len {
            let size_field = u64::from(mem.read_u32(at + off).unwrap());
            let mut e = [0u8; 20];
            mem.read(at + off + 4, &mut e).unwrap();
            let base = u64::from_le_bytes(e[0..8].try_into().unwrap());
            let length = u64::from_le_bytes(e[8..16].try_into().unwrap());
            if u32::from_le_bytes(e[16..20].try_into().unwrap()) == 1 {
                ram.push((base, length));
            }
            off += size_field + 4;
        }
        assert!(ram.contains(&(1 << 32, size - 0xC000_0000)), "{ram:x?}");
        let total: u64 = ram.iter().map(|r| r.1).sum();
        assert!(total <= size && total > size - (2 << 20), "{ram:x?}");
    }

    #[test]
    fn bad_checksums_and_truncations_are_not_headers_or_errors() {
        let mut img = aout(&[0xf4]);
        img[8] ^= 1;
        assert_eq!(find_header(&img).unwrap(), None);
        let img = aout(&[0xf4]);
        assert!(
            find_header(&img[..20]).is_err(),
            "a truncated kludge header is an error"
        );
        let mut img = aout(&[0xf4]);
        img[20..24].copy_from_slice(&0x20_0000u32.to_le_bytes()); // load_end beyond the file
        let h = find_header(&img).unwrap().unwrap();
        let mem = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        assert!(load(&mem, &img, &h, "", &[], 4 << 20).is_err());
    }

    /// A BSS end near 4 GiB in a small guest: refused by its size before its zeroes are
    /// allocated (they were allocated first: up to 4 GiB of host memory, more than an i686
    /// fugu can address). Found reading the loader for the boot_multiboot fuzz target, whose
    /// seeds now hold this input (libFuzzer without a sanitizer cannot see allocations).
    #[test]
    fn a_bss_beyond_guest_ram_is_refused_before_it_is_allocated() {
        let mem = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        let mut img = aout(&[0xf4]);
        img[24..28].copy_from_slice(&0xffff_f000u32.to_le_bytes()); // bss_end_addr
        let h = find_header(&img).unwrap().unwrap();
        assert!(matches!(
            load(&mem, &img, &h, "", &[], 4 << 20),
            Err(LoadError::DoesNotFit {
                what: "kernel BSS",
                ..
            })
        ));
    }

    #[test]
    fn modules_that_do_not_fit_are_refused() {
        let mem = MmapMemory::new(&[(0, 2 << 20)]).unwrap();
        let img = aout(&[0xf4]);
        let h = find_header(&img).unwrap().unwrap();
        let big = vec![0u8; 2 << 20];
        assert!(matches!(
            load(&mem, &img, &h, "", &[(big, "m".into())], 2 << 20),
            Err(LoadError::DoesNotFit { .. })
        ));
    }
}
