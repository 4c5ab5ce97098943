//! Write the seed corpus, `corpus/<target>/`, from fugu's own code and the test guests:
//! `cargo run --release --bin make-seeds -- [GUESTS_DIR]` in vmm/fuzz (GUESTS_DIR holds the
//! test guests that `cargo xtask test` builds, target/guests/; without it the ELF and
//! Multiboot seeds are synthetic only). Built without the coverage instrumentation.

use fugu::fuzzing::qcow2;
use std::path::{Path, PathBuf};

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn le16(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}
fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}
fn le64(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// A bzImage with a 2.15 setup header (5 sectors of setup) and `payload`.
fn bzimage(payload: &[u8], xloadflags: u16) -> Vec<u8> {
    let mut b = vec![0u8; 5 * 512];
    b[0x1f1] = 4;
    b[0x1fe..0x200].copy_from_slice(&le16(0xaa55));
    b[0x201] = 0x6a;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&le16(0x020f));
    b[0x211] = 1; // LOADED_HIGH
    b[0x214..0x218].copy_from_slice(&le32(0x10_0000));
    b[0x22c..0x230].copy_from_slice(&le32(0x7fff_ffff));
    b[0x236..0x238].copy_from_slice(&le16(xloadflags));
    b[0x238..0x23c].copy_from_slice(&le32(2048));
    b[0x1f4..0x1f8].copy_from_slice(&le32(payload.len() as u32 / 16));
    b.extend_from_slice(payload);
    b
}

/// An ELF32 kernel: one PT_LOAD of `code` at `paddr`, and a PT_NOTE with Xen's
/// PHYS32_ENTRY when `pvh` is given.
fn elf32(paddr: u32, code: &[u8], pvh: Option<u32>) -> Vec<u8> {
    let phnum: u16 = if pvh.is_some() { 2 } else { 1 };
    let code_off = 52 + 32 * phnum as u32;
    let note_off = code_off + code.len() as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&le16(2)); // ET_EXEC
    b.extend_from_slice(&le16(3)); // EM_386
    b.extend_from_slice(&le32(1));
    b.extend_from_slice(&le32(paddr)); // entry
    b.extend_from_slice(&le32(52)); // phoff
    b.extend_from_slice(&le32(0)); // shoff
    b.extend_from_slice(&le32(0)); // flags
    b.extend_from_slice(&le16(52));
    b.extend_from_slice(&le16(32));
    b.extend_from_slice(&le16(phnum));
    b.extend_from_slice(&[0; 6]);
    // PT_LOAD
    for v in [
        1,
        code_off,
        paddr,
        paddr,
        code.len() as u32,
        code.len() as u32 + 0x100,
        5,
        0x1000,
    ] {
        b.extend_from_slice(&le32(v));
    }
    if pvh.is_some() {
        for v in [4, note_off, 0, 0, 20, 20, 4, 4] {
            b.extend_from_slice(&le32(v));
        }
    }
    b.extend_from_slice(code);
    if let Some(entry) = pvh {
        for v in [4, 4, 18] {
            b.extend_from_slice(&le32(v));
        }
        b.extend_from_slice(b"Xen\0");
        b.extend_from_slice(&le32(entry));
    }
    b
}

/// A 16-bit-aligned little-endian writer over a guest RAM image.
struct Ram(Vec<u8>);

impl Ram {
    fn new(len: usize) -> Ram {
        Ram(vec![0; len])
    }
    fn at(&mut self, gpa: u64, b: &[u8]) {
        let g = gpa as usize;
        self.0[g..g + b.len()].copy_from_slice(b);
    }
    fn desc(&mut self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let t = table + 16 * i as u64;
        self.at(t, &le64(addr));
        self.at(t + 8, &le32(len));
        self.at(t + 12, &le16(flags));
        self.at(t + 14, &le16(next));
    }
    /// Publish `heads` in the avail ring at `avail`.
    fn avail(&mut self, avail: u64, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            self.at(avail + 4 + 2 * i as u64, &le16(*h));
        }
        self.at(avail + 2, &le16(heads.len() as u16));
    }
    /// Trim trailing zeroes (the targets read missing bytes as zero).
    fn bytes(&self) -> &[u8] {
        let end = self.0.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        &self.0[..end]
    }
}

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

