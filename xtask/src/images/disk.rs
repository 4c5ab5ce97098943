//! The ext4 root disk (mke2fs -d, fixed UUIDs and times) with the check's marker file.

use super::*;

/// A UUID-shaped string derived from `seed`, so that mke2fs output is reproducible.
pub(super) fn fixed_uuid(seed: &str) -> String {
    let h = sha256_bytes(seed.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The image's disk in `stage`, in the recipe's `[disk] format` (raw, the default, or
/// qcow2: the ext4 image converted by qemu-img, which stores only the clusters that hold
/// data); returns the file name and the format the index records (None for raw).
pub(super) fn publish_disk(
    ctx: &Ctx,
    r: &Recipe,
    busybox: &[u8],
    stage: &Path,
) -> std::result::Result<(String, Option<&'static str>), Problem> {
    let raw = stage.join("disk.ext4");
    disk(ctx, r, busybox, &raw)?;
    match r.get("disk", "format").unwrap_or("raw") {
        "raw" => Ok(("disk.ext4".into(), None)),
        "qcow2" => {
            let q = stage.join("disk.qcow2");
            let (ok, log) = capture(
                Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1"])
                    .arg(&raw)
                    .arg(&q),
            )
            .map_err(|e| Problem::Fail(e.msg))?;
            if !ok {
                return Err(Problem::Fail(format!("qemu-img convert failed:\n{log}")));
            }
            std::fs::remove_file(&raw)?;
            Ok(("disk.qcow2".into(), Some("qcow2")))
        }
        other => Err(Problem::Fail(format!(
            "{}: [disk] format must be raw or qcow2, not '{other}'",
            r.rel
        ))),
    }
}

/// The ext4 disk: the marker file and, with `root_init = yes`, busybox and the check as
/// /sbin/init so that the kernel can mount it as its root and run the check from it.
pub(super) fn disk(
    ctx: &Ctx,
    r: &Recipe,
    busybox: &[u8],
    dest: &Path,
) -> std::result::Result<(), Problem> {
    let name = r.name();
    let size_mib: u64 = need(r, "disk", "size_mib")?
        .parse()
        .map_err(|_| Problem::Fail(format!("{}: [disk] size_mib must be a number", r.rel)))?;
    let root_init = r.get("disk", "root_init") == Some("yes");
    let tree = dest.with_extension("tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    std::fs::write(
        tree.join("fugu-marker"),
        format!("{MARKER}\nimage {name}\n"),
    )?;
    if root_init {
        use std::os::unix::fs::PermissionsExt;
        for d in ["bin", "sbin", "etc", "proc", "sys", "dev", "mnt", "tmp"] {
            std::fs::create_dir_all(tree.join(d))?;
        }
        let exe = |p: &Path, data: &[u8]| -> std::io::Result<()> {
            std::fs::write(p, data)?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        };
        exe(&tree.join("bin/busybox"), busybox)?;
        std::os::unix::fs::symlink("busybox", tree.join("bin/sh"))?;
        exe(
            &tree.join("sbin/init"),
            &std::fs::read(ctx.root.join("images").join(need(r, "initramfs", "init")?))?,
        )?;
        exe(
            &tree.join("etc/fugu-udhcpc"),
            &std::fs::read(ctx.root.join("images/check/udhcpc"))?,
        )?;
    }
    // Fixed mtimes and modes on everything mke2fs copies.
    let (ok, log) = capture(Command::new("find").arg(&tree).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{}", ctx.epoch),
        "{}",
        "+",
    ]))
    .map_err(|e| Problem::Fail(e.msg))?;
    if !ok {
        return Err(Problem::Fail(format!("touch: {log}")));
    }
    let _ = std::fs::remove_file(dest);
    let uuid = fixed_uuid(&format!("fugu-image:{name}"));
    let (ok, log) = capture(
        Command::new("mke2fs")
            .env("E2FSPROGS_FAKE_TIME", ctx.epoch.to_string())
            .env("MKE2FS_CONFIG", "/dev/null")
            .args([
                "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-I", "256",
            ])
            // Features named explicitly: MKE2FS_CONFIG=/dev/null keeps the host's
            // /etc/mke2fs.conf out of the result.
            .args([
                "-O",
                "has_journal,extent,flex_bg,64bit,dir_nlink,extra_isize,huge_file,metadata_csum",
            ])
            .args(["-U", &uuid])
            .args([
                "-E",
                &format!("hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0"),
            ])
            .args(["-L", "fugu-disk"])
            .arg("-d")
            .arg(&tree)
            .arg(dest)
            .arg(format!("{size_mib}M")),
    )
    .map_err(|e| Problem::Fail(e.msg))?;
    if !ok {
        let _ = std::fs::remove_dir_all(&tree);
        return Err(Problem::Fail(format!("mke2fs failed:\n{log}")));
    }
    // mke2fs -d copies each file's ctime, which no tool can set on the host: set every
    // inode's ctime to the epoch too, with debugfs.
    let mut paths = vec!["/".to_string(), "/lost+found".to_string()];
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for p in entries {
            out.push(format!("/{}", p.strip_prefix(base).unwrap_or(&p).display()));
            if p.is_dir() && !p.is_symlink() {
                walk(&p, base, out)?;
            }
        }
        Ok(())
    }
    walk(&tree, &tree, &mut paths)?;
    let _ = std::fs::remove_dir_all(&tree);
    let script: String = paths
        .iter()
        .map(|p| format!("sif {p} ctime @{}\n", ctx.epoch))
        .collect();
    let script_path = dest.with_extension("debugfs");
    std::fs::write(&script_path, script)?;
    let (ok, log) = capture(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", ctx.epoch.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(dest),
    )
    .map_err(|e| Problem::Fail(e.msg))?;
    let _ = std::fs::remove_file(&script_path);
    if !ok || log.contains("sif:") {
        return Err(Problem::Fail(format!(
            "debugfs (fixing ctimes) failed:\n{log}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_fixed() {
        let u = fixed_uuid("x");
        assert_eq!(u, fixed_uuid("x"));
        assert_eq!(u.len(), 36);
        assert_ne!(u, fixed_uuid("y"));
    }
}
