//! The firmware debug console on port 0x402 (QEMU's "debugcon"): SeaBIOS prints its log
//! there once a read of the port returns 0xE9. fugu shows that log on stderr, a line at a
//! time (with seconds since the VM was created), when FUGU_TRACE contains "firmware".
//! Otherwise the port reads as absent (0xFF), so SeaBIOS does not log at all: every byte
//! it writes is an exit to fugu, thousands per boot, and on hosts whose KVM emulates the
//! firmware that is a tenth of a second of boot time for a log nobody reads.

use crate::devices::bus::BusDevice;

pub const PORT: u16 = 0x402;
/// What a read returns: the identification SeaBIOS checks before it logs here.
pub const IDENT: u8 = 0xe9;

pub struct DebugCon {
    show: bool,
    line: Vec<u8>,
    start: std::time::Instant,
}

impl DebugCon {
    pub fn new(show: bool) -> Self {
        DebugCon {
            show,
            line: Vec::new(),
            start: std::time::Instant::now(),
        }
    }
}

impl BusDevice for DebugCon {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        if !self.show {
            data.fill(0xff);
            return;
        }
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = IDENT;
        }
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        if !self.show {
            return;
        }
        for &b in data {
            if b == b'\n' || self.line.len() >= 4096 {
                let t = self.start.elapsed().as_secs_f64();
                eprintln!(
                    "fugu: firmware: [{t:7.3}] {}",
                    String::from_utf8_lossy(&self.line)
                );
                self.line.clear();
            } else if b != b'\r' {
                self.line.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_identifies_itself_only_when_the_log_is_shown() {
        let mut b = [0u8; 1];
        DebugCon::new(true).read(0, &mut b);
        assert_eq!(b[0], IDENT, "SeaBIOS logs here");
        DebugCon::new(false).read(0, &mut b);
        assert_eq!(b[0], 0xff, "reads as no device: SeaBIOS stays silent");
    }
}
