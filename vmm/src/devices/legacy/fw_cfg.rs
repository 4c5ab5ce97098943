//! QEMU's firmware configuration interface (fw_cfg) on ports 0x510 (selector) and 0x511
//! (data): the signature, interface ID, RAM size, CPU count and a directory of named files,
//! which firmware such as SeaBIOS reads. Reads past an item's end return 0, as on QEMU.
//!
//! With guest memory attached ([`FwCfg::with_dma`]) it also has the DMA interface: the guest
//! writes the big-endian guest-physical address of a `FWCfgDmaAccess` (be32 control, be32
//! length, be64 address) to ports 0x514 (high half) and 0x518 (low half, which starts the
//! transfer); reading 0x514 gives the signature "QEMU CFG". The descriptor comes from the
//! guest: every field is checked, and a bad one sets the error bit, nothing more.

use crate::devices::bus::BusDevice;
use crate::memory::GuestMemory;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const BASE: u16 = 0x510;
/// Selector, data, and the DMA address registers at 0x514-0x51b.
pub const LEN: u64 = 0x0c;
/// Offsets (from [`BASE`]) of the DMA address registers.
const DMA_HIGH: u64 = 4;
const DMA_LOW: u64 = 8;
/// What reading the DMA address register returns (big-endian "QEMU CFG").
pub const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;
/// FWCfgDmaAccess.control bits.
pub const DMA_ERROR: u32 = 1 << 0;
pub const DMA_READ: u32 = 1 << 1;
pub const DMA_SKIP: u32 = 1 << 2;
pub const DMA_SELECT: u32 = 1 << 3;
pub const DMA_WRITE: u32 = 1 << 4;
/// Interface ID bits: traditional I/O, DMA.
pub const ID_TRADITIONAL: u32 = 1 << 0;
pub const ID_DMA: u32 = 1 << 1;
/// The most bytes one DMA descriptor may move (a sanity bound on guest input).
const DMA_MAX: u32 = 64 << 20;

pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const RAM_SIZE: u16 = 0x03;
pub const NB_CPUS: u16 = 0x05;
pub const MAX_CPUS: u16 = 0x0f;
pub const FILE_DIR: u16 = 0x19;
pub const FILE_FIRST: u16 = 0x20;
/// The selector without its write-channel bit (0x4000). Bit 15 selects the architecture's
/// own items (x86: ACPI tables, SMBIOS, IRQ0 override, e820, HPET at 0x8000-0x8004), a
/// separate namespace: none is set here, so they read as zero (e.g. "no ACPI tables").
const KEY_MASK: u16 = 0xbfff;

/// Why a file cannot be added to fw_cfg (fugu's own files: a bug if it happens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("fw_cfg file name '{0}' must be 1-55 bytes")]
    BadName(String),
    #[error("too many fw_cfg files")]
    Full,
}

#[derive(Default)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
    dma_mem: Option<Arc<dyn GuestMemory>>,
    dma_high: u32,
}

impl FwCfg {
    /// The standard items for a VM with `ram` bytes and `cpus` vCPUs.
    pub fn new(ram: u64, cpus: u16) -> Self {
        let mut f = FwCfg::default();
        f.items.insert(SIGNATURE, b"QEMU".to_vec());
        f.items.insert(ID, 1u32.to_le_bytes().to_vec()); // traditional interface
        f.items.insert(RAM_SIZE, ram.to_le_bytes().to_vec());
        f.items.insert(NB_CPUS, cpus.to_le_bytes().to_vec());
        f.items.insert(MAX_CPUS, cpus.to_le_bytes().to_vec());
        f.rebuild_dir();
        f
    }

    /// Offer the DMA interface, transferring into and out of `mem`.
    pub fn with_dma(mut self, mem: Arc<dyn GuestMemory>) -> Self {
        self.dma_mem = Some(mem);
        self.items
            .insert(ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        self
    }

    /// Run the DMA descriptor at guest-physical `desc`; the control word is written back as 0
    /// on success or [`DMA_ERROR`].
    fn dma(&mut self, desc: u64) {
        let Some(mem) = self.dma_mem.clone() else {
            return;
        };
        let mut raw = [0u8; 16];
        if mem.read(desc, &mut raw).is_err() {
            return; // nowhere to report the error
        }
        let control = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let length = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&raw[8..16]);
        let addr = u64::from_be_bytes(addr);
        let ok = self.dma_transfer(&*mem, control, length, addr);
        let result: u32 = if ok { 0 } else { DMA_ERROR };
        let _ = mem.write(desc, &result.to_be_bytes());
    }

