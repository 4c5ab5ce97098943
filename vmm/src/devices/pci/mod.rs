//! PCI: configuration spaces, the host bridge, the bus with configuration mechanism #1
//! (ports 0xCF8/0xCFC) and ECAM, BAR allocation in the 32-bit PCI hole, MSI-X and INTx.
//!
//! BARs are decoded dynamically: the whole MMIO window and I/O window are one bus entry
//! each, and every access is routed by the BAR values the guest (or fugu, as firmware
//! would) programmed, so moving a BAR needs no bus update.

pub mod bus;
pub mod config;
pub mod host;
pub mod i440fx;
pub mod irq;
pub mod msix;

pub use bus::{ConfigIo, Ecam, IoWindow, MmioWindow, PciBus};
pub use config::ConfigSpace;

use crate::memory::layout::PCI_HOLE_START;

/// ECAM (memory-mapped configuration) for bus 0: 1 MiB at the top of the BAR window.
pub const ECAM_BASE: u64 = 0xE000_0000;
pub const ECAM_SIZE: u64 = 1 << 20;
/// 32-bit memory BARs are placed in [PCI_HOLE_START, ECAM_BASE).
pub const MMIO_BASE: u64 = PCI_HOLE_START;
pub const MMIO_SIZE: u64 = ECAM_BASE - PCI_HOLE_START;
/// I/O BARs are placed in [0xC000, 0x10000).
pub const IO_BASE: u64 = 0xC000;
pub const IO_SIZE: u64 = 0x4000;
/// Configuration mechanism #1: address at 0xCF8, data at 0xCFC..0xCFF.
pub const CONFIG_IO_BASE: u64 = 0xCF8;
pub const CONFIG_IO_LEN: u64 = 8;
/// PCI INTx lines A-D of the slots land on IOAPIC inputs 16-19 (swizzled by slot).
pub const INTX_GSI_BASE: u32 = 16;

/// The IOAPIC input of INTA# of device `slot` on bus 0.
pub fn intx_gsi(slot: u8) -> u32 {
    INTX_GSI_BASE + (slot as u32 % 4)
}

/// A PCI function on bus 0.
pub trait PciDevice: Send {
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// A guest configuration read (devices whose registers have read side effects, such as
    /// virtio's configuration access window, refresh them here).
    fn config_read(&mut self, off: usize, data: &mut [u8]) {
        self.config().read(off, data);
    }
    /// A guest configuration write (devices with capabilities react to them here).
    fn config_write(&mut self, off: usize, data: &[u8]) {
        self.config_mut().write(off, data);
    }
    fn bar_read(&mut self, bar: usize, off: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, off: u64, data: &[u8]);
    /// The expansion ROM image (empty: none).
    fn rom(&self) -> &[u8] {
        &[]
    }
    /// The BARs were placed (called once by [`PciBus::add`]).
    fn placed(&mut self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("the PCI bus is full (32 devices)")]
    BusFull,
    #[error("no room for a {size:#x}-byte BAR in the PCI {what} window")]
    NoSpace { what: &'static str, size: u64 },
}
