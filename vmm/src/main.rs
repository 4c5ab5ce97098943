use clap::Parser;
use fugu::cli::{Cli, Command, CpuProfileArg, HostCompatArg, RunArgs};
use fugu::exit_status::ExitStatus;
use fugu::machine::{Machine, VmConfig};
use std::process::ExitCode;

/// A command-line mistake found after parsing (clap exits with 2 for the ones it finds).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if fugu::cli::DocCli::requested(&argv) {
        return docs(fugu::cli::DocCli::parse_from(argv).command);
    }
    // fugud is this binary under another name (a link in the package).
    let called = argv
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    if called == Some("fugud") {
        return fugu::control::daemon::main(fugu::cli::FugudCli::parse_from(argv));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Image(args) => ExitCode::from(fugu::image::run::main(args)),
        Command::Disk(args) => disk(args.command),
        cmd => fugu::control::client::main(cmd),
    }
}

/// `fugu disk create` and `fugu disk info`.
fn disk(cmd: fugu::cli::DiskCommand) -> ExitCode {
    use fugu::cli::{DiskCommand, DiskFormatArg};
    use fugu::devices::virtio::blk::{image, Format};
    let r = match cmd {
        DiskCommand::Create {
            path,
            size,
            base,
            format,
        } => {
            let format = match format {
                Some(DiskFormatArg::Raw) => Format::Raw,
                Some(DiskFormatArg::Qcow2) => Format::Qcow2,
                None if base.is_some() || path.extension().is_some_and(|e| e == "qcow2") => {
                    Format::Qcow2
                }
                None => Format::Raw,
            };
            image::create(&path, size, base.as_deref(), format).map(|()| {
                println!("created {} ({})", path.display(), format.name());
            })
        }
        DiskCommand::Info { path } => image::info(&path).map(|s| print!("{s}")),
    };
    match r {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => {
            eprintln!("fugu: error: {e}");
            ExitStatus::Failure.into()
        }
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
        DocCommand::AcpiTables {
            cpus,
            bios_memory,
            out_dir,
        } => acpi_tables(cpus, bios_memory, &out_dir),
    };
    match result {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => {
            eprintln!("fugu: error: {e}");
            ExitStatus::Failure.into()
        }
    }
}

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

