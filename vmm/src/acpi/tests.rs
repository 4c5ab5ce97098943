use super::*;
use crate::memory::portable::MmapMemory;

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Read the table at `addr` from guest memory (its length from the header).
fn table_at(mem: &dyn GuestMemory, addr: u64) -> Vec<u8> {
    let len = mem.read_u32(addr + 4).unwrap() as usize;
    let mut t = vec![0u8; len];
    mem.read(addr, &mut t).unwrap();
    t
}

/// What an OS does: scan 0xE0000-0xFFFFF for the RSDP, then follow RSDT and XSDT.
fn find_tables(mem: &dyn GuestMemory) -> (u64, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut rsdp_addr = None;
    for a in (0xe_0000u64..0x10_0000).step_by(16) {
        let mut sig = [0u8; 8];
        mem.read(a, &mut sig).unwrap();
        if &sig == b"RSD PTR " {
            rsdp_addr = Some(a);
            break;
        }
    }
    let rsdp_addr = rsdp_addr.expect("RSDP found by the BIOS-area scan");
    let mut rsdp = [0u8; 36];
    mem.read(rsdp_addr, &mut rsdp).unwrap();
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2);
    let rsdt = table_at(mem, u32_at(&rsdp, 16) as u64);
    let xsdt = table_at(mem, u64_at(&rsdp, 24));
    assert_eq!(&rsdt[..4], b"RSDT");
    assert_eq!(&xsdt[..4], b"XSDT");
    let via_rsdt: Vec<Vec<u8>> = rsdt[36..]
        .chunks(4)
        .map(|c| table_at(mem, u32_at(c, 0) as u64))
        .collect();
    let via_xsdt: Vec<Vec<u8>> = xsdt[36..]
        .chunks(8)
        .map(|c| table_at(mem, u64_at(c, 0)))
        .collect();
    (rsdp_addr, via_rsdt, via_xsdt)
}

#[test]
fn direct_boot_tables_are_found_and_consistent() {
    let mem = MmapMemory::new(&[(0, 64 << 20)]).unwrap();
    let t = build(&Config::direct(4));
    assert_eq!(write(&mem, &t).unwrap(), RSDP_ADDR);
    let (rsdp_addr, via_rsdt, via_xsdt) = find_tables(&mem);
    assert_eq!(rsdp_addr, RSDP_ADDR);
    assert_eq!(via_rsdt, via_xsdt, "RSDT and XSDT list the same tables");
    let sigs: Vec<&[u8]> = via_xsdt.iter().map(|t| &t[..4]).collect();
    assert_eq!(sigs, vec![&b"FACP"[..], b"APIC", b"MCFG"]);
    for t in &via_xsdt {
        assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(&t[..4]));
    }
    let fadt = &via_xsdt[0];
    assert_eq!(fadt.len(), 276);
    let dsdt = table_at(&mem, u64_at(fadt, 140));
    assert_eq!(
        u32_at(fadt, 40) as u64,
        u64_at(fadt, 140),
        "DSDT and X_DSDT"
    );
    assert_eq!(&dsdt[..4], b"DSDT");
    assert_eq!(sum(&dsdt), 0);
    let mut facs = [0u8; 64];
    mem.read(u32_at(fadt, 36) as u64, &mut facs).unwrap();
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(fadt, 36) % 64, 0, "FACS is 64-byte aligned");
    // The fixed hardware matches the PM device.
    use crate::devices::legacy::pm;
    assert_eq!(u32_at(fadt, 56), pm::PM1_EVT as u32);
    assert_eq!(u32_at(fadt, 64), pm::PM1_CNT as u32);
    assert_eq!(u32_at(fadt, 76), pm::PM_TMR as u32);
    assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9);
    // The MADT: 4 enabled local APICs, the IOAPIC, IRQ 0 on GSI 0, the SCI level/high.
    let madt = &via_xsdt[1];
    let mut lapics = 0;
    let mut overrides = Vec::new();
    let mut o = 44;
    while o < madt.len() {
        let (ty, len) = (madt[o], madt[o + 1] as usize);
        match ty {
            0 => {
                assert_eq!(madt[o + 3], lapics, "APIC ID");
                assert_eq!(madt[o + 4] & 1, 1, "enabled");
                lapics += 1;
            }
            1 => assert_eq!(u32_at(madt, o + 4), 0xfec0_0000),
            2 => overrides.push((
                madt[o + 3],
                u32_at(madt, o + 4),
                u16::from_le_bytes([madt[o + 8], madt[o + 9]]),
            )),
            _ => {}
        }
        o += len;
    }
    assert_eq!(o, madt.len());
    assert_eq!(lapics, 4);
    assert_eq!(overrides, vec![(0, 0, 0), (9, 9, 0xd)]);
    // ISA IRQ 0 reaches IOAPIC pin 0 in KVM's routing, as the override says.
    assert!(crate::devices::pci::irq::default_routes()
        .iter()
        .any(|r| r.gsi == 0 && r.u[0] == 2 && r.u[1] == 0));
    let mcfg = &via_xsdt[2];
    assert_eq!(u64_at(mcfg, 44), crate::devices::pci::ECAM_BASE);
}

