//! The firmware-free and firmware boots: hello32 direct, SeaBIOS from a virtio disk, iPXE over
//! the network.

use super::super::*;

pub(super) fn hello32(ctx: &Ctx) -> Bench {
    let built = guests::build_all()?;
    let (guest, kernel) = built
        .iter()
        .find(|(g, _)| g.name == "hello32")
        .ok_or_else(|| Failed("hello32 is not among the tiny guests".into()))?;
    let serial = ctx.work.join("serial.log");
    let check = |what: &str| -> std::result::Result<(), NoNumbers> {
        let log = std::fs::read_to_string(&serial).unwrap_or_default();
        if log.contains(guest.marker) {
            Ok(())
        } else {
            Err(Failed(format!(
                "{what}: the serial log lacks '{}'",
                guest.marker
            )))
        }
    };
    let limit = Duration::from_secs(120);
    let mut q = qemu(ctx)?;
    q.arg("-kernel")
        .arg(kernel)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let _ = std::fs::remove_file(&serial);
        let mut c = fugu_run(ctx, kernel, &serial.to_string_lossy());
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let (t, s) = timed(&mut c, limit, "fugu run hello32")?;
        expect_status(s, guest.success_status, "fugu run hello32")?;
        check("fugu")?;
        f.push(t);
        let _ = std::fs::remove_file(&serial);
        let (t, s) = timed(&mut q, limit, "qemu hello32")?;
        expect_status(s, 33, "qemu hello32")?;
        check("QEMU")?;
        p.push(t);
    }
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: "wall time, process start to exit; QEMU boots it through SeaBIOS (its -kernel Multiboot path), fugu directly; both 128 MiB, QEMU with -net none".into(),
    })
}

/// How long fugu may take to reach the MBR before the row says it cannot yet (QEMU takes
/// ~10 s here).
const MBR_LIMIT_S: u32 = 40;

pub(super) fn seabios_mbr(ctx: &Ctx) -> Bench {
    if !has_bios(ctx) {
        return Err(Unavailable(
            "fugu cannot boot firmware yet: `fugu run` has no --bios option".into(),
        ));
    }
    util::ensure_debs(&["seabios"], "SeaBIOS for the firmware boot")?;
    let disk = ctx.work.join("mbr.img");
    let mut img = kernels::mbr(MBR_MARKER);
    img.resize(1 << 20, 0);
    std::fs::write(&disk, &img)?;
    let serial = ctx.work.join("mbr-serial.log");
    let reached = || std::fs::read_to_string(&serial).is_ok_and(|s| s.contains(MBR_MARKER));
    let limit = Duration::from_secs(MBR_LIMIT_S as u64 + 30);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let _ = std::fs::remove_file(&serial);
        let mut c = Command::new(&ctx.fugu);
        c.args(["run", "--bios", "--boot", "disk", "--memory", MEM])
            .arg("--disk")
            .arg(format!("{},ro", disk.display()))
            .arg("--serial")
            .arg(&serial)
            .args(["--boot-timeout", &MBR_LIMIT_S.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (t, s) = timed(&mut c, limit, "fugu run --bios")?;
        if s.code() != Some(33) || !reached() {
            if f.is_empty() {
                // The first attempt decides whether the feature works here at all.
                return Err(Unavailable(format!(
                    "`fugu run --bios --boot disk` did not boot the MBR here within {MBR_LIMIT_S} s ({s}{}); firmware boot is another developer's work in progress",
                    if reached() { ", marker printed" } else { ", no marker" }
                )));
            }
            return Err(Failed(format!(
                "fugu run --bios ended with {s} in a later run"
            )));
        }
        f.push(t);
        let _ = std::fs::remove_file(&serial);
        let mut q = qemu(ctx)?;
        q.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,readonly=on",
                disk.display()
            ))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-serial"])
            .arg(format!("file:{}", serial.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (t, s) = timed(&mut q, limit, "qemu SeaBIOS MBR")?;
        expect_status(s, 33, "qemu SeaBIOS MBR")?;
        if !reached() {
            return Err(Failed("QEMU: no MBR marker on the serial port".into()));
        }
        p.push(t);
    }
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: "wall time: Debian SeaBIOS → the bench's 1-sector MBR on a virtio-blk disk → marker on COM1 → debug exit; both 128 MiB, QEMU with -net none".into(),
    })
}

const MBR_MARKER: &str = "fugu-bench: mbr booted\n";

