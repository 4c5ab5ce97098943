//! qcow2 versions 2 and 3, read and write, written for fugu from QEMU's format description
//! (docs/interop/qcow2.txt); see docs/disks.md for what is supported and why no crate is used.
//!
//! Metadata is written through (no dirty metadata cache) in an order that leaves a consistent
//! image after a kill at any point, at worst with leaked clusters:
//! refcount +1 (new refcount block before the table entry that points to it) → data or new
//! L2 table → the L2 / L1 entry pointing at it; on free: the L2 entry first, refcount -1 after.
//! FLUSH is one `fdatasync` of the image, which persists data and metadata alike.
//!
//! Every value read from the image is untrusted: offsets are checked for alignment and against
//! the file, table sizes against fixed limits, and all arithmetic is checked (offsets are u64
//! on every host; only cluster-sized buffers become `usize`).

// Clean of truncating casts (issue 19), unlike the rest of devices/ so far: keep it so.
#![warn(clippy::cast_possible_truncation)]

use super::image::{bad, unsupported, Image};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// QEMU's limits: an L1 table of at most 32 MiB, a refcount table of at most 8 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Tables kept in memory (clean copies; every change is also written to the file).
const CACHE_TABLES: usize = 512;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// What a guest offset maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// Not allocated here: the backing file's data, or zeroes without one.
    Unallocated,
    /// Reads as zeroes; `Some(host)` for a preallocated zero cluster (v3).
    Zero(Option<u64>),
    /// Data at this host cluster offset; `copied` is the OFLAG_COPIED bit (refcount 1).
    Data { host: u64, copied: bool },
    /// Deflate data starting at `off`, in the 512-byte sectors `[sectors_from, sectors_end)`.
    Compressed {
        off: u64,
        sectors_from: u64,
        sectors_end: u64,
    },
}

/// The fields of a header fugu needs, checked.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_offset: u64,
    pub rt_offset: u64,
    pub rt_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub backing: Option<String>,
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn to_usize(x: u64) -> io::Result<usize> {
    usize::try_from(x).map_err(|_| bad(format!("{x} does not fit this host's address space")))
}

