//! Kernel modules an initramfs needs, with their dependencies (modinfo `depends=`).

use super::*;

pub(super) fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Every module file under `dir`, by module name.
pub(super) fn module_files(
    dir: &Path,
    found: &mut BTreeMap<String, PathBuf>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            module_files(&p, found)?;
        } else if p.to_string_lossy().contains(".ko") {
            found.insert(module_name(&p.to_string_lossy()), p);
        }
    }
    Ok(())
}

/// The `depends=` list of a module's .modinfo (modules.dep is made by depmod at install
/// time, so a .deb does not ship it).
pub(super) fn module_depends(data: &[u8]) -> Vec<String> {
    let key = b"depends=";
    data.windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
        .map(|i| {
            let rest = &data[i + 1 + key.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// The modules to load for `wanted` from the kernel modules directory `kdir`, dependencies
/// first: (name, bytes); for initramfs builders outside the images (the svm-tcg L1).
pub fn kernel_modules(
    kdir: &Path,
    wanted: &[String],
) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
    modules(kdir, wanted).map_err(|p| match p {
        Problem::Unavailable(s) | Problem::Fail(s) => s,
    })
}

/// The modules to load for `wanted`, dependencies first: (name, bytes). Modules built into
/// the kernel (modules.builtin) are left out.
pub(super) fn modules(
    kdir: &Path,
    wanted: &[String],
) -> std::result::Result<Vec<(String, Vec<u8>)>, Problem> {
    let builtin: BTreeSet<String> = std::fs::read_to_string(kdir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    let mut files = BTreeMap::new();
    module_files(&kdir.join("kernel"), &mut files)
        .map_err(|e| Problem::Fail(format!("{}: {e}", kdir.display())))?;
    fn visit(
        m: &str,
        files: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> std::result::Result<(), Problem> {
        if builtin.contains(m) || !seen.insert(m.to_string()) {
            return Ok(());
        }
        let path = files.get(m).ok_or_else(|| {
            Problem::Fail(format!(
                "module {m} is neither built into this kernel nor shipped with it"
            ))
        })?;
        let data = read_module(path)?;
        for d in module_depends(&data) {
            visit(&d, files, builtin, seen, order)?;
        }
        order.push((m.to_string(), data));
        Ok(())
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for w in wanted {
        visit(
            &w.replace('-', "_"),
            &files,
            &builtin,
            &mut seen,
            &mut order,
        )?;
    }
    Ok(order)
}

/// A module's bytes, decompressed when the package ships it compressed.
pub(super) fn read_module(path: &Path) -> std::result::Result<Vec<u8>, Problem> {
    let p = path.to_string_lossy();
    let tool = if p.ends_with(".xz") {
        Some("xz")
    } else if p.ends_with(".zst") {
        Some("zstd")
    } else if p.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => Ok(std::fs::read(path)?),
        Some(t) => {
            let o = Command::new(t).arg("-dc").arg(path).output()?;
            if !o.status.success() {
                return Err(Problem::Fail(format!("{t} -dc {p} failed")));
            }
            Ok(o.stdout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_normalize() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci.ko"),
            "virtio_pci"
        );
        assert_eq!(
            module_name("kernel/net/packet/af_packet.ko.xz"),
            "af_packet"
        );
        assert_eq!(module_name("kernel/x/net-failover.ko"), "net_failover");
    }
    #[test]
    fn modinfo_depends_are_read() {
        let ko = b"\x7fELF...\0license=GPL\0depends=virtio_ring,net-failover\0name=virtio_net\0";
        assert_eq!(module_depends(ko), vec!["virtio_ring", "net_failover"]);
        assert!(module_depends(b"\0depends=\0name=x\0").is_empty());
    }
}
