//! Debian packages for the images: fetched with `apt-get download` as the machine's apt is
//! configured (another architecture's packages through a private apt state, see [`apt`]),
//! checked against the SHA-256 pinned in the recipe, kept under target/images/cache/debs;
//! and the pin refresh behind `--update-pins`.

use super::recipe::Pin;
use super::{sha256_file, Problem};
use crate::util::{capture, step};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What apt says about one package version.
#[derive(Debug, Clone)]
pub struct AptInfo {
    pub sha256: String,
}

/// "apt-get download" names files with the epoch's ':' escaped.
fn deb_file_name(p: &Pin) -> String {
    format!(
        "{}_{}_{}.deb",
        p.name,
        p.version.replace(':', "%3a"),
        p.arch
    )
}

fn apt_spec(name: &str, arch: &str) -> String {
    if arch == "all" || arch == native_arch() {
        name.to_string()
    } else {
        format!("{name}:{arch}")
    }
}

fn native_arch() -> &'static str {
    if cfg!(target_arch = "x86") {
        "i386"
    } else {
        "amd64"
    }
}

/// An apt command for packages of `arch`. The machine's own architectures use apt as it is
/// configured. Another architecture (i386 packages on an amd64 machine) uses a private apt
/// state under target/images/apt/ARCH: the machine's own sources, with the package lists of
/// that architecture only, and no dpkg status. Nothing on the machine changes: adding the
/// architecture to dpkg (`dpkg --add-architecture`) would make every later `apt-get update`
/// depend on that index (DESIGN.md), while this state is used only to download .debs whose
/// SHA-256 the recipes pin.
fn apt(program: &str, arch: &str) -> Command {
    let mut c = Command::new(program);
    if let Some(dir) = private_state(arch) {
        c.args(private_options(&dir, arch));
    }
    c
}

fn private_state(arch: &str) -> Option<PathBuf> {
    (!dpkg_knows(arch)).then(|| crate::util::root().join("target/images/apt").join(arch))
}

fn private_options(dir: &Path, arch: &str) -> Vec<String> {
    vec![
        "-o".into(),
        format!("APT::Architecture={arch}"),
        "-o".into(),
        format!("APT::Architectures::={arch}"),
        "-o".into(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", dir.join("cache").display()),
        "-o".into(),
        "Dir::State::status=/dev/null".into(),
    ]
}

/// Whether dpkg on this machine takes packages of `arch` natively or as a foreign one.
fn dpkg_knows(arch: &str) -> bool {
    if arch == "all" || arch == native_arch() {
        return true;
    }
    matches!(capture(Command::new("dpkg").arg("--print-foreign-architectures")),
             Ok((true, out)) if out.split_whitespace().any(|a| a == arch))
}

/// Whether apt can answer for packages of `arch`: the machine's own architectures always; for
/// another one, the private state's package lists are fetched once per run (`apt-get update`
/// against the machine's own sources; Err says why not).
fn arch_available(arch: &str) -> Result<(), String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static UPDATED: Mutex<Option<HashMap<String, Result<(), String>>>> = Mutex::new(None);
    let Some(dir) = private_state(arch) else {
        return Ok(());
    };
    let mut done = UPDATED.lock().unwrap_or_else(|e| e.into_inner());
    let map = done.get_or_insert_with(HashMap::new);
    if let Some(r) = map.get(arch) {
        return r.clone();
    }
    let r = (|| {
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        step(format!(
            "apt-get update for the {arch} package lists (private apt state in {})",
            dir.display()
        ));
        let (ok, out) = capture(apt("apt-get", arch).args(["update", "-q"])).map_err(|e| e.msg)?;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "apt-get update for the {arch} package lists failed (the machine's sources, \
                 private state in {}):\n{}",
                dir.display(),
                crate::util::tail(&out, 4)
            ))
        }
    })();
    map.insert(arch.to_string(), r.clone());
    r
}

