//! The KVM userspace ABI for x86, written out for the in-house (portable) backend.
//!
//! kvm-bindings only compiles its x86 definitions for `x86_64`, but the kernel ABI is the same
//! for a 32-bit process (every struct here is built from fixed-width fields with explicit
//! padding, so i686 and x86_64 lay them out identically). Sizes are asserted at compile time on
//! every target, and on x86_64 the tests compare layouts and ioctl numbers with kvm-bindings.
#![allow(non_camel_case_types)]

/// The ioctl type byte that KVM uses.
pub const KVMIO: u32 = 0xAE;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` as x86 Linux encodes it (same for i386 and x86_64).
#[allow(
    clippy::cast_possible_truncation,
    reason = "a const fn cannot use try_from; every size is a KVM struct, asserted below 16 KiB"
)]
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}
const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, KVMIO, nr, 0)
}
const fn ior<T>(nr: u32) -> u32 {
    ioc(IOC_READ, KVMIO, nr, core::mem::size_of::<T>())
}
const fn iow<T>(nr: u32) -> u32 {
    ioc(IOC_WRITE, KVMIO, nr, core::mem::size_of::<T>())
}
const fn iowr<T>(nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, KVMIO, nr, core::mem::size_of::<T>())
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_dtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_sregs {
    pub cs: kvm_segment,
    pub ds: kvm_segment,
    pub es: kvm_segment,
    pub fs: kvm_segment,
    pub gs: kvm_segment,
    pub ss: kvm_segment,
    pub tr: kvm_segment,
    pub ldt: kvm_segment,
    pub gdt: kvm_dtable,
    pub idt: kvm_dtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; 4],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_fpu {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub pad1: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
    pub pad2: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_userspace_memory_region {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_cpuid_entry2 {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}

/// Header of `struct kvm_cpuid2`; `nent` entries follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_cpuid2 {
    pub nent: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_msr_entry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}

/// Header of `struct kvm_msrs`; `nmsrs` entries follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_msrs {
    pub nmsrs: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_pit_config {
    pub flags: u32,
    pub pad: [u32; 15],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_irq_level {
    pub irq: u32,
    pub level: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvm_lapic_state {
    pub regs: [u8; 1024],
}

impl Default for kvm_lapic_state {
    fn default() -> Self {
        Self { regs: [0; 1024] }
    }
}

/// `struct kvm_vcpu_events` (x86): pending/injected exception, interrupt, NMI, SMI state.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_vcpu_events {
    pub exception_injected: u8,
    pub exception_nr: u8,
    pub exception_has_error_code: u8,
    pub exception_pending: u8,
    pub exception_error_code: u32,
    pub interrupt_injected: u8,
    pub interrupt_nr: u8,
    pub interrupt_soft: u8,
    pub interrupt_shadow: u8,
    pub nmi_injected: u8,
    pub nmi_pending: u8,
    pub nmi_masked: u8,
    pub nmi_pad: u8,
    pub sipi_vector: u32,
    pub flags: u32,
    pub smi: [u8; 4],
    pub triple_fault_pending: u8,
    pub reserved: [u8; 26],
    pub exception_has_payload: u8,
    pub exception_payload: u64,
}

/// `struct kvm_xcr`: one extended control register (XCR0 is number 0).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_xcr {
    pub xcr: u32,
    pub reserved: u32,
    pub value: u64,
}

/// `struct kvm_xcrs` (KVM_GET_XCRS / KVM_SET_XCRS).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct kvm_xcrs {
    pub nr_xcrs: u32,
    pub flags: u32,
    pub xcrs: [kvm_xcr; 16],
    pub padding: [u64; 16],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_irqfd {
    pub fd: u32,
    pub gsi: u32,
    pub flags: u32,
    pub resamplefd: u32,
    pub pad: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_ioeventfd {
    pub datamatch: u64,
    pub addr: u64,
    pub len: u32,
    pub fd: i32,
    pub flags: u32,
    pub pad: [u32; 9],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_msi {
    pub address_lo: u32,
    pub address_hi: u32,
    pub data: u32,
    pub flags: u32,
    pub devid: u32,
    pub pad: [u8; 12],
}

/// Header of `struct kvm_irq_routing`; `nr` entries follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_irq_routing {
    pub nr: u32,
    pub flags: u32,
}

/// `struct kvm_irq_routing_entry` with its union written as raw words (irqchip: irqchip, pin;
/// msi: address_lo, address_hi, data, devid).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_irq_routing_entry {
    pub gsi: u32,
    pub type_: u32,
    pub flags: u32,
    pub pad: u32,
    pub u: [u32; 8],
}

/// The fixed head of the shared `struct kvm_run` page, up to the exit union at offset 32.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_run_head {
    pub request_interrupt_window: u8,
    pub immediate_exit: u8,
    pub padding1: [u8; 6],
    pub exit_reason: u32,
    pub ready_for_interrupt_injection: u8,
    pub if_flag: u8,
    pub flags: u16,
    pub cr8: u64,
    pub apic_base: u64,
}

/// Offset of the exit-reason union inside `struct kvm_run`.
pub const KVM_RUN_EXIT_UNION: usize = 32;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_run_io {
    pub direction: u8,
    pub size: u8,
    pub port: u16,
    pub count: u32,
    pub data_offset: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_run_mmio {
    pub phys_addr: u64,
    pub data: [u8; 8],
    pub len: u32,
    pub is_write: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_run_internal {
    pub suberror: u32,
    pub ndata: u32,
    pub data: [u64; 16],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_run_fail_entry {
    pub hardware_entry_failure_reason: u64,
    pub cpu: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kvm_run_system_event {
    pub type_: u32,
    pub ndata: u32,
    pub data: [u64; 16],
}

pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
pub const KVM_EXIT_IO_OUT: u8 = 1;

pub const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

pub const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
pub const KVM_SYSTEM_EVENT_RESET: u32 = 2;

#[cfg(test)]
pub const KVM_CAP_USER_MEMORY: u32 = 3;
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_CAP_IOEVENTFD: u32 = 36;
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_CAP_IRQFD: u32 = 32;
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_CAP_MAX_VCPUS: u32 = 66;
pub const KVM_CAP_TSC_DEADLINE_TIMER: u32 = 72;

pub const KVM_MAX_CPUID_ENTRIES: usize = 256;
pub const KVM_PIT_SPEAKER_DUMMY: u32 = 1;

pub const KVM_GET_API_VERSION: u32 = io(0x00);
pub const KVM_CREATE_VM: u32 = io(0x01);
pub const KVM_CHECK_EXTENSION: u32 = io(0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);
pub const KVM_GET_SUPPORTED_CPUID: u32 = iowr::<kvm_cpuid2>(0x05);
pub const KVM_CREATE_VCPU: u32 = io(0x41);
pub const KVM_SET_USER_MEMORY_REGION: u32 = iow::<kvm_userspace_memory_region>(0x46);
pub const KVM_SET_TSS_ADDR: u32 = io(0x47);
pub const KVM_SET_IDENTITY_MAP_ADDR: u32 = iow::<u64>(0x48);
pub const KVM_CREATE_IRQCHIP: u32 = io(0x60);
pub const KVM_IRQ_LINE: u32 = iow::<kvm_irq_level>(0x61);
pub const KVM_SET_GSI_ROUTING: u32 = iow::<kvm_irq_routing>(0x6a);
pub const KVM_IRQFD: u32 = iow::<kvm_irqfd>(0x76);
pub const KVM_CREATE_PIT2: u32 = iow::<kvm_pit_config>(0x77);
pub const KVM_IOEVENTFD: u32 = iow::<kvm_ioeventfd>(0x79);
pub const KVM_RUN: u32 = io(0x80);
pub const KVM_GET_REGS: u32 = ior::<kvm_regs>(0x81);
pub const KVM_SET_REGS: u32 = iow::<kvm_regs>(0x82);
pub const KVM_GET_SREGS: u32 = ior::<kvm_sregs>(0x83);
pub const KVM_SET_SREGS: u32 = iow::<kvm_sregs>(0x84);
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_GET_MSRS: u32 = iowr::<kvm_msrs>(0x88);
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_SET_MSRS: u32 = iow::<kvm_msrs>(0x89);
pub const KVM_GET_FPU: u32 = ior::<kvm_fpu>(0x8c);
pub const KVM_SET_FPU: u32 = iow::<kvm_fpu>(0x8d);
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_GET_LAPIC: u32 = ior::<kvm_lapic_state>(0x8e);
pub const KVM_SET_CPUID2: u32 = iow::<kvm_cpuid2>(0x90);
#[cfg(all(test, target_arch = "x86_64"))]
pub const KVM_SIGNAL_MSI: u32 = iow::<kvm_msi>(0xa5);
pub const KVM_GET_VCPU_EVENTS: u32 = ior::<kvm_vcpu_events>(0x9f);
pub const KVM_GET_XCRS: u32 = ior::<kvm_xcrs>(0xa6);
pub const KVM_SET_XCRS: u32 = iow::<kvm_xcrs>(0xa7);
pub const KVM_SET_VCPU_EVENTS: u32 = iow::<kvm_vcpu_events>(0xa0);

// The ABI is the same for 32-bit and 64-bit processes; these hold on every target.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<kvm_regs>() == 144);
    assert!(size_of::<kvm_segment>() == 24);
    assert!(size_of::<kvm_dtable>() == 16);
    assert!(size_of::<kvm_sregs>() == 312);
    assert!(size_of::<kvm_fpu>() == 416);
    assert!(size_of::<kvm_userspace_memory_region>() == 32);
    assert!(size_of::<kvm_cpuid_entry2>() == 40);
    assert!(size_of::<kvm_cpuid2>() == 8);
    assert!(size_of::<kvm_msr_entry>() == 16);
    assert!(size_of::<kvm_msrs>() == 8);
    assert!(size_of::<kvm_pit_config>() == 64);
    assert!(size_of::<kvm_irq_level>() == 8);
    assert!(size_of::<kvm_lapic_state>() == 1024);
    assert!(size_of::<kvm_irqfd>() == 32);
    assert!(size_of::<kvm_ioeventfd>() == 64);
    assert!(size_of::<kvm_msi>() == 32);
    assert!(size_of::<kvm_irq_routing_entry>() == 48);
    assert!(size_of::<kvm_run_head>() == KVM_RUN_EXIT_UNION);
    assert!(size_of::<kvm_vcpu_events>() == 64);
    assert!(size_of::<kvm_xcrs>() == 392);
    assert!(size_of::<kvm_run_io>() == 16);
    assert!(size_of::<kvm_run_mmio>() == 24);
    assert!(size_of::<kvm_run_internal>() == 136);
    assert!(size_of::<kvm_run_system_event>() == 136);
    // Spot-check numbers against the values in <linux/kvm.h> on x86.
    assert!(KVM_RUN == 0xAE80);
    assert!(KVM_GET_REGS == 0x8090_AE81);
    assert!(KVM_SET_SREGS == 0x4138_AE84);
    assert!(KVM_SET_USER_MEMORY_REGION == 0x4020_AE46);
    assert!(KVM_GET_SUPPORTED_CPUID == 0xC008_AE05);
};

/// Differential checks against kvm-bindings / vmm-sys-util: same layout, same ioctl numbers.
#[cfg(all(test, target_arch = "x86_64"))]
mod differential {
    use super::*;
    use core::mem::{offset_of, size_of};
    use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

    macro_rules! same_layout {
        ($ours:ty, $theirs:ty, [$($f:ident),*]) => {{
            assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), stringify!($ours));
            $(assert_eq!(offset_of!($ours, $f), offset_of!($theirs, $f),
                concat!(stringify!($ours), ".", stringify!($f)));)*
        }};
    }

    #[test]
    fn structs_match_kvm_bindings() {
        use kvm_bindings as kb;
        same_layout!(kvm_regs, kb::kvm_regs, [rax, rsp, r15, rip, rflags]);
        same_layout!(kvm_xcrs, kb::kvm_xcrs, [nr_xcrs, flags, xcrs, padding]);
        same_layout!(kvm_xcr, kb::kvm_xcr, [xcr, value]);
        // Ours is flat where kvm-bindings nests one struct per event kind: compare where each
        // kind starts (the rust-vmm backend transmutes between the two).
        assert_eq!(
            size_of::<kvm_vcpu_events>(),
            size_of::<kb::kvm_vcpu_events>()
        );
        for (ours, theirs) in [
            (
                offset_of!(kvm_vcpu_events, exception_injected),
                offset_of!(kb::kvm_vcpu_events, exception),
            ),
            (
                offset_of!(kvm_vcpu_events, interrupt_injected),
                offset_of!(kb::kvm_vcpu_events, interrupt),
            ),
            (
                offset_of!(kvm_vcpu_events, nmi_injected),
                offset_of!(kb::kvm_vcpu_events, nmi),
            ),
            (
                offset_of!(kvm_vcpu_events, sipi_vector),
                offset_of!(kb::kvm_vcpu_events, sipi_vector),
            ),
            (
                offset_of!(kvm_vcpu_events, flags),
                offset_of!(kb::kvm_vcpu_events, flags),
            ),
            (
                offset_of!(kvm_vcpu_events, smi),
                offset_of!(kb::kvm_vcpu_events, smi),
            ),
            (
                offset_of!(kvm_vcpu_events, triple_fault_pending),
                offset_of!(kb::kvm_vcpu_events, triple_fault),
            ),
            (
                offset_of!(kvm_vcpu_events, reserved),
                offset_of!(kb::kvm_vcpu_events, reserved),
            ),
            (
                offset_of!(kvm_vcpu_events, exception_payload),
                offset_of!(kb::kvm_vcpu_events, exception_payload),
            ),
        ] {
            assert_eq!(ours, theirs, "kvm_vcpu_events");
        }
        same_layout!(
            kvm_segment,
            kb::kvm_segment,
            [base, limit, selector, type_, present, unusable]
        );
        same_layout!(kvm_dtable, kb::kvm_dtable, [base, limit]);
        same_layout!(
            kvm_sregs,
            kb::kvm_sregs,
            [
                cs,
                tr,
                ldt,
                gdt,
                idt,
                cr0,
                cr4,
                efer,
                apic_base,
                interrupt_bitmap
            ]
        );
        same_layout!(
            kvm_fpu,
            kb::kvm_fpu,
            [fpr, fcw, ftwx, last_opcode, last_ip, last_dp, xmm, mxcsr]
        );
        same_layout!(
            kvm_userspace_memory_region,
            kb::kvm_userspace_memory_region,
            [slot, flags, guest_phys_addr, memory_size, userspace_addr]
        );
        same_layout!(
            kvm_cpuid_entry2,
            kb::kvm_cpuid_entry2,
            [function, index, flags, eax, edx]
        );
        same_layout!(kvm_msr_entry, kb::kvm_msr_entry, [index, data]);
        same_layout!(kvm_pit_config, kb::kvm_pit_config, [flags]);
        same_layout!(kvm_lapic_state, kb::kvm_lapic_state, [regs]);
        same_layout!(kvm_irqfd, kb::kvm_irqfd, [fd, gsi, flags, resamplefd]);
        same_layout!(
            kvm_ioeventfd,
            kb::kvm_ioeventfd,
            [datamatch, addr, len, fd, flags]
        );
        same_layout!(
            kvm_msi,
            kb::kvm_msi,
            [address_lo, address_hi, data, flags, devid]
        );
        same_layout!(
            kvm_irq_routing_entry,
            kb::kvm_irq_routing_entry,
            [gsi, type_, flags, pad, u]
        );
        assert_eq!(size_of::<kb::kvm_run>(), 2352);
        assert_eq!(
            offset_of!(kb::kvm_run, exit_reason),
            offset_of!(kvm_run_head, exit_reason)
        );
        assert_eq!(offset_of!(kb::kvm_run, cr8), offset_of!(kvm_run_head, cr8));
        assert_eq!(
            offset_of!(kb::kvm_run, immediate_exit),
            offset_of!(kvm_run_head, immediate_exit)
        );
        assert_eq!(
            offset_of!(kb::kvm_run, __bindgen_anon_1),
            KVM_RUN_EXIT_UNION
        );
        assert_eq!(kb::KVM_EXIT_IO, KVM_EXIT_IO);
        assert_eq!(kb::KVM_EXIT_MMIO, KVM_EXIT_MMIO);
        assert_eq!(kb::KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTERNAL_ERROR);
        assert_eq!(kb::KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_SYSTEM_EVENT);
        assert_eq!(kb::KVM_EXIT_SHUTDOWN, KVM_EXIT_SHUTDOWN);
        assert_eq!(kb::KVM_CAP_IRQFD, KVM_CAP_IRQFD);
        assert_eq!(kb::KVM_CAP_IOEVENTFD, KVM_CAP_IOEVENTFD);
        assert_eq!(kb::KVM_CAP_MAX_VCPUS, KVM_CAP_MAX_VCPUS);
        assert_eq!(kb::KVM_CAP_TSC_DEADLINE_TIMER, KVM_CAP_TSC_DEADLINE_TIMER);
        assert_eq!(kb::KVM_MAX_CPUID_ENTRIES, KVM_MAX_CPUID_ENTRIES);
    }

    #[test]
    fn ioctl_numbers_match_vmm_sys_util() {
        use kvm_bindings as kb;
        const IO: u32 = kb::KVMIO;
        ioctl_io_nr!(RUN, IO, 0x80);
        ioctl_io_nr!(CREATE_VM, IO, 0x01);
        ioctl_io_nr!(CREATE_VCPU, IO, 0x41);
        ioctl_ior_nr!(GET_REGS, IO, 0x81, kb::kvm_regs);
        ioctl_iow_nr!(SET_REGS, IO, 0x82, kb::kvm_regs);
        ioctl_ior_nr!(GET_SREGS, IO, 0x83, kb::kvm_sregs);
        ioctl_iow_nr!(SET_SREGS, IO, 0x84, kb::kvm_sregs);
        ioctl_iow_nr!(SET_MEM, IO, 0x46, kb::kvm_userspace_memory_region);
        ioctl_iowr_nr!(SUPPORTED_CPUID, IO, 0x05, kb::kvm_cpuid2);
        ioctl_iow_nr!(SET_CPUID2, IO, 0x90, kb::kvm_cpuid2);
        ioctl_iow_nr!(SET_MSRS, IO, 0x89, kb::kvm_msrs);
        ioctl_iowr_nr!(GET_MSRS, IO, 0x88, kb::kvm_msrs);
        ioctl_ior_nr!(GET_FPU, IO, 0x8c, kb::kvm_fpu);
        ioctl_iow_nr!(SET_FPU, IO, 0x8d, kb::kvm_fpu);
        ioctl_iow_nr!(CREATE_PIT2, IO, 0x77, kb::kvm_pit_config);
        ioctl_iow_nr!(IRQ_LINE, IO, 0x61, kb::kvm_irq_level);
        ioctl_iow_nr!(IRQFD, IO, 0x76, kb::kvm_irqfd);
        ioctl_iow_nr!(IOEVENTFD, IO, 0x79, kb::kvm_ioeventfd);
        ioctl_iow_nr!(SIGNAL_MSI, IO, 0xa5, kb::kvm_msi);
        ioctl_iow_nr!(GSI_ROUTING, IO, 0x6a, kb::kvm_irq_routing);
        ioctl_ior_nr!(GET_LAPIC, IO, 0x8e, kb::kvm_lapic_state);
        ioctl_ior_nr!(GET_EVENTS, IO, 0x9f, kb::kvm_vcpu_events);
        ioctl_iow_nr!(SET_EVENTS, IO, 0xa0, kb::kvm_vcpu_events);
        assert_eq!(GET_EVENTS(), u64::from(KVM_GET_VCPU_EVENTS));
        assert_eq!(SET_EVENTS(), u64::from(KVM_SET_VCPU_EVENTS));
        assert_eq!(RUN(), u64::from(KVM_RUN));
        assert_eq!(CREATE_VM(), u64::from(KVM_CREATE_VM));
        assert_eq!(CREATE_VCPU(), u64::from(KVM_CREATE_VCPU));
        assert_eq!(GET_REGS(), u64::from(KVM_GET_REGS));
        assert_eq!(SET_REGS(), u64::from(KVM_SET_REGS));
        assert_eq!(GET_SREGS(), u64::from(KVM_GET_SREGS));
        assert_eq!(SET_SREGS(), u64::from(KVM_SET_SREGS));
        assert_eq!(SET_MEM(), u64::from(KVM_SET_USER_MEMORY_REGION));
        assert_eq!(SUPPORTED_CPUID(), u64::from(KVM_GET_SUPPORTED_CPUID));
        assert_eq!(SET_CPUID2(), u64::from(KVM_SET_CPUID2));
        assert_eq!(SET_MSRS(), u64::from(KVM_SET_MSRS));
        assert_eq!(GET_MSRS(), u64::from(KVM_GET_MSRS));
        assert_eq!(GET_FPU(), u64::from(KVM_GET_FPU));
        assert_eq!(SET_FPU(), u64::from(KVM_SET_FPU));
        assert_eq!(CREATE_PIT2(), u64::from(KVM_CREATE_PIT2));
        assert_eq!(IRQ_LINE(), u64::from(KVM_IRQ_LINE));
        assert_eq!(IRQFD(), u64::from(KVM_IRQFD));
        assert_eq!(IOEVENTFD(), u64::from(KVM_IOEVENTFD));
        assert_eq!(SIGNAL_MSI(), u64::from(KVM_SIGNAL_MSI));
        assert_eq!(GSI_ROUTING(), u64::from(KVM_SET_GSI_ROUTING));
        assert_eq!(GET_LAPIC(), u64::from(KVM_GET_LAPIC));
    }
}
