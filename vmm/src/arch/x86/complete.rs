//! Completing instructions the host's KVM could not emulate (KVM_EXIT_INTERNAL_ERROR).
//!
//! On hosts without VMX/SVM (KVM emulates guest kernel code; see DESIGN.md) some instructions
//! fail in the host's emulator. Each one handled here is decoded from guest memory and either
//! performed or turned into the exception real hardware would raise, then the guest resumes.

use super::translate;
use crate::hypervisor::{kvm_abi::kvm_vcpu_events, Vcpu};
use crate::memory::GuestMemory;

const EFER_LMA: u64 = 1 << 10;
const EFLAGS_AC: u64 = 1 << 18;
const VEC_BP: u8 = 3;
const VEC_UD: u8 = 6;
const VEC_MF: u8 = 16;
const VEC_NP: u8 = 11;
const VEC_GP: u8 = 13;

/// What was done about one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// INT3: #BP delivered with the return address after the instruction.
    Int3,
    /// UD2: #UD delivered at the instruction.
    Ud2,
    /// FWAIT with no unmasked x87 exception pending: skipped (else #MF delivered).
    Fwait,
    /// FNCLEX: x87 exception flags cleared.
    Fnclex,
    /// CLAC / STAC: EFLAGS.AC cleared / set.
    Clac,
    Stac,
    /// FNSTSW AX: the x87 status word into AX.
    FnstswAx,
    /// IRET in 32-bit protected mode to the same privilege level: EIP, CS, EFLAGS popped.
    Iret,
    /// The same, with the frame found at ESP without the SS base: the host delivered the
    /// interrupt there (see [`iret_pm`]).
    IretUnbasedFrame,
    /// INT n in protected mode to a handler at the same privilege level: EFLAGS, CS and the
    /// address after the instruction pushed, the gate's CS:EIP loaded (see [`int_pm`]).
    IntN {
        vector: u8,
    },
    /// XGETBV: XCR0 (ECX 0 or 1) into EDX:EAX; #UD without CR4.OSXSAVE, #GP(0) for other
    /// ECX values.
    Xgetbv,
    /// XSETBV at CPL0: EDX:EAX into XCR0 through KVM, which refuses what the guest's CPUID
    /// does not allow (then #GP(0), as the CPU raises).
    Xsetbv,
    /// CLWB with a memory operand: a write-back hint; guest RAM is the host's coherent memory,
    /// so nothing is left to do but step over it.
    Clwb,
    /// INVPCID at CPL0: every type (0-3) completes as a flush of the vCPU's whole TLB (a
    /// superset of what each asks); #GP(0) for other types. `reg` holds the type.
    Invpcid {
        reg: u8,
    },
    /// RDRAND / RDSEED into a register: random bits from the host's getrandom(2), CF=1 (CF=0,
    /// "no value ready", which software must retry, if the host has none).
    Random {
        seed: bool,
        reg: u8,
        bytes: u8,
    },
}

impl Completion {
    pub fn name(self) -> &'static str {
        match self {
            Completion::Int3 => "int3",
            Completion::Ud2 => "ud2",
            Completion::Fwait => "fwait",
            Completion::Fnclex => "fnclex",
            Completion::Clac => "clac",
            Completion::Stac => "stac",
            Completion::Iret => "iret",
            Completion::IntN { .. } => "int n",
            Completion::Xgetbv => "xgetbv",
            Completion::Xsetbv => "xsetbv",
            Completion::Clwb => "clwb",
            Completion::Invpcid { .. } => "invpcid",
            Completion::IretUnbasedFrame => "iret (host-pushed frame without the SS base)",
            Completion::Random { seed: false, .. } => "rdrand",
            Completion::Random { seed: true, .. } => "rdseed",
            Completion::FnstswAx => "fnstsw",
        }
    }
}

/// The decoded instruction: what it is and its length including prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub op: Completion,
    pub len: u64,
}

/// Decode the instructions this module completes; None for anything else. Addresses are
/// 32-bit outside long mode (see [`decode_in`]).
#[cfg(test)]
pub fn decode(bytes: &[u8], long_mode: bool) -> Option<Decoded> {
    decode_in(bytes, long_mode, true)
}

/// The length of a ModRM operand (the ModRM byte, SIB and displacement) starting at `m`, for
/// 16-bit or 32/64-bit addressing; None when the bytes end first.
fn modrm_len(m: &[u8], addr16: bool) -> Option<usize> {
    let modrm = *m.first()?;
    let (md, rm) = (modrm >> 6, modrm & 7);
    let n = if md == 3 {
        1
    } else if addr16 {
        1 + match (md, rm) {
            (0, 6) | (2, _) => 2,
            (1, _) => 1,
            _ => 0,
        }
    } else {
        let sib = rm == 4;
        let base5 = sib && m.get(1)? & 7 == 5;
        1 + usize::from(sib)
            + match (md, rm) {
                (0, 5) => 4,
                (0, _) if base5 => 4,
                (1, _) => 1,
                (2, _) => 4,
                _ => 0,
            }
    };
    (m.len() >= n).then_some(n)
}

