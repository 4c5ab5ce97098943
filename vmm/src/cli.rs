//! The command line: `fugu run` and friends, defined once with clap (the man page and shell
//! completions are generated from this definition).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The EXIT STATUS section of `fugu run --help` (one line per `exit_status::ExitStatus`).
pub(crate) const EXIT_CODES: &str = "\
EXIT STATUS:
  0     the guest powered off (ACPI soft-off, or a KVM shutdown event) or asked for a reset
  1-255 (odd) the guest wrote v to the debug-exit port 0xf4: status (v << 1) | 1
  2     the command line was invalid: an unknown option, a bad value (--memory 0, a tap
        name Linux would refuse, a multicast MAC), options that do not go together, one
        writable disk image or one tap given twice
  4     fugu could not start the VM (no KVM, bad kernel, not enough memory, ...)
  6     the guest crashed: triple fault, halted for good, or an exit fugu cannot handle
  8     --bios: the firmware found nothing to boot (it asked for a reboot), or the guest
        was still running after --boot-timeout
  130   fugu was ended by a signal: SIGINT (Ctrl-C), SIGTERM, SIGHUP (the terminal went
        away) or SIGQUIT (Ctrl-\\); the VM is stopped and the terminal restored
  SIGSYS (no status; shells show 159) fugu made a system call outside its seccomp list
        (a line on stderr names it): a fugu bug; please report it, and run with
        --seccomp=log meanwhile

SIGNALS:
  SIGINT, SIGTERM, SIGHUP, SIGQUIT  end the VM at once (status 130)
  SIGPWR           press the guest's ACPI power button: a guest that handles it (acpid,
                   systemd-logind) shuts down and powers off, and fugu ends with status 0.
                   Nothing happens with --no-acpi or before the guest enabled the button.";

#[derive(Debug, Parser)]
#[command(
    name = "fugu",
    version,
    about = "A small KVM hypervisor for i386 and amd64 guests",
    long_about = "fugu runs x86 virtual machines on Linux KVM: Linux, Multiboot and ELF kernels \
                  booted directly, on i386 and amd64 hosts alike.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: boxing `run`'s many options would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a virtual machine with its serial console on this terminal.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Download, verify and manage guest images (see docs/images.md).
    Image(ImageArgs),
    /// Create and inspect disk images: raw and qcow2, with backing files (see docs/disks.md).
    Disk(DiskArgs),
    /// Start a VM under fugud: one declared in the configuration, or NAME with the options
    /// of `fugu run` (root only).
    Start(StartArgs),
    /// Stop a VM under fugud: ACPI power button, then forced after the timeout.
    Stop(StopArgs),
    /// The VMs under fugud: a table (name, state, pid, vCPUs, memory, uptime, owner).
    Status(StatusArgs),
    /// Attach to a VM's serial console (COM1) through fugud; detach with ~. at the start
    /// of a line.
    Console(ConsoleArgs),
    /// Pause a VM under fugud (its process is stopped; the guest's clock jumps on unpause).
    Pause(VmArgs),
    /// Resume a paused VM.
    Unpause(VmArgs),
    /// Make fugud re-read its configuration: new autostart VMs start, running VMs are left
    /// alone; prints what changed.
    Reload(SocketArg),
}

/// Where fugud's control socket is (every control command takes it).
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// fugud's control socket.
    #[arg(long, value_name = "PATH", env = "FUGU_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// The control socket fugud listens on unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/fugu/fugu.sock";

