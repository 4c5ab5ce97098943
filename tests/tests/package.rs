//! The release artifacts of `cargo xtask package`, used the way operators use them: the
//! amd64 .deb installs with dpkg, `fugu` runs from PATH and the package removes cleanly; the
//! i386 .deb's binary runs here; the tarballs unpack and run; SHA256SUMS verifies.
//!
//! `cargo xtask test` packages both targets and points FUGU_PACKAGE_DIR at the output; without
//! it these tests say so and do nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TRIPLES: [(&str, &str, u8); 2] = [
    ("x86_64-unknown-linux-gnu", "amd64", 2),
    ("i686-unknown-linux-gnu", "i386", 1),
];

fn package_dir() -> Option<PathBuf> {
    match std::env::var_os("FUGU_PACKAGE_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            fugu_e2e::unmet(
                "FUGU_PACKAGE_DIR is not set (`cargo xtask test` packages and sets it)",
            );
            None
        }
    }
}

fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", c.get_program()))
}

/// Run and require success; returns stdout.
fn ok(c: &mut Command) -> String {
    let o = run(c);
    assert!(
        o.status.success(),
        "{c:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fugu-pkg-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The artifact names in `dir` (everything but SHA256SUMS).
fn artifacts(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect()
}

/// The version in the tarball names, e.g. "0.1.0".
fn version(dir: &Path) -> String {
    let tgz = artifacts(dir)
        .into_iter()
        .find(|n| n.ends_with("-x86_64-unknown-linux-gnu.tar.gz"))
        .expect("no x86_64 tarball");
    tgz["fugu-".len()..tgz.len() - "-x86_64-unknown-linux-gnu.tar.gz".len()].to_string()
}

fn deb(dir: &Path, arch: &str) -> PathBuf {
    let d = dir.join(format!(
        "fugu_{}_{arch}.deb",
        version(dir).replacen('-', "~", 1)
    ));
    assert!(d.exists(), "{} is missing", d.display());
    d
}

fn elf_class(path: &Path) -> u8 {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"\x7fELF", "{} is not ELF", path.display());
    data[4]
}

fn assert_version(bin: &Path, version: &str) {
    let out = ok(Command::new(bin).arg("--version"));
    assert_eq!(out.trim(), format!("fugu {version}"), "{}", bin.display());
}

#[test]
fn sha256sums_cover_every_artifact_and_verify() {
    let Some(dir) = package_dir() else { return };
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let listed: BTreeSet<String> = sums
        .lines()
        .map(|l| l.split_once("  ").expect(l).1.to_string())
        .collect();
    assert_eq!(listed, artifacts(&dir));
    let v = version(&dir);
    let mut want = BTreeSet::new();
    for (triple, arch, _) in TRIPLES {
        want.insert(format!("fugu-{v}-{triple}.tar.gz"));
        want.insert(format!("fugu_{}_{arch}.deb", v.replacen('-', "~", 1)));
    }
    assert_eq!(listed, want);
    let out = ok(Command::new("sha256sum")
        .current_dir(&dir)
        .args(["-c", "SHA256SUMS"]));
    assert_eq!(
        out.lines().filter(|l| l.ends_with(": OK")).count(),
        4,
        "{out}"
    );

    // A damaged artifact is caught, by name.
    let copy = scratch("sums");
    for n in listed
        .iter()
        .chain(std::iter::once(&"SHA256SUMS".to_string()))
    {
        std::fs::copy(dir.join(n), copy.join(n)).unwrap();
    }
    let victim = copy.join(listed.iter().next().unwrap());
    let mut data = std::fs::read(&victim).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&victim, data).unwrap();
    let o = run(Command::new("sha256sum")
        .current_dir(&copy)
        .args(["-c", "SHA256SUMS"]));
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("{}: FAILED", listed.iter().next().unwrap())),
        "{out}"
    );
    std::fs::remove_dir_all(&copy).unwrap();
}

