//! Helpers for `cargo xtask bench` (docs/bench.md): `bench-exits` and `bench-blk`, run by
//! the separate `fugu-bench` binary (src/bin/fugu-bench.rs), never by the shipped `fugu`.
//!
//! The commands print one line of `key=value` pairs on stdout for the xtask to parse.

use crate::arch::x86::{cpuid, regs};
use crate::backend::Backend;
use crate::exit_status::ExitStatus;
use crate::hypervisor::VcpuExit;
use crate::memory::layout;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The `fugu-bench` binary: one command, its line on stdout.
pub fn entry() -> ExitCode {
    let cli = BenchCli::parse();
    match main(cli.command) {
        Ok(line) => {
            println!("{line}");
            ExitStatus::Success.into()
        }
        Err(e) => {
            eprintln!("fugu-bench: error: {e}");
            ExitStatus::Failure.into()
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "fugu-bench", disable_help_subcommand = true)]
pub struct BenchCli {
    #[command(subcommand)]
    pub command: BenchCommand,
}

// The variants are the subcommands the xtask runs (`bench-exits`, `bench-blk`, `bench-disk`).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Run a kernel on a bare KVM loop (fugu's hypervisor layer, no devices, no threads):
    /// every port write is counted and ignored, a write to port 0xf4 ends the run.
    BenchExits {
        #[arg(long, value_name = "FILE")]
        kernel: PathBuf,
        #[arg(long, default_value = "128M", value_parser = crate::cli::parse_size)]
        memory: u64,
        #[arg(long, value_enum)]
        backend: Option<crate::cli::BackendArg>,
        /// Also create the in-kernel PIC/IOAPIC and PIT, as `fugu run` does.
        #[arg(long)]
        irqchip: bool,
    },
    /// 4 KiB reads through the virtio-blk device model against pread on the same image.
    BenchBlk {
        #[arg(long, value_name = "FILE")]
        image: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        #[arg(long, value_enum)]
        backend: Option<crate::cli::BackendArg>,
    },
    /// Random 4 KiB reads or writes through the disk format layer (raw or qcow2, as detected):
    /// what differs between formats below the virtio queue.
    BenchDisk {
        #[arg(long, value_name = "FILE")]
        image: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Writes instead of reads (the image is opened writable).
        #[arg(long)]
        write: bool,
        /// First copy this raw file's bytes into the image (not timed).
        #[arg(long, value_name = "RAW")]
        fill_from: Option<PathBuf>,
    },
}

/// Run a bench command; returns the line to print.
pub fn main(cmd: BenchCommand) -> Result<String, String> {
    match cmd {
        BenchCommand::BenchExits {
            kernel,
            memory,
            backend: b,
            irqchip,
        } => {
            let image = std::fs::read(&kernel)
                .map_err(|e| format!("cannot read kernel {}: {e}", kernel.display()))?;
            let r = bare_loop(&image, memory, crate::cli::backend(b), irqchip)?;
            Ok(format!(
                "exits={} loop_ns={} debug_exit={:#x}",
                r.port_writes, r.loop_ns, r.debug_exit
            ))
        }
        BenchCommand::BenchBlk {
            image,
            requests,
            backend: b,
        } => {
            let backend = crate::cli::backend(b);
            let mem = backend.memory(&[(0, 8 << 20)]).map_err(|e| e.to_string())?;
            let r = crate::devices::virtio::blk::bench_4k(&image, requests, mem, backend.queues())?;
            Ok(format!(
                "requests={} device_per_sec={:.1} pread_per_sec={:.1}",
                r.requests, r.device_per_sec, r.pread_per_sec
            ))
        }
        BenchCommand::BenchDisk {
            image,
            requests,
            write,
            fill_from,
        } => {
            let per_sec = crate::devices::virtio::blk::bench_format_4k(
                &image,
                requests,
                write,
                fill_from.as_deref(),
            )?;
            Ok(format!("requests={requests} per_sec={per_sec:.1}"))
        }
    }
}

