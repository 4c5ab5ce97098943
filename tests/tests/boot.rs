//! Tiny guests booted by both fugu builds: serial output and the debug-exit status.

use fugu_e2e::{fugu_builds, guest, host_emulates_kernel_code, run_fugu, tempdir};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn multiboot_guest_in_protected_mode_on_both_builds() {
    let g = guest("hello32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--kernel",
                g.to_str().unwrap(),
                "--cmdline",
                "marker-42",
            ],
            T,
        );
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        assert!(
            o.serial
                .contains("fugu-guest: hello from 32-bit protected mode"),
            "{build}: {o:?}"
        );
        // argv[0] is the kernel's path as given, then the arguments (QEMU's -kernel
        // convention for Multiboot kernels).
        let line = format!("fugu-guest: cmdline={} marker-42\n", g.to_str().unwrap());
        assert!(
            o.serial.contains(&line),
            "{build}: the Multiboot command line is not \"PATH ARGS\": {o:?}"
        );
        assert_eq!(
            o.stderr, "",
            "{build}: a clean debug exit printed on stderr"
        );
    }
}

#[test]
fn elf64_guest_in_long_mode_on_both_builds() {
    let g = guest("hello64");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--kernel", g.to_str().unwrap()], T);
        assert_eq!(o.status, Some(65), "{build}: {o:?}");
        assert!(
            o.serial.contains("fugu-guest: paging and long mode active"),
            "{build}: {o:?}"
        );
    }
}

#[test]
fn both_backends_agree_on_x86_64() {
    let (_, bin) = fugu_builds()
        .into_iter()
        .find(|(b, _)| *b == "x86_64")
        .unwrap();
    for g in ["hello32", "hello64"] {
        let g = guest(g);
        let a = run_fugu(
            &bin,
            &[
                "run",
                "--backend",
                "rust-vmm",
                "--kernel",
                g.to_str().unwrap(),
            ],
            T,
        );
        let b = run_fugu(
            &bin,
            &[
                "run",
                "--backend",
                "portable",
                "--kernel",
                g.to_str().unwrap(),
            ],
            T,
        );
        assert_eq!(a.status, b.status);
        assert_eq!(a.serial, b.serial);
        assert!(a.status.is_some());
    }
}

#[test]
fn malformed_kernels_are_clear_errors_not_panics() {
    let dir = tempdir();
    let good = std::fs::read(guest("hello32")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", vec![0x5a; 4096]),
        ("truncated-elf", good[..100].to_vec()),
        ("bad-elf-class", {
            let mut b = good.clone();
            b[4] = 9;
            b
        }),
    ];
    for (build, bin) in fugu_builds() {
        for (name, bytes) in &cases {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let o = run_fugu(&bin, &["run", "--kernel", p.to_str().unwrap()], T);
            assert_eq!(o.status, Some(4), "{build} {name}: {o:?}");
            assert!(o.stderr.contains("fugu: error:"), "{build} {name}: {o:?}");
            assert!(!o.stderr.contains("panicked"), "{build} {name}: {o:?}");
        }
        let o = run_fugu(&bin, &["run", "--kernel", "/nonexistent/kernel"], T);
        assert_eq!(o.status, Some(4));
        assert!(o.stderr.contains("/nonexistent/kernel"), "{o:?}");
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--kernel",
                guest("hello32").to_str().unwrap(),
                "--memory",
                "1M",
            ],
            T,
        );
        // Too little RAM is a command-line mistake (issue 17 defect 16).
        assert_eq!(o.status, Some(2), "{o:?}");
        let o = run_fugu(&bin, &["run", "--no-such-option"], T);
        assert_eq!(o.status, Some(2), "{o:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpl0_traps_and_x87_complete_on_both_builds() {
    let g = guest("traps32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "-v", "--kernel", g.to_str().unwrap()], T);
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        for m in [
            "int3 delivered #BP after the instruction",
            "ud2 delivered #UD at the instruction",
            "int 0x21 and int 8 delivered through the IDT",
            "fwait and fnclex completed",
            "traps ok",
        ] {
            assert!(o.serial.contains(m), "{build}: missing '{m}': {o:?}");
        }
        if host_emulates_kernel_code() {
            assert!(
                o.stderr
                    .contains("completed instructions the host could not emulate"),
                "{build}: host adaptation did not report its work with -v: {o:?}"
            );
        }
        let quiet = run_fugu(&bin, &["run", "--kernel", g.to_str().unwrap()], T);
        assert_eq!(quiet.status, Some(33), "{build}: {quiet:?}");
        assert_eq!(quiet.stderr, "", "{build}: a clean end is silent");
    }
}

