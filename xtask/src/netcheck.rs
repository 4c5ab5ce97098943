//! The host side of the matrix's tiny virtio-net check: a private network namespace holding a
//! tap for fugu, and a responder on that tap that waits for the guest's Ethernet frame (type
//! 0x88b5, payload "fugu-guest-frame") and answers it ("fugu-host-frame!"). Nothing outside
//! the namespace changes.
//!
//! The Linux virtio-net cells use the same namespace and tap with dnsmasq on the host side
//! instead, serving DHCP (one fixed lease, `NetSetup::dhcp`) for the kernel's `ip=dhcp`; the
//! iPXE cells add TFTP to it, serving the network boot program (`NetSetup::tftp_boot`).

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

pub const ETHERTYPE: u16 = 0x88b5;

/// A namespace with a tap in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSetup {
    pub ns: String,
    pub tap: String,
    /// The MAC fugu gives the guest; the responder checks the frame came from it.
    pub mac: [u8; 6],
    /// With an address: the host side runs dnsmasq on the tap and leases this address (in
    /// `DHCP_NET`) to the guest's MAC, instead of the frame responder.
    pub dhcp: Option<String>,
    /// With a file (and `dhcp`): dnsmasq also serves it over TFTP from its folder and names
    /// it as the DHCP boot file, for PXE.
    pub tftp_boot: Option<std::path::PathBuf>,
    /// With `dhcp`: the frame responder runs on the tap too (the network boot programs'
    /// virtio-net check). Without `dhcp` it always runs.
    pub answer_frames: bool,
}

/// The Linux cells' network: the tap's host side is `DHCP_HOST`/24.
pub const DHCP_HOST: &str = "10.78.0.1";
pub const DHCP_GUEST: &str = "10.78.0.15";

