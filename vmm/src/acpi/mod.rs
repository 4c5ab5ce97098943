//! ACPI tables, generated when the VM is created (fugu's own small generator: rust-vmm's
//! `acpi_tables` crate does not build with the Rust 1.85 of the i686 toolchain — it uses
//! `u32::is_multiple_of`, stable since 1.87 — so the headers, the fixed tables and the DSDT's
//! AML ([`aml`]) are written here, on every host):
//!
//! - RSDP (revision 2) → RSDT (32-bit guests) and XSDT, both listing FADT, MADT and MCFG;
//! - FADT (revision 6): SCI on IRQ 9, the PM1a event and control blocks and the PM timer of
//!   devices/legacy/pm.rs, the reset register (the i8042 pulse fugu already handles), the
//!   fixed power button; FACS and DSDT through it;
//! - MADT: every vCPU's local APIC, the IOAPIC, interrupt source overrides (ISA IRQ 0 on
//!   GSI 0 as KVM routes the PIT — see arch/x86/mptable.rs —, the SCI level-triggered on 9),
//!   NMI on LINT1;
//! - MCFG: the ECAM window of PCI bus 0 (fugu's own PCI layout; the `--bios` i440FX has none);
//! - DSDT: see [`dsdt`].
//!
//! The tables are one fw_cfg-style file (`etc/acpi/tables`) with the RSDP in another
//! (`etc/acpi/rsdp`); the pointers between them are offsets that a [`loader::Loader`]
//! relocates. Firmware boots hand the three files to SeaBIOS (`etc/table-loader`); direct
//! boots run the same loader here and place the result at [`RSDP_ADDR`] (findable by the
//! 0xE0000-0xFFFFF scan) and announce it in the boot protocol's own field
//! ([`announce_rsdp`]).

pub mod aml;
pub mod dsdt;
pub mod loader;

use crate::bits;
use crate::memory::GuestMemory;
use loader::{LinkError, Loader, Zone};

pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const LOADER_FILE: &str = "etc/table-loader";

/// Direct boot: the RSDP at the start of the 0xE0000 BIOS area (reserved in the e820 map,
/// scanned by kernels), the other tables right after it, below the MP table at 0xF0000.
pub const RSDP_ADDR: u64 = 0xe_0000;
pub const TABLES_ADDR: u64 = 0xe_0040;
pub const TABLES_END: u64 = crate::arch::x86::mptable::MPTABLE_START;

/// Who made the tables, in every header.
pub struct Oem {
    pub id: [u8; 6],
    pub table_id: [u8; 8],
    pub revision: u32,
    pub creator_id: [u8; 4],
    pub creator_revision: u32,
}

const OEM: Oem = Oem {
    id: *b"FUGU  ",
    table_id: *b"FUGUVM  ",
    revision: 1,
    creator_id: *b"FUGU",
    creator_revision: 1,
};
const LAPIC_ADDR: u32 = 0xfee0_0000;
const IOAPIC_ADDR: u32 = 0xfec0_0000;

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cpus: u8,
    /// The PCI root bridge's 32-bit memory window (inclusive).
    pub pci_mmio: (u32, u32),
    /// The ECAM window (base, length) of bus 0, when the machine has one.
    pub ecam: Option<(u64, u64)>,
}

impl Config {
    /// A direct boot: fugu's PCI layout (BARs below the ECAM window, ECAM for bus 0).
    pub fn direct(cpus: u8) -> Self {
        use crate::devices::pci::{ECAM_BASE, ECAM_SIZE, MMIO_BASE, MMIO_SIZE};
        Config {
            cpus,
            pci_mmio: (
                const { bits::const_u32(MMIO_BASE) },
                const { bits::const_u32(MMIO_BASE + MMIO_SIZE - 1) },
            ),
            ecam: Some((ECAM_BASE, ECAM_SIZE)),
        }
    }

    /// `--bios`: the i440FX, whose firmware places BARs from the end of low RAM up to the
    /// IOAPIC, and which has no ECAM.
    pub fn firmware(cpus: u8, mem_size: u64) -> Self {
        let (lo, hi) = crate::devices::pci::i440fx::PCI_WINDOW;
        let low_ram_end = mem_size.min(crate::memory::layout::PCI_HOLE_START);
        Config {
            cpus,
            // Both ends are at most the PCI hole's start or the window's end: below 4 GiB.
            pci_mmio: (bits::lo32(lo.max(low_ram_end)), bits::lo32(hi - 1)),
            ecam: None,
        }
    }
}

/// The tables as relocatable files and the loader commands that link them.
#[derive(Debug, Clone)]
pub struct Tables {
    /// `etc/acpi/tables`: FACS first (64-byte aligned), then the other tables.
    pub tables: Vec<u8>,
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    pub loader: Loader,
    /// (signature, offset, length) of every table in `tables`.
    pub index: Vec<([u8; 4], usize, usize)>,
}

