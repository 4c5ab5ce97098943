//! The Linux/x86 boot protocol for bzImage kernels: parse the setup header, load the
//! protected-mode kernel at 1 MiB (with linux-loader on x86_64 hosts, the in-house loader
//! elsewhere — both are tested against each other), place the initrd, fill the zero page and
//! choose the entry: the 64-bit one for kernels that have it, else code32_start.

use super::{addr, place, zero_page, BootPlan, EntryMode, LoadError};
use crate::memory::layout::PCI_HOLE_START;
use crate::memory::GuestMemory;

const HDRS: &[u8; 4] = b"HdrS";
const LOADED_HIGH: u8 = 0x01;
const XLF_KERNEL_64: u16 = 0x01;
/// Where the protected-mode kernel goes (the protocol's default code32_start).
pub const KERNEL_LOAD: u64 = 0x10_0000;

/// The fields of a bzImage's setup header that the loader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzImage {
    pub version: u16,
    pub setup_size: usize,
    pub loadflags: u8,
    pub initrd_addr_max: u32,
    pub xloadflags: u16,
    pub cmdline_size: u32,
    /// The raw setup header (file bytes 0x1f1 up to its end).
    pub header: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> LoadError {
    LoadError::Malformed(format!("bzImage: {}", msg.into()))
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Whether `image` carries a Linux setup header.
pub fn is_bzimage(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(HDRS)
}

/// Parse and check the setup header.
pub fn parse(image: &[u8]) -> Result<BzImage, LoadError> {
    if image.len() < 0x264 {
        return Err(bad(format!(
            "{} bytes is too short for a setup header",
            image.len()
        )));
    }
    if !is_bzimage(image) {
        return Err(bad("no HdrS signature"));
    }
    let version = le16(image, 0x206);
    let loadflags = image[zero_page::LOADFLAGS];
    if version < 0x0206 {
        return Err(bad(format!(
            "boot protocol {}.{:02} is older than 2.06",
            version >> 8,
            version & 0xff
        )));
    }
    if loadflags & LOADED_HIGH == 0 {
        return Err(bad("zImage (not loaded high) kernels are not supported"));
    }
    let sects = match image[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let setup_size = (sects + 1) * 512;
    if setup_size >= image.len() {
        return Err(bad(format!(
            "setup ({setup_size} bytes) covers the whole {}-byte file",
            image.len()
        )));
    }
    // syssize (protocol 2.04+) is the protected-mode kernel's length in 16-byte units. A
    // file shorter than that was cut short (a partial copy or download): booting it would
    // run into zeroes or garbage and look like a guest crash, or spin forever.
    let syssize = le32(image, 0x1f4) as u64;
    if syssize == 0 {
        return Err(bad(
            "the setup header declares no protected-mode kernel (syssize is 0)",
        ));
    }
    let payload = (image.len() - setup_size) as u64;
    if payload < syssize * 16 {
        return Err(bad(format!(
            "the file is truncated: its header declares a {}-byte kernel after the {setup_size}-byte setup, but only {payload} bytes follow; copy or download the kernel again",
            syssize * 16
        )));
    }
    let header_end = (0x202 + image[0x201] as usize)
        .clamp(0x264, 0x290)
        .min(image.len());
    Ok(BzImage {
        version,
        setup_size,
        loadflags,
        initrd_addr_max: le32(image, 0x22c),
        xloadflags: if version >= 0x020c {
            le16(image, 0x236)
        } else {
            0
        },
        cmdline_size: le32(image, zero_page::CMDLINE_SIZE),
        header: image[zero_page::SETUP_HEADER_START..header_end].to_vec(),
    })
}

/// Load the protected-mode kernel with the in-house loader; returns its end address.
pub fn load_kernel_inhouse(
    mem: &dyn GuestMemory,
    image: &[u8],
    bz: &BzImage,
) -> Result<u64, LoadError> {
    let pm = &image[bz.setup_size..];
    place(mem, "kernel", KERNEL_LOAD, pm)?;
    Ok(KERNEL_LOAD + pm.len() as u64)
}

/// Load the protected-mode kernel with rust-vmm's linux-loader (x86_64 hosts, vm-memory).
#[cfg(target_arch = "x86_64")]
pub fn load_kernel_linux_loader(
    gm: &vm_memory::GuestMemoryMmap<()>,
    image: &[u8],
) -> Result<u64, LoadError> {
    use linux_loader::loader::{bzimage::BzImage as LlBzImage, KernelLoader};
    let mut cursor = std::io::Cursor::new(image.to_vec());
    let r = LlBzImage::load(
        gm,
        Some(vm_memory::GuestAddress(KERNEL_LOAD)),
        &mut cursor,
        None,
    )
    .map_err(|e| bad(format!("linux-loader: {e}")))?;
    Ok(r.kernel_end)
}

/// Load a bzImage, its initrd and the zero page; choose the entry point.
pub fn load(
    mem: &dyn GuestMemory,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
    mem_size: u64,
    allow_64bit_entry: bool,
) -> Result<BootPlan, LoadError> {
    let bz = parse(image)?;
    // cmdline_size is the longest command line without its terminating NUL (boot protocol);
    // a kernel may declare 0 (no command line at all), so no arithmetic on it here.
    if cmdline.len() as u64 > u64::from(bz.cmdline_size) {
        return Err(LoadError::CmdlineTooLong(
            cmdline.len(),
            bz.cmdline_size as usize,
        ));
    }
    #[cfg(target_arch = "x86_64")]
    let kernel_end = match mem.as_vm_memory() {
        Some(gm) => load_kernel_linux_loader(gm, image)?,
        None => load_kernel_inhouse(mem, image, &bz)?,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let kernel_end = load_kernel_inhouse(mem, image, &bz)?;
    let cmd = super::write_cmdline(mem, cmdline)?;

    let initrd_at = match initrd {
        None => None,
        Some(data) => {
            let ceiling = (bz.initrd_addr_max as u64 + 1)
                .min(mem_size)
                .min(PCI_HOLE_START);
            let len = data.len() as u64;
            let start = ceiling
                .checked_sub(len)
                .map(|a| a & !0xfff)
                .filter(|a| *a >= (kernel_end + 0xfff) & !0xfff);
            let Some(start) = start else {
                return Err(LoadError::DoesNotFit {
                    what: "initrd",
                    addr: kernel_end,
                    len,
                    ram: mem_size >> 20,
                });
            };
            place(mem, "initrd", start, data)?;
            Some((start, len))
        }
    };
    zero_page::write(
        mem,
        &zero_page::Params {
            setup_header: Some(&bz.header),
            cmdline_addr: cmd,
            cmdline_len: cmdline.len(),
            initrd: initrd_at,
            kernel_load: KERNEL_LOAD,
            mem_size,
        },
    )?;
    if allow_64bit_entry && bz.xloadflags & XLF_KERNEL_64 != 0 {
        Ok(BootPlan {
            entry: KERNEL_LOAD + 0x200,
            mode: EntryMode::Long64 {
                rsi: addr::ZERO_PAGE,
            },
            kind: "Linux bzImage (64-bit entry)",
        })
    } else {
        Ok(BootPlan {
            entry: KERNEL_LOAD,
            mode: EntryMode::Protected32 {
                eax: 0,
                ebx: 0,
                esi: const { crate::bits::const_u32(addr::ZERO_PAGE) },
            },
            kind: "Linux bzImage (32-bit entry)",
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::portable::MmapMemory;

    /// A synthetic bzImage: a 5-sector setup with a 2.15 header, then `payload`.
    pub fn bzimage(payload: &[u8], xloadflags: u16) -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512];
        b[0x1f1] = 4; // setup_sects
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x201] = 0x6a; // header ends at 0x26c
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        b[0x1f4..0x1f8]
            .copy_from_slice(&(u32::try_from(payload.len()).unwrap() / 16).to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn loads_kernel_initrd_and_zero_page() {
        let mem = MmapMemory::new(&[(0, 64 << 20)]).unwrap();
        let img = bzimage(&[0xf4; 3000], XLF_KERNEL_64);
        let plan = load(
            &mem,
            &img,
            "console=ttyS0",
            Some(&[7u8; 5000]),
            64 << 20,
            true,
        )
        .unwrap();
        assert_eq!(plan.entry, 0x10_0200);
        assert_eq!(
            plan.mode,
            EntryMode::Long64 {
                rsi: addr::ZERO_PAGE
            }
        );
        assert_eq!(mem.read_u8(KERNEL_LOAD).unwrap(), 0xf4);
        let zp = addr::ZERO_PAGE;
        assert_eq!(mem.read_u8(zp + 0x210).unwrap(), 0xff, "type_of_loader");
        assert_eq!(mem.read_u32(zp + 0x228).unwrap() as u64, addr::CMDLINE);
        let rd = mem.read_u32(zp + 0x218).unwrap() as u64;
        assert_eq!(mem.read_u32(zp + 0x21c).unwrap(), 5000);
        assert_eq!(rd % 4096, 0);
        assert!(rd + 5000 <= 64 << 20 && rd > KERNEL_LOAD + 3000);
        assert_eq!(mem.read_u8(rd).unwrap(), 7);
        assert!(mem.read_u8(zp + 0x1e8).unwrap() >= 4, "e820 entries");
        let plan32 = load(&mem, &img, "", None, 64 << 20, false).unwrap();
        assert_eq!(plan32.entry, KERNEL_LOAD);
        assert!(
            matches!(plan32.mode, EntryMode::Protected32 { esi, .. } if esi as u64 == addr::ZERO_PAGE)
        );
    }

    #[test]
    fn malformed_headers_and_oversized_inputs_are_errors() {
        let good = bzimage(&[0x90; 100], 0);
        for n in [0, 0x100, 0x203, 0x263, 5 * 512] {
            assert!(parse(&good[..n]).is_err(), "truncated to {n}");
        }
        let mut old = good.clone();
        old[0x206..0x208].copy_from_slice(&0x0200u16.to_le_bytes());
        assert!(parse(&old).is_err());
        let mut low = good.clone();
        low[0x211] = 0;
        assert!(parse(&low).is_err());
        let mem = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        let long = "x".repeat(4096);
        assert!(matches!(
            load(&mem, &good, &long, None, 4 << 20, true),
            Err(LoadError::CmdlineTooLong(..))
        ));
        let big = vec![0u8; 4 << 20];
        assert!(matches!(
            load(&mem, &good, "", Some(&big), 4 << 20, true),
            Err(LoadError::DoesNotFit { .. })
        ));
    }

    /// Issue 17 defect 1: a header with cmdline_size 0 panicked (subtract overflow).
    #[test]
    fn a_zero_cmdline_size_allows_only_an_empty_command_line() {
        let mut img = bzimage(&[0x90; 100], 0);
        img[0x238..0x23c].copy_from_slice(&0u32.to_le_bytes());
        let mem = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        assert!(load(&mem, &img, "", None, 4 << 20, true).is_ok());
        let e = load(&mem, &img, "x", None, 4 << 20, true).unwrap_err();
        assert!(matches!(e, LoadError::CmdlineTooLong(1, 0)), "{e}");
        // The limit excludes the NUL: exactly cmdline_size characters fit.
        img[0x238..0x23c].copy_from_slice(&4u32.to_le_bytes());
        assert!(load(&mem, &img, "abcd", None, 4 << 20, true).is_ok());
        assert!(load(&mem, &img, "abcde", None, 4 << 20, true).is_err());
    }

    /// Issue 17 defect 5: a truncated bzImage was booted (and blamed on the guest), and one
    /// whose header declares no kernel at all spun forever.
    #[test]
    fn truncated_or_empty_kernels_are_refused() {
        let img = bzimage(&[0x90; 4096], 0);
        assert!(parse(&img).is_ok());
        for cut in [1, 15, 4000] {
            let e = parse(&img[..img.len() - cut]).unwrap_err().to_string();
            assert!(e.contains("truncated"), "{cut}: {e}");
        }
        let mut none = bzimage(&[0x90; 1], 0);
        assert!(parse(&none).unwrap_err().to_string().contains("syssize"));
        // A 1-byte payload under a header that claims a real kernel: truncated.
        none[0x1f4..0x1f8].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(parse(&none).unwrap_err().to_string().contains("truncated"));
    }

    /// linux-loader and the in-house loader place the same bytes at the same addresses.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn differential_against_linux_loader() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| crate::bits::lo8(i * 7)).collect();
        let img = bzimage(&payload, XLF_KERNEL_64);
        let bz = parse(&img).unwrap();
        let ours = MmapMemory::new(&[(0, 4 << 20)]).unwrap();
        let theirs = crate::memory::rustvmm::VmMemory::new(&[(0, 4 << 20)]).unwrap();
        let end_ours = load_kernel_inhouse(&ours, &img, &bz).unwrap();
        let end_theirs = load_kernel_linux_loader(theirs.as_vm_memory().unwrap(), &img).unwrap();
        assert_eq!(end_ours, end_theirs);
        let mut a = vec![0u8; payload.len() + 64];
        let mut b = vec![0u8; payload.len() + 64];
        ours.read(KERNEL_LOAD, &mut a).unwrap();
        theirs.read(KERNEL_LOAD, &mut b).unwrap();
        assert_eq!(a, b);
        // Both refuse an image without the signature.
        let mut bad = img.clone();
        bad[0x202] = b'X';
        assert!(parse(&bad).is_err());
        assert!(load_kernel_linux_loader(theirs.as_vm_memory().unwrap(), &bad).is_err());
    }
}
