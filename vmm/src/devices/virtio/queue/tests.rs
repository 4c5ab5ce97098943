use super::*;
use crate::devices::virtio::testutil::{impls, memories, Driver, Rng};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};

const MEM: u64 = 4 << 20;
const RING: u64 = 0x10000;
const DATA: u64 = 0x100000;
const NEXT: u16 = crate::bits::const_u16(VRING_DESC_F_NEXT as u64);
const WRITE: u16 = crate::bits::const_u16(VRING_DESC_F_WRITE as u64);
const INDIRECT: u16 = crate::bits::const_u16(VRING_DESC_F_INDIRECT as u64);

/// Run `f` for every (memory backend, queue implementation) pair on a fresh queue of `size`.
fn each(size: u16, mut f: impl FnMut(&str, &mut Driver, &mut dyn Virtqueue)) {
    for (mname, mem) in memories(MEM) {
        for which in impls() {
            let mut d = Driver::new(mem.clone(), RING, size);
            let mut q = new_queue(which, mem.clone(), &d.cfg, false).unwrap();
            f(&format!("{mname}/{which:?}"), &mut d, &mut *q);
        }
    }
}

#[test]
fn pops_chains_and_publishes_used_entries() {
    each(16, |name, d, q| {
        assert_eq!(q.pop().unwrap(), None, "{name}");
        let h = d.add_chain(&[(DATA, 16, false), (DATA + 0x100, 512, true)]);
        d.publish(h);
        let c = q.pop().unwrap().unwrap();
        assert_eq!(c.head, h);
        assert_eq!(
            c.descs,
            vec![
                Desc {
                    addr: DATA,
                    len: 16,
                    write: false
                },
                Desc {
                    addr: DATA + 0x100,
                    len: 512,
                    write: true
                }
            ],
            "{name}"
        );
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 512);
        assert_eq!(q.pop().unwrap(), None);
        q.add_used(c.head, 512).unwrap();
        assert_eq!(d.take_used(), Some((h as u32, 512)), "{name}");
        assert_eq!(q.next_used(), 1);
        assert_eq!(q.next_avail(), 1);
    });
}

#[test]
fn ring_indices_wrap_around() {
    each(4, |name, d, q| {
        for i in 0..70_000u32 {
            let h = d.add_chain(&[(DATA, 8, true)]);
            d.publish(h);
            let c = q.pop().unwrap().unwrap();
            q.add_used(c.head, i & 0xff).unwrap();
            assert_eq!(d.take_used(), Some((h as u32, i & 0xff)), "{name} {i}");
        }
        assert_eq!(q.next_avail(), (70_000u32 & 0xffff) as u16);
    });
}

#[test]
fn invalid_layouts_are_refused() {
    for (_, mem) in memories(MEM) {
        for which in impls() {
            let good = Driver::new(mem.clone(), RING, 16).cfg;
            let check = |c: QueueConfig, want: QueueError| {
                let got = new_queue(which, mem.clone(), &c, false).err();
                assert_eq!(got, Some(want), "{which:?} {c:?}");
            };
            for size in [0u16, 3, 12, 100, 512] {
                check(QueueConfig { size, ..good }, QueueError::InvalidSize(size));
            }
            check(
                QueueConfig {
                    ready: false,
                    ..good
                },
                QueueError::NotReady,
            );
            check(
                QueueConfig {
                    desc_table: RING + 8,
                    ..good
                },
                QueueError::Misaligned,
            );
            check(
                QueueConfig {
                    used_ring: good.used_ring + 2,
                    ..good
                },
                QueueError::Misaligned,
            );
            for outside in [MEM - 16, MEM, 0xffff_ffff_ffff_fff0] {
                check(
                    QueueConfig {
                        desc_table: outside,
                        ..good
                    },
                    QueueError::OutsideMemory,
                );
                check(
                    QueueConfig {
                        used_ring: outside,
                        ..good
                    },
                    QueueError::OutsideMemory,
                );
            }
            assert!(new_queue(which, mem.clone(), &good, false).is_ok());
        }
    }
}

#[test]
fn descriptor_loops_are_bad_chains() {
    each(8, |name, d, q| {
        d.write_desc(0, DATA, 8, NEXT, 1);
        d.write_desc(1, DATA, 8, NEXT, 0);
        d.publish(0);
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: 0 }), "{name}");
        // A self loop too, and the queue keeps working afterwards.
        d.write_desc(2, DATA, 8, NEXT, 2);
        d.publish(2);
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: 2 }), "{name}");
        d.write_desc(3, DATA, 8, 0, 0);
        d.publish(3);
        assert_eq!(q.pop().unwrap().unwrap().head, 3, "{name}");
    });
}

#[test]
fn a_chain_as_long_as_the_queue_is_fine() {
    each(8, |name, d, q| {
        for i in 0..8u16 {
            d.write_desc(i, DATA, 1, if i < 7 { NEXT } else { 0 }, i + 1);
        }
        d.publish(0);
        assert_eq!(q.pop().unwrap().unwrap().descs.len(), 8, "{name}");
    });
}

