//! Fresh L1s for the cells a dead one left: QEMU 7.2's TCG now and then kills the L1 it
//! emulates while an L2 runs (a kernel panic, "corrupted stack end detected inside scheduler",
//! a soft lockup, a reset). The L1 is a test fixture with a known emulator bug, so its death
//! is not a cell's result: a fresh L1 runs the cells the dead one had not reported, for as
//! long as each boot gets somewhere. A cell that several L1s died while running FAILs (that
//! many deaths in one place is more than chance), and so do the cells left when the boots run
//! out.

use crate::matrix_def::Cell;
use crate::test_matrix::{CellResult, Outcome};
use std::collections::HashMap;

/// L1 boots per class at most: the first and fresh ones for what dead ones left.
pub const MAX_BOOTS: u32 = 6;

/// L1 deaths while one cell ran after which that cell FAILs rather than being tried again.
pub const DEATHS_PER_CELL: usize = 3;

/// Boots in a row that reported no cell and died while none ran, after which no more are
/// tried (the L1 itself does not come up).
const FRUITLESS_BOOTS: u32 = 2;

/// How one L1 boot that died ended: the cells it had reported, those it was running, why.
pub struct Death {
    pub reason: String,
    pub tail: String,
    pub reported: Vec<CellResult>,
    pub running: Vec<String>,
}

/// What the boots of one class have established so far.
#[derive(Default)]
pub struct Rescue {
    results: HashMap<String, CellResult>,
    /// Why each L1 died that died while the cell (by id) ran.
    deaths: HashMap<String, Vec<String>>,
    boots: u32,
    fruitless: u32,
}

impl Rescue {
    /// The cells of `cells` that a next L1 boot must run (empty: nothing left).
    pub fn todo(&self, cells: &[Cell]) -> Vec<Cell> {
        cells
            .iter()
            .filter(|c| !self.results.contains_key(&c.id()))
            .cloned()
            .collect()
    }

    /// The number of the boot about to start (1 for the first).
    pub fn next_boot(&self) -> u32 {
        self.boots + 1
    }

    /// Record a boot that ran to the end and reported `done`.
    pub fn finished(&mut self, done: Vec<CellResult>) {
        self.boots += 1;
        for r in done {
            self.results.insert(r.cell.id(), r);
        }
    }

    /// Record a boot of `todo` that died. Returns whether a fresh L1 should run what is left;
    /// when not, every cell left FAILs, naming `host` and the last death.
    pub fn died(&mut self, host: &str, todo: &[Cell], death: Death, last_chance: bool) -> bool {
        self.boots += 1;
        let progress = !death.reported.is_empty() || !death.running.is_empty();
        self.fruitless = if progress { 0 } else { self.fruitless + 1 };
        for r in death.reported {
            self.results.insert(r.cell.id(), r);
        }
        for id in &death.running {
            let reasons = self.deaths.entry(id.clone()).or_default();
            reasons.push(death.reason.clone());
            if reasons.len() >= DEATHS_PER_CELL {
                if let Some(cell) = todo.iter().find(|c| c.id() == *id) {
                    self.results.insert(
                        id.clone(),
                        CellResult {
                            cell: cell.clone(),
                            outcome: Outcome::Fail {
                                reason: format!(
                                    "{} {host} L1s died while it ran: {}",
                                    reasons.len(),
                                    reasons.join("; ")
                                ),
                                tail: death.tail.clone(),
                            },
                            secs: 0.0,
                        },
                    );
                }
            }
        }
        let again = !last_chance
            && self.boots < MAX_BOOTS
            && self.fruitless < FRUITLESS_BOOTS
            && !self.todo(todo).is_empty();
        if !again {
            for c in todo {
                self.results.entry(c.id()).or_insert_with(|| CellResult {
                    cell: c.clone(),
                    outcome: Outcome::Fail {
                        reason: format!("the {host} L1 did not run it: {}", death.reason),
                        tail: death.tail.clone(),
                    },
                    secs: 0.0,
                });
            }
        }
        again
    }

    /// Every cell's result, in the order of `cells`. A cell that an L1 died while running and
    /// that then passed in a fresh one is FLAKY, naming why the L1 died.
    pub fn results(mut self, host: &str, cells: &[Cell]) -> Vec<CellResult> {
        cells
            .iter()
            .map(|c| {
                let mut r = self.results.remove(&c.id()).unwrap_or_else(|| CellResult {
                    cell: c.clone(),
                    outcome: Outcome::fail(format!("the {host} L1 did not report this cell")),
                    secs: 0.0,
                });
                if let Some(why) = self.deaths.get(&c.id()) {
                    r.outcome = after_a_dead_l1(r.outcome, &why.join("; "));
                }
                r
            })
            .collect()
    }
}

