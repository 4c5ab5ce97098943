//! The nested check's second initramfs: what a Debian guest needs to run fugu itself (the
//! cell's own build, with the shared libraries it links, at their usual paths), a tiny guest
//! for that fugu to boot (the L3), and the command that boots it (/nested/run). fugu appends
//! it to the image's initramfs (a second --initrd); images/check/init runs it with
//! `fugu.check=nested` after loading KVM's modules.

use crate::images::cpio::{Archive, Entry};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tiny guest the L2's fugu boots, its marker and its exit status (xtask/src/guests.rs).
pub(super) const L3_GUEST: &str = "hello64";

/// The second initramfs for `fugu` (the cell's build) booting `guest` (an ELF) with status
/// `status` expected; the cpio's bytes.
pub(super) fn initramfs(fugu: &Path, guest: &Path, status: u8) -> Result<Vec<u8>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut a = Archive::new();
    a.add(
        "nested/fugu",
        Entry::File {
            data: without_debug_info(fugu)?,
            exec: true,
        },
    );
    for lib in shared_libraries(fugu)? {
        // The library's bytes (ldd names it through symlinks), at the path the loader asks
        // for: the guest's root is the image's initramfs, with no /usr to link into.
        let data = read(&lib)?;
        let at = lib.to_string_lossy().trim_start_matches('/').to_string();
        a.add(&at, Entry::File { data, exec: true });
    }
    a.add(
        "nested/guest.elf",
        Entry::File {
            data: read(guest)?,
            exec: false,
        },
    );
    a.add(
        "nested/run",
        Entry::File {
            data: RUN.as_bytes().to_vec(),
            exec: true,
        },
    );
    a.add(
        "nested/expect-status",
        Entry::File {
            data: format!("{status}\n").into_bytes(),
            exec: false,
        },
    );
    Ok(a.to_bytes(0))
}

/// `bin` without its symbols and debug sections (`strip --strip-all`): a debug build's are most of
/// its size, and the guest unpacks the initramfs into its RAM.
fn without_debug_info(bin: &Path) -> Result<Vec<u8>, String> {
    let out = std::env::temp_dir().join(format!(
        "fugu-nested-{}-{}",
        std::process::id(),
        bin.file_name().and_then(|n| n.to_str()).unwrap_or("bin")
    ));
    let o = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .output()
        .map_err(|e| format!("strip {}: {e} (Debian package binutils)", bin.display()))?;
    let data = std::fs::read(&out);
    let _ = std::fs::remove_file(&out);
    if !o.status.success() {
        return Err(format!(
            "strip --strip-all {}: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    data.map_err(|e| format!("{}: {e}", out.display()))
}

/// How the L2 runs its guest: fugu as an operator would, the serial port on the L2's console
/// (which is the cell's serial log), the guest's status as fugu's.
const RUN: &str = "#!/bin/busybox sh\n\
    # The nested check's L3 (written by xtask/src/test_matrix/runner/nested.rs).\n\
    exec /nested/fugu run --kernel /nested/guest.elf --memory 16M --serial stdio\n";

/// The shared libraries `bin` loads, the dynamic loader included (ldd's absolute paths).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, String> {
    let o = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("ldd {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        // A static binary: nothing to bring.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&o.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(format!(
            "ldd {}: {}{}",
            bin.display(),
            text,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let libs = ldd_paths(&text);
    if let Some(missing) = text.lines().find(|l| l.contains("not found")) {
        return Err(format!("{}: {}", bin.display(), missing.trim()));
    }
    Ok(libs)
}

/// The absolute paths in ldd's output: "name => /path (0x...)" and "/loader (0x...)".
fn ldd_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let p = l.split_once("=> ").map_or(l, |(_, p)| p);
            let p = p.split(" (").next().unwrap_or("").trim();
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn the_nested_initramfs_carries_fugu_its_libraries_the_guest_and_the_command() {
        let fugu = std::env::current_exe().unwrap();
        let size = std::fs::metadata(&fugu).unwrap().len();
        let dir = std::env::temp_dir().join(format!("fugu-nested-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let guest = dir.join("g.elf");
        std::fs::write(&guest, b"\x7fELF guest").unwrap();
        let cpio = initramfs(&fugu, &guest, 65).unwrap();
        // A test binary of a debug build: its debug sections stayed behind.
        assert!((cpio.len() as u64) < size, "{} >= {size}", cpio.len());
        let text = String::from_utf8_lossy(&cpio);
        for name in [
            "nested/fugu",
            "nested/guest.elf",
            "nested/run",
            "nested/expect-status",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("exec /nested/fugu run --kernel /nested/guest.elf"));
        assert!(text.contains("65\n"));
        // This test binary is dynamic: its C library and loader come along.
        assert!(text.contains("libc.so.6"), "no libc in the archive");
        assert!(text.contains("ld-linux"), "no loader in the archive");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
