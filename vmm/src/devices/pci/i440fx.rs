//! The chipset functions firmware expects on bus 0 (used with `--bios`): an Intel 440FX host
//! bridge at 00:00.0 (8086:1237, with QEMU's subsystem 1af4:1100, which is how SeaBIOS knows
//! it runs on a QEMU-like machine) and a PIIX3 PCI-to-ISA bridge at 00:01.0 (8086:7000).
//!
//! PAM: the 440FX's Programmable Attribute Map registers (0x59-0x5f) steer reads and writes
//! of 0xC0000-0xFFFFF between DRAM and the ROM. fugu keeps that range as ordinary RAM that
//! already holds the BIOS image's tail (see boot/firmware.rs), which is what the firmware
//! arranges with PAM anyway: SeaBIOS enables DRAM read/write, copies itself from the ROM
//! image below 4 GiB (a copy of identical bytes here), and runs. The registers keep what the
//! firmware writes, so it reads back its own settings; the final "read-only" setting is not
//! enforced (the shadow stays writable, which no boot path relies on).

use super::config::ConfigSpace;
use super::PciDevice;

pub const I440FX_VENDOR: u16 = 0x8086;
pub const I440FX_DEVICE: u16 = 0x1237;
pub const PIIX3_DEVICE: u16 = 0x7000;
/// QEMU's subsystem IDs, which SeaBIOS checks to recognise a QEMU machine.
pub const QEMU_SUBSYSTEM_VENDOR: u16 = 0x1af4;
pub const QEMU_SUBSYSTEM: u16 = 0x1100;
/// Where firmware places 32-bit BARs on this chipset: from 2 GiB (3 GiB when RAM reaches
/// past 2 GiB; RAM accesses never reach the bus) up to the IOAPIC.
pub const PCI_WINDOW: (u64, u64) = (0x8000_0000, 0xfec0_0000);
/// PAM0-PAM6.
pub const PAM_FIRST: usize = 0x59;
pub const PAM_LAST: usize = 0x5f;
/// SMRAM control.
const SMRAM: usize = 0x72;
/// PIIX3 PIRQ[A-D] route control.
pub const PIRQ_FIRST: usize = 0x60;
pub const PIRQ_LAST: usize = 0x63;

/// Config bytes the firmware may write beyond the standard header: stored as written.
fn chipset_write(cfg: &mut ConfigSpace, writable: &[(usize, usize)], off: usize, data: &[u8]) {
    let mut rest = Vec::new();
    for (i, &b) in data.iter().enumerate() {
        let o = off + i;
        if writable.iter().any(|&(a, z)| (a..=z).contains(&o)) {
            cfg.set_bytes(o, &[b]);
        } else {
            rest.push((o, b));
        }
    }
    for (o, b) in rest {
        cfg.write(o, &[b]);
    }
}

/// The 440FX host bridge (PMC) with its PAM and SMRAM registers.
pub struct I440fx {
    cfg: ConfigSpace,
}

impl I440fx {
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(I440FX_VENDOR, I440FX_DEVICE, 0x06_00_00, 2);
        cfg.set_subsystem(QEMU_SUBSYSTEM_VENDOR, QEMU_SUBSYSTEM);
        cfg.set_bytes(SMRAM, &[0x02]);
        I440fx { cfg }
    }

    /// The PAM attribute nibble for legacy address `addr` (0xC0000-0xFFFFF): bit 0 read
    /// enable, bit 1 write enable (DRAM), as the firmware last programmed it.
    pub fn pam_attributes(&self, addr: u64) -> Option<u8> {
        let (reg, hi) = match addr {
            0xF_0000..=0xF_FFFF => (PAM_FIRST, true),
            0xC_0000..=0xE_FFFF => {
                let seg = ((addr - 0xC_0000) / 0x4000) as usize; // 16 KiB segments
                (PAM_FIRST + 1 + seg / 2, seg % 2 == 1)
            }
            _ => return None,
        };
        let v = self.cfg.u8(reg);
        Some(if hi { v >> 4 } else { v } & 3)
    }
}

