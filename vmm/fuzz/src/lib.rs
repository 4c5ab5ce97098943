//! What fugu's fuzz targets share: guest memory on each backend, a byte reader for the
//! operations a target replays, stand-ins for the interrupt controller, and scratch files.
//! The targets themselves are in `fuzz_targets/`; `cargo xtask fuzz` builds and runs them
//! (docs/fuzzing.md).

use fugu::fuzzing::pci::{InterruptController, IntxPending, IntxRaise, IrqError};
use fugu::fuzzing::{Backend, GuestMemory};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Guest RAM of `size` bytes at 0 on every memory backend this host builds (the in-house
/// one, and vm-memory on x86_64 hosts): fresh mappings, so each input starts from zeroes.
pub fn memories(size: u64) -> Vec<Arc<dyn GuestMemory>> {
    #[allow(unused_mut)]
    let mut v = vec![Backend::Portable
        .memory(&[(0, size)])
        .expect("allocate guest RAM")];
    #[cfg(target_arch = "x86_64")]
    v.push(
        Backend::RustVmm
            .memory(&[(0, size)])
            .expect("allocate guest RAM"),
    );
    v
}

/// Guest RAM of `size` bytes at 0, in-house backend, holding `contents` from 0.
pub fn memory_with(size: u64, contents: &[u8]) -> Arc<dyn GuestMemory> {
    let mem = Backend::Portable
        .memory(&[(0, size)])
        .expect("allocate guest RAM");
    let n = contents.len().min(size as usize);
    mem.write(0, &contents[..n]).expect("fill guest RAM");
    mem
}

/// Reads the operations a target replays from the front of its input; past the end every
/// read gives zeroes, so any input is a valid program.
pub struct Ops<'a> {
    data: &'a [u8],
}

impl<'a> Ops<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Ops { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Take `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let s = self.bytes(2);
        b[..s.len()].copy_from_slice(s);
        u16::from_le_bytes(b)
    }
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let s = self.bytes(4);
        b[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(b)
    }
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }
    /// An access width: 1, 2, 4 or 8 bytes.
    pub fn width(&mut self) -> usize {
        1 << (self.u8() & 3)
    }
}

/// An interrupt controller that routes nothing and refuses routes after a few, so that the
/// allocation failure paths run too.
#[derive(Default)]
pub struct NoIrq {
    next: AtomicU32,
}

impl InterruptController for NoIrq {
    fn msi_alloc(&self) -> Result<u32, IrqError> {
        let g = self.next.fetch_add(1, Ordering::SeqCst);
        if g < 6 {
            Ok(24 + g)
        } else {
            Err(IrqError::OutOfRoutes)
        }
    }
    fn msi_route(&self, gsi: u32, _addr: u64, _data: u32) -> Result<(), IrqError> {
        if gsi % 5 == 4 {
            // What KVM answers when it refuses a routing table.
            Err(IrqError::Kvm(fugu::fuzzing::pci::KvmError::from_errno(
                "KVM_SET_GSI_ROUTING",
                libc::EINVAL,
            )))
        } else {
            Ok(())
        }
    }
    fn msi_fire(&self, _gsi: u32) {}
    fn intx(&self, _gsi: u32, _pending: IntxPending) -> Result<IntxRaise, IrqError> {
        Ok(Arc::new(|| {}))
    }
}

/// An anonymous in-memory file (memfd) holding `contents`: image files without a disk.
pub fn memfd(contents: &[u8]) -> File {
    use std::os::unix::fs::FileExt;
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"fugu-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor we just created and own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.write_all_at(contents, 0).expect("fill memfd");
    f
}

/// A scratch path under the system's temporary directory, unique to this process.
pub fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fugu-fuzz-{}-{name}", std::process::id()))
}
