//! The host bridge at 00:00.0.

use super::config::ConfigSpace;
use super::PciDevice;

/// A PCI host bridge with no BARs (class 06.00.00).
pub struct HostBridge {
    cfg: ConfigSpace,
}

/// Red Hat's ID for a generic virtual PCIe host bridge (no chipset quirks apply to it).
pub const VENDOR: u16 = 0x1b36;
pub const DEVICE: u16 = 0x0008;

impl HostBridge {
    pub fn new() -> Self {
        HostBridge {
            cfg: ConfigSpace::new(VENDOR, DEVICE, 0x06_00_00, 0),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn bar_read(&mut self, _bar: usize, _off: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _off: u64, _data: &[u8]) {}
}
