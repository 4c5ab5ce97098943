//! The svm-tcg rows: Linux to its init, fugu against QEMU `-accel kvm`, inside the L1 of the
//! svm-tcg host class (QEMU TCG's emulated AMD SVM with nested paging, and the L1's real
//! kvm_amd): the comparison on Linux's hardware-virtualization KVM that these machines can
//! make. The outer bench boots the L1 ([`oneshot`]); inside it this same workload runs the
//! boots and writes the bench JSON into the L1's share, and the outer reads the samples back.

use super::super::*;
use crate::probe::Probe;
use crate::svm_tcg::{self, l1::Arch, oneshot};
use serde_json::Value;

/// What a row boots.
#[derive(Clone, Copy)]
pub(super) enum Guest {
    /// The minimal linux-amd64 image: its bzImage with root on virtio-blk.
    Minimal,
    /// Debian's stock amd64 kernel (debian-amd64: vmlinuz) with the image's initramfs.
    Debian,
}

impl Guest {
    fn image(self) -> &'static str {
        match self {
            Guest::Minimal => "linux-amd64",
            Guest::Debian => "debian-amd64",
        }
    }
    fn kernel(self) -> &'static str {
        match self {
            Guest::Minimal => "bzImage",
            Guest::Debian => "vmlinuz",
        }
    }
    /// The line that says the kernel handed over to init.
    fn marker(self) -> &'static str {
        match self {
            Guest::Minimal => "Run /sbin/init as init process",
            Guest::Debian => "fugu-check: started as /init",
        }
    }
    /// The same for both VMMs. `noxsave`: TCG's XSAVE leaf is inconsistent and a stock
    /// kernel sometimes triple-faults on it, with either VMM (docs/matrix.md).
    fn cmdline(self) -> &'static str {
        match self {
            Guest::Minimal => "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1",
            Guest::Debian => "console=ttyS0 panic=-1 noxsave",
        }
    }
}

const MEMORY: &str = "256M";
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// The inner bench prints a step per workload and run; nothing for this long means it hangs.
const INNER_QUIET: Duration = Duration::from_secs(900);

pub(super) fn minimal(ctx: &Ctx) -> Bench {
    in_l1(ctx, "svm-tcg-boot-linux", Some("linux-amd64"), |ctx| {
        measure(ctx, Guest::Minimal)
    })
}

pub(super) fn debian(ctx: &Ctx) -> Bench {
    in_l1(ctx, "svm-tcg-boot-debian", Some("debian-amd64"), |ctx| {
        measure(ctx, Guest::Debian)
    })
}

/// The firmware boot of `boot-seabios-mbr`, the same workload run inside the L1.
pub(super) fn seabios_mbr(ctx: &Ctx) -> Bench {
    in_l1(
        ctx,
        "svm-tcg-boot-seabios-mbr",
        None,
        super::boot::seabios_mbr,
    )
}

/// The network boot of `boot-ipxe`, the same workload run inside the L1.
pub(super) fn ipxe(ctx: &Ctx) -> Bench {
    in_l1(ctx, "svm-tcg-boot-ipxe", None, super::boot::ipxe)
}

