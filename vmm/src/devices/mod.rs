//! Emulated devices and the port-I/O / MMIO buses that route guest accesses to them.

pub mod bus;
pub mod legacy;
pub mod pci;
pub mod virtio;

/// What a device calls to reset the machine (i8042 command 0xFE, the PIIX reset control
/// register): devices never see the machine, the machine decides what a reset means.
pub type ResetHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Byte `k` past `offset` in a device's register block `regs`; `None` past its end (an
/// offset from the guest is never trusted to fit a usize).
pub fn reg_byte(regs: &[u8], offset: u64, k: usize) -> Option<u8> {
    let at = usize::try_from(offset).ok()?.checked_add(k)?;
    regs.get(at).copied()
}