/// The leaf-1 ECX the guest printed ("cpuid 1 ecx=XXXXXXXX").
fn leaf1_ecx(serial: &str) -> Option<u32> {
    let at = serial.find("cpuid 1 ecx=")? + "cpuid 1 ecx=".len();
    u32::from_str_radix(serial.get(at..at + 8)?, 16).ok()
}

/// CPUID honesty (issue 18): every instruction whose feature the guest sees runs (XGETBV
/// with x87 enabled in XCR0, CLWB, INVPCID, RDPRU), on both builds; `--cpu-features` removes
/// a bit every host honours (x2apic), refuses unknown names, and says when an addition is
/// not offered or a removal is ignored by the host.
#[test]
fn cpuid_shows_only_what_runs_and_cpu_features_edit_it() {
    let g = guest("cpuid32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--kernel", g.to_str().unwrap()], T);
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        assert!(o.serial.contains("fugu-guest: cpuid ok"), "{build}: {o:?}");
        assert_eq!(o.stderr, "", "{build}: a clean end is silent");
        let ecx = leaf1_ecx(&o.serial).expect("leaf 1 printed");
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--kernel",
                g.to_str().unwrap(),
                "--cpu-features=-x2apic,-hypervisor",
            ],
            T,
        );
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        let edited = leaf1_ecx(&o.serial).expect("leaf 1 printed");
        assert_eq!(edited, ecx & !((1 << 21) | (1 << 31)), "{build}: {o:?}");
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--kernel",
                g.to_str().unwrap(),
                "--cpu-features",
                "+warp_drive",
            ],
            T,
        );
        assert_eq!(o.status, Some(2), "{build}: {o:?}");
        assert!(
            o.stderr.contains("unknown CPU feature 'warp_drive'"),
            "{o:?}"
        );
        if host_emulates_kernel_code() {
            let o = run_fugu(
                &bin,
                &[
                    "run",
                    "--kernel",
                    g.to_str().unwrap(),
                    "--cpu-features=-sse4.2",
                ],
                T,
            );
            assert_eq!(o.status, Some(33), "{build}: {o:?}");
            assert!(
                o.stderr.contains("the guest still sees it"),
                "{build}: {o:?}"
            );
        }
    }
}

#[test]
fn without_host_adaptation_unemulated_instructions_are_reported_with_rip_and_bytes() {
    let g = guest("traps32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--host-compat",
                "off",
                "--kernel",
                g.to_str().unwrap(),
            ],
            T,
        );
        if host_emulates_kernel_code() {
            assert_eq!(o.status, Some(6), "{build}: {o:?}");
            assert!(o.stderr.contains("internal error"), "{build}: {o:?}");
            assert!(o.stderr.contains("stopped at RIP 0x"), "{build}: {o:?}");
        } else {
            assert_eq!(o.status, Some(33), "{build}: {o:?}");
        }
    }
}

