//! Debian packages for the images, pinned by the recipes like a lockfile: found in a local
//! cache by SHA-256, else fetched with `apt-get download` as the machine's apt is configured
//! (another architecture's packages through a private apt state, see [`apt`]), else from a
//! configured snapshot archive; a pin the mirror no longer serves falls back to the mirror's
//! current package (or, `--locked`, is refused). Also the pin refresh behind
//! `--update-pins`.

use super::recipe::Pin;
use super::{sha256_file, Problem};
use crate::util::{capture, step};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What apt says about one package version.
#[derive(Debug, Clone)]
pub struct AptInfo {
    pub sha256: String,
    /// The .deb's path in the archive (apt's `Filename:`).
    pub filename: Option<String>,
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

/// An apt command (`apt-get`, `apt-cache`) for packages of `arch`, with the private package
/// lists fetched first where `arch` is not the machine's own (Err says why apt cannot answer).
pub fn apt_command(program: &str, arch: &str) -> Result<Command, String> {
    arch_available(arch)?;
    Ok(apt(program, arch))
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
        filename: field("Filename:"),
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

/// How a pin that the mirror no longer serves as recorded is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The default, like Cargo.lock without `--locked`: the mirror's current package is used,
    /// with a warning, and the provenance records it.
    Fallback,
    /// `--locked` (release builds): such a pin is an error.
    Locked,
}

/// Why a pin cannot be fetched from the mirror as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// apt lists no such version (after refreshing its lists).
    Vanished,
    /// apt lists the version, with this other .deb SHA-256.
    Changed(String),
}

/// What became of one pin.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The pinned .deb itself (from the cache, the mirror or a snapshot archive).
    Exact(PathBuf),
    /// The pin is stale and the mirror's current package is used instead.
    Fallback {
        used: Pin,
        deb: PathBuf,
        warning: String,
    },
    /// `--locked`: the pin is stale; the message names it.
    Refused(String),
}

/// What the build asks of apt: a trait so that the decisions in [`obtain`] can be tested
/// without apt or a network.
pub trait Mirror {
    /// Whether packages of `arch` can be had at all (Err says why not: skipped, not failed).
    fn available(&self, arch: &str) -> Result<(), String>;
    /// The SHA-256 apt's index gives for this exact version; None when apt does not list it.
    fn sha256_of(&self, p: &Pin) -> Option<String>;
    /// Refresh the package lists, once per run; whether they were refreshed by this call.
    fn refresh(&self) -> bool;
    /// The pin the mirror supports now (see [`current`]).
    fn current(&self, p: &Pin) -> Result<Pin, String>;
    /// Download exactly `p` into the empty directory `dir`; the .deb's path.
    fn download(&self, p: &Pin, dir: &Path) -> Result<PathBuf, String>;
}

/// The machine's apt, as [`Mirror`].
pub struct Apt;

impl Mirror for Apt {
    fn available(&self, arch: &str) -> Result<(), String> {
        arch_available(arch)
    }

    fn sha256_of(&self, p: &Pin) -> Option<String> {
        show(&p.name, &p.arch, Some(&p.version)).map(|i| i.sha256)
    }

    fn refresh(&self) -> bool {
        refresh_lists()
    }

    fn current(&self, p: &Pin) -> Result<Pin, String> {
        current(p)
    }

    fn download(&self, p: &Pin, dir: &Path) -> Result<PathBuf, String> {
        apt_download(p, dir)
    }
}

/// Downloaded .debs by SHA-256: `<cache>/debs/by-sha256/<sha256>.deb`. Consulted before
/// apt, so a machine that built an image once builds it again without the mirror. A file
/// is used only when its SHA-256 is its name (checked, see [`cached_sha256`]).
pub struct DebCache {
    dir: PathBuf,
}

impl DebCache {
    pub fn new(cache: &Path) -> DebCache {
        DebCache {
            dir: cache.join("debs/by-sha256"),
        }
    }

