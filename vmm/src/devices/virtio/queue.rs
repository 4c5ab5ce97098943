//! Split virtqueues: the interface the devices use, the in-house ring walker (every host,
//! including i686) and, on x86_64 hosts, one backed by rust-vmm's `virtio-queue`.
//!
//! Both implementations follow the same rules, so that the differential tests can demand the
//! same results from them: a chain is at most `size` descriptors long (an indirect table at
//! most its own length), an indirect table may not hold another indirect descriptor, its
//! length must be a multiple of 16, and the lengths of a chain may not overflow 32 bits. A
//! chain that breaks a rule, or that cannot be read, is [`QueueError::BadChain`]; the avail
//! index running more than `size` ahead of the device is [`QueueError::AvailIndex`]. Every
//! guest-memory access is bounds-checked: nothing here panics on guest data.

use crate::memory::{GuestMemory, HostRange, OutOfRange};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_ring::{
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
};

/// The largest split queue the virtio spec allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Which implementation runs the rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueImpl {
    /// The in-house split ring (every host).
    InHouse,
    /// rust-vmm's virtio-queue (x86_64 hosts).
    #[cfg(target_arch = "x86_64")]
    RustVmm,
}

/// What the driver programmed for one queue (through the transport).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl QueueConfig {
    pub fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            ..Default::default()
        }
    }
}

/// Why a queue cannot be used (the device then goes to NEEDS_RESET).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue size {0} is zero, not a power of two or above the maximum")]
    InvalidSize(u16),
    #[error("queue rings are misaligned")]
    Misaligned,
    #[error("queue rings lie outside guest RAM")]
    OutsideMemory,
    #[error("queue is not ready")]
    NotReady,
    #[error("avail index {avail} is more than the queue size ahead of {next}")]
    AvailIndex { avail: u16, next: u16 },
    #[error("descriptor chain at head {head} is malformed")]
    BadChain { head: u16 },
    #[error("used head {0} is outside the queue")]
    HeadIndex(u16),
    #[error("queue ring access failed: {0}")]
    Memory(#[from] OutOfRange),
    /// virtio-queue refused, in its own words (the rust-vmm implementation only).
    #[error("virtio-queue: {0}")]
    RustVmm(String),
}

/// One buffer of a chain, as the driver described it (the address is not checked yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (VRING_DESC_F_WRITE).
    pub write: bool,
}

/// A descriptor chain popped from the avail ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub descs: Vec<Desc>,
}

impl Chain {
    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.descs
            .iter()
            .filter(|d| !d.write)
            .map(|d| d.len as u64)
            .sum()
    }
    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.descs
            .iter()
            .filter(|d| d.write)
            .map(|d| d.len as u64)
            .sum()
    }
}

/// A running split virtqueue.
pub trait Virtqueue: Send {
    /// Take the next available chain into `chain` (its buffer is reused, so a device that
    /// keeps one `Chain` allocates nothing per request); `Ok(false)` when the ring is empty.
    fn pop_into(&mut self, chain: &mut Chain) -> Result<bool, QueueError>;
    /// Take the next available chain, `Ok(None)` when the ring is empty.
    fn pop(&mut self) -> Result<Option<Chain>, QueueError> {
        let mut chain = Chain::default();
        Ok(self.pop_into(&mut chain)?.then_some(chain))
    }
    /// Return a chain to the driver with `len` bytes written.
    fn add_used(&mut self, head: u16, len: u32) -> Result<(), QueueError>;
    /// Whether the driver wants an interrupt for what was added since the last call.
    fn needs_notification(&mut self) -> Result<bool, QueueError>;
    /// Ask the driver for notifications again; true when chains arrived meanwhile.
    fn enable_notification(&mut self) -> Result<bool, QueueError>;
    /// Tell the driver that notifications are not needed for now.
    fn disable_notification(&mut self) -> Result<(), QueueError>;
    fn size(&self) -> u16;
    fn next_avail(&self) -> u16;
    fn next_used(&self) -> u16;
}

const DESC_SIZE: u64 = 16;

fn is_pow2(n: u16) -> bool {
    n != 0 && n & (n - 1) == 0
}

