//! The results file every run writes (JSON): one host's cells with their status, reason, log
//! tail and time. `merge` and the svm-tcg outer run read it back; JUnit and TAP are outputs
//! for other tools only.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub status: Status,
    /// SKIP/FAIL reason, or the FLAKY note of a pass on a retry.
    pub message: String,
    /// FAIL detail (log tail).
    pub detail: String,
    pub secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One results file: the host that ran it and its cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    pub host: String,
    /// The host classes it belongs to, space-separated.
    pub classes: String,
    pub cases: Vec<Case>,
}

/// The file's top level; `version` changes when a field changes meaning.
#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    suites: Vec<Suite>,
}

const VERSION: u32 = 1;

pub struct Results;

impl Results {
    /// The JSON text of one run's results.
    pub fn to_json(suite: &Suite) -> String {
        let f = File {
            version: VERSION,
            suites: vec![suite.clone()],
        };
        // Serializing plain strings and numbers cannot fail; an empty file would be reported
        // by the reader.
        serde_json::to_string_pretty(&f).unwrap_or_default() + "\n"
    }

    /// Read a results file: JSON, or the JUnit XML of `--junit` (older runs' artifacts).
    pub fn parse(text: &str) -> Result<Vec<Suite>, String> {
        if text.trim_start().starts_with('<') {
            return super::junit::parse(text);
        }
        let f: File = serde_json::from_str(text).map_err(|e| format!("not a results file: {e}"))?;
        if f.version != VERSION {
            return Err(format!(
                "results file version {} (this xtask reads {VERSION})",
                f.version
            ));
        }
        Ok(f.suites)
    }

    pub fn read(path: &Path) -> Result<Vec<Suite>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Results::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn write(path: &Path, suite: &Suite) -> Result<(), String> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(path, Results::to_json(suite))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_junit_is_still_read() {
        let suite = Suite {
            host: "box".into(),
            classes: "emulated".into(),
            cases: vec![
                Case {
                    id: "a/b".into(),
                    status: Status::Fail,
                    message: "timed out \"x\" <y>".into(),
                    detail: "line 1\nline\u{1} 2".into(),
                    secs: 1.5,
                },
                Case {
                    id: "c/d".into(),
                    status: Status::Pass,
                    message: "flaky: passed on attempt 2".into(),
                    detail: String::new(),
                    secs: 0.0,
                },
            ],
        };
        let json = Results::to_json(&suite);
        assert!(json.contains("\"status\": \"FAIL\""), "{json}");
        assert_eq!(Results::parse(&json).unwrap(), vec![suite.clone()]);
        let xml = super::super::junit::write(&suite);
        assert_eq!(Results::parse(&xml).unwrap()[0].cases[0].id, "a/b");
        assert!(Results::parse("{\"version\": 99, \"suites\": []}")
            .unwrap_err()
            .contains("version 99"));
        assert!(Results::parse("garbage").is_err());
    }
}