impl Header {
    /// Parse and check a header from the image's first bytes (`file_len` is the image size).
    pub fn parse(file: &File, file_len: u64) -> io::Result<Header> {
        let mut h = [0u8; 104];
        let n = read_upto(file, &mut h, 0)?;
        if n < 72 || h[0..4] != MAGIC {
            return Err(bad("no qcow2 header".into()));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(unsupported(format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("cluster_bits {cluster_bits} (9..21 allowed)")));
        }
        let cs = 1u64 << cluster_bits;
        let crypt = be32(&h, 32);
        if crypt != 0 {
            return Err(unsupported(
                "encrypted images (decrypt with qemu-img convert first)".into(),
            ));
        }
        let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 3 {
            if n < 104 {
                return Err(bad("version 3 header shorter than 104 bytes".into()));
            }
            let len = be32(&h, 100);
            if len < 104 || u64::from(len) > cs || len % 8 != 0 {
                return Err(bad(format!("header_length {len}")));
            }
            (be64(&h, 72), be64(&h, 80), be64(&h, 88), be32(&h, 96), len)
        } else {
            (0, 0, 0, 4, 72)
        };
        let _ = compatible; // lazy refcounts (bit 0) only permit what fugu never does.
        const DIRTY: u64 = 1;
        const CORRUPT: u64 = 2;
        const DATA_FILE: u64 = 4;
        const COMPRESSION_TYPE: u64 = 8;
        const EXTENDED_L2: u64 = 16;
        if incompatible & DATA_FILE != 0 {
            return Err(unsupported("an external data file".into()));
        }
        if incompatible & EXTENDED_L2 != 0 {
            return Err(unsupported("extended L2 entries (subclusters)".into()));
        }
        if incompatible & COMPRESSION_TYPE != 0 {
            return Err(unsupported(
                "a compression type other than zlib (zstd)".into(),
            ));
        }
        let unknown = incompatible & !(DIRTY | CORRUPT);
        if unknown != 0 {
            return Err(unsupported(format!(
                "incompatible feature bits {unknown:#x}"
            )));
        }
        if refcount_order > 6 {
            return Err(bad(format!(
                "refcount_order {refcount_order} (0..6 allowed)"
            )));
        }
        let size = be64(&h, 24);
        let l1_size = be32(&h, 36);
        let l1_offset = be64(&h, 40);
        let rt_offset = be64(&h, 48);
        let rt_clusters = be32(&h, 56);
        let nb_snapshots = be32(&h, 60);
        // L1 must map the whole disk: each entry covers cluster_size * cluster_size / 8 bytes.
        let per_l1 = 1u64 << (2 * cluster_bits - 3);
        let need = size.div_ceil(per_l1);
        if u64::from(l1_size) < need {
            return Err(bad(format!(
                "L1 table of {l1_size} entries is too small for {size} bytes"
            )));
        }
        if u64::from(l1_size) * 8 > MAX_L1_BYTES {
            return Err(bad(format!("L1 table of {l1_size} entries is too large")));
        }
        check_table(l1_offset, u64::from(l1_size) * 8, cs, file_len, "L1 table")?;
        let rt_bytes = u64::from(rt_clusters) << cluster_bits;
        if rt_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES {
            return Err(bad(format!("refcount table of {rt_clusters} clusters")));
        }
        check_table(rt_offset, rt_bytes, cs, file_len, "refcount table")?;
        // The backing file name and the header extensions live in the first cluster.
        let first = read_upto_vec(file, 0, cs.min(file_len))?;
        let bf_off = be64(&h, 8);
        let bf_len = be32(&h, 16);
        let backing = if bf_off == 0 || bf_len == 0 {
            None
        } else {
            if bf_len > 1023 || bf_off.saturating_add(u64::from(bf_len)) > first.len() as u64 {
                return Err(bad("backing file name outside the first cluster".into()));
            }
            let at = to_usize(bf_off)?;
            let name = &first[at..at + bf_len as usize];
            Some(
                String::from_utf8(name.to_vec())
                    .map_err(|_| bad("backing file name is not UTF-8".into()))?,
            )
        };
        let mut backing_format = None;
        let mut at = header_length as usize;
        // Each extension is at least 8 bytes, so this ends within the first cluster.
        while at + 8 <= first.len() {
            let ty = be32(&first, at);
            let len = be32(&first, at + 4) as usize;
            if ty == 0 {
                break;
            }
            let data = at + 8;
            if len > first.len() - data {
                return Err(bad("header extension past the first cluster".into()));
            }
            if ty == EXT_BACKING_FORMAT {
                backing_format = Some(
                    String::from_utf8(first[data..data + len].to_vec())
                        .map_err(|_| bad("backing format is not UTF-8".into()))?,
                );
            }
            at = data + len.div_ceil(8) * 8;
        }
        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_offset,
            rt_offset,
            rt_clusters,
            nb_snapshots,
            incompatible,
            autoclear,
            refcount_order,
            header_length,
            backing,
            backing_format,
        })
    }

    pub fn dirty(&self) -> bool {
        self.incompatible & 1 != 0
    }
    pub fn corrupt(&self) -> bool {
        self.incompatible & 2 != 0
    }
}

fn check_table(off: u64, len: u64, cs: u64, file_len: u64, what: &str) -> io::Result<()> {
    if off % cs != 0 || off == 0 {
        return Err(bad(format!("{what} at unaligned offset {off:#x}")));
    }
    match off.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(bad(format!(
            "{what} at {off:#x} lies past the end of the file"
        ))),
    }
}

/// Read as much as the file has at `off` (short at the end of the file).
fn read_upto(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn read_upto_vec(file: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; to_usize(len)?];
    let n = read_upto(file, &mut v, off)?;
    v.truncate(n);
    Ok(v)
}