impl Default for I440fx {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for I440fx {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn config_write(&mut self, off: usize, data: &[u8]) {
        chipset_write(
            &mut self.cfg,
            &[(PAM_FIRST, PAM_LAST), (SMRAM, SMRAM)],
            off,
            data,
        );
    }
    fn bar_read(&mut self, _bar: usize, _off: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _off: u64, _data: &[u8]) {}
}

/// The PIIX3 ISA bridge: the PIRQ routing registers the firmware programs (IRQ 10/11 for
/// PCI INTx on QEMU-like machines) and its device identity. When they change, `on_pirq`
/// receives the (GSI, ISA IRQ) pairs that make each slot's INTA# also reach the 8259 PIC at
/// the IRQ the firmware wrote into the device's Interrupt Line (the IOAPIC routes stay).
pub struct Piix3 {
    cfg: ConfigSpace,
    on_pirq: Option<PirqHook>,
}

/// Receives the INTx-to-PIC routes, as (GSI, ISA IRQ) pairs.
pub type PirqHook = Box<dyn Fn(&[(u32, u32)]) + Send>;

/// The (GSI, ISA IRQ) pairs for `pirq` (the PIRQA-D registers): slot s's INTA# is IOAPIC
/// input [`super::intx_gsi`]`(s)` = 16 + s % 4, and firmware routes it through PIRQ
/// (s - 1) % 4 (the i440FX swizzle, counting from the ISA bridge at slot 1).
pub fn pic_routes(pirq: [u8; 4]) -> Vec<(u32, u32)> {
    (0..4u8)
        .filter_map(|k| {
            let gsi = super::intx_gsi(k);
            let v = pirq[((k + 3) % 4) as usize];
            (v & 0x80 == 0 && (v & 0x0f) >= 3).then_some((gsi, (v & 0x0f) as u32))
        })
        .collect()
}

impl Piix3 {
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(I440FX_VENDOR, PIIX3_DEVICE, 0x06_01_00, 0);
        cfg.set_subsystem(QEMU_SUBSYSTEM_VENDOR, QEMU_SUBSYSTEM);
        // Multi-function header (the PIIX3's IDE/USB functions live at .1/.2; none here).
        cfg.set_bytes(super::config::HEADER_TYPE, &[0x80]);
        // PIRQ routing disabled at reset (bit 7).
        cfg.set_bytes(PIRQ_FIRST, &[0x80; 4]);
        Piix3 { cfg, on_pirq: None }
    }

    /// Call `hook` with the INTx-to-PIC routes whenever the PIRQ registers change.
    pub fn with_pirq_hook(mut self, hook: PirqHook) -> Self {
        self.on_pirq = Some(hook);
        self
    }

    /// The ISA IRQ PIRQ `n` (0-3 = A-D) is routed to, if enabled.
    pub fn pirq(&self, n: usize) -> Option<u8> {
        let v = self.cfg.u8(PIRQ_FIRST + n.min(3));
        (v & 0x80 == 0).then_some(v & 0x0f)
    }
}

impl Default for Piix3 {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for Piix3 {
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn config_write(&mut self, off: usize, data: &[u8]) {
        let before = self.cfg.u32(PIRQ_FIRST);
        chipset_write(&mut self.cfg, &[(PIRQ_FIRST, PIRQ_LAST)], off, data);
        let after = self.cfg.u32(PIRQ_FIRST);
        if before != after {
            if let Some(hook) = &self.on_pirq {
                hook(&pic_routes(after.to_le_bytes()));
            }
        }
    }
    fn bar_read(&mut self, _bar: usize, _off: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _off: u64, _data: &[u8]) {}
}

/// What `--bios` puts on bus 0 besides the virtio devices: the chipset, and the option ROM of
/// the (first) virtio-net function.
#[derive(Default, Clone)]
pub struct Chipset {
    /// The option ROM image given to the first NIC (iPXE), if any.
    pub net_rom: Option<Vec<u8>>,
    /// What the PIIX reset control register (port 0xCF9) does on a reset request.
    pub reset: Option<super::bus::ResetHook>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_pam_and_pirq_registers() {
        let mut h = I440fx::new();
        let mut v = [0u8; 4];
        h.config().read(0, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1237_8086);
        h.config().read(0x2c, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1100_1af4);
        assert_eq!(h.pam_attributes(0xF_0000), Some(0));
        // What SeaBIOS writes: dword accesses covering 0x58-0x5f.
        h.config_write(0x58, &[0x00, 0x30, 0x33, 0x33]);
        h.config_write(0x5c, &[0x33, 0x33, 0x33, 0x33]);
        assert_eq!(h.pam_attributes(0xF_8000), Some(3));
        assert_eq!(h.pam_attributes(0xC_4000), Some(3));
        h.config_write(0x59, &[0x10]);
        assert_eq!(h.pam_attributes(0xF_0000), Some(1));
        assert_eq!(h.pam_attributes(0x10_0000), None);
        // The identity stays read-only.
        h.config_write(0, &[0, 0, 0, 0]);
        h.config().read(0, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1237_8086);

        let mut p = Piix3::new();
        assert_eq!(p.pirq(0), None);
        p.config_write(0x60, &[10, 10, 11, 11]);
        assert_eq!(p.pirq(0), Some(10));
        assert_eq!(p.pirq(3), Some(11));
        p.config().read(0x0c, &mut v);
        assert_eq!(v[2], 0x80, "multi-function header");

        // What SeaBIOS programs (PIRQA-D = 10, 10, 11, 11): slot 2 (GSI 18) uses PIRQB,
        // slot 3 (GSI 19) PIRQC, slot 4 (GSI 16) PIRQD, slot 1 (GSI 17) PIRQA.
        assert_eq!(
            pic_routes([10, 10, 11, 11]),
            vec![(16, 11), (17, 10), (18, 10), (19, 11)]
        );
        assert_eq!(pic_routes([0x80, 0x80, 0x80, 0x80]), vec![]);
        assert_eq!(
            pic_routes([0x8a, 2, 11, 0]),
            vec![(19, 11)],
            "disabled or invalid"
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut p = Piix3::new().with_pirq_hook(Box::new(move |r| {
            s2.lock().unwrap().push(r.to_vec());
        }));
        p.config_write(0x60, &[10, 10, 11, 11]);
        p.config_write(0x60, &[10]); // unchanged: no call
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
