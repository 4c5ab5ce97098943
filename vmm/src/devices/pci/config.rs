//! A type-0 PCI configuration space: the header registers, BARs with sizing, the
//! expansion-ROM BAR, and a capability list. Writes only change bits the register defines as
//! writable; everything else the guest writes is ignored.

use crate::bits;

/// Bytes of conventional configuration space (ECAM reads beyond it return zero).
pub const CONFIG_SIZE: usize = 256;

pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const CLASS_PROG: usize = 0x09;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const SUBSYSTEM_ID: usize = 0x2e;
pub const ROM_BAR: usize = 0x30;
pub const CAP_PTR: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    /// 32-bit memory, non-prefetchable.
    Mem32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub kind: BarKind,
    /// A power of two (I/O: at least 4, memory: at least 16).
    pub size: u64,
}

/// A PCI function's configuration space.
pub struct ConfigSpace {
    data: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
    w1c: [u8; CONFIG_SIZE],
    bars: [Option<Bar>; 6],
    rom_size: u64,
    next_cap: usize,
    last_cap: Option<usize>,
}

impl ConfigSpace {
    /// A header for `vendor:device` of `class` (class << 16 | subclass << 8 | prog-if).
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = ConfigSpace {
            data: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
            w1c: [0; CONFIG_SIZE],
            bars: [None; 6],
            rom_size: 0,
            next_cap: 0x40,
            last_cap: None,
        };
        c.set_u16(VENDOR_ID, vendor);
        c.set_u16(DEVICE_ID, device);
        c.data[REVISION] = revision;
        // Programming interface, subclass, class: the low three bytes of `class`.
        c.data[CLASS_PROG..CLASS_PROG + 3].copy_from_slice(&class.to_le_bytes()[..3]);
        let cmd = COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_INTX_DISABLE;
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&cmd.to_le_bytes());
        // Status: the error bits are write-one-to-clear.
        c.w1c[STATUS + 1] = 0xf9;
        c.wmask[0x0c] = 0xff; // cache line size
        c.wmask[0x0d] = 0xff; // latency timer
        c.wmask[INTERRUPT_LINE] = 0xff;
        c
    }

    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(SUBSYSTEM_VENDOR_ID, vendor);
        self.set_u16(SUBSYSTEM_ID, id);
    }

    /// Declare BAR `i` (not yet placed).
    pub fn set_bar(&mut self, i: usize, bar: Bar) {
        if i < 6 && bar.size.is_power_of_two() {
            let min = if bar.kind == BarKind::Io { 4 } else { 16 };
            self.bars[i] = Some(Bar {
                size: bar.size.max(min),
                ..bar
            });
            let flags = if bar.kind == BarKind::Io { 1 } else { 0 };
            self.set_u32(BAR0 + 4 * i, flags);
        }
    }

    /// Declare an expansion ROM of `size` bytes (a power of two, at least 2 KiB).
    pub fn set_rom(&mut self, size: u64) {
        if size.is_power_of_two() {
            self.rom_size = size.max(2048);
        }
    }

    pub fn bar(&self, i: usize) -> Option<Bar> {
        self.bars.get(i).copied().flatten()
    }

    pub fn bars(&self) -> impl Iterator<Item = (usize, Bar)> + '_ {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|b| (i, b)))
    }

    pub fn rom_size(&self) -> u64 {
        self.rom_size
    }

    /// Where BAR `i` decodes now (the address programmed, without flag bits).
    pub fn bar_address(&self, i: usize) -> Option<u64> {
        let b = self.bar(i)?;
        let v = self.u32(BAR0 + 4 * i) as u64;
        Some(match b.kind {
            BarKind::Io => v & !3,
            BarKind::Mem32 => v & !0xf,
        })
    }

    /// Place BAR `i` at `addr` (as firmware would).
    pub fn set_bar_address(&mut self, i: usize, addr: u64) {
        if let Some(b) = self.bar(i) {
            let flags = if b.kind == BarKind::Io { 1 } else { 0 };
            // A 32-bit BAR: its register holds the low 32 bits.
            let v = bits::lo32(addr) & !(bits::lo32(b.size) - 1);
            self.set_u32(BAR0 + 4 * i, v | flags);
        }
    }

    /// The ROM's address when it is enabled.
    pub fn rom_address(&self) -> Option<u64> {
        let v = self.u32(ROM_BAR);
        (self.rom_size != 0 && v & 1 != 0).then_some((v & !0x7ff) as u64)
    }

    pub fn set_rom_address(&mut self, addr: u64) {
        if self.rom_size != 0 {
            let keep = self.u32(ROM_BAR) & 1;
            // The ROM BAR is a 32-bit register.
            let v = bits::lo32(addr) & !(bits::lo32(self.rom_size) - 1);
            self.set_u32(ROM_BAR, v | keep);
        }
    }

    pub fn command(&self) -> u16 {
        self.u16(COMMAND)
    }

    /// Add a capability: `body` follows the id and next-pointer bytes; `wmask` (same length
    /// as body) says which of its bits the guest may write. Returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], wmask: &[u8]) -> Option<usize> {
        let len = (2 + body.len() + 3) & !3;
        let at = self.next_cap;
        if at + len > CONFIG_SIZE {
            return None;
        }
        self.data[at] = id;
        self.data[at + 1] = 0;
        self.data[at + 2..at + 2 + body.len()].copy_from_slice(body);
        for (i, m) in wmask.iter().enumerate().take(body.len()) {
            self.wmask[at + 2 + i] = *m;
        }
        // Below CONFIG_SIZE (256, checked above): a byte.
        let ptr = bits::lo8(at as u64);
        match self.last_cap {
            Some(prev) => self.data[prev + 1] = ptr,
            None => self.data[CAP_PTR] = ptr,
        }
        self.last_cap = Some(at);
        self.next_cap = at + len;
        let st = self.u16(STATUS) | STATUS_CAP_LIST;
        self.set_u16(STATUS, st);
        Some(at)
    }

    pub fn u8(&self, off: usize) -> u8 {
        self.data.get(off).copied().unwrap_or(0)
    }
    pub fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.u8(off), self.u8(off + 1)])
    }
    pub fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.u8(off),
            self.u8(off + 1),
            self.u8(off + 2),
            self.u8(off + 3),
        ])
    }
    /// Set bytes directly (device-side updates, not subject to the write masks).
    pub fn set_bytes(&mut self, off: usize, v: &[u8]) {
        if let Some(d) = self.data.get_mut(off..off + v.len()) {
            d.copy_from_slice(v);
        }
    }
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.set_bytes(off, &v.to_le_bytes());
    }
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    /// A guest read of `data.len()` bytes at `off`; outside the space reads as zero.
    pub fn read(&self, off: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.u8(off + i);
        }
    }

    /// A guest write. BAR and ROM registers are written as whole dwords (so that sizing
    /// with all ones reads back the size mask); other bytes change only where writable.
    pub fn write(&mut self, off: usize, data: &[u8]) {
        if off >= CONFIG_SIZE || data.is_empty() || data.len() > 4 {
            return;
        }
        let dword = off & !3;
        if (BAR0..BAR0 + 24).contains(&dword) || dword == ROM_BAR {
            let mut v = self.u32(dword).to_le_bytes();
            for (i, b) in data.iter().enumerate() {
                if let Some(slot) = v.get_mut(off - dword + i) {
                    *slot = *b;
                }
            }
            self.write_bar_dword(dword, u32::from_le_bytes(v));
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            let o = off + i;
            if o >= CONFIG_SIZE {
                break;
            }
            let m = self.wmask[o];
            let c = self.w1c[o];
            self.data[o] = ((self.data[o] & !m) | (b & m)) & !(b & c);
        }
    }

    fn write_bar_dword(&mut self, dword: usize, v: u32) {
        if dword == ROM_BAR {
            if self.rom_size == 0 {
                return;
            }
            let mask = !(bits::lo32(self.rom_size) - 1);
            self.set_u32(ROM_BAR, (v & mask) | (v & 1));
            return;
        }
        let i = (dword - BAR0) / 4;
        match self.bars[i] {
            None => {}
            Some(b) => {
                let mask = !(bits::lo32(b.size) - 1);
                let flags = if b.kind == BarKind::Io { 1 } else { 0 };
                self.set_u32(dword, (v & mask) | flags);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let mut c = ConfigSpace::new(0x1af4, 0x1001, 0x010000, 0);
        c.set_bar(
            0,
            Bar {
                kind: BarKind::Io,
                size: 0x40,
            },
        );
        c.set_bar(
            1,
            Bar {
                kind: BarKind::Mem32,
                size: 0x4000,
            },
        );
        c.set_rom(0x10000);
        c
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = space();
        c.write(BAR0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32(BAR0), !0x3f | 1);
        c.write(BAR0 + 4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32(BAR0 + 4), !0x3fff);
        c.write(BAR0 + 8, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32(BAR0 + 8), 0, "an absent BAR stays zero");
        c.write(ROM_BAR, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32(ROM_BAR), !0xffff | 1);
        c.write(BAR0 + 4, &0xc000_1234u32.to_le_bytes());
        assert_eq!(c.bar_address(1), Some(0xc000_0000));
        // A byte write into a BAR keeps the other bytes.
        c.write(BAR0 + 7, &[0xd0]);
        assert_eq!(c.bar_address(1), Some(0xd000_0000));
        c.write(ROM_BAR, &0xe000_0001u32.to_le_bytes());
        assert_eq!(c.rom_address(), Some(0xe000_0000));
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut c = space();
        let before: Vec<u8> = (0..CONFIG_SIZE).map(|i| c.u8(i)).collect();
        for off in [
            VENDOR_ID,
            DEVICE_ID,
            REVISION,
            CLASS_PROG,
            HEADER_TYPE,
            CAP_PTR,
            0x2c,
        ] {
            c.write(off, &[0x55, 0xaa]);
        }
        c.write(INTERRUPT_PIN, &[7]);
        c.write(0x300, &[1]); // outside: ignored
        c.write(0x40, &[1, 2, 3, 4, 5]); // too wide: ignored
        for i in [
            VENDOR_ID,
            DEVICE_ID,
            REVISION,
            CLASS_PROG,
            INTERRUPT_PIN,
            CAP_PTR,
        ] {
            assert_eq!(c.u8(i), before[i], "offset {i:#x}");
        }
        c.write(COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), 0x0407);
        c.write(INTERRUPT_LINE, &[11]);
        assert_eq!(c.u8(INTERRUPT_LINE), 11);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut c = space();
        c.set_u16(STATUS, 0x8000 | STATUS_CAP_LIST);
        c.write(STATUS, &0x0010u16.to_le_bytes());
        assert_eq!(c.u16(STATUS), 0x8000 | STATUS_CAP_LIST);
        c.write(STATUS, &0x8000u16.to_le_bytes());
        assert_eq!(c.u16(STATUS), STATUS_CAP_LIST);
    }

    #[test]
    fn capabilities_are_linked() {
        let mut c = space();
        let a = c.add_capability(0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &[0; 10]);
        let b = c.add_capability(0x09, &[0; 14], &[0xff; 14]);
        assert_eq!(a, Some(0x40));
        assert_eq!(b, Some(0x4c));
        assert_eq!(c.u8(CAP_PTR), 0x40);
        assert_eq!(c.u8(0x41), 0x4c);
        assert_eq!(c.u8(0x4d), 0);
        assert_ne!(c.u16(STATUS) & STATUS_CAP_LIST, 0);
        c.write(0x4e, &[0xab]);
        assert_eq!(c.u8(0x4e), 0xab);
        c.write(0x42, &[0xab]);
        assert_eq!(c.u8(0x42), 1);
    }
}
