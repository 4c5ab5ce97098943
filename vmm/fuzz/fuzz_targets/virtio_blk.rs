//! virtio-blk requests as the driver writes them: the queue at a fixed place in guest RAM,
//! every descriptor, header, data buffer, discard / write-zeroes segment and the status byte
//! from the input, served by the device model on a raw and on a qcow2 disk.
#![no_main]

use fugu::fuzzing::qcow2;
use fugu::fuzzing::virtio::{
    new_queue, process_queue, Disk, NoSignal, QueueConfig, QueueImpl, Scratch,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The layout the seeds use (see make-seeds): a 16-entry queue.
pub const DESC: u64 = 0x0;
pub const AVAIL: u64 = 0x100;
pub const USED: u64 = 0x200;
const RAM: u64 = 64 << 10;
const DISK: u64 = 1 << 20;

/// The disks, opened once (a scratch file each, unlinked at once: the descriptors stay).
fn disks() -> &'static [Disk; 2] {
    static D: OnceLock<[Disk; 2]> = OnceLock::new();
    D.get_or_init(|| {
        let raw = fugu_fuzz::scratch("blk.raw");
        std::fs::File::create(&raw).unwrap().set_len(DISK).unwrap();
        let q = fugu_fuzz::scratch("blk.qcow2");
        qcow2::create(&std::fs::File::create(&q).unwrap(), DISK, None).unwrap();
        let d = [
            Disk::open(&raw, false).unwrap(),
            Disk::open(&q, false).unwrap(),
        ];
        let _ = std::fs::remove_file(raw);
        let _ = std::fs::remove_file(q);
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, ram)) = data.split_first() else {
        return;
    };
    let disk = &disks()[(sel & 1) as usize];
    let mem = fugu_fuzz::memory_with(RAM, ram);
    let cfg = QueueConfig {
        max_size: 256,
        size: 16,
        ready: true,
        desc_table: DESC,
        avail_ring: AVAIL,
        used_ring: USED,
    };
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
    let Ok(mut q) = new_queue(which, mem.clone(), &cfg, sel & 4 != 0) else {
        return;
    };
    let _ = process_queue(disk, &*mem, &mut *q, &NoSignal, &mut Scratch::default());
});
