//! Minimal kernels from Debian's linux-source: unpacked once per source version, configured
//! from tinyconfig plus the recipe's fragments, built with `make -jN bzImage` in a build
//! directory per architecture, and cached by (source version, architecture, config hash).

use super::{sha256_bytes, Problem};
use crate::util::{capture, step};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub struct Built {
    pub bzimage: PathBuf,
    pub config_sha256: String,
    /// Seconds spent compiling; 0 when the cache had it.
    pub build_secs: u64,
}

fn fail(e: impl std::fmt::Display) -> Problem {
    Problem::Fail(e.to_string())
}

/// The config hash: ARCH and the fragments' bytes, in order.
pub fn config_hash(make_arch: &str, fragments: &[PathBuf]) -> Result<String, Problem> {
    let mut all = format!("ARCH={make_arch}\n").into_bytes();
    for f in fragments {
        all.extend(std::fs::read(f).map_err(|e| fail(format!("{}: {e}", f.display())))?);
    }
    Ok(sha256_bytes(&all))
}

/// Unpack linux-source-X.Y.tar.xz from the .deb into cache/src/<pkg>_<version>/.
fn unpack_source(deb: &Path, key: &str, cache: &Path) -> Result<PathBuf, Problem> {
    let dir = cache.join("src").join(key);
    let done = dir.join(".fugu-complete");
    if !done.exists() {
        step(format!("unpacking {} (about 1.5 GB)", deb.display()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let tmp = dir.join(".deb");
        std::fs::create_dir_all(&tmp).map_err(fail)?;
        let (ok, out) = capture(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))
            .map_err(|e| fail(e.msg))?;
        if !ok {
            return Err(fail(format!("dpkg-deb -x {}: {out}", deb.display())));
        }
        let tarball = std::fs::read_dir(tmp.join("usr/src"))
            .map_err(fail)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
            .ok_or_else(|| fail(format!("{}: no usr/src/*.tar.xz inside", deb.display())))?;
        let (ok, out) = capture(
            Command::new("tar")
                .arg("-xJf")
                .arg(&tarball)
                .arg("-C")
                .arg(&dir),
        )
        .map_err(|e| fail(e.msg))?;
        if !ok {
            return Err(fail(format!("tar -xJf {}: {out}", tarball.display())));
        }
        std::fs::remove_dir_all(&tmp).map_err(fail)?;
        std::fs::write(&done, b"").map_err(fail)?;
    }
    std::fs::read_dir(&dir)
        .map_err(fail)?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("linux-source-") && e.path().is_dir())
        .map(|e| e.path())
        .ok_or_else(|| fail(format!("{}: no linux-source-* directory", dir.display())))
}

/// Every `CONFIG_X=...` and `# CONFIG_X is not set` of the fragments must be in .config.
fn check_config(config: &str, fragments: &[PathBuf]) -> Result<(), Problem> {
    let mut lost = Vec::new();
    for f in fragments {
        let text = std::fs::read_to_string(f).map_err(fail)?;
        for l in text.lines().map(str::trim) {
            if l.starts_with("CONFIG_") {
                if !config.lines().any(|c| c == l) {
                    lost.push(l.to_string());
                }
            } else if let Some(rest) = l.strip_prefix("# CONFIG_") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    let set = format!("CONFIG_{name}=");
                    if config.lines().any(|c| c.starts_with(&set)) {
                        lost.push(l.to_string());
                    }
                }
            }
        }
    }
    if lost.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "the kernel configuration lost options the fragments ask for (a dependency is \
             missing or they conflict):\n    {}",
            lost.join("\n    ")
        )))
    }
}

fn make(src: &Path, out: &Path, arch: &str) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .arg(format!("ARCH={arch}"));
    c
}

/// What one kernel build needs besides the recipe.
pub struct Settings<'a> {
    pub cache: &'a Path,
    pub jobs: u32,
}

