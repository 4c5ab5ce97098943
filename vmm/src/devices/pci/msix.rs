//! MSI-X: the capability, the vector table and the pending-bit array, and delivery of each
//! vector through an [`InterruptController`](super::irq::InterruptController) route (on
//! KVM: a GSI routed to the message, fired through its irqfd).

use super::config::ConfigSpace;
use super::irq::InterruptController;
use std::sync::Arc;

pub const CAP_ID: u8 = 0x11;
const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_MASKED: u32 = 1;
/// "No vector" in virtio's vector registers.
pub const NO_VECTOR: u16 = 0xffff;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
    pub ctrl: u32,
}

impl Entry {
    fn masked(&self) -> bool {
        self.ctrl & ENTRY_MASKED != 0
    }
    fn addr(&self) -> u64 {
        ((self.addr_hi as u64) << 32) | self.addr_lo as u64
    }
}

/// The MSI-X state of one function.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    /// The interrupt route (GSI) of each vector, allocated on first use.
    routes: Vec<Option<u32>>,
    enabled: bool,
    function_masked: bool,
    cap: usize,
    irq: Arc<dyn InterruptController>,
}

impl Msix {
    /// Add the capability to `cfg`: `n` vectors, the table at `bar`+`table_off` and the PBA
    /// at `bar`+`pba_off`.
    pub fn new(
        cfg: &mut ConfigSpace,
        n: u16,
        bar: u8,
        table_off: u32,
        pba_off: u32,
        irq: Arc<dyn InterruptController>,
    ) -> Self {
        let n = n.clamp(1, 2048);
        let mut body = Vec::new();
        body.extend_from_slice(&(n - 1).to_le_bytes());
        body.extend_from_slice(&(table_off | bar as u32).to_le_bytes());
        body.extend_from_slice(&(pba_off | bar as u32).to_le_bytes());
        let mut wmask = vec![0u8; body.len()];
        wmask[1] = 0xc0; // enable and function mask
        let cap = cfg.add_capability(CAP_ID, &body, &wmask).unwrap_or(0);
        Msix {
            entries: vec![
                Entry {
                    ctrl: ENTRY_MASKED,
                    ..Default::default()
                };
                n as usize
            ],
            pending: vec![false; n as usize],
            routes: vec![None; n as usize],
            enabled: false,
            function_masked: false,
            cap,
            irq,
        }
    }

    pub fn len(&self) -> u16 {
        // At most 2048 entries (new() clamps): the fallback is never taken.
        u16::try_from(self.entries.len()).unwrap_or(u16::MAX)
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn table_bytes(&self) -> u64 {
        16 * self.entries.len() as u64
    }
    pub fn pba_bytes(&self) -> u64 {
        8 * self.entries.len().div_ceil(64) as u64
    }

    /// Pick up the enable / function-mask bits after a config-space write.
    pub fn config_written(&mut self, cfg: &ConfigSpace) {
        if self.cap == 0 {
            return;
        }
        let ctrl = cfg.u16(self.cap + 2);
        self.enabled = ctrl & CTRL_ENABLE != 0;
        self.function_masked = ctrl & CTRL_FUNCTION_MASK != 0;
        self.flush_pending();
    }

    pub fn read_table(&self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let i = (off / 16) as usize;
        let Some(e) = self.entries.get(i) else {
            return;
        };
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&e.addr_lo.to_le_bytes());
        raw[4..8].copy_from_slice(&e.addr_hi.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&e.ctrl.to_le_bytes());
        let at = (off % 16) as usize;
        for (k, b) in data.iter_mut().enumerate() {
            *b = raw.get(at + k).copied().unwrap_or(0);
        }
    }

