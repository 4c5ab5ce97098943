//! Emulated devices and the port-I/O / MMIO buses that route guest accesses to them.

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;

/// What a device calls to reset the machine (i8042 command 0xFE, the PIIX reset control
/// register): devices never see the machine, the machine decides what a reset means.
pub type ResetHook = std::sync::Arc<dyn Fn() + Send + Sync>;
