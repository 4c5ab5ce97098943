//! A bounds-checked ELF reader for x86 kernels (ELF32 i386, ELF64 x86-64): program headers
//! only, which is all a loader needs.

use super::{addr, place, BootPlan, EntryMode, LoadError};
use crate::bits;
use crate::memory::GuestMemory;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// XEN_ELFNOTE_PHYS32_ENTRY: the PVH 32-bit entry point, in a note owned by "Xen".
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub is64: bool,
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// The PVH entry point, when the kernel has one.
    pub pvh_entry: Option<u64>,
}

fn bad(msg: impl Into<String>) -> LoadError {
    LoadError::Malformed(format!("ELF kernel: {}", msg.into()))
}

fn rd<const N: usize>(b: &[u8], off: u64) -> Result<[u8; N], LoadError> {
    let off = usize::try_from(off).map_err(|_| bad("offset out of range"))?;
    b.get(off..off.checked_add(N).ok_or_else(|| bad("offset overflow"))?)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            bad(format!(
                "truncated: needs bytes {off:#x}..{:#x}, file has {:#x}",
                off + N,
                b.len()
            ))
        })
}
fn u16at(b: &[u8], off: u64) -> Result<u16, LoadError> {
    rd::<2>(b, off).map(u16::from_le_bytes)
}
fn u32at(b: &[u8], off: u64) -> Result<u32, LoadError> {
    rd::<4>(b, off).map(u32::from_le_bytes)
}
fn u64at(b: &[u8], off: u64) -> Result<u64, LoadError> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}

/// Parse the ELF header and PT_LOAD program headers, checking every offset against the file.
pub fn parse(b: &[u8]) -> Result<Elf, LoadError> {
    if !b.starts_with(b"\x7fELF") {
        return Err(bad("no ELF magic"));
    }
    let class = rd::<1>(b, 4)?[0];
    if rd::<1>(b, 5)?[0] != 1 {
        return Err(bad("not little-endian"));
    }
    let machine = u16at(b, 18)?;
    let is64 = match (class, machine) {
        (1, 3) => false, // ELFCLASS32, EM_386
        (2, 62) => true, // ELFCLASS64, EM_X86_64
        _ => {
            return Err(bad(format!(
                "class {class} machine {machine} is not i386 or x86-64"
            )))
        }
    };
    let (entry, phoff, phentsize, phnum) = if is64 {
        (u64at(b, 24)?, u64at(b, 32)?, u16at(b, 54)?, u16at(b, 56)?)
    } else {
        (
            u32at(b, 24)? as u64,
            u32at(b, 28)? as u64,
            u16at(b, 42)?,
            u16at(b, 44)?,
        )
    };
    let min = if is64 { 56 } else { 32 };
    if (phentsize as usize) < min {
        return Err(bad(format!("program header size {phentsize} is too small")));
    }
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for i in 0..phnum as u64 {
        let ph = phoff
            .checked_add(i * phentsize as u64)
            .ok_or_else(|| bad("program header offset overflow"))?;
        let p_type = u32at(b, ph)?;
        if p_type == PT_NOTE {
            let (off, size) = if is64 {
                (u64at(b, ph + 8)?, u64at(b, ph + 32)?)
            } else {
                (u32at(b, ph + 4)? as u64, u32at(b, ph + 16)? as u64)
            };
            if pvh_entry.is_none() {
                pvh_entry = find_pvh_note(b, off, size)?;
            }
            continue;
        }
        if p_type != PT_LOAD {
            continue;
        }
        let s = if is64 {
            Segment {
                offset: u64at(b, ph + 8)?,
                paddr: u64at(b, ph + 24)?,
                filesz: u64at(b, ph + 32)?,
                memsz: u64at(b, ph + 40)?,
            }
        } else {
            Segment {
                offset: u32at(b, ph + 4)? as u64,
                paddr: u32at(b, ph + 12)? as u64,
                filesz: u32at(b, ph + 16)? as u64,
                memsz: u32at(b, ph + 20)? as u64,
            }
        };
        if s.filesz > s.memsz {
            return Err(bad(format!(
                "segment {i}: file size {:#x} exceeds memory size {:#x}",
                s.filesz, s.memsz
            )));
        }
        let end = s
            .offset
            .checked_add(s.filesz)
            .ok_or_else(|| bad("segment size overflow"))?;
        if end > b.len() as u64 {
            return Err(bad(format!(
                "segment {i} ends at {end:#x}, past the end of the file ({:#x})",
                b.len()
            )));
        }
        segments.push(s);
    }
    if segments.is_empty() {
        return Err(bad("no loadable segments"));
    }
    Ok(Elf {
        is64,
        entry,
        segments,
        pvh_entry,
    })
}

