//! Address-range buses for port I/O and MMIO. Devices see offsets within their own range.

use crate::sync::lock;
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the base the device was registered at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

struct Entry {
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// The devices a vCPU dispatches its exits to.
#[derive(Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// A set of non-overlapping ranges, each served by a device.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub struct Overlap {
    pub base: u64,
    pub len: u64,
}

impl Bus {
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), Overlap> {
        if len == 0
            || self
                .entries
                .iter()
                .any(|e| base < e.base + e.len && e.base < base + len)
        {
            return Err(Overlap { base, len });
        }
        self.entries.push(Entry { base, len, dev });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (addr - e.base < e.len).then_some(e)
    }

    /// Route a read; unclaimed addresses read as all ones, like an open PC bus. Returns
    /// whether a device claimed it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some(e) => {
                lock(&e.dev).read(addr - e.base, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Route a write; unclaimed writes are dropped. Returns whether a device claimed it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some(e) => {
                lock(&e.dev).write(addr - e.base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + crate::bits::lo8(offset));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Echo(0x10))))
            .unwrap();
        assert!(bus.insert(0x3fc, 8, Arc::new(Mutex::new(Echo(0)))).is_err());
        assert!(bus.insert(0x400, 0, Arc::new(Mutex::new(Echo(0)))).is_err());
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 0x12);
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b[0], 0xff);
        assert!(!bus.read(0x400, &mut b));
        assert!(bus.write(0x3ff, &[0x20]));
        bus.read(0x3f8, &mut b);
        assert_eq!(b[0], 0x20);
    }
}