/// An open qcow2 image.
pub struct Qcow2 {
    file: File,
    writable: bool,
    pub header: Header,
    cluster_bits: u32,
    cs: u64,
    l1: Vec<u64>,
    rt: Vec<u64>,
    /// log2 of refcount entries per refcount block.
    rb_bits: u32,
    file_len: u64,
    l2_cache: HashMap<u64, Vec<u64>>,
    rb_cache: HashMap<u64, Vec<u8>>,
    free_hint: u64,
    /// The last decompressed cluster: (its L2 entry, data).
    zcache: Option<(u64, Vec<u8>)>,
    pub backing: Option<Box<Image>>,
}

impl Qcow2 {
    /// Open an image whose header `Header::parse` accepted; `backing` is already open.
    pub fn open(
        file: File,
        header: Header,
        writable: bool,
        backing: Option<Box<Image>>,
    ) -> io::Result<Qcow2> {
        let file_len = file.metadata()?.len();
        if writable {
            if header.nb_snapshots != 0 {
                return Err(unsupported(
                    "writing to an image with internal snapshots (open it read-only, or remove them with qemu-img snapshot -d)".into(),
                ));
            }
            if header.corrupt() {
                return Err(bad(
                    "the image is marked corrupt: repair it (qemu-img check -r all) or open it read-only".into(),
                ));
            }
            if header.dirty() {
                return Err(bad(
                    "the image is marked dirty (lazy refcounts after a crash): repair it (qemu-img check -r all) or open it read-only".into(),
                ));
            }
        }
        let cluster_bits = header.cluster_bits;
        let cs = 1u64 << cluster_bits;
        let l1 = read_table(&file, header.l1_offset, u64::from(header.l1_size))?;
        let rt = read_table(
            &file,
            header.rt_offset,
            (u64::from(header.rt_clusters) << cluster_bits) / 8,
        )?;
        let mut q = Qcow2 {
            file,
            writable,
            rb_bits: cluster_bits + 3 - header.refcount_order,
            header,
            cluster_bits,
            cs,
            l1,
            rt,
            file_len,
            l2_cache: HashMap::new(),
            rb_cache: HashMap::new(),
            free_hint: 0,
            zcache: None,
            backing,
        };
        // A writer must clear the autoclear bits it does not know (bitmaps, raw data file).
        if writable && q.header.version == 3 && q.header.autoclear != 0 {
            q.file.write_all_at(&0u64.to_be_bytes(), 88)?;
            q.header.autoclear = 0;
        }
        Ok(q)
    }

