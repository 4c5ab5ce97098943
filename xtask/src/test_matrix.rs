//! `cargo xtask test-matrix`: boot every cell of the VM matrix (ci/matrix.def) that this host
//! can run, SKIP the others with the reason, and report a table, TAP and JUnit.
//!
//! A cell's fate: the host lacks one of its virtualization needs -> SKIP; its runner waits for a
//! fugu feature ([pending]) -> SKIP; the host lacks a tool or file -> SKIP; otherwise it runs
//! and PASSes only if fugu exited with the expected status and the serial log has the marker.
//! A cell that did not run is never PASS. Runners live in `runner_spec` below: when a feature
//! lands, implement its runner there and delete its [pending] line.

use crate::junit::{self, Case, Status, Suite};
use crate::kvm_reload;
use crate::matrix_def::{self, Cell, Def, Plan};
use crate::netcheck::{self, NetSetup};
use crate::probe::{self, Probe};
use crate::targets::{Target, ALL};
use crate::util::{self, step, Error, Result};
use crate::{build, guests};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo xtask test-matrix [options]
       cargo xtask test-matrix merge JUNIT-FILE...

  --probe          print what this host can run and exit
  --list           list the selected cells, what each needs and what would happen here
  --filter F       select cells: axis=v1,v2 (host paging build guest boot check), class=NAME,
                   or a glob/substring of the cell id (host/paging/build/guest/boot/check);
                   repeat to narrow
  --jobs N         cells booted in parallel (default: the number of CPUs)
  --timeout S      override every cell's timeout (seconds)
  --tap            TAP on stdout (the table goes to stderr)
  --junit FILE     write JUnit XML
  --no-build       use the fugu builds and guests already in target/ instead of building
  --kvm-reload     (root, VMX/SVM hosts) run the tdp and shadow cells by reloading
                   kvm_intel/kvm_amd with ept/npt on and off, then restore the setting

Serial and VMM logs of each cell: target/test-matrix/<cell>.serial.log, <cell>.vmm.log";

/// Runners this xtask implements; every other runner in ci/matrix.def must be [pending].
pub const RUNNERS: &[&str] = &[
    "tiny-boot",
    "tiny-virtio-disk",
    "tiny-virtio-net",
    "bios-disk",
    "ipxe-net",
    "linux",
];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on, Ctrl-C / SIGTERM stop the run cleanly (children killed, settings restored).
fn catch_interrupts() {
    let h = on_signal as extern "C" fn(i32) as usize;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, h);
        signal(SIGTERM, h);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail { reason: String, tail: String },
    Skip { reason: String },
}