/// Walk the notes in `[off, off+size)` for Xen's PHYS32_ENTRY; every length is checked.
fn find_pvh_note(b: &[u8], off: u64, size: u64) -> Result<Option<u64>, LoadError> {
    let end = off
        .checked_add(size)
        .filter(|e| *e <= b.len() as u64)
        .ok_or_else(|| bad("PT_NOTE segment lies outside the file"))?;
    let align4 = |v: u64| (v + 3) & !3;
    let mut at = off;
    while at + 12 <= end {
        let namesz = u32at(b, at)? as u64;
        let descsz = u32at(b, at + 4)? as u64;
        let ntype = u32at(b, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at + align4(namesz);
        let next = desc_at + align4(descsz);
        if next > end {
            return Err(bad("a note runs past the end of its segment"));
        }
        // Within `end`, itself within `b`: fits a usize (checked all the same).
        let name = usize::try_from(name_at)
            .ok()
            .zip(usize::try_from(name_at + namesz).ok())
            .and_then(|(s, e)| b.get(s..e))
            .ok_or_else(|| bad("a note runs past the end of the file"))?;
        if ntype == XEN_ELFNOTE_PHYS32_ENTRY && name.strip_suffix(b"\0").unwrap_or(name) == b"Xen" {
            let entry = match descsz {
                4 => u32at(b, desc_at)? as u64,
                8 => u64at(b, desc_at)?,
                n => return Err(bad(format!("PVH entry note has a {n}-byte value"))),
            };
            return Ok(Some(entry));
        }
        at = next;
    }
    Ok(None)
}

/// Copy every PT_LOAD segment to its physical address and zero its BSS.
pub fn load_segments(mem: &dyn GuestMemory, b: &[u8], elf: &Elf) -> Result<u64, LoadError> {
    let mut high = 0;
    for s in &elf.segments {
        // Segment bounds were checked in parse(); memsz is guest-chosen, so check it fits RAM.
        if s.paddr < 0x1000 || !mem.contains(s.paddr, s.memsz) {
            return Err(LoadError::DoesNotFit {
                what: "ELF segment",
                addr: s.paddr,
                len: s.memsz,
                ram: mem.end() >> 20,
            });
        }
        // Within `b` (checked in parse()): fits a usize (checked all the same).
        let data = usize::try_from(s.offset)
            .ok()
            .zip(usize::try_from(s.offset + s.filesz).ok())
            .and_then(|(from, to)| b.get(from..to))
            .ok_or_else(|| bad("a segment runs past the end of the file"))?;
        place(mem, "ELF segment", s.paddr, data)?;
        // Fits guest RAM (checked above), so a usize on every host (checked all the same).
        let bss = usize::try_from(s.memsz - s.filesz).map_err(|_| LoadError::DoesNotFit {
            what: "ELF BSS",
            addr: s.paddr + s.filesz,
            len: s.memsz - s.filesz,
            ram: mem.end() >> 20,
        })?;
        let zeros = vec![0u8; bss];
        place(mem, "ELF BSS", s.paddr + s.filesz, &zeros)?;
        high = high.max(s.paddr + s.memsz);
    }
    Ok(high)
}

/// Boot an ELF kernel directly: 32-bit ones in protected mode, 64-bit ones in long mode with
/// RSI pointing at a Linux zero page (e820, command line), as a vmlinux expects.
pub fn load_direct(
    mem: &dyn GuestMemory,
    b: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
    mem_size: u64,
) -> Result<BootPlan, LoadError> {
    let elf = parse(b)?;
    let kernel_end = load_segments(mem, b, &elf)?;
    let cmd = super::write_cmdline(mem, cmdline)?;
    if let Some(entry) = elf.pvh_entry {
        return super::pvh::boot(mem, entry, cmd, initrd, kernel_end, mem_size);
    }
    if initrd.is_some() {
        return Err(LoadError::Malformed(
            "an initrd needs a Multiboot kernel, a Linux bzImage or an ELF kernel with a PVH entry"
                .into(),
        ));
    }
    if elf.is64 {
        super::zero_page::write(
            mem,
            &super::zero_page::Params {
                setup_header: None,
                cmdline_addr: cmd,
                cmdline_len: cmdline.len(),
                initrd: None,
                kernel_load: elf.segments.iter().map(|s| s.paddr).min().unwrap_or(0),
                mem_size,
            },
        )?;
        Ok(BootPlan {
            entry: elf.entry,
            mode: EntryMode::Long64 {
                rsi: addr::ZERO_PAGE,
            },
            kind: "ELF64",
        })
    } else {
        Ok(BootPlan {
            entry: elf.entry,
            mode: EntryMode::Protected32 {
                eax: 0,
                // The command line is at addr::CMDLINE, below 1 MiB.
                ebx: bits::lo32(cmd),
                esi: const { bits::const_u32(addr::ZERO_PAGE) },
            },
            kind: "ELF32",
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF32 with one PT_LOAD segment of `code` at `paddr`.
    pub fn elf32(paddr: u32, code: &[u8], memsz: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x54];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1;
        b[5] = 1;
        b[6] = 1;
        b[16] = 2;
        b[18..20].copy_from_slice(&3u16.to_le_bytes());
        b[24..28].copy_from_slice(&paddr.to_le_bytes());
        b[28..32].copy_from_slice(&0x34u32.to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x34;
        b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        b[ph + 4..ph + 8].copy_from_slice(&0x54u32.to_le_bytes());
        b[ph + 8..ph + 12].copy_from_slice(&paddr.to_le_bytes());
        b[ph + 12..ph + 16].copy_from_slice(&paddr.to_le_bytes());
        b[ph + 16..ph + 20].copy_from_slice(&u32::try_from(code.len()).unwrap().to_le_bytes());
        b[ph + 20..ph + 24].copy_from_slice(&memsz.to_le_bytes());
        b.extend_from_slice(code);
        b
    }

    #[test]
    fn parses_a_minimal_elf32() {
        let b = elf32(0x100000, &[0xf4], 0x1000);
        let e = parse(&b).unwrap();
        assert!(!e.is64);
        assert_eq!(e.entry, 0x100000);
        assert_eq!(
            e.segments,
            vec![Segment {
                offset: 0x54,
                paddr: 0x100000,
                filesz: 1,
                memsz: 0x1000
            }]
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = elf32(0x100000, &[0x90; 16], 0x1000);
        for n in 0..b.len() {
            assert!(parse(&b[..n]).is_err(), "truncated at {n} was accepted");
        }
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let mut b = elf32(0x100000, &[0x90; 4], 2);
        assert!(matches!(parse(&b), Err(LoadError::Malformed(m)) if m.contains("exceeds")));
        b = elf32(0x100000, &[0x90; 4], 0x10);
        b[0x34 + 4..0x34 + 8].copy_from_slice(&u32::MAX.to_le_bytes()); // p_offset
        assert!(parse(&b).is_err());
        b = elf32(0x100000, &[0x90; 4], 0x10);
        b[28..32].copy_from_slice(&u32::MAX.to_le_bytes()); // e_phoff
        assert!(parse(&b).is_err());
        b = elf32(0x100000, &[0x90; 4], 0x10);
        b[18] = 40; // EM_ARM
        assert!(parse(&b).is_err());
    }

    #[test]
    fn segments_outside_ram_do_not_fit() {
        let mem = crate::memory::portable::MmapMemory::new(&[(0, 2 << 20)]).unwrap();
        let b = elf32(0x1ff000, &[0x90; 4], 0x2000);
        let e = parse(&b).unwrap();
        assert!(matches!(
            load_segments(&mem, &b, &e),
            Err(LoadError::DoesNotFit { .. })
        ));
        let b = elf32(0x100000, &[0x90; 4], 0x2000);
        let e = parse(&b).unwrap();
        assert_eq!(load_segments(&mem, &b, &e).unwrap(), 0x102000);
    }
}