#[test]
fn out_of_range_indices_are_bad_chains() {
    each(8, |name, d, q| {
        d.publish(8); // head outside the table
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: 8 }), "{name}");
        d.write_desc(0, DATA, 8, NEXT, 200); // next outside the table
        d.publish(0);
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: 0 }), "{name}");
        assert_eq!(q.add_used(8, 0), Err(QueueError::HeadIndex(8)), "{name}");
        assert_eq!(q.add_used(0xffff, 0), Err(QueueError::HeadIndex(0xffff)));
    });
}

#[test]
fn an_avail_index_too_far_ahead_is_refused() {
    each(8, |name, d, q| {
        d.set_avail_idx(9);
        assert_eq!(
            q.pop(),
            Err(QueueError::AvailIndex { avail: 9, next: 0 }),
            "{name}"
        );
        assert_eq!(q.next_avail(), 0);
    });
}

#[test]
fn zero_and_huge_lengths() {
    each(8, |name, d, q| {
        // Zero-length buffers are legal at the ring level (the device judges them).
        let h = d.add_chain(&[(DATA, 0, false)]);
        d.publish(h);
        assert_eq!(q.pop().unwrap().unwrap().descs[0].len, 0, "{name}");
        // A single 4 GiB - 1 buffer is described faithfully (and checked when used).
        let h = d.add_chain(&[(DATA, u32::MAX, true)]);
        d.publish(h);
        assert_eq!(q.pop().unwrap().unwrap().descs[0].len, u32::MAX, "{name}");
        // Lengths that overflow 32 bits together are a bad chain.
        let h = d.add_chain(&[(DATA, u32::MAX, false), (DATA, 2, true)]);
        d.publish(h);
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: h }), "{name}");
    });
}

#[test]
fn indirect_tables() {
    each(8, |name, d, q| {
        let table = DATA + 0x1000;
        let t = Driver::new(d.mem.clone(), table, 4);
        t.write_desc(0, DATA, 10, NEXT, 1);
        t.write_desc(1, DATA + 64, 20, WRITE, 0);
        d.write_desc(0, table, 32, INDIRECT, 0);
        d.publish(0);
        let c = q.pop().unwrap().unwrap();
        assert_eq!(c.descs.len(), 2, "{name}");
        assert!(c.descs[1].write);
        // Nested indirect, a bad table length, an empty table, a table outside RAM.
        t.write_desc(0, table, 16, INDIRECT, 0);
        d.publish(0);
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: 0 }), "{name}");
        for (addr, len) in [(table, 24), (table, 0), (MEM - 8, 32), (u64::MAX - 15, 16)] {
            d.write_desc(1, addr, len, INDIRECT, 0);
            d.publish(1);
            assert_eq!(q.pop(), Err(QueueError::BadChain { head: 1 }), "{name}");
        }
        // A loop inside an indirect table.
        t.write_desc(0, DATA, 10, NEXT, 1);
        t.write_desc(1, DATA, 10, NEXT, 0);
        d.write_desc(2, table, 32, INDIRECT, 0);
        d.publish(2);
        assert_eq!(q.pop(), Err(QueueError::BadChain { head: 2 }), "{name}");
    });
}

#[test]
fn buffers_outside_memory_fail_only_when_used() {
    each(8, |name, d, q| {
        let h = d.add_chain(&[(MEM - 4, 8, false), (u64::MAX - 2, 8, true)]);
        d.publish(h);
        let c = q.pop().unwrap().unwrap();
        let mut buf = [0u8; 8];
        assert!(io::read(&*d.mem, &c.descs, 0, &mut buf).is_err(), "{name}");
        assert!(io::write(&*d.mem, &c.descs, 0, &buf).is_err(), "{name}");
        assert!(io::write(&*d.mem, &c.descs, 4, &buf).is_err(), "{name}");
    });
}

#[test]
fn chain_io_skips_and_spans_buffers() {
    each(8, |name, d, q| {
        d.mem.write(DATA, b"abcd").unwrap();
        d.mem.write(DATA + 0x100, b"efgh").unwrap();
        let h = d.add_chain(&[
            (DATA, 4, false),
            (DATA + 0x100, 4, false),
            (DATA + 0x200, 3, true),
            (DATA + 0x300, 3, true),
        ]);
        d.publish(h);
        let c = q.pop().unwrap().unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(io::read(&*d.mem, &c.descs, 2, &mut buf).unwrap(), 5);
        assert_eq!(&buf, b"cdefg", "{name}");
        assert_eq!(io::write(&*d.mem, &c.descs, 1, b"12345").unwrap(), 5);
        let mut out = [0u8; 3];
        d.mem.read(DATA + 0x200, &mut out).unwrap();
        assert_eq!(&out[1..], b"12");
        d.mem.read(DATA + 0x300, &mut out).unwrap();
        assert_eq!(&out, b"345");
    });
}

