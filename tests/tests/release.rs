//! `cargo xtask release` as a release engineer runs it, and what it makes as users use it:
//! SHA256SUMS verified by hand with gpgv and sha256sum; the signed image index pulled by both
//! fugu builds, and refused when unsigned or signed by another key; the signed apt
//! repository served on loopback, installed from with apt-get into a private root (its own
//! apt state and dpkg database, never this machine's) for amd64 and i386, upgraded from
//! 0.1.0 to a newer version with a changed conffile kept, removed and purged; a tampered
//! Packages file and a key apt does not trust refused.
//!
//! The signing keys are made here, with `gpg --quick-gen-key` in private GNUPGHOMEs.
//! `cargo xtask test` sets FUGU_PACKAGE_DIR (the packages of 0.1.0) and FUGU_XTASK_BIN (the
//! xtask, which these tests run as `xtask release --from DIR`).

use fugu_e2e::{fugu_builds, tempdir, unmet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// What the tests need, or None after saying why not.
fn inputs() -> Option<(PathBuf, PathBuf)> {
    let (Some(pkgs), Some(xtask)) = (
        std::env::var_os("FUGU_PACKAGE_DIR"),
        std::env::var_os("FUGU_XTASK_BIN"),
    ) else {
        unmet("FUGU_PACKAGE_DIR or FUGU_XTASK_BIN is not set (`cargo xtask test` sets both)");
        return None;
    };
    for (tool, arg, deb) in [
        ("gpg", "--version", "gnupg"),
        ("gpgv", "--version", "gpgv"),
        ("dpkg-scanpackages", "--version", "dpkg-dev"),
        ("python3", "--version", "python3"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            unmet(&format!("{tool} is not installed (Debian package {deb})"));
            return None;
        }
    }
    Some((PathBuf::from(pkgs), PathBuf::from(xtask)))
}

fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", c.get_program()))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run and require success; returns stdout and stderr.
fn ok(c: &mut Command) -> String {
    let o = run(c);
    assert!(
        o.status.success(),
        "{c:?} failed ({}):\n{}",
        o.status,
        text(&o)
    );
    text(&o)
}

/// A signing key in its own GNUPGHOME: the armored secret key (what FUGU_SIGNING_KEY names)
/// and the public keyring (binary).
struct Key {
    secret: PathBuf,
    keyring: PathBuf,
}

fn make_key(dir: &Path, name: &str) -> Key {
    make_key_with(dir, name, "")
}

/// [`make_key`] with a passphrase on the secret key ("" for none).
fn make_key_with(dir: &Path, name: &str, passphrase: &str) -> Key {
    use std::os::unix::fs::DirBuilderExt;
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&home)
        .unwrap();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &home)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .args(["--passphrase", passphrase])
            .args(args);
        c
    };
    ok(&mut gpg(&[
        "--quick-gen-key",
        &format!("fugu {name} test key <{name}@fugu.invalid>"),
        "ed25519",
        "sign",
        "never",
    ]));
    let secret = dir.join(format!("{name}-secret.asc"));
    let o = run(&mut gpg(&["--armor", "--export-secret-keys"]));
    assert!(o.status.success() && !o.stdout.is_empty(), "{}", text(&o));
    std::fs::write(&secret, &o.stdout).unwrap();
    let keyring = dir.join(format!("{name}.gpg"));
    let o = run(&mut gpg(&["--export"]));
    std::fs::write(&keyring, &o.stdout).unwrap();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "gpg-agent"])
        .output();
    Key { secret, keyring }
}

/// `xtask release --from from --out out [--images DIR]` with `key` (None: no key at all).
fn release(
    xtask: &Path,
    key: Option<&Path>,
    from: &Path,
    out: &Path,
    images: Option<&Path>,
) -> Output {
    let mut c = Command::new(xtask);
    c.env_remove("FUGU_SIGNING_KEY")
        .env_remove("GNUPGHOME")
        .arg("release")
        .arg("--from")
        .arg(from)
        .arg("--out")
        .arg(out);
    if let Some(d) = images {
        c.arg("--images").arg(d);
    }
    if let Some(k) = key {
        c.env("FUGU_SIGNING_KEY", k);
    }
    run(&mut c)
}