/// Row `name`: `inside` measures where this process runs in the amd64 L1; elsewhere an L1 is
/// booted to run it (after building `image`, which the inner bench cannot build).
fn in_l1(ctx: &Ctx, name: &str, image: Option<&str>, inside: fn(&Ctx) -> Bench) -> Bench {
    let probe = Probe::host();
    if svm_tcg::inside(&probe, Arch::Amd64) {
        return inside(ctx);
    }
    if let Some(why) = svm_tcg::unavailable(&probe) {
        return Err(Unavailable(format!(
            "the svm-tcg L1 cannot boot here: {why}"
        )));
    }
    if let Some(image) = image {
        super::built_image(image)?;
    }
    let json = oneshot::share(Arch::Amd64, name).join("bench.json");
    let args: Vec<String> = [
        "bench",
        "--runs",
        &ctx.runs.to_string(),
        "--filter",
        name,
        "--fugu",
        &ctx.fugu.display().to_string(),
        "--json",
        &json.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    oneshot::run(Arch::Amd64, name, &args, INNER_QUIET).map_err(Failed)?;
    let text = std::fs::read_to_string(&json)
        .map_err(|e| Failed(format!("the L1's bench wrote no {}: {e}", json.display())))?;
    let mut m = read_back(&text, name)?;
    m.note = format!(
        "inside the svm-tcg L1 (QEMU TCG's AMD SVM, kvm_amd npt=1; both VMMs run there, one \
         boot at a time): {}",
        m.note
    );
    Ok(m)
}

/// The samples of workload `name` from the inner bench's JSON.
fn read_back(text: &str, name: &str) -> Bench {
    let v: Value =
        serde_json::from_str(text).map_err(|e| Failed(format!("the L1's bench JSON: {e}")))?;
    let row = v["workloads"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .ok_or_else(|| Failed(format!("the L1's bench JSON has no row {name}")))?;
    let samples = |side: &str| -> Option<Vec<f64>> {
        row[side]["samples"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
    };
    match row["status"].as_str() {
        Some("measured") => Ok(Measured {
            fugu: samples("fugu")
                .ok_or_else(|| Failed(format!("the L1's {name} row has no fugu samples")))?,
            peer: samples("peer"),
            note: row["note"].as_str().unwrap_or_default().to_string(),
        }),
        Some(s) => Err(Failed(format!(
            "in the L1: {s}: {}",
            row["reason"].as_str().unwrap_or("(no reason)")
        ))),
        None => Err(Failed(format!("the L1's {name} row has no status"))),
    }
}

/// Inside the L1: boot `g` with fugu and with QEMU in turn, timing each to its init.
fn measure(ctx: &Ctx, g: Guest) -> Bench {
    let dir = util::root().join("target/images/out").join(g.image());
    let kernel = dir.join(g.kernel());
    let initrd = dir.join("initramfs.cpio.gz");
    let disk_src = dir.join("disk.ext4");
    let needs: Vec<&PathBuf> = match g {
        Guest::Minimal => vec![&kernel, &disk_src],
        Guest::Debian => vec![&kernel, &initrd],
    };
    if let Some(p) = needs.iter().find(|p| !p.is_file()) {
        return Err(Unavailable(format!("{} is missing", p.display())));
    }
    let disk = ctx.work.join("l1-disk.ext4");
    let serial_of = |fugu_side: bool| {
        // Each VMM's last serial log stays for reading (the kernel's timestamps per phase).
        ctx.keep.join(format!(
            "{}.{}.serial.log",
            g.image(),
            if fugu_side { "fugu" } else { "qemu" }
        ))
    };
    let boot_once = |fugu_side: bool| -> std::result::Result<Option<f64>, NoNumbers> {
        let serial = serial_of(fugu_side);
        let mut c = if fugu_side {
            let mut c = Command::new(&ctx.fugu);
            c.args(["run", "--memory", MEMORY, "--cmdline", g.cmdline()])
                .arg("--kernel")
                .arg(&kernel)
                .arg("--serial")
                .arg(&serial);
            c
        } else {
            let mut c = qemu(ctx)?;
            // `-cpu host`: the guest sees the CPU fugu passes through.
            c.args(["-m", MEMORY, "-cpu", "host", "-append", g.cmdline()])
                .arg("-kernel")
                .arg(&kernel)
                .arg("-serial")
                .arg(format!("file:{}", serial.display()));
            c
        };
        match g {
            Guest::Minimal => {
                std::fs::copy(&disk_src, &disk)?;
                if fugu_side {
                    c.arg("--disk").arg(&disk);
                } else {
                    c.arg("-drive")
                        .arg(format!("file={},format=raw,if=virtio", disk.display()));
                }
            }
            Guest::Debian => {
                c.arg(if fugu_side { "--initrd" } else { "-initrd" })
                    .arg(&initrd);
            }
        }
        let who = if fugu_side { "fugu" } else { "QEMU" };
        time_to_marker(&mut c, &serial, g.marker(), BOOT_LIMIT, who)
    };
    let (mut f, mut p) = (Vec::new(), Vec::new());
    // Boots that stalled once and were repeated: TCG's nested SVM now and then leaves a guest
    // without a line of output (seen once for QEMU, 3 December); a second stall fails the row.
    let mut repeated: Vec<String> = Vec::new();
    for _ in 0..ctx.runs {
        for fugu_side in [true, false] {
            let who = if fugu_side { "fugu" } else { "QEMU" };
            let mut t = boot_once(fugu_side)?;
            if t.is_none() {
                repeated.push(format!(
                    "{who} (its last line: '{}')",
                    last_line(&serial_of(fugu_side))
                ));
                t = boot_once(fugu_side)?;
            }
            match t {
                Some(t) if fugu_side => f.push(t),
                Some(t) => p.push(t),
                None => {
                    return Err(Failed(format!(
                        "{who} did not reach '{}' twice in a row (last line: '{}')",
                        g.marker(),
                        last_line(&serial_of(fugu_side))
                    )));
                }
            }
        }
    }
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: format!(
            "wall time from process start to '{}', {}, same kernel, {}command line ({}) and \
             {MEMORY}, 1 vCPU; QEMU with -cpu host; each VMM's last serial log: {}",
            g.marker(),
            match g {
                Guest::Minimal => "the minimal linux-amd64 bzImage, root on virtio-blk",
                Guest::Debian => "Debian's stock amd64 kernel with the debian-amd64 initramfs",
            },
            match g {
                Guest::Minimal => "disk, ",
                Guest::Debian => "initramfs, ",
            },
            g.cmdline(),
            ctx.keep
                .join(format!("{}.{{fugu,qemu}}.serial.log", g.image()))
                .display()
        ) + &if repeated.is_empty() {
            String::new()
        } else {
            format!(
                "; boots that stalled and were repeated: {}",
                repeated.join(", ")
            )
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_inner_samples_come_back_and_an_inner_failure_says_so() {
        let doc = json!({"workloads": [
            {"name": "other", "status": "measured", "fugu": {"samples": [9.0]}},
            {"name": "svm-tcg-boot-linux", "status": "measured",
             "fugu": {"median": 2.0, "samples": [2.0, 2.5]},
             "peer": {"median": 3.0, "samples": [3.0, 3.5]}, "note": "to init"},
            {"name": "svm-tcg-boot-debian", "status": "failed", "reason": "QEMU did not reach it"},
        ]})
        .to_string();
        let m = read_back(&doc, "svm-tcg-boot-linux").ok().unwrap();
        assert_eq!(
            (m.fugu, m.peer, m.note.as_str()),
            (vec![2.0, 2.5], Some(vec![3.0, 3.5]), "to init")
        );
        match read_back(&doc, "svm-tcg-boot-debian") {
            Err(Failed(w)) => assert!(w.contains("failed: QEMU did not reach it"), "{w}"),
            _ => panic!("an inner failure is a failure"),
        }
        assert!(matches!(read_back(&doc, "absent"), Err(Failed(_))));
        assert!(matches!(read_back("not json", "x"), Err(Failed(_))));
    }

    #[test]
    fn both_vmms_boot_the_same_command_line_to_init() {
        for g in [Guest::Minimal, Guest::Debian] {
            assert!(g.cmdline().starts_with("console=ttyS0 "));
            assert!(g.marker().contains("init"));
        }
        assert!(Guest::Debian.cmdline().contains("noxsave"));
    }
}
