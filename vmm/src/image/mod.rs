//! Guest images: `fugu image list|pull|verify|rm` and `fugu run --image NAME`.
//!
//! An index (index.json, written by `cargo xtask images publish DIR`) lists images and their
//! files with sizes and SHA-256. `pull` downloads each file into
//! `<cache>/.partial/<name>/<file>.part` (resuming with HTTP Range after a cut connection,
//! retrying), checks its SHA-256, renames it, and when every file is there moves the whole
//! directory to `<cache>/<name>/` in one rename, with the index entry as `image.json`. A
//! wrong checksum or a broken index is an error that leaves nothing behind in the cache.
//!
//! The cache is `$XDG_CACHE_HOME/fugu/images` (else `~/.cache/fugu/images`), or `--cache`.
//! An index is an `http://` or `https://` URL (TLS verified against the system's CA store,
//! see [`net`]) or a local path.

pub mod cache;
pub mod commands;
pub mod fetch;
pub mod index;
pub mod net;
pub mod run;
pub mod signature;

/// Used when neither --index nor FUGU_IMAGE_INDEX is given: the signed image index published
/// with this very release (its assets: index.json, index.json.asc and the image files, side
/// by side; `cargo xtask images publish --flat`, docs/release.md). Pinned to the version, so
/// a fugu binary reads the index its release was tested with.
pub const DEFAULT_INDEX: &str = concat!(
    "https://github.com/fugu-vmm/fugu/releases/download/v",
    env!("CARGO_PKG_VERSION"),
    "/index.json"
);

/// Everything that can go wrong with images; each message tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{source}\n(that is fugu's default image index, the images of its release v{version}; to use another index — a mirror, or a local tree of `cargo xtask images publish` — pass --index URL|PATH or set FUGU_IMAGE_INDEX)", version = env!("CARGO_PKG_VERSION"))]
    DefaultIndex { source: Box<ImageError> },
    #[error("cannot fetch {url}: TLS with {host} failed: {msg}")]
    Tls {
        url: String,
        host: String,
        msg: String,
    },
    #[error("{0}")]
    BadUrl(String),
    #[error("refusing image index {url}: it has no signature ({sig}: {msg}); fugu trusts only a signed index (--insecure-skip-signature uses it unsigned, for those who must)")]
    Unsigned {
        url: String,
        sig: String,
        msg: String,
    },
    #[error("refusing image index {url}: signature check failed: {msg}; nothing was pulled (--insecure-skip-signature uses it unsigned, for those who must)")]
    Signature { url: String, msg: String },
    #[error("cannot fetch {url}: {msg}")]
    Network { url: String, msg: String },
    #[error("broken image index {url}: {msg}")]
    BadIndex { url: String, msg: String },
    /// Parsed, but not valid ([`fugu_common::index::Index::validate`]).
    #[error("broken image index {url}: {problem}")]
    InvalidIndex {
        url: String,
        #[source]
        problem: Box<fugu_common::index::IndexError>,
    },
    #[error("no image named '{name}' in the index (it has: {have})")]
    UnknownImage { name: String, have: String },
    #[error("image '{name}' needs fugu {need} or newer; this is fugu {have}")]
    TooOld {
        name: String,
        need: String,
        have: String,
    },
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {got}; the download was discarded")]
    Checksum {
        what: String,
        expected: String,
        got: String,
    },
    #[error("size mismatch for {what}: the index says {expected} bytes, the server sent {got}; the download was discarded")]
    Size {
        what: String,
        expected: u64,
        got: u64,
    },
    #[error("image '{0}' is not in the cache; run `fugu image pull {0}` first")]
    NotCached(String),
    #[error("cached image '{name}' is damaged: {msg}; run `fugu image pull {name}` again")]
    Damaged { name: String, msg: String },
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("not enough space for image '{name}': it needs {need} more bytes in {dir}, which has {free} bytes free; free some space, or pull into another --cache DIR")]
    NoSpace {
        name: String,
        need: u64,
        free: u64,
        dir: String,
    },
    #[error("image '{name}' is being removed or pulled by another fugu (it holds {lock}); wait for it to finish")]
    Busy { name: String, lock: String },
}

impl ImageError {
    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        ImageError::Io {
            what: what.to_string(),
            err,
        }
    }
}

/// Whether version `have` ("0.1.0") is at least `need`; unparsable parts count as 0.
pub fn version_at_least(have: &str, need: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (mut a, mut b) = (parse(have), parse(need));
    a.resize(3, 0);
    b.resize(3, 0);
    a >= b
}

/// Lower-case hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> Result<String, ImageError> {
    fugu_common::digest::sha256_file(path).map_err(|e| ImageError::io(path.display(), e))
}

pub use fugu_common::digest::hex;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(version_at_least("0.1.0", "0.1.0"));
        assert!(version_at_least("0.2.0", "0.1.9"));
        assert!(version_at_least("1.0", "0.9.9"));
        assert!(!version_at_least("0.1.0", "0.1.1"));
        assert!(!version_at_least("0.1.0", "1"));
    }
}
