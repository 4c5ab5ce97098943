//! `cargo xtask release [--target T]... [--from DIR] [--images DIR] [--out DIR] [--suite S]
//! [--no-lintian]`: a signed release in target/release-dist/ (docs/release.md):
//!
//! - the tarballs and .debs of `package` (built here, with the signing key's public half in
//!   the .deb as /usr/share/keyrings/fugu-archive-keyring.gpg; or taken as they are from
//!   `--from DIR`, e.g. a CI job's `package` output),
//! - `SHA256SUMS` over them and `SHA256SUMS.asc`, its detached signature,
//! - `fugu-archive-keyring.gpg` / `.asc`, the public key (binary for apt and gpgv, armored to
//!   read and publish),
//! - `apt/`, a signed apt repository of the .debs ([`apt`]),
//! - with `--images DIR` (a tree of `cargo xtask images publish DIR`), `images/`: that tree
//!   with `index.json.asc` beside its index.json, which `fugu image` checks.
//!
//! The key comes from the environment ([`sign`]); without one nothing is built or written.
//! Everything is written to `<out>.partial/` and renamed into place at the end, so an
//! error leaves the previous release directory as it was and no half release.

mod apt;
mod sign;

use crate::package::{self, Layout};
use crate::targets::{self, ALL};
use crate::util::{self, step, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Tools of the release besides cargo and those of `package`: gpg signs, gpgv checks the
/// result, dpkg-scanpackages writes the apt indexes.
const RELEASE_DEBS: &[&str] = &["gnupg", "gpgv", "dpkg-dev"];

/// The apt suite when --suite is not given.
const DEFAULT_SUITE: &str = "stable";

pub fn main(args: &[String]) -> Result {
    let p = crate::flags::parse(&crate::flags::RELEASE, args)?;
    if p.has("--help") {
        return Err(Error::usage(crate::USAGE));
    }
    let targets = match p.all("--target") {
        v if v.is_empty() => ALL.to_vec(),
        v => targets::from_values(&v).map_err(Error::usage)?,
    };
    let suite = p.last("--suite").unwrap_or_else(|| DEFAULT_SUITE.into());
    if suite.is_empty()
        || !suite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(Error::usage(format!(
            "release: --suite '{suite}' is not a suite name"
        )));
    }
    let out = p
        .last("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target/release-dist"));
    let from = p.last("--from").map(PathBuf::from);
    let images = p.last("--images").map(PathBuf::from);
    // Before anything is built: the key, then the inputs.
    if std::env::var_os(sign::KEY_VAR).is_none_or(|v| v.is_empty()) {
        return sign::Signer::from_env().map(|_| ());
    }
    util::ensure_debs(RELEASE_DEBS, "signing a release")?;
    let signer = sign::Signer::from_env()?;
    step(format!("signing with key {}", signer.fingerprint));
    if let Some(d) = &from {
        if !d.is_dir() {
            return Err(Error::usage(format!(
                "release: --from {} is not a directory",
                d.display()
            )));
        }
    }
    if let Some(d) = &images {
        if !d.join("index.json").is_file() {
            return Err(Error::usage(format!(
                "release: --images {} has no index.json (write one with `cargo xtask images publish DIR`)",
                d.display()
            )));
        }
    }

    let partial = sibling(&out, "partial");
    reset_dir(&partial)?;
    let result = assemble(
        &partial,
        &signer,
        &targets,
        from.as_deref(),
        images.as_deref(),
        &suite,
        !p.has("--no-lintian"),
    );
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    // The finished release replaces the previous one in two renames.
    let old = sibling(&out, "old");
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if out.exists() {
        std::fs::rename(&out, &old)?;
    }
    std::fs::rename(&partial, &out)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    println!("{}", out.display());
    step(format!(
        "release in {} signed by {} (check: gpgv --keyring {0}/fugu-archive-keyring.gpg {0}/SHA256SUMS.asc {0}/SHA256SUMS)",
        out.display(),
        signer.fingerprint
    ));
    Ok(())
}

