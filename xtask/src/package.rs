//! `cargo xtask package [--target T]... [--check-reproducible] [--no-lintian]`: release builds
//! (LTO, one codegen unit, stripped, paths remapped) and, per target, a deterministic
//! `fugu-<version>-<triple>.tar.gz` and `fugu_<version>_<debarch>.deb`, plus one `SHA256SUMS`
//! over them, in target/package/.
//!
//! Deterministic means: every timestamp is SOURCE_DATE_EPOCH (default: the last commit's
//! time), owners are 0/0, modes are 0755/0644, entries are sorted, gzip stores no name or time,
//! and the binaries do not contain the paths they were built in. `--check-reproducible`
//! proves it: a second run builds from a copy of the source tree at another path into other
//! target directories, and any artifact whose checksum differs is named.
//!
//! The man pages and completions come from the built binary (`fugu manpage`, `fugu
//! completions <shell>`), which generates them from its clap definition. The layout of both
//! artifacts is described in packaging/README.md.

use crate::deb;
use crate::targets::{self, Target, ALL};
use crate::toolchain;
use crate::util::{self, capture, step, Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Tools the packaging calls besides cargo (tar, gzip, coreutils and dpkg-deb are essential).
const PACKAGE_DEBS: &[&str] = &["binutils"];

/// Where one packaging run reads its sources and writes builds, staging trees and artifacts.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The source tree (a workspace root).
    pub src: PathBuf,
    /// Cargo target directories, one per target below it.
    pub build: PathBuf,
    /// Staging trees (recreated on every run).
    pub work: PathBuf,
    /// The artifacts and SHA256SUMS (recreated on every run).
    pub out: PathBuf,
    /// The public signing keys (binary keyring) that the .deb installs as
    /// /usr/share/keyrings/fugu-archive-keyring.gpg: `cargo xtask release` passes the key it
    /// signs with; a plain `package` has none to ship.
    pub keyring: Option<PathBuf>,
}

impl Layout {
    /// This source tree; artifacts in target/package/.
    pub fn standard() -> Layout {
        Self::in_tree("package")
    }

    /// This source tree, artifacts in target/<name>/, builds shared with [`Layout::standard`].
    pub fn in_tree(name: &str) -> Layout {
        let root = util::root();
        let t = root.join("target");
        Layout {
            build: t.join("package-build"),
            work: t.join(format!("{name}-work")),
            out: t.join(name),
            src: root,
            keyring: None,
        }
    }

    /// The second run of --check-reproducible: a copy of the sources at another path, other
    /// target directories.
    fn second() -> Layout {
        let base = util::root().join("target/package-repro");
        Layout {
            src: base.join("source-copy"),
            build: base.join("build"),
            work: base.join("work"),
            out: base.join("out"),
            keyring: None,
        }
    }
}

pub fn main(args: &[String]) -> Result {
    let p = crate::flags::parse(&crate::flags::PACKAGE, args)?;
    if p.has("--help") {
        return Err(Error::usage(crate::USAGE));
    }
    // Without --target: every target (a release ships both).
    let targets = match p.all("--target") {
        v if v.is_empty() => ALL.to_vec(),
        v => targets::from_values(&v).map_err(Error::usage)?,
    };
    let (check, lint) = (p.has("--check-reproducible"), !p.has("--no-lintian"));
    let started = Instant::now();
    let first = Layout::standard();
    let epoch = source_date_epoch(&first.src)?;
    let artifacts = package(&first, &targets, epoch, lint)?;
    if check {
        let second = Layout::second();
        step(format!(
            "reproducibility: second run from a copy of the sources in {}",
            second.src.display()
        ));
        copy_source_tree(&first.src, &second.src)?;
        package(&second, &targets, epoch, false)?;
        let read = |l: &Layout| std::fs::read_to_string(l.out.join("SHA256SUMS"));
        let diffs = compare_sums(&read(&first)?, &read(&second)?);
        if !diffs.is_empty() {
            return Err(Error::fail(format!(
                "the artifacts are not reproducible:\n  {}\n(first run: {}, second run: {}; \
                 diffoscope shows where they differ)",
                diffs.join("\n  "),
                first.out.display(),
                second.out.display()
            )));
        }
        step(format!(
            "reproducible: both runs produced the same {} artifacts",
            artifacts.len() - 1
        ));
    }
    for p in &artifacts {
        println!("{}", p.display());
    }
    step(format!(
        "packaged in {:.0?} (SOURCE_DATE_EPOCH={epoch})",
        started.elapsed()
    ));
    Ok(())
}