/// Python's http.server on 127.0.0.1 (a free port), serving `root`.
struct Server {
    child: Child,
    port: u16,
}

const SERVER_PY: &str = r#"
import functools, http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=sys.argv[1]))
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl Server {
    fn start(root: &Path) -> Server {
        let (child, port) = fugu_e2e::python_server(SERVER_PY, &[root.as_os_str()], "HTTP");
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A published image tree with one image, "demo" (a bios-disk of 64 KiB).
/// A real image, published the way a release publishes them (`xtask images publish`): flat,
/// as a release's assets are.
fn published_hello64(xtask: &Path, dir: &Path) {
    let o = run(Command::new(xtask)
        .args(["images", "publish"])
        .arg(dir)
        .args(["--only", "hello64"]));
    assert!(o.status.success(), "{}", text(&o));
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .inspect(|e| assert!(e.path().is_file(), "not flat: {}", e.path().display()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"index.json".to_string()), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("hello64.")), "{names:?}");
}

/// The .debs of `dir`.
fn debs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    v.sort();
    v
}

fn field(deb: &Path, name: &str) -> String {
    ok(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .trim()
        .to_string()
}

/// No key, a file that is not a key, a key locked by a passphrase that is not given: each
/// stops the release with a clear error before anything is written.
#[test]
fn without_a_usable_key_nothing_is_built_or_written() {
    let Some((pkgs, xtask)) = inputs() else {
        return;
    };
    let dir = tempdir();
    let out = dir.join("dist");
    let o = release(&xtask, None, &pkgs, &out, None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("FUGU_SIGNING_KEY is not set"),
        "{}",
        text(&o)
    );
    // A file that is not a key.
    let bogus = dir.join("not-a-key.asc");
    std::fs::write(&bogus, "hello\n").unwrap();
    let o = release(&xtask, Some(&bogus), &pkgs, &out, None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("FUGU_SIGNING_KEY"), "{}", text(&o));
    // A key with a passphrase, without the passphrase: refused before anything is built,
    // saying what is missing; with it, the release is made.
    let locked = make_key_with(&dir, "locked", "a passphrase");
    let o = release(&xtask, Some(&locked.secret), &pkgs, &out, None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("cannot sign") && text(&o).contains("FUGU_SIGNING_PASSPHRASE_FILE"),
        "{}",
        text(&o)
    );
    assert!(
        !out.exists() && !dir.join("dist.partial").exists(),
        "half a release"
    );
    std::fs::write(dir.join("passphrase"), "a passphrase\n").unwrap();
    let mut c = Command::new(&xtask);
    c.env_remove("GNUPGHOME")
        .env("FUGU_SIGNING_KEY", &locked.secret)
        .env("FUGU_SIGNING_PASSPHRASE_FILE", dir.join("passphrase"))
        .arg("release")
        .arg("--from")
        .arg(&pkgs)
        .arg("--out")
        .arg(&out);
    let o = run(&mut c);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("SHA256SUMS.asc").is_file());
    let o = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&locked.keyring)
        .arg(out.join("SHA256SUMS.asc"))
        .arg(out.join("SHA256SUMS")));
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The release directory as a user checks it by hand (docs/release.md), and its image
/// index as both fugu builds check it.
#[test]
fn a_release_verifies_by_hand_and_its_image_index_with_fugu() {
    let Some((pkgs, xtask)) = inputs() else {
        return;
    };
    let dir = tempdir();
    let key = make_key(&dir, "release");
    let other = make_key(&dir, "other");
    published_hello64(&xtask, &dir.join("published"));
    let out = dir.join("dist");
    let o = release(
        &xtask,
        Some(&key.secret),
        &pkgs,
        &out,
        Some(&dir.join("published")),
    );
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "SHA256SUMS",
        "SHA256SUMS.asc",
        "fugu-archive-keyring.gpg",
        "fugu-archive-keyring.asc",
        "apt/dists/stable/InRelease",
        "apt/dists/stable/Release.gpg",
        "images/index.json.asc",
    ] {
        assert!(out.join(f).is_file(), "{f} is missing");
    }
    assert!(!dir.join("dist.partial").exists());
    // The published keyring is the signing key's public half.
    assert_eq!(
        std::fs::read(out.join("fugu-archive-keyring.gpg")).unwrap(),
        std::fs::read(&key.keyring).unwrap()
    );
    // By hand: the signature with gpgv and the keyring, then the sums.
    let gpgv = |keyring: &Path, sig: &str, data: &str| {
        run(Command::new("gpgv")
            .current_dir(&out)
            .arg("--keyring")
            .arg(keyring)
            .args([sig, data]))
    };
    let kr = out.join("fugu-archive-keyring.gpg");
    let o = gpgv(&kr, "SHA256SUMS.asc", "SHA256SUMS");
    assert!(o.status.success(), "{}", text(&o));
    let sums = ok(Command::new("sha256sum")
        .current_dir(&out)
        .args(["-c", "SHA256SUMS"]));
    let n = debs(&pkgs).len() + 2; // the .debs, the tarballs, the two keyring files
    assert!(
        sums.lines().filter(|l| l.ends_with(": OK")).count() >= n,
        "{sums}"
    );
    // Another key, and a changed SHA256SUMS, do not verify.
    let o = gpgv(&other.keyring, "SHA256SUMS.asc", "SHA256SUMS");
    assert!(!o.status.success(), "{}", text(&o));
    let mut changed = std::fs::read(out.join("SHA256SUMS")).unwrap();
    changed[0] ^= 1;
    std::fs::write(dir.join("SHA256SUMS.changed"), changed).unwrap();
    let o = gpgv(
        &kr,
        "SHA256SUMS.asc",
        dir.join("SHA256SUMS.changed").to_str().unwrap(),
    );
    assert!(!o.status.success(), "{}", text(&o));

    // The signed image index, served, as fugu checks it.
    let server = Server::start(&out.join("images"));
    let index = format!("{}/index.json", server.url());
    for (build, bin) in fugu_builds() {
        let pull = |keyring: &Path, cache: &Path| {
            run(Command::new(&bin)
                .args(["image", "--index", &index, "--keyring"])
                .arg(keyring)
                .arg("--cache")
                .arg(cache)
                .args(["pull", "hello64"]))
        };
        let cache = dir.join(format!("cache-{build}"));
        let o = pull(&other.keyring, &cache);
        assert!(!o.status.success(), "{build}: {}", text(&o));
        assert!(
            text(&o).contains("refusing image index") && text(&o).contains("not in the keyring"),
            "{build}: {}",
            text(&o)
        );
        assert!(
            !cache.exists(),
            "{build}: a refused index changed the cache"
        );
        let o = pull(&kr, &cache);
        assert!(o.status.success(), "{build}: {}", text(&o));
        // What was pulled from the release's flat assets boots.
        let o = run(Command::new(&bin)
            .args(["run", "--image", "hello64"])
            .env("FUGU_IMAGE_CACHE", &cache));
        assert_eq!(o.status.code(), Some(65), "{build}: {}", text(&o));
        assert!(
            text(&o).contains("paging and long mode active"),
            "{build}: {}",
            text(&o)
        );
    }
    // Without its signature the index is refused, unless that is spelled out.
    std::fs::remove_file(out.join("images/index.json.asc")).unwrap();
    for (build, bin) in fugu_builds() {
        let cache = dir.join(format!("cache2-{build}"));
        let pull = |extra: &str| {
            run(Command::new(&bin)
                .args(["image", "--index", &index, extra])
                .arg("--cache")
                .arg(&cache)
                .args(["pull", "hello64"]))
        };
        let o = pull(&format!("--keyring={}", kr.display()));
        assert!(!o.status.success(), "{build}: {}", text(&o));
        assert!(
            text(&o).contains("has no signature"),
            "{build}: {}",
            text(&o)
        );
        assert!(!cache.exists(), "{build}");
        let o = pull("--insecure-skip-signature");
        assert!(o.status.success(), "{build}: {}", text(&o));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A copy of `deb` as version `version`, otherwise the same package.
fn repack(deb: &Path, version: &str, out_dir: &Path) -> PathBuf {
    let tree = out_dir.join(format!("tree-{}", field(deb, "Architecture")));
    let _ = std::fs::remove_dir_all(&tree);
    ok(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let old = std::fs::read_to_string(&control).unwrap();
    let new: String = old
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(_) => format!("Version: {version}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&control, new).unwrap();
    let out = out_dir.join(format!("fugu_{version}_{}.deb", field(deb, "Architecture")));
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&out));
    std::fs::remove_dir_all(&tree).unwrap();
    out
}

/// A private apt and dpkg for one architecture under `root`: apt's configuration, lists,
/// cache and the dpkg database all below it (APT_CONFIG), dpkg installing below it with
/// `--root` and running the maintainer scripts with DPKG_ROOT set. The host packages fugu
/// depends on are recorded as installed (stand-ins: their files are the host's own).
struct AptRoot {
    root: PathBuf,
    config: PathBuf,
}

impl AptRoot {
    fn new(root: &Path, arch: &str) -> AptRoot {
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/log/apt",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        let mut status = String::new();
        for (pkg, multi) in [
            ("libc6", "same"),
            ("libgcc-s1", "same"),
            ("gpgv", "foreign"),
        ] {
            let v = ok(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]));
            status.push_str(&format!(
                "Package: {pkg}\nStatus: install ok installed\nPriority: optional\n\
                 Section: libs\nMaintainer: stand-in <t@fugu.invalid>\nArchitecture: {arch}\n\
                 Multi-Arch: {multi}\nVersion: {}\nDescription: the host's {pkg}\n\n",
                v.trim()
            ));
        }
        std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
        let r = root.display();
        let config = root.join("apt.conf");
        std::fs::write(
            &config,
            format!(
                "Dir \"{r}/\";\n\
                 Dir::State::status \"{r}/var/lib/dpkg/status\";\n\
                 APT::Architecture \"{arch}\";\n\
                 APT::Architectures {{ \"{arch}\"; }};\n\
                 APT::Sandbox::User \"root\";\n\
                 APT::Install-Recommends \"false\";\n\
                 Acquire::Languages \"none\";\n\
                 DPkg::Options {{ \"--root={r}\"; \"--force-script-chrootless\"; \"--log={r}/var/log/dpkg.log\"; }};\n"
            ),
        )
        .unwrap();
        // The i386 package on this amd64 dpkg: a foreign architecture of the private
        // database only.
        ok(Command::new("dpkg")
            .arg(format!("--root={r}"))
            .arg("--add-architecture")
            .arg(arch));
        AptRoot {
            root: root.to_path_buf(),
            config,
        }
    }

    fn sources(&self, url: &str, keyring: &Path) {
        std::fs::write(
            self.root.join("etc/apt/sources.list"),
            format!("deb [signed-by={}] {url}/ stable main\n", keyring.display()),
        )
        .unwrap();
    }

    fn apt_get(&self, args: &[&str]) -> Output {
        run(Command::new("apt-get")
            .env("APT_CONFIG", &self.config)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .args(["-q", "-y"])
            .args(args))
    }

    /// `Status Version` of fugu in the private database ("" when it knows none).
    fn fugu(&self) -> String {
        let o = run(Command::new("dpkg-query")
            .arg(format!("--admindir={}/var/lib/dpkg", self.root.display()))
            .args(["-W", "-f=${Status} ${Version}", "fugu"]));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn files(&self) -> Vec<PathBuf> {
        ok(Command::new("dpkg-query")
            .arg(format!("--admindir={}/var/lib/dpkg", self.root.display()))
            .args(["-L", "fugu"]))
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(|l| self.root.join(l.trim_start_matches('/')))
        .collect()
    }
}

