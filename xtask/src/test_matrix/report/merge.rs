//! `test-matrix merge`: several hosts' results files joined into one table.

use super::results::{Results, Status, Suite};
use super::table;
use crate::matrix_def::{self, Def};
use crate::util::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// `test-matrix merge FILES...`: join the results files of several hosts into one table that
/// shows, for every cell of the definition, where it passed or failed, and which no host ran.
pub fn main(files: &[String]) -> Result {
    if files.is_empty() {
        return Err(Error::usage(
            "test-matrix merge needs results files (results.json of test-matrix runs, or their --junit XML)",
        ));
    }
    let def = matrix_def::load().map_err(Error::fail)?;
    let mut suites = Vec::new();
    for f in files {
        suites.extend(Results::read(Path::new(f)).map_err(Error::fail)?);
    }
    let (text, failed) = merge_table(&def, &suites);
    print!("{text}");
    if failed > 0 {
        return Err(Error::fail(format!("{failed} cell(s) failed on some host")));
    }
    Ok(())
}

/// The merged table and the number of cells that failed somewhere.
pub fn merge_table(def: &Def, suites: &[Suite]) -> (String, usize) {
    // id -> [(host, status, message)]
    let mut seen: BTreeMap<String, Vec<(String, Status, String)>> = BTreeMap::new();
    for s in suites {
        for c in &s.cases {
            seen.entry(c.id.clone()).or_default().push((
                s.host.clone(),
                c.status,
                c.message.clone(),
            ));
        }
    }
    let verdict = |id: &str| -> &'static str {
        match seen.get(id) {
            Some(v) if v.iter().any(|x| x.1 == Status::Fail) => "FAIL",
            Some(v) if v.iter().any(|x| x.1 == Status::Pass) => "PASS",
            _ => "NOT RUN",
        }
    };
    let cells = def.cells();
    let mut s = format!(
        "merged results of {} host{}: {}\n\n",
        suites.len(),
        if suites.len() == 1 { "" } else { "s" },
        suites
            .iter()
            .map(|x| {
                if x.classes.is_empty() {
                    x.host.clone()
                } else {
                    format!("{} ({})", x.host, x.classes)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str(&table::grid(def, &cells, &|c| {
        Some(match verdict(&c.id()) {
            "NOT RUN" => "not run".to_string(),
            v => v.to_string(),
        })
    }));
    let mut failed = 0;
    let mut ran = String::new();
    let mut not_run = String::new();
    for c in &cells {
        let id = c.id();
        match verdict(&id) {
            "NOT RUN" => {
                let why = seen
                    .get(&id)
                    .and_then(|v| v.first())
                    .map(|(h, _, m)| format!("SKIP on {h}: {m}"))
                    .unwrap_or_else(|| "no host reported it".into());
                let _ = writeln!(
                    not_run,
                    "  {id:<48} [{}] {why}",
                    def.class_of(c).unwrap_or("-")
                );
            }
            v => {
                if v == "FAIL" {
                    failed += 1;
                }
                for (h, st, m) in &seen[&id] {
                    if *st != Status::Skip {
                        let _ = writeln!(
                            ran,
                            "  {} {id:<48} on {h}{}",
                            st.word(),
                            if m.is_empty() {
                                String::new()
                            } else {
                                format!(": {m}")
                            }
                        );
                    }
                }
            }
        }
    }
    if !ran.is_empty() {
        s.push_str("\ncells that ran:\n");
        s.push_str(&ran);
    }
    let n_not_run = not_run.lines().count();
    if n_not_run > 0 {
        let _ = writeln!(s, "\ncells no host ran ({n_not_run}):");
        s.push_str(&not_run);
    }
    let unknown: Vec<&String> = seen
        .keys()
        .filter(|id| !cells.iter().any(|c| c.id() == **id))
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(
            s,
            "\nresults for cells ci/matrix.def no longer has: {}",
            unknown
                .iter()
                .map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n{} cells: {} ran on some host ({failed} FAIL), {n_not_run} ran nowhere",
        cells.len(),
        cells.len() - n_not_run
    );
    (s, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_matrix::report::junit;
    use crate::test_matrix::report::results::Case;

    #[test]
    fn merge_shows_cells_no_host_ran() {
        let def = matrix_def::load().unwrap();
        let case = |id: &str, status, message: &str| Case {
            id: id.into(),
            status,
            message: message.into(),
            detail: String::new(),
            secs: 1.0,
        };
        let suites = vec![
            Suite {
                host: "pvm-box".into(),
                classes: "emulated".into(),
                cases: vec![
                    case("pvm/shadow/x86_64/amd64/tiny-direct/boot", Status::Pass, ""),
                    case(
                        "vmx/tdp/x86_64/amd64/tiny-direct/boot",
                        Status::Skip,
                        "needs VMX",
                    ),
                ],
            },
            Suite {
                host: "intel-box".into(),
                classes: "intel-ept".into(),
                cases: vec![case(
                    "vmx/tdp/x86_64/amd64/tiny-direct/boot",
                    Status::Fail,
                    "timed out",
                )],
            },
        ];
        let (t, failed) = merge_table(&def, &suites);
        assert_eq!(failed, 1);
        assert!(
            t.contains("PASS pvm/shadow/x86_64/amd64/tiny-direct/boot"),
            "{t}"
        );
        assert!(
            t.contains("FAIL vmx/tdp/x86_64/amd64/tiny-direct/boot"),
            "{t}"
        );
        let total = def.cells().len();
        assert!(
            t.contains(&format!("cells no host ran ({})", total - 2)),
            "{t}"
        );
        assert!(t.contains("no host reported it"));
        let xml = junit::write(&suites[0]);
        assert_eq!(junit::parse(&xml).unwrap()[0], suites[0]);
    }
}