/// The network boot: SeaBIOS runs iPXE (Debian's ipxe-qemu ROM for virtio-net), which gets a
/// lease from dnsmasq on a tap in a private namespace, fetches the repo's nbp-i386 program over
/// TFTP and runs it to its protected-mode marker. Wall time from process start to the marker.
pub(super) fn ipxe(ctx: &Ctx) -> Bench {
    if !has_bios(ctx) {
        return Err(Unavailable(
            "fugu cannot boot firmware yet: `fugu run` has no --bios option".into(),
        ));
    }
    if !util::is_root() {
        return Err(Unavailable(
            "needs root: the network boot runs on a tap in a private network namespace".into(),
        ));
    }
    let mut debs = guests::FIRMWARE_DEBS.to_vec();
    debs.push("iproute2");
    util::ensure_debs(&debs, "the network boot (SeaBIOS, iPXE, dnsmasq)")?;
    let (program, bin) = guests::build_boot_programs()?
        .into_iter()
        .find(|(p, _)| p.name == "nbp-i386")
        .ok_or_else(|| Failed("no nbp-i386 boot program in xtask/src/guests.rs".into()))?;
    let served = ctx.work.join("tftp").join("nbp-i386.bin");
    std::fs::create_dir_all(ctx.work.join("tftp"))?;
    std::fs::copy(&bin, &served)?;
    let net = netcheck::NetSetup {
        ns: format!("fugu-bench-{}", std::process::id()),
        tap: "fgbn0".into(),
        mac: [0x52, 0x54, 0x00, 0xe2, 0x4d, 0x10],
        dhcp: Some(netcheck::DHCP_GUEST.into()),
        tftp_boot: Some(served),
        answer_frames: false,
    };
    netcheck::setup(&net).map_err(Failed)?;
    let result = netcheck::start_dnsmasq(&net, &ctx.work, &ctx.work.join("dnsmasq.log"))
        .map_err(Failed)
        .and_then(|mut dnsmasq| {
            let r = ipxe_runs(ctx, &net, program.marker);
            let _ = dnsmasq.kill();
            let _ = dnsmasq.wait();
            r
        });
    netcheck::teardown(&net);
    result
}

fn ipxe_runs(ctx: &Ctx, net: &netcheck::NetSetup, marker: &str) -> Bench {
    let serial = ctx.work.join("ipxe-serial.log");
    let nic = format!("tap={},mac={}", net.tap, net.mac_text());
    let (mut f, mut p) = (Vec::new(), Vec::new());
    let mut peer_note = String::new();
    for _ in 0..ctx.runs {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.ns])
            .arg(&ctx.fugu)
            .args(["run", "--bios", "--boot", "net", "--memory", MEM])
            .args(["--net", &nic, "--boot-timeout", "300", "--serial"])
            .arg(&serial);
        match time_to_marker(&mut c, &serial, marker, IPXE_LIMIT, "fugu (iPXE)")? {
            Some(t) => f.push(t),
            None => {
                return Err(Failed(format!(
                    "fugu did not reach '{marker}' within {} s; its console ended: {}",
                    IPXE_LIMIT.as_secs(),
                    util::tail(&std::fs::read_to_string(&serial).unwrap_or_default(), 3)
                )))
            }
        }
        if !peer_note.is_empty() {
            continue;
        }
        // The QEMU peer command, run inside the namespace.
        let peer = qemu(ctx)?;
        let mut q = Command::new("ip");
        q.args(["netns", "exec", &net.ns])
            .arg(peer.get_program())
            .args(peer.get_args())
            .args(["-boot", "n", "-netdev"])
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                net.tap
            ))
            // QEMU's own ROM for virtio-net-pci (efi-virtio.rom from the same ipxe-qemu
            // package: the same iPXE build); given pxe-virtio.rom as romfile, QEMU 7.2's
            // SeaBIOS does not run it at all.
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={}", net.mac_text()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        match time_to_marker(&mut q, &serial, marker, IPXE_LIMIT, "QEMU (iPXE)")? {
            Some(t) => p.push(t),
            None => {
                let log = std::fs::read_to_string(&serial).unwrap_or_default();
                let last = log.lines().rev().find(|l| !l.trim().is_empty());
                peer_note = format!(
                    "; QEMU never reached the marker here (its last console line: '{}'), so there is no ratio",
                    last.unwrap_or("").trim()
                );
            }
        }
    }
    Ok(Measured {
        fugu: f,
        peer: if peer_note.is_empty() { Some(p) } else { None },
        note: format!(
            "wall time: SeaBIOS → iPXE (virtio-net ROM) → DHCP + TFTP from dnsmasq on a tap → nbp-i386 → '{marker}' on COM1; both {MEM}{peer_note}"
        ),
    })
}

const IPXE_LIMIT: Duration = Duration::from_secs(300);
