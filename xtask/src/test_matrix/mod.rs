//! `cargo xtask test-matrix`: boot every cell of the VM matrix (ci/matrix.def) that this host
//! can run, SKIP the others with the reason, and report a table, TAP and JUnit.
//!
//! A cell's fate: the host lacks one of its virtualization needs -> SKIP; its runner waits for a
//! fugu feature ([pending]) -> SKIP; the host lacks a tool or file -> SKIP; otherwise it runs
//! and PASSes only if fugu exited with the expected status and the serial log has the marker.
//! A cell that did not run is never PASS. Runners are the `Runner` enum (runner/): when a feature
//! lands, add its runner there (one variant, one file) and delete its [pending] line.
//!
//! Modules, one job each: `options` (flags), `decide` (a cell's fate, no side effects),
//! `runner` (how each runner boots and judges a cell), `prepare` (build what the cells boot),
//! `exec` (boot one cell), `jobs` (the worker pool and progress), `report` (table, TAP, JUnit,
//! the JSON results file and `merge`).

mod decide;
mod exec;
mod jobs;
mod options;
mod prepare;
pub mod report;
mod runner;
#[cfg(test)]
mod testutil;

pub use decide::{decide, Decision};
pub use options::Options;
pub use prepare::prepare;
pub use runner::{Artifacts, BootSpec, Runner};

use crate::kvm_reload;
use crate::matrix_def::{self, Cell, Def, Plan};
use crate::probe::{self, Probe};
use crate::svm_tcg;
use crate::util::{self, step, Error, Result};
use report::results::Status;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask test-matrix [options]
       cargo xtask test-matrix merge RESULTS-FILE...

  --probe          print what this host can run and exit
  --list           list the selected cells, what each needs and what would happen here
  --filter F       select cells: axis=v1,v2 (host paging build guest boot check), class=NAME,
                   or a glob/substring of the cell id (host/paging/build/guest/boot/check);
                   repeat to narrow
  --cell ID        only the cell with this exact id (repeatable; with the filters)
  --jobs N         cells booted in parallel (default: the number of CPUs)
  --timeout S      override every cell's timeout (seconds)
  --tap            TAP on stdout (the table goes to stderr)
  --junit FILE     write JUnit XML
  --results FILE   write the results as JSON (default <log-dir>/results.json; merge reads it)
  --no-build       use the fugu builds and guests already in target/ instead of building
  --kvm-reload     (root, VMX/SVM hosts) run the tdp and shadow cells by reloading
                   kvm_intel/kvm_amd with ept/npt on and off, then restore the setting
  --log-dir DIR    write the cells' logs into DIR (default target/test-matrix)
  --retries N      boot a failing cell up to N more times; a later pass is reported FLAKY
                   with the failed attempts' reasons (the svm-tcg L1s use 2: see docs/matrix.md)

Cells of the svm-tcg host class run inside a Linux L1 that test-matrix boots under QEMU TCG
(AMD SVM emulated, kvm_amd inside); its console is target/test-matrix/svm-tcg/l1.console.log.

Serial and VMM logs of each cell: target/test-matrix/<cell>.serial.log, <cell>.vmm.log
(svm-tcg cells: target/test-matrix/svm-tcg/logs/)";

/// Debian packages the runners use: firmware, DHCP/TFTP, namespaces and taps, and QEMU for
/// the svm-tcg L1. Installed when root; otherwise the cells needing them SKIP with the hint.
const MATRIX_DEBS: &[&str] = &[
    "seabios",
    "ipxe-qemu",
    "dnsmasq-base",
    "iproute2",
    "qemu-system-x86",
    "busybox-static",
    "kmod",
];

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on, Ctrl-C / SIGTERM stop the run cleanly (children killed, settings restored).
fn catch_interrupts() {
    let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// Passed on a retry (`--retries`): a pass, reported with what the failed attempts said.
    Flaky {
        note: String,
    },
    Fail {
        reason: String,
        tail: String,
    },
    Skip {
        reason: String,
    },
}

