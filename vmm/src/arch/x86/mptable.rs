//! The Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI finds its CPUs,
//! the I/O APIC and the ISA and PCI INTx interrupt routing. Written in the BIOS area (0xF0000-0xFFFFF,
//! reserved in the e820 map), which kernels scan for the floating pointer; the EBDA is too
//! small for the table of a large VM.

use crate::memory::GuestMemory;

/// The floating pointer; the configuration table follows it.
pub const MPTABLE_START: u64 = 0xf_0000;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const PCI_BUS: u8 = 0;
const ISA_BUS: u8 = 1;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Build the floating pointer and configuration table for `cpus` processors.
pub fn build(cpus: u8) -> Vec<u8> {
    let ioapic_id = cpus;
    let table_addr = u32::try_from(MPTABLE_START + 16).unwrap_or(u32::MAX);
    let mut entries = Vec::new();
    let mut count = 0u16;
    for id in 0..cpus {
        // Processor: type 0, APIC ID, version, flags (enabled, BSP), signature, features.
        let flags = 1 | if id == 0 { 2 } else { 0 };
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x0600u32.to_le_bytes()); // family 6
        entries.extend_from_slice(&0x0201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus IDs: the PCI bus must carry its bus number (0); ISA gets 1.
    entries.extend_from_slice(&[1, PCI_BUS]);
    entries.extend_from_slice(b"PCI   ");
    entries.extend_from_slice(&[1, ISA_BUS]);
    entries.extend_from_slice(b"ISA   ");
    count += 2;
    // The I/O APIC.
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // ISA IRQs 0-15 to the same I/O APIC pins, as KVM's default GSI routing wires them: the
    // in-kernel PIT raises GSI 0, which reaches IOAPIC pin 0 (and 8259 input 0), not pin 2
    // where a PC's BIOS puts IRQ 0 (QEMU reroutes GSI 0 to pin 2 for that; fugu keeps KVM's
    // routing, as the MP table SeaBIOS writes under `--bios` without an IRQ0 override does).
    // Announcing pin 2 left Linux's PIT interrupt masked: once the LAPIC timer failed its
    // check against the PIT (no TSC-deadline mode), the guest had no timer at all (issue 14).
    // Conforming polarity and trigger (edge, active high for ISA).
    for irq in 0u8..16 {
        if irq == 2 {
            continue;
        }
        let pin = irq;
        entries.extend_from_slice(&[3, 0, 0, 0, ISA_BUS, irq, ioapic_id, pin]);
        count += 1;
    }
    // PCI INTA# of every slot: level-triggered, active low, to the pin fugu wires it to.
    for slot in 0u8..32 {
        // GSIs 16-23: the I/O APIC's pins fit a byte.
        let pin = u8::try_from(crate::devices::pci::intx_gsi(slot)).unwrap_or(0);
        entries.extend_from_slice(&[3, 0, 0x0f, 0, PCI_BUS, slot << 2, ioapic_id, pin]);
        count += 1;
    }
    // Local interrupts: ExtINT on LINT0, NMI on LINT1, for all local APICs.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = Vec::new();
    table.extend_from_slice(b"PCMP");
    // At most 255 CPUs and 32 slots of 8..20-byte entries: far below 64 KiB.
    let length = u16::try_from(44 + entries.len()).unwrap_or(u16::MAX);
    table.extend_from_slice(&length.to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"FUGU    ");
    table.extend_from_slice(b"FUGUVM      ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended checksum
    table.push(0);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::new();
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 16 bytes, rev 1.4, checksum, features
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    fp
}

/// Write the tables for `cpus` processors into guest memory.
pub fn write(mem: &dyn GuestMemory, cpus: u8) -> crate::memory::Result<()> {
    mem.write(MPTABLE_START, &build(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_valid() {
        let b = build(4);
        assert_eq!(&b[..4], b"_MP_");
        assert_eq!(b[..16].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let t = &b[16..];
        assert_eq!(&t[..4], b"PCMP");
        let len = u16::from_le_bytes([t[4], t[5]]) as usize;
        assert_eq!(len, t.len());
        assert_eq!(t.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let n = u16::from_le_bytes([t[34], t[35]]);
        assert_eq!(n, 4 + 2 + 1 + 15 + 32 + 2);
        assert_eq!(t[44], 0, "first entry is a processor");
        assert_eq!(t[47], 3, "the BSP is enabled and marked");
        // Every ISA interrupt entry names the IOAPIC pin KVM's GSI routing delivers that
        // IRQ to (the PIT: GSI 0).
        let routes = crate::devices::pci::irq::default_routes();
        let mut isa = 0;
        for e in t[44 + 20 * 4..]
            .chunks(8)
            .filter(|e| e[0] == 3 && e[4] == ISA_BUS)
        {
            let (irq, pin) = (e[5] as u32, e[7] as u32);
            assert!(
                routes
                    .iter()
                    .any(|r| r.gsi == irq && r.u[0] == 2 && r.u[1] == pin),
                "ISA IRQ {irq} announced on pin {pin}"
            );
            isa += 1;
        }
        assert_eq!(isa, 15);
        // Even 255 processors fit in the BIOS area below 1 MiB.
        assert!(MPTABLE_START + build(255).len() as u64 <= 0x10_0000);
    }
}
