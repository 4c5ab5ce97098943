//! Booting through a BIOS (`fugu run --bios [PATH]`): SeaBIOS from Debian's `seabios` package
//! by default. The image is mapped read-only just below 4 GiB, its last 128 KiB is copied into
//! RAM at 0xE0000-0xFFFFF (the legacy shadow, as QEMU does), and the boot vCPU starts at the
//! reset vector. What the firmware reads to find RAM, the CPUs and the boot order comes from
//! fw_cfg ([`fw_cfg_files`]).

use crate::hypervisor::{Vcpu, Vm};
use crate::memory::GuestMemory;
use std::path::{Path, PathBuf};

/// Where Debian's `seabios` package puts the image fugu uses by default.
pub const DEFAULT_BIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// The legacy BIOS window the image's tail is copied into.
pub const SHADOW_START: u64 = 0xE_0000;
pub const SHADOW_SIZE: u64 = 0x2_0000;
/// The largest image accepted (the flash window below 4 GiB that QEMU allows too).
pub const MAX_SIZE: usize = 16 << 20;

/// What `--boot` asks the firmware to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// The first `--disk`.
    Disk,
    /// The first `--net`, through its option ROM (iPXE).
    Net,
}

/// What `--bios` boots with: the image, what to boot, and the NIC's option ROM.
pub struct FirmwareConfig {
    pub bios: Firmware,
    pub boot: Option<BootDevice>,
    /// The first NIC's expansion ROM (iPXE for virtio-net).
    pub net_rom: Option<Vec<u8>>,
}

/// Where Debian's `ipxe-qemu` package puts the legacy-BIOS iPXE ROM for virtio-net.
pub const DEFAULT_VIRTIO_NET_ROM: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";

/// Load a PCI option ROM (None: [`DEFAULT_VIRTIO_NET_ROM`]): 0x55 0xAA, at most 16 MiB.
pub fn load_option_rom(path: Option<&Path>) -> Result<Vec<u8>, FirmwareError> {
    let path = path.map_or_else(|| PathBuf::from(DEFAULT_VIRTIO_NET_ROM), Path::to_path_buf);
    let image = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FirmwareError::Missing {
                path,
                package: "ipxe-qemu",
            })
        }
        Err(err) => return Err(FirmwareError::Read { path, err }),
    };
    if image.len() < 512 || image.len() > MAX_SIZE || image[..2] != [0x55, 0xaa] {
        return Err(FirmwareError::Invalid {
            path,
            why: NotAnImage::OptionRom,
        });
    }
    Ok(image)
}

/// Make an option ROM's PCI data structure name `vendor:device`, as QEMU does for ROMs that
/// serve several devices: firmware runs a PCI ROM only when its IDs match the function's
/// (iPXE's virtio ROM names the modern virtio-net ID, fugu's NIC is the transitional one).
/// The header checksum byte (offset 6) is adjusted when the image had a valid checksum.
/// Returns whether anything changed; malformed images are left alone.
pub fn patch_pci_ids(rom: &mut [u8], vendor: u16, device: u16) -> bool {
    if rom.len() < 0x1a || rom[..2] != [0x55, 0xaa] {
        return false;
    }
    let pcir = u16::from_le_bytes([rom[0x18], rom[0x19]]) as usize;
    if rom.get(pcir..pcir + 4) != Some(b"PCIR".as_slice()) || rom.len() < pcir + 8 {
        return false;
    }
    let ids = [vendor.to_le_bytes(), device.to_le_bytes()].concat();
    if rom[pcir + 4..pcir + 8] == ids[..] {
        return false;
    }
    let size = (rom[2] as usize * 512).min(rom.len());
    let sum = |r: &[u8]| r[..size].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let had_checksum = size > 6 && sum(rom) == 0;
    rom[pcir + 4..pcir + 8].copy_from_slice(&ids);
    if had_checksum {
        let off = sum(rom);
        rom[6] = rom[6].wrapping_sub(off);
    }
    true
}

/// Why the firmware cannot be used; the message is for the user.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("firmware file {path} is missing: install Debian's '{package}' package (apt-get install {package}) or give --bios PATH")]
    Missing {
        path: PathBuf,
        package: &'static str,
    },
    #[error("cannot read BIOS image {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path} is not a BIOS image: {why}")]
    Invalid {
        path: PathBuf,
        #[source]
        why: NotAnImage,
    },
    #[error("mapping the BIOS image: {0}")]
    Map(String),
}

/// What is wrong with a BIOS image or option ROM (the message follows "PATH is not a BIOS
/// image: ").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnImage {
    /// The image's size in bytes.
    #[error("its size is {0} bytes; a BIOS image is 128 KiB to 16 MiB in 64 KiB steps")]
    Size(usize),
    /// The byte at the reset vector.
    #[error("no jump at the reset vector (byte {0:#04x} at 0xfffffff0)")]
    ResetVector(u8),
    #[error("an option ROM starts with 55 AA and is 512 bytes to 16 MiB")]
    OptionRom,
}