/// What [`bare_loop`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BareLoop {
    /// Port writes other than the final one to 0xf4.
    pub port_writes: u64,
    /// From just before the first KVM_RUN to the write to 0xf4.
    pub loop_ns: u64,
    /// The value written to 0xf4.
    pub debug_exit: u32,
}

/// The peer of fugu's vCPU loop: the same guest state as `fugu run` sets up (the same loader
/// and boot registers), then KVM_RUN in a loop that only counts port writes.
pub fn bare_loop(
    image: &[u8],
    mem_size: u64,
    backend: Backend,
    irqchip: bool,
) -> Result<BareLoop, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    // Declared before the VM, so that it is dropped after it on every path.
    let mem = backend
        .memory(&layout::ram_ranges(mem_size))
        .map_err(|e| s(&e))?;
    let kvm = backend.hypervisor().map_err(|e| s(&e))?;
    let vm = kvm.create_vm().map_err(|e| s(&e))?;
    for (slot, r) in (0u32..).zip(mem.regions()) {
        // SAFETY: `mem` outlives the VM and its vCPU (locals drop in reverse order).
        unsafe { vm.set_user_memory_region(slot, r.gpa, r.size, r.host_addr, false) }
            .map_err(|e| s(&e))?;
    }
    if irqchip {
        vm.set_identity_map_address(crate::machine::IDENTITY_MAP_ADDR)
            .map_err(|e| s(&e))?;
        vm.set_tss_address(crate::machine::TSS_ADDR)
            .map_err(|e| s(&e))?;
        vm.create_irq_chip().map_err(|e| s(&e))?;
        vm.create_pit2().map_err(|e| s(&e))?;
    }
    let plan = crate::boot::load_kernel(&*mem, image, "", "", &[], mem_size).map_err(|e| s(&e))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| s(&e))?;
    let supported = kvm.supported_cpuid().map_err(|e| s(&e))?;
    let tsc_deadline =
        irqchip && kvm.check_extension(crate::hypervisor::kvm_abi::KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    vcpu.set_cpuid2(&cpuid::for_vcpu(
        &supported,
        0,
        1,
        cpuid::Vendor::Host,
        tsc_deadline,
    ))
    .map_err(|e| s(&e))?;
    regs::setup_boot_cpu(&*vcpu, &*mem, plan.entry, &plan.mode).map_err(|e| s(&e))?;
    let mut port_writes = 0u64;
    let start = Instant::now();
    let debug_exit = loop {
        match vcpu.run().map_err(|e| s(&e))? {
            VcpuExit::IoOut(0xf4, data) => {
                let mut v = [0u8; 4];
                let n = data.len().min(4);
                v[..n].copy_from_slice(&data[..n]);
                break u32::from_le_bytes(v);
            }
            VcpuExit::IoOut(..) => port_writes += 1,
            VcpuExit::IoIn(_, data) => data.fill(0xff),
            VcpuExit::Interrupted => {}
            other => return Err(format!("unexpected exit {other:?}")),
        }
    };
    let loop_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok(BareLoop {
        port_writes,
        loop_ns,
        debug_exit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_commands_parse_and_fugu_has_none() {
        let c = BenchCli::try_parse_from(["fugu-bench", "bench-exits", "--kernel", "k"]).unwrap();
        assert!(matches!(
            c.command,
            BenchCommand::BenchExits { memory, .. } if memory == 128 << 20
        ));
        assert!(crate::cli::Cli::try_parse_from(["fugu", "bench-blk"]).is_err());
    }

    #[test]
    fn bare_loop_rejects_a_non_kernel() {
        // Fails before or at loading: no KVM needed to get a clear error.
        assert!(bare_loop(b"not a kernel", 16 << 20, Backend::Portable, false).is_err());
    }
}
