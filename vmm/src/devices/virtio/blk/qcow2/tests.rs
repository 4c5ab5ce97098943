//! qcow2 tests: fugu against an in-memory model, against Debian's qemu-img (the reference:
//! qemu-img check / convert / compare; those tests print SKIP where qemu-img is missing — the
//! xtask installs qemu-utils), malformed images, and kill -9 during writes.

use super::super::image::{self, detect, Format, Image};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Held by every test here: the kill test's children are forked from this process, and a
/// fork briefly holds copies of every open image (and so its flock) until it execs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fugu-qcow2-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(path: &Path, writable: bool) -> std::io::Result<Image> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)?;
    image::lock(&file, writable)?;
    let fmt = detect(&file)?;
    let len = file.metadata()?.len();
    Image::from_file(file, path, fmt, writable, len, &mut Vec::new())
}

fn read_all(img: &mut Image) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(img.size()).unwrap()];
    img.read_at(&mut v, 0).unwrap();
    v
}

fn qemu_img() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        // `cargo xtask test` installs qemu-utils and sets FUGU_REQUIRE_ALL: there this runs.
        assert!(
            std::env::var_os("FUGU_REQUIRE_ALL").is_none(),
            "qemu-img is not installed (Debian package qemu-utils)"
        );
        eprintln!("SKIP: qemu-img is not installed (Debian package qemu-utils)");
    }
    ok
}

fn qi(args: &[&str]) -> std::process::Output {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    o
}