fn boot(guests: Option<&Path>) {
    put("boot_bzimage", "bzimage-64", &bzimage(&[0xf4; 1024], 1));
    put("boot_bzimage", "bzimage-32", &bzimage(&[0x90; 512], 0));
    put(
        "boot_pvh",
        "pvh32",
        &elf32(0x10_0000, &[0xf4; 64], Some(0x10_0000)),
    );
    put("boot_elf", "elf32", &elf32(0x10_0000, &[0xf4; 64], None));
    if let Some(g) = guests {
        for (target, names) in [
            ("boot_elf", &["hello32.elf", "hello64.elf"][..]),
            ("boot_multiboot", &["hello32.elf", "traps32.elf"][..]),
            ("boot_pvh", &["hello64.elf"][..]),
        ] {
            for n in names {
                match std::fs::read(g.join(n)) {
                    Ok(b) => put(target, n, &b),
                    Err(e) => eprintln!("make-seeds: {n}: {e} (skipped)"),
                }
            }
        }
    }
}

fn index() {
    let sha = "0".repeat(64);
    let doc = format!(
        r#"{{"format":"fugu-image-index","format_version":1,"created":"2026-01-01T00:00:00Z","images":[
{{"name":"hello32","arch":"i386","kind":"multiboot","description":"d","revision":1,"created":"2026-01-01T00:00:00Z","min_fugu_version":"0.1.0","cmdline":"","files":[
{{"role":"kernel","path":"hello32/hello32.elf","size":980,"sha256":"{sha}","compression":"none"}}],
"provenance":{{"recipe":"r","recipe_sha256":"{sha}","packages":[{{"name":"p","version":"1","arch":"all","sha256":"{sha}","pinned":{{"name":"p","version":"1","sha256":"{sha}"}}}}],"sources":[{{"path":"a.S","sha256":"{sha}"}}]}}}},
{{"name":"debian-amd64","arch":"amd64","kind":"linux","description":"d","revision":2,"created":"2026-01-01T00:00:00Z","min_fugu_version":"0.1.0","cmdline":"console=ttyS0","files":[
{{"role":"kernel","path":"k/vmlinuz","size":10,"sha256":"{sha}","compression":"none"}},
{{"role":"initrd","path":"k/initrd.gz","size":20,"sha256":"{sha}","compression":"gzip"}},
{{"role":"disk","path":"k/disk.img","size":30,"sha256":"{sha}","compression":"gzip"}}],
"provenance":{{"recipe":"r","recipe_sha256":"{sha}","packages":[],"config_sha256":"{sha}"}}}}]}}"#
    );
    fugu::fuzzing::image::parse_index("seed", doc.as_bytes()).expect("the seed index is valid");
    put("image_index", "index.json", doc.as_bytes());
}

fn virtqueue() {
    // size 16 (log 4), ready; desc 0x1000, avail 0x2000, used 0x3000; event_idx off.
    let mut head = vec![4u8];
    head.extend_from_slice(&le32(0x1000));
    head.extend_from_slice(&le32(0x2000));
    head.extend_from_slice(&le32(0x3000));
    head.push(0);
    let program: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 0, // pop
        2, 0, 0, 0, 16, 0, 0, 0, // used head 0
        0, 0, 0, 0, 0, 0, 0, 0, // pop (indirect)
        3, 0, 0, 0, 0, 0, 0, 0, // needs notification
        4, 0, 0, 0, 0, 0, 0, 0, // enable
        0, 0, 0, 0, 0, 0, 0, 0, // pop: empty
    ];
    head.push((program.len() / 8) as u8);
    head.extend_from_slice(program);
    let mut ram = Ram::new(0x5000);
    ram.desc(0x1000, 0, 0x4000, 16, NEXT, 1);
    ram.desc(0x1000, 1, 0x4100, 512, NEXT | WRITE, 2);
    ram.desc(0x1000, 2, 0x4300, 1, WRITE, 0);
    ram.desc(0x1000, 3, 0x4400, 32, INDIRECT, 0);
    ram.desc(0x4400, 0, 0x4000, 16, NEXT, 1);
    ram.desc(0x4400, 1, 0x4300, 1, WRITE, 0);
    ram.avail(0x2000, &[0, 3]);
    head.extend_from_slice(ram.bytes());
    put("virtqueue", "two-chains", &head);
}

