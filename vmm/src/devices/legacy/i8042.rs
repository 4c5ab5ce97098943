//! Just enough of the i8042 keyboard controller for a guest to reset the machine: command
//! 0xFE on port 0x64 pulses the CPU reset line. Status reads say "no data, ready".

use crate::devices::bus::BusDevice;
use crate::vm::{ExitSignal, VmExit};

pub const BASE: u16 = 0x60;
pub const LEN: u64 = 5; // 0x60..=0x64

pub struct I8042 {
    exit: ExitSignal,
    command_byte: u8,
    expecting_command_byte: bool,
}

impl I8042 {
    pub fn new(exit: ExitSignal) -> Self {
        I8042 {
            exit,
            command_byte: 0x45,
            expecting_command_byte: false,
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => {
                if std::mem::take(&mut self.expecting_command_byte) {
                    self.command_byte
                } else {
                    0
                }
            }
            4 => 0x1c, // input buffer empty, system flag set, last write was a command
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match (offset, v) {
            (4, 0xfe) => self.exit.request(VmExit::Reset),
            (4, 0x20) => self.expecting_command_byte = true,
            (0, b) if self.expecting_command_byte => {
                self.command_byte = b;
                self.expecting_command_byte = false;
            }
            _ => {}
        }
    }
}
