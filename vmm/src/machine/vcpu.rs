//! The vCPU thread: KVM_RUN in a loop; [`dispatch`] turns each exit into the [`Next`] thing
//! to do (bus accesses, instruction completion, or how the VM ends), unit-tested without KVM.

use crate::devices::bus::Buses;
use crate::hypervisor::{Vcpu, VcpuExit};
use crate::memory::GuestMemory;
use crate::outcome::{Outcome, Stop};
use std::sync::Arc;

pub struct Context {
    pub id: u32,
    /// Log every exit to stderr (FUGU_TRACE=exits), for debugging guests.
    pub trace: bool,
    /// Complete instructions the host cannot emulate (host adaptation in force).
    pub complete_instructions: bool,
    pub stats: Arc<crate::host_compat::Stats>,
    pub mem: Arc<dyn GuestMemory>,
    pub buses: Arc<Buses>,
    pub stop: Stop,
}

/// Where a vCPU was when its thread stopped, for the exit report.
#[derive(Debug, Clone)]
pub struct FinalState {
    pub id: u32,
    pub rip: u64,
    pub cs_base: u64,
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
    pub exits: u64,
    /// Stopped at (or after) turning on 32-bit paging: paging without PAE or long mode.
    pub enabling_32bit_paging: bool,
}

impl FinalState {
    /// 32-bit paging is on, or the vCPU stopped on the instruction that turns it on.
    pub fn in_32bit_paging(&self) -> bool {
        self.enabling_32bit_paging
            || (self.cr0 & (1 << 31) != 0 && self.cr4 & (1 << 5) == 0 && self.efer & (1 << 10) == 0)
    }
}

impl std::fmt::Display for FinalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.efer & (1 << 10) != 0 {
            "long mode"
        } else if self.cr0 & 1 != 0 {
            if self.cr0 & (1 << 31) != 0 {
                "protected mode, paging"
            } else {
                "protected mode"
            }
        } else {
            "real mode"
        };
        write!(
            f,
            "vCPU {} stopped at RIP {:#x} (CS base {:#x}, {mode}) after {} exits",
            self.id, self.rip, self.cs_base, self.exits
        )
    }
}

fn final_state(vcpu: &dyn Vcpu, mem: &dyn GuestMemory, id: u32, exits: u64) -> FinalState {
    let regs = vcpu.get_regs().unwrap_or_default();
    let sregs = vcpu.get_sregs().unwrap_or_default();
    FinalState {
        id,
        rip: regs.rip,
        cs_base: sregs.cs.base,
        cr0: sregs.cr0,
        cr4: sregs.cr4,
        efer: sregs.efer,
        exits,
        enabling_32bit_paging: enabling_32bit_paging(mem, &regs, &sregs),
    }
}

/// Whether the instruction at RIP is `mov r32, %cr0` turning paging on without PAE or long
/// mode: the moment a host that cannot run 32-bit paging fails.
fn enabling_32bit_paging(
    mem: &dyn GuestMemory,
    regs: &crate::hypervisor::Regs,
    sregs: &crate::hypervisor::Sregs,
) -> bool {
    if sregs.efer & (1 << 10) != 0 || sregs.cr4 & (1 << 5) != 0 || sregs.cr0 & 1 == 0 {
        return false;
    }
    let mut insn = [0u8; 3];
    let linear = sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff;
    if crate::arch::x86::translate::read_linear(mem, sregs, linear, &mut insn) != 3 {
        return false;
    }
    let [0x0f, 0x22, modrm] = insn else {
        return false;
    };
    if modrm >> 6 != 3 || (modrm >> 3) & 7 != 0 {
        return false;
    }
    let src = [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
    ][(modrm & 7) as usize];
    src & (1 << 31) != 0
}

/// Run `vcpu` until the VM is asked to stop; returns where it stopped.
pub fn run_loop(mut vcpu: Box<dyn Vcpu>, ctx: Context) -> FinalState {
    // SAFETY: the byte lives in `vcpu`'s run page, and the guard is dropped (on this thread)
    // before `vcpu` is.
    let kick = unsafe { crate::signals::arm_kick(vcpu.immediate_exit()) };
    let mut exits = 0u64;
    run_until_stopped(&mut *vcpu, &ctx, &mut exits);
    drop(kick);
    final_state(&*vcpu, &*ctx.mem, ctx.id, exits)
}

