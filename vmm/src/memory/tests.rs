use super::portable::MmapMemory;
use super::GuestMemory;

fn exercise(mem: &dyn GuestMemory) -> Vec<(bool, Vec<u8>)> {
    // A fixed script of accesses: inside, across the region boundary, at the edges, outside.
    let mut out = Vec::new();
    let writes: &[(u64, &[u8])] = &[
        (0, b"start"),
        (0x1000 - 2, b"span"),   // crosses from region 0 into region 1
        (0x3000 - 3, b"edge"),   // runs one byte past the end
        (0x8000, b"outside"),    // not RAM at all
        (u64::MAX - 1, b"wrap"), // address overflow
        (0x2fff, b"!"),
    ];
    for (addr, data) in writes {
        out.push((mem.write(*addr, data).is_ok(), Vec::new()));
    }
    for (addr, len) in [
        (0u64, 5usize),
        (0xffe, 4),
        (0x2ffd, 4),
        (0x2fff, 1),
        (0x8000, 1),
        (0x2ffd, 3),
    ] {
        let mut buf = vec![0xAAu8; len];
        let ok = mem.read(addr, &mut buf).is_ok();
        out.push((ok, buf));
    }
    out.push((
        mem.read_u32(0xffe).is_ok(),
        mem.read_u32(0xffe).unwrap_or(0).to_le_bytes().to_vec(),
    ));
    out.push((mem.contains(0, 0x3000), vec![]));
    out.push((mem.contains(0x2000, 0x1001), vec![]));
    out
}

#[test]
fn portable_memory_checks_bounds_and_spans_regions() {
    let mem = MmapMemory::new(&[(0, 0x1000), (0x1000, 0x2000)]).unwrap();
    let r = exercise(&mem);
    assert!(r[0].0 && r[1].0 && r[5].0, "in-range writes succeed");
    assert!(!r[2].0 && !r[3].0 && !r[4].0, "out-of-range writes fail");
    assert_eq!(r[6].1, b"start".to_vec());
    assert_eq!(r[7].1, b"span".to_vec(), "accesses span adjacent regions");
    assert!(!r[8].0);
    assert_eq!(
        r[8].1,
        vec![0xAA; 4],
        "a failed read leaves the buffer alone"
    );
    assert_eq!(r[9].1, b"!".to_vec());
    assert!(!r[10].0);
    assert_eq!(r[11].1, b"\0\0!".to_vec(), "a failed write changed nothing");
    assert!(r[13].0 && !r[14].0);
}

#[test]
fn overlapping_ranges_are_refused() {
    assert!(MmapMemory::new(&[(0, 0x2000), (0x1000, 0x1000)]).is_err());
}

/// Same script on vm-memory and on the in-house layer: same outcomes, same bytes.
#[cfg(target_arch = "x86_64")]
#[test]
fn differential_against_vm_memory() {
    let ranges = [(0u64, 0x1000u64), (0x1000, 0x2000)];
    let ours = MmapMemory::new(&ranges).unwrap();
    let theirs = super::rustvmm::VmMemory::new(&ranges).unwrap();
    assert_eq!(exercise(&ours), exercise(&theirs));
    let a: Vec<_> = ours.regions().iter().map(|r| (r.gpa, r.size)).collect();
    let b: Vec<_> = theirs.regions().iter().map(|r| (r.gpa, r.size)).collect();
    assert_eq!(a, b);
}

/// Host addresses for vectored I/O: one entry per region crossed, nothing on a miss.
fn iovecs_of(mem: &dyn GuestMemory) {
    let mut out = Vec::new();
    super::host_iovecs(mem, 0xff0, 0x20, &mut out).unwrap();
    assert_eq!(out.len(), 2, "crosses from region 0 into region 1");
    assert_eq!((out[0].iov_len, out[1].iov_len), (0x10, 0x10));
    mem.write(0xff0, &[7u8; 0x20]).unwrap();
    for v in &out {
        // SAFETY: the test reads bytes of a live mapping through the addresses just made.
        let s = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
        assert!(s.iter().all(|b| *b == 7));
    }
    for (gpa, len) in [(0x2ff0, 0x20), (0x8000, 1), (u64::MAX, 2)] {
        assert!(super::host_iovecs(mem, gpa, len, &mut out).is_err());
        assert_eq!(out.len(), 2, "a failed lookup appends nothing");
    }
    super::host_iovecs(mem, 0x10, 0, &mut out).unwrap();
    assert_eq!(out.len(), 2, "an empty range needs no entry");
}

#[test]
fn host_iovecs_split_at_regions_on_both_backends() {
    let ranges = [(0u64, 0x1000u64), (0x1000, 0x2000)];
    iovecs_of(&MmapMemory::new(&ranges).unwrap());
    #[cfg(target_arch = "x86_64")]
    iovecs_of(&super::rustvmm::VmMemory::new(&ranges).unwrap());
}

#[test]
fn host_range_stays_inside_one_region_and_its_bounds() {
    use super::HostRange;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let mem: Arc<dyn GuestMemory> =
        Arc::new(MmapMemory::new(&[(0, 0x1000), (0x1000, 0x2000)]).unwrap());
    assert!(
        HostRange::new(&mem, 0xff0, 0x20).is_none(),
        "spans two regions"
    );
    assert!(
        HostRange::new(&mem, 0x2ff0, 0x11).is_none(),
        "runs past RAM"
    );
    assert!(HostRange::new(&mem, 0x8000, 1).is_none(), "not RAM");
    let r = HostRange::new(&mem, 0x1100, 0x20).unwrap();
    r.write::<4>(0x1c, *b"abcd").unwrap();
    assert_eq!(
        r.write::<4>(0x1d, *b"abcd"),
        None,
        "one byte past the range"
    );
    assert_eq!(mem.read_u32(0x111c).unwrap(), u32::from_le_bytes(*b"abcd"));
    mem.write_u16(0x1102, 0xbeef).unwrap();
    assert_eq!(r.load_u16(2, Ordering::Acquire), Some(0xbeef));
    assert_eq!(r.load_u16(3, Ordering::Acquire), None, "misaligned");
    r.store_u16(4, 0x1234, Ordering::Release).unwrap();
    assert_eq!(mem.read_u16(0x1104).unwrap(), 0x1234);
    assert_eq!(r.read::<2>(4), Some([0x34, 0x12]));
    assert_eq!(r.read::<2>(usize::MAX), None);
}
