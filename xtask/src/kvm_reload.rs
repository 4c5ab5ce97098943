//! `test-matrix --kvm-reload`: cover both paging modes on one VMX/SVM host by reloading
//! kvm_intel (ept=) or kvm_amd (npt=) with two-dimensional paging on and off, under a lock, and
//! restoring the original setting afterwards: when a cell fails, when the body panics, when
//! the run is interrupted, and (through a journal file) on the next run if this one died.
//!
//! The logic runs against the `Modules` trait so the tests drive it with a fake sysfs tree; only
//! `SysModules` runs modprobe.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

pub const LOCK: &str = "/run/fugu-kvm-reload.lock";
/// Holds "module param original-value" while a changed setting is in force.
pub const JOURNAL: &str = "/run/fugu-kvm-reload.journal";

/// Reading and reloading KVM module parameters.
pub trait Modules {
    fn param(&self, module: &str, param: &str) -> Result<String, String>;
    /// Unload `module` and load it again with `param=value`.
    fn reload(&mut self, module: &str, param: &str, value: &str) -> Result<(), String>;
}

/// The real thing: /sys/module and modprobe.
pub struct SysModules {
    pub sys: PathBuf,
}

impl Modules for SysModules {
    fn param(&self, module: &str, param: &str) -> Result<String, String> {
        read_param(&self.sys, module, param)
    }
    fn reload(&mut self, module: &str, param: &str, value: &str) -> Result<(), String> {
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("modprobe")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run modprobe: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "modprobe {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(&["-r", module])?;
        run(&[module, &format!("{param}={value}")])
    }
}

pub fn read_param(sys: &Path, module: &str, param: &str) -> Result<String, String> {
    let p = sys
        .join("module")
        .join(module)
        .join("parameters")
        .join(param);
    std::fs::read_to_string(&p)
        .map(|s| normalize(&s))
        .map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// "Y"/"1" -> "Y", "N"/"0" -> "N"; anything else as is.
pub fn normalize(v: &str) -> String {
    match v.trim() {
        "Y" | "y" | "1" => "Y".into(),
        "N" | "n" | "0" => "N".into(),
        other => other.to_string(),
    }
}

/// Which module and parameter to toggle on this host, or why --kvm-reload cannot run here.
pub fn target(
    modules: &[String],
    root: bool,
    sys: &Path,
) -> Result<(&'static str, &'static str), String> {
    let (m, p) = if modules.iter().any(|m| m == "kvm_intel") {
        ("kvm_intel", "ept")
    } else if modules.iter().any(|m| m == "kvm_amd") {
        ("kvm_amd", "npt")
    } else {
        let have = ["kvm_pvm"]
            .into_iter()
            .find(|m| modules.iter().any(|x| x == m))
            .map(|m| format!("this host's KVM module is {m} (no VMX/SVM)"))
            .unwrap_or_else(|| "no KVM vendor module is loaded".into());
        return Err(format!(
            "--kvm-reload toggles EPT/NPT by reloading kvm_intel or kvm_amd, but {have}: \
             there is nothing to reload; run without --kvm-reload"
        ));
    };
    if !root {
        return Err(format!("--kvm-reload reloads {m} and must run as root"));
    }
    if let Ok(n) = std::fs::read_to_string(sys.join("module").join(m).join("refcnt")) {
        if n.trim() != "0" {
            return Err(format!(
                "{m} is in use (refcnt {}): other VMs are running; stop them before --kvm-reload",
                n.trim()
            ));
        }
    }
    Ok((m, p))
}

/// An exclusive lock held while the file stays open.
pub fn lock(path: &Path) -> Result<File, String> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open lock {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another --kvm-reload run holds {}; wait for it to finish",
            path.display()
        ));
    }
    Ok(f)
}

/// Put back a setting a previous run left changed (its journal survived it).
pub fn recover(m: &mut dyn Modules, journal: &Path) -> Result<Option<String>, String> {
    let Ok(text) = std::fs::read_to_string(journal) else {
        return Ok(None);
    };
    let mut it = text.split_whitespace();
    let (Some(module), Some(param), Some(value)) = (it.next(), it.next(), it.next()) else {
        let _ = std::fs::remove_file(journal);
        return Ok(None);
    };
    if m.param(module, param)? != value {
        m.reload(module, param, value).map_err(|e| {
            format!(
                "restoring {module} {param}={value} from {}: {e}",
                journal.display()
            )
        })?;
    }
    std::fs::remove_file(journal).map_err(|e| format!("{}: {e}", journal.display()))?;
    Ok(Some(format!("{module} {param}={value}")))
}

/// What to reload, and the lock and journal files that guard it.
pub struct Reload<'a> {
    pub lock: &'a Path,
    pub journal: &'a Path,
    pub module: &'a str,
    pub param: &'a str,
}

