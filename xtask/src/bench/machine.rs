//! The machine a benchmark ran on, recorded with its figures.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let l = s.lines().find(|l| l.starts_with(key))?;
    Some(l.split_once(':').map_or(l, |(_, v)| v).trim().to_string())
}

/// The 1/5/15-minute load averages: other work on the machine makes every figure noisier.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(super) fn machine() -> serde_json::Value {
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
