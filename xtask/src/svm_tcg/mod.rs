//! The svm-tcg host class: the matrix's SVM cells on any x86_64 Linux host. QEMU's TCG
//! emulates AMD SVM with nested paging, so a Linux "L1" guest under
//! `qemu-system-x86_64 -accel tcg -cpu max` loads Linux's real `kvm_amd`, and fugu runs its
//! guests on that L1's /dev/kvm (../shared/notes/svm-under-tcg.md has the measured recipe).
//!
//! How a run goes: the outer test-matrix builds what the cells boot (the same `prepare` as for
//! cells on this host), fetches Debian's amd64 kernel (unpacked, never installed here), writes
//! a small initramfs ([`l1`]) and boots the L1 with two virtio-9p shares: this host's root
//! filesystem read-only (so the L1 runs the very same xtask, fugu builds, guests, images,
//! dnsmasq, ip and firmware files at the same paths) and one writable results folder. Inside,
//! the same `test-matrix` runs the svm-tcg cells with `--kvm-reload` (kvm_amd npt=1, then
//! npt=0) through the same runners, writing logs and results.json into the share; the outer run
//! reads those results back. A cell the L1 did not report FAILs with the L1 console's last lines.
//!
//! The svm-tcg-i386 class is the same with Debian's 32-bit kernel (linux-image-686-pae) as the
//! L1: the i386 host. Inside, the i686 fugu runs on a 32-bit kernel's KVM, driven by an i686
//! build of this xtask, with i386 busybox as the shell ([`l1::Arch`]).

pub mod l1;
pub mod oneshot;
mod rescue;

use crate::matrix_def::{Cell, Def};
use crate::probe::Probe;
use crate::test_matrix::report::results::{Results, Status, Suite};
use crate::test_matrix::{self, CellResult, Options, Outcome, Runner};
use crate::util::{self, step};
use fugu_common::proc::{Proc, Waited};
use rescue::{Death, Rescue};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Cells an L1 boots at a time. One: with two L2 guests at once on the L1's two emulated
/// CPUs, QEMU 7.2's TCG corrupted the L1 kernel's memory (a panic, "corrupted stack end
/// detected inside scheduler", in 3 of 3 L1 boots running the Debian cells of one class) and
/// the L2s triple-faulted; one at a time the same cells passed without a retry, and each
/// boot took a third of the time (linux-direct 13-14 s against 43-51 s), since the two
/// emulated CPUs then serve one guest's vCPU and I/O threads.
const JOBS_IN_L1: usize = 1;

/// Boots of a failing cell to try again inside an L1 (see `run_l1`).
const RETRIES: u32 = 2;

/// What booting an L1 needs from Debian (the rest comes from this host's root).
const DEBS: &[&str] = &["qemu-system-x86", "busybox-static", "kmod", "iproute2"];

/// The host axis value of the amd64 L1's class.
pub const HOST: &str = "svm-tcg";
/// The host axis value of the i386 L1's class.
pub const HOST_I386: &str = "svm-tcg-i386";

/// Whether this process runs inside the L1 of `arch` (QEMU TCG's CPU with SVM, and a 32-bit
/// kernel exactly for the i386 one).
pub fn inside(probe: &Probe, arch: l1::Arch) -> bool {
    probe.tcg && probe.svm && probe.kernel32 == (arch == l1::Arch::I386)
}

/// Whether `cell` runs inside an L1 that this process boots (rather than here).
pub fn delegated(cell: &Cell, probe: &Probe) -> bool {
    l1::Arch::of_host(cell.get("host")).is_some_and(|a| !inside(probe, a))
}

/// Why this host cannot boot the L1, or None when it can.
pub fn unavailable(probe: &Probe) -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some(
            "needs an x86_64 host: the L1 runs this host's own amd64 programs through a 9p share"
                .into(),
        );
    }
    if probe.qemu.is_none() && !probe.root {
        return Some(
            "needs qemu-system-x86_64 to boot the L1 (apt-get install qemu-system-x86)".into(),
        );
    }
    None
}