/// A cell's outcome in a fresh L1, when an earlier L1 died while it ran.
fn after_a_dead_l1(outcome: Outcome, why: &str) -> Outcome {
    let note = format!("an earlier L1 died while it ran ({why})");
    match outcome {
        Outcome::Pass => Outcome::Flaky {
            note: format!("flaky: passed in a fresh L1; {note}"),
        },
        Outcome::Flaky { note: n } => Outcome::Flaky {
            note: format!("{n}; {note}"),
        },
        // A cell failed for its L1 deaths says so already.
        Outcome::Fail { reason, tail } if reason.contains(" L1s died while it ran") => {
            Outcome::Fail { reason, tail }
        }
        Outcome::Fail { reason, tail } => Outcome::Fail {
            reason: format!("{reason}; {note}"),
            tail,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(n: usize) -> Vec<Cell> {
        let def = crate::matrix_def::load().unwrap();
        def.cells()
            .into_iter()
            .filter(|c| c.get("host") == super::super::HOST)
            .take(n)
            .collect()
    }

    fn pass(c: &Cell) -> CellResult {
        CellResult {
            cell: c.clone(),
            outcome: Outcome::Pass,
            secs: 1.0,
        }
    }

    fn death(reported: &[&Cell], running: &[&Cell]) -> Death {
        Death {
            reason: "its kernel panicked: corrupted stack end detected inside scheduler".into(),
            tail: "L1 console".into(),
            reported: reported.iter().map(|c| pass(c)).collect(),
            running: running.iter().map(|c| c.id()).collect(),
        }
    }

    #[test]
    fn fresh_l1s_run_what_dead_ones_left_while_each_gets_somewhere() {
        let c = cells(4);
        let mut r = Rescue::default();
        // Three deaths, each after one more cell: more than the three boots of old.
        for i in 0..3 {
            let todo = r.todo(&c);
            assert_eq!(todo.len(), 4 - i);
            assert!(r.died("svm-tcg", &todo, death(&[&c[i]], &[&c[i + 1]]), false));
        }
        assert_eq!(r.next_boot(), 4);
        let todo = r.todo(&c);
        assert_eq!(todo.len(), 1);
        r.finished(vec![pass(&c[3])]);
        assert!(r.todo(&c).is_empty());
        let out = r.results("svm-tcg", &c);
        assert_eq!(out[0].outcome, Outcome::Pass);
        for o in &out[1..] {
            match &o.outcome {
                Outcome::Flaky { note } => {
                    assert!(note.contains("passed in a fresh L1"), "{note}");
                    assert!(note.contains("corrupted stack end"), "{note}");
                }
                o => panic!("{o:?}"),
            }
        }
    }

    #[test]
    fn a_cell_that_keeps_killing_its_l1_fails_and_the_others_still_run() {
        let c = cells(3);
        let mut r = Rescue::default();
        for _ in 0..DEATHS_PER_CELL {
            let todo = r.todo(&c);
            assert!(todo.iter().any(|t| t.id() == c[1].id()));
            let again = r.died("svm-tcg", &todo, death(&[], &[&c[1]]), false);
            assert!(again, "the other cells are still to run");
        }
        let todo = r.todo(&c);
        assert_eq!(
            todo.len(),
            2,
            "the cell that killed 3 L1s is not tried again"
        );
        r.finished(vec![pass(&c[0]), pass(&c[2])]);
        let out = r.results("svm-tcg", &c);
        match &out[1].outcome {
            Outcome::Fail { reason, .. } => {
                assert!(
                    reason.starts_with("3 svm-tcg L1s died while it ran"),
                    "{reason}"
                );
                assert!(!reason.contains("an earlier L1"), "said once: {reason}");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(out[0].outcome, Outcome::Pass);
        assert_eq!(out[2].outcome, Outcome::Pass);
    }

    #[test]
    fn boots_stop_when_they_get_nowhere_or_run_out() {
        let c = cells(2);
        let mut r = Rescue::default();
        assert!(r.died("svm-tcg", &c, death(&[], &[]), false));
        assert!(!r.died("svm-tcg", &c, death(&[], &[]), false));
        let out = r.results("svm-tcg", &c);
        assert!(out.iter().all(|o| matches!(&o.outcome,
            Outcome::Fail { reason, .. } if reason.starts_with("the svm-tcg L1 did not run it"))));

        // A death while cells ran is progress, but not past the last boot.
        let c = cells(DEATHS_PER_CELL * MAX_BOOTS as usize);
        let mut r = Rescue::default();
        let mut boots = 0;
        loop {
            boots += 1;
            let todo = r.todo(&c);
            if !r.died("svm-tcg", &todo, death(&[], &[&todo[0]]), false) {
                break;
            }
        }
        assert_eq!(boots, MAX_BOOTS);
        // An interrupted run gets no fresh L1.
        let c = cells(2);
        let mut r = Rescue::default();
        assert!(!r.died("svm-tcg", &c, death(&[&c[0]], &[&c[1]]), true));
        let out = r.results("svm-tcg", &c);
        assert_eq!(out[0].outcome, Outcome::Pass);
        assert!(matches!(&out[1].outcome, Outcome::Fail { .. }));
    }

    #[test]
    fn outcomes_after_a_dead_l1() {
        let why = "its kernel panicked: corrupted stack end detected inside scheduler";
        match after_a_dead_l1(Outcome::fail("timed out"), why) {
            Outcome::Fail { reason, .. } => {
                assert!(
                    reason.starts_with("timed out; an earlier L1 died"),
                    "{reason}"
                )
            }
            o => panic!("{o:?}"),
        }
        let skip = Outcome::Skip { reason: "x".into() };
        assert_eq!(after_a_dead_l1(skip.clone(), why), skip);
    }
}