/// A command on one VM.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// The VM's name.
    pub name: String,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The VM's name (letters, digits, '.', '_' and '-'; at most 64).
    pub name: String,
    /// Attach to its console once it runs (as `fugu console`).
    #[arg(short = 'c', long)]
    pub console: bool,
    #[command(flatten)]
    pub socket: SocketArg,
    /// The options of `fugu run` (--kernel, --memory, --disk, ...), for a VM that is not in
    /// the configuration. Relative paths are taken from this directory. Without them, NAME
    /// starts as its configuration declares.
    #[arg(
        value_name = "RUN OPTIONS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub run: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// End the VM at once instead of pressing its power button.
    #[arg(short, long)]
    pub force: bool,
    /// Return only once the VM has ended.
    #[arg(short, long)]
    pub wait: bool,
    /// How long the guest has to power off before fugud forces it.
    #[arg(short, long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this VM (with its last end: status, reason, time).
    pub name: Option<String>,
    /// Print fugud's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// The VM's name.
    pub name: String,
    /// Only watch: send nothing to the guest (one client at a time may type).
    #[arg(short, long)]
    pub read_only: bool,
    /// Do not replay the console output kept before attaching.
    #[arg(long)]
    pub no_history: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `fugud`: the daemon that owns the VMs (its own name, same binary: fugu started as fugud).
#[derive(Debug, Parser)]
#[command(
    name = "fugud",
    version,
    about = "The fugu daemon: runs the VMs declared in /etc/fugu, one process each, and \
             serves the control socket that `fugu start/stop/status/console` use",
    long_about = "fugud runs in the foreground (for systemd: Type=notify). It reads the \
                  configuration, starts the VMs marked autostart, and serves HTTP/1.1 with JSON \
                  on a Unix socket (mode 0660, group fugu; see docs/api.md). Each VM is a \
                  `fugu run` process of its own, with its console kept by fugud. On SIGTERM or \
                  SIGINT fugud stops every VM (power button, then forced) and exits; VMs never \
                  outlive it. SIGHUP reloads the configuration."
)]
pub struct FugudCli {
    /// The configuration: a TOML file, or a directory whose *.toml files are read in order.
    #[arg(long, value_name = "PATH", default_value = "/etc/fugu")]
    pub config: PathBuf,
    /// The control socket to create.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The group that may use the socket (besides root).
    #[arg(long, value_name = "GROUP", default_value = "fugu")]
    pub group: String,
    /// Where fugud keeps the pid files of its VMs (to find leftovers of a fugud that died).
    #[arg(long, value_name = "DIR", default_value = "/run/fugu")]
    pub state_dir: PathBuf,
    /// How long each guest has to power off when fugud stops.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub stop_timeout: u64,
    /// Console output kept per VM, in KiB (the oldest is dropped).
    #[arg(long, value_name = "KIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(4..=65536))]
    pub console_log: u32,
    /// Who a VM runs as when its table names no `user` and fugud runs as root: each VM opens
    /// what it needs as root, then drops to this user (no capabilities, no_new_privs) before
    /// the guest runs. The fugu package creates the system user fugu-vm; `root` keeps VMs
    /// root (not recommended).
    #[arg(long, value_name = "USER", default_value = VM_USER)]
    pub vm_user: String,
    /// The group of --vm-user's VMs (default: that user's primary group).
    #[arg(long, value_name = "GROUP")]
    pub vm_group: Option<String>,
}

/// The system user fugud's VMs run as unless told otherwise (created by the package).
pub const VM_USER: &str = "fugu-vm";

