//! Bus 0: device slots, BAR allocation, configuration access (mechanism #1 and ECAM) and the
//! routing of BAR accesses.

use super::config::{BarKind, COMMAND_IO, COMMAND_MEMORY, INTERRUPT_LINE, INTERRUPT_PIN};
use super::host::HostBridge;
use super::{PciDevice, PciError, IO_BASE, IO_SIZE, MMIO_BASE, MMIO_SIZE};
use crate::devices::bus::BusDevice;
use crate::sync::lock;
use std::sync::{Arc, Mutex};

pub type SharedDevice = Arc<Mutex<dyn PciDevice>>;

/// PCI bus 0. Devices are added before the guest runs; afterwards the bus is shared
/// read-only and each device is locked on its own.
pub struct PciBus {
    slots: Vec<SharedDevice>,
    mmio_next: u64,
    io_next: u64,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

impl PciBus {
    /// A bus with the host bridge at 00:00.0.
    pub fn new() -> Self {
        PciBus {
            slots: vec![Arc::new(Mutex::new(HostBridge::new()))],
            mmio_next: MMIO_BASE,
            io_next: IO_BASE,
        }
    }

    /// Put a chipset-specific host bridge at 00:00.0 instead of the generic one (`--bios`:
    /// the firmware looks for an i440FX there).
    pub fn set_host_bridge(&mut self, dev: SharedDevice) {
        self.slots[0] = dev;
    }

    /// The slot the next [`add`](Self::add) will use.
    pub fn next_slot(&self) -> u8 {
        // At most 32 slots (add() refuses more): the fallback is never taken.
        u8::try_from(self.slots.len()).unwrap_or(u8::MAX)
    }

    pub fn devices(&self) -> &[SharedDevice] {
        &self.slots
    }

    fn alloc(&mut self, kind: BarKind, size: u64) -> Result<u64, PciError> {
        let (next, base, len, what) = match kind {
            BarKind::Io => (&mut self.io_next, IO_BASE, IO_SIZE, "I/O"),
            BarKind::Mem32 => (&mut self.mmio_next, MMIO_BASE, MMIO_SIZE, "memory"),
        };
        let at = align_up(*next, size).ok_or(PciError::NoSpace { what, size })?;
        if at + size > base + len {
            return Err(PciError::NoSpace { what, size });
        }
        *next = at + size;
        Ok(at)
    }

    /// Plug `dev` into the next slot, placing its BARs and ROM as firmware would and
    /// routing INTA# to [`super::intx_gsi`]. Returns the slot.
    pub fn add(&mut self, dev: SharedDevice) -> Result<u8, PciError> {
        if self.slots.len() >= 32 {
            return Err(PciError::BusFull);
        }
        let slot = u8::try_from(self.slots.len()).map_err(|_| PciError::BusFull)?;
        {
            let mut d = lock(&dev);
            let bars: Vec<_> = d.config().bars().collect();
            for (i, b) in bars {
                let at = self.alloc(b.kind, b.size)?;
                d.config_mut().set_bar_address(i, at);
            }
            let rom = d.config().rom_size();
            if rom != 0 {
                let at = self.alloc(BarKind::Mem32, rom)?;
                d.config_mut().set_rom_address(at);
            }
            if d.config().u8(INTERRUPT_PIN) != 0 {
                // An IOAPIC input (below 24); 0xff is PCI's "unknown" should it not fit.
                let gsi = u8::try_from(super::intx_gsi(slot)).unwrap_or(0xff);
                d.config_mut().set_bytes(INTERRUPT_LINE, &[gsi]);
            }
            d.placed();
        }
        self.slots.push(dev);
        Ok(slot)
    }

