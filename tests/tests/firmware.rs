//! Booting through a BIOS (`fugu run --bios`) with both fugu builds: SeaBIOS (Debian's
//! `seabios`) loads the repo's MBR (images/guests/mbr.S) from a virtio-blk disk; the MBR reads
//! its stage with INT 13h, prints its markers over COM1 and exits through port 0xf4 from
//! 32-bit protected mode (i386 variant) or 64-bit long mode (amd64 variant). Failures (a
//! missing or wrong firmware file, an unbootable disk) end with a clear message and a
//! non-zero status, never a hang.
//!
//! Network boot (iPXE from Debian's `ipxe-qemu` as the virtio-net option ROM, dnsmasq serving
//! DHCP and TFTP on a tap in a network namespace) is `net_boot_*`: iPXE gets a lease, fetches
//! the repo's network boot program (nbp-i386, nbp-amd64) and runs it; with no DHCP server
//! iPXE gives up and fugu ends with status 8.

use fugu_e2e::{fugu_builds, run_fugu, tempdir};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// SeaBIOS takes ~20 s to reach the boot device on these hosts (its real-mode and 32-bit
/// code is emulated by the host's KVM); allow for a loaded machine.
const T: Duration = Duration::from_secs(240);
/// A network boot runs SeaBIOS, then iPXE's init, DHCP and TFTP, all emulated here: ~80 s on
/// an idle host, over 200 s seen on a loaded 2-core CI machine.
const NET_BOOT_TIMEOUT: &str = "480";
/// iPXE gives up on DHCP by itself in one to two minutes here (53 s by hand, 104 s in a test
/// run of 3 December, both on an idle machine); a boot still running after this stalled.
const NO_DHCP_TIMEOUT: &str = "360";
const T_NET: Duration = Duration::from_secs(540);
const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// The firmware tests need SeaBIOS; a missing prerequisite fails the test rather than
/// passing it unrun (`cargo xtask test` installs it as root).
fn have_seabios() -> bool {
    assert!(
        Path::new(SEABIOS).is_file(),
        "{SEABIOS} is missing: install Debian package seabios (cargo xtask test does, as root)"
    );
    true
}

/// A boot program from target/guests (built by the xtask).
fn boot_program(name: &str) -> PathBuf {
    let dir = std::env::var_os("FUGU_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("FUGU_GUESTS_DIR is not set: run through `cargo xtask test`"));
    let p = dir.join(format!("{name}.bin"));
    assert!(p.exists(), "boot program {} is missing", p.display());
    p
}

/// A 1 MiB disk image starting with `program`.
fn disk_with(dir: &Path, program: &Path) -> PathBuf {
    let mut d = std::fs::read(program).unwrap();
    d.resize(1 << 20, 0);
    let p = dir.join("boot.img");
    std::fs::write(&p, d).unwrap();
    p
}

fn disk_boot(variant: &str, status: i32, marker: &str) {
    if !have_seabios() {
        return;
    }
    let prog = boot_program(&format!("mbr-{variant}"));
    for (build, bin) in fugu_builds() {
        let dir = tempdir();
        let img = disk_with(&dir, &prog);
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--bios",
                "--disk",
                img.to_str().unwrap(),
                "--boot",
                "disk",
                "--memory",
                "64M",
                "--boot-timeout",
                "200",
            ],
            T,
        );
        // The virtio check wrote its sector beyond the stage (sector 32) on the host file.
        let disk = std::fs::read(&img).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(o.status, Some(status), "{build}/{variant}: {o:?}");
        for m in [
            "SeaBIOS (version",
            "fugu-mbr: loaded by the BIOS, boot drive 0x80",
            "fugu-mbr: stage read with INT 13h",
            "fugu-boot: in 32-bit protected mode",
            marker,
            // The repo's virtio-blk check, run from that mode on the boot disk.
            "fugu-guest: read sector 1 ok",
            "fugu-guest: wrote a sector beyond the stage, flushed, read it back",
            "fugu-guest: descriptor loop -> NEEDS_RESET, resetting",
            "fugu-guest: virtio-blk ok",
        ] {
            assert!(o.serial.contains(m), "{build}/{variant}: no '{m}': {o:?}");
        }
        assert_eq!(
            &disk[32 * 512..32 * 512 + 16],
            b"fugu-guest-wrote",
            "{build}/{variant}"
        );
    }
}

#[test]
fn disk_boot_i386_reaches_protected_mode_on_both_builds() {
    disk_boot("i386", 33, "fugu-boot: i386 protected mode ok");
}

#[test]
fn disk_boot_amd64_reaches_long_mode_on_both_builds() {
    disk_boot("amd64", 65, "fugu-boot: amd64 long mode ok");
}

