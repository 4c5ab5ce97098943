//! The vCPU thread: KVM_RUN in a loop, dispatching exits to the buses.

use crate::hypervisor::{Vcpu, VcpuExit};
use crate::memory::GuestMemory;
use crate::vm::{Buses, ExitSignal, VmExit};
use std::sync::Arc;

pub struct Context {
    pub id: u32,
    pub mem: Arc<dyn GuestMemory>,
    pub buses: Arc<Buses>,
    pub exit: ExitSignal,
}

/// Run `vcpu` until the VM is asked to exit.
pub fn run_loop(mut vcpu: Box<dyn Vcpu>, ctx: Context) {
    let _ = &ctx.mem;
    while !ctx.exit.requested() {
        let exit = match vcpu.run() {
            Ok(e) => e,
            Err(e) => {
                ctx.exit
                    .request(VmExit::Crash(format!("vCPU {}: {e}", ctx.id)));
                break;
            }
        };
        match exit {
            VcpuExit::IoOut(port, data) => {
                ctx.buses.pio.write(port as u64, data);
            }
            VcpuExit::IoIn(port, data) => {
                ctx.buses.pio.read(port as u64, data);
            }
            VcpuExit::MmioWrite(addr, data) => {
                ctx.buses.mmio.write(addr, data);
            }
            VcpuExit::MmioRead(addr, data) => {
                ctx.buses.mmio.read(addr, data);
            }
            VcpuExit::Interrupted => {}
            VcpuExit::Hlt => ctx.exit.request(VmExit::Halted { cpu: ctx.id }),
            VcpuExit::Shutdown => ctx.exit.request(VmExit::TripleFault { cpu: ctx.id }),
            VcpuExit::SystemEvent { kind } => ctx.exit.request(match kind {
                crate::hypervisor::kvm_abi::KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                crate::hypervisor::kvm_abi::KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::Poweroff,
                k => VmExit::Crash(format!("vCPU {}: system event {k}", ctx.id)),
            }),
            VcpuExit::InternalError { suberror, data } => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                let words: Vec<String> = data.iter().map(|w| format!("{w:#x}")).collect();
                ctx.exit.request(VmExit::Crash(format!(
                    "vCPU {}: KVM internal error (suberror {suberror}) at RIP {rip:#x}, data [{}]",
                    ctx.id,
                    words.join(", ")
                )));
            }
            VcpuExit::FailEntry { reason, cpu } => ctx.exit.request(VmExit::Crash(format!(
                "vCPU {}: VM entry failed (hardware reason {reason:#x}, cpu {cpu})",
                ctx.id
            ))),
            VcpuExit::Other(r) => ctx.exit.request(VmExit::Crash(format!(
                "vCPU {}: unhandled KVM exit {r}",
                ctx.id
            ))),
        }
    }
}
