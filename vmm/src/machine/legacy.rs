//! The legacy PC devices on the port-I/O bus: COM1, debug-exit, i8042, CMOS and fw_cfg, and
//! with `--bios` the firmware's debug console and fw_cfg files. A new legacy device is one
//! line in [`attach`].

use super::VmError;
use crate::boot::firmware;
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::{cmos, debug_exit, debugcon, fw_cfg, i8042, pm, serial};
use crate::devices::ResetHook;
use crate::hypervisor::Vm;
use crate::memory::{layout, GuestMemory};
use crate::outcome::{Outcome, Stop};
use std::sync::{Arc, Mutex};

/// What the legacy devices need from the machine.
pub struct LegacyConfig<'a> {
    pub vm: &'a Arc<dyn Vm>,
    pub mem: &'a Arc<dyn GuestMemory>,
    pub mem_size: u64,
    pub cpus: u32,
    pub serial_out: Box<dyn std::io::Write + Send>,
    /// Ends the VM when the guest writes the debug-exit port.
    pub stop: &'a Stop,
    /// The i8042's CPU reset line.
    pub reset: &'a ResetHook,
    /// `--bios`: show the firmware log (FUGU_TRACE=firmware), and the fw_cfg files.
    pub firmware: Option<FirmwareFiles>,
    /// ACPI (off with `--no-acpi`): the PM block, and with `--bios` the tables in fw_cfg.
    pub acpi: bool,
}

/// The legacy devices the machine keeps a handle to.
pub struct Legacy {
    /// The UART (the console feeds it, `run` flushes it).
    pub serial: Arc<Mutex<serial::Serial>>,
    /// The ACPI power-management block (SIGPWR presses its power button); None without ACPI.
    pub pm: Option<Arc<Mutex<pm::Pm>>>,
}

/// The fw_cfg inputs of a `--bios` machine.
pub struct FirmwareFiles {
    /// The PCI slot of the boot device (`--boot`), for bootorder.
    pub boot_slot: Option<u8>,
    pub show_log: bool,
}

/// Raises IRQ lines on the in-kernel PIC/IOAPIC.
struct KvmIrq {
    vm: Arc<dyn Vm>,
    irq: u32,
}

impl serial::IrqLine for KvmIrq {
    fn set(&self, level: bool) {
        // A failed IRQ_LINE only loses an interrupt; the UART is still polled by guests.
        let _ = self.vm.set_irq_line(self.irq, level);
    }
}

/// Put the legacy devices on `pio`.
pub fn attach(cfg: LegacyConfig, pio: &mut Bus) -> Result<Legacy, VmError> {
    let add = |bus: &mut Bus, base: u16, len: u64, d: Arc<Mutex<dyn BusDevice>>| {
        bus.insert(base as u64, len, d).map_err(VmError::Bus)
    };
    let serial = Arc::new(Mutex::new(serial::Serial::new(
        cfg.serial_out,
        Some(Box::new(KvmIrq {
            vm: cfg.vm.clone(),
            irq: serial::COM1_IRQ,
        })),
    )));
    add(pio, serial::COM1, serial::LEN, serial.clone())?;
    let stop = cfg.stop.clone();
    let on_exit: debug_exit::OnExit = Box::new(move |v| stop.request(Outcome::DebugExit(v)));
    add(
        pio,
        debug_exit::PORT,
        1,
        Arc::new(Mutex::new(debug_exit::DebugExit::new(on_exit))),
    )?;
    add(
        pio,
        i8042::BASE,
        i8042::LEN,
        Arc::new(Mutex::new(i8042::I8042::new(cfg.reset.clone()))),
    )?;
    let below = cfg.mem_size.min(layout::PCI_HOLE_START);
    let above = cfg.mem_size.saturating_sub(layout::PCI_HOLE_START);
    add(
        pio,
        cmos::BASE,
        cmos::LEN,
        Arc::new(Mutex::new(cmos::Cmos::new(below, above))),
    )?;
    let cpus = u16::try_from(cfg.cpus).map_err(|_| VmError::Cpus(cfg.cpus))?;
    let mut fw = fw_cfg::FwCfg::new(cfg.mem_size, cpus);
    if let Some(f) = &cfg.firmware {
        add(
            pio,
            debugcon::PORT,
            1,
            Arc::new(Mutex::new(debugcon::DebugCon::new(f.show_log))),
        )?;
        fw = fw.with_dma(cfg.mem.clone());
        for (name, data) in firmware::fw_cfg_files(cfg.mem_size, f.boot_slot) {
            fw.add_file(name, data)?;
        }
        if cfg.acpi {
            // The tables for SeaBIOS to place (etc/table-loader), as QEMU hands them.
            let cpus = u8::try_from(cfg.cpus).map_err(|_| VmError::Cpus(cfg.cpus))?;
            let t = crate::acpi::build(&crate::acpi::Config::firmware(cpus, cfg.mem_size));
            for (name, data) in t.fw_cfg_files() {
                fw.add_file(name, data)?;
            }
        }
    }
    add(pio, fw_cfg::BASE, fw_cfg::LEN, Arc::new(Mutex::new(fw)))?;
    let pm = if cfg.acpi {
        let stop = cfg.stop.clone();
        let pm = Arc::new(Mutex::new(pm::Pm::new(
            Box::new(move || stop.request(Outcome::Poweroff)),
            Some(Box::new(KvmIrq {
                vm: cfg.vm.clone(),
                irq: pm::SCI_IRQ,
            })),
        )));
        add(pio, pm::BASE, pm::LEN, pm.clone())?;
        Some(pm)
    } else {
        None
    };
    Ok(Legacy { serial, pm })
}