    /// A configuration read; absent functions read as all ones.
    pub fn config_read(&self, bus: u8, dev: u8, func: u8, off: usize, data: &mut [u8]) {
        match self.function(bus, dev, func) {
            Some(d) => lock(d).config_read(off, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write; writes to absent functions are dropped.
    pub fn config_write(&self, bus: u8, dev: u8, func: u8, off: usize, data: &[u8]) {
        if let Some(d) = self.function(bus, dev, func) {
            lock(d).config_write(off, data);
        }
    }

    fn function(&self, bus: u8, dev: u8, func: u8) -> Option<&SharedDevice> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(dev as usize)
    }

    /// Route a memory access to the BAR or ROM that decodes `addr`.
    fn route_mmio(
        &self,
        addr: u64,
        len: usize,
        f: &mut dyn FnMut(&mut dyn PciDevice, Target),
    ) -> bool {
        for d in &self.slots {
            let mut d = lock(d);
            if d.config().command() & COMMAND_MEMORY == 0 {
                continue;
            }
            let hit = d.config().bars().find_map(|(i, b)| {
                let base = d.config().bar_address(i)?;
                (b.kind == BarKind::Mem32 && base != 0 && addr >= base && addr - base < b.size)
                    .then(|| Target::Bar(i, addr - base))
            });
            let hit = hit.or_else(|| {
                let base = d.config().rom_address()?;
                let size = d.config().rom_size();
                (addr >= base && addr - base < size).then(|| Target::Rom(addr - base))
            });
            if let Some(t) = hit {
                let _ = len;
                f(&mut *d, t);
                return true;
            }
        }
        false
    }

    fn route_io(&self, port: u64, f: &mut dyn FnMut(&mut dyn PciDevice, usize, u64)) -> bool {
        for d in &self.slots {
            let mut d = lock(d);
            if d.config().command() & COMMAND_IO == 0 {
                continue;
            }
            let hit = d.config().bars().find_map(|(i, b)| {
                let base = d.config().bar_address(i)?;
                (b.kind == BarKind::Io && base != 0 && port >= base && port - base < b.size)
                    .then(|| (i, port - base))
            });
            if let Some((i, off)) = hit {
                f(&mut *d, i, off);
                return true;
            }
        }
        false
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        let len = data.len();
        let hit = self.route_mmio(addr, len, &mut |d, t| match t {
            Target::Bar(i, off) => d.bar_read(i, off, data),
            Target::Rom(off) => {
                let rom = d.rom();
                for (k, b) in data.iter_mut().enumerate() {
                    *b = usize::try_from(off)
                        .ok()
                        .and_then(|o| rom.get(o + k))
                        .copied()
                        .unwrap_or(0xff);
                }
            }
        });
        if !hit {
            data.fill(0xff);
        }
        hit
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.route_mmio(addr, data.len(), &mut |d, t| {
            if let Target::Bar(i, off) = t {
                d.bar_write(i, off, data)
            }
        })
    }

    pub fn io_read(&self, port: u64, data: &mut [u8]) -> bool {
        let hit = self.route_io(port, &mut |d, i, off| d.bar_read(i, off, data));
        if !hit {
            data.fill(0xff);
        }
        hit
    }

    pub fn io_write(&self, port: u64, data: &[u8]) -> bool {
        self.route_io(port, &mut |d, i, off| d.bar_write(i, off, data))
    }
}

enum Target {
    Bar(usize, u64),
    Rom(u64),
}

/// Configuration mechanism #1 at ports 0xCF8 (address) and 0xCFC-0xCFF (data).
pub struct ConfigIo {
    bus: Arc<PciBus>,
    address: u32,
    /// The PIIX reset control register at 0xCF9 (`--bios` machines), when set.
    reset: Option<ResetHook>,
}

pub use crate::devices::ResetHook;

impl ConfigIo {
    pub fn new(bus: Arc<PciBus>) -> Self {
        ConfigIo {
            bus,
            address: 0,
            reset: None,
        }
    }

    /// Decode byte writes to 0xCF9 as the PIIX reset control register: bit 2 (RST_CPU)
    /// set calls `reset`.
    pub fn with_reset(mut self, reset: ResetHook) -> Self {
        self.reset = Some(reset);
        self
    }

    fn target(&self, byte: usize) -> Option<(u8, u8, u8, usize)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 {
            return None;
        }
        Some((
            a.to_le_bytes()[2], // bits 23:16, the bus
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 7) as u8,
            (a & 0xfc) as usize + byte,
        ))
    }
}

impl BusDevice for ConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            let v = self.address.to_le_bytes();
            for (k, b) in data.iter_mut().enumerate() {
                *b = crate::devices::reg_byte(&v, offset, k).unwrap_or(0xff);
            }
            return;
        }
        let byte = usize::try_from(offset - 4).ok();
        match byte.and_then(|byte| Some((byte, self.target(byte)?))) {
            Some((byte, (b, d, f, off))) if byte + data.len() <= 4 => {
                self.bus.config_read(b, d, f, off, data)
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() == 4 {
            self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            return;
        }
        if offset == 1 && data.len() == 1 && data[0] & 4 != 0 {
            if let Some(reset) = &self.reset {
                reset();
            }
        }
        if offset < 4 {
            return; // byte writes to 0xCF8-0xCFB are not the address register
        }
        let Ok(byte) = usize::try_from(offset - 4) else {
            return;
        };
        if let Some((b, d, f, off)) = self.target(byte) {
            if byte + data.len() <= 4 {
                self.bus.config_write(b, d, f, off, data);
            }
        }
    }
}

/// ECAM: bus 0's configuration spaces as memory (4 KiB per function).
pub struct Ecam {
    bus: Arc<PciBus>,
}

