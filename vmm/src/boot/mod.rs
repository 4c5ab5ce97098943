//! Loading guest kernels into memory and describing the CPU state they start in.

pub mod elf;
pub mod firmware;
pub mod linux;
pub mod multiboot;
pub mod pvh;
pub mod zero_page;

use crate::memory::GuestMemory;

/// Where guest boot structures live in low memory (below the first kernel load address).
pub mod addr {
    pub const GDT: u64 = 0x500;
    pub const MULTIBOOT_INFO: u64 = 0x1000;
    pub const MULTIBOOT_MMAP: u64 = 0x1100;
    pub const MULTIBOOT_MODS: u64 = 0x1800;
    pub const MULTIBOOT_LOADER_NAME: u64 = 0x1f00;
    pub const PVH_START_INFO: u64 = 0x6000;
    pub const PVH_MEMMAP: u64 = 0x6100;
    pub const PVH_MODLIST: u64 = 0x6e00;
    pub const ZERO_PAGE: u64 = 0x7000;
    pub const BOOT_STACK: u64 = 0x8ff0;
    pub const PML4: u64 = 0x9000;
    pub const PDPT: u64 = 0xa000;
    pub const PD: u64 = 0xb000; // four pages: 0xb000..0xf000
    pub const CMDLINE: u64 = 0x2_0000;
    pub const CMDLINE_MAX: u64 = 0x1_0000;
}

/// The mode and registers a kernel is entered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryMode {
    /// 32-bit protected mode, flat segments, paging off.
    Protected32 { eax: u32, ebx: u32, esi: u32 },
    /// 64-bit long mode, identity-mapped first 4 GiB.
    Long64 { rsi: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub entry: u64,
    pub mode: EntryMode,
    /// What was loaded, for messages.
    pub kind: &'static str,
}

/// A kernel that cannot be loaded; the message says why, for the user.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Malformed(String),
    #[error("{what} at {addr:#x}+{len:#x} does not fit in guest RAM ({ram} MiB); give the guest more --memory")]
    DoesNotFit {
        what: &'static str,
        addr: u64,
        len: u64,
        ram: u64,
    },
    #[error("not a kernel fugu can boot: expected a Linux bzImage, an ELF (32- or 64-bit x86) or a Multiboot v1 kernel")]
    Unknown,
    #[error("command line is {0} bytes; the limit is {1}")]
    CmdlineTooLong(usize, usize),
}

/// Write `data` at `gpa`, with a user-facing error when it does not fit in RAM.
pub fn place(
    mem: &dyn GuestMemory,
    what: &'static str,
    gpa: u64,
    data: &[u8],
) -> Result<(), LoadError> {
    mem.write(gpa, data).map_err(|_| LoadError::DoesNotFit {
        what,
        addr: gpa,
        len: data.len() as u64,
        ram: mem.regions().iter().map(|r| r.size).sum::<u64>() >> 20,
    })
}

/// What kind of kernel `image` is, by its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    LinuxBzImage,
    Multiboot,
    /// An ELF kernel; 64-bit ones are assumed to be Linux vmlinux-style (zero page in RSI).
    Elf {
        is64: bool,
    },
    Unknown,
}

pub fn detect(image: &[u8]) -> KernelKind {
    if linux::is_bzimage(image) {
        KernelKind::LinuxBzImage
    } else if matches!(multiboot::find_header(image), Ok(Some(_))) {
        KernelKind::Multiboot
    } else if image.starts_with(b"\x7fELF") {
        KernelKind::Elf {
            is64: image.get(4) == Some(&2),
        }
    } else {
        KernelKind::Unknown
    }
}

/// Pick the loader for `image` by its contents.
pub fn load_kernel(
    mem: &dyn GuestMemory,
    image: &[u8],
    cmdline: &str,
    modules: &[(Vec<u8>, String)],
    mem_size: u64,
) -> Result<BootPlan, LoadError> {
    if linux::is_bzimage(image) {
        if modules.len() > 1 {
            return Err(LoadError::Malformed(
                "a Linux kernel takes one --initrd".into(),
            ));
        }
        let initrd = modules.first().map(|(d, _)| d.as_slice());
        return linux::load(mem, image, cmdline, initrd, mem_size, true);
    }
    if let Some(hdr) = multiboot::find_header(image)? {
        return multiboot::load(mem, image, &hdr, cmdline, modules, mem_size);
    }
    if image.starts_with(b"\x7fELF") {
        if modules.len() > 1 {
            return Err(LoadError::Malformed(
                "an ELF kernel takes at most one --initrd".into(),
            ));
        }
        let initrd = modules.first().map(|(d, _)| d.as_slice());
        return elf::load_direct(mem, image, cmdline, initrd, mem_size);
    }
    Err(LoadError::Unknown)
}

/// Write a NUL-terminated command line at [`addr::CMDLINE`].
pub fn write_cmdline(mem: &dyn GuestMemory, cmdline: &str) -> Result<u64, LoadError> {
    if cmdline.len() as u64 >= addr::CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong(
            cmdline.len(),
            addr::CMDLINE_MAX as usize - 1,
        ));
    }
    let mut b = cmdline.as_bytes().to_vec();
    b.push(0);
    place(mem, "command line", addr::CMDLINE, &b)?;
    Ok(addr::CMDLINE)
}
