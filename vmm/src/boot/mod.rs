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

/// A Multiboot command line: the kernel's name, then the arguments (either may be empty).
pub fn multiboot_cmdline(name: &str, args: &str) -> String {
    match (name.is_empty(), args.is_empty()) {
        (_, true) => name.to_string(),
        (true, false) => args.to_string(),
        (false, false) => format!("{name} {args}"),
    }
}

/// Pick the loader for `image` by its contents. `name` is the kernel's path as the user gave
/// it: a Multiboot kernel gets it as the first word of its command line (argv[0]), as QEMU's
/// `-kernel` and GRUB legacy pass it (GRUB 2 passes only the arguments); test kernels written
/// for QEMU parse their arguments after it.
pub fn load_kernel(
    mem: &dyn GuestMemory,
    image: &[u8],
    name: &str,
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
        let line = multiboot_cmdline(name, cmdline);
        return multiboot::load(mem, image, &hdr, &line, modules, mem_size);
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

/// Why a kernel, initrd or module file was refused (`what` names which one).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `len` is the size in words: a number, or "more than N" for a pipe read up to `limit`.
    #[error(
        "{what} {} is {len} bytes, more than guest RAM ({} MiB{}) can hold; give the guest \
         more --memory, or check that this is the right file",
        path.display(),
        limit >> 20,
        if *what == "kernel" { "" } else { " less what is loaded before it" }
    )]
    TooBig {
        what: &'static str,
        path: std::path::PathBuf,
        len: String,
        limit: u64,
    },
    #[error("{what} {} is {kind}: give the path of a {what} file", path.display())]
    NotAFile {
        what: &'static str,
        path: std::path::PathBuf,
        kind: &'static str,
    },
}

/// Read a kernel, initrd or module file of at most `limit` bytes (what guest RAM can hold).
/// The size of a regular file is checked before anything is read, so that a huge file is
/// refused at once instead of filling host memory first; devices (`--kernel /dev/zero`),
/// directories and sockets are refused; a pipe is read, but never past the limit.
pub fn read_input(
    what: &'static str,
    path: &std::path::Path,
    limit: u64,
) -> Result<Vec<u8>, InputError> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let cannot = |source: std::io::Error| InputError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let too_big = |len: String| InputError::TooBig {
        what,
        path: path.to_path_buf(),
        len,
        limit,
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let ty = meta.file_type();
    if ty.is_file() {
        if meta.len() > limit {
            return Err(too_big(meta.len().to_string()));
        }
    } else if !ty.is_fifo() {
        let kind = if ty.is_dir() {
            "a directory"
        } else if ty.is_char_device() {
            "a character device"
        } else if ty.is_block_device() {
            "a block device"
        } else {
            "not a regular file"
        };
        return Err(InputError::NotAFile {
            what,
            path: path.to_path_buf(),
            kind,
        });
    }
    let mut data = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() as u64 > limit {
        return Err(too_big(format!("more than {limit}")));
    }
    Ok(data)
}

/// Write a NUL-terminated command line at [`addr::CMDLINE`].
pub fn write_cmdline(mem: &dyn GuestMemory, cmdline: &str) -> Result<u64, LoadError> {
    if cmdline.len() as u64 >= addr::CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong(
            cmdline.len(),
            const { crate::bits::const_usize(addr::CMDLINE_MAX) } - 1,
        ));
    }
    let mut b = cmdline.as_bytes().to_vec();
    b.push(0);
    place(mem, "command line", addr::CMDLINE, &b)?;
    Ok(addr::CMDLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17 defect 6: kernels and initrds were read whole, without a limit: a device
    /// such as /dev/zero ate host memory, a huge initrd was read before the fit check.
    #[test]
    fn multiboot_command_lines_start_with_the_kernels_name() {
        assert_eq!(multiboot_cmdline("/k/t.elf", "a b"), "/k/t.elf a b");
        assert_eq!(multiboot_cmdline("/k/t.elf", ""), "/k/t.elf");
        assert_eq!(multiboot_cmdline("", "a b"), "a b");
        assert_eq!(multiboot_cmdline("", ""), "");
    }

    #[test]
    fn inputs_are_size_checked_before_they_are_read() {
        let dir = std::env::temp_dir().join(format!("fugu-read-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, [7u8; 100]).unwrap();
        assert_eq!(read_input("kernel", &small, 100).unwrap(), [7u8; 100]);
        let e = read_input("kernel", &small, 99).unwrap_err().to_string();
        assert!(e.contains("100 bytes") && e.contains("--memory"), "{e}");
        // A sparse 1 TiB file: refused by its size, not read.
        let huge = dir.join("huge");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let e = read_input("initrd", &huge, 256 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1099511627776 bytes"), "{e}");
        for (p, kind) in [("/dev/zero", "character device"), ("/", "directory")] {
            let e = read_input("kernel", std::path::Path::new(p), 1 << 30)
                .unwrap_err()
                .to_string();
            assert!(e.contains(kind), "{p}: {e}");
        }
        // A pipe has no size to check first: it is read up to the limit, not further.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = std::fs::File::create(&fifo).and_then(|mut f| f.write_all(&[1u8; 5000]));
            })
        };
        let e = read_input("initrd", &fifo, 1000).unwrap_err().to_string();
        assert!(e.contains("more than 1000 bytes"), "{e}");
        writer.join().unwrap();
        let e = read_input("kernel", &dir.join("missing"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read kernel"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
