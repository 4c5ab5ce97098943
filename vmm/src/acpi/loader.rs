//! QEMU's BIOS linker/loader protocol (`etc/table-loader`): how firmware such as SeaBIOS is
//! told to place fw_cfg files in guest RAM, patch the pointers between them and fix up their
//! checksums. Each command is a 128-byte little-endian record:
//!
//! - ALLOCATE (1): file name (56 bytes, NUL-padded), alignment (u32), zone (u8: 1 high RAM,
//!   2 the F segment, where an RSDP must be).
//! - ADD_POINTER (2): destination file, source file, offset (u32) and size (u8, 1-8) of a
//!   field in the destination that holds an offset into the source; the source's address is
//!   added to it.
//! - ADD_CHECKSUM (3): file, offset (u32) of the checksum byte, start and length (u32) of the
//!   range it covers; the byte is decreased by the range's sum, so the range sums to zero.
//!
//! fugu runs the same commands itself ([`Loader::link`]) when it places the tables for a
//! direct boot, so both paths produce the same bytes from one description.

/// File names are at most 55 bytes plus a NUL (fw_cfg's limit).
pub const FILE_SIZE: usize = 56;
pub const ENTRY_SIZE: usize = 128;

const ALLOCATE: u32 = 1;
const ADD_POINTER: u32 = 2;
const ADD_CHECKSUM: u32 = 3;

/// Where firmware allocates a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Anywhere in RAM (below 4 GiB for SeaBIOS).
    High = 1,
    /// The F segment (0xF0000-0xFFFFF), scanned by operating systems for the RSDP.
    FSeg = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Allocate {
        file: &'static str,
        align: u32,
        zone: Zone,
    },
    AddPointer {
        dest: &'static str,
        src: &'static str,
        offset: u32,
        size: u8,
    },
    AddChecksum {
        file: &'static str,
        offset: u32,
        start: u32,
        length: u32,
    },
}

/// A list of loader commands over named files.
/// A command of fugu's own table-loader that does not fit the files (a bug if it happens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("table-loader: no file {0}")]
    NoFile(String),
    #[error("table-loader: bad pointer {file}+{offset:#x}/{size}")]
    BadPointer {
        file: String,
        offset: usize,
        size: usize,
    },
    #[error("table-loader: bad checksum range in {0}")]
    ChecksumRange(String),
    #[error("table-loader: bad checksum offset in {0}")]
    ChecksumOffset(String),
}

#[derive(Debug, Default, Clone)]
pub struct Loader {
    pub commands: Vec<Command>,
}

fn name_field(out: &mut Vec<u8>, name: &str) {
    let mut f = [0u8; FILE_SIZE];
    let n = name.len().min(FILE_SIZE - 1);
    f[..n].copy_from_slice(&name.as_bytes()[..n]);
    out.extend_from_slice(&f);
}

impl Loader {
    pub fn allocate(&mut self, file: &'static str, align: u32, zone: Zone) {
        self.commands.push(Command::Allocate { file, align, zone });
    }
    pub fn add_pointer(&mut self, dest: &'static str, src: &'static str, offset: usize, size: u8) {
        self.commands.push(Command::AddPointer {
            dest,
            src,
            offset: super::off32(offset),
            size,
        });
    }
    pub fn add_checksum(&mut self, file: &'static str, offset: usize, start: usize, length: usize) {
        self.commands.push(Command::AddChecksum {
            file,
            offset: super::off32(offset),
            start: super::off32(start),
            length: super::off32(length),
        });
    }