#[test]
fn tables_fit_for_255_cpus() {
    let t = build(&Config::direct(255));
    assert!(TABLES_ADDR + (t.tables.len() as u64) <= TABLES_END);
    let madt = t.table(b"APIC").unwrap();
    assert_eq!(madt.len(), 44 + 255 * 8 + 12 + 2 * 10 + 6);
}

#[test]
fn firmware_tables_have_no_mcfg_and_a_loader_for_seabios() {
    let t = build(&Config::firmware(2, 512 << 20));
    assert!(t.table(b"MCFG").is_none());
    let files = t.fw_cfg_files();
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    assert_eq!(names, vec![TABLES_FILE, RSDP_FILE, LOADER_FILE]);
    let loader = &files[2].1;
    assert_eq!(loader.len() % loader::ENTRY_SIZE, 0);
    // The RSDP goes to the F segment, where SeaBIOS and the OS look for it.
    assert!(loader
        .chunks(loader::ENTRY_SIZE)
        .any(|e| e[0] == 1 && e[4..4 + RSDP_FILE.len()] == *RSDP_FILE.as_bytes() && e[64] == 2));
    // Linked anywhere (as SeaBIOS would), every table checks out.
    let mem = MmapMemory::new(&[(0, 64 << 20)]).unwrap();
    let (rsdp, tables) = t.linked(0xf_5a30, 0x3ff_0000).unwrap();
    mem.write(0xf_5a30, &rsdp).unwrap();
    mem.write(0x3ff_0000, &tables).unwrap();
    let (_, _, via_xsdt) = find_tables(&mem);
    assert_eq!(via_xsdt.len(), 2);
    assert!(via_xsdt.iter().all(|t| sum(t) == 0));
    // The root bridge's window starts above low RAM.
    assert_eq!(
        Config::firmware(1, 3 << 30).pci_mmio.0 as u64,
        crate::memory::layout::PCI_HOLE_START
    );
}

#[test]
fn rsdp_is_announced_in_the_boot_protocols() {
    use crate::boot::{addr, BootPlan, EntryMode};
    let mem = MmapMemory::new(&[(0, 16 << 20)]).unwrap();
    let linux = BootPlan {
        entry: 0x10_0000,
        mode: EntryMode::Long64 {
            rsi: addr::ZERO_PAGE,
        },
        kind: "Linux",
    };
    announce_rsdp(&mem, &linux, RSDP_ADDR).unwrap();
    assert_eq!(mem.read_u64(addr::ZERO_PAGE + 0x70).unwrap(), RSDP_ADDR);
    let pvh = BootPlan {
        entry: 0x10_0000,
        mode: EntryMode::Protected32 {
            eax: 0,
            ebx: const { crate::bits::const_u32(addr::PVH_START_INFO) },
            esi: 0,
        },
        kind: "PVH",
    };
    announce_rsdp(&mem, &pvh, RSDP_ADDR).unwrap();
    assert_eq!(
        mem.read_u64(addr::PVH_START_INFO + 0x20).unwrap(),
        RSDP_ADDR
    );
}

