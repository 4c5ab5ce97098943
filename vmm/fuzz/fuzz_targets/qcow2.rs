//! A qcow2 image file (the user's --disk, or a backing file): the header, its extensions
//! and feature bits, the L1, refcount and L2 tables, then guest reads, writes, discards and
//! write-zeroes that walk and change them (allocation, refcounts, compressed clusters).
#![no_main]

use fugu::fuzzing::qcow2::{Header, Qcow2};
use fugu_fuzz::Ops;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The last 20 bytes are the file's length (the input is its start: the rest reads as
    // zeroes, so the seeds need not carry a qcow2's empty clusters) and steer the guest's
    // accesses; the rest is the file.
    let (file, steer) = data.split_at(data.len().saturating_sub(20));
    let mut ops = Ops::new(steer);
    let len = (file.len() as u64).max(ops.u32() as u64 % (4 << 20));
    let f = fugu_fuzz::memfd(file);
    f.set_len(len).expect("size the memfd");
    let Ok(h) = Header::parse(&f, len) else {
        return;
    };
    let writable = ops.u8() & 1 == 0;
    let Ok(mut q) = Qcow2::open(f, h, writable, None) else {
        return;
    };
    let size = q.size();
    let _ = q.allocated();
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        let kind = ops.u8();
        let off = if size == 0 {
            0
        } else {
            ops.u32() as u64 * 512 % size
        };
        let len = (512 * (1 + kind as usize % 8)).min(buf.len());
        let _ = match kind >> 5 {
            0..=3 => q.read_at(&mut buf[..len], off),
            4 | 5 => q.write_at(&buf[..len], off),
            6 => q.discard(off, len as u64, false),
            _ => q.discard(off, len as u64, true),
        };
    }
    let _ = q.read_at(&mut buf[..512], 0);
    let _ = q.flush();
});