#[test]
fn several_vcpus_boot_and_sigterm_ends_the_vm_with_130() {
    let g = guest("hello32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(
            &bin,
            &["run", "--cpus", "4", "--kernel", g.to_str().unwrap()],
            T,
        );
        assert_eq!(o.status, Some(33), "{build} with 4 vCPUs: {o:?}");
        // A guest that never exits: the application processors wait for SIPI forever and the
        // boot CPU spins in a loop; SIGTERM must end fugu with 130.
        let spin = fugu_e2e::tempdir().join("spin.elf");
        std::fs::write(&spin, spin_kernel()).unwrap();
        let mut child = std::process::Command::new(&bin)
            .args([
                "run",
                "--serial",
                "none",
                "--kernel",
                spin.to_str().unwrap(),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{build}: spin guest exited early"
        );
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{build}");
    }
}

/// A Multiboot a.out-kludge kernel that spins: `jmp $`.
fn spin_kernel() -> Vec<u8> {
    aout_kernel(&[0xeb, 0xfe])
}

/// A Multiboot a.out-kludge kernel loaded at 1 MiB whose entry (1 MiB + 32) runs `code`.
fn aout_kernel(code: &[u8]) -> Vec<u8> {
    let (magic, flags) = (0x1BAD_B002u32, 0x0001_0002u32);
    let base = 0x10_0000u32;
    let mut b = Vec::new();
    for w in [
        magic,
        flags,
        0u32.wrapping_sub(magic).wrapping_sub(flags),
        base,
        base,
        0,
        0,
        base + 32,
    ] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b.extend_from_slice(code);
    b
}

#[test]
fn i8042_reset_and_triple_fault_end_the_vm_with_their_statuses() {
    let dir = tempdir();
    // mov al, 0xfe; out 0x64, al; jmp $
    let reset = dir.join("reset.elf");
    std::fs::write(&reset, aout_kernel(&[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe])).unwrap();
    // lidt [empty descriptor]; ud2  -> #UD with no IDT -> #DF -> triple fault
    let tf = dir.join("triple.elf");
    let desc = 0x10_0000u32 + 32 + 9;
    let mut code = vec![0x0f, 0x01, 0x1d];
    code.extend_from_slice(&desc.to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x0b, 0, 0, 0, 0, 0, 0]);
    std::fs::write(&tf, aout_kernel(&code)).unwrap();
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--kernel", reset.to_str().unwrap()], T);
        assert_eq!(o.status, Some(0), "{build}: {o:?}");
        assert!(o.stderr.contains("reset"), "{build}: {o:?}");
        let o = run_fugu(&bin, &["run", "--kernel", tf.to_str().unwrap()], T);
        assert_eq!(o.status, Some(6), "{build}: {o:?}");
        assert!(o.stderr.contains("triple-fault"), "{build}: {o:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn thirty_two_bit_paging_works_or_is_reported_as_a_host_limit() {
    // mov dword [0x200000], 0x83 (a 4 MiB identity page); CR4.PSE; CR3 = 0x200000; CR0.PG;
    // then report success through port 0xf4.
    let code = [
        0xc7, 0x05, 0x00, 0x00, 0x20, 0x00, 0x83, 0x00, 0x00, 0x00, // mov [0x200000], 0x83
        0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x10, 0x0f, 0x22, 0xe0, // cr4 |= PSE
        0xb8, 0x00, 0x00, 0x20, 0x00, 0x0f, 0x22, 0xd8, // cr3 = 0x200000
        0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, // cr0 |= PG
        0xb0, 0x10, 0xe6, 0xf4, 0xeb, 0xfe, // out 0xf4, 0x10; jmp $
    ];
    let dir = tempdir();
    let k = dir.join("paging32.elf");
    std::fs::write(&k, aout_kernel(&code)).unwrap();
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--kernel", k.to_str().unwrap()], T);
        if host_emulates_kernel_code() {
            assert_eq!(o.status, Some(6), "{build}: {o:?}");
            assert!(
                o.stderr.contains("cannot run 32-bit paging"),
                "{build}: {o:?}"
            );
        } else {
            assert_eq!(o.status, Some(33), "{build}: {o:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
