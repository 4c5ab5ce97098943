//! What the fuzz targets (vmm/fuzz) drive, re-exported: exactly the items they name, and
//! nothing else of the crate is public but the entry points (lib.rs). Hidden from the docs:
//! it is no API, only the fuzz crate's view of the code it feeds with guest input.

pub use crate::backend::Backend;
pub use crate::devices::bus::BusDevice;
pub use crate::memory::GuestMemory;

/// Kernel formats from `--kernel`.
pub mod boot {
    pub use crate::boot::{detect, load_kernel};

    pub mod elf {
        pub use crate::boot::elf::load_direct;
    }
    pub mod linux {
        pub use crate::boot::linux::{load, parse};
    }
    pub mod multiboot {
        pub use crate::boot::multiboot::{find_header, load};
    }
}

/// The image index of `fugu image`.
pub mod image {
    pub use crate::image::fetch::parse_index;
    pub use crate::image::index::file_name;
}

/// fw_cfg from the guest.
pub mod fw_cfg {
    pub use crate::devices::legacy::fw_cfg::{FwCfg, LEN};
}

/// PCI configuration, BARs, MSI-X, and the interrupt controller the devices raise through.
pub mod pci {
    pub use crate::devices::pci::bus::{ConfigIo, Ecam, PciBus};
    pub use crate::devices::pci::config::ConfigSpace;
    pub use crate::devices::pci::i440fx::{I440fx, Piix3};
    pub use crate::devices::pci::irq::{InterruptController, IntxPending, IntxRaise, IrqError};
    pub use crate::devices::pci::msix::Msix;
    pub use crate::devices::pci::{PciDevice, IO_BASE, MMIO_BASE};
    /// What KVM answered, inside `IrqError::Kvm`.
    pub use crate::hypervisor::Error as KvmError;
}

/// Virtqueues, the virtio-pci transport, and the virtio-blk and virtio-net models.
pub mod virtio {
    pub use crate::devices::virtio::blk::{process_queue, Disk, Scratch};
    pub use crate::devices::virtio::net::{serve_once, Tap};
    pub use crate::devices::virtio::queue::{new_queue, QueueConfig, QueueImpl, Virtqueue};
    pub use crate::devices::virtio::transport::VirtioPci;
    pub use crate::devices::virtio::{
        ActivateError, Activation, NoSignal, VirtioDevice, COMMON_FEATURES,
    };
}

/// qcow2 image files.
pub mod qcow2 {
    pub use crate::devices::virtio::blk::qcow2::{create, Header, Qcow2};
}