impl NetSetup {
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Create the namespace and its tap (up).
pub fn setup(n: &NetSetup) -> Result<(), String> {
    ip(&["netns", "add", &n.ns])?;
    let r = ip(&[
        "netns", "exec", &n.ns, "ip", "tuntap", "add", &n.tap, "mode", "tap",
    ])
    .and_then(|_| ip(&["netns", "exec", &n.ns, "ip", "link", "set", &n.tap, "up"]));
    if r.is_err() {
        teardown(n);
    }
    r
}

/// The dnsmasq command (run through `ip netns exec NS`) that leases `n.dhcp` to `n.mac` only.
pub fn dnsmasq_args(n: &NetSetup, dir: &std::path::Path) -> Vec<String> {
    let lease = n.dhcp.clone().unwrap_or_default();
    let mut args = vec![
        "netns".into(),
        "exec".into(),
        n.ns.clone(),
        "dnsmasq".into(),
        "--no-daemon".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        format!("--interface={}", n.tap),
        "--bind-interfaces".into(),
        "--leasefile-ro".into(),
        format!("--dhcp-range={lease},{lease},255.255.255.0,1h"),
        format!("--dhcp-host={},{lease}", n.mac_text()),
        format!(
            "--pid-file={}",
            dir.join(format!("{}.dnsmasq.pid", n.ns)).display()
        ),
    ];
    if let Some(file) = &n.tftp_boot {
        let root = file.parent().unwrap_or(std::path::Path::new("."));
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        args.push("--enable-tftp".into());
        args.push(format!("--tftp-root={}", root.display()));
        args.push(format!("--dhcp-boot={name}"));
    }
    args
}

/// Give the tap its host address and start dnsmasq on it (the caller kills the child).
pub fn start_dnsmasq(
    n: &NetSetup,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> Result<std::process::Child, String> {
    ip(&[
        "netns",
        "exec",
        &n.ns,
        "ip",
        "addr",
        "add",
        &format!("{DHCP_HOST}/24"),
        "dev",
        &n.tap,
    ])?;
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new("ip")
        .args(dnsmasq_args(n, dir))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start dnsmasq: {e}"))
}

pub fn teardown(n: &NetSetup) {
    let _ = ip(&["netns", "del", &n.ns]);
}

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
    fn setsockopt(fd: i32, level: i32, name: i32, val: *const std::ffi::c_long, len: u32) -> i32;
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
    fn send(fd: i32, buf: *const u8, len: usize, flags: i32) -> isize;
    fn if_nametoindex(name: *const std::ffi::c_char) -> u32;
    fn close(fd: i32) -> i32;
}

/// The answer to a guest frame `f` (Ethernet header first): addressed back to its sender.
pub fn reply_to(f: &[u8]) -> Option<([u8; 6], Vec<u8>)> {
    if f.len() < 30 || f[12..14] != ETHERTYPE.to_be_bytes() || &f[14..30] != b"fugu-guest-frame" {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[6..12]);
    let mut reply = mac.to_vec();
    reply.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
    reply.extend_from_slice(b"fugu-host-frame!");
    reply.resize(60, 0);
    Some((mac, reply))
}

/// Run in a thread of its own (it moves that thread into the namespace): answer the guest's
/// first frame and return its source MAC; give up when `stop` is set.
pub fn respond(n: &NetSetup, stop: &AtomicBool) -> Result<[u8; 6], String> {
    const AF_PACKET: i32 = 17;
    const SOCK_RAW: i32 = 3;
    const SOL_SOCKET: i32 = 1;
    const SO_RCVTIMEO: i32 = 20;
    const CLONE_NEWNET: i32 = 0x4000_0000;
    let nsfile = std::fs::File::open(format!("/run/netns/{}", n.ns))
        .map_err(|e| format!("/run/netns/{}: {e}", n.ns))?;
    let name = std::ffi::CString::new(n.tap.as_str()).map_err(|e| e.to_string())?;
    let err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: FFI calls with live, correctly sized arguments; setns changes only this thread's
    // namespace, and the socket is closed before returning.
    unsafe {
        if setns(nsfile.as_raw_fd(), CLONE_NEWNET) != 0 {
            return Err(err("setns"));
        }
        let fd = socket(AF_PACKET, SOCK_RAW, ETHERTYPE.to_be() as i32);
        if fd < 0 {
            return Err(err("socket(AF_PACKET)"));
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
                return Err(err("bind"));
            }
            // Wake up every 200 ms to look at `stop`.
            let tv: [std::ffi::c_long; 2] = [0, 200_000];
            setsockopt(
                fd,
                SOL_SOCKET,
                SO_RCVTIMEO,
                tv.as_ptr(),
                std::mem::size_of_val(&tv) as u32,
            );
            let mut b = [0u8; 2048];
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Err("no frame from the guest reached the host side of the tap".into());
                }
                let got = recv(fd, b.as_mut_ptr(), b.len(), 0);
                if got < 0 {
                    let e = std::io::Error::last_os_error();
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) {
                        continue;
                    }
                    return Err(format!("recv: {e}"));
                }
                if let Some((mac, reply)) = reply_to(&b[..got as usize]) {
                    if send(fd, reply.as_ptr(), reply.len(), 0) != reply.len() as isize {
                        return Err(err("send"));
                    }
                    return Ok(mac);
                }
            }
        })();
        close(fd);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_the_guest_frame() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
        f.extend_from_slice(&ETHERTYPE.to_be_bytes());
        f.extend_from_slice(b"fugu-guest-frame");
        let (mac, reply) = reply_to(&f).unwrap();
        assert_eq!(mac, [0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(&reply[..6], &mac);
        assert_eq!(&reply[14..30], b"fugu-host-frame!");
        assert_eq!(reply.len(), 60);
        f[14] = b'x';
        assert!(reply_to(&f).is_none());
        assert!(reply_to(&f[..20]).is_none());
        let n = NetSetup {
            ns: "x".into(),
            tap: "t".into(),
            mac: [0x52, 0x54, 0, 0xe2, 0, 0x0a],
            dhcp: Some(DHCP_GUEST.into()),
            tftp_boot: None,
            answer_frames: false,
        };
        assert_eq!(n.mac_text(), "52:54:00:e2:00:0a");
        let a = dnsmasq_args(&n, std::path::Path::new("/d"));
        assert_eq!(&a[..4], ["netns", "exec", "x", "dnsmasq"]);
        assert!(a.contains(&"--dhcp-host=52:54:00:e2:00:0a,10.78.0.15".to_string()));
        assert!(a.contains(&"--interface=t".to_string()));
        assert!(!a.iter().any(|x| x.contains("tftp")));
    }
}
