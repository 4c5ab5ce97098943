//! The command line: `fugu run` and friends, defined once with clap (the man page and shell
//! completions are generated from this definition).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
EXIT STATUS:
  0     the guest powered off or asked for a reset
  1-255 (odd) the guest wrote v to the debug-exit port 0xf4: status (v << 1) | 1
  2     the command line was invalid
  4     fugu could not start the VM (no KVM, bad kernel, not enough memory, ...)
  6     the guest crashed: triple fault, halted for good, or an exit fugu cannot handle
  8     --bios: the firmware found nothing to boot (it asked for a reboot), or the guest
        was still running after --boot-timeout
  130   fugu was interrupted (SIGINT / Ctrl-C, SIGTERM)";

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a virtual machine with its serial console on this terminal.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Download, verify and manage guest images (see docs/images.md).
    Image(ImageArgs),
}

/// `fugu image ...`: guest images from an index published with `cargo xtask images publish`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image index: an http:// URL of index.json or a local path (https is not supported:
    /// this fugu has no TLS). The built-in default is a placeholder until fugu publishes images.
    #[arg(long, global = true, value_name = "URL", env = "FUGU_IMAGE_INDEX")]
    pub index: Option<String>,
    /// The image cache [default: $XDG_CACHE_HOME/fugu/images, else ~/.cache/fugu/images].
    #[arg(long, global = true, value_name = "DIR", env = "FUGU_IMAGE_CACHE")]
    pub cache: Option<PathBuf>,
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
}

impl DocCli {
    /// Whether the command line asks for one of the hidden documentation commands.
    pub fn requested(args: &[std::ffi::OsString]) -> bool {
        matches!(
            args.get(1).and_then(|a| a.to_str()),
            Some("manpage" | "completions")
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
    /// Boot a cached image (`fugu image pull NAME`): its kernel, initrd and command line
    /// (--cmdline is appended), and its disk, read-only, as the first --disk. A BIOS disk
    /// image (kind bios-disk) boots as with --bios --boot disk; a PXE program is served, not run.
    #[arg(long, value_name = "NAME", conflicts_with = "kernel")]
    pub image: Option<String>,
    /// Initial ramdisk; for Multiboot kernels each --initrd becomes a module ("FILE args").
    #[arg(long, value_name = "FILE")]
    pub initrd: Vec<String>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Guest RAM, with an optional K/M/G suffix (plain numbers are MiB).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
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
    /// A virtio-blk disk on a raw image file, read-only with ",ro" (repeatable). A writable
    /// image is locked while the VM runs: a second VM using it gets an error.
    #[arg(long, value_name = "PATH[,ro]", value_parser = crate::devices::virtio::setup::parse_disk)]
    pub disk: Vec<crate::devices::virtio::setup::DiskConfig>,
    /// A virtio-net NIC on a tap device: "tap=NAME[,mac=MAC]" or "NAME" (repeatable). As
    /// root, fugu creates a tap that does not exist and removes it when the VM ends.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]", value_parser = crate::devices::virtio::setup::parse_net)]
    pub net: Vec<crate::devices::virtio::setup::NetConfig>,
    /// KVM/memory implementation (default: rust-vmm on x86_64 hosts, portable elsewhere).
    #[arg(long, value_enum, hide = true)]
    pub backend: Option<BackendArg>,
}

/// Parse "256M", "1G", "512K", "1048576B" or a bare number of MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix '{c}' (use K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1 << 20),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 256M, 1G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
                "fugu-image-list.1",
                "fugu-image-pull.1",
                "fugu-image-rm.1",
                "fugu-image-verify.1",
                "fugu-image.1",
                "fugu-run.1",
                "fugu.1"
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
