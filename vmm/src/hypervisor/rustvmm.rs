//! The rust-vmm backend: kvm-ioctls and kvm-bindings, on x86_64 hosts.
//!
//! The ABI structs in [`super::kvm_abi`] have the same layout as kvm-bindings' (asserted in
//! kvm_abi's differential tests), so values pass between them by plain bit copies.

use super::kvm_abi::{kvm_vcpu_events, KVM_EXIT_INTERNAL_ERROR};
use super::{CpuidEntry, Error, Fpu, Regs, Result, Sregs, VcpuExit};
use kvm_bindings as kb;
use kvm_ioctls::{IoEventAddress, NoDatamatch};
use std::mem::{transmute, ManuallyDrop};
use std::os::fd::{FromRawFd, RawFd};
use vmm_sys_util::eventfd::EventFd;

fn err(op: &'static str, e: kvm_ioctls::Error) -> Error {
    Error::from_errno(op, e.errno())
}

/// Borrow a raw eventfd as the EventFd type kvm-ioctls wants, without taking ownership.
fn borrow_eventfd(fd: RawFd) -> ManuallyDrop<EventFd> {
    // SAFETY: the EventFd is never dropped (ManuallyDrop), so the caller keeps ownership.
    ManuallyDrop::new(unsafe { EventFd::from_raw_fd(fd) })
}

pub struct Kvm {
    kvm: kvm_ioctls::Kvm,
}

impl Kvm {
    pub fn open() -> std::result::Result<Self, super::OpenError> {
        let kvm = kvm_ioctls::Kvm::new()
            .map_err(|e| super::OpenError::from(std::io::Error::from_raw_os_error(e.errno())))?;
        let v = kvm.get_api_version();
        if v != 12 {
            return Err(super::OpenError::ApiVersion(v));
        }
        Ok(Kvm { kvm })
    }
}

impl super::Hypervisor for Kvm {
    fn api_version(&self) -> i32 {
        self.kvm.get_api_version()
    }
    fn check_extension(&self, cap: u32) -> i32 {
        self.kvm.check_extension_raw(cap as libc::c_ulong).max(0)
    }
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        let c = self
            .kvm
            .get_supported_cpuid(kb::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| err("KVM_GET_SUPPORTED_CPUID", e))?;
        // SAFETY: kvm_cpuid_entry2 has the same size and layout in both definitions.
        Ok(c.as_slice()
            .iter()
            .map(|e| unsafe { transmute::<kb::kvm_cpuid_entry2, CpuidEntry>(*e) })
            .collect())
    }
    fn create_vm(&self) -> Result<Box<dyn super::Vm>> {
        let vm = self.kvm.create_vm().map_err(|e| err("KVM_CREATE_VM", e))?;
        Ok(Box::new(Vm { vm }))
    }
}

pub struct Vm {
    vm: kvm_ioctls::VmFd,
}

/// Assign or remove the ioeventfd `ev` of `fd`. kvm-ioctls takes the access length from the
/// datamatch value's type; a value wider than the access could never match and is refused.
fn ioevent(vm: &kvm_ioctls::VmFd, fd: RawFd, ev: &super::IoEvent, assign: bool) -> Result<()> {
    fn call<T: Into<u64>>(
        vm: &kvm_ioctls::VmFd,
        efd: &EventFd,
        a: &IoEventAddress,
        v: T,
        assign: bool,
    ) -> std::result::Result<(), kvm_ioctls::Error> {
        if assign {
            vm.register_ioevent(efd, a, v)
        } else {
            vm.unregister_ioevent(efd, a, v)
        }
    }
    let efd = borrow_eventfd(fd);
    let a = if ev.pio {
        IoEventAddress::Pio(ev.addr)
    } else {
        IoEventAddress::Mmio(ev.addr)
    };
    let wide = || Error::from_errno("KVM_IOEVENTFD", libc::EINVAL);
    match (ev.datamatch, ev.len) {
        (None, _) => call(vm, &efd, &a, NoDatamatch, assign),
        (Some(v), 1) => call(vm, &efd, &a, u8::try_from(v).map_err(|_| wide())?, assign),
        (Some(v), 2) => call(vm, &efd, &a, u16::try_from(v).map_err(|_| wide())?, assign),
        (Some(v), 4) => call(vm, &efd, &a, u32::try_from(v).map_err(|_| wide())?, assign),
        (Some(v), _) => call(vm, &efd, &a, v, assign),
    }
    .map_err(|e| err("KVM_IOEVENTFD", e))
}

