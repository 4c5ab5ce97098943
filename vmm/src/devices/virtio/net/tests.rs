use super::*;
use crate::devices::virtio::blk::tests::Count;
use crate::devices::virtio::queue::new_queue;
use crate::devices::virtio::testutil::{impls, memories, Driver};
use std::sync::atomic::Ordering;

const MEM: u64 = 8 << 20;
const ETHERTYPE: u16 = 0x88b5; // IEEE local experimental

#[test]
fn macs_and_names_are_checked() {
    assert_eq!(
        parse_mac("52:54:00:ab:cd:ef").unwrap(),
        [0x52, 0x54, 0, 0xab, 0xcd, 0xef]
    );
    for bad in [
        "",
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "5:54:00:ab:cd:ef",
        "zz:54:00:ab:cd:ef",
    ] {
        assert!(parse_mac(bad).is_err(), "{bad}");
    }
    assert_eq!(default_mac(3)[0] & 1, 0, "unicast");
    assert_eq!(default_mac(3)[5], 3);
    for bad in ["", "a/b", "has space", "sixteen-chars-xx", "..", "a:1"] {
        assert!(matches!(Tap::open(bad), Err(NetError::BadName(_))), "{bad}");
    }
}

/// A packet socket on `ifname` for our test ethertype (the host side of the tap).
struct Packet {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl Packet {
    fn open(ifname: &str) -> Packet {
        let proto = ETHERTYPE.to_be() as i32;
        // SAFETY: plain socket/bind/setsockopt calls with live, correctly sized arguments.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let name = std::ffi::CString::new(ifname).unwrap();
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(ifindex > 0);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
            sll.sll_protocol = ETHERTYPE.to_be();
            sll.sll_ifindex = ifindex;
            let r = libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 20,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                u32::try_from(std::mem::size_of::<libc::timeval>()).unwrap(),
            );
            Packet { fd, ifindex }
        }
    }
    fn send(&self, frame: &[u8]) {
        // SAFETY: as above.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
            sll.sll_protocol = ETHERTYPE.to_be();
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            let r = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            );
            assert_eq!(
                r,
                frame.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    }
    fn recv(&self) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        // SAFETY: reading into a live buffer of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), b.as_mut_ptr() as *mut _, b.len(), 0) };
        assert!(
            n > 0,
            "no frame from the guest: {}",
            std::io::Error::last_os_error()
        );
        b.truncate(n as usize);
        b
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// In a private network namespace (this thread only), create a tap, run the device on
/// it with queues in guest memory, and exchange frames with a packet socket on the tap.
#[test]
fn frames_cross_a_real_tap_in_a_network_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/net/tun").exists() {
        // `cargo xtask test` runs as root and sets FUGU_REQUIRE_ALL: there this must run.
        assert!(
            std::env::var_os("FUGU_REQUIRE_ALL").is_none(),
            "needs root and /dev/net/tun"
        );
        eprintln!("SKIP: needs root and /dev/net/tun");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "unshare(CLONE_NEWNET) failed as root: {}",
                std::io::Error::last_os_error()
            );
        }
        for (mname, mem) in memories(MEM) {
            for which in impls() {
                exchange(&format!("{mname}/{which:?}"), mem.clone(), which);
            }
        }
    })
    .join()
    .unwrap();
}