/// Run `body` once per value of `module`'s `param` (the current value first, so one reload
/// switches and one restores), then restore the original value whatever happened. Stops early
/// when `interrupted` is set. Returns each value with its body's result.
pub fn with_each_setting<T>(
    m: &mut dyn Modules,
    r: &Reload,
    values: &[&str],
    interrupted: &AtomicBool,
    mut body: impl FnMut(&str) -> T,
) -> Result<Vec<(String, T)>, String> {
    let (journal, module, param) = (r.journal, r.module, r.param);
    let _lock = lock(r.lock)?;
    if let Some(what) = recover(m, journal)? {
        crate::util::step(format!(
            "restored {what}, which an earlier run left changed"
        ));
    }
    let original = m.param(module, param)?;
    let mut order: Vec<String> = values.iter().map(|v| normalize(v)).collect();
    order.sort_by_key(|v| *v != original);
    let mut results = Vec::new();
    let mut failure = None;
    let mut panic = None;
    for v in &order {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        if m.param(module, param)? != *v {
            let journaled = File::create(journal).and_then(|mut f| {
                writeln!(f, "{module} {param} {original}").and_then(|_| f.sync_all())
            });
            if let Err(e) = journaled {
                failure = Some(format!("cannot write {}: {e}", journal.display()));
                break;
            }
            crate::util::step(format!("reloading {module} with {param}={v}"));
            if let Err(e) = m.reload(module, param, v) {
                failure = Some(e);
                break;
            }
            match m.param(module, param) {
                Ok(now) if now == *v => {}
                Ok(now) => {
                    failure = Some(format!(
                        "{module} reloaded with {param}={v} but reports {now}"
                    ));
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(v))) {
            Ok(r) => results.push((v.clone(), r)),
            Err(p) => {
                panic = Some(p);
                break;
            }
        }
    }
    // Restore, whatever happened above.
    let restored = match m.param(module, param) {
        Ok(now) if now == original => Ok(()),
        _ => {
            crate::util::step(format!("restoring {module} {param}={original}"));
            m.reload(module, param, &original).and_then(|_| {
                let now = m.param(module, param)?;
                if now == original {
                    Ok(())
                } else {
                    Err(format!("{module} still reports {param}={now}"))
                }
            })
        }
    };
    match &restored {
        Ok(()) => {
            let _ = std::fs::remove_file(journal);
        }
        Err(e) => {
            let msg = format!(
                "could not restore {module} {param}={original}: {e}; {} keeps it for the next run",
                journal.display()
            );
            failure = Some(match failure {
                Some(f) => format!("{f}; {msg}"),
                None => msg,
            });
        }
    }
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(results),
    }
}

#[cfg(test)]
mod tests {
    /// The reload every test exercises: kvm_intel's ept parameter.
    fn ept_reload<'a>(lock: &'a std::path::Path, journal: &'a std::path::Path) -> Reload<'a> {
        Reload {
            lock,
            journal,
            module: "kvm_intel",
            param: "ept",
        }
    }

    use super::*;

    /// A fake sysfs: parameters are files; "reloading" rewrites them (and may fail).
    struct Fake {
        sys: PathBuf,
        fail_value: Option<String>,
        reloads: Vec<String>,
    }

    impl Modules for Fake {
        fn param(&self, module: &str, param: &str) -> Result<String, String> {
            read_param(&self.sys, module, param)
        }
        fn reload(&mut self, module: &str, param: &str, value: &str) -> Result<(), String> {
            self.reloads.push(format!("{module} {param}={value}"));
            if self.fail_value.as_deref() == Some(value) {
                return Err(format!("modprobe {module} {param}={value} failed: fake"));
            }
            let p = self
                .sys
                .join("module")
                .join(module)
                .join("parameters")
                .join(param);
            std::fs::write(p, if value == "Y" { "Y\n" } else { "N\n" }).map_err(|e| e.to_string())
        }
    }

    fn setup(name: &str, ept: &str) -> (Fake, PathBuf, PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("fugu-kvmreload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let params = dir.join("sys/module/kvm_intel/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("ept"), format!("{ept}\n")).unwrap();
        std::fs::write(dir.join("sys/module/kvm_intel/refcnt"), "0\n").unwrap();
        let fake = Fake {
            sys: dir.join("sys"),
            fail_value: None,
            reloads: vec![],
        };
        (fake, dir.join("lock"), dir.join("journal"), dir)
    }

    fn ept(f: &Fake) -> String {
        f.param("kvm_intel", "ept").unwrap()
    }

