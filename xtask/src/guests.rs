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
        name: "hello64",
        source: "hello64.S",
        arch: "amd64",
        marker: "fugu-guest: paging and long mode active",
        success_status: 65,
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
        // virtnet32's program in long mode (virtnet64.S includes virtnet32.S).
        name: "virtnet64",
        source: "virtnet64.S",
        arch: "amd64",
        marker: "fugu-guest: frame from the host received, virtio-net ok",
        success_status: 33,
    },
];

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
    let mut built = Vec::new();
    for g in GUESTS {
        let s = src.join(g.source);
        let elf = out.join(format!("{}.elf", g.name));
        let deps = [s.clone(), src.join("common.inc"), src.join("guest.ld")];
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
    Ok(built)
}
