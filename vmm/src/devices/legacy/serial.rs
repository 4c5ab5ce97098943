//! An 8250/16550A UART (COM1 at 0x3f8, IRQ 4): transmit to a sink, receive from a queue that
//! the console thread fills, interrupts for "data ready" and "transmitter empty".
//!
//! A guest's console writes one byte per port exit, so the byte's own cost matters: output is
//! buffered until a newline, a full buffer or [`Serial::flush`] (the machine's main loop calls
//! it every few milliseconds, so a prompt without a newline still shows at once to a person),
//! and the interrupt line is only told about changes of its level. Without these each byte
//! also cost a `write` and a `KVM_IRQ_LINE` system call.

use crate::devices::bus::BusDevice;
use std::collections::VecDeque;
use std::io::{BufWriter, Write};

pub const COM1: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const LEN: u64 = 8;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IIR_NONE: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_FIFO: u8 = 0xc0;
const LCR_DLAB: u8 = 0x80;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const MCR_LOOP: u8 = 0x10;
const MCR_OUT2: u8 = 0x08;

/// Raises or lowers the UART's interrupt line.
pub trait IrqLine: Send {
    fn set(&self, level: bool);
}

pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    dll: u8,
    dlm: u8,
    thre_pending: bool,
    rx: VecDeque<u8>,
    out: BufWriter<Box<dyn Write + Send>>,
    irq: Option<Box<dyn IrqLine>>,
    /// The level last given to `irq`; None before the first update.
    irq_level: Option<bool>,
}

/// Bytes held back before a write to the console's sink (a full screen of text).
const OUT_BUFFER: usize = 4096;

impl Serial {
    pub fn new(out: Box<dyn Write + Send>, irq: Option<Box<dyn IrqLine>>) -> Self {
        Serial {
            ier: 0,
            lcr: 0x03,
            mcr: MCR_OUT2,
            scr: 0,
            fcr: 0,
            dll: 0x0c,
            dlm: 0,
            thre_pending: false,
            rx: VecDeque::new(),
            out: BufWriter::with_capacity(OUT_BUFFER, out),
            irq,
            irq_level: None,
        }
    }