impl Outcome {
    fn fail(reason: impl Into<String>) -> Outcome {
        Outcome::Fail {
            reason: reason.into(),
            tail: String::new(),
        }
    }
    fn status(&self) -> Status {
        match self {
            Outcome::Pass => Status::Pass,
            Outcome::Fail { .. } => Status::Fail,
            Outcome::Skip { .. } => Status::Skip,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CellResult {
    pub cell: Cell,
    pub outcome: Outcome,
    pub secs: f64,
}

/// How one cell is booted and judged.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub serial_log: PathBuf,
    pub vmm_log: PathBuf,
    pub timeout: Duration,
    pub expect_status: i32,
    /// Lines the serial log must contain (the guest's success marker first).
    pub expect_markers: Vec<String>,
    /// Files written fresh before the boot (e.g. a disk image).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Bytes the guest must have left in a file after it ran: (path, offset, bytes).
    pub file_checks: Vec<(PathBuf, usize, Vec<u8>)>,
    /// Run fugu in a network namespace with a tap whose host side answers the guest's frame.
    pub net: Option<NetSetup>,
    /// For kernel-level Linux checks: another (status, fugu message) that is accepted only when
    /// it came after the kernel started init ("Run /sbin/init" in the serial log), i.e. from
    /// the host's known user-mode limit, beyond the kernel level. The markers still decide.
    pub accept_after_init: Option<(i32, &'static str)>,
}

/// The serial line after which a failure belongs to userspace, not to the kernel level.
const INIT_STARTED: &str = "Run /sbin/init as init process";

/// The tiny guest (images/guests/) each runner boots, per guest architecture.
const TINY_GUESTS: &[(&str, &str, &str)] = &[
    ("tiny-boot", "i386", "hello32"),
    ("tiny-boot", "amd64", "hello64"),
    ("tiny-virtio-disk", "i386", "virtio32"),
    ("tiny-virtio-disk", "amd64", "virtio64"),
    ("tiny-virtio-net", "i386", "virtnet32"),
    ("tiny-virtio-net", "amd64", "virtnet64"),
];

/// The tiny virtio guests' disk: 64 sectors, sector n filled with n, sector 1 starting with
/// the marker the guest reads; the guest writes "fugu-guest-wrote" at the start of sector 2.
fn tiny_disk() -> Vec<u8> {
    let mut d: Vec<u8> = (0..64u8).flat_map(|s| [s; 512]).collect();
    d[512..528].copy_from_slice(b"fugu-test-sector");
    d
}

/// What a cell will do on this host.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Run(String),
    Skip(String),
    Fail(String),
}

/// Decide a cell's fate from the definition and the probe (no side effects).
pub fn decide(plan: &Plan, probe: &Probe, implemented: &dyn Fn(&str) -> bool) -> Decision {
    let is_virt = |n: &&String| probe::VIRT_CAPABILITIES.contains(&n.as_str());
    for n in plan.needs.iter().filter(is_virt) {
        if let Some(why) = probe.missing(n) {
            return Decision::Skip(why);
        }
    }
    let Some(runner) = &plan.runner else {
        return Decision::Fail("ci/matrix.def gives this cell no runner".into());
    };
    if !implemented(runner) {
        return match &plan.pending {
            Some(why) => Decision::Skip(why.clone()),
            None => Decision::Fail(format!(
                "runner '{runner}' is not implemented and ci/matrix.def [pending] gives no reason"
            )),
        };
    }
    for n in plan.needs.iter().filter(|n| !is_virt(n)) {
        if let Some(why) = probe.missing(n) {
            return Decision::Skip(why);
        }
    }
    Decision::Run(runner.clone())
}

/// What the runners boot with: fugu builds and guest images, or why they are missing.
#[derive(Debug, Clone, Default)]
pub struct Artifacts {
    pub fugu: HashMap<String, std::result::Result<PathBuf, String>>,
    pub guests: HashMap<String, std::result::Result<PathBuf, String>>,
    pub log_dir: PathBuf,
    /// Where `cargo xtask images` puts the Linux images (target/images/out). The matrix builds
    /// the ones its runnable cells need (`cargo xtask images --only linux-<guest>`) unless
    /// `--no-build`; a missing one FAILs its cells.
    pub images: PathBuf,
    /// Why an image the cells need could not be built (image name -> reason).
    pub image_errors: HashMap<String, String>,
}

/// Build a runnable cell's boot; an Err is that cell's FAIL reason (e.g. a missing image).
pub fn runner_spec(
    runner: &str,
    cell: &Cell,
    plan: &Plan,
    arts: &Artifacts,
    timeout: Option<u64>,
) -> std::result::Result<BootSpec, String> {
    let fugu = match arts.fugu.get(cell.get("build")) {
        Some(Ok(p)) => p.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(format!("no fugu build for {}", cell.get("build"))),
    };
    let stem = cell.file_stem();
    let serial_log = arts.log_dir.join(format!("{stem}.serial.log"));
    let vmm_log = arts.log_dir.join(format!("{stem}.vmm.log"));
    let timeout = Duration::from_secs(timeout.unwrap_or(plan.timeout_s));
    if runner == "bios-disk" {
        return bios_disk_spec(cell, fugu, serial_log, vmm_log, timeout, arts);
    }
    if runner == "ipxe-net" {
        return ipxe_net_spec(cell, fugu, serial_log, vmm_log, timeout, arts);
    }
    if runner == "linux" {
        return linux_spec(cell, plan, fugu, serial_log, vmm_log, timeout, arts);
    }
    let tiny = TINY_GUESTS
        .iter()
        .find(|(r, arch, _)| *r == runner && *arch == cell.get("guest"));
    let Some((_, _, name)) = tiny else {
        return Err(format!(
            "runner '{runner}' is not implemented for a {} guest",
            cell.get("guest")
        ));
    };
    let g = guests::GUESTS
        .iter()
        .find(|g| g.name == *name)
        .ok_or_else(|| format!("no tiny guest named {name} in xtask/src/guests.rs"))?;
    let elf = match arts.guests.get(g.name) {
        Some(Ok(p)) => p.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(format!("missing image: guest {} was not built", g.name)),
    };
    if !elf.is_file() {
        return Err(format!("missing image: {}", elf.display()));
    }
    let mut args: Vec<OsString> = vec!["run".into(), "--kernel".into(), elf.into()];
    args.extend(
        [
            "--memory",
            "64M",
            "--cmdline",
            &format!("fugu-matrix cell={}", cell.id()),
            "--serial",
        ]
        .map(OsString::from),
    );
    args.push(serial_log.clone().into());
    let mut spec = BootSpec {
        program: fugu,
        args,
        serial_log,
        vmm_log,
        timeout,
        expect_status: g.success_status,
        expect_markers: vec![g.marker.to_string()],
        files: vec![],
        file_checks: vec![],
        net: None,
        accept_after_init: None,
    };
    match runner {
        "tiny-boot" => Ok(spec),
        "tiny-virtio-disk" => {
            let disk = arts.log_dir.join(format!("{stem}.disk.img"));
            spec.args.push("--disk".into());
            spec.args.push(disk.clone().into());
            spec.expect_markers
                .insert(0, "fugu-guest: read sector 1 ok".into());
            spec.files.push((disk.clone(), tiny_disk()));
            spec.file_checks
                .push((disk, 1024, b"fugu-guest-wrote".to_vec()));
            Ok(spec)
        }
        "tiny-virtio-net" => {
            let net = NetSetup {
                ns: format!("fugu-mx-{}-{stem}", std::process::id()),
                tap: "fgmx0".into(),
                mac: [0x52, 0x54, 0x00, 0xe2, 0x4d, 0x01],
                dhcp: None,
                tftp_boot: None,
                answer_frames: true,
            };
            spec.args.push("--net".into());
            spec.args
                .push(format!("tap={},mac={}", net.tap, net.mac_text()).into());
            spec.expect_markers
                .insert(0, format!("fugu-guest: virtio-net mac {}", net.mac_text()));
            spec.net = Some(net);
            Ok(spec)
        }
        other => Err(format!("runner '{other}' is not implemented")),
    }
}

/// The bios-disk runner: SeaBIOS boots the cell's MBR (images/guests/mbr.S) from a virtio
/// disk; the MBR reads its stage with INT 13h, enters protected or long mode and runs the
/// virtio-blk check of virtio32.S on its boot disk from there.
fn bios_disk_spec(
    cell: &Cell,
    fugu: PathBuf,
    serial_log: PathBuf,
    vmm_log: PathBuf,
    timeout: Duration,
    arts: &Artifacts,
) -> std::result::Result<BootSpec, String> {
    let (p, mut disk) = boot_program("mbr", cell, arts)?;
    disk.resize(disk.len().max(1 << 20), 0);
    let img = arts.log_dir.join(format!("{}.disk.img", cell.file_stem()));
    let args = firmware_args("disk", ("--disk", img.clone().into()), timeout, &serial_log);
    Ok(BootSpec {
        program: fugu,
        args,
        serial_log,
        vmm_log,
        timeout: timeout + Duration::from_secs(10),
        expect_status: p.success_status,
        expect_markers: vec![
            "fugu-mbr: stage read with INT 13h".into(),
            p.marker.to_string(),
            "fugu-guest: read sector 1 ok".into(),
            "fugu-guest: wrote a sector beyond the stage, flushed, read it back".into(),
            "fugu-guest: virtio-blk ok".into(),
        ],
        // mbr.S's virtio check writes sector 32 (beyond its stage) through virtio-blk.
        file_checks: vec![(img.clone(), 32 * 512, b"fugu-guest-wrote".to_vec())],
        files: vec![(img, disk)],
        net: None,
        accept_after_init: None,
    })
}

/// `fugu run --bios --boot <boot>` with the device it boots from, SeaBIOS's own give-up time
/// set to the cell's timeout, and the console into `serial_log`.
fn firmware_args(
    boot: &str,
    device: (&str, OsString),
    timeout: Duration,
    serial_log: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["run", "--bios", "--boot", boot, "--memory", "64M"]
        .map(OsString::from)
        .to_vec();
    args.push("--boot-timeout".into());
    args.push(timeout.as_secs().to_string().into());
    args.push(device.0.into());
    args.push(device.1);
    args.push("--serial".into());
    args.push(serial_log.into());
    args
}

/// The cell's boot program `<kind>-<guest>` (images/guests/mbr.S) and its bytes.
fn boot_program(
    kind: &str,
    cell: &Cell,
    arts: &Artifacts,
) -> std::result::Result<(&'static guests::BootProgram, Vec<u8>), String> {
    let name = format!("{kind}-{}", cell.get("guest"));
    let p = guests::BOOT_PROGRAMS
        .iter()
        .find(|p| p.name == name && p.arch == cell.get("guest"))
        .ok_or_else(|| format!("no boot program named {name} in xtask/src/guests.rs"))?;
    let bin = match arts.guests.get(p.name) {
        Some(Ok(b)) => b.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => {
            return Err(format!(
                "missing image: boot program {} was not built",
                p.name
            ))
        }
    };
    let bytes =
        std::fs::read(&bin).map_err(|e| format!("missing image: {}: {e}", bin.display()))?;
    Ok((p, bytes))
}

/// The ipxe-net runner: SeaBIOS runs iPXE (Debian's ipxe-qemu) as the virtio-net option ROM;
/// iPXE gets a fixed DHCP lease from dnsmasq on a tap in a private namespace, fetches the
/// cell's network boot program over TFTP from the same dnsmasq, and runs it; the program
/// enters protected or long mode and runs virtnet32.S's check there: its frame must reach
/// the responder on the tap (from the cell's MAC) and the answer come back.
fn ipxe_net_spec(
    cell: &Cell,
    fugu: PathBuf,
    serial_log: PathBuf,
    vmm_log: PathBuf,
    timeout: Duration,
    arts: &Artifacts,
) -> std::result::Result<BootSpec, String> {
    let (p, nbp) = boot_program("nbp", cell, arts)?;
    let stem = cell.file_stem();
    let served = arts
        .log_dir
        .join(format!("{stem}.tftp"))
        .join(format!("{}.bin", p.name));
    let net = NetSetup {
        ns: format!("fugu-mx-{}-{stem}", std::process::id()),
        tap: "fgmx0".into(),
        mac: [0x52, 0x54, 0x00, 0xe2, 0x4d, 0x03],
        dhcp: Some(netcheck::DHCP_GUEST.into()),
        tftp_boot: Some(served.clone()),
        answer_frames: true,
    };
    let nic = format!("tap={},mac={}", net.tap, net.mac_text());
    let args = firmware_args("net", ("--net", nic.into()), timeout, &serial_log);
    Ok(BootSpec {
        program: fugu,
        args,
        serial_log,
        vmm_log,
        timeout: timeout + Duration::from_secs(10),
        expect_status: p.success_status,
        expect_markers: vec![
            format!("net0: {}/", netcheck::DHCP_GUEST),
            format!("{}.bin... ok", p.name),
            "fugu-nbp: started by PXE".into(),
            p.marker.to_string(),
            "fugu-guest: frame from the host received, virtio-net ok".into(),
        ],
        files: vec![(served, nbp)],
        file_checks: vec![],
        net: Some(net),
        accept_after_init: None,
    })
}

/// The Linux kernel command line of the linux-direct cells (fugu adds its host-adaptation
/// switches itself); `panic=-1` reboots at once, which ends fugu with status 0.
const LINUX_CMDLINE: &str =
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 root=/dev/vda rw rootfstype=ext4 panic=-1";

/// The linux runner: fugu loads the linux-<guest> bzImage (no initrd) with its root on a private
/// copy of disk.ext4 on virtio-blk. At the kernel level (kvm_pvm hosts, whose KVM cannot run
/// 64-bit guest user-mode system calls) a cell passes on the kernel's own log lines: the root
/// was mounted from vda (virtio-disk), or `ip=dhcp` got dnsmasq's lease over virtio-net on a
/// tap in a private namespace (virtio-net). init then dies and the kernel reboots.
fn linux_spec(
    cell: &Cell,
    plan: &Plan,
    fugu: PathBuf,
    serial_log: PathBuf,
    vmm_log: PathBuf,
    timeout: Duration,
    arts: &Artifacts,
) -> std::result::Result<BootSpec, String> {
    let guest = cell.get("guest");
    let userspace = match plan.level.as_deref() {
        Some("kernel") => false,
        Some("userspace") => true,
        Some(level) => {
            return Err(format!(
                "ci/matrix.def gives an unknown Linux check level '{level}' (kernel, userspace)"
            ))
        }
        None => return Err("ci/matrix.def [levels] gives this Linux cell no level".into()),
    };
    let name = format!("linux-{guest}");
    if let Some(e) = arts.image_errors.get(&name) {
        return Err(format!("missing image: {name} could not be built: {e}"));
    }
    let dir = arts.images.join(&name);
    let kernel = dir.join("bzImage");
    let disk_src = dir.join("disk.ext4");
    for p in [&kernel, &disk_src] {
        if !p.is_file() {
            return Err(format!(
                "missing image: run cargo xtask images ({} not found)",
                p.display()
            ));
        }
    }
    let disk = std::fs::read(&disk_src).map_err(|e| {
        format!(
            "missing image: run cargo xtask images ({}: {e})",
            disk_src.display()
        )
    })?;
    let stem = cell.file_stem();
    let img = arts.log_dir.join(format!("{stem}.disk.ext4"));
    let mut cmdline = LINUX_CMDLINE.to_string();
    let mut net = None;
    let dhcp_net = |mac_last: u8| NetSetup {
        ns: format!("fugu-mx-{}-{stem}", std::process::id()),
        tap: "fgmx0".into(),
        mac: [0x52, 0x54, 0x00, 0xe2, 0x4d, mac_last],
        dhcp: Some(netcheck::DHCP_GUEST.into()),
        tftp_boot: None,
        answer_frames: false,
    };
    let expect_markers = if userspace {
        // The disk's /sbin/init is the image's check (images/check/init): it verifies the
        // marker file and the network (lease + ping of the DHCP server) whatever the cell's
        // check, prints its verdict and exits through 0xf4 with 0x10 (status 33) on a pass.
        cmdline.push_str(" ip=dhcp");
        net = Some(dhcp_net(0x04));
        let mut m = vec!["Run /sbin/init".to_string()];
        m.push(match cell.get("check") {
            "virtio-disk" => "fugu-check: disk: marker ok".to_string(),
            "virtio-net" => format!("fugu-check: network: lease {}/", netcheck::DHCP_GUEST),
            other => return Err(format!("runner 'linux' has no '{other}' check")),
        });
        m.push("fugu-check: PASS".to_string());
        m
    } else {
        match cell.get("check") {
            "virtio-disk" => vec![
                "EXT4-fs (vda): mounted filesystem".to_string(),
                "VFS: Mounted root (ext4 filesystem)".to_string(),
            ],
            "virtio-net" => {
                cmdline.push_str(" ip=dhcp");
                net = Some(dhcp_net(0x02));
                vec![
                    "IP-Config: Complete".to_string(),
                    format!("ipaddr={},", netcheck::DHCP_GUEST),
                ]
            }
            other => return Err(format!("runner 'linux' has no '{other}' check")),
        }
    };
    let mut args: Vec<OsString> = vec!["run".into(), "--kernel".into(), kernel.into()];
    args.push("--cmdline".into());
    args.push(cmdline.into());
    args.push("--disk".into());
    args.push(img.clone().into());
    args.push("--memory".into());
    args.push("256M".into());
    if let Some(n) = &net {
        args.push("--net".into());
        args.push(format!("tap={},mac={}", n.tap, n.mac_text()).into());
    }
    args.push("--serial".into());
    args.push(serial_log.clone().into());
    Ok(BootSpec {
        program: fugu,
        args,
        serial_log,
        vmm_log,
        timeout,
        // The check's debug-exit pass (0x10) at the userspace level; at the kernel level init
        // dies, the kernel panics and reboots (panic=-1), which ends fugu with 0.
        expect_status: if userspace { 33 } else { 0 },
        expect_markers,
        files: vec![(img, disk)],
        file_checks: vec![],
        net,
        // On kvm_pvm the i686 fugu gets SIGBUS from KVM_RUN as the guest enters user mode
        // (fugu reports it and exits 6); the kernel level was reached before that.
        accept_after_init: (!userspace).then_some((6, "signalled SIGBUS during KVM_RUN")),
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

fn tail_of(path: &Path, n: usize) -> String {
    std::fs::read(path)
        .map(|b| util::tail(&String::from_utf8_lossy(&b), n))
        .unwrap_or_default()
}

/// Boot one cell and judge it. Never returns Pass unless the command ran to the expected end.
pub fn execute(spec: &BootSpec, interrupted: &AtomicBool) -> Outcome {
    let Some(net) = &spec.net else {
        return boot(spec, &[], interrupted);
    };
    if !spec.program.is_file() {
        return Outcome::fail(format!("missing fugu binary {}", spec.program.display()));
    }
    if let Err(e) = netcheck::setup(net) {
        return Outcome::fail(format!("cannot set up the tap in a network namespace: {e}"));
    }
    // dnsmasq on the host side (DHCP, and TFTP for network boots); the guest's log shows the
    // lease it got.
    let mut dnsmasq = None;
    if net.dhcp.is_some() {
        let dir = spec.vmm_log.parent().unwrap_or(Path::new("."));
        let log = spec.vmm_log.with_extension("dnsmasq.log");
        match netcheck::start_dnsmasq(net, dir, &log) {
            Ok(child) => dnsmasq = Some(child),
            Err(e) => {
                netcheck::teardown(net);
                return Outcome::fail(format!("cannot start DHCP on the tap: {e}"));
            }
        }
    }
    let stop_dnsmasq = |d: Option<std::process::Child>| {
        if let Some(mut d) = d {
            let _ = d.kill();
            let _ = d.wait();
        }
    };
    if net.dhcp.is_some() && !net.answer_frames {
        let o = boot(spec, &["ip", "netns", "exec", &net.ns], interrupted);
        stop_dnsmasq(dnsmasq);
        netcheck::teardown(net);
        return o;
    }
    // The frame responder: the guest's frame must come from its MAC and get an answer.
    let stop = AtomicBool::new(false);
    let (outcome, seen) = std::thread::scope(|s| {
        let host = s.spawn(|| netcheck::respond(net, &stop));
        let o = boot(spec, &["ip", "netns", "exec", &net.ns], interrupted);
        stop.store(true, Ordering::SeqCst);
        let seen = host
            .join()
            .unwrap_or_else(|_| Err("the host-side responder panicked".into()));
        (o, seen)
    });
    stop_dnsmasq(dnsmasq);
    netcheck::teardown(net);
    match (outcome, seen) {
        (Outcome::Pass, Ok(mac)) if mac == net.mac => Outcome::Pass,
        (Outcome::Pass, Ok(mac)) => Outcome::fail(format!(
            "the host side got the guest's frame from {mac:02x?}, expected {}",
            net.mac_text()
        )),
        (Outcome::Pass, Err(e)) => Outcome::fail(e),
        (o, _) => o,
    }
}

/// Boot (through `wrapper`, e.g. `ip netns exec NS`, when given) and judge the result.
fn boot(spec: &BootSpec, wrapper: &[&str], interrupted: &AtomicBool) -> Outcome {
    let with_tail = |reason: String| {
        let mut tail = String::new();
        let serial = tail_of(&spec.serial_log, 12);
        if !serial.is_empty() {
            let _ = writeln!(
                tail,
                "serial log ({}):\n{serial}",
                spec.serial_log.display()
            );
        }
        let vmm = tail_of(&spec.vmm_log, 6);
        if !vmm.is_empty() {
            let _ = writeln!(tail, "fugu output ({}):\n{vmm}", spec.vmm_log.display());
        }
        Outcome::Fail { reason, tail }
    };
    if !spec.program.is_file() {
        return Outcome::fail(format!("missing fugu binary {}", spec.program.display()));
    }
    for p in [&spec.serial_log, &spec.vmm_log] {
        let _ = std::fs::remove_file(p);
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
    }
    for (p, data) in &spec.files {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Err(e) = std::fs::write(p, data) {
            return Outcome::fail(format!("cannot write {}: {e}", p.display()));
        }
    }
    let out = match std::fs::File::create(&spec.vmm_log) {
        Ok(f) => f,
        Err(e) => return Outcome::fail(format!("cannot create {}: {e}", spec.vmm_log.display())),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("cannot start {}: {e}", spec.program.display())),
    };
    let start = Instant::now();
    let killed = |child: &mut std::process::Child| {
        // The whole process group: a wrapper's children go too.
        // SAFETY: kill(2) on the group this function created.
        unsafe { kill(-(child.id() as i32), SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => {
                killed(&mut child);
                return Outcome::fail(format!("waiting for fugu: {e}"));
            }
        }
        if interrupted.load(Ordering::SeqCst) {
            killed(&mut child);
            return with_tail("interrupted".into());
        }
        if start.elapsed() >= spec.timeout {
            killed(&mut child);
            return with_tail(format!(
                "timed out after {} s: the guest hung or never reached its exit",
                spec.timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(sig) = status.signal() {
        return with_tail(format!(
            "fugu crashed: killed by signal {sig} ({})",
            signal_name(sig)
        ));
    }
    let code = status.code().unwrap_or(-1);
    let after_init = spec.accept_after_init.is_some_and(|(c, msg)| {
        code == c
            && tail_of(&spec.serial_log, usize::MAX).contains(INIT_STARTED)
            && tail_of(&spec.vmm_log, usize::MAX).contains(msg)
    });
    if code != spec.expect_status && !after_init {
        let meaning = match code {
            0 => " (guest powered off without reporting)",
            2 => " (fugu rejected its command line)",
            4 => " (fugu could not start the VM)",
            6 => " (the guest crashed or fugu met an exit it cannot handle)",
            130 => " (fugu was interrupted)",
            c if c & 1 == 1 => " (the guest reported a failure through port 0xf4)",
            _ => "",
        };
        return with_tail(format!(
            "fugu exited with status {code}{meaning}, expected {}",
            spec.expect_status
        ));
    }
    let serial = std::fs::read(&spec.serial_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    for m in &spec.expect_markers {
        if !serial.contains(m.as_str()) {
            return with_tail(format!(
                "exit status {code} as expected, but the serial log lacks '{m}'"
            ));
        }
    }
    for (p, off, want) in &spec.file_checks {
        let got = std::fs::read(p).unwrap_or_default();
        if got.get(*off..off + want.len()) != Some(&want[..]) {
            return with_tail(format!(
                "the guest did not leave '{}' at byte {off} of {}",
                String::from_utf8_lossy(want),
                p.display()
            ));
        }
    }
    Outcome::Pass
}

/// A finished cell, as the workers report it.
pub enum Event {
    Started(usize),
    Finished(usize, Outcome, f64),
    /// Nothing happened for a while (lets a progress display keep its clock going).
    Tick,
}

/// Boot `jobs` with `njobs` workers. Each job is a cell's boot or its FAIL reason; the results
/// come back in job order. `on_event` sees progress (on the calling thread).
pub fn run_jobs(
    jobs: Vec<std::result::Result<BootSpec, String>>,
    njobs: usize,
    interrupted: &AtomicBool,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<(Outcome, f64)> {
    let n = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let mut results: Vec<Option<(Outcome, f64)>> = vec![None; n];
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|s| {
        for _ in 0..njobs.max(1).min(n.max(1)) {
            let tx = tx.clone();
            let queue = &queue;
            s.spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                let Some((i, job)) = next else { break };
                let _ = tx.send(Event::Started(i));
                let t = Instant::now();
                let outcome = if interrupted.load(Ordering::SeqCst) {
                    Outcome::fail("interrupted before it ran")
                } else {
                    match job {
                        Ok(spec) => execute(&spec, interrupted),
                        Err(reason) => Outcome::fail(reason),
                    }
                };
                let _ = tx.send(Event::Finished(i, outcome, t.elapsed().as_secs_f64()));
            });
        }
        drop(tx);
        loop {
            let ev = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(ev) => ev,
                Err(mpsc::RecvTimeoutError::Timeout) => Event::Tick,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            on_event(&ev);
            if let Event::Finished(i, o, secs) = ev {
                results[i] = Some((o, secs));
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| (Outcome::fail("the worker running it died"), 0.0)))
        .collect()
}

struct Options {
    probe: bool,
    list: bool,
    filters: Vec<String>,
    jobs: usize,
    timeout: Option<u64>,
    tap: bool,
    junit: Option<PathBuf>,
    build: bool,
    kvm_reload: bool,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        probe: false,
        list: false,
        filters: vec![],
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        timeout: None,
        tap: false,
        junit: None,
        build: true,
        kvm_reload: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| Error::usage(format!("test-matrix: {name} needs {what}")))
        };
        match name {
            "--probe" => o.probe = true,
            "--list" => o.list = true,
            "--tap" => o.tap = true,
            "--no-build" => o.build = false,
            "--kvm-reload" => o.kvm_reload = true,
            "--filter" => o.filters.push(value("a pattern")?),
            "--junit" => o.junit = Some(PathBuf::from(value("a file")?)),
            "--jobs" | "-j" => {
                o.jobs = value("a number")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::usage("test-matrix: --jobs needs a positive number"))?
            }
            "--timeout" => {
                o.timeout = Some(
                    value("seconds")?
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            Error::usage("test-matrix: --timeout needs a positive number")
                        })?,
                )
            }
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                return Err(Error::usage(format!(
                    "test-matrix: unknown option '{other}'\n\n{USAGE}"
                )))
            }
        }
    }
    Ok(o)
}

fn host_classes(def: &Def, probe: &Probe) -> Vec<String> {
    // A host is of a class when it can run a cell of that class that needs nothing more than
    // the virtualization capabilities.
    def.classes
        .iter()
        .filter(|(_, pat)| {
            def.cells().iter().filter(|c| pat.matches(c)).any(|c| {
                def.plan(c)
                    .needs
                    .iter()
                    .filter(|n| probe::VIRT_CAPABILITIES.contains(&n.as_str()) && *n != "paging32")
                    .all(|n| probe.missing(n).is_none())
            })
        })
        .map(|(n, _)| n.clone())
        .collect()
}

pub fn main(args: &[String]) -> Result {
    if args.first().map(String::as_str) == Some("merge") {
        return merge(&args[1..]);
    }
    let o = parse_options(args)?;
    let def = matrix_def::load().map_err(Error::fail)?;
    for f in &o.filters {
        matrix_def::check_filter(&def, f)
            .map_err(|e| Error::usage(format!("--filter {f}: {e}")))?;
    }
    let cells: Vec<Cell> = def
        .cells()
        .into_iter()
        .filter(|c| {
            o.filters
                .iter()
                .all(|f| matrix_def::filter_matches(&def, f, c))
        })
        .collect();
    let probe = Probe::host();
    if o.probe {
        print!("{}", probe.report(&host_classes(&def, &probe)));
        return Ok(());
    }
    if cells.is_empty() {
        return Err(Error::usage("test-matrix: no cell matches the filters"));
    }
    if o.list {
        print!("{}", list(&def, &cells, &probe));
        return Ok(());
    }
    let started = Instant::now();
    catch_interrupts();
    let results = if o.kvm_reload {
        let (module, param) = kvm_reload::target(&probe.modules, probe.root, Path::new("/sys"))
            .map_err(Error::fail)?;
        let mut sys = kvm_reload::SysModules {
            sys: PathBuf::from("/sys"),
        };
        let mut by_paging: Vec<(String, Vec<CellResult>)> = Vec::new();
        let passes = kvm_reload::with_each_setting(
            &mut sys,
            &kvm_reload::Reload {
                lock: Path::new(kvm_reload::LOCK),
                journal: Path::new(kvm_reload::JOURNAL),
                module,
                param,
            },
            &["Y", "N"],
            &INTERRUPTED,
            |v| {
                let paging = if v == "Y" { "tdp" } else { "shadow" };
                let subset: Vec<Cell> = cells
                    .iter()
                    .filter(|c| c.get("paging") == paging)
                    .cloned()
                    .collect();
                run_cells(&def, &subset, &Probe::host(), &o)
            },
        )
        .map_err(Error::fail)?;
        for (v, r) in passes {
            by_paging.push((v, r?));
        }
        let mut all: Vec<CellResult> = by_paging.into_iter().flat_map(|(_, r)| r).collect();
        // Cells of a paging mode that no pass reached (interrupted) did not run.
        for c in &cells {
            if !all.iter().any(|r| r.cell == *c) {
                all.push(CellResult {
                    cell: c.clone(),
                    outcome: Outcome::fail("interrupted before it ran"),
                    secs: 0.0,
                });
            }
        }
        let order: HashMap<String, usize> =
            cells.iter().enumerate().map(|(i, c)| (c.id(), i)).collect();
        all.sort_by_key(|r| order.get(&r.cell.id()).copied().unwrap_or(usize::MAX));
        all
    } else {
        run_cells(&def, &cells, &probe, &o)?
    };
    let wall = started.elapsed().as_secs_f64();
    report(&def, &results, &probe, &o, wall)
}

/// Decide, build what the runnable cells need, boot them, and collect every cell's result.
fn run_cells(def: &Def, cells: &[Cell], probe: &Probe, o: &Options) -> Result<Vec<CellResult>> {
    let decisions: Vec<(Plan, Decision)> = cells
        .iter()
        .map(|c| {
            let plan = def.plan(c);
            let d = decide(&plan, probe, &|r| RUNNERS.contains(&r));
            (plan, d)
        })
        .collect();
    let runnable: Vec<usize> = decisions
        .iter()
        .enumerate()
        .filter(|(_, (_, d))| matches!(d, Decision::Run(_)))
        .map(|(i, _)| i)
        .collect();
    let mut arts = Artifacts {
        log_dir: util::root().join("target").join("test-matrix"),
        images: util::root().join("target").join("images").join("out"),
        ..Artifacts::default()
    };
    std::fs::create_dir_all(&arts.log_dir)?;
    // Build only what the runnable cells use.
    let mut builds: Vec<Target> = Vec::new();
    let mut want_guests = false;
    let mut want_images: Vec<String> = Vec::new();
    for &i in &runnable {
        let b = cells[i].get("build");
        if let Some(t) = ALL.into_iter().find(|t| t.short() == b) {
            if !builds.contains(&t) {
                builds.push(t);
            }
        }
        if let Decision::Run(r) = &decisions[i].1 {
            want_guests |= r.starts_with("tiny-") || r == "bios-disk" || r == "ipxe-net";
            let image = format!("linux-{}", cells[i].get("guest"));
            if r == "linux" && !want_images.contains(&image) {
                want_images.push(image);
            }
        }
    }
    builds.sort();
    for t in builds {
        let r = if o.build {
            build::build_fugu(t, false)
                .map_err(|e| format!("building fugu for {} failed: {e}", t.short()))
        } else {
            let p = probe::fugu_path(t);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "fugu for {} is not built ({}) and --no-build was given",
                    t.short(),
                    p.display()
                ))
            }
        };
        if let Err(e) = &r {
            step(format!("{e}; its cells will FAIL"));
        }
        arts.fugu.insert(t.short().to_string(), r);
    }
    if o.build && !want_images.is_empty() {
        // The Linux images (a minimal kernel compile the first time, ~5-9 min with make -j2;
        // cached afterwards), through the images command so that the matrix boots exactly
        // what `cargo xtask images` builds.
        let mut args = Vec::new();
        for name in &want_images {
            args.push("--only".to_string());
            args.push(name.clone());
        }
        step(format!(
            "building {} (cargo xtask images)",
            want_images.join(", ")
        ));
        if let Err(e) = crate::images::main(&args) {
            step(format!(
                "building the Linux images failed: {e}; their cells will FAIL"
            ));
            for name in &want_images {
                arts.image_errors.insert(name.clone(), e.to_string());
            }
        }
    }
    if want_guests {
        let built = if o.build {
            guests::build_all()
                .map(|v| v.into_iter().map(|(g, p)| (g.name, p)).collect::<Vec<_>>())
                .map_err(|e| format!("assembling the tiny guests failed: {e}"))
        } else {
            Ok(guests::GUESTS
                .iter()
                .map(|g| (g.name, guests::out_dir().join(format!("{}.elf", g.name))))
                .collect())
        };
        for g in guests::GUESTS {
            let r = match &built {
                Ok(v) => v
                    .iter()
                    .find(|(n, _)| *n == g.name)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| format!("missing image: guest {} was not built", g.name)),
                Err(e) => Err(e.clone()),
            };
            arts.guests.insert(g.name.to_string(), r);
        }
        // The boot programs for the firmware cells (assembled by build_all).
        for p in guests::BOOT_PROGRAMS {
            let bin = guests::out_dir().join(format!("{}.bin", p.name));
            let r = match &built {
                Ok(_) if bin.is_file() => Ok(bin),
                Ok(_) => Err(format!(
                    "missing image: boot program {} was not built",
                    p.name
                )),
                Err(e) => Err(e.clone()),
            };
            arts.guests.insert(p.name.to_string(), r);
        }
    }
    let jobs: Vec<_> = runnable
        .iter()
        .map(|&i| match &decisions[i].1 {
            Decision::Run(r) => runner_spec(r, &cells[i], &decisions[i].0, &arts, o.timeout),
            _ => unreachable!("only runnable cells are jobs"),
        })
        .collect();
    let ids: Vec<String> = runnable.iter().map(|&i| cells[i].id()).collect();
    let total = ids.len();
    if total > 0 {
        step(format!(
            "booting {total} cell{} ({} SKIP here), {} at a time",
            if total == 1 { "" } else { "s" },
            cells.len() - total,
            o.jobs.min(total)
        ));
    }
    let tty = std::io::stderr().is_terminal();
    let mut running: Vec<usize> = Vec::new();
    let (mut done, mut failed) = (0usize, 0usize);
    let run_started = Instant::now();
    let mut on_event = |ev: &Event| {
        let mut e = std::io::stderr().lock();
        match ev {
            Event::Started(i) => running.push(*i),
            Event::Tick => {}
            Event::Finished(i, outcome, secs) => {
                running.retain(|x| x != i);
                done += 1;
                let word = outcome.status().word();
                if matches!(outcome, Outcome::Fail { .. }) {
                    failed += 1;
                }
                if tty {
                    let _ = write!(e, "\r\x1b[K");
                }
                let _ = write!(e, "  [{done:>3}/{total}] {word} {} ({secs:.1} s)", ids[*i]);
                if let Outcome::Fail { reason, .. } = outcome {
                    let _ = write!(e, ": {reason}");
                }
                let _ = writeln!(e);
            }
        }
        if tty && done < total {
            let names: Vec<&str> = running.iter().map(|i| ids[*i].as_str()).collect();
            let width = 30;
            let filled = done * width / total.max(1);
            let mut line = format!(
                "[{}{}] {done}/{total} done, {failed} failed, {:.0} s; running: {}",
                "#".repeat(filled),
                " ".repeat(width - filled),
                run_started.elapsed().as_secs_f64(),
                names.join(", ")
            );
            if line.chars().count() > 150 {
                line = line.chars().take(147).collect::<String>() + "...";
            }
            let _ = write!(e, "\r\x1b[K{line}");
        }
        let _ = e.flush();
    };
    let outcomes = run_jobs(jobs, o.jobs, &INTERRUPTED, &mut on_event);
    if tty && total > 0 {
        eprint!("\r\x1b[K");
    }
    let mut by_index: HashMap<usize, (Outcome, f64)> =
        runnable.iter().copied().zip(outcomes).collect();
    Ok(cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (outcome, secs) = match &decisions[i].1 {
                Decision::Run(_) => by_index
                    .remove(&i)
                    .unwrap_or((Outcome::fail("no result"), 0.0)),
                Decision::Skip(r) => (Outcome::Skip { reason: r.clone() }, 0.0),
                Decision::Fail(r) => (Outcome::fail(r.clone()), 0.0),
            };
            CellResult {
                cell: c.clone(),
                outcome,
                secs,
            }
        })
        .collect())
}

