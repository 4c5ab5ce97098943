//! The repo's tiny test guests (images/guests/*.S): assembled and linked with the system's GNU
//! toolchain into target/guests/. Used by the tests, the matrix and the images command.

use crate::util::{self, capture, step, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One tiny guest: its source, and how to assemble and link it.
pub struct Guest {
    pub name: &'static str,
    pub source: &'static str,
    /// "i386" or "amd64": the guest architecture.
    pub arch: &'static str,
    /// What the guest prints when it succeeds.
    pub marker: &'static str,
    /// fugu's exit status when the guest reports success through port 0xf4.
    pub success_status: i32,
}

pub const GUESTS: &[Guest] = &[
    Guest {
        name: "hello32",
        source: "hello32.S",
        arch: "i386",
        marker: "fugu-guest: hello from 32-bit protected mode",
        success_status: 33,
    },
    Guest {
        name: "traps32",
        source: "traps32.S",
        arch: "i386",
        marker: "fugu-guest: traps ok",
        success_status: 33,
    },
    Guest {
        // Prints its CPUID feature leaves and runs XGETBV, CLWB, INVPCID, RDPRU where shown.
        name: "cpuid32",
        source: "cpuid32.S",
        arch: "i386",
        marker: "fugu-guest: cpuid ok",
        success_status: 33,
    },
    Guest {
        name: "hello64",
        source: "hello64.S",
        arch: "amd64",
        marker: "fugu-guest: paging and long mode active",
        success_status: 65,
    },
    Guest {
        // Reads the ACPI tables as an OS does, then powers off through PM1a_CNT (status 0).
        name: "acpi32",
        source: "acpi32.S",
        arch: "i386",
        marker: "fugu-guest: acpi ok, powering off through PM1a_CNT",
        success_status: 0,
    },
    Guest {
        // Needs `--disk IMG` whose sector 1 starts with "fugu-test-sector".
        name: "virtio32",
        source: "virtio32.S",
        arch: "i386",
        marker: "fugu-guest: virtio-blk ok",
        success_status: 33,
    },
    Guest {
        // virtio32's program in long mode (virtio64.S includes virtio32.S).
        name: "virtio64",
        source: "virtio64.S",
        arch: "amd64",
        marker: "fugu-guest: virtio-blk ok",
        success_status: 33,
    },
    Guest {
        // Needs `--net` on a tap whose host side answers its 0x88b5 frame.
        name: "virtnet32",
        source: "virtnet32.S",
        arch: "i386",
        marker: "fugu-guest: frame from the host received, virtio-net ok",
        success_status: 33,
    },
    Guest {
        // virtnet32 as the virtio-net benchmark: full-size frames, 20000 rounds with a host
        // side that answers every frame (`cargo xtask bench`, virtio-net-rr).
        name: "netbench32",
        source: "netbench32.S",
        arch: "i386",
        marker: "fugu-guest: netbench done",
        success_status: 33,
    },
    Guest {
        // virtnet32's program in long mode (virtnet64.S includes virtnet32.S).
        name: "virtnet64",
        source: "virtnet64.S",
        arch: "amd64",
        marker: "fugu-guest: frame from the host received, virtio-net ok",
        success_status: 33,
    },
];

/// A boot program for the firmware checks (`fugu run --bios`): images/guests/mbr.S assembled
/// as a flat binary for 0:7C00 (target/guests/NAME.bin). MBRs go on a disk image as its first
/// sectors; NBPs are served over TFTP.
pub struct BootProgram {
    pub name: &'static str,
    /// Preprocessor switches for mbr.S.
    pub defines: &'static [&'static str],
    /// "i386" or "amd64": the mode the program ends in.
    pub arch: &'static str,
    /// What the program prints last when it succeeds.
    pub marker: &'static str,
    /// fugu's exit status when the program reports success through port 0xf4.
    pub success_status: i32,
}

/// The files in images/guests/ a boot program is assembled from: mbr.S and what it includes
/// (the virtio checks of the tiny guests among them). Rebuilds and image provenance use it.
pub const BOOT_PROGRAM_SOURCES: [&str; 5] = [
    "mbr.S",
    "common.inc",
    "virtio32.S",
    "virtnet32.S",
    "console.inc",
];

pub const BOOT_PROGRAMS: &[BootProgram] = &[
    BootProgram {
        name: "mbr-i386",
        defines: &[],
        arch: "i386",
        marker: "fugu-boot: i386 protected mode ok",
        success_status: 33,
    },
    BootProgram {
        name: "mbr-amd64",
        defines: &["-DLONG"],
        arch: "amd64",
        marker: "fugu-boot: amd64 long mode ok",
        success_status: 65,
    },
    BootProgram {
        name: "nbp-i386",
        defines: &["-DNBP"],
        arch: "i386",
        marker: "fugu-boot: i386 protected mode ok",
        success_status: 33,
    },
    BootProgram {
        name: "nbp-amd64",
        defines: &["-DNBP", "-DLONG"],
        arch: "amd64",
        marker: "fugu-boot: amd64 long mode ok",
        success_status: 65,
    },
];

