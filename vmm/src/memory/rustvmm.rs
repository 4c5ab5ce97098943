//! Guest memory through vm-memory's `GuestMemoryMmap` (x86_64 hosts).

use super::{GuestMemory, OutOfRange, Region, Result};
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

pub struct VmMemory {
    mem: GuestMemoryMmap<()>,
    /// vm-memory's regions, listed once for [`GuestMemory::regions`].
    regions: Vec<Region>,
}

impl VmMemory {
    pub fn new(ranges: &[(u64, u64)]) -> std::io::Result<Self> {
        let r = ranges
            .iter()
            .map(|&(g, s)| {
                let s = usize::try_from(s).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "guest RAM range too large for this host",
                    )
                })?;
                Ok((GuestAddress(g), s))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mem = GuestMemoryMmap::from_ranges(&r)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let regions = mem
            .iter()
            .map(|r| Region {
                gpa: r.start_addr().0,
                size: r.len(),
                host_addr: r.as_ptr() as u64,
            })
            .collect();
        Ok(VmMemory { mem, regions })
    }
}

impl VmMemory {
    /// The region holding all of `[gpa, gpa+len)` and the offset there: nearly every access
    /// lies in one region, and vm-memory's region-level copy skips its multi-region iterator.
    fn within_one_region(
        &self,
        gpa: u64,
        len: usize,
    ) -> Option<(&GuestRegionMmap<()>, MemoryRegionAddress)> {
        let (region, at) = self.mem.to_region_addr(GuestAddress(gpa))?;
        let end = at.0.checked_add(len as u64)?;
        (end <= region.len()).then_some((region, at))
    }
}

impl GuestMemory for VmMemory {
    fn as_vm_memory(&self) -> Option<&GuestMemoryMmap<()>> {
        Some(&self.mem)
    }
    fn regions(&self) -> &[Region] {
        &self.regions
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        // Check first so that a failing access changes nothing, as the portable backend does.
        if let Some((region, at)) = self.within_one_region(gpa, buf.len()) {
            return region.read_slice(buf, at).map_err(|_| OutOfRange {
                addr: gpa,
                len: buf.len(),
            });
        }
        if !self.contains(gpa, buf.len() as u64) {
            return Err(OutOfRange {
                addr: gpa,
                len: buf.len(),
            });
        }
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| OutOfRange {
                addr: gpa,
                len: buf.len(),
            })
    }
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        if let Some((region, at)) = self.within_one_region(gpa, buf.len()) {
            return region.write_slice(buf, at).map_err(|_| OutOfRange {
                addr: gpa,
                len: buf.len(),
            });
        }
        if !self.contains(gpa, buf.len() as u64) {
            return Err(OutOfRange {
                addr: gpa,
                len: buf.len(),
            });
        }
        self.mem
            .write_slice(buf, GuestAddress(gpa))
            .map_err(|_| OutOfRange {
                addr: gpa,
                len: buf.len(),
            })
    }
}