impl Outcome {
    pub fn fail(reason: impl Into<String>) -> Outcome {
        Outcome::Fail {
            reason: reason.into(),
            tail: String::new(),
        }
    }
    pub fn status(&self) -> Status {
        match self {
            Outcome::Pass | Outcome::Flaky { .. } => Status::Pass,
            Outcome::Fail { .. } => Status::Fail,
            Outcome::Skip { .. } => Status::Skip,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CellResult {
    pub cell: Cell,
    pub outcome: Outcome,
    pub secs: f64,
}

/// The host classes of ci/matrix.def this host belongs to.
pub fn host_classes(def: &Def, probe: &Probe) -> Vec<String> {
    // A host is of a class when it can run a cell of that class that needs nothing more than
    // the virtualization capabilities; the svm-tcg classes, when it can boot their L1.
    def.classes
        .iter()
        .filter(|(_, pat)| {
            def.cells().iter().filter(|c| pat.matches(c)).any(|c| {
                if svm_tcg::delegated(c, probe) {
                    return svm_tcg::unavailable(probe).is_none();
                }
                def.plan(c)
                    .needs
                    .iter()
                    .filter(|n| probe::VIRT_CAPABILITIES.contains(&n.as_str()) && *n != "paging32")
                    .all(|n| probe.missing(n).is_none())
            })
        })
        .map(|(n, _)| n.clone())
        .collect()
}

pub fn main(args: &[String]) -> Result {
    if args.first().map(String::as_str) == Some("merge") {
        return report::merge::main(&args[1..]);
    }
    let o = options::parse(args)?;
    let def = matrix_def::load().map_err(Error::fail)?;
    for f in &o.filters {
        matrix_def::check_filter(&def, f)
            .map_err(|e| Error::usage(format!("--filter {f}: {e}")))?;
    }
    let all = def.cells();
    if let Some(id) = o
        .cells
        .iter()
        .find(|id| !all.iter().any(|c| c.id() == **id))
    {
        return Err(Error::usage(format!(
            "--cell {id}: no such cell (cargo xtask test-matrix --list shows them)"
        )));
    }
    let cells: Vec<Cell> = all
        .iter()
        .filter(|c| {
            o.filters
                .iter()
                .all(|f| matrix_def::filter_matches(&def, f, c))
                && (o.cells.is_empty() || o.cells.contains(&c.id()))
        })
        .cloned()
        .collect();
    // In the i386 L1 apt and dpkg are the host's amd64 programs, which cannot run.
    if !o.probe && !o.list && util::is_root() && !Probe::from_files(Path::new("/")).kernel32 {
        // A fresh machine: the runners' tools and firmware, before the probe looks for them.
        if let Err(e) = util::ensure_debs(MATRIX_DEBS, "the matrix cells") {
            step(format!("{e}; the cells that need them will SKIP"));
        }
    }
    let probe = Probe::host();
    if o.probe {
        print!("{}", probe.report(&host_classes(&def, &probe)));
        return Ok(());
    }
    if cells.is_empty() {
        return Err(Error::usage("test-matrix: no cell matches the filters"));
    }
    if o.list {
        print!("{}", report::table::list(&def, &cells, &probe));
        return Ok(());
    }
    let started = Instant::now();
    catch_interrupts();
    // Cells of the svm-tcg class run inside an L1 that this run boots, unless this is that L1.
    let (in_l1, here): (Vec<Cell>, Vec<Cell>) = cells
        .iter()
        .cloned()
        .partition(|c| svm_tcg::delegated(c, &probe));
    let mut results = if here.is_empty() {
        Vec::new()
    } else {
        run_here(&def, &here, &probe, &o)?
    };
    if !in_l1.is_empty() {
        results.extend(svm_tcg::run(&def, &in_l1, &probe, &o, &INTERRUPTED));
    }
    let order: HashMap<String, usize> =
        cells.iter().enumerate().map(|(i, c)| (c.id(), i)).collect();
    results.sort_by_key(|r| order.get(&r.cell.id()).copied().unwrap_or(usize::MAX));
    let wall = started.elapsed().as_secs_f64();
    report::report(&def, &results, &probe, &o, wall, &INTERRUPTED)
}

/// Run `cells` on this host: once, or with --kvm-reload once per paging mode.
fn run_here(def: &Def, cells: &[Cell], probe: &Probe, o: &Options) -> Result<Vec<CellResult>> {
    if o.kvm_reload {
        let (module, param) = kvm_reload::target(&probe.modules, probe.root, Path::new("/sys"))
            .map_err(Error::fail)?;
        let mut sys = kvm_reload::SysModules {
            sys: PathBuf::from("/sys"),
        };
        let mut by_paging: Vec<(String, Vec<CellResult>)> = Vec::new();
        let passes = kvm_reload::with_each_setting(
            &mut sys,
            &kvm_reload::Reload {
                lock: Path::new(kvm_reload::LOCK),
                journal: Path::new(kvm_reload::JOURNAL),
                module,
                param,
            },
            &["Y", "N"],
            &INTERRUPTED,
            |v| {
                let paging = if v == "Y" { "tdp" } else { "shadow" };
                let subset: Vec<Cell> = cells
                    .iter()
                    .filter(|c| c.get("paging") == paging)
                    .cloned()
                    .collect();
                run_cells(def, &subset, &Probe::host(), o)
            },
        )
        .map_err(Error::fail)?;
        for (v, r) in passes {
            by_paging.push((v, r?));
        }
        let mut all: Vec<CellResult> = by_paging.into_iter().flat_map(|(_, r)| r).collect();
        // Cells of a paging mode that no pass reached (interrupted) did not run.
        for c in cells {
            if !all.iter().any(|r| r.cell == *c) {
                all.push(CellResult {
                    cell: c.clone(),
                    outcome: Outcome::fail("interrupted before it ran"),
                    secs: 0.0,
                });
            }
        }
        let order: HashMap<String, usize> =
            cells.iter().enumerate().map(|(i, c)| (c.id(), i)).collect();
        all.sort_by_key(|r| order.get(&r.cell.id()).copied().unwrap_or(usize::MAX));
        Ok(all)
    } else {
        run_cells(def, cells, probe, o)
    }
}

/// Decide, build what the runnable cells need, boot them, and collect every cell's result.
fn run_cells(def: &Def, cells: &[Cell], probe: &Probe, o: &Options) -> Result<Vec<CellResult>> {
    let decisions: Vec<(Plan, Decision)> = cells
        .iter()
        .map(|c| {
            let plan = def.plan(c);
            let d = decide(&plan, probe);
            (plan, d)
        })
        .collect();
    let runnable: Vec<(usize, Runner)> = decisions
        .iter()
        .enumerate()
        .filter_map(|(i, (_, d))| match d {
            Decision::Run(r) => Some((i, *r)),
            _ => None,
        })
        .collect();
    let wanted: Vec<(&Cell, Runner)> = runnable.iter().map(|&(i, r)| (&cells[i], r)).collect();
    let arts = prepare(&wanted, o)?;
    let jobs: Vec<_> = runnable
        .iter()
        .map(|&(i, r)| r.spec(&cells[i], &decisions[i].0, &arts, o.timeout))
        .collect();
    let ids: Vec<String> = runnable.iter().map(|&(i, _)| cells[i].id()).collect();
    let total = ids.len();
    if total > 0 {
        step(format!(
            "booting {total} cell{} ({} SKIP here), {} at a time",
            if total == 1 { "" } else { "s" },
            cells.len() - total,
            o.jobs.min(total)
        ));
    }
    let mut progress = jobs::Progress::new(ids);
    let outcomes = jobs::run_jobs(jobs, o.jobs, o.retries, &INTERRUPTED, &mut |ev| {
        progress.on_event(ev)
    });
    progress.finish();
    let mut by_index: HashMap<usize, (Outcome, f64)> =
        runnable.iter().map(|&(i, _)| i).zip(outcomes).collect();
    Ok(cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (outcome, secs) = match &decisions[i].1 {
                Decision::Run(_) => by_index
                    .remove(&i)
                    .unwrap_or((Outcome::fail("no result"), 0.0)),
                Decision::Skip(r) => (Outcome::Skip { reason: r.clone() }, 0.0),
                Decision::Fail(r) => (Outcome::fail(r.clone()), 0.0),
            };
            CellResult {
                cell: c.clone(),
                outcome,
                secs,
            }
        })
        .collect())
}
