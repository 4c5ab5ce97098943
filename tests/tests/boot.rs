//! Tiny guests booted by both fugu builds: serial output and the debug-exit status.

use fugu_e2e::{fugu_builds, guest, run_fugu, tempdir};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn multiboot_guest_in_protected_mode_on_both_builds() {
    let g = guest("hello32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--kernel", g.to_str().unwrap(), "--cmdline", "marker-42"], T);
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        assert!(o.serial.contains("fugu-guest: hello from 32-bit protected mode"), "{build}: {o:?}");
        assert!(o.serial.contains("fugu-guest: cmdline=marker-42"), "{build}: cmdline not passed: {o:?}");
    }
}

#[test]
fn elf64_guest_in_long_mode_on_both_builds() {
    let g = guest("hello64");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--kernel", g.to_str().unwrap()], T);
        assert_eq!(o.status, Some(65), "{build}: {o:?}");
        assert!(o.serial.contains("fugu-guest: paging and long mode active"), "{build}: {o:?}");
    }
}

#[test]
fn both_backends_agree_on_x86_64() {
    let (_, bin) = fugu_builds().into_iter().find(|(b, _)| *b == "x86_64").unwrap();
    for g in ["hello32", "hello64"] {
        let g = guest(g);
        let a = run_fugu(&bin, &["run", "--backend", "rust-vmm", "--kernel", g.to_str().unwrap()], T);
        let b = run_fugu(&bin, &["run", "--backend", "portable", "--kernel", g.to_str().unwrap()], T);
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
        let o = run_fugu(&bin, &["run", "--kernel", guest("hello32").to_str().unwrap(), "--memory", "1M"], T);
        assert_eq!(o.status, Some(4), "{o:?}");
        let o = run_fugu(&bin, &["run", "--no-such-option"], T);
        assert_eq!(o.status, Some(2), "{o:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
