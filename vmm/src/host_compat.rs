//! Adapting guests to hosts whose KVM emulates guest kernel code (no VMX/SVM, e.g. the
//! `kvm_pvm` module; see DESIGN.md "The hosts"). Such a host shows the guest its own feature
//! bits whatever KVM_SET_CPUID2 says, and its instruction emulator lacks some instructions.
//! fugu therefore (1) passes Linux guests the kernel's own switches that avoid those features,
//! (2) presents a GenuineIntel CPU (AMD's FXSAVE-leak path runs FNCLEX), and (3) completes in
//! userspace the instructions no switch avoids (arch::x86::complete). None of this is applied
//! on VMX/SVM hosts unless asked for.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// Linux command-line switches for an emulating host (one list with the xtask's bench).
pub use fugu_common::host::LINUX_SWITCHES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    On,
    Off,
}

/// What the host's virtualization looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVirt {
    /// "vmx", "svm" or None when the CPU shows neither.
    pub hw: Option<&'static str>,
    /// Loaded KVM vendor modules (kvm_intel, kvm_amd, kvm_pvm).
    pub modules: Vec<String>,
}

impl HostVirt {
    pub fn probe() -> Self {
        Self::probe_at(Path::new("/proc/cpuinfo"), Path::new("/sys/module"))
    }

    pub fn probe_at(cpuinfo: &Path, sys_module: &Path) -> Self {
        let flags = std::fs::read_to_string(cpuinfo).unwrap_or_default();
        let flags = flags.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        let hw = if has("vmx") {
            Some("vmx")
        } else if has("svm") {
            Some("svm")
        } else {
            None
        };
        let modules = ["kvm_intel", "kvm_amd", "kvm_pvm"]
            .iter()
            .filter(|m| sys_module.join(m).exists())
            .map(|m| m.to_string())
            .collect();
        HostVirt { hw, modules }
    }

    /// Whether guest kernel code runs in KVM's emulator rather than in hardware.
    pub fn emulates_guest_kernel(&self) -> bool {
        self.modules.iter().any(|m| m == "kvm_pvm") || self.hw.is_none()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (KVM modules: {})",
            match self.hw {
                Some(h) => format!("hardware virtualization {h}"),
                None => "no VMX/SVM: KVM emulates guest kernel code".into(),
            },
            if self.modules.is_empty() {
                "none".into()
            } else {
                self.modules.join(", ")
            }
        )
    }
}

/// Decide whether host adaptation applies.
pub fn active(mode: Mode, host: &HostVirt) -> bool {
    match mode {
        Mode::On => true,
        Mode::Off => false,
        Mode::Auto => host.emulates_guest_kernel(),
    }
}

/// `cmdline` plus the switches it does not already set.
pub fn adapt_linux_cmdline(cmdline: &str) -> String {
    let mut out = cmdline.trim().to_string();
    for s in LINUX_SWITCHES {
        let key = s.split('=').next().unwrap_or(s);
        let present = cmdline
            .split_whitespace()
            .any(|w| w == *s || w.split('=').next() == Some(key));
        if !present {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
    }
    out
}

/// Counts of instructions fugu completed for the guest, for the exit report.
#[derive(Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    pub fn record(&self, name: &'static str) {
        *crate::sync::lock(&self.counts).entry(name).or_default() += 1;
    }
    pub fn summary(&self) -> Option<String> {
        let c = crate::sync::lock(&self.counts);
        if c.is_empty() {
            return None;
        }
        let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        Some(format!(
            "completed instructions the host could not emulate: {}",
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_fake_hosts() {
        let d = std::env::temp_dir().join(format!("fugu-hostcompat-{}", std::process::id()));
        let sys = d.join("module");
        std::fs::create_dir_all(sys.join("kvm_pvm")).unwrap();
        std::fs::write(
            d.join("cpuinfo"),
            "processor : 0\nflags : fpu sse2 hypervisor\n",
        )
        .unwrap();
        let h = HostVirt::probe_at(&d.join("cpuinfo"), &sys);
        assert_eq!(h.hw, None);
        assert_eq!(h.modules, vec!["kvm_pvm"]);
        assert!(h.emulates_guest_kernel());
        assert!(active(Mode::Auto, &h) && !active(Mode::Off, &h));
        std::fs::remove_dir_all(sys.join("kvm_pvm")).unwrap();
        std::fs::create_dir_all(sys.join("kvm_intel")).unwrap();
        std::fs::write(d.join("cpuinfo"), "flags : fpu vmx ept\n").unwrap();
        let h = HostVirt::probe_at(&d.join("cpuinfo"), &sys);
        assert_eq!(h.hw, Some("vmx"));
        assert!(!active(Mode::Auto, &h) && active(Mode::On, &h));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn adds_only_missing_switches() {
        let c = adapt_linux_cmdline("console=ttyS0 reboot=t nopcid");
        assert!(c.starts_with("console=ttyS0 reboot=t nopcid "));
        assert!(c.contains("noxsave") && c.contains("clearcpuid=308,141,158,151,"));
        assert_eq!(c.matches("reboot=").count(), 1, "the user's reboot= wins");
        assert_eq!(c.matches("nopcid").count(), 1);
        assert_eq!(adapt_linux_cmdline(&c), c, "idempotent");
    }
}