/// A published image tree as `cargo xtask images publish` writes it for the boot programs:
/// `index.json`, `mbr-amd64/disk.img` (kind bios-disk) and `nbp-amd64/nbp-amd64.pxe` (pxe).
fn publish_boot_programs(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let sha = |p: &Path| {
        let o = std::process::Command::new("sha256sum")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()[..64].to_string()
    };
    let mut entries = Vec::new();
    for (name, kind, role, file, data) in [
        (
            "mbr-amd64",
            "bios-disk",
            "disk",
            "disk.img",
            std::fs::read(disk_with(dir, &boot_program("mbr-amd64"))).unwrap(),
        ),
        (
            "nbp-amd64",
            "pxe",
            "nbp",
            "nbp-amd64.pxe",
            std::fs::read(boot_program("nbp-amd64")).unwrap(),
        ),
    ] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let p = dir.join(name).join(file);
        std::fs::write(&p, &data).unwrap();
        entries.push(format!(
            r#"{{"name": "{name}", "arch": "amd64", "kind": "{kind}", "description": "",
               "revision": 1, "created": "2026-01-01T00:00:00Z", "min_fugu_version": "0.1.0",
               "cmdline": "", "files": [{{"role": "{role}", "path": "{name}/{file}",
               "size": {}, "sha256": "{}", "compression": "none"}}],
               "provenance": {{"recipe": "images/{name}.image", "recipe_sha256": "",
               "packages": []}}}}"#,
            data.len(),
            sha(&p)
        ));
    }
    let index = dir.join("index.json");
    std::fs::write(
        &index,
        format!(
            r#"{{"format": "fugu-image-index", "format_version": 1,
               "created": "2026-01-01T00:00:00Z", "images": [{}]}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
    index
}