/// A table of `len` bytes: the header, then zeros for the body.
fn table(sig: &[u8; 4], revision: u8, len: usize) -> Vec<u8> {
    let mut t = aml::sdt_header(sig, revision, &OEM);
    t.resize(len, 0);
    t
}

fn put(t: &mut [u8], off: usize, v: &[u8]) {
    t[off..off + v.len()].copy_from_slice(v);
}

/// A generic address structure (register in system I/O space).
fn gas_io(port: u16, bits: u8, access: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O
    g[1] = bits;
    g[3] = access;
    g[4..6].copy_from_slice(&port.to_le_bytes());
    g
}

impl Tables {
    fn push(&mut self, sig: [u8; 4], data: &[u8]) -> usize {
        // Tables start 8-byte aligned.
        self.tables.resize(self.tables.len().next_multiple_of(8), 0);
        let off = self.tables.len();
        self.tables.extend_from_slice(data);
        self.index.push((sig, off, data.len()));
        off
    }

    /// Pointer fields inside the table at `table` (offsets into `etc/acpi/tables`), then
    /// the table's checksum.
    fn link_table(&mut self, table: usize, pointers: &[(usize, u8)]) {
        for &(field, size) in pointers {
            self.loader
                .add_pointer(TABLES_FILE, TABLES_FILE, table + field, size);
        }
        let len = self.index.iter().find(|e| e.1 == table).map_or(0, |e| e.2);
        self.loader.add_checksum(TABLES_FILE, table + 9, table, len);
    }

    /// A table's bytes as they are in the file (pointer fields hold offsets).
    #[cfg(test)]
    pub fn table(&self, sig: &[u8; 4]) -> Option<&[u8]> {
        self.index
            .iter()
            .find(|e| &e.0 == sig)
            .map(|e| &self.tables[e.1..e.1 + e.2])
    }

    /// The three fw_cfg files for firmware (SeaBIOS), as QEMU names them.
    pub fn fw_cfg_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (TABLES_FILE, self.tables.clone()),
            (RSDP_FILE, self.rsdp.clone()),
            (LOADER_FILE, self.loader.to_bytes()),
        ]
    }

    /// The files linked as if allocated at `rsdp_addr` and `tables_addr`: (rsdp, tables).
    pub fn linked(
        &self,
        rsdp_addr: u64,
        tables_addr: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), LinkError> {
        let mut files = [
            (TABLES_FILE, self.tables.clone(), tables_addr),
            (RSDP_FILE, self.rsdp.clone(), rsdp_addr),
        ];
        self.loader.link(&mut files)?;
        let [(_, tables, _), (_, rsdp, _)] = files;
        Ok((rsdp, tables))
    }
}

/// An offset in the tables blob as a 32-bit pointer field holds it before the loader
/// relocates it (the blob is a few KiB).
pub(crate) fn off32(off: usize) -> u32 {
    u32::try_from(off).unwrap_or(u32::MAX)
}

fn fadt(facs: usize, dsdt: usize) -> (Vec<u8>, Vec<(usize, u8)>) {
    use crate::devices::legacy::pm;
    let mut t = table(b"FACP", 6, 276);
    // FIRMWARE_CTRL (X_FIRMWARE_CTRL stays 0) and DSDT: offsets, relocated by the loader.
    put(&mut t, 36, &off32(facs).to_le_bytes());
    put(&mut t, 40, &off32(dsdt).to_le_bytes());
    // Preferred PM profile 0 (unspecified); the SCI.
    put(
        &mut t,
        46,
        &const { bits::const_u16(pm::SCI_IRQ as u64) }.to_le_bytes(),
    );
    // SMI_CMD 0: always in ACPI mode (SCI_EN reads 1), no ACPI_ENABLE handshake.
    put(&mut t, 56, &(pm::PM1_EVT as u32).to_le_bytes());
    put(&mut t, 64, &(pm::PM1_CNT as u32).to_le_bytes());
    put(&mut t, 76, &(pm::PM_TMR as u32).to_le_bytes());
    // PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN; no GPE blocks.
    put(&mut t, 88, &[4, 2, 0, 4]);
    // P_LVL2_LAT > 100 and P_LVL3_LAT > 1000: no C2, no C3.
    put(&mut t, 96, &101u16.to_le_bytes());
    put(&mut t, 98, &1001u16.to_le_bytes());
    // IAPC_BOOT_ARCH: legacy devices, an 8042, no VGA.
    put(&mut t, 109, &7u16.to_le_bytes());
    // WBINVD, PROC_C1, SLP_BUTTON (none), FIX_RTC (no RTC wake status), TMR_VAL_EXT (32-bit
    // PM timer), RESET_REG_SUP. PWR_BUTTON (bit 4) clear: the fixed-feature power button.
    let flags: u32 = 1 | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 8) | (1 << 10);
    put(&mut t, 112, &flags.to_le_bytes());
    // The reset register: 0xFE to the i8042's command port pulses the CPU reset line.
    put(
        &mut t,
        116,
        &gas_io(crate::devices::legacy::i8042::BASE + 4, 8, 1),
    );
    t[128] = 0xfe;
    // FADT minor version 0 (ACPI 6.0); X_DSDT; the extended fixed-hardware blocks.
    put(&mut t, 140, &(dsdt as u64).to_le_bytes());
    put(&mut t, 148, &gas_io(pm::PM1_EVT, 32, 0));
    put(&mut t, 172, &gas_io(pm::PM1_CNT, 16, 0));
    put(&mut t, 208, &gas_io(pm::PM_TMR, 32, 0));
    aml::finish(&mut t);
    (t, vec![(36, 4), (40, 4), (140, 8)])
}

