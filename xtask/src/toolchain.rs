//! How to build for each target on this machine, above all the i686 toolchain (DESIGN.md
//! "The i686 toolchain"): an installed rustup target first; otherwise Debian's rustc-web with
//! rust-web-src and -Zbuild-std, set up when root and verified by a smoke build.

use crate::targets::Target;
use crate::util::{self, capture, step, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages of the build-std route, which must all be at one version.
const DEBIAN_ROUTE_DEBS: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "rust-web-clippy",
    "gcc-multilib",
];
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library/std/Cargo.toml";

/// A way of invoking cargo for one target.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub target: Target,
    /// Extra environment for cargo.
    pub env: Vec<(String, String)>,
    /// Extra cargo arguments (before `--`).
    pub args: Vec<String>,
    /// Where this target's build output goes.
    pub target_dir: PathBuf,
    /// How it was set up, for messages.
    pub route: String,
    /// The `cargo-clippy` to run instead of `cargo clippy` (its clippy-driver must match the
    /// rustc in use: Debian's for the build-std route).
    pub cargo_clippy: Option<PathBuf>,
}

impl Toolchain {
    /// `cargo <sub> --target T ...` with this toolchain's environment.
    pub fn cargo(&self, sub: &str) -> Command {
        let program = match (&self.cargo_clippy, sub) {
            (Some(cc), "clippy") => cc.clone().into_os_string(),
            _ => std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        };
        let mut c = Command::new(program);
        c.current_dir(util::root());
        c.arg(sub);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.args(&self.args);
        c.arg("--target-dir").arg(&self.target_dir);
        if self.target != Target::host() {
            c.args(["--target", self.target.triple()]);
        }
        c
    }

    /// Directory holding the built binaries for `profile` ("debug" or "release").
    pub fn out_dir(&self, profile: &str) -> PathBuf {
        if self.target == Target::host() {
            self.target_dir.join(profile)
        } else {
            self.target_dir.join(self.target.triple()).join(profile)
        }
    }

    /// Pass exactly `flags` to rustc (as CARGO_ENCODED_RUSTFLAGS, so paths may hold spaces);
    /// this replaces RUSTFLAGS and any rustflags from cargo configuration.
    pub fn set_rustflags(&mut self, flags: &[String]) {
        self.env
            .retain(|(k, _)| k != "RUSTFLAGS" && k != "CARGO_ENCODED_RUSTFLAGS");
        self.env.push(("RUSTFLAGS".into(), String::new()));
        self.env
            .push(("CARGO_ENCODED_RUSTFLAGS".into(), flags.join("\u{1f}")));
    }
}

/// Find (and when allowed, set up) the toolchain for `target`.
pub fn for_target(target: Target) -> Result<Toolchain> {
    let root = util::root();
    if target == Target::host() {
        return Ok(Toolchain {
            target,
            env: vec![],
            args: vec![],
            target_dir: root.join("target"),
            route: "host toolchain".into(),
            cargo_clippy: None,
        });
    }
    let target_dir = root.join("target").join(target.short());
    if rustup_has_target(target) {
        util::ensure_debs(&["gcc-multilib"], "linking for i686")?;
        return Ok(Toolchain {
            target,
            env: vec![],
            args: vec![],
            target_dir,
            route: "rustup target".into(),
            cargo_clippy: None,
        });
    }
    debian_build_std(target, target_dir)
}

fn rustup_has_target(target: Target) -> bool {
    matches!(capture(Command::new("rustup").args(["target", "list", "--installed"])),
        Ok((true, out)) if out.lines().any(|l| l.trim() == target.triple()))
}

