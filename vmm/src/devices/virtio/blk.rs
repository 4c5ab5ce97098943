//! virtio-blk on a raw or qcow2 image (blk/image.rs, blk/qcow2.rs): read, write, flush,
//! get-id, discard and write-zeroes.
//!
//! Requests run on the device's worker thread, woken by the queue's kick eventfd. A
//! writable image is locked exclusively (a shared lock for `ro`), so a second VM gets a
//! clear error instead of corrupting the disk. Every guest buffer is checked before any
//! file I/O. A raw image moves data straight between the file and guest RAM (one
//! preadv/pwritev per request); qcow2 through a bounded bounce buffer. Serving a request
//! allocates nothing and takes no lock (the image is locked once per pass over the ring).

use super::queue::{io, Chain, Desc, QueueError, Virtqueue};
use super::sys::{file_io_vectored, poll, Direction, EventFd};
use super::{ActivateError, Activation, NoSignal, Signal, VirtioDevice, Worker, COMMON_FEATURES};
use crate::memory::GuestMemory;
use std::io::Seek;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_blk::*;

pub mod image;
pub mod qcow2;

pub use image::{Format, UnknownFormat};

pub const SECTOR: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// Segments per request the driver may use (queue size minus header and status).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The most bytes moved per file call.
const CHUNK: usize = 256 << 10;
const MAX_DISCARD_SECTORS: u32 = u32::MAX >> 9;
const MAX_DISCARD_SEG: u32 = 32;

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open disk image {0}: {1}")]
    Open(PathBuf, std::io::Error),
    #[error("disk image {0} is in use by another process (it holds a lock on it): stop the other VM, or open the image read-only (,ro) everywhere")]
    Locked(PathBuf),
    #[error("cannot lock disk image {0}: {1}")]
    Lock(PathBuf, std::io::Error),
    #[error("disk image {0}: {1}")]
    Size(PathBuf, std::io::Error),
    #[error("disk image {p} is not writable ({why}): add ,ro to give it to the guest read-only (--disk {p},ro), or make it writable if the guest should change it", p = .0.display(), why = .1)]
    NotWritable(PathBuf, String),
    #[error("disk image {p} is {len} bytes; a disk holds whole 512-byte sectors: pad it (truncate -s %512 {p}) or check that it is the right file", p = .0.display(), len = .1)]
    PartialSector(PathBuf, u64),
    #[error("disk image {p} is empty: give it a size first (e.g. truncate -s 64M {p})", p = .0.display())]
    Empty(PathBuf),
    #[error("disk image {p} is {what}: give a raw image file or a block device", p = .0.display(), what = .1)]
    NotADisk(PathBuf, &'static str),
    #[error("disk image {p}: {e}", p = .0.display(), e = .1)]
    Image(PathBuf, std::io::Error),
    #[error("disk image {p} was given as format=qcow2 but has no qcow2 header", p = .0.display())]
    NotQcow2(PathBuf),
}

/// An open, locked image (raw or qcow2). The worker thread is the only user of `image`
/// while the VM runs; the mutex makes `Disk` shareable without unsafe code.
pub struct Disk {
    image: Mutex<image::Image>,
    format: Format,
    read_only: bool,
    sectors: u64,
    id: [u8; 20],
}

impl Disk {
    pub fn open(path: &Path, read_only: bool) -> Result<Disk, DiskError> {
        Disk::open_as(path, read_only, None)
    }

