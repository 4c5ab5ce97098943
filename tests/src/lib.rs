//! Helpers for fugu's end-to-end tests: find both fugu builds and the tiny guests, run a VM
//! with a timeout, and capture its serial console.
//!
//! `cargo xtask test` builds everything first and passes the paths in the environment
//! (FUGU_BIN_X86_64, FUGU_BIN_I686, FUGU_GUESTS_DIR).

use fugu_common::proc::{signal_name, Proc, Waited};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The fugu builds under test: (name, binary).
pub fn fugu_builds() -> Vec<(&'static str, PathBuf)> {
    ["x86_64", "i686"]
        .iter()
        .map(|b| {
            let var = format!("FUGU_BIN_{}", b.to_uppercase());
            let path = std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
                panic!("{var} is not set: run the end-to-end tests through `cargo xtask test`, which builds both fugu binaries")
            });
            assert!(path.exists(), "{var}={} does not exist", path.display());
            (*b, path)
        })
        .collect()
}

/// Whether this host's KVM emulates guest kernel code (kvm_pvm or no VMX/SVM).
pub fn host_emulates_kernel_code() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    std::path::Path::new("/sys/module/kvm_pvm").exists() || !hw
}

/// A tiny guest from target/guests (built by the xtask).
pub fn guest(name: &str) -> PathBuf {
    let dir = std::env::var_os("FUGU_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("FUGU_GUESTS_DIR is not set: run through `cargo xtask test`"));
    let p = dir.join(format!("{name}.elf"));
    assert!(p.exists(), "guest {} is missing", p.display());
    p
}

/// The outcome of one VM run.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status, or None when it had to be killed at the timeout or died of a signal.
    pub status: Option<i32>,
    /// How it ended when there is no status: the signal that killed it, or the timeout.
    pub ended: String,
    pub serial: String,
    pub stderr: String,
}

/// Run `fugu <args>` with the serial console captured to a file, killing it after `timeout`.
pub fn run_fugu(bin: &PathBuf, args: &[&str], timeout: Duration) -> Outcome {
    run_fugu_env(bin, args, &[], timeout)
}

/// [`run_fugu`] with extra environment variables for fugu.
pub fn run_fugu_env(
    bin: &PathBuf,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
    timeout: Duration,
) -> Outcome {
    let dir = tempdir();
    let serial = dir.join("serial.log");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .envs(env.iter().copied())
        .arg("--serial")
        .arg(&serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Proc::spawn(&mut cmd, false).expect("spawn fugu");
    // Read stderr while it runs: a chatty fugu must not block on a full pipe.
    let reader = child.take_stderr().map(|mut e| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let (status, ended) = match child
        .wait(timeout, Duration::from_millis(20), None)
        .expect("wait")
    {
        Waited::Exited(s) => {
            use std::os::unix::process::ExitStatusExt;
            let ended = match s.signal() {
                Some(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
                None => String::new(),
            };
            (s.code(), ended)
        }
        Waited::TimedOut => (None, format!("still running after {timeout:?}: killed")),
        Waited::Interrupted => (None, "interrupted".to_string()),
    };
    let stderr = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    let serial = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        status,
        ended,
        serial,
        stderr,
    }
}

/// A fresh private directory under the system temp dir.
pub fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "fugu-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A test whose prerequisites are missing. Under `cargo xtask test` (which sets
/// FUGU_REQUIRE_ALL=1 after installing every prerequisite) this fails the test: nothing is
/// reported as passed that did not run. Run by hand, it prints SKIP and the reason.
pub fn unmet(reason: &str) {
    if std::env::var_os("FUGU_REQUIRE_ALL").is_some() {
        panic!("prerequisite missing under cargo xtask test: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// The host side of the tap: on a thread of its own, in network namespace `ns`, wait for the
/// guest's frame (type 0x88b5, "fugu-guest-frame") on `ifname` for up to `wait`, answer it,
/// and return the guest's MAC. Returns once the responder listens, so that the guest started
/// next cannot send its frame before (used with the virtnet guests and the boot programs).
pub fn frame_responder(
    ns: &str,
    ifname: &str,
    wait: Duration,
) -> std::thread::JoinHandle<Result<[u8; 6], String>> {
    let (ns, ifname) = (ns.to_string(), ifname.to_string());
    let (ready, listening) = std::sync::mpsc::channel();
    let host = std::thread::spawn(move || {
        fugu_common::frame::respond(&ns, &ifname, wait, None, Some(ready))
            .map_err(|e| e.to_string())
    });
    // A responder that cannot listen drops `ready`; its error comes from join().
    let _ = listening.recv_timeout(Duration::from_secs(30));
    host
}

/// Start a Python program (`python3 -c program args...`) that serves on loopback and prints
/// its port on its first line; returns the child and the port. Panics with the line when the
/// first line is not a port.
pub fn python_server(
    program: &str,
    args: &[&std::ffi::OsStr],
    what: &str,
) -> (std::process::Child, u16) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    match line.trim().parse() {
        Ok(port) => (child, port),
        Err(_) => {
            let _ = child.kill();
            panic!("the {what} server did not start: {line:?}")
        }
    }
}

/// Publish a tree with one image, "demo" (kind bios-disk: one disk of `size` pseudo-random
/// bytes) into `dir` (`index.json` and `demo/disk.img`); returns the disk's bytes.
pub fn publish_demo_image(dir: &std::path::Path, size: u32) -> Vec<u8> {
    let data: Vec<u8> = (0u32..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    std::fs::create_dir_all(dir.join("demo")).expect("create the demo folder");
    std::fs::write(dir.join("demo/disk.img"), &data).expect("write the demo disk");
    let index = format!(
        r#"{{"format": "fugu-image-index", "format_version": 1,
           "created": "2026-01-01T00:00:00Z", "images": [
           {{"name": "demo", "arch": "amd64", "kind": "bios-disk", "description": "",
             "revision": 1, "created": "2026-01-01T00:00:00Z", "min_fugu_version": "0.1.0",
             "cmdline": "", "files": [{{"role": "disk", "path": "demo/disk.img",
             "size": {}, "sha256": "{}", "compression": "none"}}],
             "provenance": {{"recipe": "images/demo.image", "recipe_sha256": "",
             "packages": []}}}}]}}"#,
        data.len(),
        fugu_common::digest::sha256_bytes(&data)
    );
    std::fs::write(dir.join("index.json"), index).expect("write the index");
    data
}

/// The words of the line `name` ("Uid", "CapEff", ...) in /proc/`pid`/status: empty when the
/// process or the line is not there.
pub fn proc_status_field(pid: impl std::fmt::Display, name: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let prefix = format!("{name}:");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}
