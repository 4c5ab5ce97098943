//! virtio-blk 4 KiB reads through the device model against pread.

use super::super::*;

/// Deterministic, incompressible-looking bytes (xorshift64).
pub(super) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub(super) fn ensure_file(
    path: &Path,
    len: usize,
    seed: u64,
) -> std::result::Result<(), NoNumbers> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len as u64) {
        return Ok(());
    }
    std::fs::write(path, pattern(len, seed))?;
    Ok(())
}

/// `key=value` pairs of a bench command's output line.
pub(super) fn kv(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

pub(super) fn blk(ctx: &Ctx) -> Bench {
    let img = ctx.work.join("blk.img");
    ensure_file(&img, BLOB_BYTES, 7)?;
    // Both sides read from the page cache: warm it first.
    std::fs::read(&img)?;
    // fugu's default queue on this host (rust-vmm's virtio-queue on x86_64), and for the note
    // the in-house ring (`--backend portable`, the one i686 hosts use).
    let once = |portable: bool| -> std::result::Result<(f64, f64), NoNumbers> {
        let mut c = Command::new(fugu_bench(&ctx.fugu));
        c.arg("bench-blk")
            .arg("--image")
            .arg(&img)
            .args(["--requests", &BLK_REQUESTS.to_string()]);
        if portable {
            c.args(["--backend", "portable"]);
        }
        let out = c.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        match (kv(&text, "device_per_sec"), kv(&text, "pread_per_sec")) {
            (Some(d), Some(r)) => Ok((d, r)),
            _ => Err(Failed(format!(
                "fugu bench-blk: {}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    };
    let (mut f, mut p, mut inhouse) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let (d, r) = once(false)?;
        f.push(d);
        p.push(r);
        let (d, r) = once(true)?;
        inhouse.push(d / r);
    }
    let inhouse = report::Stats::of(&inhouse).map_or(0.0, |s| s.median);
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: format!(
            "{BLK_REQUESTS} scattered 4 KiB reads of a 64 MiB image in the page cache per run: split queue in guest memory → device model (batches of 64; raw images go straight from the file into guest RAM) vs pread of as many other scattered offsets, batches taken in turn in one `fugu bench-blk` process; higher is better; default queue: {}; with the in-house ring (`--backend portable`, as on i686) the ratio was {}× (median)",
            if cfg!(target_arch = "x86_64") { "rust-vmm virtio-queue" } else { "the in-house ring" },
            report::num(inhouse)
        ),
    })
}

/// The `fugu-bench` helper built beside `fugu` (bench-exits, bench-blk); the shipped binary
/// has no bench commands.
pub(super) fn fugu_bench(fugu: &Path) -> PathBuf {
    fugu.with_file_name("fugu-bench")
}

/// One `fugu-bench bench-disk` run: requests per second.
fn bench_disk(
    ctx: &Ctx,
    image: &Path,
    write: bool,
    fill: Option<&Path>,
) -> std::result::Result<f64, NoNumbers> {
    let mut c = Command::new(fugu_bench(&ctx.fugu));
    c.arg("bench-disk")
        .arg("--image")
        .arg(image)
        .args(["--requests", &BLK_REQUESTS.to_string()]);
    if write {
        c.arg("--write");
    }
    if let Some(f) = fill {
        c.arg("--fill-from").arg(f);
    }
    let out = c.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    kv(&text, "per_sec").ok_or_else(|| {
        Failed(format!(
            "fugu-bench bench-disk: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// A fresh, empty 64 MiB qcow2 image made by `fugu disk create`.
fn fresh_qcow2(ctx: &Ctx, path: &Path) -> std::result::Result<(), NoNumbers> {
    let _ = std::fs::remove_file(path);
    let out = Command::new(&ctx.fugu)
        .args(["disk", "create", "--format", "qcow2", "-s"])
        .arg(format!("{}M", BLOB_BYTES >> 20))
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(Failed(format!(
            "fugu disk create: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Random 4 KiB reads (or writes) through fugu's qcow2 against the same through raw, in the
/// format layer under the virtio queue. Writes go to a fresh qcow2 (the first write to each
/// cluster allocates it) and to a fully written raw copy.
pub(super) fn qcow2(ctx: &Ctx, write: bool) -> Bench {
    let raw = ctx.work.join("blk.img");
    ensure_file(&raw, BLOB_BYTES, 7)?;
    let q = ctx.work.join("bench.qcow2");
    let wraw = ctx.work.join("bench-w.raw");
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        fresh_qcow2(ctx, &q)?;
        if write {
            std::fs::copy(&raw, &wraw)?;
            f.push(bench_disk(ctx, &q, true, None)?);
            p.push(bench_disk(ctx, &wraw, true, None)?);
        } else {
            f.push(bench_disk(ctx, &q, false, Some(&raw))?);
            std::fs::read(&raw)?;
            p.push(bench_disk(ctx, &raw, false, None)?);
        }
    }
    let _ = std::fs::remove_file(&q);
    let _ = std::fs::remove_file(&wraw);
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: format!(
            "{BLK_REQUESTS} random 4 KiB {} of a 64 MiB image in the page cache per run, through fugu's image layer (`fugu-bench bench-disk`): qcow2 (64 KiB clusters{}) vs raw; higher is better. QEMU's qcow2 is not measured side by side: `qemu-img bench` has no random offsets",
            if write { "writes" } else { "reads" },
            if write { ", a fresh image: allocations included" } else { ", fully allocated" },
        ),
    })
}

pub(super) fn qcow2_read(ctx: &Ctx) -> Bench {
    qcow2(ctx, false)
}

pub(super) fn qcow2_write(ctx: &Ctx) -> Bench {
    qcow2(ctx, true)
}
