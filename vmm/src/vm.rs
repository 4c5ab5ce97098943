//! A virtual machine: guest RAM, the in-kernel interrupt controllers and timer, the legacy
//! devices, the vCPU threads, and how the whole thing ends.

use crate::arch::x86::{cpuid, regs};
use crate::boot::{self, BootPlan};
use crate::devices::bus::{lock, Bus, BusDevice};
use crate::devices::legacy::{cmos::Cmos, debug_exit::DebugExit, i8042::I8042, serial};
use crate::hypervisor::{self, Backend, Hypervisor};
use crate::memory::{self, layout, GuestMemory};
use crate::vcpu;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote `v` to the debug-exit port.
    DebugExit(u32),
    /// The guest powered off (ACPI / KVM system event).
    Poweroff,
    /// The guest asked for a reset (i8042, triple fault handled as reset is not done here).
    Reset,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { cpu: u32 },
    /// A vCPU halted with interrupts off: nothing can wake it.
    Halted { cpu: u32 },
    /// Something the VMM could not handle; the message has the details.
    Crash(String),
    /// fugu received SIGINT/SIGTERM.
    Signal(i32),
    /// The guest was still running after `--boot-timeout` seconds.
    Timeout(u64),
}

impl VmExit {
    /// The process exit status for this outcome (documented in `fugu run --help`).
    pub fn status(&self) -> i32 {
        match self {
            VmExit::DebugExit(v) => (((*v as i64) << 1) | 1).clamp(1, 255) as i32,
            VmExit::Poweroff | VmExit::Reset => 0,
            VmExit::TripleFault { .. } | VmExit::Halted { .. } | VmExit::Crash(_) => 6,
            VmExit::Signal(_) => 130,
            VmExit::Timeout(_) => 8,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            VmExit::DebugExit(v) => format!("guest wrote {v:#x} to the debug-exit port"),
            VmExit::Poweroff => "guest powered off".into(),
            VmExit::Reset => "guest requested a reset".into(),
            VmExit::TripleFault { cpu } => format!("vCPU {cpu} triple-faulted (KVM shutdown exit)"),
            VmExit::Halted { cpu } => format!("vCPU {cpu} halted and cannot be woken"),
            VmExit::Crash(m) => m.clone(),
            VmExit::Signal(s) => format!("interrupted by signal {s}"),
            VmExit::Timeout(s) => format!("the guest was still running after --boot-timeout {s} s"),
        }
    }
}

/// The first requested exit wins; everyone waiting is woken.
#[derive(Clone, Default)]
pub struct ExitSignal {
    inner: Arc<(Mutex<Option<VmExit>>, Condvar)>,
    flag: Arc<AtomicBool>,
}

impl ExitSignal {
    pub fn request(&self, e: VmExit) {
        let mut g = lock(&self.inner.0);
        if g.is_none() {
            *g = Some(e);
        }
        self.flag.store(true, Ordering::SeqCst);
        self.inner.1.notify_all();
    }
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub fn get(&self) -> Option<VmExit> {
        lock(&self.inner.0).clone()
    }
    fn wait(&self, timeout: Duration) -> Option<VmExit> {
        let g = lock(&self.inner.0);
        let (g, _) = self
            .inner
            .1
            .wait_timeout_while(g, timeout, |e| e.is_none())
            .unwrap_or_else(|p| p.into_inner());
        g.clone()
    }
}

