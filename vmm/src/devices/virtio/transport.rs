//! The virtio PCI transport: a transitional device with the virtio 1.x capabilities (common,
//! notify, ISR and device configuration in a memory BAR), the legacy interface in an I/O BAR,
//! MSI-X in its own BAR, and INTx as the fallback.
//!
//! A fifth capability, the PCI configuration access window (VIRTIO_PCI_CAP_PCI_CFG), lets a
//! driver reach any BAR through configuration space; the spec requires it and iPXE's driver
//! refuses a modern device without it.
//!
//! BAR layout: BAR0 legacy I/O registers; BAR1 MSI-X table (0x000) and PBA (0x800); BAR4 the
//! modern structures: common 0x0000, ISR 0x1000, device configuration 0x2000, notify 0x3000
//! (4 bytes per queue). Queue notifications reach the device through one eventfd per queue,
//! written by KVM (ioeventfd on the notify address) or by the transport itself.

use super::queue::{self, QueueConfig, QueueImpl};
use super::sys::EventFd;
use super::{Activation, Signal, VirtioDevice};
use crate::bits;
use crate::devices::pci::config::{
    Bar, BarKind, ConfigSpace, COMMAND_IO, COMMAND_MEMORY, INTERRUPT_PIN,
};
use crate::devices::pci::irq::{InterruptController, IntxRaise};
use crate::devices::pci::msix::{Msix, NO_VECTOR};
use crate::devices::pci::PciDevice;
use crate::hypervisor::{IoEvent, Vm};
use crate::memory::GuestMemory;
use crate::sync::lock;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The device status bits, as the status byte holds them.
const S_DRIVER_OK: u8 = bits::const_u8(super::S_DRIVER_OK as u64);
const S_FEATURES_OK: u8 = bits::const_u8(super::S_FEATURES_OK as u64);
const S_NEEDS_RESET: u8 = bits::const_u8(super::S_NEEDS_RESET as u64);

pub const VENDOR: u16 = 0x1af4;
pub const LEGACY_BAR: usize = 0;
pub const MSIX_BAR: usize = 1;
pub const MODERN_BAR: usize = 4;
const LEGACY_BAR_SIZE: u64 = 0x100;
/// The legacy queue-notify register: the driver writes the queue number (16 bits).
const LEGACY_NOTIFY: u64 = 0x10;
const MSIX_BAR_SIZE: u64 = 0x1000;
const MSIX_PBA_OFFSET: u64 = 0x800;
const MODERN_BAR_SIZE: u64 = 0x4000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
const COMMON_SIZE: u64 = 0x38;

const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
/// Offsets inside the PCI_CFG capability: bar, offset, length and the data window.
const PCI_CFG_BAR: usize = 4;
const PCI_CFG_OFFSET: usize = 8;
const PCI_CFG_LENGTH: usize = 12;
const PCI_CFG_DATA: usize = 16;

pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// The state the device's worker and the vCPUs share without the transport lock.
struct Shared {
    isr: Arc<AtomicU8>,
    status: AtomicU8,
    generation: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    msix: Arc<Mutex<Msix>>,
    intx: Option<IntxRaise>,
}

impl Shared {
    fn interrupt(&self, isr_bit: u8, vector: u16) {
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        let mut m = lock(&self.msix);
        if m.enabled() {
            if vector != NO_VECTOR {
                m.notify(vector);
            }
        } else if let Some(raise) = &self.intx {
            raise();
        }
    }
}

impl Signal for Shared {
    fn used(&self, queue: u16) {
        let v = self
            .queue_vectors
            .get(queue as usize)
            .map(|v| v.load(Ordering::SeqCst))
            .unwrap_or(NO_VECTOR);
        self.interrupt(ISR_QUEUE, v);
    }
    fn config_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.interrupt(ISR_CONFIG, self.config_vector.load(Ordering::SeqCst));
    }
    fn needs_reset(&self) {
        let s = self.status.load(Ordering::SeqCst);
        if s & S_DRIVER_OK != 0 && s & S_NEEDS_RESET == 0 {
            self.status.fetch_or(S_NEEDS_RESET, Ordering::SeqCst);
            self.config_changed();
        }
    }
}

