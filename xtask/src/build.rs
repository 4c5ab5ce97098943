//! `cargo xtask build [--target T]... [--release]`: build the fugu binary for each target.

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
    c.args(["--package", "fugu", "--bin", "fugu"]);
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

pub fn main(args: &[String]) -> Result {
    let (targets, rest) = targets::from_args(args).map_err(Error::usage)?;
    let mut release = false;
    for a in &rest {
        match a.as_str() {
            "--release" => release = true,
            other => return Err(Error::usage(format!("build: unknown option '{other}'"))),
        }
    }
    let mut built = Vec::new();
    for t in targets {
        built.push((t, build_fugu(t, release)?));
    }
    for (t, path) in built {
        println!("{:<7} {}", t.short(), path.display());
    }
    Ok(())
}
