//! Building the images: every recipe (with a second run for --check-reproducible), one image
//! from its packages, and the index entry that records what was used.

use super::*;

pub(super) struct Report {
    pub(super) name: String,
    pub(super) secs: u64,
    pub(super) kernel_secs: u64,
    /// Pins that fell back to the mirror's version (see debs::obtain).
    pub(super) warnings: Vec<String>,
    pub(super) result: std::result::Result<(), Problem>,
}

pub(super) fn build_all(
    ctx: &Ctx,
    recipes: &[Recipe],
    out: &Path,
) -> Result<(index::Index, Vec<Report>)> {
    std::fs::create_dir_all(out)?;
    let mut images = Vec::new();
    let mut report = Vec::new();
    let bar = crate::progress::Bar::new(recipes.len(), "images");
    for r in recipes {
        bar.set_message(r.name().to_string());
        let start = Instant::now();
        let mut kernel_secs = 0;
        let mut warnings = Vec::new();
        let res = build_one(ctx, r, out, &mut kernel_secs, &mut warnings);
        let secs = start.elapsed().as_secs();
        let result = match res {
            Ok(img) => {
                images.push(img);
                Ok(())
            }
            Err(p) => {
                let _ = std::fs::remove_dir_all(out.join(format!(".{}.tmp", r.name())));
                Err(p)
            }
        };
        report.push(Report {
            name: r.name().to_string(),
            secs,
            kernel_secs,
            warnings,
            result,
        });
        bar.inc();
    }
    bar.finish();
    // With --only, images built earlier stay in the index while their files are there.
    if let Ok(text) = std::fs::read(out.join("index.json")) {
        if let Ok(old) = serde_json::from_slice::<index::Index>(&text) {
            for img in &old.images {
                let rebuilt = recipes.iter().any(|r| r.name() == img.name);
                let present = img
                    .files
                    .iter()
                    .all(|f| std::fs::metadata(out.join(&f.path)).is_ok_and(|m| m.len() == f.size));
                // An entry this xtask would not write (an older layout) is dropped, not kept
                // to make the whole index invalid.
                let valid = index::Index {
                    images: vec![img.clone()],
                    ..old.clone()
                }
                .validate()
                .is_ok();
                if !rebuilt && present && valid {
                    images.push(img.clone());
                }
            }
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let idx = index::Index {
        format: index::FORMAT.into(),
        format_version: index::FORMAT_VERSION,
        created: rfc3339(ctx.epoch),
        images,
    };
    idx.validate()
        .map_err(|e| Error::fail(format!("generated index is invalid: {e}")))?;
    let json = serde_json::to_string_pretty(&idx).map_err(|e| Error::fail(e.to_string()))? + "\n";
    write_atomic(&out.join("index.json"), json.as_bytes())?;

    println!();
    println!("{:<14} {:<9} {:>8}  details", "image", "status", "time");
    for r in &report {
        let (status, detail) = match &r.result {
            Ok(()) => {
                let img = idx.find(&r.name).expect("built image is indexed");
                let files: Vec<String> = img
                    .files
                    .iter()
                    .map(|f| format!("{} {} ({} KiB)", f.role, f.path, f.size.div_ceil(1024)))
                    .collect();
                let k = if r.kernel_secs > 0 {
                    format!("kernel compiled in {}s; ", r.kernel_secs)
                } else {
                    String::new()
                };
                ("built", format!("{k}{}", files.join(", ")))
            }
            Err(Problem::Unavailable(why)) => ("SKIPPED", format!("cannot be built here: {why}")),
            Err(Problem::Fail(why)) => ("FAILED", why.clone()),
        };
        println!("{:<14} {:<9} {:>7}s  {detail}", r.name, status, r.secs);
        for w in &r.warnings {
            println!("{:<14} warning: {w}", "");
        }
    }
    println!("index: {}", out.join("index.json").display());
    Ok((idx, report))
}

/// Compare two builds file by file: (identical count, differences).
pub(super) fn compare(a: &index::Index, b: &index::Index) -> (usize, Vec<String>) {
    let mut same = 0;
    let mut diffs = Vec::new();
    for ia in &a.images {
        let Some(ib) = b.find(&ia.name) else {
            diffs.push(format!("{}: missing from the second build", ia.name));
            continue;
        };
        for fa in &ia.files {
            match ib.file(&fa.role) {
                Some(fb) if fb.sha256 == fa.sha256 => same += 1,
                Some(fb) => diffs.push(format!(
                    "{}: {} {} != {}",
                    ia.name, fa.path, fa.sha256, fb.sha256
                )),
                None => diffs.push(format!("{}: {} missing", ia.name, fa.path)),
            }
        }
    }
    (same, diffs)
}

pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(super) fn need(r: &Recipe, section: &str, key: &str) -> std::result::Result<String, Problem> {
    r.need(section, key)
        .map(str::to_string)
        .map_err(Problem::Fail)
}

/// The Linux builders' initramfs (busybox, `modules` in load order, the check) and disk,
/// staged in `stage` and listed in `files`; returns the disk's index format (None: raw).
fn initrd_and_disk(
    ctx: &Ctx,
    r: &Recipe,
    busybox: &[u8],
    modules: &Modules,
    stage: &Path,
    files: &mut Vec<(&'static str, String, &'static str)>,
    sources: &mut Vec<index::Source>,
) -> std::result::Result<Option<&'static str>, Problem> {
    let (initrd, srcs) = initramfs(ctx, r, busybox, modules)?;
    sources.extend(srcs);
    std::fs::write(stage.join("initramfs.cpio.gz"), initrd)?;
    files.push(("initrd", "initramfs.cpio.gz".to_string(), "gzip"));
    let (file, format) = publish_disk(ctx, r, busybox, stage)?;
    files.push(("disk", file, "none"));
    Ok(format)
}

/// Build one image into out/<name>/ (through out/.<name>.tmp); returns its index entry.
pub(super) fn build_one(
    ctx: &Ctx,
    r: &Recipe,
    out: &Path,
    kernel_secs: &mut u64,
    warnings: &mut Vec<String>,
) -> std::result::Result<index::Image, Problem> {
    let name = r.name().to_string();
    step(format!("image {name} ({})", r.rel));
    let stage = out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;

    // Every pinned package first: an image that cannot get its sources is skipped before
    // any expensive work.
    let got = packages(ctx, r, warnings)?;
    let find = |pkg: &str| {
        got.iter()
            .find(|g| g.pinned == pkg)
            .ok_or_else(|| Problem::Fail(format!("{}: no [package {pkg}] section", r.rel)))
    };
    let deb = |pkg: &str| find(pkg).map(|g| g.deb.clone());
    let used = |pkg: &str| find(pkg).map(|g| g.used.clone());

    let mut files = Vec::new();
    let mut disk_format: Option<&'static str> = None;
    let mut sources = Vec::new();
    let mut config_sha256 = None;
    match r.builder() {
        "minimal-linux" => {
            let src_pkg = need(r, "kernel", "source")?;
            // The version actually used (after a fallback, not the recipe's): the kernel
            // cache and the build tree are keyed by it, and by its .deb's SHA-256.
            let pin = used(&src_pkg)?;
            let make_arch = need(r, "kernel", "make_arch")?;
            let fragments: Vec<PathBuf> = need(r, "kernel", "config")?
                .split_whitespace()
                .map(|f| ctx.root.join("images").join(f))
                .collect();
            for f in &fragments {
                sources.push(source(ctx, f)?);
            }
            let k = kernel::build(
                &name,
                &deb(&src_pkg)?,
                &format!(
                    "{}_{}_{}",
                    pin.name,
                    pin.version.replace(':', "%3a"),
                    pin.sha256.get(..16).unwrap_or(&pin.sha256)
                ),
                &make_arch,
                &fragments,
                &kernel::Settings {
                    cache: &ctx.cache,
                    jobs: ctx.jobs,
                },
            )?;
            *kernel_secs = k.build_secs;
            config_sha256 = Some(k.config_sha256);
            std::fs::copy(&k.bzimage, stage.join("bzImage"))?;
            files.push(("kernel", "bzImage".to_string(), "none"));
            let busybox = deb_member(&deb(&need(r, "initramfs", "busybox")?)?, "bin/busybox")?;
            disk_format = initrd_and_disk(
                ctx,
                r,
                &busybox,
                &Modules::default(),
                &stage,
                &mut files,
                &mut sources,
            )?;
        }
        "debian-linux" => {
            let kpkg = need(r, "kernel", "package")?;
            let tree = unpack_deb(ctx, &deb(&kpkg)?)?;
            let vmlinuz = find_prefixed(&tree.join("boot"), "vmlinuz-")?;
            let kver = vmlinuz
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .unwrap_or("")
                .to_string();
            std::fs::copy(&vmlinuz, stage.join("vmlinuz"))?;
            files.push(("kernel", "vmlinuz".to_string(), "none"));
            let wanted: Vec<String> = need(r, "initramfs", "modules")?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let kdir = tree.join("lib/modules").join(&kver);
            let boot = modules(&kdir, &wanted)?;
            // The nested check's modules: those the boot list does not load already.
            let hv_wanted: Vec<String> = r
                .get("initramfs", "hypervisor_modules")
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let hypervisor: Vec<(String, Vec<u8>)> = modules(&kdir, &hv_wanted)?
                .into_iter()
                .filter(|(m, _)| !boot.iter().any(|(b, _)| b == m))
                .collect();
            let names = |l: &[(String, Vec<u8>)]| {
                l.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(" ")
            };
            step(format!(
                "{name}: modules, in load order: {}{}",
                names(&boot),
                if hypervisor.is_empty() {
                    String::new()
                } else {
                    format!("; for the nested check: {}", names(&hypervisor))
                }
            ));
            let mods = Modules { boot, hypervisor };
            let busybox = deb_member(&deb(&need(r, "initramfs", "busybox")?)?, "bin/busybox")?;
            match r.get("disk", "bootloader") {
                None => {
                    disk_format =
                        initrd_and_disk(ctx, r, &busybox, &mods, &stage, &mut files, &mut sources)?
                }
                // The BIOS boots it: kernel and initramfs go onto the disk, which is the
                // image's one file.
                Some("syslinux") => {
                    let (initrd, srcs) = initramfs(ctx, r, &busybox, &mods)?;
                    sources.extend(srcs);
                    std::fs::write(stage.join("initramfs.cpio.gz"), initrd)?;
                    let size_mib: u64 = need(r, "disk", "size_mib")?.parse().map_err(|_| {
                        Problem::Fail(format!("{}: [disk] size_mib must be a number", r.rel))
                    })?;
                    let file = syslinux::bios_disk(
                        ctx,
                        &name,
                        r.get("image", "cmdline").unwrap_or(""),
                        &format!("{MARKER}\nimage {name}\n"),
                        size_mib,
                        &stage,
                    )?;
                    files.clear();
                    files.push(("disk", file, "none"));
                }
                Some(other) => {
                    return Err(Problem::Fail(format!(
                        "{}: [disk] bootloader must be syslinux (or absent), not '{other}'",
                        r.rel
                    )))
                }
            }
        }
        "tiny-guest" => {
            let g = need(r, "guest", "name")?;
            let built = guests::build_all().map_err(|e| Problem::Fail(e.msg))?;
            let (guest, elf) = built
                .into_iter()
                .find(|(x, _)| x.name == g)
                .ok_or_else(|| {
                    Problem::Fail(format!(
                        "{}: no tiny guest named '{g}' in xtask/src/guests.rs",
                        r.rel
                    ))
                })?;
            let dir = ctx.root.join("images/guests");
            // The guest, the linker script and every include file (guests include
            // common.inc, console.inc, cpuid32.inc, ...).
            let mut inputs = vec![dir.join(guest.source), dir.join("guest.ld")];
            let mut incs: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "inc"))
                .collect();
            incs.sort();
            inputs.extend(incs);
            for f in inputs {
                sources.push(source(ctx, &f)?);
            }
            std::fs::copy(&elf, stage.join(format!("{g}.elf")))?;
            files.push(("kernel", format!("{g}.elf"), "none"));
        }
        "boot-program" => {
            let (file, role) = boot_program(ctx, r, &stage, &mut sources)?;
            files.push((role, file, "none"));
        }
        other => {
            return Err(Problem::Fail(format!(
                "{}: unknown builder '{other}' (minimal-linux, debian-linux, tiny-guest, \
                 boot-program)",
                r.rel
            )))
        }
    }

    let mut entries = Vec::new();
    for (role, file, compression) in files {
        let p = stage.join(&file);
        entries.push(index::File {
            role: role.into(),
            path: format!("{name}/{file}"),
            size: std::fs::metadata(&p)?.len(),
            sha256: sha256_file(&p).map_err(Problem::Fail)?,
            compression: compression.into(),
            format: disk_format.filter(|_| role == "disk").map(str::to_string),
        });
    }
    let dest = out.join(&name);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&stage, &dest)?;
    Ok(index::Image {
        name: name.clone(),
        arch: need(r, "image", "arch")?,
        kind: need(r, "image", "kind")?,
        description: r.get("image", "description").unwrap_or("").to_string(),
        revision: r.revision().map_err(Problem::Fail)?,
        created: rfc3339(ctx.epoch),
        min_fugu_version: need(r, "image", "min_fugu_version")?,
        cmdline: r.get("image", "cmdline").unwrap_or("").to_string(),
        files: entries,
        provenance: index::Provenance {
            recipe: r.rel.clone(),
            recipe_sha256: sha256_bytes(r.text.as_bytes()),
            packages: got.iter().map(Got::record).collect(),
            config_sha256,
            sources,
        },
    })
}