/// The checks both implementations make before a queue is used. Each ring must lie inside
/// one RAM region (fugu's regions are never adjacent, so this is "inside RAM"): the in-house
/// ring then reaches it at its host address without a lookup per access.
pub fn validate(mem: &dyn GuestMemory, c: &QueueConfig) -> Result<(), QueueError> {
    if !c.ready {
        return Err(QueueError::NotReady);
    }
    if !is_pow2(c.size) || c.size > c.max_size || c.size > MAX_QUEUE_SIZE {
        return Err(QueueError::InvalidSize(c.size));
    }
    // virtio-queue treats an avail ring at 0 as "not set up"; both implementations agree.
    if c.avail_ring == 0 {
        return Err(QueueError::NotReady);
    }
    if c.desc_table & 0xf != 0 || c.avail_ring & 1 != 0 || c.used_ring & 3 != 0 {
        return Err(QueueError::Misaligned);
    }
    let (desc, avail, used) = ring_sizes(c.size);
    if mem.region_of(c.desc_table, desc).is_none()
        || mem.region_of(c.avail_ring, avail).is_none()
        || mem.region_of(c.used_ring, used).is_none()
    {
        return Err(QueueError::OutsideMemory);
    }
    Ok(())
}

/// Bytes of the descriptor table, the avail ring and the used ring (with their event fields).
fn ring_sizes(size: u16) -> (u64, u64, u64) {
    let n = size as u64;
    (DESC_SIZE * n, 6 + 2 * n, 6 + 8 * n)
}

/// Start a queue with the chosen implementation after checking its layout.
pub fn new_queue(
    which: QueueImpl,
    mem: Arc<dyn GuestMemory>,
    cfg: &QueueConfig,
    event_idx: bool,
) -> Result<Box<dyn Virtqueue>, QueueError> {
    validate(&*mem, cfg)?;
    match which {
        QueueImpl::InHouse => Ok(Box::new(SplitQueue::new(mem, cfg, event_idx)?)),
        #[cfg(target_arch = "x86_64")]
        QueueImpl::RustVmm => Ok(Box::new(rustvmm::RustVmmQueue::new(mem, cfg, event_idx)?)),
    }
}

/// The in-house split ring. The three rings are looked up once, when the queue starts, and
/// reached at their host addresses; the driver's avail index is read again only once the
/// chains it announced are taken.
pub struct SplitQueue {
    mem: Arc<dyn GuestMemory>,
    size: u16,
    desc: HostRange,
    avail: HostRange,
    used: HostRange,
    next_avail: u16,
    /// The avail index as last read: the chains before it can be taken without reading it.
    avail_seen: u16,
    next_used: u16,
    num_added: u16,
    event_idx: bool,
}

/// Where the fields of the avail and used rings are (offsets in the ring).
const RING_IDX: usize = 2;
const RING_ENTRIES: usize = 4;

impl SplitQueue {
    /// A queue over a layout that [`validate`] accepted.
    pub fn new(
        mem: Arc<dyn GuestMemory>,
        c: &QueueConfig,
        event_idx: bool,
    ) -> Result<Self, QueueError> {
        let (desc, avail, used) = ring_sizes(c.size);
        let range = |gpa, len| HostRange::new(&mem, gpa, len).ok_or(QueueError::OutsideMemory);
        Ok(SplitQueue {
            size: c.size,
            desc: range(c.desc_table, desc)?,
            avail: range(c.avail_ring, avail)?,
            used: range(c.used_ring, used)?,
            mem,
            next_avail: 0,
            avail_seen: 0,
            next_used: 0,
            num_added: 0,
            event_idx,
        })
    }

    fn avail_idx(&self) -> Result<u16, QueueError> {
        self.avail
            .load_u16(RING_IDX, Ordering::Acquire)
            .ok_or(QueueError::OutsideMemory)
    }

    /// Offset of entry `i` of a ring whose entries are `width` bytes (below the queue size).
    fn entry(&self, i: u16, width: usize) -> usize {
        RING_ENTRIES + width * usize::from(i % self.size)
    }