/// The Debian packages the firmware checks use: SeaBIOS, iPXE's ROMs, and dnsmasq (DHCP and
/// TFTP for the network boot).
pub const FIRMWARE_DEBS: &[&str] = &["seabios", "ipxe-qemu", "dnsmasq-base"];

/// Assemble the boot programs (when mbr.S changed); returns (program, .bin path).
pub fn build_boot_programs() -> Result<Vec<(&'static BootProgram, PathBuf)>> {
    util::ensure_debs(
        &["gcc-multilib", "binutils"],
        "assembling the boot programs",
    )?;
    // The firmware itself is needed to run them, not to build them: a host that cannot
    // install it still builds, and the checks that need it say what is missing.
    if let Err(e) = ensure_firmware() {
        step(format!("note: {}", e.msg));
    }
    let src = util::root().join("images").join("guests");
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    let deps = BOOT_PROGRAM_SOURCES.map(|f| src.join(f));
    let mut built = Vec::new();
    for p in BOOT_PROGRAMS {
        let bin = out.join(format!("{}.bin", p.name));
        if bin.exists() && deps.iter().all(|d| newer(&bin, d)) {
            built.push((p, bin));
            continue;
        }
        step(format!("assembling boot program {}", p.name));
        let obj = out.join(format!("{}.o", p.name));
        // 16-bit code first: assembled as i386 (the long-mode part uses .code64 and 32-bit
        // absolute addresses only), linked flat at 0x7C00.
        let (ok, log) = capture(
            Command::new("gcc")
                .args(["-m32", "-c", "-nostdlib", "-I"])
                .arg(&src)
                .args(p.defines)
                .arg("-o")
                .arg(&obj)
                .arg(src.join("mbr.S")),
        )?;
        if !ok {
            return Err(Error::fail(format!("assembling {}:\n{log}", p.name)));
        }
        let (ok, log) = capture(
            Command::new("ld")
                .args([
                    "-m",
                    "elf_i386",
                    "-n",
                    "--build-id=none",
                    "-Ttext",
                    "0x7c00",
                    "-e",
                    "_start",
                    "--oformat",
                    "binary",
                    "-o",
                ])
                .arg(&bin)
                .arg(&obj),
        )?;
        if !ok {
            return Err(Error::fail(format!("linking {}:\n{log}", p.name)));
        }
        built.push((p, bin));
    }
    Ok(built)
}

/// Install the firmware packages when possible (root); otherwise the firmware tests and
/// matrix cells report what is missing.
pub fn ensure_firmware() -> Result {
    util::ensure_debs(FIRMWARE_DEBS, "the firmware boot checks (fugu run --bios)")
}

pub fn out_dir() -> PathBuf {
    util::root().join("target").join("guests")
}

fn newer(a: &Path, b: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(a), m(b)), (Some(x), Some(y)) if x > y)
}

/// Assemble every guest (when its sources changed); returns (guest, ELF path).
pub fn build_all() -> Result<Vec<(&'static Guest, PathBuf)>> {
    util::ensure_debs(&["gcc-multilib", "binutils"], "assembling the tiny guests")?;
    let src = util::root().join("images").join("guests");
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    let deps: Vec<PathBuf> = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut built = Vec::new();
    for g in GUESTS {
        let s = src.join(g.source);
        let elf = out.join(format!("{}.elf", g.name));
        // Guests include each other's sources (virtio64.S includes virtio32.S), so any change
        // in the directory rebuilds every guest; there are few and they assemble in moments.
        if elf.exists() && deps.iter().all(|d| newer(&elf, d)) {
            built.push((g, elf));
            continue;
        }
        step(format!("assembling guest {}", g.name));
        let obj = out.join(format!("{}.o", g.name));
        let (m, emul) = if g.arch == "i386" {
            ("-m32", "elf_i386")
        } else {
            ("-m64", "elf_x86_64")
        };
        let (ok, log) = capture(
            Command::new("gcc")
                .args([m, "-c", "-nostdlib", "-I"])
                .arg(&src)
                .arg("-o")
                .arg(&obj)
                .arg(&s),
        )?;
        if !ok {
            return Err(Error::fail(format!("assembling {}:\n{log}", s.display())));
        }
        let (ok, log) = capture(
            Command::new("ld")
                .args([
                    "-m",
                    emul,
                    "--no-warn-rwx-segments",
                    "-n",
                    "--build-id=none",
                    "-T",
                ])
                .arg(src.join("guest.ld"))
                .arg("-o")
                .arg(&elf)
                .arg(&obj),
        )?;
        if !ok {
            return Err(Error::fail(format!("linking {}:\n{log}", g.name)));
        }
        built.push((g, elf));
    }
    build_boot_programs()?;
    Ok(built)
}
