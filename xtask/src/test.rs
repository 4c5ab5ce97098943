//! `cargo xtask test`: formatting, clippy with warnings denied, and every test, built for
//! both targets. The i686 test binaries run natively on x86_64 hosts. Then a short smoke run
//! of every fuzz target (xtask fuzz).

use crate::build;
use crate::guests;
use crate::package;
use crate::targets::{Target, ALL};
use crate::toolchain;
use crate::util::{self, step, Error, Result};
use std::process::{Command, Stdio};

/// Debian packages the tests use: an assembler/linker for the tiny guests, 32-bit linking,
/// the firmware (SeaBIOS, iPXE), a DHCP/TFTP server and network namespaces for the
/// network tests.
const TEST_DEBS: &[&str] = &[
    "gcc-multilib",
    "binutils",
    "seabios",
    "ipxe-qemu",
    "dnsmasq-base",
    "iproute2",
    "dpkg-dev",
    // iasl: the ACPI tables must disassemble without errors or warnings (vmm/src/acpi).
    "acpica-tools",
    // qemu-img / qemu-io: the reference for fugu's qcow2 (docs/disks.md).
    "qemu-utils",
    // systemd-analyze: fugud's unit in the .deb must verify (tests/tests/package.rs).
    "systemd",
    // openssl makes the HTTPS tests' certificates; python3 serves them (vmm/src/image/tests.rs,
    // tests/tests/image_https.rs).
    "openssl",
    "python3",
    // g++: libfuzzer-sys compiles libFuzzer for the fuzz smoke run (xtask fuzz).
    "g++",
    // gpg makes the signing tests' keys and signs; gpgv checks signatures (fugu image, the
    // release); apt-get installs from the signed repository into a private root
    // (vmm/src/image/tests.rs, tests/tests/release.rs).
    "gnupg",
    "gpgv",
    "apt",
];

pub fn main(args: &[String]) -> Result {
    if crate::flags::parse(&crate::flags::TEST, args)?.has("--help") {
        return Err(Error::usage(crate::USAGE));
    }
    util::ensure_debs(TEST_DEBS, "the tests")?;
    if !util::is_root() {
        eprintln!(
            "xtask: WARNING: not root: the tests that need root (taps, network namespaces, dpkg -i) \
             will print SKIP instead of running; run as root for the full suite"
        );
    }

    step("cargo fmt --check");
    util::run(
        Command::new("cargo")
            .current_dir(util::root())
            .args(["fmt", "--all", "--check"]),
    )?;

    // The CI pipelines generated from ci/matrix.def are current and pass actionlint.
    step("cargo xtask ci check");
    crate::ci::check()?;

    let mut counts = Vec::new();
    for t in ALL {
        let tc = toolchain::for_target(t)?;
        step(format!("clippy for {} ({})", t.short(), tc.route));
        let mut c = tc.cargo("clippy");
        if t == Target::host() {
            c.args(["--workspace", "--all-targets"]);
        } else {
            // xtask and the end-to-end tests are host tools; the VMM and what it shares with
            // them (fugu-common) are built for every target.
            c.args([
                "--package",
                "fugu",
                "--package",
                "fugu-common",
                "--all-targets",
            ]);
        }
        c.args(["--", "-D", "warnings"]);
        util::run(&mut c)?;
    }
    // The end-to-end tests boot guests with both fugu builds.
    guests::build_all()?;
    let mut bins = Vec::new();
    for t in ALL {
        bins.push((t, build::build_fugu(t, false)?));
    }
    // Release packages of both targets (lintian included); tests/tests/package.rs installs
    // and runs them.
    let packages = package::for_tests()?;
    for t in ALL {
        let tc = toolchain::for_target(t)?;
        step(format!("tests for {} ({})", t.short(), tc.route));
        let mut c = tc.cargo("test");
        // Run every test binary even when one fails, so one run shows every failure.
        c.arg("--no-fail-fast");
        if t == Target::host() {
            c.arg("--workspace");
        } else {
            c.args(["--package", "fugu", "--package", "fugu-common"]);
        }
        c.env("FUGU_GUESTS_DIR", guests::out_dir());
        if util::is_root() {
            // Every prerequisite is installed: a test that cannot run fails instead of
            // printing SKIP.
            c.env("FUGU_REQUIRE_ALL", "1");
        }
        c.env("FUGU_PACKAGE_DIR", &packages);
        // tests/tests/release.rs runs `xtask release --from FUGU_PACKAGE_DIR` with its own
        // test keys: this very xtask.
        c.env("FUGU_XTASK_BIN", std::env::current_exe()?);
        for (bt, path) in &bins {
            c.env(format!("FUGU_BIN_{}", bt.short().to_uppercase()), path);
        }
        let n = run_counting(&mut c)?;
        counts.push((t, n));
    }
    // Every fuzz target for a few seconds on its seeds (docs/fuzzing.md): the parsers'
    // harnesses still build, and the seeds still run clean.
    step(format!(
        "fuzz smoke ({} targets, {} s each)",
        crate::fuzz::TARGETS.len(),
        crate::fuzz::SMOKE_SECS
    ));
    crate::fuzz::smoke()?;
    println!();
    for (t, (passed, ignored)) in &counts {
        println!(
            "tests compiled for {:<7}: {passed} passed, {ignored} ignored",
            t.short()
        );
    }
    Ok(())
}

/// Run cargo test, echoing its output, and sum the "test result" lines.
fn run_counting(c: &mut Command) -> Result<(u64, u64)> {
    c.stdout(Stdio::piped());
    let mut child = c.spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::fail("no stdout from cargo test"))?;
    let (mut passed, mut ignored) = (0, 0);
    use std::io::BufRead;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += field(rest, "passed");
            ignored += field(rest, "ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(Error::fail(format!(
            "{} failed ({status})",
            util::describe(c)
        )));
    }
    Ok((passed, ignored))
}

/// The number before `name` in "ok. 12 passed; 0 failed; 1 ignored; ...".
fn field(s: &str, name: &str) -> u64 {
    s.split(';')
        .filter_map(|p| {
            let p = p
                .trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ");
            let (n, what) = p.split_once(' ')?;
            (what == name).then(|| n.parse::<u64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_cargo_test_summaries() {
        let s = "ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(super::field(s, "passed"), 12);
        assert_eq!(super::field(s, "ignored"), 3);
        assert_eq!(super::field("FAILED. 1 passed; 2 failed;", "failed"), 2);
    }
}
