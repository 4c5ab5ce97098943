//! Many VMs at once: 50 spinning tiny guests started together, the time from the first start
//! to each guest's marker (p50, p99) and the memory the 50 processes hold together (summed
//! Pss, so that shared pages count once), fugu against QEMU.

use super::super::*;
use fugu_common::proc::Proc;
use std::sync::Mutex;
use std::time::Instant;

/// How many VMs run together.
const VMS: usize = 50;

/// One start of the whole fleet.
#[derive(Debug, Clone, Copy)]
struct Fleet {
    p50_s: f64,
    p99_s: f64,
    pss_mib: f64,
}

/// Both sides' fleets, run by whichever of the two rows comes first in one bench invocation.
#[derive(Clone)]
struct Runs {
    fugu: Vec<Fleet>,
    peer: Vec<Fleet>,
    peer_err: Option<String>,
}

static RUNS: Mutex<Option<Runs>> = Mutex::new(None);

/// The `p`-th percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The rank lies in 0..=len for p in 0..=100 (clamped below for any other p).
    #[allow(clippy::cast_possible_truncation)]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Proportional set size of process `pid` in KiB (from /proc/PID/smaps_rollup).
pub fn pss_kib(rollup: &str) -> Option<u64> {
    let l = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// Start `VMS` VMs made by `make` (given each one's serial log), wait for every marker, sum
/// their Pss, kill them.
fn fleet(
    dir: &Path,
    what: &str,
    make: &dyn Fn(&Path) -> Command,
) -> std::result::Result<Fleet, NoNumbers> {
    let limit = Duration::from_secs(300);
    std::fs::create_dir_all(dir)?;
    let serials: Vec<PathBuf> = (0..VMS).map(|i| dir.join(format!("{i}.log"))).collect();
    for s in &serials {
        let _ = std::fs::remove_file(s);
    }
    let start = Instant::now();
    let mut vms = Vec::with_capacity(VMS);
    for s in &serials {
        let mut c = make(s);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        vms.push(
            Proc::spawn(&mut c, false).map_err(|e| Failed(format!("cannot run {what}: {e}")))?,
        );
    }
    let mut reached: Vec<Option<f64>> = vec![None; VMS];
    while reached.iter().any(Option::is_none) {
        for (i, s) in serials.iter().enumerate() {
            if reached[i].is_none()
                && std::fs::read_to_string(s).is_ok_and(|t| t.contains(SPIN_MARKER))
            {
                reached[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        for (i, vm) in vms.iter_mut().enumerate() {
            if reached[i].is_none() {
                if let Some(st) = vm.try_wait()? {
                    return Err(Failed(format!(
                        "{what}: VM {i} of {VMS} ended ({st}) before printing its marker"
                    )));
                }
            }
        }
        if start.elapsed() > limit {
            let n = reached.iter().filter(|r| r.is_some()).count();
            return Err(Failed(format!(
                "{what}: {n} of {VMS} VMs printed their marker within {} s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut kib = 0;
    for vm in &vms {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", vm.id()))?;
        kib += pss_kib(&rollup).ok_or_else(|| Failed("no Pss in /proc/PID/smaps_rollup".into()))?;
    }
    drop(vms);
    let mut times: Vec<f64> = reached.into_iter().flatten().collect();
    times.sort_by(f64::total_cmp);
    Ok(Fleet {
        p50_s: percentile(&times, 50.0),
        p99_s: percentile(&times, 99.0),
        pss_mib: kib as f64 / 1024.0,
    })
}

/// Both sides, `ctx.runs` times, alternating; cached for the second row.
fn runs(ctx: &Ctx) -> std::result::Result<Runs, NoNumbers> {
    if let Some(r) = RUNS.lock().map_err(|_| Failed("poisoned".into()))?.clone() {
        return Ok(r);
    }
    let kernel = write_kernel(ctx, "spin.elf", &kernels::spin(SPIN_MARKER))?;
    let dir = ctx.work.join("many");
    let mut r = Runs {
        fugu: Vec::new(),
        peer: Vec::new(),
        peer_err: None,
    };
    for _ in 0..ctx.runs {
        r.fugu.push(fleet(&dir, "fugu", &|serial| {
            fugu_run(ctx, &kernel, &serial.to_string_lossy())
        })?);
        match qemu(ctx) {
            Ok(_) => r.peer.push(fleet(&dir, "QEMU", &|serial| {
                let mut q = qemu(ctx).unwrap_or_else(|_| Command::new("false"));
                q.arg("-kernel")
                    .arg(&kernel)
                    .arg("-serial")
                    .arg(format!("file:{}", serial.display()));
                q
            })?),
            Err(Failed(e)) | Err(Unavailable(e)) => r.peer_err = Some(e),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    *RUNS.lock().map_err(|_| Failed("poisoned".into()))? = Some(r.clone());
    Ok(r)
}

fn note(r: &Runs, what: &str) -> String {
    let med = |v: &[Fleet], f: fn(&Fleet) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        percentile(&x, 50.0)
    };
    let side = |name: &str, v: &[Fleet]| {
        format!(
            "{name} p50 {:.3} s, p99 {:.3} s, {:.1} MiB",
            med(v, |f| f.p50_s),
            med(v, |f| f.p99_s),
            med(v, |f| f.pss_mib)
        )
    };
    let peer = match &r.peer_err {
        Some(e) => format!("no peer: {e}"),
        None => side("QEMU", &r.peer),
    };
    format!(
        "{VMS} VMs with a spinning tiny guest (128 MiB each) started together; {what}; medians over the runs: {}; {peer}",
        side("fugu", &r.fugu)
    )
}

/// One row from the fleets: `figure` of each run on both sides, and what it is.
fn row(ctx: &Ctx, figure: fn(&Fleet) -> f64, what: &str) -> Bench {
    let r = runs(ctx)?;
    Ok(Measured {
        fugu: r.fugu.iter().map(figure).collect(),
        peer: (!r.peer.is_empty()).then(|| r.peer.iter().map(figure).collect()),
        note: note(&r, what),
    })
}

pub(super) fn many_vms_time(ctx: &Ctx) -> Bench {
    row(
        ctx,
        |f| f.p99_s,
        "the figure is the 99th percentile of the time from the first start to each guest's marker on COM1 (QEMU through SeaBIOS, fugu directly)",
    )
}

pub(super) fn many_vms_memory(ctx: &Ctx) -> Bench {
    row(
        ctx,
        |f| f.pss_mib,
        "the figure is the summed Pss of the 50 processes once every guest printed its marker (shared pages counted once, guest RAM touched included)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_pss_parse() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 99.0), 4.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  1234 kB\nPss:   567 kB\n";
        assert_eq!(pss_kib(rollup), Some(567));
        assert_eq!(pss_kib("Rss: 1 kB\n"), None);
    }
}
