use super::*;
use crate::devices::pci::irq::tests::Recorder;
use crate::devices::virtio::blk::{Block, Disk};
use crate::devices::virtio::testutil::{impls, memories, Driver};
use crate::devices::virtio::{S_ACKNOWLEDGE, S_DRIVER, S_DRIVER_OK, S_FAILED, S_FEATURES_OK};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};

const MEM: u64 = 8 << 20;
const RING: u64 = 0x10000;

struct T {
    pci: VirtioPci,
    irq: Arc<Recorder>,
    path: std::path::PathBuf,
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

fn setup(mem: Arc<dyn GuestMemory>, which: QueueImpl, tag: &str) -> T {
    let path = crate::devices::virtio::blk::tests::image(&format!("pci-{tag}-{which:?}"), 32);
    let irq = Arc::new(Recorder::default());
    let pci = VirtioPci::new(
        Box::new(Block::new(Disk::open(&path, false).unwrap())),
        mem,
        which,
        irq.clone(),
        16,
        None,
    )
    .unwrap();
    T { pci, irq, path }
}

impl T {
    fn w(&mut self, off: u64, v: u64, len: usize) {
        self.pci.bar_write(MODERN_BAR, off, &v.to_le_bytes()[..len]);
    }
    fn r(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.pci.bar_read(MODERN_BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn status(&mut self) -> u8 {
        bits::lo8(self.r(0x14, 1))
    }
    /// Negotiate features and set up queue 0 from `d` (with `size`).
    fn bring_up(&mut self, d: &Driver, size: u16, features: u64) {
        self.w(0x14, 0, 1);
        self.w(0x14, (S_ACKNOWLEDGE | S_DRIVER) as u64, 1);
        for sel in 0..2u64 {
            self.w(0x08, sel, 4);
            self.w(0x0c, (features >> (32 * sel)) & 0xffff_ffff, 4);
        }
        self.w(0x14, (S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK) as u64, 1);
        self.w(0x16, 0, 2);
        self.w(0x18, size as u64, 2);
        self.w(0x20, d.cfg.desc_table, 8);
        self.w(0x28, d.cfg.avail_ring & 0xffff_ffff, 4);
        self.w(0x2c, d.cfg.avail_ring >> 32, 4);
        self.w(0x30, d.cfg.used_ring, 8);
        self.w(0x1c, 1, 2);
        self.w(
            0x14,
            (S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK) as u64,
            1,
        );
    }
    fn enable_msix(&mut self) {
        // Vector 0: config, vector 1: queue 0.
        for v in 0..2u64 {
            let mut e = [0u8; 16];
            e[0..4].copy_from_slice(&(0xfee0_0000u32 + bits::lo32(v)).to_le_bytes());
            e[8..12].copy_from_slice(&(0x40 + bits::lo32(v)).to_le_bytes());
            for k in 0..4 {
                self.pci.bar_write(
                    MSIX_BAR,
                    16 * v + 4 * k,
                    &e[usize::try_from(4 * k).unwrap()..usize::try_from(4 * k + 4).unwrap()],
                );
            }
        }
        let cap = 0x40;
        self.pci.config_write(cap + 3, &[0x80]);
    }
}

fn wait_used(d: &mut Driver) -> Option<(u32, u32)> {
    for _ in 0..2000 {
        if let Some(u) = d.take_used() {
            return Some(u);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

#[test]
fn pci_identity_and_capabilities() {
    let (_, mem) = memories(MEM).remove(0);
    let t = setup(mem, QueueImpl::InHouse, "ids");
    let c = t.pci.config();
    assert_eq!(c.u16(0), VENDOR);
    assert_eq!(c.u16(2), 0x1001, "transitional block device");
    assert_eq!(c.u16(0x2e), 2, "subsystem id = virtio type");
    assert_eq!(c.u8(0x3d), 1, "INTA#");
    // Walk the capability list: MSI-X then common, ISR, device, notify.
    let mut at = c.u8(0x34) as usize;
    let mut types = Vec::new();
    while at != 0 {
        if c.u8(at) == 0x09 {
            types.push(c.u8(at + 3));
            if c.u8(at + 3) != CAP_PCI_CFG {
                assert_eq!(c.u8(at + 4), bits::lo8(MODERN_BAR as u64));
            }
        } else {
            assert_eq!(c.u8(at), 0x11);
        }
        at = c.u8(at + 1) as usize;
    }
    assert_eq!(
        types,
        vec![CAP_COMMON, CAP_ISR, CAP_DEVICE, CAP_NOTIFY, CAP_PCI_CFG]
    );
}

#[test]
fn the_pci_cfg_capability_reaches_the_bars_through_configuration_space() {
    let (_, mem) = memories(MEM).remove(0);
    let mut t = setup(mem, QueueImpl::InHouse, "pcicfg");
    let cap = t.pci.pci_cfg_cap;
    let ack = bits::lo8(S_ACKNOWLEDGE as u64);
    assert_eq!(t.pci.config().u8(cap + 2), 20, "cap_len");
    let select = |t: &mut T, bar: u8, off: u32, len: u32| {
        t.pci.config_write(cap + PCI_CFG_BAR, &[bar]);
        t.pci.config_write(cap + PCI_CFG_OFFSET, &off.to_le_bytes());
        t.pci.config_write(cap + PCI_CFG_LENGTH, &len.to_le_bytes());
    };
    let window = |t: &mut T| {
        let mut v = [0u8; 4];
        t.pci.config_read(cap + PCI_CFG_DATA, &mut v);
        u32::from_le_bytes(v)
    };
    // Read: the block device's capacity (32 sectors) from the device configuration.
    select(
        &mut t,
        bits::lo8(MODERN_BAR as u64),
        bits::lo32(DEVICE_OFFSET),
        4,
    );
    assert_eq!(window(&mut t), 32);
    // Write: device_status (common configuration 0x14, one byte) through the window.
    select(&mut t, bits::lo8(MODERN_BAR as u64), 0x14, 1);
    t.pci
        .config_write(cap + PCI_CFG_DATA, &[ack, 0xaa, 0xbb, 0xcc]);
    assert_eq!(t.status(), ack, "only cap.length bytes are written");
    assert_eq!(window(&mut t) & 0xff, S_ACKNOWLEDGE);
    // The legacy I/O BAR is reachable too (device status at 0x12).
    select(&mut t, bits::lo8(LEGACY_BAR as u64), 0x12, 1);
    assert_eq!(window(&mut t) & 0xff, S_ACKNOWLEDGE);
    // Invalid selections are ignored: a bad length, a misaligned offset, a missing BAR.
    for (bar, off, len) in [
        (bits::lo8(MODERN_BAR as u64), 0x14, 3),
        (bits::lo8(MODERN_BAR as u64), 0x15, 2),
        (2, 0, 4),
        (0xff, 0, 4),
        (bits::lo8(MODERN_BAR as u64), bits::lo32(MODERN_BAR_SIZE), 4),
        (bits::lo8(MSIX_BAR as u64), 0xffff_fffc, 4),
        (bits::lo8(LEGACY_BAR as u64), 0xfffe, 2),
    ] {
        select(&mut t, bar, off, len);
        t.pci.config_write(cap + PCI_CFG_DATA, &[0, 0, 0, 0]);
        let _ = window(&mut t);
        assert_eq!(t.status(), ack, "{bar} {off:#x} {len}");
    }
    // The fixed fields of the capability are read-only.
    t.pci.config_write(cap + 3, &[1]);
    assert_eq!(t.pci.config().u8(cap + 3), CAP_PCI_CFG);
}

#[test]
fn modern_driver_reads_and_writes_through_msix() {
    for (_, mem) in memories(MEM) {
        for which in impls() {
            let mut t = setup(mem.clone(), which, "modern");
            let mut d = Driver::new(mem.clone(), RING, 16);
            t.enable_msix();
            let offered = t.pci.offered;
            assert_ne!(offered & super::super::F_VERSION_1, 0);
            t.w(0x00, 1, 4);
            assert_eq!(t.r(0x04, 4), offered >> 32);
            t.bring_up(&d, 16, offered);
            t.w(0x16, 0, 2);
            t.w(0x1a, 1, 2);
            t.w(0x10, 0, 2);
            assert_eq!(t.r(0x1a, 2), 1);
            assert_eq!(
                t.status() & bits::lo8(S_DRIVER_OK as u64),
                bits::lo8(S_DRIVER_OK as u64),
                "{which:?}"
            );
            // A read of sector 5 and a write to sector 6.
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
            h[8..].copy_from_slice(&5u64.to_le_bytes());
            mem.write(0x100000, &h).unwrap();
            let head = d.add_chain(&[
                (0x100000, 16, false),
                (0x200000, 512, true),
                (0x300000, 1, true),
            ]);
            d.publish(head);
            t.w(NOTIFY_OFFSET, 0, 2);
            assert_eq!(wait_used(&mut d), Some((head as u32, 513)), "{which:?}");
            assert_eq!(mem.read_u8(0x200000).unwrap(), 5);
            h[..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
            h[8..].copy_from_slice(&6u64.to_le_bytes());
            mem.write(0x100000, &h).unwrap();
            let head = d.add_chain(&[
                (0x100000, 16, false),
                (0x200000, 512, false),
                (0x300000, 1, true),
            ]);
            d.publish(head);
            t.w(NOTIFY_OFFSET, 0, 2);
            assert_eq!(wait_used(&mut d), Some((head as u32, 1)));
            let img = std::fs::read(&t.path).unwrap();
            assert_eq!(img[6 * 512..7 * 512], [5u8; 512]);
            let fired = t.irq.fired();
            assert!(!fired.is_empty() && fired.iter().all(|&f| f == (0xfee0_0001, 0x41)));
            assert_eq!(bits::lo8(t.r(ISR_OFFSET, 1)) & ISR_QUEUE, ISR_QUEUE);
            assert_eq!(t.r(ISR_OFFSET, 1), 0, "ISR clears on read");
            // Device configuration: capacity.
            assert_eq!(t.r(DEVICE_OFFSET, 8), 32);
            // Reset stops everything and clears the registers.
            t.w(0x14, 0, 1);
            assert_eq!(t.status(), 0);
            assert_eq!(t.r(0x1c, 2), 0);
            assert_eq!(t.r(0x1a, 2), NO_VECTOR as u64);
        }
    }
}

#[test]
fn an_option_rom_sits_behind_the_rom_bar() {
    let (_, mem) = memories(MEM).remove(0);
    let path = crate::devices::virtio::blk::tests::image("rom", 8);
    let mut pci = VirtioPci::new(
        Box::new(Block::new(Disk::open(&path, false).unwrap())),
        mem,
        QueueImpl::InHouse,
        Arc::new(Recorder::default()),
        16,
        None,
    )
    .unwrap();
    pci.set_rom(b"\x55\xaafugu-rom".repeat(300));
    assert_eq!(pci.config().rom_size(), 4096);
    let dev = Arc::new(Mutex::new(pci));
    let mut bus = crate::devices::pci::PciBus::new();
    bus.add(dev.clone()).unwrap();
    let rom = lock(&dev).config().u32(0x30) as u64;
    assert_ne!(rom, 0);
    lock(&dev).config_write(0x04, &[2, 0]);
    let mut b = [0u8; 4];
    assert!(!bus.mmio_read(rom, &mut b[..2]), "ROM not enabled yet");
    lock(&dev).config_write(0x30, &(bits::lo32(rom) | 1).to_le_bytes());
    assert!(bus.mmio_read(rom, &mut b));
    assert_eq!(&b, b"\x55\xaafu");
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn unoffered_features_are_refused() {
    let (_, mem) = memories(MEM).remove(0);
    let mut t = setup(mem.clone(), QueueImpl::InHouse, "feat");
    t.w(0x14, (S_ACKNOWLEDGE | S_DRIVER) as u64, 1);
    t.w(0x08, 1, 4);
    t.w(0x0c, 1 << 20, 4); // bit 52: not offered
    t.w(0x14, (S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK) as u64, 1);
    assert_eq!(t.status() & bits::lo8(S_FEATURES_OK as u64), 0);
    t.w(0x14, (S_ACKNOWLEDGE | S_DRIVER | S_FAILED) as u64, 1);
    t.w(0x14, 0, 1);
    assert_eq!(t.status(), 0);
}

#[test]
fn bad_queue_sizes_and_layouts_set_needs_reset() {
    for (_, mem) in memories(MEM) {
        for which in impls() {
            for bad in 0..3 {
                let mut t = setup(mem.clone(), which, "needsreset");
                let mut d = Driver::new(mem.clone(), RING, 16);
                if bad == 2 {
                    d.cfg.used_ring = MEM + 0x1000;
                }
                t.bring_up(&d, [12, 1024, 16][bad], t.pci.offered);
                let st = t.status();
                assert_ne!(
                    st & bits::lo8(S_NEEDS_RESET as u64),
                    0,
                    "{which:?} case {bad}"
                );
                assert_eq!(bits::lo8(t.r(ISR_OFFSET, 1)) & ISR_CONFIG, ISR_CONFIG);
                assert!(t.irq.intx_count() > 0, "config interrupt over INTx");
                // The driver resets and the device works again.
                t.w(0x14, 0, 1);
                assert_eq!(t.status(), 0);
                let d = Driver::new(mem.clone(), RING, 16);
                t.bring_up(&d, 16, t.pci.offered);
                assert_eq!(t.status() & bits::lo8(S_NEEDS_RESET as u64), 0);
            }
        }
    }
}

#[test]
fn read_only_registers_ignore_writes() {
    let (_, mem) = memories(MEM).remove(0);
    let mut t = setup(mem, QueueImpl::InHouse, "ro");
    let before: Vec<u64> = [0x04, 0x12, 0x15, 0x1e]
        .iter()
        .map(|&o| t.r(o, 2))
        .collect();
    for o in [0x04u64, 0x12, 0x15, 0x1e, 0x36, 0x40, 0x7ff] {
        t.w(o, 0xffff, 2);
    }
    let after: Vec<u64> = [0x04, 0x12, 0x15, 0x1e]
        .iter()
        .map(|&o| t.r(o, 2))
        .collect();
    assert_eq!(before, after);
    // Capacity in the device configuration is read-only.
    t.w(DEVICE_OFFSET, 0x1234, 8);
    assert_eq!(t.r(DEVICE_OFFSET, 8), 32);
    // An out-of-range vector reads back as NO_VECTOR; a queue select past the end reads 0.
    t.w(0x10, 77, 2);
    assert_eq!(t.r(0x10, 2), NO_VECTOR as u64);
    t.w(0x16, 9, 2);
    assert_eq!(t.r(0x18, 2), 0);
    t.w(0x18, 8, 2);
    t.w(0x1c, 1, 2);
    // PCI identity cannot be changed.
    t.pci.config_write(0, &[0, 0, 0, 0]);
    assert_eq!(t.pci.config().u16(0), VENDOR);
    // Random garbage on every BAR never panics.
    let mut rng = crate::devices::virtio::testutil::Rng(99);
    for _ in 0..20_000 {
        let bar = [0, 1, 2, 4, 5][usize::try_from(rng.below(5)).unwrap()];
        let off = rng.below(0x4100);
        let len = [1, 2, 4, 8][usize::try_from(rng.below(4)).unwrap()];
        if rng.below(2) == 0 {
            t.pci
                .bar_write(bar, off, &rng.next_u64().to_le_bytes()[..len]);
        } else {
            let mut b = [0u8; 8];
            t.pci.bar_read(bar, off, &mut b[..len]);
        }
    }
    t.w(0x14, 0, 1);
}

#[test]
fn legacy_driver_uses_the_io_bar() {
    for (_, mem) in memories(MEM) {
        for which in impls() {
            let mut t = setup(mem.clone(), which, "legacy");
            let rd = |t: &mut T, off: u64, len: usize| {
                let mut b = [0u8; 4];
                t.pci.bar_read(LEGACY_BAR, off, &mut b[..len]);
                u32::from_le_bytes(b)
            };
            let wr = |t: &mut T, off: u64, v: u32, len: usize| {
                t.pci.bar_write(LEGACY_BAR, off, &v.to_le_bytes()[..len])
            };
            assert_eq!(rd(&mut t, 0, 4), bits::lo32(t.pci.offered));
            assert_eq!(rd(&mut t, 0x0c, 2), 256, "queue size");
            assert_eq!(rd(&mut t, 0x14, 4), 32, "capacity follows the header");
            // The rings the PFN below describes, zeroed before the device starts.
            let mut d = Driver::new(mem.clone(), 0x20000, 256);
            wr(&mut t, 0x12, S_ACKNOWLEDGE | S_DRIVER, 1);
            wr(&mut t, 0x04, 0, 4);
            wr(&mut t, 0x0e, 0, 2);
            let pfn = 0x20u32; // rings at 0x20000
            wr(&mut t, 0x08, pfn, 4);
            wr(&mut t, 0x12, S_ACKNOWLEDGE | S_DRIVER | S_DRIVER_OK, 1);
            assert_eq!(d.cfg.used_ring, 0x22000, "the legacy layout");
            let mut h = [0u8; 16];
            h[8..].copy_from_slice(&2u64.to_le_bytes());
            mem.write(0x100000, &h).unwrap();
            let head = d.add_chain(&[
                (0x100000, 16, false),
                (0x200000, 512, true),
                (0x300000, 1, true),
            ]);
            d.publish(head);
            wr(&mut t, 0x10, 0, 2);
            assert_eq!(wait_used(&mut d), Some((head as u32, 513)), "{which:?}");
            assert_eq!(mem.read_u8(0x200000).unwrap(), 2);
            assert!(t.irq.intx_count() > 0);
            assert_eq!(bits::lo8(rd(&mut t, 0x13, 1)) & ISR_QUEUE, ISR_QUEUE);
            assert_eq!(rd(&mut t, 0x13, 1), 0);
            wr(&mut t, 0x12, 0, 1);
            assert_eq!(t.status(), 0);
        }
    }
}