/// [`decode`] for a code segment whose default operand/address size is 32-bit (`cs_db`) or
/// 16-bit.
pub fn decode_in(bytes: &[u8], long_mode: bool, cs_db: bool) -> Option<Decoded> {
    let mut i = 0;
    // Legacy prefixes (and REX in long mode) do not change these instructions' meaning.
    while i < bytes.len().min(14) {
        match bytes[i] {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf2 | 0xf3 => i += 1,
            0x40..=0x4f if long_mode => i += 1,
            _ => break,
        }
    }
    let rest = bytes.get(i..)?;
    let prefixes = &bytes[..i];
    // REX counts only right before the opcode.
    let rex = match prefixes.last() {
        Some(&r @ 0x40..=0x4f) if long_mode => r,
        _ => 0,
    };
    let addr16 = !long_mode && (cs_db == prefixes.contains(&0x67));
    let has66 = prefixes.contains(&0x66);
    let (op, n) = match rest {
        [0xcc, ..] => (Completion::Int3, 1),
        [0x0f, 0x01, 0xd0, ..] => (Completion::Xgetbv, 3),
        [0x0f, 0x01, 0xd1, ..] => (Completion::Xsetbv, 3),
        // CLWB: 66 0F AE /6 with a memory operand.
        [0x0f, 0xae, modrm, ..] if has66 && modrm >> 6 != 3 && (modrm >> 3) & 7 == 6 => {
            (Completion::Clwb, 2 + modrm_len(&rest[2..], addr16)?)
        }
        // INVPCID: 66 0F 38 82 /r with a memory operand.
        [0x0f, 0x38, 0x82, modrm, ..] if has66 && modrm >> 6 != 3 => {
            let reg = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
            (
                Completion::Invpcid { reg },
                3 + modrm_len(&rest[3..], addr16)?,
            )
        }
        [0xcd, vector, ..] if !long_mode => (Completion::IntN { vector: *vector }, 2),
        [0x9b, 0xdb, 0xe2, ..] => (Completion::Fnclex, 3), // FCLEX = FWAIT; FNCLEX
        [0x9b, 0xdf, 0xe0, ..] => (Completion::FnstswAx, 3), // FSTSW AX = FWAIT; FNSTSW AX
        [0x9b, ..] => (Completion::Fwait, 1),
        [0xdb, 0xe2, ..] => (Completion::Fnclex, 2),
        [0xdf, 0xe0, ..] => (Completion::FnstswAx, 2),
        [0x0f, 0x0b, ..] => (Completion::Ud2, 2),
        [0x0f, 0x01, 0xca, ..] => (Completion::Clac, 3),
        [0x0f, 0x01, 0xcb, ..] => (Completion::Stac, 3),
        // RDRAND (0F C7 /6) and RDSEED (0F C7 /7) with a register operand.
        [0x0f, 0xc7, modrm, ..] if modrm >> 6 == 3 && (modrm >> 3) & 7 >= 6 => {
            let bytes = if rex & 8 != 0 {
                8
            } else if prefixes.contains(&0x66) {
                2
            } else {
                4
            };
            let reg = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
            let seed = (modrm >> 3) & 7 == 7;
            (Completion::Random { seed, reg, bytes }, 3)
        }
        // Protected-mode IRET, with or without an operand-size prefix (firmware such as
        // iPXE returns through 16-bit protected-mode segments); REX.W (IRETQ) is not.
        [0xcf, ..] if !long_mode && bytes[..i].iter().all(|&b| b == 0x66) && i <= 1 => {
            (Completion::Iret, 1)
        }
        _ => return None,
    };
    Some(Decoded {
        op,
        len: (i + n) as u64,
    })
}

/// Why an instruction could not be completed; the message is for the user.
#[derive(Debug)]
pub struct Unhandled {
    pub rip: u64,
    pub bytes: Vec<u8>,
    pub reason: String,
}

impl std::fmt::Display for Unhandled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "at RIP {:#x}, instruction bytes [{}]: {}",
            self.rip,
            hex.join(" "),
            self.reason
        )
    }
}

/// Instruction bytes KVM attached to an emulation-failure exit (flags bit 0, then size, then
/// up to 15 bytes), if any.
pub fn bytes_from_exit(data: &[u64]) -> Option<Vec<u8>> {
    if data.len() < 3 || data[0] & 1 == 0 {
        return None;
    }
    let mut raw = Vec::with_capacity(16);
    raw.extend_from_slice(&data[1].to_le_bytes());
    raw.extend_from_slice(&data[2].to_le_bytes());
    let n = (raw[0] as usize).min(15);
    Some(raw[1..1 + n].to_vec())
}

fn inject(vcpu: &dyn Vcpu, vector: u8) -> Result<(), String> {
    inject_with(vcpu, vector, None)
}

/// Deliver exception `vector` (a fault at the current RIP), with an error code when given.
fn inject_with(vcpu: &dyn Vcpu, vector: u8, error_code: Option<u32>) -> Result<(), String> {
    let mut ev: kvm_vcpu_events = vcpu.get_vcpu_events().map_err(|e| e.to_string())?;
    ev.exception_injected = 1;
    ev.exception_nr = vector;
    ev.exception_has_error_code = u8::from(error_code.is_some());
    ev.exception_error_code = error_code.unwrap_or(0);
    ev.exception_pending = 0;
    ev.flags = 0;
    vcpu.set_vcpu_events(&ev).map_err(|e| e.to_string())
}

