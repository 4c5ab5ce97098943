//! virtio-net on a tap stand-in (a datagram socket pair): transmit chains with their
//! virtio-net headers as the driver writes them, and frames from the "tap" (from the input)
//! into the driver's receive buffers, header included.
#![no_main]

use fugu::fuzzing::virtio::{new_queue, serve_once, QueueConfig, QueueImpl, Tap};
use fugu_fuzz::Ops;
use libfuzzer_sys::fuzz_target;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

/// The layout the seeds use (see make-seeds): two 16-entry queues.
pub const RX: (u64, u64, u64) = (0x0, 0x100, 0x200);
pub const TX: (u64, u64, u64) = (0x400, 0x500, 0x600);
const RAM: u64 = 64 << 10;

fn cfg((desc, avail, used): (u64, u64, u64)) -> QueueConfig {
    QueueConfig {
        max_size: 256,
        size: 16,
        ready: true,
        desc_table: desc,
        avail_ring: avail,
        used_ring: used,
    }
}

fuzz_target!(|data: &[u8]| {
    // A fresh tap stand-in for each input: nothing is left over from the last one.
    let (a, host) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let tap = Arc::new(Tap::from_file(
        std::fs::File::from(OwnedFd::from(a)),
        "fuzz0",
    ));
    let mut ops = Ops::new(data);
    let sel = ops.u8();
    // Frames arriving from the tap: a count, then (length, bytes) each.
    for _ in 0..ops.u8() % 4 {
        let len = (ops.u16() % 2048) as usize;
        let _ = host.send(ops.bytes(len));
    }
    let mem = fugu_fuzz::memory_with(RAM, ops.rest());
    let which = if sel & 2 == 0 {
        QueueImpl::InHouse
    } else {
        #[cfg(target_arch = "x86_64")]
        {
            QueueImpl::RustVmm
        }
        #[cfg(not(target_arch = "x86_64"))]
        QueueImpl::InHouse
    };
    let event_idx = sel & 4 != 0;
    let (Ok(rx), Ok(tx)) = (
        new_queue(which, mem.clone(), &cfg(RX), event_idx),
        new_queue(which, mem.clone(), &cfg(TX), event_idx),
    ) else {
        return;
    };
    let hdr = if sel & 1 == 0 { 12 } else { 10 };
    let _ = serve_once(tap, mem, rx, tx, hdr);
    // What the device sent: whole frames, header first, never longer than one.
    let mut buf = vec![0u8; 70000];
    while let Ok(n) = host.recv(&mut buf) {
        assert!(n >= hdr && n <= 65536 + 14 + 4 + 12, "frame of {n} bytes");
    }
});