/// One virtio-blk request: header (type, sector), then data buffers, then the status byte.
fn blk_chain(ram: &mut Ram, first: u16, ty: u32, sector: u64, data: &[(u32, bool)], buf: u64) {
    let hdr = buf;
    ram.at(hdr, &le32(ty));
    ram.at(hdr + 8, &le64(sector));
    let mut i = first;
    ram.desc(0, i, hdr, 16, NEXT, i + 1);
    let mut at = buf + 0x100;
    for &(len, write) in data {
        i += 1;
        ram.desc(0, i, at, len, NEXT | if write { WRITE } else { 0 }, i + 1);
        at += len as u64;
    }
    i += 1;
    ram.desc(0, i, buf + 0xff, 1, WRITE, 0);
}

fn virtio_blk() {
    for (name, sel, ty, data) in [
        ("read", 0u8, 0u32, &[(512u32, true), (1024, true)][..]),
        ("write-qcow2", 1, 1, &[(512, false)][..]),
        ("get-id", 2, 8, &[(20, true)][..]),
        ("flush", 0, 4, &[][..]),
    ] {
        let mut ram = Ram::new(0x8000);
        blk_chain(&mut ram, 0, ty, 3, data, 0x1000);
        ram.avail(0x100, &[0]);
        let mut b = vec![sel];
        b.extend_from_slice(ram.bytes());
        put("virtio_blk", name, &b);
    }
    // Discard and write-zeroes: one segment each (sector, count, flags).
    for (name, ty, flags) in [("discard", 11u32, 0u32), ("write-zeroes", 13, 1)] {
        let mut ram = Ram::new(0x8000);
        blk_chain(&mut ram, 0, ty, 0, &[(16, false)], 0x1000);
        ram.at(0x1100, &le64(8));
        ram.at(0x1108, &le32(16));
        ram.at(0x110c, &le32(flags));
        ram.avail(0x100, &[0]);
        let mut b = vec![1u8];
        b.extend_from_slice(ram.bytes());
        put("virtio_blk", name, &b);
    }
}

fn virtio_net() {
    // sel 0 (12-byte header); one frame from the tap; RX buffer; one TX frame.
    let mut b = vec![0u8, 1];
    let frame_len = 12 + 60;
    b.extend_from_slice(&le16(frame_len));
    let mut frame = vec![0u8; frame_len as usize];
    frame[12..18].fill(0xff);
    frame[24..26].copy_from_slice(&[0x88, 0xb5]);
    b.extend_from_slice(&frame);
    let mut ram = Ram::new(0x4000);
    // RX queue (0x0/0x100/0x200): one 2 KiB writable buffer.
    ram.desc(0x0, 0, 0x1000, 2048, WRITE, 0);
    ram.avail(0x100, &[0]);
    // TX queue (0x400/0x500/0x600): header, then the frame.
    ram.desc(0x400, 0, 0x2000, 12, NEXT, 1);
    ram.desc(0x400, 1, 0x2100, 60, 0, 0);
    ram.at(0x2000, &[1, 0, 14, 0, 0, 0, 34, 0, 16, 0, 1, 0]);
    ram.at(0x2100, &[0xff; 12]);
    ram.avail(0x500, &[0]);
    b.extend_from_slice(ram.bytes());
    put("virtio_net", "rx-and-tx", &b);
}

/// One pci_config operation: kind, width (log2), value, offset.
fn pci_op(out: &mut Vec<u8>, kind: u8, width_log: u8, v: u64, off: u32) {
    out.push(kind);
    out.push(width_log);
    out.extend_from_slice(&le64(v));
    out.extend_from_slice(&le32(off));
}

