//! `cargo xtask bench [--filter NAME] [--runs N] [--fugu PATH]`: fugu's performance side by
//! side with a peer measured in the same invocation (QEMU, pread, a bare KVM loop, curl,
//! plain cargo), as ratios. A markdown table on stdout, JSON in target/bench/. Benchmarks
//! only report; nothing here asserts a timing. See docs/bench.md.

mod kernels;
mod machine;
mod process;
mod report;
mod serve;
mod workloads;

use crate::build;
use crate::guests;
use crate::netcheck;
use crate::targets::Target;
use crate::util::{self, step, Error, Result};
use machine::{loadavg, machine};
use process::{expect_status, last_line, time_to_marker, timed, Running};
use report::{Outcome, Row};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use workloads::{Workload, WORKLOADS};

const USAGE: &str =
    "usage: cargo xtask bench [--filter NAME[,NAME]] [--runs N] [--fugu PATH] [--json FILE] [--list]";

const MEM: &str = "128M";
const MEM_BYTES: u64 = 128 << 20;
/// Port writes per pio-exit run.
const EXITS: u32 = 50_000;
/// 4 KiB requests per virtio-blk run.
const BLK_REQUESTS: u64 = 200_000;
const BLOB_BYTES: usize = 64 << 20;
const SPIN_MARKER: &str = "fugu-bench: spinning\n";

struct Opts {
    filters: Vec<String>,
    runs: usize,
    fugu: Option<PathBuf>,
    /// Also write the JSON here (the svm-tcg rows' inner bench writes into the L1's share).
    json: Option<PathBuf>,
    list: bool,
}

fn parse_args(args: &[String]) -> Result<Opts> {
    let p = crate::flags::parse(&crate::flags::BENCH, args)
        .map_err(|e| Error::usage(format!("{}\n{USAGE}", e.msg)))?;
    if p.has("--help") {
        return Err(Error::usage(USAGE));
    }
    let o = Opts {
        filters: p
            .all("--filter")
            .iter()
            .flat_map(|f| f.split(',').map(str::to_string))
            .collect(),
        runs: p
            .number(
                "--runs",
                |n: &usize| *n >= 1,
                |v| format!("bench: --runs wants a number of at least 1, not '{v}'"),
            )?
            .unwrap_or(5),
        fugu: p.last("--fugu").map(PathBuf::from),
        json: p.last("--json").map(PathBuf::from),
        list: p.has("--list"),
    };
    for f in &o.filters {
        if !WORKLOADS.iter().any(|w| w.name.contains(f.as_str())) {
            let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
            return Err(Error::usage(format!(
                "bench: no workload matches '{f}'; workloads: {}",
                names.join(", ")
            )));
        }
    }
    Ok(o)
}

fn selected(o: &Opts, name: &str) -> bool {
    o.filters.is_empty() || o.filters.iter().any(|f| name.contains(f.as_str()))
}

/// What every workload needs.
struct Ctx {
    runs: usize,
    fugu: PathBuf,
    /// Scratch files: target/bench/work.
    work: PathBuf,
    /// Why QEMU cannot be the peer, if it cannot.
    qemu: std::result::Result<(), String>,
    /// The host's KVM emulates guest kernel code (fugu adapts Linux guests to it).
    emulating: bool,
    /// Where a workload leaves files worth reading after the run (serial logs): the folder of
    /// `--json` when given (the svm-tcg rows' share), else `work`.
    keep: PathBuf,
}