/// A virtio device on PCI.
pub struct VirtioPci {
    cfg: ConfigSpace,
    dev: Box<dyn VirtioDevice>,
    mem: Arc<dyn GuestMemory>,
    qimpl: QueueImpl,
    shared: Arc<Shared>,
    queues: Vec<QueueConfig>,
    kicks: Vec<EventFd>,
    offered: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    active: bool,
    vm: Option<Arc<dyn Vm>>,
    /// The notify writes KVM signals a kick eventfd for: (queue, registration).
    ioevents: Vec<(usize, IoEvent)>,
    rom: Vec<u8>,
    /// Where the PCI_CFG capability sits in configuration space.
    pci_cfg_cap: usize,
}

impl VirtioPci {
    /// Wrap `dev`. `intx_gsi` is the IOAPIC input of its INTA# (see `pci::intx_gsi`);
    /// `vm`, when given, receives ioeventfds for the notify addresses.
    pub fn new(
        dev: Box<dyn VirtioDevice>,
        mem: Arc<dyn GuestMemory>,
        qimpl: QueueImpl,
        irq: Arc<dyn InterruptController>,
        intx_gsi: u32,
        vm: Option<Arc<dyn Vm>>,
    ) -> Result<Self, String> {
        let ty = dev.device_type();
        let nq = dev.queue_max_sizes().len();
        let (device_id, class) = match ty {
            1 => (0x1000, 0x02_00_00),
            2 => (0x1001, 0x01_00_00),
            // Virtio device types are small numbers.
            t => (0x1040 + bits::lo16(t), 0xff_00_00),
        };
        let mut cfg = ConfigSpace::new(VENDOR, device_id, class, 0);
        cfg.set_subsystem(VENDOR, bits::lo16(ty));
        cfg.set_bytes(INTERRUPT_PIN, &[1]);
        cfg.set_bar(
            LEGACY_BAR,
            Bar {
                kind: BarKind::Io,
                size: LEGACY_BAR_SIZE,
            },
        );
        cfg.set_bar(
            MSIX_BAR,
            Bar {
                kind: BarKind::Mem32,
                size: MSIX_BAR_SIZE,
            },
        );
        cfg.set_bar(
            MODERN_BAR,
            Bar {
                kind: BarKind::Mem32,
                size: MODERN_BAR_SIZE,
            },
        );
        // One vector per queue plus one for configuration changes.
        let msix = Msix::new(
            &mut cfg,
            // A few queues (Msix::new clamps to 2048 vectors anyway).
            u16::try_from(nq + 1).unwrap_or(u16::MAX),
            const { bits::const_u8(MSIX_BAR as u64) },
            0,
            const { bits::const_u32(MSIX_PBA_OFFSET) },
            irq.clone(),
        );
        let caps: [(u8, u64, u64); 4] = [
            (CAP_COMMON, COMMON_OFFSET, COMMON_SIZE),
            (CAP_ISR, ISR_OFFSET, 4),
            (CAP_DEVICE, DEVICE_OFFSET, 0x1000),
            (
                CAP_NOTIFY,
                NOTIFY_OFFSET,
                (NOTIFY_MULTIPLIER as u64 * nq as u64).max(4),
            ),
        ];
        for (ty, off, len) in caps {
            let bar = const { bits::const_u8(MODERN_BAR as u64) };
            let mut body = vec![if ty == CAP_NOTIFY { 20 } else { 16 }, ty, bar];
            // id, padding; then the offset and length, within the 16 KiB modern BAR.
            body.extend_from_slice(&[0, 0, 0]);
            body.extend_from_slice(&bits::lo32(off).to_le_bytes());
            body.extend_from_slice(&bits::lo32(len).to_le_bytes());
            if ty == CAP_NOTIFY {
                body.extend_from_slice(&NOTIFY_MULTIPLIER.to_le_bytes());
            }
            let mask = vec![0u8; body.len()];
            cfg.add_capability(0x09, &body, &mask)
                .ok_or("no room for the virtio capabilities")?;
        }
        // cap_len, cfg_type, then bar/offset/length/data writable by the driver.
        let mut body = vec![20, CAP_PCI_CFG];
        body.resize(18, 0);
        let mut mask = vec![0u8; 18];
        for at in [PCI_CFG_BAR]
            .into_iter()
            .chain(PCI_CFG_OFFSET..PCI_CFG_OFFSET + 12)
        {
            mask[at - 2] = 0xff;
        }
        let pci_cfg_cap = cfg
            .add_capability(0x09, &body, &mask)
            .ok_or("no room for the virtio capabilities")?;
        let isr = Arc::new(AtomicU8::new(0));
        let pending = isr.clone();
        let intx = irq
            .intx(
                intx_gsi,
                Arc::new(move || pending.load(Ordering::SeqCst) != 0),
            )
            .ok();
        let shared = Arc::new(Shared {
            isr,
            status: AtomicU8::new(0),
            generation: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..nq).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            msix: Arc::new(Mutex::new(msix)),
            intx,
        });
        let mut kicks = Vec::new();
        for _ in 0..nq {
            kicks.push(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
        }
        let offered = dev.features();
        let queues = dev
            .queue_max_sizes()
            .into_iter()
            .map(QueueConfig::new)
            .collect();
        Ok(VirtioPci {
            cfg,
            dev,
            mem,
            qimpl,
            shared,
            queues,
            kicks,
            offered,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            active: false,
            vm,
            ioevents: Vec::new(),
            rom: Vec::new(),
            pci_cfg_cap,
        })
    }

