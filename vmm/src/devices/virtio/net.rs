//! virtio-net on a tap device (/dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).
//!
//! The tap carries the virtio-net header itself, so checksum and TSO offloads pass through
//! unchanged when the driver negotiated them (TUNSETOFFLOAD tells the tap what the guest
//! accepts). The worker thread polls the tap and the queue eventfds: it stops watching the
//! tap while the guest has no receive buffers, so nothing spins.

use super::queue::{io, Chain, QueueError, Virtqueue};
use super::sys::{poll, EventFd};
use super::{
    ActivateError, Activation, Signal, VirtioDevice, Worker, COMMON_FEATURES, F_VERSION_1,
};
use crate::memory::GuestMemory;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_net::*;

pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// The largest frame with TSO (64 KiB) plus an Ethernet header, and the virtio header.
const MAX_FRAME: usize = 65536 + 14 + 4;
const MAX_HDR: usize = 12;

const TUNSETIFF: u32 = 0x4004_54ca;
const TUNSETOFFLOAD: u32 = 0x4004_54d0;
const TUNSETVNETHDRSZ: u32 = 0x4004_54d8;
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
const IFF_VNET_HDR: u16 = 0x4000;
const TUN_F_CSUM: u32 = 1;
const TUN_F_TSO4: u32 = 2;
const TUN_F_TSO6: u32 = 4;
const TUN_F_TSO_ECN: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "'{0}' is not a valid interface name (1-15 characters, not . or .., no '/', ':' or spaces)"
    )]
    BadName(String),
    #[error("tap device {0} does not exist; create it (ip tuntap add {0} mode tap user $USER) or run fugu as root")]
    Missing(String),
    #[error("cannot open /dev/net/tun: {0}")]
    Tun(std::io::Error),
    #[error("cannot attach to tap device {0}: {1}")]
    Attach(String, std::io::Error),
    #[error("'{0}' is not a MAC address (use six hex bytes, e.g. 52:54:00:12:34:56)")]
    BadMac(String),
    #[error("MAC {0} {1}: a NIC needs a unicast address such as 52:54:00:12:34:56 (the lowest bit of the first byte clear)")]
    UnusableMac(String, &'static str),
}

/// A tap device opened with a virtio-net header.
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

fn ifreq(name: &str, flags: u16) -> [u8; 40] {
    let mut r = [0u8; 40];
    r[..name.len()].copy_from_slice(name.as_bytes());
    r[16..18].copy_from_slice(&flags.to_le_bytes());
    r
}

impl Tap {
    /// Attach to tap `name`, creating it (when running as root) if it does not exist.
    /// A tap fugu creates is not persistent: it disappears when fugu exits.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        check_tap_name(name)?;
        let exists = std::path::Path::new("/sys/class/net").join(name).exists();
        // SAFETY: geteuid has no preconditions.
        if !exists && unsafe { libc::geteuid() } != 0 {
            return Err(NetError::Missing(name.into()));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_nonblock()
            .open("/dev/net/tun")
            .map_err(NetError::Tun)?;
        let mut req = ifreq(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        // SAFETY: TUNSETIFF reads and writes a struct ifreq (at most 40 bytes) at `req`.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, req.as_mut_ptr()) } < 0 {
            return Err(NetError::Attach(
                name.into(),
                std::io::Error::last_os_error(),
            ));
        }
        let tap = Tap {
            file,
            name: name.into(),
            created: !exists,
        };
        if tap.created {
            tap.set_up().map_err(|e| NetError::Attach(name.into(), e))?;
        }
        Ok(tap)
    }