/// Try to complete the instruction at the vCPU's RIP after an emulation failure.
pub fn complete(
    vcpu: &dyn Vcpu,
    mem: &dyn GuestMemory,
    exit_data: &[u64],
) -> Result<Completion, Unhandled> {
    let regs = vcpu.get_regs().map_err(|e| Unhandled {
        rip: 0,
        bytes: vec![],
        reason: e.to_string(),
    })?;
    let fail = |bytes: Vec<u8>, reason: String| Unhandled {
        rip: regs.rip,
        bytes,
        reason,
    };
    let sregs = vcpu.get_sregs().map_err(|e| fail(vec![], e.to_string()))?;
    let long_mode = sregs.efer & EFER_LMA != 0 && sregs.cs.l == 1;
    let linear = if long_mode {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    };
    let mut buf = [0u8; 15];
    let n = translate::read_linear(mem, &sregs, linear, &mut buf);
    let bytes = if n > 0 {
        buf[..n].to_vec()
    } else {
        bytes_from_exit(exit_data).unwrap_or_default()
    };
    let Some(d) = decode_in(&bytes, long_mode, sregs.cs.db == 1) else {
        return Err(fail(
            bytes,
            "the host's KVM cannot emulate this instruction and fugu does not complete it".into(),
        ));
    };
    let mut regs = regs;
    let advance = |r: &mut crate::hypervisor::Regs| {
        r.rip = if long_mode {
            r.rip.wrapping_add(d.len)
        } else {
            (r.rip.wrapping_add(d.len)) & 0xffff_ffff
        };
    };
    let r: Result<Completion, String> = (|| {
        match d.op {
            Completion::Int3 => {
                // A trap: the exception frame holds the address after INT3.
                advance(&mut regs);
                vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
                inject(vcpu, VEC_BP).map(|_| d.op)
            }
            Completion::Ud2 => inject(vcpu, VEC_UD).map(|_| d.op),
            Completion::Fwait => {
                let fpu = vcpu.get_fpu().map_err(|e| e.to_string())?;
                // An unmasked pending exception (FSW.ES) makes FWAIT raise #MF (CR0.NE set).
                if fpu.fsw & 0x80 != 0 && sregs.cr0 & (1 << 5) != 0 {
                    inject(vcpu, VEC_MF).map(|_| d.op)
                } else {
                    advance(&mut regs);
                    vcpu.set_regs(&regs)
                        .map_err(|e| e.to_string())
                        .map(|_| d.op)
                }
            }
            Completion::Fnclex => {
                let mut fpu = vcpu.get_fpu().map_err(|e| e.to_string())?;
                fpu.fsw &= !0x80ff; // B, ES, SF and the exception flags
                vcpu.set_fpu(&fpu).map_err(|e| e.to_string())?;
                advance(&mut regs);
                vcpu.set_regs(&regs)
                    .map_err(|e| e.to_string())
                    .map(|_| d.op)
            }
            Completion::Iret => {
                // The operand size: the code segment's default, flipped by a 0x66 prefix.
                let op32 = (sregs.cs.db == 1) != (d.len == 2);
                iret_pm(vcpu, mem, &sregs, &mut regs, op32)
            }
            Completion::IretUnbasedFrame => Err("not an instruction".into()),
            Completion::Xgetbv | Completion::Xsetbv => {
                const CR4_OSXSAVE: u64 = 1 << 18;
                let cpl = sregs.cs.selector & 3;
                let ecx = regs.rcx & 0xffff_ffff;
                if sregs.cr4 & CR4_OSXSAVE == 0 {
                    inject(vcpu, VEC_UD).map(|_| d.op)
                } else if d.op == Completion::Xgetbv {
                    if ecx > 1 {
                        return inject_with(vcpu, VEC_GP, Some(0)).map(|_| d.op);
                    }
                    // XGETBV(1) is XINUSE; reporting every enabled component as in use is
                    // what a CPU may always answer.
                    let xcr0 = vcpu.get_xcr0().map_err(|e| e.to_string())?;
                    regs.rax = xcr0 & 0xffff_ffff;
                    regs.rdx = xcr0 >> 32;
                    advance(&mut regs);
                    vcpu.set_regs(&regs)
                        .map_err(|e| e.to_string())
                        .map(|_| d.op)
                } else if cpl != 0 || ecx != 0 {
                    inject_with(vcpu, VEC_GP, Some(0)).map(|_| d.op)
                } else {
                    let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
                    if vcpu.set_xcr0(value).is_err() {
                        return inject_with(vcpu, VEC_GP, Some(0)).map(|_| d.op);
                    }
                    advance(&mut regs);
                    vcpu.set_regs(&regs)
                        .map_err(|e| e.to_string())
                        .map(|_| d.op)
                }
            }
            Completion::Clwb => {
                advance(&mut regs);
                vcpu.set_regs(&regs)
                    .map_err(|e| e.to_string())
                    .map(|_| d.op)
            }
            Completion::Invpcid { reg } => {
                let kind = get_register(&regs, reg);
                let kind = if long_mode { kind } else { kind & 0xffff_ffff };
                if sregs.cs.selector & 3 != 0 || kind > 3 {
                    return inject_with(vcpu, VEC_GP, Some(0)).map(|_| d.op);
                }
                // KVM_SET_SREGS resets the vCPU's MMU context: its whole TLB is flushed.
                vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
                advance(&mut regs);
                vcpu.set_regs(&regs)
                    .map_err(|e| e.to_string())
                    .map(|_| d.op)
            }
            Completion::IntN { vector } => {
                let next = (regs.rip.wrapping_add(d.len)) & 0xffff_ffff;
                match int_pm(mem, &sregs, &regs, vector, next)? {
                    IntDelivery::Fault(vec, code) => {
                        inject_with(vcpu, vec, Some(code)).map(|_| d.op)
                    }
                    IntDelivery::Enter {
                        cs,
                        eip,
                        rsp,
                        rflags,
                    } => {
                        let mut new_sregs = sregs;
                        new_sregs.cs = cs;
                        regs.rip = eip;
                        regs.rsp = rsp;
                        regs.rflags = rflags;
                        vcpu.set_sregs(&new_sregs).map_err(|e| e.to_string())?;
                        vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
                        Ok(d.op)
                    }
                }
            }
            Completion::Random { reg, bytes, .. } => {
                let mut v = [0u8; 8];
                let n = bytes as usize;
                // SAFETY: getrandom writes at most `n` bytes into `v`, which holds 8.
                let got = unsafe { libc::getrandom(v.as_mut_ptr().cast(), n, libc::GRND_NONBLOCK) };
                let value = u64::from_le_bytes(v);
                const ARITH_FLAGS: u64 = 0x8d5; // CF PF AF ZF SF OF
                regs.rflags &= !ARITH_FLAGS;
                if got == n as isize {
                    set_register(&mut regs, reg, value, bytes);
                    regs.rflags |= 1; // CF: a value is ready
                } else {
                    set_register(&mut regs, reg, 0, bytes);
                }
                advance(&mut regs);
                vcpu.set_regs(&regs)
                    .map_err(|e| e.to_string())
                    .map(|_| d.op)
            }
            Completion::FnstswAx => {
                let fpu = vcpu.get_fpu().map_err(|e| e.to_string())?;
                regs.rax = (regs.rax & !0xffff) | fpu.fsw as u64;
                advance(&mut regs);
                vcpu.set_regs(&regs)
                    .map_err(|e| e.to_string())
                    .map(|_| d.op)
            }
            Completion::Clac | Completion::Stac => {
                if d.op == Completion::Clac {
                    regs.rflags &= !EFLAGS_AC;
                } else {
                    regs.rflags |= EFLAGS_AC;
                }
                advance(&mut regs);
                vcpu.set_regs(&regs)
                    .map_err(|e| e.to_string())
                    .map(|_| d.op)
            }
        }
    })();
    r.map_err(|e| fail(bytes, format!("completing {}: {e}", d.op.name())))
}