fn madt(cfg: &Config) -> Vec<u8> {
    use crate::devices::legacy::pm;
    let mut t = table(b"APIC", 5, 44);
    put(&mut t, 36, &LAPIC_ADDR.to_le_bytes());
    put(&mut t, 40, &1u32.to_le_bytes()); // PCAT_COMPAT: there are 8259s too
    let mut body = Vec::new();
    for id in 0..cfg.cpus {
        // Processor local APIC: UID, APIC ID, enabled.
        body.extend_from_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    // The IOAPIC: the ID the MP table gives it, GSI base 0.
    body.extend_from_slice(&[1, 12, cfg.cpus, 0]);
    body.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt source overrides: bus 0 (ISA), source IRQ, GSI, flags.
    let iso = |b: &mut Vec<u8>, irq: u8, gsi: u32, flags: u16| {
        b.extend_from_slice(&[2, 10, 0, irq]);
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    };
    // IRQ 0 stays on GSI 0 (KVM's routing; a PC BIOS would say 2), conforming.
    iso(&mut body, 0, 0, 0);
    // The SCI: level-triggered, active high.
    iso(
        &mut body,
        const { bits::const_u8(pm::SCI_IRQ as u64) },
        pm::SCI_IRQ,
        0x000d,
    );
    // Local APIC NMI on LINT1 of every processor (UID 0xFF).
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    t.extend(body);
    aml::finish(&mut t);
    t
}

fn mcfg(base: u64) -> Vec<u8> {
    // 8 reserved bytes, then one allocation: base, segment 0, buses 0-0.
    let mut t = table(b"MCFG", 1, 44);
    t.extend_from_slice(&base.to_le_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    aml::finish(&mut t);
    t
}

/// The FACS: no checksum, 64 bytes, version 1 (no 64-bit waking vector in use).
fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 1;
    f
}

/// Build every table for `cfg`.
pub fn build(cfg: &Config) -> Tables {
    let mut t = Tables {
        tables: Vec::new(),
        rsdp: Vec::new(),
        loader: Loader::default(),
        index: Vec::new(),
    };
    t.loader.allocate(TABLES_FILE, 64, Zone::High);
    t.loader.allocate(RSDP_FILE, 16, Zone::FSeg);

    let facs_off = t.push(*b"FACS", &facs());

    let mut dsdt = table(b"DSDT", 2, 36);
    dsdt.extend(dsdt::aml(cfg));
    aml::finish(&mut dsdt);
    let dsdt_off = t.push(*b"DSDT", &dsdt);
    t.link_table(dsdt_off, &[]);

    let (fadt, fadt_ptrs) = fadt(facs_off, dsdt_off);
    let fadt_off = t.push(*b"FACP", &fadt);
    t.link_table(fadt_off, &fadt_ptrs);

    let mut listed = vec![fadt_off];
    let madt_off = t.push(*b"APIC", &madt(cfg));
    t.link_table(madt_off, &[]);
    listed.push(madt_off);
    if let Some((base, _)) = cfg.ecam {
        let off = t.push(*b"MCFG", &mcfg(base));
        t.link_table(off, &[]);
        listed.push(off);
    }

    let mut xsdt = table(b"XSDT", 1, 36);
    let mut rsdt = table(b"RSDT", 1, 36);
    for &off in &listed {
        xsdt.extend_from_slice(&(off as u64).to_le_bytes());
        rsdt.extend_from_slice(&off32(off).to_le_bytes());
    }
    aml::finish(&mut xsdt);
    aml::finish(&mut rsdt);
    let xsdt_off = t.push(*b"XSDT", &xsdt);
    let ptrs: Vec<(usize, u8)> = (0..listed.len()).map(|i| (36 + 8 * i, 8)).collect();
    t.link_table(xsdt_off, &ptrs);
    let rsdt_off = t.push(*b"RSDT", &rsdt);
    let ptrs: Vec<(usize, u8)> = (0..listed.len()).map(|i| (36 + 4 * i, 4)).collect();
    t.link_table(rsdt_off, &ptrs);

    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, by the loader
    rsdp.extend_from_slice(&OEM.id);
    rsdp.push(2); // revision: ACPI 2.0+, has the XSDT
    rsdp.extend_from_slice(&off32(rsdt_off).to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&(xsdt_off as u64).to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]); // extended checksum, reserved
    t.rsdp = rsdp;
    t.loader.add_pointer(RSDP_FILE, TABLES_FILE, 16, 4);
    t.loader.add_pointer(RSDP_FILE, TABLES_FILE, 24, 8);
    t.loader.add_checksum(RSDP_FILE, 8, 0, 20);
    t.loader.add_checksum(RSDP_FILE, 32, 0, 36);
    t
}