    /// A stand-in for a tap on any descriptor that carries one frame per read and write (a
    /// datagram socket pair, set non-blocking): no ioctls. For tests and the fuzz targets.
    pub fn from_file(file: File, name: &str) -> Tap {
        Tap {
            file,
            name: name.into(),
            created: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether fugu created this tap (it goes away with fugu).
    pub fn created(&self) -> bool {
        self.created
    }

    fn set_up(&self) -> std::io::Result<()> {
        // SAFETY: a plain socket used only for interface ioctls; closed below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the socket is ours.
        let s = unsafe { std::os::fd::OwnedFd::from_raw_fd(s) };
        let mut req = ifreq(&self.name, 0);
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write a struct ifreq at `req`.
        unsafe {
            if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, req.as_mut_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = u16::from_le_bytes([req[16], req[17]])
                | const { crate::bits::const_u16(libc::IFF_UP as u64) };
            req[16..18].copy_from_slice(&flags.to_le_bytes());
            if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, req.as_mut_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn ioctl_int(&self, req: u32, v: u32) -> std::io::Result<()> {
        let arg: libc::c_int = v as libc::c_int;
        // SAFETY: these tun ioctls read an int (TUNSETVNETHDRSZ, by pointer) or take an
        // unsigned value (TUNSETOFFLOAD).
        let r = unsafe {
            if req == TUNSETVNETHDRSZ {
                libc::ioctl(self.file.as_raw_fd(), req as _, &arg as *const libc::c_int)
            } else {
                libc::ioctl(self.file.as_raw_fd(), req as _, v as libc::c_ulong)
            }
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn set_vnet_hdr_size(&self, n: u32) -> std::io::Result<()> {
        self.ioctl_int(TUNSETVNETHDRSZ, n)
    }

    pub fn set_offload(&self, flags: u32) -> std::io::Result<()> {
        self.ioctl_int(TUNSETOFFLOAD, flags)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

/// Parse "52:54:00:12:34:56".
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(NetError::BadMac(s.into()));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(NetError::BadMac(s.into()));
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| NetError::BadMac(s.into()))?;
    }
    // A NIC's own address must be unicast and not zero: guests drop or misroute frames
    // from a group address, and Linux refuses such an address on its interface.
    if mac == [0xff; 6] {
        return Err(NetError::UnusableMac(s.into(), "is the broadcast address"));
    }
    if mac[0] & 1 != 0 {
        return Err(NetError::UnusableMac(s.into(), "is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(NetError::UnusableMac(s.into(), "is all zeroes"));
    }
    Ok(mac)
}

/// Whether `name` can name a network interface (Linux's dev_valid_name): 1-15 bytes, not
/// "." or "..", no '/', ':', NUL or whitespace.
pub fn check_tap_name(name: &str) -> Result<(), NetError> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(NetError::BadName(name.into()));
    }
    Ok(())
}

/// A locally administered MAC for NIC `index` of this process.
pub fn default_mac(index: u8) -> [u8; 6] {
    // The pid's low 16 bits, big-endian.
    let pid = std::process::id().to_le_bytes();
    [0x52, 0x54, 0x00, pid[1], pid[0], index]
}

/// The virtio-net device model.
pub struct Net {
    tap: Arc<Tap>,
    mac: [u8; 6],
    /// The link status the driver sees; it goes down when the tap fails (the worker then
    /// raises a configuration-change interrupt).
    link_up: Arc<AtomicBool>,
    worker: Option<Worker>,
}

impl Net {
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Net {
            tap: Arc::new(tap),
            mac,
            link_up: Arc::new(AtomicBool::new(true)),
            worker: None,
        }
    }
}

fn bit(b: u32) -> u64 {
    1 << b
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        1
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        COMMON_FEATURES
            | bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_STATUS)
            | bit(VIRTIO_NET_F_CSUM)
            | bit(VIRTIO_NET_F_GUEST_CSUM)
            | bit(VIRTIO_NET_F_HOST_TSO4)
            | bit(VIRTIO_NET_F_HOST_TSO6)
            | bit(VIRTIO_NET_F_HOST_ECN)
            | bit(VIRTIO_NET_F_GUEST_TSO4)
            | bit(VIRTIO_NET_F_GUEST_TSO6)
            | bit(VIRTIO_NET_F_GUEST_ECN)
    }
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 12];
        c[..6].copy_from_slice(&self.mac);
        let status = if self.link_up.load(Ordering::SeqCst) {
            const { crate::bits::const_u16(VIRTIO_NET_S_LINK_UP as u64) }
        } else {
            0
        };
        c[6..8].copy_from_slice(&status.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        c[10..12].copy_from_slice(&1500u16.to_le_bytes()); // mtu
        c
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.reset();
        let f = a.features;
        let hdr = if f & F_VERSION_1 != 0 { 12 } else { 10 };
        self.tap
            .set_vnet_hdr_size(crate::bits::lo32(hdr as u64)) // 10 or 12
            .map_err(|source| ActivateError::Tap {
                tap: self.tap.name.clone(),
                op: "TUNSETVNETHDRSZ",
                source,
            })?;
        let mut off = 0;
        if f & bit(VIRTIO_NET_F_GUEST_CSUM) != 0 {
            off |= TUN_F_CSUM;
            if f & bit(VIRTIO_NET_F_GUEST_TSO4) != 0 {
                off |= TUN_F_TSO4;
            }
            if f & bit(VIRTIO_NET_F_GUEST_TSO6) != 0 {
                off |= TUN_F_TSO6;
            }
            if f & bit(VIRTIO_NET_F_GUEST_ECN) != 0 && off & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
                off |= TUN_F_TSO_ECN;
            }
        }
        self.tap
            .set_offload(off)
            .map_err(|source| ActivateError::Tap {
                tap: self.tap.name.clone(),
                op: "TUNSETOFFLOAD",
                source,
            })?;
        let Activation {
            mem,
            queues,
            kicks,
            signal,
            ..
        } = a;
        let mut qs = queues.into_iter();
        let (Some(Some(rx)), Some(Some(tx))) = (qs.next(), qs.next()) else {
            return Err(ActivateError::Queues {
                device: "virtio-net",
                queues: "receive and transmit queues",
            });
        };
        let mut ks = kicks.into_iter();
        let (Some(rxk), Some(txk)) = (ks.next(), ks.next()) else {
            return Err(ActivateError::NoKicks);
        };
        let tap = self.tap.clone();
        let link_up = self.link_up.clone();
        self.worker = Some(Worker::spawn("virtio-net".into(), move |stop| {
            let mut w = NetWorker::new(tap, link_up, mem, rx, tx, signal, hdr);
            w.run(rxk, txk, stop)
        })?);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }
}

