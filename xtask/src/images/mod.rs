//! `cargo xtask images`: guest images built from pinned Debian packages and the recipes in
//! images/*.image, with an index (sizes, SHA-256, provenance) for `fugu image`.
//!
//! ```text
//! cargo xtask images [--only NAME]... [--jobs N] [--check-reproducible] [--locked]
//!                    [--snapshot URL]...
//! cargo xtask images --update-pins
//! cargo xtask images publish DIR
//! ```
//! Outputs go to target/images/out/<name>/ and target/images/out/index.json; downloads (by
//! SHA-256), unpacked sources and kernels are cached under target/images/cache/. A pin the
//! mirror no longer has falls back to the mirror's version with a warning (recorded in the
//! provenance) unless `--locked`. An image whose packages this machine cannot obtain (the
//! i386 index) is reported and skipped; the others are still built.

mod bootprog;
mod build;
pub mod cpio;
pub mod debs;
mod disk;
mod initramfs;
mod kernel;
mod modules;
mod publish;
mod recipe;
pub mod syslinux;
mod unpack;

/// The index schema, one definition with fugu's reader.
pub use fugu_common::index;
pub use fugu_common::{date::rfc3339, digest::sha256_bytes};

use crate::guests;
use crate::util::{self, capture, step, Error, Result};
use bootprog::boot_program;
use build::{build_all, compare, need, write_atomic};
use disk::publish_disk;
use initramfs::{initramfs, Modules};
pub use modules::kernel_modules;
use modules::modules;
use publish::{publish, update_pins};
use recipe::Recipe;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use unpack::{deb_member, find_prefixed, source, unpack_deb};

/// Why an image was not built.
#[derive(Debug)]
pub enum Problem {
    /// This machine cannot obtain a source (e.g. no i386 package index): skipped, reported.
    Unavailable(String),
    /// A real failure: wrong checksum, a pin gone from the mirror, a failed build.
    Fail(String),
}

impl From<std::io::Error> for Problem {
    fn from(e: std::io::Error) -> Self {
        Problem::Fail(e.to_string())
    }
}

/// The text the check looks for in the disk's marker file (images/check/init).
const MARKER: &str = "fugu disk marker v1";

