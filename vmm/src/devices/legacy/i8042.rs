//! The i8042 keyboard controller with a keyboard that answers but never types: enough for
//! firmware and kernels to probe it quickly (self-test, interface test, keyboard reset and
//! identify, command byte) instead of waiting for timeouts, and for a guest to reset the
//! machine (command 0xFE pulses the CPU reset line). There is no mouse: commands for the aux
//! port answer "resend/error" at once.

use crate::devices::bus::BusDevice;
use crate::devices::ResetHook;
use std::collections::VecDeque;

pub const BASE: u16 = 0x60;
pub const LEN: u64 = 5; // 0x60..=0x64

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;
/// Keyboard not inhibited (the keylock switch is open), as QEMU reports: Linux warns
/// "i8042: Warning: Keylock active" when it reads clear.
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_AUX: u8 = 0x20;

/// What the next byte written to the data port means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A keyboard command.
    Keyboard,
    /// The controller command byte (after 0x60).
    CommandByte,
    /// The output port (after 0xD1): bit 0 clear resets the CPU.
    OutputPort,
    /// A byte for the absent aux device (after 0xD4).
    Aux,
    /// The argument of a keyboard command (LEDs, scancode set, typematic rate).
    KeyboardArg,
}

pub struct I8042 {
    reset: ResetHook,
    command_byte: u8,
    pending: Pending,
    /// Bytes waiting in the output buffer, with whether they come from the aux port.
    out: VecDeque<(u8, bool)>,
    last_was_command: bool,
}

impl I8042 {
    pub fn new(reset: ResetHook) -> Self {
        I8042 {
            reset,
            command_byte: 0x45,
            pending: Pending::Keyboard,
            out: VecDeque::new(),
            last_was_command: false,
        }
    }

    fn push(&mut self, b: u8) {
        // A guest that never reads must not grow our memory.
        if self.out.len() < 16 {
            self.out.push_back((b, false));
        }
    }

    fn controller_command(&mut self, cmd: u8) {
        match cmd {
            0x20 => self.push(self.command_byte),
            0x60 => self.pending = Pending::CommandByte,
            0xaa => self.push(0x55), // self-test passed
            0xab => self.push(0x00), // keyboard interface test passed
            0xa9 => self.push(0xff), // aux interface test: no aux port
            0xd1 => self.pending = Pending::OutputPort,
            0xd4 => self.pending = Pending::Aux,
            0xfe => (self.reset)(),
            // Enable/disable keyboard or aux, and anything else: accepted, no reply.
            _ => {}
        }
    }

    fn data(&mut self, v: u8) {
        match std::mem::replace(&mut self.pending, Pending::Keyboard) {
            Pending::CommandByte => self.command_byte = v,
            Pending::OutputPort => {
                if v & 1 == 0 {
                    (self.reset)();
                }
            }
            Pending::Aux => {
                if self.out.len() < 16 {
                    self.out.push_back((0xfe, true));
                }
            }
            Pending::KeyboardArg => self.push(0xfa),
            Pending::Keyboard => match v {
                0xff => {
                    self.push(0xfa); // ACK
                    self.push(0xaa); // basic assurance test passed
                }
                0xf2 => {
                    self.push(0xfa);
                    self.push(0xab); // MF2 keyboard
                    self.push(0x83);
                }
                0xed | 0xf0 | 0xf3 => {
                    self.push(0xfa);
                    self.pending = Pending::KeyboardArg;
                }
                0xee => self.push(0xee), // echo
                _ => self.push(0xfa),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.out.pop_front().map_or(0, |(b, _)| b),
            4 => {
                let mut s = STATUS_SYS | STATUS_UNLOCKED;
                if let Some((_, aux)) = self.out.front() {
                    s |= STATUS_OBF | if *aux { STATUS_AUX } else { 0 };
                }
                if self.last_was_command {
                    s |= STATUS_CMD;
                }
                s
            }
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            4 => {
                self.last_was_command = true;
                self.controller_command(v);
            }
            0 => {
                self.last_was_command = false;
                self.data(v);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn dev() -> (I8042, Arc<AtomicBool>) {
        let e = Arc::new(AtomicBool::new(false));
        let r = e.clone();
        (
            I8042::new(Arc::new(move || r.store(true, Ordering::SeqCst))),
            e,
        )
    }
    fn status(d: &mut I8042) -> u8 {
        let mut b = [0u8];
        d.read(4, &mut b);
        b[0]
    }
    fn read_data(d: &mut I8042) -> u8 {
        let mut b = [0u8];
        d.read(0, &mut b);
        b[0]
    }

    #[test]
    fn answers_the_probes_firmware_makes() {
        let (mut d, _) = dev();
        assert_eq!(status(&mut d) & STATUS_OBF, 0);
        assert_ne!(status(&mut d) & STATUS_UNLOCKED, 0, "no keylock");
        d.write(4, &[0xaa]);
        assert_ne!(status(&mut d) & STATUS_OBF, 0);
        assert_eq!(read_data(&mut d), 0x55);
        d.write(4, &[0xab]);
        assert_eq!(read_data(&mut d), 0x00);
        d.write(4, &[0x60]);
        d.write(0, &[0x61]);
        d.write(4, &[0x20]);
        assert_eq!(read_data(&mut d), 0x61);
        d.write(0, &[0xff]);
        assert_eq!((read_data(&mut d), read_data(&mut d)), (0xfa, 0xaa));
        d.write(0, &[0xf2]);
        assert_eq!(
            (read_data(&mut d), read_data(&mut d), read_data(&mut d)),
            (0xfa, 0xab, 0x83)
        );
        d.write(0, &[0xed]);
        d.write(0, &[0x07]);
        assert_eq!((read_data(&mut d), read_data(&mut d)), (0xfa, 0xfa));
        assert_eq!(status(&mut d) & STATUS_OBF, 0, "nothing left");
        // No mouse: an aux command answers at once with an error, flagged as aux data.
        d.write(4, &[0xd4]);
        d.write(0, &[0xff]);
        assert_eq!(
            status(&mut d) & (STATUS_OBF | STATUS_AUX),
            STATUS_OBF | STATUS_AUX
        );
        assert_eq!(read_data(&mut d), 0xfe);
    }

    #[test]
    fn reset_through_command_and_output_port() {
        let (mut d, e) = dev();
        d.write(4, &[0xfe]);
        assert!(e.load(Ordering::SeqCst));
        let (mut d, e) = dev();
        d.write(4, &[0xd1]);
        d.write(0, &[0xfe]);
        assert!(e.load(Ordering::SeqCst));
    }

    #[test]
    fn a_guest_that_never_reads_cannot_grow_the_buffer() {
        let (mut d, _) = dev();
        for _ in 0..1000 {
            d.write(0, &[0xff]);
        }
        assert!(d.out.len() <= 16);
    }
}