/// Why the tables cannot be written for a direct boot.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The tables' size in bytes.
    #[error("the ACPI tables ({0} bytes) do not fit below the MP table")]
    TooLarge(usize),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Memory(#[from] crate::memory::OutOfRange),
}

/// Why `fugu acpi-tables` cannot write the tables.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Direct boot: write the linked tables at [`RSDP_ADDR`] / [`TABLES_ADDR`].
pub fn write(mem: &dyn GuestMemory, tables: &Tables) -> Result<u64, WriteError> {
    if TABLES_ADDR + tables.tables.len() as u64 > TABLES_END {
        return Err(WriteError::TooLarge(tables.tables.len()));
    }
    let (rsdp, t) = tables.linked(RSDP_ADDR, TABLES_ADDR)?;
    mem.write(TABLES_ADDR, &t)?;
    mem.write(RSDP_ADDR, &rsdp)?;
    Ok(RSDP_ADDR)
}

/// Direct boot: build the tables for `cpus`, write them and announce the RSDP to the kernel.
pub fn setup_direct(
    mem: &dyn GuestMemory,
    plan: &crate::boot::BootPlan,
    cpus: u8,
) -> Result<(), WriteError> {
    let rsdp = write(mem, &build(&Config::direct(cpus)))?;
    Ok(announce_rsdp(mem, plan, rsdp)?)
}

/// Write every table, linked as for a direct boot, to `dir` as `<signature>.dat` (the names
/// `acpixtract` gives, which `iasl -d` takes), plus `rsdp.dat`; returns the paths.
pub fn dump(tables: &Tables, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, DumpError> {
    let (rsdp, linked) = tables.linked(RSDP_ADDR, TABLES_ADDR)?;
    let mut written = Vec::new();
    let mut put = |name: String, data: &[u8]| -> Result<(), DumpError> {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(|source| DumpError::Write {
            path: p.clone(),
            source,
        })?;
        written.push(p);
        Ok(())
    };
    for (sig, off, len) in &tables.index {
        let name = String::from_utf8_lossy(sig).to_ascii_lowercase();
        put(format!("{name}.dat"), &linked[*off..off + len])?;
    }
    put("rsdp.dat".into(), &rsdp)?;
    Ok(written)
}

/// Where boot_params keeps the RSDP's address (boot protocol 2.14+).
const BOOT_PARAMS_ACPI_RSDP_ADDR: u64 = 0x070;
/// Where hvm_start_info keeps it.
const PVH_RSDP_PADDR: u64 = 0x20;

/// Tell a directly booted kernel where the RSDP is, in its boot protocol's own field: the
/// Linux zero page (entered with RSI/ESI pointing at it) or the PVH start info (EBX).
/// Multiboot has no such field; its kernels scan for the RSDP.
pub fn announce_rsdp(
    mem: &dyn GuestMemory,
    plan: &crate::boot::BootPlan,
    rsdp: u64,
) -> crate::memory::Result<()> {
    use crate::boot::{addr, EntryMode};
    match plan.mode {
        EntryMode::Long64 { rsi } if rsi == addr::ZERO_PAGE => mem.write(
            addr::ZERO_PAGE + BOOT_PARAMS_ACPI_RSDP_ADDR,
            &rsdp.to_le_bytes(),
        ),
        EntryMode::Protected32 { esi, .. } if esi as u64 == addr::ZERO_PAGE => mem.write(
            addr::ZERO_PAGE + BOOT_PARAMS_ACPI_RSDP_ADDR,
            &rsdp.to_le_bytes(),
        ),
        EntryMode::Protected32 { ebx, .. } if ebx as u64 == addr::PVH_START_INFO => {
            mem.write(addr::PVH_START_INFO + PVH_RSDP_PADDR, &rsdp.to_le_bytes())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