    pub fn size(&self) -> u64 {
        self.header.size
    }
    pub fn cluster_size(&self) -> u64 {
        self.cs
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.writable {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Bytes of host clusters allocated to guest data (referenced from L2 tables).
    pub fn allocated(&mut self) -> io::Result<u64> {
        let mut n = 0u64;
        for i in 0..self.l1.len() {
            let l2off = self.l1[i] & OFFSET_MASK;
            if l2off == 0 {
                continue;
            }
            let t = self.l2(l2off)?.clone();
            for e in t {
                match self.classify(e)? {
                    Mapping::Data { .. } | Mapping::Zero(Some(_)) => n += self.cs,
                    Mapping::Compressed {
                        sectors_from,
                        sectors_end,
                        ..
                    } => n += (sectors_end - sectors_from) * 512,
                    _ => {}
                }
            }
        }
        Ok(n)
    }

    fn l2(&mut self, off: u64) -> io::Result<&Vec<u64>> {
        if !self.l2_cache.contains_key(&off) {
            if off % self.cs != 0 {
                return Err(bad(format!("L2 table at unaligned offset {off:#x}")));
            }
            check_table(off, self.cs, self.cs, self.file_len, "L2 table")?;
            let t = read_table(&self.file, off, self.cs / 8)?;
            if self.l2_cache.len() >= CACHE_TABLES {
                self.l2_cache.clear();
            }
            self.l2_cache.insert(off, t);
        }
        self.l2_cache
            .get(&off)
            .ok_or_else(|| bad("L2 cache".into()))
    }

    fn classify(&self, e: u64) -> io::Result<Mapping> {
        if e & COMPRESSED != 0 {
            // bits 0..x-1: offset; x..61: additional sectors; x = 62 - (cluster_bits - 8).
            let x = 62 - (self.cluster_bits - 8);
            let off = e & ((1u64 << x) - 1);
            let extra = (e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1);
            let sectors_from = off / 512;
            return Ok(Mapping::Compressed {
                off,
                sectors_from,
                sectors_end: sectors_from + extra + 1,
            });
        }
        let host = e & OFFSET_MASK;
        if host % self.cs != 0 {
            return Err(bad(format!("data cluster at unaligned offset {host:#x}")));
        }
        if self.header.version >= 3 && e & ZERO != 0 {
            return Ok(Mapping::Zero((host != 0).then_some(host)));
        }
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        Ok(Mapping::Data {
            host,
            copied: e & COPIED != 0,
        })
    }

    /// The L1 index, L2 index and current L2 entry of guest offset `pos`.
    fn entry(&mut self, pos: u64) -> io::Result<(usize, usize, u64)> {
        let l2_bits = self.cluster_bits - 3;
        let l1i = to_usize(pos >> (self.cluster_bits + l2_bits))?;
        let l2i = to_usize((pos >> self.cluster_bits) & ((1u64 << l2_bits) - 1))?;
        let l1e = *self
            .l1
            .get(l1i)
            .ok_or_else(|| bad(format!("offset {pos:#x} beyond the L1 table")))?;
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 {
            return Ok((l1i, l2i, 0));
        }
        let e = *self
            .l2(l2off)?
            .get(l2i)
            .ok_or_else(|| bad("L2 index".into()))?;
        Ok((l1i, l2i, e))
    }

    /// Read the guest bytes at `off`; past the virtual size they read as zeroes.
    pub fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            if pos >= self.header.size {
                buf[done..].fill(0);
                break;
            }
            let in_cl = pos & (self.cs - 1);
            let n = (buf.len() - done)
                .min(to_usize(self.cs - in_cl)?)
                .min(to_usize((self.header.size - pos).min(self.cs))?);
            let chunk = &mut buf[done..done + n];
            let (_, _, e) = self.entry(pos)?;
            match self.classify(e)? {
                Mapping::Unallocated => match &mut self.backing {
                    Some(b) => b.read_at(chunk, pos)?,
                    None => chunk.fill(0),
                },
                Mapping::Zero(_) => chunk.fill(0),
                Mapping::Data { host, .. } => {
                    let got = read_upto(&self.file, chunk, host + in_cl)?;
                    // Beyond the end of the file reads zeroes, as in QEMU.
                    chunk[got..].fill(0);
                }
                Mapping::Compressed { .. } => {
                    let data = self.decompress(e)?;
                    let s = to_usize(in_cl)?;
                    chunk.copy_from_slice(&data[s..s + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn decompress(&mut self, e: u64) -> io::Result<&[u8]> {
        if self.zcache.as_ref().map(|z| z.0) != Some(e) {
            let Mapping::Compressed {
                off, sectors_end, ..
            } = self.classify(e)?
            else {
                return Err(bad("not a compressed cluster".into()));
            };
            let end = (sectors_end * 512).min(self.file_len);
            if off >= end {
                return Err(bad(format!(
                    "compressed cluster at {off:#x} past the end of the file"
                )));
            }
            let input = read_upto_vec(&self.file, off, end - off)?;
            let mut out = vec![0u8; to_usize(self.cs)?];
            let mut d = flate2::Decompress::new(false);
            d.decompress(&input, &mut out, flate2::FlushDecompress::Finish)
                .map_err(|err| bad(format!("compressed cluster at {off:#x}: {err}")))?;
            if d.total_out() != self.cs {
                return Err(bad(format!(
                    "compressed cluster at {off:#x} inflates to {} bytes, not a cluster",
                    d.total_out()
                )));
            }
            self.zcache = Some((e, out));
        }
        match &self.zcache {
            Some((_, d)) => Ok(d),
            None => Err(bad("decompression cache".into())),
        }
    }

    /// Write guest bytes at `off` (within the virtual size; the caller checked).
    pub fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            if pos >= self.header.size {
                return Err(bad("write past the end of the disk".into()));
            }
            let in_cl = pos & (self.cs - 1);
            let n = (buf.len() - done).min(to_usize(self.cs - in_cl)?);
            let chunk = &buf[done..done + n];
            let (_, _, e) = self.entry(pos)?;
            let m = self.classify(e)?;
            let in_place = match m {
                Mapping::Data { host, copied: true } => Some(host),
                Mapping::Data {
                    host,
                    copied: false,
                } if self.refcount(host >> self.cluster_bits)? == 1 => Some(host),
                _ => None,
            };
            if let Some(host) = in_place {
                self.file.write_all_at(chunk, host + in_cl)?;
                self.file_len = self.file_len.max(host + in_cl + n as u64);
            } else {
                // A new cluster (or the preallocated one of a zero cluster) gets the whole
                // cluster: the old contents around the written part, then the L2 entry.
                let base = pos - in_cl;
                let mut data = vec![0u8; to_usize(self.cs)?];
                if (n as u64) < self.cs {
                    self.read_at(&mut data, base)?;
                }
                let s = to_usize(in_cl)?;
                data[s..s + n].copy_from_slice(chunk);
                let host = match m {
                    Mapping::Zero(Some(h)) => h,
                    _ => self.alloc_cluster()?,
                };
                self.file.write_all_at(&data, host)?;
                self.file_len = self.file_len.max(host + self.cs);
                self.set_l2(base, host | COPIED)?;
                self.release(m, Some(host))?;
            }
            done += n;
        }
        Ok(())
    }

    /// Drop the reference the old mapping `m` held (after its L2 entry was replaced).
    fn release(&mut self, m: Mapping, kept: Option<u64>) -> io::Result<()> {
        match m {
            Mapping::Data { host, .. } | Mapping::Zero(Some(host)) if Some(host) != kept => {
                self.add_refcount(host >> self.cluster_bits, -1)
            }
            Mapping::Compressed {
                sectors_from,
                sectors_end,
                ..
            } => {
                let first = (sectors_from * 512) >> self.cluster_bits;
                let last = (sectors_end * 512 - 1) >> self.cluster_bits;
                for c in first..=last {
                    self.add_refcount(c, -1)?;
                }
                self.zcache = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Discard (or, with `zeroes`, zero) `[off, off+len)`. Whole clusters are unmapped; the
    /// partial ones are left (discard) or written with zeroes.
    pub fn discard(&mut self, off: u64, len: u64, zeroes: bool) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let end = off.checked_add(len).ok_or_else(|| bad("range".into()))?;
        let mut pos = off;
        while pos < end {
            let in_cl = pos & (self.cs - 1);
            let n = (end - pos).min(self.cs - in_cl);
            let whole = in_cl == 0 && (n == self.cs || pos + n == self.header.size);
            if !whole {
                if zeroes {
                    self.write_at(&vec![0u8; to_usize(n)?], pos)?;
                }
                pos += n;
                continue;
            }
            let (_, _, e) = self.entry(pos)?;
            let m = self.classify(e)?;
            let new = if self.header.version >= 3 {
                if self.backing.is_some() {
                    ZERO
                } else {
                    0
                }
            } else if self.backing.is_none() {
                0
            } else if zeroes {
                // Version 2 has no zero flag: over a backing file zeroes must be written.
                self.write_at(&vec![0u8; to_usize(n)?], pos)?;
                pos += n;
                continue;
            } else {
                pos += n; // a hint only
                continue;
            };
            if e != new {
                self.set_l2(pos, new)?;
                self.release(m, None)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Point the L2 entry of guest offset `pos` at `value`, allocating the L2 table if needed.
    fn set_l2(&mut self, pos: u64, value: u64) -> io::Result<()> {
        let (l1i, l2i, _) = self.entry(pos)?;
        let mut l2off = self.l1[l1i] & OFFSET_MASK;
        if l2off == 0 {
            let t = self.alloc_cluster()?;
            self.file.write_all_at(&vec![0u8; to_usize(self.cs)?], t)?;
            self.file_len = self.file_len.max(t + self.cs);
            let l1e = t | COPIED;
            self.file
                .write_all_at(&l1e.to_be_bytes(), self.header.l1_offset + 8 * l1i as u64)?;
            self.l1[l1i] = l1e;
            self.l2_cache.insert(t, vec![0u64; to_usize(self.cs / 8)?]);
            l2off = t;
        } else if self.l1[l1i] & COPIED == 0 && self.refcount(l2off >> self.cluster_bits)? != 1 {
            return Err(unsupported(
                "writing to a shared L2 table (snapshots)".into(),
            ));
        }
        self.file
            .write_all_at(&value.to_be_bytes(), l2off + 8 * l2i as u64)?;
        self.l2(l2off)?;
        if let Some(t) = self.l2_cache.get_mut(&l2off) {
            t[l2i] = value;
        }
        Ok(())
    }

    /// The refcount block holding cluster `c`'s refcount: (its offset, or 0; entry index).
    fn rb_of(&self, c: u64) -> io::Result<(usize, u64, u64)> {
        let bi = to_usize(c >> self.rb_bits)?;
        let off = self.rt.get(bi).copied().unwrap_or(0) & OFFSET_MASK;
        Ok((bi, off, c & ((1u64 << self.rb_bits) - 1)))
    }

    fn rb(&mut self, off: u64) -> io::Result<&mut Vec<u8>> {
        if !self.rb_cache.contains_key(&off) {
            check_table(off, self.cs, self.cs, self.file_len, "refcount block")?;
            let mut b = vec![0u8; to_usize(self.cs)?];
            self.file.read_exact_at(&mut b, off)?;
            if self.rb_cache.len() >= CACHE_TABLES {
                self.rb_cache.clear();
            }
            self.rb_cache.insert(off, b);
        }
        self.rb_cache
            .get_mut(&off)
            .ok_or_else(|| bad("refcount cache".into()))
    }

    fn refcount(&mut self, c: u64) -> io::Result<u64> {
        let (_, off, i) = self.rb_of(c)?;
        if off == 0 {
            return Ok(0);
        }
        let order = self.header.refcount_order;
        Ok(rc_get(self.rb(off)?, i, order))
    }

    fn add_refcount(&mut self, c: u64, delta: i64) -> io::Result<()> {
        let (_, off, i) = self.rb_of(c)?;
        if off == 0 {
            return Err(bad(format!("cluster {c} has no refcount block")));
        }
        let order = self.header.refcount_order;
        let max = if order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << order)) - 1
        };
        let b = self.rb(off)?;
        let old = rc_get(b, i, order);
        let new = match delta {
            1 if old < max => old + 1,
            -1 if old > 0 => old - 1,
            _ => return Err(bad(format!("refcount of cluster {c} is {old}"))),
        };
        let (at, len) = rc_set(b, i, order, new).ok_or_else(|| bad("refcount index".into()))?;
        let bytes = b[at..at + len].to_vec();
        self.file.write_all_at(&bytes, off + at as u64)?;
        if new == 0 {
            self.free_hint = self.free_hint.min(c);
        }
        Ok(())
    }

    /// Replace the refcount table with one at least twice as large that covers cluster `c`.
    /// A fresh refcount block range past the end of the file gets the block (first cluster)
    /// and the new table (after it), the block counting both; then the header switches to
    /// the new table in one 12-byte write; then the old table's clusters are freed. A crash
    /// before the header write leaves unreferenced clusters past the old end, after it leaked
    /// old table clusters: nothing worse.
    fn grow_refcount_table(&mut self, c: u64) -> io::Result<()> {
        let epb = 1u64 << self.rb_bits;
        let mut first = (self.file_len.div_ceil(self.cs)).max(c).div_ceil(epb) * epb;
        // A block may already exist that far out (one this code made): skip its range.
        while self.rb_of(first)?.1 != 0 {
            first += epb;
        }
        let bi = first >> self.rb_bits;
        let entries = (self.rt.len() as u64 * 2).max(bi + 1);
        let n = (entries * 8).div_ceil(self.cs);
        let bytes = n << self.cluster_bits;
        if bytes > MAX_REFTABLE_BYTES || n + 1 > epb {
            return Err(unsupported(format!(
                "a refcount table of {bytes} bytes (the image outgrew what fugu grows to)"
            )));
        }
        let order = self.header.refcount_order;
        let mut b = vec![0u8; to_usize(self.cs)?];
        for i in 0..=n {
            rc_set(&mut b, i, order, 1).ok_or_else(|| bad("refcount index".into()))?;
        }
        let block = first << self.cluster_bits;
        let table = block + self.cs;
        let mut rt = self.rt.clone();
        rt.resize(to_usize(bytes / 8)?, 0);
        let bi = to_usize(bi)?;
        rt[bi] = block;
        let raw: Vec<u8> = rt.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_all_at(&b, block)?;
        self.file.write_all_at(&raw, table)?;
        self.file.sync_data()?;
        self.file_len = self.file_len.max(table + bytes);
        let mut h = [0u8; 12];
        h[..8].copy_from_slice(&table.to_be_bytes());
        let clusters = u32::try_from(n).map_err(|_| bad("refcount table size".into()))?;
        h[8..].copy_from_slice(&clusters.to_be_bytes());
        self.file.write_all_at(&h, 48)?;
        let (old_off, old_clusters) = (self.header.rt_offset, self.header.rt_clusters);
        self.header.rt_offset = table;
        self.header.rt_clusters = clusters;
        self.rt = rt;
        self.rb_cache.insert(block, b);
        for k in 0..u64::from(old_clusters) {
            self.add_refcount((old_off >> self.cluster_bits) + k, -1)?;
        }
        Ok(())
    }

    /// Find a free cluster, count it (refcount 1, on disk) and return its offset.
    fn alloc_cluster(&mut self) -> io::Result<u64> {
        let limit = (self.rt.len() as u64) << self.rb_bits;
        let mut c = self.free_hint;
        loop {
            if c >= limit {
                self.grow_refcount_table(c)?;
                return self.alloc_cluster();
            }
            if self.refcount(c)? != 0 {
                // Clusters past the end of the file are free but for a few leaked by a
                // crash: many in use there is a corrupt table, not something to scan through.
                if c > (self.file_len >> self.cluster_bits) + 4096 {
                    return Err(bad(format!(
                        "refcounts claim cluster {c}, far past the end of the file"
                    )));
                }
                c += 1;
                continue;
            }
            let (bi, off, i) = self.rb_of(c)?;
            if off == 0 {
                // No block covers c: c becomes that block, counting itself; then the table
                // entry (a crash in between leaks the cluster, nothing worse).
                let host = c << self.cluster_bits;
                let mut b = vec![0u8; to_usize(self.cs)?];
                rc_set(&mut b, i, self.header.refcount_order, 1)
                    .ok_or_else(|| bad("refcount index".into()))?;
                self.file.write_all_at(&b, host)?;
                self.file_len = self.file_len.max(host + self.cs);
                self.file
                    .write_all_at(&host.to_be_bytes(), self.header.rt_offset + 8 * bi as u64)?;
                self.rt[bi] = host;
                self.rb_cache.insert(host, b);
                c += 1;
                continue;
            }
            self.add_refcount(c, 1)?;
            self.free_hint = c + 1;
            return Ok(c << self.cluster_bits);
        }
    }
}

fn read_table(file: &File, off: u64, entries: u64) -> io::Result<Vec<u64>> {
    let mut raw = vec![0u8; to_usize(entries * 8)?];
    file.read_exact_at(&mut raw, off)?;
    Ok(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
}

/// Refcount entry `i` of a block with entries of 2^order bits (big-endian; sub-byte entries
/// from the low bits of each byte up); 0 outside the block.
pub(crate) fn rc_get(b: &[u8], i: u64, order: u32) -> u64 {
    let Some((at, w, shift, mask)) = rc_place(i, order) else {
        return 0;
    };
    match b.get(at..at + w) {
        Some(s) if w > 1 || order >= 3 => s.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        Some(s) => (u64::from(s[0]) >> shift) & mask,
        None => 0,
    }
}

/// Where entry `i` lives: (first byte, bytes, bit shift and mask within a sub-byte entry).
fn rc_place(i: u64, order: u32) -> Option<(usize, usize, u32, u64)> {
    let bits = 1u64 << order;
    if bits >= 8 {
        let w = usize::try_from(bits / 8).ok()?;
        let at = usize::try_from(i).ok()?.checked_mul(w)?;
        Some((at, w, 0, u64::MAX))
    } else {
        let bit = i.checked_mul(bits)?;
        let at = usize::try_from(bit / 8).ok()?;
        let shift = u32::try_from(bit % 8).ok()?;
        Some((at, 1, shift, (1u64 << bits) - 1))
    }
}

/// Set entry `i`; returns the byte range that changed (None: outside the block).
pub(crate) fn rc_set(b: &mut [u8], i: u64, order: u32, v: u64) -> Option<(usize, usize)> {
    let (at, w, shift, mask) = rc_place(i, order)?;
    let s = b.get_mut(at..at + w)?;
    if order >= 3 {
        for (k, x) in s.iter_mut().enumerate() {
            *x = v.to_be_bytes()[8 - w + k];
        }
    } else {
        let m = mask << shift;
        let old = u64::from(s[0]);
        s[0] = ((old & !m) | ((v << shift) & m)).to_le_bytes()[0];
    }
    Some((at, w))
}

/// Create an empty version 3 image of `size` bytes (64 KiB clusters, 16-bit refcounts)
/// in `file`: header (+ backing name and format), refcount table, one refcount block, L1.
pub fn create(file: &File, size: u64, backing: Option<(&str, &str)>) -> io::Result<()> {
    const BITS: u32 = 16;
    let cs = 1u64 << BITS;
    let per_l1 = 1u64 << (2 * BITS - 3);
    let l1_size = size.div_ceil(per_l1);
    if l1_size * 8 > MAX_L1_BYTES {
        return Err(unsupported(format!("a disk of {size} bytes is too large")));
    }
    let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
    // clusters: 0 header, 1 refcount table, 2 refcount block 0, 3.. L1.
    let total = 3 + l1_clusters;
    let rb_entries = cs / 2;
    if total > rb_entries {
        return Err(unsupported(format!("a disk of {size} bytes is too large")));
    }
    let mut h = vec![0u8; to_usize(cs)?];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    let l1_u32 = u32::try_from(l1_size).map_err(|_| unsupported("L1 size".into()))?;
    h[36..40].copy_from_slice(&l1_u32.to_be_bytes());
    h[40..48].copy_from_slice(&(3 * cs).to_be_bytes());
    h[48..56].copy_from_slice(&cs.to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&112u32.to_be_bytes());
    // byte 104: compression type zlib (0); header padded to 112.
    let mut at = 112usize;
    if let Some((name, fmt)) = backing {
        let f = fmt.as_bytes();
        h[at..at + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        let flen = u32::try_from(f.len()).map_err(|_| bad("backing format name".into()))?;
        h[at + 4..at + 8].copy_from_slice(&flen.to_be_bytes());
        h[at + 8..at + 8 + f.len()].copy_from_slice(f);
        at += 8 + f.len().div_ceil(8) * 8;
        // end-of-extensions marker: 8 zero bytes.
        at += 8;
        let n = name.as_bytes();
        if n.len() > 1023 {
            return Err(bad("backing file name longer than 1023 bytes".into()));
        }
        h[at..at + n.len()].copy_from_slice(n);
        h[8..16].copy_from_slice(&(at as u64).to_be_bytes());
        let nlen = u32::try_from(n.len()).map_err(|_| bad("backing file name".into()))?;
        h[16..20].copy_from_slice(&nlen.to_be_bytes());
    }
    let mut rt = vec![0u8; to_usize(cs)?];
    rt[0..8].copy_from_slice(&(2 * cs).to_be_bytes());
    let mut rb = vec![0u8; to_usize(cs)?];
    for c in 0..total {
        rc_set(&mut rb, c, 4, 1).ok_or_else(|| bad("refcount index".into()))?;
    }
    file.write_all_at(&h, 0)?;
    file.write_all_at(&rt, cs)?;
    file.write_all_at(&rb, 2 * cs)?;
    file.write_all_at(&vec![0u8; to_usize(l1_clusters * cs)?], 3 * cs)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