#[test]
fn tarballs_unpack_and_run() {
    let Some(dir) = package_dir() else { return };
    let v = version(&dir);
    for (triple, _, class) in TRIPLES {
        let name = format!("fugu-{v}-{triple}");
        let tgz = dir.join(format!("{name}.tar.gz"));
        // Every entry: root-owned, one timestamp, normalized modes, sorted, one top directory.
        let list = ok(Command::new("tar")
            .env("TZ", "UTC")
            .args([
                "--list",
                "--verbose",
                "--numeric-owner",
                "--full-time",
                "-zf",
            ])
            .arg(&tgz));
        let rows: Vec<Vec<&str>> = list
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let names: Vec<&str> = rows.iter().map(|r| r[5]).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are not sorted");
        let times: BTreeSet<String> = rows.iter().map(|r| format!("{} {}", r[3], r[4])).collect();
        assert_eq!(times.len(), 1, "{list}");
        for r in &rows {
            assert_eq!(r[1], "0/0", "{list}");
            assert!(r[5].starts_with(&format!("{name}/")), "{list}");
            assert!(
                ["drwxr-xr-x", "-rwxr-xr-x", "-rw-r--r--", "lrwxr-xr-x"].contains(&r[0]),
                "{list}"
            );
        }
        // fugud is fugu under another name: the one symlink, relative.
        let links: Vec<String> = rows
            .iter()
            .filter(|r| r[0].starts_with('l'))
            .map(|r| r[5..].join(" "))
            .collect();
        assert_eq!(
            links,
            [format!("{name}/sbin/fugud -> ../bin/fugu")],
            "{list}"
        );

        let tmp = scratch(&format!("tar-{triple}"));
        ok(Command::new("tar")
            .arg("-xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(&tmp));
        let top = tmp.join(&name);
        for f in [
            "bin/fugu",
            "share/man/man1/fugu.1",
            "share/man/man1/fugu-run.1",
            "share/bash-completion/completions/fugu",
            "share/zsh/site-functions/_fugu",
            "share/fish/vendor_completions.d/fugu.fish",
            "README.md",
            "LICENSE",
            "sbin/fugud",
            "share/man/man8/fugud.8",
        ] {
            assert!(top.join(f).is_file(), "{name}: {f} is missing");
        }
        let man = std::fs::read_to_string(top.join("share/man/man1/fugu.1")).unwrap();
        assert!(man.contains(".TH fugu 1"), "{man}");
        let zsh = std::fs::read_to_string(top.join("share/zsh/site-functions/_fugu")).unwrap();
        assert!(zsh.starts_with("#compdef fugu"), "{zsh}");
        let license = std::fs::read_to_string(top.join("LICENSE")).unwrap();
        assert!(license.contains("Apache License") && license.contains("Version 2.0"));

        let bin = top.join("bin/fugu");
        assert_eq!(elf_class(&bin), class, "{name}: wrong ELF class");
        assert_version(&bin, &v);
        let help = ok(Command::new(&bin).args(["run", "--help"]));
        assert!(help.contains("--kernel"), "{help}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

/// The control file of a .deb.
fn control(deb: &Path) -> String {
    ok(Command::new("dpkg-deb").arg("--field").arg(deb))
}

fn field<'a>(control: &'a str, name: &str) -> &'a str {
    control
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in\n{control}"))
}

#[test]
fn i386_deb_binary_runs_here() {
    let Some(dir) = package_dir() else { return };
    let deb = deb(&dir, "i386");
    let c = control(&deb);
    assert_eq!(field(&c, "Package"), "fugu");
    assert_eq!(field(&c, "Architecture"), "i386");
    assert!(field(&c, "Depends").contains("libc6 (>= "), "{c}");
    let tmp = scratch("deb-i386");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp));
    let bin = tmp.join("usr/bin/fugu");
    assert_eq!(elf_class(&bin), 1, "the i386 package holds a 64-bit binary");
    assert_version(&bin, &version(&dir));
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// What dpkg-shlibdeps (Debian's own tool) computes for a binary, with the names of the
/// 32-bit multilib packages of an amd64 host mapped to their i386 names.
fn shlibdeps(bin: &Path, tag: &str) -> Option<String> {
    if Command::new("dpkg-shlibdeps")
        .arg("--version")
        .output()
        .is_err()
    {
        fugu_e2e::unmet("dpkg-shlibdeps is not installed (Debian package dpkg-dev)");
        return None;
    }
    let tmp = scratch(&format!("shlibdeps-{tag}"));
    std::fs::create_dir_all(tmp.join("debian")).unwrap();
    std::fs::write(
        tmp.join("debian/control"),
        "Source: fugu\n\nPackage: fugu\nArchitecture: any\n",
    )
    .unwrap();
    let out = ok(Command::new("dpkg-shlibdeps")
        .current_dir(&tmp)
        .arg("-O")
        .arg(bin));
    std::fs::remove_dir_all(&tmp).unwrap();
    let deps = out.trim().strip_prefix("shlibs:Depends=")?.to_string();
    let mut parts: Vec<String> = deps
        .split(", ")
        .map(|d| {
            d.replace("lib32gcc-s1", "libgcc-s1")
                .replace("libc6-i386", "libc6")
        })
        .collect();
    parts.sort();
    Some(parts.join(", "))
}

#[test]
fn depends_match_what_dpkg_shlibdeps_finds() {
    let Some(dir) = package_dir() else { return };
    for (_, arch, _) in TRIPLES {
        let deb = deb(&dir, arch);
        let tmp = scratch(&format!("deps-{arch}"));
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp));
        if let Some(want) = shlibdeps(&tmp.join("usr/bin/fugu"), arch) {
            // Plus gpgv, which checks the image index's signature (docs/images.md).
            assert_eq!(
                field(&control(&deb), "Depends"),
                format!("{want}, gpgv"),
                "{arch}"
            );
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// dpkg, retried while another process holds its lock (apt on a shared machine).
fn dpkg(args: &[&str], deb: Option<&Path>) -> Output {
    for _ in 0..60 {
        let mut c = Command::new("dpkg");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        if let Some(d) = deb {
            c.arg(d);
        }
        let o = run(&mut c);
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || !err.contains("lock") {
            return o;
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
    panic!("dpkg {args:?}: the dpkg lock stayed taken for 5 minutes");
}

/// Removes the package if the test stops half-way.
struct Installed;
impl Drop for Installed {
    fn drop(&mut self) {
        let _ = dpkg(&["--remove", "fugu"], None);
    }
}

#[test]
fn amd64_deb_installs_runs_from_path_and_removes_cleanly() {
    let Some(dir) = package_dir() else { return };
    if !is_root() {
        fugu_e2e::unmet("installing the .deb needs root");
        return;
    }
    let deb = deb(&dir, "amd64");
    let c = control(&deb);
    assert_eq!(field(&c, "Architecture"), "amd64");
    let v = version(&dir);
    // The paths the package ships (directories aside).
    let listing = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let files: Vec<PathBuf> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let name = l.split_whitespace().nth(5).unwrap();
            PathBuf::from(name.trim_start_matches('.'))
        })
        .collect();
    for l in listing.lines() {
        assert!(l.contains(" root/root "), "not root-owned: {l}");
    }
    for f in [
        "/usr/bin/fugu",
        "/usr/share/man/man1/fugu.1.gz",
        "/usr/share/man/man1/fugu-run.1.gz",
        "/usr/share/bash-completion/completions/fugu",
        "/usr/share/zsh/vendor-completions/_fugu",
        "/usr/share/fish/vendor_completions.d/fugu.fish",
        "/usr/share/doc/fugu/copyright",
        "/usr/sbin/fugud",
        "/usr/share/man/man8/fugud.8.gz",
        "/lib/systemd/system/fugud.service",
        "/etc/fugu/fugu.toml",
    ] {
        assert!(files.contains(&PathBuf::from(f)), "{f} not in\n{listing}");
    }

    let o = dpkg(&["--install"], Some(&deb));
    let guard = Installed;
    assert!(
        o.status.success(),
        "dpkg -i failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let status = ok(Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", "fugu"]));
    assert_eq!(
        status,
        format!("install ok installed {}", v.replacen('-', "~", 1))
    );
    for f in &files {
        assert!(f.exists(), "{} was not installed", f.display());
    }
    // The installed files match the package's md5sums.
    let verify = ok(Command::new("dpkg").args(["--verify", "fugu"]));
    assert_eq!(verify, "", "dpkg --verify fugu");
    // From PATH, as an operator runs it.
    let which = ok(Command::new("sh").args(["-c", "command -v fugu"]));
    assert_eq!(which.trim(), "/usr/bin/fugu");
    let out = ok(Command::new("sh").args(["-c", "fugu --version"]));
    assert_eq!(out.trim(), format!("fugu {v}"));
    installed_daemon_starts_with_its_autostart_vms();

    let o = dpkg(&["--remove", "fugu"], None);
    std::mem::forget(guard);
    assert!(
        o.status.success(),
        "dpkg -r failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let conffile = Path::new("/etc/fugu/fugu.toml");
    for f in files.iter().filter(|f| *f != conffile) {
        assert!(!f.exists(), "{} is left after dpkg -r", f.display());
    }
    assert!(!Path::new("/usr/share/doc/fugu").exists());
    // The configuration stays until the package is purged.
    assert!(conffile.exists(), "dpkg -r removed the conffile");
    let o = dpkg(&["--purge", "fugu"], None);
    assert!(
        o.status.success(),
        "dpkg --purge failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !conffile.exists(),
        "dpkg --purge left {}",
        conffile.display()
    );
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "fugu"]));
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() || status.ends_with("not-installed"),
        "after dpkg -r: {status}"
    );
}