#[test]
fn notification_suppression_without_event_idx() {
    each(8, |name, d, q| {
        assert!(q.needs_notification().unwrap(), "{name}");
        d.set_avail_flags(1); // VRING_AVAIL_F_NO_INTERRUPT
        assert!(!q.needs_notification().unwrap(), "{name}");
        q.disable_notification().unwrap();
        assert_eq!(d.used_flags(), 1);
        assert!(!q.enable_notification().unwrap());
        assert_eq!(d.used_flags(), 0);
        let h = d.add_chain(&[(DATA, 1, false)]);
        d.publish(h);
        assert!(q.enable_notification().unwrap(), "{name}");
    });
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    for (_, mem) in memories(MEM) {
        for which in impls() {
            let mut d = Driver::new(mem.clone(), RING, 8);
            let mut q = new_queue(which, mem.clone(), &d.cfg, true).unwrap();
            d.set_used_event(2); // interrupt when used idx passes 2
            for i in 0..4u16 {
                let h = d.add_chain(&[(DATA, 1, true)]);
                d.publish(h);
                let c = q.pop().unwrap().unwrap();
                q.add_used(c.head, 1).unwrap();
                let want = i == 2;
                assert_eq!(q.needs_notification().unwrap(), want, "{which:?} {i}");
            }
            // Disable does not touch the ring with event idx; enable writes avail_event.
            q.disable_notification().unwrap();
            assert_eq!(d.used_flags(), 0);
            assert!(!q.enable_notification().unwrap());
            assert_eq!(d.avail_event(), 4, "{which:?}");
        }
    }
}

/// Random descriptor tables and avail rings, popped by every implementation: the results
/// (chains or errors), the ring indices and the used ring must be identical.
#[test]
fn implementations_agree_on_random_rings() {
    for (mname, mem) in memories(MEM) {
        for seed in 1..=300u64 {
            let mut traces = Vec::new();
            for which in impls() {
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let size = 1u16 << rng.below(6);
                let mut d = Driver::new(mem.clone(), RING, size);
                let event_idx = rng.below(2) == 1;
                let mut q = new_queue(which, mem.clone(), &d.cfg, event_idx).unwrap();
                // An indirect table area that random descriptors may point at.
                let itab = DATA + 0x8000;
                let mut trace = Vec::new();
                for _ in 0..40 {
                    let fill = |base: u64, n: u64, rng: &mut Rng| {
                        for i in 0..n {
                            let flags = crate::bits::lo16(rng.below(8));
                            let addr = match rng.below(5) {
                                0 => itab,
                                1 => MEM - rng.below(64),
                                2 => u64::MAX - rng.below(64),
                                _ => DATA + rng.below(0x1000),
                            };
                            let len = match rng.below(6) {
                                0 => 0,
                                1 => u32::MAX - crate::bits::lo32(rng.below(4)),
                                2 => 16 * crate::bits::lo32(rng.below(5)),
                                _ => crate::bits::lo32(rng.below(0x2000)),
                            };
                            let next = crate::bits::lo16(rng.below(size as u64 + 2));
                            let mut raw = [0u8; 16];
                            raw[0..8].copy_from_slice(&addr.to_le_bytes());
                            raw[8..12].copy_from_slice(&len.to_le_bytes());
                            raw[12..14].copy_from_slice(&flags.to_le_bytes());
                            raw[14..16].copy_from_slice(&next.to_le_bytes());
                            mem.write(base + 16 * i, &raw).unwrap();
                        }
                    };
                    fill(RING, size as u64, &mut rng);
                    fill(itab, 4, &mut rng);
                    let heads = crate::bits::lo16(rng.below(size as u64 + 1));
                    for _ in 0..heads {
                        let head = crate::bits::lo16(rng.below(size as u64 + 1));
                        d.publish(head);
                    }
                    if rng.below(20) == 0 {
                        d.set_avail_idx(d.avail_idx.wrapping_add(size + 1));
                    }
                    d.set_used_event(crate::bits::lo16(rng.below(8)));
                    loop {
                        let r = q.pop();
                        trace.push(format!("{r:?}"));
                        match r {
                            Ok(Some(c)) => {
                                trace.push(format!(
                                    "{:?}",
                                    q.add_used(c.head, u32::try_from(c.descs.len()).unwrap())
                                ));
                                trace.push(format!("{:?}", q.needs_notification()));
                            }
                            Ok(None) => break,
                            Err(QueueError::BadChain { .. }) => continue,
                            Err(_) => break,
                        }
                    }
                    trace.push(format!(
                        "avail {} used {} ring {}",
                        q.next_avail(),
                        q.next_used(),
                        d.used_idx()
                    ));
                }
                let mut used = vec![0u8; 8 * size as usize];
                mem.read(d.cfg.used_ring + 4, &mut used).unwrap();
                trace.push(format!("{used:?}"));
                traces.push((which, trace));
            }
            for (which, t) in &traces[1..] {
                assert_eq!(
                    &traces[0].1, t,
                    "{mname}, seed {seed}: {:?} and {which:?} disagree",
                    traces[0].0
                );
            }
        }
    }
}