fn exchange(
    name: &str,
    mem: Arc<dyn GuestMemory>,
    which: crate::devices::virtio::queue::QueueImpl,
) {
    let tap = Tap::open("fugu-t0").unwrap();
    assert!(tap.created(), "{name}");
    let guest_mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut dev = Net::new(tap, guest_mac);
    assert_eq!(&dev.config()[..6], &guest_mac);
    assert_eq!(
        dev.config()[6] as u32 & VIRTIO_NET_S_LINK_UP,
        VIRTIO_NET_S_LINK_UP
    );
    let pkt = Packet::open("fugu-t0");
    let mut rxd = Driver::new(mem.clone(), 0x10000, 64);
    let mut txd = Driver::new(mem.clone(), 0x20000, 64);
    let rxq = new_queue(which, mem.clone(), &rxd.cfg, true).unwrap();
    let txq = new_queue(which, mem.clone(), &txd.cfg, true).unwrap();
    let (rxk, txk) = (EventFd::new().unwrap(), EventFd::new().unwrap());
    let sig = Arc::new(Count::default());
    dev.activate(Activation {
        mem: mem.clone(),
        queues: vec![Some(rxq), Some(txq)],
        kicks: vec![rxk.try_clone().unwrap(), txk.try_clone().unwrap()],
        signal: sig.clone(),
        features: dev.features(),
    })
    .unwrap();

    // Guest -> host: a 12-byte virtio header then the frame, split over two buffers.
    let out = frame([0xff; 6], guest_mac, b"fugu guest to host");
    mem.write(0x100000, &[0u8; 12]).unwrap();
    mem.write(0x100100, &out).unwrap();
    let h = txd.add_chain(&[
        (0x100000, 12, false),
        (0x100100, u32::try_from(out.len()).unwrap(), false),
    ]);
    txd.publish(h);
    // A hostile transmit chain too: a buffer outside RAM is dropped, not sent.
    let bad = txd.add_chain(&[(MEM - 4, 64, false)]);
    txd.publish(bad);
    txk.signal();
    assert_eq!(pkt.recv(), out, "{name}");

    // Host -> guest: receive buffers first, then a frame from the packet socket.
    for i in 0..8u64 {
        let h = rxd.add_chain(&[(0x200000 + i * 0x1000, 12 + 1514, true)]);
        rxd.publish(h);
    }
    rxk.signal();
    let inbound = frame(guest_mac, [0x02, 0, 0, 0, 0, 1], b"fugu host to guest");
    pkt.send(&inbound);
    let mut got = None;
    for _ in 0..4000 {
        if let Some((id, len)) = rxd.take_used() {
            let at = 0x200000 + id as u64 * 0x1000;
            let mut b = vec![0u8; len as usize];
            mem.read(at, &mut b).unwrap();
            // Skip what the kernel sends on a fresh link (IPv6 router solicitations...).
            if b.len() >= 12 + 14 && b[12 + 12..12 + 14] == ETHERTYPE.to_be_bytes() {
                got = Some(b);
                break;
            }
            continue;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let got = got.unwrap_or_else(|| panic!("{name}: no frame reached the guest"));
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
    assert_eq!(&got[12..], &inbound[..], "{name}");
    assert!(sig.used.load(Ordering::SeqCst) >= 2);
    assert_eq!(sig.reset.load(Ordering::SeqCst), 0);

    // The tap goes away under the device: the link goes down with a config interrupt,
    // and the worker does not spin on the dead descriptor.
    assert_eq!(sig.config.load(Ordering::SeqCst), 0);
    let del = std::process::Command::new("ip")
        .args(["link", "del", "fugu-t0"])
        .status();
    if del.is_ok_and(|s| s.success()) {
        for _ in 0..4000 {
            if sig.config.load(Ordering::SeqCst) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(sig.config.load(Ordering::SeqCst), 1, "{name}");
        assert_eq!(dev.config()[6] as u32 & VIRTIO_NET_S_LINK_UP, 0, "{name}");
        // Transmit still completes (frames are dropped) instead of stalling the driver.
        let h = txd.add_chain(&[
            (0x100000, 12, false),
            (0x100100, u32::try_from(out.len()).unwrap(), false),
        ]);
        txd.publish(h);
        txk.signal();
        let mut done = false;
        for _ in 0..4000 {
            while let Some((id, _)) = txd.take_used() {
                done |= id == h as u32;
            }
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(done, "{name}: transmit stalled after the link went down");
    } else {
        eprintln!("SKIP link-down check: ip link del failed");
    }
    dev.reset();
}
