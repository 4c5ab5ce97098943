//! virtio devices: the split virtqueue, the PCI transport (modern and transitional), and the
//! block and network devices.
//!
//! A device model implements [`VirtioDevice`]. The transport owns feature negotiation, the
//! queue registers and interrupts; when the driver sets DRIVER_OK it hands the device an
//! [`Activation`]: running queues, one kick eventfd per queue (written by KVM's ioeventfd or
//! by the transport) and a [`Signal`] to interrupt the driver. Devices do their work on
//! their own worker thread, never on a vCPU thread.

pub mod blk;
pub mod net;
pub mod queue;
pub mod setup;
pub mod sys;
pub mod transport;

#[cfg(test)]
pub mod testutil;

use crate::memory::GuestMemory;
use queue::Virtqueue;
use std::sync::Arc;
use sys::EventFd;

#[cfg(test)]
pub use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as S_DRIVER,
    VIRTIO_CONFIG_S_FAILED as S_FAILED,
};
pub use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK as S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET as S_NEEDS_RESET,
};

/// Feature bits every fugu device offers.
pub const F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
pub const F_RING_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
pub const F_RING_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
pub const COMMON_FEATURES: u64 = F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX;

/// How a device reaches its driver.
pub trait Signal: Send + Sync {
    /// Buffers were used on queue `queue`.
    fn used(&self, queue: u16);
    /// The device configuration changed.
    fn config_changed(&self);
    /// The device hit an error it cannot recover from: set DEVICE_NEEDS_RESET and tell
    /// the driver. The device stops processing until it is reset.
    fn needs_reset(&self);
}

/// A [`Signal`] that tells nobody: the benchmarks and the fuzz targets drive the queues
/// without a transport.
pub struct NoSignal;

impl Signal for NoSignal {
    fn used(&self, _queue: u16) {}
    fn config_changed(&self) {}
    fn needs_reset(&self) {}
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: Arc<dyn GuestMemory>,
    /// One entry per queue the device declared; `None` for a queue the driver left off.
    pub queues: Vec<Option<Box<dyn Virtqueue>>>,
    /// One eventfd per queue, signalled when the driver notifies it.
    pub kicks: Vec<EventFd>,
    pub signal: Arc<dyn Signal>,
    /// The features the driver accepted.
    pub features: u64,
}

/// A virtio device model.
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 network, 2 block).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// The feature bits offered (including [`COMMON_FEATURES`] as wanted).
    fn features(&self) -> u64;
    /// The device configuration structure as it is now.
    fn config(&self) -> Vec<u8>;
    /// A driver write into the device configuration; ignored unless a field is writable.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Start working on the queues.
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError>;
    /// Stop working (joins the worker); the device can be activated again afterwards.
    fn reset(&mut self);
}

/// Why a device could not start working on its queues.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver left off a queue the device needs.
    #[error("{device} needs its {queues}")]
    Queues {
        device: &'static str,
        queues: &'static str,
    },
    #[error("no kick eventfd")]
    NoKick,
    #[error("no kick eventfds")]
    NoKicks,
    /// A tap ioctl failed.
    #[error("tap {tap}: {op}: {source}")]
    Tap {
        tap: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Why a device worker thread could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot start a device thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A device worker thread that stops when its stop eventfd is signalled.
pub struct Worker {
    stop: EventFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Run `f(stop)` on a new thread named `name`; `f` must return once `stop` is readable.
    pub fn spawn(
        name: String,
        f: impl FnOnce(EventFd) + Send + 'static,
    ) -> Result<Worker, SpawnError> {
        let stop = EventFd::new().map_err(SpawnError::EventFd)?;
        let theirs = stop.try_clone().map_err(SpawnError::EventFd)?;
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(
                move || match crate::seccomp::enter(crate::seccomp::Kind::Worker) {
                    Ok(()) => f(theirs),
                    Err(e) => eprintln!("fugu: {e}; the device stops"),
                },
            )
            .map_err(SpawnError::Thread)?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