    /// Open `path` as `format`, or as the format its header shows when `None` (a qcow2 header
    /// makes it qcow2; `Some(Format::Raw)` gives such a file to the guest as raw bytes).
    pub fn open_as(
        path: &Path,
        read_only: bool,
        format: Option<Format>,
    ) -> Result<Disk, DiskError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        // Root opens a file without any write permission bit for writing all the same: the
        // guest would silently change an image its owner marked read-only. Refuse, as the
        // open would for anyone else.
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if !read_only && meta.file_type().is_file() && mode & 0o222 == 0 {
                return Err(DiskError::NotWritable(
                    path.to_owned(),
                    format!("its mode is {:04o}", mode & 0o7777),
                ));
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EACCES | libc::EPERM | libc::EROFS) if !read_only => {
                    DiskError::NotWritable(path.to_owned(), e.to_string())
                }
                _ => DiskError::Open(path.to_owned(), e),
            })?;
        let ty = file
            .metadata()
            .map_err(|e| DiskError::Size(path.to_owned(), e))?
            .file_type();
        if !ty.is_file() && !ty.is_block_device() {
            return Err(DiskError::NotADisk(
                path.to_owned(),
                if ty.is_dir() {
                    "a directory"
                } else if ty.is_char_device() {
                    "a character device"
                } else {
                    "neither a regular file nor a block device"
                },
            ));
        }
        let op = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DiskError::Locked(path.to_owned())
            } else {
                DiskError::Lock(path.to_owned(), e)
            });
        }
        // The size from the end offset: metadata says 0 for a block device (a loop device,
        // an LVM volume), which would show the guest an empty disk.
        let len = (&file)
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| DiskError::Size(path.to_owned(), e))?;
        if len == 0 {
            return Err(DiskError::Empty(path.to_owned()));
        }
        let detected = image::detect(&file).map_err(|e| DiskError::Size(path.to_owned(), e))?;
        let format = match format {
            Some(Format::Qcow2) if detected != Format::Qcow2 => {
                return Err(DiskError::NotQcow2(path.to_owned()))
            }
            Some(f) => f,
            None => detected,
        };
        if format == Format::Raw && len % SECTOR != 0 {
            return Err(DiskError::PartialSector(path.to_owned(), len));
        }
        let image = image::Image::from_file(file, path, format, !read_only, len, &mut Vec::new())
            .map_err(|e| DiskError::Image(path.to_owned(), e))?;
        let size = image.size();
        if size < SECTOR {
            return Err(DiskError::Empty(path.to_owned()));
        }
        let mut id = [0u8; 20];
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("fugu-{name}");
        let n = name.len().min(20);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Disk {
            image: Mutex::new(image),
            format,
            read_only,
            sectors: size / SECTOR,
            id,
        })
    }

    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The image, for the one request being served (a poisoned lock is still usable: every
    /// image operation leaves the file consistent between calls).
    fn image(&self) -> std::sync::MutexGuard<'_, image::Image> {
        self.image.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The virtio-blk device model.
pub struct Block {
    disk: Arc<Disk>,
    worker: Option<Worker>,
}

impl Block {
    pub fn new(disk: Disk) -> Self {
        Block {
            disk: Arc::new(disk),
            worker: None,
        }
    }
}

fn bit(b: u32) -> u64 {
    1 << b
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        let mut f = COMMON_FEATURES
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | bit(VIRTIO_BLK_F_FLUSH);
        if self.disk.read_only {
            f |= bit(VIRTIO_BLK_F_RO);
        } else {
            f |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        f
    }
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 60];
        c[0..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&const { crate::bits::const_u32(SECTOR) }.to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c[44..48].copy_from_slice(&1u32.to_le_bytes());
        c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c[56] = 1; // write_zeroes_may_unmap
        c
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        self.reset();
        let Activation {
            mem,
            mut queues,
            mut kicks,
            signal,
            ..
        } = a;
        let Some(Some(q)) = queues.pop() else {
            return Err(ActivateError::Queues {
                device: "virtio-blk",
                queues: "request queue",
            });
        };
        let kick = kicks.pop().ok_or(ActivateError::NoKick)?;
        let disk = self.disk.clone();
        self.worker = Some(Worker::spawn("virtio-blk".into(), move |stop| {
            run(disk, mem, q, kick, signal, stop)
        })?);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }
}

fn run(
    disk: Arc<Disk>,
    mem: Arc<dyn GuestMemory>,
    mut q: Box<dyn Virtqueue>,
    kick: EventFd,
    signal: Arc<dyn Signal>,
    stop: EventFd,
) {
    let mut broken = false;
    let mut scratch = Scratch::default();
    loop {
        // Chains may already be waiting (the driver can kick before DRIVER_OK).
        if !broken {
            if let Err(_e) = process_queue(&disk, &*mem, &mut *q, &*signal, &mut scratch) {
                broken = true;
                signal.needs_reset();
            }
        }
        let r = poll(
            &[
                (kick.as_raw_fd(), libc::POLLIN),
                (stop.as_raw_fd(), libc::POLLIN),
            ],
            -1,
        );
        match r {
            Ok(ev) if ev[1] != 0 => return,
            Ok(_) => {
                kick.drain();
            }
            Err(_) => return,
        }
    }
}

