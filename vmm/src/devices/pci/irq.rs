//! Interrupt delivery for PCI functions: MSI routes (KVM GSI routing + irqfd) and INTx lines
//! on the IOAPIC (level-triggered, through a resampling irqfd).

use crate::devices::virtio::sys::{poll, EventFd};
use crate::hypervisor::kvm_abi::kvm_irq_routing_entry;
use crate::hypervisor::Vm;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// Raise an INTx line (it stays up until the guest's EOI, then is re-raised while pending).
pub type IntxRaise = Arc<dyn Fn() + Send + Sync>;
/// Asked at each EOI: whether the device still has an interrupt pending.
pub type IntxPending = Arc<dyn Fn() -> bool + Send + Sync>;

/// Where PCI interrupts go. Implemented over KVM by [`KvmIrqs`].
pub trait InterruptController: Send + Sync {
    /// A new MSI route (a GSI on KVM) with nothing routed yet.
    fn msi_alloc(&self) -> Result<u32, IrqError>;
    /// Point route `gsi` at the message `addr`/`data`.
    fn msi_route(&self, gsi: u32, addr: u64, data: u32) -> Result<(), IrqError>;
    /// Deliver route `gsi`'s message.
    fn msi_fire(&self, gsi: u32);
    /// A level-triggered INTx source on IOAPIC input `gsi`.
    fn intx(&self, gsi: u32, pending: IntxPending) -> Result<IntxRaise, IrqError>;
}

/// Why an interrupt route or line could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    #[error("out of interrupt routes")]
    OutOfRoutes,
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// KVM refused an irqfd.
    #[error(transparent)]
    Kvm(#[from] crate::hypervisor::Error),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("cannot start the INTx thread: {0}")]
    Thread(#[source] std::io::Error),
}

const ROUTING_IRQCHIP: u32 = 1;
const ROUTING_MSI: u32 = 2;
const IRQCHIP_PIC_MASTER: u32 = 0;
const IRQCHIP_PIC_SLAVE: u32 = 1;
const IRQCHIP_IOAPIC: u32 = 2;
/// IOAPIC inputs; MSI routes use GSIs above them.
pub const IOAPIC_PINS: u32 = 24;
/// KVM's limit on routes (KVM_MAX_IRQ_ROUTES).
const MAX_GSI: u32 = 4096;

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u[0] = chip;
    e.u[1] = pin;
    e
}

/// KVM's default routing for an in-kernel PIC + IOAPIC (kept when MSI routes are added,
/// since KVM_SET_GSI_ROUTING replaces the whole table).
pub fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        v.push(irqchip(gsi, IRQCHIP_IOAPIC, gsi));
        if gsi < 16 {
            let chip = if gsi < 8 {
                IRQCHIP_PIC_MASTER
            } else {
                IRQCHIP_PIC_SLAVE
            };
            v.push(irqchip(gsi, chip, gsi % 8));
        }
    }
    v
}

