//! A driver-side model of split virtqueues in guest memory, for the device tests.

use super::queue::{QueueConfig, QueueImpl};
use crate::backend::Backend;
use crate::memory::GuestMemory;
use std::sync::Arc;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

/// Guest RAM of `size` bytes at 0 with each memory backend this host builds.
pub fn memories(size: u64) -> Vec<(&'static str, Arc<dyn GuestMemory>)> {
    #[allow(unused_mut)] // i686 has the portable memory only
    let mut v: Vec<(&'static str, Arc<dyn GuestMemory>)> = vec![(
        "portable-mem",
        Backend::Portable
            .memory(&[(0, size)])
            .expect("allocate guest RAM"),
    )];
    #[cfg(target_arch = "x86_64")]
    v.push((
        "vm-memory",
        Backend::RustVmm
            .memory(&[(0, size)])
            .expect("allocate guest RAM"),
    ));
    v
}

/// Every queue implementation this host builds.
pub fn impls() -> Vec<QueueImpl> {
    #[allow(unused_mut)] // i686 has the in-house queue only
    let mut v = vec![QueueImpl::InHouse];
    #[cfg(target_arch = "x86_64")]
    v.push(QueueImpl::RustVmm);
    v
}

/// The driver side of one queue: descriptor table, avail and used rings at `base`.
pub struct Driver {
    pub mem: Arc<dyn GuestMemory>,
    pub cfg: QueueConfig,
    next_desc: u16,
    pub avail_idx: u16,
    used_seen: u16,
}

impl Driver {
    pub fn new(mem: Arc<dyn GuestMemory>, base: u64, size: u16) -> Self {
        let n = size as u64;
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 0xfff) & !0xfff;
        let cfg = QueueConfig {
            max_size: size.max(256),
            size,
            ready: true,
            desc_table: base,
            avail_ring: avail,
            used_ring: used,
        };
        let d = Driver {
            mem,
            cfg,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        };
        d.mem
            .write(
                base,
                &vec![0u8; usize::try_from(used + 6 + 8 * n - base).unwrap()],
            )
            .unwrap();
        d
    }

    pub fn write_desc(&self, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write(self.cfg.desc_table + 16 * idx as u64, &raw)
            .unwrap();
    }

    /// Lay out a chain of (addr, len, device-writable) buffers; returns its head.
    pub fn add_chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let size = self.cfg.size;
        let head = self.next_desc % size;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (self.next_desc + crate::bits::lo16(i as u64)) % size;
            let last = i + 1 == bufs.len();
            let mut flags = if write {
                const { crate::bits::const_u16(VRING_DESC_F_WRITE as u64) }
            } else {
                0
            };
            if !last {
                flags |= const { crate::bits::const_u16(VRING_DESC_F_NEXT as u64) };
            }
            self.write_desc(idx, addr, len, flags, (idx + 1) % size);
        }
        self.next_desc = self
            .next_desc
            .wrapping_add(crate::bits::lo16(bufs.len() as u64));
        head
    }

    /// Put `head` in the avail ring and publish it.
    pub fn publish(&mut self, head: u16) {
        let slot = (self.avail_idx % self.cfg.size) as u64;
        self.mem
            .write_u16(self.cfg.avail_ring + 4 + 2 * slot, head)
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.mem.write_u16(self.cfg.avail_ring + 2, idx).unwrap();
    }

    pub fn set_used_event(&self, v: u16) {
        self.mem
            .write_u16(self.cfg.avail_ring + 4 + 2 * self.cfg.size as u64, v)
            .unwrap();
    }

    pub fn set_avail_flags(&self, v: u16) {
        self.mem.write_u16(self.cfg.avail_ring, v).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_u16(self.cfg.used_ring + 2).unwrap()
    }

    pub fn used_flags(&self) -> u16 {
        self.mem.read_u16(self.cfg.used_ring).unwrap()
    }

    pub fn avail_event(&self) -> u16 {
        self.mem
            .read_u16(self.cfg.used_ring + 4 + 8 * self.cfg.size as u64)
            .unwrap()
    }

    /// The next used element (id, len) not yet seen, if the device published one.
    pub fn take_used(&mut self) -> Option<(u32, u32)> {
        if self.used_idx() == self.used_seen {
            return None;
        }
        let slot = (self.used_seen % self.cfg.size) as u64;
        let at = self.cfg.used_ring + 4 + 8 * slot;
        let id = self.mem.read_u32(at).unwrap();
        let len = self.mem.read_u32(at + 4).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id, len))
    }
}

/// A small deterministic generator for the differential fuzz tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
