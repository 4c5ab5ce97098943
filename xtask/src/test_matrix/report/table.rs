//! The text tables: the result grid (one row per host/paging/build/guest, one column per
//! boot/check) and `--list`.

use crate::matrix_def::{Cell, Def};
use crate::probe::Probe;
use crate::svm_tcg;
use crate::test_matrix::{decide, Decision};
use std::fmt::Write as _;

/// `--list`: every selected cell, its needs and runner, and what would happen here.
pub fn list(def: &Def, cells: &[Cell], probe: &Probe) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<52} {:<14} {:<17} {:<38} here",
        "cell", "class", "runner", "needs"
    );
    for c in cells {
        let plan = def.plan(c);
        let here = match svm_tcg::unavailable(probe) {
            _ if !svm_tcg::delegated(c, probe) => match decide(&plan, probe) {
                Decision::Run(_) => "RUN".to_string(),
                Decision::Skip(r) => format!("SKIP: {r}"),
                Decision::Fail(r) => format!("FAIL: {r}"),
            },
            Some(why) => format!("SKIP: {why}"),
            None => format!("RUN in the {} L1", c.get("host")),
        };
        let runner = match (&plan.runner, &plan.level) {
            (Some(r), Some(l)) => format!("{r} ({l})"),
            (Some(r), None) => r.clone(),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<52} {:<14} {:<17} {:<38} {here}",
            c.id(),
            plan.class.as_deref().unwrap_or("-"),
            runner,
            plan.needs.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "\nexcluded combinations ({}):",
        def.excluded_cells().len()
    );
    for (pat, why) in &def.exclude {
        let n = def
            .excluded_cells()
            .iter()
            .filter(|(c, _)| pat.matches(c))
            .count();
        let _ = writeln!(s, "  {:<48} matches {n:>3}: {why}", pat.text());
    }
    s
}

/// The result grid: one row per host/paging/build/guest, one column per boot/check.
pub fn grid(def: &Def, rows_of: &[Cell], short: &dyn Fn(&Cell) -> Option<String>) -> String {
    let mut cols: Vec<(String, String)> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in rows_of {
        let col = (c.get("boot").to_string(), c.get("check").to_string());
        if !cols.contains(&col) {
            cols.push(col);
        }
        let row = c.values[..4].to_vec();
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    let w = cols
        .iter()
        .map(|(b, c)| b.len().max(c.len()))
        .max()
        .unwrap_or(4)
        .max(6);
    // The widest host/paging label (svm-tcg/shadow) sets the first column.
    let hp = rows
        .iter()
        .map(|r| r[0].len() + 1 + r[1].len())
        .max()
        .unwrap_or(0)
        .max(13);
    let lead = hp + 14;
    let mut s = String::new();
    let _ = write!(s, "{:<lead$}", "host/paging build  guest");
    for (b, _) in &cols {
        let _ = write!(s, " {b:<w$}");
    }
    let _ = write!(s, "\n{:<lead$}", "");
    for (_, c) in &cols {
        let _ = write!(s, " {c:<w$}");
    }
    s.push('\n');
    for r in &rows {
        let _ = write!(
            s,
            "{:<hp$} {:<6} {:<6}",
            format!("{}/{}", r[0], r[1]),
            r[2],
            r[3]
        );
        for (b, c) in &cols {
            let mut values = r.clone();
            values.push(b.clone());
            values.push(c.clone());
            let cell = Cell { values };
            let txt = if def.excluded(&cell).is_some() {
                "-".to_string()
            } else {
                short(&cell).unwrap_or_else(|| "-".into())
            };
            let _ = write!(s, " {txt:<w$}");
        }
        s.push('\n');
    }
    s
}
