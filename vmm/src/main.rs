use clap::Parser;
use fugu::cli::{BackendArg, Cli, Command, CpuProfileArg, HostCompatArg, RunArgs};
use fugu::hypervisor::Backend;
use fugu::vm::{Machine, VmConfig};
use std::process::ExitCode;

/// fugu's own failure to start a VM (see the EXIT STATUS section of --help).
const EXIT_SETUP: u8 = 4;
/// `--bios`: the firmware found nothing to boot (also a --boot-timeout, from VmExit).
const EXIT_NO_BOOT: u8 = 8;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if fugu::cli::DocCli::requested(&argv) {
        return docs(fugu::cli::DocCli::parse_from(argv).command);
    }
    if fugu::bench::BenchCli::requested(&argv) {
        return bench(fugu::bench::BenchCli::parse_from(argv).command);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Image(args) => ExitCode::from(fugu::image::run::main(args)),
    }
}

/// The hidden `fugu manpage [--out-dir DIR]` and `fugu completions <SHELL>` (for packaging).
fn docs(cmd: fugu::cli::DocCommand) -> ExitCode {
    use fugu::cli::DocCommand;
    let mut out = std::io::stdout();
    let result = match cmd {
        DocCommand::Manpage { out_dir } => fugu::cli::manpages(out_dir.as_deref(), &mut out)
            .and_then(|written| {
                use std::io::Write;
                written
                    .iter()
                    .try_for_each(|p| writeln!(out, "{}", p.display()))
            }),
        DocCommand::Completions { shell } => fugu::cli::completions(shell, &mut out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fugu: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The hidden `fugu bench-exits` and `fugu bench-blk` (for `cargo xtask bench`).
fn bench(cmd: fugu::bench::BenchCommand) -> ExitCode {
    match fugu::bench::main(cmd) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fugu: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn run(mut args: RunArgs) -> ExitCode {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        fugu::console::restore_terminal();
        prev(info);
    }));
    // First: an image of kind bios-disk turns this into a firmware boot.
    if let Err(msg) = fugu::image::run::apply(&mut args) {
        eprintln!("fugu: error: {msg}");
        return ExitCode::from(EXIT_SETUP);
    }
    let bios = args.bios.is_some();
    let boot_timeout = args.boot_timeout;
    match setup(args) {
        Ok((machine, _raw)) => {
            let adaptation = machine.adaptation.clone();
            let stats = machine.stats.clone();
            if let Some(secs) = boot_timeout {
                let exit = machine.exit.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(secs));
                    exit.request(fugu::vm::VmExit::Timeout(secs));
                });
            }
            let (exit, finals) = machine.run();
            drop(_raw);
            eprintln!("fugu: {}", exit.describe());
            if bios && exit == fugu::vm::VmExit::Reset {
                // SeaBIOS reboots after "No bootable device" (etc/boot-fail-wait is 0).
                eprintln!("fugu: error: the firmware found nothing to boot and asked for a reboot (see the console for why); fugu does not reboot guests");
                return ExitCode::from(EXIT_NO_BOOT);
            }
            if let Some(s) = stats.summary() {
                eprintln!("fugu: {s}");
            }
            if !matches!(
                exit,
                fugu::vm::VmExit::DebugExit(_) | fugu::vm::VmExit::Poweroff
            ) {
                for f in &finals {
                    eprintln!("fugu: {f}");
                }
                // A known limit of hosts whose KVM emulates guest kernel code: 32-bit paging
                // triple-faults. Say so instead of leaving the user with a bare triple fault.
                if adaptation.is_some()
                    && matches!(exit, fugu::vm::VmExit::TripleFault { .. })
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
            ExitCode::from(exit.status() as u8)
        }
        Err(msg) => {
            eprintln!("fugu: error: {msg}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn setup(args: RunArgs) -> Result<(Machine, Option<fugu::console::RawTerminal>), String> {
    let backend = match args.backend {
        Some(BackendArg::RustVmm) => Backend::RustVmm,
        Some(BackendArg::Portable) => Backend::Portable,
        None => Backend::host_default(),
    };
    let firmware = match &args.bios {
        Some(path) => Some(firmware_config(&args, path.as_deref())?),
        None => None,
    };
    let kernel = match &firmware {
        Some(_) => Vec::new(),
        None => {
            let kernel_path = args
                .kernel
                .clone()
                .ok_or("--kernel FILE, --image NAME or --bios is required")?;
            read_file("kernel", &kernel_path)?
        }
    };
    let mut modules = Vec::new();
    for spec in &args.initrd {
        let path = spec.split_whitespace().next().unwrap_or(spec);
        modules.push((
            read_file("initrd", std::path::Path::new(path))?,
            spec.clone(),
        ));
    }
    let (serial_out, serial_in): (Box<dyn std::io::Write + Send>, bool) = match args.serial.as_str()
    {
        "stdio" => (Box::new(std::io::stdout()), true),
        "none" => (Box::new(std::io::sink()), false),
        path => (
            Box::new(
                std::fs::File::create(path)
                    .map_err(|e| format!("cannot create serial log {path}: {e}"))?,
            ),
            false,
        ),
    };
    let cfg = VmConfig {
        backend,
        mem_size: args.memory,
        cpus: args.cpus,
        kernel,
        cmdline: args.cmdline,
        modules,
        serial_out,
        serial_in,
        host_compat: match args.host_compat {
            HostCompatArg::Auto => fugu::host_compat::Mode::Auto,
            HostCompatArg::On => fugu::host_compat::Mode::On,
            HostCompatArg::Off => fugu::host_compat::Mode::Off,
        },
        cpu_vendor: match args.cpu_profile {
            CpuProfileArg::Auto => None,
            CpuProfileArg::Host => Some(fugu::arch::x86::cpuid::Vendor::Host),
            CpuProfileArg::Intel => Some(fugu::arch::x86::cpuid::Vendor::Intel),
        },
        disks: args.disk.clone(),
        nets: args.net.clone(),
        firmware,
    };
    let machine = Machine::new(cfg).map_err(|e| e.to_string())?;
    let raw = serial_in.then(fugu::console::RawTerminal::enable);
    Ok((machine, raw))
}

/// `--bios [PATH]`, `--boot`, `--net-rom`: the firmware, what it boots, the NIC's option ROM.
fn firmware_config(
    args: &RunArgs,
    path: Option<&std::path::Path>,
) -> Result<fugu::boot::firmware::FirmwareConfig, String> {
    use fugu::boot::firmware::{self, BootDevice};
    let bios = firmware::Firmware::load(path).map_err(|e| e.to_string())?;
    let boot = match args.boot {
        Some(fugu::cli::BootArg::Disk) if args.disk.is_empty() => {
            return Err("--boot disk needs a --disk".into())
        }
        Some(fugu::cli::BootArg::Net) if args.net.is_empty() => {
            return Err("--boot net needs a --net tap=NAME".into())
        }
        Some(fugu::cli::BootArg::Disk) => Some(BootDevice::Disk),
        Some(fugu::cli::BootArg::Net) => Some(BootDevice::Net),
        None => None,
    };
    let net_rom = if args.net.is_empty() {
        None
    } else {
        let mut rom =
            firmware::load_option_rom(args.net_rom.as_deref()).map_err(|e| e.to_string())?;
        // fugu's virtio-net is the transitional device 1af4:1000.
        firmware::patch_pci_ids(&mut rom, fugu::devices::virtio::transport::VENDOR, 0x1000);
        Some(rom)
    };
    Ok(firmware::FirmwareConfig {
        bios,
        boot,
        net_rom,
    })
}
