//! ACPI fixed hardware at ports 0x600-0x60B (where QEMU's PIIX4 puts it), announced by the
//! FADT (acpi/mod.rs):
//!
//! - 0x600 PM1a status (write 1 to clear) and 0x602 PM1a enable: the power button
//!   (PWRBTN, bit 8), the timer carry bit (TMR, bit 0), the global lock release (GBL,
//!   bit 5) and the RTC alarm (RTC, bit 10); the last three are never raised (fugu runs no
//!   timer for TMR, has no firmware that would hold the global lock, and its RTC has no
//!   alarm that wakes), but their enable bits read back as written, as OSPM checks (Linux:
//!   "Could not enable GlobalLock event", and from rtc_cmos "Could not enable RealTimeClock
//!   event", otherwise). A status bit whose
//!   enable bit is set raises the SCI (IRQ 9, level).
//! - 0x604 PM1a control: SCI_EN reads 1 (no SMI handshake); SLP_EN with SLP_TYP
//!   [`SLP_TYP_S5`] powers the machine off (the VM ends with status 0). Other sleep types
//!   are not offered by the DSDT and are ignored.
//! - 0x608 PM timer: 3.579545 MHz, 32 bits (FADT TMR_VAL_EXT), from the host's monotonic
//!   clock.
//!
//! The host presses the power button with [`press_power_button`]: `fugu run` does it on
//! SIGPWR (see vm.rs), so a guest that handles ACPI shuts down cleanly.

use crate::devices::bus::BusDevice;
use crate::devices::legacy::serial::IrqLine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub const BASE: u16 = 0x600;
pub const LEN: u64 = 0x0c;
pub const PM1_EVT: u16 = BASE;
pub const PM1_CNT: u16 = BASE + 4;
pub const PM_TMR: u16 = BASE + 8;
pub const SCI_IRQ: u32 = 9;
/// The SLP_TYP value the DSDT's `\_S5` names.
pub const SLP_TYP_S5: u16 = 5;
pub const TIMER_HZ: u128 = 3_579_545;

pub const TMR_STS: u16 = 1 << 0;
pub const GBL_STS: u16 = 1 << 5;
pub const PWRBTN_STS: u16 = 1 << 8;
pub const RTC_STS: u16 = 1 << 10;
const STS_MASK: u16 = TMR_STS | GBL_STS | PWRBTN_STS | RTC_STS;
const EN_MASK: u16 = TMR_STS | GBL_STS | PWRBTN_STS | RTC_STS;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;

/// Called when the guest enters S5 (soft-off): the machine ends the VM with status 0.
pub type OnPoweroff = Box<dyn Fn() + Send>;

pub struct Pm {
    sts: u16,
    en: u16,
    cnt: u16,
    start: Instant,
    on_poweroff: OnPoweroff,
    sci: Option<Box<dyn IrqLine>>,
    sci_level: bool,
}

impl Pm {
    pub fn new(on_poweroff: OnPoweroff, sci: Option<Box<dyn IrqLine>>) -> Self {
        Pm {
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            start: Instant::now(),
            on_poweroff,
            sci,
            sci_level: false,
        }
    }

    /// The PM timer's current count.
    // The counter wraps at 32 bits, as the hardware's does: truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    pub fn timer(&self) -> u32 {
        (self.start.elapsed().as_nanos() * TIMER_HZ / 1_000_000_000) as u32
    }

    /// Press the power button: PWRBTN_STS, and the SCI when the guest enabled it.
    pub fn press_power_button(&mut self) {
        self.sts |= PWRBTN_STS;
        self.update_sci();
    }

    /// Whether the guest enabled the power-button event (it listens to the button).
    pub fn power_button_enabled(&self) -> bool {
        self.en & PWRBTN_STS != 0
    }

    fn update_sci(&mut self) {
        let level = self.sts & self.en != 0;
        if level != self.sci_level {
            self.sci_level = level;
            if let Some(sci) = &self.sci {
                sci.set(level);
            }
        }
    }

    fn regs(&self) -> [u8; crate::bits::const_usize(LEN)] {
        let mut r = [0u8; crate::bits::const_usize(LEN)];
        r[0..2].copy_from_slice(&self.sts.to_le_bytes());
        r[2..4].copy_from_slice(&self.en.to_le_bytes());
        r[4..6].copy_from_slice(&(self.cnt & !SLP_EN).to_le_bytes());
        r[8..12].copy_from_slice(&self.timer().to_le_bytes());
        r
    }

    fn write_byte(&mut self, off: u64, v: u8) {
        let shift = 8 * (off & 1);
        let v = (v as u16) << shift;
        match off {
            0 | 1 => self.sts &= !(v & STS_MASK),
            2 | 3 => self.en = (self.en & !(0xff << shift)) | (v & EN_MASK),
            4 | 5 => {
                self.cnt = ((self.cnt & !(0xff << shift)) | v) | SCI_EN;
            }
            _ => {} // the timer is read-only
        }
    }
}

