//! The backend seam: which implementation serves each project-owned interface. Chosen here,
//! together, and nowhere else.
//!
//! | interface | [`Backend::RustVmm`] (x86_64 hosts) | [`Backend::Portable`] (every host) |
//! |---|---|---|
//! | hypervisor ([`crate::hypervisor`]) | kvm-ioctls / kvm-bindings | raw KVM ioctls over [`crate::hypervisor::kvm_abi`] |
//! | guest memory ([`crate::memory`]) | vm-memory `GuestMemoryMmap` | in-house mmap regions |
//! | virtqueues ([`crate::devices::virtio::queue`]) | virtio-queue | the in-house split ring |
//! | bzImage kernel loader ([`crate::boot::linux`]) | linux-loader | in-house |
//!
//! The kernel loader follows the memory: `boot::linux` uses linux-loader exactly when the
//! memory is vm-memory's (`GuestMemory::as_vm_memory`), which only [`Backend::memory`] of
//! `RustVmm` makes (checked by a test below).
//!
//! **The rust-vmm side is the oracle of the in-house side.** The in-house layer exists because
//! rust-vmm does not build for i686 (DESIGN.md, "32-bit hosts"); it adds no capability. The
//! differential tests hold it to rust-vmm's results on the same inputs: ABI layouts and ioctl
//! numbers (hypervisor/kvm_abi.rs), one real-mode script on both hypervisor backends
//! (hypervisor/tests.rs), random rings through both queues (devices/virtio/queue/tests.rs),
//! bzImage loading (boot/linux.rs), and every device test runs on every memory × queue pair
//! (devices/virtio/testutil.rs). When the two disagree, the in-house side is presumed wrong.

use crate::devices::virtio::queue::QueueImpl;
use crate::hypervisor::{self, Hypervisor, OpenError};
use crate::memory::{self, GuestMemory};
use std::sync::Arc;

/// Which implementations to use (`fugu run --backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// rust-vmm: kvm-ioctls, vm-memory, virtio-queue, linux-loader (x86_64 hosts).
    RustVmm,
    /// The in-house layer (all hosts; the only one on i686).
    Portable,
}

impl Backend {
    /// rust-vmm where it builds, the in-house layer elsewhere.
    pub fn host_default() -> Self {
        if cfg!(target_arch = "x86_64") {
            Backend::RustVmm
        } else {
            Backend::Portable
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::RustVmm => "rust-vmm",
            Backend::Portable => "portable",
        }
    }

    /// Open `/dev/kvm`.
    pub fn hypervisor(self) -> Result<Box<dyn Hypervisor>, OpenError> {
        match self {
            Backend::Portable => Ok(Box::new(hypervisor::portable::Kvm::open()?)),
            #[cfg(target_arch = "x86_64")]
            Backend::RustVmm => Ok(Box::new(hypervisor::rustvmm::Kvm::open()?)),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::RustVmm => Err(OpenError::Unsupported(
                "the rust-vmm backend is built for x86_64 hosts only; use --backend portable",
            )),
        }
    }

    /// The most guest RAM this build can map: a 32-bit fugu maps it into its own 4 GiB
    /// address space (next to its code, heap and stacks); None where the host limits it.
    pub fn max_guest_ram() -> Option<u64> {
        cfg!(target_pointer_width = "32").then_some(3 << 30)
    }

    /// Allocate guest RAM for `ranges` (gpa, size).
    pub fn memory(self, ranges: &[(u64, u64)]) -> std::io::Result<Arc<dyn GuestMemory>> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::RustVmm => Ok(Arc::new(memory::rustvmm::VmMemory::new(ranges)?)),
            _ => Ok(Arc::new(memory::portable::MmapMemory::new(ranges)?)),
        }
    }

    /// The ring implementation of the virtio devices.
    pub fn queues(self) -> QueueImpl {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::RustVmm => QueueImpl::RustVmm,
            _ => QueueImpl::InHouse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_loader_follows_the_memory() {
        let portable = Backend::Portable.memory(&[(0, 1 << 20)]).unwrap();
        #[cfg(target_arch = "x86_64")]
        {
            assert!(portable.as_vm_memory().is_none());
            let rustvmm = Backend::RustVmm.memory(&[(0, 1 << 20)]).unwrap();
            assert!(rustvmm.as_vm_memory().is_some());
            assert_eq!(Backend::RustVmm.queues(), QueueImpl::RustVmm);
        }
        assert_eq!(portable.regions().len(), 1);
        assert_eq!(Backend::Portable.queues(), QueueImpl::InHouse);
    }
}
