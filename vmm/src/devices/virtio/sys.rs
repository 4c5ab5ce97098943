//! Small OS helpers the device models share: eventfds and poll, over libc (every host).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A Linux eventfd: a counter that wakes whoever polls it.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(EventFd(self.0.try_clone()?))
    }

    /// Add one to the counter (wakes pollers). Never blocks.
    pub fn signal(&self) {
        let v: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64. A full counter (EAGAIN) already wakes.
        unsafe { libc::write(self.0.as_raw_fd(), &v as *const u64 as *const _, 8) };
    }

    /// Read and clear the counter; 0 when it was not signalled.
    pub fn drain(&self) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a live u64; the fd is non-blocking.
        let r = unsafe { libc::read(self.0.as_raw_fd(), &mut v as *mut u64 as *mut _, 8) };
        if r == 8 {
            v
        } else {
            0
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Wait until one of `fds` (with their `events`) is ready; returns the `revents` per fd.
/// Retries on EINTR; `timeout_ms` < 0 waits for ever.
pub fn poll(fds: &[(RawFd, i16)], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `p` is a live array of `p.len()` pollfd structs.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(p.iter().map(|x| x.revents).collect());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_counts_and_wakes_poll() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.drain(), 0);
        assert_eq!(poll(&[(e.as_raw_fd(), libc::POLLIN)], 0).unwrap(), vec![0]);
        e.signal();
        e.try_clone().unwrap().signal();
        assert_eq!(
            poll(&[(e.as_raw_fd(), libc::POLLIN)], -1).unwrap(),
            vec![libc::POLLIN]
        );
        assert_eq!(e.drain(), 2);
    }
}
