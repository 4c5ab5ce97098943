//! The host side of the serial console: raw terminal mode (restored on every exit path) and
//! a thread that forwards stdin to the guest's UART.

use crate::devices::legacy::serial::Serial;
use crate::outcome::Stop;
use crate::sync::lock;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Puts the terminal on stdin into raw mode and restores it when dropped. ISIG stays on so
/// Ctrl-C still reaches fugu as SIGINT and ends the VM.
pub struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    pub fn enable() -> Self {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a properly sized termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawTerminal { saved: None };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawTerminal { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            t.c_lflag |= libc::ISIG;
            t.c_oflag |= libc::OPOST | libc::ONLCR;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            *lock(&SAVED) = Some(saved);
            RawTerminal { saved: Some(saved) }
        }
    }
}

static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Restore the terminal (for panic hooks and early exits).
pub fn restore_terminal() {
    if let Some(t) = lock(&SAVED).take() {
        // SAFETY: restoring attributes previously read from fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.saved.is_some() {
            restore_terminal();
        }
    }
}

/// Forward stdin to the UART until EOF or the VM ends.
pub fn spawn_input(serial: Arc<Mutex<Serial>>, stop: Stop) {
    let _ = std::thread::Builder::new()
        .name("console-in".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Console) {
                eprintln!("fugu: {e}; the console takes no input");
                return;
            }
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while !stop.requested() {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lock(&serial).enqueue_input(&buf[..n]),
                }
            }
        });
}