fn unavailable_arch(p: &Pin, why: String) -> Problem {
    Problem::Unavailable(format!(
        "{}:{} comes from the {} package index, which apt cannot read here: {why}",
        p.name, p.arch, p.arch
    ))
}

/// `apt-cache show NAME=VERSION`: the version's SHA-256, or None when apt does not have it.
pub fn show(name: &str, arch: &str, version: Option<&str>) -> Option<AptInfo> {
    let spec = match version {
        Some(v) => format!("{}={v}", apt_spec(name, arch)),
        None => apt_spec(name, arch),
    };
    let (ok, out) =
        capture(apt("apt-cache", arch).args(["show", "--no-all-versions", &spec])).ok()?;
    if !ok {
        return None;
    }
    let field = |f: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
    };
    field("Version:")?;
    Some(AptInfo {
        sha256: field("SHA256:")?,
    })
}

/// A fresh machine may have no package lists: run `apt-get update` once (as root) before
/// calling a pin gone. Returns whether the lists were refreshed now.
fn refresh_lists() -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) || !crate::util::is_root() {
        return false;
    }
    step("apt-get update (to be sure a pin is really gone from the mirror)");
    matches!(
        capture(Command::new("apt-get").args(["update", "-q"])),
        Ok((true, _))
    )
}

/// The candidate version apt would install now (apt-cache policy).
pub fn candidate(name: &str, arch: &str) -> Option<String> {
    let (ok, out) = capture(apt("apt-cache", arch).args(["policy", &apt_spec(name, arch)])).ok()?;
    if !ok {
        return None;
    }
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Candidate:")
                .map(|v| v.trim().to_string())
        })
        .filter(|v| v != "(none)")
}

/// The first dependency of a metapackage that starts with `prefix` (e.g. the current
/// kernel ABI package behind linux-image-cloud-amd64).
fn tracked_target(track: &str, arch: &str, prefix: &str) -> Option<String> {
    let (ok, out) =
        capture(apt("apt-cache", arch).args(["depends", &apt_spec(track, arch)])).ok()?;
    if !ok {
        return None;
    }
    out.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.split(':').next().unwrap_or(dep);
        dep.starts_with(prefix).then(|| dep.to_string())
    })
}

/// Fetch the pinned .deb (or reuse the cached copy) and verify its SHA-256.
pub fn fetch(p: &Pin, cache: &Path) -> Result<PathBuf, Problem> {
    arch_available(&p.arch).map_err(|why| unavailable_arch(p, why))?;
    if p.sha256.is_empty() {
        return Err(Problem::Fail(format!(
            "{}={} has no sha256 pinned in its recipe; run `cargo xtask images --update-pins`",
            p.name, p.version
        )));
    }
    // The pin must still be on the mirror, even when a copy is cached: a build that works
    // only on one machine is not reproducible.
    let mut info = show(&p.name, &p.arch, Some(&p.version));
    if info.is_none() && refresh_lists() {
        info = show(&p.name, &p.arch, Some(&p.version));
    }
    let info = info.ok_or_else(|| {
        let now = candidate(&p.name, &p.arch)
            .map(|v| format!("the mirror now has {v}"))
            .unwrap_or_else(|| "the mirror has no version of it".into());
        Problem::Fail(format!(
            "pinned package {}={} ({}) is no longer on the mirror ({now}); run \
             `cargo xtask images --update-pins` to record the current versions",
            p.name, p.version, p.arch
        ))
    })?;
    if info.sha256 != p.sha256 {
        return Err(Problem::Fail(format!(
            "{}={}: the recipe pins sha256 {} but apt's index says {}",
            p.name, p.version, p.sha256, info.sha256
        )));
    }
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir).map_err(|e| Problem::Fail(e.to_string()))?;
    let file = dir.join(deb_file_name(p));
    if file.exists() && cached_sha256(&file).map_err(Problem::Fail)? == p.sha256 {
        return Ok(file);
    }
    step(format!(
        "apt-get download {}={}",
        apt_spec(&p.name, &p.arch),
        p.version
    ));
    let tmp = dir.join(format!(".download-{}", p.name));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Problem::Fail(e.to_string()))?;
    let (ok, out) = capture(
        apt("apt-get", &p.arch)
            .current_dir(&tmp)
            .args(["download", "-q"])
            .arg(format!("{}={}", apt_spec(&p.name, &p.arch), p.version)),
    )
    .map_err(|e| Problem::Fail(e.msg))?;
    let got = std::fs::read_dir(&tmp)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
        .filter(|f| f.extension().is_some_and(|x| x == "deb"));
    let got = match (ok, got) {
        (true, Some(f)) => f,
        _ => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Problem::Fail(format!(
                "apt-get download {}={} failed:\n{}",
                p.name,
                p.version,
                crate::util::tail(&out, 6)
            )));
        }
    };
    let sum = sha256_file(&got).map_err(Problem::Fail)?;
    if sum != p.sha256 {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Problem::Fail(format!(
            "{}={}: downloaded .deb has sha256 {sum}, the recipe pins {}; refusing it",
            p.name, p.version, p.sha256
        )));
    }
    std::fs::rename(&got, &file).map_err(|e| Problem::Fail(e.to_string()))?;
    cached_sha256(&file).map_err(Problem::Fail)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(file)
}