    /// The `idx`th descriptor of the ring's table or, with `indirect`, of the table at that
    /// address: address, length, flags, next. An indirect table is read entry by entry, as
    /// the chain needs them (a table may run past RAM after the entries a chain uses).
    #[inline]
    fn read_desc(&self, indirect: Option<u64>, idx: u32) -> Option<(u64, u32, u16, u16)> {
        let raw: [u8; 16] = match indirect {
            None => {
                // Below the queue size, so inside the table.
                let off = usize::try_from(idx).ok()? * 16;
                let t = &self.desc;
                return Some((
                    t.read_u64(off)?,
                    t.read_u32(off + 8)?,
                    t.read_u16(off + 12)?,
                    t.read_u16(off + 14)?,
                ));
            }
            Some(table) => {
                let at = table.checked_add(u64::from(idx) * DESC_SIZE)?;
                crate::memory::read_array(&*self.mem, at).ok()?
            }
        };
        let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = raw;
        Some((
            u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u32::from_le_bytes([l0, l1, l2, l3]),
            u16::from_le_bytes([f0, f1]),
            u16::from_le_bytes([n0, n1]),
        ))
    }

    /// The chain at `head` into `out` (cleared first).
    fn walk(&self, head: u16, out: &mut Vec<Desc>) -> Result<(), QueueError> {
        let bad = QueueError::BadChain { head };
        out.clear();
        let mut table: Option<u64> = None;
        let mut table_len = self.size as u32;
        let mut ttl = self.size as u32;
        let mut idx = head as u32;
        let mut total: u32 = 0;
        loop {
            if ttl == 0 || idx >= table_len {
                return Err(bad);
            }
            let (addr, len, flags, next) = self.read_desc(table, idx).ok_or(bad.clone())?;
            let (flags, next) = (u32::from(flags), u32::from(next));
            if flags & VRING_DESC_F_INDIRECT != 0 {
                if table.is_some()
                    || len % const { crate::bits::const_u32(DESC_SIZE) } != 0
                    || len / 16 > u16::MAX as u32
                {
                    return Err(bad);
                }
                table = Some(addr);
                table_len = len / 16;
                ttl = table_len;
                idx = 0;
                continue;
            }
            total = total.checked_add(len).ok_or(bad.clone())?;
            out.push(Desc {
                addr,
                len,
                write: flags & VRING_DESC_F_WRITE != 0,
            });
            if flags & VRING_DESC_F_NEXT == 0 {
                return Ok(());
            }
            idx = next;
            ttl -= 1;
        }
    }
}

impl Virtqueue for SplitQueue {
    fn pop_into(&mut self, chain: &mut Chain) -> Result<bool, QueueError> {
        if self.avail_seen == self.next_avail {
            let avail = self.avail_idx()?;
            if avail.wrapping_sub(self.next_avail) > self.size {
                return Err(QueueError::AvailIndex {
                    avail,
                    next: self.next_avail,
                });
            }
            if avail == self.next_avail {
                return Ok(false);
            }
            self.avail_seen = avail;
        }
        let at = self.entry(self.next_avail, 2);
        let head = self.avail.read_u16(at).ok_or(QueueError::OutsideMemory)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        chain.head = head;
        self.walk(head, &mut chain.descs)?;
        Ok(true)
    }

    fn add_used(&mut self, head: u16, len: u32) -> Result<(), QueueError> {
        if head >= self.size {
            return Err(QueueError::HeadIndex(head));
        }
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&(head as u32).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        let at = self.entry(self.next_used, 8);
        self.used.write(at, elem).ok_or(QueueError::OutsideMemory)?;
        self.next_used = self.next_used.wrapping_add(1);
        self.num_added = self.num_added.wrapping_add(1);
        // Release: the element is visible before the index that publishes it.
        self.used
            .store_u16(RING_IDX, self.next_used, Ordering::Release)
            .ok_or(QueueError::OutsideMemory)
    }

