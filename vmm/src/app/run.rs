//! `fugu run`: the VM set up from the options (kernel and initrds read, firmware, serial
//! console, privileges dropped, seccomp), run, and its end reported with an exit status.

use super::serial_log::SerialLog;
use crate::cli::{CpuProfileArg, HostCompatArg, RunArgs};
use crate::exit_status::ExitStatus;
use crate::machine::{Machine, VmConfig};
use std::process::ExitCode;

/// A command-line mistake found after parsing (clap exits with 2 for the ones it finds).
const EXIT_USAGE: u8 = 2;

/// Why `fugu run` could not start a VM: the command line (status 2) or anything else (4).
/// String by design: the typed errors below are rendered here, at the top, for the user.
enum SetupError {
    Usage(String),
    Failed(String),
}

impl From<String> for SetupError {
    fn from(msg: String) -> Self {
        SetupError::Failed(msg)
    }
}

impl From<crate::boot::InputError> for SetupError {
    fn from(e: crate::boot::InputError) -> Self {
        SetupError::Failed(e.to_string())
    }
}

impl From<&str> for SetupError {
    fn from(msg: &str) -> Self {
        SetupError::Failed(msg.into())
    }
}

pub(super) fn run(mut args: RunArgs) -> ExitCode {
    // glibc sizes its malloc arena limit from the CPU count when a thread first needs an
    // arena, by reading /sys/devices/system/cpu/online (i686) or sched_getaffinity — in a
    // thread that already runs under the seccomp filter. A fixed limit: it never asks.
    // SAFETY: mallopt with a valid parameter, before any thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 8);
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        crate::console::restore_terminal();
        prev(info);
    }));
    // First: an image of kind bios-disk turns this into a firmware boot.
    if let Err(msg) = crate::image::run::apply(&mut args) {
        eprintln!("fugu: error: {msg}");
        return ExitStatus::Setup.into();
    }
    let bios = args.bios.is_some();
    let boot_timeout = args.boot_timeout;
    let verbose = args.verbose || std::env::var_os("FUGU_TRACE").is_some();
    match setup(args) {
        Ok((machine, _raw)) => {
            let adaptation = machine.adaptation.clone();
            let notes = machine.notes.clone();
            if verbose {
                for n in &notes {
                    eprintln!("fugu: note: {n}");
                }
            }
            let stats = machine.stats.clone();
            if let Some(secs) = boot_timeout {
                let stop = machine.stop.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(secs));
                    stop.request(crate::outcome::Outcome::Timeout(secs));
                });
            }
            let (exit, finals) = machine.run();
            drop(_raw);
            let clean = matches!(
                exit,
                crate::outcome::Outcome::DebugExit(_) | crate::outcome::Outcome::Poweroff
            );
            if !verbose && !clean {
                for n in &notes {
                    eprintln!("fugu: note: {n}");
                }
            }
            if verbose || !clean {
                eprintln!("fugu: {}", exit.describe());
            }
            crate::control::vmproc::report_end(&exit.describe());
            if bios && exit == crate::outcome::Outcome::Reset {
                // SeaBIOS reboots after "No bootable device" (etc/boot-fail-wait is 0).
                eprintln!("fugu: error: the firmware found nothing to boot and asked for a reboot (see the console for why); fugu does not reboot guests");
                return ExitStatus::NoBoot.into();
            }
            // Host adaptation's work is said with --verbose or after an abnormal end: a clean
            // end is silent.
            if let Some(s) = stats.summary().filter(|_| verbose || !clean) {
                eprintln!("fugu: {s}");
            }
            if !clean {
                for f in &finals {
                    eprintln!("fugu: {f}");
                }
                // A known limit of hosts whose KVM emulates guest kernel code: 32-bit paging
                // triple-faults. Say so instead of leaving the user with a bare triple fault.
                if adaptation.is_some()
                    && matches!(exit, crate::outcome::Outcome::TripleFault { .. })
                    && finals.iter().any(|f| f.in_32bit_paging())
                {
                    eprintln!(
                        "fugu: this host's KVM (no VMX/SVM) cannot run 32-bit paging: the guest \
                         triple-faulted with paging on and PAE off. Run i386 guest kernels on a \
                         VMX/SVM host, or boot them without paging."
                    );
                }
                if let Some(a) = adaptation {
                    eprintln!("fugu: {a}");
                }
            }
            exit.status().into()
        }
        Err(SetupError::Usage(msg)) => {
            eprintln!("fugu: error: {msg}");
            eprintln!("fugu: see `fugu run --help`");
            ExitCode::from(EXIT_USAGE)
        }
        Err(SetupError::Failed(msg)) => {
            eprintln!("fugu: error: {msg}");
            ExitStatus::Setup.into()
        }
    }
}