/// Package every target into target/package-test/ for the end-to-end test
/// (tests/tests/package.rs), lintian included; returns that directory.
pub fn for_tests() -> Result<PathBuf> {
    let l = Layout::in_tree("package-test");
    package(&l, &ALL, source_date_epoch(&l.src)?, true)?;
    Ok(l.out)
}

/// SOURCE_DATE_EPOCH from the environment, else the time of the last commit.
pub fn source_date_epoch(src: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v.trim().parse().map_err(|_| {
            Error::usage(format!(
                "SOURCE_DATE_EPOCH='{v}' is not a number of seconds"
            ))
        });
    }
    let (ok, out) =
        capture(
            Command::new("git")
                .current_dir(src)
                .args(["log", "-1", "--format=%ct"]),
        )
        .map_err(|e| Error::fail(format!("{e}; set SOURCE_DATE_EPOCH instead")))?;
    match out.trim().parse() {
        Ok(t) if ok => Ok(t),
        _ => Err(Error::fail(format!(
            "cannot read the last commit's time (git log: {}); set SOURCE_DATE_EPOCH",
            out.trim()
        ))),
    }
}

/// Build, stage and pack every target; returns the artifacts, SHA256SUMS last.
pub fn package(l: &Layout, targets: &[Target], epoch: u64, lint: bool) -> Result<Vec<PathBuf>> {
    util::ensure_debs(PACKAGE_DEBS, "packaging")?;
    if lint {
        // Before the long builds, so that a missing lintian is reported at once.
        util::ensure_debs(&["lintian"], "checking the .deb packages")
            .map_err(|e| Error::fail(format!("{e}\n(or skip the check with --no-lintian)")))?;
    }
    let fields = deb::parse_fields(&read(&l.src.join("packaging/fields"))?)?;
    let mut bins = Vec::new();
    for &t in targets {
        bins.push((t, build_release(l, t)?));
    }
    reset_dir(&l.out)?;
    reset_dir(&l.work)?;
    // The docs and the version come from a binary this machine runs: the host's if built.
    let runner = bins
        .iter()
        .find(|(t, _)| *t == Target::host())
        .unwrap_or(&bins[0])
        .1
        .clone();
    let version = fugu_version(&runner)?;
    let docs = generate_docs(&runner, &l.work.join("docs"))?;
    let mut artifacts = Vec::new();
    for (t, bin) in &bins {
        step(format!("packing fugu {version} for {}", t.short()));
        artifacts.push(tarball(l, *t, bin, &docs, &version, epoch)?);
        artifacts.push(debian_package(l, *t, bin, &docs, &version, epoch, &fields)?);
    }
    artifacts.push(write_sha256sums(&l.out, &artifacts)?);
    if lint {
        for d in artifacts
            .iter()
            .filter(|p| p.extension() == Some("deb".as_ref()))
        {
            let name = file_name(d);
            step(format!("lintian {name}"));
            let r = deb::lintian(d)?;
            for w in &r.warnings {
                eprintln!("    {w}");
            }
            if !r.errors.is_empty() {
                return Err(Error::fail(format!(
                    "lintian reports errors on {name}:\n  {}",
                    r.errors.join("\n  ")
                )));
            }
            eprintln!("    {name}: no errors, {} warnings", r.warnings.len());
        }
    }
    Ok(artifacts)
}

/// The flags that keep build paths out of the binary: the cargo home (registry sources), the
/// source tree and the target directory (generated sources), each mapped to a fixed name.
/// rustc applies the last matching prefix, so the target directory (often inside the
/// source tree) comes last.
pub fn remap_flags(src: &Path, target_dir: &Path, cargo_home: &Path) -> Vec<String> {
    [
        (cargo_home, "/cargo"),
        (src, "/fugu"),
        (target_dir, "/fugu/target"),
    ]
    .iter()
    .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
    .collect()
}

