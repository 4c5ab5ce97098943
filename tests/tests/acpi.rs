//! ACPI with both fugu builds: a guest finds and checks the tables, counts the CPUs in the
//! MADT, reads the PM timer and powers off through PM1a_CNT (status 0); SIGPWR presses the
//! power button; `--no-acpi` hides it all; and both builds generate the same tables.

use fugu_e2e::{fugu_builds, guest, run_fugu};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

#[test]
fn guest_reads_the_tables_and_powers_off_through_s5_on_both_builds() {
    let g = guest("acpi32");
    for (build, bin) in fugu_builds() {
        let o = run_fugu(
            &bin,
            &["run", "--cpus", "4", "--kernel", g.to_str().unwrap()],
            T,
        );
        assert_eq!(o.status, Some(0), "{build}: {o:?}");
        for line in [
            "fugu-guest: ACPI RSDP at 000e0000",
            "fugu-guest: ACPI table FACP",
            "fugu-guest: ACPI table APIC",
            "fugu-guest: ACPI table MCFG",
            "fugu-guest: ACPI table DSDT",
            "fugu-guest: MADT enabled local APICs: 04",
            "fugu-guest: acpi ok, powering off through PM1a_CNT",
        ] {
            assert!(o.serial.contains(line), "{build}: no '{line}': {o:?}");
        }
        // A clean end is silent: harnesses that treat stderr output as a failure see a pass.
        assert_eq!(o.stderr, "", "{build}: a clean power-off printed on stderr");
        let o = run_fugu(
            &bin,
            &["run", "--verbose", "--kernel", g.to_str().unwrap()],
            T,
        );
        assert_eq!(o.status, Some(0), "{build} --verbose: {o:?}");
        assert!(
            o.stderr.contains("fugu: guest powered off"),
            "{build}: {o:?}"
        );

        let o = run_fugu(
            &bin,
            &["run", "--no-acpi", "--kernel", g.to_str().unwrap()],
            T,
        );
        assert_eq!(o.status, Some(35), "{build} --no-acpi: {o:?}");
        assert!(o.serial.contains("FAIL no RSDP"), "{build}: {o:?}");
    }
}

#[test]
fn sigpwr_presses_the_power_button_on_both_builds() {
    let g = guest("acpi32");
    for (build, bin) in fugu_builds() {
        let dir = fugu_e2e::tempdir();
        let serial = dir.join("serial.log");
        let mut child = std::process::Command::new(&bin)
            .args(["run", "--cmdline", "button", "--kernel"])
            .arg(&g)
            .arg("--serial")
            .arg(&serial)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains("waiting for the power button")
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{build}: the guest ended before waiting for the button"
            );
            assert!(start.elapsed() < T, "{build}: the guest never waited");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: sending SIGPWR to our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGPWR) };
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(&serial).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{build}: {log}");
        assert!(
            log.contains("fugu-guest: power button pressed"),
            "{build}: {log}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The i686 build (in-house, 32-bit arithmetic) and the x86_64 build write the same bytes.
#[test]
fn both_builds_generate_identical_tables() {
    let builds = fugu_builds();
    for config in [
        vec!["--cpus", "1"],
        vec!["--cpus", "4"],
        vec!["--cpus", "255"],
        vec!["--cpus", "2", "--bios-memory", "3G"],
    ] {
        let mut dumps = Vec::new();
        for (build, bin) in &builds {
            let dir = fugu_e2e::tempdir();
            let out = std::process::Command::new(bin)
                .arg("acpi-tables")
                .args(&config)
                .arg("--out-dir")
                .arg(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{build} {config:?}: {out:?}");
            let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&p).unwrap())
                })
                .collect();
            files.sort();
            assert!(files.len() >= 7, "{build} {config:?}: {files:?}");
            let _ = std::fs::remove_dir_all(&dir);
            dumps.push((build, files));
        }
        let (b0, first) = &dumps[0];
        for (b, files) in &dumps[1..] {
            assert_eq!(
                first.iter().map(|f| &f.0).collect::<Vec<_>>(),
                files.iter().map(|f| &f.0).collect::<Vec<_>>(),
                "{config:?}"
            );
            for ((name, a), (_, b_bytes)) in first.iter().zip(files) {
                assert!(
                    a == b_bytes,
                    "{config:?}: {name} differs between {b0} and {b}"
                );
            }
        }
    }
}

/// `--bios`: SeaBIOS takes the tables from fw_cfg (etc/table-loader) instead of writing its
/// own: its log shows the FADT found through the XSDT, the DSDT parsed, and the devices it
/// looks up in the DSDT (COM1, the PS/2 keyboard). With nothing to boot it asks for a reboot
/// through the FADT's reset register, and fugu ends with 8.
#[test]
fn seabios_loads_the_tables_from_fw_cfg_on_both_builds() {
    const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
    if !std::path::Path::new(SEABIOS).exists() {
        fugu_e2e::unmet(&format!(
            "{SEABIOS} is missing: install Debian package seabios"
        ));
        return;
    }
    for (build, bin) in fugu_builds() {
        let o = fugu_e2e::run_fugu_env(
            &bin,
            &["run", "--bios", "--cpus", "2", "--boot-timeout", "90"],
            &[("FUGU_TRACE", std::path::Path::new("firmware"))],
            Duration::from_secs(120),
        );
        assert_eq!(o.status, Some(8), "{build}: {o:?}");
        for line in [
            "(via xsdt)",
            "ACPI: parse DSDT",
            "Found 1 serial ports",
            "PS2 keyboard initialized",
            "guest requested a reset",
        ] {
            assert!(o.stderr.contains(line), "{build}: no '{line}': {o:?}");
        }
    }
}
