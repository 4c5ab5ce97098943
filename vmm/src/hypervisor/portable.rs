//! The in-house KVM backend: raw ioctls on `/dev/kvm`, for every host including i686.
//!
//! This is the portable half of the 32-bit layer (DESIGN.md): the same operations the
//! rust-vmm backend offers, written against [`super::kvm_abi`] so that a 32-bit process can
//! drive KVM through the kernel's compat path.

use super::kvm_abi::*;
use super::{decode_exit, CpuidEntry, Error, Fpu, Regs, Result, Sregs, VcpuExit};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

fn ioctl_raw(fd: RawFd, req: u32, arg: usize) -> i32 {
    // SAFETY: callers pass a request whose argument matches `arg` (a value or a pointer to a
    // correctly sized, live object), as <linux/kvm.h> defines it.
    unsafe { libc::ioctl(fd, req as _, arg) }
}

fn ioctl_ok(fd: RawFd, req: u32, arg: usize, op: &'static str) -> Result<i32> {
    let r = ioctl_raw(fd, req, arg);
    if r < 0 {
        Err(Error::last(op))
    } else {
        Ok(r)
    }
}

/// A buffer holding a KVM "flexible array" struct: an 8-byte header then `n` entries.
struct FamBuf<E: Copy + Default> {
    words: Vec<u64>,
    _marker: std::marker::PhantomData<E>,
}

impl<E: Copy + Default> FamBuf<E> {
    fn new(n: usize) -> Self {
        let bytes = 8 + n * std::mem::size_of::<E>();
        let mut words = vec![0u64; bytes.div_ceil(8)];
        words[0] = n as u64; // first u32 (little endian) is the count
        FamBuf {
            words,
            _marker: std::marker::PhantomData,
        }
    }
    fn from_slice(entries: &[E]) -> Self {
        let mut b = Self::new(entries.len());
        b.entries_mut().copy_from_slice(entries);
        b
    }
    fn count(&self) -> usize {
        (self.words[0] & 0xffff_ffff) as usize
    }
    fn capacity(&self) -> usize {
        (self.words.len() * 8 - 8) / std::mem::size_of::<E>()
    }
    fn entries_mut(&mut self) -> &mut [E] {
        let n = self.count().min(self.capacity());
        // SAFETY: the buffer holds `capacity` entries after the 8-byte header, u64-aligned,
        // and E is a plain-old-data KVM struct.
        unsafe {
            std::slice::from_raw_parts_mut((self.words.as_mut_ptr() as *mut u8).add(8) as *mut E, n)
        }
    }
    fn ptr(&mut self) -> usize {
        self.words.as_mut_ptr() as usize
    }
}

/// `/dev/kvm`.
pub struct Kvm {
    fd: File,
    run_size: usize,
}

impl Kvm {
    pub fn open() -> std::result::Result<Self, super::OpenError> {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/kvm")?;
        let version = ioctl_raw(fd.as_raw_fd(), KVM_GET_API_VERSION, 0);
        if version != 12 {
            return Err(super::OpenError::ApiVersion(version));
        }
        let run_size = ioctl_raw(fd.as_raw_fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
        if run_size <= 0 {
            return Err(super::OpenError::Other(std::io::Error::last_os_error()));
        }
        Ok(Kvm {
            fd,
            run_size: run_size as usize,
        })
    }
}

impl super::Hypervisor for Kvm {
    fn api_version(&self) -> i32 {
        ioctl_raw(self.fd.as_raw_fd(), KVM_GET_API_VERSION, 0)
    }
    fn check_extension(&self, cap: u32) -> i32 {
        ioctl_raw(self.fd.as_raw_fd(), KVM_CHECK_EXTENSION, cap as usize).max(0)
    }
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        let mut buf = FamBuf::<kvm_cpuid_entry2>::new(KVM_MAX_CPUID_ENTRIES);
        ioctl_ok(
            self.fd.as_raw_fd(),
            KVM_GET_SUPPORTED_CPUID,
            buf.ptr(),
            "KVM_GET_SUPPORTED_CPUID",
        )?;
        Ok(buf.entries_mut().to_vec())
    }
    fn create_vm(&self) -> Result<Box<dyn super::Vm>> {
        // Retry on EINTR: VM creation can be interrupted on a busy host.
        let fd = loop {
            let r = ioctl_raw(self.fd.as_raw_fd(), KVM_CREATE_VM, 0);
            if r >= 0 {
                break r;
            }
            let e = Error::last("KVM_CREATE_VM");
            if !e.is_interrupted() {
                return Err(e);
            }
        };
        // SAFETY: KVM_CREATE_VM returned a new file descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Box::new(Vm {
            fd: Arc::new(fd),
            run_size: self.run_size,
        }))
    }
}

