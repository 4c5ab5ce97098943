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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// kvm-ioctls / vm-memory from rust-vmm (x86_64 hosts)
    RustVmm,
    /// fugu's own portable KVM layer (every host, including i686)
    Portable,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kernel to boot: a Multiboot v1 kernel (ELF32 or a.out kludge) or an ELF kernel.
    #[arg(long, value_name = "FILE")]
    pub kernel: PathBuf,
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
}