fn pci() {
    // Mechanism #1: address of 00:01.0 (the virtio function) reg 0, then a data read; BAR
    // sizing through ECAM; memory enable; an MSI-X enable.
    let dev1 = 1u32 << 15;
    let mut b = vec![0u8];
    pci_op(&mut b, 0, 2, 0x8000_0800, 0);
    pci_op(&mut b, 1, 2, 0, 4);
    pci_op(&mut b, 2, 2, 0xffff_ffff, dev1 | 0x20);
    pci_op(&mut b, 3, 2, 0, dev1 | 0x20);
    pci_op(&mut b, 2, 1, 0x7, dev1 | 0x04);
    pci_op(&mut b, 2, 1, 0x8000, dev1 | 0x42);
    pci_op(&mut b, 8, 0, 0x0f, (4 << 16) | 0x14);
    pci_op(&mut b, 9, 2, 0, 4 << 16);
    pci_op(&mut b, 5, 2, 0, 0);
    put("pci_config", "enumerate", &b);
    let mut b = vec![1u8];
    pci_op(&mut b, 2, 2, 0x0, 0x50);
    pci_op(&mut b, 3, 2, 0, 0x50);
    pci_op(&mut b, 1, 2, 0, 0);
    put("pci_config", "i440fx", &b);
}

fn msix() {
    let mut b = le16(4).to_vec();
    for (kind, w, v, off) in [
        (0u8, 2u8, 0xfee0_0000u64, 0u16),
        (0, 2, 0x41, 8),
        (0, 2, 0, 12),
        (4, 1, 0x8000, 0x42),
        (5, 0, 0, 0),
        (3, 3, 0, 0),
        (2, 3, 0, 0),
    ] {
        b.push(kind);
        b.push(w);
        b.extend_from_slice(&le64(v));
        b.extend_from_slice(&le16(off));
    }
    put("msix", "program-and-fire", &b);
}

fn fw_cfg() {
    // Select the signature and read it; select the file directory; then DMA: descriptor at
    // 0x100 reads the directory into 0x200.
    let ops: &[(u8, u8, u8, u64)] = &[
        (0, 1, 0, 0x0000),
        (1, 2, 1, 0),
        (0, 1, 0, 0x0019),
        (1, 2, 1, 0),
        (0, 2, 4, 0),
        (0, 2, 8, 0x0000_0100 << 32),
    ];
    let mut b = vec![ops.len() as u8];
    for &(kind, w, off, v) in ops {
        b.push(kind);
        b.push(w);
        b.push(off);
        b.extend_from_slice(&v.to_be_bytes());
        b.push(0);
    }
    let mut ram = Ram::new(0x400);
    let control: u32 = (0x19 << 16) | (1 << 3) | (1 << 1);
    ram.at(0x100, &control.to_be_bytes());
    ram.at(0x104, &64u32.to_be_bytes());
    ram.at(0x108, &0x200u64.to_be_bytes());
    b.extend_from_slice(ram.bytes());
    put("fw_cfg", "dma-dir", &b);
}

fn qcow2_seeds() {
    use fugu::fuzzing::qcow2::{Header, Qcow2};
    let steer = [0u8, 0x80, 1, 0, 0, 0, 0xa0, 2, 0, 0, 0, 0xe0, 3, 0, 0, 0];
    let path = std::env::temp_dir().join(format!("fugu-make-seeds-{}.qcow2", std::process::id()));
    for (name, write) in [("empty-1M", false)] {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        qcow2::create(&f, 1 << 20, None).unwrap();
        if write {
            let len = f.metadata().unwrap().len();
            let h = Header::parse(&f, len).unwrap();
            let mut q = Qcow2::open(f.try_clone().unwrap(), h, true, None).unwrap();
            q.write_at(&[0xab; 4096], 65536).unwrap();
            q.flush().unwrap();
        }
        let mut b = std::fs::read(&path).unwrap();
        let len = b.len() as u32;
        b.truncate(b.iter().rposition(|x| *x != 0).map_or(0, |p| p + 1));
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&steer);
        put("qcow2", name, &b);
    }
    let _ = std::fs::remove_file(&path);
}

fn main() {
    let guests = std::env::args().nth(1).map(PathBuf::from);
    boot(guests.as_deref());
    index();
    virtqueue();
    virtio_blk();
    virtio_net();
    pci();
    msix();
    fw_cfg();
    qcow2_seeds();
}