fn run_until_stopped(vcpu: &mut dyn Vcpu, ctx: &Context, exits: &mut u64) {
    crate::trace::first_run(ctx.id);
    while !ctx.stop.requested() {
        *exits += 1;
        let result = vcpu.run();
        if let (true, Ok(exit)) = (ctx.trace, &result) {
            eprintln!("fugu: trace: vCPU {} exit {exit:?}", ctx.id);
        }
        match dispatch(ctx, result, crate::signals::sigbus_received()) {
            Next::Run => {}
            Next::Complete(data) => {
                match crate::arch::x86::complete::complete(vcpu, &*ctx.mem, &data) {
                    Ok(done) => ctx.stats.record(done.name()),
                    Err(u) => ctx.stop.request(Outcome::Crash(format!(
                        "vCPU {}: emulation failure {u} (host adaptation on: instruction completion, Linux switches, GenuineIntel CPU)",
                        ctx.id
                    ))),
                }
            }
            Next::InternalError { suberror, data } => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                ctx.stop
                    .request(internal_error(ctx.id, suberror, rip, &data));
            }
            Next::Stop(outcome) => ctx.stop.request(outcome),
        }
    }
}

/// What the vCPU loop does after KVM_RUN returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again.
    Run,
    /// Complete the instruction the host's KVM could not emulate (host adaptation), from the
    /// internal-error data words, then run again.
    Complete(Vec<u64>),
    /// KVM could not handle something: end the VM with a report that names the vCPU's RIP.
    InternalError { suberror: u32, data: Vec<u64> },
    /// End the VM.
    Stop(Outcome),
}

/// Decide what one KVM_RUN result means, doing the port and MMIO accesses on the buses.
/// `sigbus` is a SIGBUS the host's KVM raised (it wins over whatever KVM_RUN returned).
/// Needs no KVM: the exits can be made up (see the tests).
pub fn dispatch(
    ctx: &Context,
    result: crate::hypervisor::Result<VcpuExit<'_>>,
    sigbus: Option<i32>,
) -> Next {
    use crate::hypervisor::kvm_abi::{
        KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
    };
    let id = ctx.id;
    if let Some(code) = sigbus {
        return Next::Stop(Outcome::Crash(format!(
            "vCPU {id}: the host's KVM signalled SIGBUS during KVM_RUN (si_code {code}): it \
             could not run the guest here{}",
            if cfg!(target_pointer_width = "32") {
                " (seen on kvm_pvm hosts with the i686 build, when a Linux guest with virtio-net \
                 starts init; the x86_64 build runs the same guest)"
            } else {
                ""
            }
        )));
    }
    let exit = match result {
        Ok(e) => e,
        Err(e) => return Next::Stop(Outcome::Crash(format!("vCPU {id}: {e}"))),
    };
    match exit {
        VcpuExit::IoOut(port, data) => {
            ctx.buses.pio.write(port as u64, data);
            Next::Run
        }
        VcpuExit::IoIn(port, data) => {
            ctx.buses.pio.read(port as u64, data);
            Next::Run
        }
        VcpuExit::MmioWrite(addr, data) => {
            ctx.buses.mmio.write(addr, data);
            Next::Run
        }
        VcpuExit::MmioRead(addr, data) => {
            ctx.buses.mmio.read(addr, data);
            Next::Run
        }
        VcpuExit::Interrupted => Next::Run,
        VcpuExit::Hlt => Next::Stop(Outcome::Halted { cpu: id }),
        VcpuExit::Shutdown => Next::Stop(Outcome::TripleFault { cpu: id }),
        VcpuExit::SystemEvent { kind } => Next::Stop(match kind {
            KVM_SYSTEM_EVENT_RESET => Outcome::Reset,
            KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::Poweroff,
            k => Outcome::Crash(format!("vCPU {id}: system event {k}")),
        }),
        VcpuExit::InternalError { suberror, data }
            if ctx.complete_instructions && suberror == KVM_INTERNAL_ERROR_EMULATION =>
        {
            Next::Complete(data)
        }
        VcpuExit::InternalError { suberror, data } => Next::InternalError { suberror, data },
        VcpuExit::FailEntry { reason, cpu } => Next::Stop(Outcome::Crash(format!(
            "vCPU {id}: VM entry failed (hardware reason {reason:#x}, cpu {cpu})"
        ))),
        VcpuExit::Other(r) => {
            Next::Stop(Outcome::Crash(format!("vCPU {id}: unhandled KVM exit {r}")))
        }
    }
}

/// The report of a KVM internal error KVM left to userspace.
pub fn internal_error(id: u32, suberror: u32, rip: u64, data: &[u64]) -> Outcome {
    let words: Vec<String> = data.iter().map(|w| format!("{w:#x}")).collect();
    Outcome::Crash(format!(
        "vCPU {id}: KVM internal error (suberror {suberror}) at RIP {rip:#x}, data [{}]",
        words.join(", ")
    ))
}

#[cfg(test)]
mod tests;
