//! The image index: the JSON document that `cargo xtask images` writes and `fugu image` reads.
//!
//! One definition for both sides: the xtask writes it, fugu reads it (re-exported as
//! `fugu::image::index`). It depends on serde only.

use serde::{Deserialize, Serialize};

/// The image kinds this code knows, and the file roles each allows; the first role is the one
/// an image of that kind must have. An index may name other kinds (a newer fugu's): they
/// are listed and pulled, but not booted.
pub const KINDS: &[(&str, &[&str])] = &[
    ("linux", &["kernel", "initrd", "disk"]),
    ("multiboot", &["kernel", "initrd", "disk"]),
    ("elf", &["kernel", "initrd", "disk"]),
    ("bios-disk", &["disk"]),
    ("pxe", &["nbp"]),
];

/// Every file role of [`KINDS`].
pub const ROLES: &[&str] = &["kernel", "initrd", "disk", "nbp"];

/// The value of [`Index::format`].
pub const FORMAT: &str = "fugu-image-index";
/// The newest index layout this code understands.
pub const FORMAT_VERSION: u32 = 1;

/// The whole index: `index.json` at the root of a published tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    /// Layout version; readers refuse versions newer than they know.
    pub format_version: u32,
    /// When the index was generated (RFC 3339, UTC; from SOURCE_DATE_EPOCH).
    pub created: String,
    pub images: Vec<Image>,
}

/// One bootable image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Unique name, e.g. "linux-amd64": letters, digits, '-', '_' and '.'.
    pub name: String,
    /// Guest architecture: "i386" or "amd64".
    pub arch: String,
    /// How it boots: "linux" (bzImage), "multiboot" or "elf" (a kernel fugu loads itself),
    /// "bios-disk" (a raw disk image whose MBR the BIOS boots) or "pxe" (a network boot
    /// program for a DHCP/TFTP server to serve). See [`KINDS`].
    pub kind: String,
    pub description: String,
    /// Recipe revision; bumped when the recipe changes what it builds.
    pub revision: u32,
    /// When this image was built (RFC 3339, UTC).
    pub created: String,
    /// The oldest fugu that can boot this image.
    pub min_fugu_version: String,
    /// The kernel command line to boot it with.
    pub cmdline: String,
    pub files: Vec<File>,
    pub provenance: Provenance,
}

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// What the file is for: "kernel", "initrd", "disk" or "nbp" (a network boot program).
    pub role: String,
    /// Path relative to the directory of index.json, with '/' separators.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes as published.
    pub sha256: String,
    /// How the bytes are stored: "none" or "gzip" (an initramfs is used as is; the
    /// kernel decompresses it).
    pub compression: String,
    /// A disk's image format, "raw" or "qcow2"; absent means raw. The file is kept in this
    /// format in the cache and given to the guest as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Where an image came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The recipe, relative to the repository root.
    pub recipe: String,
    pub recipe_sha256: String,
    /// Debian packages used, at exact versions.
    pub packages: Vec<Package>,
    /// SHA-256 of the kernel configuration fragments (built kernels only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
    /// Repository files built into the image (init scripts, guest sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// The package actually built in (name, version and .deb SHA-256 as used).
    pub name: String,
    pub version: String,
    pub arch: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
    /// The recipe's pin, present only when the build used another package than it (the pin
    /// had left the mirror, or the mirror's .deb of that version has another SHA-256, and
    /// the build fell back to the mirror's current version). Builds with `--locked` never
    /// fall back, so a release index has no such field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
}

/// A recipe's pin that the build did not use (see [`Package::pinned`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinned {
    pub name: String,
    pub version: String,
    /// SHA-256 of the pinned .deb.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub path: String,
    pub sha256: String,
}

/// What [`Index::validate`] finds wrong with an index. `image` is an image's name, `path`
/// a file's path as the index gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The index's `format`.
    #[error("not a fugu image index (format is '{0}', expected '{expected}')", expected = FORMAT)]
    NotAnIndex(String),
    /// The index's `format_version`.
    #[error(
        "index format version {0} is not supported (this fugu reads version {reads}); upgrade \
         fugu",
        reads = FORMAT_VERSION
    )]
    Version(u32),
    #[error("invalid image name '{0}'")]
    BadName(String),
    #[error("image '{0}' is listed twice")]
    ListedTwice(String),
    #[error("image '{0}' has no files")]
    NoFiles(String),
    /// A cached file name (the path's last component) that is reserved or taken.
    #[error("image '{image}': file name '{name}' is reserved or used twice")]
    FileName { image: String, name: String },
    #[error("image '{image}' has two '{role}' files")]
    RoleTwice { image: String, role: String },
    #[error("image '{image}': unknown file role '{role}'")]
    UnknownRole { image: String, role: String },
    #[error("image '{image}' of kind '{kind}' cannot have a '{role}' file")]
    RoleOfKind {
        image: String,
        kind: String,
        role: String,
    },
    #[error("image '{image}': unsafe file path '{path}'")]
    UnsafePath { image: String, path: String },
    #[error("image '{image}': '{path}' has a malformed sha256 '{sha256}'")]
    BadSha256 {
        image: String,
        path: String,
        sha256: String,
    },
    #[error("image '{image}': disk '{path}' has unknown format '{format}' (raw or qcow2)")]
    DiskFormat {
        image: String,
        path: String,
        format: String,
    },
    #[error("image '{image}': '{path}' is a {role} file: only a disk has a format")]
    FormatNotOfDisk {
        image: String,
        path: String,
        role: String,
    },
    #[error("image '{image}': '{path}' has unknown compression '{compression}'")]
    Compression {
        image: String,
        path: String,
        compression: String,
    },
    #[error("image '{0}': its file sizes add up to more than 2^64 bytes")]
    TooLarge(String),
    /// The file its kind boots.
    #[error("image '{image}' has no {role} file")]
    Missing { image: String, role: &'static str },
}

