//! Small shared helpers: errors with exit codes, progress lines, running commands.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct Error {
    pub msg: String,
    pub code: u8,
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            code: 2,
        }
    }
    pub fn fail(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            code: 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::fail(e.to_string())
    }
}

pub type Result<T = ()> = std::result::Result<T, Error>;

/// A progress line on stderr, so stdout stays clean for results.
pub fn step(msg: impl AsRef<str>) {
    crate::progress::line(&format!("==> {}", msg.as_ref()));
}

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// Run a command with inherited stdio; an error names the command and its status.
pub fn run(cmd: &mut Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| Error::fail(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::fail(format!("{} failed ({status})", describe(cmd))))
    }
}

/// Run a command and capture stdout+stderr; returns (success, combined output).
pub fn capture(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd
        .output()
        .map_err(|e| Error::fail(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), s))
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether this process runs as root (and may install packages).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Which of `pkgs` are not installed (dpkg says so).
pub fn missing_debs(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// Install Debian packages when root; otherwise say exactly what to install.
pub fn ensure_debs(pkgs: &[&str], why: &str) -> Result {
    let missing = missing_debs(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(Error::fail(format!(
            "{why} needs Debian packages that are not installed; run as root:\n    apt-get install -y {}",
            missing.join(" ")
        )));
    }
    step(format!("installing {} ({why})", missing.join(" ")));
    let install = |quiet: bool| {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing);
        if quiet {
            c.arg("-q");
        }
        capture(&mut c)
    };
    let (ok, out) = install(true)?;
    if ok {
        return Ok(());
    }
    // Fresh machines may have no package lists yet.
    step("apt-get install failed; refreshing package lists with apt-get update");
    let (_, upd) = capture(Command::new("apt-get").args(["update", "-q"]))?;
    let (ok, out2) = install(true)?;
    if ok {
        Ok(())
    } else {
        Err(Error::fail(format!(
            "apt-get install {} failed:\n{}\n{}\n{}",
            missing.join(" "),
            tail(&out, 10),
            tail(&upd, 10),
            tail(&out2, 10)
        )))
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
