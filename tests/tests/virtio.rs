//! PCI, virtio-blk and virtio-net seen from guests, booted by both fugu builds: virtio32
//! (32-bit, no paging) and virtio64 (long mode) enumerate PCI, read the sector this test
//! wrote, write one back, flush, survive a hostile descriptor loop and exit through port
//! 0xf4; virtnet32 sends a frame that the host side of a tap (in a network namespace)
//! receives and answers.

use fugu_e2e::{fugu_builds, guest, run_fugu, tempdir, Outcome};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// A 32 KiB raw image: sector n is filled with n, sector 1 starts with the marker.
fn image(dir: &std::path::Path) -> std::path::PathBuf {
    let mut d = Vec::new();
    for s in 0..64u8 {
        d.extend(std::iter::repeat_n(s, 512));
    }
    d[512..528].copy_from_slice(b"fugu-test-sector");
    let p = dir.join("disk.img");
    std::fs::write(&p, d).unwrap();
    p
}

#[test]
fn guest_reads_and_writes_a_virtio_disk_on_both_builds() {
    for (build, bin, name) in fugu_builds()
        .into_iter()
        .flat_map(|(b, p)| ["virtio32", "virtio64"].map(|g| (b, p.clone(), g)))
    {
        let g = guest(name);
        let build = format!("{build}/{name}");
        let dir = tempdir();
        let img = image(&dir);
        let o = boot_with_disk(&bin, &g, &img);
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        for m in [
            "fugu-guest: pci 00:00.0 id 00081b36",
            "fugu-guest: pci 00:01.0 id 10011af4",
            "fugu-guest: read sector 1 ok",
            "fugu-guest: descriptor loop -> NEEDS_RESET, resetting",
            "fugu-guest: virtio-blk ok",
        ] {
            assert!(o.serial.contains(m), "{build}: no '{m}': {o:?}");
        }
        let d = std::fs::read(&img).unwrap();
        assert_eq!(&d[1024..1040], b"fugu-guest-wrote", "{build}");
        assert_eq!(&d[1040..1536], &[1u8; 496][..], "{build}: rest of sector 1");
        assert_eq!(
            &d[1536..2048],
            &[3u8; 512][..],
            "{build}: sector 3 untouched"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The same guest on a qcow2 overlay (`fugu disk create -b`) of the raw image: it reads the
/// base through the overlay, its write lands in the overlay, the base is untouched, and the
/// overlay passes `qemu-img check` and converts to the expected bytes (where qemu-img is).
#[test]
fn guest_uses_a_qcow2_overlay_on_both_builds() {
    for (build, bin) in fugu_builds() {
        let g = guest("virtio64");
        let dir = tempdir();
        let img = image(&dir);
        let base = std::fs::read(&img).unwrap();
        let ov = dir.join("ov.qcow2");
        let o = std::process::Command::new(&bin)
            .args(["disk", "create", ov.to_str().unwrap(), "-b", "disk.img"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{build}: {o:?}");
        let o = boot_with_disk(&bin, &g, &ov);
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        for m in ["fugu-guest: read sector 1 ok", "fugu-guest: virtio-blk ok"] {
            assert!(o.serial.contains(m), "{build}: no '{m}': {o:?}");
        }
        assert_eq!(std::fs::read(&img).unwrap(), base, "{build}: base changed");
        let info = std::process::Command::new(&bin)
            .args(["disk", "info", ov.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(info.status.success(), "{build}: {info:?}");
        assert!(
            text.contains("backing file: disk.img (format raw)"),
            "{build}: {text}"
        );
        let qi = std::process::Command::new("qemu-img")
            .arg("--version")
            .output();
        if qi.is_ok_and(|o| o.status.success()) {
            let check = std::process::Command::new("qemu-img")
                .args(["check", ov.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(check.status.success(), "{build}: {check:?}");
            let raw = dir.join("ov.raw");
            let conv = std::process::Command::new("qemu-img")
                .args(["convert", "-O", "raw", ov.to_str().unwrap()])
                .arg(&raw)
                .output()
                .unwrap();
            assert!(conv.status.success(), "{build}: {conv:?}");
            let d = std::fs::read(&raw).unwrap();
            assert_eq!(&d[1024..1040], b"fugu-guest-wrote", "{build}");
            assert_eq!(&d[1536..2048], &[3u8; 512][..], "{build}");
        } else {
            assert!(
                std::env::var_os("FUGU_REQUIRE_ALL").is_none(),
                "qemu-img is not installed (qemu-utils)"
            );
            eprintln!("SKIP qemu-img checks: qemu-img is not installed (qemu-utils)");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn read_only_disks_and_locked_images() {
    let g = guest("virtio32");
    for (build, bin) in fugu_builds() {
        let dir = tempdir();
        let img = image(&dir);
        let ro = format!("{},ro", img.display());
        let o = run_fugu(
            &bin,
            &["run", "--kernel", g.to_str().unwrap(), "--disk", &ro],
            T,
        );
        // The write fails with VIRTIO_BLK_S_IOERR: the guest exits with 0x13.
        assert_eq!(o.status, Some((0x13 << 1) | 1), "{build}: {o:?}");
        assert_eq!(
            &std::fs::read(&img).unwrap()[1024..1040],
            &[2u8; 16],
            "{build}"
        );

        // Hold the lock a running VM would hold: a second VM gets a clear error.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        // SAFETY: flock on a descriptor this test owns.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        assert_eq!(locked, 0);
        let o = boot_with_disk(&bin, &g, &img);
        assert_eq!(o.status, Some(4), "{build}: {o:?}");
        assert!(
            o.stderr.contains("is in use by another process"),
            "{build}: {o:?}"
        );
        drop(f);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn guest_exchanges_frames_over_a_tap_on_both_builds() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ip(&["netns", "list"]) {
        fugu_e2e::unmet("needs root and iproute2 (ip netns)");
        return;
    }
    for (build, bin, name) in fugu_builds()
        .into_iter()
        .flat_map(|(b, p)| ["virtnet32", "virtnet64"].map(|g| (b, p.clone(), g)))
    {
        let g = guest(name);
        let build = format!("{build}-{name}");
        let ns = format!("fugu-e2e-{}-{build}", std::process::id());
        assert!(ip(&["netns", "add", &ns]));
        assert!(ip(&[
            "netns", "exec", &ns, "ip", "tuntap", "add", "fgt0", "mode", "tap"
        ]));
        assert!(ip(&[
            "netns", "exec", &ns, "ip", "link", "set", "fgt0", "up"
        ]));
        let host = fugu_e2e::frame_responder(&ns, "fgt0", std::time::Duration::from_secs(90));
        let o = run_fugu(
            &std::path::PathBuf::from("ip"),
            &[
                "netns",
                "exec",
                &ns,
                bin.to_str().unwrap(),
                "run",
                "--kernel",
                g.to_str().unwrap(),
                "--net",
                "tap=fgt0,mac=52:54:00:e2:e2:01",
            ],
            T,
        );
        let seen = host.join().unwrap();
        ip(&["netns", "del", &ns]);
        assert_eq!(o.status, Some(33), "{build}: {o:?}");
        assert!(
            o.serial
                .contains("fugu-guest: virtio-net mac 52:54:00:e2:e2:01"),
            "{build}: {o:?}"
        );
        assert_eq!(seen, Ok([0x52, 0x54, 0, 0xe2, 0xe2, 1]), "{build}");
    }
}

#[test]
fn fugu_creates_a_missing_tap_and_removes_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !ip(&["netns", "list"]) {
        fugu_e2e::unmet("needs root and iproute2 (ip netns)");
        return;
    }
    let g = guest("virtio32");
    for (build, bin) in fugu_builds() {
        let ns = format!("fugu-e2e-tap-{}-{build}", std::process::id());
        assert!(ip(&["netns", "add", &ns]));
        // No disk: the guest finds no virtio-blk and exits with 0x11 once the tap is up.
        let o = run_fugu(
            &std::path::PathBuf::from("ip"),
            &[
                "netns",
                "exec",
                &ns,
                bin.to_str().unwrap(),
                "run",
                "--kernel",
                g.to_str().unwrap(),
                "--net",
                "tap=fugu-new0",
            ],
            T,
        );
        let gone = !ip(&["netns", "exec", &ns, "ip", "link", "show", "fugu-new0"]);
        ip(&["netns", "del", &ns]);
        assert_eq!(o.status, Some((0x11 << 1) | 1), "{build}: {o:?}");
        assert!(
            o.serial.contains("id 10001af4"),
            "{build}: the NIC is on PCI: {o:?}"
        );
        assert!(gone, "{build}: the tap fugu created is still there");
    }
}

/// Boot guest kernel `g` with `disk` as its virtio-blk disk.
fn boot_with_disk(
    bin: &std::path::PathBuf,
    g: &std::path::Path,
    disk: &std::path::Path,
) -> Outcome {
    run_fugu(
        bin,
        &[
            "run",
            "--kernel",
            g.to_str().unwrap(),
            "--disk",
            disk.to_str().unwrap(),
        ],
        T,
    )
}
