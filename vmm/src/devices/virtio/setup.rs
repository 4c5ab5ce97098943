//! The virtio devices of a machine: what `--disk` and `--net` ask for, and how they are put
//! on PCI bus 0 and on the port-I/O and MMIO buses.

use super::blk::{Block, Disk};
use super::net::{default_mac, parse_mac, Net, Tap};
use super::queue::QueueImpl;
use super::transport::VirtioPci;
use crate::devices::bus::Bus;
use crate::devices::pci::{
    self, irq::InterruptController, ConfigIo, Ecam, IoWindow, MmioWindow, PciBus,
};
use crate::hypervisor::{Backend, Vm};
use crate::memory::GuestMemory;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `--disk PATH[,ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// `--net tap=NAME[,mac=MAC]` (or just `--net NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

/// Parse `PATH[,ro]`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    let (path, read_only) = match s.rsplit_once(',') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some((_, opt)) if !opt.contains('/') => {
            return Err(format!("unknown disk option '{opt}' (use PATH or PATH,ro)"))
        }
        _ => (s, false),
    };
    if path.is_empty() {
        return Err("the disk path is empty".into());
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        read_only,
    })
}

/// Parse `tap=NAME[,mac=52:54:00:12:34:56]` or `NAME`.
pub fn parse_net(s: &str) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = None;
    for (i, part) in s.split(',').enumerate() {
        match part.split_once('=') {
            Some(("tap", v)) => tap = Some(v.to_string()),
            Some(("mac", v)) => mac = Some(parse_mac(v).map_err(|e| e.to_string())?),
            Some((k, _)) => {
                return Err(format!(
                    "unknown network option '{k}' (use tap=NAME[,mac=MAC])"
                ))
            }
            None if i == 0 => tap = Some(part.to_string()),
            None => {
                return Err(format!(
                    "'{part}' is not KEY=VALUE (use tap=NAME[,mac=MAC])"
                ))
            }
        }
    }
    let tap = tap
        .filter(|t| !t.is_empty())
        .ok_or("--net needs tap=NAME")?;
    Ok(NetConfig { tap, mac })
}

/// Bus 0 with the host bridge and the virtio devices, claimed on the buses: 0xCF8-0xCFF,
/// ECAM, and the I/O and memory windows where BARs decode.
pub fn attach(
    vm: Arc<dyn Vm>,
    mem: Arc<dyn GuestMemory>,
    backend: Backend,
    disks: &[DiskConfig],
    nets: &[NetConfig],
    pio: &mut Bus,
    mmio: &mut Bus,
) -> Result<Arc<PciBus>, String> {
    attach_with(vm, mem, backend, disks, nets, pio, mmio, None)
}

