//! Small OS helpers the device models share: eventfds, poll and vectored file I/O, over libc
//! (every host).

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
    // A few descriptors; nfds_t is 32 bits on i686.
    let n = libc::nfds_t::try_from(p.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors to poll"))?;
    loop {
        // SAFETY: `p` is a live array of `n` pollfd structs.
        let r = unsafe { libc::poll(p.as_mut_ptr(), n, timeout_ms) };
        if r >= 0 {
            return Ok(p.iter().map(|x| x.revents).collect());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// The most iovecs one preadv/pwritev takes (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Which way [`file_io_vectored`] moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// File → buffers (preadv).
    Read,
    /// Buffers → file (pwritev).
    Write,
}

/// Move every byte of `iov` from or to `fd` at `off`, resuming after short transfers and
/// signals; end of file before the last byte is `UnexpectedEof`. `iov` is consumed (its
/// entries are advanced). Each entry must describe memory that stays mapped for the call.
pub fn file_io_vectored(
    fd: RawFd,
    dir: Direction,
    iov: &mut [libc::iovec],
    mut off: u64,
) -> io::Result<()> {
    let mut i = 0;
    while i < iov.len() && iov[i].iov_len == 0 {
        i += 1;
    }
    while i < iov.len() {
        #[allow(clippy::cast_possible_truncation)] // at most IOV_MAX (1024)
        let count = (iov.len() - i).min(IOV_MAX) as libc::c_int;
        let at = i64::try_from(off)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond 2^63"))?;
        let list = iov[i..].as_ptr();
        let one = iov[i];
        // SAFETY: `list` points at `count` initialized iovecs (`one` is the first), each
        // describing memory the caller keeps mapped; the kernel checks that it is accessible
        // (EFAULT otherwise). One buffer takes pread/pwrite: the kernel's cheaper path.
        let r = unsafe {
            match (dir, count) {
                (Direction::Read, 1) => libc::pread64(fd, one.iov_base, one.iov_len, at),
                (Direction::Write, 1) => libc::pwrite64(fd, one.iov_base, one.iov_len, at),
                (Direction::Read, _) => libc::preadv64(fd, list, count, at),
                (Direction::Write, _) => libc::pwritev64(fd, list, count, at),
            }
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut n = r as usize;
        off += n as u64;
        while n > 0 && i < iov.len() {
            let v = &mut iov[i];
            if n >= v.iov_len {
                n -= v.iov_len;
                i += 1;
            } else {
                v.iov_base = (v.iov_base as *mut u8).wrapping_add(n) as *mut libc::c_void;
                v.iov_len -= n;
                n = 0;
            }
        }
        while i < iov.len() && iov[i].iov_len == 0 {
            i += 1;
        }
    }
    Ok(())
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

    fn file(bytes: &[u8]) -> std::fs::File {
        use std::io::Write;
        let mut f = tempfile_in_tmp();
        f.write_all(bytes).unwrap();
        f
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let p = std::env::temp_dir().join(format!(
            "fugu-sys-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    fn iov(b: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }
    }

    #[test]
    fn vectored_io_fills_every_buffer_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let f = file(&data);
        let (mut a, mut b, mut c) = ([0u8; 7], [0u8; 0], [0u8; 1000]);
        let mut v = [iov(&mut a), iov(&mut b), iov(&mut c)];
        file_io_vectored(f.as_raw_fd(), Direction::Read, &mut v, 100).unwrap();
        assert_eq!(a[..], data[100..107]);
        assert_eq!(c[..], data[107..1107]);
        // One buffer takes the pread path; writing back lands where asked.
        let mut one = [iov(&mut c)];
        file_io_vectored(f.as_raw_fd(), Direction::Write, &mut one, 2000).unwrap();
        let mut back = [0u8; 1000];
        let mut v = [iov(&mut back)];
        file_io_vectored(f.as_raw_fd(), Direction::Read, &mut v, 2000).unwrap();
        assert_eq!(back[..], data[107..1107]);
    }

    #[test]
    fn more_buffers_than_one_call_takes() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let f = file(&data);
        let mut bytes = vec![0u8; 2500];
        let mut v: Vec<libc::iovec> = bytes.chunks_mut(1).map(iov).collect();
        assert!(v.len() > IOV_MAX);
        file_io_vectored(f.as_raw_fd(), Direction::Read, &mut v, 0).unwrap();
        assert_eq!(bytes, data);
    }

    #[test]
    fn end_of_file_before_the_last_byte_is_an_error() {
        let f = file(&[1u8; 100]);
        let mut a = [0u8; 200];
        let mut v = [iov(&mut a)];
        let e = file_io_vectored(f.as_raw_fd(), Direction::Read, &mut v, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut v = [iov(&mut a)];
        let e = file_io_vectored(f.as_raw_fd(), Direction::Read, &mut v, u64::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
