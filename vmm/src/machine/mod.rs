//! A virtual machine: guest RAM, the in-kernel interrupt controllers and timer, the devices,
//! the vCPU threads, and how the whole thing ends.
//!
//! [`Machine::new`] is a sequence of named steps; each kind of wiring has its own module
//! ([`legacy`], [`pci`], [`boot`], [`vcpus`]), so a new device or table is a line there.

pub mod boot;
pub mod legacy;
pub mod pci;
pub mod vcpu;
pub mod vcpus;

use crate::arch::x86::{cpuid, regs};
use crate::backend::Backend;
use crate::devices::bus::Buses;
use crate::devices::legacy::serial;
use crate::hypervisor::{self, Hypervisor};
use crate::memory::{layout, GuestMemory};
use crate::outcome::{Outcome, Stop};
use crate::sync::lock;
use crate::{signals, trace};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to run.
pub struct VmConfig {
    pub backend: Backend,
    pub mem_size: u64,
    pub cpus: u32,
    pub kernel: Vec<u8>,
    /// The kernel's path as given: a Multiboot kernel's command line starts with it.
    pub kernel_name: String,
    pub cmdline: String,
    pub modules: Vec<(Vec<u8>, String)>,
    pub serial_out: Box<dyn std::io::Write + Send>,
    /// Feed host stdin to the UART.
    pub serial_in: bool,
    /// Host adaptation (see host_compat).
    pub host_compat: crate::host_compat::Mode,
    /// Force the CPU vendor; None follows host adaptation.
    pub cpu_vendor: Option<cpuid::Vendor>,
    /// Offer the guest the host's VMX/SVM (`--nested`); hidden otherwise.
    pub nested: bool,
    /// `--cpu-features`: CPUID bits added or removed last.
    pub cpu_features: Vec<crate::arch::x86::features::Edit>,
    /// virtio-blk disks (`--disk`), on PCI bus 0 in this order.
    pub disks: Vec<crate::devices::virtio::setup::DiskConfig>,
    /// virtio-net NICs on tap devices (`--net`), after the disks.
    pub nets: Vec<crate::devices::virtio::setup::NetConfig>,
    /// Boot through a BIOS (`--bios`) instead of loading `kernel`.
    pub firmware: Option<crate::boot::firmware::FirmwareConfig>,
    /// ACPI tables and fixed hardware (off: `--no-acpi`).
    pub acpi: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Open(#[from] hypervisor::OpenError),
    #[error(transparent)]
    Kvm(#[from] hypervisor::Error),
    #[error("cannot allocate {0} MiB of guest RAM: {1}")]
    Memory(u64, std::io::Error),
    #[error(transparent)]
    Load(#[from] crate::boot::LoadError),
    #[error(transparent)]
    Setup(#[from] regs::SetupError),
    #[error("--cpus {0} is out of range (1-255)")]
    Cpus(u32),
    #[error("--memory must be at least 2M")]
    TooLittleMemory,
    /// Guest RAM (bytes) above what the i686 build can map (`max` bytes).
    #[error(
        "--memory {} MiB: the i686 build of fugu maps guest RAM into its own 32-bit address \
         space and cannot give a guest more than {} MiB (the x86_64 build can)",
        .size >> 20,
        .max >> 20
    )]
    TooMuchMemory { size: u64, max: u64 },
    #[error(
        "--nested: this host's KVM offers guests no VMX/SVM of their own (load kvm_intel or \
         kvm_amd with nested=1 on a host with hardware virtualization)"
    )]
    NoNesting,
    #[error("too many guest RAM regions")]
    TooManyRamRegions,
    #[error(transparent)]
    Firmware(#[from] crate::boot::firmware::FirmwareError),
    #[error(transparent)]
    Pci(#[from] pci::AttachError),
    /// Two legacy devices on one port range (a bug if it happens).
    #[error(transparent)]
    Bus(#[from] crate::devices::bus::Overlap),
    #[error(transparent)]
    FwCfg(#[from] crate::devices::legacy::fw_cfg::FileError),
    #[error("writing the MP table: {0}")]
    MpTable(#[source] crate::memory::OutOfRange),
    #[error("writing the ACPI tables: {0}")]
    Acpi(#[source] crate::acpi::WriteError),
}

pub struct Machine {
    // Never read: the VM's descriptor stays open as long as the Machine (its vCPUs, RAM
    // slots and interrupt routes belong to it).
    #[allow(dead_code)]
    vm: Arc<dyn hypervisor::Vm>,
    pub mem: Arc<dyn GuestMemory>,
    pub buses: Arc<Buses>,
    pub stop: Stop,
    pub serial: Arc<Mutex<serial::Serial>>,
    vcpus: Vec<Box<dyn hypervisor::Vcpu>>,
    serial_in: bool,
    compat: bool,
    /// What host adaptation is in force, for messages; None when off.
    pub adaptation: Option<String>,
    /// What the user should know about this guest on this host (`fugu: note: ...` lines):
    /// printed up front with --verbose, else only when the VM does not end cleanly.
    pub notes: Vec<String>,
    /// Instructions completed for the guest.
    pub stats: Arc<crate::host_compat::Stats>,
    /// The BIOS image's mapping below 4 GiB (`--bios`); must outlive the VM.
    _rom: Option<crate::boot::firmware::RomMapping>,
    /// The ACPI power-management block (SIGPWR presses its power button); None without ACPI.
    pub pm: Option<Arc<Mutex<crate::devices::legacy::pm::Pm>>>,
}

/// The TSS and identity-map pages KVM needs on Intel, just below the BIOS.
pub const IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
pub const TSS_ADDR: u64 = 0xfffb_d000;

impl Machine {
    /// Create the VM, load the kernel and set up the boot vCPU.
    pub fn new(mut cfg: VmConfig) -> Result<Self, VmError> {
        check(&cfg)?;
        let kvm: Box<dyn Hypervisor> = cfg.backend.hypervisor()?;
        let vm = create_vm(&*kvm)?;
        let mem = map_ram(&*vm, &cfg)?;
        let stop = Stop::default();
        let (buses, legacy) = attach_devices(&mut cfg, &vm, &mem, &stop)?;
        let serial = legacy.serial;
        let host = crate::host_compat::HostVirt::probe();
        let compat = crate::host_compat::active(cfg.host_compat, &host);
        let guest = boot::load(&cfg, &*mem, compat)?;
        let vendor = cfg.cpu_vendor.unwrap_or(if compat {
            cpuid::Vendor::Intel
        } else {
            cpuid::Vendor::Host
        });
        let vcpus = vcpus::create(&*kvm, &*vm, &*mem, &cfg, vendor, &guest.plan, compat)?;
        // The user asked for these: said at once, not only after an abnormal end.
        for n in &vcpus.notes {
            eprintln!("fugu: warning: {n}");
        }
        let mut notes = Vec::new();
        if compat && guest.linux64 {
            // Known limit of hosts whose KVM emulates guest kernel code: a 64-bit guest's
            // user-mode SYSCALL is mishandled.
            notes.push(
                "on this host (no VMX/SVM) a 64-bit Linux guest's userspace cannot make system \
                 calls (the host's KVM mishandles user-mode SYSCALL); the kernel boots, init \
                 will not get far"
                    .to_string(),
            );
        }
        let adaptation = compat.then(|| describe_adaptation(&host, vendor, &guest));
        Ok(Machine {
            vm,
            mem,
            buses: Arc::new(buses),
            stop,
            serial,
            vcpus: vcpus.vcpus,
            serial_in: cfg.serial_in,
            compat,
            adaptation,
            notes,
            stats: Arc::new(crate::host_compat::Stats::default()),
            _rom: vcpus.rom,
            pm: legacy.pm,
        })
    }

    /// Run until the guest or a signal ends the VM; also returns where each vCPU stopped.
    pub fn run(self) -> (Outcome, Vec<vcpu::FinalState>) {
        install_signal_handlers();
        let mut threads = Vec::new();
        let tids = Arc::new(Mutex::new(Vec::<libc::pthread_t>::new()));
        for (id, v) in (0u32..).zip(self.vcpus) {
            let ctx = vcpu::Context {
                id,
                trace: trace::get().exits,
                complete_instructions: self.compat,
                stats: self.stats.clone(),
                mem: self.mem.clone(),
                buses: self.buses.clone(),
                stop: self.stop.clone(),
            };
            let tids = tids.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    lock(&tids).push(unsafe { libc::pthread_self() });
                    if let Err(e) = crate::seccomp::enter(crate::seccomp::Kind::Vcpu) {
                        ctx.stop.request(Outcome::Crash(e.to_string()));
                    }
                    vcpu::run_loop(v, ctx)
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => self
                    .stop
                    .request(Outcome::Crash(format!("cannot start vCPU thread: {e}"))),
            }
        }
        if self.serial_in {
            crate::console::spawn_input(self.serial.clone(), self.stop.clone());
        }
        // Wait for an exit, watching for SIGINT/SIGTERM, and write out console output that
        // has no newline yet (a prompt) while the guest waits.
        let result = loop {
            if let Some(e) = self.stop.wait(Duration::from_millis(20)) {
                break e;
            }
            lock(&self.serial).flush();
            if let Some(s) = signals::terminate_received() {
                self.stop.request(Outcome::Signal(s));
            }
            if crate::devices::legacy::pm::take_power_signal() {
                crate::devices::legacy::pm::press_power_button(self.pm.as_deref());
            }
        };
        // One kick per vCPU thread is enough: the stop is requested before the kick, a
        // KVM_RUN in progress returns EINTR, and the handler sets the thread's immediate_exit
        // so a KVM_RUN about to start returns at once. A thread that registers its id after
        // this read sees the stop request before it first enters the guest.
        for &tid in lock(&tids).iter() {
            // SAFETY: tid belongs to a vCPU thread of this process that has not been joined
            // yet (its JoinHandle is in `threads`), so the id is still valid.
            unsafe { libc::pthread_kill(tid, signals::kick_signal()) };
        }
        let finals = threads.into_iter().filter_map(|t| t.join().ok()).collect();
        lock(&self.serial).flush();
        (result, finals)
    }
}

/// The devices: PCI bus 0 first (it decides the slots the firmware's bootorder names), then
/// the legacy devices on the port bus. A device that ends or resets the VM gets a callback
/// to `stop`. Returns the buses and the UART.
fn attach_devices(
    cfg: &mut VmConfig,
    vm: &Arc<dyn hypervisor::Vm>,
    mem: &Arc<dyn GuestMemory>,
    stop: &Stop,
) -> Result<(Buses, legacy::Legacy), VmError> {
    let reset: crate::devices::ResetHook = {
        let stop = stop.clone();
        Arc::new(move || stop.request(Outcome::Reset))
    };
    let mut buses = Buses::default();
    // --bios: the chipset SeaBIOS expects, and the NIC's option ROM.
    let chipset = cfg
        .firmware
        .as_ref()
        .map(|f| crate::devices::pci::i440fx::Chipset {
            net_rom: f.net_rom.clone(),
            reset: Some(reset.clone()),
        });
    let pci_config = pci::PciConfig {
        disks: &cfg.disks,
        nets: &cfg.nets,
        queues: cfg.backend.queues(),
        chipset: chipset.as_ref(),
    };
    let pci_map = pci::attach(vm, mem, &pci_config, &mut buses)?;
    let firmware = cfg.firmware.as_ref().map(|f| legacy::FirmwareFiles {
        boot_slot: f.boot.and_then(|b| pci_map.boot_slot(b)),
        show_log: trace::get().firmware,
    });
    // The UART takes the console's writer; nothing else reads it.
    let serial_out = std::mem::replace(&mut cfg.serial_out, Box::new(std::io::sink()));
    let legacy_config = legacy::LegacyConfig {
        vm,
        mem,
        mem_size: cfg.mem_size,
        cpus: cfg.cpus,
        serial_out,
        stop,
        reset: &reset,
        firmware,
        acpi: cfg.acpi,
    };
    let legacy = legacy::attach(legacy_config, &mut buses.pio)?;
    Ok((buses, legacy))
}

/// What host adaptation is in force, for the exit report.
fn describe_adaptation(
    host: &crate::host_compat::HostVirt,
    vendor: cpuid::Vendor,
    guest: &boot::Guest,
) -> String {
    let mut a = format!(
        "host adaptation on ({}): vendor {vendor:?}, instruction completion",
        host.describe()
    );
    if guest.linux {
        a.push_str(&format!(", Linux cmdline \"{}\"", guest.cmdline));
    }
    a
}

/// Refuse configurations KVM or the guest cannot use, before anything is created.
fn check(cfg: &VmConfig) -> Result<(), VmError> {
    if cfg.cpus == 0 || cfg.cpus > 255 {
        return Err(VmError::Cpus(cfg.cpus));
    }
    if cfg.mem_size < (2 << 20) {
        return Err(VmError::TooLittleMemory);
    }
    // A 32-bit kernel gets RAM beyond the PCI hole above 4 GiB, as with QEMU: the memory
    // map (e820, Multiboot mmap) reports both parts, and a PAE kernel uses the high one.
    if let Some(max) = Backend::max_guest_ram().filter(|max| cfg.mem_size > *max) {
        return Err(VmError::TooMuchMemory {
            size: cfg.mem_size,
            max,
        });
    }
    Ok(())
}

/// fugu's handlers for the signals that end a VM or press its power button. Idempotent;
/// `fugu run` installs them before the terminal goes raw and before fugud hears the VM is
/// ready, so that no signal in between takes the default action (terminal left raw, or a
/// graceful stop that kills).
pub fn install_signal_handlers() {
    signals::install();
    crate::devices::legacy::pm::install_power_signal();
}

/// The VM with the in-kernel PIC/IOAPIC and the PIT.
fn create_vm(kvm: &dyn Hypervisor) -> Result<Arc<dyn hypervisor::Vm>, VmError> {
    let vm: Arc<dyn hypervisor::Vm> = Arc::from(kvm.create_vm()?);
    vm.set_identity_map_address(IDENTITY_MAP_ADDR)?;
    vm.set_tss_address(TSS_ADDR)?;
    vm.create_irq_chip()?;
    vm.create_pit2()?;
    Ok(vm)
}

/// Guest RAM, mapped into the VM.
fn map_ram(vm: &dyn hypervisor::Vm, cfg: &VmConfig) -> Result<Arc<dyn GuestMemory>, VmError> {
    let mem = cfg
        .backend
        .memory(&layout::ram_ranges(cfg.mem_size))
        .map_err(|e| VmError::Memory(cfg.mem_size >> 20, e))?;
    for (slot, r) in (0u32..).zip(mem.regions()) {
        // SAFETY: `mem` is kept alive in Machine for as long as the VM exists.
        unsafe { vm.set_user_memory_region(slot, r.gpa, r.size, r.host_addr, false)? };
    }
    Ok(mem)
}