    /// Give the function an expansion ROM (an option ROM such as iPXE's). Call it before
    /// the device is added to the bus, which places the ROM BAR.
    pub fn set_rom(&mut self, image: Vec<u8>) {
        let size = (image.len() as u64).max(2048).next_power_of_two();
        self.cfg.set_rom(size);
        self.rom = image;
    }

    fn touches_pci_cfg_data(&self, off: usize, len: usize) -> bool {
        let window = self.pci_cfg_cap + PCI_CFG_DATA;
        off < window + 4 && off + len > window
    }

    /// The BAR access the PCI_CFG capability selects: (BAR, offset, length). None when the
    /// driver set an invalid one (length not 1, 2 or 4, offset not aligned to it, a BAR
    /// this device lacks, beyond the BAR's end); the spec lets the device ignore those.
    fn pci_cfg_access(&self) -> Option<(usize, u64, usize)> {
        let c = self.pci_cfg_cap;
        let bar = self.cfg.u8(c + PCI_CFG_BAR) as usize;
        let at = self.cfg.u32(c + PCI_CFG_OFFSET);
        let len = self.cfg.u32(c + PCI_CFG_LENGTH) as usize;
        let size = match bar {
            LEGACY_BAR => LEGACY_BAR_SIZE,
            MSIX_BAR => MSIX_BAR_SIZE,
            MODERN_BAR => MODERN_BAR_SIZE,
            _ => 0,
        };
        // Inside the BAR, as a memory or I/O access to it would be.
        let valid =
            matches!(len, 1 | 2 | 4) && at as usize % len == 0 && at as u64 + len as u64 <= size;
        valid.then_some((bar, at as u64, len))
    }

    /// The driver-visible device status.
    pub fn status(&self) -> u8 {
        self.shared.status.load(Ordering::SeqCst)
    }

    /// The interrupt path, for the device's own configuration-change events.
    pub fn signal(&self) -> Arc<dyn Signal> {
        self.shared.clone()
    }

