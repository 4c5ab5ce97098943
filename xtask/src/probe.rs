//! The host probe of the test matrix: what this machine can run. CPU vendor and flags, the KVM
//! modules and their ept/npt/nested parameters, /dev/kvm, root, tap and network namespaces,
//! dnsmasq, firmware files, the fugu builds and guest images. `cargo xtask test-matrix --probe`
//! prints it; each cell's needs (ci/matrix.def) are answered by `Probe::missing`.

use crate::guests;
use crate::targets::{Target, ALL};
use crate::util;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every capability name a cell may need (ci/matrix.def [needs]).
pub const CAPABILITIES: &[&str] = &[
    "kvm",
    "vmx",
    "svm",
    "svm-tcg",
    "svm-tcg-i386",
    "pvm",
    "tdp",
    "shadow",
    "paging32",
    "native-kernel",
    "nested",
    "tap",
    "netns",
    "dnsmasq",
    "seabios",
    "ipxe",
];

/// Capabilities about the host's virtualization (the first eleven of [`CAPABILITIES`]): their
/// reasons come before a pending runner's.
pub const VIRT_CAPABILITIES: &[&str] = CAPABILITIES.split_at(11).0;

/// Why the i386 L1 has no network cells: its tools are i386 busybox.
const I386_L1_NET: &str = "this i386 L1 (32-bit kernel) runs only i386 programs: its tools are \
     i386 busybox (no `ip netns`), and the host's amd64 iproute2 and dnsmasq on its 9p root \
     cannot run here";

const SEABIOS: &[&str] = &[
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/bios-256k.bin",
];
const IPXE: &[&str] = &[
    "/usr/lib/ipxe/qemu/pxe-virtio.rom",
    "/usr/lib/ipxe/qemu/efi-virtio.rom",
    "/usr/lib/ipxe/virtio-net.rom",
];

#[derive(Debug, Clone)]
pub struct Probe {
    pub cpu_vendor: String,
    pub cpu_model: String,
    pub vmx: bool,
    pub svm: bool,
    /// The CPU says it runs under a hypervisor.
    pub hypervisor: bool,
    /// The CPU is QEMU's software emulation (TCG): inside the svm-tcg L1, its SVM is QEMU's,
    /// not AMD's, so its cells are of the svm-tcg class and never of svm.
    pub tcg: bool,
    /// The running kernel is 32-bit (/proc/sys/kernel/arch is i386..i686): inside the
    /// svm-tcg-i386 L1, where only i386 programs run.
    pub kernel32: bool,
    /// Loaded KVM modules (kvm, kvm_intel, kvm_amd, kvm_pvm).
    pub modules: Vec<String>,
    /// ("kvm_intel.ept", "Y"), ("kvm_amd.npt", "1"), ("kvm_intel.nested", "Y"), ...
    pub params: Vec<(String, String)>,
    pub dev_kvm: Result<(), String>,
    pub root: bool,
    pub tap: Result<(), String>,
    pub netns: Result<(), String>,
    pub dnsmasq: Option<PathBuf>,
    pub seabios: Option<PathBuf>,
    pub ipxe: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    /// (build, expected binary path, present).
    pub fugu: Vec<(Target, PathBuf, bool)>,
    /// (guest name, arch, ELF path, present).
    pub guests: Vec<(String, String, PathBuf, bool)>,
    /// Guest images built by `cargo xtask images` (target/images/out/): their directory names.
    pub images: Vec<String>,
}

impl Default for Probe {
    fn default() -> Self {
        let not = || Err("not probed".to_string());
        Probe {
            cpu_vendor: String::new(),
            cpu_model: String::new(),
            vmx: false,
            svm: false,
            hypervisor: false,
            tcg: false,
            kernel32: false,
            modules: vec![],
            params: vec![],
            dev_kvm: not(),
            root: false,
            tap: not(),
            netns: not(),
            dnsmasq: None,
            seabios: None,
            ipxe: None,
            qemu: None,
            fugu: vec![],
            guests: vec![],
            images: vec![],
        }
    }
}

fn is_on(v: &str) -> bool {
    matches!(v.trim(), "Y" | "y" | "1")
}

/// fugu's host-adaptation switches for Linux guests (one list with fugu's own).
pub use fugu_common::host::LINUX_SWITCHES as FUGU_LINUX_SWITCHES;

