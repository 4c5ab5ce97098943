//! The initramfs: the check as /init, busybox and the modules, as a gzip'd newc cpio.

use super::*;

/// Kernel modules for an initramfs, each list in load order (dependencies first).
#[derive(Default)]
pub(super) struct Modules {
    /// Loaded by the check at every boot (/etc/fugu-modules).
    pub boot: Vec<(String, Vec<u8>)>,
    /// Loaded only by the nested check (`fugu.check=nested`, /etc/fugu-hypervisor-modules):
    /// KVM and its vendor modules, which fail to load where the CPU offers no VMX/SVM.
    pub hypervisor: Vec<(String, Vec<u8>)>,
}

/// The initramfs: busybox, the check as /init, the udhcpc script, optional modules and
/// their load order; sorted newc cpio, fixed mtimes, `gzip -n`.
pub(super) fn initramfs(
    ctx: &Ctx,
    r: &Recipe,
    busybox: &[u8],
    mods: &Modules,
) -> std::result::Result<(Vec<u8>, Vec<index::Source>), Problem> {
    let init_path = ctx.root.join("images").join(need(r, "initramfs", "init")?);
    let dhcp_path = ctx.root.join("images/check/udhcpc");
    let mut a = cpio::Archive::new();
    a.add(
        "bin/busybox",
        cpio::Entry::File {
            data: busybox.to_vec(),
            exec: true,
        },
    );
    a.add("bin/sh", cpio::Entry::Symlink("busybox".into()));
    a.add(
        "init",
        cpio::Entry::File {
            data: std::fs::read(&init_path)?,
            exec: true,
        },
    );
    a.add(
        "etc/fugu-udhcpc",
        cpio::Entry::File {
            data: std::fs::read(&dhcp_path)?,
            exec: true,
        },
    );
    a.add("dev/console", cpio::Entry::CharDev(5, 1));
    for d in ["proc", "sys", "mnt", "tmp", "sbin"] {
        a.add(d, cpio::Entry::Dir);
    }
    for (list_file, list) in [
        ("etc/fugu-modules", &mods.boot),
        ("etc/fugu-hypervisor-modules", &mods.hypervisor),
    ] {
        for (m, data) in list {
            a.add(
                &format!("lib/modules/{m}.ko"),
                cpio::Entry::File {
                    data: data.clone(),
                    exec: false,
                },
            );
        }
        if !list.is_empty() {
            let names: String = list.iter().map(|(m, _)| format!("{m}.ko\n")).collect();
            a.add(
                list_file,
                cpio::Entry::File {
                    data: names.into_bytes(),
                    exec: false,
                },
            );
        }
    }
    let gz = gzip(&a.to_bytes(ctx.epoch))?;
    Ok((gz, vec![source(ctx, &init_path)?, source(ctx, &dhcp_path)?]))
}

pub(super) fn gzip(data: &[u8]) -> std::result::Result<Vec<u8>, Problem> {
    let mut child = Command::new("gzip")
        .args(["-n", "-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Problem::Fail("no pipe".into()))?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| Problem::Fail("gzip writer panicked".into()))??;
    if !out.status.success() {
        return Err(Problem::Fail("gzip failed".into()));
    }
    Ok(out.stdout)
}
