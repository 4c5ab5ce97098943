//! .deb files: one member read, or the whole package unpacked into the cache.

use super::*;

pub(super) fn source(ctx: &Ctx, path: &Path) -> std::result::Result<index::Source, Problem> {
    Ok(index::Source {
        path: path
            .strip_prefix(&ctx.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned(),
        sha256: sha256_file(path).map_err(Problem::Fail)?,
    })
}

/// One member of a .deb's data, e.g. "bin/busybox".
pub(super) fn deb_member(deb: &Path, member: &str) -> std::result::Result<Vec<u8>, Problem> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()?;
    let tar = Command::new("tar")
        .args(["-xO", &format!("./{member}")])
        .stdin(
            dpkg.stdout
                .take()
                .ok_or_else(|| Problem::Fail("no pipe".into()))?,
        )
        .output()?;
    let _ = dpkg.wait();
    if !tar.status.success() || tar.stdout.is_empty() {
        return Err(Problem::Fail(format!(
            "{} has no {member}: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        )));
    }
    Ok(tar.stdout)
}

/// Unpack a .deb once into cache/unpacked/<file stem>/.
pub(super) fn unpack_deb(ctx: &Ctx, deb: &Path) -> std::result::Result<PathBuf, Problem> {
    let stem = deb.file_stem().and_then(|s| s.to_str()).unwrap_or("deb");
    let dir = ctx.cache.join("unpacked").join(stem);
    if !dir.join(".fugu-complete").exists() {
        step(format!("unpacking {}", deb.display()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (ok, log) = capture(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))
            .map_err(|e| Problem::Fail(e.msg))?;
        if !ok {
            return Err(Problem::Fail(format!(
                "dpkg-deb -x {}: {log}",
                deb.display()
            )));
        }
        std::fs::write(dir.join(".fugu-complete"), b"")?;
    }
    Ok(dir)
}

pub(super) fn find_prefixed(dir: &Path, prefix: &str) -> std::result::Result<PathBuf, Problem> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Problem::Fail(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| Problem::Fail(format!("{}: no {prefix}* file", dir.display())))
}
