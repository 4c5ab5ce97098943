//! virtio-net round trips: the netbench32 guest sends full-size frames through a tap in a
//! private network namespace and waits for each one's answer from the host side (an echo
//! responder on the tap); fugu's virtio-net against QEMU's (`vhost=off`), same tap, guest and
//! responder.

use super::super::*;
use fugu_common::proc::Proc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The rounds netbench32.S plays after its first answer (NETBENCH_ROUNDS there).
const ROUNDS: f64 = 20000.0;
/// Ethernet bytes per frame, each way (FRAMELEN there).
const FRAME: f64 = 1514.0;
const START: &str = "fugu-guest: netbench running";
const LIMIT: Duration = Duration::from_secs(300);

/// Run `cmd` to the guest's done marker: rounds per second between its two markers.
fn rounds_per_sec(
    cmd: &mut Command,
    serial: &Path,
    done: &str,
    what: &str,
) -> std::result::Result<f64, NoNumbers> {
    let _ = std::fs::remove_file(serial);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut vm = Proc::spawn(cmd, false).map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
    let began = Instant::now();
    let mut start = None;
    loop {
        let log = std::fs::read_to_string(serial).unwrap_or_default();
        if start.is_none() && log.contains(START) {
            start = Some(Instant::now());
        }
        if let (Some(s), true) = (start, log.contains(done)) {
            let secs = s.elapsed().as_secs_f64();
            vm.kill();
            return Ok(ROUNDS / secs.max(1e-9));
        }
        let ended = vm.try_wait()?;
        if ended.is_some() || began.elapsed() > LIMIT {
            let log = std::fs::read_to_string(serial).unwrap_or_default();
            return Err(Failed(format!(
                "{what}: {} before the guest's done marker; its console ended: {}",
                match ended {
                    Some(s) => format!("ended ({s})"),
                    None => format!("still running after {} s", LIMIT.as_secs()),
                },
                util::tail(&log, 3)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(super) fn rr(ctx: &Ctx) -> Bench {
    if !util::is_root() {
        return Err(Unavailable(
            "needs root: a tap in a private network namespace".into(),
        ));
    }
    let built = guests::build_all()?;
    let (guest, kernel) = built
        .iter()
        .find(|(g, _)| g.name == "netbench32")
        .ok_or_else(|| Failed("netbench32 is not among the tiny guests".into()))?;
    let net = netcheck::NetSetup {
        ns: format!("fugu-bnet-{}", std::process::id()),
        tap: "fgbt0".into(),
        mac: [0x52, 0x54, 0x00, 0xe2, 0x4d, 0x20],
        dhcp: None,
        tftp_boot: None,
        answer_frames: true,
    };
    netcheck::setup(&net).map_err(Failed)?;
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let (ns, tap, stop) = (net.ns.clone(), net.tap.clone(), stop.clone());
        std::thread::spawn(move || fugu_common::frame::echo(&ns, &tap, &stop))
    };
    let result = runs(ctx, &net, kernel, guest.marker);
    stop.store(true, Ordering::SeqCst);
    let answered = echo.join();
    netcheck::teardown(&net);
    let (f, p, peer_err) = result?;
    match answered {
        Ok(Ok(n)) if n as f64 >= ROUNDS => {}
        Ok(Ok(n)) => return Err(Failed(format!("the host side answered only {n} frames"))),
        Ok(Err(e)) => return Err(Failed(format!("the echo responder failed: {e}"))),
        Err(_) => return Err(Failed("the echo responder panicked".into())),
    }
    let mb = |v: &[f64]| {
        let mut x = v.to_vec();
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).map_or(0.0, |r| r * 2.0 * FRAME / 1e6)
    };
    let peer = match &peer_err {
        Some(e) => format!("no peer: {e}"),
        None => format!("QEMU {:.1} MB/s", mb(&p)),
    };
    Ok(Measured {
        fugu: f.clone(),
        peer: peer_err.is_none().then_some(p.clone()),
        note: format!(
            "netbench32 (direct boot, both): {:.0} rounds of a {FRAME}-byte frame guest → tap → echo on the tap's host side → guest, in a private network namespace, counted between the guest's two markers; legacy virtio-net, polled, no offloads, QEMU with vhost=off; higher is better; both directions together: fugu {:.1} MB/s, {peer}",
            ROUNDS,
            mb(&f)
        ),
    })
}

type Sides = (Vec<f64>, Vec<f64>, Option<String>);

fn runs(
    ctx: &Ctx,
    net: &netcheck::NetSetup,
    kernel: &Path,
    done: &str,
) -> std::result::Result<Sides, NoNumbers> {
    let serial = ctx.work.join("netbench-serial.log");
    let nic = format!("tap={},mac={}", net.tap, net.mac_text());
    let (mut f, mut p, mut peer_err) = (Vec::new(), Vec::new(), None);
    for _ in 0..ctx.runs {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.ns])
            .arg(&ctx.fugu)
            .args(["run", "--memory", MEM, "--kernel"])
            .arg(kernel)
            .args(["--net", &nic, "--serial"])
            .arg(&serial);
        f.push(rounds_per_sec(&mut c, &serial, done, "fugu")?);
        let peer = match qemu(ctx) {
            Ok(q) => q,
            Err(Failed(e)) | Err(Unavailable(e)) => {
                peer_err = Some(e);
                continue;
            }
        };
        let mut q = Command::new("ip");
        q.args(["netns", "exec", &net.ns])
            .arg(peer.get_program())
            .args(peer.get_args())
            .arg("-kernel")
            .arg(kernel)
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
                net.tap
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={}", net.mac_text()))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-serial"])
            .arg(format!("file:{}", serial.display()));
        p.push(rounds_per_sec(&mut q, &serial, done, "QEMU")?);
    }
    let _ = std::fs::remove_file(&serial);
    Ok((f, p, peer_err))
}
