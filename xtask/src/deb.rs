//! The Debian side of `cargo xtask package`: the control file and its fields (Depends from the
//! binary's real shared-library needs, Installed-Size), md5sums, the changelog, `dpkg-deb` and
//! lintian. Templates live in packaging/debian/; their @KEY@ fields come from packaging/fields
//! and from the build.

use crate::util::{self, capture, Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Substitute every `@KEY@` in `template` with its value; any key left over is an error, so
/// that a template and the code cannot drift apart silently.
pub fn render(template: &str, fields: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('@').filter(|&e| {
            e > 0
                && after[..e]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_')
        });
        match end {
            Some(e) => {
                let key = &after[..e];
                let value = fields
                    .get(key)
                    .ok_or_else(|| Error::fail(format!("template field @{key}@ has no value")))?;
                out.push_str(value);
                rest = &after[e + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse packaging/fields: "KEY: value" lines, '#' comments.
pub fn parse_fields(text: &str) -> Result<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| Error::fail(format!("packaging/fields line {}: no ':'", n + 1)))?;
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(fields)
}

/// Which Debian package provides each shared library a Rust binary may need, on every
/// architecture (glibc's libraries come from libc6, the unwinder from libgcc-s1).
const SONAME_PACKAGES: &[(&str, &str, &str)] = &[
    // (soname, package, version-node prefix)
    ("libc.so.6", "libc6", "GLIBC_"),
    ("libm.so.6", "libc6", "GLIBC_"),
    ("libpthread.so.0", "libc6", "GLIBC_"),
    ("libdl.so.2", "libc6", "GLIBC_"),
    ("librt.so.1", "libc6", "GLIBC_"),
    ("libutil.so.1", "libc6", "GLIBC_"),
    ("ld-linux.so.2", "libc6", "GLIBC_"),
    ("ld-linux-x86-64.so.2", "libc6", "GLIBC_"),
    ("libgcc_s.so.1", "libgcc-s1", "GCC_"),
];

/// The Depends field for a binary, from `objdump -p` output: every NEEDED library maps to its
/// package, at least at the newest symbol version the binary requires from it (GLIBC_2.34 ->
/// libc6 (>= 2.34); GCC_4.2.0 -> libgcc-s1 (>= 4.2), as Debian's symbols files spell it).
pub fn depends_from_objdump(objdump: &str) -> Result<String> {
    let mut needed = Vec::new();
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut from: Option<String> = None;
    for line in objdump.lines() {
        let t = line.trim();
        if let Some(lib) = t.strip_prefix("NEEDED") {
            needed.push(lib.trim().to_string());
        } else if let Some(lib) = t.strip_prefix("required from ") {
            from = Some(lib.trim_end_matches(':').trim().to_string());
        } else if t.is_empty() || !line.starts_with("    ") {
            from = None;
        } else if let (Some(lib), Some(node)) = (&from, t.split_whitespace().nth(3)) {
            versions
                .entry(lib.clone())
                .or_default()
                .push(node.to_string());
        }
    }
    if needed.is_empty() {
        return Err(Error::fail(
            "the binary needs no shared libraries (static?); objdump found no NEEDED entries",
        ));
    }
    let mut deps: BTreeMap<&str, Option<Vec<u64>>> = BTreeMap::new();
    for lib in &needed {
        let &(_, pkg, prefix) = SONAME_PACKAGES
            .iter()
            .find(|(so, _, _)| so == lib)
            .ok_or_else(|| {
                Error::fail(format!(
                    "the binary needs {lib}, whose Debian package is unknown; add it to \
                     SONAME_PACKAGES in xtask/src/deb.rs"
                ))
            })?;
        let entry = deps.entry(pkg).or_insert(None);
        for node in versions.get(lib).into_iter().flatten() {
            let Some(v) = node.strip_prefix(prefix).and_then(numeric_version) else {
                continue; // GLIBC_PRIVATE and the like carry no version
            };
            if entry.as_ref().is_none_or(|cur| v > *cur) {
                *entry = Some(v);
            }
        }
    }
    Ok(deps
        .into_iter()
        .map(|(pkg, v)| match v {
            Some(v) => format!("{pkg} (>= {})", debian_version_of_node(&v)),
            None => pkg.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// "2.3.4" -> [2, 3, 4]; None unless every part is a number.
fn numeric_version(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// A symbol version as a Debian version: a trailing ".0" of a three-part version is dropped
/// (GCC_4.2.0 -> 4.2), as in the symbols files of libgcc-s1; GLIBC versions stay as they are.
fn debian_version_of_node(v: &[u64]) -> String {
    let parts = if v.len() == 3 && v[2] == 0 {
        &v[..2]
    } else {
        v
    };
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Installed-Size in KiB as dpkg-gencontrol counts it: each regular file rounded up to whole
/// KiB, every other entry (directory, symlink) one KiB. `root` is the package tree without
/// DEBIAN/.
pub fn installed_size(root: &Path) -> Result<u64> {
    let mut total = 0;
    for (rel, meta) in walk(root)? {
        if rel.starts_with("DEBIAN") {
            continue;
        }
        total += if meta.is_file() {
            meta.len().div_ceil(1024)
        } else {
            1
        };
    }
    Ok(total)
}

/// Every entry below `root` (not `root` itself), sorted by path, with its metadata.
pub fn walk(root: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> Result {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let meta = std::fs::symlink_metadata(e.path())?;
            let rel = e
                .path()
                .strip_prefix(root)
                .map_err(|_| Error::fail("path outside the tree"))?
                .to_path_buf();
            let is_dir = meta.is_dir();
            out.push((rel, meta));
            if is_dir {
                go(root, &e.path(), out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, root, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// DEBIAN/md5sums: "<md5>  <path>" for every regular file outside DEBIAN/, sorted by path.
pub fn md5sums(root: &Path) -> Result<String> {
    let files: Vec<PathBuf> = walk(root)?
        .into_iter()
        .filter(|(rel, meta)| meta.is_file() && !rel.starts_with("DEBIAN"))
        .map(|(rel, _)| rel)
        .collect();
    let mut c = Command::new("md5sum");
    c.current_dir(root).arg("--").args(&files);
    let out = c
        .output()
        .map_err(|e| Error::fail(format!("cannot run md5sum: {e}")))?;
    if !out.status.success() {
        return Err(Error::fail(format!(
            "md5sum failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| Error::fail("md5sum output"))?;
    if text.lines().count() != files.len() {
        return Err(Error::fail("md5sum did not list every file"));
    }
    Ok(text)
}

pub use fugu_common::date::rfc2822;

/// Build `stage` (a tree with DEBIAN/) into `deb` with dpkg-deb: root-owned, entries
/// sorted, mtimes clamped to SOURCE_DATE_EPOCH, xz on one thread (so the bytes do not depend
/// on the machine's core count).
pub fn dpkg_deb(stage: &Path, deb: &Path, epoch: u64) -> Result {
    let mut c = Command::new("dpkg-deb");
    c.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("LC_ALL", "C")
        .args([
            "--root-owner-group",
            "-Zxz",
            "-z6",
            "--threads-max=1",
            "--build",
        ])
        .arg(stage)
        .arg(deb);
    let (ok, out) = capture(&mut c)?;
    if !ok {
        return Err(Error::fail(format!(
            "{} failed:\n{}",
            util::describe(&c),
            out.trim()
        )));
    }
    Ok(())
}

/// The result of lintian on one package.
pub struct Lint {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Run lintian on `deb` (installed as a Debian package when missing and allowed).
pub fn lintian(deb: &Path) -> Result<Lint> {
    util::ensure_debs(&["lintian"], "checking the .deb packages")?;
    let (_, out) = capture(
        Command::new("lintian")
            .env("LC_ALL", "C.UTF-8")
            .args(["--tag-display-limit", "0"])
            .arg(deb),
    )?;
    Ok(parse_lintian(&out))
}

fn parse_lintian(out: &str) -> Lint {
    let pick = |p: &str| {
        out.lines()
            .filter(|l| l.starts_with(p))
            .map(str::to_string)
            .collect()
    };
    Lint {
        errors: pick("E: "),
        warnings: pick("W: "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_fill_every_field_and_refuse_unknown_ones() {
        let f = fields(&[("VERSION", "0.1.0"), ("ARCH", "i386")]);
        assert_eq!(
            render("Version: @VERSION@\nArchitecture: @ARCH@\nx@y.z @ 1\n", &f).unwrap(),
            "Version: 0.1.0\nArchitecture: i386\nx@y.z @ 1\n"
        );
        let e = render("Depends: @DEPENDS@\n", &f).unwrap_err();
        assert!(e.msg.contains("@DEPENDS@"), "{e}");
    }

    #[test]
    fn the_shipped_templates_render_to_valid_control_files() {
        let root = util::root().join("packaging");
        let mut f = parse_fields(&std::fs::read_to_string(root.join("fields")).unwrap()).unwrap();
        for (k, v) in [
            ("VERSION", "0.1.0"),
            ("ARCH", "amd64"),
            ("INSTALLED_SIZE", "1234"),
            ("DEPENDS", "libc6 (>= 2.34)"),
            ("DATE", "Thu, 01 Jan 1970 00:00:00 +0000"),
        ] {
            f.insert(k.into(), v.into());
        }
        let control = render(
            &std::fs::read_to_string(root.join("debian/control.in")).unwrap(),
            &f,
        )
        .unwrap();
        let keys: Vec<&str> = control
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split_once(": ").expect(l).0)
            .collect();
        for k in [
            "Package",
            "Version",
            "Architecture",
            "Maintainer",
            "Installed-Size",
            "Depends",
            "Section",
            "Priority",
            "Homepage",
            "Description",
        ] {
            assert!(keys.contains(&k), "{k} missing from\n{control}");
        }
        assert!(control.ends_with('\n') && !control.contains("\n\n"));
        assert!(control.contains("Maintainer: ") && control.contains(" <"));
        // Description lines: a synopsis, then continuation lines starting with a space.
        let desc = control.split("Description: ").nth(1).unwrap();
        assert!(desc.lines().next().unwrap().len() < 80);
        assert!(desc
            .lines()
            .skip(1)
            .all(|l| l.starts_with(' ') && l.len() <= 80));
        for name in ["debian/copyright", "debian/changelog.in"] {
            let t = render(&std::fs::read_to_string(root.join(name)).unwrap(), &f).unwrap();
            assert!(!t.contains("@MAINTAINER@") && t.contains("fugu"), "{name}");
        }
    }

    // objdump -p of a real i686 fugu build (trimmed).
    const OBJDUMP_I686: &str = "
Dynamic Section:
  NEEDED               libgcc_s.so.1
  NEEDED               libc.so.6
  NEEDED               ld-linux.so.2
  FLAGS_1              0x08000001

Version References:
  required from ld-linux.so.2:
    0x0d696913 0x00 17 GLIBC_2.3
  required from libc.so.6:
    0x06969196 0x00 19 GLIBC_2.16
    0x06969196 0x00 19 GLIBC_PRIVATE
    0x069691b3 0x00 18 GLIBC_2.33
    0x069691b4 0x00 06 GLIBC_2.34
    0x0d696910 0x00 05 GLIBC_2.0
    0x09691f73 0x00 04 GLIBC_2.1.3
  required from libgcc_s.so.1:
    0x0b792650 0x00 08 GCC_3.0
    0x09276060 0x00 03 GCC_4.2.0
    0x0b792653 0x00 02 GCC_3.3

";

    #[test]
    fn depends_come_from_needed_libraries_and_symbol_versions() {
        assert_eq!(
            depends_from_objdump(OBJDUMP_I686).unwrap(),
            "libc6 (>= 2.34), libgcc-s1 (>= 4.2)"
        );
        // Versions compare numerically, not as strings: 2.9 < 2.10.
        let o = "  NEEDED libc.so.6\nVersion References:\n  required from libc.so.6:\n    \
                 0x1 0x00 02 GLIBC_2.9\n    0x2 0x00 03 GLIBC_2.10\n";
        assert_eq!(depends_from_objdump(o).unwrap(), "libc6 (>= 2.10)");
        let e = depends_from_objdump("  NEEDED               libfoo.so.3\n").unwrap_err();
        assert!(e.msg.contains("libfoo.so.3"), "{e}");
        assert!(depends_from_objdump("Dynamic Section:\n").is_err());
    }

    #[test]
    fn installed_size_and_md5sums_cover_the_data_files_only() {
        let dir = std::env::temp_dir().join(format!("xtask-deb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("DEBIAN/control"), vec![b'x'; 5000]).unwrap();
        std::fs::write(dir.join("usr/bin/b"), vec![b'x'; 1025]).unwrap();
        std::fs::write(dir.join("usr/bin/a"), b"").unwrap();
        // usr, usr/bin: 1 each; a: 0; b: 2.
        assert_eq!(installed_size(&dir).unwrap(), 4);
        assert_eq!(
            md5sums(&dir).unwrap(),
            format!(
                "d41d8cd98f00b204e9800998ecf8427e  usr/bin/a\n{}  usr/bin/b\n",
                md5_of(&[b'x'; 1025])
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn md5_of(data: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()[..32].to_string()
    }

    #[test]
    fn lintian_output_splits_into_errors_and_warnings() {
        let l =
            parse_lintian("E: fugu: no-copyright-file\nW: fugu: foo bar\nI: fugu: info\nN: note\n");
        assert_eq!(l.errors, ["E: fugu: no-copyright-file"]);
        assert_eq!(l.warnings, ["W: fugu: foo bar"]);
    }
}
