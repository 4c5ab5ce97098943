//! PCI configuration and BAR accesses from the guest: mechanism #1 (0xCF8/0xCFC), ECAM,
//! and the memory and I/O windows, on a bus with a host bridge (generic or i440FX), a PIIX3
//! and a virtio-pci function (its common, ISR, notify and device regions, the PCI-config
//! access capability, BAR sizing and the MSI-X table behind BAR 1).
#![no_main]

use fugu::fuzzing::pci::{ConfigIo, Ecam, I440fx, PciBus, PciDevice, Piix3, IO_BASE, MMIO_BASE};
use fugu::fuzzing::virtio::{
    ActivateError, Activation, QueueImpl, VirtioDevice, VirtioPci, Virtqueue, COMMON_FEATURES,
};
use fugu::fuzzing::BusDevice;
use fugu_fuzz::{NoIrq, Ops};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};

/// A device model with two queues that takes them and does nothing, so that the transport
/// is exercised alone (no worker threads).
struct Null {
    cfg: [u8; 16],
    queues: Vec<Option<Box<dyn Virtqueue>>>,
}

impl VirtioDevice for Null {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![256, 16]
    }
    fn features(&self) -> u64 {
        COMMON_FEATURES | 0b110
    }
    fn config(&self) -> Vec<u8> {
        self.cfg.to_vec()
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.cfg.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.queues = a.queues;
        for q in self.queues.iter_mut().flatten() {
            let _ = q.pop();
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.queues.clear();
    }
}

const RAM: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops::new(data);
    let sel = ops.u8();
    let mem = fugu_fuzz::memory_with(RAM, &[]);
    let mut bus = PciBus::new();
    if sel & 1 != 0 {
        bus.set_host_bridge(Arc::new(Mutex::new(I440fx::new())));
        bus.add(Arc::new(Mutex::new(Piix3::new()))).unwrap();
    }
    let which = if sel & 2 == 0 {
        QueueImpl::InHouse
    } else {
        #[cfg(target_arch = "x86_64")]
        {
            QueueImpl::RustVmm
        }
        #[cfg(not(target_arch = "x86_64"))]
        QueueImpl::InHouse
    };
    let virtio = VirtioPci::new(
        Box::new(Null {
            cfg: [0; 16],
            queues: Vec::new(),
        }),
        mem,
        which,
        Arc::new(NoIrq::default()),
        16,
        None,
    )
    .unwrap();
    let virtio: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(virtio));
    bus.add(virtio.clone()).unwrap();
    let bus = Arc::new(bus);
    let mut cf8 = ConfigIo::new(bus.clone());
    let mut ecam = Ecam::new(bus.clone());
    let mut buf = [0u8; 8];
    while !ops.is_empty() {
        let kind = ops.u8();
        let w = ops.width();
        let v = ops.u64().to_le_bytes();
        let off = ops.u32() as u64;
        match kind % 10 {
            0 => cf8.write(off % 8, &v[..w.min(4)]),
            1 => cf8.read(off % 8, &mut buf[..w.min(4)]),
            2 => ecam.write(off % 0x2_0000, &v[..w]),
            3 => ecam.read(off % 0x2_0000, &mut buf[..w]),
            4 => {
                bus.mmio_write(MMIO_BASE + off % 0x1_0000, &v[..w]);
            }
            5 => {
                bus.mmio_read(MMIO_BASE + off % 0x1_0000, &mut buf[..w]);
            }
            6 => {
                bus.io_write(IO_BASE + off % 0x200, &v[..w]);
            }
            7 => {
                bus.io_read(IO_BASE + off % 0x200, &mut buf[..w]);
            }
            8 => {
                let mut d = virtio.lock().unwrap();
                d.bar_write((off >> 16) as usize % 7, off & 0x7fff, &v[..w]);
            }
            _ => {
                let mut d = virtio.lock().unwrap();
                d.bar_read((off >> 16) as usize % 7, off & 0x7fff, &mut buf[..w]);
            }
        }
    }
});