/// One pin of an image as obtained.
pub(super) struct Got {
    /// The recipe's pin (`[package NAME]`), which the recipe's other sections name.
    pinned: String,
    /// The package used: the pin itself, or the mirror's current one after a fallback.
    used: recipe::Pin,
    pin: recipe::Pin,
    deb: PathBuf,
}

impl Got {
    /// The provenance record: the package used and, when it is not the pin, the pin.
    fn record(&self) -> index::Package {
        let (p, u) = (&self.pin, &self.used);
        let same = p.name == u.name && p.version == u.version && p.sha256 == u.sha256;
        index::Package {
            name: u.name.clone(),
            version: u.version.clone(),
            arch: u.arch.clone(),
            sha256: u.sha256.clone(),
            pinned: (!same).then(|| index::Pinned {
                name: p.name.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
            }),
        }
    }
}

/// Every pinned package of `r`, in recipe order (see debs::obtain). A fallback's warning is
/// printed now and kept for the report; with `--locked`, every refused pin of the image is
/// named in one error.
pub(super) fn packages(
    ctx: &Ctx,
    r: &Recipe,
    warnings: &mut Vec<String>,
) -> std::result::Result<Vec<Got>, Problem> {
    let cache = debs::DebCache::new(&ctx.cache);
    let mut got = Vec::new();
    let mut refused = Vec::new();
    for pin in r.pins().map_err(Problem::Fail)? {
        let (used, deb) = match debs::obtain(&pin, &cache, &debs::Apt, &ctx.snapshots, ctx.policy)?
        {
            debs::Outcome::Exact(deb) => (pin.clone(), deb),
            debs::Outcome::Fallback { used, deb, warning } => {
                eprintln!("warning: {}: {warning}", r.name());
                warnings.push(warning);
                (used, deb)
            }
            debs::Outcome::Refused(why) => {
                refused.push(why);
                continue;
            }
        };
        got.push(Got {
            pinned: pin.name.clone(),
            used,
            pin,
            deb,
        });
    }
    if !refused.is_empty() {
        return Err(Problem::Fail(format!(
            "--locked: {} pin(s) of {} cannot be used as recorded:\n    {}\n  (without \
             --locked the mirror's versions are used; --update-pins records them)",
            refused.len(),
            r.rel,
            refused.join("\n    ")
        )));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_records_the_package_used_and_a_pin_it_replaced() {
        let pin = recipe::Pin {
            name: "linux-image-6.1.0-48-cloud-amd64".into(),
            version: "6.1.172-1".into(),
            arch: "amd64".into(),
            sha256: "aa".repeat(32),
            track: Some("linux-image-cloud-amd64".into()),
            filename: None,
            source: None,
        };
        let used = recipe::Pin {
            name: "linux-image-6.1.0-49-cloud-amd64".into(),
            version: "6.1.192-3".into(),
            sha256: "bb".repeat(32),
            ..pin.clone()
        };
        let fell_back = Got {
            pinned: pin.name.clone(),
            used: used.clone(),
            pin: pin.clone(),
            deb: PathBuf::from("x.deb"),
        }
        .record();
        assert_eq!(fell_back.name, used.name);
        assert_eq!(fell_back.version, "6.1.192-3");
        assert_eq!(fell_back.sha256, used.sha256);
        let p = fell_back.pinned.clone().unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.sha256.as_str()),
            (pin.name.as_str(), "6.1.172-1", pin.sha256.as_str())
        );
        let exact = Got {
            pinned: pin.name.clone(),
            used: pin.clone(),
            pin: pin.clone(),
            deb: PathBuf::from("x.deb"),
        }
        .record();
        assert_eq!(exact.pinned, None);
        // The index says "pinned" only for a fallback; an exact build's entry has no such
        // field, so older readers (deny_unknown_fields) still read it.
        let json = serde_json::to_string(&exact).unwrap();
        assert!(!json.contains("pinned"), "{json}");
        let json = serde_json::to_string(&fell_back).unwrap();
        let back: index::Package = serde_json::from_str(&json).unwrap();
        assert_eq!(back, fell_back);
    }
}
