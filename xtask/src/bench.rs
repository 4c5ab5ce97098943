//! `cargo xtask bench [--filter NAME] [--runs N] [--fugu PATH]`: fugu's performance side by
//! side with a peer measured in the same invocation (QEMU, pread, a bare KVM loop, curl,
//! plain cargo), as ratios. A markdown table on stdout, JSON in target/bench/. Benchmarks
//! only report; nothing here asserts a timing. See docs/bench.md.

mod kernels;
mod report;
mod serve;

use crate::build;
use crate::guests;
use crate::netcheck;
use crate::targets::Target;
use crate::util::{self, step, Error, Result};
use report::{Goal, Outcome, Row};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "usage: cargo xtask bench [--filter NAME[,NAME]] [--runs N] [--fugu PATH] [--list]";

/// Every workload, in table order: (name, what it measures).
const WORKLOADS: &[(&str, &str)] = &[
    (
        "boot-hello32",
        "tiny Multiboot guest (hello32) from process start to its debug exit",
    ),
    ("boot-seabios-mbr", "SeaBIOS → virtio-blk MBR → marker"),
    ("boot-ipxe", "iPXE → DHCP/TFTP NBP → marker"),
    (
        "boot-linux",
        "the minimal Linux image to its last marker reachable here",
    ),
    (
        "startup",
        "VMM process start to the first KVM_RUN (the VMM's own clock)",
    ),
    (
        "memory-overhead",
        "RSS minus guest RAM touched, 1 vCPU / 128 MiB, spinning guest",
    ),
    (
        "virtio-blk-4k",
        "4 KiB reads through the virtio-blk device model vs pread",
    ),
    (
        "pio-exit",
        "port-I/O exit round trip: fugu's vCPU loop vs a bare KVM loop",
    ),
    (
        "image-pull",
        "`fugu image pull` of a 64 MiB file from loopback HTTP vs curl",
    ),
    (
        "xtask-build-noop",
        "no-op `cargo xtask build` vs the plain cargo command it runs",
    ),
];

const MEM: &str = "128M";
const MEM_BYTES: u64 = 128 << 20;
/// Port writes per pio-exit run.
const EXITS: u32 = 50_000;
/// 4 KiB requests per virtio-blk run.
const BLK_REQUESTS: u64 = 200_000;
const BLOB_BYTES: usize = 64 << 20;
const SPIN_MARKER: &str = "fugu-bench: spinning\n";

struct Opts {
    filters: Vec<String>,
    runs: usize,
    fugu: Option<PathBuf>,
    list: bool,
}

fn parse_args(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        filters: Vec::new(),
        runs: 5,
        fugu: None,
        list: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Error::usage(format!("bench: {name} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--filter" => o
                .filters
                .extend(value("--filter")?.split(',').map(str::to_string)),
            "--runs" => {
                let v = value("--runs")?;
                o.runs = match v.parse() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        return Err(Error::usage(format!(
                            "bench: --runs wants a number of at least 1, not '{v}'"
                        )))
                    }
                }
            }
            "--fugu" => o.fugu = Some(PathBuf::from(value("--fugu")?)),
            "--list" => o.list = true,
            "-h" | "--help" => return Err(Error::usage(USAGE)),
            other => {
                return Err(Error::usage(format!(
                    "bench: unknown option '{other}'\n{USAGE}"
                )))
            }
        }
    }
    for f in &o.filters {
        if !WORKLOADS.iter().any(|(n, _)| n.contains(f.as_str())) {
            let names: Vec<&str> = WORKLOADS.iter().map(|(n, _)| *n).collect();
            return Err(Error::usage(format!(
                "bench: no workload matches '{f}'; workloads: {}",
                names.join(", ")
            )));
        }
    }
    Ok(o)
}

fn selected(o: &Opts, name: &str) -> bool {
    o.filters.is_empty() || o.filters.iter().any(|f| name.contains(f.as_str()))
}

/// What every workload needs.
struct Ctx {
    runs: usize,
    fugu: PathBuf,
    /// Scratch files: target/bench/work.
    work: PathBuf,
    /// Why QEMU cannot be the peer, if it cannot.
    qemu: std::result::Result<(), String>,
}