    fn reset(&mut self) {
        self.dev.reset();
        self.active = false;
        self.shared.status.store(0, Ordering::SeqCst);
        self.shared.isr.store(0, Ordering::SeqCst);
        self.shared.config_vector.store(NO_VECTOR, Ordering::SeqCst);
        for v in &self.shared.queue_vectors {
            v.store(NO_VECTOR, Ordering::SeqCst);
        }
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        for k in &self.kicks {
            k.drain();
        }
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
    }

    fn set_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status();
        let mut new = v | (old & S_NEEDS_RESET);
        if new & S_FEATURES_OK != 0
            && old & S_FEATURES_OK == 0
            && self.driver_features & !self.offered != 0
        {
            // The driver accepted features that were not offered: refuse FEATURES_OK.
            new &= !S_FEATURES_OK;
        }
        self.shared.status.store(new, Ordering::SeqCst);
        if new & S_DRIVER_OK != 0 && old & S_DRIVER_OK == 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & super::F_RING_EVENT_IDX != 0;
        let mut qs = Vec::new();
        for c in &self.queues {
            if !c.ready {
                qs.push(None);
                continue;
            }
            match queue::new_queue(self.qimpl, self.mem.clone(), c, event_idx) {
                Ok(q) => qs.push(Some(q)),
                Err(_) => {
                    self.shared.needs_reset();
                    return;
                }
            }
        }
        let mut kicks = Vec::new();
        for k in &self.kicks {
            match k.try_clone() {
                Ok(k) => kicks.push(k),
                Err(_) => {
                    self.shared.needs_reset();
                    return;
                }
            }
        }
        self.sync_ioevents();
        let a = Activation {
            mem: self.mem.clone(),
            queues: qs,
            kicks,
            signal: self.shared.clone(),
            features: self.driver_features & self.offered,
        };
        match self.dev.activate(a) {
            Ok(()) => self.active = true,
            Err(_) => self.shared.needs_reset(),
        }
    }

    /// The notify writes KVM should turn into kicks, given where the BARs are and which
    /// spaces the command register enables: per queue, its modern notify address (MMIO)
    /// and the legacy notify port with the queue number as datamatch.
    fn wanted_ioevents(&self) -> Vec<(usize, IoEvent)> {
        let mut v = Vec::new();
        let cmd = self.cfg.command();
        let modern = self
            .cfg
            .bar_address(MODERN_BAR)
            .filter(|b| *b != 0 && cmd & COMMAND_MEMORY != 0);
        let legacy = self
            .cfg
            .bar_address(LEGACY_BAR)
            .filter(|b| *b != 0 && cmd & COMMAND_IO != 0);
        for q in 0..self.kicks.len() {
            if let Some(base) = modern {
                v.push((
                    q,
                    IoEvent {
                        addr: base + NOTIFY_OFFSET + NOTIFY_MULTIPLIER as u64 * q as u64,
                        len: 2,
                        pio: false,
                        datamatch: None,
                    },
                ));
            }
            if let Some(base) = legacy {
                v.push((
                    q,
                    IoEvent {
                        addr: base + LEGACY_NOTIFY,
                        len: 2,
                        pio: true,
                        datamatch: Some(q as u64),
                    },
                ));
            }
        }
        v
    }

    /// Bring KVM's ioeventfds in line with [`Self::wanted_ioevents`]: a moved or disabled BAR
    /// loses its registrations (a stale one would swallow writes meant for whatever sits
    /// there now). A registration KVM refuses leaves that notify to the userspace path.
    fn sync_ioevents(&mut self) {
        let Some(vm) = self.vm.clone() else { return };
        let wanted = self.wanted_ioevents();
        let mut kept = Vec::new();
        for (q, ev) in std::mem::take(&mut self.ioevents) {
            let fd = self.kicks.get(q).map(|k| k.as_raw_fd());
            match fd {
                Some(fd) if !wanted.contains(&(q, ev)) => {
                    let _ = vm.unregister_ioeventfd(fd, &ev);
                }
                Some(_) => kept.push((q, ev)),
                None => {}
            }
        }
        for (q, ev) in wanted {
            if kept.contains(&(q, ev)) {
                continue;
            }
            if let Some(k) = self.kicks.get(q) {
                if vm.register_ioeventfd(k.as_raw_fd(), &ev).is_ok() {
                    kept.push((q, ev));
                }
            }
        }
        self.ioevents = kept;
    }

    fn notify(&self, q: u64) {
        if let Some(k) = usize::try_from(q).ok().and_then(|q| self.kicks.get(q)) {
            k.signal();
        }
    }

    fn selected(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn valid_vector(&self, v: u16) -> u16 {
        if v == NO_VECTOR || v < lock(&self.shared.msix).len() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn common_bytes(&self) -> [u8; bits::const_usize(COMMON_SIZE)] {
        let mut b = [0u8; bits::const_usize(COMMON_SIZE)];
        let put = |b: &mut [u8], off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(&mut b, 0x00, &self.device_feature_select.to_le_bytes());
        let f = match self.device_feature_select {
            0 => bits::lo32(self.offered),
            1 => bits::hi32(self.offered),
            _ => 0,
        };
        put(&mut b, 0x04, &f.to_le_bytes());
        put(&mut b, 0x08, &self.driver_feature_select.to_le_bytes());
        let d = match self.driver_feature_select {
            0 => bits::lo32(self.driver_features),
            1 => bits::hi32(self.driver_features),
            _ => 0,
        };
        put(&mut b, 0x0c, &d.to_le_bytes());
        put(
            &mut b,
            0x10,
            &self
                .shared
                .config_vector
                .load(Ordering::SeqCst)
                .to_le_bytes(),
        );
        // A few queues: the fallback is never taken.
        let nq = u16::try_from(self.queues.len()).unwrap_or(u16::MAX);
        put(&mut b, 0x12, &nq.to_le_bytes());
        b[0x14] = self.status();
        b[0x15] = self.shared.generation.load(Ordering::SeqCst);
        put(&mut b, 0x16, &self.queue_select.to_le_bytes());
        if let Some(q) = self.queues.get(self.queue_select as usize) {
            let qs = self.queue_select as usize;
            put(&mut b, 0x18, &q.size.to_le_bytes());
            let v = self.shared.queue_vectors[qs].load(Ordering::SeqCst);
            put(&mut b, 0x1a, &v.to_le_bytes());
            put(&mut b, 0x1c, &(q.ready as u16).to_le_bytes());
            put(&mut b, 0x1e, &self.queue_select.to_le_bytes());
            put(&mut b, 0x20, &q.desc_table.to_le_bytes());
            put(&mut b, 0x28, &q.avail_ring.to_le_bytes());
            put(&mut b, 0x30, &q.used_ring.to_le_bytes());
        }
        b
    }

    fn read_common(&self, off: u64, data: &mut [u8]) {
        let b = self.common_bytes();
        for (k, d) in data.iter_mut().enumerate() {
            *d = crate::devices::reg_byte(&b, off, k).unwrap_or(0);
        }
    }

    fn write_common(&mut self, off: u64, data: &[u8]) {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(raw);
        let locked = self.status() & (S_FEATURES_OK | S_DRIVER_OK) != 0;
        // `v` holds the data.len() bytes written: each arm takes the width it matched.
        match (off, data.len()) {
            (0x00, 4) => self.device_feature_select = bits::lo32(v),
            (0x08, 4) => self.driver_feature_select = bits::lo32(v),
            (0x0c, 4) if !locked => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            (0x10, 2) => {
                let v = self.valid_vector(bits::lo16(v));
                self.shared.config_vector.store(v, Ordering::SeqCst);
            }
            (0x14, 1) => self.set_status(bits::lo8(v)),
            (0x16, 2) => self.queue_select = bits::lo16(v),
            (0x18, 2) if !self.active => {
                if let Some(q) = self.selected() {
                    q.size = bits::lo16(v);
                }
            }
            (0x1a, 2) => {
                let vec = self.valid_vector(bits::lo16(v));
                if let Some(qv) = self.shared.queue_vectors.get(self.queue_select as usize) {
                    qv.store(vec, Ordering::SeqCst);
                }
            }
            (0x1c, 2) if !self.active => {
                if let Some(q) = self.selected() {
                    q.ready = v & 1 == 1;
                }
            }
            (0x20..=0x37, 4 | 8) if !self.active && off % 4 == 0 => {
                let Some(q) = self.selected() else { return };
                let field = match off & !7 {
                    0x20 => &mut q.desc_table,
                    0x28 => &mut q.avail_ring,
                    _ => &mut q.used_ring,
                };
                if data.len() == 8 {
                    *field = v;
                } else if off % 8 == 0 {
                    *field = (*field & !0xffff_ffff) | v;
                } else {
                    *field = (*field & 0xffff_ffff) | (v << 32);
                }
            }
            _ => {} // read-only or malformed: ignored
        }
    }

    fn legacy_header_len(&self) -> usize {
        if lock(&self.shared.msix).enabled() {
            0x18
        } else {
            0x14
        }
    }

    fn read_legacy(&mut self, off: u64, data: &mut [u8]) {
        if off == 0x13 && data.len() == 1 {
            data[0] = self.shared.isr.swap(0, Ordering::SeqCst);
            return;
        }
        let hdr = self.legacy_header_len();
        let mut b = vec![0u8; hdr];
        // Legacy devices have the low 32 feature bits only.
        b[0..4].copy_from_slice(&bits::lo32(self.offered).to_le_bytes());
        b[4..8].copy_from_slice(&bits::lo32(self.driver_features).to_le_bytes());
        if let Some(q) = self.queues.get(self.queue_select as usize) {
            // The 32-bit page frame number register.
            b[8..12].copy_from_slice(&bits::lo32(q.desc_table >> 12).to_le_bytes());
            b[12..14].copy_from_slice(&q.max_size.to_le_bytes());
        }
        b[14..16].copy_from_slice(&self.queue_select.to_le_bytes());
        b[0x12] = self.status();
        if hdr == 0x18 {
            let cv = self.shared.config_vector.load(Ordering::SeqCst);
            b[0x14..0x16].copy_from_slice(&cv.to_le_bytes());
            let qv = self
                .shared
                .queue_vectors
                .get(self.queue_select as usize)
                .map(|v| v.load(Ordering::SeqCst))
                .unwrap_or(NO_VECTOR);
            b[0x16..0x18].copy_from_slice(&qv.to_le_bytes());
        }
        b.extend_from_slice(&self.dev.config());
        for (k, d) in data.iter_mut().enumerate() {
            *d = crate::devices::reg_byte(&b, off, k).unwrap_or(0xff);
        }
    }

    fn write_legacy(&mut self, off: u64, data: &[u8]) {
        let mut raw = [0u8; 4];
        let n = data.len().min(4);
        raw[..n].copy_from_slice(&data[..n]);
        let v = u32::from_le_bytes(raw);
        let hdr = self.legacy_header_len();
        match (off, data.len()) {
            (0x04, 4) if self.status() & S_DRIVER_OK == 0 => {
                self.driver_features = v as u64 & self.offered;
            }
            (0x08, 4) if !self.active => {
                let qs = self.queue_select;
                if let Some(q) = self.queues.get_mut(qs as usize) {
                    let size = q.max_size as u64;
                    let desc = (v as u64) << 12;
                    let avail = desc + 16 * size;
                    let used = (avail + 6 + 2 * size + 0xfff) & !0xfff;
                    q.size = q.max_size;
                    q.desc_table = desc;
                    q.avail_ring = avail;
                    q.used_ring = used;
                    q.ready = v != 0;
                }
            }
            (0x0e, 2) => self.queue_select = bits::lo16(v),
            (LEGACY_NOTIFY, 2) => self.notify(v as u64),
            (0x12, 1) => self.set_status(bits::lo8(v)),
            (0x14, 2) if hdr == 0x18 => {
                let v = self.valid_vector(bits::lo16(v));
                self.shared.config_vector.store(v, Ordering::SeqCst);
            }
            (0x16, 2) if hdr == 0x18 => {
                let vec = self.valid_vector(bits::lo16(v));
                if let Some(qv) = self.shared.queue_vectors.get(self.queue_select as usize) {
                    qv.store(vec, Ordering::SeqCst);
                }
            }
            _ if off >= hdr as u64 => self.dev.write_config(off - hdr as u64, data),
            _ => {}
        }
    }
}

impl PciDevice for VirtioPci {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn config_read(&mut self, off: usize, data: &mut [u8]) {
        if self.touches_pci_cfg_data(off, data.len()) {
            if let Some((bar, at, len)) = self.pci_cfg_access() {
                let mut v = [0u8; 4];
                self.bar_read(bar, at, &mut v[..len]);
                self.cfg.set_bytes(self.pci_cfg_cap + PCI_CFG_DATA, &v);
            }
        }
        self.cfg.read(off, data);
    }
    fn config_write(&mut self, off: usize, data: &[u8]) {
        self.cfg.write(off, data);
        lock(&self.shared.msix).config_written(&self.cfg);
        if self.active || !self.ioevents.is_empty() {
            // A BAR moved or a space was switched off under registered notify writes.
            self.sync_ioevents();
        }
        if self.touches_pci_cfg_data(off, data.len()) {
            if let Some((bar, at, len)) = self.pci_cfg_access() {
                let w = self.cfg.u32(self.pci_cfg_cap + PCI_CFG_DATA).to_le_bytes();
                self.bar_write(bar, at, &w[..len]);
            }
        }
    }
    fn rom(&self) -> &[u8] {
        &self.rom
    }

    fn bar_read(&mut self, bar: usize, off: u64, data: &mut [u8]) {
        match bar {
            LEGACY_BAR => self.read_legacy(off, data),
            MSIX_BAR => {
                let m = lock(&self.shared.msix);
                if off < MSIX_PBA_OFFSET {
                    m.read_table(off, data)
                } else {
                    m.read_pba(off - MSIX_PBA_OFFSET, data)
                }
            }
            MODERN_BAR => match off {
                o if o < COMMON_SIZE => self.read_common(o, data),
                o if (ISR_OFFSET..ISR_OFFSET + 4).contains(&o) => {
                    data.fill(0);
                    if let (ISR_OFFSET, Some(b)) = (o, data.first_mut()) {
                        *b = self.shared.isr.swap(0, Ordering::SeqCst);
                    }
                }
                o if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                    let c = self.dev.config();
                    for (k, d) in data.iter_mut().enumerate() {
                        *d = crate::devices::reg_byte(&c, o - DEVICE_OFFSET, k).unwrap_or(0);
                    }
                }
                _ => data.fill(0),
            },
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: usize, off: u64, data: &[u8]) {
        match bar {
            LEGACY_BAR => self.write_legacy(off, data),
            MSIX_BAR => {
                let mut m = lock(&self.shared.msix);
                if off < MSIX_PBA_OFFSET {
                    m.write_table(off, data);
                }
            }
            MODERN_BAR => match off {
                o if o < COMMON_SIZE => self.write_common(o, data),
                o if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                    self.dev.write_config(o - DEVICE_OFFSET, data)
                }
                o if o >= NOTIFY_OFFSET => {
                    self.notify((o - NOTIFY_OFFSET) / NOTIFY_MULTIPLIER as u64)
                }
                _ => {}
            },
            _ => {}
        }
    }
}

impl Drop for VirtioPci {
    fn drop(&mut self) {
        self.dev.reset();
    }
}

#[cfg(test)]
mod tests;
