//! The runners: how a cell of each runner in ci/matrix.def is booted and judged. One variant
//! of `Runner` and one file per runner; adding a runner is a variant here (name, what it
//! needs built, which file builds its boot) plus its file.

mod bios_disk;
mod bios_linux;
mod debian_linux;
mod ipxe_net;
mod linux;
mod nested;
#[cfg(test)]
mod tests;
mod tiny;

use crate::guests;
use crate::matrix_def::{Cell, Plan};
use crate::netcheck::NetSetup;
use crate::targets::{Target, ALL};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The runners this xtask implements; every other runner in ci/matrix.def must be [pending].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runner {
    TinyBoot,
    TinyConform,
    TinyVirtioDisk,
    TinyVirtioNet,
    BiosDisk,
    BiosLinux,
    IpxeNet,
    Linux,
    DebianLinux,
}

impl Runner {
    pub const ALL: [Runner; 9] = [
        Runner::TinyBoot,
        Runner::TinyConform,
        Runner::TinyVirtioDisk,
        Runner::TinyVirtioNet,
        Runner::BiosDisk,
        Runner::BiosLinux,
        Runner::IpxeNet,
        Runner::Linux,
        Runner::DebianLinux,
    ];

    /// Its name in ci/matrix.def.
    pub fn name(self) -> &'static str {
        match self {
            Runner::TinyBoot => "tiny-boot",
            Runner::TinyConform => "tiny-conform",
            Runner::TinyVirtioDisk => "tiny-virtio-disk",
            Runner::TinyVirtioNet => "tiny-virtio-net",
            Runner::BiosDisk => "bios-disk",
            Runner::BiosLinux => "bios-linux",
            Runner::IpxeNet => "ipxe-net",
            Runner::Linux => "linux",
            Runner::DebianLinux => "debian-linux",
        }
    }

    /// The runner ci/matrix.def names, when this xtask implements it.
    pub fn parse(name: &str) -> Option<Runner> {
        Runner::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether its cells boot the tiny guests or boot programs (images/guests/).
    pub fn needs_guests(self) -> bool {
        matches!(
            self,
            Runner::TinyBoot
                | Runner::TinyConform
                | Runner::TinyVirtioDisk
                | Runner::TinyVirtioNet
                | Runner::BiosDisk
                | Runner::IpxeNet
                // the L3 of the nested check
                | Runner::DebianLinux
        )
    }

    /// The `cargo xtask images` image its cells of guest architecture `guest` boot.
    pub fn image(self, guest: &str) -> Option<String> {
        match self {
            Runner::Linux => Some(format!("linux-{guest}")),
            Runner::DebianLinux => Some(format!("debian-{guest}")),
            Runner::BiosLinux => Some(format!("debian-{guest}-bios")),
            _ => None,
        }
    }

    /// Build a runnable cell's boot; an Err is that cell's FAIL reason (e.g. a missing image).
    pub fn spec(
        self,
        cell: &Cell,
        plan: &Plan,
        arts: &Artifacts,
        timeout: Option<u64>,
    ) -> Result<BootSpec, String> {
        let fugu = match arts.fugu.get(cell.get("build")) {
            Some(Ok(p)) => p.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("no fugu build for {}", cell.get("build"))),
        };
        let stem = cell.file_stem();
        let base = Base {
            fugu,
            serial_log: arts.log_dir.join(format!("{stem}.serial.log")),
            vmm_log: arts.log_dir.join(format!("{stem}.vmm.log")),
            timeout: Duration::from_secs(timeout.unwrap_or(plan.timeout_s)),
            silence: cell
                .get("host")
                .starts_with("svm-tcg")
                .then_some(SVM_TCG_SILENCE),
        };
        let mut spec = match self {
            Runner::TinyBoot
            | Runner::TinyConform
            | Runner::TinyVirtioDisk
            | Runner::TinyVirtioNet => tiny::spec(self, cell, base, arts),
            Runner::BiosDisk => bios_disk::spec(cell, base, arts),
            Runner::BiosLinux => bios_linux::spec(cell, base, arts),
            Runner::IpxeNet => ipxe_net::spec(cell, base, arts),
            Runner::Linux => linux::spec(cell, plan, base, arts),
            Runner::DebianLinux => debian_linux::spec(cell, base, arts),
        }?;
        if let Some((_, Some(backend))) = build_of(cell.get("build")) {
            if spec.args.first().is_none_or(|a| a != "run") {
                return Err(format!(
                    "runner '{}' does not start with fugu run",
                    self.name()
                ));
            }
            spec.args
                .splice(1..1, ["--backend".into(), OsString::from(backend)]);
        }
        Ok(spec)
    }
}

/// What a value of the matrix's `build` axis runs: the fugu build, and the `--backend` it is
/// given when not its default. `x86_64-portable` is the x86_64 fugu on fugu's own KVM, memory
/// and virtqueue layer, the one the i686 build has (the x86_64 build's default is rust-vmm's):
/// a failure that only the i686 build shows is then told apart from one in the in-house code.
pub fn build_of(build: &str) -> Option<(Target, Option<&'static str>)> {
    match build {
        "x86_64-portable" => Some((Target::X86_64, Some("portable"))),
        _ => ALL
            .into_iter()
            .find(|t| t.short() == build)
            .map(|t| (t, None)),
    }
}