/// Where the L1's files and results live on this host.
pub fn dir(arch: l1::Arch) -> PathBuf {
    util::root()
        .join("target")
        .join("test-matrix")
        .join(arch.host())
}

/// Run `cells` (of the svm-tcg classes) inside one L1 per class and return a result for every
/// one of them.
pub fn run(
    def: &Def,
    cells: &[Cell],
    probe: &Probe,
    o: &Options,
    interrupted: &AtomicBool,
) -> Vec<CellResult> {
    let mut results = Vec::new();
    for arch in [l1::Arch::Amd64, l1::Arch::I386] {
        let mine: Vec<Cell> = cells
            .iter()
            .filter(|c| c.get("host") == arch.host())
            .cloned()
            .collect();
        if !mine.is_empty() {
            results.extend(run_class(arch, def, &mine, probe, o, interrupted));
        }
    }
    results
}

/// Run `cells` (all of the class of `arch`) inside one L1.
fn run_class(
    arch: l1::Arch,
    def: &Def,
    cells: &[Cell],
    probe: &Probe,
    o: &Options,
    interrupted: &AtomicBool,
) -> Vec<CellResult> {
    let all = |outcome: Outcome| -> Vec<CellResult> {
        cells
            .iter()
            .map(|c| CellResult {
                cell: c.clone(),
                outcome: outcome.clone(),
                secs: 0.0,
            })
            .collect()
    };
    if let Some(why) = unavailable(probe) {
        return all(Outcome::Skip { reason: why });
    }
    match run_l1(arch, def, cells, o, interrupted) {
        Ok(results) => results,
        Err(e) => all(Outcome::Fail {
            reason: format!("the {} L1 did not run: {}", arch.host(), e.reason),
            tail: e.tail,
        }),
    }
}

/// Why the L1 as a whole failed.
struct L1Error {
    reason: String,
    tail: String,
}

impl From<String> for L1Error {
    fn from(reason: String) -> Self {
        L1Error {
            reason,
            tail: String::new(),
        }
    }
}

fn run_l1(
    arch: l1::Arch,
    def: &Def,
    cells: &[Cell],
    o: &Options,
    interrupted: &AtomicBool,
) -> Result<Vec<CellResult>, L1Error> {
    let host = arch.host();
    util::ensure_debs(DEBS, "the svm-tcg L1 (QEMU TCG)").map_err(|e| e.msg)?;
    // What the cells boot, built here: the L1 sees this host's files at the same paths.
    let wanted: Vec<(&Cell, Runner)> = cells
        .iter()
        .filter_map(|c| {
            def.plan(c)
                .runner
                .and_then(|r| Runner::parse(&r))
                .map(|r| (c, r))
        })
        .collect();
    test_matrix::prepare(&wanted, o).map_err(|e| e.msg)?;
    let xtask = l1_xtask(arch)?;

    let base = dir(arch);
    let share = base.join("share");
    let _ = std::fs::remove_dir_all(&share);
    std::fs::create_dir_all(share.join("logs")).map_err(|e| format!("{}: {e}", share.display()))?;
    let kernel = l1::kernel(&base.join("kernel"), arch).map_err(|e| format!("L1 kernel: {e}"))?;
    let busybox =
        l1::busybox(arch, &base.join("busybox")).map_err(|e| format!("L1 busybox: {e}"))?;
    let l1 = L1 {
        arch,
        kernel,
        busybox,
        xtask,
        base,
        share,
    };

    // QEMU 7.2's TCG now and then kills the L1 while an L2 runs: fresh L1s run what a dead
    // one left ([`rescue`]).
    let mut rescue = Rescue::default();
    loop {
        let todo = rescue.todo(cells);
        if todo.is_empty() {
            break;
        }
        let attempt = rescue.next_boot();
        let subset = (todo.len() < cells.len()).then_some(todo.as_slice());
        match l1.run(def, &todo, subset, o, attempt, interrupted) {
            Ok(done) => rescue.finished(done),
            Err(death) => {
                let why = death.reason.clone();
                let left = todo.len() - death.reported.len();
                let last_chance = interrupted.load(Ordering::SeqCst);
                let again = rescue.died(host, &todo, death, last_chance);
                step(format!(
                    "{host}: the L1 died ({why}){}",
                    if again {
                        format!("; a fresh L1 runs what it did not report ({left} cell(s) at most)")
                    } else {
                        String::new()
                    }
                ));
                if !again {
                    break;
                }
            }
        }
    }
    Ok(rescue.results(host, cells))
}