    fn needs_notification(&mut self) -> Result<bool, QueueError> {
        fence(Ordering::SeqCst);
        if self.event_idx {
            // used_event follows the avail ring's entries.
            let at = RING_ENTRIES + 2 * usize::from(self.size);
            let used_event = self
                .avail
                .load_u16(at, Ordering::Relaxed)
                .ok_or(QueueError::OutsideMemory)?;
            let new = self.next_used;
            let old = new.wrapping_sub(self.num_added);
            self.num_added = 0;
            return Ok(new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old));
        }
        let flags = self
            .avail
            .load_u16(0, Ordering::Relaxed)
            .ok_or(QueueError::OutsideMemory)? as u32;
        Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
    }

    fn enable_notification(&mut self) -> Result<bool, QueueError> {
        let stored = if self.event_idx {
            // avail_event follows the used ring's entries.
            let at = RING_ENTRIES + 8 * usize::from(self.size);
            self.used.store_u16(at, self.next_avail, Ordering::Relaxed)
        } else {
            self.used.store_u16(0, 0, Ordering::Relaxed)
        };
        stored.ok_or(QueueError::OutsideMemory)?;
        fence(Ordering::SeqCst);
        let avail = self.avail_idx()?;
        Ok(avail != self.next_avail)
    }

    fn disable_notification(&mut self) -> Result<(), QueueError> {
        if !self.event_idx {
            self.used
                .store_u16(
                    0,
                    const { crate::bits::const_u16(VRING_USED_F_NO_NOTIFY as u64) },
                    Ordering::Relaxed,
                )
                .ok_or(QueueError::OutsideMemory)?;
        }
        Ok(())
    }

    fn size(&self) -> u16 {
        self.size
    }
    fn next_avail(&self) -> u16 {
        self.next_avail
    }
    fn next_used(&self) -> u16 {
        self.next_used
    }
}

#[cfg(target_arch = "x86_64")]
pub mod rustvmm {
    //! The same interface over rust-vmm's `virtio_queue::Queue`.

    use super::{Chain, Desc, QueueConfig, QueueError, Virtqueue};
    use crate::memory::vm_view::VmView;
    use crate::memory::GuestMemory;
    use std::sync::Arc;
    use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
    use virtio_queue::{Queue, QueueOwnedT, QueueT};
    use vm_memory::GuestAddress;

    pub struct RustVmmQueue {
        /// Guest RAM as virtio-queue reads it (it holds the memory it points into).
        view: VmView,
        q: Queue,
    }

    /// virtio-queue's errors where ours mean the same; the rest keep virtio-queue's message
    /// (which access failed and why). Sizes and head indexes are mapped where they are known
    /// (`new`, `add_used`), with the value.
    fn map_err(e: virtio_queue::Error) -> QueueError {
        use virtio_queue::Error as E;
        match e {
            E::QueueNotReady => QueueError::NotReady,
            E::InvalidDescTableAlign | E::InvalidAvailRingAlign | E::InvalidUsedRingAlign => {
                QueueError::Misaligned
            }
            other => QueueError::RustVmm(other.to_string()),
        }
    }

    impl RustVmmQueue {
        pub fn new(
            mem: Arc<dyn GuestMemory>,
            c: &QueueConfig,
            event_idx: bool,
        ) -> Result<Self, QueueError> {
            let view = VmView::new(mem);
            let mut q = Queue::new(c.max_size).map_err(|_| QueueError::InvalidSize(c.max_size))?;
            q.try_set_size(c.size)
                .map_err(|_| QueueError::InvalidSize(c.size))?;
            q.try_set_desc_table_address(GuestAddress(c.desc_table))
                .map_err(map_err)?;
            q.try_set_avail_ring_address(GuestAddress(c.avail_ring))
                .map_err(map_err)?;
            q.try_set_used_ring_address(GuestAddress(c.used_ring))
                .map_err(map_err)?;
            q.set_event_idx(event_idx);
            q.set_ready(true);
            if !q.is_valid(&view) {
                return Err(QueueError::OutsideMemory);
            }
            Ok(RustVmmQueue { view, q })
        }
    }