/// Seconds since the epoch of a UTC date and time as tar lists them ("2026-05-15",
/// "09:58:29"); None when they are not that.
fn parse_utc(date: &str, time: &str) -> Option<u64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let d: Vec<i64> = date.split('-').map(num).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(num).collect::<Option<_>>()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *hh > 23 || *mm > 59 || *ss > 60 {
        return None;
    }
    let days = fugu_common::date::days_from_civil(*y, *m, *day);
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The kernel's build timestamp (KBUILD_BUILD_TIMESTAMP): the modification time of the source
/// tarball in the linux-source .deb, which Debian sets from the package's changelog. It
/// depends on the source version alone, like the cache key, so a kernel from the cache is
/// the kernel a clean build makes; SOURCE_DATE_EPOCH (the time of the last commit) changes
/// with every commit and would make a cached kernel differ from a fresh one.
fn source_date(deb: &Path) -> Result<u64, Problem> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot run dpkg-deb: {e}")))?;
    let pipe = dpkg
        .stdout
        .take()
        .ok_or_else(|| fail("dpkg-deb: no pipe"))?;
    let list = Command::new("tar")
        .args(["-tv", "--full-time"])
        .env("TZ", "UTC")
        .stdin(pipe)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run tar: {e}")))?;
    let _ = dpkg.wait();
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .find_map(|l| {
            // "-rw-r--r-- root/root SIZE DATE TIME ./usr/src/linux-source-X.Y.tar.xz"
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, _, _, date, time, name]
                    if name.starts_with("./usr/src/") && name.ends_with(".tar.xz") =>
                {
                    parse_utc(date, time)
                }
                _ => None,
            }
        })
        .ok_or_else(|| {
            fail(format!(
                "{}: no usr/src/*.tar.xz with a readable date in its listing",
                deb.display()
            ))
        })
}