fn cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        }
    }
}

/// A stripped release build of fugu for `t` with remapped paths; returns the binary.
fn build_release(l: &Layout, t: Target) -> Result<PathBuf> {
    let mut tc = toolchain::for_target(t)?;
    tc.target_dir = l.build.join(t.short());
    tc.set_rustflags(&remap_flags(&l.src, &tc.target_dir, &cargo_home()));
    step(format!(
        "release build of fugu for {} ({}) in {}",
        t.short(),
        tc.route,
        tc.target_dir.display()
    ));
    let mut c = tc.cargo("build");
    c.current_dir(&l.src)
        .args([
            "--release",
            "--locked",
            "--package",
            "fugu",
            "--bin",
            "fugu",
        ])
        .args(["--config", "profile.release.strip=\"symbols\""]);
    util::run(&mut c)?;
    let bin = tc.out_dir("release").join("fugu");
    check_elf(&std::fs::read(&bin)?, t)
        .map_err(|e| Error::fail(format!("{}: {e}", bin.display())))?;
    Ok(bin)
}

/// The ELF header must match the target (class and machine), so that no wrong binary is
/// packed under a target's name.
pub fn check_elf(data: &[u8], t: Target) -> std::result::Result<(), String> {
    if data.len() < 20 || &data[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    let (class, machine) = (data[4], u16::from_le_bytes([data[18], data[19]]));
    let want = match t {
        Target::I686 => (1, 3),    // ELFCLASS32, EM_386
        Target::X86_64 => (2, 62), // ELFCLASS64, EM_X86_64
    };
    if (class, machine) != want {
        return Err(format!(
            "ELF class {class} machine {machine} is not a {} binary",
            t.short()
        ));
    }
    Ok(())
}

/// The version `fugu --version` reports.
fn fugu_version(bin: &Path) -> Result<String> {
    let (ok, out) = capture(Command::new(bin).arg("--version"))?;
    let v = out.trim().strip_prefix("fugu ").unwrap_or("");
    if !ok || v.is_empty() || !v.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::fail(format!(
            "{} --version printed '{}', not 'fugu <version>'",
            bin.display(),
            out.trim()
        )));
    }
    Ok(v.to_string())
}

/// A Cargo (semver) version as a Debian version: a pre-release sorts before its release, so
/// "1.0.0-rc.1" becomes "1.0.0~rc.1" (a '-' would make "rc.1" a Debian revision).
pub fn debian_version(cargo: &str) -> String {
    cargo.replacen('-', "~", 1)
}

/// The generated documentation: man pages and completion scripts.
struct Docs {
    man: Vec<PathBuf>,
    bash: PathBuf,
    zsh: PathBuf,
    fish: PathBuf,
}

