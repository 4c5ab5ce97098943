//! The local image cache: `<cache>/<name>/` holds an image's files and `image.json` (its index
//! entry and where it came from); `<cache>/.partial/<name>/` holds a pull in progress.

use super::index::{self, Image};
use super::ImageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

    /// Check sizes and SHA-256 of every file of a cached image.
    pub fn verify(&self, name: &str) -> Result<Cached, ImageError> {
        let c = self.load(name)?;
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
        Ok(c)
    }

    /// Remove a cached image and any pull of it in progress; false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool, ImageError> {
        Self::check_name(name)?;
        let mut found = false;
        for d in [self.image_dir(name), self.partial_dir(name)] {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => found = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io(d.display(), e)),
            }
        }
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
        Ok(Cached {
            dir: dest,
            entry: entry.clone(),
        })
    }
}