/// What a worker keeps from one request to the next, so that serving a request allocates
/// nothing once the buffers have grown to the sizes the driver uses.
#[derive(Default)]
pub struct Scratch {
    chain: Chain,
    /// Host addresses of the request's guest buffers (raw images: preadv/pwritev on them).
    iov: Vec<libc::iovec>,
    /// Bounce buffer for formats that map the bytes (qcow2), at most [`CHUNK`].
    bounce: Vec<u8>,
}

/// Serve every available request, then re-enable notifications; interrupts as asked. The
/// image is locked once per pass, not per request.
pub fn process_queue(
    disk: &Disk,
    mem: &dyn GuestMemory,
    q: &mut dyn Virtqueue,
    signal: &dyn Signal,
    scratch: &mut Scratch,
) -> Result<(), QueueError> {
    let mut image = disk.image();
    loop {
        q.disable_notification()?;
        let mut used = false;
        while q.pop_into(&mut scratch.chain)? {
            let len = handle(disk, &mut image, mem, scratch)?;
            q.add_used(scratch.chain.head, len)?;
            used = true;
        }
        if used && q.needs_notification()? {
            signal.used(0);
        }
        if !q.enable_notification()? {
            return Ok(());
        }
    }
}

/// The request header: type, reserved, sector.
struct Header {
    ty: u32,
    sector: u64,
}

/// Where the status byte goes: the last byte of the last non-empty writable buffer.
fn status_address(mem: &dyn GuestMemory, chain: &Chain) -> Option<u64> {
    let d = chain.descs.iter().rev().find(|d| d.write && d.len > 0)?;
    let at = d.addr.checked_add(d.len as u64 - 1)?;
    mem.contains(at, 1).then_some(at)
}

/// Execute the request in `scratch.chain`; returns the used length. A chain without a
/// writable status byte in guest RAM cannot be answered and is a driver error (the device
/// goes to NEEDS_RESET).
fn handle(
    disk: &Disk,
    image: &mut image::Image,
    mem: &dyn GuestMemory,
    scratch: &mut Scratch,
) -> Result<u32, QueueError> {
    let bad = QueueError::BadChain {
        head: scratch.chain.head,
    };
    let status_at = status_address(mem, &scratch.chain).ok_or(bad.clone())?;
    // The data the device writes ends just before the status byte.
    let data_in = scratch.chain.writable_len() - 1;
    let (status, data_written) = match request(disk, image, mem, scratch, data_in) {
        Ok(n) => (VIRTIO_BLK_S_OK, n),
        Err(s) => (s, 0),
    };
    // VIRTIO_BLK_S_OK, _IOERR or _UNSUPP: a byte.
    mem.write_u8(status_at, crate::bits::lo8(status))
        .map_err(|_| bad)?;
    Ok(u32::try_from(data_written + 1).unwrap_or(u32::MAX))
}

/// The request header at the start of the readable buffers: read in place when the first
/// buffer holds all 16 bytes (what drivers do), gathered across buffers otherwise.
fn read_header(mem: &dyn GuestMemory, descs: &[Desc]) -> Option<Header> {
    let first = descs.iter().find(|d| !d.write)?;
    if first.len >= 16 {
        let ty = u32::from_le_bytes(crate::memory::read_array(mem, first.addr).ok()?);
        let sector = u64::from_le_bytes(crate::memory::read_array(mem, first.addr + 8).ok()?);
        return Some(Header { ty, sector });
    }
    let mut h = [0u8; 16];
    if io::read(mem, descs, 0, &mut h).ok()? != 16 {
        return None;
    }
    Some(Header {
        ty: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        sector: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
    })
}