/// A firmware image, checked.
pub struct Firmware {
    pub image: Vec<u8>,
}

impl Firmware {
    /// Load the image at `path` (None: [`DEFAULT_BIOS`]).
    pub fn load(path: Option<&Path>) -> Result<Self, FirmwareError> {
        let (path, package) = match path {
            Some(p) => (p.to_path_buf(), "seabios"),
            None => (PathBuf::from(DEFAULT_BIOS), "seabios"),
        };
        let image = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FirmwareError::Missing { path, package })
            }
            Err(err) => return Err(FirmwareError::Read { path, err }),
        };
        Self::check(&image).map_err(|why| FirmwareError::Invalid { path, why })?;
        Ok(Firmware { image })
    }

    /// A BIOS image is a multiple of 64 KiB, at least 128 KiB, at most [`MAX_SIZE`], and has
    /// an x86 instruction at its reset vector (16 bytes from its end): a far or near jump.
    pub fn check(image: &[u8]) -> Result<(), NotAnImage> {
        let n = image.len();
        if n < const { crate::bits::const_usize(SHADOW_SIZE) } || n > MAX_SIZE || n % 0x1_0000 != 0
        {
            return Err(NotAnImage::Size(n));
        }
        let reset = image[n - 16];
        if !matches!(reset, 0xe9..=0xeb) {
            return Err(NotAnImage::ResetVector(reset));
        }
        Ok(())
    }

    /// Where the image starts in guest-physical memory (it ends at 4 GiB).
    pub fn base(&self) -> u64 {
        (1u64 << 32) - self.image.len() as u64
    }
}

/// The host memory backing the read-only BIOS mapping; unmapped when dropped (after the VM).
pub struct RomMapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is only read through KVM.
unsafe impl Send for RomMapping {}
// SAFETY: as above; no interior mutability is exposed.
unsafe impl Sync for RomMapping {}

impl Drop for RomMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap in `install` and are unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

const KVM_CAP_READONLY_MEM: u32 = 81;

/// Map `fw` below 4 GiB (memory slot `slot`, read-only where KVM supports it), copy its last
/// 128 KiB into RAM at 0xE0000 and point the boot vCPU at the reset vector.
pub fn install(
    fw: &Firmware,
    vm: &dyn Vm,
    readonly_supported: bool,
    slot: u32,
    mem: &dyn GuestMemory,
    boot_vcpu: &dyn Vcpu,
) -> Result<RomMapping, FirmwareError> {
    let len = fw.image.len();
    // SAFETY: an anonymous private mapping; checked for failure below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(FirmwareError::Map(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let rom = RomMapping { ptr, len };
    // SAFETY: `ptr` is a fresh writable mapping of `len` bytes, and `fw.image` has `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(fw.image.as_ptr(), ptr as *mut u8, len) };
    // SAFETY: the mapping lives in the returned RomMapping, which Machine keeps for as long
    // as the VM exists.
    unsafe {
        vm.set_user_memory_region(slot, fw.base(), len as u64, ptr as u64, readonly_supported)
    }
    .map_err(|e| FirmwareError::Map(e.to_string()))?;
    let tail = &fw.image[len - const { crate::bits::const_usize(SHADOW_SIZE) }..];
    mem.write(SHADOW_START, tail)
        .map_err(|e| FirmwareError::Map(format!("the legacy BIOS shadow: {e}")))?;
    reset_vector(boot_vcpu).map_err(|e| FirmwareError::Map(e.to_string()))?;
    Ok(rom)
}

/// Whether KVM can map memory read-only (writes then exit to fugu, which drops them).
pub fn readonly_supported(check_extension: impl Fn(u32) -> i32) -> bool {
    check_extension(KVM_CAP_READONLY_MEM) > 0
}

/// The architectural reset state of the boot processor: real mode, CS selector 0xF000 with
/// base 0xFFFF0000, IP 0xFFF0 (so the first fetch is at 0xFFFFFFF0).
pub fn reset_vector(vcpu: &dyn Vcpu) -> Result<(), crate::hypervisor::Error> {
    let mut s = vcpu.get_sregs()?;
    s.cs.selector = 0xf000;
    s.cs.base = 0xffff_0000;
    s.cs.limit = 0xffff;
    for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        seg.selector = 0;
        seg.base = 0;
        seg.limit = 0xffff;
    }
    s.cr0 = 0x6000_0010;
    s.cr4 = 0;
    s.efer = 0;
    vcpu.set_sregs(&s)?;
    let r = crate::hypervisor::Regs {
        rip: 0xfff0,
        rflags: 0x2,
        rdx: 0x600, // family 6 in DX at reset, as firmware expects
        ..Default::default()
    };
    vcpu.set_regs(&r)
}