    /// The file for `sha256`; None when it is not a SHA-256 (it comes from a recipe and
    /// becomes a file name).
    fn path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256(sha256).then(|| self.dir.join(format!("{sha256}.deb")))
    }

    /// The cached .deb with this SHA-256; a file there with other contents is removed.
    pub fn get(&self, sha256: &str) -> Option<PathBuf> {
        let file = self.path(sha256)?;
        if !file.is_file() {
            return None;
        }
        if cached_sha256(&file).ok().as_deref() == Some(sha256) {
            return Some(file);
        }
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(sidecar(&file));
        None
    }

    /// Move a downloaded `file` into the cache if its SHA-256 is `sha256`; otherwise it is
    /// deleted and the error names both sums.
    pub fn put(&self, file: &Path, sha256: &str) -> Result<PathBuf, String> {
        let dest = self
            .path(sha256)
            .ok_or_else(|| format!("'{sha256}' is not a SHA-256"))?;
        let sum = sha256_file(file)?;
        if sum != sha256 {
            let _ = std::fs::remove_file(file);
            return Err(format!(
                "the downloaded .deb has sha256 {sum}, expected {sha256}; refused and deleted"
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        std::fs::rename(file, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        cached_sha256(&dest)?;
        Ok(dest)
    }

    /// A fresh, empty directory for one download, beside the cache (same file system, so
    /// the verified file is renamed into place).
    fn scratch(&self, name: &str) -> Result<PathBuf, String> {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = self
            .dir
            .join(format!(".download-{safe}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir)
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Get the .deb for pin `p`: the cache by SHA-256 first (no apt, no network), then the
/// mirror when it still has the pin as recorded, then the snapshot archives; a pin that is
/// stale (gone from the mirror, or listed with another SHA-256) then falls back to the
/// mirror's current package, or with [`Policy::Locked`] is refused.
pub fn obtain(
    p: &Pin,
    cache: &DebCache,
    mirror: &dyn Mirror,
    snapshots: &[String],
    policy: Policy,
) -> Result<Outcome, Problem> {
    if !is_sha256(&p.sha256) {
        return Err(Problem::Fail(format!(
            "{}={} has no valid sha256 pinned in its recipe ('{}'); run \
             `cargo xtask images --update-pins`",
            p.name, p.version, p.sha256
        )));
    }
    if let Some(deb) = cache.get(&p.sha256) {
        return Ok(Outcome::Exact(deb));
    }
    mirror
        .available(&p.arch)
        .map_err(|why| unavailable_arch(p, why))?;
    let stale = match check(p, mirror) {
        Some(stale) => stale,
        None => match fetch_exact(p, cache, mirror) {
            Ok(deb) => return Ok(Outcome::Exact(deb)),
            // Lists older than the mirror still name versions the mirror has dropped: after
            // a refresh such a pin shows as stale; otherwise the download error stands.
            Err(e) => match mirror.refresh().then(|| check(p, mirror)).flatten() {
                Some(stale) => stale,
                None => return Err(Problem::Fail(e)),
            },
        },
    };
    if !snapshots.is_empty() {
        match from_snapshots(p, cache, snapshots) {
            Ok(deb) => return Ok(Outcome::Exact(deb)),
            Err(why) => step(format!("{}={}: {why}", p.name, p.version)),
        }
    }
    let now = mirror.current(p);
    match policy {
        Policy::Locked => Ok(Outcome::Refused(refusal(p, &stale, now.as_ref().ok()))),
        Policy::Fallback => {
            let used = now.map_err(|why| {
                Problem::Fail(format!(
                    "{}, and the mirror offers no replacement: {why}",
                    describe_stale(p, &stale)
                ))
            })?;
            let deb = match cache.get(&used.sha256) {
                Some(deb) => deb,
                None => fetch_exact(&used, cache, mirror).map_err(Problem::Fail)?,
            };
            let warning = fallback_warning(p, &stale, &used);
            Ok(Outcome::Fallback { used, deb, warning })
        }
    }
}

/// Whether apt lists `p` as recorded; a version not listed is looked up again after one
/// refresh of the lists (a fresh machine may have none).
fn check(p: &Pin, mirror: &dyn Mirror) -> Option<Stale> {
    let mut sha = mirror.sha256_of(p);
    if sha.is_none() && mirror.refresh() {
        sha = mirror.sha256_of(p);
    }
    match sha {
        None => Some(Stale::Vanished),
        Some(s) if s == p.sha256 => None,
        Some(s) => Some(Stale::Changed(s)),
    }
}

/// Download exactly `p` from the mirror into the cache, verified.
fn fetch_exact(p: &Pin, cache: &DebCache, mirror: &dyn Mirror) -> Result<PathBuf, String> {
    let tmp = cache.scratch(&p.name)?;
    let r = mirror
        .download(p, &tmp)
        .and_then(|f| cache.put(&f, &p.sha256))
        .map_err(|e| format!("{}={} ({}): {e}", p.name, p.version, p.arch));
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

fn describe_stale(p: &Pin, stale: &Stale) -> String {
    match stale {
        Stale::Vanished => format!(
            "pinned {}={} ({}) is no longer on the mirror",
            p.name, p.version, p.arch
        ),
        Stale::Changed(now) => format!(
            "pinned {}={} ({}) has sha256 {}… on the mirror, the recipe pins {}…",
            p.name,
            p.version,
            p.arch,
            short(now),
            short(&p.sha256)
        ),
    }
}

fn refusal(p: &Pin, stale: &Stale, now: Option<&Pin>) -> String {
    let now = match now {
        Some(n) => format!("the mirror now has {}={}", n.name, n.version),
        None => "the mirror has no version of it".into(),
    };
    format!("{} ({now})", describe_stale(p, stale))
}

fn fallback_warning(p: &Pin, stale: &Stale, used: &Pin) -> String {
    format!(
        "{}; using {}={} (sha256 {}…) instead of the pinned {}={} (sha256 {}…); run \
         `cargo xtask images --update-pins` to record it",
        describe_stale(p, stale),
        used.name,
        used.version,
        short(&used.sha256),
        p.name,
        p.version,
        short(&p.sha256)
    )
}

/// The .deb's path in a Debian archive: the recorded `filename`, else derived the way
/// Debian lays out its pool (`pool/main/<initial>/<source>/<name>_<version>_<arch>.deb`, the
/// initial "libX" for sources starting with "lib", the version without its epoch).
pub fn pool_path(p: &Pin) -> String {
    if let Some(f) = &p.filename {
        return f.clone();
    }
    let source = p.source.as_deref().unwrap_or(&p.name);
    let initial = match source.strip_prefix("lib") {
        Some(rest) if !rest.is_empty() => &source[..4],
        _ => source.get(..1).unwrap_or(""),
    };
    let version = p.version.split_once(':').map_or(&*p.version, |(_, v)| v);
    format!(
        "pool/main/{initial}/{source}/{}_{version}_{}.deb",
        p.name, p.arch
    )
}

/// The snapshot archives configured (`--snapshot URL`, repeatable, or FUGU_SNAPSHOT_URL, a
/// space-separated list): roots of Debian archive trees as they were at some time.
pub fn snapshot_urls(options: &[String]) -> Vec<String> {
    let env = std::env::var("FUGU_SNAPSHOT_URL").unwrap_or_default();
    options
        .iter()
        .map(String::as_str)
        .chain(env.split_whitespace())
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

/// Fetch `p` by its pool path from each snapshot archive in turn; the first whose file has
/// the pinned SHA-256 wins. Nothing unverified is left behind.
pub fn from_snapshots(p: &Pin, cache: &DebCache, urls: &[String]) -> Result<PathBuf, String> {
    let path = pool_path(p);
    if path.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(format!("pool path '{path}' is not a plain relative path"));
    }
    let mut tried = Vec::new();
    for base in urls {
        let url = format!("{base}/{path}");
        step(format!("snapshot: {url}"));
        let tmp = cache.scratch(&p.name)?;
        let file = tmp.join("download.deb");
        let r = http_get(&url, &file).and_then(|()| cache.put(&file, &p.sha256));
        let _ = std::fs::remove_dir_all(&tmp);
        match r {
            Ok(deb) => return Ok(deb),
            Err(e) => tried.push(format!("{url}: {e}")),
        }
    }
    Err(format!(
        "not in the snapshot archives:\n    {}",
        tried.join("\n    ")
    ))
}

/// GET `url` (plain HTTP; redirects followed) into `dest`.
fn http_get(url: &str, dest: &Path) -> Result<(), String> {
    let mut resp = minreq::get(url)
        .with_timeout(600)
        .send_lazy()
        .map_err(|e| e.to_string())?;
    if resp.status_code != 200 {
        return Err(format!("HTTP {} {}", resp.status_code, resp.reason_phrase));
    }
    let mut f = std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    std::io::copy(&mut resp, &mut f).map_err(|e| format!("{url}: {e}"))?;
    Ok(())
}

/// `apt-get download NAME=VERSION` into `dir`: the .deb it wrote.
fn apt_download(p: &Pin, dir: &Path) -> Result<PathBuf, String> {
    let spec = format!("{}={}", apt_spec(&p.name, &p.arch), p.version);
    step(format!("apt-get download {spec}"));
    let (ok, out) = capture(
        apt("apt-get", &p.arch)
            .current_dir(dir)
            .args(["download", "-q"])
            .arg(&spec),
    )
    .map_err(|e| e.msg)?;
    let got = std::fs::read_dir(dir)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
        .filter(|f| f.extension().is_some_and(|x| x == "deb"));
    match (ok, got) {
        (true, Some(f)) => Ok(f),
        _ => Err(format!(
            "apt-get download {spec} failed:\n{}",
            crate::util::tail(&out, 6)
        )),
    }
}

fn sidecar(file: &Path) -> PathBuf {
    file.with_extension("deb.sha256")
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
    let side = sidecar(file);
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
        filename: info.filename,
        source: p.source.clone(),
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

    use std::cell::{Cell, RefCell};

    /// A .deb's bytes in these tests: its name and version, so each has its own SHA-256.
    fn content(name: &str, version: &str) -> Vec<u8> {
        format!("deb {name} {version}").into_bytes()
    }

    fn pin(name: &str, version: &str) -> Pin {
        Pin {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            sha256: crate::images::sha256_bytes(&content(name, version)),
            track: None,
            filename: None,
            source: None,
        }
    }

    /// apt as the tests want it: the versions its lists name (before and after a refresh),
    /// the one it would install now, the ones the mirror still serves; every call recorded.
    struct Fake {
        listed: RefCell<Vec<Pin>>,
        after_refresh: Vec<Pin>,
        now: Option<Pin>,
        served: Vec<Pin>,
        refreshed: Cell<bool>,
        calls: RefCell<Vec<String>>,
    }

    impl Fake {
        fn new(listed: &[Pin], now: Option<&Pin>) -> Fake {
            Fake {
                listed: RefCell::new(listed.to_vec()),
                after_refresh: listed.to_vec(),
                now: now.cloned(),
                served: listed.to_vec(),
                refreshed: Cell::new(false),
                calls: RefCell::new(Vec::new()),
            }
        }

        fn log(&self, s: String) {
            self.calls.borrow_mut().push(s);
        }
    }

    impl Mirror for Fake {
        fn available(&self, arch: &str) -> Result<(), String> {
            self.log(format!("available {arch}"));
            Ok(())
        }
        fn sha256_of(&self, p: &Pin) -> Option<String> {
            self.log(format!("show {}={}", p.name, p.version));
            let l = self.listed.borrow();
            l.iter()
                .find(|x| x.name == p.name && x.version == p.version)
                .map(|x| x.sha256.clone())
        }
        fn refresh(&self) -> bool {
            self.log("refresh".into());
            if self.refreshed.replace(true) {
                return false;
            }
            *self.listed.borrow_mut() = self.after_refresh.clone();
            true
        }
        fn current(&self, p: &Pin) -> Result<Pin, String> {
            self.log(format!("current {}", p.name));
            self.now.clone().ok_or_else(|| "no candidate".into())
        }
        fn download(&self, p: &Pin, dir: &Path) -> Result<PathBuf, String> {
            self.log(format!("download {}={}", p.name, p.version));
            if !self
                .served
                .iter()
                .any(|x| x.name == p.name && x.version == p.version)
            {
                return Err("404 Not Found".into());
            }
            let f = dir.join(format!("{}.deb", p.name));
            std::fs::write(&f, content(&p.name, &p.version)).map_err(|e| e.to_string())?;
            Ok(f)
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!(
                "fugu-debs-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The .debs in the cache (nothing else, no leftovers of a download).
    fn cached(t: &TempDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(t.0.join("debs/by-sha256"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".sha256"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_pin_on_the_mirror_is_downloaded_once_then_cached_by_sha256() {
        let t = TempDir::new("hit");
        let cache = DebCache::new(&t.0);
        let p = pin("busybox-static", "1:1.35.0-4");
        let apt = Fake::new(std::slice::from_ref(&p), Some(&p));
        let r = obtain(&p, &cache, &apt, &[], Policy::Locked).unwrap();
        assert!(matches!(&r, Outcome::Exact(f) if f.ends_with(format!("{}.deb", p.sha256))));
        assert!(apt
            .calls
            .borrow()
            .contains(&"download busybox-static=1:1.35.0-4".to_string()));
        assert_eq!(cached(&t), vec![format!("{}.deb", p.sha256)]);
        // Again: the cache answers without asking apt anything (no network needed), even if
        // the mirror has dropped the pin meanwhile.
        let gone = Fake::new(&[], None);
        let r = obtain(&p, &cache, &gone, &[], Policy::Locked).unwrap();
        assert!(matches!(r, Outcome::Exact(_)));
        assert!(gone.calls.borrow().is_empty(), "{:?}", gone.calls.borrow());
    }

    #[test]
    fn a_cached_file_with_the_wrong_contents_is_not_used() {
        let t = TempDir::new("bad");
        let cache = DebCache::new(&t.0);
        let p = pin("hello", "1.0");
        let file = cache.path(&p.sha256).unwrap();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"not the pinned deb").unwrap();
        assert_eq!(cache.get(&p.sha256), None);
        assert!(!file.exists());
        // A pin's sha256 becomes a file name only when it is one.
        assert_eq!(cache.path("../../etc/passwd"), None);
        let mut bad = p.clone();
        bad.sha256 = "../x".into();
        let apt = Fake::new(&[], None);
        assert!(matches!(
            obtain(&bad, &cache, &apt, &[], Policy::Fallback),
            Err(Problem::Fail(m)) if m.contains("no valid sha256")
        ));
    }

    #[test]
    fn a_vanished_pin_falls_back_to_the_mirrors_version_with_a_warning() {
        let t = TempDir::new("gone");
        let cache = DebCache::new(&t.0);
        let old = pin("linux-source-6.1", "6.1.172-1");
        let new = pin("linux-source-6.1", "6.1.192-3");
        let apt = Fake::new(std::slice::from_ref(&new), Some(&new));
        match obtain(&old, &cache, &apt, &[], Policy::Fallback).unwrap() {
            Outcome::Fallback { used, deb, warning } => {
                assert_eq!(used, new);
                assert!(deb.ends_with(format!("{}.deb", new.sha256)));
                assert!(warning.contains("6.1.172-1") && warning.contains("6.1.192-3"));
                assert!(warning.contains("no longer on the mirror"), "{warning}");
            }
            other => panic!("{other:?}"),
        }
        // It looked again after refreshing the lists before calling the pin gone.
        assert!(apt.calls.borrow().contains(&"refresh".to_string()));
        assert_eq!(cached(&t), vec![format!("{}.deb", new.sha256)]);
    }

    #[test]
    fn a_pin_with_another_sha256_on_the_mirror_falls_back_too() {
        let t = TempDir::new("changed");
        let cache = DebCache::new(&t.0);
        let mut p = pin("busybox-static", "1.0");
        p.sha256 = "ab".repeat(32);
        let mirror_now = pin("busybox-static", "1.0");
        let apt = Fake::new(std::slice::from_ref(&mirror_now), Some(&mirror_now));
        match obtain(&p, &cache, &apt, &[], Policy::Fallback).unwrap() {
            Outcome::Fallback { used, warning, .. } => {
                assert_eq!(used.sha256, mirror_now.sha256);
                assert!(warning.contains("has sha256"), "{warning}");
                assert!(warning.contains(&mirror_now.sha256[..16]), "{warning}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn locked_refuses_a_stale_pin_naming_it_and_the_mirrors_version() {
        let t = TempDir::new("locked");
        let cache = DebCache::new(&t.0);
        let old = pin("linux-source-6.1", "6.1.172-1");
        let new = pin("linux-source-6.1", "6.1.192-3");
        let apt = Fake::new(std::slice::from_ref(&new), Some(&new));
        match obtain(&old, &cache, &apt, &[], Policy::Locked).unwrap() {
            Outcome::Refused(m) => {
                assert!(m.contains("linux-source-6.1=6.1.172-1"), "{m}");
                assert!(
                    m.contains("the mirror now has linux-source-6.1=6.1.192-3"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!apt.calls.borrow().iter().any(|c| c.starts_with("download")));
        assert!(cached(&t).is_empty());
    }

    #[test]
    fn stale_lists_that_still_name_a_dropped_version_are_refreshed() {
        let t = TempDir::new("stale-lists");
        let cache = DebCache::new(&t.0);
        let old = pin("busybox-static", "1.0");
        let new = pin("busybox-static", "2.0");
        let mut apt = Fake::new(std::slice::from_ref(&old), Some(&new));
        apt.after_refresh = vec![new.clone()];
        apt.served = vec![new.clone()];
        match obtain(&old, &cache, &apt, &[], Policy::Fallback).unwrap() {
            Outcome::Fallback { used, .. } => assert_eq!(used, new),
            other => panic!("{other:?}"),
        }
        // A download that fails while the refreshed lists still name the pin is an error.
        let t = TempDir::new("broken");
        let mut apt = Fake::new(std::slice::from_ref(&old), Some(&old));
        apt.served = vec![];
        let cache = DebCache::new(&t.0);
        assert!(matches!(
            obtain(&old, &cache, &apt, &[], Policy::Fallback),
            Err(Problem::Fail(m)) if m.contains("404")
        ));
    }

    #[test]
    fn pool_paths_come_from_the_recorded_filename_or_the_source() {
        let mut p = pin("linux-source-6.1", "6.1.172-1");
        p.arch = "all".into();
        p.source = Some("linux".into());
        assert_eq!(
            pool_path(&p),
            "pool/main/l/linux/linux-source-6.1_6.1.172-1_all.deb"
        );
        let mut b = pin("busybox-static", "1:1.35.0-4+deb12u1+b1");
        b.source = Some("busybox".into());
        assert_eq!(
            pool_path(&b),
            "pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb"
        );
        let l = pin("libssl3", "3.0");
        assert_eq!(
            pool_path(&l),
            "pool/main/libs/libssl3/libssl3_3.0_amd64.deb"
        );
        p.filename = Some("pool/updates/main/l/linux/x.deb".into());
        assert_eq!(pool_path(&p), "pool/updates/main/l/linux/x.deb");
    }

    /// A static HTTP server on loopback serving `dir` (Debian's archive layout below it);
    /// its base URL.
    fn serve(dir: PathBuf) -> String {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut req = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                let _ = req.read_line(&mut first);
                let mut line = String::new();
                while req.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/");
                let body = std::fs::read(dir.join(path.trim_start_matches('/')));
                let (status, body) = match body {
                    Ok(b) => ("200 OK", b),
                    Err(_) => ("404 Not Found", b"not here".to_vec()),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        format!("http://127.0.0.1:{port}/archive/debian/20260520T000000Z")
    }

    #[test]
    fn a_snapshot_archive_serves_the_exact_pin_and_a_wrong_file_is_refused() {
        let t = TempDir::new("snap");
        let cache = DebCache::new(&t.0.join("cache"));
        let mut old = pin("linux-source-6.1", "6.1.172-1");
        old.filename = Some("pool/updates/main/l/linux/linux-source-6.1_6.1.172-1_all.deb".into());
        let mut bad = pin("busybox-static", "1.0");
        bad.source = Some("busybox".into());
        let root = t.0.join("www/archive/debian/20260520T000000Z");
        let put = |p: &Pin, data: &[u8]| {
            let f = root.join(pool_path(p));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, data).unwrap();
        };
        put(&old, &content(&old.name, &old.version));
        put(&bad, b"tampered");
        let url = serve(t.0.join("www"));
        // The first archive lacks the file, the second has it.
        let urls = vec![format!("{url}/missing"), url.clone()];

        // Gone from the mirror, even --locked: the snapshot has the exact pin.
        let apt = Fake::new(&[], None);
        match obtain(&old, &cache, &apt, &urls, Policy::Locked).unwrap() {
            Outcome::Exact(f) => assert_eq!(sha256_file(&f).unwrap(), old.sha256),
            other => panic!("{other:?}"),
        }
        assert!(!apt.calls.borrow().iter().any(|c| c.starts_with("download")));

        // A file with another SHA-256 is refused and nothing of it stays.
        let e = from_snapshots(&bad, &cache, &urls).unwrap_err();
        assert!(e.contains("refused") && e.contains("404"), "{e}");
        let left: Vec<_> = std::fs::read_dir(t.0.join("cache/debs/by-sha256"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(&old.sha256))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let apt = Fake::new(&[], None);
        match obtain(&bad, &cache, &apt, &urls, Policy::Locked).unwrap() {
            Outcome::Refused(m) => assert!(m.contains("busybox-static=1.0"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshot_urls_come_from_options_and_the_environment() {
        // Only the options here: the environment is the machine's.
        let u = snapshot_urls(&["http://a/x/".into()]);
        assert_eq!(u.first().map(String::as_str), Some("http://a/x"));
    }
}
