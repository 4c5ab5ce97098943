//! `test-matrix`'s options (declared in flags.rs) as a typed struct.

use super::USAGE;
use crate::flags;
use crate::util::{self, Error, Result};
use std::path::PathBuf;

pub struct Options {
    pub probe: bool,
    pub list: bool,
    pub filters: Vec<String>,
    /// Exact cell ids (`--cell`, repeatable): only these run, after the filters.
    pub cells: Vec<String>,
    pub jobs: usize,
    pub timeout: Option<u64>,
    pub tap: bool,
    pub junit: Option<PathBuf>,
    /// The JSON results file (`--results`; default `<log-dir>/results.json`): what `merge`
    /// and the svm-tcg outer run read back.
    pub results: Option<PathBuf>,
    pub build: bool,
    pub kvm_reload: bool,
    /// Boots of a failing cell to try again (`--retries N`); a later pass is FLAKY.
    pub retries: u32,
    /// Where the cells' serial and VMM logs go (target/test-matrix unless --log-dir).
    pub log_dir: PathBuf,
}

impl Options {
    /// Where this run writes its JSON results.
    pub fn results_path(&self) -> PathBuf {
        self.results
            .clone()
            .unwrap_or_else(|| self.log_dir.join("results.json"))
    }
}

pub fn parse(args: &[String]) -> Result<Options> {
    let p = flags::parse(&flags::TEST_MATRIX, args)
        .map_err(|e| Error::usage(format!("{}\n\n{USAGE}", e.msg)))?;
    if p.has("--help") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    Ok(Options {
        probe: p.has("--probe"),
        list: p.has("--list"),
        filters: p.all("--filter"),
        cells: p.all("--cell"),
        jobs: p
            .number(
                "--jobs",
                |n: &usize| *n > 0,
                |_| "test-matrix: --jobs needs a positive number".into(),
            )?
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        timeout: p.number(
            "--timeout",
            |n: &u64| *n > 0,
            |_| "test-matrix: --timeout needs a positive number".into(),
        )?,
        tap: p.has("--tap"),
        junit: p.last("--junit").map(PathBuf::from),
        results: p.last("--results").map(PathBuf::from),
        build: !p.has("--no-build"),
        kvm_reload: p.has("--kvm-reload"),
        retries: p
            .number(
                "--retries",
                |_: &u32| true,
                |_| "test-matrix: --retries needs a number".into(),
            )?
            .unwrap_or(0),
        log_dir: p
            .last("--log-dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| util::root().join("target").join("test-matrix")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = parse(&s(&[
            "--filter",
            "host=pvm",
            "--jobs=3",
            "--tap",
            "--no-build",
        ]))
        .unwrap();
        assert_eq!(
            (o.filters, o.jobs, o.tap, o.build),
            (s(&["host=pvm"]), 3, true, false)
        );
        assert!(parse(&s(&["--jobs", "0"])).is_err());
        assert!(parse(&s(&["--bogus"])).is_err());
        assert!(parse(&s(&["--junit"])).is_err());
        let o = parse(&s(&["--cell", "a/b", "--cell=c/d"])).unwrap();
        assert_eq!(o.cells, s(&["a/b", "c/d"]));
        let o = parse(&s(&["--log-dir", "/x"])).unwrap();
        assert_eq!(o.results_path(), PathBuf::from("/x/results.json"));
    }
}
