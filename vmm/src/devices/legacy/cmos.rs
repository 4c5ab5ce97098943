//! CMOS RTC and NVRAM (ports 0x70/0x71): the wall clock in BCD and the memory size fields
//! that BIOSes and early kernels read (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5b-0x5d).

use crate::devices::bus::BusDevice;
use fugu_common::date::civil_from_days;

pub const BASE: u16 = 0x70;
pub const LEN: u64 = 2;

pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
}

/// Two BCD digits: every clock field is below 100, so the encoding is a byte.
fn bcd(v: u32) -> u8 {
    crate::bits::lo8(((v / 10) << 4) | (v % 10))
}

impl Cmos {
    /// `mem_below_4g` and `mem_above_4g` are the guest's RAM sizes in bytes.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64) -> Self {
        let mut nvram = [0u8; 128];
        // Extended memory between 1 MiB and 64 MiB, in KiB (capped).
        let ext_kb = (mem_below_4g.saturating_sub(1 << 20) / 1024).min(0xfc00) as u16;
        nvram[0x17..0x19].copy_from_slice(&ext_kb.to_le_bytes());
        nvram[0x30..0x32].copy_from_slice(&ext_kb.to_le_bytes());
        nvram[0x15..0x17].copy_from_slice(&640u16.to_le_bytes());
        // Memory above 16 MiB below 4 GiB, in 64 KiB units.
        let above16 = (mem_below_4g.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        nvram[0x34..0x36].copy_from_slice(&above16.to_le_bytes());
        // Memory above 4 GiB, in 64 KiB units (24 bits).
        let high = (mem_above_4g >> 16).min(0xff_ffff) as u32;
        nvram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        nvram[0x0a] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        nvram[0x0b] = 0x02; // 24-hour mode, BCD
        nvram[0x0d] = 0x80; // battery good
        Cmos { index: 0, nvram }
    }

    fn clock_register(&self, index: u8) -> Option<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (y, m, d) = civil_from_days(now.div_euclid(86_400));
        // The clock fields below are small and non-negative: the fallbacks are never taken.
        let secs = u32::try_from(now.rem_euclid(86_400)).unwrap_or(0);
        Some(match index {
            0x00 => bcd(secs % 60),
            0x02 => bcd(secs / 60 % 60),
            0x04 => bcd(secs / 3600),
            0x06 => bcd(u32::try_from((now.div_euclid(86_400) + 4).rem_euclid(7) + 1).unwrap_or(0)),
            0x07 => bcd(d),
            0x08 => bcd(m),
            0x09 => bcd(u32::try_from(y % 100).unwrap_or(0)),
            0x32 => bcd(u32::try_from(y / 100).unwrap_or(0)),
            _ => return None,
        })
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(b) = data.first_mut() else { return };
        *b = match offset {
            0 => self.index,
            _ => {
                let i = self.index & 0x7f;
                self.clock_register(i).unwrap_or(self.nvram[i as usize])
            }
        };
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => self.index = v & 0x7f, // bit 7 is the NMI mask
            _ => {
                let i = (self.index & 0x7f) as usize;
                // The clock and the status registers C/D are read-only here.
                if !matches!(i, 0x00..=0x09 | 0x0c | 0x0d | 0x32) {
                    self.nvram[i] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, idx: u8) -> u8 {
        c.write(0, &[idx]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn reports_memory_size_and_a_bcd_clock() {
        let mut c = Cmos::new(256 << 20, 0);
        let ext = u16::from_le_bytes([read(&mut c, 0x30), read(&mut c, 0x31)]);
        assert_eq!(ext, 0xfc00);
        let above16 = u16::from_le_bytes([read(&mut c, 0x34), read(&mut c, 0x35)]);
        assert_eq!(above16 as u64, (256u64 - 16) << 20 >> 16);
        let month = read(&mut c, 0x08);
        assert!((0x01..=0x12).contains(&month) && month & 0xf <= 9);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
    }
}