impl super::Vm for Vm {
    unsafe fn set_user_memory_region(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
        readonly: bool,
    ) -> Result<()> {
        let region = kb::kvm_userspace_memory_region {
            slot,
            flags: if readonly { kb::KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        self.vm
            .set_user_memory_region(region)
            .map_err(|e| err("KVM_SET_USER_MEMORY_REGION", e))
    }
    fn set_tss_address(&self, addr: u64) -> Result<()> {
        let addr = usize::try_from(addr)
            .map_err(|_| Error::from_errno("KVM_SET_TSS_ADDR", libc::EINVAL))?;
        self.vm
            .set_tss_address(addr)
            .map_err(|e| err("KVM_SET_TSS_ADDR", e))
    }
    fn set_identity_map_address(&self, addr: u64) -> Result<()> {
        self.vm
            .set_identity_map_address(addr)
            .map_err(|e| err("KVM_SET_IDENTITY_MAP_ADDR", e))
    }
    fn create_irq_chip(&self) -> Result<()> {
        self.vm
            .create_irq_chip()
            .map_err(|e| err("KVM_CREATE_IRQCHIP", e))
    }
    fn create_pit2(&self) -> Result<()> {
        let cfg = kb::kvm_pit_config {
            flags: kb::KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.vm
            .create_pit2(cfg)
            .map_err(|e| err("KVM_CREATE_PIT2", e))
    }
    fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        self.vm
            .set_irq_line(irq, level)
            .map_err(|e| err("KVM_IRQ_LINE", e))
    }
    fn register_irqfd(&self, fd: RawFd, gsi: u32, resample_fd: Option<RawFd>) -> Result<()> {
        let efd = borrow_eventfd(fd);
        match resample_fd {
            Some(r) => {
                let rfd = borrow_eventfd(r);
                self.vm.register_irqfd_with_resample(&efd, &rfd, gsi)
            }
            None => self.vm.register_irqfd(&efd, gsi),
        }
        .map_err(|e| err("KVM_IRQFD", e))
    }
    fn register_ioeventfd(&self, fd: RawFd, ev: &super::IoEvent) -> Result<()> {
        ioevent(&self.vm, fd, ev, true)
    }
    fn unregister_ioeventfd(&self, fd: RawFd, ev: &super::IoEvent) -> Result<()> {
        ioevent(&self.vm, fd, ev, false)
    }
    fn set_gsi_routing(&self, entries: &[super::kvm_abi::kvm_irq_routing_entry]) -> Result<()> {
        let v: Vec<kb::kvm_irq_routing_entry> = entries
            .iter()
            .map(|e| {
                // SAFETY: the same 48-byte layout (gsi, type, flags, pad, 32-byte union).
                unsafe {
                    transmute::<super::kvm_abi::kvm_irq_routing_entry, kb::kvm_irq_routing_entry>(
                        *e,
                    )
                }
            })
            .collect();
        let r = kb::KvmIrqRouting::from_entries(&v)
            .map_err(|_| Error::from_errno("KVM_SET_GSI_ROUTING", libc::E2BIG))?;
        self.vm
            .set_gsi_routing(&r)
            .map_err(|e| err("KVM_SET_GSI_ROUTING", e))
    }
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn super::Vcpu>> {
        let fd = self
            .vm
            .create_vcpu(id as u64)
            .map_err(|e| err("KVM_CREATE_VCPU", e))?;
        Ok(Box::new(Vcpu { fd }))
    }
}

pub struct Vcpu {
    fd: kvm_ioctls::VcpuFd,
}

impl super::Vcpu for Vcpu {
    fn get_regs(&self) -> Result<Regs> {
        let r = self.fd.get_regs().map_err(|e| err("KVM_GET_REGS", e))?;
        // SAFETY: identical layouts (see kvm_abi's differential tests).
        Ok(unsafe { transmute::<kb::kvm_regs, Regs>(r) })
    }
    fn set_regs(&self, regs: &Regs) -> Result<()> {
        // SAFETY: identical layouts.
        let r = unsafe { transmute::<Regs, kb::kvm_regs>(*regs) };
        self.fd.set_regs(&r).map_err(|e| err("KVM_SET_REGS", e))
    }
    fn get_sregs(&self) -> Result<Sregs> {
        let s = self.fd.get_sregs().map_err(|e| err("KVM_GET_SREGS", e))?;
        // SAFETY: identical layouts.
        Ok(unsafe { transmute::<kb::kvm_sregs, Sregs>(s) })
    }
    fn set_sregs(&self, sregs: &Sregs) -> Result<()> {
        // SAFETY: identical layouts.
        let s = unsafe { transmute::<Sregs, kb::kvm_sregs>(*sregs) };
        self.fd.set_sregs(&s).map_err(|e| err("KVM_SET_SREGS", e))
    }
    fn get_fpu(&self) -> Result<Fpu> {
        let f = self.fd.get_fpu().map_err(|e| err("KVM_GET_FPU", e))?;
        // SAFETY: identical layouts.
        Ok(unsafe { transmute::<kb::kvm_fpu, Fpu>(f) })
    }
    fn set_fpu(&self, fpu: &Fpu) -> Result<()> {
        // SAFETY: identical layouts.
        let f = unsafe { transmute::<Fpu, kb::kvm_fpu>(*fpu) };
        self.fd.set_fpu(&f).map_err(|e| err("KVM_SET_FPU", e))
    }
    fn set_cpuid2(&self, entries: &[CpuidEntry]) -> Result<()> {
        // SAFETY: identical layouts.
        let v: Vec<kb::kvm_cpuid_entry2> = entries
            .iter()
            .map(|e| unsafe { transmute::<CpuidEntry, kb::kvm_cpuid_entry2>(*e) })
            .collect();
        let c = kb::CpuId::from_entries(&v)
            .map_err(|_| Error::from_errno("KVM_SET_CPUID2", libc::E2BIG))?;
        self.fd.set_cpuid2(&c).map_err(|e| err("KVM_SET_CPUID2", e))
    }
    fn get_xcr0(&self) -> Result<u64> {
        let x = self.fd.get_xcrs().map_err(|e| err("KVM_GET_XCRS", e))?;
        // SAFETY: identical size and layout (kvm_abi's layout test).
        Ok(super::xcr0_of(&unsafe {
            transmute::<kb::kvm_xcrs, super::kvm_abi::kvm_xcrs>(x)
        }))
    }
    fn set_xcr0(&self, value: u64) -> Result<()> {
        // SAFETY: identical size and layout.
        let x = unsafe {
            transmute::<super::kvm_abi::kvm_xcrs, kb::kvm_xcrs>(super::xcrs_with_xcr0(value))
        };
        self.fd.set_xcrs(&x).map_err(|e| err("KVM_SET_XCRS", e))
    }
    fn get_vcpu_events(&self) -> Result<kvm_vcpu_events> {
        let e = self
            .fd
            .get_vcpu_events()
            .map_err(|e| err("KVM_GET_VCPU_EVENTS", e))?;
        // SAFETY: identical size and layout (see kvm_abi's differential tests).
        Ok(unsafe { transmute::<kb::kvm_vcpu_events, kvm_vcpu_events>(e) })
    }
    fn set_vcpu_events(&self, events: &kvm_vcpu_events) -> Result<()> {
        // SAFETY: identical size and layout.
        let e = unsafe { transmute::<kvm_vcpu_events, kb::kvm_vcpu_events>(*events) };
        self.fd
            .set_vcpu_events(&e)
            .map_err(|e| err("KVM_SET_VCPU_EVENTS", e))
    }
    fn immediate_exit(&mut self) -> *mut u8 {
        &mut self.fd.get_kvm_run().immediate_exit
    }
    fn run(&mut self) -> Result<VcpuExit<'_>> {
        let run_ptr = self.fd.get_kvm_run() as *mut kb::kvm_run;
        use kvm_ioctls::VcpuExit as K;
        match self.fd.run() {
            Ok(K::IoIn(p, d)) => Ok(VcpuExit::IoIn(p, d)),
            Ok(K::IoOut(p, d)) => Ok(VcpuExit::IoOut(p, d)),
            Ok(K::MmioRead(a, d)) => Ok(VcpuExit::MmioRead(a, d)),
            Ok(K::MmioWrite(a, d)) => Ok(VcpuExit::MmioWrite(a, d)),
            Ok(K::Hlt) => Ok(VcpuExit::Hlt),
            Ok(K::Shutdown) => Ok(VcpuExit::Shutdown),
            Ok(K::Intr) => Ok(VcpuExit::Interrupted),
            Ok(K::FailEntry(reason, cpu)) => Ok(VcpuExit::FailEntry { reason, cpu }),
            Ok(K::SystemEvent(kind, _)) => Ok(VcpuExit::SystemEvent { kind }),
            Ok(K::InternalError) => {
                // kvm-ioctls does not surface the internal-error payload; read it from the
                // run page, which KVM filled in before returning.
                // SAFETY: run_ptr is this vCPU's live kvm_run mapping.
                let i = unsafe { (*run_ptr).__bindgen_anon_1.internal };
                let n = (i.ndata as usize).min(i.data.len());
                Ok(VcpuExit::InternalError {
                    suberror: i.suberror,
                    data: i.data[..n].to_vec(),
                })
            }
            Ok(K::Unsupported(r)) => Ok(VcpuExit::Other(r)),
            Ok(_) => {
                // SAFETY: as above.
                let r = unsafe { (*run_ptr).exit_reason };
                debug_assert_ne!(r, KVM_EXIT_INTERNAL_ERROR);
                Ok(VcpuExit::Other(r))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VcpuExit::Interrupted)
            }
            Err(e) => Err(err("KVM_RUN", e)),
        }
    }
}
