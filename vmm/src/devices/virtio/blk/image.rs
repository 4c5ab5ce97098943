//! Disk image formats behind virtio-blk: raw files (and block devices) and qcow2, with
//! format detection, backing chains, and what `fugu disk create` / `fugu disk info` do.

// Clean of truncating casts (issue 19), unlike the rest of devices/ so far: keep it so.
#![warn(clippy::cast_possible_truncation)]

use super::qcow2::{Header, Qcow2, MAGIC};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The longest backing chain fugu follows (the top image not counted).
pub const MAX_CHAIN: usize = 16;

/// A `format=` that is neither raw nor qcow2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown disk format '{0}' (raw or qcow2)")]
pub struct UnknownFormat(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
    pub fn parse(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            o => Err(UnknownFormat(o.to_string())),
        }
    }
}

pub(crate) fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
pub(crate) fn unsupported(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("qcow2 feature not supported by fugu: {what}"),
    )
}

/// The format the first bytes of `file` show: qcow2 by its magic, else raw.
pub fn detect(file: &File) -> io::Result<Format> {
    let mut m = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match file.read_at(&mut m[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(if n == 4 && m == MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// An open image: the guest's view of it as bytes.
pub enum Image {
    Raw { file: File, len: u64 },
    Qcow2(Box<Qcow2>),
}

impl Image {
    /// Build the image on an open (and locked) `file` at `path`; backing files are opened
    /// read-only with a shared lock. `seen` holds the chain so far (device, inode).
    pub fn from_file(
        file: File,
        path: &Path,
        format: Format,
        writable: bool,
        len: u64,
        seen: &mut Vec<(u64, u64)>,
    ) -> io::Result<Image> {
        {
            use std::os::unix::fs::MetadataExt;
            let m = file.metadata()?;
            let id = (m.dev(), m.ino());
            if seen.contains(&id) {
                return Err(bad(format!(
                    "the backing chain loops back to {}",
                    path.display()
                )));
            }
            seen.push(id);
        }
        match format {
            Format::Raw => Ok(Image::Raw { file, len }),
            Format::Qcow2 => {
                let h = Header::parse(&file, len)?;
                let backing = match &h.backing {
                    None => None,
                    Some(name) => {
                        if seen.len() > MAX_CHAIN {
                            return Err(bad(format!(
                                "backing chain longer than {MAX_CHAIN} images"
                            )));
                        }
                        let p = backing_path(path, name);
                        let fmt = match h.backing_format.as_deref() {
                            None => None,
                            Some(f) => Some(
                                Format::parse(f)
                                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
                            ),
                        };
                        Some(Box::new(open_backing(&p, fmt, seen).map_err(|e| {
                            io::Error::new(e.kind(), format!("backing file {}: {e}", p.display()))
                        })?))
                    }
                };
                Ok(Image::Qcow2(Box::new(Qcow2::open(
                    file, h, writable, backing,
                )?)))
            }
        }
    }

    /// The guest-visible size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Image::Raw { len, .. } => *len,
            Image::Qcow2(q) => q.size(),
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Image::Raw { .. } => Format::Raw,
            Image::Qcow2(_) => Format::Qcow2,
        }
    }

    /// The file whose bytes are the guest's disk byte for byte (a raw image), for I/O straight
    /// between it and guest RAM; None when a format maps the bytes (qcow2).
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Image::Raw { file, .. } => Some(file.as_raw_fd()),
            Image::Qcow2(_) => None,
        }
    }

    /// Read at `off`; beyond the image's size reads zeroes (a shorter backing file).
    pub fn read_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<()> {
        match self {
            Image::Raw { file, len } => {
                let avail = len.saturating_sub(off);
                let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
                file.read_exact_at(&mut buf[..n], off)?;
                buf[n..].fill(0);
                Ok(())
            }
            Image::Qcow2(q) => q.read_at(buf, off),
        }
    }

    pub fn write_at(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        match self {
            Image::Raw { file, .. } => file.write_all_at(buf, off),
            Image::Qcow2(q) => q.write_at(buf, off),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Image::Raw { file, .. } => file.sync_data(),
            Image::Qcow2(q) => q.flush(),
        }
    }

    /// Discard `[off, off+len)`, or with `zeroes` make it read as zeroes.
    pub fn discard(&mut self, off: u64, len: u64, zeroes: bool) -> io::Result<()> {
        match self {
            Image::Raw { file, .. } => {
                if len == 0 {
                    return Ok(());
                }
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                let (o, l) = match (i64::try_from(off), i64::try_from(len)) {
                    (Ok(o), Ok(l)) => (o, l),
                    _ => return Err(bad("range".into())),
                };
                // SAFETY: fallocate on our own descriptor; no memory is passed.
                let r = unsafe { libc::fallocate64(file.as_raw_fd(), mode, o, l) };
                if r == 0 || !zeroes {
                    // Discard is a hint: a file system that cannot punch holes keeps the data.
                    return Ok(());
                }
                let zero = vec![0u8; usize::try_from(len.min(256 << 10)).unwrap_or(4096)];
                let mut done = 0u64;
                while done < len {
                    let n = usize::try_from(len - done)
                        .unwrap_or(usize::MAX)
                        .min(zero.len());
                    file.write_all_at(&zero[..n], off + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            Image::Qcow2(q) => q.discard(off, len, zeroes),
        }
    }
}

/// A backing file name is relative to the directory of the image that names it.
fn backing_path(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_owned();
    }
    match image.parent() {
        Some(d) => d.join(p),
        None => p.to_owned(),
    }
}

/// Take a non-blocking flock; Err(WouldBlock) when another process holds a conflicting one.
pub fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn file_len(file: &File) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = file;
    f.seek(io::SeekFrom::End(0))
}

/// Open a backing file: read-only, shared lock, format as named or detected.
fn open_backing(path: &Path, fmt: Option<Format>, seen: &mut Vec<(u64, u64)>) -> io::Result<Image> {
    let file = File::open(path)?;
    lock(&file, false).map_err(|e| {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            io::Error::other("a process is writing to it (it holds an exclusive lock)")
        } else {
            e
        }
    })?;
    let detected = detect(&file)?;
    let format = match fmt {
        Some(Format::Raw) => Format::Raw,
        Some(Format::Qcow2) if detected != Format::Qcow2 => {
            return Err(bad("named as qcow2 but has no qcow2 header".into()))
        }
        _ => detected,
    };
    let len = file_len(&file)?;
    Image::from_file(file, path, format, false, len, seen)
}