/// `--list`: every selected cell, its needs and runner, and what would happen here.
fn list(def: &Def, cells: &[Cell], probe: &Probe) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<48} {:<13} {:<17} {:<38} here",
        "cell", "class", "runner", "needs"
    );
    for c in cells {
        let plan = def.plan(c);
        let here = match decide(&plan, probe, &|r| RUNNERS.contains(&r)) {
            Decision::Run(_) => "RUN".to_string(),
            Decision::Skip(r) => format!("SKIP: {r}"),
            Decision::Fail(r) => format!("FAIL: {r}"),
        };
        let runner = match (&plan.runner, &plan.level) {
            (Some(r), Some(l)) => format!("{r} ({l})"),
            (Some(r), None) => r.clone(),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<48} {:<13} {:<17} {:<38} {here}",
            c.id(),
            plan.class.as_deref().unwrap_or("-"),
            runner,
            plan.needs.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "\nexcluded combinations ({}):",
        def.excluded_cells().len()
    );
    for (pat, why) in &def.exclude {
        let n = def
            .excluded_cells()
            .iter()
            .filter(|(c, _)| pat.matches(c))
            .count();
        let _ = writeln!(s, "  {:<48} matches {n:>3}: {why}", pat.text());
    }
    s
}

/// The result grid: one row per host/paging/build/guest, one column per boot/check.
pub fn grid(def: &Def, rows_of: &[Cell], short: &dyn Fn(&Cell) -> Option<String>) -> String {
    let mut cols: Vec<(String, String)> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in rows_of {
        let col = (c.get("boot").to_string(), c.get("check").to_string());
        if !cols.contains(&col) {
            cols.push(col);
        }
        let row = c.values[..4].to_vec();
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    let w = cols
        .iter()
        .map(|(b, c)| b.len().max(c.len()))
        .max()
        .unwrap_or(4)
        .max(6);
    let mut s = String::new();
    let _ = write!(s, "{:<27}", "host/paging build  guest");
    for (b, _) in &cols {
        let _ = write!(s, " {b:<w$}");
    }
    let _ = write!(s, "\n{:<27}", "");
    for (_, c) in &cols {
        let _ = write!(s, " {c:<w$}");
    }
    s.push('\n');
    for r in &rows {
        let _ = write!(
            s,
            "{:<13} {:<6} {:<6}",
            format!("{}/{}", r[0], r[1]),
            r[2],
            r[3]
        );
        for (b, c) in &cols {
            let mut values = r.clone();
            values.push(b.clone());
            values.push(c.clone());
            let cell = Cell { values };
            let txt = if def.excluded(&cell).is_some() {
                "-".to_string()
            } else {
                short(&cell).unwrap_or_else(|| "-".into())
            };
            let _ = write!(s, " {txt:<w$}");
        }
        s.push('\n');
    }
    s
}

/// Group (status, reason) -> count, for the summary under the grid.
fn reasons(results: &[(Status, String)]) -> String {
    let mut m: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (st, r) in results {
        if *st != Status::Pass {
            *m.entry((st.word(), r.as_str())).or_default() += 1;
        }
    }
    let mut s = String::new();
    for ((w, r), n) in m {
        let _ = writeln!(s, "  {w} x{n:<3} {r}");
    }
    s
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn tap(results: &[CellResult]) -> String {
    let mut s = format!("TAP version 13\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let id = r.cell.id();
        match &r.outcome {
            Outcome::Pass => {
                let _ = writeln!(s, "ok {} - {id}", i + 1);
            }
            Outcome::Skip { reason } => {
                let _ = writeln!(s, "ok {} - {id} # SKIP {reason}", i + 1);
            }
            Outcome::Fail { reason, tail } => {
                let _ = writeln!(s, "not ok {} - {id}", i + 1);
                let _ = writeln!(s, "  ---\n  message: {reason:?}");
                if !tail.is_empty() {
                    s.push_str("  log: |\n");
                    for l in tail.lines() {
                        let _ = writeln!(s, "    {l}");
                    }
                }
                s.push_str("  ...\n");
            }
        }
    }
    s
}

fn to_case(r: &CellResult) -> Case {
    let (message, detail) = match &r.outcome {
        Outcome::Pass => (String::new(), String::new()),
        Outcome::Skip { reason } => (reason.clone(), String::new()),
        Outcome::Fail { reason, tail } => (reason.clone(), tail.clone()),
    };
    Case {
        id: r.cell.id(),
        status: r.outcome.status(),
        message,
        detail,
        secs: r.secs,
    }
}

fn report(def: &Def, results: &[CellResult], probe: &Probe, o: &Options, wall: f64) -> Result {
    let count = |st: Status| results.iter().filter(|r| r.outcome.status() == st).count();
    let (pass, fail, skip) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
    );
    let by_id: HashMap<String, &CellResult> = results.iter().map(|r| (r.cell.id(), r)).collect();
    let cells: Vec<Cell> = results.iter().map(|r| r.cell.clone()).collect();
    let mut t = String::new();
    t.push_str(&grid(def, &cells, &|c| {
        by_id
            .get(&c.id())
            .map(|r| r.outcome.status().word().to_string())
    }));
    let ran: Vec<&CellResult> = results
        .iter()
        .filter(|r| r.outcome.status() != Status::Skip)
        .collect();
    if !ran.is_empty() {
        t.push_str("\ncells that ran:\n");
        for r in &ran {
            let _ = writeln!(
                t,
                "  {} {:<48} {:>6.1} s",
                r.outcome.status().word(),
                r.cell.id(),
                r.secs
            );
        }
    }
    let rs: Vec<(Status, String)> = results
        .iter()
        .map(|r| {
            let c = to_case(r);
            (c.status, c.message)
        })
        .collect();
    let why = reasons(&rs);
    if !why.is_empty() {
        t.push_str("\nreasons:\n");
        t.push_str(&why);
    }
    for r in results {
        if let Outcome::Fail { reason, tail } = &r.outcome {
            let _ = writeln!(t, "\nFAIL {}: {reason}", r.cell.id());
            for l in tail.lines() {
                let _ = writeln!(t, "    {l}");
            }
        }
    }
    let _ = writeln!(
        t,
        "\n{} cells: {pass} PASS, {fail} FAIL, {skip} SKIP in {wall:.1} s; logs in target/test-matrix/",
        results.len()
    );
    if o.tap {
        eprint!("{t}");
        print!("{}", tap(results));
    } else {
        print!("{t}");
    }
    if let Some(path) = &o.junit {
        let suite = Suite {
            host: hostname(),
            classes: host_classes(def, probe).join(" "),
            cases: results.iter().map(to_case).collect(),
        };
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, junit::write(&suite))
            .map_err(|e| Error::fail(format!("writing {}: {e}", path.display())))?;
        step(format!("JUnit results in {}", path.display()));
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Error {
            msg: "interrupted".into(),
            code: 130,
        });
    }
    if fail > 0 {
        return Err(Error::fail(format!("{fail} matrix cell(s) failed")));
    }
    Ok(())
}