/// What to run.
pub struct VmConfig {
    pub backend: Backend,
    pub mem_size: u64,
    pub cpus: u32,
    pub kernel: Vec<u8>,
    pub cmdline: String,
    pub modules: Vec<(Vec<u8>, String)>,
    pub serial_out: Box<dyn std::io::Write + Send>,
    /// Feed host stdin to the UART.
    pub serial_in: bool,
    /// Host adaptation (see host_compat).
    pub host_compat: crate::host_compat::Mode,
    /// Force the CPU vendor; None follows host adaptation.
    pub cpu_vendor: Option<cpuid::Vendor>,
    /// virtio-blk disks (`--disk`), on PCI bus 0 in this order.
    pub disks: Vec<crate::devices::virtio::setup::DiskConfig>,
    /// virtio-net NICs on tap devices (`--net`), after the disks.
    pub nets: Vec<crate::devices::virtio::setup::NetConfig>,
    /// Boot through a BIOS (`--bios`) instead of loading `kernel`.
    pub firmware: Option<boot::firmware::FirmwareConfig>,
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
    Load(#[from] boot::LoadError),
    #[error(transparent)]
    Setup(#[from] regs::SetupError),
    #[error("{0}")]
    Config(String),
}

/// Raises IRQ lines on the in-kernel PIC/IOAPIC.
struct KvmIrq {
    vm: Arc<dyn hypervisor::Vm>,
    irq: u32,
}

impl serial::IrqLine for KvmIrq {
    fn set(&self, level: bool) {
        // A failed IRQ_LINE only loses an interrupt; the UART is still polled by guests.
        let _ = self.vm.set_irq_line(self.irq, level);
    }
}

/// The devices a vCPU dispatches its exits to.
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

static SIGNAL_RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_terminate(sig: libc::c_int) {
    SIGNAL_RECEIVED.store(sig, Ordering::SeqCst);
}
extern "C" fn on_kick(_sig: libc::c_int) {}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    libc::SIGUSR1
}

/// SIGBUS deliveries: KVM raises SIGBUS in a vCPU thread during KVM_RUN when it cannot back
/// a guest access (memory errors, or hosts such as kvm_pvm failing to switch to the guest's
/// user mode for a 32-bit VMM). Recorded so the VM ends with a report, not a dead process.
static SIGBUS_COUNT: AtomicI32 = AtomicI32::new(0);
static SIGBUS_CODE: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let code = unsafe { info.as_ref().map_or(0, |i| i.si_code) };
    SIGBUS_CODE.store(code, Ordering::SeqCst);
    // A SIGBUS from fugu's own code (not from inside KVM_RUN) would fault again on return:
    // the second time, fall back to the default action so the process still dies visibly.
    if SIGBUS_COUNT.fetch_add(1, Ordering::SeqCst) >= 8 {
        // SAFETY: resetting a disposition and re-raising are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            libc::raise(libc::SIGBUS);
        }
    }
}

/// A SIGBUS delivered to this process since the VM started, with its si_code.
pub fn sigbus_received() -> Option<i32> {
    (SIGBUS_COUNT.load(Ordering::SeqCst) > 0).then(|| SIGBUS_CODE.load(Ordering::SeqCst))
}

