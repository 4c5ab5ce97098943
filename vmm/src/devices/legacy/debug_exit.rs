//! The debug-exit port (0xf4, as QEMU's isa-debug-exit): a guest write of `v` ends the VM
//! with status `(v << 1) | 1`, so test guests can report success or failure.

use crate::devices::bus::BusDevice;

pub const PORT: u16 = 0xf4;

/// What a write of `v` does (the machine ends the VM).
pub type OnExit = Box<dyn Fn(u32) + Send>;

pub struct DebugExit {
    on_exit: OnExit,
}

impl DebugExit {
    pub fn new(on_exit: OnExit) -> Self {
        DebugExit { on_exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(v);
        (self.on_exit)(v);
    }
}
