//! Every command's options, declared in one place, and the one parser that reads them.
//!
//! A small table-driven parser rather than clap: the xtask is compiled before anything else
//! runs (`cargo xtask ...`), also by Debian's rustc for the i686 L1, and clap with derive
//! would roughly double its build time for a dozen flags. Each command gets a `Parsed`: the
//! flags in the order given, with their values, and the positional words.

use crate::util::Error;

/// One option: its names (the first is the canonical one) and, when it takes a value, what
/// kind of value (for the error message: "--jobs needs a number").
pub struct Flag {
    pub names: &'static [&'static str],
    pub value: Option<&'static str>,
}

const fn switch(names: &'static [&'static str]) -> Flag {
    Flag { names, value: None }
}

const fn with(names: &'static [&'static str], what: &'static str) -> Flag {
    Flag {
        names,
        value: Some(what),
    }
}

/// A command's options and whether it takes positional words.
pub struct Spec {
    pub command: &'static str,
    pub flags: &'static [Flag],
    pub positional: bool,
}

const HELP: Flag = switch(&["--help", "-h"]);

pub const BUILD: Spec = Spec {
    command: "build",
    flags: &[with(&["--target"], "a value"), switch(&["--release"]), HELP],
    positional: false,
};

pub const PACKAGE: Spec = Spec {
    command: "package",
    flags: &[
        with(&["--target"], "a value"),
        switch(&["--check-reproducible"]),
        switch(&["--no-lintian"]),
        HELP,
    ],
    positional: false,
};

pub const RELEASE: Spec = Spec {
    command: "release",
    flags: &[
        with(&["--target"], "a value"),
        with(&["--from"], "a directory"),
        with(&["--images"], "a directory"),
        with(&["--out"], "a directory"),
        with(&["--suite"], "a name"),
        switch(&["--no-lintian"]),
        HELP,
    ],
    positional: false,
};

pub const TEST: Spec = Spec {
    command: "test",
    flags: &[HELP],
    positional: false,
};

pub const BENCH: Spec = Spec {
    command: "bench",
    flags: &[
        with(&["--filter"], "a value"),
        with(&["--runs"], "a value"),
        with(&["--fugu"], "a value"),
        with(&["--json"], "a value"),
        switch(&["--list"]),
        HELP,
    ],
    positional: false,
};

pub const IMAGES: Spec = Spec {
    command: "images",
    flags: &[
        with(&["--only"], "a name"),
        with(&["--jobs", "-j"], "a number"),
        switch(&["--update-pins"]),
        switch(&["--locked"]),
        with(&["--snapshot"], "an http:// URL"),
        switch(&["--check-reproducible"]),
        HELP,
    ],
    // `images publish DIR`
    positional: true,
};

pub const FUZZ: Spec = Spec {
    command: "fuzz",
    flags: &[
        with(&["--time"], "seconds"),
        with(&["--runs"], "a number"),
        switch(&["--list"]),
        HELP,
    ],
    // the targets to run
    positional: true,
};

pub const TEST_MATRIX: Spec = Spec {
    command: "test-matrix",
    flags: &[
        switch(&["--probe"]),
        switch(&["--list"]),
        switch(&["--tap"]),
        switch(&["--no-build"]),
        switch(&["--kvm-reload"]),
        with(&["--filter"], "a pattern"),
        with(&["--cell"], "a cell id"),
        with(&["--junit"], "a file"),
        with(&["--results"], "a file"),
        with(&["--log-dir"], "a directory"),
        with(&["--retries"], "a number"),
        with(&["--jobs", "-j"], "a number"),
        with(&["--timeout"], "seconds"),
        switch(&["--help", "-h", "help"]),
    ],
    positional: false,
};

/// What the parser read: the flags in the order given (canonical name, value) and the
/// positional words.
#[derive(Debug, Default)]
pub struct Parsed {
    pub flags: Vec<(&'static str, Option<String>)>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }
    /// Every value given to `name`, in order (repeatable options).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }
    /// The last value given to `name`.
    pub fn last(&self, name: &str) -> Option<String> {
        self.all(name).pop()
    }
    /// The last value of `name` as a number that `ok` accepts; `err` when it is not one.
    pub fn number<T: std::str::FromStr>(
        &self,
        name: &str,
        ok: impl Fn(&T) -> bool,
        err: impl FnOnce(&str) -> String,
    ) -> Result<Option<T>, Error> {
        match self.last(name) {
            None => Ok(None),
            Some(v) => match v.parse::<T>() {
                Ok(n) if ok(&n) => Ok(Some(n)),
                _ => Err(Error::usage(err(&v))),
            },
        }
    }
}

/// Parse `args` against `spec`: `--name value`, `--name=value`, switches, positional words
/// where the command takes them. Errors are usage errors naming the command.
pub fn parse(spec: &Spec, args: &[String]) -> Result<Parsed, Error> {
    let mut p = Parsed::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let Some(flag) = spec.flags.iter().find(|f| f.names.contains(&name)) else {
            if spec.positional && !a.starts_with('-') {
                p.positional.push(a.clone());
                continue;
            }
            return Err(Error::usage(format!(
                "{}: unknown option '{a}'",
                spec.command
            )));
        };
        let value =
            match flag.value {
                None => None,
                Some(what) => Some(inline.or_else(|| it.next().cloned()).ok_or_else(|| {
                    Error::usage(format!("{}: {name} needs {what}", spec.command))
                })?),
            };
        p.flags.push((flag.names[0], value));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn values_inline_or_next_aliases_and_errors() {
        let p = parse(
            &TEST_MATRIX,
            &s(&["--filter", "a", "-j", "3", "--filter=b", "--tap"]),
        )
        .unwrap();
        assert_eq!(p.all("--filter"), s(&["a", "b"]));
        assert_eq!(p.last("--jobs").as_deref(), Some("3"));
        assert!(p.has("--tap") && !p.has("--list"));
        let e = parse(&TEST_MATRIX, &s(&["--junit"])).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (2, "test-matrix: --junit needs a file")
        );
        assert!(parse(&TEST_MATRIX, &s(&["stray"])).is_err());
        let p = parse(&IMAGES, &s(&["publish", "dir"])).unwrap();
        assert_eq!(p.positional, s(&["publish", "dir"]));
        let n = p.number::<u32>("--jobs", |n| *n > 0, |v| v.to_string());
        assert!(matches!(n, Ok(None)));
    }

    #[test]
    fn every_flag_name_is_unique_within_its_command() {
        for spec in [
            BUILD,
            PACKAGE,
            RELEASE,
            TEST,
            BENCH,
            IMAGES,
            FUZZ,
            TEST_MATRIX,
        ] {
            let mut names: Vec<&str> = spec.flags.iter().flat_map(|f| f.names.to_vec()).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(n, names.len(), "{}", spec.command);
        }
    }
}
