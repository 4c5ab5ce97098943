//! A signed apt repository from the release's .debs, laid out as Debian's archive is:
//!
//! ```text
//! pool/main/f/fugu/fugu_<version>_<arch>.deb
//! dists/<suite>/main/binary-<arch>/Packages, Packages.gz
//! dists/<suite>/Release, InRelease (clearsigned), Release.gpg (detached)
//! ```
//!
//! `dpkg-scanpackages` (dpkg-dev) writes the Packages stanzas, with every version in the
//! pool (`--multiversion`), so that apt sees the upgrade path; the Release file, a few
//! fields and the SHA-256 of each index, is written here, and gpg signs it both ways apt
//! reads it.

use super::sign::Signer;
use crate::util::{capture, describe, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const COMPONENT: &str = "main";

/// Write the repository for `debs` into `dir` (which must not exist yet).
pub fn write(debs: &[PathBuf], dir: &Path, suite: &str, date: u64, signer: &Signer) -> Result {
    let pool = Path::new("pool").join(COMPONENT).join("f/fugu");
    std::fs::create_dir_all(dir.join(&pool))?;
    let mut arches = Vec::new();
    for d in debs {
        let name = d
            .file_name()
            .ok_or_else(|| Error::fail(format!("{}: no file name", d.display())))?;
        std::fs::copy(d, dir.join(&pool).join(name))
            .map_err(|e| Error::fail(format!("cannot copy {}: {e}", d.display())))?;
        let arch = deb_field(d, "Architecture")?;
        if !arches.contains(&arch) {
            arches.push(arch);
        }
    }
    arches.sort();
    let dists = dir.join("dists").join(suite);
    let mut indexes = Vec::new();
    for arch in &arches {
        let rel = format!("{COMPONENT}/binary-{arch}/Packages");
        let packages = scan(dir, arch)?;
        let path = dists.join(&rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&path, &packages)?;
        crate::util::run(
            Command::new("gzip")
                .args(["-9", "-n", "-k", "--"])
                .arg(&path),
        )?;
        indexes.push(rel.clone());
        indexes.push(format!("{rel}.gz"));
    }
    let mut hashes = Vec::new();
    for rel in &indexes {
        let p = dists.join(rel);
        let size = std::fs::metadata(&p)?.len();
        hashes.push((fugu_common::digest::sha256_file(&p)?, size, rel.clone()));
    }
    let release = dists.join("Release");
    std::fs::write(&release, release_file(suite, &arches, date, &hashes))?;
    signer.clearsign(&release, &dists.join("InRelease"))?;
    signer.detach_sign(&release, &dists.join("Release.gpg"))?;
    Ok(())
}

/// One control field of a .deb.
fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let mut c = Command::new("dpkg-deb");
    c.arg("--field").arg(deb).arg(field);
    let (ok, out) = capture(&mut c)?;
    match out.trim() {
        v if ok && !v.is_empty() && !v.contains(char::is_whitespace) => Ok(v.to_string()),
        _ => Err(Error::fail(format!(
            "{} failed: {}",
            describe(&c),
            out.trim()
        ))),
    }
}

/// The Packages index of `arch` (its packages and those of architecture all) from the pool.
fn scan(dir: &Path, arch: &str) -> Result<Vec<u8>> {
    let mut c = Command::new("dpkg-scanpackages");
    c.current_dir(dir)
        .env("LC_ALL", "C")
        .args(["--multiversion", "--arch", arch, "pool"]);
    let out = c.output().map_err(|e| {
        Error::fail(format!(
            "cannot run dpkg-scanpackages (Debian package dpkg-dev): {e}"
        ))
    })?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(Error::fail(format!(
            "{} failed: {}",
            describe(&c),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The Release file: what apt needs (suite, codename, components, architectures, a date in
/// UTC) and the SHA-256 and size of every index it may fetch.
pub fn release_file(
    suite: &str,
    arches: &[String],
    date: u64,
    hashes: &[(String, u64, String)],
) -> String {
    // apt wants the date in UTC spelled "UTC" (as Debian's archive writes it).
    let date = fugu_common::date::rfc2822(date).replace("+0000", "UTC");
    let mut s = format!(
        "Origin: fugu\nLabel: fugu\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n\
         Architectures: {}\nComponents: {COMPONENT}\nDescription: fugu releases\nSHA256:\n",
        arches.join(" ")
    );
    for (sha, size, rel) in hashes {
        s.push_str(&format!(" {sha} {size:>16} {rel}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_file_lists_each_index_with_its_hash() {
        let r = release_file(
            "stable",
            &["amd64".into(), "i386".into()],
            0,
            &[("ab".repeat(32), 1234, "main/binary-amd64/Packages".into())],
        );
        assert!(r.starts_with("Origin: fugu\n"), "{r}");
        assert!(r.contains("\nSuite: stable\nCodename: stable\n"), "{r}");
        assert!(r.contains("\nDate: Thu, 01 Jan 1970 00:00:00 UTC\n"), "{r}");
        assert!(
            r.contains("\nArchitectures: amd64 i386\nComponents: main\n"),
            "{r}"
        );
        assert!(r.ends_with(&format!(
            "SHA256:\n {}             1234 main/binary-amd64/Packages\n",
            "ab".repeat(32)
        )));
    }
}