impl Probe {
    /// Probe this machine (runs `unshare`/`ip` for the netns and tap checks when root).
    pub fn host() -> Probe {
        let mut p = Probe::from_files(Path::new("/"));
        p.dev_kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(|_| ())
            .map_err(|e| format!("/dev/kvm: {e}"));
        p.root = util::is_root();
        if p.kernel32 {
            p.netns = Err(I386_L1_NET.into());
            p.tap = Err(I386_L1_NET.into());
            p.qemu = None;
            return p;
        }
        p.netns = probe_netns(p.root);
        p.tap = match (&p.netns, Path::new("/dev/net/tun").exists()) {
            (_, false) => Err("/dev/net/tun is missing".into()),
            (Err(e), _) => Err(format!("no private network namespace to try it in ({e})")),
            (Ok(()), true) => probe_tap(),
        };
        p.dnsmasq = which("dnsmasq");
        p.qemu = which("qemu-system-x86_64");
        p
    }

    /// The parts of the probe that are plain files under `root` (a fake tree in tests).
    pub fn from_files(root: &Path) -> Probe {
        let at = |p: &str| root.join(p.trim_start_matches('/'));
        let mut p = Probe {
            kernel32: std::fs::read_to_string(at("/proc/sys/kernel/arch"))
                .is_ok_and(|a| kernel_is_32bit(a.trim())),
            ..Probe::default()
        };
        let cpuinfo = std::fs::read_to_string(at("/proc/cpuinfo")).unwrap_or_default();
        for line in cpuinfo.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "vendor_id" if p.cpu_vendor.is_empty() => p.cpu_vendor = v.to_string(),
                "model name" if p.cpu_model.is_empty() => {
                    p.cpu_model = v.to_string();
                    p.tcg = v.starts_with("QEMU TCG CPU");
                }
                "flags" => {
                    for f in v.split_whitespace() {
                        match f {
                            "vmx" => p.vmx = true,
                            "svm" => p.svm = true,
                            "hypervisor" => p.hypervisor = true,
                            _ => {}
                        }
                    }
                    break;
                }
                _ => {}
            }
        }
        for m in ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"] {
            let dir = at("/sys/module").join(m);
            if dir.is_dir() {
                p.modules.push(m.to_string());
                for param in ["ept", "npt", "nested", "unrestricted_guest", "tdp_mmu"] {
                    if let Ok(v) = std::fs::read_to_string(dir.join("parameters").join(param)) {
                        p.params
                            .push((format!("{m}.{param}"), v.trim().to_string()));
                    }
                }
            }
        }
        p.seabios = SEABIOS.iter().map(|f| at(f)).find(|f| f.is_file());
        p.ipxe = IPXE.iter().map(|f| at(f)).find(|f| f.is_file());
        for t in ALL {
            let bin = fugu_path(t);
            let present = bin.is_file();
            p.fugu.push((t, bin, present));
        }
        for g in guests::GUESTS {
            let elf = guests::out_dir().join(format!("{}.elf", g.name));
            let present = elf.is_file();
            p.guests.push((g.name.into(), g.arch.into(), elf, present));
        }
        let out = util::root().join("target").join("images").join("out");
        if let Ok(rd) = std::fs::read_dir(&out) {
            p.images = rd
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            p.images.sort();
        }
        p
    }

    /// Whether guest kernel code runs in KVM's emulator (kvm_pvm, or no VMX/SVM): the hosts
    /// where fugu adds [`FUGU_LINUX_SWITCHES`] to a Linux command line (as fugu's
    /// host_compat decides it).
    pub fn emulates_guest_kernel(&self) -> bool {
        self.has_module("kvm_pvm") || !(self.vmx || self.svm)
    }

    pub fn has_module(&self, m: &str) -> bool {
        self.modules.iter().any(|x| x == m)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The KVM vendor module: kvm_intel, kvm_amd or kvm_pvm.
    pub fn vendor_module(&self) -> Option<&'static str> {
        ["kvm_intel", "kvm_amd", "kvm_pvm"]
            .into_iter()
            .find(|m| self.has_module(m))
    }

    fn module_desc(&self) -> String {
        match self.vendor_module() {
            Some(m) => format!("KVM module {m}"),
            None => "no KVM vendor module loaded".into(),
        }
    }

    /// (module, parameter, whether two-dimensional paging is on) for kvm_intel/kvm_amd.
    pub fn tdp_param(&self) -> Option<(&'static str, &'static str, bool)> {
        for (m, p) in [("kvm_intel", "ept"), ("kvm_amd", "npt")] {
            if self.has_module(m) {
                let on = self.param(&format!("{m}.{p}")).is_some_and(is_on);
                return Some((m, p, on));
            }
        }
        None
    }

    /// Why the host lacks capability `need`, or None when it has it.
    pub fn missing(&self, need: &str) -> Option<String> {
        let hw = |flag: bool, name: &str, module: &str, other: bool, other_name: &str| {
            if flag && self.has_module(module) {
                None
            } else if flag {
                Some(format!(
                    "needs {name}; the CPU has it but {module} is not loaded (modprobe {module})"
                ))
            } else if other {
                Some(format!("needs {name}; host has {other_name} instead"))
            } else {
                Some(format!(
                    "needs {name}; host has no hardware virtualization ({})",
                    self.module_desc()
                ))
            }
        };
        match need {
            "kvm" => self.dev_kvm.as_ref().err().map(|e| format!("needs {e}")),
            "vmx" => hw(self.vmx, "VMX", "kvm_intel", self.svm, "SVM"),
            "svm" if self.tcg && self.svm => Some(
                "needs AMD SVM hardware; this CPU is QEMU TCG's emulation of it (host class \
                 svm-tcg)"
                    .into(),
            ),
            "svm" => hw(self.svm, "SVM", "kvm_amd", self.vmx, "VMX"),
            "svm-tcg" if self.tcg && self.svm && self.kernel32 => Some(
                "needs the amd64 svm-tcg L1; this is the i386 one (host class svm-tcg-i386)".into(),
            ),
            "svm-tcg" if self.tcg && self.svm => (!self.has_module("kvm_amd"))
                .then(|| "needs kvm_amd loaded in the svm-tcg L1 (modprobe kvm_amd)".to_string()),
            "svm-tcg-i386" if self.tcg && self.svm && self.kernel32 => (!self
                .has_module("kvm_amd"))
            .then(|| "needs kvm_amd loaded in the svm-tcg-i386 L1 (modprobe kvm_amd)".to_string()),
            "svm-tcg-i386" if self.tcg && self.svm => Some(
                "needs the i386 L1 (Debian's 32-bit kernel); this is the amd64 svm-tcg L1".into(),
            ),
            "svm-tcg-i386" => Some(
                "needs QEMU TCG's SVM under Debian's 32-bit kernel: such cells run inside the \
                 i386 L1 that test-matrix boots under QEMU (this process is not in one)"
                    .into(),
            ),
            "svm-tcg" => Some(
                "needs QEMU TCG's SVM: such cells run inside the L1 that test-matrix boots under \
                 QEMU (this process is not in one)"
                    .into(),
            ),
            "pvm" => (!self.has_module("kvm_pvm")).then(|| {
                format!(
                    "needs kvm_pvm (emulated guest kernel mode); host has {}",
                    self.module_desc()
                )
            }),
            "tdp" | "shadow" => {
                let want_tdp = need == "tdp";
                match self.tdp_param() {
                    Some((m, p, on)) if on != want_tdp => Some(format!(
                        "needs {}; {m} is loaded with {p}={} (--kvm-reload covers both)",
                        if want_tdp {
                            if m == "kvm_intel" {
                                "EPT"
                            } else {
                                "NPT"
                            }
                        } else {
                            "shadow paging"
                        },
                        if on { "Y" } else { "N" }
                    )),
                    Some(_) => None,
                    None if self.has_module("kvm_pvm") => want_tdp
                        .then(|| "needs EPT/NPT; kvm_pvm always uses shadow paging".to_string()),
                    None => Some(format!(
                        "needs {}; {}",
                        if want_tdp { "EPT/NPT" } else { "shadow paging" },
                        self.module_desc()
                    )),
                }
            }
            "paging32" => {
                if self.has_module("kvm_intel") || self.has_module("kvm_amd") {
                    None
                } else if self.has_module("kvm_pvm") {
                    Some(
                        "needs 32-bit guest paging; kvm_pvm cannot run it (an i386 kernel \
                         triple-faults enabling paging)"
                            .into(),
                    )
                } else {
                    Some(format!("needs 32-bit guest paging; {}", self.module_desc()))
                }
            }
            "native-kernel" => {
                if self.has_module("kvm_intel") || self.has_module("kvm_amd") {
                    None
                } else if self.has_module("kvm_pvm") {
                    Some(
                        "needs a KVM that runs guest kernel code itself; kvm_pvm emulates it \
                         (~2 M instructions/s), where a stock Debian kernel does not reach init \
                         in 10 minutes"
                            .into(),
                    )
                } else {
                    Some(format!(
                        "needs a KVM that runs guest kernel code itself; {}",
                        self.module_desc()
                    ))
                }
            }
            "nested" => {
                let m = ["kvm_intel", "kvm_amd"]
                    .into_iter()
                    .find(|m| self.has_module(m));
                match m {
                    Some(m) => match self.param(&format!("{m}.nested")) {
                        Some("Y" | "1") => None,
                        v => Some(format!(
                            "needs nested virtualization: {m} is loaded with nested={} \
                             (modprobe {m} nested=1)",
                            v.unwrap_or("?")
                        )),
                    },
                    None => Some(format!(
                        "needs nested virtualization (kvm_intel or kvm_amd with nested=1); {}",
                        self.module_desc()
                    )),
                }
            }
            "tap" => self
                .tap
                .as_ref()
                .err()
                .map(|e| format!("needs a tap device: {e}")),
            "netns" => self
                .netns
                .as_ref()
                .err()
                .map(|e| format!("needs a network namespace: {e}")),
            "dnsmasq" if self.kernel32 && self.dnsmasq.is_none() => {
                Some(format!("needs dnsmasq: {I386_L1_NET}"))
            }
            "dnsmasq" => self
                .dnsmasq
                .is_none()
                .then(|| "needs dnsmasq (apt-get install dnsmasq-base)".into()),
            "seabios" => self
                .seabios
                .is_none()
                .then(|| "needs SeaBIOS bios-256k.bin (apt-get install seabios)".into()),
            "ipxe" => self
                .ipxe
                .is_none()
                .then(|| "needs the iPXE virtio ROM (apt-get install ipxe-qemu)".into()),
            other => Some(format!(
                "needs '{other}', a capability the probe does not know (xtask/src/probe.rs)"
            )),
        }
    }

    /// The readable report of `--probe`.
    pub fn report(&self, classes: &[String]) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let res = |r: &Result<(), String>| match r {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("no: {e}"),
        };
        let opt = |o: &Option<PathBuf>, hint: &str| match o {
            Some(p) => p.display().to_string(),
            None => format!("missing ({hint})"),
        };
        let mut s = String::new();
        let mut line = |k: &str, v: String| {
            let _ = writeln!(s, "{k:<14} {v}");
        };
        line(
            "cpu",
            format!(
                "{} ({}); vmx: {}, svm: {}, under a hypervisor: {}",
                if self.cpu_model.is_empty() {
                    "unknown"
                } else {
                    &self.cpu_model
                },
                self.cpu_vendor,
                yes(self.vmx),
                yes(self.svm),
                yes(self.hypervisor)
            ),
        );
        line(
            "kvm modules",
            if self.modules.is_empty() {
                "none loaded".into()
            } else {
                self.modules.join(", ")
            },
        );
        line(
            "kvm params",
            if self.params.is_empty() {
                "(no ept/npt/nested parameters)".into()
            } else {
                self.params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        );
        let paging = match self.tdp_param() {
            Some((m, p, on)) => format!(
                "{} ({m} {p}={})",
                if on { "tdp" } else { "shadow" },
                if on { "Y" } else { "N" }
            ),
            None if self.has_module("kvm_pvm") => "shadow (kvm_pvm: always)".into(),
            None => "unknown".into(),
        };
        line("paging", paging);
        line("/dev/kvm", res(&self.dev_kvm));
        line("root", yes(self.root).into());
        line("netns", res(&self.netns));
        line("tap", res(&self.tap));
        line(
            "dnsmasq",
            opt(&self.dnsmasq, "apt-get install dnsmasq-base"),
        );
        line("seabios", opt(&self.seabios, "apt-get install seabios"));
        line("ipxe", opt(&self.ipxe, "apt-get install ipxe-qemu"));
        line(
            "qemu",
            opt(
                &self.qemu,
                "peer and svm-tcg L1: apt-get install qemu-system-x86",
            ),
        );
        line(
            "svm-tcg",
            if self.tcg && self.svm && self.kernel32 {
                "this is the svm-tcg-i386 L1 (QEMU TCG's SVM, Debian's 32-bit kernel): its \
                 cells run here"
                    .to_string()
            } else if self.tcg && self.svm {
                "this is an svm-tcg L1 (QEMU TCG's SVM): its cells run here".to_string()
            } else {
                match crate::svm_tcg::unavailable(self) {
                    None => "available: test-matrix boots a Linux L1 with kvm_amd under QEMU TCG \
                             for the svm-tcg cells (amd64 kernel) and the svm-tcg-i386 cells \
                             (Debian's 32-bit kernel)"
                        .to_string(),
                    Some(why) => format!("unavailable: {why}"),
                }
            },
        );
        for (t, p, present) in &self.fugu {
            line(
                &format!("fugu {}", t.short()),
                format!(
                    "{} ({})",
                    p.display(),
                    if *present { "present" } else { "not built yet" }
                ),
            );
        }
        for (n, a, p, present) in &self.guests {
            line(
                &format!("guest {n}"),
                format!(
                    "{a}: {} ({})",
                    p.display(),
                    if *present { "present" } else { "not built yet" }
                ),
            );
        }
        line(
            "images",
            if self.images.is_empty() {
                "none in target/images/out/ (cargo xtask images)".into()
            } else {
                format!("target/images/out/: {}", self.images.join(" "))
            },
        );
        let (have, lack): (Vec<&str>, Vec<&str>) =
            CAPABILITIES.iter().partition(|c| self.missing(c).is_none());
        line(
            "capabilities",
            format!("{} (lacks: {})", have.join(" "), lack.join(" ")),
        );
        line(
            "host classes",
            if classes.is_empty() {
                "none: every cell is SKIP here".into()
            } else {
                classes.join(" ")
            },
        );
        s
    }
}

