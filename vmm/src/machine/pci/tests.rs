//! PCI wiring on a real KVM VM.

use super::*;
use crate::backend::Backend;
use crate::devices::virtio::setup::DiskConfig;

fn backends() -> Vec<Backend> {
    #[allow(unused_mut)] // i686 has the portable backend only
    let mut v = vec![Backend::Portable];
    #[cfg(target_arch = "x86_64")]
    v.push(Backend::RustVmm);
    v
}

fn rd(bus: &Bus, addr: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    bus.read(addr, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn wr(bus: &Bus, addr: u64, v: u64, len: usize) {
    bus.write(addr, &v.to_le_bytes()[..len]);
}

/// The whole path on a real KVM VM with each backend: GSI routing, irqfds (MSI and
/// resampled INTx), ioeventfds, enumeration through 0xCF8 and ECAM, a request served
/// through the MMIO BARs, and the image lock.
#[test]
fn virtio_blk_on_a_real_vm() {
    use crate::devices::pci::irq::{InterruptController, KvmIrqs};
    use crate::devices::virtio::testutil::Driver;
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIP: no /dev/kvm");
        return;
    }
    const MEM: u64 = 16 << 20;
    for backend in backends() {
        let kvm = backend.hypervisor().unwrap();
        let vm: Arc<dyn Vm> = Arc::from(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let mem = backend.memory(&[(0, MEM)]).unwrap();
        // SAFETY: `mem` outlives the VM in this test.
        unsafe {
            vm.set_user_memory_region(0, 0, MEM, mem.regions()[0].host_addr, false)
                .unwrap()
        };

        // The interrupt controller itself.
        let irqs = KvmIrqs::new(vm.clone());
        let gsi = irqs.msi_alloc().unwrap();
        assert!(gsi >= 24);
        irqs.msi_route(gsi, 0xfee0_0000, 0x31).unwrap();
        irqs.msi_fire(gsi);
        let raise = irqs.intx(18, Arc::new(|| false)).unwrap();
        raise();

        let img = crate::devices::virtio::blk::tests::image(&format!("vm-{backend:?}"), 8);
        let disks = [DiskConfig {
            path: img.clone(),
            read_only: false,
            format: None,
        }];
        let cfg = PciConfig {
            disks: &disks,
            nets: &[],
            queues: backend.queues(),
            chipset: None,
        };
        let mut buses = Buses::default();
        let map = attach(&vm, &mem, &cfg, &mut buses).unwrap();
        assert_eq!(map.disk_slots, [1]);
        let (pio, mmio) = (&buses.pio, &buses.mmio);
        // A second VM (here: a second attach) cannot take the same writable image.
        let e = attach(&vm, &mem, &cfg, &mut Buses::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("in use"), "{e}");

        // Enumerate: the host bridge and the disk at 00:01.0.
        wr(pio, 0xcf8, 0x8000_0000, 4);
        assert_eq!(rd(pio, 0xcfc, 4), 0x0008_1b36);
        wr(pio, 0xcf8, 0x8000_0800, 4);
        assert_eq!(rd(pio, 0xcfc, 4), 0x1001_1af4);
        let ecam = |reg: u64| pci::ECAM_BASE + (1 << 15) + reg;
        assert_eq!(rd(mmio, ecam(0), 4), 0x1001_1af4);
        let bar4 = rd(mmio, ecam(0x20), 4) & !0xf;
        let bar1 = rd(mmio, ecam(0x14), 4) & !0xf;
        assert!(bar4 >= pci::MMIO_BASE && bar1 >= pci::MMIO_BASE);
        wr(mmio, ecam(4), 7, 2);

        // MSI-X: vector 0 for the queue, enabled.
        wr(mmio, bar1, 0xfee0_0000, 4);
        wr(mmio, bar1 + 8, 0x32, 4);
        wr(mmio, bar1 + 12, 0, 4);
        wr(mmio, ecam(0x43), 0x80, 1);

        // Bring the device up through the modern registers and read sector 3.
        let mut d = Driver::new(mem.clone(), 0x10000, 16);
        let common = bar4 + crate::devices::virtio::transport::COMMON_OFFSET;
        wr(mmio, common + 0x14, 3, 1);
        wr(mmio, common + 0x08, 1, 4);
        wr(mmio, common + 0x0c, 1, 4); // VERSION_1
        wr(mmio, common + 0x14, 11, 1);
        assert_eq!(rd(mmio, common + 0x14, 1), 11);
        wr(mmio, common + 0x16, 0, 2);
        wr(mmio, common + 0x18, 16, 2);
        wr(mmio, common + 0x1a, 0, 2);
        wr(mmio, common + 0x20, d.cfg.desc_table, 8);
        wr(mmio, common + 0x28, d.cfg.avail_ring, 8);
        wr(mmio, common + 0x30, d.cfg.used_ring, 8);
        wr(mmio, common + 0x1c, 1, 2);
        wr(mmio, common + 0x14, 15, 1);
        assert_eq!(rd(mmio, common + 0x14, 1), 15);
        let mut h = [0u8; 16];
        h[8..].copy_from_slice(&3u64.to_le_bytes());
        mem.write(0x100000, &h).unwrap();
        let head = d.add_chain(&[
            (0x100000, 16, false),
            (0x101000, 512, true),
            (0x102000, 1, true),
        ]);
        d.publish(head);
        // The notify write: KVM's ioeventfd does this for a vCPU; here the bus does.
        wr(
            mmio,
            bar4 + crate::devices::virtio::transport::NOTIFY_OFFSET,
            0,
            2,
        );
        let mut used = None;
        for _ in 0..2000 {
            used = d.take_used();
            if used.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(used, Some((head as u32, 513)), "{backend:?}");
        assert_eq!(mem.read_u8(0x101000).unwrap(), 3);
        assert_eq!(mem.read_u8(0x102000).unwrap(), 0);
        wr(mmio, common + 0x14, 0, 1);
        let _ = std::fs::remove_dir_all(img.parent().unwrap());
    }
}
