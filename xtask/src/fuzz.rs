//! `cargo xtask fuzz [--time S] [--runs N] [TARGET...]`: build the fuzz targets of vmm/fuzz
//! with libFuzzer's coverage instrumentation and run each on its seed corpus
//! (vmm/fuzz/corpus/<target>/, committed) plus a scratch corpus under target/fuzz/. Prints
//! executions, executions per second and crashes per target; a crash fails the command and
//! names its reproducer. `cargo xtask test` runs every target for a few seconds (`smoke`).
//!
//! No cargo-fuzz and no nightly: the instrumentation is a handful of stable codegen flags,
//! and libfuzzer-sys builds libFuzzer itself with the system C++ compiler. See
//! docs/fuzzing.md.

use crate::flags;
use crate::util::{self, step, Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every target, as named in vmm/fuzz/Cargo.toml, and what it feeds.
pub const TARGETS: &[(&str, &str)] = &[
    (
        "boot_bzimage",
        "Linux bzImage loader (setup header, initrd, zero page)",
    ),
    ("boot_elf", "ELF kernel loader (32/64-bit, direct boot)"),
    (
        "boot_multiboot",
        "Multiboot v1 loader (header, a.out kludge, modules)",
    ),
    ("boot_pvh", "PVH boot (ELF note, start info, module list)"),
    ("image_index", "image index.json (JSON, schema checks)"),
    (
        "virtqueue",
        "split-virtqueue walk, in-house vs virtio-queue",
    ),
    ("virtio_blk", "virtio-blk requests on raw and qcow2 disks"),
    ("virtio_net", "virtio-net transmit and receive, headers"),
    ("pci_config", "PCI config (0xCF8, ECAM) and BAR accesses"),
    ("msix", "MSI-X table, PBA and enable bits"),
    ("fw_cfg", "fw_cfg ports and DMA descriptors"),
    (
        "qcow2",
        "qcow2 image files: tables, reads, writes, discards",
    ),
];

/// Seconds per target of the smoke run in `cargo xtask test`.
pub const SMOKE_SECS: u64 = 4;
/// Seconds per target when neither --time nor --runs is given.
const DEFAULT_SECS: u64 = 60;

/// libFuzzer's sanitizer-coverage, as cargo-fuzz passes it, with stable rustc: the codegen
/// flags only (no sanitizer: fugu is safe Rust), plus debug assertions and overflow checks
/// so that an arithmetic overflow on guest data panics.
const RUSTFLAGS: &[&str] = &[
    "--cfg",
    "fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// How long each target runs: at most `time` seconds and/or `runs` executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub time: Option<u64>,
    pub runs: Option<u64>,
}

/// What one target's run came to, from libFuzzer's final statistics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub execs: u64,
    pub per_sec: u64,
    pub new_units: u64,
    pub secs: f64,
    /// The reproducer libFuzzer wrote, when the run found a crash, leak or timeout.
    pub crash: Option<String>,
}

fn fuzz_dir() -> PathBuf {
    util::root().join("vmm/fuzz")
}

fn out_dir() -> PathBuf {
    util::root().join("target/fuzz")
}

fn host_triple() -> Result<String> {
    let (ok, out) = util::capture(Command::new("rustc").arg("-vV"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .filter(|_| ok)
        .map(str::to_string)
        .ok_or_else(|| Error::fail(format!("rustc -vV gave no host triple:\n{out}")))
}

/// Which targets `names` means (all of them when empty); an unknown name is a usage error.
pub fn select(names: &[String]) -> Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().map(|(n, _)| *n).collect());
    }
    names
        .iter()
        .map(|n| {
            TARGETS
                .iter()
                .find(|(t, _)| t == n)
                .map(|(t, _)| *t)
                .ok_or_else(|| {
                    let all: Vec<_> = TARGETS.iter().map(|(t, _)| *t).collect();
                    Error::usage(format!(
                        "fuzz: unknown target '{n}' (targets: {})",
                        all.join(", ")
                    ))
                })
        })
        .collect()
}

/// Build `targets` with the instrumentation; returns the directory holding the binaries.
pub fn build(targets: &[&str]) -> Result<PathBuf> {
    util::ensure_debs(&["g++"], "libFuzzer (built by libfuzzer-sys)")?;
    let triple = host_triple()?;
    step(format!(
        "building {} fuzz target(s) (libFuzzer, {triple})",
        targets.len()
    ));
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(fuzz_dir())
        .args(["build", "--release", "--locked", "--target", &triple])
        .arg("--target-dir")
        .arg(out_dir())
        // --target keeps these flags off build scripts and proc macros.
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for t in targets {
        c.args(["--bin", t]);
    }
    util::run(&mut c)?;
    Ok(out_dir().join(triple).join("release"))
}

/// The libFuzzer command line for one target.
fn command(bin: &Path, target: &str, limits: Limits) -> Command {
    let work = out_dir();
    let mut c = Command::new(bin.join(target));
    c.arg(work.join("corpus").join(target))
        .arg(fuzz_dir().join("corpus").join(target))
        .arg(format!(
            "-artifact_prefix={}/",
            work.join("artifacts").join(target).display()
        ))
        .arg("-print_final_stats=1")
        // An input that runs this long is a hang to report, not to wait for.
        .arg("-timeout=20");
    if let Some(s) = limits.time {
        c.arg(format!("-max_total_time={s}"));
    }
    if let Some(n) = limits.runs {
        c.arg(format!("-runs={n}"));
    }
    c
}