    /// The `etc/table-loader` file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.commands.len() * ENTRY_SIZE);
        for c in &self.commands {
            let start = out.len();
            match c {
                Command::Allocate { file, align, zone } => {
                    out.extend_from_slice(&ALLOCATE.to_le_bytes());
                    name_field(&mut out, file);
                    out.extend_from_slice(&align.to_le_bytes());
                    out.push(*zone as u8);
                }
                Command::AddPointer {
                    dest,
                    src,
                    offset,
                    size,
                } => {
                    out.extend_from_slice(&ADD_POINTER.to_le_bytes());
                    name_field(&mut out, dest);
                    name_field(&mut out, src);
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.push(*size);
                }
                Command::AddChecksum {
                    file,
                    offset,
                    start: s,
                    length,
                } => {
                    out.extend_from_slice(&ADD_CHECKSUM.to_le_bytes());
                    name_field(&mut out, file);
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&s.to_le_bytes());
                    out.extend_from_slice(&length.to_le_bytes());
                }
            }
            out.resize(start + ENTRY_SIZE, 0);
        }
        out
    }

    /// Run the pointer and checksum commands over `files` (name, contents, guest address),
    /// as firmware does once it has allocated them. Commands that name a missing file or
    /// reach outside one are errors (fugu's own tables must never contain one).
    pub fn link(&self, files: &mut [(&str, Vec<u8>, u64)]) -> Result<(), LinkError> {
        let find = |files: &[(&str, Vec<u8>, u64)], n: &str| {
            files
                .iter()
                .position(|(f, _, _)| *f == n)
                .ok_or_else(|| LinkError::NoFile(n.to_string()))
        };
        for c in &self.commands {
            match c {
                Command::Allocate { .. } => {}
                Command::AddPointer {
                    dest,
                    src,
                    offset,
                    size,
                } => {
                    let base = files[find(files, src)?].2;
                    let d = find(files, dest)?;
                    let (o, n) = (*offset as usize, *size as usize);
                    let field = files[d]
                        .1
                        .get_mut(o..o + n)
                        .filter(|_| matches!(n, 1 | 2 | 4 | 8))
                        .ok_or_else(|| LinkError::BadPointer {
                            file: dest.to_string(),
                            offset: o,
                            size: n,
                        })?;
                    let mut v = [0u8; 8];
                    v[..n].copy_from_slice(field);
                    let p = u64::from_le_bytes(v).wrapping_add(base);
                    field.copy_from_slice(&p.to_le_bytes()[..n]);
                }
                Command::AddChecksum {
                    file,
                    offset,
                    start,
                    length,
                } => {
                    let f = &mut files[find(files, file)?].1;
                    let (s, l) = (*start as usize, *length as usize);
                    let sum = f
                        .get(s..s + l)
                        .ok_or_else(|| LinkError::ChecksumRange(file.to_string()))?
                        .iter()
                        .fold(0u8, |a, b| a.wrapping_add(*b));
                    let b = f
                        .get_mut(*offset as usize)
                        .ok_or_else(|| LinkError::ChecksumOffset(file.to_string()))?;
                    *b = b.wrapping_sub(sum);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_qemu_layout() {
        let mut l = Loader::default();
        l.allocate("etc/acpi/rsdp", 16, Zone::FSeg);
        l.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 16, 4);
        l.add_checksum("etc/acpi/rsdp", 8, 0, 20);
        let b = l.to_bytes();
        assert_eq!(b.len(), 3 * ENTRY_SIZE);
        assert_eq!(&b[0..4], &1u32.to_le_bytes());
        assert_eq!(&b[4..17], b"etc/acpi/rsdp");
        assert_eq!(b[17], 0);
        assert_eq!(&b[60..64], &16u32.to_le_bytes());
        assert_eq!(b[64], 2, "F segment");
        let p = &b[128..256];
        assert_eq!(&p[0..4], &2u32.to_le_bytes());
        assert_eq!(&p[60..75], b"etc/acpi/tables");
        assert_eq!(&p[116..120], &16u32.to_le_bytes());
        assert_eq!(p[120], 4);
        let c = &b[256..];
        assert_eq!(&c[0..4], &3u32.to_le_bytes());
        assert_eq!(&c[60..72], &[8, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0]);
    }

    #[test]
    fn link_patches_pointers_then_checksums() {
        let mut l = Loader::default();
        l.add_pointer("a", "b", 2, 4);
        l.add_checksum("a", 0, 0, 6);
        let mut files = [("a", vec![0, 0, 8, 0, 0, 0], 0x1000), ("b", vec![], 0x2000)];
        l.link(&mut files).unwrap();
        assert_eq!(&files[0].1[2..6], &0x2008u32.to_le_bytes());
        assert_eq!(files[0].1.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let mut bad = Loader::default();
        bad.add_pointer("a", "b", 4, 4);
        assert!(bad.link(&mut files).is_err());
    }
}