impl Ecam {
    pub fn new(bus: Arc<PciBus>) -> Self {
        Ecam { bus }
    }
    fn decode(off: u64, len: usize) -> Option<(u8, u8, u8, usize)> {
        let reg = (off & 0xfff) as usize;
        // An access must stay inside one dword.
        if len == 0 || len > 4 || (reg % 4) + len > 4 {
            return None;
        }
        Some((
            crate::bits::lo8(off >> 20), // the bus: the window covers bus 0 only
            ((off >> 15) & 0x1f) as u8,
            ((off >> 12) & 7) as u8,
            reg,
        ))
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::decode(offset, data.len()) {
            Some((b, d, f, reg)) => self.bus.config_read(b, d, f, reg, data),
            None => data.fill(0xff),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((b, d, f, reg)) = Self::decode(offset, data.len()) {
            self.bus.config_write(b, d, f, reg, data);
        }
    }
}

/// The 32-bit memory window where BARs decode.
pub struct MmioWindow {
    bus: Arc<PciBus>,
    base: u64,
}

impl MmioWindow {
    pub fn new(bus: Arc<PciBus>) -> Self {
        MmioWindow {
            bus,
            base: MMIO_BASE,
        }
    }

    /// A window registered at `base` instead of [`MMIO_BASE`] (`--bios`: the firmware
    /// places BARs anywhere in 0x80000000-0xFEC00000).
    pub fn at(bus: Arc<PciBus>, base: u64) -> Self {
        MmioWindow { bus, base }
    }
}

impl BusDevice for MmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bus.mmio_read(self.base + offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bus.mmio_write(self.base + offset, data);
    }
}

/// The I/O window where I/O BARs decode.
pub struct IoWindow {
    bus: Arc<PciBus>,
}

impl IoWindow {
    pub fn new(bus: Arc<PciBus>) -> Self {
        IoWindow { bus }
    }
}