impl Index {
    /// Check what serde cannot: the format, names, paths and checksums. A reader must call
    /// this before using any field; the error says what is wrong.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.format != FORMAT {
            return Err(IndexError::NotAnIndex(self.format.clone()));
        }
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(IndexError::Version(self.format_version));
        }
        let mut names = std::collections::BTreeSet::new();
        for img in &self.images {
            let image = || img.name.clone();
            if !valid_name(&img.name) {
                return Err(IndexError::BadName(image()));
            }
            if !names.insert(img.name.as_str()) {
                return Err(IndexError::ListedTwice(image()));
            }
            if img.files.is_empty() {
                return Err(IndexError::NoFiles(image()));
            }
            let mut roles = std::collections::BTreeSet::new();
            let mut file_names = std::collections::BTreeSet::new();
            for f in &img.files {
                // Files are cached under their last path component, next to image.json.
                let n = file_name(&f.path);
                if n == "image.json" || n.ends_with(".part") || !file_names.insert(n) {
                    return Err(IndexError::FileName {
                        image: image(),
                        name: n.to_string(),
                    });
                }
                if !roles.insert(f.role.as_str()) {
                    return Err(IndexError::RoleTwice {
                        image: image(),
                        role: f.role.clone(),
                    });
                }
                if !ROLES.contains(&f.role.as_str()) {
                    return Err(IndexError::UnknownRole {
                        image: image(),
                        role: f.role.clone(),
                    });
                }
                if let Some((_, allowed)) = img.kind_roles() {
                    if !allowed.contains(&f.role.as_str()) {
                        return Err(IndexError::RoleOfKind {
                            image: image(),
                            kind: img.kind.clone(),
                            role: f.role.clone(),
                        });
                    }
                }
                if !valid_path(&f.path) {
                    return Err(IndexError::UnsafePath {
                        image: image(),
                        path: f.path.clone(),
                    });
                }
                if f.sha256.len() != 64
                    || !f
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(IndexError::BadSha256 {
                        image: image(),
                        path: f.path.clone(),
                        sha256: f.sha256.clone(),
                    });
                }
                match (f.role.as_str(), f.format.as_deref()) {
                    (_, None) | ("disk", Some("raw" | "qcow2")) => {}
                    ("disk", Some(other)) => {
                        return Err(IndexError::DiskFormat {
                            image: image(),
                            path: f.path.clone(),
                            format: other.to_string(),
                        })
                    }
                    (role, Some(_)) => {
                        return Err(IndexError::FormatNotOfDisk {
                            image: image(),
                            path: f.path.clone(),
                            role: role.to_string(),
                        })
                    }
                }
                if !matches!(f.compression.as_str(), "none" | "gzip") {
                    return Err(IndexError::Compression {
                        image: image(),
                        path: f.path.clone(),
                        compression: f.compression.clone(),
                    });
                }
            }
            // The sizes come from the server: their sum (what `fugu image list` shows and a
            // pull needs) must not overflow.
            if img
                .files
                .iter()
                .try_fold(0u64, |sum, f| sum.checked_add(f.size))
                .is_none()
            {
                return Err(IndexError::TooLarge(image()));
            }
            if let Some((_, allowed)) = img.kind_roles() {
                if !roles.contains(allowed[0]) {
                    return Err(IndexError::Missing {
                        image: image(),
                        role: allowed[0],
                    });
                }
            }
        }
        Ok(())
    }

    pub fn find(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }
}

impl Image {
    pub fn file(&self, role: &str) -> Option<&File> {
        self.files.iter().find(|f| f.role == role)
    }

    /// The entry of [`KINDS`] for this image's kind; None for a kind this code does not know.
    pub fn kind_roles(&self) -> Option<(&'static str, &'static [&'static str])> {
        KINDS.iter().copied().find(|(k, _)| *k == self.kind)
    }

    /// The bytes of all its files (saturating: [`Index::validate`] refuses an overflow).
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size))
    }
}

/// Image names double as cache directory names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A relative path without '..', empty or hidden components.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 255
        && path
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && valid_name(c))
}

/// The file name a cached file gets: the last component of its published path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