/// One pass of the worker over both queues, as after a wake-up: every frame the driver
/// queued on `tx` goes to `tap`, then the frames `tap` holds go into `rx`'s buffers. `hdr`
/// is the virtio-net header size (12, or 10 without VIRTIO_F_VERSION_1). The fuzz targets
/// drive the device with it over a [`Tap::from_file`] stand-in.
pub fn serve_once(
    tap: Arc<Tap>,
    mem: Arc<dyn GuestMemory>,
    rx: Box<dyn Virtqueue>,
    tx: Box<dyn Virtqueue>,
    hdr: usize,
) -> Result<(), QueueError> {
    let link_up = Arc::new(AtomicBool::new(true));
    let mut w = NetWorker::new(tap, link_up, mem, rx, tx, Arc::new(super::NoSignal), hdr);
    w.tx_all().and_then(|_| w.rx_all())
}

struct NetWorker {
    tap: Arc<Tap>,
    link_up: Arc<AtomicBool>,
    mem: Arc<dyn GuestMemory>,
    rx: Box<dyn Virtqueue>,
    tx: Box<dyn Virtqueue>,
    signal: Arc<dyn Signal>,
    hdr: usize,
    /// The length of the frame in `rx_buf`, read from the tap, that waits for a receive
    /// buffer.
    pending: Option<usize>,
    /// No receive buffers: stop watching the tap until the driver adds some.
    starved: bool,
    /// Transmit staging (virtio header + frame).
    buf: Vec<u8>,
    /// The frame read from the tap.
    rx_buf: Vec<u8>,
    /// The chain being served, reused so that a frame allocates nothing.
    chain: Chain,
}

impl NetWorker {
    fn new(
        tap: Arc<Tap>,
        link_up: Arc<AtomicBool>,
        mem: Arc<dyn GuestMemory>,
        rx: Box<dyn Virtqueue>,
        tx: Box<dyn Virtqueue>,
        signal: Arc<dyn Signal>,
        hdr: usize,
    ) -> NetWorker {
        NetWorker {
            tap,
            link_up,
            mem,
            rx,
            tx,
            signal,
            hdr,
            pending: None,
            starved: false,
            buf: vec![0u8; MAX_FRAME + MAX_HDR],
            rx_buf: vec![0u8; MAX_FRAME + MAX_HDR],
            chain: Chain::default(),
        }
    }

