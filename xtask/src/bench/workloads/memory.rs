//! Memory overhead: resident memory beyond the guest RAM it touched.

use super::super::*;

/// Resident memory of process `pid`: (VmRSS, the Rss of its guest-RAM mappings), in KiB.
/// Guest RAM is every mapping between `ram` and `ram` + 8 MiB long (QEMU pads its RAM block
/// for alignment; fugu maps exactly).
fn rss_split(pid: u32, ram: u64) -> std::result::Result<(u64, u64), NoNumbers> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let rss = vm_rss_kib(&status).ok_or_else(|| Failed("no VmRSS in /proc/PID/status".into()))?;
    let guest = guest_rss_kib(&smaps, ram);
    if guest.is_none() {
        return Err(Failed(format!(
            "no mapping of {} MiB (guest RAM) in /proc/{pid}/smaps",
            ram >> 20
        )));
    }
    Ok((rss, guest.unwrap_or(0)))
}

pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let l = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// The summed Rss (KiB) of the mappings whose size lies in [ram, ram + 8 MiB]; None if none.
pub fn guest_rss_kib(smaps: &str, ram: u64) -> Option<u64> {
    let lo = ram >> 10;
    let hi = (ram + (8 << 20)) >> 10;
    let mut found = None;
    let mut size = None;
    for l in smaps.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Size:"), Some(v)) => size = v.parse::<u64>().ok(),
            (Some("Rss:"), Some(v)) => {
                if let (Some(s), Ok(r)) = (size, v.parse::<u64>()) {
                    if (lo..=hi).contains(&s) {
                        found = Some(found.unwrap_or(0) + r);
                    }
                }
                size = None;
            }
            _ => {}
        }
    }
    found
}

pub(super) fn memory(ctx: &Ctx) -> Bench {
    let kernel = write_kernel(ctx, "spin.elf", &kernels::spin(SPIN_MARKER))?;
    let serial = ctx.work.join("spin-serial.log");
    let limit = Duration::from_secs(120);
    let settle = Duration::from_millis(500);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    let mut guest = (0u64, 0u64);
    let mut peer_err = None;
    let mib = |kib: u64| kib as f64 / 1024.0;
    for _ in 0..ctx.runs {
        let _ = std::fs::remove_file(&serial);
        let mut c = fugu_run(ctx, &kernel, &serial.to_string_lossy());
        let mut vm = Running::start(&mut c, "fugu run")?;
        vm.wait_file(&serial, SPIN_MARKER, limit, "fugu")?;
        std::thread::sleep(settle);
        let (rss, g) = rss_split(vm.child.id(), MEM_BYTES)?;
        drop(vm);
        guest.0 = g;
        f.push(mib(rss.saturating_sub(g)));
        match qemu(ctx) {
            Ok(mut q) => {
                let _ = std::fs::remove_file(&serial);
                q.arg("-kernel")
                    .arg(&kernel)
                    .arg("-serial")
                    .arg(format!("file:{}", serial.display()));
                let mut vm = Running::start(&mut q, "qemu")?;
                vm.wait_file(&serial, SPIN_MARKER, limit, "QEMU")?;
                std::thread::sleep(settle);
                let (rss, g) = rss_split(vm.child.id(), MEM_BYTES)?;
                drop(vm);
                guest.1 = g;
                p.push(mib(rss.saturating_sub(g)));
            }
            Err(Failed(e)) | Err(Unavailable(e)) => peer_err = Some(e),
        }
    }
    let note = match peer_err {
        Some(e) => format!("no peer: {e}"),
        None => format!(
            "VmRSS minus the Rss of the 128 MiB guest-RAM mapping, 0.5 s after the guest printed its marker (guest RAM resident in the last run: fugu {} KiB, QEMU {} KiB: SeaBIOS)",
            guest.0, guest.1
        ),
    };
    Ok(Measured {
        fugu: f,
        peer: (!p.is_empty()).then_some(p),
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_parse() {
        assert_eq!(
            vm_rss_kib("Name:\tfugu\nVmRSS:\t   12345 kB\n"),
            Some(12345)
        );
        assert_eq!(vm_rss_kib("Name:\tfugu\n"), None);
        let smaps = "\
55d0-55d1 r-xp 00000000 08:01 1 /usr/bin/fugu
Size:                  4 kB
Rss:                   4 kB
7f00-7f08 rw-p 00000000 00:00 0
Size:             131072 kB
KernelPageSize:        4 kB
Rss:                 520 kB
7f10-7f11 rw-p 00000000 00:00 0
Size:             133120 kB
Rss:                  80 kB
7f20-7f21 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:                 999 kB
";
        assert_eq!(guest_rss_kib(smaps, 128 << 20), Some(600));
        assert_eq!(guest_rss_kib(smaps, 64 << 20), None);
    }
}