/// The installed package's daemon, as its systemd unit runs it: the unit verifies, postinst
/// created group fugu, /etc/fugu/fugu.toml is a conffile, and fugud (from the unit's
/// ExecStart, with a test configuration and socket) tells $NOTIFY_SOCKET it is ready once its
/// autostart VM runs; SIGTERM stops the VM through its power button.
fn installed_daemon_starts_with_its_autostart_vms() {
    let unit = Path::new("/lib/systemd/system/fugud.service");
    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
    {
        Ok(o) => assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify {}: {}",
            unit.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => fugu_e2e::unmet("systemd-analyze is missing: install Debian package systemd"),
    }
    assert!(
        ok(Command::new("getent").args(["group", "fugu"])).starts_with("fugu:"),
        "postinst did not create group fugu"
    );
    let vm_user = ok(Command::new("getent").args(["passwd", "fugu-vm"]));
    let vm_uid = vm_user.split(':').nth(2).unwrap_or_default().to_string();
    assert!(
        vm_user.starts_with("fugu-vm:") && vm_uid != "0",
        "postinst did not create the system user fugu-vm: {vm_user}"
    );
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "fugu"]));
    assert!(conffiles.contains("/etc/fugu/fugu.toml"), "{conffiles}");
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("Type=notify"), "{text}");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    let program = words.next().unwrap();
    assert_eq!(program, "/usr/sbin/fugud");
    let args: Vec<&str> = words.collect();
    assert_eq!(args, ["--config", "/etc/fugu"]);

    let dir = scratch("fugud");
    let guest = fugu_e2e::guest("acpi32");
    std::fs::write(
        dir.join("fugu.toml"),
        format!(
            "[vm.boot]\nkernel = \"{}\"\ncmdline = \"button\"\nmemory = 16\nautostart = true\n",
            guest.display()
        ),
    )
    .unwrap();
    let notify = dir.join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let socket = dir.join("fugu.sock");
    let mut daemon = Command::new(program)
        .arg("--config")
        .arg(dir.join("fugu.toml"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("NOTIFY_SOCKET", &notify)
        .stderr(std::fs::File::create(dir.join("fugud.log")).unwrap())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = rx.recv(&mut buf).unwrap_or(0);
    let log = || std::fs::read_to_string(dir.join("fugud.log")).unwrap_or_default();
    assert_eq!(&buf[..n], b"READY=1", "{}", log());
    let meta = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = ok(Command::new("getent").args(["group", "fugu"]));
    assert_eq!(
        gid.split(':').nth(2).unwrap().trim(),
        meta.gid().to_string()
    );
    let status = ok(Command::new("/usr/bin/fugu")
        .arg("status")
        .env("FUGU_SOCKET", &socket));
    let row = status.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        row.starts_with("boot ") && row.contains(" running "),
        "{status}"
    );
    // The VM names no user: fugud runs it as fugu-vm, with no capabilities left.
    let pid = row.split_whitespace().nth(2).unwrap_or_default();
    let field = |name: &str| fugu_e2e::proc_status_field(pid, name);
    assert_eq!(field("Uid"), [vm_uid.as_str(); 4], "VM process {pid}");
    assert_eq!(field("CapEff"), ["0000000000000000"], "VM process {pid}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let s = daemon.wait().unwrap();
    assert!(s.success(), "{s}: {}", log());
    assert!(
        log().contains("boot: ended") && log().contains("the guest powered off"),
        "{}",
        log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The .deb's maintainer scripts on a system run by systemd, simulated: a private mount
/// namespace with /run/systemd/system, and systemctl, deb-systemd-invoke and getent
/// replaced by stubs that log their arguments. An upgrade reloads the units and restarts a
/// running fugud (try-restart: a stopped one stays stopped); a first install only reloads;
/// removal stops fugud, an upgrade's prerm leaves it running.
#[test]
fn maintainer_scripts_restart_fugud_on_upgrade_and_stop_it_on_removal() {
    let Some(dir) = package_dir() else { return };
    if !is_root() {
        fugu_e2e::unmet("the maintainer scripts' test needs root (a private mount namespace)");
        return;
    }
    let deb = deb(&dir, "amd64");
    let tmp = scratch("scripts");
    ok(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(tmp.join("control")));
    let stubs = tmp.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let log = tmp.join("calls.log");
    for tool in ["systemctl", "deb-systemd-invoke", "getent"] {
        let p = stubs.join(tool);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"{tool} $*\" >> '{}'\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = |name: &str, args: &str| -> String {
        let _ = std::fs::remove_file(&log);
        let inner = format!(
            "mount -t tmpfs none /run && mkdir -p /run/systemd/system && \
             PATH='{}':$PATH sh '{}' {args}",
            stubs.display(),
            tmp.join("control").join(name).display()
        );
        let o = run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(&inner)
            .env_remove("DPKG_ROOT"));
        assert!(o.status.success(), "{name} {args}: {o:?}");
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let calls = script("postinst", "configure 0.1.0~old");
    assert!(calls.contains("systemctl daemon-reload"), "{calls}");
    assert!(
        calls.contains("deb-systemd-invoke try-restart fugud.service"),
        "{calls}"
    );
    let calls = script("postinst", "configure");
    assert!(calls.contains("systemctl daemon-reload"), "{calls}");
    assert!(
        !calls.contains("deb-systemd-invoke"),
        "first install: {calls}"
    );
    let calls = script("prerm", "remove");
    assert!(
        calls.contains("deb-systemd-invoke stop fugud.service"),
        "{calls}"
    );
    let calls = script("prerm", "upgrade 0.1.1");
    assert!(!calls.contains("deb-systemd-invoke"), "upgrade: {calls}");
    let _ = std::fs::remove_dir_all(&tmp);
}
