//! PCI bus 0 of a machine: the host bridge (or, with `--bios`, the i440FX/PIIX3 chipset),
//! the virtio devices in command-line order, and the port-I/O and MMIO ranges where the bus
//! decodes (0xCF8-0xCFF, the I/O and memory windows, ECAM).
//!
//! Slots are handed out here and only here: [`PciMap`] records where each device landed, so
//! the firmware's bootorder names the slot the device really has.

use crate::devices::bus::{Bus, BusDevice, Buses};
use crate::devices::pci::{
    self, irq::InterruptController, ConfigIo, Ecam, IoWindow, MmioWindow, PciBus,
};
use crate::devices::virtio::blk::{Block, Disk};
use crate::devices::virtio::net::{default_mac, Net, Tap};
use crate::devices::virtio::queue::QueueImpl;
use crate::devices::virtio::setup::{DiskConfig, NetConfig};
use crate::devices::virtio::transport::VirtioPci;
use crate::devices::virtio::VirtioDevice;
use crate::hypervisor::Vm;
use crate::memory::GuestMemory;
use std::sync::{Arc, Mutex};

/// Why bus 0 cannot be built: the devices asked for, as opened, or the bus itself.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Conflict(#[from] crate::devices::virtio::setup::DeviceConflict),
    #[error(transparent)]
    Disk(#[from] crate::devices::virtio::blk::DiskError),
    #[error(transparent)]
    Tap(#[from] crate::devices::virtio::net::NetError),
    #[error("too many --net devices")]
    TooManyNets,
    #[error(transparent)]
    Bus(#[from] pci::PciError),
    /// VirtioPci::new's message: the transport's interrupt plumbing (the
    /// InterruptController trait) still reports Strings.
    #[error("{0}")]
    Transport(String),
    /// A window of the bus on the port or MMIO bus (a bug if it happens).
    #[error("PCI: {0}")]
    Window(#[source] crate::devices::bus::Overlap),
}

/// What goes on bus 0.
pub struct PciConfig<'a> {
    pub disks: &'a [DiskConfig],
    pub nets: &'a [NetConfig],
    /// The ring implementation the virtio devices use (chosen with the backend).
    pub queues: QueueImpl,
    /// `--bios`: the chipset SeaBIOS expects and the first NIC's option ROM.
    pub chipset: Option<&'a pci::i440fx::Chipset>,
}

/// Bus 0 once built: the bus and the slot of every virtio device.
pub struct PciMap {
    pub disk_slots: Vec<u8>,
    pub net_slots: Vec<u8>,
}

impl PciMap {
    /// The slot of the first disk or NIC, for the firmware's bootorder.
    pub fn boot_slot(&self, dev: crate::boot::firmware::BootDevice) -> Option<u8> {
        match dev {
            crate::boot::firmware::BootDevice::Disk => self.disk_slots.first().copied(),
            crate::boot::firmware::BootDevice::Net => self.net_slots.first().copied(),
        }
    }
}

/// Build bus 0 and claim its ranges on `buses`. Disks first, then NICs, each in the order
/// given; with a chipset the host bridge is 00:00.0, the ISA bridge 00:01.0, and the virtio
/// devices follow from 00:02.0.
pub fn attach(
    vm: &Arc<dyn Vm>,
    mem: &Arc<dyn GuestMemory>,
    cfg: &PciConfig,
    buses: &mut Buses,
) -> Result<PciMap, AttachError> {
    crate::devices::virtio::setup::check_devices(cfg.disks, cfg.nets)?;
    let kvm_irqs = pci::irq::KvmIrqs::new(vm.clone());
    let irq: Arc<dyn InterruptController> = kvm_irqs.clone();
    let mut bus = PciBus::new();
    if cfg.chipset.is_some() {
        bus.set_host_bridge(Arc::new(Mutex::new(pci::i440fx::I440fx::new())));
        // The firmware's PIRQ routing also sends INTx to the PIC at the IRQ it wrote into
        // each device's Interrupt Line; a failure only loses PIC delivery (IOAPIC stays).
        let isa = pci::i440fx::Piix3::new().with_pirq_hook(Box::new(move |routes| {
            let _ = kvm_irqs.set_pic_routes(routes);
        }));
        bus.add(Arc::new(Mutex::new(isa)))?;
    }
    let add = |bus: &mut PciBus,
               dev: Box<dyn VirtioDevice>,
               rom: Option<&Vec<u8>>|
     -> Result<u8, AttachError> {
        let gsi = pci::intx_gsi(bus.next_slot());
        let mut d = VirtioPci::new(
            dev,
            mem.clone(),
            cfg.queues,
            irq.clone(),
            gsi,
            Some(vm.clone()),
        )
        .map_err(AttachError::Transport)?;
        if let Some(rom) = rom {
            d.set_rom(rom.clone());
        }
        Ok(bus.add(Arc::new(Mutex::new(d)))?)
    };
    let mut disk_slots = Vec::new();
    for d in cfg.disks {
        let disk = Disk::open_as(&d.path, d.read_only, d.format)?;
        disk_slots.push(add(&mut bus, Box::new(Block::new(disk)), None)?);
    }
    let mut net_slots = Vec::new();
    for (i, n) in cfg.nets.iter().enumerate() {
        let tap = Tap::open(&n.tap)?;
        let index = u8::try_from(i).map_err(|_| AttachError::TooManyNets)?;
        let mac = n.mac.unwrap_or_else(|| default_mac(index));
        let rom = cfg
            .chipset
            .and_then(|c| c.net_rom.as_ref())
            .filter(|_| i == 0);
        net_slots.push(add(&mut bus, Box::new(Net::new(tap, mac)), rom)?);
    }
    let bus = Arc::new(bus);
    claim_windows(&bus, cfg.chipset, buses)?;
    Ok(PciMap {
        disk_slots,
        net_slots,
    })
}

/// Where the bus decodes: 0xCF8 (with the PIIX reset register under a chipset), the I/O
/// window, and either the i440FX's 32-bit window or fugu's MMIO window plus ECAM.
fn claim_windows(
    bus: &Arc<PciBus>,
    chipset: Option<&pci::i440fx::Chipset>,
    buses: &mut Buses,
) -> Result<(), AttachError> {
    let claim = |b: &mut Bus, base: u64, len: u64, d: Arc<Mutex<dyn BusDevice>>| {
        b.insert(base, len, d).map_err(AttachError::Window)
    };
    claim(
        &mut buses.pio,
        pci::CONFIG_IO_BASE,
        pci::CONFIG_IO_LEN,
        Arc::new(Mutex::new(match chipset.and_then(|c| c.reset.clone()) {
            Some(reset) => ConfigIo::new(bus.clone()).with_reset(reset),
            None => ConfigIo::new(bus.clone()),
        })),
    )?;
    claim(
        &mut buses.pio,
        pci::IO_BASE,
        pci::IO_SIZE,
        Arc::new(Mutex::new(IoWindow::new(bus.clone()))),
    )?;
    if chipset.is_some() {
        // An i440FX has no ECAM, and the firmware places BARs anywhere in its 32-bit window.
        let (base, end) = pci::i440fx::PCI_WINDOW;
        return claim(
            &mut buses.mmio,
            base,
            end - base,
            Arc::new(Mutex::new(MmioWindow::at(bus.clone(), base))),
        );
    }
    claim(
        &mut buses.mmio,
        pci::MMIO_BASE,
        pci::MMIO_SIZE,
        Arc::new(Mutex::new(MmioWindow::new(bus.clone()))),
    )?;
    claim(
        &mut buses.mmio,
        pci::ECAM_BASE,
        pci::ECAM_SIZE,
        Arc::new(Mutex::new(Ecam::new(bus.clone()))),
    )
}

#[cfg(test)]
mod tests;