/// The xtask that runs inside the L1 of `arch`: this one for amd64; for i386 (a 32-bit kernel
/// runs only i386 programs) the same xtask built for i686.
fn l1_xtask(arch: l1::Arch) -> Result<PathBuf, String> {
    match arch {
        l1::Arch::Amd64 => {
            std::env::current_exe().map_err(|e| format!("cannot find this xtask: {e}"))
        }
        l1::Arch::I386 => crate::build::build_xtask(crate::targets::Target::I686)
            .map_err(|e| format!("the i686 xtask for the L1: {}", e.msg)),
    }
}

/// One class's L1: what it boots and where its files live.
struct L1 {
    arch: l1::Arch,
    kernel: l1::Kernel,
    busybox: PathBuf,
    xtask: PathBuf,
    base: PathBuf,
    share: PathBuf,
}

impl L1 {
    /// Boot the L1 once to run `cells` (only `subset` by id when given) and read its results.
    fn run(
        &self,
        def: &Def,
        cells: &[Cell],
        subset: Option<&[Cell]>,
        o: &Options,
        attempt: u32,
        interrupted: &AtomicBool,
    ) -> Result<Vec<CellResult>, Death> {
        let host = self.arch.host();
        let died = |error: L1Error| Death {
            reason: error.reason,
            tail: error.tail,
            reported: Vec::new(),
            running: Vec::new(),
        };
        let results_path = self.share.join("results.json");
        let _ = std::fs::remove_file(&results_path);
        let logs = self.share.join("logs");
        let mut inner_args: Vec<String> = vec![
            "test-matrix".into(),
            "--no-build".into(),
            "--kvm-reload".into(),
            "--jobs".into(),
            JOBS_IN_L1.to_string(),
            // Linux guests under TCG's SVM sometimes triple-fault at random points
            // (docs/matrix.md); one more boot tells that apart from a cell that fails every
            // time, and a pass on it is reported FLAKY with the first attempt's reason.
            "--retries".into(),
            RETRIES.to_string(),
            "--log-dir".into(),
            logs.display().to_string(),
            "--results".into(),
            results_path.display().to_string(),
            "--filter".into(),
            format!("host={host}"),
        ];
        for f in &o.filters {
            inner_args.push("--filter".into());
            inner_args.push(f.clone());
        }
        for c in subset.unwrap_or_default() {
            inner_args.push("--cell".into());
            inner_args.push(c.id());
        }
        if let Some(t) = o.timeout {
            inner_args.push("--timeout".into());
            inner_args.push(t.to_string());
        }
        let script = l1::inner_script(&self.kernel, &self.xtask, &inner_args);
        let script_path = self.share.join("inner.sh");
        std::fs::write(&script_path, script)
            .map_err(|e| died(format!("{}: {e}", script_path.display()).into()))?;
        let initrd = self.base.join("initrd.cpio");
        let bytes = l1::initramfs(&self.kernel, &self.share, &script_path, &self.busybox)
            .map_err(|e| died(format!("L1 initramfs: {e}").into()))?;
        std::fs::write(&initrd, bytes)
            .map_err(|e| died(format!("{}: {e}", initrd.display()).into()))?;

        // The longest a cell may take inside (every boot of it), plus the L1's boot: no cell
        // finishing for longer than that is a hang. A dead L1 says so sooner: its heartbeat
        // stops.
        let longest = cells
            .iter()
            .map(|c| o.timeout.unwrap_or(def.plan(c).timeout_s))
            .max()
            .unwrap_or(60);
        let limits = Silence {
            progress: Duration::from_secs(longest * u64::from(RETRIES + 1) + 180),
            any: Duration::from_secs(l1::BEAT_SECS * 3),
        };
        let console = if attempt == 1 {
            self.base.join("l1.console.log")
        } else {
            self.base.join(format!("l1.console.{attempt}.log"))
        };
        step(format!(
            "{host}: booting the L1{} (Debian {} {}, QEMU TCG, {} cells inside; console {})",
            if attempt == 1 {
                String::new()
            } else {
                format!(" again (boot {attempt}, at most {})", rescue::MAX_BOOTS)
            },
            self.kernel.package,
            self.kernel.version,
            cells.len(),
            console.display()
        ));
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let ended = boot(
            &self.kernel,
            &initrd,
            &self.share,
            &console,
            limits,
            interrupted,
        );
        let text = std::fs::read(&console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let console_tail = util::tail(&text, 15);
        let error = match ended {
            Ok(end) => match std::fs::read_to_string(&results_path) {
                Ok(json) => {
                    step(format!(
                        "{host}: the L1 ended after {:.0} s ({end})",
                        started.elapsed().as_secs_f64()
                    ));
                    let suites = Results::parse(&json)
                        .map_err(|e| died(format!("{}: {e}", results_path.display()).into()))?;
                    return Ok(collect(host, cells, &suites, &console_tail));
                }
                Err(e) => L1Error {
                    reason: match panic_line(&text) {
                        Some(p) => format!("its kernel panicked: {p}"),
                        // The inner script always reports its run's end before powering off: an L1
                        // that ended without it was reset (a triple fault; QEMU has -no-reboot).
                        None if !text.contains(l1::RUN_END) => format!(
                            "it was reset before its run ended (a triple fault in the L1), \
                             writing no results; QEMU ended: {end}"
                        ),
                        None => format!(
                            "it wrote no results ({}: {e}); it ended: {end}",
                            results_path.display()
                        ),
                    },
                    tail: format!("L1 console ({}):\n{console_tail}", console.display()),
                },
            },
            Err(e) => e,
        };
        let reported = partial(cells, &text);
        // The cell it was running: one this boot started (its log in the share is newer than
        // the boot) and did not report.
        let running = cells
            .iter()
            .filter(|c| !reported.iter().any(|r| r.cell == **c))
            .filter(|c| {
                std::fs::metadata(logs.join(format!("{}.vmm.log", c.id().replace('/', "-"))))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= started_at)
            })
            .map(Cell::id)
            .collect();
        Err(Death {
            reason: error.reason,
            tail: error.tail,
            reported,
            running,
        })
    }
}

