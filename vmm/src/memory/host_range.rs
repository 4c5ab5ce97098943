//! A range of guest RAM looked up once and then accessed at its host address: for what a
//! device touches on every request (a virtqueue's rings), where a region lookup and a copy
//! call per access were most of the device's own cost.
//!
//! Every access is still bounds-checked against the range; the range holds the memory it
//! points into, so it cannot outlive the mapping. Reads and writes are volatile (the guest
//! may change the bytes at any time, and they are never turned into Rust references); the
//! ring indexes have atomic accessors for the acquire/release pairing the virtio spec asks
//! for.

use super::GuestMemory;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

pub struct HostRange {
    base: *mut u8,
    len: usize,
    /// Keeps the mapping `base` points into alive.
    _mem: Arc<dyn GuestMemory>,
}

// SAFETY: the range only copies bytes in and out of guest RAM with volatile or atomic
// accesses, like the `GuestMemory` it was taken from (which is Send + Sync).
unsafe impl Send for HostRange {}
// SAFETY: as for Send: shared use only copies through bounds-checked accesses.
unsafe impl Sync for HostRange {}

impl std::fmt::Debug for HostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRange")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish()
    }
}

impl HostRange {
    /// `[gpa, gpa+len)` when it lies inside one RAM region, None otherwise.
    pub fn new(mem: &Arc<dyn GuestMemory>, gpa: u64, len: u64) -> Option<Self> {
        let base = super::host_ptr(&**mem, gpa, len)?;
        Some(HostRange {
            base,
            len: usize::try_from(len).ok()?,
            _mem: mem.clone(),
        })
    }

    /// The host address of `[off, off+n)`, when it lies in the range.
    #[inline]
    fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        if off > self.len || n > self.len - off {
            return None;
        }
        // SAFETY: off + n <= len, inside the mapping the range was checked against.
        Some(unsafe { self.base.add(off) })
    }

    /// `N` bytes at `off`.
    #[inline]
    pub fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.at(off, N)?;
        // SAFETY: `p..p+N` lies in a live mapping of guest RAM.
        Some(unsafe { read_volatile_bytes(p) })
    }

    /// The little-endian u64 at `off` (any alignment).
    #[inline]
    pub fn read_u64(&self, off: usize) -> Option<u64> {
        self.read(off).map(u64::from_le_bytes)
    }

    /// The little-endian u32 at `off` (any alignment).
    #[inline]
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        self.read(off).map(u32::from_le_bytes)
    }

    /// The little-endian u16 at `off` (any alignment).
    #[inline]
    pub fn read_u16(&self, off: usize) -> Option<u16> {
        self.read(off).map(u16::from_le_bytes)
    }

    /// Write `N` bytes at `off`.
    #[inline]
    pub fn write<const N: usize>(&self, off: usize, v: [u8; N]) -> Option<()> {
        let p = self.at(off, N)?;
        // SAFETY: as in `read`; guest RAM is writable.
        unsafe { write_volatile_bytes(p, v) };
        Some(())
    }

    /// The little-endian u16 at `off`, an aligned atomic load.
    pub fn load_u16(&self, off: usize, order: Ordering) -> Option<u16> {
        Some(u16::from_le(self.atomic_u16(off)?.load(order)))
    }

    /// Store a little-endian u16 at `off`, an aligned atomic store.
    pub fn store_u16(&self, off: usize, v: u16, order: Ordering) -> Option<()> {
        self.atomic_u16(off)?.store(v.to_le(), order);
        Some(())
    }

    fn atomic_u16(&self, off: usize) -> Option<&AtomicU16> {
        let p = self.at(off, 2)?;
        if (p as usize) % std::mem::align_of::<AtomicU16>() != 0 {
            return None;
        }
        // SAFETY: aligned, inside a live mapping that outlives `&self` (the range holds it);
        // guest RAM is only ever accessed through volatile or atomic operations.
        Some(unsafe { AtomicU16::from_ptr(p as *mut u16) })
    }
}

/// The widest unit (8, 4, 2 or 1 bytes) that `p` is aligned to and `n` is a multiple of.
#[inline]
fn unit(p: *const u8, n: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&u| (p as usize) % u == 0 && n % u == 0)
        .unwrap_or(1)
}

/// `N` bytes at `p` in volatile loads as wide as the alignment allows: a byte-wise copy costs
/// a load per byte, and reassembling a field from bytes just stored stalls the CPU.
///
/// # Safety
/// `[p, p+N)` must lie in a live mapping that is only accessed with volatile or atomic
/// operations.
#[inline]
pub(crate) unsafe fn read_volatile_bytes<const N: usize>(p: *const u8) -> [u8; N] {
    let mut out = [0u8; N];
    let u = unit(p, N);
    let mut i = 0;
    while i < N {
        // SAFETY: i + u <= N (u divides N), so the access stays in `[p, p+N)` and in `out`;
        // `p + i` is aligned to u because p is and u divides i.
        unsafe {
            let src = p.add(i);
            let dst = out.as_mut_ptr().add(i);
            match u {
                8 => (dst as *mut [u8; 8]).write((src as *const u64).read_volatile().to_ne_bytes()),
                4 => (dst as *mut [u8; 4]).write((src as *const u32).read_volatile().to_ne_bytes()),
                2 => (dst as *mut [u8; 2]).write((src as *const u16).read_volatile().to_ne_bytes()),
                _ => dst.write(src.read_volatile()),
            }
        }
        i += u;
    }
    out
}

/// Store `v` at `p` as [`read_volatile_bytes`] loads.
///
/// # Safety
/// As for [`read_volatile_bytes`]; the mapping must be writable.
#[inline]
pub(crate) unsafe fn write_volatile_bytes<const N: usize>(p: *mut u8, v: [u8; N]) {
    let u = unit(p, N);
    let mut i = 0;
    while i < N {
        // SAFETY: as in `read_volatile_bytes`.
        unsafe {
            let dst = p.add(i);
            let src = v.as_ptr().add(i);
            match u {
                8 => (dst as *mut u64).write_volatile(u64::from_ne_bytes(*(src as *const [u8; 8]))),
                4 => (dst as *mut u32).write_volatile(u32::from_ne_bytes(*(src as *const [u8; 4]))),
                2 => (dst as *mut u16).write_volatile(u16::from_ne_bytes(*(src as *const [u8; 2]))),
                _ => dst.write_volatile(*src),
            }
        }
        i += u;
    }
}
