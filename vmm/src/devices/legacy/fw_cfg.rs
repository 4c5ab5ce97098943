//! QEMU's firmware configuration interface (fw_cfg) on ports 0x510 (selector) and 0x511
//! (data): the signature, interface ID, RAM size, CPU count and a directory of named files,
//! which firmware such as SeaBIOS reads. Reads past an item's end return 0, as on QEMU.

use crate::devices::bus::BusDevice;
use std::collections::BTreeMap;

pub const BASE: u16 = 0x510;
pub const LEN: u64 = 2;

pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const RAM_SIZE: u16 = 0x03;
pub const NB_CPUS: u16 = 0x05;
pub const MAX_CPUS: u16 = 0x0f;
pub const FILE_DIR: u16 = 0x19;
pub const FILE_FIRST: u16 = 0x20;
/// Selector bits that are not part of the key (write access, architecture-specific).
const KEY_MASK: u16 = 0x3fff;

#[derive(Default)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
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

    /// Add (or replace) a named file; names are at most 55 bytes.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, String> {
        if name.is_empty() || name.len() > 55 {
            return Err(format!("fw_cfg file name '{name}' must be 1-55 bytes"));
        }
        let key = match self.files.iter().find(|(n, _)| n == name) {
            Some((_, k)) => *k,
            None => {
                let k = FILE_FIRST + self.files.len() as u16;
                if k > KEY_MASK {
                    return Err("too many fw_cfg files".into());
                }
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
        let mut d = (files.len() as u32).to_be_bytes().to_vec();
        for (name, key) in files {
            let size = self.items.get(&key).map_or(0, |v| v.len()) as u32;
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
        assert_eq!(read_item(&mut f, SIGNATURE, 6), b"QEMU\0\0", "past the end reads 0");
        assert_eq!(read_item(&mut f, 0x1234, 2), [0, 0], "unknown keys read 0");
        let key = f.add_file("bootorder", b"/pci@i0cf8/*@3\n".to_vec()).unwrap();
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
}
