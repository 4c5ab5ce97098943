//! The firmware debug console on port 0x402 (QEMU's "debugcon"): SeaBIOS prints its log
//! there once a read of the port returns 0xE9. fugu shows that log on stderr, a line at a
//! time (with seconds since the VM was created), when FUGU_TRACE contains "firmware"; otherwise it is dropped.

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
