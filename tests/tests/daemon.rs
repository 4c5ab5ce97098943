//! fugud and the control commands against a real daemon on a temporary socket: three VMs
//! (the acpi32 guest waiting for its power button) start from the configuration, status
//! shows them, console attach and detach leaves a VM running (several readers, one writer),
//! stop works through the power button and by force (also after the timeout of a guest that
//! ignores the button), a VM process killed with SIGKILL is reported while the others run
//! on (and its disk lock is released), malformed requests and configurations get clear
//! errors and change nothing, a user who does not own a VM is refused, a stopping fugud
//! stops every VM, and a killed one leaves none behind.

use fugu_e2e::{fugu_builds, guest};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
/// The unprivileged user of the permission checks, and the socket group it is in.
const NOBODY: u32 = 65534;
const NOGROUP: &str = "nogroup";

struct Daemon {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
}

fn root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Daemon {
    /// fugud (the fugu binary called fugud) with `config`, on a socket in a fresh directory.
    fn start(bin: &Path, config: &str) -> Daemon {
        let dir = fugu_e2e::tempdir();
        std::fs::write(dir.join("fugu.toml"), config).unwrap();
        let mut d = Daemon {
            child: Self::spawn(bin, &dir),
            dir,
            bin: bin.to_path_buf(),
        };
        let start = Instant::now();
        loop {
            if let Some(s) = d.child.try_wait().unwrap() {
                panic!("fugud ended with {s}: {}", d.log());
            }
            if d.socket().exists() && d.fugu(&["status"]).status.success() {
                return d;
            }
            assert!(start.elapsed() < T, "fugud never served: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// fugud with its VMs running as nobody (the package's fugu-vm is not on a test host).
    fn spawn(bin: &Path, dir: &Path) -> Child {
        Self::spawn_with(bin, dir, &["--vm-user", "nobody"])
    }

    fn spawn_with(bin: &Path, dir: &Path, extra: &[&str]) -> Child {
        let log = std::fs::File::create(dir.join("fugud.log")).unwrap();
        Command::new(bin)
            .arg0("fugud")
            .arg("--config")
            .arg(dir.join("fugu.toml"))
            .arg("--socket")
            .arg(dir.join("fugu.sock"))
            .args(["--group", NOGROUP, "--stop-timeout", "10"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("fugu.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fugud.log")).unwrap_or_default()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("FUGU_SOCKET", self.socket())
            .stdin(Stdio::null());
        c
    }

    fn fugu(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// `fugu ARGS` as user nobody (group nogroup, no other groups).
    fn fugu_as_nobody(&self, args: &[&str]) -> Output {
        let mut c = self.cmd(args);
        // As root, std also empties the supplementary groups (setgroups(0)).
        c.uid(NOBODY).gid(NOBODY);
        c.output().unwrap()
    }

    fn vm(&self, name: &str) -> serde_json::Value {
        let o = self.fugu(&["status", name, "--json"]);
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn pid(&self, name: &str) -> i32 {
        let v = self.vm(name);
        v["pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or_else(|| panic!("{name} has no pid: {v}"))
    }

    /// Wait until VM `name` is stopped; returns its last end.
    fn wait_stopped(&self, name: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let v = self.vm(name);
            if v["state"] == "stopped" {
                return v["last_end"].clone();
            }
            assert!(start.elapsed() < T, "{name} never stopped: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the console log of `name` contains `text`.
    fn wait_console(&self, name: &str, text: &str) {
        let start = Instant::now();
        loop {
            let log = self.raw(&format!(
                "GET /v1/vms/{name}/log HTTP/1.1\r\nHost: x\r\n\r\n"
            ));
            if log.contains(text) {
                return;
            }
            assert!(start.elapsed() < T, "{name}: no '{text}' in {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send `request` as is; the whole answer.
    fn raw(&self, request: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// SIGTERM to fugud; wait for it; its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < T, "fugud did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: look at the state in /proc.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn config(g: &Path, vms: &[(&str, &str, &str)]) -> String {
    vms.iter()
        .map(|(name, cmdline, extra)| {
            format!(
                "[vm.{name}]\nkernel = \"{}\"\ncmdline = \"{cmdline}\"\nmemory = 16\nautostart = true\n{extra}\n",
                g.display()
            )
        })
        .collect()
}

/// A console client: its stdout read on a thread into a shared string.
struct Console {
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Console {
    fn attach(d: &Daemon, args: &[&str]) -> Console {
        let mut child = d
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (o, mut stdout) = (out.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Console { child, out }
    }

    fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.out.lock().unwrap().contains(text) {
            assert!(
                start.elapsed() < T,
                "console never showed '{text}': {}",
                self.out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Type `~.`; the client must end at once with status 0; its stderr.
    fn detach(mut self) -> String {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"~.").unwrap();
        stdin.flush().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < T, "the console did not detach");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "{status}: {err}");
        err
    }
}

#[test]
fn fugud_runs_three_vms_with_console_stop_kill_and_permissions() {
    if !root() {
        fugu_e2e::unmet("fugud's tests need root (KVM, chown of the socket, a second user)");
        return;
    }
    let g = guest("acpi32");
    let (_, bin) = fugu_builds().remove(0);
    // VM two's disk: its lock must be released however the VM ends.
    let disk = fugu_e2e::tempdir().join("two.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut d = Daemon::start(
        &bin,
        &config(
            &g,
            &[
                ("one", "button", "owner = \"nobody\"\ncpus = 2"),
                (
                    "two",
                    "button",
                    &format!("disks = [\"{}\"]", disk.display()),
                ),
                ("three", "hold", ""),
            ],
        ),
    );

    // Status: a table of the three, running, each its own process.
    let o = d.fugu(&["status"]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATE", "PID", "VCPUS", "MEMORY", "UPTIME", "OWNER"],
        "{table}"
    );
    for (name, cpus, owner) in [
        ("one", "2", "nobody"),
        ("two", "1", "root"),
        ("three", "1", "root"),
    ] {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "running", "{table}");
        assert!(cols[2].parse::<i32>().is_ok_and(alive), "{table}");
        assert_eq!((cols[3], cols[4], cols[6]), (cpus, "16M", owner), "{table}");
    }
    let pids: Vec<i32> = ["one", "two", "three"].iter().map(|n| d.pid(n)).collect();
    d.wait_console("one", "waiting for the power button");
    // None of them names a user: each runs as fugud's --vm-user, with no capabilities.
    for p in &pids {
        let field = |name: &str| fugu_e2e::proc_status_field(p, name);
        assert_eq!(field("Uid"), ["65534"; 4], "VM process {p}");
        assert_eq!(field("CapEff"), ["0000000000000000"], "VM process {p}");
    }
    d.wait_console("three", "holding, the power button is ignored");

    // Console: two readers of one; the first holds the input, the second is told it does
    // not; both detach with ~. and the VM runs on.
    let a = Console::attach(&d, &["console", "one"]);
    a.wait_for("waiting for the power button");
    let b = Console::attach(&d, &["console", "one"]);
    b.wait_for("waiting for the power button");
    let err_b = b.detach();
    assert!(
        err_b.contains("read-only: another client holds the input") && err_b.contains("detached"),
        "{err_b}"
    );
    let err_a = a.detach();
    assert!(err_a.contains("attached to one;"), "{err_a}");
    assert_eq!(d.vm("one")["state"], "running");
    assert_eq!(d.pid("one"), pids[0]);
    assert!(alive(pids[0]));
    // A console of a VM that is not there, and one without the upgrade (curl's plain GET).
    let o = d.fugu(&["console", "nine"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no VM named nine"),
        "{}",
        text(&o)
    );
    let r = d.raw("GET /v1/vms/one/console HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("Upgrade: fugu-console"),
        "{r}"
    );

    // Two's disk is locked while it runs: a VM on the same disk does not start, and says why.
    let disk_arg = disk.display().to_string();
    let clash = [
        "start",
        "clash",
        "--kernel",
        "acpi32.elf",
        "--cmdline",
        "button",
        "--memory",
        "16M",
        "--disk",
        &disk_arg,
    ];
    let o = d
        .cmd(&clash)
        .current_dir(g.parent().unwrap())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("VM clash did not start")
            && e.contains("in use by another process"),
        "{}",
        text(&o)
    );

    // kill -9 of one VM process: reported, the others live on.
    // SAFETY: killing a VM process this test's daemon started.
    unsafe { libc::kill(pids[1], libc::SIGKILL) };
    let end = d.wait_stopped("two");
    assert_eq!(end["signal"], 9, "{end}");
    assert_eq!(end["requested"], false, "{end}");
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("killed by signal 9"),
        "{end}"
    );
    let o = d.fugu(&["status", "two"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("last end: "),
        "{}",
        text(&o)
    );
    for (i, n) in [(0, "one"), (2, "three")] {
        assert_eq!(d.vm(n)["state"], "running");
        assert!(alive(pids[i]), "{n}");
    }
    assert!(d.log().contains("two: ended"), "{}", d.log());
    // The kernel released the disk lock of the killed VM: the same disk serves another.
    let o = d
        .cmd(&clash)
        .current_dir(g.parent().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = d.fugu(&["stop", "clash", "--force", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.fugu(&["status", "clash"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("forced stop"),
        "{}",
        text(&o)
    );
    // A stopped VM started with options can be forgotten; a declared one cannot.
    let r = d.raw("DELETE /v1/vms/clash HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = d.raw("DELETE /v1/vms/two HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 409") && r.contains("declared in"),
        "{r}"
    );

    // Malformed requests: clear errors, nothing changes.
    for (req, want) in [
        ("GARBAGE\r\n\r\n", "HTTP/1.1 400"),
        (
            "POST /v1/vms/one/stop HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"forse\":1",
            "malformed JSON body",
        ),
        (
            "POST /v1/vms/one/stop HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"forse\":1}\n",
            "unknown field `forse`",
        ),
        ("GET /v1/vms/..%2f HTTP/1.1\r\n\r\n", "is not a VM name"),
        ("DELETE /v1/vms HTTP/1.1\r\n\r\n", "HTTP/1.1 405"),
        ("GET /v2/things HTTP/1.1\r\n\r\n", "HTTP/1.1 404"),
        (
            "POST /v1/vms/one/start HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 411",
        ),
    ] {
        let r = d.raw(req);
        assert!(r.contains(want), "{req:?}: {r}");
        assert!(r.contains("\"error\""), "{req:?}: {r}");
    }
    assert_eq!(d.pid("one"), pids[0]);
    assert_eq!(d.vm("one")["state"], "running");

    // A malformed configuration: reload refuses with file, line and key; nothing changes.
    let good = std::fs::read_to_string(d.dir.join("fugu.toml")).unwrap();
    std::fs::write(
        d.dir.join("fugu.toml"),
        format!(
            "{good}[vm.four]\nkernel = \"{}\"\nmemory = \"12Q\"\n",
            g.display()
        ),
    )
    .unwrap();
    let o = d.fugu(&["reload"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        e.contains("fugu.toml:") && e.contains(": vm.four.memory: unknown size suffix"),
        "{e}"
    );
    let o = d.fugu(&["status", "four"]);
    assert!(!o.status.success(), "{}", text(&o));
    // A good one: the new autostart VM starts, the running ones are left alone.
    std::fs::write(
        d.dir.join("fugu.toml"),
        format!("{good}{}", config(&g, &[("four", "button", "")])),
    )
    .unwrap();
    let o = d.fugu(&["reload"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        out.contains("added: four") && out.contains("started: four"),
        "{out}"
    );
    assert_eq!(d.vm("four")["state"], "running");
    assert_eq!(d.pid("one"), pids[0]);
    let o = d.fugu(&["reload"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no changes"),
        "{}",
        text(&o)
    );

    // Permissions: nobody (in the socket's group) reads status and controls its own VM only.
    let o = d.fugu_as_nobody(&["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.fugu_as_nobody(&["stop", "three"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        e.contains("may not stop VM three: only root and its owner (root) may"),
        "{e}"
    );
    let o = d.fugu_as_nobody(&["reload"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only root may"),
        "{}",
        text(&o)
    );
    let o = d.fugu_as_nobody(&["start", "x", "--kernel", "/k"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only root may"),
        "{}",
        text(&o)
    );
    assert!(
        d.log()
            .contains("refused POST /v1/vms/three/stop from nobody"),
        "{}",
        d.log()
    );
    assert_eq!(d.vm("three")["state"], "running");

    // Graceful stop by its owner: the power button, the guest powers off.
    let o = d.fugu_as_nobody(&["stop", "one", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    let end = d.vm("one")["last_end"].clone();
    assert_eq!(end["exit_status"], 0, "{end}");
    let reason = end["reason"].as_str().unwrap();
    assert!(
        reason.contains("the guest powered off (fugu: guest powered off)")
            && reason.contains("power button"),
        "{end}"
    );
    assert!(!alive(pids[0]));

    // A guest that ignores the button is forced after the timeout.
    let t = Instant::now();
    let o = d.fugu(&["stop", "three", "--wait", "--timeout", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let end = d.vm("three")["last_end"].clone();
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("did not power off within 2 s: forced"),
        "{end}"
    );
    assert!(t.elapsed() >= Duration::from_secs(2));
    // Forced at once.
    let o = d.fugu(&["stop", "four", "--force", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    let end = d.vm("four")["last_end"].clone();
    assert_eq!(end["exit_status"], 130, "{end}");
    assert!(
        end["reason"].as_str().unwrap().contains("forced stop"),
        "{end}"
    );

    // Start again from the configuration, and one with the options of fugu run (relative
    // paths from the client's directory); then fugud stops them all when it stops.
    let o = d.fugu(&["start", "two"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d
        .cmd(&[
            "start",
            "five",
            "--kernel",
            "acpi32.elf",
            "--cmdline",
            "button",
            "--memory",
            "16M",
        ])
        .current_dir(g.parent().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(d.vm("five")["origin"], "api");
    // A start whose VM cannot be set up is an error that says why.
    let o = d.fugu(&["start", "six", "--kernel", "/nonexistent/kernel"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("VM six did not start")
            && e.contains("/nonexistent/kernel"),
        "{e}"
    );
    let o = d.fugu(&["start", "two"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already running"),
        "{}",
        text(&o)
    );
    let running = [d.pid("two"), d.pid("five")];
    let status = d.stop();
    assert!(status.success(), "{status}: {}", d.log());
    for p in running {
        assert!(!alive(p), "VM process {p} outlived fugud");
    }
    assert!(!d.socket().exists());
    assert!(d.log().contains("two: ended"), "{}", d.log());
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn a_bad_configuration_keeps_fugud_from_starting_and_the_i686_build_serves_too() {
    if !root() {
        fugu_e2e::unmet("fugud's tests need root (KVM, chown of the socket)");
        return;
    }
    let g = guest("acpi32");
    for (build, bin) in fugu_builds() {
        let dir = fugu_e2e::tempdir();
        std::fs::write(dir.join("fugu.toml"), "[vm.a]\nkernel = \"/k\"\ncpus = 0\n").unwrap();
        let mut child = Daemon::spawn(&bin, &dir);
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(dir.join("fugud.log")).unwrap();
        assert_eq!(status.code(), Some(1), "{build}: {log}");
        assert!(
            log.contains("fugu.toml:3: vm.a.cpus: 0 vCPUs: give 1 to 255"),
            "{build}: {log}"
        );
        assert!(!dir.join("fugu.sock").exists());
        // A --vm-user that does not exist: fugud says so before it starts anything.
        std::fs::write(dir.join("fugu.toml"), "").unwrap();
        let status = Daemon::spawn_with(&bin, &dir, &["--vm-user", "no-such-user-fugu"])
            .wait()
            .unwrap();
        let log = std::fs::read_to_string(dir.join("fugud.log")).unwrap();
        assert_eq!(status.code(), Some(1), "{build}: {log}");
        assert!(
            log.contains("--vm-user/--vm-group: no such user 'no-such-user-fugu'"),
            "{build}: {log}"
        );
        assert!(!dir.join("fugu.sock").exists());
        let _ = std::fs::remove_dir_all(&dir);

        let mut d = Daemon::start(&bin, &config(&g, &[("a", "button", "")]));
        d.wait_console("a", "waiting for the power button");
        let pid = d.pid("a");
        // A second fugud on the same socket refuses to start.
        let mut second = Daemon::spawn(&bin, &d.dir);
        assert_eq!(second.wait().unwrap().code(), Some(1), "{build}");
        let o = d.fugu(&["pause", "a"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("a: paused"),
            "{build}: {}",
            text(&o)
        );
        let o = d.fugu(&["unpause", "a"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("a: running"),
            "{build}: {}",
            text(&o)
        );
        let o = d.fugu(&["stop", "a", "--wait"]);
        assert!(o.status.success(), "{build}: {}", text(&o));
        assert_eq!(d.vm("a")["last_end"]["exit_status"], 0, "{build}");
        assert!(!alive(pid));
        assert!(d.stop().success(), "{build}: {}", d.log());

        // fugud killed outright: its VM does not outlive it (parent-death signal), and the
        // next fugud takes over the stale socket and starts the autostart VM again.
        let mut d = Daemon::start(&bin, &config(&g, &[("a", "button", "")]));
        let pid = d.pid("a");
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        let start = Instant::now();
        while alive(pid) {
            assert!(
                start.elapsed() < T,
                "{build}: VM process {pid} outlived a killed fugud"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(d.socket().exists());
        d.child = Daemon::spawn(&bin, &d.dir);
        let start = Instant::now();
        while !d.fugu(&["status", "a"]).status.success() {
            assert!(start.elapsed() < T, "{build}: no second fugud: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(d.vm("a")["state"], "running", "{build}");
        assert_ne!(d.pid("a"), pid);
        assert!(d.stop().success(), "{build}: {}", d.log());
    }
}
