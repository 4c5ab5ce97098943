//! `cargo xtask images`: guest images built from pinned Debian packages and the recipes in
//! images/*.image, with an index (sizes, SHA-256, provenance) for `fugu image`.
//!
//! ```text
//! cargo xtask images [--only NAME]... [--jobs N] [--check-reproducible]
//! cargo xtask images --update-pins
//! cargo xtask images publish DIR
//! ```
//! Outputs go to target/images/out/<name>/ and target/images/out/index.json; downloads,
//! unpacked sources and kernels are cached under target/images/cache/. An image whose
//! packages this machine cannot obtain (the i386 index) is reported and skipped; the others
//! are still built.

mod cpio;
mod debs;
mod kernel;
mod recipe;

/// The index schema, shared with fugu (vmm/src/image/index.rs) so the two cannot drift.
#[path = "../../vmm/src/image/index.rs"]
#[allow(dead_code)]
pub mod index;

use crate::guests;
use crate::util::{self, capture, step, Error, Result};
use recipe::Recipe;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

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
       cargo xtask images --update-pins [--only NAME]...
       cargo xtask images publish DIR [--only NAME]...";

pub fn sha256_bytes(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> std::result::Result<String, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Opts {
    only: Vec<String>,
    jobs: u32,
    update_pins: bool,
    check_reproducible: bool,
    publish: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        only: Vec::new(),
        jobs: 2,
        update_pins: false,
        check_reproducible: false,
        publish: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => o.only.push(
                it.next()
                    .ok_or_else(|| Error::usage(format!("--only needs a name\n{USAGE}")))?
                    .clone(),
            ),
            "--jobs" | "-j" => {
                o.jobs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::usage(format!("--jobs needs a number\n{USAGE}")))?
            }
            "--update-pins" => o.update_pins = true,
            "--check-reproducible" => o.check_reproducible = true,
            "publish" => {
                o.publish = Some(PathBuf::from(it.next().ok_or_else(|| {
                    Error::usage(format!("publish needs a directory\n{USAGE}"))
                })?))
            }
            "help" | "--help" | "-h" => return Err(Error::usage(USAGE)),
            other => {
                return Err(Error::usage(format!(
                    "images: unknown option '{other}'\n{USAGE}"
                )))
            }
        }
    }
    Ok(o)
}

struct Ctx {
    root: PathBuf,
    cache: PathBuf,
    epoch: u64,
    jobs: u32,
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

/// RFC 3339 UTC for seconds since the epoch (civil-from-days, proleptic Gregorian).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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
    let o = parse_args(args)?;
    let root = util::root();
    let recipes = load_recipes(&root, &o.only)?;
    if o.update_pins {
        return update_pins(&recipes);
    }
    util::ensure_debs(
        &[
            "e2fsprogs",
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

struct Report {
    name: String,
    secs: u64,
    kernel_secs: u64,
    result: std::result::Result<(), Problem>,
}

fn build_all(ctx: &Ctx, recipes: &[Recipe], out: &Path) -> Result<(index::Index, Vec<Report>)> {
    std::fs::create_dir_all(out)?;
    let mut images = Vec::new();
    let mut report = Vec::new();
    for r in recipes {
        let start = Instant::now();
        let mut kernel_secs = 0;
        let res = build_one(ctx, r, out, &mut kernel_secs);
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
            result,
        });
    }
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
    }
    println!("index: {}", out.join("index.json").display());
    Ok((idx, report))
}