/// Do the work; the error is the virtio status to report. Ok is the bytes written to
/// the guest before the status byte.
fn request(
    disk: &Disk,
    image: &mut image::Image,
    mem: &dyn GuestMemory,
    scratch: &mut Scratch,
    data_in: u64,
) -> Result<u64, u32> {
    let chain = &scratch.chain;
    let hdr = read_header(mem, &chain.descs).ok_or(VIRTIO_BLK_S_IOERR)?;
    let data_out = chain.readable_len() - 16;
    match hdr.ty {
        VIRTIO_BLK_T_IN => {
            // Reads carry no data to the device: a readable payload is a wrong direction.
            if data_out != 0 || data_in % SECTOR != 0 {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let off = range(disk, hdr.sector, data_in)?;
            transfer(image, mem, scratch, Direction::Read, off, data_in)?;
            Ok(data_in)
        }
        VIRTIO_BLK_T_OUT => {
            if data_in != 0 || data_out % SECTOR != 0 {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            if disk.read_only {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let off = range(disk, hdr.sector, data_out)?;
            transfer(image, mem, scratch, Direction::Write, off, data_out)?;
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            if !disk.read_only {
                image.flush().map_err(|_| VIRTIO_BLK_S_IOERR)?;
            }
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            if data_out != 0 {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let n = usize::try_from(data_in)
                .unwrap_or(usize::MAX)
                .min(disk.id.len());
            io::write(mem, &chain.descs, 0, &disk.id[..n]).map_err(|_| VIRTIO_BLK_S_IOERR)?;
            Ok(n as u64)
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            if disk.read_only {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            if data_in != 0
                || data_out == 0
                || data_out % 16 != 0
                || data_out / 16 > MAX_DISCARD_SEG as u64
            {
                return Err(VIRTIO_BLK_S_UNSUPP);
            }
            let zeroes = hdr.ty == VIRTIO_BLK_T_WRITE_ZEROES;
            for i in 0..data_out / 16 {
                let mut s = [0u8; 16];
                io::read(mem, &chain.descs, 16 + 16 * i, &mut s).map_err(|_| VIRTIO_BLK_S_IOERR)?;
                let sector = u64::from_le_bytes(s[0..8].try_into().unwrap_or_default());
                let count = u32::from_le_bytes([s[8], s[9], s[10], s[11]]) as u64;
                let flags = u32::from_le_bytes([s[12], s[13], s[14], s[15]]);
                if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0
                    || (!zeroes && flags != 0)
                    || count > MAX_DISCARD_SECTORS as u64
                {
                    return Err(VIRTIO_BLK_S_UNSUPP);
                }
                let off = range(disk, sector, count * SECTOR)?;
                image
                    .discard(off, count * SECTOR, zeroes)
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            }
            Ok(0)
        }
        _ => Err(VIRTIO_BLK_S_UNSUPP),
    }
}

/// Move `len` data bytes between the image at `off` and the chain's buffers: the device-
/// writable ones for a read, the readable ones after the 16-byte header for a write. Every
/// buffer is checked to lie in guest RAM before any file I/O. A raw image moves the bytes
/// straight between the file and guest RAM in one preadv/pwritev; qcow2 goes through the
/// bounded bounce buffer.
fn transfer(
    image: &mut image::Image,
    mem: &dyn GuestMemory,
    scratch: &mut Scratch,
    dir: Direction,
    off: u64,
    len: u64,
) -> Result<(), u32> {
    let chain = &scratch.chain;
    let (want_write, mut skip) = match dir {
        Direction::Read => (true, 0),
        Direction::Write => (false, 16),
    };
    scratch.iov.clear();
    let mut left = len;
    for d in chain.descs.iter().filter(|d| d.write == want_write) {
        if left == 0 {
            break;
        }
        let dlen = d.len as u64;
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let n = (dlen - skip).min(left);
        let at = d.addr.checked_add(skip).ok_or(VIRTIO_BLK_S_IOERR)?;
        crate::memory::host_iovecs(mem, at, n, &mut scratch.iov).map_err(|_| VIRTIO_BLK_S_IOERR)?;
        skip = 0;
        left -= n;
    }
    if left != 0 {
        return Err(VIRTIO_BLK_S_IOERR);
    }
    if let Some(fd) = image.raw_fd() {
        let r = file_io_vectored(fd, dir, &mut scratch.iov, off);
        scratch.iov.clear();
        return r.map_err(|_| VIRTIO_BLK_S_IOERR);
    }
    scratch.iov.clear();
    let want = CHUNK.min(usize::try_from(len).unwrap_or(CHUNK));
    if scratch.bounce.len() < want {
        scratch.bounce.resize(want, 0);
    }
    let buf = &mut scratch.bounce[..want];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match dir {
            Direction::Read => {
                image
                    .read_at(&mut buf[..n], off + done)
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                io::write(mem, &chain.descs, done, &buf[..n]).map_err(|_| VIRTIO_BLK_S_IOERR)?;
            }
            Direction::Write => {
                io::read(mem, &chain.descs, 16 + done, &mut buf[..n])
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                image
                    .write_at(&buf[..n], off + done)
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            }
        }
        done += n as u64;
    }
    Ok(())
}

/// The byte offset of `sector`, if `len` bytes from there fit the disk.
fn range(disk: &Disk, sector: u64, len: u64) -> Result<u64, u32> {
    let end_sector = sector
        .checked_add(len.div_ceil(SECTOR))
        .ok_or(VIRTIO_BLK_S_IOERR)?;
    if end_sector > disk.sectors {
        return Err(VIRTIO_BLK_S_IOERR);
    }
    Ok(sector * SECTOR)
}

/// What [`bench_4k`] measured.
#[derive(Debug, Clone, Copy)]
pub struct BenchResult {
    pub requests: u64,
    /// 4 KiB read requests per second through the queue and the device model.
    pub device_per_sec: f64,
    /// 4 KiB `pread`s per second on the same file (other scattered offsets).
    pub pread_per_sec: f64,
}

/// The virtio-blk figure for `cargo xtask bench`: `requests` 4 KiB reads at scattered
/// offsets of the image at `path`, served through a split queue in guest memory by the
/// device model (batches of 64 chains; the time of `process_queue` alone, not of the
/// driver-side writes that set the batch up), against plain `pread` of as many other scattered
/// offsets into the same guest buffers (one batch each in turn, so both see the same load).
/// `mem` (at least 8 MiB at 0) and `which` come from the same backend.
pub fn bench_4k(
    path: &Path,
    requests: u64,
    mem: std::sync::Arc<dyn crate::memory::GuestMemory>,
    which: super::queue::QueueImpl,
) -> Result<BenchResult, String> {
    use std::time::Instant;
    const BATCH: u64 = 64;
    const BATCH_LEN: usize = crate::bits::const_usize(BATCH);
    const RING: u64 = 0x10000;
    const HDR: u64 = 0x100000;
    const DATA: u64 = 0x200000;
    const STATUS: u64 = 0x400000;
    let disk = Disk::open(path, true).map_err(|e| e.to_string())?;
    let blocks = disk.sectors / 8;
    if blocks == 0 {
        return Err("the image is smaller than 4 KiB".into());
    }
    let cfg = super::queue::QueueConfig {
        max_size: QUEUE_SIZE,
        size: QUEUE_SIZE,
        ready: true,
        desc_table: RING,
        avail_ring: RING + 0x1000,
        used_ring: RING + 0x2000,
    };
    let err = |e: crate::memory::OutOfRange| e.to_string();
    for i in 0..BATCH {
        for (k, (addr, len, flags)) in [
            (HDR + 16 * i, 16u32, 1u16),
            (DATA + 4096 * i, 4096, 3),
            (STATUS + i, 1, 2),
        ]
        .into_iter()
        .enumerate()
        {
            let d = RING + 16 * (3 * i + k as u64);
            mem.write_u64(d, addr).map_err(err)?;
            mem.write_u32(d + 8, len).map_err(err)?;
            mem.write_u16(d + 12, flags).map_err(err)?;
            // Descriptor indices: below the queue size.
            mem.write_u16(d + 14, crate::bits::lo16(3 * i + k as u64 + 1))
                .map_err(err)?;
        }
    }
    let mut q =
        super::queue::new_queue(which, mem.clone(), &cfg, false).map_err(|e| e.to_string())?;
    // Two independent streams of scattered sectors: a side that read the other's offsets
    // just before would find the data in the CPU's caches.
    let stream = |mut x: u64| {
        (0..requests)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % blocks * 8
            })
            .collect::<Vec<u64>>()
    };
    let offsets = stream(0x9e37_79b9_7f4a_7c15);
    let pread_offsets = stream(0x2545_f491_4f6c_dd1d);
    let mut avail: u16 = 0;
    let mut scratch = Scratch::default();
    // The peer reads into the very guest buffers the device fills (one pread per request,
    // no queue): the difference is the device model's cost, not where the bytes land.
    let fd = disk.image().raw_fd().ok_or("the bench image must be raw")?;
    let mut targets = Vec::with_capacity(BATCH_LEN);
    for i in 0..BATCH {
        crate::memory::host_iovecs(&*mem, DATA + 4096 * i, 4096, &mut targets).map_err(err)?;
    }
    if targets.len() != BATCH_LEN {
        return Err("a bench buffer crosses a RAM region boundary".into());
    }
    // Device and pread batches alternate, so that both sides see the same load on a shared
    // machine; each side's time is the sum of its batches.
    let (mut device, mut pread) = (0f64, 0f64);
    let batches = offsets
        .chunks(BATCH_LEN)
        .zip(pread_offsets.chunks(BATCH_LEN));
    for (chunk, pread_chunk) in batches {
        // The driver's side (request headers, the available ring and its index: what the
        // guest writes before it notifies) is not timed: the figure is the device model's.
        for (i, sector) in chunk.iter().enumerate() {
            let h = HDR + 16 * i as u64;
            mem.write_u32(h, VIRTIO_BLK_T_IN).map_err(err)?;
            mem.write_u64(h + 8, *sector).map_err(err)?;
            let slot = (avail % QUEUE_SIZE) as u64;
            mem.write_u16(
                RING + 0x1000 + 4 + 2 * slot,
                3 * crate::bits::lo16(i as u64),
            )
            .map_err(err)?;
            avail = avail.wrapping_add(1);
        }
        mem.write_u16(RING + 0x1000 + 2, avail).map_err(err)?;
        let start = Instant::now();
        process_queue(&disk, &*mem, &mut *q, &NoSignal, &mut scratch).map_err(|e| e.to_string())?;
        device += start.elapsed().as_secs_f64();
        if q.next_used() != avail {
            return Err("the device did not complete every request".into());
        }
        let start = Instant::now();
        for (s, target) in pread_chunk.iter().zip(&targets) {
            file_io_vectored(fd, Direction::Read, &mut [*target], s * SECTOR)
                .map_err(|e| e.to_string())?;
        }
        pread += start.elapsed().as_secs_f64();
    }
    Ok(BenchResult {
        requests,
        device_per_sec: requests as f64 / device.max(1e-9),
        pread_per_sec: requests as f64 / pread.max(1e-9),
    })
}

/// `fugu-bench bench-disk`: `requests` random 4 KiB reads (or writes) through the image layer
/// of the image at `path`; with `fill` its bytes are first copied in. Returns requests/s.
pub fn bench_format_4k(
    path: &Path,
    requests: u64,
    write: bool,
    fill: Option<&Path>,
) -> Result<f64, String> {
    use std::time::Instant;
    let disk = Disk::open(path, !write && fill.is_none()).map_err(|e| e.to_string())?;
    let blocks = disk.sectors / 8;
    if blocks == 0 {
        return Err("the image is smaller than 4 KiB".into());
    }
    let mut img = disk.image();
    if let Some(src) = fill {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < img.size() {
            let n = f.read_at(&mut buf, off).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            let n = n.min(usize::try_from(img.size() - off).unwrap_or(n));
            img.write_at(&buf[..n], off).map_err(|e| e.to_string())?;
            off += n as u64;
        }
        img.flush().map_err(|e| e.to_string())?;
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0x5au8; 4096];
    let start = Instant::now();
    for _ in 0..requests {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % blocks * 4096;
        if write {
            img.write_at(&buf, off).map_err(|e| e.to_string())?;
        } else {
            img.read_at(&mut buf, off).map_err(|e| e.to_string())?;
        }
    }
    let t = start.elapsed().as_secs_f64();
    Ok(requests as f64 / t.max(1e-9))
}

#[cfg(test)]
pub(crate) mod tests;