/// Whether a Linux cell checks the disk alone (`fugu.check=disk` for images/check/init): the
/// disk cells of the i386 L1, whose 32-bit userspace has no dnsmasq or `ip netns` to serve a
/// network (ci/matrix.def gives those cells no network needs).
pub(super) fn disk_only(cell: &Cell) -> bool {
    cell.get("host") == "svm-tcg-i386" && cell.get("check") == "virtio-disk"
}

/// What a stock Debian kernel's command line gets on the svm-tcg classes (empty elsewhere):
/// workarounds of the emulated host, in the cell, never in fugu (docs/matrix.md).
/// - `noxsave`: QEMU TCG's CPUID leaf 0xD sizes disagree with its XSAVE features; the kernel
///   WARNs ("XSAVE consistency problem") and then sometimes triple-faults.
/// - `quiet`: every console byte is a port exit through TCG's emulated SVM, and the kernel's
///   info lines took about 40% of these cells' time (debian-direct, 3 December: 11.8–16.7 s
///   per cell with it, 20.4–30.6 s without). The checks' own lines and the kernel's errors
///   still print; nothing the runners require is a kernel info line.
pub(super) fn stock_kernel_on_tcg(cell: &Cell) -> &'static str {
    if cell.get("host").starts_with("svm-tcg") {
        " noxsave quiet"
    } else {
        ""
    }
}

/// What every runner starts from: the cell's fugu build, its log files and its timeout.
pub struct Base {
    pub fugu: PathBuf,
    pub serial_log: PathBuf,
    pub vmm_log: PathBuf,
    pub timeout: Duration,
    pub silence: Option<Duration>,
}

/// How long a guest on the svm-tcg classes may print nothing before it counts as hung. QEMU
/// TCG's nested SVM now and then stalls an L2 for good (docs/matrix.md); the longest gap
/// between two kernel lines in those cells' logs was 3.3 s (3 December), and every guest
/// there prints within seconds of its start, so a stall ends its attempt here instead of at
/// the cell's timeout (360 s for the Linux cells).
pub const SVM_TCG_SILENCE: Duration = Duration::from_secs(60);

impl Base {
    /// A boot of the cell's fugu with its logs and timeout, and nothing else yet: the runners
    /// fill in the rest with struct update syntax.
    fn into_spec(self) -> BootSpec {
        BootSpec {
            program: self.fugu,
            args: vec![],
            serial_log: self.serial_log,
            vmm_log: self.vmm_log,
            timeout: self.timeout,
            expect_status: 0,
            expect_markers: vec![],
            files: vec![],
            file_checks: vec![],
            net: None,
            accept_after_init: None,
            press_power_button: None,
            silence: self.silence,
        }
    }
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
    /// Once the serial log shows this line, press the guest's power button: SIGPWR to fugu
    /// (docs/acpi.md), as a host shutting the VM down gracefully would.
    pub press_power_button: Option<String>,
    /// The guest counts as hung once its serial log has not grown for this long (the
    /// emulated host classes, [`SVM_TCG_SILENCE`]); None: only the timeout ends a boot.
    pub silence: Option<Duration>,
}

/// The serial line after which a failure belongs to userspace, not to the kernel level.
pub const INIT_STARTED: &str = "Run /sbin/init as init process";

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

/// The cell's private network: a tap in a namespace named after this run and the cell, with
/// the runner's MAC (the last byte tells the runners apart in a capture).
fn cell_net(
    stem: &str,
    mac_last: u8,
    dhcp: bool,
    tftp_boot: Option<PathBuf>,
    answer_frames: bool,
) -> NetSetup {
    NetSetup {
        ns: format!("fugu-mx-{}-{stem}", std::process::id()),
        tap: "fgmx0".into(),
        mac: [0x52, 0x54, 0x00, 0xe2, 0x4d, mac_last],
        dhcp: dhcp.then(|| crate::netcheck::DHCP_GUEST.into()),
        tftp_boot,
        answer_frames,
    }
}

/// A built image file the cells need, or the FAIL reason that says how to get it.
fn image_file(p: &Path) -> Result<(), String> {
    if p.is_file() {
        Ok(())
    } else {
        Err(format!(
            "missing image: run cargo xtask images ({} not found)",
            p.display()
        ))
    }
}

/// `fugu run --bios --boot <boot>` with the device it boots from, SeaBIOS's own give-up time
/// set to the cell's timeout, and the console into `serial_log`.
pub(super) fn firmware_args(
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

/// The tiny guest `name` (xtask/src/guests.rs) and its built ELF.
pub(super) fn tiny_guest(
    name: &str,
    arts: &Artifacts,
) -> Result<(&'static guests::Guest, PathBuf), String> {
    let g = guests::GUESTS
        .iter()
        .find(|g| g.name == name)
        .ok_or_else(|| format!("no tiny guest named {name} in xtask/src/guests.rs"))?;
    let elf = match arts.guests.get(g.name) {
        Some(Ok(p)) => p.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(format!("missing image: guest {} was not built", g.name)),
    };
    if !elf.is_file() {
        return Err(format!("missing image: {}", elf.display()));
    }
    Ok((g, elf))
}

/// The cell's boot program `<kind>-<guest>` (images/guests/mbr.S) and its bytes.
pub(super) fn boot_program(
    kind: &str,
    cell: &Cell,
    arts: &Artifacts,
) -> Result<(&'static guests::BootProgram, Vec<u8>), String> {
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