fn install_handlers() {
    // SAFETY: installing an async-signal-safe SIGBUS handler (atomic stores) with SA_SIGINFO.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
    // SAFETY: installing async-signal-safe handlers (an atomic store / nothing) with sigaction.
    unsafe {
        for (sig, h) in [
            (
                libc::SIGINT,
                on_terminate as extern "C" fn(libc::c_int) as usize,
            ),
            (
                libc::SIGTERM,
                on_terminate as extern "C" fn(libc::c_int) as usize,
            ),
            (
                kick_signal(),
                on_kick as extern "C" fn(libc::c_int) as usize,
            ),
        ] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = h;
            libc::sigemptyset(&mut sa.sa_mask);
            // No SA_RESTART: KVM_RUN must return EINTR so the vCPU loop sees the kick.
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub struct Machine {
    pub vm: Arc<dyn hypervisor::Vm>,
    pub mem: Arc<dyn GuestMemory>,
    pub buses: Arc<Buses>,
    pub exit: ExitSignal,
    pub serial: Arc<Mutex<serial::Serial>>,
    pub plan: BootPlan,
    vcpus: Vec<Box<dyn hypervisor::Vcpu>>,
    serial_in: bool,
    compat: bool,
    /// What host adaptation is in force, for messages; None when off.
    pub adaptation: Option<String>,
    /// Instructions completed for the guest.
    pub stats: Arc<crate::host_compat::Stats>,
    /// The BIOS image's mapping below 4 GiB (`--bios`); must outlive the VM.
    _rom: Option<boot::firmware::RomMapping>,
}

impl Machine {
    /// Create the VM, load the kernel and set up the boot vCPU.
    pub fn new(cfg: VmConfig) -> Result<Self, VmError> {
        if cfg.cpus == 0 || cfg.cpus > 255 {
            return Err(VmError::Config(format!(
                "--cpus {} is out of range (1-255)",
                cfg.cpus
            )));
        }
        if cfg.mem_size < (2 << 20) {
            return Err(VmError::Config("--memory must be at least 2M".into()));
        }
        let kvm: Box<dyn Hypervisor> = hypervisor::open(cfg.backend)?;
        let vm: Arc<dyn hypervisor::Vm> = Arc::from(kvm.create_vm()?);
        let mem = memory::allocate(cfg.backend, &layout::ram_ranges(cfg.mem_size))
            .map_err(|e| VmError::Memory(cfg.mem_size >> 20, e))?;
        for (slot, r) in mem.regions().iter().enumerate() {
            // SAFETY: `mem` is kept alive in Machine for as long as the VM exists.
            unsafe { vm.set_user_memory_region(slot as u32, r.gpa, r.size, r.host_addr, false)? };
        }
        // The TSS and identity-map pages KVM needs on Intel live just below the BIOS.
        vm.set_identity_map_address(0xfffb_c000)?;
        vm.set_tss_address(0xfffb_d000)?;
        vm.create_irq_chip()?;
        vm.create_pit2()?;

        let exit = ExitSignal::default();
        let serial = Arc::new(Mutex::new(serial::Serial::new(
            cfg.serial_out,
            Some(Box::new(KvmIrq {
                vm: vm.clone(),
                irq: serial::COM1_IRQ,
            })),
        )));
        let mut pio = Bus::default();
        let add = |bus: &mut Bus, base: u16, len: u64, d: Arc<Mutex<dyn BusDevice>>| {
            bus.insert(base as u64, len, d)
                .map_err(|e| VmError::Config(e.to_string()))
        };
        add(&mut pio, serial::COM1, serial::LEN, serial.clone())?;
        add(
            &mut pio,
            crate::devices::legacy::debug_exit::PORT,
            1,
            Arc::new(Mutex::new(DebugExit::new(exit.clone()))),
        )?;
        add(
            &mut pio,
            crate::devices::legacy::i8042::BASE,
            crate::devices::legacy::i8042::LEN,
            Arc::new(Mutex::new(I8042::new(exit.clone()))),
        )?;
        let below = cfg.mem_size.min(layout::PCI_HOLE_START);
        let above = cfg.mem_size.saturating_sub(layout::PCI_HOLE_START);
        add(
            &mut pio,
            crate::devices::legacy::cmos::BASE,
            crate::devices::legacy::cmos::LEN,
            Arc::new(Mutex::new(Cmos::new(below, above))),
        )?;
        let mut fw_cfg = crate::devices::legacy::fw_cfg::FwCfg::new(cfg.mem_size, cfg.cpus as u16);
        // --bios: the chipset SeaBIOS expects, fw_cfg DMA and files; boot slot for bootorder.
        let chipset = cfg.firmware.as_ref().map(|f| {
            let e = exit.clone();
            crate::devices::pci::i440fx::Chipset {
                net_rom: f.net_rom.clone(),
                reset: Some(Arc::new(move || e.request(VmExit::Reset))),
            }
        });
        if cfg.firmware.is_some() {
            add(
                &mut pio,
                crate::devices::legacy::debugcon::PORT,
                1,
                Arc::new(Mutex::new(crate::devices::legacy::debugcon::DebugCon::new(
                    crate::devices::legacy::debugcon::DebugCon::requested(),
                ))),
            )?;
        }
        if let Some(f) = &cfg.firmware {
            fw_cfg = fw_cfg.with_dma(mem.clone());
            // 00:00.0 host bridge, 00:01.0 ISA bridge, then the disks, then the NICs.
            let slot = match f.boot {
                Some(boot::firmware::BootDevice::Disk) => Some(2u8),
                Some(boot::firmware::BootDevice::Net) => Some(2 + cfg.disks.len() as u8),
                None => None,
            };
            for (name, data) in boot::firmware::fw_cfg_files(cfg.mem_size, slot) {
                fw_cfg.add_file(name, data).map_err(VmError::Config)?;
            }
        }
        add(
            &mut pio,
            crate::devices::legacy::fw_cfg::BASE,
            crate::devices::legacy::fw_cfg::LEN,
            Arc::new(Mutex::new(fw_cfg)),
        )?;
        // PCI bus 0: the host bridge and the virtio devices (devices/virtio/setup.rs).
        let mut mmio = Bus::default();
        crate::devices::virtio::setup::attach_with(
            vm.clone(),
            mem.clone(),
            cfg.backend,
            &cfg.disks,
            &cfg.nets,
            &mut pio,
            &mut mmio,
            chipset.as_ref(),
        )
        .map_err(VmError::Config)?;
        let buses = Arc::new(Buses { pio, mmio });

        let host = crate::host_compat::HostVirt::probe();
        let compat = crate::host_compat::active(cfg.host_compat, &host);
        let kind = boot::detect(&cfg.kernel);
        // A 32-bit guest without PAE addresses RAM below 4 GiB only; RAM above the PCI hole
        // would be invisible to it, so refuse rather than silently waste it.
        if matches!(
            kind,
            boot::KernelKind::Multiboot | boot::KernelKind::Elf { is64: false }
        ) && cfg.mem_size > layout::PCI_HOLE_START
        {
            return Err(VmError::Config(format!(
                "a 32-bit kernel can use at most {} MiB of RAM (below the PCI hole); got {} MiB",
                layout::PCI_HOLE_START >> 20,
                cfg.mem_size >> 20
            )));
        }
        let linux = matches!(
            kind,
            boot::KernelKind::LinuxBzImage | boot::KernelKind::Elf { is64: true }
        );
        let cmdline = if compat && linux {
            crate::host_compat::adapt_linux_cmdline(&cfg.cmdline)
        } else {
            cfg.cmdline.clone()
        };
        let plan = if cfg.firmware.is_some() {
            // The firmware finds its own way; it writes its own MP/ACPI tables.
            BootPlan {
                entry: 0xffff_fff0,
                mode: boot::EntryMode::Protected32 {
                    eax: 0,
                    ebx: 0,
                    esi: 0,
                },
                kind: "BIOS",
            }
        } else {
            let plan = boot::load_kernel(&*mem, &cfg.kernel, &cmdline, &cfg.modules, cfg.mem_size)?;
            crate::arch::x86::mptable::write(&*mem, cfg.cpus as u8)
                .map_err(|e| VmError::Config(format!("writing the MP table: {e}")))?;
            plan
        };
        let mut rom = None;
        let vendor = cfg.cpu_vendor.unwrap_or(if compat {
            cpuid::Vendor::Intel
        } else {
            cpuid::Vendor::Host
        });
        let supported = kvm.supported_cpuid()?;
        let mut vcpus = Vec::new();
        for id in 0..cfg.cpus {
            let v = vm.create_vcpu(id)?;
            v.set_cpuid2(&cpuid::for_vcpu(&supported, id, cfg.cpus, vendor))?;
            if let (0, Some(f)) = (id, &cfg.firmware) {
                let ro = boot::firmware::readonly_supported(|c| kvm.check_extension(c));
                let slot = mem.regions().len() as u32;
                rom = Some(
                    boot::firmware::install(&f.bios, &*vm, ro, slot, &*mem, &*v)
                        .map_err(|e| VmError::Config(e.to_string()))?,
                );
            } else if id == 0 {
                regs::setup_boot_cpu(&*v, &*mem, plan.entry, &plan.mode)?;
            }
            vcpus.push(v);
        }
        let linux64 = match kind {
            boot::KernelKind::LinuxBzImage => {
                boot::linux::parse(&cfg.kernel).is_ok_and(|b| b.xloadflags & 1 != 0)
            }
            boot::KernelKind::Elf { is64 } => is64,
            _ => false,
        };
        if compat && linux64 {
            // Known limit of hosts whose KVM emulates guest kernel code: a 64-bit guest's
            // user-mode SYSCALL is mishandled. Say it up front rather than leave a silent hang.
            eprintln!(
                "fugu: note: on this host (no VMX/SVM) a 64-bit Linux guest's userspace cannot \
                 make system calls (the host's KVM mishandles user-mode SYSCALL); the kernel \
                 boots, init will not get far"
            );
        }
        let adaptation = compat.then(|| {
            let mut a = format!(
                "host adaptation on ({}): vendor {:?}, instruction completion",
                host.describe(),
                vendor
            );
            if linux {
                a.push_str(&format!(", Linux cmdline \"{cmdline}\""));
            }
            a
        });
        Ok(Machine {
            vm,
            mem,
            buses,
            exit,
            serial,
            plan,
            vcpus,
            serial_in: cfg.serial_in,
            compat,
            adaptation,
            stats: Arc::new(crate::host_compat::Stats::default()),
            _rom: rom,
        })
    }

    /// Run until the guest or a signal ends the VM; also returns where each vCPU stopped.
    pub fn run(self) -> (VmExit, Vec<vcpu::FinalState>) {
        install_handlers();
        SIGNAL_RECEIVED.store(0, Ordering::SeqCst);
        let mut threads = Vec::new();
        let tids = Arc::new(Mutex::new(Vec::<libc::pthread_t>::new()));
        for (id, v) in self.vcpus.into_iter().enumerate() {
            let ctx = vcpu::Context {
                id: id as u32,
                trace: std::env::var("FUGU_TRACE")
                    .is_ok_and(|v| v.split(',').any(|t| t == "exits")),
                complete_instructions: self.compat,
                stats: self.stats.clone(),
                mem: self.mem.clone(),
                buses: self.buses.clone(),
                exit: self.exit.clone(),
            };
            let tids = tids.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    lock(&tids).push(unsafe { libc::pthread_self() });
                    vcpu::run_loop(v, ctx)
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => self
                    .exit
                    .request(VmExit::Crash(format!("cannot start vCPU thread: {e}"))),
            }
        }
        if self.serial_in {
            crate::console::spawn_input(self.serial.clone(), self.exit.clone());
        }
        // Wait for an exit, watching for SIGINT/SIGTERM.
        let result = loop {
            if let Some(e) = self.exit.wait(Duration::from_millis(20)) {
                break e;
            }
            let s = SIGNAL_RECEIVED.load(Ordering::SeqCst);
            if s != 0 {
                self.exit.request(VmExit::Signal(s));
            }
        };
        // Kick every vCPU out of KVM_RUN until all threads have finished.
        while threads.iter().any(|t| !t.is_finished()) {
            for &tid in lock(&tids).iter() {
                // SAFETY: tid belongs to a vCPU thread of this process that has not been
                // joined yet; the kick handler does nothing.
                unsafe { libc::pthread_kill(tid, kick_signal()) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let finals = threads.into_iter().filter_map(|t| t.join().ok()).collect();
        lock(&self.serial).flush();
        (result, finals)
    }
}
