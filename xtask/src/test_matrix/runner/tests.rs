//! The runners' boots, checked without booting (and one judged with a fake fugu).

use super::*;
use crate::matrix_def;
use crate::netcheck;
use crate::probe::Probe;
use crate::test_matrix::exec::execute;
use crate::test_matrix::testutil::{cell_and_plan, reason, tmp};
use crate::test_matrix::{decide, Decision, Outcome};
use std::sync::atomic::AtomicBool;

#[test]
fn tiny_runner_fails_on_a_missing_image_or_build() {
    let def = matrix_def::load().unwrap();
    let c = def
        .cells()
        .into_iter()
        .find(|c| c.id() == "pvm/shadow/x86_64/i386/tiny-direct/boot")
        .unwrap();
    let plan = def.plan(&c);
    let d = tmp("runner");
    let mut arts = Artifacts {
        log_dir: d.clone(),
        ..Artifacts::default()
    };
    arts.fugu
        .insert("x86_64".into(), Ok(PathBuf::from("/bin/true")));
    arts.guests
        .insert("hello32".into(), Ok(d.join("hello32.elf")));
    let e = Runner::TinyBoot.spec(&c, &plan, &arts, None).unwrap_err();
    assert!(e.starts_with("missing image"), "{e}");
    std::fs::write(d.join("hello32.elf"), b"\x7fELF").unwrap();
    let spec = Runner::TinyBoot.spec(&c, &plan, &arts, Some(7)).unwrap();
    assert_eq!((spec.expect_status, spec.timeout.as_secs()), (33, 7));
    assert!(spec
        .serial_log
        .ends_with("pvm-shadow-x86_64-i386-tiny-direct-boot.serial.log"));
    arts.fugu.insert(
        "x86_64".into(),
        Err("building fugu for x86_64 failed".into()),
    );
    assert!(Runner::TinyBoot
        .spec(&c, &plan, &arts, None)
        .unwrap_err()
        .contains("building"));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn the_in_house_column_runs_the_x86_64_build_on_the_portable_backend() {
    assert_eq!(
        build_of("x86_64-portable"),
        Some((Target::X86_64, Some("portable")))
    );
    assert_eq!(build_of("x86_64"), Some((Target::X86_64, None)));
    assert_eq!(build_of("i686"), Some((Target::I686, None)));
    assert_eq!(build_of("arm64"), None);
    let def = matrix_def::load().unwrap();
    let d = tmp("portable-runner");
    let mut arts = Artifacts {
        log_dir: d.clone(),
        ..Artifacts::default()
    };
    arts.fugu
        .insert("x86_64-portable".into(), Ok(PathBuf::from("/usr/bin/fugu")));
    arts.guests
        .insert("hello32".into(), Ok(d.join("hello32.elf")));
    std::fs::write(d.join("hello32.elf"), b"\x7fELF").unwrap();
    let (c, plan) = cell_and_plan(&def, "pvm/shadow/x86_64-portable/i386/tiny-direct/boot");
    let spec = Runner::TinyBoot.spec(&c, &plan, &arts, None).unwrap();
    assert_eq!(spec.program, PathBuf::from("/usr/bin/fugu"));
    assert_eq!(
        spec.args[..3],
        ["run", "--backend", "portable"].map(OsString::from)
    );
    // The 64-bit build, whichever backend: the 32-bit guest gets memory above 4 GiB.
    assert!(spec.args.iter().any(|a| a == "5G"));
    // The stock kernels and iPXE stay on the two builds (ci/matrix.def).
    for id in [
        "pvm/shadow/x86_64-portable/amd64/ipxe-net/virtio-net",
        "svm-tcg/tdp/x86_64-portable/amd64/debian-direct/virtio-disk",
    ] {
        assert!(!def.cells().iter().any(|c| c.id() == id), "{id}");
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn ipxe_runner_serves_the_cells_boot_program_over_tftp() {
    let def = matrix_def::load().unwrap();
    let d = tmp("ipxe-runner");
    let mut arts = Artifacts {
        log_dir: d.join("logs"),
        ..Artifacts::default()
    };
    arts.fugu
        .insert("i686".into(), Ok(PathBuf::from("/bin/true")));
    let (c, plan) = cell_and_plan(&def, "pvm/shadow/i686/amd64/ipxe-net/virtio-net");
    let e = Runner::IpxeNet.spec(&c, &plan, &arts, None).unwrap_err();
    assert!(e.starts_with("missing image"), "{e}");
    let bin = d.join("nbp-amd64.bin");
    std::fs::write(&bin, b"nbp bytes").unwrap();
    arts.guests.insert("nbp-amd64".into(), Ok(bin));
    let spec = Runner::IpxeNet.spec(&c, &plan, &arts, None).unwrap();
    let net = spec.net.clone().unwrap();
    let served = net.tftp_boot.clone().unwrap();
    assert_eq!(spec.files, vec![(served.clone(), b"nbp bytes".to_vec())]);
    assert!(served.starts_with(&arts.log_dir));
    assert_eq!(net.dhcp.as_deref(), Some(netcheck::DHCP_GUEST));
    assert_eq!(spec.expect_status, 65);
    assert!(spec
        .expect_markers
        .iter()
        .any(|m| m == "fugu-boot: amd64 long mode ok"));
    assert!(spec.expect_markers[0].contains(netcheck::DHCP_GUEST));
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for a in [
        "--bios",
        "net",
        &format!("tap={},mac={}", net.tap, net.mac_text()),
    ] {
        assert!(args.iter().any(|x| x == a), "{a}: {args:?}");
    }
    let dn = netcheck::dnsmasq_args(&net, &d);
    assert!(
        dn.contains(&"--dhcp-boot=nbp-amd64.bin".to_string()),
        "{dn:?}"
    );
    assert!(dn.contains(&format!(
        "--tftp-root={}",
        served.parent().unwrap().display()
    )));
    // iPXE's IPv6 configuration ends only on a router advertisement (netcheck's docs).
    assert!(dn.contains(&"--enable-ra".to_string()), "{dn:?}");
    assert!(dn.contains(&"--dhcp-option=encap:175,176,1b".to_string()));
    assert!(dn.contains(&format!("--dhcp-range={},ra-only", netcheck::PXE_RA_PREFIX)));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn debian_runner_boots_the_stock_kernel_with_its_initramfs_to_the_check() {
    let def = matrix_def::load().unwrap();
    let d = tmp("debian-runner");
    let mut arts = Artifacts {
        log_dir: d.join("logs"),
        images: d.join("images"),
        ..Artifacts::default()
    };
    arts.fugu
        .insert("i686".into(), Ok(PathBuf::from("/bin/true")));
    let (c, plan) = cell_and_plan(&def, "svm-tcg/shadow/i686/i386/debian-direct/virtio-disk");
    assert_eq!(plan.runner.as_deref(), Some("debian-linux"));
    assert_eq!(plan.level.as_deref(), Some("userspace"));
    for n in ["native-kernel", "paging32", "dnsmasq"] {
        assert!(plan.needs.iter().any(|x| x == n), "{n}: {:?}", plan.needs);
    }
    let e = Runner::DebianLinux
        .spec(&c, &plan, &arts, None)
        .unwrap_err();
    assert!(
        e.starts_with("missing image") && e.contains("disk.ext4"),
        "{e}"
    );
    let img = d.join("images/debian-i386");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::write(img.join("disk.ext4"), b"ext4").unwrap();
    std::fs::write(img.join("vmlinuz"), b"kernel").unwrap();
    let e = Runner::DebianLinux
        .spec(&c, &plan, &arts, None)
        .unwrap_err();
    assert!(e.contains("initramfs.cpio.gz"), "{e}");
    std::fs::write(img.join("initramfs.cpio.gz"), b"cpio").unwrap();
    let spec = Runner::DebianLinux.spec(&c, &plan, &arts, None).unwrap();
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let after = |f: &str| args[args.iter().position(|a| a == f).unwrap() + 1].clone();
    assert!(after("--kernel").ends_with("debian-i386/vmlinuz"));
    assert!(after("--initrd").ends_with("debian-i386/initramfs.cpio.gz"));
    assert!(after("--disk").starts_with(d.join("logs").to_str().unwrap()));
    assert!(
        after("--disk").ends_with(".disk.ext4"),
        "a raw disk is copied as such"
    );
    // The disk cell checks the MADT was used, waits for the power button, which the matrix
    // presses, and ends through ACPI power-off (status 0).
    assert!(after("--cmdline").contains("fugu.end=button"));
    // The emulated host's workarounds, in the cell's command line (stock_kernel_on_tcg).
    assert!(after("--cmdline").contains(" noxsave quiet"));
    assert!(
        spec.silence.is_some(),
        "svm-tcg guests that stop printing are hung"
    );
    assert_eq!(after("--cpus"), "1");
    assert_eq!(
        spec.press_power_button.as_deref(),
        Some("fugu-check: waiting for the power button")
    );
    assert_eq!(spec.expect_status, 0);
    assert!(spec.net.as_ref().is_some_and(|n| n.dhcp.is_some()));
    assert_eq!(
        spec.expect_markers,
        [
            "fugu-check: started as /init",
            "fugu-check: disk: marker ok",
            "fugu-check: PASS",
            "fugu-check: acpi: the kernel took its CPUs from the MADT (1 online)",
            "fugu-check: power button pressed, powering off"
        ]
    );
    // The network cell ends through port 0xf4; a qcow2 disk is preferred and copied as qcow2.
    std::fs::write(img.join("disk.qcow2"), b"QFI\xfb").unwrap();
    let (c, plan) = cell_and_plan(&def, "svm-tcg/shadow/i686/i386/debian-direct/virtio-net");
    let spec = Runner::DebianLinux.spec(&c, &plan, &arts, None).unwrap();
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let after = |f: &str| args[args.iter().position(|a| a == f).unwrap() + 1].clone();
    assert_eq!(spec.expect_status, 33);
    assert!(!after("--cmdline").contains("fugu.end"));
    assert!(after("--disk").ends_with(".disk.qcow2"));
    assert_eq!(spec.files[0].1, b"QFI\xfb");
    // kvm_pvm emulates guest kernel code: stock kernels SKIP there with the reason.
    let (c, plan) = cell_and_plan(&def, "pvm/shadow/i686/amd64/debian-direct/virtio-net");
    let mut p = Probe::default();
    p.modules.push("kvm_pvm".into());
    p.dev_kvm = Ok(());
    match decide(&plan, &p) {
        Decision::Skip(why) => assert!(why.contains("emulates"), "{why}"),
        other => panic!("{} -> {other:?}", c.id()),
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn linux_runner_fails_on_a_missing_image_and_boots_a_copy_of_the_disk() {
    let def = matrix_def::load().unwrap();
    let d = tmp("linux-runner");
    let mut arts = Artifacts {
        log_dir: d.join("logs"),
        images: d.join("images"),
        ..Artifacts::default()
    };
    arts.fugu
        .insert("x86_64".into(), Ok(PathBuf::from("/bin/true")));
    let (c, plan) = cell_and_plan(&def, "pvm/shadow/x86_64/amd64/linux-direct/virtio-disk");
    assert_eq!(plan.level.as_deref(), Some("kernel"));
    assert_eq!(plan.timeout_s, 600);
    let e = Runner::Linux.spec(&c, &plan, &arts, None).unwrap_err();
    assert!(
        e.starts_with("missing image: run cargo xtask images"),
        "{e}"
    );
    let img = d.join("images/linux-amd64");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::write(img.join("bzImage"), b"kernel").unwrap();
    let e = Runner::Linux.spec(&c, &plan, &arts, None).unwrap_err();
    assert!(
        e.starts_with("missing image") && e.contains("disk.ext4"),
        "{e}"
    );
    std::fs::write(img.join("disk.ext4"), b"ext4 image").unwrap();
    let spec = Runner::Linux.spec(&c, &plan, &arts, None).unwrap();
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(spec.expect_status, 0);
    assert_eq!(spec.timeout.as_secs(), 600);
    // On kvm_pvm a kernel decompresses for minutes without a line: only the timeout counts.
    assert!(spec.silence.is_none());
    assert!(spec.net.is_none());
    let cmdline = &args[args.iter().position(|a| a == "--cmdline").unwrap() + 1];
    assert!(cmdline.contains("root=/dev/vda rw rootfstype=ext4 panic=-1"));
    assert!(!cmdline.contains("ip=dhcp") && !args.iter().any(|a| a == "--initrd"));
    // The disk is a private copy in the log directory, never the built image itself.
    let disk = &args[args.iter().position(|a| a == "--disk").unwrap() + 1];
    assert!(disk.starts_with(d.join("logs").to_str().unwrap()), "{disk}");
    assert_eq!(
        spec.files,
        vec![(PathBuf::from(disk), b"ext4 image".to_vec())]
    );
    assert!(spec
        .expect_markers
        .contains(&"VFS: Mounted root (ext4 filesystem)".to_string()));

    let (c, plan) = cell_and_plan(&def, "pvm/shadow/i686/amd64/linux-direct/virtio-net");
    arts.fugu
        .insert("i686".into(), Ok(PathBuf::from("/bin/true")));
    let spec = Runner::Linux.spec(&c, &plan, &arts, Some(9)).unwrap();
    let net = spec.net.clone().unwrap();
    assert_eq!(net.dhcp.as_deref(), Some(netcheck::DHCP_GUEST));
    assert!(spec
        .args
        .iter()
        .any(|a| a.to_string_lossy().ends_with("ip=dhcp")));
    assert!(spec
        .args
        .iter()
        .any(|a| a.to_string_lossy() == format!("tap={},mac={}", net.tap, net.mac_text())));
    assert_eq!(
        spec.expect_markers,
        ["IP-Config: Complete", "ipaddr=10.78.0.15,"]
    );
    // A VMX host's cells require the userspace level: the disk's init (the image's check)
    // must report its verdict and exit through 0xf4, with the network up for both checks;
    // kernel messages alone and a SIGBUS after init are not enough there.
    for (id, mine) in [
        (
            "vmx/tdp/x86_64/amd64/linux-direct/virtio-disk",
            "fugu-check: disk: marker ok".to_string(),
        ),
        (
            "svm/shadow/i686/amd64/linux-direct/virtio-net",
            format!("fugu-check: network: lease {}/", netcheck::DHCP_GUEST),
        ),
    ] {
        let (c, plan) = cell_and_plan(&def, id);
        assert_eq!(plan.level.as_deref(), Some("userspace"));
        let spec = Runner::Linux.spec(&c, &plan, &arts, None).unwrap();
        assert_eq!(spec.expect_status, 33, "{id}");
        assert_eq!(
            spec.expect_markers,
            [
                "Run /sbin/init".to_string(),
                mine,
                "fugu-check: PASS".to_string()
            ]
        );
        assert!(spec.accept_after_init.is_none());
        assert_eq!(
            spec.net.as_ref().unwrap().dhcp.as_deref(),
            Some(netcheck::DHCP_GUEST)
        );
        let cmdline = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>();
        assert!(cmdline.iter().any(|a| a.contains("ip=dhcp")), "{cmdline:?}");
    }
    // An i386 cell boots linux-i386 (on VMX/SVM hosts; kvm_pvm lacks 32-bit paging).
    let (c, plan) = cell_and_plan(&def, "vmx/tdp/x86_64/i386/linux-direct/virtio-disk");
    let e = Runner::Linux.spec(&c, &plan, &arts, None).unwrap_err();
    assert!(e.contains("linux-i386"), "{e}");
    let img386 = d.join("images/linux-i386");
    std::fs::create_dir_all(&img386).unwrap();
    std::fs::write(img386.join("bzImage"), b"kernel").unwrap();
    std::fs::write(img386.join("disk.ext4"), b"ext4 image").unwrap();
    let spec = Runner::Linux.spec(&c, &plan, &arts, None).unwrap();
    assert!(spec
        .args
        .iter()
        .any(|a| a.to_string_lossy().ends_with("linux-i386/bzImage")));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn linux_cells_pass_only_on_the_kernels_own_lines() {
    let def = matrix_def::load().unwrap();
    let d = tmp("linux-judge");
    let img = d.join("images/linux-amd64");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::write(img.join("bzImage"), b"kernel").unwrap();
    std::fs::write(img.join("disk.ext4"), b"ext4 image").unwrap();
    let mut arts = Artifacts {
        log_dir: d.join("logs"),
        images: d.join("images"),
        ..Artifacts::default()
    };
    arts.fugu
        .insert("x86_64".into(), Ok(PathBuf::from("/bin/true")));
    let no = AtomicBool::new(false);
    // Fake fugu: write a serial log, then exit with a status.
    let judge = |id: &str, log: &str, status: i32| {
        let (c, plan) = cell_and_plan(&def, id);
        let mut spec = Runner::Linux.spec(&c, &plan, &arts, Some(20)).unwrap();
        spec.program = PathBuf::from("/bin/sh");
        spec.args = vec![
            "-c".into(),
            format!("printf '{log}' > \"$0\"; exit {status}").into(),
            spec.serial_log.clone().into(),
        ];
        spec.net = None;
        execute(&spec, &no)
    };
    let disk = "pvm/shadow/x86_64/amd64/linux-direct/virtio-disk";
    let mounted = "EXT4-fs (vda): mounted filesystem 1234 r/w.\\nVFS: Mounted root (ext4 filesystem) on device 254:0.\\nKernel panic - not syncing: Attempted to kill init!\\n";
    assert_eq!(judge(disk, mounted, 0), Outcome::Pass);
    let o = judge(
        disk,
        "VFS: Cannot open root device vda\\nKernel panic\\n",
        0,
    );
    assert!(reason(&o).contains("lacks 'EXT4-fs (vda)"), "{o:?}");
    let o = judge(disk, mounted, 6);
    assert!(reason(&o).contains("status 6"), "{o:?}");
    let net = "pvm/shadow/x86_64/amd64/linux-direct/virtio-net";
    let lease = "IP-Config: Complete:\\n     device=eth0, hwaddr=52:54:00:e2:4d:02, ipaddr=10.78.0.15, mask=255.255.255.0\\n";
    assert_eq!(judge(net, lease, 0), Outcome::Pass);
    let o = judge(
        net,
        "IP-Config: Complete:\\n ipaddr=10.78.0.150, mask\\n",
        0,
    );
    assert!(reason(&o).contains("lacks 'ipaddr=10.78.0.15,'"), "{o:?}");
    let o = judge(net, "IP-Config: Retrying forever (NFS root)...\\n", 0);
    assert!(reason(&o).contains("lacks 'IP-Config: Complete'"), "{o:?}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn runner_names_round_trip_and_say_what_they_need_built() {
    for r in Runner::ALL {
        assert_eq!(Runner::parse(r.name()), Some(r));
        // A runner boots the tiny guests and boot programs, or an image; only the Debian
        // runner both (its nested check's L3 is a tiny guest).
        assert!(r.needs_guests() || r.image("amd64").is_some(), "{r:?}");
        assert_eq!(
            r.needs_guests() && r.image("amd64").is_some(),
            r == Runner::DebianLinux,
            "{r:?}"
        );
    }
    assert_eq!(Runner::parse("no-such-runner"), None);
    assert_eq!(Runner::Linux.image("i386").as_deref(), Some("linux-i386"));
    assert_eq!(
        Runner::DebianLinux.image("amd64").as_deref(),
        Some("debian-amd64")
    );
    assert!(Runner::TinyVirtioNet.needs_guests() && Runner::IpxeNet.needs_guests());
}