    fn dma_transfer(
        &mut self,
        mem: &dyn GuestMemory,
        control: u32,
        length: u32,
        addr: u64,
    ) -> bool {
        if control & DMA_SELECT != 0 {
            self.selected = ((control >> 16) as u16) & KEY_MASK;
            self.offset = 0;
        }
        if control & DMA_WRITE != 0 {
            return false; // no writable items
        }
        if control & (DMA_READ | DMA_SKIP) == 0 || length == 0 {
            return true;
        }
        if length > DMA_MAX {
            return false;
        }
        let len = length as usize;
        if control & DMA_READ != 0 {
            let item = self
                .items
                .get(&self.selected)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut buf = vec![0u8; len];
            if let Some(src) = item.get(self.offset.min(item.len())..) {
                let n = src.len().min(len);
                buf[..n].copy_from_slice(&src[..n]);
            }
            if mem.write(addr, &buf).is_err() {
                return false;
            }
        }
        self.offset = self.offset.saturating_add(len);
        true
    }

    /// Add (or replace) a named file; names are at most 55 bytes.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FileError> {
        if name.is_empty() || name.len() > 55 {
            return Err(FileError::BadName(name.to_string()));
        }
        let key = match self.files.iter().find(|(n, _)| n == name) {
            Some((_, k)) => *k,
            None => {
                let k = u16::try_from(self.files.len())
                    .ok()
                    .and_then(|n| FILE_FIRST.checked_add(n))
                    .filter(|k| *k <= 0x3fff)
                    .ok_or(FileError::Full)?;
                self.files.push((name.to_string(), k));
                k
            }
        };
        self.items.insert(key, data);
        self.rebuild_dir();
        Ok(key)
    }

    /// The file directory: a big-endian count, then (size, select, reserved, name[56]).
    fn rebuild_dir(&mut self) {
        let mut files = self.files.clone();
        files.sort();
        // At most 0x3fff files (checked in add_file); the fallbacks are never taken.
        let mut d = u32::try_from(files.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        for (name, key) in files {
            let size =
                u32::try_from(self.items.get(&key).map_or(0, |v| v.len())).unwrap_or(u32::MAX);
            d.extend_from_slice(&size.to_be_bytes());
            d.extend_from_slice(&key.to_be_bytes());
            d.extend_from_slice(&0u16.to_be_bytes());
            let mut n = [0u8; 56];
            n[..name.len()].copy_from_slice(name.as_bytes());
            d.extend_from_slice(&n);
        }
        self.items.insert(FILE_DIR, d);
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if (DMA_HIGH..DMA_HIGH + 8).contains(&offset) && self.dma_mem.is_some() {
            let sig = DMA_SIGNATURE.to_be_bytes();
            for (k, b) in data.iter_mut().enumerate() {
                *b = crate::devices::reg_byte(&sig, offset - DMA_HIGH, k).unwrap_or(0);
            }
            return;
        }
        if offset != 1 {
            return;
        }
        // The data port streams bytes of the selected item, one per byte of the access.
        let item = self.items.get(&self.selected);
        for b in data.iter_mut() {
            *b = item.and_then(|v| v.get(self.offset)).copied().unwrap_or(0);
            self.offset = self.offset.saturating_add(1);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && !data.is_empty() {
            let mut v = [0u8; 2];
            let n = data.len().min(2);
            v[..n].copy_from_slice(&data[..n]);
            self.selected = u16::from_le_bytes(v) & KEY_MASK;
            self.offset = 0;
        }
        if data.len() == 4 {
            let v = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            match offset {
                DMA_HIGH => self.dma_high = v,
                DMA_LOW => {
                    let desc = ((self.dma_high as u64) << 32) | v as u64;
                    self.dma_high = 0;
                    self.dma(desc);
                }
                _ => {}
            }
        }
        // Writes to the data port are ignored (no writable items).
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(f: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        f.write(0, &key.to_le_bytes());
        let mut out = vec![0u8; len];
        for b in out.iter_mut() {
            let mut x = [0u8];
            f.read(1, &mut x);
            *b = x[0];
        }
        out
    }

    #[test]
    fn standard_items_and_files() {
        let mut f = FwCfg::new(256 << 20, 2);
        assert_eq!(read_item(&mut f, SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut f, RAM_SIZE, 8), (256u64 << 20).to_le_bytes());
        assert_eq!(read_item(&mut f, NB_CPUS, 2), [2, 0]);
        assert_eq!(
            read_item(&mut f, SIGNATURE, 6),
            b"QEMU\0\0",
            "past the end reads 0"
        );
        assert_eq!(read_item(&mut f, 0x1234, 2), [0, 0], "unknown keys read 0");
        assert_eq!(
            read_item(&mut f, 0x8000, 2),
            [0, 0],
            "arch-local keys are separate"
        );
        let key = f
            .add_file("bootorder", b"/pci@i0cf8/*@3\n".to_vec())
            .unwrap();
        let dir = read_item(&mut f, FILE_DIR, 4 + 64);
        assert_eq!(u32::from_be_bytes(dir[..4].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(dir[4..8].try_into().unwrap()), 15);
        assert_eq!(u16::from_be_bytes(dir[8..10].try_into().unwrap()), key);
        assert_eq!(&dir[12..21], b"bootorder");
        assert!(f.add_file(&"x".repeat(56), vec![]).is_err());
        // A 4-byte access reads 4 consecutive bytes.
        f.write(0, &SIGNATURE.to_le_bytes());
        let mut w = [0u8; 4];
        f.read(1, &mut w);
        assert_eq!(&w, b"QEMU");
    }

    #[test]
    fn dma_reads_items_and_rejects_bad_descriptors() {
        let mem = crate::backend::Backend::Portable
            .memory(&[(0, 1 << 20)])
            .unwrap();
        let mut f = FwCfg::new(256 << 20, 1).with_dma(mem.clone());
        let key = f.add_file("etc/e820", (1u8..=40).collect()).unwrap();
        assert_eq!(read_item(&mut f, ID, 4), 3u32.to_le_bytes());
        let mut sig = [0u8; 4];
        f.read(DMA_HIGH, &mut sig);
        assert_eq!(&sig, b"QEMU");
        f.read(DMA_HIGH + 4, &mut sig);
        assert_eq!(&sig, b" CFG");
        let run = |f: &mut FwCfg, control: u32, len: u32, addr: u64| -> u32 {
            let mut d = control.to_be_bytes().to_vec();
            d.extend_from_slice(&len.to_be_bytes());
            d.extend_from_slice(&addr.to_be_bytes());
            mem.write(0x1000, &d).unwrap();
            f.write(DMA_HIGH, &0u32.to_be_bytes());
            f.write(DMA_LOW, &0x1000u32.to_be_bytes());
            mem.read_u32(0x1000).unwrap().swap_bytes() // the control word is big-endian
        };
        // Select + read 8 bytes, skip 8, read 30 (the last 6 past the end read 0).
        let sel = ((key as u32) << 16) | DMA_SELECT | DMA_READ;
        assert_eq!(run(&mut f, sel, 8, 0x2000), 0);
        let mut b = [0u8; 30];
        mem.read(0x2000, &mut b[..8]).unwrap();
        assert_eq!(&b[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(run(&mut f, DMA_SKIP, 8, 0), 0);
        assert_eq!(run(&mut f, DMA_READ, 30, 0x3000), 0);
        mem.read(0x3000, &mut b).unwrap();
        assert_eq!(b[0], 17);
        assert_eq!(b[23], 40);
        assert_eq!(&b[24..], &[0; 6]);
        // Writes, transfers outside RAM and absurd lengths set the error bit.
        assert_eq!(run(&mut f, DMA_WRITE, 4, 0x2000), DMA_ERROR);
        assert_eq!(run(&mut f, sel, 8, 0xffff_fff0), DMA_ERROR);
        assert_eq!(run(&mut f, sel, u32::MAX, 0x2000), DMA_ERROR);
        // A descriptor outside RAM is ignored, not a crash.
        f.write(DMA_HIGH, &0x10u32.to_be_bytes());
        f.write(DMA_LOW, &0u32.to_be_bytes());
    }
}