impl BusDevice for Pm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let r = self.regs();
        for (i, b) in data.iter_mut().enumerate() {
            *b = crate::devices::reg_byte(&r, offset, i).unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write_byte(offset + i as u64, b);
        }
        if self.cnt & SLP_EN != 0 {
            let typ = (self.cnt >> SLP_TYP_SHIFT) & 7;
            self.cnt &= !SLP_EN;
            if typ == SLP_TYP_S5 {
                (self.on_poweroff)();
            }
        }
        self.update_sci();
    }
}

/// SIGPWR received and not yet turned into a button press.
static POWER_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigpwr(_sig: libc::c_int) {
    POWER_SIGNAL.store(true, Ordering::SeqCst);
}

/// Make SIGPWR press the power button (see [`take_power_signal`]); installed also without
/// ACPI, where it only says so: SIGPWR's default action would end fugu abruptly.
pub fn install_power_signal() {
    POWER_SIGNAL.store(false, Ordering::SeqCst);
    // SAFETY: installing an async-signal-safe handler (an atomic store) with sigaction.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigpwr as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGPWR, &sa, std::ptr::null_mut());
    }
}

/// Whether SIGPWR arrived since the last call.
pub fn take_power_signal() -> bool {
    POWER_SIGNAL.swap(false, Ordering::SeqCst)
}

/// Press `pm`'s power button, saying on stderr what the guest will make of it.
pub fn press_power_button(pm: Option<&std::sync::Mutex<Pm>>) {
    let Some(pm) = pm else {
        eprintln!("fugu: SIGPWR ignored: the guest has no ACPI power button (--no-acpi)");
        return;
    };
    let mut pm = crate::sync::lock(pm);
    pm.press_power_button();
    if pm.power_button_enabled() {
        eprintln!("fugu: power button pressed (SIGPWR): the guest was asked to shut down");
    } else {
        eprintln!(
            "fugu: power button pressed (SIGPWR), but the guest has not enabled its ACPI power \
             button event"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Line(Arc<Mutex<Vec<bool>>>);
    impl IrqLine for Line {
        fn set(&self, level: bool) {
            self.0.lock().unwrap().push(level);
        }
    }

    #[test]
    fn s5_powers_off_and_other_sleep_types_do_not() {
        let off = Arc::new(Mutex::new(0u32));
        let seen = off.clone();
        let mut pm = Pm::new(Box::new(move || *seen.lock().unwrap() += 1), None);
        let mut c = [0u8; 2];
        pm.read(4, &mut c);
        assert_eq!(u16::from_le_bytes(c) & SCI_EN, SCI_EN);
        pm.write(4, &((3 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
        assert_eq!(*off.lock().unwrap(), 0);
        pm.write(4, &((SLP_TYP_S5 << SLP_TYP_SHIFT) | SCI_EN).to_le_bytes());
        assert_eq!(*off.lock().unwrap(), 0, "no SLP_EN, no sleep");
        // SLP_EN set by a byte write to the high half, as some guests do.
        pm.write(5, &[(((SLP_TYP_S5 << SLP_TYP_SHIFT) | SLP_EN) >> 8) as u8]);
        assert_eq!(*off.lock().unwrap(), 1);
    }

    #[test]
    fn power_button_raises_and_clears_the_sci() {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let mut pm = Pm::new(Box::new(|| {}), Some(Box::new(Line(levels.clone()))));
        pm.press_power_button();
        assert!(levels.lock().unwrap().is_empty(), "not enabled: no SCI");
        let mut s = [0u8; 2];
        pm.read(0, &mut s);
        assert_eq!(u16::from_le_bytes(s), PWRBTN_STS);
        pm.write(2, &PWRBTN_STS.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), vec![true]);
        pm.write(0, &PWRBTN_STS.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), vec![true, false]);
        pm.read(0, &mut s);
        assert_eq!(u16::from_le_bytes(s), 0);
        // Enable bits of events the FADT does not announce are neither kept nor reported;
        // GBL_EN and RTC_EN are kept (Linux checks that they read back).
        pm.write(2, &0xfffeu16.to_le_bytes());
        pm.read(2, &mut s);
        assert_eq!(u16::from_le_bytes(s), PWRBTN_STS | GBL_STS | RTC_STS);
    }

    #[test]
    fn timer_counts_at_3_58_mhz() {
        let mut pm = Pm::new(Box::new(|| {}), None);
        let mut a = [0u8; 4];
        pm.read(8, &mut a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = [0u8; 4];
        pm.read(8, &mut b);
        let d = u32::from_le_bytes(b).wrapping_sub(u32::from_le_bytes(a));
        // 20 ms is 71591 ticks; allow for a slow, busy host.
        assert!((71_000..2_000_000).contains(&d), "{d} ticks in 20 ms");
        let mut past = [0u8; 4];
        pm.read(10, &mut past);
        assert_eq!(&past[2..], &[0xff, 0xff], "reads past the block");
    }
}