/// A VM file descriptor.
pub struct Vm {
    fd: Arc<OwnedFd>,
    run_size: usize,
}

impl Vm {
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Vm {
    /// KVM_IOEVENTFD, assigning or (`deassign`) removing the registration `ev` of `fd`.
    fn ioeventfd(&self, fd: RawFd, ev: &super::IoEvent, deassign: bool) -> Result<()> {
        const DATAMATCH: u32 = 1 << 0;
        const PIO: u32 = 1 << 1;
        const DEASSIGN: u32 = 1 << 2;
        let mut flags = 0;
        if ev.datamatch.is_some() {
            flags |= DATAMATCH;
        }
        if ev.pio {
            flags |= PIO;
        }
        if deassign {
            flags |= DEASSIGN;
        }
        let req = kvm_ioeventfd {
            datamatch: ev.datamatch.unwrap_or(0),
            addr: ev.addr,
            len: ev.len,
            fd,
            flags,
            ..Default::default()
        };
        ioctl_ok(
            self.raw(),
            KVM_IOEVENTFD,
            &req as *const _ as usize,
            "KVM_IOEVENTFD",
        )
        .map(|_| ())
    }
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
        let region = kvm_userspace_memory_region {
            slot,
            flags: if readonly { 2 } else { 0 }, // KVM_MEM_READONLY
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        ioctl_ok(
            self.raw(),
            KVM_SET_USER_MEMORY_REGION,
            &region as *const _ as usize,
            "KVM_SET_USER_MEMORY_REGION",
        )?;
        Ok(())
    }
    fn set_tss_address(&self, addr: u64) -> Result<()> {
        let addr = usize::try_from(addr)
            .map_err(|_| Error::from_errno("KVM_SET_TSS_ADDR", libc::EINVAL))?;
        ioctl_ok(self.raw(), KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR").map(|_| ())
    }
    fn set_identity_map_address(&self, addr: u64) -> Result<()> {
        ioctl_ok(
            self.raw(),
            KVM_SET_IDENTITY_MAP_ADDR,
            &addr as *const u64 as usize,
            "KVM_SET_IDENTITY_MAP_ADDR",
        )
        .map(|_| ())
    }
    fn create_irq_chip(&self) -> Result<()> {
        ioctl_ok(self.raw(), KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP").map(|_| ())
    }
    fn create_pit2(&self) -> Result<()> {
        let cfg = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        ioctl_ok(
            self.raw(),
            KVM_CREATE_PIT2,
            &cfg as *const _ as usize,
            "KVM_CREATE_PIT2",
        )
        .map(|_| ())
    }
    fn set_irq_line(&self, irq: u32, level: bool) -> Result<()> {
        let l = kvm_irq_level {
            irq,
            level: level as u32,
        };
        ioctl_ok(
            self.raw(),
            KVM_IRQ_LINE,
            &l as *const _ as usize,
            "KVM_IRQ_LINE",
        )
        .map(|_| ())
    }
    fn register_irqfd(&self, fd: RawFd, gsi: u32, resample_fd: Option<RawFd>) -> Result<()> {
        let req = kvm_irqfd {
            fd: fd as u32,
            gsi,
            flags: if resample_fd.is_some() { 2 } else { 0 }, // KVM_IRQFD_FLAG_RESAMPLE
            resamplefd: resample_fd.unwrap_or(0) as u32,
            pad: [0; 16],
        };
        ioctl_ok(
            self.raw(),
            KVM_IRQFD,
            &req as *const _ as usize,
            "KVM_IRQFD",
        )
        .map(|_| ())
    }
    fn register_ioeventfd(&self, fd: RawFd, ev: &super::IoEvent) -> Result<()> {
        self.ioeventfd(fd, ev, false)
    }
    fn unregister_ioeventfd(&self, fd: RawFd, ev: &super::IoEvent) -> Result<()> {
        self.ioeventfd(fd, ev, true)
    }
    fn set_gsi_routing(&self, entries: &[kvm_irq_routing_entry]) -> Result<()> {
        // struct kvm_irq_routing: nr, flags, then the entries (8-byte aligned).
        let mut buf = FamBuf::<kvm_irq_routing_entry>::from_slice(entries);
        ioctl_ok(
            self.raw(),
            KVM_SET_GSI_ROUTING,
            buf.ptr(),
            "KVM_SET_GSI_ROUTING",
        )
        .map(|_| ())
    }
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn super::Vcpu>> {
        let fd = ioctl_ok(self.raw(), KVM_CREATE_VCPU, id as usize, "KVM_CREATE_VCPU")?;
        // SAFETY: KVM_CREATE_VCPU returned a new descriptor that we own from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: mapping the vCPU fd at offset 0 with the size KVM reported is how the
        // kvm_run page is obtained; the result is checked before use.
        let run = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                self.run_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if run == libc::MAP_FAILED {
            return Err(Error::last("mmap kvm_run"));
        }
        Ok(Box::new(Vcpu {
            fd,
            run: run as *mut u8,
            run_size: self.run_size,
            _vm: self.fd.clone(),
        }))
    }
}

/// A vCPU file descriptor and its mapped `kvm_run` page.
pub struct Vcpu {
    fd: OwnedFd,
    run: *mut u8,
    run_size: usize,
    _vm: Arc<OwnedFd>,
}

// SAFETY: the kvm_run mapping belongs to this vCPU alone and is only touched through &mut self
// (run) or a single byte store to immediate_exit (from the kick signal handler on the vCPU
// thread itself), which KVM documents as safe from a signal.
unsafe impl Send for Vcpu {}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in create_vcpu.
        unsafe { libc::munmap(self.run as *mut libc::c_void, self.run_size) };
    }
}

impl Vcpu {
    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    fn get<T: Default>(&self, req: u32, op: &'static str) -> Result<T> {
        let mut v = T::default();
        ioctl_ok(self.raw(), req, &mut v as *mut T as usize, op)?;
        Ok(v)
    }
    fn set<T>(&self, req: u32, v: &T, op: &'static str) -> Result<()> {
        ioctl_ok(self.raw(), req, v as *const T as usize, op).map(|_| ())
    }
}

impl super::Vcpu for Vcpu {
    fn get_regs(&self) -> Result<Regs> {
        self.get(KVM_GET_REGS, "KVM_GET_REGS")
    }
    fn set_regs(&self, regs: &Regs) -> Result<()> {
        self.set(KVM_SET_REGS, regs, "KVM_SET_REGS")
    }
    fn get_sregs(&self) -> Result<Sregs> {
        self.get(KVM_GET_SREGS, "KVM_GET_SREGS")
    }
    fn set_sregs(&self, sregs: &Sregs) -> Result<()> {
        self.set(KVM_SET_SREGS, sregs, "KVM_SET_SREGS")
    }
    fn get_fpu(&self) -> Result<Fpu> {
        self.get(KVM_GET_FPU, "KVM_GET_FPU")
    }
    fn set_fpu(&self, fpu: &Fpu) -> Result<()> {
        self.set(KVM_SET_FPU, fpu, "KVM_SET_FPU")
    }
    fn set_cpuid2(&self, entries: &[CpuidEntry]) -> Result<()> {
        let mut buf = FamBuf::from_slice(entries);
        ioctl_ok(self.raw(), KVM_SET_CPUID2, buf.ptr(), "KVM_SET_CPUID2").map(|_| ())
    }
    fn get_xcr0(&self) -> Result<u64> {
        let x: super::kvm_abi::kvm_xcrs = self.get(super::kvm_abi::KVM_GET_XCRS, "KVM_GET_XCRS")?;
        Ok(super::xcr0_of(&x))
    }
    fn set_xcr0(&self, value: u64) -> Result<()> {
        self.set(
            super::kvm_abi::KVM_SET_XCRS,
            &super::xcrs_with_xcr0(value),
            "KVM_SET_XCRS",
        )
    }
    fn get_vcpu_events(&self) -> Result<kvm_vcpu_events> {
        self.get(KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS")
    }
    fn set_vcpu_events(&self, events: &kvm_vcpu_events) -> Result<()> {
        self.set(KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS")
    }
    fn immediate_exit(&mut self) -> *mut u8 {
        // SAFETY: immediate_exit is the byte at offset 1 of the kvm_run page (size-asserted in
        // kvm_abi), inside the live mapping.
        unsafe {
            self.run
                .add(std::mem::offset_of!(kvm_run_head, immediate_exit))
        }
    }
    fn run(&mut self) -> Result<VcpuExit<'_>> {
        if ioctl_raw(self.raw(), KVM_RUN, 0) < 0 {
            let e = Error::last("KVM_RUN");
            if e.is_interrupted() {
                return Ok(VcpuExit::Interrupted);
            }
            return Err(e);
        }
        // SAFETY: `run` is this vCPU's live kvm_run mapping of `run_size` bytes, and the
        // returned borrows are tied to &mut self so no second KVM_RUN can overlap them.
        Ok(unsafe { decode_exit(self.run, self.run_size) })
    }
}