/// General register `reg` (x86 encoding order).
fn get_register(regs: &crate::hypervisor::Regs, reg: u8) -> u64 {
    [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ][usize::from(reg & 15)]
}

/// Write `value` to general register `reg` (x86 encoding order) with an operand of `bytes`:
/// 32-bit writes clear the upper half, 16-bit writes keep the upper bits.
fn set_register(regs: &mut crate::hypervisor::Regs, reg: u8, value: u64, bytes: u8) {
    let r = match reg {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    };
    *r = match bytes {
        2 => (*r & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    };
}

/// The (IP, CS, FLAGS) of an IRET frame with 32-bit (12 bytes) or 16-bit (6 bytes) slots.
pub fn iret_frame(frame: &[u8], op32: bool) -> Option<(u64, u16, u64)> {
    let w = if op32 { 4 } else { 2 };
    let f = frame.get(..3 * w)?;
    let slot = |i: usize| {
        let mut b = [0u8; 4];
        b[..w].copy_from_slice(&f[i * w..(i + 1) * w]);
        u32::from_le_bytes(b)
    };
    // CS is the low 16 bits of its slot (a 32-bit frame pads it).
    let cs = slot(1).to_le_bytes();
    Some((
        u64::from(slot(0)),
        u16::from_le_bytes([cs[0], cs[1]]),
        u64::from(slot(2)),
    ))
}

/// A checked IRET frame: where to return and the code segment to load.
struct IretTarget {
    eip: u64,
    eflags: u64,
    cs: crate::hypervisor::Segment,
}

/// Read and check the IRET frame at linear address `at`: a same-privilege return to a
/// present code segment of the GDT with EIP inside its limit.
fn iret_target(
    mem: &dyn GuestMemory,
    sregs: &crate::hypervisor::Sregs,
    at: u64,
    op32: bool,
) -> Result<IretTarget, String> {
    let size = if op32 { 12 } else { 6 };
    let mut frame = [0u8; 12];
    let n = translate::read_linear(mem, sregs, at & 0xffff_ffff, &mut frame[..size]);
    let Some((eip, cs_sel, eflags)) = iret_frame(&frame[..n], op32) else {
        return Err(format!("the IRET frame at linear {at:#x} is not readable"));
    };
    let cpl = sregs.cs.selector & 3;
    let shown = format!(
        "frame {:02x?} at linear {at:#x}, {}-bit",
        &frame[..size],
        if op32 { 32 } else { 16 }
    );
    if cs_sel & 3 != cpl {
        return Err(format!(
            "IRET to privilege level {} from {cpl} is not completed ({shown})",
            cs_sel & 3
        ));
    }
    if cs_sel & 4 != 0 || (cs_sel as u64 | 7) > sregs.gdt.limit as u64 {
        return Err(format!(
            "IRET to selector {cs_sel:#x} outside the GDT ({shown})"
        ));
    }
    let mut d = [0u8; 8];
    if translate::read_linear(
        mem,
        sregs,
        sregs.gdt.base.wrapping_add((cs_sel & !7) as u64),
        &mut d,
    ) != 8
    {
        return Err("GDT is not readable".into());
    }
    let cs = super::gdt::segment(u64::from_le_bytes(d), cs_sel);
    if cs.present == 0 || cs.s == 0 || cs.type_ & 0x8 == 0 {
        return Err(format!(
            "IRET to selector {cs_sel:#x}, which is not a present code segment ({shown})"
        ));
    }
    if eip > cs.limit as u64 {
        return Err(format!(
            "IRET to EIP {eip:#x} beyond the limit {:#x} of selector {cs_sel:#x} ({shown})",
            cs.limit
        ));
    }
    Ok(IretTarget { eip, eflags, cs })
}

/// The IRET frame for stack pointer `sp`: at SS.base + `sp`, or else at `sp` alone (see
/// [`iret_pm`]), with the completion that says which.
fn find_iret_frame(
    mem: &dyn GuestMemory,
    sregs: &crate::hypervisor::Sregs,
    sp: u64,
    op32: bool,
) -> Result<(IretTarget, Completion), String> {
    match iret_target(mem, sregs, sregs.ss.base.wrapping_add(sp), op32) {
        Ok(t) => Ok((t, Completion::Iret)),
        Err(e) if sregs.ss.base != 0 => match iret_target(mem, sregs, sp, op32) {
            Ok(t) => Ok((t, Completion::IretUnbasedFrame)),
            Err(flat) => Err(format!(
                "{e}; nor at ESP without the SS base {:#x}: {flat}",
                sregs.ss.base
            )),
        },
        Err(e) => Err(e),
    }
}

/// What INT n does: enter the handler, or raise a fault (vector, error code) at the
/// instruction.
#[derive(Debug, PartialEq)]
enum IntDelivery {
    Enter {
        cs: crate::hypervisor::Segment,
        eip: u64,
        rsp: u64,
        rflags: u64,
    },
    Fault(u8, u32),
}

/// INT `vector` in protected mode (paging or not), as the SDM's INT n describes it, for a
/// handler at the current privilege level through a 16- or 32-bit interrupt or trap gate:
/// the gate's DPL is checked against CPL (#GP), its presence (#NP, both with the IDT error
/// code), then FLAGS, CS and `next` (the address after the instruction) are pushed at
/// SS.base + ESP, TF/NT/RF (and IF for an interrupt gate) are cleared and the gate's CS:EIP
/// loaded. Task gates, LDT code segments and handlers at another privilege level (which need
/// a TSS stack switch) are not completed: the guest stops with the reason.
fn int_pm(
    mem: &dyn GuestMemory,
    sregs: &crate::hypervisor::Sregs,
    regs: &crate::hypervisor::Regs,
    vector: u8,
    next: u64,
) -> Result<IntDelivery, String> {
    const EFLAGS_TF: u64 = 1 << 8;
    const EFLAGS_IF: u64 = 1 << 9;
    const EFLAGS_NT: u64 = 1 << 14;
    const EFLAGS_RF: u64 = 1 << 16;
    const EFLAGS_VM: u64 = 1 << 17;
    if sregs.cr0 & 1 == 0 || regs.rflags & EFLAGS_VM != 0 {
        return Err("only protected-mode INT n (not virtual-8086) is completed".into());
    }
    let idt_code = u32::from(vector) * 8 + 2;
    let at = u64::from(vector) * 8;
    if at + 7 > u64::from(sregs.idt.limit) {
        return Ok(IntDelivery::Fault(VEC_GP, idt_code));
    }
    let mut g = [0u8; 8];
    if translate::read_linear(mem, sregs, sregs.idt.base.wrapping_add(at), &mut g) != 8 {
        return Err(format!(
            "the IDT entry of vector {vector:#x} is not readable"
        ));
    }
    let gate = u64::from_le_bytes(g);
    let kind = (gate >> 40) & 0x1f; // the S bit and the 4-bit type
    let dpl = (gate >> 45) & 3;
    let present = gate & (1 << 47) != 0;
    let cpl = u64::from(sregs.cs.selector & 3);
    let (op32, trap) = match kind {
        0x06 => (false, false),
        0x07 => (false, true),
        0x0e => (true, false),
        0x0f => (true, true),
        0x05 => return Err(format!("vector {vector:#x} is a task gate (not completed)")),
        _ => return Ok(IntDelivery::Fault(VEC_GP, idt_code)),
    };
    if dpl < cpl {
        return Ok(IntDelivery::Fault(VEC_GP, idt_code));
    }
    if !present {
        return Ok(IntDelivery::Fault(VEC_NP, idt_code));
    }
    // Gate fields: selector in bits 16..32, offset in 0..16 and (32-bit gates) 48..64.
    let sel = ((gate >> 16) & 0xffff) as u16;
    let offset = if op32 {
        (gate & 0xffff) | ((gate >> 32) & 0xffff_0000)
    } else {
        gate & 0xffff
    };
    if sel & !3 == 0 {
        return Ok(IntDelivery::Fault(VEC_GP, 0));
    }
    if sel & 4 != 0 {
        return Err(format!(
            "vector {vector:#x}'s handler is in the LDT (not completed)"
        ));
    }
    let index = u64::from(sel & !7);
    if index + 7 > u64::from(sregs.gdt.limit) {
        return Ok(IntDelivery::Fault(VEC_GP, u32::from(sel & !3)));
    }
    let mut d = [0u8; 8];
    if translate::read_linear(mem, sregs, sregs.gdt.base.wrapping_add(index), &mut d) != 8 {
        return Err("GDT is not readable".into());
    }
    let mut cs = super::gdt::segment(u64::from_le_bytes(d), sel);
    if cs.s == 0 || cs.type_ & 0x8 == 0 {
        return Ok(IntDelivery::Fault(VEC_GP, u32::from(sel & !3)));
    }
    let conforming = cs.type_ & 0x4 != 0;
    if u64::from(cs.dpl) > cpl || (!conforming && u64::from(cs.dpl) != cpl) {
        if u64::from(cs.dpl) > cpl {
            return Ok(IntDelivery::Fault(VEC_GP, u32::from(sel & !3)));
        }
        return Err(format!(
            "INT {vector:#x} to a handler at privilege level {} from {cpl} needs a stack \
             switch through the TSS (not completed)",
            cs.dpl
        ));
    }
    if cs.present == 0 {
        return Ok(IntDelivery::Fault(VEC_NP, u32::from(sel & !3)));
    }
    if offset > u64::from(cs.limit) {
        return Ok(IntDelivery::Fault(VEC_GP, 0));
    }
    // The handler runs at CPL: the loaded selector carries it as RPL.
    // CPL is 0..=3: fits the selector's RPL bits.
    #[allow(clippy::cast_possible_truncation)]
    let rpl = cpl as u16;
    cs.selector = (sel & !3) | rpl;
    let sp_mask: u64 = if sregs.ss.db == 1 {
        0xffff_ffff
    } else {
        0xffff
    };
    let slot = if op32 { 4 } else { 2 };
    let mut frame = Vec::with_capacity(12);
    for v in [next, u64::from(sregs.cs.selector), regs.rflags] {
        frame.extend_from_slice(&v.to_le_bytes()[..slot]);
    }
    let sp = (regs.rsp.wrapping_sub(3 * slot as u64)) & sp_mask;
    let linear = sregs.ss.base.wrapping_add(sp) & 0xffff_ffff;
    if !translate::write_linear(mem, sregs, linear, &frame) {
        return Err(format!(
            "the INT {vector:#x} frame at linear {linear:#x} is not writable (a #SS or #PF \
             fugu does not deliver)"
        ));
    }
    let mut rflags = regs.rflags & !(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM);
    if !trap {
        rflags &= !EFLAGS_IF;
    }
    Ok(IntDelivery::Enter {
        cs,
        eip: offset,
        rsp: (regs.rsp & !sp_mask) | sp,
        rflags,
    })
}

/// IRET in protected mode (paging or not) returning to the same privilege level, with a
/// 32-bit or 16-bit operand size (`op32`) and a 32-bit or 16-bit stack (SS.B).
///
/// The frame is architecturally at SS.base + ESP. The kvm_pvm hosts these machines run
/// deliver interrupts and exceptions to a protected-mode guest as if SS were flat: the frame
/// lands at linear ESP, without the SS base (seen with iPXE, whose stack segment has the base
/// of its relocated image: the frame at SS.base + ESP was stale data, the one at ESP a valid
/// return into iPXE; QEMU on the same host stops at the same IRET). So when SS has a base and
/// the architectural frame is not a valid return, the frame at ESP is taken if it is one, and
/// the completion says so; when neither is valid the guest stops with both reasons.
fn iret_pm(
    vcpu: &dyn Vcpu,
    mem: &dyn GuestMemory,
    sregs: &crate::hypervisor::Sregs,
    regs: &mut crate::hypervisor::Regs,
    op32: bool,
) -> Result<Completion, String> {
    const EFLAGS_NT: u64 = 1 << 14;
    const EFLAGS_VM: u64 = 1 << 17;
    // The flags IRET may restore at CPL0 (VM, VIF and VIP are not handled here).
    const RESTORABLE: u64 = 0x24_7fd5;
    if sregs.cr0 & 1 == 0 || regs.rflags & (EFLAGS_NT | EFLAGS_VM) != 0 {
        return Err("only protected-mode IRET without a task return is completed".into());
    }
    let sp_mask: u64 = if sregs.ss.db == 1 {
        0xffff_ffff
    } else {
        0xffff
    };
    let sp = regs.rsp & sp_mask;
    let size: u64 = if op32 { 12 } else { 6 };
    let (target, done) = find_iret_frame(mem, sregs, sp, op32)?;
    // A 16-bit IRET restores only the low 16 bits of FLAGS.
    let eflags = if op32 {
        target.eflags
    } else {
        (regs.rflags & !0xffff) | target.eflags
    };
    let mut new_sregs = *sregs;
    new_sregs.cs = target.cs;
    regs.rip = target.eip;
    regs.rflags = (regs.rflags & !RESTORABLE) | (eflags & RESTORABLE) | 2;
    regs.rsp = (regs.rsp & !sp_mask) | ((sp + size) & sp_mask);
    vcpu.set_sregs(&new_sregs).map_err(|e| e.to_string())?;
    vcpu.set_regs(regs).map_err(|e| e.to_string())?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest RAM with a GDT at 0x1000 (null, flat 32-bit code at 0x08, a data segment based
    /// at 0x10000 at 0x10), and protected-mode segment registers using them.
    fn based_stack_machine() -> (
        crate::memory::portable::MmapMemory,
        crate::hypervisor::Sregs,
    ) {
        let mem = crate::memory::portable::MmapMemory::new(&[(0, 0x40000)]).unwrap();
        let gdt: [u64; 3] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9301_0000_ffff];
        for (i, e) in gdt.iter().enumerate() {
            mem.write(0x1000 + 8 * i as u64, &e.to_le_bytes()).unwrap();
        }
        let mut sregs = crate::hypervisor::Sregs {
            cr0: 1,
            ..Default::default()
        };
        sregs.gdt.base = 0x1000;
        sregs.gdt.limit = 23;
        sregs.cs = crate::arch::x86::gdt::segment(gdt[1], 0x08);
        sregs.ss = crate::arch::x86::gdt::segment(gdt[2], 0x10);
        (mem, sregs)
    }

    /// A gate for `handler` through selector 0x08 of `kind` (0xe/0xf 32-bit interrupt/trap,
    /// 0x6 16-bit interrupt, 0x5 task) with `dpl`, present or not.
    fn gate(handler: u32, kind: u64, dpl: u64, present: bool) -> u64 {
        let h = u64::from(handler);
        (h & 0xffff)
            | (0x08 << 16)
            | (kind << 40)
            | (dpl << 45)
            | (u64::from(present) << 47)
            | ((h & 0xffff_0000) << 32)
    }

    #[test]
    fn int_n_enters_the_gate_with_the_architectural_frame_or_faults() {
        let (mem, mut sregs) = based_stack_machine();
        sregs.idt.base = 0x3000;
        sregs.idt.limit = 0x22 * 8 - 1;
        let put = |v: u64, g: u64| mem.write(0x3000 + 8 * v, &g.to_le_bytes()).unwrap();
        put(0x21, gate(0x5000, 0xe, 0, true));
        put(0x20, gate(0x6000, 0xf, 0, true));
        put(0x08, gate(0x7000, 0x6, 0, true));
        let regs = crate::hypervisor::Regs {
            rip: 0x1234,
            rsp: 0x2000,
            rflags: 0x202 | (1 << 8),
            ..Default::default()
        };
        // 32-bit interrupt gate: EIP after the instruction, CS, EFLAGS at SS.base + ESP - 12;
        // IF and TF cleared.
        let d = int_pm(&mem, &sregs, &regs, 0x21, 0x1236).unwrap();
        let IntDelivery::Enter {
            cs,
            eip,
            rsp,
            rflags,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!((cs.selector, eip, rsp, rflags), (0x08, 0x5000, 0x1ff4, 0x2));
        let mut f = [0u8; 12];
        mem.read(0x11ff4, &mut f).unwrap();
        assert_eq!(f.to_vec(), frame32(0x1236, 0x08, 0x302));
        // A trap gate keeps IF.
        let d = int_pm(&mem, &sregs, &regs, 0x20, 0x1236).unwrap();
        assert!(
            matches!(
                d,
                IntDelivery::Enter {
                    eip: 0x6000,
                    rflags: 0x202,
                    ..
                }
            ),
            "{d:?}"
        );
        // A 16-bit gate pushes 16-bit slots and jumps to a 16-bit offset.
        let d = int_pm(&mem, &sregs, &regs, 0x08, 0x1236).unwrap();
        assert!(
            matches!(
                d,
                IntDelivery::Enter {
                    eip: 0x7000,
                    rsp: 0x1ffa,
                    ..
                }
            ),
            "{d:?}"
        );
        let mut f = [0u8; 6];
        mem.read(0x11ffa, &mut f).unwrap();
        assert_eq!(f, [0x36, 0x12, 0x08, 0, 0x02, 0x03]);
        // Beyond the IDT limit, a gate of higher privilege than CPL 3 code may call, a
        // missing gate: #GP / #NP with the IDT error code (vector * 8 + 2).
        assert_eq!(
            int_pm(&mem, &sregs, &regs, 0x40, 0).unwrap(),
            IntDelivery::Fault(VEC_GP, 0x40 * 8 + 2)
        );
        let mut user = sregs;
        user.cs.selector = 0x0b;
        assert_eq!(
            int_pm(&mem, &user, &regs, 0x21, 0).unwrap(),
            IntDelivery::Fault(VEC_GP, 0x21 * 8 + 2)
        );
        put(0x21, gate(0x5000, 0xe, 0, false));
        assert_eq!(
            int_pm(&mem, &sregs, &regs, 0x21, 0).unwrap(),
            IntDelivery::Fault(VEC_NP, 0x21 * 8 + 2)
        );
        // Not a gate type: #GP; a task gate: not completed, with the reason.
        put(0x21, gate(0x5000, 0x1, 0, true));
        assert_eq!(
            int_pm(&mem, &sregs, &regs, 0x21, 0).unwrap(),
            IntDelivery::Fault(VEC_GP, 0x21 * 8 + 2)
        );
        put(0x21, gate(0x5000, 0x5, 0, true));
        assert!(int_pm(&mem, &sregs, &regs, 0x21, 0)
            .unwrap_err()
            .contains("task gate"));
        // Real mode is the host's to emulate.
        let mut real = sregs;
        real.cr0 = 0;
        assert!(int_pm(&mem, &real, &regs, 0x20, 0).is_err());
    }

    #[test]
    fn xsave_control_clwb_and_invpcid_decode_with_their_operands() {
        let d = |b: &[u8], long: bool, db: bool| decode_in(b, long, db).map(|d| (d.op, d.len));
        assert_eq!(
            d(&[0x0f, 0x01, 0xd0], false, true),
            Some((Completion::Xgetbv, 3))
        );
        assert_eq!(
            d(&[0x0f, 0x01, 0xd1], true, true),
            Some((Completion::Xsetbv, 3))
        );
        // clwb (%esi); clwb 0x12345678; clwb 8(%eax,%ebx,4); clwb 0x1000(%ebp) (disp32);
        // SIB with no base (disp32).
        for (b, len) in [
            (&[0x66, 0x0f, 0xae, 0x36][..], 4),
            (&[0x66, 0x0f, 0xae, 0x35, 0x78, 0x56, 0x34, 0x12][..], 8),
            (&[0x66, 0x0f, 0xae, 0x74, 0x98, 0x08][..], 6),
            (&[0x66, 0x0f, 0xae, 0xb5, 0, 0x10, 0, 0][..], 8),
            (&[0x66, 0x0f, 0xae, 0x34, 0x25, 0, 0x10, 0, 0][..], 9),
        ] {
            assert_eq!(d(b, false, true), Some((Completion::Clwb, len)), "{b:02x?}");
        }
        // 16-bit addressing: [bp+si+disp16] is mod 10, rm 010.
        assert_eq!(
            d(&[0x66, 0x0f, 0xae, 0xb2, 0x34, 0x12], false, false),
            Some((Completion::Clwb, 6))
        );
        // Without 66 it is XSAVEOPT; with a register operand it is not CLWB; cut bytes.
        assert_eq!(d(&[0x0f, 0xae, 0x36], false, true), None);
        assert_eq!(d(&[0x66, 0x0f, 0xae, 0xf6], false, true), None);
        assert_eq!(d(&[0x66, 0x0f, 0xae, 0x35, 0x78], false, true), None);
        // invpcid (%esi), %eax / (%rdi), %r9 (REX.R).
        assert_eq!(
            d(&[0x66, 0x0f, 0x38, 0x82, 0x06], false, true),
            Some((Completion::Invpcid { reg: 0 }, 5))
        );
        assert_eq!(
            d(&[0x66, 0x44, 0x0f, 0x38, 0x82, 0x0f], true, true),
            Some((Completion::Invpcid { reg: 9 }, 6))
        );
    }

    #[test]
    fn int_n_is_decoded_outside_long_mode_only() {
        assert_eq!(
            decode(&[0xcd, 0x21], false),
            Some(Decoded {
                op: Completion::IntN { vector: 0x21 },
                len: 2
            })
        );
        assert_eq!(decode(&[0xcd, 0x80], true), None);
    }

    fn frame32(eip: u32, cs: u32, eflags: u32) -> Vec<u8> {
        [eip, cs, eflags]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    #[test]
    fn iret_frames_are_read_at_the_ss_base_and_else_where_the_host_pushed_them() {
        let (mem, sregs) = based_stack_machine();
        assert_eq!(sregs.ss.base, 0x10000);
        let sp = 0x2000;
        // A frame software built: at SS.base + ESP, as the architecture says.
        mem.write(0x12000, &frame32(0x5678, 0x08, 0x202)).unwrap();
        let (t, done) = find_iret_frame(&mem, &sregs, sp, true).unwrap();
        assert_eq!(
            (t.eip, t.eflags, t.cs.selector, done),
            (0x5678, 0x202, 0x08, Completion::Iret)
        );
        // A frame the host pushed without the SS base, with stale bytes where it belonged.
        mem.write(0x12000, &frame32(0x0001_38ef, 0x0800, 0x0001_396e))
            .unwrap();
        mem.write(0x2000, &frame32(0x1234, 0x08, 0x246)).unwrap();
        let (t, done) = find_iret_frame(&mem, &sregs, sp, true).unwrap();
        assert_eq!(
            (t.eip, t.eflags, done),
            (0x1234, 0x246, Completion::IretUnbasedFrame)
        );
        // Neither is a valid return: both reasons, and nothing is guessed.
        mem.write(0x2000, &frame32(0x1234, 0x10, 0x246)).unwrap();
        let e = find_iret_frame(&mem, &sregs, sp, true).err().unwrap();
        assert!(
            e.contains("outside the GDT") && e.contains("not a present code segment"),
            "{e}"
        );
        // With a flat SS only the architectural frame counts.
        let mut flat = sregs;
        flat.ss.base = 0;
        mem.write(0x12000, &frame32(0x1234, 0x08, 0x246)).unwrap();
        assert!(find_iret_frame(&mem, &flat, sp, true).is_err());
        // A return to another privilege level is left alone.
        mem.write(0x2000, &frame32(0x1234, 0x0b, 0x246)).unwrap();
        let e = find_iret_frame(&mem, &flat, sp, true).err().unwrap();
        assert!(e.contains("privilege level 3"), "{e}");
        // EIP beyond a 16-bit segment's limit is not a valid return.
        let mut small = sregs;
        small.gdt.limit = 31;
        mem.write(0x1018, &0x0000_9b00_0000_0fffu64.to_le_bytes())
            .unwrap();
        mem.write(0x12000, &frame32(0x1_0000, 0x18, 0x2)).unwrap();
        mem.write(0x2000, &frame32(0x1_0000, 0x18, 0x2)).unwrap();
        let e = find_iret_frame(&mem, &small, sp, true).err().unwrap();
        assert!(e.contains("beyond the limit"), "{e}");
    }

    #[test]
    fn decodes_the_completed_instructions_with_prefixes() {
        assert_eq!(
            decode(&[0xcc, 0x90], false),
            Some(Decoded {
                op: Completion::Int3,
                len: 1
            })
        );
        assert_eq!(
            decode(&[0x9b, 0x90], false),
            Some(Decoded {
                op: Completion::Fwait,
                len: 1
            })
        );
        assert_eq!(
            decode(&[0x9b, 0xdb, 0xe2], false),
            Some(Decoded {
                op: Completion::Fnclex,
                len: 3
            })
        );
        assert_eq!(
            decode(&[0xdb, 0xe2], true),
            Some(Decoded {
                op: Completion::Fnclex,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x0b], true),
            Some(Decoded {
                op: Completion::Ud2,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x01, 0xca], true),
            Some(Decoded {
                op: Completion::Clac,
                len: 3
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x01, 0xcb], false),
            Some(Decoded {
                op: Completion::Stac,
                len: 3
            })
        );
        assert_eq!(
            decode(&[0x3e, 0xcc], false),
            Some(Decoded {
                op: Completion::Int3,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x48, 0xcc], true),
            Some(Decoded {
                op: Completion::Int3,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x48, 0xcc], false),
            None,
            "0x48 is DEC EAX outside long mode"
        );
        assert_eq!(
            decode(&[0x0f, 0xae, 0x2f], true),
            None,
            "xrstor is not completed"
        );
        assert_eq!(
            decode(&[0xdf, 0xe0], false),
            Some(Decoded {
                op: Completion::FnstswAx,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0xcf], false),
            Some(Decoded {
                op: Completion::Iret,
                len: 1
            })
        );
        assert_eq!(
            decode(&[0x66, 0xcf], false),
            Some(Decoded {
                op: Completion::Iret,
                len: 2
            }),
            "IRET with the other operand size"
        );
        assert_eq!(decode(&[0x66, 0x66, 0xcf], false), None);
        assert_eq!(
            decode(&[0x48, 0xcf], true),
            None,
            "IRETQ is left to the host"
        );
        assert_eq!(decode(&[], true), None);
        assert_eq!(decode(&[0x66; 15], true), None);
    }

    #[test]
    fn decodes_rdrand_and_rdseed_with_their_operand() {
        let r = |b: &[u8], lm| decode(b, lm).map(|d| (d.op, d.len));
        // rdrand edx (the i386 kernel's KASLR code).
        assert_eq!(
            r(&[0x0f, 0xc7, 0xf2, 0x0f], false),
            Some((
                Completion::Random {
                    seed: false,
                    reg: 2,
                    bytes: 4
                },
                3
            ))
        );
        // rdseed r9 (REX.WB) and rdrand ax (0x66).
        assert_eq!(
            r(&[0x49, 0x0f, 0xc7, 0xf9], true),
            Some((
                Completion::Random {
                    seed: true,
                    reg: 9,
                    bytes: 8
                },
                4
            ))
        );
        assert_eq!(
            r(&[0x66, 0x0f, 0xc7, 0xf0], false),
            Some((
                Completion::Random {
                    seed: false,
                    reg: 0,
                    bytes: 2
                },
                4
            ))
        );
        // REX outside long mode is an instruction (inc/dec), not a prefix; memory operands and
        // other 0F C7 forms (cmpxchg8b) are not completed.
        assert_eq!(r(&[0x49, 0x0f, 0xc7, 0xf9], false), None);
        assert_eq!(r(&[0x0f, 0xc7, 0x32], false), None);
        assert_eq!(r(&[0x0f, 0xc7, 0x0e], false), None);
    }

    #[test]
    fn random_values_land_in_the_register_with_its_width() {
        let mut regs = crate::hypervisor::Regs {
            rdx: 0xffff_ffff_ffff_ffff,
            rax: 0x1111_2222_3333_4444,
            ..Default::default()
        };
        set_register(&mut regs, 2, 0xdead_beef_cafe_f00d, 4);
        assert_eq!(regs.rdx, 0xcafe_f00d);
        set_register(&mut regs, 0, 0xabcd, 2);
        assert_eq!(regs.rax, 0x1111_2222_3333_abcd);
        set_register(&mut regs, 15, u64::MAX, 8);
        assert_eq!(regs.r15, u64::MAX);
    }

    #[test]
    fn iret_frames_of_both_operand_sizes() {
        let f32 = [0x10, 0x20, 0x30, 0x40, 0x08, 0, 0, 0, 0x02, 0x02, 0, 0];
        assert_eq!(iret_frame(&f32, true), Some((0x4030_2010, 0x08, 0x202)));
        assert_eq!(iret_frame(&f32, false), Some((0x2010, 0x4030, 0x08)));
        assert_eq!(iret_frame(&f32[..6], true), None, "short frame");
        assert_eq!(iret_frame(&f32[..6], false), Some((0x2010, 0x4030, 0x08)));
        assert_eq!(iret_frame(&[], false), None);
    }

    #[test]
    fn reads_instruction_bytes_from_the_exit() {
        // What this host reported for an INT3: flags=1, size 15, bytes cc 83 3d ...
        let d = [0x1, 0x1002f03d83cc0f, 0x1002f4a1737501, 0x1000];
        let b = bytes_from_exit(&d).unwrap();
        assert_eq!(b.len(), 15);
        assert_eq!(&b[..3], &[0xcc, 0x83, 0x3d]);
        assert_eq!(bytes_from_exit(&[0, 0, 0]), None);
        assert_eq!(bytes_from_exit(&[1]), None);
    }
}