const USAGE: &str = "\
usage: cargo xtask images [--only NAME]... [--jobs N] [--check-reproducible]
                          [--locked] [--snapshot URL]...
       cargo xtask images --update-pins [--only NAME]...
       cargo xtask images publish DIR [--only NAME]... [--locked] [--snapshot URL]...

  Pins (images/*.image [package] sections) work like a lockfile: a pinned .deb comes from
  the cache (target/images/cache/debs/by-sha256), else the mirror, else a snapshot archive.
  A pin the mirror no longer has (or has with another SHA-256) falls back to the mirror's
  current version with a warning; the index's provenance records what was used.
  --locked          refuse such pins instead, naming each (release builds)
  --snapshot URL    a Debian archive root as it was when the pins were recorded, e.g. a
                    snapshot service's .../archive/debian/<timestamp>; the file is
                    URL/<pool path>, checked against the pin's SHA-256 (repeatable; also
                    FUGU_SNAPSHOT_URL, space-separated)
  --update-pins     rewrite the recipes' pins to the versions the mirror has now";

/// Hex SHA-256 of a file; the error names the file.
pub fn sha256_file(path: &Path) -> std::result::Result<String, String> {
    fugu_common::digest::sha256_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

struct Opts {
    only: Vec<String>,
    jobs: u32,
    update_pins: bool,
    check_reproducible: bool,
    publish: Option<PathBuf>,
    policy: debs::Policy,
    snapshots: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            only: Vec::new(),
            jobs: 2,
            update_pins: false,
            check_reproducible: false,
            publish: None,
            policy: debs::Policy::Fallback,
            snapshots: Vec::new(),
        }
    }
}

fn parse_args(args: &[String]) -> Result<Opts> {
    let p = crate::flags::parse(&crate::flags::IMAGES, args)
        .map_err(|e| Error::usage(format!("{}\n{USAGE}", e.msg)))?;
    if p.has("--help") {
        return Err(Error::usage(USAGE));
    }
    let mut o = Opts {
        only: p.all("--only"),
        update_pins: p.has("--update-pins"),
        check_reproducible: p.has("--check-reproducible"),
        ..Opts::default()
    };
    if let Some(j) = p.number(
        "--jobs",
        |n: &u32| *n > 0,
        |_| format!("--jobs needs a number\n{USAGE}"),
    )? {
        o.jobs = j;
    }
    if p.has("--locked") {
        o.policy = debs::Policy::Locked;
    }
    for u in p.all("--snapshot") {
        if !u.starts_with("http://") {
            return Err(Error::usage(format!(
                "--snapshot needs an http:// URL\n{USAGE}"
            )));
        }
        o.snapshots.push(u);
    }
    match p.positional.as_slice() {
        [] => {}
        [w] if w == "help" => return Err(Error::usage(USAGE)),
        [w, dir] if w == "publish" => o.publish = Some(PathBuf::from(dir)),
        [w] if w == "publish" => {
            return Err(Error::usage(format!("publish needs a directory\n{USAGE}")))
        }
        [other, ..] => {
            return Err(Error::usage(format!(
                "images: unknown option '{other}'\n{USAGE}"
            )))
        }
    }
    Ok(o)
}

struct Ctx {
    root: PathBuf,
    cache: PathBuf,
    epoch: u64,
    jobs: u32,
    policy: debs::Policy,
    snapshots: Vec<String>,
}

/// SOURCE_DATE_EPOCH, else the time of the last commit, else 0: the same inputs give the
/// same outputs.
fn source_date_epoch(root: &Path) -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return e;
    }
    capture(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%ct"]),
    )
    .ok()
    .filter(|(ok, _)| *ok)
    .and_then(|(_, s)| s.trim().parse().ok())
    .unwrap_or(0)
}

fn load_recipes(root: &Path, only: &[String]) -> Result<Vec<Recipe>> {
    let dir = root.join("images");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "image"))
        .collect();
    paths.sort();
    let mut recipes = Vec::new();
    for p in paths {
        recipes.push(Recipe::load(root, &p).map_err(Error::fail)?);
    }
    for o in only {
        if !recipes.iter().any(|r| r.name() == o) {
            let names: Vec<&str> = recipes.iter().map(|r| r.name()).collect();
            return Err(Error::usage(format!(
                "no recipe named '{o}' (have: {})",
                names.join(", ")
            )));
        }
    }
    recipes.retain(|r| only.is_empty() || only.iter().any(|o| o == r.name()));
    Ok(recipes)
}

pub fn main(args: &[String]) -> Result {
    run(parse_args(args)?)
}

/// Build the images `names` as `cargo xtask images --only NAME...` does (the matrix's Linux
/// cells boot exactly these).
pub fn build_only(names: &[String]) -> Result {
    run(Opts {
        only: names.to_vec(),
        ..Opts::default()
    })
}

fn run(o: Opts) -> Result {
    let root = util::root();
    let recipes = load_recipes(&root, &o.only)?;
    if o.update_pins {
        return update_pins(&recipes);
    }
    util::ensure_debs(
        &[
            "e2fsprogs",
            // qemu-img: disks published as qcow2 ([disk] format = qcow2).
            "qemu-utils",
            "gzip",
            "xz-utils",
            "lz4",
            "flex",
            "bison",
            "bc",
            "libelf-dev",
            "libssl-dev",
            "make",
            "gcc",
            "gcc-multilib",
            "binutils",
        ],
        "building guest images",
    )?;
    let ctx = Ctx {
        cache: root.join("target/images/cache"),
        epoch: source_date_epoch(&root),
        jobs: o.jobs,
        root: root.clone(),
        policy: o.policy,
        snapshots: debs::snapshot_urls(&o.snapshots),
    };
    let out = root.join("target/images/out");
    step(format!(
        "building {} image(s) into {} (SOURCE_DATE_EPOCH={})",
        recipes.len(),
        out.display(),
        ctx.epoch
    ));
    let (idx, report) = build_all(&ctx, &recipes, &out)?;

    let mut failed = report
        .iter()
        .any(|r| matches!(r.result, Err(Problem::Fail(_))));
    if o.check_reproducible {
        let again = root.join("target/images/out-check");
        step(format!(
            "--check-reproducible: building everything again into {}",
            again.display()
        ));
        let (idx2, _) = build_all(&ctx, &recipes, &again)?;
        let (same, diffs) = compare(&idx, &idx2);
        println!();
        if diffs.is_empty() {
            println!("reproducible: {same} file(s), identical SHA-256 in both builds");
        } else {
            failed = true;
            println!("NOT reproducible:");
            for d in &diffs {
                println!("  {d}");
            }
        }
    }
    if let Some(dir) = &o.publish {
        publish(&out, &idx, dir)?;
    }
    if failed {
        return Err(Error::fail("some images failed to build (see above)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_in_the_repo_parse() {
        let root = util::root();
        let all = load_recipes(&root, &[]).unwrap();
        assert!(all.iter().any(|r| r.name() == "linux-amd64"));
        for r in &all {
            assert!(
                matches!(
                    r.builder(),
                    "minimal-linux" | "debian-linux" | "tiny-guest" | "boot-program"
                ),
                "{}",
                r.rel
            );
        }
    }
    #[test]
    fn image_command_lines_leave_host_adaptation_to_fugu() {
        let root = util::root();
        for r in load_recipes(&root, &[]).unwrap() {
            let cmdline = r.get("image", "cmdline").unwrap_or("");
            for w in cmdline.split_whitespace() {
                let key = w.split('=').next().unwrap_or(w);
                assert!(
                    !crate::probe::FUGU_LINUX_SWITCHES
                        .iter()
                        .any(|s| s.split('=').next() == Some(key)),
                    "{}: '{w}' is fugu's to add (vmm/src/host_compat.rs)",
                    r.rel
                );
                assert_ne!(w, "rodata=off", "{}", r.rel);
            }
        }
    }
    #[test]
    fn locked_and_snapshot_options_parse() {
        let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = a(&[]).unwrap();
        assert_eq!(o.policy, debs::Policy::Fallback);
        let o = a(&["--locked", "--snapshot", "http://h/archive/debian/1"]).unwrap();
        assert_eq!(o.policy, debs::Policy::Locked);
        assert_eq!(o.snapshots, vec!["http://h/archive/debian/1".to_string()]);
        assert!(a(&["--snapshot"]).is_err());
        assert!(a(&["--snapshot", "https://h/"]).is_err());
    }
}