/// Everything of the release, into `dir`.
fn assemble(
    dir: &Path,
    signer: &sign::Signer,
    targets: &[targets::Target],
    from: Option<&Path>,
    images: Option<&Path>,
    suite: &str,
    lint: bool,
) -> Result {
    let keyring = dir.join("fugu-archive-keyring.gpg");
    signer.export(&keyring, false)?;
    signer.export(&dir.join("fugu-archive-keyring.asc"), true)?;

    let artifacts = match from {
        Some(d) => artifacts_in(d)?,
        None => {
            let mut l = Layout::in_tree("release-package");
            l.keyring = Some(keyring.clone());
            let epoch = package::source_date_epoch(&l.src)?;
            package::package(&l, targets, epoch, lint)?
                .into_iter()
                .filter(|p| is_artifact(p))
                .collect()
        }
    };
    if !artifacts.iter().any(|p| has_ext(p, ".deb")) {
        return Err(Error::fail(format!(
            "release: no .deb among the artifacts ({})",
            from.map(|d| d.display().to_string()).unwrap_or_default()
        )));
    }
    let mut sums = Vec::new();
    for a in &artifacts {
        let to = dir.join(
            a.file_name()
                .ok_or_else(|| Error::fail("artifact without a name"))?,
        );
        std::fs::copy(a, &to)
            .map_err(|e| Error::fail(format!("cannot copy {}: {e}", a.display())))?;
        sums.push(to);
    }
    sums.push(keyring.clone());
    sums.push(dir.join("fugu-archive-keyring.asc"));
    step("SHA256SUMS and SHA256SUMS.asc");
    let sums_file = package::write_sha256sums(dir, &sums)?;
    let sig = dir.join("SHA256SUMS.asc");
    signer.detach_sign(&sums_file, &sig)?;
    // What users will run: the signature must verify against the published keyring.
    gpgv(&keyring, &sig, &sums_file)?;

    step(format!(
        "apt repository (suite {suite}) in {}",
        dir.join("apt").display()
    ));
    let debs: Vec<PathBuf> = sums
        .iter()
        .filter(|p| has_ext(p, ".deb"))
        .cloned()
        .collect();
    apt::write(&debs, &dir.join("apt"), suite, now(), signer)?;

    if let Some(src) = images {
        step(format!("image index from {}, signed", src.display()));
        let to = dir.join("images");
        util::run(Command::new("cp").arg("-a").arg("--").arg(src).arg(&to))?;
        let index = to.join("index.json");
        let sig = to.join("index.json.asc");
        signer.detach_sign(&index, &sig)?;
        gpgv(&keyring, &sig, &index)?;
    }
    Ok(())
}

/// The release artifacts (.deb and .tar.gz) in a `package` output directory.
fn artifacts_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::fail(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_artifact(p))
        .collect();
    v.sort();
    Ok(v)
}

fn is_artifact(p: &Path) -> bool {
    has_ext(p, ".deb") || has_ext(p, ".tar.gz")
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(ext))
}

/// Check a detached signature with gpgv, as users and fugu do.
fn gpgv(keyring: &Path, sig: &Path, data: &Path) -> Result {
    let mut c = Command::new("gpgv");
    c.env("LC_ALL", "C")
        .arg("--keyring")
        .arg(keyring)
        .arg("--")
        .arg(sig)
        .arg(data);
    let (ok, out) = util::capture(&mut c)?;
    if !ok {
        return Err(Error::fail(format!(
            "the new signature does not verify ({}):\n{}",
            util::describe(&c),
            out.trim()
        )));
    }
    Ok(())
}

/// `dir` with `.suffix` appended to its name.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(format!(".{suffix}"));
    PathBuf::from(s)
}

fn reset_dir(dir: &Path) -> Result {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::fail(format!("cannot create {}: {e}", dir.display())))
}

/// The apt repository's date: the time it is published, not SOURCE_DATE_EPOCH (apt compares
/// it with the clock; the packages inside stay reproducible).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