/// Read libFuzzer's output: the final statistics and any reproducer it wrote.
pub fn parse_output(log: &str) -> Outcome {
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let crash = log.lines().find_map(|l| {
        // "Test unit written to ./crash-...", "artifact_prefix='...'; Test unit written to ..."
        l.split_once("Test unit written to ")
            .map(|(_, p)| p.trim().to_string())
    });
    Outcome {
        execs: stat("number_of_executed_units"),
        per_sec: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
        secs: 0.0,
        crash,
    }
}

/// Run one target; its whole log goes to target/fuzz/logs/<target>.log.
fn run_one(bin: &Path, target: &str, limits: Limits) -> Result<Outcome> {
    let work = out_dir();
    for d in ["corpus", "artifacts"] {
        std::fs::create_dir_all(work.join(d).join(target))?;
    }
    std::fs::create_dir_all(work.join("logs"))?;
    let log_path = work.join("logs").join(format!("{target}.log"));
    let mut c = command(bin, target, limits);
    let start = std::time::Instant::now();
    let out = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::fail(format!("cannot run {}: {e}", util::describe(&c))))?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(&log_path, &log)?;
    let mut o = parse_output(&log);
    o.secs = start.elapsed().as_secs_f64();
    if !out.status.success() && o.crash.is_none() {
        return Err(Error::fail(format!(
            "fuzz target {target} failed ({}) without a reproducer; see {}:\n{}",
            out.status,
            log_path.display(),
            util::tail(&log, 15)
        )));
    }
    Ok(o)
}

/// Build and run `targets`; print one line each; fail when any crashed.
pub fn run(targets: &[&str], limits: Limits) -> Result {
    let bin = build(targets)?;
    let mut crashes = Vec::new();
    println!(
        "{:<16} {:>12} {:>10} {:>8} {:>7}  crashes",
        "target", "executions", "exec/s", "new", "secs"
    );
    for t in targets {
        step(format!("fuzzing {t}"));
        let o = run_one(&bin, t, limits)?;
        println!(
            "{:<16} {:>12} {:>10} {:>8} {:>7.1}  {}",
            t,
            o.execs,
            o.per_sec,
            o.new_units,
            o.secs,
            o.crash.as_deref().unwrap_or("none")
        );
        if let Some(p) = o.crash {
            crashes.push(format!("{t}: {p}"));
        }
    }
    if crashes.is_empty() {
        return Ok(());
    }
    Err(Error::fail(format!(
        "the fuzz targets found {} crash(es); reproduce one with `target/fuzz/<triple>/release/<target> <file>`, \
         fix the parser and add the input as a regression test beside it:\n  {}",
        crashes.len(),
        crashes.join("\n  ")
    )))
}

/// The smoke run of `cargo xtask test`: the fuzz crate is formatted, and every target runs
/// [`SMOKE_SECS`] seconds on its seeds.
pub fn smoke() -> Result {
    util::run(Command::new("cargo").current_dir(fuzz_dir()).args([
        "fmt",
        "--check",
        "--manifest-path",
        "Cargo.toml",
    ]))?;
    let all = select(&[])?;
    run(
        &all,
        Limits {
            time: Some(SMOKE_SECS),
            runs: None,
        },
    )
}

pub fn main(args: &[String]) -> Result {
    let p = flags::parse(&flags::FUZZ, args)?;
    if p.has("--help") {
        return Err(Error::usage(crate::USAGE));
    }
    if p.has("--list") {
        for (t, what) in TARGETS {
            println!("{t:<16} {what}");
        }
        return Ok(());
    }
    let time = p.number::<u64>(
        "--time",
        |n| *n > 0,
        |v| format!("fuzz: --time needs a number of seconds above 0, not '{v}'"),
    )?;
    let runs = p.number::<u64>(
        "--runs",
        |n| *n > 0,
        |v| format!("fuzz: --runs needs a number above 0, not '{v}'"),
    )?;
    let limits = Limits {
        time: time.or(if runs.is_none() {
            Some(DEFAULT_SECS)
        } else {
            None
        }),
        runs,
    };
    let targets = select(&p.positional)?;
    run(&targets, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics_and_reproducers() {
        let log = "INFO: Seed: 1\n#1024 pulse cov: 10\n\
                   ==123== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='target/fuzz/artifacts/msix/'; Test unit written to target/fuzz/artifacts/msix/crash-abc\n\
                   stat::number_of_executed_units: 12345\n\
                   stat::average_exec_per_sec:     4115\n\
                   stat::new_units_added:          7\n";
        let o = parse_output(log);
        assert_eq!((o.execs, o.per_sec, o.new_units), (12345, 4115, 7));
        assert_eq!(
            o.crash.as_deref(),
            Some("target/fuzz/artifacts/msix/crash-abc")
        );
        assert_eq!(parse_output("Done 5 runs").crash, None);
    }

    #[test]
    fn targets_match_the_fuzz_crate_and_have_seeds() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (t, _) in TARGETS {
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{t}.rs\"")),
                "{t} is not a bin of vmm/fuzz"
            );
            let seeds = fuzz_dir().join("corpus").join(t);
            assert!(
                std::fs::read_dir(&seeds).is_ok_and(|mut d| d.next().is_some()),
                "{t} has no seeds in {}",
                seeds.display()
            );
        }
        let bins = manifest.matches("path = \"fuzz_targets/").count();
        assert_eq!(bins, TARGETS.len(), "a fuzz target is missing from TARGETS");
        assert!(select(&["nope".into()]).is_err());
        assert_eq!(select(&["msix".into()]).unwrap(), ["msix"]);
    }
}
