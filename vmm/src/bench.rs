//! Helpers for `cargo xtask bench` (docs/bench.md): the hidden `fugu bench-exits` and
//! `fugu bench-blk` commands, and the `FUGU_TRACE=startup` timestamp at the first KVM_RUN.
//!
//! The commands print one line of `key=value` pairs on stdout for the xtask to parse. They
//! are a parser of their own (like the documentation commands), so neither `--help`, the
//! man page nor the completions mention them.

use crate::arch::x86::{cpuid, regs};
use crate::hypervisor::{self, Backend, VcpuExit};
use crate::memory::{self, layout};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(name = "fugu", disable_help_subcommand = true)]
pub struct BenchCli {
    #[command(subcommand)]
    pub command: BenchCommand,
}

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
}

impl BenchCli {
    /// Whether the command line asks for one of the hidden bench commands.
    pub fn requested(args: &[std::ffi::OsString]) -> bool {
        matches!(
            args.get(1).and_then(|a| a.to_str()),
            Some("bench-exits" | "bench-blk")
        )
    }
}

fn backend(arg: Option<crate::cli::BackendArg>) -> Backend {
    match arg {
        Some(crate::cli::BackendArg::RustVmm) => Backend::RustVmm,
        Some(crate::cli::BackendArg::Portable) => Backend::Portable,
        None => Backend::host_default(),
    }
}

/// Run a hidden bench command; returns the line to print.
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
            let r = bare_loop(&image, memory, backend(b), irqchip)?;
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
            let which = crate::devices::virtio::queue::QueueImpl::for_backend(backend(b));
            let r = crate::devices::virtio::blk::bench_4k(&image, requests, which)?;
            Ok(format!(
                "requests={} device_per_sec={:.1} pread_per_sec={:.1}",
                r.requests, r.device_per_sec, r.pread_per_sec
            ))
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
    let mem = memory::allocate(backend, &layout::ram_ranges(mem_size)).map_err(|e| s(&e))?;
    let kvm = hypervisor::open(backend).map_err(|e| s(&e))?;
    let vm = kvm.create_vm().map_err(|e| s(&e))?;
    for (slot, r) in mem.regions().iter().enumerate() {
        // SAFETY: `mem` outlives the VM and its vCPU (locals drop in reverse order).
        unsafe { vm.set_user_memory_region(slot as u32, r.gpa, r.size, r.host_addr, false) }
            .map_err(|e| s(&e))?;
    }
    if irqchip {
        vm.set_identity_map_address(0xfffb_c000)
            .map_err(|e| s(&e))?;
        vm.set_tss_address(0xfffb_d000).map_err(|e| s(&e))?;
        vm.create_irq_chip().map_err(|e| s(&e))?;
        vm.create_pit2().map_err(|e| s(&e))?;
    }
    let plan = crate::boot::load_kernel(&*mem, image, "", &[], mem_size).map_err(|e| s(&e))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| s(&e))?;
    let supported = kvm.supported_cpuid().map_err(|e| s(&e))?;
    vcpu.set_cpuid2(&cpuid::for_vcpu(&supported, 0, 1, cpuid::Vendor::Host))
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
    let loop_ns = start.elapsed().as_nanos() as u64;
    Ok(BareLoop {
        port_writes,
        loop_ns,
        debug_exit,
    })
}

/// With `FUGU_TRACE=startup` (a comma-separated list may hold other switches), vCPU 0 prints
/// the wall-clock time just before its first KVM_RUN: `fugu: trace: first KVM_RUN at
/// <seconds>.<microseconds>` (seconds since the Unix epoch, like QEMU's `-msg timestamp=on`
/// trace lines), so that `cargo xtask bench` can time VMM start to first KVM_RUN.
pub fn trace_first_run(vcpu_id: u32) {
    if vcpu_id != 0 {
        return;
    }
    let on = std::env::var("FUGU_TRACE").is_ok_and(|v| v.split(',').any(|t| t == "startup"));
    if !on {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "fugu: trace: first KVM_RUN at {}.{:06}",
        now.as_secs(),
        now.subsec_micros()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_commands_parse() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(BenchCli::requested(&args(&["fugu", "bench-exits"])));
        assert!(BenchCli::requested(&args(&["fugu", "bench-blk"])));
        assert!(!BenchCli::requested(&args(&["fugu", "run"])));
        let c = BenchCli::try_parse_from(["fugu", "bench-exits", "--kernel", "k"]).unwrap();
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
