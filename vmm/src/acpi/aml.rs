//! A small writer for the AML (ACPI Machine Language) the DSDT needs and for the system
//! description tables' common header. Every function returns encoded bytes; callers nest
//! them (a device's children are the concatenation of its objects).
//!
//! Encodings (ACPI 6.5, chapter 20 and section 6.4): integers use the shortest of ZeroOp,
//! OneOp, BytePrefix, WordPrefix, DWordPrefix and QWordPrefix; a name segment is 4
//! characters (padded with '_'); PkgLength takes 1 to 4 bytes and counts itself.

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';

/// An integer in its shortest encoding.
pub fn int(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, v.to_le_bytes()[0]],
        0x100..=0xffff => {
            let mut b = vec![WORD_PREFIX];
            b.extend_from_slice(&v.to_le_bytes()[..2]);
            b
        }
        0x1_0000..=0xffff_ffff => {
            let mut b = vec![DWORD_PREFIX];
            b.extend_from_slice(&v.to_le_bytes()[..4]);
            b
        }
        _ => {
            let mut b = vec![QWORD_PREFIX];
            b.extend_from_slice(&v.to_le_bytes());
            b
        }
    }
}

/// A name string: "\\_SB_", "PCI0", "_SB_.PCI0" (segments of exactly 4 characters).
pub fn name_string(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let rel = match path.strip_prefix('\\') {
        Some(r) => {
            out.push(ROOT_CHAR);
            r
        }
        None => path,
    };
    let segs: Vec<&str> = rel.split('.').collect();
    match segs.len() {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            // fugu's own paths have a few segments; the encoding holds up to 255.
            out.push(u8::try_from(n).unwrap_or(u8::MAX));
        }
    }
    for s in segs {
        let mut seg = [b'_'; 4];
        for (d, c) in seg.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        out.extend_from_slice(&seg);
    }
    out
}

/// PkgLength for `len` bytes of content (the encoding's own bytes are counted in).
fn pkg_length(len: usize) -> Vec<u8> {
    // One byte holds up to 63; n bytes hold 4 + 8 * (n - 1) bits.
    let total = |n: usize| len + n;
    if total(1) < 1 << 6 {
        return vec![total(1).to_le_bytes()[0]];
    }
    let n = if total(2) < 1 << 12 {
        2
    } else if total(3) < 1 << 20 {
        3
    } else {
        4
    };
    let t = total(n);
    // n is 2..=4 and the low nibble is masked: the low bytes are the encoding.
    let mut out = vec![((n - 1).to_le_bytes()[0] << 6) | (t & 0xf).to_le_bytes()[0]];
    for i in 1..n {
        out.push((t >> (4 + 8 * (i - 1))).to_le_bytes()[0]);
    }
    out
}

/// `op PkgLength body`.
fn with_pkg_length(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = op.to_vec();
    out.extend(pkg_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// `Name (path, object)`.
pub fn name(path: &str, object: &[u8]) -> Vec<u8> {
    let mut out = vec![NAME_OP];
    out.extend(name_string(path));
    out.extend_from_slice(object);
    out
}

/// `Scope (path) { children }`.
pub fn scope(path: &str, children: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(path);
    children.iter().for_each(|c| body.extend_from_slice(c));
    with_pkg_length(&[SCOPE_OP], &body)
}

/// `Device (path) { children }`.
pub fn device(path: &str, children: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(path);
    children.iter().for_each(|c| body.extend_from_slice(c));
    with_pkg_length(&[EXT_OP_PREFIX, DEVICE_OP], &body)
}

/// `Package () { elements }` (at most 255 elements).
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    // fugu's packages are short; the count byte holds up to 255.
    let mut body = vec![u8::try_from(elements.len()).unwrap_or(u8::MAX)];
    elements.iter().for_each(|e| body.extend_from_slice(e));
    with_pkg_length(&[PACKAGE_OP], &body)
}

/// `EisaId ("PNP0A03")`: three letters and four hex digits, compressed to a 32-bit integer.
pub fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    let letter = |c: u8| (c.wrapping_sub(0x40) & 0x1f) as u32;
    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0);
    let v = (letter(b[0]) << 26)
        | (letter(b[1]) << 21)
        | (letter(b[2]) << 16)
        | (hex(b[3]) << 12)
        | (hex(b[4]) << 8)
        | (hex(b[5]) << 4)
        | hex(b[6]);
    int(v.swap_bytes() as u64)
}

/// `ResourceTemplate () { descriptors }`: a buffer ending with an end tag (checksum 0).
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut data: Vec<u8> = descriptors.concat();
    data.extend_from_slice(&[0x79, 0]);
    let mut body = int(data.len() as u64);
    body.extend(data);
    with_pkg_length(&[BUFFER_OP], &body)
}