/// Every table through ACPICA's disassembler (`iasl -d`, Debian's acpica-tools): it must
/// accept each one without an error or a warning. Skipped when iasl is missing, unless
/// FUGU_REQUIRE_ALL is set (`cargo xtask test` as root installs acpica-tools and sets it).
#[test]
fn iasl_disassembles_every_table_cleanly() {
    let have = std::process::Command::new("iasl")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("FUGU_REQUIRE_ALL").is_none(),
            "iasl is required under cargo xtask test but not installed: apt-get install acpica-tools"
        );
        eprintln!("skipped: iasl not installed (apt-get install acpica-tools)");
        return;
    }
    for (name, cfg) in [
        ("direct", Config::direct(4)),
        ("firmware", Config::firmware(2, 1 << 30)),
    ] {
        let dir = std::env::temp_dir().join(format!(
            "fugu-acpi-iasl-{}-{name}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let files = dump(&build(&cfg), &dir).unwrap();
        assert_eq!(files.len(), if cfg.ecam.is_some() { 8 } else { 7 });
        for f in files {
            // The RSDP is no SDT: this iasl (20200925) refuses a bare one ("not a valid ACPI
            // table"); find_tables checks its checksums and pointers.
            if f.ends_with("rsdp.dat") {
                continue;
            }
            let out = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&f)
                .current_dir(&dir)
                .output()
                .unwrap();
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let dsl = std::fs::read_to_string(f.with_extension("dsl")).unwrap_or_default();
            let bad = |s: &str| {
                s.lines()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        l.contains("warning") && !l.contains("0 warnings")
                            || l.contains("error") && !l.contains("0 errors")
                            || l.contains("invalid")
                            || l.contains("incorrect")
                            || l.contains("unknown")
                    })
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            assert!(out.status.success(), "iasl -d {}: {log}", f.display());
            assert!(!dsl.is_empty(), "iasl wrote no {}: {log}", f.display());
            let (b1, b2) = (bad(&log), bad(&dsl));
            assert!(
                b1.is_empty() && b2.is_empty(),
                "iasl -d {}: {b1:?} {b2:?}",
                f.display()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The text `acpidump` prints for `tables` (signature, address), as on a real machine.
fn acpidump_text(tables: &[(String, u64, Vec<u8>)]) -> String {
    let mut out = String::new();
    for (sig, addr, data) in tables {
        out.push_str(&format!("{sig} @ 0x{addr:016x}\n"));
        for (i, line) in data.chunks(16).enumerate() {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02X}")).collect();
            let ascii: String = line
                .iter()
                .map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            out.push_str(&format!(
                "    {:04X}: {:<48} {ascii}\n",
                i * 16,
                hex.join(" ")
            ));
        }
        out.push('\n');
    }
    out
}

/// acpidump → acpixtract round trip: the tables a direct boot leaves in guest memory,
/// walked from the RSDP and printed in acpidump's format, come back out of `acpixtract -a`
/// byte for byte. Skipped like the iasl test when acpica-tools is missing.
#[test]
fn acpixtract_round_trips_the_tables_in_guest_memory() {
    let have = std::process::Command::new("acpixtract")
        .arg("-v")
        .output()
        .is_ok();
    if !have {
        assert!(
            std::env::var_os("FUGU_REQUIRE_ALL").is_none(),
            "acpixtract is required under cargo xtask test but not installed: apt-get install acpica-tools"
        );
        eprintln!("skipped: acpixtract not installed (apt-get install acpica-tools)");
        return;
    }
    let mem = MmapMemory::new(&[(0, 64 << 20)]).unwrap();
    write(&mem, &build(&Config::direct(2))).unwrap();
    let (_, _, via_xsdt) = find_tables(&mem);
    let mut found: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let xsdt_addr = mem.read_u64(RSDP_ADDR + 24).unwrap();
    found.push(("XSDT".into(), xsdt_addr, table_at(&mem, xsdt_addr)));
    for (i, t) in via_xsdt.iter().enumerate() {
        let addr = mem.read_u64(xsdt_addr + 36 + 8 * i as u64).unwrap();
        found.push((
            String::from_utf8_lossy(&t[..4]).into_owned(),
            addr,
            t.clone(),
        ));
    }
    let fadt = &via_xsdt[0];
    let dsdt_addr = u64_at(fadt, 140);
    found.push(("DSDT".into(), dsdt_addr, table_at(&mem, dsdt_addr)));
    let dir = std::env::temp_dir().join(format!(
        "fugu-acpixtract-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("acpidump.txt"), acpidump_text(&found)).unwrap();
    let out = std::process::Command::new("acpixtract")
        .args(["-a", "acpidump.txt"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "acpixtract: {out:?}");
    for (sig, _, data) in &found {
        let p = dir.join(format!("{}.dat", sig.to_ascii_lowercase()));
        let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: {out:?}", p.display()));
        assert!(got == *data, "{sig} differs after the round trip");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