    pub fn write_table(&mut self, off: u64, data: &[u8]) {
        let i = (off / 16) as usize;
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&e.addr_lo.to_le_bytes());
        raw[4..8].copy_from_slice(&e.addr_hi.to_le_bytes());
        raw[8..12].copy_from_slice(&e.data.to_le_bytes());
        raw[12..16].copy_from_slice(&e.ctrl.to_le_bytes());
        let at = (off % 16) as usize;
        for (k, b) in data.iter().enumerate() {
            if let Some(r) = raw.get_mut(at + k) {
                *r = *b;
            }
        }
        let word = |k: usize| u32::from_le_bytes([raw[k], raw[k + 1], raw[k + 2], raw[k + 3]]);
        let new = Entry {
            addr_lo: word(0),
            addr_hi: word(4),
            data: word(8),
            // Only the mask bit of vector control is writable.
            ctrl: word(12) & ENTRY_MASKED,
        };
        let changed_msg = new.addr() != e.addr() || new.data != e.data;
        *e = new;
        if changed_msg {
            if let Some(gsi) = self.routes[i] {
                let _ = self.irq.msi_route(gsi, new.addr(), new.data);
            }
        }
        self.flush_pending();
    }

    pub fn read_pba(&self, off: u64, data: &mut [u8]) {
        for (k, b) in data.iter_mut().enumerate() {
            let first = off
                .checked_add(k as u64)
                .and_then(|byte| byte.checked_mul(8))
                .and_then(|bit| usize::try_from(bit).ok());
            let mut v = 0u8;
            for bit in 0..8 {
                let at = first.and_then(|f| f.checked_add(bit));
                if at
                    .and_then(|i| self.pending.get(i))
                    .copied()
                    .unwrap_or(false)
                {
                    v |= 1 << bit;
                }
            }
            *b = v;
        }
    }

    /// Signal `vector`: delivered now, or left pending while masked.
    pub fn notify(&mut self, vector: u16) {
        let i = vector as usize;
        if !self.enabled || i >= self.entries.len() {
            return;
        }
        if self.function_masked || self.entries[i].masked() {
            self.pending[i] = true;
            return;
        }
        self.deliver(i);
    }

    fn deliver(&mut self, i: usize) {
        let e = self.entries[i];
        let gsi = match self.routes[i] {
            Some(g) => g,
            None => match self.irq.msi_alloc() {
                Ok(g) => {
                    let _ = self.irq.msi_route(g, e.addr(), e.data);
                    self.routes[i] = Some(g);
                    g
                }
                Err(_) => return,
            },
        };
        self.irq.msi_fire(gsi);
    }

    fn flush_pending(&mut self) {
        if !self.enabled || self.function_masked {
            return;
        }
        for i in 0..self.entries.len() {
            if self.pending[i] && !self.entries[i].masked() {
                self.pending[i] = false;
                self.deliver(i);
            }
        }
    }

    /// Device reset: masks every vector, clears pending bits (routes are kept for reuse).
    pub fn reset(&mut self) {
        for e in &mut self.entries {
            *e = Entry {
                ctrl: ENTRY_MASKED,
                ..Default::default()
            };
        }
        self.pending.fill(false);
        self.enabled = false;
        self.function_masked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::super::irq::tests::Recorder;
    use super::*;

    fn setup() -> (ConfigSpace, Msix, Arc<Recorder>) {
        let mut cfg = ConfigSpace::new(1, 2, 0, 0);
        let rec = Arc::new(Recorder::default());
        let m = Msix::new(&mut cfg, 3, 1, 0, 0x800, rec.clone());
        (cfg, m, rec)
    }

    fn program(m: &mut Msix, v: u64, addr: u32, data: u32, masked: bool) {
        m.write_table(16 * v, &addr.to_le_bytes());
        m.write_table(16 * v + 4, &0u32.to_le_bytes());
        m.write_table(16 * v + 8, &data.to_le_bytes());
        m.write_table(16 * v + 12, &(masked as u32).to_le_bytes());
    }

    #[test]
    fn capability_layout_and_enable() {
        let (mut cfg, mut m, rec) = setup();
        assert_eq!(cfg.u8(0x40), CAP_ID);
        assert_eq!(cfg.u16(0x42), 2, "table size - 1");
        assert_eq!(cfg.u32(0x44), 1, "table in BAR 1 at 0");
        assert_eq!(cfg.u32(0x48), 0x801);
        program(&mut m, 1, 0xfee0_0000, 0x41, false);
        m.notify(1);
        assert!(rec.fired().is_empty(), "MSI-X is not enabled yet");
        cfg.write(0x42, &0xffffu16.to_le_bytes());
        assert_eq!(cfg.u16(0x42), 0xc002, "only enable and mask are writable");
        m.config_written(&cfg);
        m.notify(1);
        assert!(rec.fired().is_empty(), "function masked");
        cfg.write(0x43, &[0x80]);
        m.config_written(&cfg);
        assert_eq!(
            rec.fired(),
            vec![(0xfee0_0000, 0x41)],
            "pending vector delivered"
        );
        m.notify(7); // no such vector: ignored
        m.notify(NO_VECTOR);
        assert_eq!(rec.fired().len(), 1);
    }

    #[test]
    fn far_pba_and_table_offsets_read_as_zero() {
        let (_cfg, m, _rec) = setup();
        for off in [0x1000, u32::MAX as u64 - 3, u64::MAX - 3] {
            let mut v = [0xaau8; 4];
            m.read_pba(off, &mut v);
            assert_eq!(v, [0; 4], "{off:#x}");
            let mut v = [0xaau8; 4];
            m.read_table(off, &mut v);
            assert_eq!(v, [0; 4], "{off:#x}");
        }
    }

    #[test]
    fn masked_vectors_set_pending_bits() {
        let (mut cfg, mut m, rec) = setup();
        cfg.write(0x43, &[0x80]);
        m.config_written(&cfg);
        program(&mut m, 2, 0xfee0_1000, 0x55, true);
        m.notify(2);
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0b100);
        assert!(rec.fired().is_empty());
        m.write_table(16 * 2 + 12, &0u32.to_le_bytes());
        assert_eq!(rec.fired(), vec![(0xfee0_1000, 0x55)]);
        m.read_pba(0, &mut pba);
        assert_eq!(pba[0], 0);
        // Re-programming the message re-routes the vector.
        program(&mut m, 2, 0xfee0_2000, 0x66, false);
        m.notify(2);
        assert_eq!(rec.fired()[1], (0xfee0_2000, 0x66));
        let mut e = [0u8; 16];
        m.read_table(32, &mut e);
        assert_eq!(&e[..4], &0xfee0_2000u32.to_le_bytes());
        m.read_table(0x1000, &mut e);
        assert_eq!(e, [0; 16]);
        m.write_table(0x1000, &[1; 4]); // outside the table: ignored
    }
}