/// Build (or take from the cache) the bzImage for one recipe.
pub fn build(
    name: &str,
    deb: &Path,
    source_key: &str,
    make_arch: &str,
    fragments: &[PathBuf],
    settings: &Settings,
) -> Result<Built, Problem> {
    let (cache, jobs) = (settings.cache, settings.jobs);
    let hash = config_hash(make_arch, fragments)?;
    let date = source_date(deb)?;
    let key = format!("{make_arch}-{source_key}-{}-{date}", &hash[..16]);
    let kdir = cache.join("kernels").join(&key);
    let bz = kdir.join("bzImage");
    if bz.exists() {
        step(format!("{name}: kernel from the cache ({key})"));
        return Ok(Built {
            bzimage: bz,
            config_sha256: hash,
            build_secs: 0,
        });
    }
    let src = unpack_source(deb, source_key, cache)?;
    let out = cache.join("kbuild").join(make_arch);
    // The build tree of an ARCH is reused (a fragment change recompiles what it touches), but
    // not across source versions or build dates: kbuild does not redo every output when only
    // KBUILD_BUILD_TIMESTAMP changes (the built-in initramfs keeps the old mtimes), so a tree
    // left by another source would leak into this kernel and make it differ from a clean build.
    let tree_of = out.join(".fugu-source");
    let this_tree = format!("{source_key} {date}\n");
    let mut kept_steps = None;
    if std::fs::read_to_string(&tree_of).ok().as_deref() != Some(this_tree.as_str()) {
        if out.exists() {
            step(format!(
                "{name}: a fresh build tree for {source_key} (the old one is removed)"
            ));
        }
        // The step count of the last build (for the progress percentage) is kept.
        kept_steps = std::fs::read(out.join(".fugu-steps")).ok();
        let _ = std::fs::remove_dir_all(&out);
    }
    std::fs::create_dir_all(&out).map_err(fail)?;
    if let Some(steps) = kept_steps {
        let _ = std::fs::write(out.join(".fugu-steps"), steps);
    }
    std::fs::write(&tree_of, &this_tree).map_err(fail)?;
    step(format!(
        "{name}: configuring the kernel (ARCH={make_arch}, tinyconfig + {} fragments)",
        fragments.len()
    ));
    let run = |c: &mut Command, what: &str| -> Result<(), Problem> {
        let (ok, log) = capture(c).map_err(|e| fail(e.msg))?;
        if ok {
            Ok(())
        } else {
            Err(fail(format!(
                "{what} failed:\n{}",
                crate::util::tail(&log, 15)
            )))
        }
    };
    run(
        make(&src, &out, make_arch).arg("tinyconfig"),
        "make tinyconfig",
    )?;
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&src)
        .arg("-m")
        .arg("-O")
        .arg(&out)
        .arg(out.join(".config"));
    merge.args(fragments);
    merge.env("ARCH", make_arch);
    run(&mut merge, "merge_config.sh")?;
    run(
        make(&src, &out, make_arch).arg("olddefconfig"),
        "make olddefconfig",
    )?;
    let config = std::fs::read_to_string(out.join(".config")).map_err(fail)?;
    check_config(&config, fragments)?;

    step(format!(
        "{name}: make -j{jobs} bzImage (a few minutes; progress every 15 s)"
    ));
    let stamp = {
        let (ok, s) = capture(Command::new("date").args(["-u", "-d", &format!("@{date}")]))
            .map_err(|e| fail(e.msg))?;
        if ok {
            s.trim().to_string()
        } else {
            "Thu Jan  1 00:00:00 UTC 1970".into()
        }
    };
    let steps_file = out.join(".fugu-steps");
    let expected: u64 = std::fs::read_to_string(&steps_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut c = make(&src, &out, make_arch);
    c.arg(format!("-j{jobs}"))
        .arg("bzImage")
        .env("KBUILD_BUILD_TIMESTAMP", &stamp)
        .env("KBUILD_BUILD_USER", "fugu")
        .env("KBUILD_BUILD_HOST", "fugu")
        .env("KBUILD_BUILD_VERSION", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| fail(format!("cannot run make: {e}")))?;
    // stderr is read on a thread so make never blocks on it.
    let err = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut steps = 0u64;
    let mut last_report = Instant::now();
    let mut last_line = String::new();
    let mut log_tail: Vec<String> = Vec::new();
    if let Some(so) = child.stdout.take() {
        for line in std::io::BufReader::new(so).lines().map_while(Result::ok) {
            if line.starts_with("  ") {
                steps += 1;
                last_line = line.trim().to_string();
            }
            log_tail.push(line);
            if log_tail.len() > 30 {
                log_tail.remove(0);
            }
            if last_report.elapsed().as_secs() >= 15 {
                last_report = Instant::now();
                let pct = (steps * 100)
                    .checked_div(expected)
                    .map(|p| format!(" ~{}%", p.min(99)))
                    .unwrap_or_default();
                eprintln!(
                    "    [{name}] {:>4}s {steps} steps{pct}  {last_line}",
                    start.elapsed().as_secs()
                );
            }
        }
    }
    let status = child.wait().map_err(fail)?;
    let errs = err_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(format!(
            "kernel build failed ({status}):\n{}\n{}",
            log_tail.join("\n"),
            crate::util::tail(&errs, 20)
        )));
    }
    let secs = start.elapsed().as_secs();
    let _ = std::fs::write(&steps_file, steps.to_string());
    let built = out.join("arch/x86/boot/bzImage");
    let tmp = cache.join("kernels").join(format!(".{key}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(fail)?;
    std::fs::copy(&built, tmp.join("bzImage")).map_err(fail)?;
    std::fs::write(tmp.join("config"), &config).map_err(fail)?;
    std::fs::rename(&tmp, &kdir).map_err(fail)?;
    step(format!(
        "{name}: kernel built in {}m{:02}s",
        secs / 60,
        secs % 60
    ));
    Ok(Built {
        bzimage: bz,
        config_sha256: hash,
        build_secs: secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_dates_parse_as_utc() {
        assert_eq!(parse_utc("1970-01-01", "00:00:00"), Some(0));
        assert_eq!(parse_utc("2026-05-15", "09:58:29"), Some(1_778_839_109));
        for secs in [951_782_400, 1_767_225_599, 1_795_969_902] {
            let r = crate::images::rfc3339(secs);
            let (d, t) = r.trim_end_matches('Z').split_once('T').unwrap();
            assert_eq!(parse_utc(d, t), Some(secs), "{r}");
        }
        for (d, t) in [
            ("2026-13-01", "00:00:00"),
            ("2026-05", "00:00:00"),
            ("2026-05-15", "24:00:00"),
            ("x", "y"),
            ("1969-12-31", "23:59:59"),
        ] {
            assert_eq!(parse_utc(d, t), None, "{d} {t}");
        }
    }

    #[test]
    fn options_lost_by_olddefconfig_are_reported() {
        let dir = std::env::temp_dir().join(format!("fugu-kconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let frag = dir.join("frag.config");
        std::fs::write(&frag, "# c\nCONFIG_INET=y\n# CONFIG_IPV6 is not set\n").unwrap();
        let frags = [frag];
        assert!(check_config("CONFIG_INET=y\n# CONFIG_IPV6 is not set\n", &frags).is_ok());
        // olddefconfig turned IPv6 back on, or dropped INET: both are named.
        for (config, lost) in [
            ("CONFIG_INET=y\nCONFIG_IPV6=y\n", "# CONFIG_IPV6 is not set"),
            ("# CONFIG_INET is not set\n", "CONFIG_INET=y"),
        ] {
            match check_config(config, &frags) {
                Err(Problem::Fail(m)) => assert!(m.contains(lost), "{m}"),
                other => panic!("{config}: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
