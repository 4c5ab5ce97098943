//! The host side of the matrix's tiny virtio-net check: a private network namespace holding a
//! tap for fugu, and a responder on that tap that waits for the guest's Ethernet frame (type
//! 0x88b5, payload "fugu-guest-frame") and answers it ("fugu-host-frame!"). Nothing outside
//! the namespace changes.
//!
//! The Linux virtio-net cells use the same namespace and tap with dnsmasq on the host side
//! instead, serving DHCP (one fixed lease, `NetSetup::dhcp`) for the kernel's `ip=dhcp`; the
//! iPXE cells add TFTP to it, serving the network boot program (`NetSetup::tftp_boot`), and
//! IPv6 router advertisements (`PXE_RA_PREFIX`): iPXE configures IPv4 and IPv6 together and
//! reports the interface configured only once both are done, so on a network without an IPv6
//! router it waits out its router-solicitation timeout (measured on kvm_pvm, 3 December: the
//! DHCP ACK came 1.5 s after iPXE's first DISCOVER, then 56 s passed before "Configuring ...
//! ok"; with the advertisements, 10 s in all). That wait is the network's, not the VMM's.
//! The offers also tell iPXE that no ProxyDHCP server answers here, so it takes the first
//! offer at once (dnsmasq logged two DISCOVER/OFFER rounds, 3 s, without it).

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

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
/// The network boot's IPv6 prefix (unique local, /64): the tap's host side holds `::1` in it
/// and dnsmasq advertises it, so iPXE's IPv6 configuration ends at once.
pub const PXE_RA_PREFIX: &str = "fd00:78::";

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
        // iPXE's "no ProxyDHCP here" option (175.176 = 1): without it iPXE waits about 2 s
        // after the first offer for ProxyDHCP offers that this network never sends.
        args.push("--dhcp-option=encap:175,176,1b".into());
        args.push("--enable-ra".into());
        args.push(format!("--dhcp-range={PXE_RA_PREFIX},ra-only"));
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
    if n.tftp_boot.is_some() {
        // `nodad`: the address is usable at once, so dnsmasq's first advertisement is not
        // held back by duplicate address detection.
        ip(&[
            "netns",
            "exec",
            &n.ns,
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{PXE_RA_PREFIX}1/64"),
            "dev",
            &n.tap,
            "nodad",
        ])?;
    }
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

/// Run on a thread of its own (it moves that thread into the namespace): answer the guest's
/// first frame and return its source MAC; give up when `stop` is set. `ready` hears once the
/// responder listens: boot the guest only then.
pub fn respond(
    n: &NetSetup,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<[u8; 6], String> {
    // No deadline of its own: the cell's boot timeout sets `stop`.
    fugu_common::frame::respond(&n.ns, &n.tap, Duration::MAX, Some(stop), Some(ready))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_and_dnsmasq_args() {
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
        assert!(!a.iter().any(|x| x == "--enable-ra"), "{a:?}");
    }
}