/// KVM refused the GSI routing table.
#[derive(Debug, thiserror::Error)]
#[error("cannot set the interrupt routing: {0}")]
pub struct RoutingError(#[source] crate::hypervisor::Error);

struct KvmState {
    next_gsi: u32,
    msi: BTreeMap<u32, kvm_irq_routing_entry>,
    irqfds: BTreeMap<u32, EventFd>,
    /// INTx GSIs also routed to an 8259 input (`--bios`: the PIIX3 PIRQ registers), as
    /// (gsi, ISA IRQ).
    pic: Vec<(u32, u32)>,
}

/// Interrupts through KVM: GSI routing, irqfds and resampling irqfds.
pub struct KvmIrqs {
    vm: Arc<dyn Vm>,
    state: Mutex<KvmState>,
}

impl KvmIrqs {
    pub fn new(vm: Arc<dyn Vm>) -> Arc<Self> {
        Arc::new(KvmIrqs {
            vm,
            state: Mutex::new(KvmState {
                next_gsi: IOAPIC_PINS,
                msi: BTreeMap::new(),
                irqfds: BTreeMap::new(),
                pic: Vec::new(),
            }),
        })
    }

    /// Also deliver INTx GSIs to the 8259 PIC: `routes` are (gsi, ISA IRQ) pairs, replacing
    /// the previous set (the PIIX3's PIRQ registers, as the firmware programs them).
    pub fn set_pic_routes(&self, routes: &[(u32, u32)]) -> Result<(), RoutingError> {
        let mut st = crate::sync::lock(&self.state);
        st.pic = routes
            .iter()
            .copied()
            .filter(|&(gsi, irq)| gsi < IOAPIC_PINS && irq < 16)
            .collect();
        self.push_routes(&st)
    }

    fn push_routes(&self, st: &KvmState) -> Result<(), RoutingError> {
        let mut all = default_routes();
        for &(gsi, irq) in &st.pic {
            let chip = if irq < 8 {
                IRQCHIP_PIC_MASTER
            } else {
                IRQCHIP_PIC_SLAVE
            };
            all.push(irqchip(gsi, chip, irq % 8));
        }
        all.extend(st.msi.values().copied());
        self.vm.set_gsi_routing(&all).map_err(RoutingError)
    }
}

impl InterruptController for KvmIrqs {
    fn msi_alloc(&self) -> Result<u32, IrqError> {
        let mut st = crate::sync::lock(&self.state);
        if st.next_gsi >= MAX_GSI {
            return Err(IrqError::OutOfRoutes);
        }
        let gsi = st.next_gsi;
        let fd = EventFd::new().map_err(IrqError::EventFd)?;
        self.vm.register_irqfd(fd.as_raw_fd(), gsi, None)?;
        st.next_gsi += 1;
        st.irqfds.insert(gsi, fd);
        Ok(gsi)
    }

    fn msi_route(&self, gsi: u32, addr: u64, data: u32) -> Result<(), IrqError> {
        let mut st = crate::sync::lock(&self.state);
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: ROUTING_MSI,
            ..Default::default()
        };
        e.u[0] = crate::bits::lo32(addr);
        e.u[1] = crate::bits::hi32(addr);
        e.u[2] = data;
        st.msi.insert(gsi, e);
        Ok(self.push_routes(&st)?)
    }

    fn msi_fire(&self, gsi: u32) {
        let st = crate::sync::lock(&self.state);
        if let Some(fd) = st.irqfds.get(&gsi) {
            fd.signal();
        }
    }

    fn intx(&self, gsi: u32, pending: IntxPending) -> Result<IntxRaise, IrqError> {
        let irqfd = EventFd::new().map_err(IrqError::EventFd)?;
        let resample = EventFd::new().map_err(IrqError::EventFd)?;
        self.vm
            .register_irqfd(irqfd.as_raw_fd(), gsi, Some(resample.as_raw_fd()))?;
        let irqfd = Arc::new(irqfd);
        let again = irqfd.clone();
        // The guest's EOI lowers the line and signals `resample`; raise it again while the
        // device still has something pending. Blocks in poll: no busy loop.
        std::thread::Builder::new()
            .name(format!("intx-gsi{gsi}"))
            .spawn(move || loop {
                if poll(&[(resample.as_raw_fd(), libc::POLLIN)], -1).is_err() {
                    return;
                }
                if resample.drain() > 0 && pending() {
                    again.signal();
                }
            })
            .map_err(IrqError::Thread)?;
        Ok(Arc::new(move || irqfd.signal()))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Records what would have been delivered.
    #[derive(Default)]
    pub struct Recorder {
        routes: Mutex<BTreeMap<u32, (u64, u32)>>,
        next: Mutex<u32>,
        fired: Mutex<Vec<(u64, u32)>>,
        pub intx_raised: Arc<std::sync::atomic::AtomicU32>,
    }

    impl Recorder {
        pub fn fired(&self) -> Vec<(u64, u32)> {
            self.fired.lock().unwrap().clone()
        }
        pub fn intx_count(&self) -> u32 {
            self.intx_raised.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl InterruptController for Recorder {
        fn msi_alloc(&self) -> Result<u32, IrqError> {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            Ok(IOAPIC_PINS + *n)
        }
        fn msi_route(&self, gsi: u32, addr: u64, data: u32) -> Result<(), IrqError> {
            self.routes.lock().unwrap().insert(gsi, (addr, data));
            Ok(())
        }
        fn msi_fire(&self, gsi: u32) {
            if let Some(m) = self.routes.lock().unwrap().get(&gsi) {
                self.fired.lock().unwrap().push(*m);
            }
        }
        fn intx(&self, _gsi: u32, _pending: IntxPending) -> Result<IntxRaise, IrqError> {
            let c = self.intx_raised.clone();
            Ok(Arc::new(move || {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }))
        }
    }

    #[test]
    fn default_routes_match_kvm() {
        let r = default_routes();
        assert_eq!(r.len(), 24 + 16);
        assert!(r
            .iter()
            .any(|e| e.gsi == 9 && e.u[0] == IRQCHIP_PIC_SLAVE && e.u[1] == 1));
        assert!(r
            .iter()
            .any(|e| e.gsi == 20 && e.u[0] == IRQCHIP_IOAPIC && e.u[1] == 20));
    }
}