/// `test-matrix merge FILES...`: join JUnit results from several hosts into one table that
/// shows, for every cell of the definition, where it passed or failed, and which no host ran.
pub fn merge(files: &[String]) -> Result {
    if files.is_empty() {
        return Err(Error::usage(
            "test-matrix merge needs JUnit files (from test-matrix --junit)",
        ));
    }
    let def = matrix_def::load().map_err(Error::fail)?;
    let mut suites = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::fail(format!("{f}: {e}")))?;
        let s = junit::parse(&text).map_err(|e| Error::fail(format!("{f}: {e}")))?;
        suites.extend(s);
    }
    let (text, failed) = merge_table(&def, &suites);
    print!("{text}");
    if failed > 0 {
        return Err(Error::fail(format!("{failed} cell(s) failed on some host")));
    }
    Ok(())
}

/// The merged table and the number of cells that failed somewhere.
pub fn merge_table(def: &Def, suites: &[Suite]) -> (String, usize) {
    // id -> [(host, status, message)]
    let mut seen: BTreeMap<String, Vec<(String, Status, String)>> = BTreeMap::new();
    for s in suites {
        for c in &s.cases {
            seen.entry(c.id.clone()).or_default().push((
                s.host.clone(),
                c.status,
                c.message.clone(),
            ));
        }
    }
    let verdict = |id: &str| -> &'static str {
        match seen.get(id) {
            Some(v) if v.iter().any(|x| x.1 == Status::Fail) => "FAIL",
            Some(v) if v.iter().any(|x| x.1 == Status::Pass) => "PASS",
            _ => "NOT RUN",
        }
    };
    let cells = def.cells();
    let mut s = format!(
        "merged results of {} host{}: {}\n\n",
        suites.len(),
        if suites.len() == 1 { "" } else { "s" },
        suites
            .iter()
            .map(|x| {
                if x.classes.is_empty() {
                    x.host.clone()
                } else {
                    format!("{} ({})", x.host, x.classes)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str(&grid(def, &cells, &|c| {
        Some(match verdict(&c.id()) {
            "NOT RUN" => "not run".to_string(),
            v => v.to_string(),
        })
    }));
    let mut failed = 0;
    let mut ran = String::new();
    let mut not_run = String::new();
    for c in &cells {
        let id = c.id();
        match verdict(&id) {
            "NOT RUN" => {
                let why = seen
                    .get(&id)
                    .and_then(|v| v.first())
                    .map(|(h, _, m)| format!("SKIP on {h}: {m}"))
                    .unwrap_or_else(|| "no host reported it".into());
                let _ = writeln!(
                    not_run,
                    "  {id:<48} [{}] {why}",
                    def.class_of(c).unwrap_or("-")
                );
            }
            v => {
                if v == "FAIL" {
                    failed += 1;
                }
                for (h, st, m) in &seen[&id] {
                    if *st != Status::Skip {
                        let _ = writeln!(
                            ran,
                            "  {} {id:<48} on {h}{}",
                            st.word(),
                            if m.is_empty() {
                                String::new()
                            } else {
                                format!(": {m}")
                            }
                        );
                    }
                }
            }
        }
    }
    if !ran.is_empty() {
        s.push_str("\ncells that ran:\n");
        s.push_str(&ran);
    }
    let n_not_run = not_run.lines().count();
    if n_not_run > 0 {
        let _ = writeln!(s, "\ncells no host ran ({n_not_run}):");
        s.push_str(&not_run);
    }
    let unknown: Vec<&String> = seen
        .keys()
        .filter(|id| !cells.iter().any(|c| c.id() == **id))
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(
            s,
            "\nresults for cells ci/matrix.def no longer has: {}",
            unknown
                .iter()
                .map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n{} cells: {} ran on some host ({failed} FAIL), {n_not_run} ran nowhere",
        cells.len(),
        cells.len() - n_not_run
    );
    (s, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fugu-matrix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A fake "fugu": a shell script given as `sh -c SCRIPT LOG`.
    fn fake(dir: &Path, name: &str, script: &str, timeout_s: u64) -> BootSpec {
        let serial_log = dir.join(format!("{name}.serial.log"));
        BootSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into(), serial_log.clone().into()],
            serial_log,
            vmm_log: dir.join(format!("{name}.vmm.log")),
            timeout: Duration::from_secs(timeout_s),
            expect_status: 33,
            expect_markers: vec!["hello from the guest".into()],
            files: vec![],
            file_checks: vec![],
            net: None,
            accept_after_init: None,
        }
    }

    #[test]
    fn a_failure_after_init_passes_only_when_it_is_the_declared_one() {
        let d = tmp("after-init");
        let no = AtomicBool::new(false);
        let with = |name: &str, script: &str| {
            let mut s = fake(&d, name, script, 60);
            s.accept_after_init = Some((6, "signalled SIGBUS during KVM_RUN"));
            s
        };
        let ok = with(
            "ok",
            "printf 'hello from the guest\\nRun /sbin/init as init process\\n' > \"$0\"; \
             echo 'fugu: the host signalled SIGBUS during KVM_RUN' >&2; exit 6",
        );
        assert_eq!(execute(&ok, &no), Outcome::Pass);
        let before_init = with(
            "before",
            "echo 'hello from the guest' > \"$0\"; \
             echo 'fugu: the host signalled SIGBUS during KVM_RUN' >&2; exit 6",
        );
        assert!(reason(&execute(&before_init, &no)).contains("status 6"));
        let other_crash = with(
            "other",
            "printf 'hello from the guest\\nRun /sbin/init as init process\\n' > \"$0\"; \
             echo 'fugu: triple fault' >&2; exit 6",
        );
        assert!(reason(&execute(&other_crash, &no)).contains("status 6"));
        let no_marker = with(
            "nomarker",
            "printf 'Run /sbin/init as init process\\n' > \"$0\"; \
             echo 'fugu: the host signalled SIGBUS during KVM_RUN' >&2; exit 6",
        );
        assert!(reason(&execute(&no_marker, &no)).contains("lacks 'hello from the guest'"));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn reason(o: &Outcome) -> &str {
        match o {
            Outcome::Fail { reason, .. } | Outcome::Skip { reason } => reason,
            Outcome::Pass => "PASS",
        }
    }

    #[test]
    fn pass_needs_status_and_marker() {
        let d = tmp("pass");
        let no = AtomicBool::new(false);
        let ok = fake(
            &d,
            "ok",
            "echo 'hello from the guest' > \"$0\"; exit 33",
            60,
        );
        assert_eq!(execute(&ok, &no), Outcome::Pass);
        let nomark = fake(&d, "nomark", "echo 'something else' > \"$0\"; exit 33", 60);
        assert!(reason(&execute(&nomark, &no)).contains("lacks 'hello from the guest'"));
        let bad = fake(
            &d,
            "bad",
            "echo 'hello from the guest' > \"$0\"; echo oops >&2; exit 6",
            60,
        );
        let o = execute(&bad, &no);
        assert!(
            reason(&o).contains("status 6") && reason(&o).contains("crashed"),
            "{o:?}"
        );
        let Outcome::Fail { tail, .. } = o else {
            panic!()
        };
        assert!(
            tail.contains("hello from the guest") && tail.contains("oops"),
            "{tail}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn hang_crash_and_missing_binary_fail_with_reasons_and_the_rest_runs() {
        let d = tmp("mix");
        let no = AtomicBool::new(false);
        let mut missing = fake(&d, "missing", "exit 33", 60);
        missing.program = d.join("no-such-fugu");
        let jobs = vec![
            Ok(fake(&d, "hang", "echo booting > \"$0\"; exec sleep 600", 1)),
            Ok(fake(&d, "crash", "kill -SEGV $$", 60)),
            Err("missing image: target/guests/nothing.elf".to_string()),
            Ok(missing),
            Ok(fake(
                &d,
                "ok",
                "echo 'hello from the guest' > \"$0\"; exit 33",
                60,
            )),
        ];
        let mut events = 0;
        let r = run_jobs(jobs, 2, &no, &mut |e| {
            if !matches!(e, Event::Tick) {
                events += 1
            }
        });
        assert_eq!(r.len(), 5);
        assert_eq!(events, 10, "a start and a finish per job");
        assert!(reason(&r[0].0).contains("timed out"), "{:?}", r[0]);
        let Outcome::Fail { tail, .. } = &r[0].0 else {
            panic!()
        };
        assert!(tail.contains("booting"));
        assert!(
            reason(&r[1].0).contains("signal 11 (SIGSEGV)"),
            "{:?}",
            r[1]
        );
        assert!(reason(&r[2].0).contains("missing image"));
        assert!(reason(&r[3].0).contains("missing fugu binary"));
        assert_eq!(r[4].0, Outcome::Pass, "the last cell still ran");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_interrupt_fails_what_did_not_finish() {
        let d = tmp("intr");
        let stop = AtomicBool::new(true);
        let r = run_jobs(
            vec![Ok(fake(
                &d,
                "a",
                "echo 'hello from the guest' > \"$0\"; exit 33",
                60,
            ))],
            1,
            &stop,
            &mut |_| {},
        );
        assert!(reason(&r[0].0).contains("interrupted"));
        std::fs::remove_dir_all(d).unwrap();
    }

    fn pvm_probe() -> Probe {
        Probe {
            modules: vec!["kvm".into(), "kvm_pvm".into()],
            dev_kvm: Ok(()),
            tap: Ok(()),
            netns: Ok(()),
            ..Probe::default()
        }
    }

    #[test]
    fn decisions_on_a_pvm_host() {
        let def = matrix_def::load().unwrap();
        let probe = pvm_probe();
        let implemented = |r: &str| RUNNERS.contains(&r);
        let get = |id: &str| {
            let c = def.cells().into_iter().find(|c| c.id() == id).unwrap();
            decide(&def.plan(&c), &probe, &implemented)
        };
        assert_eq!(
            get("pvm/shadow/i686/i386/tiny-direct/boot"),
            Decision::Run("tiny-boot".into())
        );
        assert_eq!(
            get("pvm/shadow/x86_64/amd64/tiny-direct/virtio-disk"),
            Decision::Run("tiny-virtio-disk".into())
        );
        assert_eq!(
            get("vmx/tdp/x86_64/amd64/tiny-direct/boot"),
            Decision::Skip(
                "needs VMX; host has no hardware virtualization (KVM module kvm_pvm)".into()
            )
        );
        // The BIOS disk boot runs where SeaBIOS is installed; iPXE network boot is pending.
        let bios_cell = def
            .cells()
            .into_iter()
            .find(|c| c.id() == "pvm/shadow/x86_64/amd64/bios-disk/virtio-disk")
            .unwrap();
        let mut with_seabios = pvm_probe();
        with_seabios.seabios = Some("/usr/share/seabios/bios-256k.bin".into());
        assert_eq!(
            decide(&def.plan(&bios_cell), &with_seabios, &implemented),
            Decision::Run("bios-disk".into())
        );
        assert!(matches!(
            decide(&def.plan(&bios_cell), &probe, &implemented),
            Decision::Skip(_)
        ));
        // The iPXE network boot runs where SeaBIOS, iPXE's ROMs and dnsmasq are installed.
        let ipxe_cell = def
            .cells()
            .into_iter()
            .find(|c| c.id() == "pvm/shadow/x86_64/amd64/ipxe-net/virtio-net")
            .unwrap();
        let mut with_firmware = with_seabios.clone();
        with_firmware.ipxe = Some("/usr/lib/ipxe/qemu/pxe-virtio.rom".into());
        with_firmware.dnsmasq = Some("/usr/sbin/dnsmasq".into());
        assert_eq!(
            decide(&def.plan(&ipxe_cell), &with_firmware, &implemented),
            Decision::Run("ipxe-net".into())
        );
        let Decision::Skip(why) = decide(&def.plan(&ipxe_cell), &with_seabios, &implemented) else {
            panic!()
        };
        assert!(why.contains("ipxe") || why.contains("dnsmasq"), "{why}");
        // The host limit comes before the missing feature.
        let Decision::Skip(why) = get("pvm/shadow/x86_64/i386/linux-direct/virtio-disk") else {
            panic!()
        };
        assert!(why.contains("32-bit guest paging"), "{why}");
        // No /dev/kvm: nothing runs, and says why.
        let mut p = pvm_probe();
        p.dev_kvm = Err("/dev/kvm: Permission denied".into());
        let c = def.cells()[0].clone();
        assert!(
            matches!(decide(&def.plan(&c), &p, &implemented), Decision::Skip(w) if w.contains("Permission denied"))
        );
    }

    #[test]
    fn every_runner_is_implemented_or_pending_not_both() {
        let def = matrix_def::load().unwrap();
        for r in def.runner_names() {
            let pending = def.pending.iter().any(|(n, _)| *n == r);
            let implemented = RUNNERS.contains(&r.as_str());
            assert!(
                pending != implemented,
                "runner {r}: implemented={implemented} pending={pending}"
            );
        }
        for (n, _) in &def.pending {
            assert!(def.runner_names().contains(n), "[pending] {n} is no runner");
        }
    }

    #[test]
    fn tiny_runner_fails_on_a_missing_image_or_build() {
        let def = matrix_def::load().unwrap();
        let c = def
            .cells()
            .into_iter()
            .find(|c| c.id() == "pvm/shadow/x86_64/i386/tiny-direct/boot")
            .unwrap();
        let plan = def.plan(&c);
        let d = tmp("runner");
        let mut arts = Artifacts {
            log_dir: d.clone(),
            ..Artifacts::default()
        };
        arts.fugu
            .insert("x86_64".into(), Ok(PathBuf::from("/bin/true")));
        arts.guests
            .insert("hello32".into(), Ok(d.join("hello32.elf")));
        let e = runner_spec("tiny-boot", &c, &plan, &arts, None).unwrap_err();
        assert!(e.starts_with("missing image"), "{e}");
        std::fs::write(d.join("hello32.elf"), b"\x7fELF").unwrap();
        let spec = runner_spec("tiny-boot", &c, &plan, &arts, Some(7)).unwrap();
        assert_eq!((spec.expect_status, spec.timeout.as_secs()), (33, 7));
        assert!(spec
            .serial_log
            .ends_with("pvm-shadow-x86_64-i386-tiny-direct-boot.serial.log"));
        arts.fugu.insert(
            "x86_64".into(),
            Err("building fugu for x86_64 failed".into()),
        );
        assert!(runner_spec("tiny-boot", &c, &plan, &arts, None)
            .unwrap_err()
            .contains("building"));
        std::fs::remove_dir_all(d).unwrap();
    }

    fn cell_and_plan(def: &Def, id: &str) -> (Cell, Plan) {
        let c = def.cells().into_iter().find(|c| c.id() == id).unwrap();
        let plan = def.plan(&c);
        (c, plan)
    }

    #[test]
    fn ipxe_runner_serves_the_cells_boot_program_over_tftp() {
        let def = matrix_def::load().unwrap();
        let d = tmp("ipxe-runner");
        let mut arts = Artifacts {
            log_dir: d.join("logs"),
            ..Artifacts::default()
        };
        arts.fugu
            .insert("i686".into(), Ok(PathBuf::from("/bin/true")));
        let (c, plan) = cell_and_plan(&def, "pvm/shadow/i686/amd64/ipxe-net/virtio-net");
        let e = runner_spec("ipxe-net", &c, &plan, &arts, None).unwrap_err();
        assert!(e.starts_with("missing image"), "{e}");
        let bin = d.join("nbp-amd64.bin");
        std::fs::write(&bin, b"nbp bytes").unwrap();
        arts.guests.insert("nbp-amd64".into(), Ok(bin));
        let spec = runner_spec("ipxe-net", &c, &plan, &arts, None).unwrap();
        let net = spec.net.clone().unwrap();
        let served = net.tftp_boot.clone().unwrap();
        assert_eq!(spec.files, vec![(served.clone(), b"nbp bytes".to_vec())]);
        assert!(served.starts_with(&arts.log_dir));
        assert_eq!(net.dhcp.as_deref(), Some(netcheck::DHCP_GUEST));
        assert_eq!(spec.expect_status, 65);
        assert!(spec
            .expect_markers
            .iter()
            .any(|m| m == "fugu-boot: amd64 long mode ok"));
        assert!(spec.expect_markers[0].contains(netcheck::DHCP_GUEST));
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for a in [
            "--bios",
            "net",
            &format!("tap={},mac={}", net.tap, net.mac_text()),
        ] {
            assert!(args.iter().any(|x| x == a), "{a}: {args:?}");
        }
        let dn = netcheck::dnsmasq_args(&net, &d);
        assert!(
            dn.contains(&"--dhcp-boot=nbp-amd64.bin".to_string()),
            "{dn:?}"
        );
        assert!(dn.contains(&format!(
            "--tftp-root={}",
            served.parent().unwrap().display()
        )));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn linux_runner_fails_on_a_missing_image_and_boots_a_copy_of_the_disk() {
        let def = matrix_def::load().unwrap();
        let d = tmp("linux-runner");
        let mut arts = Artifacts {
            log_dir: d.join("logs"),
            images: d.join("images"),
            ..Artifacts::default()
        };
        arts.fugu
            .insert("x86_64".into(), Ok(PathBuf::from("/bin/true")));
        let (c, plan) = cell_and_plan(&def, "pvm/shadow/x86_64/amd64/linux-direct/virtio-disk");
        assert_eq!(plan.level.as_deref(), Some("kernel"));
        assert_eq!(plan.timeout_s, 600);
        let e = runner_spec("linux", &c, &plan, &arts, None).unwrap_err();
        assert!(
            e.starts_with("missing image: run cargo xtask images"),
            "{e}"
        );
        let img = d.join("images/linux-amd64");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(img.join("bzImage"), b"kernel").unwrap();
        let e = runner_spec("linux", &c, &plan, &arts, None).unwrap_err();
        assert!(
            e.starts_with("missing image") && e.contains("disk.ext4"),
            "{e}"
        );
        std::fs::write(img.join("disk.ext4"), b"ext4 image").unwrap();
        let spec = runner_spec("linux", &c, &plan, &arts, None).unwrap();
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(spec.expect_status, 0);
        assert_eq!(spec.timeout.as_secs(), 600);
        assert!(spec.net.is_none());
        let cmdline = &args[args.iter().position(|a| a == "--cmdline").unwrap() + 1];
        assert!(cmdline.contains("root=/dev/vda rw rootfstype=ext4 panic=-1"));
        assert!(!cmdline.contains("ip=dhcp") && !args.iter().any(|a| a == "--initrd"));
        // The disk is a private copy in the log directory, never the built image itself.
        let disk = &args[args.iter().position(|a| a == "--disk").unwrap() + 1];
        assert!(disk.starts_with(d.join("logs").to_str().unwrap()), "{disk}");
        assert_eq!(
            spec.files,
            vec![(PathBuf::from(disk), b"ext4 image".to_vec())]
        );
        assert!(spec
            .expect_markers
            .contains(&"VFS: Mounted root (ext4 filesystem)".to_string()));

        let (c, plan) = cell_and_plan(&def, "pvm/shadow/i686/amd64/linux-direct/virtio-net");
        arts.fugu
            .insert("i686".into(), Ok(PathBuf::from("/bin/true")));
        let spec = runner_spec("linux", &c, &plan, &arts, Some(9)).unwrap();
        let net = spec.net.clone().unwrap();
        assert_eq!(net.dhcp.as_deref(), Some(netcheck::DHCP_GUEST));
        assert!(spec
            .args
            .iter()
            .any(|a| a.to_string_lossy().ends_with("ip=dhcp")));
        assert!(spec
            .args
            .iter()
            .any(|a| a.to_string_lossy() == format!("tap={},mac={}", net.tap, net.mac_text())));
        assert_eq!(
            spec.expect_markers,
            ["IP-Config: Complete", "ipaddr=10.78.0.15,"]
        );
        // A VMX host's cells require the userspace level: the disk's init (the image's check)
        // must report its verdict and exit through 0xf4, with the network up for both checks;
        // kernel messages alone and a SIGBUS after init are not enough there.
        for (id, mine) in [
            (
                "vmx/tdp/x86_64/amd64/linux-direct/virtio-disk",
                "fugu-check: disk: marker ok".to_string(),
            ),
            (
                "svm/shadow/i686/amd64/linux-direct/virtio-net",
                format!("fugu-check: network: lease {}/", netcheck::DHCP_GUEST),
            ),
        ] {
            let (c, plan) = cell_and_plan(&def, id);
            assert_eq!(plan.level.as_deref(), Some("userspace"));
            let spec = runner_spec("linux", &c, &plan, &arts, None).unwrap();
            assert_eq!(spec.expect_status, 33, "{id}");
            assert_eq!(
                spec.expect_markers,
                [
                    "Run /sbin/init".to_string(),
                    mine,
                    "fugu-check: PASS".to_string()
                ]
            );
            assert!(spec.accept_after_init.is_none());
            assert_eq!(
                spec.net.as_ref().unwrap().dhcp.as_deref(),
                Some(netcheck::DHCP_GUEST)
            );
            let cmdline = spec
                .args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>();
            assert!(cmdline.iter().any(|a| a.contains("ip=dhcp")), "{cmdline:?}");
        }
        // An i386 cell boots linux-i386 (on VMX/SVM hosts; kvm_pvm lacks 32-bit paging).
        let (c, plan) = cell_and_plan(&def, "vmx/tdp/x86_64/i386/linux-direct/virtio-disk");
        let e = runner_spec("linux", &c, &plan, &arts, None).unwrap_err();
        assert!(e.contains("linux-i386"), "{e}");
        let img386 = d.join("images/linux-i386");
        std::fs::create_dir_all(&img386).unwrap();
        std::fs::write(img386.join("bzImage"), b"kernel").unwrap();
        std::fs::write(img386.join("disk.ext4"), b"ext4 image").unwrap();
        let spec = runner_spec("linux", &c, &plan, &arts, None).unwrap();
        assert!(spec
            .args
            .iter()
            .any(|a| a.to_string_lossy().ends_with("linux-i386/bzImage")));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn linux_cells_pass_only_on_the_kernels_own_lines() {
        let def = matrix_def::load().unwrap();
        let d = tmp("linux-judge");
        let img = d.join("images/linux-amd64");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(img.join("bzImage"), b"kernel").unwrap();
        std::fs::write(img.join("disk.ext4"), b"ext4 image").unwrap();
        let mut arts = Artifacts {
            log_dir: d.join("logs"),
            images: d.join("images"),
            ..Artifacts::default()
        };
        arts.fugu
            .insert("x86_64".into(), Ok(PathBuf::from("/bin/true")));
        let no = AtomicBool::new(false);
        // Fake fugu: write a serial log, then exit with a status.
        let judge = |id: &str, log: &str, status: i32| {
            let (c, plan) = cell_and_plan(&def, id);
            let mut spec = runner_spec("linux", &c, &plan, &arts, Some(20)).unwrap();
            spec.program = PathBuf::from("/bin/sh");
            spec.args = vec![
                "-c".into(),
                format!("printf '{log}' > \"$0\"; exit {status}").into(),
                spec.serial_log.clone().into(),
            ];
            spec.net = None;
            execute(&spec, &no)
        };
        let disk = "pvm/shadow/x86_64/amd64/linux-direct/virtio-disk";
        let mounted = "EXT4-fs (vda): mounted filesystem 1234 r/w.\\nVFS: Mounted root (ext4 filesystem) on device 254:0.\\nKernel panic - not syncing: Attempted to kill init!\\n";
        assert_eq!(judge(disk, mounted, 0), Outcome::Pass);
        let o = judge(
            disk,
            "VFS: Cannot open root device vda\\nKernel panic\\n",
            0,
        );
        assert!(reason(&o).contains("lacks 'EXT4-fs (vda)"), "{o:?}");
        let o = judge(disk, mounted, 6);
        assert!(reason(&o).contains("status 6"), "{o:?}");
        let net = "pvm/shadow/x86_64/amd64/linux-direct/virtio-net";
        let lease = "IP-Config: Complete:\\n     device=eth0, hwaddr=52:54:00:e2:4d:02, ipaddr=10.78.0.15, mask=255.255.255.0\\n";
        assert_eq!(judge(net, lease, 0), Outcome::Pass);
        let o = judge(
            net,
            "IP-Config: Complete:\\n ipaddr=10.78.0.150, mask\\n",
            0,
        );
        assert!(reason(&o).contains("lacks 'ipaddr=10.78.0.15,'"), "{o:?}");
        let o = judge(net, "IP-Config: Retrying forever (NFS root)...\\n", 0);
        assert!(reason(&o).contains("lacks 'IP-Config: Complete'"), "{o:?}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn merge_shows_cells_no_host_ran() {
        let def = matrix_def::load().unwrap();
        let case = |id: &str, status, message: &str| Case {
            id: id.into(),
            status,
            message: message.into(),
            detail: String::new(),
            secs: 1.0,
        };
        let suites = vec![
            Suite {
                host: "pvm-box".into(),
                classes: "emulated".into(),
                cases: vec![
                    case("pvm/shadow/x86_64/amd64/tiny-direct/boot", Status::Pass, ""),
                    case(
                        "vmx/tdp/x86_64/amd64/tiny-direct/boot",
                        Status::Skip,
                        "needs VMX",
                    ),
                ],
            },
            Suite {
                host: "intel-box".into(),
                classes: "intel-ept".into(),
                cases: vec![case(
                    "vmx/tdp/x86_64/amd64/tiny-direct/boot",
                    Status::Fail,
                    "timed out",
                )],
            },
        ];
        let (t, failed) = merge_table(&def, &suites);
        assert_eq!(failed, 1);
        assert!(
            t.contains("PASS pvm/shadow/x86_64/amd64/tiny-direct/boot"),
            "{t}"
        );
        assert!(
            t.contains("FAIL vmx/tdp/x86_64/amd64/tiny-direct/boot"),
            "{t}"
        );
        let total = def.cells().len();
        assert!(
            t.contains(&format!("cells no host ran ({})", total - 2)),
            "{t}"
        );
        assert!(t.contains("no host reported it"));
        let xml = junit::write(&suites[0]);
        assert_eq!(junit::parse(&xml).unwrap()[0], suites[0]);
    }

    #[test]
    fn tap_marks_skips_and_failures() {
        let def = matrix_def::load().unwrap();
        let cells = def.cells();
        let r = vec![
            CellResult {
                cell: cells[0].clone(),
                outcome: Outcome::Skip {
                    reason: "needs VMX".into(),
                },
                secs: 0.0,
            },
            CellResult {
                cell: cells[1].clone(),
                outcome: Outcome::Fail {
                    reason: "timed out".into(),
                    tail: "last line".into(),
                },
                secs: 1.0,
            },
        ];
        let t = tap(&r);
        assert!(t.starts_with("TAP version 13\n1..2\n"));
        assert!(t.contains("ok 1 - ") && t.contains("# SKIP needs VMX"));
        assert!(t.contains("not ok 2 - ") && t.contains("    last line"));
    }

    #[test]
    fn options_parse() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = parse_options(&s(&[
            "--filter",
            "host=pvm",
            "--jobs=3",
            "--tap",
            "--no-build",
        ]))
        .unwrap();
        assert_eq!(
            (o.filters, o.jobs, o.tap, o.build),
            (s(&["host=pvm"]), 3, true, false)
        );
        assert!(parse_options(&s(&["--jobs", "0"])).is_err());
        assert!(parse_options(&s(&["--bogus"])).is_err());
        assert!(parse_options(&s(&["--junit"])).is_err());
    }
}
