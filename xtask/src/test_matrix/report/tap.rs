//! TAP (version 13) of a run, for `--tap`.

use crate::test_matrix::{CellResult, Outcome};
use std::fmt::Write as _;

pub fn tap(results: &[CellResult]) -> String {
    let mut s = format!("TAP version 13\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let id = r.cell.id();
        match &r.outcome {
            Outcome::Pass => {
                let _ = writeln!(s, "ok {} - {id}", i + 1);
            }
            Outcome::Flaky { note } => {
                let _ = writeln!(s, "ok {} - {id}", i + 1);
                let _ = writeln!(s, "# {note}");
            }
            Outcome::Skip { reason } => {
                let _ = writeln!(s, "ok {} - {id} # SKIP {reason}", i + 1);
            }
            Outcome::Fail { reason, tail } => {
                let _ = writeln!(s, "not ok {} - {id}", i + 1);
                let _ = writeln!(s, "  ---\n  message: {reason:?}");
                if !tail.is_empty() {
                    s.push_str("  log: |\n");
                    for l in tail.lines() {
                        let _ = writeln!(s, "    {l}");
                    }
                }
                s.push_str("  ...\n");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix_def;

    #[test]
    fn tap_marks_skips_and_failures() {
        let def = matrix_def::load().unwrap();
        let cells = def.cells();
        let r = vec![
            CellResult {
                cell: cells[0].clone(),
                outcome: Outcome::Skip {
                    reason: "needs VMX".into(),
                },
                secs: 0.0,
            },
            CellResult {
                cell: cells[1].clone(),
                outcome: Outcome::Fail {
                    reason: "timed out".into(),
                    tail: "last line".into(),
                },
                secs: 1.0,
            },
        ];
        let t = tap(&r);
        assert!(t.starts_with("TAP version 13\n1..2\n"));
        assert!(t.contains("ok 1 - ") && t.contains("# SKIP needs VMX"));
        assert!(t.contains("not ok 2 - ") && t.contains("    last line"));
    }
}
