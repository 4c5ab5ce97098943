//! vm-memory's `GuestMemory` over fugu's guest RAM, for rust-vmm's virtio-queue (x86_64
//! hosts). Every ring access virtio-queue makes resolves here with one comparison against
//! the (one or two) RAM regions and a volatile slice at the host address, where
//! `GuestMemoryMmap` searched its list of reference-counted regions and built the slice
//! through two more lookups: most of the device's own cost per virtio-blk request.

use super::{GuestMemory as FuguMemory, Region};
use std::iter::FusedIterator;
use std::sync::Arc;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{
    GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryMmap, GuestMemoryResult, Permissions,
    VolatileSlice,
};

/// Guest RAM as vm-memory sees it; holds the memory whose mappings it points into.
pub struct VmView {
    regions: Vec<Region>,
    _mem: Arc<dyn FuguMemory>,
}

impl VmView {
    pub fn new(mem: Arc<dyn FuguMemory>) -> Self {
        VmView {
            regions: mem.regions().to_vec(),
            _mem: mem,
        }
    }
}

impl GuestMemory for VmView {
    // Never handed out (`physical_memory` stays None): the view has no backend object.
    type PhysicalMemory = GuestMemoryMmap<()>;
    type Bitmap = ();

    fn check_range(&self, addr: GuestAddress, count: usize, _access: Permissions) -> bool {
        Slices::new(&self.regions, addr.0, count).all(|s| s.is_ok())
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        _access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, ()>> {
        Ok(Slices::new(&self.regions, addr.0, count))
    }
}

/// The pieces of `[addr, addr+left)`, region by region; an error at the first byte outside
/// RAM ends the iteration.
struct Slices<'a> {
    regions: &'a [Region],
    addr: u64,
    left: usize,
}

impl<'a> Slices<'a> {
    fn new(regions: &'a [Region], addr: u64, left: usize) -> Self {
        Slices {
            regions,
            addr,
            left,
        }
    }

    fn fail(&mut self) -> Option<GuestMemoryResult<VolatileSlice<'a>>> {
        self.left = 0;
        Some(Err(GuestMemoryError::InvalidGuestAddress(GuestAddress(
            self.addr,
        ))))
    }
}

impl<'a> Iterator for Slices<'a> {
    type Item = GuestMemoryResult<VolatileSlice<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let at = self.addr;
        let Some(r) = self
            .regions
            .iter()
            .find(|r| at >= r.gpa && at - r.gpa < r.size)
        else {
            return self.fail();
        };
        let off = at - r.gpa;
        let n = usize::try_from(r.size - off)
            .unwrap_or(usize::MAX)
            .min(self.left);
        let Some(host) = r
            .host_addr
            .checked_add(off)
            .and_then(|h| usize::try_from(h).ok())
        else {
            return self.fail();
        };
        // n is at most `left`, a usize.
        let Some(next) = at.checked_add(n as u64) else {
            return self.fail();
        };
        self.addr = next;
        self.left -= n;
        // SAFETY: `[host, host+n)` lies inside one region, a live mapping of guest RAM that
        // `VmView` keeps alive for the slice's lifetime; guest RAM is only accessed through
        // volatile or atomic operations.
        Some(Ok(unsafe { VolatileSlice::new(host as *mut u8, n) }))
    }
}

impl FusedIterator for Slices<'_> {}

impl<'a> GuestMemorySliceIterator<'a, ()> for Slices<'a> {}