/// Open an image the way `fugu disk info` and the tests do (read-only, shared lock).
pub fn open_read_only(path: &Path, fmt: Option<Format>) -> io::Result<Image> {
    open_backing(path, fmt, &mut Vec::new())
}

/// Why `fugu disk create` or `fugu disk info` failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskCommandError {
    #[error("give the size: -s SIZE (e.g. -s 8G)")]
    NoSize,
    #[error("a raw image cannot have a backing file: use --format qcow2")]
    RawWithBacking,
    #[error("the base image's path is not UTF-8")]
    BaseNotUtf8,
    /// The base image (as given) cannot be found or opened.
    #[error("base image {}: {source}", .path.display())]
    Base {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the size must be a non-zero multiple of 512 bytes, not {0}")]
    BadSize(u64),
    #[error("{} already exists: remove it first, or choose another name", .0.display())]
    Exists(PathBuf),
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `fugu disk info`: the image (or one in its backing chain) cannot be read.
    #[error("disk image {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `fugu disk create`: a new image at `path` (refused when it exists).
pub fn create(
    path: &Path,
    size: Option<u64>,
    base: Option<&Path>,
    format: Format,
) -> Result<(), DiskCommandError> {
    let (size, backing) = match base {
        None => (size.ok_or(DiskCommandError::NoSize)?, None),
        Some(b) => {
            if format == Format::Raw {
                return Err(DiskCommandError::RawWithBacking);
            }
            let base_error = |source| DiskCommandError::Base {
                path: b.to_path_buf(),
                source,
            };
            // Stored as given when it resolves from the new image's directory, else absolute.
            let name = b.to_str().ok_or(DiskCommandError::BaseNotUtf8)?;
            let from_image = backing_path(path, name);
            let stored = if from_image.exists() {
                name.to_string()
            } else {
                let abs = std::fs::canonicalize(b).map_err(base_error)?;
                abs.to_str()
                    .ok_or(DiskCommandError::BaseNotUtf8)?
                    .to_string()
            };
            let img = open_read_only(&backing_path(path, &stored), None).map_err(base_error)?;
            let fmt = img.format().name();
            (size.unwrap_or(img.size()), Some((stored, fmt)))
        }
    };
    if size == 0 || size % 512 != 0 {
        return Err(DiskCommandError::BadSize(size));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                DiskCommandError::Exists(path.to_path_buf())
            } else {
                DiskCommandError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let r = match format {
        Format::Raw => file.set_len(size).and_then(|_| file.sync_all()),
        Format::Qcow2 => {
            super::qcow2::create(&file, size, backing.as_ref().map(|(n, f)| (n.as_str(), *f)))
        }
    };
    if let Err(source) = r {
        let _ = std::fs::remove_file(path);
        return Err(DiskCommandError::Create {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// `fugu disk info`: format, sizes and the backing chain, one image per paragraph.
pub fn info(path: &Path) -> Result<String, DiskCommandError> {
    use std::fmt::Write;
    let mut out = String::new();
    let mut img = open_read_only(path, None).map_err(|source| DiskCommandError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut name = path.to_owned();
    let mut depth = 0;
    loop {
        let on_disk = std::fs::metadata(&name)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            })
            .unwrap_or(0);
        let _ = writeln!(out, "image: {}", name.display());
        let _ = writeln!(out, "format: {}", img.format().name());
        let _ = writeln!(
            out,
            "virtual size: {} ({} bytes)",
            human(img.size()),
            img.size()
        );
        let _ = writeln!(out, "disk size: {}", human(on_disk));
        let next = match img {
            Image::Raw { .. } => None,
            Image::Qcow2(mut q) => {
                let alloc = q.allocated().map_err(|source| DiskCommandError::Read {
                    path: name.clone(),
                    source,
                })?;
                let h = q.header.clone();
                let _ = writeln!(out, "allocated: {} ({alloc} bytes)", human(alloc));
                let _ = writeln!(out, "cluster size: {}", q.cluster_size());
                let _ = writeln!(
                    out,
                    "qcow2 version: {}{}{}",
                    h.version,
                    if h.dirty() { ", dirty" } else { "" },
                    if h.corrupt() { ", marked corrupt" } else { "" }
                );
                let _ = writeln!(out, "refcount bits: {}", 1u32 << h.refcount_order);
                if h.nb_snapshots > 0 {
                    let _ = writeln!(out, "internal snapshots: {}", h.nb_snapshots);
                }
                match (&h.backing, q.backing.take()) {
                    (Some(b), Some(bi)) => {
                        let p = backing_path(&name, b);
                        let _ = writeln!(out, "backing file: {b} (format {})", bi.format().name());
                        Some((p, *bi))
                    }
                    _ => None,
                }
            }
        };
        match next {
            Some((p, b)) => {
                out.push('\n');
                name = p;
                img = b;
                depth += 1;
                if depth > MAX_CHAIN {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(out)
}

fn human(n: u64) -> String {
    fugu_common::units::human_bytes(n)
}