    /// Bytes typed on the console, delivered to the guest.
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        // Bound the queue: a guest that never reads must not grow our memory.
        let room = 4096usize.saturating_sub(self.rx.len());
        self.rx.extend(bytes.iter().take(room));
        self.update_irq();
    }

    /// Write out what the guest transmitted since the last newline.
    pub fn flush(&mut self) {
        if !self.out.buffer().is_empty() {
            let _ = self.out.flush();
        }
    }

    fn iir(&self) -> u8 {
        let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
        if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            IIR_RDA | fifo
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE | fifo
        } else {
            IIR_NONE | fifo
        }
    }

    /// Drive the interrupt line from the interrupt state. Like the chip's output pin it only
    /// moves when the state changes: a repeated "high" is not a new edge for an edge-triggered
    /// IOAPIC pin, and a repeated "low" is a system call for nothing.
    fn update_irq(&mut self) {
        let level = self.iir() & IIR_NONE == 0;
        if let Some(irq) = &self.irq {
            if self.irq_level != Some(level) {
                irq.set(level);
                self.irq_level = Some(level);
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let dlab = self.lcr & LCR_DLAB != 0;
        let v = match offset {
            0 if dlab => self.dll,
            0 => {
                let b = self.rx.pop_front().unwrap_or(0);
                self.update_irq();
                b
            }
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let v = self.iir();
                if v & 0x0f == IIR_THRE {
                    self.thre_pending = false;
                    self.update_irq();
                }
                v
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THRE | LSR_TEMT | if self.rx.is_empty() { 0 } else { LSR_DR },
            // Loopback wires OUT/RTS/DTR to the modem inputs; otherwise report DCD, DSR, CTS.
            6 if self.mcr & MCR_LOOP != 0 => (self.mcr & 0x0f) << 4,
            6 => 0xb0,
            7 => self.scr,
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = v,
            0 => {
                if self.mcr & MCR_LOOP != 0 {
                    self.rx.push_back(v);
                } else {
                    let _ = self.out.write_all(&[v]);
                    if v == b'\n' {
                        let _ = self.out.flush();
                    }
                }
                self.thre_pending = true;
                self.update_irq();
            }
            1 if dlab => self.dlm = v,
            1 => {
                // Enabling THRE interrupts with an empty transmitter raises one at once.
                if v & IER_THRE != 0 && self.ier & IER_THRE == 0 {
                    self.thre_pending = true;
                }
                self.ier = v & 0x0f;
                self.update_irq();
            }
            2 => {
                self.fcr = v;
                if v & 0x02 != 0 {
                    self.rx.clear();
                }
                self.update_irq();
            }
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            7 => self.scr = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct Line(Arc<Mutex<Vec<bool>>>);
    impl IrqLine for Line {
        fn set(&self, level: bool) {
            self.0.lock().unwrap().push(level);
        }
    }

    fn rd(s: &mut Serial, off: u64) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    #[test]
    fn transmits_receives_and_interrupts() {
        let sink = Sink::default();
        let levels = Arc::new(Mutex::new(Vec::new()));
        let mut s = Serial::new(Box::new(sink.clone()), Some(Box::new(Line(levels.clone()))));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert_eq!(rd(&mut s, 5) & LSR_DR, 0);
        s.write(1, &[IER_RDA]);
        s.enqueue_input(b"x");
        assert!(*levels.lock().unwrap().last().unwrap());
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_RDA);
        assert_eq!(rd(&mut s, 5) & LSR_DR, LSR_DR);
        assert_eq!(rd(&mut s, 0), b'x');
        assert!(!*levels.lock().unwrap().last().unwrap());
        // Divisor latch access does not transmit.
        s.write(3, &[LCR_DLAB]);
        s.write(0, &[0x01]);
        assert_eq!(rd(&mut s, 0), 0x01);
        assert_eq!(sink.0.lock().unwrap().len(), 3);
        // Loopback echoes into the receiver instead of the sink.
        s.write(3, &[0x03]);
        s.write(4, &[MCR_LOOP]);
        s.write(0, b"L");
        assert_eq!(rd(&mut s, 0), b'L');
        assert_eq!(sink.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn output_waits_for_a_newline_or_a_flush() {
        let sink = Sink::default();
        let mut s = Serial::new(Box::new(sink.clone()), None);
        for b in b"login: " {
            s.write(0, &[*b]);
        }
        assert!(sink.0.lock().unwrap().is_empty());
        s.flush();
        assert_eq!(&*sink.0.lock().unwrap(), b"login: ");
        for b in b"ok\r\nmore" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"login: ok\r\n");
        // A guest that never sends a newline cannot make the buffer grow without bound.
        for _ in 0..3 * OUT_BUFFER {
            s.write(0, b"x");
        }
        assert!(sink.0.lock().unwrap().len() >= 2 * OUT_BUFFER);
    }

    #[test]
    fn the_interrupt_line_is_told_only_about_changes() {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let mut s = Serial::new(
            Box::new(Sink::default()),
            Some(Box::new(Line(levels.clone()))),
        );
        // A polled console (IER = 0): a thousand bytes, the line low throughout.
        for _ in 0..1000 {
            rd(&mut s, 5);
            s.write(0, b"a");
        }
        assert_eq!(*levels.lock().unwrap(), [false]);
        // Interrupt-driven transmit: enabling THRE raises the line once; more bytes written
        // before the guest reads IIR keep it high without new edges.
        s.write(1, &[IER_THRE]);
        s.write(0, b"b");
        s.write(0, b"c");
        assert_eq!(*levels.lock().unwrap(), [false, true]);
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_THRE);
        assert_eq!(*levels.lock().unwrap(), [false, true, false]);
        s.write(0, b"d");
        assert_eq!(*levels.lock().unwrap(), [false, true, false, true]);
    }
}
