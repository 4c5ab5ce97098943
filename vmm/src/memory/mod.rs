//! Guest physical memory: the interface devices and loaders use, and its two backends.
//!
//! [`GuestMemory`] is implemented by [`portable::MmapMemory`] (in-house, every host) and, on
//! x86_64 hosts, by [`rustvmm::VmMemory`] (vm-memory's `GuestMemoryMmap`); `crate::backend`
//! picks one. Every access is bounds-checked: guest-controlled addresses never reach an
//! unchecked pointer. Nothing on the access path allocates.

pub mod host_range;
pub mod layout;
pub mod portable;
#[cfg(target_arch = "x86_64")]
pub mod rustvmm;
#[cfg(target_arch = "x86_64")]
pub mod vm_view;

/// An access outside guest RAM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest memory access at {addr:#x}+{len:#x} is outside guest RAM")]
pub struct OutOfRange {
    pub addr: u64,
    pub len: usize,
}

pub use host_range::HostRange;

pub type Result<T> = std::result::Result<T, OutOfRange>;

/// One contiguous range of guest RAM and where it is mapped in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub host_addr: u64,
}

/// Access to guest physical memory. Accesses may span adjacent regions.
pub trait GuestMemory: Send + Sync {
    /// The RAM ranges, sorted by address. Borrowed: the access path must not allocate.
    fn regions(&self) -> &[Region];
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()>;
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<()>;

    /// The vm-memory object behind this memory, when it is one (for rust-vmm crates such as
    /// linux-loader and virtio-queue).
    #[cfg(target_arch = "x86_64")]
    fn as_vm_memory(&self) -> Option<&vm_memory::GuestMemoryMmap<()>> {
        None
    }

    /// The last guest-physical address of RAM plus one.
    fn end(&self) -> u64 {
        self.regions()
            .iter()
            .map(|r| r.gpa + r.size)
            .max()
            .unwrap_or(0)
    }
    /// The region that holds all of `[gpa, gpa+len)`, if one does.
    fn region_of(&self, gpa: u64, len: u64) -> Option<&Region> {
        self.regions()
            .iter()
            .find(|r| gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa))
    }
    /// Whether `[gpa, gpa+len)` lies entirely in RAM.
    fn contains(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        let mut at = gpa;
        while at < end {
            match self
                .regions()
                .iter()
                .find(|r| at >= r.gpa && at < r.gpa + r.size)
            {
                Some(r) => at = r.gpa + r.size,
                None => return false,
            }
        }
        true
    }
    // The typed accessors go straight to the host mapping when the bytes lie in one region
    // (nearly always: they are ring fields, request headers, status bytes), so that a device's
    // small accesses skip the backend's general copy path.
    fn read_u8(&self, gpa: u64) -> Result<u8> {
        Ok(read_array::<1, _>(self, gpa)?[0])
    }
    fn read_u16(&self, gpa: u64) -> Result<u16> {
        Ok(u16::from_le_bytes(read_array(self, gpa)?))
    }
    fn read_u32(&self, gpa: u64) -> Result<u32> {
        Ok(u32::from_le_bytes(read_array(self, gpa)?))
    }
    fn read_u64(&self, gpa: u64) -> Result<u64> {
        Ok(u64::from_le_bytes(read_array(self, gpa)?))
    }
    fn write_u8(&self, gpa: u64, v: u8) -> Result<()> {
        write_array(self, gpa, [v])
    }
    fn write_u16(&self, gpa: u64, v: u16) -> Result<()> {
        write_array(self, gpa, v.to_le_bytes())
    }
    fn write_u32(&self, gpa: u64, v: u32) -> Result<()> {
        write_array(self, gpa, v.to_le_bytes())
    }
    fn write_u64(&self, gpa: u64, v: u64) -> Result<()> {
        write_array(self, gpa, v.to_le_bytes())
    }
}

/// The host address of `[gpa, gpa+len)` when it lies in one region.
#[inline]
pub(crate) fn host_ptr<M: GuestMemory + ?Sized>(mem: &M, gpa: u64, len: u64) -> Option<*mut u8> {
    let r = mem.region_of(gpa, len)?;
    Some(usize::try_from(r.host_addr.checked_add(gpa - r.gpa)?).ok()? as *mut u8)
}

/// `N` bytes at `gpa`: one volatile read from the host mapping when they lie in one region,
/// [`GuestMemory::read`] (which may span regions) otherwise.
#[inline]
pub fn read_array<const N: usize, M: GuestMemory + ?Sized>(mem: &M, gpa: u64) -> Result<[u8; N]> {
    if let Some(p) = host_ptr(mem, gpa, N as u64) {
        // SAFETY: `regions()` lists live mappings of guest RAM, and `[p, p+N)` lies inside
        // one. Volatile: the guest may change the bytes at any time.
        return Ok(unsafe { host_range::read_volatile_bytes(p) });
    }
    let mut b = [0u8; N];
    mem.read(gpa, &mut b)?;
    Ok(b)
}

/// Write `N` bytes at `gpa`, as [`read_array`] reads them.
#[inline]
pub fn write_array<const N: usize, M: GuestMemory + ?Sized>(
    mem: &M,
    gpa: u64,
    v: [u8; N],
) -> Result<()> {
    if let Some(p) = host_ptr(mem, gpa, N as u64) {
        // SAFETY: as in `read_array`; guest RAM is mapped writable.
        unsafe { host_range::write_volatile_bytes(p, v) };
        return Ok(());
    }
    mem.write(gpa, &v)
}

/// `[gpa, gpa+len)` as host address ranges appended to `out`, for system calls that move file
/// data straight between a file and guest RAM (preadv/pwritev, no bounce copy). Nothing is
/// appended when any byte lies outside RAM. The addresses stay valid while `mem` lives; they
/// are handed to the kernel only, never turned into Rust references (the guest may change the
/// bytes at any time).
pub fn host_iovecs(
    mem: &dyn GuestMemory,
    gpa: u64,
    len: u64,
    out: &mut Vec<libc::iovec>,
) -> Result<()> {
    let err = OutOfRange {
        addr: gpa,
        len: usize::try_from(len).unwrap_or(usize::MAX),
    };
    let end = gpa.checked_add(len).ok_or(err.clone())?;
    let keep = out.len();
    let mut at = gpa;
    while at < end {
        let host = mem
            .regions()
            .iter()
            .find(|r| at >= r.gpa && at - r.gpa < r.size)
            .and_then(|r| {
                let n = (r.gpa + r.size).min(end) - at;
                let base = usize::try_from(r.host_addr + (at - r.gpa)).ok()?;
                Some((base, usize::try_from(n).ok()?, n))
            });
        let Some((base, n, n64)) = host else {
            out.truncate(keep);
            return Err(err);
        };
        out.push(libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: n,
        });
        at += n64;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
