//! The local image cache: `<cache>/<name>/` holds an image's files and `image.json` (its index
//! entry and where it came from); `<cache>/.partial/<name>/` holds a pull in progress.

use super::index::{self, Image};
use super::ImageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// In a cached image's directory: what its files looked like when their SHA-256 was last
/// checked, so that `fugu run --image` can trust them without hashing them again.
const VERIFIED: &str = ".verified";

/// A file as `stat` sees it. Any write changes its ctime (which, unlike mtime, cannot be set
/// back), and a replaced file has another inode: an unchanged stamp is an unchanged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    file: String,
    size: u64,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamps of a cached image's files; None when one cannot be read.
fn stamps(c: &Cached) -> Option<Vec<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    c.entry
        .image
        .files
        .iter()
        .map(|f| {
            let name = index::file_name(&f.path);
            let m = std::fs::metadata(c.dir.join(name)).ok()?;
            Some(Stamp {
                file: name.to_string(),
                size: m.len(),
                dev: m.dev(),
                ino: m.ino(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            })
        })
        .collect()
}

/// Record that `c`'s files, as they are now, have their index checksums. Best effort: in a
/// cache this user cannot write, the next run verifies again.
fn write_stamps(c: &Cached, s: &[Stamp]) {
    if let Ok(json) = serde_json::to_vec(s) {
        let tmp = c.dir.join(format!("{VERIFIED}.tmp"));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, c.dir.join(VERIFIED));
        }
    }
}

/// The exclusive lock on pulling one image (`<cache>/.partial/<name>.lock`), held for the
/// whole pull, so that two pulls of one image never write the same `.part` files. The lock
/// file is removed before the lock is released (see [`Cache::lock`]).
pub struct PullLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl Drop for PullLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // `.partial` goes too when this was all it held (no other pull, nothing to resume).
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// What `image.json` in a cached image's directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The index the image was pulled from.
    pub source: String,
    pub image: Image,
}

/// A complete image in the cache.
#[derive(Debug, Clone)]
pub struct Cached {
    pub dir: PathBuf,
    pub entry: Entry,
}

impl Cached {
    /// The cached file for `role` ("kernel", "initrd", "disk", "nbp").
    pub fn path(&self, role: &str) -> Option<PathBuf> {
        self.entry
            .image
            .file(role)
            .map(|f| self.dir.join(index::file_name(&f.path)))
    }
}

pub struct Cache {
    pub root: PathBuf,
}

/// One directory of the cache: a usable image, or its name and what is wrong with it.
pub type Listed = Result<Cached, (String, ImageError)>;

/// `$XDG_CACHE_HOME/fugu/images`, else `$HOME/.cache/fugu/images`.
pub fn default_dir() -> Result<PathBuf, ImageError> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Ok(PathBuf::from(x).join("fugu").join("images"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("fugu").join("images")),
        None => Err(ImageError::io(
            "image cache",
            std::io::Error::other("neither XDG_CACHE_HOME nor HOME is set; pass --cache DIR"),
        )),
    }
}

impl Cache {
    pub fn open(dir: Option<PathBuf>) -> Result<Cache, ImageError> {
        Ok(Cache {
            root: match dir {
                Some(d) => d,
                None => default_dir()?,
            },
        })
    }

    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn partial_dir(&self, name: &str) -> PathBuf {
        self.root.join(".partial").join(name)
    }

    fn check_name(name: &str) -> Result<(), ImageError> {
        if index::valid_name(name) {
            Ok(())
        } else {
            Err(ImageError::BadUrl(format!(
                "'{name}' is not a valid image name"
            )))
        }
    }

