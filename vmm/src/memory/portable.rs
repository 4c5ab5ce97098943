//! In-house guest memory: anonymous private mappings, one per RAM range. Builds on i686.

use super::{GuestMemory, OutOfRange, Region, Result};

struct Mapping {
    gpa: u64,
    size: usize,
    ptr: *mut u8,
}

/// Guest RAM backed by anonymous mmap regions.
pub struct MmapMemory {
    maps: Vec<Mapping>,
    /// The same ranges as `maps`, for [`GuestMemory::regions`].
    regions: Vec<Region>,
}

// SAFETY: the mappings live as long as the struct and are only accessed through bounds-checked
// copies; guest memory is shared with vCPUs by design, like vm-memory's volatile slices.
unsafe impl Send for MmapMemory {}
// SAFETY: as for Send: shared access only copies through bounds-checked chunks.
unsafe impl Sync for MmapMemory {}

impl MmapMemory {
    /// Map each `(gpa, size)` range. Ranges must not overlap; sizes must fit this process.
    pub fn new(ranges: &[(u64, u64)]) -> std::io::Result<Self> {
        let mut sorted = ranges.to_vec();
        sorted.sort();
        for w in sorted.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "guest RAM ranges overlap",
                ));
            }
        }
        let mut maps = Vec::new();
        for &(gpa, size) in &sorted {
            let size = usize::try_from(size)
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "guest RAM range too large for this host",
                    )
                })?;
            // SAFETY: a fresh anonymous mapping; the result is checked.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            maps.push(Mapping {
                gpa,
                size,
                ptr: ptr as *mut u8,
            });
        }
        let regions = maps
            .iter()
            .map(|m| Region {
                gpa: m.gpa,
                size: m.size as u64,
                host_addr: m.ptr as usize as u64,
            })
            .collect();
        Ok(MmapMemory { maps, regions })
    }

    /// Walk `[gpa, gpa+len)` region by region, calling `f(host_ptr, offset_in_buf, chunk_len)`.
    /// The whole range is checked first, so that a failing access changes nothing: two walks
    /// over the (two or three) regions instead of a plan, so an access allocates nothing.
    fn for_each_chunk(
        &self,
        gpa: u64,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<()> {
        let err = OutOfRange { addr: gpa, len };
        let end = gpa.checked_add(len as u64).ok_or(err.clone())?;
        // Nearly every access lies inside one mapping: one lookup, one call.
        if let Some(m) = self
            .maps
            .iter()
            .find(|m| gpa >= m.gpa && end <= m.gpa + m.size as u64)
        {
            // Below m.size, so it fits a usize.
            let off = usize::try_from(gpa - m.gpa).map_err(|_| err.clone())?;
            // SAFETY: off + len <= m.size, inside the mapping.
            f(unsafe { m.ptr.add(off) }, 0, len);
            return Ok(());
        }
        self.walk(gpa, len, |_, _, _| {}).ok_or(err.clone())?;
        self.walk(gpa, len, f).ok_or(err)
    }

    /// One walk of [`Self::for_each_chunk`]; None at the first byte outside RAM.
    fn walk(&self, gpa: u64, len: usize, mut f: impl FnMut(*mut u8, usize, usize)) -> Option<()> {
        let mut done = 0usize;
        while done < len {
            let at = gpa + done as u64;
            let m = self
                .maps
                .iter()
                .find(|m| at >= m.gpa && at - m.gpa < m.size as u64)?;
            // Below m.size, so it fits a usize.
            let off = usize::try_from(at - m.gpa).ok()?;
            let n = (m.size - off).min(len - done);
            // SAFETY: off + n <= m.size, inside the mapping.
            f(unsafe { m.ptr.add(off) }, done, n);
            done += n;
        }
        Some(())
    }
}

impl Drop for MmapMemory {
    fn drop(&mut self) {
        for m in &self.maps {
            // SAFETY: unmapping exactly what new() mapped.
            unsafe { libc::munmap(m.ptr as *mut libc::c_void, m.size) };
        }
    }
}

impl GuestMemory for MmapMemory {
    fn regions(&self) -> &[Region] {
        &self.regions
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let dst = buf.as_mut_ptr();
        // SAFETY: each chunk is inside a mapping and inside `buf`.
        self.for_each_chunk(gpa, buf.len(), |p, o, n| unsafe {
            std::ptr::copy_nonoverlapping(p, dst.add(o), n)
        })
    }
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        let src = buf.as_ptr();
        // SAFETY: each chunk is inside a mapping and inside `buf`.
        self.for_each_chunk(gpa, buf.len(), |p, o, n| unsafe {
            std::ptr::copy_nonoverlapping(src.add(o), p, n)
        })
    }
}