fn generate_docs(bin: &Path, dir: &Path) -> Result<Docs> {
    reset_dir(dir)?;
    let man_dir = dir.join("man");
    let (ok, out) = capture(
        Command::new(bin)
            .arg("manpage")
            .arg("--out-dir")
            .arg(&man_dir),
    )?;
    if !ok {
        return Err(Error::fail(format!(
            "{} manpage failed: {out}",
            bin.display()
        )));
    }
    let mut man: Vec<PathBuf> = std::fs::read_dir(&man_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    man.sort();
    if !man.iter().any(|p| file_name(p) == "fugu.1") {
        return Err(Error::fail(format!(
            "{} manpage wrote no fugu.1",
            bin.display()
        )));
    }
    let completion = |shell: &str| -> Result<PathBuf> {
        let out = Command::new(bin).args(["completions", shell]).output()?;
        if !out.status.success() || out.stdout.is_empty() {
            return Err(Error::fail(format!(
                "{} completions {shell} failed: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let path = dir.join(format!("completion.{shell}"));
        std::fs::write(&path, out.stdout)?;
        Ok(path)
    };
    Ok(Docs {
        man,
        bash: completion("bash")?,
        zsh: completion("zsh")?,
        fish: completion("fish")?,
    })
}

/// `fugu-<version>-<triple>.tar.gz`: one top directory laid out like an install prefix.
fn tarball(
    l: &Layout,
    t: Target,
    bin: &Path,
    docs: &Docs,
    version: &str,
    epoch: u64,
) -> Result<PathBuf> {
    let name = format!("fugu-{version}-{}", t.triple());
    let stage = l.work.join(t.short()).join("tar");
    let top = stage.join(&name);
    install(bin, &top.join("bin/fugu"), 0o755)?;
    symlink("../bin/fugu", &top.join("sbin/fugud"))?;
    for page in &docs.man {
        install(
            page,
            &top.join(format!("share/man/man{}", man_section(page)))
                .join(file_name(page)),
            0o644,
        )?;
    }
    install(
        &docs.bash,
        &top.join("share/bash-completion/completions/fugu"),
        0o644,
    )?;
    install(
        &docs.zsh,
        &top.join("share/zsh/site-functions/_fugu"),
        0o644,
    )?;
    install(
        &docs.fish,
        &top.join("share/fish/vendor_completions.d/fugu.fish"),
        0o644,
    )?;
    install(&l.src.join("README.md"), &top.join("README.md"), 0o644)?;
    install(&l.src.join("LICENSE"), &top.join("LICENSE"), 0o644)?;
    normalize(&stage, epoch)?;
    let tar = l.out.join(format!("{name}.tar"));
    util::run(&mut tar_command(&stage, &name, &tar, epoch))?;
    gzip(&tar)
}

/// GNU tar with every source of variation pinned: sorted entries, one mtime, numeric owner
/// 0/0, normalized modes, the plain GNU format (no pax headers with access times).
pub fn tar_command(dir: &Path, top: &str, out: &Path, epoch: u64) -> Command {
    let mut c = Command::new("tar");
    c.env("LC_ALL", "C")
        .arg("--create")
        .arg("--file")
        .arg(out)
        .arg("--directory")
        .arg(dir)
        .args([
            "--format=gnu",
            "--sort=name",
            &format!("--mtime=@{epoch}"),
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=u+rw,go-w,a+rX",
            "--",
            top,
        ]);
    c
}

/// gzip `path` in place (to `path.gz`) at level 9 without a name or timestamp.
fn gzip(path: &Path) -> Result<PathBuf> {
    util::run(
        Command::new("gzip")
            .args(["-9", "-n", "-f", "--"])
            .arg(path),
    )?;
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    Ok(PathBuf::from(gz))
}

/// `fugu_<version>_<debarch>.deb`.
fn debian_package(
    l: &Layout,
    t: Target,
    bin: &Path,
    docs: &Docs,
    version: &str,
    epoch: u64,
    fields: &BTreeMap<String, String>,
) -> Result<PathBuf> {
    let version = debian_version(version);
    let stage = l.work.join(t.short()).join("deb");
    let doc = stage.join("usr/share/doc/fugu");
    let mut f = fields.clone();
    f.insert("VERSION".into(), version.clone());
    f.insert("ARCH".into(), t.debarch().into());
    f.insert("DATE".into(), deb::rfc2822(epoch));

    install(bin, &stage.join("usr/bin/fugu"), 0o755)?;
    // fugud is fugu under another name.
    symlink("../bin/fugu", &stage.join("usr/sbin/fugud"))?;
    for page in &docs.man {
        let to = stage
            .join(format!("usr/share/man/man{}", man_section(page)))
            .join(file_name(page));
        install(page, &to, 0o644)?;
        gzip(&to)?;
    }
    let debian = l.src.join("packaging/debian");
    // bookworm's lintian wants units below /lib (merged /usr makes it the same place).
    install(
        &debian.join("fugud.service"),
        &stage.join("lib/systemd/system/fugud.service"),
        0o644,
    )?;
    install(
        &debian.join("fugu.toml"),
        &stage.join("etc/fugu/fugu.toml"),
        0o644,
    )?;
    write(
        &stage.join("DEBIAN/conffiles"),
        b"/etc/fugu/fugu.toml\n",
        0o644,
    )?;
    for script in ["postinst", "prerm"] {
        install(
            &debian.join(script),
            &stage.join("DEBIAN").join(script),
            0o755,
        )?;
    }
    install(
        &docs.bash,
        &stage.join("usr/share/bash-completion/completions/fugu"),
        0o644,
    )?;
    install(
        &docs.zsh,
        &stage.join("usr/share/zsh/vendor-completions/_fugu"),
        0o644,
    )?;
    install(
        &docs.fish,
        &stage.join("usr/share/fish/vendor_completions.d/fugu.fish"),
        0o644,
    )?;
    install(&l.src.join("README.md"), &doc.join("README.md"), 0o644)?;
    // The keys `fugu image` checks an index's signature against (docs/images.md), where apt
    // keeps a repository's keys too.
    if let Some(k) = &l.keyring {
        install(
            k,
            &stage.join("usr/share/keyrings/fugu-archive-keyring.gpg"),
            0o644,
        )?;
    }
    let template = |name: &str, f: &BTreeMap<String, String>| -> Result<String> {
        deb::render(&read(&l.src.join("packaging/debian").join(name))?, f)
    };
    write(
        &doc.join("copyright"),
        template("copyright", &f)?.as_bytes(),
        0o644,
    )?;
    // A native version (no Debian revision) has changelog.gz, others changelog.Debian.gz.
    let changelog = if version.contains('-') {
        "changelog.Debian"
    } else {
        "changelog"
    };
    write(
        &doc.join(changelog),
        template("changelog.in", &f)?.as_bytes(),
        0o644,
    )?;
    gzip(&doc.join(changelog))?;

    let (ok, objdump) = capture(Command::new("objdump").arg("-p").arg(bin))?;
    if !ok {
        return Err(Error::fail(format!(
            "objdump -p {} failed: {objdump}",
            bin.display()
        )));
    }
    f.insert("DEPENDS".into(), deb::depends_from_objdump(&objdump)?);
    f.insert(
        "INSTALLED_SIZE".into(),
        deb::installed_size(&stage)?.to_string(),
    );
    let control = template("control.in", &f)?;
    let md5sums = deb::md5sums(&stage)?;
    write(&stage.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(&stage.join("DEBIAN/md5sums"), md5sums.as_bytes(), 0o644)?;
    normalize(&stage, epoch)?;
    let out = l.out.join(format!("fugu_{version}_{}.deb", t.debarch()));
    deb::dpkg_deb(&stage, &out, epoch)?;
    Ok(out)
}

/// SHA256SUMS over `artifacts` (all in `out`), in the format `sha256sum -c` reads.
pub fn write_sha256sums(out: &Path, artifacts: &[PathBuf]) -> Result<PathBuf> {
    let mut names: Vec<&str> = artifacts.iter().map(|p| file_name(p)).collect();
    names.sort();
    let o = Command::new("sha256sum")
        .current_dir(out)
        .arg("--")
        .args(&names)
        .output()
        .map_err(|e| Error::fail(format!("cannot run sha256sum: {e}")))?;
    if !o.status.success() {
        return Err(Error::fail(format!(
            "sha256sum failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let path = out.join("SHA256SUMS");
    write(&path, &o.stdout, 0o644)?;
    Ok(path)
}

/// The differences between two SHA256SUMS files, one line per artifact.
pub fn compare_sums(a: &str, b: &str) -> Vec<String> {
    let parse = |s: &str| -> BTreeMap<String, String> {
        s.lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(h, n)| (n.to_string(), h.to_string()))
            .collect()
    };
    let (a, b) = (parse(a), parse(b));
    let mut diffs = Vec::new();
    for (name, ha) in &a {
        match b.get(name) {
            Some(hb) if hb == ha => {}
            Some(hb) => diffs.push(format!("{name} differs: sha256 {ha} vs {hb}")),
            None => diffs.push(format!("{name} is missing from the second run")),
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        diffs.push(format!("{name} is missing from the first run"));
    }
    diffs
}

/// Copy the files git knows (tracked, and untracked but not ignored) from `src` to a fresh
/// `dst`, keeping modification times so cargo's caches in the second target dir stay valid.
fn copy_source_tree(src: &Path, dst: &Path) -> Result {
    let out = Command::new("git")
        .current_dir(src)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .map_err(|e| Error::fail(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(Error::fail(format!(
            "git ls-files failed in {} (the check copies the files git knows): {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let files: std::collections::BTreeSet<&str> =
        list.split('\0').filter(|s| !s.is_empty()).collect();
    for rel in files {
        let (from, to) = (src.join(rel), dst.join(rel));
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue; // deleted in the work tree
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if meta.is_dir() {
            // A submodule: copy it whole.
            util::run(Command::new("cp").arg("-a").arg(&from).arg(&to))?;
        } else {
            std::fs::copy(&from, &to)?;
            std::fs::File::options()
                .write(true)
                .open(&to)?
                .set_modified(meta.modified()?)?;
        }
    }
    Ok(())
}

/// Copy `from` to `to` with `mode`, creating parent directories.
fn install(from: &Path, to: &Path, mode: u32) -> Result {
    let data = std::fs::read(from)
        .map_err(|e| Error::fail(format!("cannot read {}: {e}", from.display())))?;
    write(to, &data, mode)
}

/// A relative symbolic link `to` -> `target`.
fn symlink(target: &str, to: &Path) -> Result {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, to)
        .map_err(|e| Error::fail(format!("cannot link {} -> {target}: {e}", to.display())))
}

/// The section of a man page, from its name ("fugud.8" -> "8").
fn man_section(page: &Path) -> &str {
    page.extension().and_then(|e| e.to_str()).unwrap_or("1")
}

fn write(to: &Path, data: &[u8], mode: u32) -> Result {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(to, data)
        .map_err(|e| Error::fail(format!("cannot write {}: {e}", to.display())))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Directories 0755, files 0755 when executable else 0644, every mtime `epoch`: whatever
/// the umask and the clock were.
pub fn normalize(root: &Path, epoch: u64) -> Result {
    use std::os::unix::fs::PermissionsExt;
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    let mut entries = deb::walk(root)?;
    entries.push((PathBuf::new(), std::fs::symlink_metadata(root)?));
    for (rel, meta) in entries {
        let path = root.join(rel);
        let mode = if meta.is_dir() || meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        if meta.file_type().is_symlink() {
            // Its mode means nothing; tar (--mtime) and dpkg-deb (SOURCE_DATE_EPOCH) set
            // its time. Only relative links inside the tree are packed.
            let target = std::fs::read_link(&path)?;
            if target.is_absolute() {
                return Err(Error::fail(format!(
                    "{}: an absolute symlink is not packed",
                    path.display()
                )));
            }
            continue;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        std::fs::File::open(&path)?.set_modified(time)?;
    }
    Ok(())
}

fn reset_dir(dir: &Path) -> Result {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::fail(format!("cannot read {}: {e}", path.display())))
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-pkg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A small tree, created in a given order with given modes and times.
    fn make_tree(dir: &Path, reverse: bool, loose: bool) {
        let mut files = [
            ("top/bin/fugu", true),
            ("top/README.md", false),
            ("top/share/man/man1/fugu.1", false),
            ("top/LICENSE", false),
        ];
        if reverse {
            files.reverse();
        }
        for (i, (f, exec)) in files.iter().enumerate() {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f.as_bytes()).unwrap();
            let mode = match (exec, loose) {
                (true, true) => 0o777,
                (true, false) => 0o700,
                (false, true) => 0o666,
                (false, false) => 0o600,
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64 * 77);
            std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
        }
        if loose {
            std::fs::set_permissions(
                dir.join("top/share"),
                std::fs::Permissions::from_mode(0o777),
            )
            .unwrap();
        }
    }

    fn pack(dir: &Path, epoch: u64) -> Vec<u8> {
        normalize(dir, epoch).unwrap();
        let tar = dir.join("out.tar");
        util::run(&mut tar_command(dir, "top", &tar, epoch)).unwrap();
        let gz = gzip(&tar).unwrap();
        std::fs::read(gz).unwrap()
    }

    #[test]
    fn tarballs_do_not_depend_on_order_modes_times_or_paths() {
        let (a, b) = (tmp("a"), tmp("bb-longer-path"));
        make_tree(&a, false, false);
        make_tree(&b, true, true);
        let epoch = 1_700_000_000;
        let (ta, tb) = (pack(&a, epoch), pack(&b, epoch));
        assert!(ta == tb, "tarballs differ");
        // gzip header: no stored name (FLG.FNAME), MTIME zero.
        assert_eq!(&ta[..3], b"\x1f\x8b\x08");
        assert_eq!(ta[3] & 0x08, 0, "gzip stored a file name");
        assert_eq!(&ta[4..8], &[0, 0, 0, 0], "gzip stored a timestamp");
        // The listing: sorted, owners 0/0, normalized modes, one time.
        let (ok, list) = capture(
            Command::new("tar")
                .env("TZ", "UTC")
                .args([
                    "--list",
                    "--verbose",
                    "--full-time",
                    "--numeric-owner",
                    "-zf",
                ])
                .arg(a.join("out.tar.gz")),
        )
        .unwrap();
        assert!(ok, "{list}");
        let rows: Vec<Vec<&str>> = list
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let names: Vec<&str> = rows.iter().map(|r| r[5]).collect();
        assert_eq!(
            names,
            [
                "top/",
                "top/LICENSE",
                "top/README.md",
                "top/bin/",
                "top/bin/fugu",
                "top/share/",
                "top/share/man/",
                "top/share/man/man1/",
                "top/share/man/man1/fugu.1"
            ]
        );
        for r in &rows {
            assert_eq!(r[1], "0/0", "{r:?}");
            assert_eq!(format!("{} {}", r[3], r[4]), "2023-11-14 22:13:20", "{r:?}");
            let want = if r[5].ends_with('/') {
                "drwxr-xr-x"
            } else if r[5].ends_with("fugu") {
                "-rwxr-xr-x"
            } else {
                "-rw-r--r--"
            };
            assert_eq!(r[0], want, "{r:?}");
        }
        // Another epoch gives another tarball.
        assert!(pack(&a, epoch + 1) != ta);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn tar_command_pins_every_source_of_variation() {
        let c = tar_command(Path::new("/s"), "top", Path::new("/o.tar"), 42);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--sort=name",
            "--mtime=@42",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("top"));
    }

    #[test]
    fn checksum_comparison_names_each_differing_artifact() {
        let a = "aa  fugu.tar.gz\nbb  fugu_0.1.0_amd64.deb\ncc  fugu_0.1.0_i386.deb\n";
        let b = "aa  fugu.tar.gz\nbx  fugu_0.1.0_amd64.deb\ndd  extra.deb\n";
        assert!(compare_sums(a, a).is_empty());
        let d = compare_sums(a, b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("fugu_0.1.0_amd64.deb differs"));
        assert!(d[1].starts_with("fugu_0.1.0_i386.deb is missing from the second"));
        assert!(d[2].starts_with("extra.deb is missing from the first"));
    }

    #[test]
    fn remapping_puts_the_target_dir_last() {
        let f = remap_flags(
            Path::new("/w/src"),
            Path::new("/w/src/target/x"),
            Path::new("/h/.cargo"),
        );
        assert_eq!(
            f,
            [
                "--remap-path-prefix=/h/.cargo=/cargo",
                "--remap-path-prefix=/w/src=/fugu",
                "--remap-path-prefix=/w/src/target/x=/fugu/target"
            ]
        );
    }

    #[test]
    fn versions_and_elf_headers() {
        assert_eq!(debian_version("0.1.0"), "0.1.0");
        assert_eq!(debian_version("1.0.0-rc.1"), "1.0.0~rc.1");
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[18] = 62;
        assert!(check_elf(&h, Target::X86_64).is_ok());
        assert!(check_elf(&h, Target::I686).is_err());
        h[4] = 1;
        h[18] = 3;
        assert!(check_elf(&h, Target::I686).is_ok());
        assert!(check_elf(b"#!/bin/sh\n", Target::I686).is_err());
    }
}