fn qi_ok(args: &[&str]) {
    let o = qi(args);
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// qemu-img check: 0 clean, 3 leaked clusters only; anything else is corruption.
fn check(path: &Path, leaks_ok: bool) {
    let o = qi(&["check", path.to_str().unwrap()]);
    let code = o.status.code();
    assert!(
        code == Some(0) || (leaks_ok && code == Some(3)),
        "qemu-img check {}: {code:?}\n{}{}",
        path.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    qi_ok(&[
        "convert",
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// Random writes, discards and write-zeroes through fugu agree with a model, across reopen.
fn exercise(img: &mut Image, model: &mut [u8], seed: u64, ops: usize) {
    let mut r = Rng(seed);
    let size = model.len() as u64;
    for _ in 0..ops {
        let off = r.below(size / 512) * 512;
        let len = ((1 + r.below(160)) * 512).min(size - off);
        let (o, l) = (usize::try_from(off).unwrap(), usize::try_from(len).unwrap());
        match r.below(10) {
            0 => {
                img.discard(off, len, true).unwrap();
                model[o..o + l].fill(0);
            }
            1 => {
                // A discard leaves unspecified data: model what fugu keeps.
                img.discard(off, len, false).unwrap();
                let mut v = vec![0u8; l];
                img.read_at(&mut v, off).unwrap();
                model[o..o + l].copy_from_slice(&v);
            }
            _ => {
                let b = crate::bits::lo8(r.next());
                let data: Vec<u8> = (0..l).map(|i| b ^ crate::bits::lo8(i as u64)).collect();
                img.write_at(&data, off).unwrap();
                model[o..o + l].copy_from_slice(&data);
            }
        }
    }
}

#[test]
fn fugu_images_read_back_and_pass_qemu_img_check() {
    let _serial = serial();
    let d = dir("own");
    let p = d.join("a.qcow2");
    image::create(&p, Some(8 << 20), None, Format::Qcow2).unwrap();
    let mut model = vec![0u8; 8 << 20];
    {
        let mut img = open(&p, true).unwrap();
        exercise(&mut img, &mut model, 7, 400);
        assert!(read_all(&mut img) == model, "before reopen");
        img.flush().unwrap();
    }
    let mut img = open(&p, false).unwrap();
    assert!(read_all(&mut img) == model, "after reopen");
    if qemu_img() {
        check(&p, false);
        assert!(qemu_raw(&p) == model, "qemu-img convert disagrees");
    }
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn overlays_on_raw_and_qcow2_bases() {
    let _serial = serial();
    let d = dir("overlay");
    let base = d.join("base.raw");
    let mut model: Vec<u8> = (0..(4u32 << 20))
        .map(|i| crate::bits::lo8(i / 512))
        .collect();
    std::fs::write(&base, &model).unwrap();
    let mid = d.join("mid.qcow2");
    image::create(&mid, None, Some(&base), Format::Qcow2).unwrap();
    {
        let mut img = open(&mid, true).unwrap();
        exercise(&mut img, &mut model, 11, 150);
        img.flush().unwrap();
    }
    // A larger top: beyond the base it reads zeroes.
    let top = d.join("top.qcow2");
    image::create(
        &top,
        Some(6 << 20),
        Some(Path::new("mid.qcow2")),
        Format::Qcow2,
    )
    .unwrap();
    model.resize(6 << 20, 0);
    {
        let mut img = open(&top, true).unwrap();
        // The base is locked shared: a writer cannot open it, a reader can.
        assert!(open(&mid, true).is_err());
        assert!(open(&mid, false).is_ok());
        exercise(&mut img, &mut model, 12, 300);
        assert!(read_all(&mut img) == model);
        img.flush().unwrap();
    }
    let info = image::info(&top).unwrap();
    assert!(
        info.contains("backing file: mid.qcow2 (format qcow2)"),
        "{info}"
    );
    assert!(info.contains("format raw"), "{info}");
    if qemu_img() {
        check(&mid, false);
        check(&top, false);
        assert!(qemu_raw(&top) == model);
        // qemu-img compare against a raw copy of the model.
        let m = d.join("model.raw");
        std::fs::write(&m, &model).unwrap();
        qi_ok(&["compare", top.to_str().unwrap(), m.to_str().unwrap()]);
    }
    let _ = std::fs::remove_dir_all(d);
}

/// Images qemu-img makes (v2 and v3, refcount widths, backing files, compressed and zero
/// clusters) read the same through fugu as through `qemu-img convert -O raw`; fugu's writes
/// to them pass `qemu-img check`.
#[test]
fn qemu_img_images_read_the_same_and_take_writes() {
    let _serial = serial();
    if !qemu_img() {
        return;
    }
    let d = dir("qemu");
    let src = d.join("src.raw");
    let mut r = Rng(99);
    // Compressible and incompressible regions, holes.
    let mut data = vec![0u8; 6 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = match (i >> 16) % 4 {
            0 => 0,
            1 => crate::bits::lo8((i / 1000) as u64),
            _ => crate::bits::lo8(r.next() >> 24),
        };
    }
    std::fs::write(&src, &data).unwrap();
    let s = src.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("v2.qcow2", &["-o", "compat=0.10"]),
        ("v3.qcow2", &["-o", "compat=1.1"]),
        ("v2c.qcow2", &["-c", "-o", "compat=0.10"]),
        ("v3c.qcow2", &["-c"]),
        ("small.qcow2", &["-o", "cluster_size=4096"]),
        ("big.qcow2", &["-o", "cluster_size=2M"]),
        ("rc1.qcow2", &["-o", "refcount_bits=1"]),
        ("rc8.qcow2", &["-o", "refcount_bits=8"]),
        ("rc64.qcow2", &["-o", "refcount_bits=64"]),
    ];
    for (name, opts) in cases {
        let p = d.join(name);
        let mut a = vec!["convert", "-O", "qcow2"];
        a.extend_from_slice(opts);
        a.extend_from_slice(&[s, p.to_str().unwrap()]);
        qi_ok(&a);
        let mut img = open(&p, false).unwrap();
        assert!(read_all(&mut img) == data, "{name}: reads differ");
        drop(img);
        let mut model = data.clone();
        let mut img = open(&p, true).unwrap();
        exercise(&mut img, &mut model, 5, 120);
        img.flush().unwrap();
        drop(img);
        check(&p, false);
        assert!(qemu_raw(&p) == model, "{name}: after fugu's writes");
    }
    // Zero clusters (v3 zero flag, and over a backing file) and a qemu-img overlay.
    let base = d.join("v3.qcow2");
    let ov = d.join("ov.qcow2");
    qi_ok(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        ov.to_str().unwrap(),
    ]);
    let o = Command::new("qemu-io")
        .args([
            "-c",
            "write -z 0 256k",
            "-c",
            "write -P 0x5a 1m 100k",
            "-c",
            "discard 2m 128k",
            ov.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = qemu_raw(&ov);
    let mut img = open(&ov, false).unwrap();
    assert!(
        read_all(&mut img) == want,
        "zero clusters over a backing file"
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn refcount_entries_of_every_width() {
    for order in 0..=6u32 {
        let bits = 1u32 << order;
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut b = vec![0u8; 512];
        let n = 512 * 8 / u64::from(bits);
        for i in 0..n {
            super::rc_set(&mut b, i, order, (i * 7) & max).unwrap();
        }
        for i in 0..n {
            assert_eq!(
                super::rc_get(&b, i, order),
                (i * 7) & max,
                "order {order} entry {i}"
            );
        }
        assert!(super::rc_set(&mut b, n, order, 1).is_none());
        assert_eq!(super::rc_get(&b, n, order), 0);
    }
}

/// 512-byte clusters: qemu-img's one-cluster refcount table covers 8 MiB, so 24 MiB of
/// writes make fugu grow it (twice); the image stays clean and reads back.
#[test]
fn the_refcount_table_grows() {
    let _serial = serial();
    if !qemu_img() {
        return;
    }
    let d = dir("grow");
    let p = d.join("g.qcow2");
    qi_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        p.to_str().unwrap(),
        "32M",
    ]);
    let mut model = vec![0u8; 32 << 20];
    {
        let mut img = open(&p, true).unwrap();
        for (i, chunk) in model.chunks_mut(1 << 20).enumerate().take(24) {
            chunk
                .iter_mut()
                .enumerate()
                .for_each(|(k, b)| *b = crate::bits::lo8((i + k / 512) as u64) | 1);
            img.write_at(chunk, (i as u64) << 20).unwrap();
        }
        exercise(&mut img, &mut model, 3, 100);
        img.flush().unwrap();
    }
    check(&p, false);
    assert!(qemu_raw(&p) == model);
    let mut img = open(&p, false).unwrap();
    assert!(read_all(&mut img) == model);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn format_detection_and_explicit_raw() {
    let _serial = serial();
    use super::super::{Disk, DiskError};
    let d = dir("detect");
    let q = d.join("d.qcow2");
    image::create(&q, Some(1 << 20), None, Format::Qcow2).unwrap();
    let disk = Disk::open(&q, true).unwrap();
    assert_eq!(disk.format(), Format::Qcow2);
    assert_eq!(disk.sectors(), 2048);
    drop(disk);
    // An explicit format=raw gives the file's bytes, header included.
    let disk = Disk::open_as(&q, true, Some(Format::Raw)).unwrap();
    assert_eq!(disk.format(), Format::Raw);
    assert_eq!(disk.sectors(), std::fs::metadata(&q).unwrap().len() / 512);
    drop(disk);
    let r = d.join("r.img");
    std::fs::write(&r, vec![0u8; 4096]).unwrap();
    assert!(matches!(
        Disk::open_as(&r, true, Some(Format::Qcow2)),
        Err(DiskError::NotQcow2(_))
    ));
    // A raw backing file for a raw image is refused by create.
    assert!(image::create(&d.join("x"), None, Some(&r), Format::Raw).is_err());
    // An existing file is not overwritten.
    assert!(image::create(&r, Some(1 << 20), None, Format::Raw)
        .unwrap_err()
        .to_string()
        .contains("already exists"));
    let _ = std::fs::remove_dir_all(d);
}

/// Set a big-endian field of a header in place.
fn poke(p: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn malformed_images_are_clear_errors() {
    let _serial = serial();
    let d = dir("bad");
    let good = d.join("good.qcow2");
    image::create(&good, Some(4 << 20), None, Format::Qcow2).unwrap();
    {
        let mut img = open(&good, true).unwrap();
        img.write_at(&[7u8; 70000], 100_000).unwrap();
    }
    let cases: &[(&str, u64, &[u8], &str)] = &[
        ("version", 4, &9u32.to_be_bytes(), "version 9"),
        ("cluster bits", 20, &40u32.to_be_bytes(), "cluster_bits"),
        ("huge l1", 36, &u32::MAX.to_be_bytes(), "L1 table"),
        ("small l1", 24, &(1u64 << 50).to_be_bytes(), "too small"),
        (
            "l1 past eof",
            40,
            &(1u64 << 40).to_be_bytes(),
            "past the end",
        ),
        ("l1 unaligned", 40, &12345u64.to_be_bytes(), "unaligned"),
        ("refcount order", 96, &7u32.to_be_bytes(), "refcount_order"),
        (
            "reftable size",
            56,
            &100_000u32.to_be_bytes(),
            "refcount table",
        ),
        ("encrypted", 32, &1u32.to_be_bytes(), "encrypted"),
        ("data file", 72, &4u64.to_be_bytes(), "external data file"),
        ("extended l2", 72, &16u64.to_be_bytes(), "extended L2"),
        (
            "unknown bit",
            72,
            &(1u64 << 40).to_be_bytes(),
            "incompatible",
        ),
        (
            "backing name",
            8,
            &(1u64 << 20).to_be_bytes(),
            "backing file",
        ),
    ];
    for (what, at, bytes, msg) in cases {
        let p = d.join(format!("{what}.qcow2"));
        std::fs::copy(&good, &p).unwrap();
        if *what == "backing name" {
            poke(&p, 16, &10u32.to_be_bytes());
        }
        poke(&p, *at, bytes);
        let e = open(&p, false)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert!(e.to_string().contains(msg), "{what}: {e}");
    }
    // The dirty and corrupt bits: readable, not writable.
    for bit in [1u64, 2] {
        let p = d.join(format!("flag{bit}.qcow2"));
        std::fs::copy(&good, &p).unwrap();
        poke(&p, 72, &bit.to_be_bytes());
        assert!(open(&p, false).is_ok());
        let e = open(&p, true).err().unwrap().to_string();
        assert!(e.contains("qemu-img check -r all"), "{e}");
    }
    // A backing chain that loops, and one too deep.
    let a = d.join("a.qcow2");
    let b = d.join("b.qcow2");
    std::fs::copy(&good, &a).unwrap();
    image::create(&b, None, Some(&a), Format::Qcow2).unwrap();
    std::fs::remove_file(&a).unwrap();
    image::create(&a, Some(4 << 20), Some(Path::new("b.qcow2")), Format::Qcow2).unwrap_err();
    // Build the loop by hand: a names b, b names a.
    let c = d.join("c.qcow2");
    image::create(&c, Some(4 << 20), None, Format::Qcow2).unwrap();
    std::fs::rename(&c, &a).unwrap();
    {
        // Give a the backing name "b.qcow2" (after the header, in the first cluster).
        poke(&a, 4000, b"b.qcow2");
        poke(&a, 8, &4000u64.to_be_bytes());
        poke(&a, 16, &7u32.to_be_bytes());
    }
    let e = open(&b, false).err().unwrap().to_string();
    assert!(e.contains("loops"), "{e}");
    let mut prev = good.clone();
    for i in 0..20 {
        let n = d.join(format!("chain{i}.qcow2"));
        image::create(&n, None, Some(&prev), Format::Qcow2).unwrap_or_else(|e| {
            assert!(e.to_string().contains("longer than"), "{e}");
        });
        if !n.exists() {
            break;
        }
        prev = n;
    }
    let e = open(&prev, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("longer than") || prev != good, "{e}");
    let _ = std::fs::remove_dir_all(d);
}

/// Fuzz-style: random corruption of the header and the first clusters never panics; an
/// image that still opens reads and writes without panicking either.
#[test]
fn corrupted_images_never_panic() {
    let _serial = serial();
    let d = dir("fuzz");
    let good = d.join("good.qcow2");
    image::create(&good, Some(4 << 20), None, Format::Qcow2).unwrap();
    {
        let mut img = open(&good, true).unwrap();
        img.write_at(&[7u8; 200_000], 50_000).unwrap();
    }
    let orig = std::fs::read(&good).unwrap();
    let mut r = Rng(0x1234_5678);
    let p = d.join("f.qcow2");
    for _ in 0..400 {
        let mut v = orig.clone();
        for _ in 0..1 + r.below(6) {
            // Mostly the header and the tables (first 4 clusters, then L2 and refcounts).
            let span = if r.below(2) == 0 { 128 } else { v.len() as u64 };
            let i = usize::try_from(r.below(span)).unwrap();
            v[i] = crate::bits::lo8(r.next() >> 32);
        }
        std::fs::write(&p, &v).unwrap();
        if let Ok(mut img) = open(&p, true) {
            let mut buf = vec![0u8; 300_000];
            let _ = img.read_at(&mut buf, 0);
            let _ = img.write_at(&[1u8; 5000], 3 << 20);
            let _ = img.discard(0, 1 << 20, false);
        }
    }
    let _ = std::fs::remove_dir_all(d);
}

const CRASH_ENV: &str = "FUGU_QCOW2_CRASH_CHILD";
const BLOCKS: u64 = 2048; // 4 KiB blocks: an 8 MiB disk

/// What one 4 KiB block holds: zeroes, or one write's tag (run << 32 | round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Zero,
    Tag(u64),
}

fn block_data(tag: u64, blk: u64) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    for c in data.chunks_exact_mut(16) {
        c[..8].copy_from_slice(&tag.to_le_bytes());
        c[8..].copy_from_slice(&blk.to_le_bytes());
    }
    data
}

fn block_state(buf: &[u8], blk: u64) -> Option<State> {
    if buf.iter().all(|&b| b == 0) {
        return Some(State::Zero);
    }
    let tag = u64::from_le_bytes(buf[..8].try_into().ok()?);
    (buf == block_data(tag, blk).as_slice()).then_some(State::Tag(tag))
}

/// The writer the kill -9 test runs in a child process (this test binary, this test only):
/// rounds of tagged 4 KiB writes and cluster discards, each round ended by FLUSH. Each
/// operation is announced on stdout before it starts; "flushed" after the FLUSH completed.
#[test]
fn crash_writer() {
    let Ok(spec) = std::env::var(CRASH_ENV) else {
        return;
    };
    use std::io::Write;
    let (path, run) = spec.split_once(':').unwrap();
    let run: u64 = run.parse().unwrap();
    let mut img = open(Path::new(path), true).unwrap();
    let mut r = Rng(run * 7919 + 1);
    let mut out = std::io::stdout();
    for round in 1u64.. {
        for _ in 0..1 + r.below(24) {
            let blk = r.below(BLOCKS);
            if r.below(8) == 0 {
                let first = blk & !15;
                writeln!(out, "d {first}").unwrap();
                out.flush().unwrap();
                img.discard(first * 4096, 16 * 4096, false).unwrap();
            } else {
                let tag = (run << 32) | round;
                writeln!(out, "w {tag} {blk}").unwrap();
                out.flush().unwrap();
                img.write_at(&block_data(tag, blk), blk * 4096).unwrap();
            }
        }
        img.flush().unwrap();
        writeln!(out, "flushed").unwrap();
        out.flush().unwrap();
    }
}

/// 50 kills at random moments: qemu-img check never reports corruption (leaks allowed),
/// and every block holds what the last FLUSH covered or what an operation after it wrote.
#[test]
fn kill_9_during_writes() {
    let _serial = serial();
    if !qemu_img() {
        return;
    }
    use std::io::{BufRead, BufReader};
    let d = dir("kill");
    let p = d.join("k.qcow2");
    image::create(&p, Some(BLOCKS * 4096), None, Format::Qcow2).unwrap();
    let n = usize::try_from(BLOCKS).unwrap();
    let mut state = vec![State::Zero; n];
    let exe = std::env::current_exe().unwrap();
    let mut r = Rng(4242);
    let mut flushes = 0;
    for run in 1..=50u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "devices::virtio::blk::qcow2::tests::crash_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, format!("{}:{run}", p.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(std::time::Duration::from_millis(20 + r.below(150)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGKILL) };
        let _ = child.wait();
        let lines = reader.join().unwrap();
        // Replay: flushed operations are certain; those after the last flush may or may not
        // have reached the image.
        let mut maybe: Vec<Vec<State>> = vec![Vec::new(); n];
        let mut pending: Vec<(usize, State)> = Vec::new();
        for l in &lines {
            // The first line follows the test harness's "test NAME ... ".
            let l = l.rsplit_once(" ... ").map_or(l.as_str(), |x| x.1);
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["w", tag, blk] => {
                    pending.push((blk.parse().unwrap(), State::Tag(tag.parse().unwrap())))
                }
                ["d", first] => {
                    let first: usize = first.parse().unwrap();
                    pending.extend((first..first + 16).map(|b| (b, State::Zero)));
                }
                ["flushed"] => {
                    flushes += 1;
                    for (b, s) in pending.drain(..) {
                        state[b] = s;
                    }
                }
                _ => {}
            }
        }
        for (b, s) in pending {
            maybe[b].push(s);
        }
        check(&p, true);
        let mut img = open(&p, false).unwrap();
        let mut buf = vec![0u8; 4096];
        for blk in 0..n {
            img.read_at(&mut buf, blk as u64 * 4096).unwrap();
            let got = block_state(&buf, blk as u64);
            assert!(
                got == Some(state[blk]) || got.is_some_and(|g| maybe[blk].contains(&g)),
                "run {run}: block {blk} has {got:?}, expected {:?} or one of {:?}",
                state[blk],
                maybe[blk]
            );
            if let Some(g) = got {
                state[blk] = g;
            }
        }
    }
    assert!(flushes > 50, "only {flushes} flushes completed");
    let _ = std::fs::remove_dir_all(d);
}