/// Whether a kernel architecture (`uname -m`, /proc/sys/kernel/arch) is 32-bit x86.
pub fn kernel_is_32bit(arch: &str) -> bool {
    matches!(arch, "i386" | "i486" | "i586" | "i686")
}

/// Where `cargo xtask build` puts the debug fugu binary for `t`.
pub fn fugu_path(t: Target) -> PathBuf {
    let target = util::root().join("target");
    if t == Target::build_host() {
        target.join("debug").join("fugu")
    } else {
        target
            .join(t.short())
            .join(t.triple())
            .join("debug")
            .join("fugu")
    }
}

/// A program on PATH, or in the sbin directories a non-root PATH may lack.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file());
    found
}

fn quiet(c: &mut Command) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", util::describe(c)))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            util::describe(c),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn probe_netns(root: bool) -> Result<(), String> {
    if !root {
        return Err("not root".into());
    }
    if which("unshare").is_none() {
        return Err("unshare is missing (util-linux)".into());
    }
    quiet(Command::new("unshare").args(["--net", "true"]))
}

/// Create and delete a tap inside a throwaway network namespace: nothing on the host changes.
fn probe_tap() -> Result<(), String> {
    if which("ip").is_none() {
        return Err("ip is missing (iproute2)".into());
    }
    quiet(Command::new("unshare").args([
        "--net",
        "sh",
        "-c",
        "ip tuntap add dev fuguprobe0 mode tap && ip link set fuguprobe0 up && ip link del fuguprobe0",
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(name: &str, cpu_flags: &str, modules: &[(&str, &[(&str, &str)])]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fugu-probe-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        std::fs::write(
            dir.join("proc/cpuinfo"),
            format!("vendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: fpu {cpu_flags} lm\n\nflags\t\t: ignored vmx\n"),
        )
        .unwrap();
        for (m, params) in modules {
            let pd = dir.join("sys/module").join(m).join("parameters");
            std::fs::create_dir_all(&pd).unwrap();
            for (k, v) in *params {
                std::fs::write(pd.join(k), format!("{v}\n")).unwrap();
            }
        }
        dir
    }

    #[test]
    fn pvm_host_skips_hardware_cells_with_reasons() {
        let d = fake_root("pvm", "hypervisor", &[("kvm", &[]), ("kvm_pvm", &[])]);
        let mut p = Probe::from_files(&d);
        p.dev_kvm = Ok(());
        assert!(!p.vmx && !p.svm && p.hypervisor);
        assert_eq!(p.vendor_module(), Some("kvm_pvm"));
        assert_eq!(
            p.missing("vmx").unwrap(),
            "needs VMX; host has no hardware virtualization (KVM module kvm_pvm)"
        );
        assert!(p
            .missing("svm")
            .unwrap()
            .starts_with("needs SVM; host has no"));
        assert!(p
            .missing("tdp")
            .unwrap()
            .contains("kvm_pvm always uses shadow"));
        assert_eq!(p.missing("shadow"), None);
        assert_eq!(p.missing("pvm"), None);
        assert_eq!(p.missing("kvm"), None);
        assert!(p.missing("paging32").unwrap().contains("kvm_pvm cannot"));
        assert!(p.missing("warp-drive").unwrap().contains("does not know"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn intel_host_paging_follows_ept_parameter() {
        let d = fake_root(
            "intel",
            "vmx",
            &[
                ("kvm", &[]),
                ("kvm_intel", &[("ept", "N"), ("nested", "Y")]),
            ],
        );
        let p = Probe::from_files(&d);
        assert!(p.vmx);
        assert_eq!(p.param("kvm_intel.nested"), Some("Y"));
        assert_eq!(p.tdp_param(), Some(("kvm_intel", "ept", false)));
        assert_eq!(p.missing("vmx"), None);
        assert_eq!(p.missing("shadow"), None);
        assert_eq!(p.missing("paging32"), None);
        assert!(p.missing("tdp").unwrap().contains("ept=N"));
        assert_eq!(p.missing("svm").unwrap(), "needs SVM; host has VMX instead");
        assert!(p.missing("pvm").unwrap().contains("kvm_intel"));
        assert!(p.missing("kvm").unwrap().contains("not probed"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn vmx_cpu_without_module_says_so() {
        let d = fake_root("nomod", "vmx", &[]);
        let p = Probe::from_files(&d);
        assert!(p
            .missing("vmx")
            .unwrap()
            .contains("kvm_intel is not loaded"));
        assert!(p.report(&[]).contains("none loaded"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn every_need_in_the_definition_is_a_known_capability() {
        let def = crate::matrix_def::load().unwrap();
        for (_, needs) in &def.needs {
            for n in needs {
                assert!(CAPABILITIES.contains(&n.as_str()), "unknown need {n}");
            }
        }
    }

    #[test]
    fn hosts_without_vmx_or_svm_or_with_kvm_pvm_emulate_guest_kernels() {
        let mut p = Probe {
            vmx: true,
            ..Probe::default()
        };
        assert!(!p.emulates_guest_kernel());
        p.modules.push("kvm_pvm".into());
        assert!(p.emulates_guest_kernel());
        assert!(Probe::default().emulates_guest_kernel());
    }

    #[test]
    fn the_i386_l1_is_told_apart_from_the_amd64_one() {
        let d = fake_root(
            "i386l1",
            "svm",
            &[("kvm", &[]), ("kvm_amd", &[("npt", "Y")])],
        );
        std::fs::write(
            d.join("proc/cpuinfo"),
            "vendor_id\t: AuthenticAMD\nmodel name\t: QEMU TCG CPU version 2.5+\nflags\t\t: fpu svm npt\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("proc/sys/kernel")).unwrap();
        std::fs::write(d.join("proc/sys/kernel/arch"), "i686\n").unwrap();
        let p = Probe::from_files(&d);
        assert!(p.tcg && p.svm && p.kernel32);
        assert_eq!(p.missing("svm-tcg-i386"), None);
        assert!(p
            .missing("svm-tcg")
            .unwrap()
            .contains("this is the i386 one"));
        assert!(p.missing("svm").unwrap().contains("QEMU TCG"));
        assert!(p.missing("dnsmasq").unwrap().contains("i386 busybox"));
        assert_eq!(p.missing("tdp"), None);

        std::fs::write(d.join("proc/sys/kernel/arch"), "x86_64\n").unwrap();
        let amd64 = Probe::from_files(&d);
        assert!(!amd64.kernel32);
        assert_eq!(amd64.missing("svm-tcg"), None);
        assert!(amd64
            .missing("svm-tcg-i386")
            .unwrap()
            .contains("this is the amd64 svm-tcg L1"));
        assert!(Probe::default()
            .missing("svm-tcg-i386")
            .unwrap()
            .contains("not in one"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn kernel_arches_of_32_bit_x86() {
        assert!(kernel_is_32bit("i686") && kernel_is_32bit("i386"));
        assert!(!kernel_is_32bit("x86_64") && !kernel_is_32bit(""));
    }
}
