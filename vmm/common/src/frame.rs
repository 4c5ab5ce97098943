//! The test-frame protocol of the virtio-net checks, and its host-side responder.
//!
//! The tiny virtio-net guests and the network boot programs send one Ethernet frame (type
//! 0x88b5, payload "fugu-guest-frame"); the host side of their tap answers it
//! ("fugu-host-frame!") back to the sender. The matrix and the end-to-end tests both run
//! this responder, in the network namespace that holds the tap; `cargo xtask bench` runs
//! [`echo`], which answers every frame, for the virtio-net benchmark guest.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const ETHERTYPE: u16 = 0x88b5;
pub const GUEST_PAYLOAD: &[u8; 16] = b"fugu-guest-frame";
pub const HOST_PAYLOAD: &[u8; 16] = b"fugu-host-frame!";

/// The answer to a guest frame `f` (Ethernet header first): its source MAC and the reply,
/// addressed back to it. None for any other frame.
pub fn reply_to(f: &[u8]) -> Option<([u8; 6], Vec<u8>)> {
    if f.len() < 30 || f[12..14] != ETHERTYPE.to_be_bytes() || &f[14..30] != GUEST_PAYLOAD {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[6..12]);
    let mut reply = mac.to_vec();
    reply.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
    reply.extend_from_slice(HOST_PAYLOAD);
    // As long as the guest's frame (the benchmark sends full-size ones), at least the
    // minimum Ethernet frame without its FCS.
    reply.resize(f.len().clamp(60, 1514), 0);
    Some((mac, reply))
}

/// Why the responder could not listen or answer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The network namespace `ns` (a name under /run/netns) cannot be opened.
    #[error("/run/netns/{ns}: {source}")]
    Namespace {
        ns: String,
        #[source]
        source: io::Error,
    },
    /// An interface name with a NUL byte.
    #[error("interface name {0:?} has a NUL byte")]
    BadInterface(String),
    /// A system call failed (`call`: its name).
    #[error("{call}: {source}")]
    Os {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// A size or index that does not fit the socket API's type.
    #[error(transparent)]
    Range(#[from] std::num::TryFromIntError),
    /// [`respond`] gave up.
    #[error("no frame from the guest reached the host side of the tap")]
    NoFrame,
}

fn os_err(call: &'static str) -> FrameError {
    FrameError::Os {
        call,
        source: io::Error::last_os_error(),
    }
}

/// Answer the guest's first test frame on `ifname` in network namespace `ns` (a name under
/// /run/netns) and return its source MAC. Gives up after `wait`, or as soon as `stop` is set.
///
/// Run it on a thread of its own: it moves that thread into the namespace for good.
pub fn respond(
    ns: &str,
    ifname: &str,
    wait: Duration,
    stop: Option<&AtomicBool>,
    ready: Option<std::sync::mpsc::Sender<()>>,
) -> Result<[u8; 6], FrameError> {
    let fd = open_raw(ns, ifname)?;
    // The socket is bound: the caller may start the guest now. A frame sent before this point
    // would be lost (a tiny guest sends its frame within milliseconds of its start).
    if let Some(r) = ready {
        let _ = r.send(());
    }
    let mut first = None;
    serve(&fd, wait, stop, &mut |mac| {
        first = Some(mac);
        false
    })?;
    first.ok_or(FrameError::NoFrame)
}

/// Answer every test frame on `ifname` in namespace `ns` until `stop` is set; returns how
/// many were answered. Run it on a thread of its own, as [`respond`].
pub fn echo(ns: &str, ifname: &str, stop: &AtomicBool) -> Result<u64, FrameError> {
    let fd = open_raw(ns, ifname)?;
    let mut n = 0u64;
    serve(&fd, Duration::MAX, Some(stop), &mut |_| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// Move this thread into namespace `ns` and open a raw socket for the test frame type on
/// `ifname` there, with a 200 ms receive timeout (to look at the stop flag).
fn open_raw(ns: &str, ifname: &str) -> Result<OwnedFd, FrameError> {
    let nsfile = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|source| {
        FrameError::Namespace {
            ns: ns.to_string(),
            source,
        }
    })?;
    let name = CString::new(ifname).map_err(|_| FrameError::BadInterface(ifname.to_string()))?;
    // SAFETY: setns on a namespace file this function holds open; it changes only this
    // thread's network namespace.
    if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(os_err("setns"));
    }
    let proto = ETHERTYPE.to_be();
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if raw < 0 {
        return Err(os_err("socket(AF_PACKET)"));
    }
    // SAFETY: a new descriptor nothing else owns; OwnedFd closes it on every return.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: if_nametoindex reads the NUL-terminated name it is given.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::c_ushort::try_from(libc::AF_PACKET)?;
    sll.sll_protocol = proto;
    sll.sll_ifindex = libc::c_int::try_from(ifindex)?;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())?;
    // SAFETY: bind with a sockaddr_ll of the length given, both live for the call.
    if unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sll).cast(), len) } != 0 {
        return Err(os_err("bind"));
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    let tvlen = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>())?;
    // SAFETY: setsockopt reads a timeval of the length given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            tvlen,
        )
    };
    Ok(fd)
}

/// Answer test frames on `fd`, calling `answered` with each sender's MAC, until it returns
/// false (Ok), `stop` is set or `wait` passes (Ok as well: the caller judges what it got).
fn serve(
    fd: &OwnedFd,
    wait: Duration,
    stop: Option<&AtomicBool>,
    answered: &mut dyn FnMut([u8; 6]) -> bool,
) -> Result<(), FrameError> {
    // A wait too long to add (Duration::MAX) is no deadline: `stop` ends it.
    let deadline = Instant::now().checked_add(wait);
    let mut b = [0u8; 2048];
    loop {
        if stop.is_some_and(|s| s.load(Ordering::SeqCst))
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Ok(());
        }
        // SAFETY: recv writes at most b.len() bytes into b.
        let got = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
        let Ok(got) = usize::try_from(got) else {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                continue;
            }
            return Err(FrameError::Os {
                call: "recv",
                source: e,
            });
        };
        if let Some((mac, reply)) = b.get(..got).and_then(reply_to) {
            // SAFETY: send reads reply.len() bytes from reply.
            let sent = unsafe { libc::send(fd.as_raw_fd(), reply.as_ptr().cast(), reply.len(), 0) };
            if usize::try_from(sent).ok() != Some(reply.len()) {
                return Err(os_err("send"));
            }
            if !answered(mac) {
                return Ok(());
            }
        }
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
        f.extend_from_slice(GUEST_PAYLOAD);
        let (mac, reply) = reply_to(&f).unwrap();
        assert_eq!(mac, [0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(&reply[..6], &mac);
        assert_eq!(&reply[12..14], &ETHERTYPE.to_be_bytes());
        assert_eq!(&reply[14..30], HOST_PAYLOAD);
        assert_eq!(reply.len(), 60);
        // A full-size frame gets a full-size answer.
        f.resize(1514, 0);
        assert_eq!(reply_to(&f).unwrap().1.len(), 1514);
        f.resize(3000, 0);
        assert_eq!(reply_to(&f).unwrap().1.len(), 1514);
        f[14] = b'x';
        assert!(reply_to(&f).is_none());
        assert!(reply_to(&f[..20]).is_none());
    }

    #[test]
    fn a_missing_namespace_is_an_error_not_a_hang() {
        let e = respond("fugu-no-such-ns", "x", Duration::from_secs(1), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/run/netns/fugu-no-such-ns"), "{e}");
    }
}