pub fn main(args: &[String]) -> Result {
    let o = parse_args(args)?;
    if o.list {
        for w in WORKLOADS {
            println!("{:<18} {}", w.name, w.what);
        }
        return Ok(());
    }
    let out = util::root().join("target").join("bench");
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    let fugu = match &o.fugu {
        Some(p) => p
            .canonicalize()
            .map_err(|e| Error::fail(format!("--fugu {}: {e}", p.display())))?,
        None => build::build_fugu(Target::host(), true)?,
    };
    let needs_qemu = WORKLOADS
        .iter()
        .any(|w| w.needs_qemu() && selected(&o, w.name));
    let qemu = if needs_qemu {
        util::ensure_debs(&["qemu-system-x86"], "the QEMU peer")
            .map_err(|e| e.msg)
            .and_then(|()| {
                if Path::new("/dev/kvm").exists() {
                    Ok(())
                } else {
                    Err("/dev/kvm is missing".into())
                }
            })
    } else {
        Ok(())
    };
    let keep = o
        .json
        .as_ref()
        .and_then(|j| j.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| work.clone(), Path::to_path_buf);
    let ctx = Ctx {
        runs: o.runs,
        fugu,
        keep,
        work,
        qemu,
        emulating: crate::probe::Probe::from_files(Path::new("/")).emulates_guest_kernel(),
    };
    let machine = machine();
    let mut rows = Vec::new();
    let chosen: Vec<&Workload> = WORKLOADS.iter().filter(|w| selected(&o, w.name)).collect();
    let bar = crate::progress::Bar::new(chosen.len(), "workloads");
    for w in chosen {
        let name = w.name;
        step(format!("bench {name} ({} runs)", ctx.runs));
        bar.set_message(name.to_string());
        let row = run(&ctx, w);
        if let Outcome::Failed(why) = &row.outcome {
            step(format!("bench {name} failed: {why}"));
        }
        rows.push(row);
        bar.inc();
    }
    bar.finish();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut machine = machine;
    machine["loadavg_at_end"] = loadavg().into();
    let json = report::to_json(&machine, ctx.runs, &rows);
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::fail(e.to_string()))?;
    let file = out.join(format!("bench-{stamp}.json"));
    std::fs::write(&file, &text)?;
    std::fs::write(out.join("latest.json"), &text)?;
    if let Some(p) = &o.json {
        std::fs::write(p, &text).map_err(|e| Error::fail(format!("{}: {e}", p.display())))?;
    }
    println!(
        "fugu bench: {} runs each; {} CPUs ({}); {}; {}; load average {} at start, {} at end\n",
        ctx.runs,
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kvm"].as_str().unwrap_or("?"),
        machine["qemu"].as_str().unwrap_or("QEMU: ?"),
        machine["loadavg_at_start"].as_str().unwrap_or("?"),
        machine["loadavg_at_end"].as_str().unwrap_or("?"),
    );
    print!("{}", report::table(&rows));
    step(format!("JSON: {}", file.display()));
    Ok(())
}

/// Run one workload and make its table row.
fn run(ctx: &Ctx, w: &Workload) -> Row {
    let (outcome, note) = match (w.run)(ctx) {
        Ok(m) => (
            Outcome::Measured {
                fugu: m.fugu,
                peer: m.peer,
            },
            m.note,
        ),
        Err(Unavailable(w)) => (Outcome::NotAvailable(w), String::new()),
        Err(Failed(w)) => (Outcome::Failed(w), String::new()),
    };
    Row {
        name: w.name,
        unit: w.unit,
        peer_name: w.peer,
        goal: w.goal,
        outcome,
        note,
    }
}

/// The series of one workload.
struct Measured {
    fugu: Vec<f64>,
    peer: Option<Vec<f64>>,
    note: String,
}

/// Why a workload gave no numbers.
enum NoNumbers {
    Unavailable(String),
    Failed(String),
}
use NoNumbers::{Failed, Unavailable};

impl From<Error> for NoNumbers {
    fn from(e: Error) -> Self {
        Failed(e.msg)
    }
}
impl From<std::io::Error> for NoNumbers {
    fn from(e: std::io::Error) -> Self {
        Failed(e.to_string())
    }
}

type Bench = std::result::Result<Measured, NoNumbers>;

/// Whether `fugu run` has the firmware options (`--bios`, `--boot`).
fn has_bios(ctx: &Ctx) -> bool {
    let help = Command::new(&ctx.fugu)
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    help.contains("--bios") && help.contains("--boot ")
}

// ---------------------------------------------------------------- starting the VMs

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn qemu(ctx: &Ctx) -> std::result::Result<Command, NoNumbers> {
    ctx.qemu
        .clone()
        .map_err(|e| Failed(format!("QEMU peer unavailable: {e}")))?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "kvm",
        "-m",
        MEM,
        "-nographic",
        "-net",
        "none",
        "-monitor",
        "none",
    ]);
    Ok(c)
}

fn fugu_run(ctx: &Ctx, kernel: &Path, serial: &str) -> Command {
    let mut c = Command::new(&ctx.fugu);
    c.arg("run")
        .arg("--kernel")
        .arg(kernel)
        .args(["--serial", serial, "--memory", MEM]);
    c
}

fn write_kernel(ctx: &Ctx, name: &str, bytes: &[u8]) -> std::result::Result<PathBuf, NoNumbers> {
    let p = ctx.work.join(name);
    std::fs::write(&p, bytes)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_args(&a(&["--runs", "3", "--filter", "boot,pio"])).unwrap();
        assert_eq!(o.runs, 3);
        assert_eq!(o.filters, ["boot", "pio"]);
        assert!(selected(&o, "boot-hello32") && selected(&o, "pio-exit"));
        assert!(!selected(&o, "startup"));
        assert_eq!(parse_args(&[]).unwrap().runs, 5);
        assert!(parse_args(&a(&["--runs", "0"])).is_err());
        assert!(parse_args(&a(&["--runs"])).is_err());
        assert!(parse_args(&a(&["--filter", "nothing-like-this"])).is_err());
        assert!(parse_args(&a(&["--bogus"])).is_err());
    }
}