    fn run(&mut self, rxk: EventFd, txk: EventFd, stop: EventFd) {
        loop {
            if self.tx_all().and_then(|_| self.rx_all()).is_err() {
                self.signal.needs_reset();
                // Wait for the reset that stops this thread.
                let _ = poll(&[(stop.as_raw_fd(), libc::POLLIN)], -1);
                return;
            }
            let up = self.link_up.load(Ordering::SeqCst);
            let tap_events = if self.starved { 0 } else { libc::POLLIN };
            // A failed tap is left out (poll ignores fd -1): its errors would wake us for ever.
            let tap_fd = if up { self.tap.fd() } else { -1 };
            let ev = match poll(
                &[
                    (tap_fd, tap_events),
                    (rxk.as_raw_fd(), libc::POLLIN),
                    (txk.as_raw_fd(), libc::POLLIN),
                    (stop.as_raw_fd(), libc::POLLIN),
                ],
                -1,
            ) {
                Ok(ev) => ev,
                Err(_) => return,
            };
            if ev[3] != 0 {
                return;
            }
            if up && ev[0] & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                self.link_up.store(false, Ordering::SeqCst);
                self.signal.config_changed();
            }
            if ev[1] != 0 {
                rxk.drain();
                self.starved = false;
            }
            if ev[2] != 0 {
                txk.drain();
            }
        }
    }

    /// Send every frame the driver queued.
    fn tx_all(&mut self) -> Result<(), QueueError> {
        loop {
            self.tx.disable_notification()?;
            let mut used = false;
            let mut chain = std::mem::take(&mut self.chain);
            let served = self.tx_into(&mut chain, &mut used);
            self.chain = chain;
            served?;
            if used && self.tx.needs_notification()? {
                self.signal
                    .used(const { crate::bits::const_u16(TX as u64) });
            }
            if !self.tx.enable_notification()? {
                return Ok(());
            }
        }
    }

    /// Send what the driver queued, over a reused chain; sets `used` when a buffer went back.
    fn tx_into(&mut self, chain: &mut Chain, used: &mut bool) -> Result<(), QueueError> {
        while self.tx.pop_into(chain)? {
            self.send(chain);
            self.tx.add_used(chain.head, 0)?;
            *used = true;
        }
        Ok(())
    }

    /// Write one chain (virtio header + frame) to the tap; malformed chains are dropped.
    fn send(&mut self, chain: &Chain) {
        let len = chain.readable_len();
        // Device-writable buffers on the transmit queue are a wrong direction; frames
        // shorter than the header or longer than any frame are dropped too.
        if chain.writable_len() != 0 || len < self.hdr as u64 || len > self.buf.len() as u64 {
            return;
        }
        let Ok(n) = usize::try_from(len) else {
            return; // cannot happen: at most the buffer's length (checked above)
        };
        if io::read(&*self.mem, &chain.descs, 0, &mut self.buf[..n]).is_err() {
            return;
        }
        // A full tap queue drops the frame, as a real NIC would.
        let _ = (&self.tap.file).write(&self.buf[..n]);
    }

    /// The loop of [`Self::rx_all`] over a reused chain; sets `used` when a buffer went back.
    fn rx_into(&mut self, chain: &mut Chain, used: &mut bool) -> Result<(), QueueError> {
        loop {
            if self.pending.is_none() {
                match (&self.tap.file).read(&mut self.rx_buf) {
                    Ok(n) if n >= self.hdr => self.pending = Some(n),
                    Ok(0) => return Ok(()),
                    Ok(_) => continue,       // shorter than the header: dropped
                    Err(_) => return Ok(()), // EAGAIN: nothing more for now
                }
            }
            if !self.rx.pop_into(chain)? {
                // No buffers: wait for the driver, unless it added some meanwhile.
                if self.rx.enable_notification()? {
                    continue;
                }
                self.starved = true;
                return Ok(());
            }
            let Some(len) = self.pending.take() else {
                return Ok(());
            };
            let frame = &mut self.rx_buf[..len];
            if self.hdr == 12 {
                frame[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
            }
            let written = if chain.readable_len() == 0 && chain.writable_len() >= len as u64 {
                io::write(&*self.mem, &chain.descs, 0, frame).unwrap_or(0)
            } else {
                0 // too small or wrong direction: the frame is dropped
            };
            // At most a frame's length: the fallback is never taken.
            let written = u32::try_from(written).unwrap_or(u32::MAX);
            self.rx.add_used(chain.head, written)?;
            *used = true;
        }
    }

    /// Move frames from the tap into receive buffers while both exist.
    fn rx_all(&mut self) -> Result<(), QueueError> {
        if !self.link_up.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut used = false;
        let mut chain = std::mem::take(&mut self.chain);
        let served = self.rx_into(&mut chain, &mut used);
        self.chain = chain;
        served?;
        if used && self.rx.needs_notification()? {
            self.signal
                .used(const { crate::bits::const_u16(RX as u64) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