/// The hidden `fugu acpi-tables`: the tables of a VM with `cpus` vCPUs, one file each.
fn acpi_tables(cpus: u8, bios_memory: Option<u64>, dir: &std::path::Path) -> std::io::Result<()> {
    use fugu::acpi::{build, dump, Config};
    let cfg = match bios_memory {
        Some(m) => Config::firmware(cpus.max(1), m),
        None => Config::direct(cpus.max(1)),
    };
    std::fs::create_dir_all(dir)?;
    let written = dump(&build(&cfg), dir).map_err(std::io::Error::other)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

impl From<&str> for SetupError {
    fn from(msg: &str) -> Self {
        SetupError::Failed(msg.into())
    }
}

/// `--serial FILE`: opened (and created) before the VM is set up, so that a path that cannot
/// be written is an error up front, but emptied only once the VM is about to run: a VM that
/// fails to start keeps the previous run's log, and a log file it created is removed.
struct SerialLog {
    file: std::fs::File,
    path: std::path::PathBuf,
    created: bool,
}

impl SerialLog {
    fn open(path: &str) -> Result<SerialLog, String> {
        let created = !std::path::Path::new(path).exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("cannot create serial log {path}: {e}"))?;
        Ok(SerialLog {
            file,
            path: path.into(),
            created,
        })
    }

    /// The VM starts: the log begins empty (a terminal or pipe given as the log is left be).
    fn start(&self) -> Result<(), String> {
        let err =
            |e: std::io::Error| format!("cannot empty serial log {}: {e}", self.path.display());
        if self.file.metadata().map_err(err)?.is_file() {
            self.file.set_len(0).map_err(err)?;
        }
        Ok(())
    }

    /// The VM did not start: leave no trace of this run.
    fn abandon(&self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn run(mut args: RunArgs) -> ExitCode {
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
        fugu::console::restore_terminal();
        prev(info);
    }));
    // First: an image of kind bios-disk turns this into a firmware boot.
    if let Err(msg) = fugu::image::run::apply(&mut args) {
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
                    stop.request(fugu::outcome::Outcome::Timeout(secs));
                });
            }
            let (exit, finals) = machine.run();
            drop(_raw);
            let clean = matches!(
                exit,
                fugu::outcome::Outcome::DebugExit(_) | fugu::outcome::Outcome::Poweroff
            );
            if !verbose && !clean {
                for n in &notes {
                    eprintln!("fugu: note: {n}");
                }
            }
            if verbose || !clean {
                eprintln!("fugu: {}", exit.describe());
            }
            fugu::control::vmproc::report_end(&exit.describe());
            if bios && exit == fugu::outcome::Outcome::Reset {
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
                    && matches!(exit, fugu::outcome::Outcome::TripleFault { .. })
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

fn setup(args: RunArgs) -> Result<(Machine, Option<fugu::console::RawTerminal>), SetupError> {
    let backend = fugu::cli::backend(args.backend);
    fugu::devices::virtio::setup::check_devices(&args.disk, &args.net)
        .map_err(|e| SetupError::Usage(e.to_string()))?;
    // Resolved before anything is opened; the drop itself comes once the VM is set up.
    let drop_to = match &args.user {
        Some(user) => Some(
            fugu::privileges::resolve(user, args.group.as_deref())
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
                fugu::boot::read_input("kernel", &kernel_path, room)?,
                kernel_path.display().to_string(),
            )
        }
    };
    room = room.saturating_sub(kernel.len() as u64);
    let mut modules = Vec::new();
    for spec in &args.initrd {
        let path = spec.split_whitespace().next().unwrap_or(spec);
        let data = fugu::boot::read_input("initrd", std::path::Path::new(path), room)?;
        room = room.saturating_sub(data.len() as u64);
        modules.push((data, spec.clone()));
    }
    let seccomp = match args.seccomp {
        fugu::cli::SeccompArg::Off => fugu::seccomp::Mode::Off,
        fugu::cli::SeccompArg::Log => fugu::seccomp::Mode::Log,
        fugu::cli::SeccompArg::Kill => fugu::seccomp::Mode::Kill,
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
            HostCompatArg::Auto => fugu::host_compat::Mode::Auto,
            HostCompatArg::On => fugu::host_compat::Mode::On,
            HostCompatArg::Off => fugu::host_compat::Mode::Off,
        },
        cpu_vendor: match args.cpu_profile {
            CpuProfileArg::Auto => None,
            CpuProfileArg::Host => Some(fugu::arch::x86::cpuid::Vendor::Host),
            CpuProfileArg::Intel => Some(fugu::arch::x86::cpuid::Vendor::Intel),
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
        fugu::privileges::drop_to(ids).map_err(|e| e.to_string())?;
    }
    fugu::machine::install_signal_handlers();
    // Under fugud: tell it the VM is set up (after the drop: it re-arms the parent-death
    // signal that a change of user clears).
    fugu::control::vmproc::announce_ready().map_err(|e| e.to_string())?;
    fugu::seccomp::install_process(seccomp).map_err(|e| e.to_string())?;
    let raw = serial_in.then(fugu::console::RawTerminal::enable);
    Ok((machine, raw))
}

/// `--bios [PATH]`, `--boot`, `--net-rom`: the firmware, what it boots, the NIC's option ROM.
fn firmware_config(
    args: &RunArgs,
    path: Option<&std::path::Path>,
) -> Result<fugu::boot::firmware::FirmwareConfig, SetupError> {
    use fugu::boot::firmware::{self, BootDevice};
    let boot = match args.boot {
        Some(fugu::cli::BootArg::Disk) if args.disk.is_empty() => {
            return Err(SetupError::Usage("--boot disk needs a --disk".into()))
        }
        Some(fugu::cli::BootArg::Net) if args.net.is_empty() => {
            return Err(SetupError::Usage(
                "--boot net needs a --net tap=NAME".into(),
            ))
        }
        Some(fugu::cli::BootArg::Disk) => Some(BootDevice::Disk),
        Some(fugu::cli::BootArg::Net) => Some(BootDevice::Net),
        None => None,
    };
    let bios = firmware::Firmware::load(path).map_err(|e| e.to_string())?;
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
