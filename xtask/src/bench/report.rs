//! The numbers of `cargo xtask bench`: statistics over runs, ratios against the peer, the
//! targets from DESIGN.md, and the two renderings (a markdown table and JSON).

use serde_json::{json, Value};

/// Median, minimum and maximum of one series of runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    /// None for an empty series or one holding a NaN.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
    }
}

/// A goal on the ratio fugu / peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The ratio must be at most this.
    AtMost(f64),
    /// The ratio must be at least this.
    AtLeast(f64),
}

impl Goal {
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(x) => ratio <= x,
            Goal::AtLeast(x) => ratio >= x,
        }
    }
    pub fn describe(self) -> String {
        match self {
            Goal::AtMost(x) => format!("≤ {x}×"),
            Goal::AtLeast(x) => format!("≥ {x}×"),
        }
    }
}

/// What became of one workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Measured: fugu's series and, when there is one, the peer's.
    Measured {
        fugu: Vec<f64>,
        peer: Option<Vec<f64>>,
    },
    /// The feature it measures does not exist yet.
    NotAvailable(String),
    /// It should have run but failed; the message says why.
    Failed(String),
}

/// One row of the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: &'static str,
    /// What one sample is, e.g. "s", "MiB", "µs/exit", "req/s".
    pub unit: &'static str,
    /// The peer measured in the same invocation, e.g. "QEMU", "pread".
    pub peer_name: &'static str,
    pub goal: Option<Goal>,
    pub outcome: Outcome,
    /// Anything a reader needs to interpret the figure.
    pub note: String,
}

impl Row {
    pub fn fugu(&self) -> Option<Stats> {
        match &self.outcome {
            Outcome::Measured { fugu, .. } => Stats::of(fugu),
            _ => None,
        }
    }
    pub fn peer(&self) -> Option<Stats> {
        match &self.outcome {
            Outcome::Measured { peer: Some(p), .. } => Stats::of(p),
            _ => None,
        }
    }
    /// fugu's median over the peer's median.
    pub fn ratio(&self) -> Option<f64> {
        match (self.fugu(), self.peer()) {
            (Some(f), Some(p)) if p.median != 0.0 => Some(f.median / p.median),
            _ => None,
        }
    }
    /// Whether the goal is met: None when there is no goal or no ratio.
    pub fn met(&self) -> Option<bool> {
        Some(self.goal?.met(self.ratio()?))
    }
}

/// A number with about four significant digits, without exponent notation.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    let decimals = if a >= 1000.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else if a >= 1.0 {
        3
    } else {
        4
    };
    format!("{x:.decimals$}")
}

fn cell(s: Option<Stats>, unit: &str) -> String {
    match s {
        Some(s) if s.runs > 1 => {
            format!("{} {unit} ({}–{})", num(s.median), num(s.min), num(s.max))
        }
        Some(s) => format!("{} {unit}", num(s.median)),
        None => "—".into(),
    }
}

/// Markdown escaping for table cells: pipes and line breaks.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The markdown table: one row per workload, median (min–max) of each side.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | fugu: median (min–max) | peer | peer: median (min–max) | ratio fugu/peer | target | met | notes |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (fugu, peer, note) = match &r.outcome {
            Outcome::Measured { .. } => (
                cell(r.fugu(), r.unit),
                cell(r.peer(), r.unit),
                r.note.clone(),
            ),
            Outcome::NotAvailable(why) => ("not available yet".into(), "—".into(), why.clone()),
            Outcome::Failed(why) => ("FAILED".into(), "—".into(), why.clone()),
        };
        let ratio = r
            .ratio()
            .map(|x| format!("{}×", num(x)))
            .unwrap_or_else(|| "—".into());
        let goal = r.goal.map(Goal::describe).unwrap_or_else(|| "—".into());
        let met = match r.met() {
            Some(true) => "met",
            Some(false) => "not met",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md(r.name),
            md(&fugu),
            md(r.peer_name),
            md(&peer),
            ratio,
            md(&goal),
            met,
            md(&note)
        ));
    }
    out
}

fn stats_json(s: Option<Stats>, samples: Option<&Vec<f64>>) -> Value {
    match (s, samples) {
        (Some(s), Some(v)) => json!({
            "median": s.median, "min": s.min, "max": s.max, "runs": s.runs, "samples": v,
        }),
        _ => Value::Null,
    }
}