/// What this machine's own database says of fugu, and its group fugu: none of the private
/// installs may show there. (Only fugu's lines: other work on the machine may change the
/// rest meanwhile.)
fn host_state() -> (String, Option<String>) {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", "fugu"]));
    let group = std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("fugu:"))
        .map(str::to_string);
    (String::from_utf8_lossy(&o.stdout).into_owned(), group)
}

/// From the signed repository, for amd64 and i386: apt-get update and install 0.1.0; a
/// local change to /etc/fugu/fugu.toml; a newer version published, `apt-get install`
/// upgrades to it and keeps the change; remove leaves only the conffile, purge removes it.
/// Then a tampered Packages file and a key apt does not trust are refused.
#[test]
fn apt_installs_upgrades_and_purges_from_the_signed_repository() {
    let Some((pkgs, xtask)) = inputs() else {
        return;
    };
    if !is_root() {
        unmet("apt-get and dpkg into a private root need root");
        return;
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        unmet("apt-get is not installed (Debian package apt)");
        return;
    }
    let dir = tempdir();
    let key = make_key(&dir, "release");
    let other = make_key(&dir, "other");
    let host_before = host_state();
    // 0.1.0 as packaged, and a newer version of the same packages.
    let v1 = dir.join("v1");
    let v2 = dir.join("v2");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    let old_version = field(&debs(&pkgs)[0], "Version");
    let new_version = format!("{old_version}+newer1");
    for d in debs(&pkgs) {
        std::fs::copy(&d, v1.join(d.file_name().unwrap())).unwrap();
        std::fs::copy(&d, v2.join(d.file_name().unwrap())).unwrap();
        repack(&d, &new_version, &v2);
    }
    let out = dir.join("dist");
    let o = release(&xtask, Some(&key.secret), &v1, &out, None);
    assert!(o.status.success(), "{}", text(&o));
    let keyring = out.join("fugu-archive-keyring.gpg");
    // Served from a path that the second release replaces.
    let server = Server::start(&out.join("apt"));
    let roots: Vec<(&str, AptRoot)> = ["amd64", "i386"]
        .iter()
        .map(|a| (*a, AptRoot::new(&dir.join(format!("root-{a}")), a)))
        .collect();
    for (arch, apt) in &roots {
        apt.sources(&server.url(), &keyring);
        let o = apt.apt_get(&["update"]);
        assert!(
            o.status.success() && !text(&o).contains("W: "),
            "{arch}: {}",
            text(&o)
        );
        let o = apt.apt_get(&["install", "fugu"]);
        assert!(o.status.success(), "{arch}: {}", text(&o));
        assert_eq!(
            apt.fugu(),
            format!("install ok installed {old_version}"),
            "{arch}"
        );
        let bin = apt.root.join("usr/bin/fugu");
        let v = ok(Command::new(&bin).arg("--version"));
        assert_eq!(
            v.trim(),
            format!("fugu {}", old_version.replacen('~', "-", 1)),
            "{arch}"
        );
        // postinst made the group and the VMs' system user in the private root's files.
        let group = std::fs::read_to_string(apt.root.join("etc/group")).unwrap();
        assert!(
            group.lines().any(|l| l.starts_with("fugu:")),
            "{arch}: {group}"
        );
        let passwd = std::fs::read_to_string(apt.root.join("etc/passwd")).unwrap();
        assert!(
            passwd.lines().any(
                |l| l.starts_with("fugu-vm:") && l.ends_with(":/nonexistent:/usr/sbin/nologin")
            ),
            "{arch}: {passwd}"
        );
        let conf = apt.root.join("etc/fugu/fugu.toml");
        let mut changed = std::fs::read_to_string(&conf).unwrap();
        changed.push_str("\n# a local change the upgrade keeps\n");
        std::fs::write(&conf, &changed).unwrap();
    }

    // The newer version is published; apt upgrades to it.
    let o = release(&xtask, Some(&key.secret), &v2, &out, None);
    assert!(o.status.success(), "{}", text(&o));
    for (arch, apt) in &roots {
        let o = apt.apt_get(&["update"]);
        assert!(o.status.success(), "{arch}: {}", text(&o));
        let o = apt.apt_get(&["install", "fugu"]);
        assert!(o.status.success(), "{arch}: {}", text(&o));
        assert_eq!(
            apt.fugu(),
            format!("install ok installed {new_version}"),
            "{arch}"
        );
        let conf = apt.root.join("etc/fugu/fugu.toml");
        let kept = std::fs::read_to_string(&conf).unwrap();
        assert!(
            kept.contains("a local change the upgrade keeps"),
            "{arch}: {kept}"
        );
        assert!(
            !apt.root.join("etc/fugu/fugu.toml.dpkg-new").exists(),
            "{arch}"
        );

        let files = apt.files();
        assert!(
            files.iter().any(|f| f.ends_with("usr/bin/fugu")),
            "{arch}: {files:?}"
        );
        let o = apt.apt_get(&["remove", "fugu"]);
        assert!(o.status.success(), "{arch}: {}", text(&o));
        for f in &files {
            if f.ends_with("etc/fugu/fugu.toml") {
                assert!(f.exists(), "{arch}: remove took the configuration");
            } else if !f.is_dir() {
                assert!(!f.exists(), "{arch}: {} is left after remove", f.display());
            }
        }
        assert!(
            apt.fugu().starts_with("deinstall ok config-files"),
            "{arch}: {}",
            apt.fugu()
        );
        let o = apt.apt_get(&["purge", "fugu"]);
        assert!(o.status.success(), "{arch}: {}", text(&o));
        assert!(!conf.exists(), "{arch}: purge left {}", conf.display());
        assert!(
            !apt.root.join("etc/fugu").exists(),
            "{arch}: purge left /etc/fugu"
        );
        assert!(!apt.root.join("usr/share/doc/fugu").exists(), "{arch}");
        let status = apt.fugu();
        assert!(
            status.is_empty() || status.contains("not-installed"),
            "{arch}: {status}"
        );
    }

    // A tampered Packages file (both forms apt may fetch), Release left as signed.
    let amd64 = &roots[0].1;
    let packages = out.join("apt/dists/stable/main/binary-amd64/Packages");
    let p = std::fs::read_to_string(&packages).unwrap();
    // The same size, so that in Packages only the SHA-256 can tell.
    let tampered = p.replacen("Package: fugu\n", "Package: fuga\n", 1);
    assert_ne!(p, tampered);
    std::fs::write(&packages, &tampered).unwrap();
    let gz = out.join("apt/dists/stable/main/binary-amd64/Packages.gz");
    std::fs::remove_file(&gz).unwrap();
    ok(Command::new("gzip").args(["-9", "-n", "-k"]).arg(&packages));
    std::fs::remove_dir_all(amd64.root.join("var/lib/apt/lists")).unwrap();
    std::fs::create_dir_all(amd64.root.join("var/lib/apt/lists/partial")).unwrap();
    let o = amd64.apt_get(&["update"]);
    let t = text(&o);
    assert!(
        // apt fetches Packages.gz, whose size changed with its bytes; either is its check
        // against the signed Release.
        !o.status.success() && (t.contains("Hash Sum mismatch") || t.contains("unexpected size")),
        "a tampered Packages file was accepted: {t}"
    );
    let o = amd64.apt_get(&["install", "fugu"]);
    assert!(
        !o.status.success(),
        "installed from a tampered index: {}",
        text(&o)
    );

    // The right repository, but apt is told to trust another key.
    let o = release(&xtask, Some(&key.secret), &v1, &out, None);
    assert!(o.status.success(), "{}", text(&o));
    amd64.sources(&server.url(), &other.keyring);
    let o = amd64.apt_get(&["update"]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("NO_PUBKEY") && t.contains("is not signed"),
        "a repository signed by an untrusted key was accepted: {t}"
    );
    let o = amd64.apt_get(&["install", "fugu"]);
    assert!(
        !o.status.success(),
        "installed from an untrusted repository: {}",
        text(&o)
    );

    // This machine's own dpkg database and groups did not change.
    assert!(
        host_state() == host_before,
        "this machine's dpkg database or group fugu changed: {host_before:?} -> {:?}",
        host_state()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