/// The line where the L1's kernel says it panicked, if it did.
fn panic_line(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        l.split_once("Kernel panic - ")
            .map(|(_, p)| p.trim().to_string())
    })
}

/// Each cell's result from the L1's results file; cells it did not report FAIL.
fn collect(host: &str, cells: &[Cell], suites: &[Suite], console_tail: &str) -> Vec<CellResult> {
    cells
        .iter()
        .map(|c| {
            let id = c.id();
            let case = suites.iter().flat_map(|s| &s.cases).find(|k| k.id == id);
            let (outcome, secs) = match case {
                Some(k) => (
                    match k.status {
                        Status::Pass if k.message.is_empty() => Outcome::Pass,
                        Status::Pass => Outcome::Flaky {
                            note: k.message.clone(),
                        },
                        Status::Skip => Outcome::Skip {
                            reason: k.message.clone(),
                        },
                        Status::Fail => Outcome::Fail {
                            reason: k.message.clone(),
                            tail: k.detail.clone(),
                        },
                    },
                    k.secs,
                ),
                None => (
                    Outcome::Fail {
                        reason: format!("the {host} L1 did not report this cell"),
                        tail: format!("L1 console:\n{console_tail}"),
                    },
                    0.0,
                ),
            };
            CellResult {
                cell: c.clone(),
                outcome,
                secs,
            }
        })
        .collect()
}

