//! Who is on the other end of the control socket, and what they may do.
//!
//! The socket is mode 0660, owned by root and the daemon's group (`fugu`): the kernel lets
//! only root and that group's members connect. fugud then reads the peer's credentials
//! (SO_PEERCRED, and its supplementary groups from /proc) and decides per request:
//! - root may do everything;
//! - the owner of a VM (its `owner` user, or a member of its `owner_group`) may start,
//!   stop, pause, unpause it and attach to its console;
//! - any member of the socket's group may read the status of every VM;
//! - everything else is refused (403) and logged: starting a VM with options (it runs as
//!   root with the files it names), reload, forgetting a VM.

use std::os::fd::AsRawFd;

/// The credentials of a connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /proc/PID/status; empty when unreadable).
    pub groups: Vec<u32>,
}

impl Peer {
    /// The peer of a connected Unix stream socket.
    pub fn of(sock: &impl AsRawFd) -> std::io::Result<Peer> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
            .map_err(std::io::Error::other)?;
        // SAFETY: SO_PEERCRED writes a ucred of at most `len` bytes into `cred`.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let groups = std::fs::read_to_string(format!("/proc/{}/status", cred.pid))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
            .unwrap_or_default();
        Ok(Peer {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
            groups,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// "uid 1000 (alice)" for messages and the log.
    pub fn describe(&self) -> String {
        match user_name(self.uid) {
            Some(n) => format!("{n} (uid {}, pid {})", self.uid, self.pid),
            None => format!("uid {} (pid {})", self.uid, self.pid),
        }
    }
}

/// Whether `peer` may control (start, stop, pause, attach to) a VM with these owners.
pub fn may_control(peer: &Peer, owner_uid: Option<u32>, owner_gid: Option<u32>) -> bool {
    peer.is_root() || owner_uid == Some(peer.uid) || owner_gid.is_some_and(|g| peer.in_group(g))
}

/// The name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: getpwuid_r writes into `pw` and `buf` (with its length) only and sets `res` to
    // null or `pw`; pw_name then points into `buf`, a NUL-terminated string.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res);
        if res.is_null() || pw.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_root_may_control() {
        let p = |uid, gid, groups: &[u32]| Peer {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        };
        assert!(may_control(&p(0, 0, &[]), None, None));
        assert!(may_control(&p(1000, 1000, &[]), Some(1000), None));
        assert!(may_control(&p(1001, 1001, &[50]), Some(1000), Some(50)));
        assert!(may_control(&p(1001, 50, &[]), None, Some(50)));
        assert!(!may_control(&p(1001, 1001, &[51]), Some(1000), Some(50)));
        assert!(!may_control(&p(1001, 1001, &[]), None, None));
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        assert_eq!(p.pid, i32::try_from(std::process::id()).unwrap());
        // SAFETY: getuid cannot fail.
        assert_eq!(p.uid, unsafe { libc::getuid() });
    }
}