/// `fugu image pull mbr-amd64` then `fugu run --image mbr-amd64`: an image of kind bios-disk
/// boots through SeaBIOS from its disk (as `--bios --disk FILE,ro --boot disk`), and the
/// cached disk stays as pulled. `fugu run --image nbp-amd64` (kind pxe) is refused with what
/// to do instead: serve it by DHCP/TFTP and boot with `--net tap=... --boot net`.
#[test]
fn bios_disk_images_boot_through_the_bios_and_pxe_images_are_refused() {
    if !have_seabios() {
        return;
    }
    for (build, bin) in fugu_builds() {
        let dir = tempdir();
        let index = publish_boot_programs(&dir.join("pub"));
        let cache = dir.join("cache");
        let index_s = index.to_str().unwrap();
        let cache_s = cache.to_str().unwrap();
        let pull = std::process::Command::new(&bin)
            .args(["image", "--index", index_s, "--cache", cache_s])
            // What is tested here is booting the images; the index's signature has its own
            // tests (vmm/src/image/tests.rs, tests/tests/release.rs).
            .arg("--insecure-skip-signature")
            .args(["pull", "mbr-amd64", "nbp-amd64"])
            .output()
            .unwrap();
        assert!(pull.status.success(), "{build}: {pull:?}");
        let env = [("FUGU_IMAGE_CACHE", cache.as_path())];
        let o = fugu_e2e::run_fugu_env(
            &bin,
            &[
                "run",
                "--image",
                "mbr-amd64",
                "--memory",
                "64M",
                "--boot-timeout",
                "200",
            ],
            &env,
            T,
        );
        assert_eq!(o.status, Some(65), "{build}: {o:?}");
        for m in [
            "SeaBIOS (version",
            "fugu-mbr: loaded by the BIOS, boot drive 0x80",
            "fugu-boot: amd64 long mode ok",
            // `--image` attaches the cached disk read-only: the check reads, skips writing.
            "fugu-guest: read-only disk, write steps skipped",
            "fugu-guest: virtio-blk ok",
        ] {
            assert!(o.serial.contains(m), "{build}: no '{m}': {o:?}");
        }
        let verify = std::process::Command::new(&bin)
            .args(["image", "--cache", cache_s, "verify"])
            .output()
            .unwrap();
        assert!(verify.status.success(), "{build}: {verify:?}");

        let o = fugu_e2e::run_fugu_env(&bin, &["run", "--image", "nbp-amd64"], &env, T);
        assert_eq!(o.status, Some(4), "{build}: {o:?}");
        for m in ["network boot program", "DHCP/TFTP", "--boot net"] {
            assert!(o.stderr.contains(m), "{build}: no '{m}': {o:?}");
        }
        assert!(o.serial.is_empty(), "{build}: nothing ran: {o:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn an_unbootable_disk_ends_with_status_8_not_a_hang() {
    if !have_seabios() {
        return;
    }
    for (build, bin) in fugu_builds() {
        let dir = tempdir();
        let img = dir.join("blank.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--bios",
                "--disk",
                img.to_str().unwrap(),
                "--boot",
                "disk",
                "--memory",
                "64M",
            ],
            T,
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(o.status, Some(8), "{build}: {o:?}");
        assert!(o.serial.contains("No bootable device"), "{build}: {o:?}");
        assert!(
            o.stderr.contains("the firmware found nothing to boot"),
            "{build}: {o:?}"
        );
    }
}

#[test]
fn firmware_file_problems_are_clear_errors() {
    let dir = tempdir();
    let garbage = dir.join("garbage.bin");
    std::fs::write(&garbage, vec![0x5a; 256 << 10]).unwrap();
    let short = dir.join("short.bin");
    std::fs::write(&short, b"not a bios").unwrap();
    let img = dir.join("d.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    for (build, bin) in fugu_builds() {
        let o = run_fugu(&bin, &["run", "--bios", "/nonexistent/bios.bin"], T);
        assert_eq!(o.status, Some(4), "{build}: {o:?}");
        assert!(
            o.stderr.contains("/nonexistent/bios.bin") && o.stderr.contains("seabios"),
            "{build}: {o:?}"
        );
        for bad in [&garbage, &short] {
            let o = run_fugu(&bin, &["run", "--bios", bad.to_str().unwrap()], T);
            assert_eq!(o.status, Some(4), "{build}: {o:?}");
            assert!(o.stderr.contains("is not a BIOS image"), "{build}: {o:?}");
            assert!(!o.stderr.contains("panicked"), "{build}: {o:?}");
        }
        // --boot needs the device it names; --bios and --kernel exclude each other.
        // (Command-line mistakes: status 2, issue 17 defect 16.)
        let o = run_fugu(&bin, &["run", "--bios", "--boot", "net"], T);
        assert_eq!(o.status, Some(2), "{build}: {o:?}");
        assert!(o.stderr.contains("--boot net needs"), "{build}: {o:?}");
        let o = run_fugu(
            &bin,
            &["run", "--bios", "--kernel", img.to_str().unwrap()],
            T,
        );
        assert_eq!(o.status, Some(2), "{build}: {o:?}");
        // A missing option ROM names its package.
        let o = run_fugu(
            &bin,
            &[
                "run",
                "--bios",
                "--net",
                "tap=fgnone0",
                "--net-rom",
                "/nonexistent/x.rom",
            ],
            T,
        );
        assert_eq!(o.status, Some(4), "{build}: {o:?}");
        assert!(o.stderr.contains("ipxe-qemu"), "{build}: {o:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace with a tap (host side 10.77.0.1/24) and, with `nbp`, dnsmasq serving
/// DHCP and TFTP on it (boot file `nbp`). Torn down on drop.
struct NetBootHost {
    ns: String,
    dnsmasq: Option<std::process::Child>,
    dir: PathBuf,
}

impl NetBootHost {
    fn start(tag: &str, nbp: Option<&Path>) -> NetBootHost {
        let ns = format!("fugu-fw-{}-{tag}", std::process::id());
        let dir = tempdir();
        assert!(ip(&["netns", "add", &ns]), "ip netns add {ns}");
        let mut h = NetBootHost {
            ns: ns.clone(),
            dnsmasq: None,
            dir: dir.clone(),
        };
        for cmd in [
            &["tuntap", "add", "fgfw0", "mode", "tap"][..],
            &["link", "set", "fgfw0", "up"],
            &["addr", "add", "10.77.0.1/24", "dev", "fgfw0"],
        ] {
            let mut a = vec!["netns", "exec", &ns, "ip"];
            a.extend_from_slice(cmd);
            assert!(ip(&a), "ip {cmd:?}");
        }
        if let Some(nbp) = nbp {
            let name = nbp.file_name().unwrap().to_str().unwrap().to_string();
            std::fs::copy(nbp, dir.join(&name)).unwrap();
            let child = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "dnsmasq",
                    "--no-daemon",
                    "--conf-file=/dev/null",
                ])
                .args([
                    "--port=0",
                    "--interface=fgfw0",
                    "--bind-interfaces",
                    "--leasefile-ro",
                ])
                .arg("--dhcp-range=10.77.0.10,10.77.0.50,1h")
                .arg(format!("--dhcp-boot={name}"))
                .arg("--enable-tftp")
                .arg(format!("--tftp-root={}", dir.display()))
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            h.dnsmasq = Some(child);
        }
        h
    }

    fn fugu(&self, bin: &Path, extra: &[&str]) -> fugu_e2e::Outcome {
        let mut args = vec!["netns", "exec", &self.ns, bin.to_str().unwrap()];
        args.extend_from_slice(&[
            "run",
            "--bios",
            "--net",
            "tap=fgfw0",
            "--boot",
            "net",
            "--memory",
            "64M",
        ]);
        args.extend_from_slice(extra);
        run_fugu(&PathBuf::from("ip"), &args, T_NET)
    }
}

impl Drop for NetBootHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        ip(&["netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn can_net_boot() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ip(&["netns", "list"])
        && std::process::Command::new("dnsmasq")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let rom = Path::new("/usr/lib/ipxe/qemu/pxe-virtio.rom").is_file();
    assert!(
        root && tools && rom && have_seabios(),
        "network boot tests need root, iproute2, dnsmasq and ipxe-qemu (cargo xtask test installs them, as root)"
    );
    true
}

#[test]
fn net_boot_with_ipxe_and_dnsmasq_on_both_builds() {
    if !can_net_boot() {
        return;
    }
    for (build, bin) in fugu_builds() {
        for (variant, status, marker) in [
            ("i386", 33, "fugu-boot: i386 protected mode ok"),
            ("amd64", 65, "fugu-boot: amd64 long mode ok"),
        ] {
            let nbp = boot_program(&format!("nbp-{variant}"));
            let boot = || {
                let host = NetBootHost::start(&format!("{build}-{variant}"), Some(&nbp));
                // The program's virtio-net check sends a frame from the guest's NIC and waits
                // for the answer from this responder on the tap (beside dnsmasq).
                let responder = fugu_e2e::frame_responder(&host.ns, "fgfw0", T_NET);
                let o = host.fugu(&bin, &["--boot-timeout", NET_BOOT_TIMEOUT]);
                (o, responder.join().unwrap())
            };
            let (mut o, mut seen) = boot();
            // On a host whose KVM emulates guest kernel code (about 2 M instructions/s for
            // iPXE, less under load), iPXE's mode switches now and then meet an interrupt the
            // host's emulator delivers with a frame fugu cannot complete (an IRET it does not
            // find), its DHCP gives up before the exchange is through ("No configuration
            // methods succeeded"), or it stalls in "Configuring" until --boot-timeout: the
            // host's, seen under load. One more boot tells it from a fugu regression, which
            // fails every time; it is said here.
            let host_flake = o.status != Some(status);
            if host_flake && fugu_e2e::host_emulates_kernel_code() {
                eprintln!(
                    "{build}/{variant}: the emulating host's iPXE flake; booting again: {o:?}"
                );
                (o, seen) = boot();
            }
            // iPXE, the option ROM, ran from the NIC's expansion-ROM BAR, got a lease from
            // dnsmasq and fetched the program over TFTP.
            assert!(o.serial.contains("iPXE"), "{build}/{variant}: {o:?}");
            assert!(
                o.serial.contains("net0: 10.77.0."),
                "{build}/{variant}: {o:?}"
            );
            assert_eq!(o.status, Some(status), "{build}/{variant}: {o:?}");
            for m in [
                "fugu-nbp: started by PXE",
                marker,
                "fugu-guest: frame from the host received, virtio-net ok",
            ] {
                assert!(o.serial.contains(m), "{build}/{variant}: no '{m}': {o:?}");
            }
            let mac = seen.unwrap_or_else(|e| panic!("{build}/{variant}: responder: {e}"));
            let mac_text: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
            assert!(
                o.serial.contains(&format!(
                    "fugu-guest: virtio-net mac {}",
                    mac_text.join(":")
                )),
                "{build}/{variant}: the frame came from {mac_text:?}: {o:?}"
            );
        }
    }
}

#[test]
fn no_dhcp_answer_ends_non_zero_in_bounded_time() {
    if !can_net_boot() {
        return;
    }
    for (build, bin) in fugu_builds() {
        let boot = || {
            let host = NetBootHost::start(&format!("nodhcp-{build}"), None);
            host.fugu(&bin, &["--boot-timeout", NO_DHCP_TIMEOUT])
        };
        let mut o = boot();
        // The emulating host's iPXE now and then stalls in "Configuring" until
        // --boot-timeout instead of giving up (see the network-boot test above; a CI run of
        // 3 December saw it here, dots for 480 s): one more boot, said here, tells it from a
        // fugu regression, which fails every time.
        let gave_up = o.serial.contains("No configuration methods");
        if !gave_up && fugu_e2e::host_emulates_kernel_code() {
            eprintln!("{build}: the emulating host's iPXE stalled; booting again: {o:?}");
            o = boot();
        }
        // iPXE gives up, the BIOS finds nothing else (bootorder HALT) and reboots: status 8.
        assert_eq!(o.status, Some(8), "{build}: {o:?}");
        // "No configuration methods succeeded (http://ipxe.org/040ee119)", wrapped at 80
        // columns on the console.
        assert!(
            o.serial.contains("No configuration methods") && o.serial.contains("040ee119"),
            "{build}: {o:?}"
        );
    }
}