/// `fugu disk ...`.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    #[command(subcommand)]
    pub command: DiskCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiskFormatArg {
    Raw,
    Qcow2,
}

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Create a disk image; with -b, a qcow2 copy-on-write overlay on BASE (opened read-only
    /// while the VM runs). The format is --format, else qcow2 with -b or a .qcow2 name, else raw.
    Create {
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Virtual size, e.g. 8G (suffix K, M or G; M if none) [default with -b: BASE's size].
        #[arg(short = 's', long, value_parser = parse_size, required_unless_present = "base")]
        size: Option<u64>,
        /// The backing (base) image, raw or qcow2; a relative name is kept relative to PATH's
        /// directory when it resolves from there.
        #[arg(short = 'b', long = "base", value_name = "BASE")]
        base: Option<PathBuf>,
        #[arg(short = 'f', long, value_enum)]
        format: Option<DiskFormatArg>,
    },
    /// Show an image's format, virtual size, allocated bytes and backing chain.
    Info {
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}

/// `fugu image ...`: guest images from an index published with `cargo xtask images publish`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image index: an https:// or http:// URL of index.json, or a local path. https://
    /// is verified against the system's CA store (or SSL_CERT_FILE / SSL_CERT_DIR); the
    /// https_proxy, http_proxy and no_proxy variables apply. The default is the signed index
    /// published with this fugu release (its GitHub release assets).
    #[arg(long, global = true, value_name = "URL", env = "FUGU_IMAGE_INDEX")]
    pub index: Option<String>,
    /// The image cache [default: $XDG_CACHE_HOME/fugu/images, else ~/.cache/fugu/images].
    #[arg(long, global = true, value_name = "DIR", env = "FUGU_IMAGE_CACHE")]
    pub cache: Option<PathBuf>,
    /// The keyring (binary OpenPGP, as apt's) that the index's signature (index.json.asc next
    /// to it) must verify against, with gpgv [default:
    /// /usr/share/keyrings/fugu-archive-keyring.gpg, installed by the fugu package].
    #[arg(long, global = true, value_name = "FILE", env = "FUGU_IMAGE_KEYRING")]
    pub keyring: Option<PathBuf>,
    /// Use the index without checking its signature. Anyone who can change the index or the
    /// way to it can then choose what you boot; the files' SHA-256 only protect them against
    /// damage, not against a changed index.
    #[arg(long, global = true, conflicts_with = "keyring")]
    pub insecure_skip_signature: bool,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the index's images and which of them are cached.
    List {
        /// Only the cache; do not fetch the index.
        #[arg(long)]
        cached: bool,
    },
    /// Download images into the cache: progress bar, resume, SHA-256 checked before use.
    Pull {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Check the sizes and SHA-256 of cached images (all of them when none is named).
    Verify {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Remove images from the cache.
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// The hidden commands that print documentation generated from [`Cli`] (used by packaging):
/// `fugu manpage [--out-dir DIR]` and `fugu completions <SHELL>`. They are a separate parser,
/// so that neither `--help`, the man page nor the completion scripts mention them.
#[derive(Debug, Parser)]
#[command(name = "fugu", disable_help_subcommand = true)]
pub struct DocCli {
    #[command(subcommand)]
    pub command: DocCommand,
}

#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Print the man page fugu.1, or write every page (fugu.1, fugu-run.1, ...) into DIR.
    Manpage {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print the completion script for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the ACPI tables of a VM (as a direct boot places them) into DIR, one
    /// `<signature>.dat` per table, for iasl and the cross-build comparison.
    AcpiTables {
        #[arg(long, default_value_t = 1)]
        cpus: u8,
        /// The `--bios` machine's tables (i440FX windows, no MCFG) for this much RAM.
        #[arg(long, value_parser = parse_size)]
        bios_memory: Option<u64>,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

impl DocCli {
    /// Whether the command line asks for one of the hidden documentation commands.
    pub fn requested(args: &[std::ffi::OsString]) -> bool {
        matches!(
            args.get(1).and_then(|a| a.to_str()),
            Some("manpage" | "completions" | "acpi-tables")
        )
    }
}

/// Write the man page of `fugu` to `w`, or with `out_dir` every page (fugu.1, fugu-run.1, ...)
/// into that directory, returning the paths written. Hidden subcommands get no page.
pub fn manpages(
    out_dir: Option<&std::path::Path>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<Vec<PathBuf>> {
    use clap::CommandFactory;
    // Built, so that subcommands know their display names ("fugu-run") and usage ("fugu run").
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = out_dir else {
        clap_mangen::Man::new(cmd).render(w)?;
        return Ok(Vec::new());
    };
    let mut fugud = FugudCli::command();
    fugud.build();
    fn walk(
        cmd: &clap::Command,
        dir: &std::path::Path,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, out)?;
        }
        out.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    walk(&cmd, dir, &mut written)?;
    // fugud is a system daemon: section 8.
    written.push(clap_mangen::Man::new(fugud).section("8").generate_to(dir)?);
    written.sort();
    Ok(written)
}

/// Write the completion script for `shell` to `w`.
pub fn completions(shell: clap_complete::Shell, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    // clap_complete panics on write errors; render into memory, then write.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fugu", &mut buf);
    w.write_all(&buf)?;
    w.flush()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// kvm-ioctls / vm-memory from rust-vmm (x86_64 hosts)
    RustVmm,
    /// fugu's own portable KVM layer (every host, including i686)
    Portable,
}

/// `--backend`, or the host's default when it is not given.
pub fn backend(arg: Option<BackendArg>) -> crate::backend::Backend {
    use crate::backend::Backend;
    match arg {
        Some(BackendArg::RustVmm) => Backend::RustVmm,
        Some(BackendArg::Portable) => Backend::Portable,
        None => Backend::host_default(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootArg {
    /// the first --disk (virtio-blk)
    Disk,
    /// the first --net (virtio-net, through its iPXE option ROM)
    Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostCompatArg {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompArg {
    Off,
    Log,
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuProfileArg {
    Auto,
    Host,
    Intel,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kernel to boot: a Multiboot v1 kernel (ELF32 or a.out kludge) or an ELF kernel.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["image", "bios"])]
    pub kernel: Option<PathBuf>,
    /// Boot through a BIOS instead of a kernel: SeaBIOS from Debian's seabios package
    /// (/usr/share/seabios/bios-256k.bin) unless PATH is given. It boots what --boot says.
    #[arg(long, value_name = "PATH", num_args = 0..=1, conflicts_with_all = ["kernel", "image"])]
    pub bios: Option<Option<PathBuf>>,
    /// With --bios: boot the first --disk or the first --net (iPXE, network boot); without
    /// it the firmware tries every device.
    #[arg(long, value_enum, value_name = "disk|net", requires = "bios")]
    pub boot: Option<BootArg>,
    /// With --bios: the option ROM of the first --net NIC [default: Debian ipxe-qemu's
    /// /usr/lib/ipxe/qemu/pxe-virtio.rom].
    #[arg(long, value_name = "FILE", requires = "bios")]
    pub net_rom: Option<PathBuf>,
    /// End the VM with status 8 if the guest is still running after SECS seconds (for
    /// unattended firmware boots: a boot program that hangs does not hang the caller).
    #[arg(long, value_name = "SECS")]
    pub boot_timeout: Option<u64>,
    /// Also report a normal end on stderr (the guest's debug exit or power-off); without it
    /// fugu prints nothing of its own when the guest ends as it meant to, so that harnesses
    /// which treat stderr output as a failure see a clean run. Abnormal ends are always
    /// reported.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Boot a cached image (`fugu image pull NAME`): its kernel, initrd and command line
    /// (--cmdline is appended), and its disk, read-only, as the first --disk. A BIOS disk
    /// image (kind bios-disk) boots as with --bios --boot disk; a PXE program is served, not run.
    #[arg(long, value_name = "NAME", conflicts_with = "kernel")]
    pub image: Option<String>,
    /// Initial ramdisk; for Multiboot kernels each --initrd becomes a module ("FILE args").
    #[arg(long, value_name = "FILE")]
    pub initrd: Vec<String>,
    /// Kernel command line. A Multiboot kernel gets the --kernel path first, then this
    /// (argv[0], as QEMU's -kernel and GRUB legacy pass it; GRUB 2 passes only the arguments).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Guest RAM, with an optional K/M/G suffix (plain numbers are MiB); at least 2M.
    #[arg(long, default_value = "256M", value_parser = parse_memory)]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub cpus: u32,
    /// Where the serial console (COM1) goes: stdio, none, or a file path.
    #[arg(long, default_value = "stdio", value_name = "stdio|none|FILE")]
    pub serial: String,
    /// Adapt to hosts whose KVM emulates guest kernel code (no VMX/SVM): Linux switches that
    /// avoid unemulated features, a GenuineIntel CPU, and completion of instructions the host
    /// cannot emulate. auto = on exactly when the host has no VMX/SVM or runs kvm_pvm.
    #[arg(long, value_enum, default_value = "auto")]
    pub host_compat: HostCompatArg,
    /// CPU vendor the guest sees: auto (GenuineIntel under host adaptation, else the host's),
    /// host, or intel.
    #[arg(long, value_enum, default_value = "auto")]
    pub cpu_profile: CpuProfileArg,
    /// Nested virtualization: show the guest the host's SVM or VMX so that it can run a
    /// hypervisor of its own (needs kvm_amd/kvm_intel with nested=1; an error otherwise).
    /// Off by default: the guest sees neither.
    #[arg(long)]
    pub nested: bool,
    /// CPU features to add (+name) or remove (-name) from what the guest's CPUID shows, e.g.
    /// "-x2apic,+clwb" (names as in /proc/cpuinfo; a bare name adds). Applied last, over
    /// host adaptation's choices; an addition the host's KVM does not offer is dropped with a
    /// note. An unknown name is an error that lists the known ones. Repeatable.
    #[arg(long, value_name = "[+|-]NAME,...", allow_hyphen_values = true, value_parser = parse_cpu_features)]
    pub cpu_features: Vec<crate::arch::x86::features::EditList>,
    /// A virtio-blk disk on a raw or qcow2 image file or a block device, read-only with ",ro"
    /// (repeatable). The format is detected from the header (a qcow2 header means qcow2);
    /// ",format=raw" gives any file to the guest as raw bytes. A comma inside PATH is written
    /// ",," ("path=PATH" also works). A raw image is whole 512-byte sectors; one without write
    /// permission needs ",ro". A writable image is locked while the VM runs (a second VM
    /// using it gets an error); qcow2 backing files are opened read-only with a shared lock.
    #[arg(long, value_name = "PATH[,ro][,format=raw|qcow2]", value_parser = crate::devices::virtio::setup::parse_disk)]
    pub disk: Vec<crate::devices::virtio::setup::DiskConfig>,
    /// A virtio-net NIC on a tap device: "tap=NAME[,mac=MAC]" or "NAME" (repeatable; the MAC
    /// is unicast, e.g. 52:54:00:12:34:56). As root, fugu creates a tap that does not exist
    /// and removes it when the VM ends.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]", value_parser = crate::devices::virtio::setup::parse_net)]
    pub net: Vec<crate::devices::virtio::setup::NetConfig>,
    /// Give the guest no ACPI: no tables (the MP table still lists the CPUs), no PM timer,
    /// power button or soft-off. For guests that must not see ACPI.
    #[arg(long)]
    pub no_acpi: bool,
    /// Started as root: once the VM is set up (/dev/kvm, taps, disks and the serial log
    /// open) and before the guest runs, switch every thread to USER (a name or a number),
    /// without supplementary groups, capabilities (bounding set included) or the means to
    /// regain them (no_new_privs). fugu checks the result and does not run the guest
    /// otherwise.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// With --user: the group to run as [default: the user's primary group].
    #[arg(long, value_name = "GROUP", requires = "user")]
    pub group: Option<String>,
    /// System call filters (seccomp), per thread kind, installed once the VM is set up: a
    /// call outside a thread's list kills fugu with SIGSYS (kill), or is allowed and logged
    /// by the kernel (log, to find what a new code path needs), or there is no filter (off).
    #[arg(long, value_enum, default_value = "kill", value_name = "off|log|kill")]
    pub seccomp: SeccompArg,
    /// KVM/memory implementation (default: rust-vmm on x86_64 hosts, portable elsewhere).
    #[arg(long, value_enum, hide = true)]
    pub backend: Option<BackendArg>,
}

/// Why a size (`--memory`, bench's sizes, a config file's `memory`) cannot be used. The
/// value parsers' error: clap prints it after "invalid value 'S' for '--memory <SIZE>'".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("unknown size suffix '{0}' (use K, M or G)")]
    UnknownSuffix(char),
    #[error("'{0}' is not a size (e.g. 256M, 1G)")]
    NotASize(String),
    #[error("size '{0}' is too large")]
    TooLarge(String),
    #[error("'{0}' is too little guest RAM: give at least 2M")]
    TooLittle(String),
}

/// Parse "256M", "1G", "512K", "1048576B" or a bare number of MiB.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(SizeError::UnknownSuffix(c)),
            };
            (&s[..i], m)
        }
        _ => (s, 1 << 20),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| SizeError::NotASize(s.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

/// `--memory`: a size of at least 2 MiB (the boot structures and the kernel's load address
/// need that much), so that a mistake such as `--memory 0` is a command-line error.
/// `--cpu-features`: a list of `+name`/`-name`.
fn parse_cpu_features(
    s: &str,
) -> Result<crate::arch::x86::features::EditList, crate::arch::x86::features::UnknownFeature> {
    crate::arch::x86::features::parse(s).map(crate::arch::x86::features::EditList)
}

pub fn parse_memory(s: &str) -> Result<u64, SizeError> {
    let n = parse_size(s)?;
    if n < 2 << 20 {
        return Err(SizeError::TooLittle(s.to_string()));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Issue 17 defect 16: `--memory 0` was found after parsing and exited with 4.
    #[test]
    fn too_little_memory_is_a_command_line_error() {
        for bad in ["0", "1M", "2047K"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
            let e =
                Cli::try_parse_from(["fugu", "run", "--kernel", "k", "--memory", bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert_eq!(parse_memory("2M"), Ok(2 << 20));
        let e =
            Cli::try_parse_from(["fugu", "run", "--kernel", "k", "--net", "tap=a/b"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("128"), Ok(128 << 20));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
        FugudCli::command().debug_assert();
    }

    #[test]
    fn start_takes_the_options_of_run_after_the_name() {
        let c = Cli::try_parse_from([
            "fugu", "start", "-c", "web", "--kernel", "k", "--memory", "64M",
        ])
        .unwrap();
        let Command::Start(s) = c.command else {
            panic!("not start")
        };
        assert_eq!(s.name, "web");
        assert!(s.console);
        assert_eq!(s.run, ["--kernel", "k", "--memory", "64M"]);
        let c = Cli::try_parse_from(["fugu", "stop", "web", "--force", "-t", "5"]).unwrap();
        let Command::Stop(s) = c.command else {
            panic!("not stop")
        };
        assert!(s.force && !s.wait && s.timeout == 5);
    }

    #[test]
    fn manpages_and_completions_come_from_the_definition() {
        let mut page = Vec::new();
        manpages(None, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH fugu 1"),
            "{page}"
        );
        assert!(page.contains("fugu\\-run(1)"), "{page}");
        assert!(
            !page.contains("manpage") && !page.contains("completions"),
            "{page}"
        );

        let dir = std::env::temp_dir().join(format!("fugu-man-{}", std::process::id()));
        let files = manpages(Some(&dir), &mut std::io::sink()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "fugu-console.1",
                "fugu-disk-create.1",
                "fugu-disk-info.1",
                "fugu-disk.1",
                "fugu-image-list.1",
                "fugu-image-pull.1",
                "fugu-image-rm.1",
                "fugu-image-verify.1",
                "fugu-image.1",
                "fugu-pause.1",
                "fugu-reload.1",
                "fugu-run.1",
                "fugu-start.1",
                "fugu-status.1",
                "fugu-stop.1",
                "fugu-unpause.1",
                "fugu.1",
                "fugud.8"
            ]
        );
        let run = std::fs::read_to_string(dir.join("fugu-run.1")).unwrap();
        assert!(
            run.contains("\\-\\-kernel") && !run.contains("backend"),
            "{run}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(DocCli::requested(&args(&["fugu", "manpage"])));
        assert!(DocCli::requested(&args(&["fugu", "completions", "zsh"])));
        assert!(!DocCli::requested(&args(&[
            "fugu", "run", "--kernel", "manpage"
        ])));
        assert!(Cli::try_parse_from(["fugu", "manpage"]).is_err());
        let doc = DocCli::try_parse_from(["fugu", "completions", "fish"]).unwrap();
        assert!(matches!(
            doc.command,
            DocCommand::Completions {
                shell: clap_complete::Shell::Fish
            }
        ));

        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("manpage"), "{shell:?}: {out}");
            assert!(
                out.contains("kernel") && out.contains("run"),
                "{shell:?}: {out}"
            );
        }
    }
}