/// Compare two builds file by file: (identical count, differences).
fn compare(a: &index::Index, b: &index::Index) -> (usize, Vec<String>) {
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

fn write_atomic(path: &Path, data: &[u8]) -> Result {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn need(r: &Recipe, section: &str, key: &str) -> std::result::Result<String, Problem> {
    r.need(section, key)
        .map(str::to_string)
        .map_err(Problem::Fail)
}

/// Build one image into out/<name>/ (through out/.<name>.tmp); returns its index entry.
fn build_one(
    ctx: &Ctx,
    r: &Recipe,
    out: &Path,
    kernel_secs: &mut u64,
) -> std::result::Result<index::Image, Problem> {
    let name = r.name().to_string();
    step(format!("image {name} ({})", r.rel));
    let stage = out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;

    // Every pinned package first: an image that cannot get its sources is skipped before
    // any expensive work.
    let mut debs = BTreeMap::new();
    let mut packages = Vec::new();
    for p in r.pins().map_err(Problem::Fail)? {
        let f = debs::fetch(&p, &ctx.cache)?;
        packages.push(index::Package {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
            sha256: p.sha256.clone(),
        });
        debs.insert(p.name.clone(), f);
    }
    let deb = |pkg: &str| {
        debs.get(pkg)
            .cloned()
            .ok_or_else(|| Problem::Fail(format!("{}: no [package {pkg}] section", r.rel)))
    };

    let mut files = Vec::new();
    let mut sources = Vec::new();
    let mut config_sha256 = None;
    match r.builder() {
        "minimal-linux" => {
            let src_pkg = need(r, "kernel", "source")?;
            let pin = r.pin(&src_pkg).map_err(Problem::Fail)?;
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
                &format!("{}_{}", pin.name, pin.version.replace(':', "%3a")),
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
            let (initrd, srcs) = initramfs(ctx, r, &busybox, &[])?;
            sources.extend(srcs);
            std::fs::write(stage.join("initramfs.cpio.gz"), initrd)?;
            files.push(("initrd", "initramfs.cpio.gz".to_string(), "gzip"));
            disk(ctx, r, &busybox, &stage.join("disk.ext4"))?;
            files.push(("disk", "disk.ext4".to_string(), "none"));
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
            let mods = modules(&tree.join("lib/modules").join(&kver), &wanted)?;
            step(format!(
                "{name}: modules, in load order: {}",
                mods.iter()
                    .map(|m| m.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            let busybox = deb_member(&deb(&need(r, "initramfs", "busybox")?)?, "bin/busybox")?;
            let (initrd, srcs) = initramfs(ctx, r, &busybox, &mods)?;
            sources.extend(srcs);
            std::fs::write(stage.join("initramfs.cpio.gz"), initrd)?;
            files.push(("initrd", "initramfs.cpio.gz".to_string(), "gzip"));
            disk(ctx, r, &busybox, &stage.join("disk.ext4"))?;
            files.push(("disk", "disk.ext4".to_string(), "none"));
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
            for f in [guest.source, "common.inc", "guest.ld"] {
                sources.push(source(ctx, &dir.join(f))?);
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
            packages,
            config_sha256,
            sources,
        },
    })
}

/// The size of a sector, and where a master boot record keeps its signature 55 AA.
const SECTOR: usize = 512;

/// A boot program of images/guests/mbr.S (xtask/src/guests.rs, `[program] name`) as an image
/// of its kind: "bios-disk", a raw disk image of `[disk] size_mib` MiB that starts with the
/// program (sector 0 is the MBR, its stage follows); or "pxe", the network boot program as
/// one file for a TFTP server. Both are the assembled bytes and zeros, so they are as
/// reproducible as the assembly. Returns (file name, role).
fn boot_program(
    ctx: &Ctx,
    r: &Recipe,
    stage: &Path,
    sources: &mut Vec<index::Source>,
) -> std::result::Result<(String, &'static str), Problem> {
    let want = need(r, "program", "name")?;
    let arch = need(r, "image", "arch")?;
    let built = guests::build_boot_programs().map_err(|e| Problem::Fail(e.msg))?;
    let (prog, bin) = built
        .into_iter()
        .find(|(p, _)| p.name == want)
        .ok_or_else(|| {
            Problem::Fail(format!(
                "{}: no boot program named '{want}' in xtask/src/guests.rs",
                r.rel
            ))
        })?;
    if prog.arch != arch {
        return Err(Problem::Fail(format!(
            "{}: arch is {arch}, but boot program {want} ends in {} mode",
            r.rel, prog.arch
        )));
    }
    let dir = ctx.root.join("images/guests");
    for f in guests::BOOT_PROGRAM_SOURCES {
        sources.push(source(ctx, &dir.join(f))?);
    }
    let data = std::fs::read(&bin)?;
    match need(r, "image", "kind")?.as_str() {
        "bios-disk" => {
            if data.len() < SECTOR || data[SECTOR - 2..SECTOR] != [0x55, 0xaa] {
                return Err(Problem::Fail(format!(
                    "{}: {} is not a master boot record (no 55 AA at byte 510)",
                    r.rel,
                    bin.display()
                )));
            }
            let size_mib: usize = need(r, "disk", "size_mib")?.parse().map_err(|_| {
                Problem::Fail(format!("{}: [disk] size_mib must be a number", r.rel))
            })?;
            let size = size_mib << 20;
            if size < data.len() {
                return Err(Problem::Fail(format!(
                    "{}: [disk] size_mib = {size_mib} is smaller than {want} ({} bytes)",
                    r.rel,
                    data.len()
                )));
            }
            let mut disk = data;
            disk.resize(size, 0);
            std::fs::write(stage.join("disk.img"), disk)?;
            Ok(("disk.img".into(), "disk"))
        }
        "pxe" => {
            let file = format!("{want}.pxe");
            std::fs::write(stage.join(&file), data)?;
            Ok((file, "nbp"))
        }
        other => Err(Problem::Fail(format!(
            "{}: builder boot-program makes kind bios-disk or pxe, not '{other}'",
            r.rel
        ))),
    }
}

fn source(ctx: &Ctx, path: &Path) -> std::result::Result<index::Source, Problem> {
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
fn deb_member(deb: &Path, member: &str) -> std::result::Result<Vec<u8>, Problem> {
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
fn unpack_deb(ctx: &Ctx, deb: &Path) -> std::result::Result<PathBuf, Problem> {
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

fn find_prefixed(dir: &Path, prefix: &str) -> std::result::Result<PathBuf, Problem> {
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

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Every module file under `dir`, by module name.
fn module_files(dir: &Path, found: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
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
fn module_depends(data: &[u8]) -> Vec<String> {
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

/// The modules to load for `wanted`, dependencies first: (name, bytes). Modules built into
/// the kernel (modules.builtin) are left out.
fn modules(kdir: &Path, wanted: &[String]) -> std::result::Result<Vec<(String, Vec<u8>)>, Problem> {
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
fn read_module(path: &Path) -> std::result::Result<Vec<u8>, Problem> {
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

/// The initramfs: busybox, the check as /init, the udhcpc script, optional modules and
/// their load order; sorted newc cpio, fixed mtimes, `gzip -n`.
fn initramfs(
    ctx: &Ctx,
    r: &Recipe,
    busybox: &[u8],
    mods: &[(String, Vec<u8>)],
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
    for (m, data) in mods {
        a.add(
            &format!("lib/modules/{m}.ko"),
            cpio::Entry::File {
                data: data.clone(),
                exec: false,
            },
        );
    }
    if !mods.is_empty() {
        let list: String = mods.iter().map(|(m, _)| format!("{m}.ko\n")).collect();
        a.add(
            "etc/fugu-modules",
            cpio::Entry::File {
                data: list.into_bytes(),
                exec: false,
            },
        );
    }
    let gz = gzip(&a.to_bytes(ctx.epoch))?;
    Ok((gz, vec![source(ctx, &init_path)?, source(ctx, &dhcp_path)?]))
}

fn gzip(data: &[u8]) -> std::result::Result<Vec<u8>, Problem> {
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

/// A UUID-shaped string derived from `seed`, so that mke2fs output is reproducible.
fn fixed_uuid(seed: &str) -> String {
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

/// The ext4 disk: the marker file and, with `root_init = yes`, busybox and the check as
/// /sbin/init so that the kernel can mount it as its root and run the check from it.
fn disk(ctx: &Ctx, r: &Recipe, busybox: &[u8], dest: &Path) -> std::result::Result<(), Problem> {
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

/// Copy the built images and index.json into DIR, which any static HTTP server can serve.
fn publish(out: &Path, idx: &index::Index, dir: &Path) -> Result {
    std::fs::create_dir_all(dir)?;
    for img in &idx.images {
        let d = dir.join(&img.name);
        std::fs::create_dir_all(&d)?;
        for f in &img.files {
            let from = out.join(&f.path);
            let to = dir.join(&f.path);
            let tmp = to.with_extension("publish-tmp");
            std::fs::copy(&from, &tmp)?;
            std::fs::rename(&tmp, &to)?;
        }
    }
    // The index goes last, so a server never lists a file that is not there yet.
    let json = serde_json::to_string_pretty(idx).map_err(|e| Error::fail(e.to_string()))? + "\n";
    write_atomic(&dir.join("index.json"), json.as_bytes())?;
    println!(
        "published {} image(s) to {}; serve it with any static HTTP server, e.g.\n    python3 -m http.server -d {} 8000\nand point fugu at it:\n    fugu image list --index http://HOST:8000/index.json",
        idx.images.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

fn update_pins(recipes: &[Recipe]) -> Result {
    let mut changed = 0;
    let mut kept = Vec::new();
    for r in recipes {
        let mut text = r.text.clone();
        for p in r.pins().map_err(Error::fail)? {
            match debs::current(&p) {
                Ok(new) if new == p => {
                    println!("{:<14} {} {} (unchanged)", r.name(), p.name, p.version)
                }
                Ok(new) => {
                    println!(
                        "{:<14} {} {} -> {} {}",
                        r.name(),
                        p.name,
                        p.version,
                        new.name,
                        new.version
                    );
                    text = recipe::rewrite_pin(&text, &p.name, &new);
                    changed += 1;
                }
                Err(why) => {
                    println!("{:<14} {} {} (kept: {why})", r.name(), p.name, p.version);
                    kept.push(format!("{}: {why}", r.name()));
                }
            }
        }
        if text != r.text {
            recipe::parse(&r.rel, &text).map_err(Error::fail)?;
            write_atomic(&r.path, text.as_bytes())?;
        }
    }
    println!("{changed} pin(s) updated; review with git diff images/");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

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
    fn every_boot_program_is_an_image_of_its_kind() {
        let root = util::root();
        let all = load_recipes(&root, &[]).unwrap();
        for p in guests::BOOT_PROGRAMS {
            let r = all
                .iter()
                .find(|r| r.name() == p.name)
                .unwrap_or_else(|| panic!("no images/{}.image", p.name));
            assert_eq!(r.builder(), "boot-program", "{}", r.rel);
            assert_eq!(r.get("program", "name"), Some(p.name), "{}", r.rel);
            assert_eq!(r.get("image", "arch"), Some(p.arch), "{}", r.rel);
            let kind = if p.name.starts_with("nbp-") {
                "pxe"
            } else {
                "bios-disk"
            };
            assert_eq!(r.get("image", "kind"), Some(kind), "{}", r.rel);
            assert!(
                index::KINDS.iter().any(|(k, _)| *k == kind),
                "{kind} is not a kind fugu knows"
            );
        }
    }

    #[test]
    fn modinfo_depends_are_read() {
        let ko = b"\x7fELF...\0license=GPL\0depends=virtio_ring,net-failover\0name=virtio_net\0";
        assert_eq!(module_depends(ko), vec!["virtio_ring", "net_failover"]);
        assert!(module_depends(b"\0depends=\0name=x\0").is_empty());
    }

    #[test]
    fn uuids_are_fixed() {
        let u = fixed_uuid("x");
        assert_eq!(u, fixed_uuid("x"));
        assert_eq!(u.len(), 36);
        assert_ne!(u, fixed_uuid("y"));
    }
}
