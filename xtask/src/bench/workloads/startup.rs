//! Process start to the first KVM_RUN, from each VMM's own trace.

use super::super::*;

pub(super) fn startup(ctx: &Ctx) -> Bench {
    let kernel = write_kernel(ctx, "spin.elf", &kernels::spin(SPIN_MARKER))?;
    let limit = Duration::from_secs(60);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    let mut peer_err = None;
    for _ in 0..ctx.runs {
        let mut c = fugu_run(ctx, &kernel, "none");
        c.env("FUGU_TRACE", "startup");
        let t0 = epoch_now();
        let mut vm = Running::start(&mut c, "fugu run")?;
        let t = vm.find_line(limit, "fugu FUGU_TRACE=startup", parse_fugu_first_run)?;
        drop(vm);
        f.push((t - t0) * 1e3);
        match qemu(ctx) {
            Ok(mut q) => {
                q.arg("-kernel").arg(&kernel).args([
                    "-serial",
                    "none",
                    "-msg",
                    "timestamp=on",
                    "-trace",
                    "enable=kvm_vcpu_ioctl",
                ]);
                let t0 = epoch_now();
                let mut vm = Running::start(&mut q, "qemu")?;
                let t = vm.find_line(limit, "qemu -trace kvm_vcpu_ioctl", parse_qemu_first_run)?;
                drop(vm);
                p.push((t - t0) * 1e3);
            }
            Err(Failed(e)) | Err(Unavailable(e)) => peer_err = Some(e),
        }
    }
    let note = match peer_err {
        Some(e) => format!("no peer: {e}"),
        None => "spawn (xtask clock) to the VMM's own timestamp just before its first KVM_RUN: fugu FUGU_TRACE=startup, QEMU -msg timestamp=on -trace kvm_vcpu_ioctl (QEMU's first KVM_RUN starts SeaBIOS, fugu's the kernel)".into(),
    };
    Ok(Measured {
        fugu: f,
        peer: (!p.is_empty()).then_some(p),
        note,
    })
}

/// "fugu: trace: first KVM_RUN at SECS.USECS" → SECS.USECS.
pub fn parse_fugu_first_run(line: &str) -> Option<f64> {
    line.split_once("first KVM_RUN at ")?.1.trim().parse().ok()
}

/// QEMU's `-msg timestamp=on -trace kvm_vcpu_ioctl` line for KVM_RUN (ioctl 0xae80):
/// "PID@SECS.USECS:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)" → SECS.USECS.
pub fn parse_qemu_first_run(line: &str) -> Option<f64> {
    let (stamp, rest) = line.split_once(":kvm_vcpu_ioctl ")?;
    if !rest.contains("type 0xae80,") {
        return None;
    }
    stamp.split_once('@')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_parse() {
        assert_eq!(
            parse_fugu_first_run("fugu: trace: first KVM_RUN at 1795964004.249571"),
            Some(1795964004.249571)
        );
        assert_eq!(parse_fugu_first_run("fugu: guest wrote 0x10"), None);
        assert_eq!(
            parse_qemu_first_run(
                "24786@1795963459.250364:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)"
            ),
            Some(1795963459.250364)
        );
        assert_eq!(
            parse_qemu_first_run(
                "24786@1795963459.109869:kvm_vcpu_ioctl cpu_index 0, type 0x4008ae9c, arg 0x5"
            ),
            None
        );
        assert_eq!(parse_qemu_first_run("qemu-system-x86_64: warning: x"), None);
    }
}