    /// A cached image, or why it cannot be used.
    pub fn load(&self, name: &str) -> Result<Cached, ImageError> {
        Self::check_name(name)?;
        let dir = self.image_dir(name);
        let meta = dir.join("image.json");
        let text = match std::fs::read(&meta) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotCached(name.to_string()))
            }
            Err(e) => return Err(ImageError::io(meta.display(), e)),
        };
        let entry: Entry = serde_json::from_slice(&text).map_err(|e| ImageError::Damaged {
            name: name.to_string(),
            msg: format!("{}: {e}", meta.display()),
        })?;
        if entry.image.name != name {
            return Err(ImageError::Damaged {
                name: name.to_string(),
                msg: format!("{} describes '{}'", meta.display(), entry.image.name),
            });
        }
        Ok(Cached { dir, entry })
    }

    /// Every complete image in the cache, by name.
    pub fn list(&self) -> Result<Vec<Listed>, ImageError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io(self.root.display(), e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| index::valid_name(n))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| self.load(&n).map_err(|e| (n, e)))
            .collect())
    }

    /// The pull lock of image `name`. When another process holds it, `wait` is called once
    /// and the lock is waited for; without `wait` that is [`ImageError::Busy`].
    pub fn lock(&self, name: &str, wait: Option<&dyn Fn(&Path)>) -> Result<PullLock, ImageError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        Self::check_name(name)?;
        let dir = self.root.join(".partial");
        let path = dir.join(format!("{name}.lock"));
        let io = |e: std::io::Error| ImageError::io(path.display(), e);
        let mut waited = false;
        loop {
            std::fs::create_dir_all(&dir).map_err(|e| ImageError::io(dir.display(), e))?;
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => f,
                // Another pull removed the empty `.partial` in between: make it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(io(e));
                }
                let Some(wait) = wait else {
                    return Err(ImageError::Busy {
                        name: name.into(),
                        lock: path.display().to_string(),
                    });
                };
                if !waited {
                    wait(&path);
                    waited = true;
                }
                // SAFETY: as above; this blocks until the holder is done.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(io(e));
                }
            }
            // The holder removes the lock file before it unlocks; a lock on a file that is
            // no longer at `path` excludes nobody: take the one that is there now.
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if same {
                return Ok(PullLock { _file: file, path });
            }
        }
    }

    /// A cached image for `fugu run --image`: trusted as it is when its files are unchanged
    /// since their checksums were last verified, else verified again (and a changed file
    /// is an error that says to pull again).
    pub fn load_verified(&self, name: &str) -> Result<Cached, ImageError> {
        let c = self.load(name)?;
        if let (Some(now), Ok(text)) = (stamps(&c), std::fs::read(c.dir.join(VERIFIED))) {
            if serde_json::from_slice::<Vec<Stamp>>(&text).ok().as_ref() == Some(&now) {
                return Ok(c);
            }
        }
        eprintln!("fugu: checking the SHA-256 of image '{name}' (changed or not verified since it was pulled)");
        self.verify(name)
    }

    /// Check sizes and SHA-256 of every file of a cached image.
    pub fn verify(&self, name: &str) -> Result<Cached, ImageError> {
        let c = self.load(name)?;
        let before = stamps(&c);
        for f in &c.entry.image.files {
            let p = c.dir.join(index::file_name(&f.path));
            let damaged = |msg: String| ImageError::Damaged {
                name: name.to_string(),
                msg,
            };
            let len = std::fs::metadata(&p)
                .map_err(|e| damaged(format!("{}: {e}", p.display())))?
                .len();
            if len != f.size {
                return Err(damaged(format!(
                    "{} is {len} bytes, expected {}",
                    p.display(),
                    f.size
                )));
            }
            let sum = super::sha256_file(&p)?;
            if sum != f.sha256 {
                return Err(damaged(format!(
                    "{} has sha256 {sum}, expected {}",
                    p.display(),
                    f.sha256
                )));
            }
        }
        // Stamped only when nothing changed while the files were read.
        if let Some(s) = before.filter(|s| stamps(&c).as_ref() == Some(s)) {
            write_stamps(&c, &s);
        }
        Ok(c)
    }

    /// Remove a cached image and what an interrupted pull of it left; false when there was
    /// none. A pull in progress is not disturbed: that is [`ImageError::Busy`].
    pub fn remove(&self, name: &str) -> Result<bool, ImageError> {
        Self::check_name(name)?;
        if !self.root.exists() {
            return Ok(false);
        }
        let lock = self.lock(name, None)?;
        let mut found = false;
        for d in [self.image_dir(name), self.partial_dir(name)] {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => found = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io(d.display(), e)),
            }
        }
        drop(lock);
        // Only succeeds when no other pull is in progress.
        let _ = std::fs::remove_dir(self.root.join(".partial"));
        Ok(found)
    }

    /// Move a completed pull (`partial`, with every file verified) into place as one rename;
    /// an older copy of the image is replaced.
    pub fn install(&self, partial: &Path, entry: &Entry) -> Result<Cached, ImageError> {
        let name = &entry.image.name;
        let json = serde_json::to_string_pretty(entry).map_err(|e| ImageError::Damaged {
            name: name.clone(),
            msg: e.to_string(),
        })?;
        let meta = partial.join("image.json");
        std::fs::write(&meta, json + "\n").map_err(|e| ImageError::io(meta.display(), e))?;
        let dest = self.image_dir(name);
        let old = self.root.join(".partial").join(format!(".old-{name}"));
        let _ = std::fs::remove_dir_all(&old);
        if dest.exists() {
            std::fs::rename(&dest, &old).map_err(|e| ImageError::io(dest.display(), e))?;
        }
        std::fs::rename(partial, &dest).map_err(|e| ImageError::io(dest.display(), e))?;
        let _ = std::fs::remove_dir_all(&old);
        let c = Cached {
            dir: dest,
            entry: entry.clone(),
        };
        // Every file's checksum was checked as it was downloaded.
        if let Some(s) = stamps(&c) {
            write_stamps(&c, &s);
        }
        Ok(c)
    }
}