fn debian_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Debian route 1: rustc-web + rust-web-src + gcc-multilib, then -Zbuild-std.
fn debian_build_std(target: Target, target_dir: PathBuf) -> Result<Toolchain> {
    // rust-web-clippy only matters for `cargo xtask test`, but one consistent set keeps the
    // route simple and verifiable.
    let missing = util::missing_debs(DEBIAN_ROUTE_DEBS);
    if !missing.is_empty() {
        if !util::is_root() {
            return Err(Error::fail(format!(
                "no toolchain for {t}. Either\n    rustup target add {t}\n    apt-get install -y gcc-multilib\n\
                 or, without rustup downloads (Debian packages only), as root:\n    apt-get install -y {}",
                DEBIAN_ROUTE_DEBS.join(" "),
                t = target.triple()
            )));
        }
        util::ensure_debs(
            DEBIAN_ROUTE_DEBS,
            &format!("the {} toolchain (rustc-web + -Zbuild-std)", target.short()),
        )?;
    }
    let (rv, sv) = (debian_version("rustc-web"), debian_version("rust-web-src"));
    let cv = debian_version("rust-web-clippy");
    if rv != sv || rv != cv {
        return Err(Error::fail(format!(
            "rustc-web ({}), rust-web-src ({}) and rust-web-clippy ({}) must be the same version; as root:\n    apt-get install -y rustc-web rust-web-src rust-web-clippy",
            rv.unwrap_or_else(|| "missing".into()),
            sv.unwrap_or_else(|| "missing".into()),
            cv.unwrap_or_else(|| "missing".into())
        )));
    }
    for p in [DEBIAN_RUSTC, DEBIAN_STD_SRC] {
        if !Path::new(p).exists() {
            return Err(Error::fail(format!(
                "{p} is missing although rustc-web/rust-web-src are installed; reinstall them"
            )));
        }
    }
    let tc = Toolchain {
        target,
        env: vec![
            ("RUSTC".into(), DEBIAN_RUSTC.into()),
            ("RUSTDOC".into(), DEBIAN_RUSTDOC.into()),
            ("RUSTC_BOOTSTRAP".into(), "1".into()),
            // The host toolchain's flags (if any) are not meant for this rustc.
            ("RUSTFLAGS".into(), String::new()),
        ],
        args: vec!["-Zbuild-std=std,panic_unwind".into()],
        target_dir,
        route: format!(
            "Debian rustc-web {} with -Zbuild-std",
            rv.unwrap_or_default()
        ),
        cargo_clippy: Some(PathBuf::from(DEBIAN_CARGO_CLIPPY)),
    };
    smoke_test(&tc)?;
    Ok(tc)
}

/// Build and run a hello-world with the toolchain once per rustc version; cache the result.
fn smoke_test(tc: &Toolchain) -> Result {
    let version = capture(Command::new(DEBIAN_RUSTC).arg("-V"))?
        .1
        .trim()
        .to_string();
    let stamp = tc.target_dir.join("toolchain-ok");
    let expected = format!("{}\n{}\n", tc.route, version);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(expected.as_str()) {
        return Ok(());
    }
    step(format!(
        "verifying the {} toolchain ({}) with a smoke build",
        tc.target.short(),
        tc.route
    ));
    let dir = tc.target_dir.join("smoke");
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"smoke\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    std::fs::write(
        dir.join("src/main.rs"),
        "fn main() { println!(\"pointer width {}\", std::mem::size_of::<usize>() * 8); }\n",
    )?;
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(&dir).arg("build").arg("--quiet");
    c.envs(tc.env.iter().map(|(k, v)| (k, v)));
    c.args(&tc.args).args(["--target", tc.target.triple()]);
    c.arg("--target-dir").arg(dir.join("target"));
    let (ok, out) = capture(&mut c)?;
    if !ok {
        return Err(Error::fail(format!(
            "the {} smoke build failed ({}):\n{}",
            tc.target.short(),
            tc.route,
            util::tail(&out, 20)
        )));
    }
    let exe = dir
        .join("target")
        .join(tc.target.triple())
        .join("debug/smoke");
    let (ok, out) = capture(&mut Command::new(&exe))?;
    let want = if tc.target == Target::I686 {
        "pointer width 32"
    } else {
        "pointer width 64"
    };
    if !ok || !out.contains(want) {
        return Err(Error::fail(format!(
            "the {} smoke binary did not run correctly: {out}",
            tc.target.short()
        )));
    }
    std::fs::write(&stamp, expected)?;
    Ok(())
}