    impl Virtqueue for RustVmmQueue {
        fn pop_into(&mut self, out: &mut Chain) -> Result<bool, QueueError> {
            let next = self.q.next_avail();
            let mut it = match self.q.iter(&self.view) {
                Ok(it) => it,
                Err(virtio_queue::Error::InvalidAvailRingIndex) => {
                    // Read again only to name the value: the error path is not hot.
                    let avail = self
                        .q
                        .avail_idx(&self.view, std::sync::atomic::Ordering::Acquire)
                        .map_err(map_err)?
                        .0;
                    return Err(QueueError::AvailIndex { avail, next });
                }
                Err(e) => return Err(map_err(e)),
            };
            let Some(chain) = it.next() else {
                return Ok(false);
            };
            let head = chain.head_index();
            out.head = head;
            out.descs.clear();
            let mut open = true;
            for d in chain {
                open = d.has_next();
                out.descs.push(Desc {
                    addr: d.addr().0,
                    len: d.len(),
                    write: d.is_write_only(),
                });
            }
            // The iterator stops silently on a loop, a bad index or an unreadable
            // descriptor: a chain that ends on a "next" flag, or yields nothing, is broken.
            if out.descs.is_empty() || open {
                return Err(QueueError::BadChain { head });
            }
            Ok(true)
        }

        fn add_used(&mut self, head: u16, len: u32) -> Result<(), QueueError> {
            if head >= self.q.size() {
                return Err(QueueError::HeadIndex(head));
            }
            self.q.add_used(&self.view, head, len).map_err(map_err)
        }

        fn needs_notification(&mut self) -> Result<bool, QueueError> {
            let n = self.q.needs_notification(&self.view).map_err(map_err)?;
            if self.q.event_idx_enabled() {
                return Ok(n);
            }
            // virtio-queue leaves VRING_AVAIL_F_NO_INTERRUPT to the device.
            use vm_memory::Bytes;
            let flags: u16 = self
                .view
                .read_obj(GuestAddress(self.q.avail_ring()))
                .map_err(|e| QueueError::RustVmm(e.to_string()))?;
            Ok(flags as u32 & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }

        fn enable_notification(&mut self) -> Result<bool, QueueError> {
            self.q.enable_notification(&self.view).map_err(map_err)
        }

        fn disable_notification(&mut self) -> Result<(), QueueError> {
            self.q.disable_notification(&self.view).map_err(map_err)
        }

        fn size(&self) -> u16 {
            self.q.size()
        }
        fn next_avail(&self) -> u16 {
            self.q.next_avail()
        }
        fn next_used(&self) -> u16 {
            self.q.next_used()
        }
    }
}

/// Copy bytes between guest buffers of a chain and host memory.
pub mod io {
    use super::Desc;
    use crate::memory::{GuestMemory, OutOfRange};

    /// Read up to `buf.len()` bytes from the readable descriptors of `descs`, skipping the
    /// first `skip` readable bytes. Returns how many bytes were read.
    pub fn read(
        mem: &dyn GuestMemory,
        descs: &[Desc],
        mut skip: u64,
        buf: &mut [u8],
    ) -> Result<usize, OutOfRange> {
        let mut done = 0usize;
        for d in descs.iter().filter(|d| !d.write) {
            if done == buf.len() {
                break;
            }
            let len = d.len as u64;
            if skip >= len {
                skip -= len;
                continue;
            }
            // At most a descriptor's u32 length: the fallback is never taken.
            let n = usize::try_from(len - skip)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let at = d.addr.checked_add(skip).ok_or(OutOfRange {
                addr: d.addr,
                len: n,
            })?;
            mem.read(at, &mut buf[done..done + n])?;
            skip = 0;
            done += n;
        }
        Ok(done)
    }

    /// Write `buf` into the writable descriptors of `descs` after the first `skip` writable
    /// bytes. Returns how many bytes were written.
    pub fn write(
        mem: &dyn GuestMemory,
        descs: &[Desc],
        mut skip: u64,
        buf: &[u8],
    ) -> Result<usize, OutOfRange> {
        let mut done = 0usize;
        for d in descs.iter().filter(|d| d.write) {
            if done == buf.len() {
                break;
            }
            let len = d.len as u64;
            if skip >= len {
                skip -= len;
                continue;
            }
            // At most a descriptor's u32 length: the fallback is never taken.
            let n = usize::try_from(len - skip)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let at = d.addr.checked_add(skip).ok_or(OutOfRange {
                addr: d.addr,
                len: n,
            })?;
            mem.write(at, &buf[done..done + n])?;
            skip = 0;
            done += n;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
