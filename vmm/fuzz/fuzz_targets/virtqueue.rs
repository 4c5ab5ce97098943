//! The split-virtqueue walk over guest-written rings: layout validation, avail-index
//! checks, descriptor chains (indirect tables, loops, lengths), used-ring updates and the
//! notification logic. The in-house ring and rust-vmm's virtio-queue (x86_64 hosts) run the
//! same operations on the same memory and must agree, as the differential tests demand.
#![no_main]

use fugu::fuzzing::virtio::{new_queue, QueueConfig, QueueImpl, Virtqueue};
use fugu_fuzz::{memory_with, Ops};
use libfuzzer_sys::fuzz_target;

/// Guest RAM: rings and buffers live in the first 64 KiB; the rest lets chains point past
/// what the input fills, and addresses above it are outside RAM.
const RAM: u64 = 128 << 10;
const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops::new(data);
    let size_log = ops.u8();
    let cfg = QueueConfig {
        max_size: 256,
        size: if size_log & 0x80 != 0 {
            ops.u16() // anything, for the size checks
        } else {
            1 << (size_log % 9)
        },
        ready: size_log & 0x40 == 0,
        desc_table: (ops.u32() % 0x1_2000) as u64,
        avail_ring: (ops.u32() % 0x1_2000) as u64,
        used_ring: (ops.u32() % 0x1_2000) as u64,
    };
    let event_idx = ops.u8() & 1 != 0;
    let n_ops = (ops.u8() as usize) % MAX_OPS;
    let program = ops.bytes(n_ops * 8);
    let ram = ops.rest();

    #[allow(unused_mut)]
    let mut impls = vec![QueueImpl::InHouse];
    #[cfg(target_arch = "x86_64")]
    impls.push(QueueImpl::RustVmm);
    let mut results = Vec::new();
    for which in impls {
        let mem = memory_with(RAM, ram);
        let mut trace = Vec::new();
        match new_queue(which, mem.clone(), &cfg, event_idx) {
            Err(e) => trace.push(format!("new: {e:?}")),
            Ok(mut q) => run(&mut *q, &*mem, program, &mut trace),
        }
        results.push((which, trace));
    }
    if let [(_, a), (_, b)] = &results[..] {
        // Error kinds differ between the implementations (virtio-queue's own words); whether
        // an operation failed, and every chain and flag, must not.
        let norm = |t: &Vec<String>| {
            t.iter()
                .map(|s| {
                    if s.starts_with("err") {
                        "err".to_string()
                    } else {
                        s.clone()
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(norm(a), norm(b), "the queue implementations disagree");
    }
});

/// Replay `program` (8 bytes per operation); stop at the first error, as a device does
/// (it goes to NEEDS_RESET).
fn run(
    q: &mut dyn Virtqueue,
    mem: &dyn fugu::fuzzing::GuestMemory,
    program: &[u8],
    trace: &mut Vec<String>,
) {
    for op in program.chunks(8) {
        let mut o = Ops::new(op);
        let kind = o.u8();
        let r = match kind % 6 {
            0 | 1 => q.pop().map(|c| format!("pop {c:?}")),
            2 => {
                let head = o.u16();
                let len = o.u32();
                q.add_used(head, len).map(|_| "used".to_string())
            }
            3 => q.needs_notification().map(|n| format!("notify {n}")),
            4 => q.enable_notification().map(|n| format!("enable {n}")),
            _ => {
                // The driver moves on meanwhile: a 16-bit store anywhere in the rings.
                let at = (o.u16() as u64) & !1;
                let v = o.u16();
                let _ = mem.write_u16(at, v);
                q.disable_notification().map(|_| "disable".to_string())
            }
        };
        match r {
            Ok(s) => trace.push(s),
            Err(e) => {
                trace.push(format!("err {e:?}"));
                return;
            }
        }
    }
    trace.push(format!("next {} {}", q.next_avail(), q.next_used()));
}