fn setup(args: RunArgs) -> Result<(Machine, Option<crate::console::RawTerminal>), SetupError> {
    let backend = crate::cli::backend(args.backend);
    crate::devices::virtio::setup::check_devices(&args.disk, &args.net)
        .map_err(|e| SetupError::Usage(e.to_string()))?;
    // Resolved before anything is opened; the drop itself comes once the VM is set up.
    let drop_to = match &args.user {
        Some(user) => Some(
            crate::privileges::resolve(user, args.group.as_deref())
                .map_err(|e| SetupError::Usage(format!("--user/--group: {e}")))?,
        ),
        None => None,
    };
    let firmware = match &args.bios {
        Some(path) => Some(firmware_config(&args, path.as_deref())?),
        None => None,
    };
    // What is loaded into guest RAM must fit in it: each file is checked against what is
    // left before it is read (the loaders check the exact placement later).
    let mut room = args.memory;
    let (kernel, kernel_name) = match &firmware {
        Some(_) => (Vec::new(), String::new()),
        None => {
            let kernel_path = args.kernel.clone().ok_or_else(|| {
                SetupError::Usage("--kernel FILE, --image NAME or --bios is required".into())
            })?;
            (
                crate::boot::read_input("kernel", &kernel_path, room)?,
                kernel_path.display().to_string(),
            )
        }
    };
    room = room.saturating_sub(kernel.len() as u64);
    let mut modules = Vec::new();
    for spec in &args.initrd {
        let path = spec.split_whitespace().next().unwrap_or(spec);
        let data = crate::boot::read_input("initrd", std::path::Path::new(path), room)?;
        room = room.saturating_sub(data.len() as u64);
        modules.push((data, spec.clone()));
    }
    let seccomp = match args.seccomp {
        crate::cli::SeccompArg::Off => crate::seccomp::Mode::Off,
        crate::cli::SeccompArg::Log => crate::seccomp::Mode::Log,
        crate::cli::SeccompArg::Kill => crate::seccomp::Mode::Kill,
    };
    let mut log = None;
    let (serial_out, serial_in): (Box<dyn std::io::Write + Send>, bool) = match args.serial.as_str()
    {
        // Unbuffered, as a --serial FILE is: Rust's stdout holds a line until its newline,
        // and a prompt ("login: ") would not show until then (on a terminal, and on the pipe
        // fugud reads a VM's console from).
        "stdio" => {
            use std::os::fd::AsFd;
            let out = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("the serial console on stdout: {e}"))?;
            (Box::new(std::fs::File::from(out)), true)
        }
        "none" => (Box::new(std::io::sink()), false),
        path => {
            let l = SerialLog::open(path)?;
            let out = l
                .file
                .try_clone()
                .map_err(|e| format!("serial log {path}: {e}"))?;
            log = Some(l);
            (Box::new(out), false)
        }
    };
    let cfg = VmConfig {
        backend,
        mem_size: args.memory,
        cpus: args.cpus,
        kernel,
        kernel_name,
        cmdline: args.cmdline,
        modules,
        serial_out,
        serial_in,
        host_compat: match args.host_compat {
            HostCompatArg::Auto => crate::host_compat::Mode::Auto,
            HostCompatArg::On => crate::host_compat::Mode::On,
            HostCompatArg::Off => crate::host_compat::Mode::Off,
        },
        cpu_vendor: match args.cpu_profile {
            CpuProfileArg::Auto => None,
            CpuProfileArg::Host => Some(crate::arch::x86::cpuid::Vendor::Host),
            CpuProfileArg::Intel => Some(crate::arch::x86::cpuid::Vendor::Intel),
        },
        nested: args.nested,
        cpu_features: args
            .cpu_features
            .iter()
            .flat_map(|l| l.0.iter().copied())
            .collect(),
        disks: args.disk.clone(),
        nets: args.net.clone(),
        firmware,
        acpi: !args.no_acpi,
    };
    let machine = match Machine::new(cfg) {
        Ok(m) => m,
        Err(e) => {
            if let Some(l) = &log {
                l.abandon();
            }
            return Err(e.to_string().into());
        }
    };
    if let Some(l) = &log {
        l.start()?;
    }
    if let Some(ids) = drop_to {
        crate::privileges::drop_to(ids).map_err(|e| e.to_string())?;
    }
    crate::machine::install_signal_handlers();
    // Under fugud: tell it the VM is set up (after the drop: it re-arms the parent-death
    // signal that a change of user clears).
    crate::control::vmproc::announce_ready().map_err(|e| e.to_string())?;
    crate::seccomp::install_process(seccomp).map_err(|e| e.to_string())?;
    let raw = serial_in.then(crate::console::RawTerminal::enable);
    Ok((machine, raw))
}

/// `--bios [PATH]`, `--boot`, `--net-rom`: the firmware, what it boots, the NIC's option ROM.
fn firmware_config(
    args: &RunArgs,
    path: Option<&std::path::Path>,
) -> Result<crate::boot::firmware::FirmwareConfig, SetupError> {
    use crate::boot::firmware::{self, BootDevice};
    let boot = match args.boot {
        Some(crate::cli::BootArg::Disk) if args.disk.is_empty() => {
            return Err(SetupError::Usage("--boot disk needs a --disk".into()))
        }
        Some(crate::cli::BootArg::Net) if args.net.is_empty() => {
            return Err(SetupError::Usage(
                "--boot net needs a --net tap=NAME".into(),
            ))
        }
        Some(crate::cli::BootArg::Disk) => Some(BootDevice::Disk),
        Some(crate::cli::BootArg::Net) => Some(BootDevice::Net),
        None => None,
    };
    let bios = firmware::Firmware::load(path).map_err(|e| e.to_string())?;
    let net_rom = if args.net.is_empty() {
        None
    } else {
        let mut rom =
            firmware::load_option_rom(args.net_rom.as_deref()).map_err(|e| e.to_string())?;
        // fugu's virtio-net is the transitional device 1af4:1000.
        firmware::patch_pci_ids(&mut rom, crate::devices::virtio::transport::VENDOR, 0x1000);
        Some(rom)
    };
    Ok(firmware::FirmwareConfig {
        bios,
        boot,
        net_rom,
    })
}