/// The whole result as JSON: the machine, the settings, and every row with its samples.
pub fn to_json(machine: &Value, runs: usize, rows: &[Row]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (status, reason, fugu, peer) = match &r.outcome {
                Outcome::Measured { fugu, peer } => (
                    "measured",
                    Value::Null,
                    stats_json(r.fugu(), Some(fugu)),
                    stats_json(r.peer(), peer.as_ref()),
                ),
                Outcome::NotAvailable(w) => ("not-available", json!(w), Value::Null, Value::Null),
                Outcome::Failed(w) => ("failed", json!(w), Value::Null, Value::Null),
            };
            let goal = match r.goal {
                Some(Goal::AtMost(x)) => json!({"ratio_at_most": x}),
                Some(Goal::AtLeast(x)) => json!({"ratio_at_least": x}),
                None => Value::Null,
            };
            json!({
                "name": r.name,
                "unit": r.unit,
                "status": status,
                "reason": reason,
                "fugu": fugu,
                "peer_name": r.peer_name,
                "peer": peer,
                "ratio": r.ratio(),
                "target": goal,
                "met": r.met(),
                "note": r.note,
            })
        })
        .collect();
    json!({
        "format": "fugu-bench",
        "format_version": 1,
        "machine": machine,
        "runs": runs,
        "workloads": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fugu: &[f64], peer: Option<&[f64]>, goal: Option<Goal>) -> Row {
        Row {
            name: "w",
            unit: "s",
            peer_name: "QEMU",
            goal,
            outcome: Outcome::Measured {
                fugu: fugu.to_vec(),
                peer: peer.map(|p| p.to_vec()),
            },
            note: String::new(),
        }
    }

    #[test]
    fn stats_of_odd_even_and_empty_series() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 4.0, 4));
        let s = Stats::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.0, 7.0, 7.0));
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_and_goals() {
        let r = row(
            &[1.0, 2.0, 3.0],
            Some(&[8.0, 8.0, 9.0]),
            Some(Goal::AtMost(0.5)),
        );
        assert_eq!(r.ratio(), Some(0.25));
        assert_eq!(r.met(), Some(true));
        let r = row(&[5.0], Some(&[8.0]), Some(Goal::AtMost(0.5)));
        assert_eq!(r.met(), Some(false));
        let r = row(&[9.0], Some(&[10.0]), Some(Goal::AtLeast(0.9)));
        assert_eq!(r.met(), Some(true));
        let r = row(&[8.0], Some(&[10.0]), Some(Goal::AtLeast(0.9)));
        assert_eq!(r.met(), Some(false));
        // No peer, a zero peer or no goal: no verdict.
        assert_eq!(row(&[1.0], None, Some(Goal::AtMost(1.0))).met(), None);
        assert_eq!(
            row(&[1.0], Some(&[0.0]), Some(Goal::AtMost(1.0))).ratio(),
            None
        );
        assert_eq!(row(&[1.0], Some(&[2.0]), None).met(), None);
        assert_eq!(Goal::AtMost(1.1).describe(), "≤ 1.1×");
        assert_eq!(Goal::AtLeast(0.9).describe(), "≥ 0.9×");
    }

    #[test]
    fn numbers_keep_about_four_digits() {
        assert_eq!(num(12345.678), "12346");
        assert_eq!(num(123.456), "123.5");
        assert_eq!(num(12.3456), "12.35");
        assert_eq!(num(1.23456), "1.235");
        assert_eq!(num(0.0123456), "0.0123");
        assert_eq!(num(0.0), "0.0000");
    }

    #[test]
    fn table_has_one_line_per_row_and_every_outcome() {
        let mut rows = vec![row(
            &[1.0, 2.0, 3.0],
            Some(&[4.0, 8.0, 9.0]),
            Some(Goal::AtMost(0.5)),
        )];
        rows.push(Row {
            name: "seabios",
            unit: "s",
            peer_name: "QEMU",
            goal: Some(Goal::AtMost(0.5)),
            outcome: Outcome::NotAvailable("fugu has no --bios | firmware".into()),
            note: String::new(),
        });
        rows.push(Row {
            name: "pull",
            unit: "s",
            peer_name: "curl",
            goal: None,
            outcome: Outcome::Failed("server\ndied".into()),
            note: String::new(),
        });
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert_eq!(
            lines[2],
            "| w | 2.000 s (1.000–3.000) | QEMU | 8.000 s (4.000–9.000) | 0.2500× | ≤ 0.5× | met |  |"
        );
        assert_eq!(
            lines[3],
            "| seabios | not available yet | QEMU | — | — | ≤ 0.5× | — | fugu has no --bios \\| firmware |"
        );
        assert_eq!(
            lines[4],
            "| pull | FAILED | curl | — | — | — | — | server died |"
        );
        // Every line has the same number of columns.
        let cols = |l: &str| l.matches('|').count() - l.matches("\\|").count();
        assert!(lines.iter().all(|l| cols(l) == cols(lines[0])), "{t}");
    }

    #[test]
    fn json_carries_samples_verdicts_and_reasons() {
        let rows = vec![
            row(&[1.0, 3.0], Some(&[4.0, 4.0]), Some(Goal::AtLeast(0.9))),
            Row {
                name: "x",
                unit: "s",
                peer_name: "QEMU",
                goal: None,
                outcome: Outcome::NotAvailable("later".into()),
                note: "n".into(),
            },
        ];
        let v = to_json(&json!({"nproc": 2}), 2, &rows);
        assert_eq!(v["format"], "fugu-bench");
        assert_eq!(v["runs"], 2);
        assert_eq!(v["machine"]["nproc"], 2);
        let w = &v["workloads"][0];
        assert_eq!(w["status"], "measured");
        assert_eq!(w["fugu"]["median"], 2.0);
        assert_eq!(w["fugu"]["samples"], json!([1.0, 3.0]));
        assert_eq!(w["peer"]["max"], 4.0);
        assert_eq!(w["ratio"], 0.5);
        assert_eq!(w["target"]["ratio_at_least"], 0.9);
        assert_eq!(w["met"], false);
        let x = &v["workloads"][1];
        assert_eq!(x["status"], "not-available");
        assert_eq!(x["reason"], "later");
        assert!(x["fugu"].is_null() && x["ratio"].is_null() && x["met"].is_null());
        // Round-trips as text.
        let text = serde_json::to_string_pretty(&v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }
}