pub fn main(args: &[String]) -> Result {
    let o = parse_args(args)?;
    if o.list {
        for (n, what) in WORKLOADS {
            println!("{n:<18} {what}");
        }
        return Ok(());
    }
    let out = util::root().join("target").join("bench");
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    let fugu = match &o.fugu {
        Some(p) => p
            .canonicalize()
            .map_err(|e| Error::fail(format!("--fugu {}: {e}", p.display())))?,
        None => build::build_fugu(Target::host(), true)?,
    };
    let needs_qemu = [
        "boot-hello32",
        "boot-seabios-mbr",
        "boot-ipxe",
        "boot-linux",
        "startup",
        "memory-overhead",
    ]
    .iter()
    .any(|n| selected(&o, n));
    let qemu = if needs_qemu {
        util::ensure_debs(&["qemu-system-x86"], "the QEMU peer")
            .map_err(|e| e.msg)
            .and_then(|()| {
                if Path::new("/dev/kvm").exists() {
                    Ok(())
                } else {
                    Err("/dev/kvm is missing".into())
                }
            })
    } else {
        Ok(())
    };
    let ctx = Ctx {
        runs: o.runs,
        fugu,
        work,
        qemu,
    };
    let machine = machine();
    let mut rows = Vec::new();
    for (name, _) in WORKLOADS {
        if !selected(&o, name) {
            continue;
        }
        step(format!("bench {name} ({} runs)", ctx.runs));
        let row = workload(&ctx, name);
        if let Outcome::Failed(why) = &row.outcome {
            step(format!("bench {name} failed: {why}"));
        }
        rows.push(row);
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut machine = machine;
    machine["loadavg_at_end"] = loadavg().into();
    let json = report::to_json(&machine, ctx.runs, &rows);
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::fail(e.to_string()))?;
    let file = out.join(format!("bench-{stamp}.json"));
    std::fs::write(&file, &text)?;
    std::fs::write(out.join("latest.json"), &text)?;
    println!(
        "fugu bench: {} runs each; {} CPUs ({}); {}; {}; load average {} at start, {} at end\n",
        ctx.runs,
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kvm"].as_str().unwrap_or("?"),
        machine["qemu"].as_str().unwrap_or("QEMU: ?"),
        machine["loadavg_at_start"].as_str().unwrap_or("?"),
        machine["loadavg_at_end"].as_str().unwrap_or("?"),
    );
    print!("{}", report::table(&rows));
    step(format!("JSON: {}", file.display()));
    Ok(())
}

fn workload(ctx: &Ctx, name: &'static str) -> Row {
    let qemu_goal = |goal| (goal, "QEMU");
    let (goal, peer_name, unit) = match name {
        "boot-hello32" | "boot-seabios-mbr" | "boot-ipxe" | "boot-linux" => {
            let (g, p) = qemu_goal(Some(Goal::AtMost(0.5)));
            (g, p, "s")
        }
        "startup" => (None, "QEMU", "ms"),
        "memory-overhead" => (Some(Goal::AtMost(0.2)), "QEMU", "MiB"),
        "virtio-blk-4k" => (Some(Goal::AtLeast(0.9)), "pread", "req/s"),
        "pio-exit" => (Some(Goal::AtMost(1.1)), "bare KVM loop", "µs/exit"),
        "image-pull" => (None, "curl", "s"),
        "xtask-build-noop" => (None, "plain cargo", "s"),
        _ => (None, "—", ""),
    };
    let result = match name {
        "boot-hello32" => boot_hello32(ctx),
        "boot-seabios-mbr" => seabios_mbr(ctx),
        "boot-ipxe" => boot_ipxe(ctx),
        "boot-linux" => boot_linux(ctx),
        "startup" => startup(ctx),
        "memory-overhead" => memory(ctx),
        "virtio-blk-4k" => blk(ctx),
        "pio-exit" => exits(ctx),
        "image-pull" => pull(ctx),
        "xtask-build-noop" => xtask_build(ctx),
        _ => Err(Failed("unknown workload".into())),
    };
    let (outcome, note) = match result {
        Ok(m) => (
            Outcome::Measured {
                fugu: m.fugu,
                peer: m.peer,
            },
            m.note,
        ),
        Err(Unavailable(w)) => (Outcome::NotAvailable(w), String::new()),
        Err(Failed(w)) => (Outcome::Failed(w), String::new()),
    };
    Row {
        name,
        unit,
        peer_name,
        goal,
        outcome,
        note,
    }
}

/// The series of one workload.
struct Measured {
    fugu: Vec<f64>,
    peer: Option<Vec<f64>>,
    note: String,
}

/// Why a workload gave no numbers.
enum NoNumbers {
    Unavailable(String),
    Failed(String),
}
use NoNumbers::{Failed, Unavailable};

