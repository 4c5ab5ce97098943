//! The DSDT's AML (acpi/aml.rs): the devices fugu has and how their interrupts are wired.
//!
//! - `\_SB.PCI0`: PCI bus 0 (PNP0A03) with its bus number, I/O and 32-bit memory windows,
//!   and `_PRT`: INTA#-INTD# of every slot to IOAPIC inputs 16-19, swizzled by slot
//!   ([`crate::devices::pci::intx_gsi`] for INTA#).
//! - Under it the ISA devices: COM1 (PNP0501, 0x3F8, IRQ 4), the i8042 keyboard controller
//!   (PNP0303, 0x60/0x64, IRQ 1; SeaBIOS looks for it before it drives the keyboard), the
//!   CMOS RTC (PNP0B00, 0x70, IRQ 8), and the motherboard resources (PNP0C02: the PM block,
//!   fw_cfg, the ECAM window) so that the OS keeps them.
//! - `\_S5`: the sleep type value for soft-off (see devices/legacy/pm.rs).
//!
//! The power button is ACPI's fixed-feature button (PM1 status/enable PWRBTN), announced by
//! the FADT, not a device here: a PNP0C0C device would be a second, control-method button.

use super::aml::{self, int, name};
use super::Config;
use crate::bits;
use crate::devices::legacy::{cmos, fw_cfg, pm, serial};
use crate::devices::pci;

/// An ISA device: `_HID`, `_UID` and a `_CRS` of fixed I/O ranges and one IRQ.
fn isa_device(path: &str, hid: &str, uid: u64, io: &[(u16, u8)], irq: u8) -> Vec<u8> {
    let mut res: Vec<Vec<u8>> = io
        .iter()
        .map(|&(base, len)| aml::io(base, base, 1, len))
        .collect();
    res.push(aml::irq_no_flags(irq));
    aml::device(
        path,
        &[
            name("_HID", &aml::eisa_id(hid)),
            name("_UID", &int(uid)),
            name("_CRS", &aml::resource_template(&res)),
        ],
    )
}

/// The DSDT's definition block (everything after the table header).
pub fn aml(cfg: &Config) -> Vec<u8> {
    // _PRT: Package { address (slot << 16 | 0xFFFF), pin, source (0: a GSI), GSI }.
    let mut prt = Vec::new();
    for slot in 0u64..32 {
        for pin in 0u64..4 {
            let gsi = pci::INTX_GSI_BASE as u64 + (slot + pin) % 4;
            prt.push(aml::package(&[
                int((slot << 16) | 0xffff),
                int(pin),
                int(0),
                int(gsi),
            ]));
        }
    }
    let (mmio_lo, mmio_hi) = cfg.pci_mmio;
    let cf8 = const { bits::const_u16(pci::CONFIG_IO_BASE) };
    let pci_crs = aml::resource_template(&[
        aml::word_bus_number(0, 0),
        aml::io(cf8, cf8, 1, const { bits::const_u8(pci::CONFIG_IO_LEN) }),
        aml::word_io(0, cf8 - 1),
        aml::word_io(0x0d00, 0xffff),
        aml::dword_memory(mmio_lo, mmio_hi),
    ]);

    let mut mres = vec![
        aml::io(pm::BASE, pm::BASE, 1, const { bits::const_u8(pm::LEN) }),
        aml::io(
            fw_cfg::BASE,
            fw_cfg::BASE,
            1,
            const { bits::const_u8(fw_cfg::LEN) },
        ),
    ];
    if let Some((base, len)) = cfg.ecam {
        // The ECAM window sits below 4 GiB (Memory32Fixed cannot describe one above).
        if let (Ok(base), Ok(len)) = (u32::try_from(base), u32::try_from(len)) {
            mres.push(aml::memory32_fixed(true, base, len));
        }
    }
    let motherboard = aml::device(
        "MRES",
        &[
            name("_HID", &aml::eisa_id("PNP0C02")),
            name("_UID", &int(0)),
            name("_CRS", &aml::resource_template(&mres)),
        ],
    );

    let pci0 = aml::device(
        "PCI0",
        &[
            name("_HID", &aml::eisa_id("PNP0A03")),
            name("_ADR", &int(0)),
            name("_SEG", &int(0)),
            name("_UID", &int(0)),
            name("_BBN", &int(0)),
            name("_CRS", &pci_crs),
            name("_PRT", &aml::package(&prt)),
            isa_device(
                "COM1",
                "PNP0501",
                1,
                &[(serial::COM1, 8)],
                const { bits::const_u8(serial::COM1_IRQ as u64) },
            ),
            isa_device("KBD_", "PNP0303", 0, &[(0x60, 1), (0x64, 1)], 1),
            isa_device(
                "RTC_",
                "PNP0B00",
                0,
                &[(cmos::BASE, const { bits::const_u8(cmos::LEN) })],
                8,
            ),
            motherboard,
        ],
    );
    let slp_typ = int(pm::SLP_TYP_S5 as u64);
    let s5 = aml::package(&[slp_typ.clone(), slp_typ, int(0), int(0)]);

    let mut out = aml::scope("\\_SB_", &[pci0]);
    out.extend(name("_S5_", &s5));
    out
}
