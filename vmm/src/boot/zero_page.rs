//! The Linux "zero page" (struct boot_params): the setup header the loader filled in, the e820
//! memory map, the command line and initrd pointers. Shared by the bzImage and ELF vmlinux
//! paths and by both loaders (in-house and linux-loader).

use super::{addr, place, LoadError};
use crate::bits;
use crate::memory::layout::e820_map;
use crate::memory::GuestMemory;

pub const SETUP_HEADER_START: usize = 0x1f1;
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
const E820_MAX: usize = 128;
pub const TYPE_OF_LOADER: usize = 0x210;
pub const LOADFLAGS: usize = 0x211;
pub const CODE32_START: usize = 0x214;
pub const RAMDISK_IMAGE: usize = 0x218;
pub const RAMDISK_SIZE: usize = 0x21c;
pub const HEAP_END_PTR: usize = 0x224;
pub const CMD_LINE_PTR: usize = 0x228;
pub const CMDLINE_SIZE: usize = 0x238;
const BOOT_FLAG: usize = 0x1fe;
const HEADER_MAGIC: usize = 0x202;
const KERNEL_ALIGNMENT: usize = 0x230;
const CAN_USE_HEAP: u8 = 0x80;

/// What goes into the zero page besides the kernel's own setup header.
pub struct Params<'a> {
    /// The setup header bytes from the image (0x1f1 up to its end), or None for ELF vmlinux.
    pub setup_header: Option<&'a [u8]>,
    pub cmdline_addr: u64,
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    pub kernel_load: u64,
    pub mem_size: u64,
}

fn put32(zp: &mut [u8], off: usize, v: u32) {
    zp[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Build and write the zero page at [`addr::ZERO_PAGE`].
pub fn write(mem: &dyn GuestMemory, p: &Params) -> Result<(), LoadError> {
    let mut zp = vec![0u8; 4096];
    match p.setup_header {
        Some(h) => {
            let end = (SETUP_HEADER_START + h.len()).min(0x290);
            zp[SETUP_HEADER_START..end].copy_from_slice(&h[..end - SETUP_HEADER_START]);
            zp[LOADFLAGS] |= CAN_USE_HEAP;
            zp[HEAP_END_PTR..HEAP_END_PTR + 2].copy_from_slice(&0xfe00u16.to_le_bytes());
            // The loaders place the kernel, the command line and the initrd below the PCI hole:
            // 32-bit addresses and sizes.
            put32(&mut zp, CODE32_START, bits::lo32(p.kernel_load));
        }
        None => {
            // A vmlinux has no setup header: write the fields the kernel checks.
            zp[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
            zp[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
            put32(&mut zp, KERNEL_ALIGNMENT, 0x0100_0000);
            put32(
                &mut zp,
                CMDLINE_SIZE,
                const { bits::const_u32(addr::CMDLINE_MAX) } - 1,
            );
        }
    }
    zp[TYPE_OF_LOADER] = 0xff;
    put32(&mut zp, CMD_LINE_PTR, bits::lo32(p.cmdline_addr));
    if let Some((a, len)) = p.initrd {
        put32(&mut zp, RAMDISK_IMAGE, bits::lo32(a));
        put32(&mut zp, RAMDISK_SIZE, bits::lo32(len));
    }
    let map = e820_map(p.mem_size);
    let n = map.len().min(E820_MAX);
    // At most E820_MAX (128) entries.
    zp[E820_ENTRIES] = bits::lo8(n as u64);
    for (i, e) in map.iter().take(n).enumerate() {
        let o = E820_TABLE + i * 20;
        zp[o..o + 8].copy_from_slice(&e.addr.to_le_bytes());
        zp[o + 8..o + 16].copy_from_slice(&e.size.to_le_bytes());
        put32(&mut zp, o + 16, e.kind as u32);
    }
    let _ = p.cmdline_len;
    place(mem, "Linux boot parameters", addr::ZERO_PAGE, &zp)
}