impl BusDevice for IoWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bus.io_read(IO_BASE + offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bus.io_write(IO_BASE + offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{Bar, ConfigSpace, COMMAND, ROM_BAR};
    use super::super::ECAM_SIZE;
    use super::*;

    /// A device with an I/O BAR, a memory BAR and a ROM that remembers what was written.
    struct Scratch {
        cfg: ConfigSpace,
        mem: [u8; 64],
        rom: Vec<u8>,
    }

    impl Scratch {
        fn new() -> Self {
            let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xff_00_00, 1);
            cfg.set_bar(
                0,
                Bar {
                    kind: BarKind::Io,
                    size: 0x20,
                },
            );
            cfg.set_bar(
                2,
                Bar {
                    kind: BarKind::Mem32,
                    size: 0x1000,
                },
            );
            cfg.set_rom(0x800);
            cfg.set_bytes(INTERRUPT_PIN, &[1]);
            Scratch {
                cfg,
                mem: [0; 64],
                rom: b"\x55\xaaROM".to_vec(),
            }
        }
    }

    impl PciDevice for Scratch {
        fn config(&self) -> &ConfigSpace {
            &self.cfg
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.cfg
        }
        fn bar_read(&mut self, bar: usize, off: u64, data: &mut [u8]) {
            for (k, b) in data.iter_mut().enumerate() {
                *b = crate::devices::reg_byte(&self.mem, off, k).unwrap_or(0)
                    ^ crate::bits::lo8(bar as u64);
            }
        }
        fn bar_write(&mut self, _bar: usize, off: u64, data: &[u8]) {
            for (k, b) in data.iter().enumerate() {
                let at = usize::try_from(off).unwrap() + k;
                if let Some(m) = self.mem.get_mut(at) {
                    *m = *b;
                }
            }
        }
        fn rom(&self) -> &[u8] {
            &self.rom
        }
    }

    fn bus() -> Arc<PciBus> {
        let mut b = PciBus::new();
        assert_eq!(b.add(Arc::new(Mutex::new(Scratch::new()))).unwrap(), 1);
        Arc::new(b)
    }

    fn cf8(io: &mut ConfigIo, dev: u8, reg: u32) {
        io.write(0, &(0x8000_0000 | ((dev as u32) << 11) | reg).to_le_bytes());
    }

    #[test]
    fn mechanism_one_reads_ids_and_absent_slots() {
        let b = bus();
        let mut io = ConfigIo::new(b.clone());
        cf8(&mut io, 0, 0);
        let mut v = [0u8; 4];
        io.read(4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x0008_1b36, "host bridge");
        cf8(&mut io, 1, 0);
        io.read(4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x5678_1234);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x5678, "word at 0xCFE");
        cf8(&mut io, 7, 0);
        io.read(4, &mut v);
        assert_eq!(v, [0xff; 4], "empty slot");
        io.write(0, &0x0000_0800u32.to_le_bytes()); // enable bit clear
        io.read(4, &mut v);
        assert_eq!(v, [0xff; 4]);
        let mut a = [0u8; 4];
        io.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 0x800);
        // Interrupt line routed by slot.
        cf8(&mut io, 1, 0x3c);
        io.read(4, &mut v);
        assert_eq!(v[0] as u32, crate::devices::pci::intx_gsi(1));
        assert_eq!(v[1], 1);
    }

    #[test]
    fn ecam_matches_mechanism_one() {
        let b = bus();
        let mut e = Ecam::new(b.clone());
        let mut v = [0u8; 4];
        e.read(1 << 15, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x5678_1234);
        e.read((1 << 15) + 0x10, &mut v);
        assert_eq!(u32::from_le_bytes(v) & !0x1f, 0xc000);
        e.read((1 << 15) + 3, &mut v); // crosses a dword: all ones
        assert_eq!(v, [0xff; 4]);
        e.read((2 << 15) + 0x100, &mut v);
        assert_eq!(v, [0xff; 4]);
        e.read((1 << 15) | 0x100, &mut v);
        assert_eq!(v, [0; 4], "extended space of a present function reads zero");
        e.read(ECAM_SIZE - 4, &mut v);
        assert_eq!(v, [0xff; 4]);
    }

    #[test]
    fn bars_are_placed_and_decode_only_when_enabled() {
        let b = bus();
        let mut e = Ecam::new(b.clone());
        let dev = 1u64 << 15;
        let mut v = [0u8; 4];
        e.read(dev + 0x18, &mut v);
        let mem = u32::from_le_bytes(v) as u64;
        assert!((MMIO_BASE..MMIO_BASE + MMIO_SIZE).contains(&mem));
        assert_eq!(mem % 0x1000, 0);
        e.read(dev + 0x10, &mut v);
        let io = (u32::from_le_bytes(v) & !3) as u64;
        assert_eq!(io, IO_BASE);
        let mut mw = MmioWindow::new(b.clone());
        let mut iw = IoWindow::new(b.clone());
        mw.write(mem - MMIO_BASE + 4, &[9]);
        let mut x = [0u8; 1];
        mw.read(mem - MMIO_BASE + 4, &mut x);
        assert_eq!(x, [0xff], "memory decoding is off");
        e.write(dev + COMMAND as u64, &3u16.to_le_bytes());
        mw.write(mem - MMIO_BASE + 4, &[9]);
        mw.read(mem - MMIO_BASE + 4, &mut x);
        assert_eq!(x, [9 ^ 2]);
        iw.read(io - IO_BASE + 4, &mut x);
        assert_eq!(x, [9]);
        // Move the memory BAR: the old address stops decoding, the new one works.
        e.write(dev + 0x18, &0xd000_0000u32.to_le_bytes());
        mw.read(mem - MMIO_BASE + 4, &mut x);
        assert_eq!(x, [0xff]);
        mw.read(0xd000_0004 - MMIO_BASE, &mut x);
        assert_eq!(x, [9 ^ 2]);
        // The ROM decodes once enabled.
        e.read(dev + ROM_BAR as u64, &mut v);
        let rom = (u32::from_le_bytes(v) & !0x7ff) as u64;
        let mut r = [0u8; 2];
        mw.read(rom - MMIO_BASE, &mut r);
        assert_eq!(r, [0xff, 0xff]);
        e.write(dev + ROM_BAR as u64, &((rom as u32) | 1).to_le_bytes());
        mw.read(rom - MMIO_BASE, &mut r);
        assert_eq!(r, [0x55, 0xaa]);
        mw.read(rom - MMIO_BASE + 0x7fe, &mut r);
        assert_eq!(r, [0xff, 0xff], "past the image");
    }

    #[test]
    fn the_bus_fills_up_cleanly() {
        let mut b = PciBus::new();
        for _ in 1..32 {
            b.add(Arc::new(Mutex::new(HostBridge::new()))).unwrap();
        }
        assert!(matches!(
            b.add(Arc::new(Mutex::new(HostBridge::new()))),
            Err(PciError::BusFull)
        ));
    }

    #[test]
    fn hostile_config_accesses_do_not_panic() {
        let b = bus();
        let mut io = ConfigIo::new(b.clone());
        let mut e = Ecam::new(b);
        let mut rng = crate::devices::virtio::testutil::Rng(7);
        for _ in 0..20_000 {
            let off = rng.below(ECAM_SIZE + 64);
            let len = 1 + usize::try_from(rng.below(8)).unwrap();
            let data = rng.next_u64().to_le_bytes();
            e.write(off, &data[..len]);
            let mut r = vec![0u8; len];
            e.read(off, &mut r);
            io.write(rng.below(8), &data[..len.min(4)]);
            io.read(rng.below(8), &mut r[..len.min(4)]);
        }
        // The host bridge's identity survived.
        let mut v = [0u8; 4];
        e.read(0, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x0008_1b36);
    }
}