/// [`attach`], with `chipset` (`--bios`): the i440FX host bridge at 00:00.0, the PIIX3 ISA
/// bridge at 00:01.0 (the virtio devices follow from 00:02.0), and the first NIC's option ROM.
#[allow(clippy::too_many_arguments)]
pub fn attach_with(
    vm: Arc<dyn Vm>,
    mem: Arc<dyn GuestMemory>,
    backend: Backend,
    disks: &[DiskConfig],
    nets: &[NetConfig],
    pio: &mut Bus,
    mmio: &mut Bus,
    chipset: Option<&pci::i440fx::Chipset>,
) -> Result<Arc<PciBus>, String> {
    let kvm_irqs = pci::irq::KvmIrqs::new(vm.clone());
    let irq: Arc<dyn InterruptController> = kvm_irqs.clone();
    let qimpl = QueueImpl::for_backend(backend);
    let mut bus = PciBus::new();
    if chipset.is_some() {
        bus.set_host_bridge(Arc::new(Mutex::new(pci::i440fx::I440fx::new())));
        // The firmware's PIRQ routing also sends INTx to the PIC at the IRQ it wrote into
        // each device's Interrupt Line; a failure only loses PIC delivery (IOAPIC stays).
        let isa = pci::i440fx::Piix3::new().with_pirq_hook(Box::new(move |routes| {
            let _ = kvm_irqs.set_pic_routes(routes);
        }));
        bus.add(Arc::new(Mutex::new(isa)))
            .map_err(|e| e.to_string())?;
    }
    let add = |bus: &mut PciBus,
               dev: Box<dyn super::VirtioDevice>,
               rom: Option<&Vec<u8>>|
     -> Result<(), String> {
        let gsi = pci::intx_gsi(bus.next_slot());
        let mut d = VirtioPci::new(dev, mem.clone(), qimpl, irq.clone(), gsi, Some(vm.clone()))?;
        if let Some(rom) = rom {
            d.set_rom(rom.clone());
        }
        bus.add(Arc::new(Mutex::new(d)))
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    for d in disks {
        let disk = Disk::open(&d.path, d.read_only).map_err(|e| e.to_string())?;
        add(&mut bus, Box::new(Block::new(disk)), None)?;
    }
    for (i, n) in nets.iter().enumerate() {
        let tap = Tap::open(&n.tap).map_err(|e| e.to_string())?;
        let mac = n.mac.unwrap_or_else(|| default_mac(i as u8));
        let rom = chipset.and_then(|c| c.net_rom.as_ref()).filter(|_| i == 0);
        add(&mut bus, Box::new(Net::new(tap, mac)), rom)?;
    }
    let bus = Arc::new(bus);
    let claim =
        |b: &mut Bus, base: u64, len: u64, d: Arc<Mutex<dyn crate::devices::bus::BusDevice>>| {
            b.insert(base, len, d).map_err(|e| format!("PCI: {e}"))
        };
    claim(
        pio,
        pci::CONFIG_IO_BASE,
        pci::CONFIG_IO_LEN,
        Arc::new(Mutex::new(match chipset.and_then(|c| c.reset.clone()) {
            Some(reset) => ConfigIo::new(bus.clone()).with_reset(reset),
            None => ConfigIo::new(bus.clone()),
        })),
    )?;
    claim(
        pio,
        pci::IO_BASE,
        pci::IO_SIZE,
        Arc::new(Mutex::new(IoWindow::new(bus.clone()))),
    )?;
    if chipset.is_some() {
        // An i440FX has no ECAM, and the firmware places BARs anywhere in its 32-bit window.
        let (base, end) = pci::i440fx::PCI_WINDOW;
        claim(
            mmio,
            base,
            end - base,
            Arc::new(Mutex::new(MmioWindow::at(bus.clone(), base))),
        )?;
        return Ok(bus);
    }
    claim(
        mmio,
        pci::MMIO_BASE,
        pci::MMIO_SIZE,
        Arc::new(Mutex::new(MmioWindow::new(bus.clone()))),
    )?;
    claim(
        mmio,
        pci::ECAM_BASE,
        pci::ECAM_SIZE,
        Arc::new(Mutex::new(Ecam::new(bus.clone()))),
    )?;
    Ok(bus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_net_options_parse() {
        assert_eq!(
            parse_disk("d.img").unwrap(),
            DiskConfig {
                path: "d.img".into(),
                read_only: false
            }
        );
        assert!(parse_disk("/x/d.img,ro").unwrap().read_only);
        assert_eq!(
            parse_disk("/a,b/d.img").unwrap().path,
            PathBuf::from("/a,b/d.img")
        );
        assert!(parse_disk("d.img,sync").is_err());
        assert!(parse_disk(",ro").is_err());
        assert_eq!(
            parse_net("tap=tap0,mac=52:54:00:00:00:01").unwrap(),
            NetConfig {
                tap: "tap0".into(),
                mac: Some([0x52, 0x54, 0, 0, 0, 1])
            }
        );
        assert_eq!(parse_net("tap0").unwrap().tap, "tap0");
        assert!(parse_net("tap=").is_err());
        assert!(parse_net("tap=t,mac=1").is_err());
        assert!(parse_net("tap=t,speed=10").is_err());
        assert!(parse_net("mac=52:54:00:00:00:01").is_err());
    }

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
            let kvm = crate::hypervisor::open(backend).unwrap();
            let vm: Arc<dyn Vm> = Arc::from(kvm.create_vm().unwrap());
            vm.create_irq_chip().unwrap();
            let mem = crate::memory::allocate(backend, &[(0, MEM)]).unwrap();
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
            }];
            let (mut pio, mut mmio) = (Bus::default(), Bus::default());
            let _bus = attach(
                vm.clone(),
                mem.clone(),
                backend,
                &disks,
                &[],
                &mut pio,
                &mut mmio,
            )
            .unwrap();
            // A second VM (here: a second attach) cannot take the same writable image.
            let e = attach(
                vm.clone(),
                mem.clone(),
                backend,
                &disks,
                &[],
                &mut Bus::default(),
                &mut Bus::default(),
            )
            .err()
            .unwrap();
            assert!(e.contains("in use"), "{e}");

            // Enumerate: the host bridge and the disk at 00:01.0.
            wr(&pio, 0xcf8, 0x8000_0000, 4);
            assert_eq!(rd(&pio, 0xcfc, 4), 0x0008_1b36);
            wr(&pio, 0xcf8, 0x8000_0800, 4);
            assert_eq!(rd(&pio, 0xcfc, 4), 0x1001_1af4);
            let ecam = |reg: u64| pci::ECAM_BASE + (1 << 15) + reg;
            assert_eq!(rd(&mmio, ecam(0), 4), 0x1001_1af4);
            let bar4 = rd(&mmio, ecam(0x20), 4) & !0xf;
            let bar1 = rd(&mmio, ecam(0x14), 4) & !0xf;
            assert!(bar4 >= pci::MMIO_BASE && bar1 >= pci::MMIO_BASE);
            wr(&mmio, ecam(4), 7, 2);

            // MSI-X: vector 0 for the queue, enabled.
            wr(&mmio, bar1, 0xfee0_0000, 4);
            wr(&mmio, bar1 + 8, 0x32, 4);
            wr(&mmio, bar1 + 12, 0, 4);
            wr(&mmio, ecam(0x43), 0x80, 1);

            // Bring the device up through the modern registers and read sector 3.
            let mut d = Driver::new(mem.clone(), 0x10000, 16);
            let common = bar4 + crate::devices::virtio::transport::COMMON_OFFSET;
            wr(&mmio, common + 0x14, 3, 1);
            wr(&mmio, common + 0x08, 1, 4);
            wr(&mmio, common + 0x0c, 1, 4); // VERSION_1
            wr(&mmio, common + 0x14, 11, 1);
            assert_eq!(rd(&mmio, common + 0x14, 1), 11);
            wr(&mmio, common + 0x16, 0, 2);
            wr(&mmio, common + 0x18, 16, 2);
            wr(&mmio, common + 0x1a, 0, 2);
            wr(&mmio, common + 0x20, d.cfg.desc_table, 8);
            wr(&mmio, common + 0x28, d.cfg.avail_ring, 8);
            wr(&mmio, common + 0x30, d.cfg.used_ring, 8);
            wr(&mmio, common + 0x1c, 1, 2);
            wr(&mmio, common + 0x14, 15, 1);
            assert_eq!(rd(&mmio, common + 0x14, 1), 15);
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
                &mmio,
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
            wr(&mmio, common + 0x14, 0, 1);
            let _ = std::fs::remove_dir_all(img.parent().unwrap());
        }
    }
}
