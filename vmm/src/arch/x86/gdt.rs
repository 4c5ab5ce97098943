//! Flat GDT entries and the KVM segment registers that match them.

use crate::hypervisor::Segment;

/// Selectors of the GDT fugu writes at boot (index * 8).
pub const CODE32: u16 = 0x08;
pub const DATA: u16 = 0x10;
pub const CODE64: u16 = 0x18;
pub const TSS: u16 = 0x20;

/// Encode a descriptor from access byte + flags (`0xF0FF` layout: flags<<12 | access),
/// base and limit (in units given by the granularity flag).
pub const fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0xffff)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The GDT: null, 32-bit code, data, 64-bit code, TSS.
pub fn table() -> [u64; 5] {
    [
        0,
        entry(0xc09b, 0, 0xfffff), // 32-bit code, 4 GiB, accessed
        entry(0xc093, 0, 0xfffff), // data, 4 GiB, accessed
        entry(0xa09b, 0, 0xfffff), // 64-bit code
        entry(0x008b, 0, 0x67),    // busy 32-bit TSS
    ]
}

/// The KVM segment register for GDT entry `e` loaded with `selector`.
pub fn segment(e: u64, selector: u16) -> Segment {
    // The descriptor's fields, each masked to its width: the conversions cannot fail.
    let base = ((e >> 16) & 0xff_ffff) | ((e >> 32) & 0xff00_0000);
    let limit = u32::try_from((e & 0xffff) | ((e >> 32) & 0xf_0000)).unwrap_or(0);
    let g = ((e >> 55) & 1) as u8;
    Segment {
        base,
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments_decode_as_expected() {
        let t = table();
        assert_eq!(t[1], 0x00cf_9b00_0000_ffff);
        let cs = segment(t[1], CODE32);
        assert_eq!(
            (cs.base, cs.limit, cs.db, cs.l, cs.type_, cs.s),
            (0, 0xffff_ffff, 1, 0, 0xb, 1)
        );
        let cs64 = segment(t[3], CODE64);
        assert_eq!((cs64.l, cs64.db), (1, 0));
        let tss = segment(t[4], TSS);
        assert_eq!((tss.s, tss.type_, tss.limit), (0, 0xb, 0x67));
    }
}