    #[test]
    fn runs_both_settings_and_restores_the_original() {
        let (mut f, lock, journal, dir) = setup("both", "Y");
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        let r = with_each_setting(
            &mut f,
            &ept_reload(&lock, &journal),
            &["N", "Y"],
            &stop,
            |v| {
                seen.push((
                    v.to_string(),
                    read_param(&dir.join("sys"), "kvm_intel", "ept").unwrap(),
                ));
                v == "Y"
            },
        )
        .unwrap();
        // Current setting first: one reload to switch, one to restore.
        assert_eq!(seen, [("Y".into(), "Y".into()), ("N".into(), "N".into())]);
        assert_eq!(r, [("Y".to_string(), true), ("N".to_string(), false)]);
        assert_eq!(f.reloads, ["kvm_intel ept=N", "kvm_intel ept=Y"]);
        assert_eq!(ept(&f), "Y");
        assert!(!journal.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_panicking_cell_run_still_restores() {
        let (mut f, lock, journal, dir) = setup("panic", "N");
        let stop = AtomicBool::new(false);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_each_setting(
                &mut f,
                &ept_reload(&lock, &journal),
                &["Y", "N"],
                &stop,
                |v| {
                    if v == "Y" {
                        panic!("cell runner blew up");
                    }
                },
            )
        }));
        assert!(r.is_err());
        assert_eq!(ept(&f), "N");
        assert!(!journal.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_interrupt_stops_and_restores() {
        let (mut f, lock, journal, dir) = setup("intr", "Y");
        let stop = AtomicBool::new(false);
        let mut runs = 0;
        let r = with_each_setting(
            &mut f,
            &ept_reload(&lock, &journal),
            &["Y", "N"],
            &stop,
            |_| {
                runs += 1;
                stop.store(true, Ordering::SeqCst); // Ctrl-C during the first pass
            },
        )
        .unwrap();
        assert_eq!((runs, r.len()), (1, 1));
        assert!(f.reloads.is_empty(), "nothing to switch or restore");
        assert_eq!(ept(&f), "Y");

        // Interrupted in the changed setting: restored.
        stop.store(false, Ordering::SeqCst);
        let mut n = 0;
        with_each_setting(
            &mut f,
            &ept_reload(&lock, &journal),
            &["Y", "N"],
            &stop,
            |_| {
                n += 1;
                if n == 2 {
                    stop.store(true, Ordering::SeqCst);
                }
            },
        )
        .unwrap();
        assert_eq!(ept(&f), "Y");
        assert!(!journal.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_reload_is_an_error_and_the_original_stays() {
        let (mut f, lock, journal, dir) = setup("fail", "Y");
        f.fail_value = Some("N".into());
        let stop = AtomicBool::new(false);
        let e = with_each_setting(
            &mut f,
            &ept_reload(&lock, &journal),
            &["Y", "N"],
            &stop,
            |_| (),
        )
        .unwrap_err();
        assert!(e.contains("fake"), "{e}");
        assert_eq!(ept(&f), "Y");
        assert!(!journal.exists());

        // The restore itself fails: the journal stays, and the next run repairs it first.
        f.fail_value = None;
        let p = dir.join("sys/module/kvm_intel/parameters/ept");
        std::fs::write(&p, "N\n").unwrap();
        std::fs::write(&journal, "kvm_intel ept Y\n").unwrap();
        f.fail_value = Some("Y".into());
        let e = with_each_setting(&mut f, &ept_reload(&lock, &journal), &["N"], &stop, |_| ())
            .unwrap_err();
        assert!(e.contains("restoring kvm_intel ept=Y"), "{e}");
        assert!(journal.exists());
        f.fail_value = None;
        let mut values = Vec::new();
        with_each_setting(
            &mut f,
            &ept_reload(&lock, &journal),
            &["Y", "N"],
            &stop,
            |v| values.push(v.to_string()),
        )
        .unwrap();
        assert_eq!(values, ["Y", "N"], "recovered to Y before starting");
        assert_eq!(ept(&f), "Y");
        assert!(!journal.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_run_is_locked_out() {
        let (mut f, lock_path, journal, dir) = setup("lock", "Y");
        let _held = lock(&lock_path).unwrap();
        let stop = AtomicBool::new(false);
        let e = with_each_setting(
            &mut f,
            &Reload {
                lock: &lock_path,
                journal: &journal,
                module: "kvm_intel",
                param: "ept",
            },
            &["Y"],
            &stop,
            |_| (),
        )
        .unwrap_err();
        assert!(e.contains("holds"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_where_there_is_nothing_to_reload() {
        let (_f, _l, _j, dir) = setup("refuse", "Y");
        let sys = dir.join("sys");
        let e = target(&["kvm".into(), "kvm_pvm".into()], true, &sys).unwrap_err();
        assert!(
            e.contains("kvm_pvm") && e.contains("nothing to reload"),
            "{e}"
        );
        let e = target(&["kvm".into(), "kvm_intel".into()], false, &sys).unwrap_err();
        assert!(e.contains("root"), "{e}");
        assert_eq!(
            target(&["kvm_intel".into()], true, &sys).unwrap(),
            ("kvm_intel", "ept")
        );
        std::fs::write(sys.join("module/kvm_intel/refcnt"), "2\n").unwrap();
        assert!(target(&["kvm_intel".into()], true, &sys)
            .unwrap_err()
            .contains("in use"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