impl From<Error> for NoNumbers {
    fn from(e: Error) -> Self {
        Failed(e.msg)
    }
}
impl From<std::io::Error> for NoNumbers {
    fn from(e: std::io::Error) -> Self {
        Failed(e.to_string())
    }
}

type Bench = std::result::Result<Measured, NoNumbers>;

/// Whether `fugu run` has the firmware options (`--bios`, `--boot`).
fn has_bios(ctx: &Ctx) -> bool {
    let help = Command::new(&ctx.fugu)
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    help.contains("--bios") && help.contains("--boot ")
}

// ---------------------------------------------------------------- running processes

/// Wait for `child` at most `limit`; kills it and fails when it takes longer.
fn wait_for(
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> std::result::Result<ExitStatus, NoNumbers> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failed(format!(
                "{what} did not finish within {} s",
                limit.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Run `cmd` to completion (stdin null, output discarded unless captured by the caller's
/// settings); returns the wall time and its exit status.
fn timed(
    cmd: &mut Command,
    limit: Duration,
    what: &str,
) -> std::result::Result<(f64, ExitStatus), NoNumbers> {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
    let status = wait_for(&mut child, limit, what)?;
    Ok((start.elapsed().as_secs_f64(), status))
}

fn expect_status(status: ExitStatus, want: i32, what: &str) -> std::result::Result<(), NoNumbers> {
    if status.code() == Some(want) {
        Ok(())
    } else {
        Err(Failed(format!(
            "{what} ended with {status}, expected exit status {want}"
        )))
    }
}

/// A VM that keeps running until killed (dropped).
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Start `cmd` with stderr read line by line.
    fn start(cmd: &mut Command, what: &str) -> std::result::Result<Running, NoNumbers> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
        let (tx, rx) = mpsc::channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Running { child, lines: rx })
    }

    /// The first stderr line for which `f` gives a value, within `limit`.
    fn find_line<T>(
        &mut self,
        limit: Duration,
        what: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> std::result::Result<T, NoNumbers> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(v) = f(&l) {
                        return Ok(v);
                    }
                    seen.push(l);
                }
                Err(_) => {
                    return Err(Failed(format!(
                        "{what}: the expected line did not come within {} s; it printed: {}",
                        limit.as_secs(),
                        util::tail(&seen.join("\n"), 5)
                    )))
                }
            }
        }
    }

    /// Wait until `file` contains `marker`.
    fn wait_file(
        &mut self,
        file: &Path,
        marker: &str,
        limit: Duration,
        what: &str,
    ) -> std::result::Result<(), NoNumbers> {
        let deadline = Instant::now() + limit;
        loop {
            if std::fs::read_to_string(file).is_ok_and(|s| s.contains(marker)) {
                return Ok(());
            }
            if let Some(s) = self.child.try_wait()? {
                return Err(Failed(format!(
                    "{what} ended ({s}) before printing its marker"
                )));
            }
            if Instant::now() > deadline {
                return Err(Failed(format!(
                    "{what} did not print its marker within {} s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn qemu(ctx: &Ctx) -> std::result::Result<Command, NoNumbers> {
    ctx.qemu
        .clone()
        .map_err(|e| Failed(format!("QEMU peer unavailable: {e}")))?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "kvm",
        "-m",
        MEM,
        "-nographic",
        "-net",
        "none",
        "-monitor",
        "none",
    ]);
    Ok(c)
}

fn fugu_run(ctx: &Ctx, kernel: &Path, serial: &str) -> Command {
    let mut c = Command::new(&ctx.fugu);
    c.arg("run")
        .arg("--kernel")
        .arg(kernel)
        .args(["--serial", serial, "--memory", MEM]);
    c
}

fn write_kernel(ctx: &Ctx, name: &str, bytes: &[u8]) -> std::result::Result<PathBuf, NoNumbers> {
    let p = ctx.work.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}

// ---------------------------------------------------------------- workloads

fn boot_hello32(ctx: &Ctx) -> Bench {
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

fn seabios_mbr(ctx: &Ctx) -> Bench {
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
fn boot_ipxe(ctx: &Ctx) -> Bench {
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

/// The last line of the Linux image's kernel level reachable on every host: root mounted from
/// the virtio disk (userspace does not run on hosts whose KVM emulates guest kernel code).
const LINUX_MARKER: &str = "VFS: Mounted root (ext4 filesystem)";
const LINUX_LIMIT: Duration = Duration::from_secs(600);
/// No serial output for this long: the guest (or its VMM) stopped.
const STALL: Duration = Duration::from_secs(90);
/// fugu's host-adaptation switches, given to both VMMs so they boot the same command line.
const LINUX_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1 \
    noxsave nofsgsbase nopcid noinvpcid nopku \
    clearcpuid=308,141,158,151,306,534,311,312,590,297,580 reboot=k";

/// Start `cmd`, wait until `serial` contains `marker` (or the process ends / `limit` passes),
/// kill it; the seconds to the marker, or None when it never appeared.
fn time_to_marker(
    cmd: &mut Command,
    serial: &Path,
    marker: &str,
    limit: Duration,
    what: &str,
) -> std::result::Result<Option<f64>, NoNumbers> {
    let _ = std::fs::remove_file(serial);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
    // A VMM that stops without exiting (QEMU pauses on a KVM internal error) shows as a
    // serial log that no longer grows.
    let (mut last_len, mut last_change) = (0usize, Instant::now());
    let result = loop {
        let log = std::fs::read_to_string(serial).unwrap_or_default();
        if log.contains(marker) {
            break Some(start.elapsed().as_secs_f64());
        }
        if log.len() != last_len {
            (last_len, last_change) = (log.len(), Instant::now());
        }
        if start.elapsed() > limit
            || last_change.elapsed() > STALL
            || matches!(child.try_wait(), Ok(Some(_)))
        {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(result)
}

fn boot_linux(ctx: &Ctx) -> Bench {
    let dir = util::root().join("target/images/out/linux-amd64");
    let (kernel, disk_src) = (dir.join("bzImage"), dir.join("disk.ext4"));
    if !kernel.is_file() || !disk_src.is_file() {
        return Err(Unavailable(format!(
            "the linux-amd64 image is not built: run cargo xtask images ({} missing)",
            dir.display()
        )));
    }
    let disk = ctx.work.join("linux-disk.ext4");
    let serial = ctx.work.join("linux-serial.log");
    let (mut f, mut p) = (Vec::new(), Vec::new());
    let mut peer_note = String::new();
    for _ in 0..ctx.runs {
        std::fs::copy(&disk_src, &disk)?;
        let mut c = Command::new(&ctx.fugu);
        c.args(["run", "--memory", "256M", "--cmdline", LINUX_CMDLINE])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--disk")
            .arg(&disk)
            .arg("--serial")
            .arg(&serial);
        match time_to_marker(&mut c, &serial, LINUX_MARKER, LINUX_LIMIT, "fugu (Linux)")? {
            Some(t) => f.push(t),
            None => {
                return Err(Failed(format!(
                    "fugu did not reach '{LINUX_MARKER}' within {} s",
                    LINUX_LIMIT.as_secs()
                )))
            }
        }
        if !peer_note.is_empty() {
            continue;
        }
        std::fs::copy(&disk_src, &disk)?;
        let mut q = qemu(ctx)?;
        q.args(["-m", "256M", "-append", LINUX_CMDLINE])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        match time_to_marker(&mut q, &serial, LINUX_MARKER, LINUX_LIMIT, "QEMU (Linux)")? {
            Some(t) => p.push(t),
            None => {
                let last = std::fs::read_to_string(&serial)
                    .ok()
                    .and_then(|s| s.lines().last().map(str::to_string))
                    .unwrap_or_default();
                peer_note = format!(
                    "; QEMU never reached the marker here (it stops where the host's KVM cannot \
                     emulate an instruction of the unpatched kernel that fugu completes; its last \
                     line: '{}'), so there is no ratio",
                    last.trim()
                );
            }
        }
    }
    Ok(Measured {
        fugu: f,
        peer: if peer_note.is_empty() { Some(p) } else { None },
        note: format!(
            "wall time from process start to the kernel's '{LINUX_MARKER}' (root from virtio-blk), same bzImage, disk and command line, 256 MiB{peer_note}"
        ),
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

fn startup(ctx: &Ctx) -> Bench {
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

fn memory(ctx: &Ctx) -> Bench {
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

/// Deterministic, incompressible-looking bytes (xorshift64).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

fn ensure_file(path: &Path, len: usize, seed: u64) -> std::result::Result<(), NoNumbers> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len as u64) {
        return Ok(());
    }
    std::fs::write(path, pattern(len, seed))?;
    Ok(())
}

/// `key=value` pairs of a bench command's output line.
pub fn kv(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn blk(ctx: &Ctx) -> Bench {
    let img = ctx.work.join("blk.img");
    ensure_file(&img, BLOB_BYTES, 7)?;
    // Both sides read from the page cache: warm it first.
    std::fs::read(&img)?;
    // fugu's default queue on this host (rust-vmm's virtio-queue on x86_64), and for the note
    // the in-house ring (`--backend portable`, the one i686 hosts use).
    let once = |portable: bool| -> std::result::Result<(f64, f64), NoNumbers> {
        let mut c = Command::new(&ctx.fugu);
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
            "{BLK_REQUESTS} scattered 4 KiB reads of a 64 MiB image in the page cache per run: split queue in guest memory → device model (batches of 64) vs pread of the same offsets, in one `fugu bench-blk` process; higher is better; default queue: {}; with the in-house ring (`--backend portable`, as on i686) the ratio was {}× (median)",
            if cfg!(target_arch = "x86_64") { "rust-vmm virtio-queue" } else { "the in-house ring" },
            report::num(inhouse)
        ),
    })
}

fn exits(ctx: &Ctx) -> Bench {
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
        let mut c = Command::new(&ctx.fugu);
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

/// The index.json of the pull benchmark: one image whose "kernel" is `blob`.
pub fn pull_index(size: u64, sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "format": "fugu-image-index",
        "format_version": 1,
        "created": "2026-01-01T00:00:00Z",
        "images": [{
            "name": "bench-blob",
            "arch": "i386",
            "kind": "multiboot",
            "description": "64 MiB of pseudo-random bytes for cargo xtask bench",
            "revision": 1,
            "created": "2026-01-01T00:00:00Z",
            "min_fugu_version": "0.1.0",
            "cmdline": "",
            "files": [{
                "role": "kernel",
                "path": "bench-blob/blob",
                "size": size,
                "sha256": sha256,
                "compression": "none",
            }],
            "provenance": {"recipe": "xtask/src/bench.rs", "recipe_sha256": "", "packages": []},
        }],
    })
}

fn pull(ctx: &Ctx) -> Bench {
    use sha2::{Digest, Sha256};
    let help = Command::new(&ctx.fugu).args(["image", "--help"]).output();
    if !help.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pull")) {
        return Err(Unavailable(
            "`fugu image pull` does not exist in this build".into(),
        ));
    }
    util::ensure_debs(&["curl"], "the curl peer")?;
    let srv = ctx.work.join("pull-srv");
    std::fs::create_dir_all(srv.join("bench-blob"))?;
    let blob = srv.join("bench-blob").join("blob");
    ensure_file(&blob, BLOB_BYTES, 11)?;
    let data = std::fs::read(&blob)?;
    let sum: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let index = pull_index(data.len() as u64, &sum);
    std::fs::write(
        srv.join("index.json"),
        serde_json::to_string_pretty(&index).map_err(|e| Failed(e.to_string()))?,
    )?;
    drop(data);
    let server = serve::Server::start(&srv)?;
    let cache = ctx.work.join("pull-cache");
    let curl_out = ctx.work.join("pull-curl.out");
    let limit = Duration::from_secs(300);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        let _ = std::fs::remove_dir_all(&cache);
        let mut c = Command::new(&ctx.fugu);
        c.arg("image")
            .arg("--index")
            .arg(server.url("index.json"))
            .arg("--cache")
            .arg(&cache)
            .args(["pull", "bench-blob"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (t, s) = timed(&mut c, limit, "fugu image pull")?;
        expect_status(s, 0, "fugu image pull")?;
        let got = std::fs::metadata(cache.join("bench-blob").join("blob")).map(|m| m.len());
        if got.ok() != Some(BLOB_BYTES as u64) {
            return Err(Failed(format!(
                "fugu image pull left no {} MiB blob in {}",
                BLOB_BYTES >> 20,
                cache.display()
            )));
        }
        f.push(t);
        let _ = std::fs::remove_file(&curl_out);
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail", "-o"])
            .arg(&curl_out)
            .arg(server.url("bench-blob/blob"));
        let (t, s) = timed(&mut c, limit, "curl")?;
        expect_status(s, 0, "curl")?;
        p.push(t);
    }
    let _ = std::fs::remove_dir_all(&cache);
    let _ = std::fs::remove_file(&curl_out);
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: "64 MiB from a loopback HTTP server in the xtask; fugu also fetches the index, checks SHA-256 and renames into its cache, curl only writes the file".into(),
    })
}

fn xtask_build(ctx: &Ctx) -> Bench {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = util::root();
    let xtask = || {
        let mut c = Command::new(&cargo);
        c.current_dir(&root)
            .args(["xtask", "build"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let plain = || {
        let mut c = Command::new(&cargo);
        c.current_dir(&root)
            .args([
                "build",
                "--package",
                "fugu",
                "--bin",
                "fugu",
                "--target-dir",
            ])
            .arg(root.join("target"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let limit = Duration::from_secs(1800);
    // What a real build would replace: a run that changed them was not a no-op (the tree is
    // shared with people editing it) and is done again.
    let bins = [
        root.join("target/debug/xtask"),
        root.join("target/debug/fugu"),
    ];
    let stamp = || -> Vec<Option<SystemTime>> {
        bins.iter()
            .map(|b| std::fs::metadata(b).and_then(|m| m.modified()).ok())
            .collect()
    };
    let discarded = std::cell::Cell::new(0u32);
    let noop = |make: &dyn Fn() -> Command, what: &str| -> std::result::Result<f64, NoNumbers> {
        for _ in 0..4 {
            let before = stamp();
            let (t, s) = timed(&mut make(), limit, what)?;
            expect_status(s, 0, what)?;
            if stamp() == before {
                return Ok(t);
            }
            discarded.set(discarded.get() + 1);
        }
        Err(Failed(format!(
            "{what} rebuilt something on every try (is the tree being edited?)"
        )))
    };
    // The first round may really build; it is not counted.
    noop(&xtask, "cargo xtask build")?;
    noop(&plain, "cargo build")?;
    discarded.set(0);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        f.push(noop(&xtask, "cargo xtask build")?);
        p.push(noop(&plain, "cargo build")?);
    }
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: format!("nothing to rebuild (a first, uncounted round builds; {} later runs rebuilt after edits to the tree and were repeated); peer: `cargo build --package fugu --bin fugu --target-dir target`, the command the xtask runs", discarded.get()),
    })
}

// ---------------------------------------------------------------- the machine

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let l = s.lines().find(|l| l.starts_with(key))?;
    Some(l.split_once(':').map_or(l, |(_, v)| v).trim().to_string())
}

/// The 1/5/15-minute load averages: other work on the machine makes every figure noisier.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_default();
    let flags = first_line_with("/proc/cpuinfo", "flags").unwrap_or_default();
    let virt = if flags.split_whitespace().any(|f| f == "vmx") {
        "vmx"
    } else if flags.split_whitespace().any(|f| f == "svm") {
        "svm"
    } else {
        "no vmx/svm"
    };
    let mut kvm_mods: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|m| m.starts_with("kvm"))
                .collect()
        })
        .unwrap_or_default();
    kvm_mods.sort();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        });
    serde_json::json!({
        "nproc": nproc,
        "cpu": cpu,
        "kvm": format!("{virt}, KVM modules: {}", if kvm_mods.is_empty() { "none listed".to_string() } else { kvm_mods.join(" ") }),
        "kernel": kernel.trim(),
        "qemu": qemu,
        "loadavg_at_start": loadavg(),
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_args(&a(&["--runs", "3", "--filter", "boot,pio"])).unwrap();
        assert_eq!(o.runs, 3);
        assert_eq!(o.filters, ["boot", "pio"]);
        assert!(selected(&o, "boot-hello32") && selected(&o, "pio-exit"));
        assert!(!selected(&o, "startup"));
        assert_eq!(parse_args(&[]).unwrap().runs, 5);
        assert!(parse_args(&a(&["--runs", "0"])).is_err());
        assert!(parse_args(&a(&["--runs"])).is_err());
        assert!(parse_args(&a(&["--filter", "nothing-like-this"])).is_err());
        assert!(parse_args(&a(&["--bogus"])).is_err());
    }

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

    #[test]
    fn bench_output_and_index() {
        let l = "requests=200000 device_per_sec=812345.5 pread_per_sec=900000.0";
        assert_eq!(kv(l, "device_per_sec"), Some(812345.5));
        assert_eq!(kv(l, "requests"), Some(200000.0));
        assert_eq!(kv(l, "per_sec"), None);
        assert_eq!(kv("exits=0 loop_ns=5", "exits"), Some(0.0));
        let i = pull_index(5, &"a".repeat(64));
        assert_eq!(i["images"][0]["files"][0]["size"], 5);
        // fugu's own schema accepts it.
        let parsed: crate::images::index::Index = serde_json::from_value(i).unwrap();
        parsed.validate().unwrap();
        assert_eq!(pattern(20, 3), pattern(20, 3));
        assert_ne!(pattern(20, 3), pattern(20, 4));
        assert_eq!(pattern(13, 1).len(), 13);
    }
}