/// SHA-256 of a cached .deb, remembered in `<deb>.sha256` with its size and mtime so that
/// a rebuild does not hash 140 MB of kernel source again; any change rehashes.
fn cached_sha256(file: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stamp = format!("{} {mtime}", meta.len());
    let side = file.with_extension("deb.sha256");
    if let Ok(text) = std::fs::read_to_string(&side) {
        if let Some((st, sum)) = text.trim().rsplit_once(' ') {
            if st == stamp {
                return Ok(sum.to_string());
            }
        }
    }
    let sum = sha256_file(file)?;
    let _ = std::fs::write(&side, format!("{stamp} {sum}\n"));
    Ok(sum)
}

/// The pin the mirror supports now for `p`, or why there is none.
pub fn current(p: &Pin) -> Result<Pin, String> {
    arch_available(&p.arch).map_err(|why| {
        format!(
            "{}:{}: the {} index is not available here ({why}); pin left as it is",
            p.name, p.arch, p.arch
        )
    })?;
    let mut name = p.name.clone();
    if let Some(track) = &p.track {
        // linux-image-6.1.0-48-cloud-amd64 -> prefix "linux-image-"
        let prefix: String = p
            .name
            .split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .to_string();
        name = tracked_target(track, &p.arch, &prefix)
            .ok_or_else(|| format!("{track}: apt-cache depends names no {prefix}* package"))?;
    }
    let version =
        candidate(&name, &p.arch).ok_or_else(|| format!("{name}: apt has no candidate version"))?;
    let info = show(&name, &p.arch, Some(&version))
        .ok_or_else(|| format!("{name}={version}: apt-cache show failed"))?;
    Ok(Pin {
        name,
        version,
        arch: p.arch.clone(),
        sha256: info.sha256,
        track: p.track.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_architecture_gets_a_private_apt_state() {
        let o = private_options(Path::new("/x/i386"), "i386");
        assert!(o.contains(&"APT::Architecture=i386".to_string()));
        assert!(o.contains(&"APT::Architectures::=i386".to_string()));
        assert!(o.contains(&"Dir::State::Lists=/x/i386/lists".to_string()));
        assert!(o.contains(&"Dir::State::status=/dev/null".to_string()));
        // The machine's own architectures use apt as configured.
        assert!(private_state("all").is_none());
        assert!(private_state(native_arch()).is_none());
        assert_eq!(apt("apt-cache", native_arch()).get_args().count(), 0);
    }

    #[test]
    fn deb_names_escape_the_epoch() {
        let p = Pin {
            name: "busybox-static".into(),
            version: "1:1.35.0-4".into(),
            arch: "amd64".into(),
            sha256: String::new(),
            track: None,
        };
        assert_eq!(deb_file_name(&p), "busybox-static_1%3a1.35.0-4_amd64.deb");
    }
}