/// The cells an L1 that died had reported on its console (`[ n/N] WORD id (secs s)...`).
fn partial(cells: &[Cell], console: &str) -> Vec<CellResult> {
    let reported: HashMap<String, (Outcome, f64)> = console
        .lines()
        .filter_map(|l| progress(l.trim_end_matches('\r')))
        .filter_map(progress_result)
        .collect();
    cells
        .iter()
        .filter_map(|c| {
            reported.get(&c.id()).map(|(outcome, secs)| CellResult {
                cell: c.clone(),
                outcome: outcome.clone(),
                secs: *secs,
            })
        })
        .collect()
}

/// One progress line of the inner run as a cell's id and result.
fn progress_result(line: &str) -> Option<(String, (Outcome, f64))> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (_, rest) = rest.split_once("] ")?;
    let (word, rest) = rest.split_once(' ')?;
    let (id, rest) = rest.split_once(" (")?;
    let (secs, rest) = rest.split_once(" s)")?;
    let secs: f64 = secs.parse().ok()?;
    let detail = rest.strip_prefix(": ").unwrap_or("").to_string();
    let outcome = match word {
        "PASS" if detail.is_empty() => Outcome::Pass,
        "PASS" => Outcome::Flaky { note: detail },
        "SKIP" => Outcome::Skip { reason: detail },
        "FAIL" => Outcome::Fail {
            reason: detail,
            tail: String::new(),
        },
        _ => return None,
    };
    Some((id.to_string(), (outcome, secs)))
}

/// How long an L1 may stay quiet: no cell finishing (`progress`), no line at all, heartbeat
/// included (`any`).
#[derive(Clone, Copy)]
struct Silence {
    progress: Duration,
    any: Duration,
}

