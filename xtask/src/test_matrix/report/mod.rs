//! What a run reports: the grid and summary table (stdout, or stderr with `--tap`), TAP, the
//! JSON results file and JUnit; and `merge`, which joins several runs' results files.

pub mod junit;
pub mod merge;
pub mod results;
pub mod table;
pub mod tap;

use super::{host_classes, CellResult, Options, Outcome};
use crate::matrix_def::{Cell, Def};
use crate::probe::Probe;
use crate::util::{step, Error, Result};
use results::{Case, Results, Status, Suite};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Group (status, reason) -> count, for the summary under the grid.
fn reasons(results: &[(Status, String)]) -> String {
    let mut m: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (st, r) in results {
        if *st != Status::Pass {
            *m.entry((st.word(), r.as_str())).or_default() += 1;
        }
    }
    let mut s = String::new();
    for ((w, r), n) in m {
        let _ = writeln!(s, "  {w} x{n:<3} {r}");
    }
    s
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn to_case(r: &CellResult) -> Case {
    let (message, detail) = match &r.outcome {
        Outcome::Pass => (String::new(), String::new()),
        Outcome::Flaky { note } => (note.clone(), String::new()),
        Outcome::Skip { reason } => (reason.clone(), String::new()),
        Outcome::Fail { reason, tail } => (reason.clone(), tail.clone()),
    };
    Case {
        id: r.cell.id(),
        status: r.outcome.status(),
        message,
        detail,
        secs: r.secs,
    }
}

pub fn report(
    def: &Def,
    results: &[CellResult],
    probe: &Probe,
    o: &Options,
    wall: f64,
    interrupted: &AtomicBool,
) -> Result {
    let count = |st: Status| results.iter().filter(|r| r.outcome.status() == st).count();
    let (pass, fail, skip) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
    );
    let by_id: HashMap<String, &CellResult> = results.iter().map(|r| (r.cell.id(), r)).collect();
    let cells: Vec<Cell> = results.iter().map(|r| r.cell.clone()).collect();
    let mut t = String::new();
    t.push_str(&table::grid(def, &cells, &|c| {
        by_id
            .get(&c.id())
            .map(|r| r.outcome.status().word().to_string())
    }));
    let ran: Vec<&CellResult> = results
        .iter()
        .filter(|r| r.outcome.status() != Status::Skip)
        .collect();
    if !ran.is_empty() {
        t.push_str("\ncells that ran:\n");
        for r in &ran {
            let _ = writeln!(
                t,
                "  {} {:<48} {:>6.1} s",
                r.outcome.status().word(),
                r.cell.id(),
                r.secs
            );
        }
    }
    let rs: Vec<(Status, String)> = results
        .iter()
        .map(|r| {
            let c = to_case(r);
            (c.status, c.message)
        })
        .collect();
    let why = reasons(&rs);
    if !why.is_empty() {
        t.push_str("\nreasons:\n");
        t.push_str(&why);
    }
    for r in results {
        if let Outcome::Flaky { note } = &r.outcome {
            let _ = writeln!(t, "\nFLAKY {}: {note}", r.cell.id());
        }
    }
    for r in results {
        if let Outcome::Fail { reason, tail } = &r.outcome {
            let _ = writeln!(t, "\nFAIL {}: {reason}", r.cell.id());
            for l in tail.lines() {
                let _ = writeln!(t, "    {l}");
            }
        }
    }
    let flaky = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Flaky { .. }))
        .count();
    let _ = writeln!(
        t,
        "\n{} cells: {pass} PASS{}, {fail} FAIL, {skip} SKIP in {wall:.1} s; logs in target/test-matrix/",
        results.len(),
        if flaky > 0 {
            format!(" ({flaky} of them flaky: passed on a retry)")
        } else {
            String::new()
        }
    );
    if o.tap {
        eprint!("{t}");
        print!("{}", tap::tap(results));
    } else {
        print!("{t}");
    }
    let suite = Suite {
        host: hostname(),
        classes: host_classes(def, probe).join(" "),
        cases: results.iter().map(to_case).collect(),
    };
    // The JSON results always: merge and the svm-tcg outer run read them.
    Results::write(&o.results_path(), &suite).map_err(Error::fail)?;
    if let Some(path) = &o.junit {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, junit::write(&suite))
            .map_err(|e| Error::fail(format!("writing {}: {e}", path.display())))?;
        step(format!("JUnit results in {}", path.display()));
    }
    if interrupted.load(Ordering::SeqCst) {
        return Err(Error {
            msg: "interrupted".into(),
            code: 130,
        });
    }
    if fail > 0 {
        return Err(Error::fail(format!("{fail} matrix cell(s) failed")));
    }
    Ok(())
}
