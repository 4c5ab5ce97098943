//! The hypervisor interface the rest of fugu is written against.
//!
//! Two backends implement it: [`rustvmm`] (kvm-ioctls, x86_64 hosts only; the oracle) and
//! [`portable`] (the in-house layer over raw KVM ioctls, every host including i686). Types are
//! the ABI structs of [`kvm_abi`], so both backends speak the same language. Which one runs is
//! chosen in [`crate::backend`], with the memory and queue implementations that go with it.
//! The traits hold what fugu calls, nothing more.

pub mod kvm_abi;
pub mod portable;
#[cfg(target_arch = "x86_64")]
pub mod rustvmm;

use std::fmt;
use std::os::fd::RawFd;

pub use kvm_abi::{
    kvm_cpuid_entry2 as CpuidEntry, kvm_fpu as Fpu, kvm_regs as Regs, kvm_segment as Segment,
    kvm_sregs as Sregs,
};

/// A failed KVM operation: what was attempted and the OS error.
#[derive(Debug)]
pub struct Error {
    pub op: &'static str,
    pub source: std::io::Error,
}

impl Error {
    pub fn last(op: &'static str) -> Self {
        Error {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
    pub fn from_errno(op: &'static str, errno: i32) -> Self {
        Error {
            op,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }
    /// True when the call was interrupted by a signal (KVM_RUN returns EINTR for kicks).
    pub fn is_interrupted(&self) -> bool {
        self.source.raw_os_error() == Some(libc::EINTR)
            || self.source.raw_os_error() == Some(libc::EAGAIN)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Why a vCPU returned to userspace. Data slices point into the vCPU's shared run page.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    IoIn(u16, &'a mut [u8]),
    IoOut(u16, &'a [u8]),
    MmioRead(u64, &'a mut [u8]),
    MmioWrite(u64, &'a [u8]),
    Hlt,
    Shutdown,
    /// KVM could not handle something itself: the suberror and the data words it reported
    /// (for emulation failures these include the instruction bytes).
    InternalError {
        suberror: u32,
        data: Vec<u64>,
    },
    FailEntry {
        reason: u64,
        cpu: u32,
    },
    SystemEvent {
        kind: u32,
    },
    /// KVM_RUN returned because of a signal or `immediate_exit`.
    Interrupted,
    Other(u32),
}

/// A KVM system handle (`/dev/kvm`).
pub trait Hypervisor: Send + Sync {
    fn api_version(&self) -> i32;
    fn check_extension(&self, cap: u32) -> i32;
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>>;
    fn create_vm(&self) -> Result<Box<dyn Vm>>;
}

/// A guest write KVM turns into an eventfd signal (KVM_IOEVENTFD): `len` bytes at `addr` in
/// port or memory space, and with `datamatch` only writes of that value (the legacy virtio
/// notify register, shared by every queue, is told apart by the queue number written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoEvent {
    pub addr: u64,
    pub len: u32,
    pub pio: bool,
    pub datamatch: Option<u64>,
}

/// A KVM virtual machine.
pub trait Vm: Send + Sync {
    /// Map `size` bytes of this process at `host_addr` into the guest at `gpa`.
    ///
    /// # Safety
    /// The host range must stay mapped and valid for the lifetime of the VM.
    unsafe fn set_user_memory_region(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
        readonly: bool,
    ) -> Result<()>;
    fn set_tss_address(&self, addr: u64) -> Result<()>;
    fn set_identity_map_address(&self, addr: u64) -> Result<()>;
    fn create_irq_chip(&self) -> Result<()>;
    fn create_pit2(&self) -> Result<()>;
    fn set_irq_line(&self, irq: u32, level: bool) -> Result<()>;
    fn register_irqfd(&self, fd: RawFd, gsi: u32, resample_fd: Option<RawFd>) -> Result<()>;
    /// Let KVM signal `fd` for guest writes that match `ev`, without leaving the kernel.
    fn register_ioeventfd(&self, fd: RawFd, ev: &IoEvent) -> Result<()>;
    /// Remove a registration made with the same `fd` and `ev`.
    fn unregister_ioeventfd(&self, fd: RawFd, ev: &IoEvent) -> Result<()>;
    /// Replace the whole GSI routing table (KVM_SET_GSI_ROUTING): the caller includes the
    /// irqchip routes it wants to keep.
    fn set_gsi_routing(&self, entries: &[kvm_abi::kvm_irq_routing_entry]) -> Result<()> {
        let _ = entries;
        Err(Error::from_errno("KVM_SET_GSI_ROUTING", libc::ENOSYS))
    }
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>>;
}

/// XCR0 in a KVM_GET_XCRS answer (0 when KVM lists none).
pub fn xcr0_of(x: &kvm_abi::kvm_xcrs) -> u64 {
    let n = usize::try_from(x.nr_xcrs).unwrap_or(0).min(x.xcrs.len());
    x.xcrs[..n]
        .iter()
        .find(|r| r.xcr == 0)
        .map_or(0, |r| r.value)
}

/// The KVM_SET_XCRS argument that sets XCR0 to `value`.
pub fn xcrs_with_xcr0(value: u64) -> kvm_abi::kvm_xcrs {
    let mut x = kvm_abi::kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    x.xcrs[0].value = value;
    x
}

/// A KVM virtual CPU. Used from one thread at a time.
pub trait Vcpu: Send {
    fn get_regs(&self) -> Result<Regs>;
    fn set_regs(&self, regs: &Regs) -> Result<()>;
    fn get_sregs(&self) -> Result<Sregs>;
    fn set_sregs(&self, sregs: &Sregs) -> Result<()>;
    fn get_fpu(&self) -> Result<Fpu>;
    fn set_fpu(&self, fpu: &Fpu) -> Result<()>;
    fn set_cpuid2(&self, entries: &[CpuidEntry]) -> Result<()>;
    /// The guest's XCR0 (KVM_GET_XCRS).
    fn get_xcr0(&self) -> Result<u64>;
    /// Set the guest's XCR0 (KVM_SET_XCRS: KVM refuses values the guest's CPUID forbids).
    fn set_xcr0(&self, value: u64) -> Result<()>;
    fn get_vcpu_events(&self) -> Result<kvm_abi::kvm_vcpu_events>;
    fn set_vcpu_events(&self, events: &kvm_abi::kvm_vcpu_events) -> Result<()>;
    /// The `immediate_exit` byte of this vCPU's `kvm_run` page: while it is non-zero KVM_RUN
    /// returns EINTR at once. Valid as long as the vCPU lives; the kick signal's handler sets
    /// it (signals::arm_kick), so a kick that lands just before KVM_RUN is not lost.
    fn immediate_exit(&mut self) -> *mut u8;
    fn run(&mut self) -> Result<VcpuExit<'_>>;
}

/// Opening /dev/kvm failed; the message says what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("/dev/kvm does not exist: load kvm_intel, kvm_amd or kvm_pvm (is this host virtualized without nested KVM?)")]
    Missing,
    #[error("permission denied opening /dev/kvm: run as root or add yourself to the 'kvm' group")]
    Permission,
    #[error("opening /dev/kvm: {0}")]
    Other(std::io::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => OpenError::Missing,
            std::io::ErrorKind::PermissionDenied => OpenError::Permission,
            _ => OpenError::Other(e),
        }
    }
}

/// Exit reasons decoded from a raw `kvm_run` page: the in-house backend's decoder. The
/// rust-vmm backend decodes through kvm-ioctls instead (its oracle); hypervisor/tests.rs runs
/// one guest script on both and demands the same exits.
///
/// # Safety
/// `run` must point to a live, mapped `kvm_run` page of at least `run_size` bytes.
pub(crate) unsafe fn decode_exit<'a>(run: *mut u8, run_size: usize) -> VcpuExit<'a> {
    use kvm_abi::*;
    let head = std::ptr::read_volatile(run as *const kvm_run_head);
    let union = run.add(KVM_RUN_EXIT_UNION);
    match head.exit_reason {
        KVM_EXIT_IO => {
            let io = std::ptr::read_volatile(union as *const kvm_run_io);
            let len = io.size as usize * io.count as usize;
            // A corrupted offset must not make us read outside the page (nor wrap on i686).
            let Ok(off) = usize::try_from(io.data_offset) else {
                return VcpuExit::Other(KVM_EXIT_IO);
            };
            if off.checked_add(len).is_none_or(|end| end > run_size) || len == 0 {
                return VcpuExit::Other(KVM_EXIT_IO);
            }
            let data = std::slice::from_raw_parts_mut(run.add(off), len);
            if io.direction == KVM_EXIT_IO_OUT {
                VcpuExit::IoOut(io.port, data)
            } else {
                VcpuExit::IoIn(io.port, data)
            }
        }
        KVM_EXIT_MMIO => {
            let mmio = union as *mut kvm_run_mmio;
            let len = ((*mmio).len as usize).min(8);
            let data = std::slice::from_raw_parts_mut((*mmio).data.as_mut_ptr(), len);
            if (*mmio).is_write != 0 {
                VcpuExit::MmioWrite((*mmio).phys_addr, data)
            } else {
                VcpuExit::MmioRead((*mmio).phys_addr, data)
            }
        }
        KVM_EXIT_HLT => VcpuExit::Hlt,
        KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
        KVM_EXIT_INTR => VcpuExit::Interrupted,
        KVM_EXIT_FAIL_ENTRY => {
            let f = std::ptr::read_volatile(union as *const kvm_run_fail_entry);
            VcpuExit::FailEntry {
                reason: f.hardware_entry_failure_reason,
                cpu: f.cpu,
            }
        }
        KVM_EXIT_INTERNAL_ERROR => {
            let i = std::ptr::read_volatile(union as *const kvm_run_internal);
            let n = (i.ndata as usize).min(i.data.len());
            VcpuExit::InternalError {
                suberror: i.suberror,
                data: i.data[..n].to_vec(),
            }
        }
        KVM_EXIT_SYSTEM_EVENT => {
            let e = std::ptr::read_volatile(union as *const kvm_run_system_event);
            VcpuExit::SystemEvent { kind: e.type_ }
        }
        other => VcpuExit::Other(other),
    }
}

#[cfg(test)]
mod tests;
