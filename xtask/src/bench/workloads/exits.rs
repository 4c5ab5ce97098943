//! Port-I/O exit round trips: fugu's vCPU loop against a bare KVM loop.

use super::super::*;
use super::io::{fugu_bench, kv};

pub(super) fn exits(ctx: &Ctx) -> Bench {
    let k0 = write_kernel(ctx, "exits-0.elf", &kernels::exit_loop(0))?;
    let kn = write_kernel(ctx, "exits-n.elf", &kernels::exit_loop(EXITS))?;
    let limit = Duration::from_secs(120);
    let fugu_time = |k: &Path| -> std::result::Result<f64, NoNumbers> {
        let mut c = fugu_run(ctx, k, "none");
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let (t, s) = timed(&mut c, limit, "fugu run exit loop")?;
        expect_status(s, 33, "fugu run exit loop")?;
        Ok(t)
    };
    let bare_time = |k: &Path, n: u32, irqchip: bool| -> std::result::Result<f64, NoNumbers> {
        let out_file = ctx.work.join("bench-exits.out");
        let mut c = Command::new(fugu_bench(&ctx.fugu));
        c.arg("bench-exits")
            .arg("--kernel")
            .arg(k)
            .args(["--memory", MEM])
            .stdout(std::fs::File::create(&out_file)?)
            .stderr(Stdio::null());
        if irqchip {
            c.arg("--irqchip");
        }
        let (t, s) = timed(&mut c, limit, "fugu bench-exits")?;
        let out = std::fs::read_to_string(&out_file).unwrap_or_default();
        if !s.success() || kv(&out, "exits") != Some(n as f64) {
            return Err(Failed(format!("fugu bench-exits ({s}): '{}'", out.trim())));
        }
        Ok(t)
    };
    let (mut f, mut p, mut irq) = (Vec::new(), Vec::new(), Vec::new());
    let per_exit = |tn: f64, t0: f64| (tn - t0) / EXITS as f64 * 1e6;
    for _ in 0..ctx.runs {
        let fnn = fugu_time(&kn)?;
        let bn = bare_time(&kn, EXITS, false)?;
        let f0 = fugu_time(&k0)?;
        let b0 = bare_time(&k0, 0, false)?;
        f.push(per_exit(fnn, f0));
        p.push(per_exit(bn, b0));
        let (irqn, irq0) = (bare_time(&kn, EXITS, true)?, bare_time(&k0, 0, true)?);
        irq.push(per_exit(irqn, irq0));
    }
    let irq = report::Stats::of(&irq).map_or(0.0, |s| s.median);
    // Load from other processes comes and goes; a ratio within each run pairs measurements
    // taken seconds apart.
    let paired: Vec<f64> = f.iter().zip(&p).map(|(a, b)| a / b).collect();
    let paired = report::Stats::of(&paired).map_or(0.0, |s| s.median);
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: format!(
            "(wall time with {EXITS} `out` to port 0x80 − wall time with none) / {EXITS}, same guest and boot state on both sides; bare loop = `fugu bench-exits` (KVM_RUN on fugu's hypervisor layer, no devices, no threads); the bare loop with KVM's in-kernel PIC/IOAPIC/PIT added, as fugu has them: {} µs/exit (median); median of the per-run ratios: {}×",
            report::num(irq),
            report::num(paired)
        ),
    })
}
