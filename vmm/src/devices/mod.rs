//! Emulated devices and the port-I/O / MMIO buses that route guest accesses to them.

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;