/// Boot the L1 and wait for it to power off. The console goes to `console`; the inner
/// run's progress lines are echoed here. Returns how it ended.
fn boot(
    k: &l1::Kernel,
    initrd: &Path,
    share: &Path,
    console: &Path,
    limits: Silence,
    interrupted: &AtomicBool,
) -> Result<String, L1Error> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(l1::qemu_args(k, initrd, share))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Proc::spawn(&mut cmd, false)
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let mut log =
        std::fs::File::create(console).map_err(|e| format!("{}: {e}", console.display()))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        child
            .take_stdout()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .take_stderr()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut last = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                last = Instant::now();
                let clean = line.trim_end_matches('\r');
                let _ = writeln!(log, "{clean}");
                if let Some(p) = progress(clean) {
                    last_progress = Instant::now();
                    crate::progress::line(&format!("  L1: {p}"));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if interrupted.load(Ordering::SeqCst) {
            child.kill();
            return Err("interrupted".to_string().into());
        }
        let why = if last.elapsed() > limits.any {
            Some(format!(
                "the L1 printed nothing, not even its heartbeat, for {} s and was killed",
                limits.any.as_secs()
            ))
        } else if last_progress.elapsed() > limits.progress {
            Some(format!(
                "no cell finished in the L1 for {} s (longer than any cell may take); it was killed",
                limits.progress.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = why {
            child.kill();
            return Err(L1Error {
                reason,
                tail: std::fs::read(console)
                    .map(|b| util::tail(&String::from_utf8_lossy(&b), 15))
                    .unwrap_or_default(),
            });
        }
    }
    // Both pipes closed: QEMU has exited or is about to.
    match child.wait(Duration::MAX, Duration::from_millis(20), Some(interrupted)) {
        Ok(Waited::Exited(status)) => Ok(format!("QEMU {status}")),
        Ok(_) => Err("interrupted".to_string().into()),
        Err(e) => Err(format!("waiting for QEMU: {e}").into()),
    }
}

/// The console lines worth showing as progress: the inner run's per-cell lines, its steps and
/// the L1 init's own messages.
fn progress(line: &str) -> Option<&str> {
    let t = line.trim_start_matches("\u{1b}[K").trim_start_matches('\r');
    let cell = t.trim_start().starts_with('[')
        && (t.contains("] PASS ") || t.contains("] FAIL ") || t.contains("] SKIP "));
    (cell || t.starts_with("==> ") || t.starts_with(l1::MARK)).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_matrix::report::results::Case;

    #[test]
    fn only_svm_tcg_cells_outside_the_l1_are_delegated() {
        let def = crate::matrix_def::load().unwrap();
        let cells = def.cells();
        let outside = Probe::default();
        let inside = Probe {
            tcg: true,
            svm: true,
            ..Probe::default()
        };
        let tcg: Vec<&Cell> = cells.iter().filter(|c| c.get("host") == HOST).collect();
        assert!(!tcg.is_empty());
        assert!(tcg.iter().all(|c| delegated(c, &outside)));
        assert!(!tcg.iter().any(|c| delegated(c, &inside)));
        assert!(!cells
            .iter()
            .filter(|c| c.get("host") != HOST && c.get("host") != HOST_I386)
            .any(|c| delegated(c, &outside)));
    }

    /// The first four cells of the svm-tcg class in the real definition.
    fn four_svm_tcg_cells() -> Vec<Cell> {
        let def = crate::matrix_def::load().unwrap();
        def.cells()
            .into_iter()
            .filter(|c| c.get("host") == HOST)
            .take(4)
            .collect()
    }

    #[test]
    fn results_come_from_the_l1_results_file_and_missing_cells_fail() {
        let cells = four_svm_tcg_cells();
        let suite = Suite {
            host: "l1".into(),
            classes: "svm-tcg-npt".into(),
            cases: vec![
                Case {
                    id: cells[0].id(),
                    status: Status::Pass,
                    message: String::new(),
                    detail: String::new(),
                    secs: 1.5,
                },
                Case {
                    id: cells[3].id(),
                    status: Status::Pass,
                    message: "flaky: passed on attempt 2 (attempt 1: triple fault)".into(),
                    detail: String::new(),
                    secs: 9.0,
                },
                Case {
                    id: cells[1].id(),
                    status: Status::Fail,
                    message: "timed out".into(),
                    detail: "last lines".into(),
                    secs: 60.0,
                },
            ],
        };
        let r = collect(HOST, &cells, &[suite], "console tail");
        assert_eq!(r[0].outcome, Outcome::Pass);
        assert_eq!(r[0].secs, 1.5);
        assert!(matches!(&r[1].outcome, Outcome::Fail { reason, .. } if reason == "timed out"));
        assert!(
            matches!(&r[3].outcome, Outcome::Flaky { note } if note.contains("attempt 2")),
            "a pass with a note is a flaky pass: {:?}",
            r[3].outcome
        );
        match &r[2].outcome {
            Outcome::Fail { reason, tail } => {
                assert!(reason.contains("did not report"));
                assert!(tail.contains("console tail"));
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_dead_l1s_console_gives_the_cells_it_reported() {
        let cells = four_svm_tcg_cells();
        let console = format!(
            "fugu-l1: kvm_amd npt=Y\r\n==> booting 4 cells\n  [  1/4] PASS {} (1.7 s)\n\
             \x1b[K  [  2/4] FAIL {} (60.0 s): timed out\n  [  3/4] PASS {} (9.5 s): flaky: \
             passed on attempt 2\nfugu-l1-beat: 100.0\n[  4/4] PASS garbage\n",
            cells[0].id(),
            cells[1].id(),
            cells[2].id()
        );
        let r = partial(&cells, &console);
        assert_eq!(r.len(), 3, "the fourth cell was not reported: {r:?}");
        assert_eq!(r[0].outcome, Outcome::Pass);
        assert_eq!(r[0].secs, 1.7);
        assert!(matches!(&r[1].outcome, Outcome::Fail { reason, .. } if reason == "timed out"));
        assert!(matches!(&r[2].outcome, Outcome::Flaky { note } if note.contains("attempt 2")));
    }

    #[test]
    fn a_panicked_l1_says_why() {
        let console = "[   99.85] Kernel panic - not syncing: corrupted stack end detected\n";
        assert_eq!(
            panic_line(console).as_deref(),
            Some("not syncing: corrupted stack end detected")
        );
        assert_eq!(panic_line("all well\n"), None);
    }

    #[test]
    fn progress_shows_cells_steps_and_the_init_lines_only() {
        assert!(
            progress("  [  3/56] PASS svm-tcg/tdp/x86_64/amd64/tiny-direct/boot (0.5 s)").is_some()
        );
        assert!(progress("==> booting 56 cells").is_some());
        assert!(progress(&format!("{} kvm_amd loaded", l1::MARK)).is_some());
        assert!(progress("[    1.234] random kernel line").is_none());
    }

    #[test]
    fn a_host_without_qemu_or_root_cannot_boot_the_l1() {
        let p = Probe::default();
        if cfg!(target_arch = "x86_64") {
            assert!(unavailable(&p).unwrap().contains("qemu-system-x86_64"));
            let with_qemu = Probe {
                qemu: Some(PathBuf::from("/usr/bin/qemu-system-x86_64")),
                ..Probe::default()
            };
            assert!(unavailable(&with_qemu).is_none());
        } else {
            assert!(unavailable(&p).is_some());
        }
    }

    #[test]
    fn i386_cells_are_delegated_except_inside_the_i386_l1() {
        let def = crate::matrix_def::load().unwrap();
        let cells = def.cells();
        let i386: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.get("host") == HOST_I386)
            .collect();
        assert!(!i386.is_empty());
        // Only the i686 fugu runs on a 32-bit kernel.
        assert!(i386.iter().all(|c| c.get("build") == "i686"));
        let outside = Probe::default();
        let amd64_l1 = Probe {
            tcg: true,
            svm: true,
            ..Probe::default()
        };
        let i386_l1 = Probe {
            kernel32: true,
            ..amd64_l1.clone()
        };
        assert!(i386.iter().all(|c| delegated(c, &outside)));
        assert!(!i386.iter().any(|c| delegated(c, &i386_l1)));
        // In the i386 L1, the amd64 L1's cells are not this L1's.
        let amd64: Vec<&Cell> = cells.iter().filter(|c| c.get("host") == HOST).collect();
        assert!(amd64.iter().all(|c| delegated(c, &i386_l1)));
        assert!(!amd64.iter().any(|c| delegated(c, &amd64_l1)));
        assert!(inside(&i386_l1, l1::Arch::I386) && !inside(&i386_l1, l1::Arch::Amd64));
        assert_eq!(dir(l1::Arch::I386).file_name().unwrap(), HOST_I386);
    }

    #[test]
    fn i386_results_name_their_own_l1() {
        let def = crate::matrix_def::load().unwrap();
        let cells: Vec<Cell> = def
            .cells()
            .into_iter()
            .filter(|c| c.get("host") == HOST_I386)
            .take(1)
            .collect();
        let r = collect(HOST_I386, &cells, &[], "");
        assert!(
            matches!(&r[0].outcome, Outcome::Fail { reason, .. } if reason.contains("svm-tcg-i386 L1"))
        );
    }
}
