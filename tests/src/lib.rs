//! Helpers for fugu's end-to-end tests: find both fugu builds and the tiny guests, run a VM
//! with a timeout, and capture its serial console.
//!
//! `cargo xtask test` builds everything first and passes the paths in the environment
//! (FUGU_BIN_X86_64, FUGU_BIN_I686, FUGU_GUESTS_DIR).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Exit status, or None when it had to be killed at the timeout.
    pub status: Option<i32>,
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
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .arg("--serial")
        .arg(&serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fugu");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let serial = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        status,
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

/// The host side of the tap: in network namespace `ns`, wait for the guest's frame (type
/// 0x88b5, "fugu-guest-frame") on `ifname` for up to `wait`, answer it, and return the
/// guest's MAC. Used with the virtnet guests and the network boot programs.
pub fn frame_responder(ns: &str, ifname: &str, wait: Duration) -> Result<[u8; 6], String> {
    use std::os::fd::AsRawFd;
    const AF_PACKET: i32 = 17;
    const SOCK_RAW: i32 = 3;
    const SOL_SOCKET: i32 = 1;
    const SO_RCVTIMEO: i32 = 20;
    const CLONE_NEWNET: i32 = 0x4000_0000;
    const ETHERTYPE: u16 = 0x88b5;
    #[repr(C)]
    struct SockaddrLl {
        family: u16,
        protocol: u16,
        ifindex: i32,
        hatype: u16,
        pkttype: u8,
        halen: u8,
        addr: [u8; 8],
    }
    extern "C" {
        fn setns(fd: i32, nstype: i32) -> i32;
        fn socket(domain: i32, ty: i32, proto: i32) -> i32;
        fn bind(fd: i32, addr: *const SockaddrLl, len: u32) -> i32;
        fn setsockopt(fd: i32, level: i32, name: i32, val: *const i64, len: u32) -> i32;
        fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
        fn send(fd: i32, buf: *const u8, len: usize, flags: i32) -> isize;
        fn if_nametoindex(name: *const std::ffi::c_char) -> u32;
        fn close(fd: i32) -> i32;
    }
    let nsfile = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: FFI calls with live, correctly sized arguments; this thread alone changes its
    // network namespace, and the socket is closed before returning.
    unsafe {
        if setns(nsfile.as_raw_fd(), CLONE_NEWNET) != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        let fd = socket(AF_PACKET, SOCK_RAW, ETHERTYPE.to_be() as i32);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let sll = SockaddrLl {
            family: AF_PACKET as u16,
            protocol: ETHERTYPE.to_be(),
            ifindex: if_nametoindex(name.as_ptr()) as i32,
            hatype: 0,
            pkttype: 0,
            halen: 0,
            addr: [0; 8],
        };
        let r = (|| {
            if bind(fd, &sll, std::mem::size_of::<SockaddrLl>() as u32) != 0 {
                return Err(format!("bind: {}", std::io::Error::last_os_error()));
            }
            let tv: [i64; 2] = [wait.as_secs() as i64, 0];
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv.as_ptr(), 16);
            let mut b = [0u8; 2048];
            loop {
                let n = recv(fd, b.as_mut_ptr(), b.len(), 0);
                if n < 0 {
                    return Err(format!(
                        "no frame from the guest: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                if n >= 30 && &b[14..30] == b"fugu-guest-frame" {
                    break;
                }
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&b[6..12]);
            let mut reply = mac.to_vec();
            reply.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
            reply.extend_from_slice(b"fugu-host-frame!");
            reply.resize(60, 0);
            if send(fd, reply.as_ptr(), reply.len(), 0) != reply.len() as isize {
                return Err(format!("send: {}", std::io::Error::last_os_error()));
            }
            Ok(mac)
        })();
        close(fd);
        r
    }
}
