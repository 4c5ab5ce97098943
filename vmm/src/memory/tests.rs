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
