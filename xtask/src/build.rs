//! `cargo xtask build [--target T]... [--release]`: build the fugu binary for each target.

use crate::flags;
use crate::targets;
use crate::toolchain;
use crate::util::{self, step, Error, Result};
use std::path::PathBuf;

/// Build `fugu` for `target`; returns the binary's path.
pub fn build_fugu(target: targets::Target, release: bool) -> Result<PathBuf> {
    let tc = toolchain::for_target(target)?;
    step(format!(
        "building fugu for {} ({}{})",
        target.short(),
        tc.route,
        if release { ", release" } else { "" }
    ));
    let mut c = tc.cargo("build");
    // fugu-bench (the helpers `bench` runs) is built beside fugu, never packaged.
    c.args(["--package", "fugu", "--bin", "fugu", "--bin", "fugu-bench"]);
    if release {
        c.arg("--release");
    }
    util::run(&mut c)?;
    let bin = tc
        .out_dir(if release { "release" } else { "debug" })
        .join("fugu");
    if !bin.exists() {
        return Err(Error::fail(format!(
            "cargo succeeded but {} is missing",
            bin.display()
        )));
    }
    Ok(bin)
}

/// Build this xtask itself for `target` (debug); returns the binary's path. The svm-tcg-i386
/// L1 runs it: a 32-bit kernel cannot execute the host's x86_64 xtask.
pub fn build_xtask(target: targets::Target) -> Result<PathBuf> {
    let tc = toolchain::for_target(target)?;
    step(format!(
        "building the xtask for {} ({})",
        target.short(),
        tc.route
    ));
    let mut c = tc.cargo("build");
    c.args(["--package", "xtask", "--bin", "xtask"]);
    util::run(&mut c)?;
    let bin = tc.out_dir("debug").join("xtask");
    if !bin.exists() {
        return Err(Error::fail(format!(
            "cargo succeeded but {} is missing",
            bin.display()
        )));
    }
    Ok(bin)
}

pub fn main(args: &[String]) -> Result {
    let p = flags::parse(&flags::BUILD, args)?;
    if p.has("--help") {
        return Err(Error::usage(crate::USAGE));
    }
    let targets = targets::from_values(&p.all("--target")).map_err(Error::usage)?;
    let release = p.has("--release");
    let mut built = Vec::new();
    for t in targets {
        built.push((t, build_fugu(t, release)?));
    }
    for (t, path) in built {
        println!("{:<7} {}", t.short(), path.display());
    }
    Ok(())
}