/// The fw_cfg files SeaBIOS reads, for a VM with `mem_size` bytes of RAM.
///
/// - `etc/e820`: the RAM map (20-byte entries: address, length, type).
/// - `bootorder`: the device to boot (`/pci@i0cf8/*@SLOT`) then `HALT`, so the firmware boots
///   nothing else.
/// - `etc/boot-fail-wait`: milliseconds before the firmware reboots after finding nothing to
///   boot; fugu ends the VM on that reboot.
/// - `etc/show-boot-menu`: 0, no interactive menu.
/// - `etc/sercon-port`: the firmware's screen output also goes to COM1.
pub fn fw_cfg_files(mem_size: u64, boot_slot: Option<u8>) -> Vec<(&'static str, Vec<u8>)> {
    let mut e820 = Vec::new();
    let low = mem_size.min(crate::memory::layout::PCI_HOLE_START);
    // SeaBIOS carves out its own reservations (EBDA, BIOS area) from plain RAM entries.
    for (addr, size) in [
        (0u64, low),
        (
            crate::memory::layout::HIGH_RAM_START,
            mem_size.saturating_sub(crate::memory::layout::PCI_HOLE_START),
        ),
    ] {
        if size == 0 {
            continue;
        }
        e820.extend_from_slice(&addr.to_le_bytes());
        e820.extend_from_slice(&size.to_le_bytes());
        e820.extend_from_slice(&1u32.to_le_bytes());
    }
    let mut files = vec![
        ("etc/e820", e820),
        ("etc/boot-fail-wait", 0u32.to_le_bytes().to_vec()),
        ("etc/show-boot-menu", 0u16.to_le_bytes().to_vec()),
        ("etc/sercon-port", 0x3f8u16.to_le_bytes().to_vec()),
    ];
    if let Some(slot) = boot_slot {
        files.push((
            "bootorder",
            format!("/pci@i0cf8/*@{slot:x}\nHALT\n").into_bytes(),
        ));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        v[n - 16] = 0xea;
        v
    }

    #[test]
    fn images_are_checked() {
        assert!(Firmware::check(&image(256 << 10)).is_ok());
        assert!(Firmware::check(&image(128 << 10)).is_ok());
        assert!(Firmware::check(&image(64 << 10))
            .unwrap_err()
            .to_string()
            .contains("size"));
        assert!(Firmware::check(&image((256 << 10) + 512)).is_err());
        assert!(Firmware::check(&[]).is_err());
        assert!(Firmware::check(&vec![0u8; 256 << 10])
            .unwrap_err()
            .to_string()
            .contains("reset vector"));
        let fw = Firmware {
            image: image(256 << 10),
        };
        assert_eq!(fw.base(), 0xfffc_0000);
    }

    #[test]
    fn missing_and_bad_files_name_the_problem() {
        let e = Firmware::load(Some(Path::new("/nonexistent/bios.bin")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent/bios.bin") && e.contains("seabios"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("fugu-fw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.bin");
        std::fs::write(&p, b"not a bios").unwrap();
        let e = Firmware::load(Some(&p)).err().unwrap().to_string();
        assert!(e.contains("not a BIOS image"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn option_rom_ids_are_patched_with_the_checksum() {
        let mut rom = vec![0u8; 1024];
        rom[..3].copy_from_slice(&[0x55, 0xaa, 2]);
        rom[0x18] = 0x1c;
        rom[0x1c..0x24].copy_from_slice(b"PCIR\xf4\x1a\x41\x10");
        let s: u8 = rom.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        rom[7] = 0u8.wrapping_sub(s);
        assert!(patch_pci_ids(&mut rom, 0x1af4, 0x1000));
        assert_eq!(&rom[0x20..0x24], &[0xf4, 0x1a, 0x00, 0x10]);
        assert_eq!(rom.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert!(!patch_pci_ids(&mut rom, 0x1af4, 0x1000), "already matches");
        // Garbage and truncated headers are left alone.
        let mut bad = vec![
            0x55, 0xaa, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
        ];
        bad.resize(0x40, 0);
        assert!(!patch_pci_ids(&mut bad, 1, 2));
        assert!(!patch_pci_ids(&mut [0u8; 4], 1, 2));
    }

    #[test]
    fn fw_cfg_files_describe_ram_and_boot_order() {
        let f = fw_cfg_files(256 << 20, Some(3));
        let e820 = &f.iter().find(|(n, _)| *n == "etc/e820").unwrap().1;
        assert_eq!(e820.len(), 20);
        assert_eq!(
            u64::from_le_bytes(e820[8..16].try_into().unwrap()),
            256 << 20
        );
        let big = fw_cfg_files(4 << 30, None);
        let e820 = &big.iter().find(|(n, _)| *n == "etc/e820").unwrap().1;
        assert_eq!(e820.len(), 40);
        assert_eq!(
            u64::from_le_bytes(e820[20..28].try_into().unwrap()),
            1 << 32
        );
        assert!(!big.iter().any(|(n, _)| *n == "bootorder"));
        let order = &f.iter().find(|(n, _)| *n == "bootorder").unwrap().1;
        assert_eq!(order.as_slice(), b"/pci@i0cf8/*@3\nHALT\n");
    }
}