/// `IO (Decode16, min, max, align, len)`.
pub fn io(min: u16, max: u16, align: u8, len: u8) -> Vec<u8> {
    let mut d = vec![0x47, 1];
    d.extend_from_slice(&min.to_le_bytes());
    d.extend_from_slice(&max.to_le_bytes());
    d.extend_from_slice(&[align, len]);
    d
}

/// `IRQNoFlags () { irq }`: an ISA interrupt, edge-triggered, active high.
pub fn irq_no_flags(irq: u8) -> Vec<u8> {
    let mut d = vec![0x22];
    d.extend_from_slice(&(1u16 << (irq & 15)).to_le_bytes());
    d
}

/// `Memory32Fixed (ReadOnly|ReadWrite, base, len)`.
pub fn memory32_fixed(read_write: bool, base: u32, len: u32) -> Vec<u8> {
    let mut d = vec![0x86, 9, 0, read_write as u8];
    d.extend_from_slice(&base.to_le_bytes());
    d.extend_from_slice(&len.to_le_bytes());
    d
}

/// Word/DWord address space descriptors (ResourceProducer, MinFixed, MaxFixed, PosDecode).
const RESOURCE_MEMORY: u8 = 0;
const RESOURCE_IO: u8 = 1;
const RESOURCE_BUS: u8 = 2;
const MIN_MAX_FIXED: u8 = (1 << 2) | (1 << 3);

fn word_space(kind: u8, type_flags: u8, min: u16, max: u16) -> Vec<u8> {
    let mut d = vec![0x88, 13, 0, kind, MIN_MAX_FIXED, type_flags];
    for v in [0, min, max, 0, max.wrapping_sub(min).wrapping_add(1)] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d
}

/// `WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len)`.
pub fn word_bus_number(min: u16, max: u16) -> Vec<u8> {
    word_space(RESOURCE_BUS, 0, min, max)
}

/// `WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ...)`.
pub fn word_io(min: u16, max: u16) -> Vec<u8> {
    word_space(RESOURCE_IO, 3, min, max)
}

/// `DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
/// ...)`.
pub fn dword_memory(min: u32, max: u32) -> Vec<u8> {
    let mut d = vec![0x87, 23, 0, RESOURCE_MEMORY, MIN_MAX_FIXED, 1];
    for v in [0, min, max, 0, max.wrapping_sub(min).wrapping_add(1)] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d
}

/// The 36-byte header of a system description table, with its checksum filled in for the
/// header alone: [`finish`] completes it once the body is appended.
pub fn sdt_header(sig: &[u8; 4], revision: u8, oem: &super::Oem) -> Vec<u8> {
    let mut h = Vec::with_capacity(36);
    h.extend_from_slice(sig);
    h.extend_from_slice(&36u32.to_le_bytes());
    h.push(revision);
    h.push(0);
    h.extend_from_slice(&oem.id);
    h.extend_from_slice(&oem.table_id);
    h.extend_from_slice(&oem.revision.to_le_bytes());
    h.extend_from_slice(&oem.creator_id);
    h.extend_from_slice(&oem.creator_revision.to_le_bytes());
    h
}

/// Set a table's length field and checksum from its contents.
pub fn finish(table: &mut [u8]) {
    // Tables are a few KiB at most.
    let len = u32::try_from(table.len()).unwrap_or(u32::MAX);
    table[4..8].copy_from_slice(&len.to_le_bytes());
    table[9] = 0;
    table[9] = 0u8.wrapping_sub(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_the_shortest_form() {
        assert_eq!(int(0), [0]);
        assert_eq!(int(1), [1]);
        assert_eq!(int(0x10), [0x0a, 0x10]);
        assert_eq!(int(0x1234), [0x0b, 0x34, 0x12]);
        assert_eq!(int(0x0001_ffff), [0x0c, 0xff, 0xff, 0x01, 0]);
        assert_eq!(int(1 << 32)[0], 0x0e);
    }

    #[test]
    fn pkg_length_counts_itself() {
        assert_eq!(pkg_length(10), [11]);
        assert_eq!(pkg_length(62), [63]);
        // 63 bytes of content need two length bytes: 65 = 0x41.
        assert_eq!(pkg_length(63), [0x41, 0x04]);
        assert_eq!(pkg_length(5000), [0x8b, 0x38, 0x01]);
    }

    #[test]
    fn names_and_eisa_ids() {
        assert_eq!(name_string("\\_SB_"), b"\\_SB_");
        assert_eq!(name_string("_SB_.PCI0"), b"\x2e_SB_PCI0");
        assert_eq!(name_string("A.B.C"), b"\x2f\x03A___B___C___");
        // PNP0A03 as compilers encode it.
        assert_eq!(eisa_id("PNP0A03"), [0x0c, 0x41, 0xd0, 0x0a, 0x03]);
    }
}
